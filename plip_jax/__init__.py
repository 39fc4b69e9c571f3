"""plip-jax: PLIP (language-image pre-training for person representation learning) in JAX/Flax."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["from_pretrained", "__version__"]


def from_pretrained(path, **kwargs):
    """Load a PLIP model from a workdir, an Orbax step dir, or an official `.pth.tar` (see api.py)."""
    from plip_jax.api import from_pretrained as _fp

    return _fp(path, **kwargs)
