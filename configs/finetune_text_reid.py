"""Text-based Re-ID fine-tuning, CMPM + CMPC (the official Downstreams/CMPM-C/train.py defaults).

    python -m plip_jax.main --config configs/finetune_text_reid.py:dataset=cuhk_pedes --workdir W \
        --config.init_checkpoint=PLIP_RN50.pth.tar --config.data.data_dir=D
Arguments (`:k=v,...`): dataset (cuhk_pedes | icfg_pedes | rstp_reid | synth_pedes), mini
(the mini model on rendered data: the shifted CUHK-style stand-in unless dataset=icfg_pedes or
synth_pedes; a few CPU minutes), few_shot (fraction of training identities),
eval_dataset (cross-domain: train on `dataset`, evaluate on this builder's test split), steps, batch.
No --config.init_checkpoint = the from-scratch baseline (random image encoder; the text tower from
config.model.text.init: bert-base-uncased from the local HF cache or a folder, see plip_jax/config_parts.py).
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from plip_jax import config_parts


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = config_parts.parse_arg(arg, mini=False, dataset="cuhk_pedes", few_shot=1.0, eval_dataset="", steps=0,
                               batch=0)
    c = config_parts.finetune_base(
        "finetune_text_reid", a, batch_size=128,      # 4 GPUs x 32
        optim=dict(name="adan", lr=1e-4, weight_decay=0.02, schedule="step", warmup_epochs=5.0,
                   decay_epochs=(20.0,), frozen=(),
                   lr_multipliers=((r"^cmpc/.*", 10.0),)))   # CMPC class matrix at 10x
    c.data.sampler = "caption"                         # one caption per sample
    c.losses = ml_collections.ConfigDict(dict(cmpm=1.0, cmpc=1.0))
    # Cross-domain evaluation: another builder's split ('' = the training dataset).
    c.eval_data = ml_collections.ConfigDict(dict(
        name=a.eval_dataset, config="", split="test",
        data_dir=config_dict.placeholder(str), manual_dir=config_dict.placeholder(str)))
    if a.mini:
        c.model.text.frozen_layers = 4                 # CPU budget: train the last 2 MiniLM layers
        c.train.steps = a.steps or 120
        if a.dataset in config_parts.SHIFTED_DATASETS:   # the shifted stand-in (default): other people,
            c.data.name, c.data.procedural = a.dataset, {}   # scenes and caption language; its own defaults
        if a.eval_dataset in config_parts.SHIFTED_DATASETS:
            c.eval_data.config = "procedural"
    return c
