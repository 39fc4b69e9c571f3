"""Image Re-ID fine-tuning of the PLIP image encoder: BoT strong baseline (BNNeck, label-smoothed
identity CE + batch-hard triplet, P x K batches), Market-1501 evaluation protocol.

    python -m plip_jax.main --config configs/finetune_image_reid.py:dataset=market1501 --workdir W \
        --config.init_checkpoint=PLIP_RN50.pth.tar --config.data.data_dir=D
Arguments: dataset (market1501 | dukemtmc | synth_pedes | cuhk_pedes | icfg_pedes), mini (procedural
images with their camera ids, by default the shifted style-A stand-in `cuhk_pedes`, `dataset=synth_pedes`
for the pre-training distribution; test split -> query/gallery by camera, see
plip_jax.data.downstream.split_query_gallery), few_shot, steps, batch. No --config.init_checkpoint =
from-scratch baseline.
"""
from __future__ import annotations

import ml_collections

from plip_jax import config_parts


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = config_parts.parse_arg(arg, mini=False, dataset="", few_shot=1.0, steps=0, batch=0)
    mini_sets = ("synth_pedes", *config_parts.SHIFTED_DATASETS)
    a.dataset = a.dataset or ("cuhk_pedes" if a.mini else "market1501")
    if a.mini and a.dataset not in mini_sets:
        raise ValueError(f"config argument dataset={a.dataset!r}: :mini runs on the procedural stand-ins "
                         f"({', '.join(mini_sets)})")
    c = config_parts.finetune_base(
        "finetune_image_reid", a, batch_size=64,      # P=16 identities x K=4 images (mini: P=8)
        optim=dict(name="adamw", lr=3.5e-4, weight_decay=5e-4, schedule="step", warmup_epochs=10.0,
                   decay_epochs=(40.0, 70.0), frozen=(r"^text/.*",), lr_multipliers=()))
    c.data.k_images = 4
    c.data.flip, c.data.pad_crop, c.data.random_erasing = True, True, True
    c.data.train_split = "train"
    c.data.query_split = "query" if a.dataset in ("market1501", "dukemtmc") else ""
    c.data.gallery_split = "gallery" if a.dataset in ("market1501", "dukemtmc") else ""
    c.eval_feature = "bn"                              # 'bn' (after BNNeck) | 'raw' (encoder output)
    c.train.epochs = 120.0
    c.losses = ml_collections.ConfigDict(dict(id_weight=1.0, triplet_weight=1.0, label_smoothing=0.1,
                                              triplet_margin=0.3))   # margin <= 0: soft margin
    if a.mini:
        c.data.pad_crop, c.data.random_erasing = False, False
        c.data.query_split = c.data.gallery_split = ""  # procedural test split, by camera
        if a.dataset in config_parts.SHIFTED_DATASETS:   # other people, scenes and cameras than pre-training
            c.data.name, c.data.procedural = a.dataset, {}   # the builder's own defaults
        c.optim.lr = 3e-4
        c.train.steps = a.steps or 150
    return c
