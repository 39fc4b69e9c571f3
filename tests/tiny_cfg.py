"""Config file for subprocess tests: `--config tests/tiny_cfg.py:data=synthetic,steps=4,batch=16`."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny import tiny_config  # noqa: E402

from plip_jax.config_parts import parse_arg  # noqa: E402


def get_config(arg=None):
    a = parse_arg(arg, data="synthetic", steps=4, batch=16, recipe="")
    c = tiny_config(data=a.data, steps=a.steps, batch=a.batch)
    if a.recipe:
        c.model.recipe = a.recipe
    return c
