"""One bidirectional naming table between Flax variables and official PyTorch state dicts.

Module names mirror PyTorch (docs/contracts.md "Variables layout"), so conversion is leaf renames
plus layout transposes: Conv HWIO<->OIHW, Dense (in,out)<->Linear (out,in), LayerNorm/BN
`scale`<->`weight`, Embed `embedding`<->`weight`, BN stats `mean`/`var`<->`running_mean`/`running_var`.
Works on numpy arrays only; no torch import here.
"""
from __future__ import annotations

from typing import Any, Callable, Literal, Mapping

import numpy as np
from flax import traverse_util

Kind = Literal["image", "text"]
KINDS = ("image", "text")

NUM_BATCHES_TRACKED = "num_batches_tracked"
POSITION_IDS = "embeddings.position_ids"
_CONV_TO_TORCH = (3, 2, 0, 1)  # HWIO -> OIHW
_CONV_TO_FLAX = (2, 3, 1, 0)  # OIHW -> HWIO


class ConversionError(ValueError):
    """A state dict does not match the model: lists every missing, unexpected and mis-shaped key."""


def _relayout(a: np.ndarray, conv_order: tuple[int, ...], error: str) -> np.ndarray:
    """A Dense kernel transposed, a Conv kernel's axes permuted to `conv_order`."""
    if a.ndim == 4:
        return a.transpose(conv_order)
    if a.ndim == 2:
        return a.T
    raise ConversionError(error.format(ndim=a.ndim))


def _kernel_to_torch(a: np.ndarray) -> np.ndarray:
    return _relayout(a, _CONV_TO_TORCH, "cannot convert a {ndim}-D kernel (only 2-D Dense and 4-D Conv are supported)")


def _kernel_to_flax(a: np.ndarray) -> np.ndarray:
    return _relayout(a, _CONV_TO_FLAX, "cannot convert a {ndim}-D weight to a kernel (expected 2-D or 4-D)")


