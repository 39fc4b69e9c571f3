"""The optax chain from config: Adan (paper; the official form, plip_jax/adan.py) or AdamW,
warm-up then step or cosine decay, clipping, frozen parameters (no update, no optimizer state),
per-group learning-rate multipliers and gradient accumulation. Groups are regexes over
'/'-joined parameter names."""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import optax

from plip_jax.core import adan as adan_lib
from plip_jax.core.tree import map_with_names, matches_any

FROZEN = "frozen"


def make_schedule(cfg, steps_per_epoch: int, total_steps: int, global_batch: int) -> optax.Schedule:
    """Linear warm-up to the base lr, then MultiStep (x decay_factor at epochs) or cosine to 0."""
    base = float(cfg.lr) * (global_batch / 512.0 if cfg.scale_lr_by_batch else 1.0)
    warmup = int(round(float(cfg.warmup_epochs) * steps_per_epoch))
    warmup = min(warmup, max(total_steps - 1, 0))
    if cfg.schedule == "step":
        boundaries = {int(round(e * steps_per_epoch)): float(cfg.decay_factor) for e in cfg.decay_epochs}
        after = optax.piecewise_constant_schedule(base, {max(b - warmup, 1): f for b, f in boundaries.items()})
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(base, max(total_steps - warmup, 1))
    elif cfg.schedule == "constant":
        after = optax.constant_schedule(base)
    else:
        raise ValueError(f"config.optim.schedule must be 'step', 'cosine' or 'constant', got {cfg.schedule!r}")
    if warmup <= 0:
        return after
    # The official gradual warm-up starts at base/warmup_epochs; we ramp per step from base/warmup.
    ramp = optax.linear_schedule(base / warmup, base, warmup)
    return optax.join_schedules([ramp, after], [warmup])


def param_labels(params: Any, cfg) -> Any:
    """'frozen' or 'lr_x<multiplier>' for every parameter."""
    def label(name: str, _: Any) -> str:
        if matches_any(name, cfg.frozen):
            return FROZEN
        for pattern, mult in cfg.lr_multipliers:
            if matches_any(name, [pattern]):
                return f"lr_x{float(mult)}"
        return "lr_x1.0"
    return map_with_names(label, params)


def _base_optimizer(cfg, lr: optax.Schedule, decay_mask: Any) -> optax.GradientTransformation:
    if cfg.name == "adan":   # the official (sail-sg) Adan, not optax.adan: see plip_jax/adan.py
        return adan_lib.adan(lr, b1=cfg.b1, b2=cfg.b2, b3=cfg.b3, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, mask=decay_mask,
                             no_prox=bool(getattr(cfg, "no_prox", False)))
    if cfg.name == "adamw":
        return optax.adamw(lr, b1=0.9, b2=0.999, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    if cfg.name == "sgd":
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
                           optax.sgd(lr, momentum=0.9))
    raise ValueError(f"config.optim.name must be 'adan', 'adamw' or 'sgd', got {cfg.name!r}")


def make_optimizer(cfg, params: Any, steps_per_epoch: int, total_steps: int,
                   global_batch: int) -> tuple[optax.GradientTransformation, Callable]:
    """(tx, schedule) for a params (shape) tree."""
    schedule = make_schedule(cfg, steps_per_epoch, total_steps, global_batch)
    labels = param_labels(params, cfg)
    decay_mask = map_with_names(lambda n, x: len(getattr(x, "shape", ())) > 1
                                and not matches_any(n, cfg.no_decay), params)
    transforms: dict[str, optax.GradientTransformation] = {FROZEN: optax.set_to_zero()}
    for lab in sorted(set(jax.tree.leaves(labels))):   # sorted: same HLO in every process (cache hits)
        if lab == FROZEN:
            continue
        mult = float(lab[len("lr_x"):])
        transforms[lab] = _base_optimizer(cfg, lambda s, m=mult: schedule(s) * m, decay_mask)
    tx = optax.partition(transforms, labels)
    if cfg.clip_norm and cfg.clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(float(cfg.clip_norm)), tx)
    if int(cfg.grad_accum_steps) > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=int(cfg.grad_accum_steps))
    return tx, schedule


def count_params(params: Any, labels: Any) -> dict[str, int]:
    """Parameter counts per label (for the start-of-run summary)."""
    out: dict[str, int] = {}
    for p, lab in zip(jax.tree.leaves(params), jax.tree.leaves(labels)):
        out[lab] = out.get(lab, 0) + math.prod(p.shape)
    return out
