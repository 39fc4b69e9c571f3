"""Text-to-image person retrieval metrics (R@k, mAP, mAP_official, mINP) computed blockwise in numpy.

Every metric depends only on the 1-based ranks of the true matches of each query in the
deterministic ranking of the gallery (descending cosine similarity, ties broken by the lower
gallery index, i.e. a stable argsort of ``-sim``). So the gallery is scored in query blocks and
only the ranks of the matches are kept; a 100k x 100k ranking never holds the full matrix.

Both AP conventions come from the same ranks (see shared/PEERS.md section 4a), so every result
carries both keys:
- ``mAP``: AP = mean over the matches of precision at each match (IRRA ``utils/metrics.py``; what
  text-ReID papers report, and the non-interpolated AP of BoT / torchreid for image ReID).
- ``mAP_official``: Market-1501 devkit AP used by the official PLIP ``compute_mAP`` / ``test_map``:
  every match adds ``(1/ngood) * (prec_before + prec_at_match) / 2`` where ``prec_before`` is the
  precision at the position just before the match (``i / (r_i - 1)``), and 1 when it is ranked first.
- mINP: ``num_matches / rank_of_last_match``. All metrics are returned in percent.
- Queries without any match in the gallery are counted in ``num_queries_without_match`` and, by
  default, excluded from every mean with a ``RuntimeWarning`` (IRRA would divide by zero there).
  ``count_empty_queries=True`` instead scores them 0 and divides by all queries, which is what the
  official PLIP/Market loop does.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

RankMethod = Literal["auto", "sort", "count"]

NORM_EPS = 1e-12  # the official code divides by (norm + 1e-12)
_COUNT_BUDGET = 1 << 24  # elements of one (rows, matches, gallery) comparison chunk
_AUTO_MAX_MATCHES = 48  # above this many matches per query the full sort is cheaper


def l2_normalize(x: np.ndarray, eps: float = NORM_EPS) -> np.ndarray:
    """Row-wise ``x / (||x|| + eps)``, as the official PLIP evaluation does before the cosine."""
    x = np.asarray(x)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + np.asarray(eps, dtype=x.dtype))


def _as_embeddings(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf values")
    return x


def _as_ids(ids: np.ndarray, n: int, name: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array of length {n}, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids, got dtype {ids.dtype}")
    return ids


def _check_common(ks: Sequence[int], block_size: int, method: str) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks}")
    if int(block_size) < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if method not in ("auto", "sort", "count"):
        raise ValueError(f"method must be 'auto', 'sort' or 'count', got {method!r}")
    return ks


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

    def lookup(self, query_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, P) gallery positions holding each query's id (ascending, left-aligned) + mask."""
        slot = np.minimum(np.searchsorted(self.ids, query_ids), self.ids.size - 1)
        n = np.where(self.ids[slot] == query_ids, self.counts[slot], 0)
        width = max(int(n.max(initial=0)), 1)
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


