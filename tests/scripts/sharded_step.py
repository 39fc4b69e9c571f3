"""Run three train steps of the tiny PLIP on one device and on 8 fake CPU devices (data=8, and
data=4 x fsdp=2); print losses and parameters as JSON. Needs XLA_FLAGS device_count=8 set by the caller."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tiny import tiny_config  # noqa: E402

from plip_jax.core import optim
from plip_jax.core import sharding as shd
from plip_jax.core import state as state_lib
from plip_jax.data import sources as data_setup
from plip_jax.data import synthetic  # noqa: E402
from plip_jax.losses.total import active_tasks
from plip_jax.models import text_tower  # noqa: E402
from plip_jax.models.plip import build_model  # noqa: E402
from plip_jax.trainers.pretrain_step import jit_train_step, make_train_step  # noqa: E402


def run(devices, data: int, fsdp: int) -> dict:
    c = tiny_config(batch=16)
    # SGD: Adam's m/sqrt(v) turns float-reassociation noise in near-zero gradients into +-lr
    # updates, which would hide real sharding differences; the partition/schedule code is shared.
    c.optim.name = "sgd"
    # Small steps: the tiny model's first gradient norm is ~140 (cosine logits x20), so lr 0.05 would
    # move the parameters by ~7 into a regime where the gradient is chaotic at float32 resolution.
    c.optim.lr = 0.001
    # The attention-pool recipe: with paper_v2's global max pool over the tiny 2x1 feature map, the
    # gradient after one update is chaotic at float32 resolution (max routing flips on near-ties):
    # a 1e-7 relative perturbation of the parameters moves the second step's gradient norm by ~5% on
    # ONE device, so no layout could match another there (see docs/contracts.md, "Sharding parity").
    c.model.recipe = "release"
    text_cfg, _ = text_tower.from_config(c.model)
    model = build_model(c.model, text_cfg, active_tasks(dict(c.losses.weights)))
    mesh = shd.make_mesh(data, fsdp, devices=devices)
    rng = state_lib.init_key(0)
    example = data_setup.example_batch(c, text_cfg)
    abstract = state_lib.abstract_state(model, __import__("optax").identity(), example, rng)
    tx, schedule = optim.make_optimizer(c.optim, abstract.params, 10, 10, 16)
    state, shardings = state_lib.create_state(model, tx, example, 0, mesh, min_size=64)
    bsh = shd.batch_sharding(mesh)
    step = jit_train_step(make_train_step(model, tx, c.losses, schedule), shardings, bsh, mesh)
    losses = []
    for k in range(3):
        b = synthetic.synthetic_batch(16, (64, 32), 16, 4, num_ids=6, seed=k)
        gb = {key: jax.make_array_from_process_local_data(bsh, v) for key, v in b.items()}
        state, m = step(state, gb, jax.random.key(1))
        losses.append({key: float(v) for key, v in jax.device_get(m).items()})
    sharded = [str(l.sharding.spec) for l in jax.tree.leaves(state.params)]
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]]
    params = [np.asarray(jax.device_get(l)).ravel().tolist() for l in jax.tree.leaves(state.params)]
    stats = [np.asarray(jax.device_get(l)).ravel().tolist() for l in jax.tree.leaves(state.batch_stats)]
    return {"losses": losses, "params": params, "stats": stats, "names": names,
            "fsdp_sharded": sum("fsdp" in s for s in sharded)}


if __name__ == "__main__":
    devs = jax.devices()
    assert len(devs) == 8, f"expected 8 fake devices, got {len(devs)}"
    out = {"single": run(devs[:1], 1, 1), "data8": run(devs, 8, 1), "data4_fsdp2": run(devs, 4, 2)}
    print("RESULT " + json.dumps(out))
