"""Where the true matches of each query rank in a gallery, blockwise (numpy or jax), and exact top-k:
the kernels under the metrics of :mod:`plip_jax.evals.retrieval` and :mod:`plip_jax.evals.reid`.

Every retrieval metric depends only on the 1-based ranks of the true matches of each query in the
deterministic ranking of the gallery (descending cosine similarity, ties broken by the lower
gallery index, i.e. a stable argsort of ``-sim``). So the gallery is scored in query blocks and
only the ranks of the matches are kept; a 100k x 100k ranking never holds the full matrix. A
match's rank is counted, not sorted: ``rank - 1 = #(score > s) + #(score == s at a lower gallery
index)``, a few compare-and-count passes over the block per match (queries have few matches)
instead of an argsort of every 100k row; no top-k is needed for R@k, AP or INP.

Backends: ``numpy`` (BLAS matmul per block into one reused buffer, then the counting in
cache-sized row chunks on all cores) and ``jax`` (the matmul and the counting in one jitted
program per block on the default device). ``auto`` takes jax when the default jax backend is an
accelerator and the inputs are float32, numpy otherwise: on CPU numpy counts ~4x faster
(``bench/retrieval.py --backend numpy|jax``: the counting of 4,096 x 20k scores with 4 matches a
query took 0.5 s in numpy and 2.0 s in XLA:CPU, whose compare-and-reduce loops are not
vectorised as well). Peak memory is one (block_size, G) similarity block plus O(block x P).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np

RankMethod = Literal["auto", "sort", "count"]
Backend = Literal["auto", "numpy", "jax"]
RankBlocks = Iterator[tuple[np.ndarray, np.ndarray]]  # per query block: (B, P) match ranks and their mask

NORM_EPS = 1e-12  # the official code divides by (norm + 1e-12)
_COUNT_BUDGET = 1 << 24  # elements of one (rows, gallery) top-k chunk
_AUTO_MAX_MATCHES = 256  # above this many matches per query the full sort is cheaper
_CHUNK_ELEMS = 1 << 18  # similarities per counting chunk (1 MiB fp32): stays in L2 over all passes
_THREAD_MIN_ELEMS = 1 << 21  # blocks smaller than this are counted on the calling thread


def l2_normalize(x: np.ndarray, eps: float = NORM_EPS) -> np.ndarray:
    """Row-wise ``x / (||x|| + eps)``, as the official PLIP evaluation does before the cosine."""
    x = np.asarray(x)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + np.asarray(eps, dtype=x.dtype))



def as_embeddings(x: np.ndarray, name: str) -> np.ndarray:
    """`x` as a finite floating (N, D) array (integers cast to float32); a ValueError naming `name` else."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf values")
    return x


