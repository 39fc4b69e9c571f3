"""Pedestrian attribute recognition on the PLIP image encoder: Linear + BN head, weighted BCE
(exp(1 - r) / exp(r) weights of "Rethinking PAR"), label-based mA and instance Acc/Prec/Rec/F1.

    python -m plip_jax.main --config configs/finetune_attributes.py:dataset=pa100k --workdir W \
        --config.init_checkpoint=PLIP_RN50.pth.tar --config.data.data_dir=D
Arguments: dataset (pa100k | peta | rap | synth_pedes), mini (the 50 procedural attribute labels),
few_shot, steps, batch. No --config.init_checkpoint = from-scratch baseline.
"""
from __future__ import annotations

import ml_collections

from plip_jax import config_parts


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = config_parts.parse_arg(arg, mini=False, dataset="pa100k", few_shot=1.0, steps=0, batch=0)
    c = config_parts.finetune_base(
        "finetune_attributes", a, batch_size=64,
        optim=dict(name="adamw", lr=1e-4, weight_decay=5e-4, schedule="cosine", warmup_epochs=1.0,
                   frozen=(r"^text/.*",), lr_multipliers=((r"^head/.*", 10.0),)))
    c.data.flip, c.data.pad_crop = True, True
    c.data.test_split = "test"
    c.train.epochs = 30.0
    c.losses = ml_collections.ConfigDict(dict(weighted=True))
    if a.mini:
        c.data.pad_crop = False
        c.optim.lr = 3e-4
        c.train.steps = a.steps or 150
    return c
