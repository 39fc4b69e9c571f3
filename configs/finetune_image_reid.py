"""Image Re-ID fine-tuning of the PLIP image encoder: BoT strong baseline (BNNeck, label-smoothed
identity CE + batch-hard triplet, P x K batches), Market-1501 evaluation protocol.

    python -m plip_jax.main --config configs/finetune_image_reid.py:dataset=market1501 --workdir W \
        --config.init_checkpoint=PLIP_RN50.pth.tar --config.data.data_dir=D
Arguments: dataset (market1501 | dukemtmc | synth_pedes), mini (procedural images with their camera
ids; test split -> query/gallery by camera, see plip_jax.data.downstream.split_query_gallery),
few_shot, steps, batch. No --config.init_checkpoint = from-scratch baseline.
"""
from __future__ import annotations

import ml_collections

from plip_jax import config_parts as common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, mini=False, dataset="market1501", few_shot=1.0, steps=0, batch=0)
    c = common.finetune_base("finetune_image_reid", a)
    c.data.batch_size = a.batch or 64                  # P=16 identities x K=4 images
    c.data.k_images = 4
    c.data.flip, c.data.pad_crop, c.data.random_erasing = True, True, True
    c.data.train_split = "train"
    c.data.query_split = "query" if a.dataset in ("market1501", "dukemtmc") else ""
    c.data.gallery_split = "gallery" if a.dataset in ("market1501", "dukemtmc") else ""
    c.eval_feature = "bn"                              # 'bn' (after BNNeck) | 'raw' (encoder output)
    c.optim.name = "adamw"
    c.optim.lr = 3.5e-4
    c.optim.scale_lr_by_batch = False
    c.optim.weight_decay = 5e-4
    c.optim.schedule = "step"
    c.optim.warmup_epochs = 10.0
    c.optim.decay_epochs = (40.0, 70.0)
    c.optim.frozen = (r"^text/.*",)
    c.optim.lr_multipliers = ()
    c.train.epochs = 120.0
    c.losses = ml_collections.ConfigDict(dict(id_weight=1.0, triplet_weight=1.0, label_smoothing=0.1,
                                              triplet_margin=0.3))   # margin <= 0: soft margin
    if a.mini:
        c.data.batch_size = a.batch or 32              # P=8 x K=4
        c.data.pad_crop, c.data.random_erasing = False, False
        c.data.query_split = c.data.gallery_split = ""  # procedural test split, by camera
        c.optim.lr = 3e-4
        c.optim.schedule = "cosine"
        c.optim.warmup_epochs = 0.0
        c.train.steps = a.steps or 150
        c.train.eval_max_items = 600
    return c
