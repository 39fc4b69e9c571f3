"""Weighted sum of the pretext losses, L = L_ivlc + 0.02 L_tic + 0.1 L_iap (PLIP paper Eq. 7, Tab. 17)."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

TASKS = ("ivlc", "tic", "iap")
DEFAULT_WEIGHTS: dict[str, float] = {"ivlc": 1.0, "tic": 0.02, "iap": 0.1}


def active_tasks(weights: Mapping[str, float] | None = None) -> tuple[str, ...]:
    """Names of the tasks with a non-zero weight (the train step computes only these)."""
    weights = DEFAULT_WEIGHTS if weights is None else weights
    _check_names(weights, "weights")
    return tuple(t for t in TASKS if float(weights.get(t, 0.0)) != 0.0)


def total_loss(parts: Mapping[str, jax.Array],
               weights: Mapping[str, float] | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted sum of the loss parts; tasks whose weight is 0 or absent are skipped (ablations).

    ``weights`` are static Python floats (from the config); None means the paper's defaults.
    Returns (loss, metrics) with metrics ``loss_<task>`` for every given part and ``loss`` (total).
    """
    weights = DEFAULT_WEIGHTS if weights is None else weights
    _check_names(parts, "parts")
    active = active_tasks(weights)
    missing = [t for t in active if t not in parts]
    if missing:
        raise ValueError(f"total_loss: tasks {missing} have a non-zero weight but no loss part "
                         f"(parts given: {sorted(parts)})")
    loss = jnp.zeros((), jnp.float32)
    for task in active:
        loss = loss + float(weights[task]) * jnp.asarray(parts[task], jnp.float32)
    metrics = {f"loss_{t}": jnp.asarray(v, jnp.float32) for t, v in parts.items()}
    metrics["loss"] = loss
    return loss, metrics


def _check_names(mapping: Mapping[str, object], what: str) -> None:
    unknown = sorted(set(mapping) - set(TASKS))
    if unknown:
        raise ValueError(f"total_loss: unknown task name(s) {unknown} in {what}; valid names are {TASKS}")
