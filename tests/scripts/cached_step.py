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

from plip_jax.core import compile_cache  # noqa: E402
from plip_jax.data import synthetic  # noqa: E402
from plip_jax.trainers import build  # noqa: E402

EVENTS = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses"}


def main(setting: str) -> dict:
    counts = {"hits": 0, "misses": 0}
    jax.monitoring.register_event_listener(
        lambda event, **_: counts.__setitem__(EVENTS[event], counts[EVENTS[event]] + 1) if event in EVENTS else None)
    folder = compile_cache.enable(setting, min_compile_secs=0.0)   # every program, however quick
    c = tiny_config(batch=16)
    built = build.pretraining(c, steps_per_epoch=10)
    state, run = built.fresh_state(0), built.run
    step_hits_before = counts["hits"]
    losses = []
    for k in range(2):
        b = synthetic.synthetic_batch(16, (64, 32), 16, 4, num_ids=6, seed=k)
        state, m = run.step(state, jax.device_put(b, run.batch_sharding), jax.random.key(1))
        losses.append({key: float(v) for key, v in jax.device_get(m).items()})
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(jax.device_get(state.params))]
    return {"folder": str(folder) if folder else None, "losses": losses,
            "param_sum": float(sum(x.sum() for x in leaves)), "param_abs": float(sum(np.abs(x).sum() for x in leaves)),
            "step_hit": counts["hits"] > step_hits_before, **counts,
            "entries": len(list(folder.iterdir())) if folder else 0}


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1])))