def _kernel_shape_to_torch(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4:
        return tuple(shape[i] for i in _CONV_TO_TORCH)
    if len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def _identity(a: np.ndarray) -> np.ndarray:
    return a


# The table: (collection, flax leaf) -> (torch leaf, flax->torch op, torch->flax op, shape op).
# Leaves not listed (e.g. `positional_embedding`) keep their name and layout.
_RULES: dict[tuple[str, str], tuple[str, Callable, Callable, Callable]] = {
    ("params", "kernel"): ("weight", _kernel_to_torch, _kernel_to_flax, _kernel_shape_to_torch),
    ("params", "scale"): ("weight", _identity, _identity, tuple),
    ("params", "embedding"): ("weight", _identity, _identity, tuple),
    ("params", "bias"): ("bias", _identity, _identity, tuple),
    ("batch_stats", "mean"): ("running_mean", _identity, _identity, tuple),
    ("batch_stats", "var"): ("running_var", _identity, _identity, tuple),
}
_COLLECTIONS = ("params", "batch_stats")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def torch_key(path: tuple[str, ...], collection: str = "params", prefix: str = "") -> str:
    """The PyTorch state-dict key of the Flax leaf at `path` in `collection`."""
    if collection not in _COLLECTIONS:
        raise ValueError(f"unknown variable collection {collection!r}; expected one of {_COLLECTIONS}")
    leaf = str(path[-1])
    rule = _RULES.get((collection, leaf))
    if collection == "batch_stats" and rule is None:
        raise ConversionError(f"unknown batch_stats leaf {'/'.join(map(str, path))!r} (expected mean/var)")
    name = rule[0] if rule else leaf
    return prefix + ".".join([*map(str, path[:-1]), name])


def _to_numpy_f32_safe(x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.name == "bfloat16":  # numpy/torch.from_numpy cannot take ml_dtypes bf16
        a = a.astype(np.float32)
    return a


def _flat(tree: Mapping | None) -> dict[tuple[str, ...], Any]:
    if not tree:
        return {}
    return traverse_util.flatten_dict(dict(tree))


def _module_order(params: dict, stats: dict) -> list[tuple[str, ...]]:
    order: dict[tuple[str, ...], None] = {}
    for path in list(params) + list(stats):
        order.setdefault(tuple(path[:-1]), None)
    return list(order)


_LEAF_RANK = {"kernel": 0, "scale": 0, "embedding": 0, "bias": 1, "mean": 2, "var": 3}


def _torch_leaf_rank(item: tuple[str, tuple, Any]) -> int:
    """PyTorch registration order inside a module: weight, bias, running_mean, running_var."""
    return _LEAF_RANK.get(str(item[1][-1]), -1)


def flax_to_torch(
    variables: Mapping[str, Any],
    prefix: str = "",
    kind: Kind = "image",
    position_ids: bool = True,
) -> dict[str, np.ndarray]:
    """Export {'params', 'batch_stats'} to an official-layout state dict of numpy arrays.

    Every BN module also gets `num_batches_tracked` (int64 scalar 0); `kind='text'` adds
    `{prefix}embeddings.position_ids` (int64 (1, max_pos)) unless `position_ids=False`.
    """
    _check_kind(kind)
    if "params" not in variables:
        raise ConversionError(f"variables must contain 'params'; got collections {sorted(variables)}")
    params = _flat(variables["params"])
    stats = _flat(variables.get("batch_stats"))
    by_module: dict[tuple[str, ...], list[tuple[str, tuple, Any]]] = {}
    for coll, flat in (("params", params), ("batch_stats", stats)):
        for path, leaf in flat.items():
            by_module.setdefault(tuple(path[:-1]), []).append((coll, path, leaf))

    out: dict[str, np.ndarray] = {}
    if kind == "text" and position_ids:
        emb = params.get(("embeddings", "position_embeddings", "embedding"))
        if emb is None:
            raise ConversionError(
                "text export needs params/embeddings/position_embeddings/embedding to size position_ids")
        out[prefix + POSITION_IDS] = np.arange(np.shape(emb)[0], dtype=np.int64)[None]
    for module in _module_order(params, stats):
        has_stats = False
        for coll, path, leaf in sorted(by_module[module], key=_torch_leaf_rank):
            rule = _RULES.get((coll, str(path[-1])))
            op = rule[1] if rule else _identity
            out[torch_key(path, coll, prefix)] = np.array(op(_to_numpy_f32_safe(leaf)), order="C")
            has_stats |= coll == "batch_stats"
        if has_stats:
            out[prefix + ".".join([*module, NUM_BATCHES_TRACKED])] = np.asarray(0, dtype=np.int64)
    return out


def _shape_dtype(leaf: Any) -> tuple[tuple[int, ...], np.dtype | None]:
    shape = tuple(int(d) for d in np.shape(leaf))
    dtype = getattr(leaf, "dtype", None)
    return shape, (np.dtype(dtype) if dtype is not None else None)


def _fmt_list(title: str, items: list[str], limit: int = 20) -> str:
    shown = items[:limit]
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} {title}: " + ", ".join(shown) + more


def torch_to_flax(
    state_dict: Mapping[str, Any],
    template: Mapping[str, Any],
    prefix: str = "",
    kind: Kind = "image",
) -> dict[str, dict]:
    """Import an official-layout state dict into {'params', 'batch_stats'} shaped like `template`.

    `template` holds shape trees (e.g. `jax.eval_shape(model.init, ...)`) under 'params' and
    optionally 'batch_stats'. All missing, unexpected and mis-shaped keys are reported together as
    one ConversionError; `num_batches_tracked` of BN modules and text `position_ids` are ignored.
    """
    _check_kind(kind)
    if "params" not in template:
        raise ConversionError(f"template must contain 'params'; got collections {sorted(template)}")
    sd = {str(k): v for k, v in state_dict.items()}
    consumed: set[str] = set()
    missing: list[str] = []
    misshaped: list[str] = []
    result: dict[str, dict] = {}
    bn_modules: set[tuple[str, ...]] = set()
    for coll in _COLLECTIONS:
        flat = _flat(template.get(coll))
        if coll not in template:
            continue
        out_flat: dict[tuple, np.ndarray] = {}
        for path, leaf in flat.items():
            if coll == "batch_stats":
                bn_modules.add(tuple(path[:-1]))
            key = torch_key(path, coll, prefix)
            want_shape, want_dtype = _shape_dtype(leaf)
            rule = _RULES.get((coll, str(path[-1])))
            torch_shape = rule[3](want_shape) if rule else want_shape
            if key not in sd:
                missing.append(f"{key} {torch_shape}")
                continue
            consumed.add(key)
            arr = np.asarray(sd[key])
            if tuple(arr.shape) != tuple(torch_shape):
                misshaped.append(f"{key}: checkpoint {tuple(arr.shape)} vs model {torch_shape}")
                continue
            arr = (rule[2] if rule else _identity)(arr)
            if want_dtype is not None and arr.dtype != want_dtype:
                arr = arr.astype(want_dtype)
            out_flat[path] = np.array(arr, order="C")
        result[coll] = traverse_util.unflatten_dict(out_flat) if out_flat else {}

    tolerated = {prefix + ".".join([*m, NUM_BATCHES_TRACKED]) for m in bn_modules}
    if kind == "text":
        tolerated.add(prefix + POSITION_IDS)
    unexpected = sorted(k for k in sd if k not in consumed and k not in tolerated)
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(_fmt_list("missing keys", missing))
        if unexpected:
            parts.append(_fmt_list("unexpected keys", unexpected))
        if misshaped:
            parts.append(_fmt_list("mis-shaped keys", misshaped))
        raise ConversionError(f"{kind} state dict (prefix {prefix!r}) does not match the model: " + "; ".join(parts))
    return result


def count_parameters(state_dict: Mapping[str, Any]) -> int:
    """Number of trainable values in a state dict (BN running stats and integer buffers excluded)."""
    total = 0
    for k, v in state_dict.items():
        a = np.asarray(v)
        if k.endswith((".running_mean", ".running_var")) or a.dtype.kind not in "fV":
            continue
        total += int(a.size)
    return total
