"""Public inference API: `from_pretrained(path)` -> `PLIPModel` with `encode_images` / `encode_texts`.

Loads official `.pth.tar`/`.safetensors` checkpoints (via the converter), folders written by
`PLIPModel.save_pretrained` / `python -m plip_jax.convert from-torch`, and Orbax workdirs or step
dirs (via `plip_jax.core.checkpoint.restore_for_inference`). Preprocessing is the official inference's
(``zs_infer.py`` / ``test_dataloader.py``): PIL bicubic resize to the model's input size, then mean/std normalisation.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from PIL import Image

from plip_jax.convert.mapping import ConversionError, torch_to_flax
from plip_jax.convert.torch_io import (
    MAX_LENGTH,
    MEAN,
    STD,
    TEXT_PREFIX,
    CheckpointError,
    infer_architecture,
    load_official,
)
from plip_jax.data.tokenizer import Tokenizer, load_tokenizer

RECIPES = ("release", "paper_v2")
VARIABLES_FILE = "variables.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
_OFFICIAL_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar", ".safetensors")

ImagesLike = np.ndarray | Sequence[Any]


class PLIPModel:
    """The two PLIP encoders with their variables, tokenizer and preprocessing, ready for inference."""

    def __init__(self, config: Mapping[str, Any], variables: Mapping[str, Any],
                 tokenizer: Tokenizer | None = None):
        from plip_jax.models.build import image_encoder, text_encoder

        self.config = _complete_config(dict(config))
        img = self.config["image"]
        params = variables.get("params", {})
        for tower in ("image", "text"):
            if tower not in params:
                raise CheckpointError(f"variables lack params/{tower} (have {sorted(params)})")
        self.variables = jax.device_put(
            {"params": {"image": params["image"], "text": params["text"]},
             "batch_stats": {"image": variables.get("batch_stats", {}).get("image", {})}})
        self.image_model = image_encoder(img)
        has_pooler = "pooler" in params["text"]
        if self.config["recipe"] == "release" and not has_pooler:
            raise CheckpointError("recipe 'release' uses the BERT pooler, but the text weights have none; "
                                  "use recipe='paper_v2'")
        self.text_model = text_encoder(self.config["text"], pooler=has_pooler)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(
            max_length=int(self.config["max_length"]))
        from plip_jax.evals.embed import Embedder

        self._embedder = Embedder.for_encoders(self.image_model, self.text_model, self.config["recipe"],
                                               mean=self.config["mean"], std=self.config["std"])

    def embedder(self, batch_size: int = 64):
        """The model's Embedder (plip_jax.evals.embed) at `batch_size`, for the task evaluators."""
        return self._embedder.with_batch_size(batch_size)

    # Properties ------------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the image tower expects."""
        return tuple(int(s) for s in self.config["image"]["input_size"])  # type: ignore[return-value]

    @property
    def recipe(self) -> str:
        return self.config["recipe"]

    # Preprocessing ---------------------------------------------------------------------------
    def preprocess_images(self, images: ImagesLike) -> np.ndarray:
        """uint8 (N,H,W,3) array, or a list of paths / PIL images / arrays -> uint8 (N,h,w,3) at input size."""
        h, w = self.input_size
        if isinstance(images, np.ndarray):
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"images must be uint8 RGB of shape (N, H, W, 3); got shape {images.shape}")
            items: Sequence[Any] = list(images)
        elif isinstance(images, (str, os.PathLike, Image.Image)):
            raise TypeError("pass a list of images or paths, or an (N, H, W, 3) uint8 array")
        else:
            items = list(images)
        out = np.empty((len(items), h, w, 3), np.uint8)
        for i, item in enumerate(items):
            if _size(item) == (h, w):  # PIL returns an identical copy at the same size
                out[i] = _as_rgb(item, i)
            else:
                out[i] = np.asarray(_to_pil(item, i).resize((w, h), Image.BICUBIC))
        return out

    # Encoding --------------------------------------------------------------------------------
    def encode_images(self, images: ImagesLike, batch_size: int = 64) -> np.ndarray:
        """Global image embeddings (N, D) float32 (not normalised) in eval mode."""
        x = self.preprocess_images(images)
        if len(x) == 0:
            raise ValueError("nothing to encode: got 0 images")
        return self._embedder.images(self.variables, x, batch_size=batch_size)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Global caption embeddings (N, D) float32: pooler (release) or masked mean (paper_v2)."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings, not a single string")
        if len(texts) == 0:
            raise ValueError("nothing to encode: got 0 texts")
        tok = self.tokenizer(list(texts), max_length=int(self.config["max_length"]))
        return self._embedder.texts(self.variables, tok["input_ids"], tok["attention_mask"], batch_size=batch_size)

    # Saving ----------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> list[Path]:
        """Write config.json + variables.safetensors + tokenizer/ so `from_pretrained(directory)` loads it."""
        from safetensors.numpy import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        flat = traverse_util.flatten_dict(self.variables, sep="/")
        save_file({k: np.asarray(v, order="C") for k, v in flat.items()}, str(d / VARIABLES_FILE),
                  metadata={"format": "plip_jax"})
        with open(d / CONFIG_FILE, "w", encoding="utf-8") as f:
            json.dump(self.config, f, indent=2)
        self.tokenizer.save(d / TOKENIZER_DIR)
        return [d / CONFIG_FILE, d / VARIABLES_FILE, d / TOKENIZER_DIR]


