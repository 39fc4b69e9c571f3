"""Device mesh, batch sharding and parameter sharding rules.

Mesh axes are ('data', 'fsdp') built with AxisType.Auto (classic GSPMD propagation: the CMPM
similarity of a data-sharded batch needs it). The batch is sharded over both axes; parameters are
replicated, or, when fsdp > 1, their largest divisible dimension is sharded over 'fsdp'.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from plip_jax.core.tree import map_with_names

BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> jax.sharding.Mesh:
    """A ('data','fsdp') mesh over all devices; data=-1 takes what fsdp leaves."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    fsdp = int(fsdp)
    if fsdp < 1 or n % fsdp:
        raise ValueError(f"mesh.fsdp={fsdp} must be >= 1 and divide the device count {n}")
    data = n // fsdp if int(data) == -1 else int(data)
    if data * fsdp != n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} != device count {n}")
    dev = np.asarray(devices).reshape(data, fsdp)
    return jax.sharding.Mesh(dev, BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every device."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def param_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
    """Shard the largest dimension divisible by `fsdp` (parameters of >= min_size elements)."""
    if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    order = sorted(range(len(shape)), key=lambda i: -shape[i])
    for i in order:
        if shape[i] % fsdp == 0:
            spec = [None] * len(shape)
            spec[i] = "fsdp"
            return P(*spec)
    return P()


def tree_shardings(tree: Any, mesh: jax.sharding.Mesh, min_size: int = 2**18) -> Any:
    """NamedSharding for every leaf of a (shape) tree under the fsdp rule above."""
    fsdp = mesh.shape["fsdp"]

    def rule(name: str, x: Any) -> NamedSharding:
        shape = tuple(getattr(x, "shape", ()))
        return NamedSharding(mesh, param_spec(shape, fsdp, min_size))

    return map_with_names(rule, tree)


class FsdpLayout:
    """Where a step keeps its parameters when fsdp > 1: stored sharded (the state's shardings) and
    gathered whole where the forward pass uses them (one all-gather per parameter, which XLA
    schedules next to its use), with each gradient reduce-scattered straight back to its
    parameter's sharding. Without these constraints the partitioner is free to keep a weight
    sharded and gather the activations that meet it instead: at a data x fsdp mesh it did, over
    the batch (docs/tpu.md has the measurements)."""

    def __init__(self, mesh: jax.sharding.Mesh, param_shardings: Any):
        self.param_shardings = param_shardings
        self.whole = NamedSharding(mesh, P())

    def gather(self, params: Any) -> Any:
        """`params` (any subset of the top-level groups) whole on every device, differentiably."""
        specs = {k: self.param_shardings[k] for k in params} if isinstance(params, dict) else self.param_shardings
        return jax.tree.map(lambda x, s: _gather(x, self.whole, s), params, specs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _gather(x: jax.Array, whole: NamedSharding, sharded: NamedSharding) -> jax.Array:
    return jax.lax.with_sharding_constraint(x, whole)


def _gather_fwd(x, whole, sharded):
    return jax.lax.with_sharding_constraint(x, whole), None


def _gather_bwd(whole, sharded, _, g):
    return (jax.lax.with_sharding_constraint(g, sharded),)


_gather.defvjp(_gather_fwd, _gather_bwd)


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh, process_count: int = 1) -> None:
    """Fail early, in one line, when the global batch cannot be split evenly."""
    n = mesh.size
    if global_batch % n:
        raise ValueError(
            f"data.batch_size={global_batch} is not divisible by the device count {n}; "
            f"use a multiple of {n}")
    if global_batch % process_count:
        raise ValueError(f"data.batch_size={global_batch} is not divisible by the process count {process_count}")
