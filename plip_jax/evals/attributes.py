"""Pedestrian attribute recognition metrics: label-based mA and instance-based Acc/Prec/Rec/F1.

Definitions follow "Rethinking of PAR" (``get_pedestrian_metrics``, also DeepMAR/APTM):
- mA = mean over attributes of (TP/P + TN/N) / 2 (an attribute with no positives or no
  negatives in the labels scores 0 on that half, as in the reference code);
- per sample: Acc = |pred ∩ gt| / |pred ∪ gt|, Prec = |∩| / |pred|, Rec = |∩| / |gt| (0 where the
  denominator is 0), averaged over samples; F1 = 2·Prec·Rec / (Prec + Rec) of those averages.
A prediction is positive when its score is strictly greater than ``threshold``. All in percent.
"""
from __future__ import annotations

import numpy as np


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def attribute_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict:
    """mA, Acc, Prec, Rec, F1 (percent) and ``mA_per_attribute`` (K,) for (N, K) scores vs labels.

    ``scores`` are probabilities (use ``threshold=0.0`` for logits); ``labels`` must be 0/1 (mask
    or drop unknown ``-1`` attributes before calling).
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels must both be (N, K) arrays of the same shape, "
            f"got {scores.shape} and {labels.shape}"
        )
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"need at least one sample and one attribute, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.number) or not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite numbers")
    if not np.isin(labels, (0, 1)).all():
        bad = np.unique(labels[~np.isin(labels, (0, 1))])[:5]
        raise ValueError(f"labels must be binary 0/1, found other values such as {bad.tolist()}")
    gt = labels.astype(bool)
    pred = scores > threshold

    tp = (gt & pred).sum(axis=0)
    tn = (~gt & ~pred).sum(axis=0)
    label_ma = (_safe_div(tp, gt.sum(axis=0)) + _safe_div(tn, (~gt).sum(axis=0))) / 2

    inter = (gt & pred).sum(axis=1)
    acc = _safe_div(inter, (gt | pred).sum(axis=1)).mean()
    prec = _safe_div(inter, pred.sum(axis=1)).mean()
    rec = _safe_div(inter, gt.sum(axis=1)).mean()
    f1 = float(_safe_div(2 * prec * rec, prec + rec))
    return {
        "mA": 100.0 * float(label_ma.mean()),
        "Acc": 100.0 * float(acc),
        "Prec": 100.0 * float(prec),
        "Rec": 100.0 * float(rec),
        "F1": 100.0 * f1,
        "mA_per_attribute": 100.0 * label_ma,
    }
