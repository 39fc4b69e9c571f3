"""What every probe starts from: a trained run's variables, its config (the data folder moved where
asked) and its tokenizer."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from plip_jax.core import checkpoint  # noqa: E402
from plip_jax.data.tokenizer import load_tokenizer  # noqa: E402


def load_run(workdir: str, data_dir: str | None = None) -> tuple[dict, ml_collections.ConfigDict, Any]:
    """(variables, config, tokenizer) of a workdir or one of its checkpoints/<step> folders."""
    variables, cfg = checkpoint.restore_for_inference(workdir)
    config = ml_collections.ConfigDict(cfg)
    if data_dir:
        config.data.data_dir = data_dir
    return variables, config, load_tokenizer(config.data.tokenizer_dir, max_length=config.data.max_length)
