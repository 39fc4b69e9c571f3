"""Text-based Re-ID fine-tuning, CMPM + CMPC (the official Downstreams/CMPM-C/train.py defaults).

    python -m plip_jax.main --config configs/finetune_text_reid.py:dataset=cuhk_pedes --workdir W \
        --config.init_checkpoint=PLIP_RN50.pth.tar --config.data.data_dir=D
Arguments (`:k=v,...`): dataset (cuhk_pedes | icfg_pedes | rstp_reid | synth_pedes), mini
(procedural data, the mini model, < 10 CPU minutes), few_shot (fraction of training identities),
eval_dataset (cross-domain: train on `dataset`, evaluate on this builder's test split), steps, batch.
No --config.init_checkpoint = the from-scratch baseline (random image encoder; the text tower from
config.model.text.init: bert-base-uncased from the local HF cache or a folder, see plip_jax/config_parts.py).
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from plip_jax import config_parts as common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, mini=False, dataset="cuhk_pedes", few_shot=1.0, eval_dataset="", steps=0, batch=0)
    c = common.finetune_base("finetune_text_reid", a)
    c.data.batch_size = 128                            # 4 GPUs x 32
    c.data.sampler = "caption"                         # one caption per sample
    c.optim.name = "adan"
    c.optim.lr = 1e-4
    c.optim.scale_lr_by_batch = False
    c.optim.weight_decay = 0.02
    c.optim.schedule = "step"
    c.optim.warmup_epochs = 5.0
    c.optim.decay_epochs = (20.0,)
    c.optim.frozen = ()
    c.optim.lr_multipliers = ((r"^cmpc/.*", 10.0),)    # CMPC class matrix at 10x
    c.losses = ml_collections.ConfigDict(dict(cmpm=1.0, cmpc=1.0))
    # Cross-domain evaluation: another builder's split ('' = the training dataset).
    c.eval_data = ml_collections.ConfigDict(dict(
        name=a.eval_dataset, config="", split="test",
        data_dir=config_dict.placeholder(str), manual_dir=config_dict.placeholder(str)))
    if a.mini:
        c.data.name, c.data.config = "synth_pedes", "procedural"
        c.data.batch_size = a.batch or 32
        c.optim.name = "adamw"
        c.optim.lr = 1e-4
        c.optim.schedule = "cosine"
        c.optim.warmup_epochs = 0.0
        c.model.text.frozen_layers = 4                 # CPU budget: train the last 2 MiniLM layers
        c.train.steps = a.steps or 120
        c.train.eval_max_items = 600
    return c
