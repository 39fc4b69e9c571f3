"""Read and write official PLIP checkpoints (`.pth.tar`, `.safetensors`, JSON) and HF BERT folders.

torch is imported only here and lazily, and files are always read with `weights_only=True` so a
pickle that carries code is refused. Everything returned is numpy, ready for `mapping.torch_to_flax`.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from plip_jax.convert.mapping import NUM_BATCHES_TRACKED, ConversionError, flax_to_torch, torch_to_flax

IMG_KEY = "ImgEncoder_state_dict"
TXT_KEY = "TxtEncoder_state_dict"
TEXT_PREFIX = "encoder."
MEAN = (0.357, 0.323, 0.328)
STD = (0.252, 0.242, 0.239)
MAX_LENGTH = 64
DEFAULT_IMAGE_HEADS = 8
BERT_HEAD_DIM = 64
_SAFETENSORS_PREFIXES = {"image.": IMG_KEY, "text.": TXT_KEY}
_CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar", ".bin", ".safetensors")

StateDict = dict[str, np.ndarray]


class CheckpointError(ValueError):
    """A file is not a (safe) PLIP checkpoint; the message says why."""


def _torch():
    """Import torch lazily: it is only needed for `.pth.tar` / `pytorch_model.bin` files."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "reading or writing .pth.tar / .bin files needs PyTorch: pip install 'plip-jax[torch]' "
            "(safetensors files work without it)") from e
    return torch


def base_path(path: str | os.PathLike) -> Path:
    """`FILE` of `FILE.pth.tar` / `FILE.safetensors` / `FILE.pth`: where `FILE.json` lives."""
    p = Path(path)
    name = p.name
    for suffix in _CHECKPOINT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return p.with_name(name[: -len(suffix)])
    return p


def arch_json_path(path: str | os.PathLike) -> Path:
    """The architecture JSON beside a checkpoint (docs/contracts.md "Architecture JSON")."""
    b = base_path(path)
    return b.with_name(b.name + ".json")


def _tensor_to_numpy(t: Any) -> np.ndarray:
    torch = _torch()
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.numpy()
    return np.asarray(t)


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True; code-carrying or non-torch files raise CheckpointError."""
    torch = _torch()
    with open(path, "rb") as f:
        head = f.read(2)
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # torch zip, or a legacy pickle
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused to load: the pickle references code or objects that are not plain "
            f"tensors (weights_only=True); only load files you trust. ({first})") from None
    except Exception as e:  # torch raises many types (RuntimeError, KeyError, EOFError...) on junk
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({first})") from None


def _strip_module(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a DistributedDataParallel 'module.' prefix when every key has it."""
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def read_arch_json(path: str | os.PathLike) -> dict | None:
    """The architecture dict from `FILE.json` beside `path`, or None when there is none."""
    j = arch_json_path(path)
    if not j.is_file():
        return None
    try:
        with open(j, encoding="utf-8") as f:
            arch = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{j}: invalid JSON ({e})") from None
    if not isinstance(arch, dict) or "image" not in arch or "text" not in arch:
        raise CheckpointError(f"{j}: expected a JSON object with 'image' and 'text' entries")
    return arch


