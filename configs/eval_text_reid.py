"""Zero-shot (or fine-tuned) text-based person Re-ID evaluation of a checkpoint.

python -m plip_jax.main --config configs/eval_text_reid.py --workdir DIR \
    --config.checkpoint=PATH --config.dataset=cuhk_pedes [--config.data_dir=D]
PATH: a run workdir, an Orbax step dir, or an official .pth.tar. Dataset: any text-ReID builder
name (`cuhk_pedes`, `icfg_pedes`, `rstp_reid`, `synth_pedes` = the procedural held-out split).
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "eval_text_reid"
    c.checkpoint = config_dict.placeholder(str)
    c.dataset = "synth_pedes"
    c.dataset_config = config_dict.placeholder(str)   # default: 'procedural' for synth_pedes
    c.split = "test"                                   # report on test; select models on 'val'
    c.data_dir = config_dict.placeholder(str)
    c.manual_dir = config_dict.placeholder(str)
    # Builder parameters of synth_pedes/procedural (the defaults build the default config).
    c.procedural = ml_collections.ConfigDict(dict(
        num_identities=2000, images_per_identity=6, image_height=128, image_width=64, seed=0,
        num_val_ids=200, num_test_ids=200))
    c.batch_size = 128
    c.max_items = 0                                    # 0 = the whole split
    c.recipe = config_dict.placeholder(str)            # override the checkpoint's recipe
    return c