# Helpers ------------------------------------------------------------------------------------------
def _size(item: Any) -> tuple[int, int] | None:
    if isinstance(item, np.ndarray):
        return tuple(item.shape[:2])  # type: ignore[return-value]
    return None


def _as_rgb(item: np.ndarray, i: int) -> np.ndarray:
    if item.dtype != np.uint8 or item.ndim != 3 or item.shape[-1] != 3:
        raise ValueError(f"image {i}: expected uint8 RGB (H, W, 3), got {item.dtype} {item.shape}")
    return item


def _to_pil(item: Any, i: int) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, os.PathLike)):
        try:
            with Image.open(item) as im:
                return im.convert("RGB")
        except (OSError, ValueError) as e:
            raise ValueError(f"image {i}: cannot read {item}: {e}") from None
    if isinstance(item, np.ndarray):
        return Image.fromarray(_as_rgb(item, i))
    raise TypeError(f"image {i}: expected a path, PIL image or uint8 array, got {type(item).__name__}")


def _complete_config(cfg: dict) -> dict:
    """Fill defaults (mean/std/max_length/pool/recipe) and validate the architecture dict."""
    if "image" not in cfg or "text" not in cfg:
        raise CheckpointError(f"architecture config needs 'image' and 'text' entries; got {sorted(cfg)}")
    img = dict(cfg["image"])
    missing = [k for k in ("layers", "width", "heads", "output_dim", "input_size") if k not in img]
    if missing:
        raise CheckpointError(f"architecture config 'image' lacks {missing}")
    cfg["recipe"] = cfg.get("recipe", "release")
    if cfg["recipe"] not in RECIPES:
        raise CheckpointError(f"unknown recipe {cfg['recipe']!r}; expected one of {RECIPES}")
    from plip_jax.models.plip import image_pool

    img["pool"] = image_pool(cfg["recipe"], img.get("pool") or None)
    img["layers"], img["input_size"] = list(img["layers"]), list(img["input_size"])
    cfg["image"] = img
    cfg["text"] = dict(cfg["text"])
    cfg.setdefault("mean", list(MEAN))
    cfg.setdefault("std", list(STD))
    cfg.setdefault("max_length", MAX_LENGTH)
    return cfg


def _templates(config: dict, text_pooler: bool = True) -> tuple[dict, dict]:
    """Shape trees of the image and text towers (no compute, no memory)."""
    from plip_jax.models.build import image_encoder, text_encoder

    img = config["image"]
    model = image_encoder(img)
    h, w = img["input_size"]
    image_t = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, h, w, 3), jnp.float32))
    bert = text_encoder(config["text"], pooler=text_pooler)
    ids = jnp.zeros((1, 4), jnp.int32)
    text_t = jax.eval_shape(bert.init, jax.random.key(0), ids, jnp.ones((1, 4), jnp.int32))
    return dict(image_t), dict(text_t)


def _find_tokenizer(*candidates: Path | None, max_length: int) -> Tokenizer:
    """The first folder holding vocab.txt among candidates, else the default bert-base-uncased vocab."""
    for c in candidates:
        if c is not None and (Path(c) / "vocab.txt").is_file():
            return load_tokenizer(c, max_length=max_length)
    return load_tokenizer(max_length=max_length)


