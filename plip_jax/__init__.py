"""plip-jax: PLIP (language-image pre-training for person representation learning) in JAX/Flax."""
from __future__ import annotations

import glob
import importlib.util
import os

__version__ = "0.1.0"


def _skip_absent_tpu() -> None:
    """With libtpu installed (the `tpu` extra, for `python -m plip_jax.aot`), JAX initialises its TPU
    plugin at start-up even where there is no TPU, and libtpu prints five lines of warnings. Where
    no TPU chip is attached and JAX_PLATFORMS is unset, name the platforms that can be here."""
    if os.environ.get("JAX_PLATFORMS") or glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return
    if importlib.util.find_spec("libtpu") is None:
        return
    os.environ["JAX_PLATFORMS"] = "cuda,cpu" if glob.glob("/dev/nvidia[0-9]*") else "cpu"


_skip_absent_tpu()

__all__ = ["from_pretrained", "__version__"]


def from_pretrained(path, **kwargs):
    """Load a PLIP model from a workdir, an Orbax step dir, or an official `.pth.tar` (see api.py)."""
    from plip_jax.api import from_pretrained as _fp

    return _fp(path, **kwargs)
