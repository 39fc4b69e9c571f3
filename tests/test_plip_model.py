"""The PLIP module's pre-training forward: which passes write the BatchNorm running statistics."""
from __future__ import annotations

import jax
import numpy as np

from plip_jax import data_setup, text_tower
from plip_jax.models.plip import build_model
from tests.tiny import tiny_config


def _stats_after_forward(gray_updates: bool, tasks: tuple[str, ...]) -> tuple[dict, dict]:
    c = tiny_config()
    c.model.tic.gray_updates_bn_stats = gray_updates
    text_cfg, _ = text_tower.resolve(c.model.text.init, dropout=0.0)
    model = build_model(c.model, text_cfg, tasks=tasks)
    batch = data_setup.example_batch(c, text_cfg)
    batch["image"] = np.random.default_rng(0).integers(0, 256, batch["image"].shape).astype(np.uint8)
    variables = jax.jit(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                            batch, train=True))()
    _, mutated = jax.jit(lambda v: model.apply(v, batch, train=True, mutable=["batch_stats"],
                                               rngs={"dropout": jax.random.key(2)}))(variables)
    return variables["batch_stats"], mutated["batch_stats"]


def test_gray_pass_leaves_running_stats_to_the_colour_pass():
    """Default: the running statistics after a TIC step are those of the colour pass alone."""
    before, with_tic = _stats_after_forward(False, ("ivlc", "tic", "iap"))
    _, colour_only = _stats_after_forward(False, ("ivlc",))
    jax.tree.map(np.testing.assert_array_equal, with_tic, colour_only)
    assert any(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), with_tic, before)))


def test_gray_updates_bn_stats_option_blends_them():
    """gray_updates_bn_stats=True (PyTorch's train-mode default) writes the gray batch in too."""
    _, blended = _stats_after_forward(True, ("ivlc", "tic", "iap"))
    _, colour_only = _stats_after_forward(True, ("ivlc",))
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), blended, colour_only))
    assert max(diffs) > 1e-3
