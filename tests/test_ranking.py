"""Match-rank counting (numpy and jnp) == the full stable argsort, ties included; memory per block.

The counting form ranks a match at ``#(score > s) + #(score == s at a lower index) + 1``, which is
the position the stable descending argsort of IRRA / PLIP gives it. These cases are built to
break it: quantised scores (many exact ties, ties among a query's own matches), 1 to 6 matches per
query, queries without a match, block and chunk sizes that do not divide the sizes, the threaded
path, and -0.0 next to +0.0.
"""
from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

import plip_jax.evals.ranking as ranking
from plip_jax.evals.ranking import GalleryIdIndex, match_ranks, similarity_topk
from plip_jax.evals.retrieval import metrics_from_similarity, retrieval_metrics


def _brute_ranks(sim: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray) -> list[list[int]]:
    """1-based positions of each query's matches in the full stable argsort of ``-sim``."""
    order = np.argsort(-sim, axis=1, kind="stable")
    return [sorted(int(r) + 1 for r in np.nonzero(g_ids[order[i]] == q_ids[i])[0])
            for i in range(sim.shape[0])]


def _tied_case(seed: int, nq: int = 37, ng: int = 53, levels: int = 5):
    """float32 scores on a coarse grid (exact ties everywhere), 1-6 matches per id, some queries
    with a single match and some with none."""
    rng = np.random.default_rng(seed)
    sim = (rng.integers(-levels, levels + 1, (nq, ng)) / levels).astype(np.float32)
    g_ids = np.repeat(np.arange(ng), rng.integers(1, 7, ng))[:ng]  # runs of 1-6 equal ids
    rng.shuffle(g_ids)
    q_ids = rng.choice(g_ids, nq)
    q_ids[:3] = ng + 1  # no match
    single = np.unique(g_ids, return_counts=True)
    q_ids[3:6] = single[0][single[1] == 1][:3] if (single[1] == 1).sum() >= 3 else q_ids[3:6]
    return sim, q_ids, g_ids


def _ranks_from_blocks(sim, q_ids, g_ids, block, method):
    index, out = GalleryIdIndex(g_ids), []
    for lo in range(0, sim.shape[0], block):
        cols, present = index.lookup(q_ids[lo : lo + block])
        ranks, mask = match_ranks(sim[lo : lo + block], cols, present, method)
        out += [list(map(int, r[m])) for r, m in zip(ranks, mask)]
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("block", [1, 7, 64])
def test_counted_ranks_equal_stable_argsort(seed, block):
    sim, q_ids, g_ids = _tied_case(seed)
    expected = _brute_ranks(sim, q_ids, g_ids)
    assert any(len(r) == 1 for r in expected) and any(len(r) >= 3 for r in expected)
    assert _ranks_from_blocks(sim, q_ids, g_ids, block, "count") == expected
    assert _ranks_from_blocks(sim, q_ids, g_ids, block, "sort") == expected


def test_threaded_small_chunks_equal_stable_argsort(monkeypatch):
    """Chunks of 3 rows (not dividing the block) spread over 2 threads: same ranks."""
    monkeypatch.setattr(ranking, "_CHUNK_ELEMS", 3 * 101)
    monkeypatch.setattr(ranking, "_THREAD_MIN_ELEMS", 0)
    monkeypatch.setattr(ranking, "_num_threads", lambda: 2)
    sim, q_ids, g_ids = _tied_case(7, nq=40, ng=101, levels=3)
    assert _ranks_from_blocks(sim, q_ids, g_ids, 29, "count") == _brute_ranks(sim, q_ids, g_ids)


def test_tie_between_a_query_s_own_matches_and_at_the_gallery_width_padding():
    """g1 and g3 (both matches) tie with g0 (not a match): stable order g0 g1 g3 -> ranks 2, 3.
    G = 9 is not a multiple of 8, so the padded tail of the count buffer is exercised too."""
    sim = np.array([[0.5, 0.5, 0.1, 0.5, 0.2, 0.0, 0.0, 0.0, 0.5]], dtype=np.float32)
    g_ids = np.array([0, 1, 2, 1, 3, 4, 5, 6, 7])
    cols, present = GalleryIdIndex(g_ids).lookup(np.array([1]))
    for method in ("count", "sort"):
        ranks, _ = match_ranks(sim, cols, present, method)
        np.testing.assert_array_equal(ranks, [[2, 3]])


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_metrics_equal_sort_reference_on_tied_scores(backend):
    sim, q_ids, g_ids = _tied_case(11, nq=45, ng=70)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the queries without a match
        ref = metrics_from_similarity(sim, q_ids, g_ids, block_size=45, method="sort",
                                      backend="numpy")
        got = metrics_from_similarity(sim, q_ids, g_ids, block_size=13, method="count",
                                      backend=backend)
    assert got == pytest.approx(ref, abs=1e-12)
    assert got["num_queries_without_match"] == 3


