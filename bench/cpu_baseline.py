"""CPU baseline (issue 7, item 5): the `mini` config's training-step time and the procedural
SYNTH-PEDES build time, in the results format of bench/common.py.

Step: the real path (configs/pretrain.py:mini -> build_model, make_optimizer, create_state,
make_train_step, jit_train_step) on synthetic batches of the mini spec already on the device.
Dataset: tfds_synth_pedes.build.build('synth_pedes', 'procedural', ...) with the mini config's
procedural parameters (builder defaults unless --num-identities / --images-per-identity) into a
fresh temporary directory, timed end to end (render + ingest + array_record writing).

  python bench/cpu_baseline.py [--steps 10] [--skip-build] [--num-identities N]
Writes bench/results/cpu_baseline-<date>-cpu.json (or --out).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs.pretrain import get_config  # noqa: E402
from plip_jax.core import optim, sharding
from plip_jax.core import state as state_lib
from plip_jax.data import synthetic  # noqa: E402
from plip_jax.losses.total import active_tasks  # noqa: E402
from plip_jax.models.plip import build_model  # noqa: E402
from plip_jax.models.text_tower import resolve  # noqa: E402
from plip_jax.trainers import pretrain_step as train_step  # noqa: E402


def create_state_compat(model, tx, example_batch: dict, seed: int, mesh):
    """plip_jax.core.state.create_state across its two signatures (int `seed` now, a PRNG key before)."""
    import inspect

    params = list(inspect.signature(state_lib.create_state).parameters)
    arg = seed if params[3] == "seed" else jax.random.key(seed)
    return state_lib.create_state(model, tx, example_batch, arg, mesh)


def time_mini_step(steps: int, warmup: int, batch: int | None) -> dict[str, Any]:
    """Median step time of the mini config's real train step (random init, synthetic data)."""
    cfg = get_config("mini")
    b = int(batch or cfg.data.batch_size)
    text_cfg, _ = resolve(cfg.model.text.init)
    tasks = active_tasks(dict(cfg.losses.weights))
    model = build_model(cfg.model, text_cfg, tasks)
    mesh = sharding.make_mesh()
    size = tuple(cfg.model.image.input_size)
    host = [synthetic.synthetic_batch(b, size, cfg.data.max_length, cfg.data.max_masked,
                                      vocab_size=text_cfg.vocab_size, seed=i) for i in range(2)]
    shapes = jax.eval_shape(lambda r: state_lib.init_variables(model, r, host[0]), jax.random.key(0))
    tx, schedule = optim.make_optimizer(cfg.optim, shapes["params"], steps_per_epoch=100, total_steps=1000,
                                        global_batch=b)
    st, st_sh = create_state_compat(model, tx, host[0], int(cfg.seed), mesh)
    fn = train_step.jit_train_step(train_step.make_train_step(model, tx, cfg.losses, schedule), st_sh,
                                   sharding.batch_sharding(mesh), mesh)
    batches = [jax.device_put(h, sharding.batch_sharding(mesh)) for h in host]
    rng = jax.device_put(jax.random.key(1), sharding.replicated(mesh))
    t0 = time.perf_counter()
    compiled = fn.lower(st, batches[0], rng).compile()
    compile_s = time.perf_counter() - t0
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    flops = float((ca or {}).get("flops", 0.0)) or None
    for i in range(warmup):
        st, m = compiled(st, batches[i % 2], rng)
    jax.block_until_ready(st)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        st, m = compiled(st, batches[i % 2], rng)
        jax.block_until_ready((st, m))
        times.append(time.perf_counter() - t)
    loss = float(m["loss"]) if "loss" in m else float(m.get("total", np.nan))
    return {"work": "mini_step", "impl": "jax", "mode": "jit", "dtype": str(cfg.model.dtype).replace("float", "fp"),
            "batch": b, "steps": steps, "warmup": warmup, "status": "ok", "compile_s": round(compile_s, 2),
            "step_ms": round(common.median_ms(times), 2), "step_ms_min": round(1e3 * min(times), 2),
            "flops_per_step": flops, "loss": loss, "tasks": list(tasks),
            "image_size": list(size), "max_length": int(cfg.data.max_length)}


def time_dataset_build(params: dict[str, Any]) -> dict[str, Any]:
    """Seconds to build synth_pedes/procedural from nothing, and the split sizes."""
    try:
        from tfds_synth_pedes import build as tsp_build
    except ImportError as e:
        return {"status": f"unavailable: {e}"}
    d = tempfile.mkdtemp(prefix="plip_cpu_baseline_tfds_")
    try:
        return _build(tsp_build, d, params)
    except Exception as e:  # record a failing build, keep the step timing
        return {"status": f"error: {type(e).__name__}: {str(e).splitlines()[0][:300]}", "params": params}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _build(tsp_build, d: str, params: dict[str, Any]) -> dict[str, Any]:
    """Build into `d` and report seconds and split sizes."""
    t0 = time.perf_counter()
    builder = tsp_build.build("synth_pedes", "procedural", d, **params)
    seconds = time.perf_counter() - t0
    splits = {k: int(v.num_examples) for k, v in builder.info.splits.items()}
    cfg = builder.builder_config
    return {"status": "ok", "seconds": round(seconds, 1), "splits": splits,
            "images_per_s": round(sum(splits.values()) / seconds, 1), "config": cfg.name,
            "num_identities": cfg.num_identities, "images_per_identity": cfg.images_per_identity,
            "image_size": [cfg.image_height, cfg.image_width], "params": params}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=None, help="default: the mini config's (64)")
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--num-identities", type=int, default=None)
    p.add_argument("--images-per-identity", type=int, default=None)
    p.add_argument("--held-out-ids", type=int, default=None,
                   help="num_val_ids = num_test_ids (builder default 200 each; needs more identities than 2x this)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    dev = {"platform": jax.devices()[0].platform, "kind": jax.devices()[0].device_kind, "count": jax.device_count(),
           "card_family": None}
    row = common.finish_row(time_mini_step(a.steps, a.warmup, a.batch), dev["kind"])
    print(common.format_table([row]), flush=True)
    build = {"status": "skipped"}
    if not a.skip_build:
        params = dict(get_config("mini").data.procedural or {})
        if a.num_identities:
            params["num_identities"] = a.num_identities
        if a.images_per_identity:
            params["images_per_identity"] = a.images_per_identity
        if a.held_out_ids is not None:
            params["num_val_ids"] = params["num_test_ids"] = a.held_out_ids
        build = time_dataset_build(params)
        print("dataset build:", build, flush=True)
    versions = {"jax": jax.__version__, **common.package_versions(
        ("jaxlib", "flax", "optax", "numpy", "tensorflow-datasets", "grain", "array-record"))}
    doc = common.make_result("cpu_baseline", dev, versions, [row], config={"config": "configs/pretrain.py:mini"},
                             smoke=False, notes=["dataset_build: wall seconds, fresh data_dir, 1 process."])
    doc["dataset_build"] = build
    common.validate_result(doc)
    out = a.out or common.RESULTS_DIR / f"cpu_baseline-{common.today()}-cpu.json"
    print("wrote", ", ".join(map(str, common.write_json(doc, out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
