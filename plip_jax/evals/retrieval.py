"""Text-to-image person retrieval metrics (R@k, mAP, mAP_official, mINP): the public metrics API.

Each metric is a function of the 1-based ranks of every query's true matches in the ranking of
the gallery (descending cosine similarity, ties to the lower gallery index), which
:mod:`plip_jax.evals.ranking` computes blockwise on numpy or jax (its docstring has the method and
the backends); this module turns those ranks into metrics, in percent.

Both AP conventions come from the same ranks (docs/method.md "Data and evaluation protocol"), so every result
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

``similarity_topk`` (exact top-k gallery items per query) and ``l2_normalize`` live in
:mod:`plip_jax.evals.ranking` and are part of this API too.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from plip_jax.evals.ranking import (
    Backend,
    GalleryIdIndex,
    RankMethod,
    as_embeddings,
    as_ids,
    l2_normalize,
    ranks_from_embeddings,
    ranks_from_similarity,
    similarity_topk,
)

__all__ = ["RankingAccumulator", "check_metric_args", "l2_normalize", "metrics_from_similarity", "retrieval_metrics",
           "similarity_topk"]



def check_metric_args(ks: Sequence[int], block_size: int, method: str) -> tuple[int, ...]:
    """The R@k cut-offs as a tuple of ints; a ValueError for bad `ks`, `block_size` or `method`."""
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks}")
    if int(block_size) < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if method not in ("auto", "sort", "count"):
        raise ValueError(f"method must be 'auto', 'sort' or 'count', got {method!r}")
    return ks


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


def metrics_from_similarity(
    sim: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    block_size: int = 4096,
    method: RankMethod = "auto",
    count_empty_queries: bool = False,
    backend: Backend = "auto",
) -> dict:
    """Retrieval metrics from a precomputed (Q, G) similarity matrix (higher = more similar).

    ``backend='jax'`` sends each block to the default jax device and counts there."""
    ks = check_metric_args(ks, block_size, method)
    sim = as_embeddings(sim, "sim")
    q_ids = as_ids(query_ids, sim.shape[0], "query_ids")
    g_ids = as_ids(gallery_ids, sim.shape[1], "gallery_ids")
    index = GalleryIdIndex(g_ids)
    acc = RankingAccumulator(ks, count_empty_queries)
    for ranks, present in ranks_from_similarity(sim, q_ids, index, block_size, method, backend):
        acc.add(ranks, present)
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
    backend: Backend = "auto",
) -> dict:
    """Text->image retrieval metrics (R@k, mAP, mINP in percent) by identity, ranked blockwise.

    Query = caption embeddings, gallery = image embeddings; a gallery item is a match iff its id
    equals the query id. Returns ``R{k}`` for each k, ``mAP`` (IRRA), ``mAP_official`` (PLIP's
    trapezoid), ``mINP``, ``num_queries``, ``num_queries_without_match`` and ``num_gallery``.
    ``block_size`` query rows are scored at a time (peak memory ~ block_size x G scores);
    ``backend`` is described in :mod:`plip_jax.evals.ranking`.
    """
    ks = check_metric_args(ks, block_size, method)
    q = as_embeddings(query_emb, "query_emb")
    g = as_embeddings(gallery_emb, "gallery_emb")
    q_ids = as_ids(query_ids, q.shape[0], "query_ids")
    g_ids = as_ids(gallery_ids, g.shape[0], "gallery_ids")
    index = GalleryIdIndex(g_ids)
    acc = RankingAccumulator(ks, count_empty_queries)
    for ranks, present in ranks_from_embeddings(q, g, q_ids, index, block_size, normalize, method, backend):
        acc.add(ranks, present)
    return {**acc.result(), "num_gallery": int(g.shape[0])}