def from_official(path: str | os.PathLike, recipe: str | None = None,
                  image_heads: int | None = None, text_heads: int | None = None) -> PLIPModel:
    """Load an official-layout `.pth.tar` / `.safetensors` (+ `FILE.json` beside it, else inferred)."""
    p = Path(path)
    img_sd, txt_sd, arch = load_official(p)
    if arch is None:
        kw = {"image_heads": image_heads} if image_heads else {}
        arch = infer_architecture(img_sd, txt_sd, text_heads=text_heads, **kw)
    else:
        if image_heads:
            arch["image"]["heads"] = image_heads
        if text_heads:
            arch["text"]["num_attention_heads"] = text_heads
    if recipe is not None:
        arch["recipe"] = recipe
    config = _complete_config(arch)
    image_t, text_t = _templates(config, TEXT_PREFIX + "pooler.dense.weight" in txt_sd)
    image_v = torch_to_flax(img_sd, image_t, prefix="", kind="image")
    text_v = torch_to_flax(txt_sd, {"params": text_t["params"]}, prefix=TEXT_PREFIX, kind="text")
    variables = {"params": {"image": image_v["params"], "text": text_v["params"]},
                 "batch_stats": {"image": image_v.get("batch_stats", {})}}
    tok = _find_tokenizer(p.parent / TOKENIZER_DIR, max_length=int(config["max_length"]))
    return PLIPModel(config, variables, tok)