def test_jax_embeddings_path_equals_numpy_exactly():
    """Integer embeddings make every fp32 dot exact, so both backends see identical scores."""
    rng = np.random.default_rng(5)
    q = rng.integers(-2, 3, (50, 6)).astype(np.float32)
    g = rng.integers(-2, 3, (41, 6)).astype(np.float32)
    g_ids = rng.integers(0, 9, 41)
    q_ids = rng.choice(g_ids, 50)
    kw = dict(block_size=16, normalize=False)
    ref = retrieval_metrics(q, g, q_ids, g_ids, backend="numpy", method="sort", **kw)
    assert retrieval_metrics(q, g, q_ids, g_ids, backend="jax", **kw) == pytest.approx(ref, abs=1e-12)
    assert retrieval_metrics(q, g, q_ids, g_ids, backend="numpy", **kw) == pytest.approx(ref, abs=1e-12)
    # normalised: both paths normalise on the host; fp32 dots may differ by an ulp, not the ranks here
    a = retrieval_metrics(q, g, q_ids, g_ids, block_size=16, backend="jax")
    b = retrieval_metrics(q, g, q_ids, g_ids, block_size=16, backend="numpy")
    assert a == pytest.approx(b, abs=1e-9)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_topk_equals_stable_argsort_with_signed_zero_ties(backend):
    rng = np.random.default_rng(3)
    q = rng.integers(-2, 3, (9, 3)).astype(np.float32)
    g = rng.integers(-2, 3, (14, 3)).astype(np.float32)
    g[[2, 6]] = 0.0  # q . 0 is -0.0 or +0.0: equal scores, ranked by index
    q[0] = -1.0
    idx, scores = similarity_topk(q, g, 6, block_size=4, normalize=False, backend=backend)
    sim = q @ g.T
    expected = np.argsort(-sim, axis=1, kind="stable")[:, :6]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(scores, np.take_along_axis(sim, expected, axis=1))
    # d = 1: XLA's dot gives -1 * 0 = -0.0 (BLAS +0.0) and lax.top_k puts +0.0 above -0.0
    q1 = np.array([[-1.0], [1.0], [-2.0]], np.float32)
    g1 = np.array([[0.0], [-1.0], [-0.0], [0.0]], np.float32)  # q0 . g0 = -0.0, q0 . g2 = +0.0
    idx, _ = similarity_topk(q1, g1, 4, normalize=False, backend=backend)
    np.testing.assert_array_equal(idx, np.argsort(-(q1 @ g1.T), axis=1, kind="stable"))


def test_peak_memory_is_one_block_not_the_matrix():
    """2,000 x 12,000 with block 64: the full matrix would be 92 MiB; one block is 2.9 MiB."""
    rng = np.random.default_rng(0)
    nq, ng, d, block = 2000, 12000, 8, 64
    q = rng.standard_normal((nq, d), dtype=np.float32)
    g = rng.standard_normal((ng, d), dtype=np.float32)
    g_ids = np.arange(ng) % (ng // 3)
    q_ids = rng.integers(0, ng // 3, nq)
    block_bytes = block * ng * 4
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        res = retrieval_metrics(q, g, q_ids, g_ids, block_size=block, backend="numpy")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # one similarity block + the normalised gallery + per-thread 1 MiB count buffers + O(block)
    bound = 2 * block_bytes + ng * d * 4 + (1 << 21)
    assert peak < bound, (peak, bound)
    assert peak < nq * ng * 4 / 10
    assert res["num_queries"] == nq and 0 < res["R10"] <= 100


def test_backend_and_lookup_errors():
    args = (np.ones((2, 2)), np.eye(3, 2), np.array([0, 1]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="backend must be"):
        retrieval_metrics(*args, backend="torch")
    with pytest.raises(ValueError, match="float32"):
        retrieval_metrics(*args, backend="jax")  # float64 inputs, x64 off
    with pytest.raises(ValueError, match="method='sort'"):
        retrieval_metrics(*(a.astype(np.float32) if a.dtype.kind == "f" else a for a in args),
                          backend="jax", method="sort")
    with pytest.raises(ValueError, match="width 1 < the 2 matches"):
        GalleryIdIndex(np.array([4, 4, 5])).lookup(np.array([4]), width=1)
    assert GalleryIdIndex(np.array([4, 4, 5])).max_matches(np.array([5, 9])) == 1
