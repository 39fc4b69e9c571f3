"""Where the :mini train step's CPU time goes: the jitted step of configs/pretrain.py:mini timed with
pieces switched off (a task weight 0, fewer MiniLM layers, a shorter caption length).

  python bench/mini_step_profile.py [VARIANT | NAME:key=value,key=value ...]

e.g. `python bench/mini_step_profile.py mini wide:model.image.width=32` (values are Python literals).

Prints ms/step (median of 8 after 2 warm-up steps, a synthetic batch at the mini batch size) and
GFLOP/step (XLA's cost analysis of the lowered step) per variant. Used to size the :mini recipe for 2 CPU cores (README "Embedded default").
"""
from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plip_jax.config_parts import config_module

pretrain  # noqa: E402 = config_module(Path(__file__).resolve().parents[1] / "configs" / "pretrain  # noqa: E402.py")
from plip_jax.core import optim
from plip_jax.core import state as state_lib
from plip_jax.data import sources as data_setup
from plip_jax.data import synthetic  # noqa: E402
from plip_jax.losses.total import active_tasks
from plip_jax.models import text_tower  # noqa: E402
from plip_jax.models.plip import build_model  # noqa: E402
from plip_jax.trainers.pretrain_step import make_train_step  # noqa: E402

VARIANTS = {
    "mini": {},
    "one_image_per_caption": {"data.images_per_caption": 1},
    "iap_every_sample": {"data.images_per_caption": 1, "model.iap.sample_stride": 1},
    "no_tic": {"losses.weights.tic": 0.0},
    "no_iap": {"losses.weights.iap": 0.0},
    "ivlc_only": {"losses.weights.tic": 0.0, "losses.weights.iap": 0.0},
    "text_3_layers": {"model.text.num_layers": 3, "model.text.frozen_layers": 2,
                      "optim.frozen": (r"^text/embeddings/.*", r"^text/encoder/layer/[0-1]/.*")},
    "len_32": {"data.max_length": 32},
    "text_dropout_0": {"model.text.dropout": 0.0},
}


def _set(c, key: str, value) -> None:
    *path, last = key.split(".")
    for p in path:
        c = c[p]
    c[last] = value


def time_variant(overrides: dict, steps: int = 8) -> tuple[float, float]:
    c = pretrain.get_config("mini")
    for k, v in overrides.items():
        _set(c, k, v)
    text_cfg, _ = text_tower.from_config(c.model)
    model = build_model(c.model, text_cfg, active_tasks(dict(c.losses.weights)))
    d = c.data
    batch = synthetic.synthetic_batch(d.batch_size, tuple(c.model.image.input_size), d.max_length, d.max_masked,
                                      vocab_size=text_cfg.vocab_size, num_ids=d.batch_size // 2, seed=0,
                                      images_per_caption=int(d.get("images_per_caption", 1)))
    example = data_setup.example_batch(c, text_cfg)
    abstract = state_lib.abstract_state(model, optax.identity(), example, state_lib.init_key(0))
    tx, schedule = optim.make_optimizer(c.optim, abstract.params, 1000, 1000, d.batch_size)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "fsdp"))
    state, _ = state_lib.create_state(model, tx, example, 0, mesh, c.mesh.fsdp_min_size)
    step = jax.jit(make_train_step(model, tx, c.losses, schedule), donate_argnums=0)
    rng = jax.random.key(1)
    cost = step.lower(state, batch, rng).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    gflop = float(cost.get("flops", float("nan"))) / 1e9
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        state, m = step(state, batch, rng)
        jax.block_until_ready(m["loss"])
        times.append(time.perf_counter() - t)
    return float(np.median(times[2:]) * 1e3), gflop


def parse_variant(arg: str) -> tuple[str, dict]:
    """A named variant, or `NAME:key=value,...` with config keys under the :mini config."""
    if ":" not in arg:
        if arg not in VARIANTS:
            raise SystemExit(f"unknown variant {arg!r}; known: {', '.join(VARIANTS)} (or NAME:key=value,...)")
        return arg, VARIANTS[arg]
    name, _, spec = arg.partition(":")
    overrides = {}
    for item in filter(None, spec.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"bad override {item!r} in {arg!r}: expected key=value")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return name, overrides


def main(argv: list[str]) -> None:
    variants = [parse_variant(a) for a in (argv or list(VARIANTS))]
    print(f"{'variant':<16} {'ms/step':>9} {'GFLOP':>7}")
    for name, overrides in variants:
        ms, gflop = time_variant(overrides)
        print(f"{name:<16} {ms:9.0f} {gflop:7.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
