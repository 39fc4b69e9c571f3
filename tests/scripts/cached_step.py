"""Two train steps of the tiny PLIP with the persistent compilation cache set by argv[1] (a folder
or 'off'); print the losses, final parameters' checksum and the cache hits/misses as JSON."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tiny import tiny_config  # noqa: E402

from plip_jax.core import compile_cache, optim  # noqa: E402
from plip_jax.core import sharding as shd  # noqa: E402
from plip_jax.core import state as state_lib  # noqa: E402
from plip_jax.data import sources as data_setup  # noqa: E402
from plip_jax.data import synthetic  # noqa: E402
from plip_jax.losses.total import active_tasks  # noqa: E402
from plip_jax.models import text_tower  # noqa: E402
from plip_jax.models.plip import build_model  # noqa: E402
from plip_jax.trainers.pretrain_step import jit_train_step, make_train_step  # noqa: E402

EVENTS = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses"}


def main(setting: str) -> dict:
    counts = {"hits": 0, "misses": 0}
    jax.monitoring.register_event_listener(
        lambda event, **_: counts.__setitem__(EVENTS[event], counts[EVENTS[event]] + 1) if event in EVENTS else None)
    folder = compile_cache.enable(setting, min_compile_secs=0.0)   # every program, however quick
    c = tiny_config(batch=16)
    text_cfg, _ = text_tower.from_config(c.model)
    model = build_model(c.model, text_cfg, active_tasks(dict(c.losses.weights)))
    mesh = shd.make_mesh(1, 1)
    example = data_setup.example_batch(c, text_cfg)
    abstract = state_lib.abstract_state(model, __import__("optax").identity(), example, state_lib.init_key(0))
    tx, schedule = optim.make_optimizer(c.optim, abstract.params, 10, 10, 16)
    state, shardings = state_lib.create_state(model, tx, example, 0, mesh)
    bsh = shd.batch_sharding(mesh)
    step = jit_train_step(make_train_step(model, tx, c.losses, schedule), shardings, bsh, mesh)
    step_hits_before = counts["hits"]
    losses = []
    for k in range(2):
        b = synthetic.synthetic_batch(16, (64, 32), 16, 4, num_ids=6, seed=k)
        state, m = step(state, jax.device_put(b, bsh), jax.random.key(1))
        losses.append({key: float(v) for key, v in jax.device_get(m).items()})
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(jax.device_get(state.params))]
    return {"folder": str(folder) if folder else None, "losses": losses,
            "param_sum": float(sum(x.sum() for x in leaves)), "param_abs": float(sum(np.abs(x).sum() for x in leaves)),
            "step_hit": counts["hits"] > step_hits_before, **counts,
            "entries": len(list(folder.iterdir())) if folder else 0}


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1])))
