"""Retrieval / ReID / attribute metrics vs hand-computed cases and brute-force loop references."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from plip_jax.evals.attributes import attribute_metrics
from plip_jax.evals.ranking import GalleryIdIndex, similarity_topk
from plip_jax.evals.reid import reid_metrics, reid_metrics_from_similarity
from plip_jax.evals.retrieval import metrics_from_similarity, retrieval_metrics

# ---------------------------------------------------------------------------- references


def _reference(sim, q_ids, g_ids, ks, q_cams=None, g_cams=None):
    """Brute force: full stable argsort per query, python loops, devkit/IRRA formulas verbatim."""
    out = {f"R{k}": 0.0 for k in ks}
    irra = trap = inp = 0.0
    scored = 0
    for i in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda j: (-sim[i, j], j))
        if q_cams is not None:  # Market-1501: drop same id + same camera, and id -1 junk
            order = [
                j for j in order
                if g_ids[j] >= 0 and not (g_ids[j] == q_ids[i] and g_cams[j] == q_cams[i])
            ]
        hits = [r + 1 for r, j in enumerate(order) if g_ids[j] == q_ids[i]]
        if not hits:
            continue
        scored += 1
        for k in ks:
            out[f"R{k}"] += hits[0] <= k
        n = len(hits)
        irra += sum((h + 1) / r for h, r in enumerate(hits)) / n
        ap = 0.0
        for h, r in enumerate(hits):  # layumi / Market devkit compute_mAP
            old_precision = h / (r - 1) if r != 1 else 1.0
            ap += (1.0 / n) * (old_precision + (h + 1) / r) / 2
        trap += ap
        inp += n / hits[-1]
    res = {key: 100 * v / scored for key, v in out.items()}
    return {**res, "irra": 100 * irra / scored, "trapezoid": 100 * trap / scored,
            "mINP": 100 * inp / scored}


def _check(got, ref):
    """Every result carries both conventions from one ranking: mAP (IRRA), mAP_official (trapezoid)."""
    for key in [k for k in ref if k.startswith("R")] + ["mINP"]:
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key
    assert got["mAP"] == pytest.approx(ref["irra"], abs=1e-9)
    assert got["mAP_official"] == pytest.approx(ref["trapezoid"], abs=1e-9)


def _irra_rank_torch(sim, q_ids, g_ids, max_rank=10):
    """IRRA ``utils/metrics.py:rank``, vectorised in torch as there (argsort, cumsum, no loops)."""
    torch = pytest.importorskip("torch")
    sim, q_ids, g_ids = torch.as_tensor(sim), torch.as_tensor(q_ids), torch.as_tensor(g_ids)
    matches = g_ids[torch.argsort(sim, dim=1, descending=True)] == q_ids[:, None]
    cmc = (matches[:, :max_rank].cumsum(1) >= 1).double().mean(0) * 100
    hits = matches.cumsum(1).double()
    ap = (hits / torch.arange(1, sim.shape[1] + 1) * matches).sum(1) / matches.sum(1)
    last = torch.stack([row.nonzero()[-1, 0] for row in matches])
    inp = hits[torch.arange(len(last)), last] / (last + 1.0)
    return {"R1": float(cmc[0]), "R5": float(cmc[4]), "R10": float(cmc[9]),
            "mAP": float(ap.mean() * 100), "mINP": float(inp.mean() * 100)}


def _plip_test_map(sim, q_ids, g_ids):
    """The official PLIP ``test_map``: per query a descending argsort, then the Market devkit
    ``compute_mAP`` loop (no junk for text->image); the means divide by all queries."""
    ap_sum, cmc = 0.0, np.zeros(sim.shape[1])
    for i in range(sim.shape[0]):
        index = np.argsort(sim[i])[::-1]
        good = np.nonzero(g_ids == q_ids[i])[0]
        rows_good = np.nonzero(np.isin(index, good))[0]
        cmc[rows_good[0]:] += 1
        ngood, ap = len(good), 0.0
        for k, row in enumerate(rows_good):
            d_recall = 1.0 / ngood
            precision = (k + 1) / (row + 1)
            old_precision = k / row if row != 0 else 1.0
            ap += d_recall * (old_precision + precision) / 2
        ap_sum += ap
    cmc /= sim.shape[0]
    return {"R1": 100 * cmc[0], "R5": 100 * cmc[4], "R10": 100 * cmc[9],
            "mAP_official": 100 * ap_sum / sim.shape[0]}


@pytest.mark.parametrize("seed", range(3))
def test_both_maps_equal_irra_and_plip_reference_code_in_one_call(seed):
    rng = np.random.default_rng(20 + seed)
    q, g = rng.normal(size=(30, 8)), rng.normal(size=(45, 8))  # continuous: no ties to break
    q_ids, g_ids = rng.integers(0, 9, 30), rng.integers(0, 9, 45)
    g_ids[:9] = np.arange(9)  # every query has a match
    got = retrieval_metrics(q, g, q_ids, g_ids, block_size=7)
    qn = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-12)
    gn = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-12)
    irra, plip = _irra_rank_torch(qn @ gn.T, q_ids, g_ids), _plip_test_map(qn @ gn.T, q_ids, g_ids)
    for key in ("R1", "R5", "R10", "mAP", "mINP"):
        assert got[key] == pytest.approx(irra[key], abs=1e-9), key
    for key in ("R1", "R5", "R10", "mAP_official"):
        assert got[key] == pytest.approx(plip[key], abs=1e-9), key
    assert got["mAP"] != pytest.approx(got["mAP_official"], abs=1e-6)  # they do differ


# ---------------------------------------------------------------- hand-computed, 3 x 5

# gallery ids [1, 2, 1, 3, 2]; query ids [1, 2, 3]
# q0: order g1 g2 g3 g4 g0 -> matches at ranks 2, 5
#     IRRA (1/2 + 2/5)/2 = .45; trapezoid [(0 + 1/2)/2 + (1/4 + 2/5)/2]/2 = .2875; INP 2/5
# q1: 0.9 then a three-way tie at 0.5 broken by index (g0, g2, g4) -> matches at ranks 1, 4
#     IRRA (1 + 2/4)/2 = .75; trapezoid [(1 + 1)/2 + (1/3 + 2/4)/2]/2 = 17/24; INP 2/4
# q2: order g4 g3 ... -> match at rank 2: IRRA 1/2; trapezoid (0 + 1/2)/2 = .25; INP 1/2
HAND_SIM = np.array([
    [0.1, 0.9, 0.5, 0.3, 0.2],
    [0.5, 0.9, 0.5, 0.1, 0.5],
    [0.2, 0.4, 0.6, 0.8, 1.0],
])
HAND_Q = np.array([1, 2, 3])
HAND_G = np.array([1, 2, 1, 3, 2])
HAND = {
    "R1": 100 / 3, "R2": 100.0, "R5": 100.0,
    "irra": 100 * (0.45 + 0.75 + 0.5) / 3,
    "trapezoid": 100 * (0.2875 + 17 / 24 + 0.25) / 3,
    "mINP": 100 * (0.4 + 0.5 + 0.5) / 3,
}


@pytest.mark.parametrize("method", ["sort", "count", "auto"])
@pytest.mark.parametrize("block_size", [1, 2, 4096])
def test_hand_example(method, block_size):
    got = metrics_from_similarity(HAND_SIM, HAND_Q, HAND_G, ks=(1, 2, 5),
                                  block_size=block_size, method=method)
    _check(got, HAND)
    assert got["num_queries"] == 3 and got["num_gallery"] == 5
    assert got["num_queries_without_match"] == 0


def test_hand_example_matches_reference():
    assert _reference(HAND_SIM, HAND_Q, HAND_G, (1, 2, 5)) == pytest.approx(HAND)


# ---------------------------------------------------------- brute force on random cases


@pytest.mark.parametrize("seed", range(4))
def test_random_similarity_vs_reference(seed):
    rng = np.random.default_rng(seed)
    nq, ng = 23, 31
    sim = np.round(rng.normal(size=(nq, ng)), 1)  # coarse rounding -> many ties
    g_ids = rng.integers(0, 6, ng)
    q_ids = rng.integers(0, 6, nq)
    q_ids[q_ids == 5] = 7  # some queries without any match
    ref = _reference(sim, q_ids, g_ids, (1, 5, 10))
    for method in ("sort", "count"):
        with pytest.warns(RuntimeWarning, match="no match"):
            got = metrics_from_similarity(sim, q_ids, g_ids, block_size=5, method=method)
        _check(got, ref)
        assert got["num_queries_without_match"] == int((q_ids == 7).sum())


def test_many_matches_use_sort_path_consistently():
    rng = np.random.default_rng(9)
    sim = rng.normal(size=(6, 200))
    g_ids = np.zeros(200, dtype=int)
    g_ids[::3] = 1  # 67 matches per query for id 1 > the auto threshold
    q_ids = np.array([0, 1, 0, 1, 1, 0])
    ref = _reference(sim, q_ids, g_ids, (1, 5, 10))
    for method in ("auto", "count", "sort"):
        _check(metrics_from_similarity(sim, q_ids, g_ids, method=method), ref)


def test_blocked_equals_full_matrix_on_embeddings():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(40, 8)).astype(np.float32)
    g = rng.normal(size=(25, 8)).astype(np.float32)
    q_ids, g_ids = rng.integers(0, 5, 40), rng.integers(0, 5, 25)
    g_ids[:5] = np.arange(5)  # every query has a match
    small = retrieval_metrics(q, g, q_ids, g_ids, block_size=3)
    big = retrieval_metrics(q, g, q_ids, g_ids, block_size=10**6)
    assert small == pytest.approx(big, abs=1e-9)
    qn = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-12)
    gn = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-12)
    _check(big, _reference(qn @ gn.T, q_ids, g_ids, (1, 5, 10)))


def test_normalize_makes_scale_irrelevant():
    rng = np.random.default_rng(2)
    q, g = rng.normal(size=(10, 4)), rng.normal(size=(12, 4))
    q_ids, g_ids = np.arange(10) % 4, np.arange(12) % 4
    scaled = retrieval_metrics(q * rng.uniform(0.1, 10, (10, 1)), g * rng.uniform(0.1, 10, (12, 1)),
                               q_ids, g_ids)
    assert scaled == pytest.approx(retrieval_metrics(q, g, q_ids, g_ids))
    raw = retrieval_metrics(q, g * np.arange(1, 13)[:, None], q_ids, g_ids, normalize=False)
    _check(raw, _reference(q @ (g * np.arange(1, 13)[:, None]).T, q_ids, g_ids, (1, 5, 10)))


# ------------------------------------------------------------------------------- ties


def test_ties_broken_by_lower_gallery_index():
    g = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # g0 and g1 identical
    q = np.array([[1.0, 0.0], [1.0, 0.0]])
    # query 0 matches g1 (the later twin) -> rank 2; query 1 matches g0 -> rank 1
    for method in ("sort", "count"):
        res = retrieval_metrics(q, g, np.array([5, 6]), np.array([6, 5, 7]), ks=(1, 2),
                                method=method)
        assert res["R1"] == 50.0 and res["R2"] == 100.0
        assert res["mAP"] == pytest.approx(75.0)
    idx, scores = similarity_topk(q, g, k=2)
    np.testing.assert_array_equal(idx, [[0, 1], [0, 1]])
    np.testing.assert_allclose(scores, 1.0, rtol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 7, 12])
def test_similarity_topk_matches_stable_argsort(k):
    rng = np.random.default_rng(3)
    q = rng.integers(-2, 3, (9, 3)).astype(np.float64)  # integer vectors -> exact ties
    g = rng.integers(-2, 3, (12, 3)).astype(np.float64)
    idx, scores = similarity_topk(q, g, k, block_size=4, normalize=False)
    sim = q @ g.T
    expected = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(scores, np.take_along_axis(sim, expected, axis=1))


# ---------------------------------------------------------------- empty queries, errors


def test_empty_queries_excluded_or_scored_zero():
    sim = np.array([[0.9, 0.1], [0.9, 0.1]])
    with pytest.warns(RuntimeWarning, match="1 of 2 queries"):
        res = metrics_from_similarity(sim, np.array([0, 9]), np.array([0, 1]), ks=(1,))
    assert res["R1"] == 100.0 and res["mAP"] == 100.0 and res["num_queries"] == 2
    with pytest.warns(RuntimeWarning, match="scored 0"):
        res = metrics_from_similarity(sim, np.array([0, 9]), np.array([0, 1]), ks=(1,),
                                      count_empty_queries=True)
    assert res["R1"] == 50.0 and res["mAP"] == 50.0 and res["mINP"] == 50.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(query_emb=np.ones((2, 3)), gallery_emb=np.ones((3, 4))), "dims differ"),
        (dict(query_emb=np.ones(3)), "2-D"),
        (dict(query_ids=np.array([0])), "query_ids must be a 1-D array of length 2"),
        (dict(gallery_ids=np.array([0.5, 1.5, 2.5])), "integer ids"),
        (dict(query_emb=np.array([[np.nan, 1.0], [1.0, 1.0]])), "NaN"),
        (dict(ks=(0, 5)), "positive integers"),
        (dict(block_size=0), "block_size"),
        (dict(query_ids=np.array([7, 8])), "no query has a matching"),
        (dict(gallery_emb=np.ones((0, 2)), gallery_ids=np.zeros(0, dtype=int)), "gallery is empty"),
    ],
)
def test_retrieval_bad_input(kwargs, message):
    args = dict(query_emb=np.ones((2, 2)), gallery_emb=np.eye(3, 2), query_ids=np.array([0, 1]),
                gallery_ids=np.array([0, 1, 2]))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(**args)


def test_ap_switch_is_gone():
    """No option silently changes what mAP means: `ap=` is refused; both keys always come back."""
    args = (np.ones((2, 2)), np.eye(3, 2), np.array([0, 1]), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="ap"):
        retrieval_metrics(*args, ap="trapezoid")
    with pytest.raises(TypeError, match="ap"):
        reid_metrics(*args, np.array([0, 0]), np.array([1, 1, 1]), ap="irra")
    assert {"mAP", "mAP_official"} <= set(retrieval_metrics(*args))


# ---------------------------------------------------------------------------- ReID


def test_reid_camera_rule_by_hand():
    # query id 1 cam 0. g0 same id+cam (junk), g2 id -1 (junk), g5 id 0 distractor (negative).
    # filtered order g3(id2) g4(match) g5(distractor) g1(match) -> ranks 2, 4
    sim = np.array([[0.9, 0.3, 0.8, 0.7, 0.6, 0.5]])
    g_ids = np.array([1, 1, -1, 2, 1, 0])
    g_cams = np.array([0, 1, 0, 0, 2, 1])
    for method in ("sort", "count"):
        res = reid_metrics_from_similarity(sim, np.array([1]), g_ids, np.array([0]), g_cams,
                                           ks=(1, 2), method=method)
        assert res["R1"] == 0.0 and res["R2"] == 100.0
        assert res["mAP_official"] == pytest.approx(100 * (0.25 + 5 / 12) / 2)  # devkit trapezoid
        assert res["mAP"] == pytest.approx(50.0)  # (1/2 + 2/4) / 2
        assert res["mINP"] == pytest.approx(50.0)


@pytest.mark.parametrize("seed", range(3))
def test_reid_vs_reference(seed):
    rng = np.random.default_rng(10 + seed)
    nq, ng = 15, 40
    q = rng.normal(size=(nq, 6))
    g = rng.normal(size=(ng, 6))
    q_ids, g_ids = rng.integers(0, 5, nq), rng.integers(-1, 5, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    qn = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-12)
    gn = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-12)
    ref = _reference(qn @ gn.T, q_ids, g_ids, (1, 5, 10), q_cams, g_cams)
    for method in ("sort", "count"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            got = reid_metrics(q, g, q_ids, g_ids, q_cams, g_cams, block_size=4, method=method)
        _check(got, ref)


def test_gallery_id_index_lookup():
    cols, present = GalleryIdIndex(np.array([4, 2, 4, 9, 4])).lookup(np.array([4, 9, 3]))
    np.testing.assert_array_equal(np.where(present, cols, -1), [[0, 2, 4], [3, -1, -1],
                                                               [-1, -1, -1]])


def test_reid_query_whose_only_matches_share_its_camera_is_dropped():
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.9, 0.1]])
    with pytest.warns(RuntimeWarning, match="1 of 2 queries"):
        res = reid_metrics_from_similarity(sim, np.array([1, 2]), np.array([1, 2, 2]),
                                           np.array([0, 0]), np.array([0, 0, 1]), ks=(1,))
    # query 0: its only same-id item is same-camera junk; query 1: g1 junk, g2 ranked 2nd of 2
    assert res["R1"] == 0.0 and res["num_queries_without_match"] == 1
    assert res["mAP_official"] == pytest.approx(25.0)  # devkit trapezoid: (0 + 1/2) / 2
    assert res["mAP"] == pytest.approx(50.0)  # IRRA: 1/2
    assert res["mINP"] == pytest.approx(50.0)

    args = (np.ones((1, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="q_ids must be >= 0"):
        reid_metrics(*args, np.array([-1]), np.array([0, 1]), np.array([0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="camera ids must be known"):
        reid_metrics(*args, np.array([1]), np.array([0, 1]), np.array([0]), np.array([-1, 1]))
    with pytest.raises(ValueError, match="g_cams must be a 1-D array of length 2"):
        reid_metrics(*args, np.array([1]), np.array([0, 1]), np.array([0]), np.array([1]))


# ------------------------------------------------------------------------- attributes


def test_attribute_metrics_by_hand():
    labels = np.array([[1, 0], [1, 1], [0, 0]])
    scores = np.array([[0.9, 0.6], [0.2, 0.7], [0.1, 0.5]])  # 0.5 is not > 0.5
    res = attribute_metrics(scores, labels)
    # attr0: TP/P = 1/2, TN/N = 1/1; attr1: TP/P = 1/1, TN/N = 1/2 -> mA 75
    np.testing.assert_allclose(res["mA_per_attribute"], [75.0, 75.0])
    assert res["mA"] == pytest.approx(75.0)
    # samples: (acc, prec, rec) = (1/2, 1/2, 1), (1/2, 1, 1/2), (0, 0, 0) (empty sets score 0)
    assert res["Acc"] == pytest.approx(100 / 3)
    assert res["Prec"] == pytest.approx(50.0)
    assert res["Rec"] == pytest.approx(50.0)
    assert res["F1"] == pytest.approx(50.0)
    logits = attribute_metrics(np.log(scores / (1 - scores)), labels, threshold=0.0)
    assert logits["mA"] == pytest.approx(75.0) and logits["F1"] == pytest.approx(50.0)


def test_attribute_metrics_perfect_and_errors():
    labels = np.array([[1, 0, 1], [0, 1, 0]])
    res = attribute_metrics(labels.astype(float), labels)
    assert res["mA"] == 100.0 and res["Acc"] == 100.0 and res["F1"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="same shape"):
        attribute_metrics(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="binary 0/1.*-1"):
        attribute_metrics(np.zeros((2, 3)), -labels)
    with pytest.raises(ValueError, match="finite"):
        attribute_metrics(np.full((2, 3), np.nan), labels)
