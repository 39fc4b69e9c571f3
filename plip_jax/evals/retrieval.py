"""Text-to-image person retrieval metrics (R@k, mAP, mINP) computed blockwise in numpy.

Every metric depends only on the 1-based ranks of the true matches of each query in the
deterministic ranking of the gallery (descending cosine similarity, ties broken by the lower
gallery index, i.e. a stable argsort of ``-sim``). So the gallery is scored in query blocks and
only the ranks of the matches are kept; a 100k x 100k ranking never holds the full matrix.

Conventions (see shared/PEERS.md section 4a):
- ``ap="irra"``: AP = mean over the matches of precision at each match (IRRA ``utils/metrics.py``).
- ``ap="trapezoid"``: Market-1501 devkit AP used by the official PLIP ``compute_mAP``: every match
  adds ``(1/ngood) * (prec_before + prec_at_match) / 2`` where ``prec_before`` is the precision at
  the position just before the match (``i / (r_i - 1)``), and 1 when the match is ranked first.
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

APConvention = Literal["irra", "trapezoid"]
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


def _check_common(ks: Sequence[int], ap: str, block_size: int, method: str) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks}")
    if ap not in ("irra", "trapezoid"):
        raise ValueError(f"ap must be 'irra' or 'trapezoid', got {ap!r}")
    if int(block_size) < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if method not in ("auto", "sort", "count"):
        raise ValueError(f"method must be 'auto', 'sort' or 'count', got {method!r}")
    return ks


def _padded_columns(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the True entries of each row, left-aligned in a (B, P) array + validity."""
    counts = mask.sum(axis=1)
    width = max(int(counts.max(initial=0)), 1)
    rows, cols = np.nonzero(mask)  # row-major: columns ascending within each row
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(rows.size) - starts[rows]
    out = np.zeros((mask.shape[0], width), dtype=np.int64)
    out[rows, slot] = cols
    return out, np.arange(width)[None, :] < counts[:, None]


def _ranks_by_sort(sim: np.ndarray, positive: np.ndarray, valid: np.ndarray | None):
    order = np.argsort(-sim, axis=1, kind="stable")
    pos_sorted = np.take_along_axis(positive, order, axis=1)
    if valid is None:
        rank_of_slot = np.broadcast_to(np.arange(1, sim.shape[1] + 1), sim.shape)
    else:
        rank_of_slot = np.cumsum(np.take_along_axis(valid, order, axis=1), axis=1)
    slots, present = _padded_columns(pos_sorted)
    return np.where(present, np.take_along_axis(rank_of_slot, slots, axis=1), 0), present


