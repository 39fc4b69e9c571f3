"""Losses of the downstream heads: batch-hard triplet (BoT), label-smoothed identity cross-entropy
(BoT ``CrossEntropyLabelSmooth``) and weighted BCE for attributes ("Rethinking PAR" / DeepMAR
``exp`` weights). Pure functions of arrays, float32 math, scalar outputs."""
from __future__ import annotations

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def pairwise_distances(x: jax.Array, squared: bool = False) -> jax.Array:
    """(B, D) -> (B, B) Euclidean distances, sqrt(clip(d2, 1e-12)) as in BoT's ``euclidean_dist``."""
    x = x.astype(jnp.float32)
    sq = jnp.sum(x * x, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * jnp.matmul(x, x.T, precision=_HIGHEST)
    d2 = jnp.maximum(d2, 1e-12)
    return d2 if squared else jnp.sqrt(d2)


def batch_hard_mining(dist: jax.Array, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(hardest positive distance, hardest negative distance) per anchor; self counts as positive."""
    same = ids[:, None] == ids[None, :]
    ap = jnp.max(jnp.where(same, dist, -jnp.inf), axis=1)
    an = jnp.min(jnp.where(same, jnp.inf, dist), axis=1)
    return ap, an


def triplet_loss(features: jax.Array, ids: jax.Array, margin: float | None = 0.3,
                 normalize: bool = False) -> jax.Array:
    """Batch-hard triplet loss: mean(max(0, d_ap - d_an + margin)); margin None = soft margin
    mean(softplus(d_ap - d_an)). Anchors without a negative in the batch contribute 0."""
    if features.ndim != 2 or ids.shape != features.shape[:1]:
        raise ValueError(f"triplet_loss: features must be (B, D) and ids (B,), got "
                         f"{tuple(features.shape)} and {tuple(ids.shape)}")
    x = features.astype(jnp.float32)
    if normalize:
        x = x / (jnp.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
    ap, an = batch_hard_mining(pairwise_distances(x), ids)
    valid = jnp.isfinite(an)
    gap = ap - jnp.where(valid, an, 0.0)
    per = jax.nn.softplus(gap) if margin is None else jnp.maximum(gap + float(margin), 0.0)
    return jnp.sum(jnp.where(valid, per, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def label_smoothing_ce(logits: jax.Array, labels: jax.Array, epsilon: float = 0.1) -> jax.Array:
    """Cross-entropy against (1 - eps) one-hot + eps / C, averaged over the batch."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"label_smoothing_ce: logits must be (B, C) and labels (B,), got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    num_classes = logits.shape[1]
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=1)
    target = (1.0 - epsilon) * jax.nn.one_hot(labels, num_classes) + epsilon / num_classes
    return jnp.mean(jnp.sum(-target * log_p, axis=1))


def attribute_pos_weights(labels, eps: float = 0.0):
    """Positive ratio per attribute over known (0/1) labels of a training set (numpy, (K,))."""
    import numpy as np

    labels = np.asarray(labels)
    known = labels >= 0
    pos = ((labels == 1) & known).sum(0)
    return (pos / np.maximum(known.sum(0), 1)).astype(np.float32) + eps


def weighted_bce(logits: jax.Array, labels: jax.Array, pos_ratio: jax.Array | None = None) -> jax.Array:
    """Weighted binary cross-entropy summed over attributes, averaged over the batch.

    Weights (Rethinking PAR ``ratio2weight``): exp(1 - r_j) for a positive label, exp(r_j) for a
    negative one, r_j = positive ratio of attribute j in training (None: unweighted BCE). Labels
    of -1 (unknown) get weight 0.
    """
    if logits.ndim != 2 or labels.shape != logits.shape:
        raise ValueError(f"weighted_bce: logits and labels must both be (B, K), got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    z = logits.astype(jnp.float32)
    y = labels.astype(jnp.float32)
    known = (labels >= 0).astype(jnp.float32)
    y = jnp.clip(y, 0.0, 1.0)
    bce = jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
    if pos_ratio is None:
        w = jnp.ones_like(z)
    else:
        r = jnp.asarray(pos_ratio, jnp.float32)[None, :]
        w = jnp.exp(y * (1.0 - r) + (1.0 - y) * r)
    return jnp.sum(bce * w * known) / z.shape[0]
