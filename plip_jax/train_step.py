"""The pre-training step: one pure function (state, batch, rng) -> (state, metrics).

Losses: L = L_ivlc + 0.02 L_tic + 0.1 L_iap (PLIP_SPEC 2.4), tasks with weight 0 are not built.
A non-finite loss leaves the state untouched and raises the `nonfinite` flag, so the loop can stop
with the last good parameters and checkpoint intact.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from plip_jax.losses.attributes import attribute_loss
from plip_jax.losses.cmpm import cmpm_loss
from plip_jax.losses.colorization import colorization_loss
from plip_jax.losses.total import total_loss
from plip_jax.state import TrainState


def active_tasks(weights: dict) -> tuple[str, ...]:
    """Tasks whose loss weight is non-zero, in canonical order."""
    return tuple(t for t in ("ivlc", "tic", "iap") if float(weights.get(t, 0.0)) > 0.0)


def compute_losses(outputs: dict, batch: dict, loss_cfg) -> tuple[jax.Array, dict]:
    """Per-task losses from the model outputs, then the weighted total."""
    weights = {k: float(v) for k, v in dict(loss_cfg.weights).items()}
    parts = {}
    if "image_emb" in outputs and weights.get("ivlc", 0) > 0:
        parts["ivlc"] = cmpm_loss(outputs["image_emb"], outputs["text_emb"], outputs["image_ids"],
                                  text_ids=batch["id"],
                                  eps=float(loss_cfg.cmpm_eps), cosine_logits=bool(loss_cfg.cosine_logits),
                                  cosine_scale=float(getattr(loss_cfg, "cosine_scale", 1.0)))
    if "colour_pred" in outputs:
        parts["tic"] = colorization_loss(outputs["colour_pred"], outputs["target"],
                                         reduction=str(loss_cfg.tic_reduction))
    if "iap_logits" in outputs:
        parts["iap"] = attribute_loss(outputs["iap_logits"], outputs["iap_labels"], outputs["iap_weights"])
    return total_loss(parts, {k: v for k, v in weights.items() if k in parts})


def make_train_step(model, tx: optax.GradientTransformation, loss_cfg,
                    schedule: Callable[[jax.Array], jax.Array]) -> Callable:
    """Build the pure step function (jit it with shardings in the caller)."""

    def step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(rng, state.step)

        def loss_fn(params):
            outputs, mutated = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, batch, train=True,
                mutable=["batch_stats"], rngs={"dropout": rng})
            loss, metrics = compute_losses(outputs, batch, loss_cfg)
            return loss, (metrics, mutated["batch_stats"])

        (loss, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = TrainState(step=state.step + 1, params=keep(params, state.params),
                               batch_stats=keep(batch_stats, state.batch_stats),
                               opt_state=keep(opt_state, state.opt_state))
        metrics = dict(metrics)
        metrics["grad_norm"] = optax.global_norm(grads)
        metrics["lr"] = schedule(state.step)
        metrics["nonfinite"] = jnp.logical_not(finite)
        return new_state, metrics

    return step


def jit_train_step(step: Callable, state_shardings: Any, batch_sharding: Any, mesh) -> Callable:
    """jit with explicit in/out shardings and the state donated."""
    repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(step, in_shardings=(state_shardings, batch_sharding, repl),
                   out_shardings=(state_shardings, repl), donate_argnums=(0,))
