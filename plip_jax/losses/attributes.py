"""Image-guided attribute prediction (IAP) loss and accuracy over masked token positions (PLIP paper Sec. 2.2, Eq. 3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _check(logits: jax.Array, labels: jax.Array, weights: jax.Array, what: str) -> None:
    if logits.ndim != 3 or labels.shape != logits.shape[:2] or weights.shape != logits.shape[:2]:
        raise ValueError(f"{what}: expected logits (B, M, V), labels (B, M), weights (B, M); got "
                         f"{tuple(logits.shape)}, {tuple(labels.shape)}, {tuple(weights.shape)}")


def _weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    # Global weighted mean over all positions of the batch; 0 (not NaN) when no weight is positive.
    weights = weights.astype(jnp.float32)
    total = jnp.sum(weights)
    return jnp.where(total > 0, jnp.sum(values * weights) / jnp.where(total > 0, total, 1.0), 0.0)


def attribute_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Vocabulary cross-entropy averaged over the masked positions (weight > 0) of the whole batch."""
    _check(logits, labels, weights, "attribute_loss")
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels.astype(jnp.int32))
    return _weighted_mean(ce, weights)


def attribute_accuracy(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Top-1 accuracy of the predicted tokens over the masked positions (a training metric)."""
    _check(logits, labels, weights, "attribute_accuracy")
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return _weighted_mean(correct, weights)
