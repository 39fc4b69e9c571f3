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

from plip_jax.data import synthetic  # noqa: E402
from plip_jax.trainers import build  # noqa: E402


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
    c.mesh.data, c.mesh.fsdp, c.mesh.fsdp_min_size = data, fsdp, 64
    c.train.steps = 10
    # The run builder of every real run (fsdp > 1 brings its FsdpLayout: gathered parameters,
    # reduce-scattered gradients).
    built = build.pretraining(c, steps_per_epoch=10, devices=devices)
    state, bsh, step = built.fresh_state(0), built.run.batch_sharding, built.run.step
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