def _ranks_by_count(sim: np.ndarray, positive: np.ndarray, valid: np.ndarray | None):
    if valid is not None:  # junk items can then never be ranked before a (finite) match
        sim = np.where(valid, sim, -np.inf)
    cols, present = _padded_columns(positive)
    scores = np.take_along_axis(sim, cols, axis=1)
    b, p = cols.shape
    g = sim.shape[1]
    before = np.zeros((b, p), dtype=np.int64)
    step = max(1, _COUNT_BUDGET // max(p * g, 1))
    for lo in range(0, b, step):
        s = sim[lo : lo + step, None, :]
        t = scores[lo : lo + step, :, None]
        greater = np.count_nonzero(s > t, axis=2)
        ge = np.count_nonzero(s >= t, axis=2)
        before[lo : lo + step] = greater
        tied = np.nonzero((ge > greater + 1).any(axis=1))[0]
        if tied.size:  # equal scores: only the lower gallery indices come first
            rows = tied + lo
            lower = np.arange(g)[None, None, :] < cols[rows][:, :, None]
            eq = (sim[rows][:, None, :] == scores[rows][:, :, None]) & lower
            before[rows] += np.count_nonzero(eq, axis=2)
    big = np.iinfo(np.int64).max
    ranks = np.sort(np.where(present, before + 1, big), axis=1)  # padding sorts to the end
    present = np.arange(p)[None, :] < present.sum(axis=1)[:, None]
    return np.where(present, ranks, 0), present


def match_ranks(
    sim: np.ndarray,
    positive: np.ndarray,
    valid: np.ndarray | None = None,
    method: RankMethod = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks (ascending, left-aligned, (B, P)) of the positives of each row + their mask.

    The ranking is descending ``sim`` with ties to the lower gallery index; items where ``valid``
    is False (junk) are removed from the ranking before counting.
    """
    if valid is not None:
        positive = positive & valid
    if method == "auto":
        most = int(positive.sum(axis=1).max(initial=0))
        method = "count" if most <= _AUTO_MAX_MATCHES else "sort"
    if method == "sort":
        return _ranks_by_sort(sim, positive, valid)
    return _ranks_by_count(sim, positive, valid)


class RankingAccumulator:
    """Sums per-query R@k / AP / INP over blocks of match ranks; ``result()`` gives percentages."""

    def __init__(self, ks: Sequence[int], ap: APConvention, count_empty_queries: bool = False):
        self.ks = tuple(ks)
        self.ap = ap
        self.count_empty_queries = count_empty_queries
        self.hits = np.zeros(len(self.ks), dtype=np.int64)
        self.ap_sum = 0.0
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
        if self.ap == "irra":
            ap = np.where(m, prec, 0.0).sum(axis=1) / n
        else:
            before = np.where(safe > 1, (i - 1) / np.maximum(safe - 1, 1), 1.0)
            ap = np.where(m, (before + prec) / 2, 0.0).sum(axis=1) / n
        last = np.take_along_axis(safe, (n.astype(np.int64) - 1)[:, None], axis=1)[:, 0]
        first = r[:, 0]
        self.ap_sum += float(ap.sum())
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
    ap: APConvention = "irra",
    block_size: int = 4096,
    method: RankMethod = "auto",
    count_empty_queries: bool = False,
) -> dict:
    """Retrieval metrics from a precomputed (Q, G) similarity matrix (higher = more similar)."""
    ks = _check_common(ks, ap, block_size, method)
    sim = _as_embeddings(sim, "sim")
    q_ids = _as_ids(query_ids, sim.shape[0], "query_ids")
    g_ids = _as_ids(gallery_ids, sim.shape[1], "gallery_ids")
    acc = RankingAccumulator(ks, ap, count_empty_queries)
    for lo in range(0, sim.shape[0], block_size):
        block = sim[lo : lo + block_size]
        positive = q_ids[lo : lo + block_size, None] == g_ids[None, :]
        acc.add(*match_ranks(block, positive, None, method))
    return {**acc.result(), "num_gallery": int(sim.shape[1])}


def retrieval_metrics(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    ap: APConvention = "irra",
    block_size: int = 4096,
    normalize: bool = True,
    method: RankMethod = "auto",
    count_empty_queries: bool = False,
) -> dict:
    """Text->image retrieval metrics (R@k, mAP, mINP in percent) by identity, ranked blockwise.

    Query = caption embeddings, gallery = image embeddings; a gallery item is a match iff its id
    equals the query id. Returns ``R{k}`` for each k, ``mAP``, ``mINP``, ``num_queries``,
    ``num_queries_without_match`` and ``num_gallery``.
    """
    ks = _check_common(ks, ap, block_size, method)
    q = _as_embeddings(query_emb, "query_emb")
    g = _as_embeddings(gallery_emb, "gallery_emb")
    q_ids = _as_ids(query_ids, q.shape[0], "query_ids")
    g_ids = _as_ids(gallery_ids, g.shape[0], "gallery_ids")
    acc = RankingAccumulator(ks, ap, count_empty_queries)
    for lo, sim in _similarity_blocks(q, g, int(block_size), normalize):
        positive = q_ids[lo : lo + sim.shape[0], None] == g_ids[None, :]
        acc.add(*match_ranks(sim, positive, None, method))
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
    return indices, scores


def _topk_rows(sim: np.ndarray, k: int) -> np.ndarray:
    """Exact stable top-k per row: everything above the k-th score, then ties by lower index."""
    g = sim.shape[1]
    if k == g:
        return np.argsort(-sim, axis=1, kind="stable")
    kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1 : k]
    above = sim > kth
    tied = sim == kth
    need = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
    cand = np.nonzero(chosen)[1].reshape(sim.shape[0], k)  # ascending index within each row
    order = np.argsort(-np.take_along_axis(sim, cand, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cand, order, axis=1)
