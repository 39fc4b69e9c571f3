"""Builder config names that carry their params ('procedural_n60_k3', 'full_v10_t5'): read such a
name back, merge and check params, and name a config after the params that differ from its defaults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tfds_synth_pedes import ingest

ZERO_OK = ("seed", "num_val_ids", "num_test_ids")  # params that may be 0; the others must be >= 1


def parse(name: str, tags: Mapping[str, str]) -> tuple[str, dict[str, int]] | None:
    """'full_v10_t5' -> ('full', {'num_val_ids': 10, 'num_test_ids': 5}), `tags` mapping param -> tag
    letter; None when a part after the base is not a tag letter with a number."""
    base, *parts = name.split("_")
    by_tag = {t: k for k, t in tags.items()}
    params: dict[str, int] = {}
    for part in parts:
        key, value = by_tag.get(part[:1]), part[1:]
        if key is None or not value.isdigit():
            return None
        params[key] = int(value)
    return base, params


def merge(named: Mapping[str, int], params: Mapping[str, Any], what: str = "") -> dict[str, Any]:
    """The params of a config name and the given ones (which must agree with it), with
    image_size=(H, W) split into image_height / image_width; `what` prefixes the error messages."""
    clash = sorted(k for k in named if k in params and params[k] != named[k])
    if clash:
        raise ingest.DatasetError(f"{what}parameter(s) {clash} contradict the config name's tags")
    out = {**named, **params}
    if "image_size" in out:
        size = out.pop("image_size")
        if not (isinstance(size, Sequence) and len(size) == 2):
            raise ingest.DatasetError(f"{what}image_size must be (height, width), got {size!r}")
        out["image_height"], out["image_width"] = size
    return out


def check_counts(params: Mapping[str, Any], what: str = "") -> None:
    """Every param is an integer, >= 0 for those in ZERO_OK and >= 1 for the others."""
    for key, value in params.items():
        minimum = 0 if key in ZERO_OK else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ingest.DatasetError(f"{what}parameter {key} must be an integer >= {minimum}, got {value!r}")


def tagged_name(base: str, values: Mapping[str, int], defaults: Mapping[str, int],
                tags: Mapping[str, str]) -> tuple[str, dict[str, int]]:
    """(name, changed params): `base` plus a tag per param that differs from its default, in `tags` order."""
    changed = {k: v for k, v in values.items() if v != defaults[k]}
    return base + "".join(f"_{t}{changed[k]}" for k, t in tags.items() if k in changed), changed
