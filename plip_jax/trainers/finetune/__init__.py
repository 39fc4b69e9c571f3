"""Downstream fine-tuning of the PLIP encoders (docs/downstream.md) on the pre-training engine, three tasks:

- ``finetune_text_reid`` (text_reid.py): CMPM + CMPC with the official Downstreams/CMPM-C/train.py defaults
  (docs/method.md "Recipes"); few-shot and cross-domain.
- ``finetune_image_reid`` (image_reid.py): BoT strong baseline (BNNeck, label-smoothed CE + batch-hard
  triplet, P x K batches); Market-1501 query/gallery protocol.
- ``finetune_attributes`` (attributes.py): attribute classifier (Linear + BN), weighted BCE; mA/Acc/F1.

Each run starts from ``config.init_checkpoint`` (a workdir, an Orbax step dir or an official
.pth.tar) or from scratch (None: random image encoder, text tower from ``config.model.text.init``),
evaluates before training (zero-shot column), trains with checkpoints, resume, SIGTERM and the
non-finite guard of ``plip_jax.core.loop`` (common.py drives it), evaluates after, and writes
WORKDIR/eval.json; every checkpoint loads with ``plip_jax.from_pretrained(WORKDIR)``.
"""
from __future__ import annotations

import os
from pathlib import Path

import jax
import ml_collections

from plip_jax.core import sharding as shd
from plip_jax.core.errors import ConfigError
from plip_jax.models import text_tower
from plip_jax.trainers import build
from plip_jax.trainers.finetune import attributes, common, image_reid, text_reid

TASKS = {"finetune_text_reid": text_reid, "finetune_image_reid": image_reid, "finetune_attributes": attributes}
MODES = tuple(TASKS)


def validate(config: ml_collections.ConfigDict) -> None:
    """One-line errors for configs that cannot run, before anything is read or compiled."""
    if config.mode not in MODES:
        raise ConfigError(f"config.mode={config.mode!r}; expected one of {MODES}")
    if not 0.0 < float(config.few_shot) <= 1.0:
        raise ConfigError(f"config.few_shot must be a fraction in (0, 1], got {config.few_shot}")
    if "ap" in config:
        raise ConfigError("config.ap was removed: every result has both mAP (IRRA / BoT) and "
                          "mAP_official (the official PLIP / Market devkit trapezoid AP); drop the key")
    batch = int(config.data.batch_size)
    if batch <= 0:
        raise ConfigError(f"config.data.batch_size must be positive, got {batch}")
    try:
        mesh = build.mesh_of(config)
        shd.check_batch_size(batch, mesh, jax.process_count())
    except ValueError as e:
        raise ConfigError(f"config.mesh / config.data.batch_size: {e}") from None
    t = config.train
    if int(t.log_every) < 1 or int(t.ckpt_every) < 0 or int(t.keep_checkpoints) < 1:
        raise ConfigError(f"config.train needs log_every >= 1, ckpt_every >= 0 (0: at the end only) and "
                          f"keep_checkpoints >= 1; got {t.log_every}, {t.ckpt_every}, {t.keep_checkpoints}")
    if config.init_checkpoint and not Path(config.init_checkpoint).exists():
        raise ConfigError(f"config.init_checkpoint={config.init_checkpoint}: no such file or directory")
    if not config.init_checkpoint:  # from scratch: pretrained text weights, or a named random tower
        trains_text = TASKS[config.mode].TRAINS_TEXT  # image-only tasks keep the tower untrained
        try:
            text_tower.validate(config.model, tuple(config.optim.frozen) if trains_text else None)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if config.mode == "finetune_image_reid" and batch % int(config.data.k_images):
        raise ConfigError(f"config.data.batch_size={batch} must be a multiple of "
                          f"config.data.k_images={config.data.k_images} (P x K sampler)")


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Entry point of `python -m plip_jax.main` for modes finetune_*; returns the eval.json dict."""
    validate(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json(indent=2))
    task = TASKS[config.mode]
    return common.finetune(config, workdir, task.build, with_text=task.TRAINS_TEXT)


__all__ = ["MODES", "TASKS", "run", "validate"]