def _check_tree(loaded: Mapping, template: Mapping, what: str) -> None:
    """One ConversionError naming every missing, unexpected and mis-shaped variable."""
    got = traverse_util.flatten_dict(dict(loaded), sep="/")
    want = traverse_util.flatten_dict(dict(template), sep="/")
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    bad = [f"{k}: file {tuple(np.shape(got[k]))} vs model {tuple(want[k].shape)}"
           for k in sorted(set(got) & set(want)) if tuple(np.shape(got[k])) != tuple(want[k].shape)]
    if missing or unexpected or bad:
        parts = [f"{len(v)} {t}: {', '.join(v[:20])}" for t, v in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", bad)) if v]
        raise ConversionError(f"{what} does not match its config: " + "; ".join(parts))


def from_saved(directory: str | os.PathLike, recipe: str | None = None) -> PLIPModel:
    """Load a folder written by `PLIPModel.save_pretrained` (config.json + variables.safetensors)."""
    from safetensors.numpy import load_file

    d = Path(directory)
    with open(d / CONFIG_FILE, encoding="utf-8") as f:
        config = _complete_config(json.load(f))
    if recipe is not None:
        config["recipe"] = _complete_config({**config, "recipe": recipe})["recipe"]
    variables = traverse_util.unflatten_dict(load_file(str(d / VARIABLES_FILE)), sep="/")
    tok = _find_tokenizer(d / TOKENIZER_DIR, d, max_length=int(config["max_length"]))
    return _checked_model(config, variables, tok, str(d / VARIABLES_FILE))


def _checked_model(config: dict, variables: Mapping, tok: Tokenizer, what: str) -> PLIPModel:
    """PLIPModel after checking the encoders' variables against the config's shapes."""
    config = _complete_config(dict(config))
    params = variables.get("params", {})
    image_t, text_t = _templates(config, "pooler" in params.get("text", {}))
    template = {"params": {"image": image_t["params"], "text": text_t["params"]},
                "batch_stats": {"image": image_t.get("batch_stats", {})}}
    loaded = {"params": {k: params[k] for k in ("image", "text") if k in params},
              "batch_stats": {k: v for k, v in variables.get("batch_stats", {}).items() if k == "image"}}
    _check_tree(loaded, template, what)
    return PLIPModel(config, loaded, tok)


def _text_config_from_train(model_cfg: Mapping) -> dict:
    """BertConfig fields of a training run: stored ones, else resolved from `model.text.init`."""
    for key in ("text_config", "bert_config"):
        if isinstance(model_cfg.get(key), Mapping):
            return dict(model_cfg[key])
    from plip_jax.models import text_tower

    text = model_cfg.get("text") or {}
    text = text if isinstance(text, Mapping) else {}
    # The weights are in the checkpoint; the shape is `init`'s, cut to `num_layers` when set.
    return text_tower.architecture(str(text.get("init", "bert-base")), None, text.get("num_layers")).to_dict()


def from_orbax(path: str | os.PathLike, recipe: str | None = None) -> PLIPModel:
    """Load the image and text towers of an Orbax workdir / step dir written by training."""
    from plip_jax.core import checkpoint

    variables, cfg = checkpoint.restore_for_inference(path)
    return _orbax_model(path, variables, cfg, recipe)


def _orbax_model(path: str | os.PathLike, variables: Mapping, cfg: Mapping, recipe: str | None = None) -> PLIPModel:
    """PLIPModel of restored training variables and the config stored with them."""
    if "image" in cfg and "text" in cfg:
        arch = dict(cfg)
    else:
        model_cfg = cfg.get("model", {})
        if "image" not in model_cfg:
            raise CheckpointError(f"{path}: the checkpoint config has no model.image architecture")
        data_cfg = cfg.get("data", {}) or {}
        arch = {"image": dict(model_cfg["image"]),
                "text": _text_config_from_train(model_cfg),
                "recipe": model_cfg.get("recipe", "release"),
                "max_length": data_cfg.get("max_length", MAX_LENGTH)}
        from plip_jax.models.plip import image_pool

        arch["image"]["pool"] = image_pool(arch["recipe"], arch["image"].get("pool") or None)
    if recipe is not None:
        arch["recipe"] = recipe
    p = Path(path)
    workdir = p.parent.parent if p.name.isdigit() else (p.parent if p.name == "checkpoints" else p)
    tok_dir = (cfg.get("data", {}) or {}).get("tokenizer_dir")
    tok = _find_tokenizer(workdir / TOKENIZER_DIR, Path(tok_dir) if tok_dir else None,
                          max_length=int(arch.get("max_length", MAX_LENGTH)))
    return _checked_model(arch, variables, tok, f"checkpoint {path}")


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """A pre-training checkpoint with its pretext heads (what `python -m plip_jax.report` draws)."""

    model: PLIPModel               # the encoders, tokenizer and preprocessing, as from_pretrained loads them
    module: Any                    # plip_jax.models.plip.PLIP with the heads of the trained tasks
    variables: dict                # the whole {'params', 'batch_stats'} tree of `module` (host arrays)
    config: Any                    # the run's config (ml_collections.ConfigDict)
    tasks: tuple[str, ...]         # pretext tasks with a non-zero loss weight
    step: int


def load_training_run(path: str | os.PathLike) -> TrainingRun:
    """The latest (or given) checkpoint of a pre-training workdir / step dir: `from_pretrained`'s
    encoders, plus the whole PLIP module with the heads of the run's tasks and its variables."""
    import ml_collections

    from plip_jax.core import checkpoint
    from plip_jax.losses.total import active_tasks
    from plip_jax.models.bert import BertConfig
    from plip_jax.models.plip import build_model

    _, step = checkpoint.find_checkpoint(path)
    variables, cfg = checkpoint.restore_for_inference(path)
    if "model" not in cfg or "losses" not in cfg:
        raise CheckpointError(f"{path}: the checkpoint config is not a training run's (no model/losses)")
    model = _orbax_model(path, variables, cfg)
    config = ml_collections.ConfigDict(
        {**cfg, "model": {k: v for k, v in cfg["model"].items() if k != "text_config"}})
    tasks = active_tasks(dict(config.losses.weights))
    module = build_model(config.model, BertConfig.from_dict(dict(model.config["text"])), tasks)
    return TrainingRun(model, module, variables, config, tasks, step)


def from_pretrained(path: str | os.PathLike, recipe: str | None = None) -> PLIPModel:
    """Load PLIP for inference from an official `.pth.tar`/`.safetensors`, a saved folder, or an Orbax run.

    `recipe` ('release' | 'paper_v2') overrides the text pooling stored with the weights.
    """
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {RECIPES}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    if p.is_file():
        if not p.name.endswith(_OFFICIAL_SUFFIXES):
            raise CheckpointError(f"{p}: not a PLIP checkpoint (expected .pth.tar, .pth or .safetensors)")
        return from_official(p, recipe=recipe)
    if (p / VARIABLES_FILE).is_file() and (p / CONFIG_FILE).is_file():
        return from_saved(p, recipe=recipe)
    orbax = (p / "checkpoints").is_dir() or (p / "state").is_dir() or any(
        c.is_dir() and c.name.isdigit() for c in p.iterdir())
    if orbax:
        return from_orbax(p, recipe=recipe)
    raise CheckpointError(
        f"{p}: holds neither a PLIP checkpoint nor a config: expected {VARIABLES_FILE} + {CONFIG_FILE} "
        "(from `python -m plip_jax.convert from-torch`), an Orbax workdir (checkpoints/<step>/), or "
        "pass an official .pth.tar file")


__all__ = ["PLIPModel", "from_pretrained", "from_official", "from_saved", "from_orbax", "RECIPES",
           "TrainingRun", "load_training_run"]
