"""TPU slices by the names users say (`v5e-64`, `v4-32`, ...): their chips, hosts and per-chip
limits, and their devices without a TPU (libtpu's deviceless topology), for ahead-of-time compiles.

Per-chip numbers, from the Cloud TPU system-architecture pages (cloud.google.com/tpu/docs/v4,
/v5e, /v5p, /v6e): HBM, peak dense bf16 FLOP/s and HBM bandwidth. v4 and v5p chips have two
TensorCores run as one device ("megacore"); v5e and v6e chips have one. The `-N` of v4 / v5p names
counts TensorCores (chips = N / 2); of v5e / v6e, chips. Slice shapes follow the Cloud TPU docs'
topology tables (the same as MaxText's accelerator_to_spec_map.py).
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    prefix: str                 # libtpu's topology-name prefix
    hbm_bytes: int
    peak_bf16_flops: float      # FLOP/s per chip
    hbm_bandwidth: float        # bytes/s per chip
    cores_per_chip: int         # TensorCores per chip (megacore when 2)
    chips_per_host: int         # of multi-host slices
    accelerator: str            # TPU_ACCELERATOR_TYPE's family name


CHIPS = {
    "v4": Chip("v4", "v4", 32 * GiB, 275e12, 1200e9, 2, 4, "v4"),
    "v5e": Chip("v5e", "v5e", 16 * GiB, 197e12, 819e9, 1, 4, "v5litepod"),
    "v5p": Chip("v5p", "v5", 95 * GiB, 459e12, 2765e9, 2, 4, "v5p"),
    "v6e": Chip("v6e", "v6e", 32 * GiB, 918e12, 1640e9, 1, 4, "v6e"),
}

# Slice shapes (chips along each torus axis) by the N users say.
_SHAPES_3D = {8: (2, 2, 1), 16: (2, 2, 2), 32: (2, 2, 4), 64: (2, 4, 4), 128: (4, 4, 4), 256: (4, 4, 8),
              512: (4, 8, 8)}  # v4-N / v5p-N: N TensorCores = 2 x chips
_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16),
              256: (16, 16)}  # v5e-N / v6e-N: N chips
_SIZES = {"v4": tuple(_SHAPES_3D), "v5p": tuple(n for n in _SHAPES_3D if n <= 256),
          "v5e": tuple(_SHAPES_2D), "v6e": tuple(_SHAPES_2D)}


class TopologyError(ValueError):
    """A slice name that is not known, or a TPU compiler that is not installed (one line)."""


@dataclasses.dataclass(frozen=True)
class Slice:
    name: str                   # 'v5e-64'
    chip: Chip
    shape: tuple[int, ...]      # chips per torus axis
    topology_name: str          # libtpu's name: 'v5e:8x8', 'v4:2x2x1', 'v5:2x4x4'

    @property
    def chips(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def single_host(self) -> bool:
        """One-host slices (v5e/v6e up to 8 chips, v4/v5p up to 4) keep every chip on the host."""
        return self.chips <= (8 if self.chip.cores_per_chip == 1 else 4)

    def chips_per_host_bounds(self) -> tuple[int, int, int]:
        if self.single_host:
            s = tuple(self.shape) + (1,) * (3 - len(self.shape))
            return s  # type: ignore[return-value]
        return (2, 2, 1)

    def accelerator_type(self) -> str:
        cores = self.chips * self.chip.cores_per_chip if self.chip.cores_per_chip > 1 else self.chips
        return f"{self.chip.accelerator}-{cores}"


def names() -> list[str]:
    """Every slice name this module knows, in the order users read them."""
    return [f"{c}-{n}" for c in ("v4", "v5e", "v5p", "v6e") for n in _SIZES[c]]


def parse(name: str) -> Slice:
    """'v5e-64' (or libtpu's 'v5e:8x8') -> Slice; an unknown name is a one-line TopologyError that lists the valid names."""
    by_topology = {parse(n).topology_name: n for n in names()} if ":" in str(name) else {}
    if str(name).strip().lower() in by_topology:  # libtpu's own names ('v5e:2x2', 'v4:2x2x1') too
        name = by_topology[str(name).strip().lower()]
    m = re.fullmatch(r"\s*(v4|v5e|v5p|v6e)-(\d+)\s*", str(name).lower())
    if not m or int(m.group(2)) not in _SIZES[m.group(1)]:
        raise TopologyError(f"unknown TPU topology {name!r}; valid names: {', '.join(names())}")
    chip = CHIPS[m.group(1)]
    n = int(m.group(2))
    shape = _SHAPES_3D[n] if chip.cores_per_chip == 2 else _SHAPES_2D[n]
    return Slice(f"{chip.name}-{n}", chip, shape, f"{chip.prefix}:{'x'.join(map(str, shape))}")


def _quiet_libtpu_env(s: Slice) -> None:
    """libtpu looks for a TPU VM's metadata server and environment at start and prints warnings
    when they are missing; this machine is not a TPU VM, so say what it would have found."""
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # libtpu lets one process at a time hold /tmp/libtpu_lockfile (a TPU VM's chips); compiling for
    # chips that are not here holds none, so two compiles may run side by side.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", s.accelerator_type())
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_WORKER_ID", "0")


def libtpu_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("libtpu") is not None


def devices(s: Slice) -> list[Any]:
    """The slice's devices (one per chip), from libtpu's deviceless topology: compile for them
    with `jax.jit(...).lower(...).compile()`; they cannot run anything."""
    if not libtpu_installed():
        raise TopologyError("the TPU compiler (libtpu) is not installed: pip install -e '.[tpu]' "
                            "(or pip install 'jax[tpu]==<your jax version>')")
    _quiet_libtpu_env(s)
    from jax.experimental import topologies

    kwargs: dict[str, Any] = {"chips_per_host_bounds": s.chips_per_host_bounds()}
    if s.chip.cores_per_chip == 2:
        kwargs["chip_config_name"] = "megacore"
    topo = topologies.get_topology_desc(platform="tpu", topology_name=s.topology_name, **kwargs)
    return list(topo.devices)


__all__ = ["CHIPS", "Chip", "GiB", "Slice", "TopologyError", "devices", "libtpu_installed", "names", "parse"]
