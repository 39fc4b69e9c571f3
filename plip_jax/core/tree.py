"""Small tree helpers: '/'-joined parameter names and regex masks (freezing, lr groups, sharding)."""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable

import jax


def path_name(path: tuple) -> str:
    """'/'-joined name of a tree path ('text/encoder/layer/3/attention/self/query/kernel')."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(str(k.name))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(k))
    return "/".join(parts)


def map_with_names(fn: Callable[[str, Any], Any], tree: Any) -> Any:
    """tree.map whose function also receives the leaf's '/'-joined name."""
    return jax.tree_util.tree_map_with_path(lambda p, x: fn(path_name(p), x), tree)


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(re.fullmatch(p, name) for p in patterns)


def flatten_names(tree: Any) -> dict[str, Any]:
    """{name: leaf} for every leaf of the tree."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path_name(p): x for p, x in leaves}