def _ranks_by_count(sim: np.ndarray, cols: np.ndarray, present: np.ndarray) -> np.ndarray:
    """rank - 1 = #items scoring higher + #items scoring equal at a lower gallery position."""
    scores = np.take_along_axis(sim, cols, axis=1)
    b, p = cols.shape
    g = sim.shape[1]
    before = np.zeros((b, p), dtype=np.int64)
    step = max(1, _COUNT_BUDGET // max(p * g, 1))
    for lo in range(0, b, step):
        s = sim[lo : lo + step, None, :]
        t = scores[lo : lo + step, :, None]
        greater = (s > t).sum(axis=2)
        ge = (s >= t).sum(axis=2)
        before[lo : lo + step] = greater
        tied = np.nonzero(((ge > greater + 1) & present[lo : lo + step]).any(axis=1))[0]
        if tied.size:  # equal scores: only the lower gallery positions come first
            rows = tied + lo
            lower = np.arange(g)[None, None, :] < cols[rows][:, :, None]
            eq = (sim[rows][:, None, :] == scores[rows][:, :, None]) & lower
            before[rows] += eq.sum(axis=2)
    return _sorted_ranks(before + 1, present)


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


class RankingAccumulator:
    """Sums per-query R@k / AP (both conventions) / INP over blocks of match ranks; ``result()``
    gives percentages."""

    def __init__(self, ks: Sequence[int], count_empty_queries: bool = False):
        self.ks = tuple(ks)
        self.count_empty_queries = count_empty_queries
        self.hits = np.zeros(len(self.ks), dtype=np.int64)
        self.ap_sum = 0.0  # IRRA: mean precision at the matches
        self.ap_official_sum = 0.0  # PLIP / Market devkit trapezoid
        self.inp_sum = 0.0
        self.num_queries = 0
        self.num_empty = 0

    def add(self, ranks: np.ndarray, present: np.ndarray) -> None:
        """Add one block: ``ranks`` (B, P) ascending 1-based match ranks, ``present`` their mask."""
        n = present.sum(axis=1)
        has = n > 0
        self.num_queries += int(n.size)
        self.num_empty += int((~has).sum())
        r = ranks[has].astype(np.float64)
        m = present[has]
        n = n[has].astype(np.float64)
        if r.size == 0:
            return
        i = np.arange(1, r.shape[1] + 1, dtype=np.float64)[None, :]
        safe = np.where(m, r, 1.0)
        prec = i / safe
        before = np.where(safe > 1, (i - 1) / np.maximum(safe - 1, 1), 1.0)
        ap = np.where(m, prec, 0.0).sum(axis=1) / n
        ap_official = np.where(m, (before + prec) / 2, 0.0).sum(axis=1) / n
        last = np.take_along_axis(safe, (n.astype(np.int64) - 1)[:, None], axis=1)[:, 0]
        first = r[:, 0]
        self.ap_sum += float(ap.sum())
        self.ap_official_sum += float(ap_official.sum())
        self.inp_sum += float((n / last).sum())
        self.hits += np.array([(first <= k).sum() for k in self.ks], dtype=np.int64)

    def result(self) -> dict:
        """Metrics in percent plus query counts; warns about (and by default drops) empty queries."""
        scored = self.num_queries - self.num_empty
        if scored == 0:
            raise ValueError("no query has a matching gallery item; check the ids")
        if self.num_empty:
            action = "scored 0" if self.count_empty_queries else "excluded from the means"
            warnings.warn(
                f"{self.num_empty} of {self.num_queries} queries have no match in the gallery; "
                f"they are {action}",
                RuntimeWarning,
                stacklevel=3,
            )
        denom = self.num_queries if self.count_empty_queries else scored
        out = {f"R{k}": 100.0 * float(h) / denom for k, h in zip(self.ks, self.hits)}
        out["mAP"] = 100.0 * self.ap_sum / denom
        out["mAP_official"] = 100.0 * self.ap_official_sum / denom
        out["mINP"] = 100.0 * self.inp_sum / denom
        out["num_queries"] = self.num_queries
        out["num_queries_without_match"] = self.num_empty
        return out


def _similarity_blocks(q: np.ndarray, g: np.ndarray, block_size: int, normalize: bool):
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query and gallery dims differ: {q.shape[1]} vs {g.shape[1]}")
    dtype = np.result_type(q.dtype, g.dtype)
    q = q.astype(dtype, copy=False)
    g = g.astype(dtype, copy=False)
    if normalize:
        g = l2_normalize(g)
    gt = np.ascontiguousarray(g.T)
    for lo in range(0, q.shape[0], block_size):
        qb = q[lo : lo + block_size]
        if normalize:
            qb = l2_normalize(qb)
        yield lo, qb @ gt


def metrics_from_similarity(
    sim: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    block_size: int = 4096,
    method: RankMethod = "auto",
    count_empty_queries: bool = False,
) -> dict:
    """Retrieval metrics from a precomputed (Q, G) similarity matrix (higher = more similar)."""
    ks = _check_common(ks, block_size, method)
    sim = _as_embeddings(sim, "sim")
    q_ids = _as_ids(query_ids, sim.shape[0], "query_ids")
    g_ids = _as_ids(gallery_ids, sim.shape[1], "gallery_ids")
    index = GalleryIdIndex(g_ids)
    acc = RankingAccumulator(ks, count_empty_queries)
    for lo in range(0, sim.shape[0], block_size):
        cols, present = index.lookup(q_ids[lo : lo + block_size])
        acc.add(*match_ranks(sim[lo : lo + block_size], cols, present, method))
    return {**acc.result(), "num_gallery": int(sim.shape[1])}


def retrieval_metrics(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    block_size: int = 4096,
    normalize: bool = True,
    method: RankMethod = "auto",
    count_empty_queries: bool = False,
) -> dict:
    """Text->image retrieval metrics (R@k, mAP, mINP in percent) by identity, ranked blockwise.

    Query = caption embeddings, gallery = image embeddings; a gallery item is a match iff its id
    equals the query id. Returns ``R{k}`` for each k, ``mAP`` (IRRA), ``mAP_official`` (PLIP's
    trapezoid), ``mINP``, ``num_queries``, ``num_queries_without_match`` and ``num_gallery``.
    """
    ks = _check_common(ks, block_size, method)
    q = _as_embeddings(query_emb, "query_emb")
    g = _as_embeddings(gallery_emb, "gallery_emb")
    q_ids = _as_ids(query_ids, q.shape[0], "query_ids")
    g_ids = _as_ids(gallery_ids, g.shape[0], "gallery_ids")
    index = GalleryIdIndex(g_ids)
    acc = RankingAccumulator(ks, count_empty_queries)
    for lo, sim in _similarity_blocks(q, g, int(block_size), normalize):
        cols, present = index.lookup(q_ids[lo : lo + sim.shape[0]])
        acc.add(*match_ranks(sim, cols, present, method))
        del sim  # else the next block is computed while this one is still referenced
    return {**acc.result(), "num_gallery": int(g.shape[0])}


def similarity_topk(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    k: int,
    block_size: int = 4096,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k gallery indices (Q, k) int64 and cosine scores (Q, k), ties to the lower index."""
    q = _as_embeddings(query_emb, "query_emb")
    g = _as_embeddings(gallery_emb, "gallery_emb")
    if int(block_size) < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not 1 <= int(k) <= g.shape[0]:
        raise ValueError(f"k must be in [1, {g.shape[0]}] (the gallery size), got {k}")
    k = int(k)
    indices = np.empty((q.shape[0], k), dtype=np.int64)
    scores = np.empty((q.shape[0], k), dtype=np.result_type(q.dtype, g.dtype))
    for lo, sim in _similarity_blocks(q, g, int(block_size), normalize):
        idx = _topk_rows(sim, k)
        indices[lo : lo + sim.shape[0]] = idx
        scores[lo : lo + sim.shape[0]] = np.take_along_axis(sim, idx, axis=1)
        del sim  # else the next block is computed while this one is still referenced
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
