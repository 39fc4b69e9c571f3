"""Image->image ReID metrics (CMC R@k, mAP, mINP) with the Market-1501 camera/junk rule.

For each query the gallery items with the same id *and* the same camera are removed from the
ranking (junk), as are gallery items with a negative id (Market-1501 ``-1`` junk images). All ids
>= 0 are ordinary identities: Market's ``0000`` distractors never share a query id, so they stay
in the ranking as negatives (this also keeps MSMT17, whose real ids start at 0, correct). Matches
are the same id seen by a different camera. Ranking (:mod:`plip_jax.evals.ranking`), AP conventions
and percent outputs (:mod:`plip_jax.evals.retrieval`) are those of text retrieval: ``mAP`` is the
non-interpolated AP (BoT / torchreid), ``mAP_official`` the trapezoid AP of the Market devkit and the
official PLIP scripts.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from plip_jax.evals.ranking import (
    GalleryIdIndex,
    RankMethod,
    as_embeddings,
    as_ids,
    compact,
    match_ranks,
    similarity_blocks,
)
from plip_jax.evals.retrieval import RankingAccumulator, check_metric_args


def _market_block(
    sim: np.ndarray,
    index: GalleryIdIndex,
    q_ids: np.ndarray,
    q_cams: np.ndarray,
    g_cams: np.ndarray,
    global_junk: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the Market rule to one block: junk -> -inf in ``sim``; return it + match columns."""
    cols, present = index.lookup(q_ids)
    same_cam = g_cams[cols] == q_cams[:, None]
    sim = np.array(sim, copy=True)
    sim[:, global_junk] = -np.inf
    rows, slots = np.nonzero(present & same_cam)
    sim[rows, cols[rows, slots]] = -np.inf
    return (sim, *compact(cols, present & ~same_cam, index.num_gallery))


def _check_reid_labels(q_ids, g_ids, q_cams, g_cams, nq: int, ng: int):
    q_ids = as_ids(q_ids, nq, "q_ids")
    g_ids = as_ids(g_ids, ng, "g_ids")
    q_cams = as_ids(q_cams, nq, "q_cams")
    g_cams = as_ids(g_cams, ng, "g_cams")
    if (q_ids < 0).any():
        raise ValueError("q_ids must be >= 0: negative ids mark junk images, which cannot be queries")
    if (q_cams < 0).any() or (g_cams < 0).any():
        raise ValueError(
            "camera ids must be known (>= 0) for the same-camera rule; "
            "use retrieval_metrics for camera-free ranking"
        )
    return q_ids, g_ids, q_cams, g_cams


def reid_metrics_from_similarity(sim: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray, q_cams: np.ndarray,
                                 g_cams: np.ndarray, ks: Sequence[int] = (1, 5, 10), block_size: int = 4096,
                                 method: RankMethod = "auto", count_empty_queries: bool = False) -> dict:
    """Market-1501 ReID metrics from a precomputed (Q, G) similarity (higher = more similar)."""
    ks = check_metric_args(ks, block_size, method)
    sim = as_embeddings(sim, "sim")
    q_ids, g_ids, q_cams, g_cams = _check_reid_labels(
        q_ids, g_ids, q_cams, g_cams, sim.shape[0], sim.shape[1]
    )
    blocks = ((lo, sim[lo:lo + block_size]) for lo in range(0, sim.shape[0], block_size))
    return _market_metrics(blocks, q_ids, g_ids, q_cams, g_cams, ks, method, count_empty_queries)


def reid_metrics(query_emb: np.ndarray, gallery_emb: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray,
                 q_cams: np.ndarray, g_cams: np.ndarray, ks: Sequence[int] = (1, 5, 10), block_size: int = 4096,
                 normalize: bool = True, method: RankMethod = "auto", count_empty_queries: bool = False) -> dict:
    """Image ReID metrics (R@k, mAP, mAP_official, mINP in percent) on cosine, Market-1501 protocol.

    Returns ``R{k}``, ``mAP``, ``mAP_official``, ``mINP``, ``num_queries``, ``num_queries_without_match`` and
    ``num_gallery``; queries left without any cross-camera match are handled as in
    :func:`plip_jax.evals.retrieval.retrieval_metrics`.
    """
    ks = check_metric_args(ks, block_size, method)
    q = as_embeddings(query_emb, "query_emb")
    g = as_embeddings(gallery_emb, "gallery_emb")
    q_ids, g_ids, q_cams, g_cams = _check_reid_labels(
        q_ids, g_ids, q_cams, g_cams, q.shape[0], g.shape[0]
    )
    blocks = similarity_blocks(q, g, int(block_size), normalize)
    return _market_metrics(blocks, q_ids, g_ids, q_cams, g_cams, ks, method, count_empty_queries)


def _market_metrics(blocks, q_ids, g_ids, q_cams, g_cams, ks, method, count_empty_queries) -> dict:
    """Accumulate the Market-1501 ranks of (first query row, similarity block) pairs."""
    index, junk = GalleryIdIndex(g_ids), np.nonzero(g_ids < 0)[0]
    acc = RankingAccumulator(ks, count_empty_queries)
    for lo, sim in blocks:
        sl = slice(lo, lo + sim.shape[0])
        block = _market_block(sim, index, q_ids[sl], q_cams[sl], g_cams, junk)
        acc.add(*match_ranks(*block, method))
        del sim, block  # free this block before the next one is computed
    return {**acc.result(), "num_gallery": int(len(g_ids))}
