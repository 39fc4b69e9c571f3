"""The pre-training objective: L = L_ivlc + 0.02 L_tic + 0.1 L_iap (PLIP paper Eq. 7, Tab. 17; docs/method.md); tasks
with weight 0 are not built. The step around it (gradients, optimizer, non-finite guard) is the
engine's (plip_jax.core.step), shared with the fine-tunes."""
from __future__ import annotations

from typing import Callable

import jax
import optax

from plip_jax.core.step import make_step
from plip_jax.losses.attributes import attribute_loss
from plip_jax.losses.cmpm import cmpm_loss
from plip_jax.losses.colorization import colorization_loss
from plip_jax.losses.total import total_loss


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


def pretrain_loss(model, loss_cfg) -> Callable:
    """The pre-training objective as the engine's loss function (plip_jax.core.step)."""

    def loss_fn(params, batch_stats, batch: dict, rng: jax.Array):
        outputs, mutated = model.apply(
            {"params": params, "batch_stats": batch_stats}, batch, train=True,
            mutable=["batch_stats"], rngs={"dropout": rng})
        loss, metrics = compute_losses(outputs, batch, loss_cfg)
        return loss, (metrics, mutated["batch_stats"])

    return loss_fn


def make_train_step(model, tx: optax.GradientTransformation, loss_cfg,
                    schedule: Callable[[jax.Array], jax.Array]) -> Callable:
    """The pure pre-training step (jit it with `plip_jax.core.step.jit_step`)."""
    return make_step(pretrain_loss(model, loss_cfg), tx, schedule)

