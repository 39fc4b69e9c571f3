"""Text-guided colorization (TIC) loss: distance between predicted and true colour images (PLIP paper Sec. 2.1, Eq. 1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

REDUCTIONS = ("sum_sq", "l2", "mean")


def colorization_loss(pred: jax.Array, target: jax.Array, reduction: str = "sum_sq") -> jax.Array:
    """Batch mean of a per-image distance: 'sum_sq' = squared L2, 'l2' = L2 norm, 'mean' = plain MSE.

    The paper's Eq. 1 is a per-sample Euclidean distance averaged over the batch; the reduction is
    not stated, so it is configurable (`config.losses.tic_reduction`; docs/method.md "Text-guided image colorization").
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown colorization reduction {reduction!r}; choose one of {REDUCTIONS}")
    if pred.shape != target.shape or pred.ndim < 2:
        raise ValueError(f"colorization_loss: pred and target must have the same (B, ...) shape, "
                         f"got {tuple(pred.shape)} and {tuple(target.shape)}")
    diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
    if reduction == "mean":
        return jnp.mean(jnp.square(diff))
    sum_sq = jnp.sum(jnp.square(diff).reshape(diff.shape[0], -1), axis=1)
    if reduction == "sum_sq":
        return jnp.mean(sum_sq)
    # 'l2': sqrt with a zero-safe gradient (d sqrt(s)/ds is infinite at s = 0).
    positive = sum_sq > 0
    norms = jnp.where(positive, jnp.sqrt(jnp.where(positive, sum_sq, 1.0)), 0.0)
    return jnp.mean(norms)