def as_ids(ids: np.ndarray, n: int, name: str) -> np.ndarray:
    """`ids` as a 1-D integer array of length `n`; a ValueError naming `name` else."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array of length {n}, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids, got dtype {ids.dtype}")
    return ids



def pick_backend(backend: str, dtype: np.dtype, method: str = "auto") -> str:
    """``auto`` -> jax on an accelerator for float32 inputs, else numpy; explicit choices checked."""
    if backend not in ("auto", "numpy", "jax"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'jax', got {backend!r}")
    if backend == "numpy":
        return "numpy"
    import jax

    x64 = jax.dtypes.canonicalize_dtype(np.float64) == np.float64
    exact = dtype == np.float32 or (x64 and dtype == np.float64)
    if backend == "auto":
        on_device = jax.default_backend() != "cpu"
        return "jax" if on_device and exact and method != "sort" else "numpy"
    if method == "sort":
        raise ValueError("method='sort' (full argsort) is the numpy reference path; use backend='numpy'")
    if not exact:
        raise ValueError(
            f"backend='jax' ranks float32 (float64 with jax_enable_x64) scores exactly, got {dtype}; "
            "cast the inputs or use backend='numpy'"
        )
    return "jax"



class GalleryIdIndex:
    """Gallery positions grouped by id, so a query's matches are found without a (Q, G) compare."""

    def __init__(self, gallery_ids: np.ndarray):
        if gallery_ids.shape[0] == 0:
            raise ValueError("the gallery is empty")
        self.num_gallery = int(gallery_ids.shape[0])
        self.order = np.argsort(gallery_ids, kind="stable")  # ascending positions within an id
        self.ids, self.starts, self.counts = np.unique(
            gallery_ids[self.order], return_index=True, return_counts=True
        )

    def _num_matches(self, query_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slot = np.minimum(np.searchsorted(self.ids, query_ids), self.ids.size - 1)
        return slot, np.where(self.ids[slot] == query_ids, self.counts[slot], 0)

    def max_matches(self, query_ids: np.ndarray) -> int:
        """The most gallery items any of ``query_ids`` matches (at least 1): a fixed lookup width."""
        return max(int(self._num_matches(query_ids)[1].max(initial=0)), 1)

    def lookup(self, query_ids: np.ndarray, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(B, P) gallery positions holding each query's id (ascending, left-aligned) + mask.

        ``P`` is the block's most matches, or ``width`` (>= that) for a fixed shape."""
        slot, n = self._num_matches(query_ids)
        need = max(int(n.max(initial=0)), 1)
        if width is not None and width < need:
            raise ValueError(f"width {width} < the {need} matches of a query in this block")
        width = need if width is None else int(width)
        present = np.arange(width)[None, :] < n[:, None]
        flat = np.where(present, self.starts[slot][:, None] + np.arange(width)[None, :], 0)
        return np.where(present, self.order[flat], 0), present


def compact(cols: np.ndarray, keep: np.ndarray, num_gallery: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep only ``cols[keep]`` of each row, still ascending and left-aligned, + the new mask."""
    n = keep.sum(axis=1)
    width = max(int(n.max(initial=0)), 1)
    out = np.sort(np.where(keep, cols, num_gallery), axis=1)[:, :width]
    present = np.arange(width)[None, :] < n[:, None]
    return np.where(present, out, 0), present


def _sorted_ranks(ranks: np.ndarray, present: np.ndarray) -> np.ndarray:
    big = np.iinfo(np.int64).max  # padding sorts after every real rank
    return np.where(present, np.sort(np.where(present, ranks, big), axis=1), 0)


def _ranks_by_sort(sim: np.ndarray, cols: np.ndarray, present: np.ndarray) -> np.ndarray:
    order = np.argsort(-sim, axis=1, kind="stable")
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(sim.shape[1])[None, :], axis=1)
    return _sorted_ranks(np.take_along_axis(position, cols, axis=1) + 1, present)


def _row_counter():
    """Per-row number of True in a (n, 8k) bool array: popcount of its 64-bit words when numpy has
    ``bitwise_count`` (>= 2.0; ~5x faster than ``sum``), else a uint8 sum."""
    popcount = getattr(np, "bitwise_count", None)
    if popcount is None:
        return lambda mask: mask.view(np.uint8).sum(axis=1, dtype=np.int64)
    return lambda mask: popcount(mask.view(np.uint64)).sum(axis=1, dtype=np.int64)


_count_rows = _row_counter()


def _num_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _count_ahead_chunk(sim, t, cols, present, out, buf) -> None:
    """``out[r, p]`` = items ranked ahead of gallery position ``cols[r, p]`` in row ``r``.

    Per match two passes over the (cache-resident) chunk: ``score > t`` counted per row, and
    ``score == t`` counted over the whole chunk, which equals the number of present matches
    unless some other item ties one exactly; only then are the tied rows recounted by position.
    """
    n, g = sim.shape
    mask8 = buf[:n]  # row width padded to a multiple of 8 with False, viewable as uint64
    mask = mask8[:, :g]
    for p in range(t.shape[1]):
        tp = t[:, p : p + 1]
        np.greater(sim, tp, out=mask)
        out[:, p] = _count_rows(mask8)
        np.equal(sim, tp, out=mask)
        if np.count_nonzero(mask8) > np.count_nonzero(present[:, p]):
            rows = np.nonzero((_count_rows(mask8) > 1) & present[:, p])[0]
            if rows.size:  # equal scores: only the lower gallery positions come first
                lower = np.arange(g)[None, :] < cols[rows, p][:, None]
                out[rows, p] += np.count_nonzero(mask[rows] & lower, axis=1)


def _ranks_by_count(sim: np.ndarray, cols: np.ndarray, present: np.ndarray) -> np.ndarray:
    """rank - 1 = #items scoring higher + #items scoring equal at a lower gallery position."""
    b, g = sim.shape
    t = np.where(present, np.take_along_axis(sim, cols, axis=1), np.inf).astype(sim.dtype)
    ahead = np.zeros(cols.shape, dtype=np.int64)
    rows = max(1, _CHUNK_ELEMS // g)
    starts = range(0, b, rows)
    width8 = -(-g // 8) * 8

    def work(chunk_starts: range) -> None:
        buf = np.zeros((rows, width8), dtype=bool)  # one per thread, reused over its chunks
        for lo in chunk_starts:
            sl = slice(lo, lo + rows)
            _count_ahead_chunk(sim[sl], t[sl], cols[sl], present[sl], ahead[sl], buf)

    threads = min(_num_threads(), len(starts)) if b * g >= _THREAD_MIN_ELEMS else 1
    if threads == 1:
        work(starts)
    else:  # numpy's ufunc loops release the GIL; interleaved chunks balance the threads
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, [starts[i::threads] for i in range(threads)]))
    return _sorted_ranks(ahead + 1, present)


def match_ranks(
    sim: np.ndarray, cols: np.ndarray, present: np.ndarray, method: RankMethod = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks (B, P), ascending and left-aligned, of the gallery positions ``cols``.

    The ranking is descending ``sim`` with ties to the lower gallery position (stable argsort of
    ``-sim``). Junk items should be set to ``-inf`` in ``sim`` beforehand: the (finite) matches
    are then ranked exactly as if the junk were removed. Returns the ranks and their mask.
    """
    if method == "auto":
        method = "count" if cols.shape[1] <= _AUTO_MAX_MATCHES else "sort"
    if method == "sort":
        return _ranks_by_sort(sim, cols, present), present
    return _ranks_by_count(sim, cols, present), present


def similarity_blocks(q: np.ndarray, g: np.ndarray, block_size: int, normalize: bool):
    """Yield ``(lo, q[lo:lo+B] @ g.T)`` per query block; every block reuses one (B, G) buffer,
    so a block is only valid until the next one is asked for."""
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query and gallery dims differ: {q.shape[1]} vs {g.shape[1]}")
    dtype = np.result_type(q.dtype, g.dtype)
    q = q.astype(dtype, copy=False)
    g = g.astype(dtype, copy=False)
    if normalize:
        g = l2_normalize(g)
    gt = g.T  # a view: BLAS reads it transposed as fast as a contiguous copy, without the copy
    buf = np.empty((max(1, min(block_size, q.shape[0])), g.shape[0]), dtype=dtype)
    for lo in range(0, q.shape[0], block_size):
        qb = q[lo : lo + block_size]
        if normalize:
            qb = l2_normalize(qb)
        out = buf[: qb.shape[0]]
        np.matmul(qb, gt, out=out)
        yield lo, out



# ------------------------------------------------------------------------------- jax backend


@functools.cache
def _jax_programs():
    """Jitted per-block programs: match counting from a similarity block or from embeddings, and
    top-k. Shapes are fixed per call (the last block is padded), so each compiles once."""
    import jax
    import jax.numpy as jnp

    def ahead(sim, cols, present):
        # rank - 1 = #(score > t) + #(score == t at a lower position): one fused compare-reduce,
        # the (B, P, G) comparison is never materialised.
        t = jnp.where(present, jnp.take_along_axis(sim, cols, axis=1), jnp.inf)[:, :, None]
        pos = jnp.arange(sim.shape[1], dtype=cols.dtype)[None, None, :]
        s = sim[:, None, :]
        return jnp.sum(jnp.where(pos < cols[:, :, None], s >= t, s > t), axis=2, dtype=jnp.int32)

    def similarity(qb, g_t):
        return jnp.matmul(qb, g_t, precision=jax.lax.Precision.HIGHEST)  # no TF32 / bf16 passes

    def ahead_from_embeddings(qb, g_t, cols, present):
        return ahead(similarity(qb, g_t), cols, present)

    def topk(qb, g_t, k):
        sim = similarity(qb, g_t)
        sim = jnp.where(sim == 0, jnp.zeros_like(sim), sim)  # -0.0 ties +0.0, as in numpy
        scores, idx = jax.lax.top_k(sim, k)  # equal scores: the lower index comes first
        return idx, scores

    return jax.jit(ahead), jax.jit(ahead_from_embeddings), jax.jit(topk, static_argnums=2)


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    if x.shape[0] == rows:
        return x
    return np.concatenate([x, np.zeros((rows - x.shape[0], *x.shape[1:]), dtype=x.dtype)])


def _device_rank_blocks(blocks, q_ids: np.ndarray, index: GalleryIdIndex, block: int, program):
    """Run ``program(x, cols, present)`` on each padded query block on the device; yield the
    block's (ranks, present) on the host. Block i+1 is dispatched before block i is fetched."""
    width = index.max_matches(q_ids)
    pending = None
    for lo, x in blocks:
        n = x.shape[0]
        cols, present = index.lookup(q_ids[lo : lo + n], width)
        out = program(_pad_rows(x, block), _pad_rows(cols.astype(np.int32), block),
                      _pad_rows(present, block))
        if pending is not None:
            yield _fetch_ranks(*pending)
        pending = (out, present, n)
    if pending is not None:
        yield _fetch_ranks(*pending)


def _fetch_ranks(out, present: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    ahead = np.asarray(out)[:n].astype(np.int64)
    return _sorted_ranks(ahead + 1, present), present


def _host_blocks(x: np.ndarray, block: int):
    for lo in range(0, x.shape[0], block):
        yield lo, x[lo : lo + block]


def _prepare_pair(q: np.ndarray, g: np.ndarray, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Host-side cast + normalisation, identical to the numpy path, before the device sees them."""
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query and gallery dims differ: {q.shape[1]} vs {g.shape[1]}")
    dtype = np.result_type(q.dtype, g.dtype)
    q, g = q.astype(dtype, copy=False), g.astype(dtype, copy=False)
    if normalize:
        q, g = l2_normalize(q), l2_normalize(g)
    return q, g



# --------------------------------------------------------------------- ranks of whole query sets


def ranks_from_similarity(sim: np.ndarray, query_ids: np.ndarray, index: GalleryIdIndex, block_size: int,
                          method: RankMethod = "auto", backend: Backend = "auto") -> RankBlocks:
    """(ranks, present) of the matches of each block of rows of a (Q, G) similarity matrix (checked
    inputs: see `as_embeddings` / `as_ids`); ``backend='jax'`` counts each block on the default device."""
    block = max(1, min(int(block_size), sim.shape[0]))
    if pick_backend(backend, sim.dtype, method) == "jax":
        return _device_rank_blocks(_host_blocks(sim, block), query_ids, index, block, _jax_programs()[0])

    def numpy_blocks() -> RankBlocks:
        for lo in range(0, sim.shape[0], block):
            cols, present = index.lookup(query_ids[lo : lo + block])
            yield match_ranks(sim[lo : lo + block], cols, present, method)

    return numpy_blocks()


def ranks_from_embeddings(query_emb: np.ndarray, gallery_emb: np.ndarray, query_ids: np.ndarray,
                          index: GalleryIdIndex, block_size: int, normalize: bool = True,
                          method: RankMethod = "auto", backend: Backend = "auto") -> RankBlocks:
    """(ranks, present) of the matches of each block of queries, ranked by cosine (``normalize``)
    or dot product against the gallery; the (Q, G) similarity is never held whole."""
    q, g = query_emb, gallery_emb
    if pick_backend(backend, np.result_type(q.dtype, g.dtype), method) == "jax":
        import jax

        q, g = _prepare_pair(q, g, normalize)
        block = max(1, min(int(block_size), q.shape[0]))
        g_t = jax.device_put(np.ascontiguousarray(g.T))
        from_embeddings = _jax_programs()[1]
        return _device_rank_blocks(
            _host_blocks(q, block), query_ids, index, block,
            lambda x, cols, present: from_embeddings(x, g_t, cols, present),
        )

    def numpy_blocks() -> RankBlocks:
        for lo, sim in similarity_blocks(q, g, int(block_size), normalize):
            cols, present = index.lookup(query_ids[lo : lo + sim.shape[0]])
            yield match_ranks(sim, cols, present, method)

    return numpy_blocks()


def similarity_topk(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    k: int,
    block_size: int = 4096,
    normalize: bool = True,
    backend: Backend = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k gallery indices (Q, k) int64 and cosine scores (Q, k), ties to the lower index.

    With the jax backend the matmul and ``lax.top_k`` run on the device per query block."""
    q = as_embeddings(query_emb, "query_emb")
    g = as_embeddings(gallery_emb, "gallery_emb")
    if int(block_size) < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not 1 <= int(k) <= g.shape[0]:
        raise ValueError(f"k must be in [1, {g.shape[0]}] (the gallery size), got {k}")
    k = int(k)
    indices = np.empty((q.shape[0], k), dtype=np.int64)
    scores = np.empty((q.shape[0], k), dtype=np.result_type(q.dtype, g.dtype))
    if pick_backend(backend, scores.dtype) == "jax":
        import jax

        q, g = _prepare_pair(q, g, normalize)
        block = max(1, min(int(block_size), q.shape[0]))
        g_t = jax.device_put(np.ascontiguousarray(g.T))
        topk = _jax_programs()[2]
        outs = [(lo, x.shape[0], topk(_pad_rows(x, block), g_t, k)) for lo, x in _host_blocks(q, block)]
        for lo, n, (idx, val) in outs:  # all blocks dispatched first; each result is (block, k)
            indices[lo : lo + n] = np.asarray(idx)[:n]
            scores[lo : lo + n] = np.asarray(val)[:n]
        return indices, scores
    for lo, sim in similarity_blocks(q, g, int(block_size), normalize):
        idx = _topk_rows(sim, k)
        indices[lo : lo + sim.shape[0]] = idx
        scores[lo : lo + sim.shape[0]] = np.take_along_axis(sim, idx, axis=1)
    return indices, scores


def _topk_rows(sim: np.ndarray, k: int) -> np.ndarray:
    """Exact stable top-k per row: everything above the k-th score, then ties by lower index."""
    b, g = sim.shape
    if k == g:
        return np.argsort(-sim, axis=1, kind="stable")
    step = max(1, _COUNT_BUDGET // g)  # bounds the (rows, G) temporaries below
    out = np.empty((b, k), dtype=np.int64)
    for lo in range(0, b, step):
        s = sim[lo : lo + step]
        kth = -np.partition(-s, k - 1, axis=1)[:, k - 1 : k]
        above = s > kth
        tied = s == kth
        need = k - above.sum(axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= need))
        cand = np.nonzero(chosen)[1].reshape(s.shape[0], k)  # ascending index within a row
        order = np.argsort(-np.take_along_axis(s, cand, axis=1), axis=1, kind="stable")
        out[lo : lo + step] = np.take_along_axis(cand, order, axis=1)
    return out