def load_official(path: str | os.PathLike) -> tuple[StateDict, StateDict, dict | None]:
    """Read an official checkpoint -> (image state dict, text state dict, architecture JSON or None).

    Accepts `FILE.pth.tar` (torch.load, weights_only=True) and `FILE.safetensors` (keys `image.*`,
    `text.*`); `FILE.json` beside it is returned when present.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    if p.name.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            flat = load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{p}: not a safetensors file ({e})") from None
        obj: dict[str, dict] = {IMG_KEY: {}, TXT_KEY: {}}
        for k, v in flat.items():
            for pre, top in _SAFETENSORS_PREFIXES.items():
                if k.startswith(pre):
                    obj[top][k[len(pre):]] = v
                    break
            else:
                raise CheckpointError(f"{p}: key {k!r} has neither the 'image.' nor the 'text.' prefix")
        if not obj[IMG_KEY] or not obj[TXT_KEY]:
            raise CheckpointError(f"{p}: a PLIP safetensors file needs both 'image.*' and 'text.*' tensors")
    else:
        obj = _torch_load(p)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p}: expected a dict with {IMG_KEY!r} and {TXT_KEY!r}, got {type(obj).__name__}")
    lacking = [k for k in (IMG_KEY, TXT_KEY) if k not in obj]
    if lacking:
        raise CheckpointError(
            f"{p}: not a PLIP checkpoint: lacks {', '.join(lacking)} (top-level keys: {sorted(map(str, obj))[:10]})")
    img = {k: _tensor_to_numpy(v) for k, v in _strip_module(obj[IMG_KEY]).items()}
    txt = {k: _tensor_to_numpy(v) for k, v in _strip_module(obj[TXT_KEY]).items()}
    return img, txt, read_arch_json(p)


def _to_torch_sd(sd: Mapping[str, np.ndarray]) -> "OrderedDict[str, Any]":
    torch = _torch()
    return OrderedDict((k, torch.from_numpy(np.array(v, order="C"))) for k, v in sd.items())


def save_official(
    path: str | os.PathLike,
    img_sd: Mapping[str, np.ndarray],
    txt_sd: Mapping[str, np.ndarray],
    arch: Mapping[str, Any] | None,
    safetensors: bool = False,
) -> list[Path]:
    """Write `FILE.pth.tar` {ImgEncoder_state_dict, TxtEncoder_state_dict} + `FILE.json` (+ `.safetensors`).

    Returns the written paths. `path` may end with `.pth.tar` or be the bare `FILE`.
    """
    torch = _torch()
    base = base_path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    pth = base.with_name(base.name + ".pth.tar")
    torch.save({IMG_KEY: _to_torch_sd(img_sd), TXT_KEY: _to_torch_sd(txt_sd)}, pth)
    written = [pth]
    if arch is not None:
        j = arch_json_path(pth)
        with open(j, "w", encoding="utf-8") as f:
            json.dump(arch, f, indent=2)
        written.append(j)
    if safetensors:
        from safetensors.numpy import save_file

        flat = {f"image.{k}": np.asarray(v, order="C") for k, v in img_sd.items()}
        flat.update({f"text.{k}": np.asarray(v, order="C") for k, v in txt_sd.items()})
        st = base.with_name(base.name + ".safetensors")
        save_file(flat, str(st), metadata={"format": "plip"})
        written.append(st)
    return written


# Architecture ----------------------------------------------------------------------------------
def _require(sd: Mapping[str, np.ndarray], key: str, what: str) -> np.ndarray:
    if key not in sd:
        raise CheckpointError(f"cannot infer the {what}: key {key!r} is missing")
    return np.asarray(sd[key])


def infer_image_architecture(img_sd: Mapping[str, np.ndarray], heads: int = DEFAULT_IMAGE_HEADS,
                             input_size: tuple[int, int] | None = None) -> dict:
    """ModifiedResNet hyper-parameters from state-dict shapes (heads are not in the shapes)."""
    width = int(_require(img_sd, "conv3.weight", "image width").shape[0])
    layers = []
    for s in range(1, 5):
        blocks = {int(k.split(".")[1]) for k in img_sd if k.startswith(f"layer{s}.") and k.split(".")[1].isdigit()}
        if not blocks:
            raise CheckpointError(f"cannot infer the image layers: no keys for stage layer{s}")
        layers.append(max(blocks) + 1)
    if "attnpool.c_proj.weight" in img_sd:
        pool = "attn"
        output_dim = int(img_sd["attnpool.c_proj.weight"].shape[0])
        tokens = int(_require(img_sd, "attnpool.positional_embedding", "input size").shape[0]) - 1
        if input_size is None:
            # PLIP images are 2:1 (H:W); a square map is the other common layout.
            w = int(round((tokens / 2) ** 0.5))
            if 2 * w * w == tokens:
                input_size = (64 * w, 32 * w)
            elif int(round(tokens ** 0.5)) ** 2 == tokens:
                input_size = (32 * int(round(tokens ** 0.5)),) * 2
            else:
                raise CheckpointError(
                    f"cannot infer the input size from {tokens} attention-pool tokens; pass input_size")
        elif (input_size[0] // 32) * (input_size[1] // 32) != tokens:
            raise CheckpointError(f"input_size {tuple(input_size)} does not give the checkpoint's {tokens} tokens")
    elif "proj.weight" in img_sd:
        pool = "max"
        output_dim = int(img_sd["proj.weight"].shape[0])
    else:
        raise CheckpointError("cannot infer the image head: neither attnpool.c_proj.weight nor proj.weight")
    if pool == "attn" and (width * 32) % heads:
        raise CheckpointError(f"attention-pool width {width * 32} is not divisible by heads={heads}")
    return {"layers": layers, "width": width, "heads": int(heads), "output_dim": output_dim,
            "input_size": list(input_size or (256, 128)), "pool": pool}


def infer_text_config(sd: Mapping[str, np.ndarray], prefix: str = TEXT_PREFIX, heads: int | None = None) -> dict:
    """HF BertConfig fields from BERT state-dict shapes (heads default hidden/64)."""
    word = _require(sd, prefix + "embeddings.word_embeddings.weight", "text vocabulary")
    hidden = int(word.shape[1])
    layer_ids = {int(k[len(prefix):].split(".")[2]) for k in sd
                 if k.startswith(prefix + "encoder.layer.") and k[len(prefix):].split(".")[2].isdigit()}
    if not layer_ids:
        raise CheckpointError(f"cannot infer the text layers: no {prefix}encoder.layer.* keys")
    if heads is None:
        if hidden % BERT_HEAD_DIM:
            raise CheckpointError(
                f"cannot infer BERT heads: hidden size {hidden} is not a multiple of {BERT_HEAD_DIM}; pass text heads")
        heads = hidden // BERT_HEAD_DIM
    if hidden % heads:
        raise CheckpointError(f"BERT hidden size {hidden} is not divisible by heads={heads}")
    inter = _require(sd, prefix + "encoder.layer.0.intermediate.dense.weight", "BERT FFN size")
    pos = _require(sd, prefix + "embeddings.position_embeddings.weight", "BERT max positions")
    types = _require(sd, prefix + "embeddings.token_type_embeddings.weight", "BERT token types")
    return {
        "model_type": "bert", "architectures": ["BertModel"],
        "vocab_size": int(word.shape[0]), "hidden_size": hidden,
        "num_hidden_layers": max(layer_ids) + 1, "num_attention_heads": int(heads),
        "intermediate_size": int(inter.shape[0]), "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": int(pos.shape[0]), "type_vocab_size": int(types.shape[0]),
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
    }


def infer_architecture(img_sd: Mapping[str, np.ndarray], txt_sd: Mapping[str, np.ndarray],
                       image_heads: int = DEFAULT_IMAGE_HEADS, text_heads: int | None = None,
                       input_size: tuple[int, int] | None = None) -> dict:
    """The architecture dict of a checkpoint (docs/contracts.md "Architecture JSON"), from tensor shapes alone."""
    image = infer_image_architecture(img_sd, heads=image_heads, input_size=input_size)
    return {
        "image": image,
        "text": infer_text_config(txt_sd, TEXT_PREFIX, heads=text_heads),
        "mean": list(MEAN), "std": list(STD), "max_length": MAX_LENGTH,
        "recipe": "release" if image["pool"] == "attn" else "paper_v2",
    }


# HF BERT folders -------------------------------------------------------------------------------
_HF_PREFIXES = ("bert.", "encoder.")
_HF_IGNORED = ("cls.", "embeddings.position_ids", "embeddings.token_type_ids", "lm_head.", "classifier.")
_HF_LEGACY_LEAVES = ((".gamma", ".weight"), (".beta", ".bias"))


def _read_hf_weights(d: Path) -> tuple[StateDict, str]:
    st, binf = d / "model.safetensors", d / "pytorch_model.bin"
    if st.is_file():
        from safetensors.numpy import load_file

        return dict(load_file(str(st))), st.name
    if binf.is_file():
        obj = _torch_load(binf)
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{binf}: expected a state dict, got {type(obj).__name__}")
        return {k: _tensor_to_numpy(v) for k, v in obj.items()}, binf.name
    raise CheckpointError(f"{d}: no model.safetensors or pytorch_model.bin")


def load_hf_bert(directory: str | os.PathLike) -> tuple[Any, dict, dict]:
    """Load a HF BERT folder (config.json + weights) -> (BertConfig, Flax params, report).

    Reads BertModel and BertForPreTraining files (keys with or without `bert.`), with LayerNorm
    leaves named weight/bias or gamma/beta (the original bert-base-uncased files). Task heads
    (`cls.*`) and the position_ids buffer are skipped and listed in `report['ignored']`; a missing
    pooler is initialised (normal(initializer_range), zero bias, like HF) and listed in
    `report['initialized']`.
    """
    import jax
    import jax.numpy as jnp

    from plip_jax.models.bert import Bert, BertConfig

    d = Path(directory)
    if not (d / "config.json").is_file():
        raise CheckpointError(f"{d}: not a HF BERT folder (no config.json)")
    config = BertConfig.from_json_file(str(d / "config.json"))
    raw, source = _read_hf_weights(d)
    sd: StateDict = {}
    ignored: list[str] = []
    renamed = 0
    for k, v in raw.items():
        for pre in _HF_PREFIXES:
            if k.startswith(pre) and not k.startswith("encoder.layer."):
                k = k[len(pre):]
                break
        for old, new in _HF_LEGACY_LEAVES:  # the original bert-base-uncased files: LayerNorm.gamma/beta
            if k.endswith(old):
                k, renamed = k[: -len(old)] + new, renamed + 1
                break
        if k.startswith(_HF_IGNORED):
            ignored.append(k)
        else:
            sd[k] = v
    model = Bert(config)
    ids = jnp.zeros((1, 4), jnp.int32)
    template = jax.eval_shape(model.init, jax.random.key(0), ids, jnp.ones((1, 4), jnp.int32))
    initialized: list[str] = []
    pooler = template["params"].get("pooler")
    if pooler is not None and "pooler.dense.weight" not in sd:
        k_shape = pooler["dense"]["kernel"].shape
        rng = np.random.default_rng(0)
        std = float(getattr(config, "initializer_range", 0.02))
        sd["pooler.dense.weight"] = (rng.standard_normal((k_shape[1], k_shape[0])) * std).astype(np.float32)
        sd["pooler.dense.bias"] = np.zeros((k_shape[1],), np.float32)
        initialized += ["pooler.dense.weight", "pooler.dense.bias"]
    variables = torch_to_flax(sd, {"params": template["params"]}, prefix="", kind="text")
    report = {"source": str(d / source), "tensors": len(sd), "ignored": sorted(ignored),
              "initialized": initialized, "renamed_gamma_beta": renamed}
    return config, variables["params"], report


def save_hf_bert(directory: str | os.PathLike, params: Mapping[str, Any], config: Any,
                 tokenizer: Any = None) -> list[Path]:
    """Write a HF `BertModel` folder: config.json + model.safetensors + vocab.txt (tokenizer)."""
    from safetensors.numpy import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = flax_to_torch({"params": params}, prefix="", kind="text", position_ids=False)
    save_file({k: np.asarray(v, order="C") for k, v in sd.items()}, str(d / "model.safetensors"),
              metadata={"format": "pt"})
    cfg = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    cfg.setdefault("model_type", "bert")
    cfg.setdefault("architectures", ["BertModel"])
    with open(d / "config.json", "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
    if tokenizer is None:
        from plip_jax.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer()
    tokenizer.save(d)
    return [d / "config.json", d / "model.safetensors", d / "vocab.txt"]


__all__ = [
    "CheckpointError", "ConversionError", "load_official", "save_official", "infer_architecture",
    "infer_image_architecture", "infer_text_config", "read_arch_json", "arch_json_path", "base_path",
    "load_hf_bert", "save_hf_bert", "IMG_KEY", "TXT_KEY", "TEXT_PREFIX", "NUM_BATCHES_TRACKED",
]
