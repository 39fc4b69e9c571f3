"""Pre-training: config checks, data, the sharded PLIP state (fresh with the pretrained text tower,
or resumed), the engine's loop (plip_jax.core.loop) with periodic zero-shot retrieval, and the
final evaluation (eval.json) with a printed table."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from plip_jax.convert import text_weights
from plip_jax.core import checkpoint as ckpt_lib
from plip_jax.core import loop, optim
from plip_jax.core import state as state_lib
from plip_jax.core.errors import ConfigError
from plip_jax.core.metrics import MetricWriter, print_table
from plip_jax.data import sources
from plip_jax.data.tokenizer import load_tokenizer
from plip_jax.evals.embed import Embedder
from plip_jax.evals.tasks import text_reid_eval
from plip_jax.losses.total import active_tasks
from plip_jax.models import text_tower
from plip_jax.trainers import build


def validate_config(config: ml_collections.ConfigDict, device_count: int | None = None,
                    weights_needed: bool = True) -> None:
    """Cheap checks that fail in one clear line before any data is read or compiled (`device_count`
    of the target slice, default this host's devices; `weights_needed=False` for a compile-only run)."""
    weights = dict(config.losses.weights)
    bad = set(weights) - {"ivlc", "tic", "iap"}
    if bad:
        raise ConfigError(f"config.losses.weights has unknown tasks {sorted(bad)} (expected ivlc, tic, iap)")
    negative = sorted(k for k, v in weights.items() if float(v) < 0)
    if negative:
        raise ConfigError(f"config.losses.weights must be >= 0; {negative} are negative")
    if not active_tasks(weights):
        raise ConfigError("config.losses.weights switches every pretext task off; keep at least one > 0")
    if config.data.batch_size <= 0:
        raise ConfigError(f"config.data.batch_size must be positive, got {config.data.batch_size}")
    n = jax.device_count() if device_count is None else int(device_count)
    if config.data.batch_size % n:
        raise ConfigError(f"config.data.batch_size={config.data.batch_size} is not divisible by the "
                          f"device count {n}; use a multiple of {n}")
    if config.model.recipe not in ("release", "paper_v2"):
        raise ConfigError(f"config.model.recipe must be 'release' or 'paper_v2', got {config.model.recipe!r}")
    if config.model.dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"config.model.dtype must be 'float32' or 'bfloat16', got {config.model.dtype!r}")
    h, w = config.model.image.input_size
    if h % 32 or w % 32:
        raise ConfigError(f"config.model.image.input_size={tuple(config.model.image.input_size)} must be multiples of 32")
    if not weights_needed:
        return
    sources.validate(config.data)
    try:  # pretrained weights found locally, or a random tower named so and not frozen
        text_tower.validate(config.model, tuple(config.optim.frozen))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _to_dict(config: ml_collections.ConfigDict, text_cfg=None) -> dict:
    d = json.loads(config.to_json())
    if text_cfg is not None:
        d["model"]["text_config"] = text_cfg.to_dict()  # the exact text architecture, for loaders
    return d


def load_text_weights(config, state: state_lib.TrainState, shardings) -> state_lib.TrainState:
    """Put the pretrained text tower (MiniLM / a HF folder) into a fresh state, outside jit, so
    large embeddings never become compile-time constants."""
    text_cfg, folder = text_tower.from_config(config.model)
    if folder is None:
        return state
    params, report = text_weights.load_params(folder, text_cfg.num_hidden_layers)
    if jax.process_index() == 0:
        print(text_weights.describe_load(report), flush=True)
    current = state.params["text"]
    mismatched = [f"{a.shape} vs {np.shape(b)}" for a, b in zip(jax.tree.leaves(current), jax.tree.leaves(params))
                  if tuple(a.shape) != tuple(np.shape(b))]
    if jax.tree.structure(current) != jax.tree.structure(params) or mismatched:
        raise ConfigError(f"text weights in {folder} do not fit the text tower: {mismatched[:3]}")
    text = jax.tree.map(lambda a, b, s: state_lib.place(np.asarray(b, a.dtype), s),
                        current, params, shardings.params["text"])
    return state.replace(params={**state.params, "text": text})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Run (or resume) pre-training in `workdir`; returns the final evaluation metrics."""
    validate_config(config)
    if jax.process_index() == 0 and text_tower.from_config(config.model)[1] is None:
        # A random text tower is legal only by name (validate_config); the run's first line says so.
        print(f"text tower {config.model.text.init!r}: RANDOM weights, no pretrained text encoder", flush=True)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    if is_main:
        (workdir / "config.json").write_text(config.to_json(indent=2))

    # Data first (builds the procedural dataset on first use): the schedule needs steps per epoch.
    tokenizer = load_tokenizer(config.data.tokenizer_dir, max_length=config.data.max_length)
    data = sources.open_train(config, tokenizer)
    plan = sources.eval_plan(config)  # own val/test, else a built text-ReID set, else none (said here)
    if is_main and plan.message:
        print(plan.message, flush=True)
    built = build.pretraining(config, data.steps_per_epoch)
    run, model, text_cfg = built.run, built.model, built.text_cfg
    mesh, batch_sharding, shardings = run.mesh, run.batch_sharding, run.shardings
    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", max_to_keep=config.train.keep_checkpoints,
                                 async_save=config.train.async_checkpoints)

    def start() -> state_lib.TrainState:
        return load_text_weights(config, built.fresh_state(config.seed), shardings)

    state, start_step = loop.resume_or_start(ckpt, run.abstract, shardings, start, data, workdir)
    ckpt.check_space(state)  # one warning now if keep_checkpoints copies cannot fit

    if is_main:
        labels = optim.param_labels(run.abstract.params, config.optim)
        counts = optim.count_params(run.abstract.params, labels)
        print(f"PLIP {config.model.recipe} | tasks {','.join(built.tasks)} | devices {jax.device_count()} "
              f"(mesh data={mesh.shape['data']} fsdp={mesh.shape['fsdp']}) | params "
              + ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items()))
              + f" | {run.total_steps} steps ({run.steps_per_epoch}/epoch) x batch {config.data.batch_size}",
              flush=True)

    step_fn = run.step
    embedder = Embedder.for_plip(model, config.train.eval_batch_size, sharding=batch_sharding)
    final_val = bool(config.train.get("final_val", True)) and plan.val is not None
    periodic = plan.periodic if config.train.eval_every else None
    # The validation split (the test split when there is none) is read only when something uses it.
    eval_name = periodic or (plan.val if final_val else None)
    eval_split = sources.open_eval(config, tokenizer, eval_name, plan.data) if eval_name else None
    writer = MetricWriter(workdir, is_main)
    base_rng = jax.random.key(config.seed + 1)

    def evaluate(current, split) -> dict:
        return text_reid_eval(embedder, {"params": current.params, "batch_stats": current.batch_stats}, split)

    def periodic_eval(step: int, current, say) -> None:
        m = evaluate(current, eval_split)
        writer.write(step, {f"{plan.key(periodic)}/{k}": v for k, v in m.items() if isinstance(v, float)})
        say(f"step {step}: zero-shot text->image on {plan.key(periodic)}: R1 {m['R1']:.2f} R5 {m['R5']:.2f} "
            f"R10 {m['R10']:.2f} mAP {m['mAP']:.2f} mAP_official {m['mAP_official']:.2f}")

    loop_cfg = loop.LoopConfig(total_steps=run.total_steps, steps_per_epoch=run.steps_per_epoch,
                               batch_size=int(config.data.batch_size), log_every=int(config.train.log_every),
                               ckpt_every=int(config.train.ckpt_every), desc="pretrain",
                               postfix=("loss", "loss_ivlc", "loss_tic", "loss_iap"))
    hooks = [loop.Hook(int(config.train.eval_every), periodic_eval)] if periodic else []
    state, step = loop.run(loop_cfg, state=state, step_fn=step_fn, data=data, batch_sharding=batch_sharding,
                           rng=base_rng, start_step=start_step, ckpt=ckpt, save_config=_to_dict(config, text_cfg),
                           writer=writer, workdir=workdir, hooks=hooks)

    # Final evaluation: validation (selection; `train.final_val=False` skips it) and test (report).
    results: dict[str, Any] = {"step": step}
    rows = {}
    val = None
    if final_val:
        val = evaluate(state, eval_split)
        rows[plan.val] = val
    if plan.test:
        test_split = eval_split if eval_name == plan.test else sources.open_eval(config, tokenizer, plan.test, plan.data)
        test = evaluate(state, test_split)
        rows[plan.test] = test
        results.update(test)
        results["split"] = plan.test
        writer.write(step, {f"{plan.key(plan.test)}/{k}": v for k, v in test.items() if isinstance(v, float)})
    results["dataset"] = plan.name or f"{config.data.name}/{config.data.config}"
    if not plan.own:
        results["train_dataset"] = f"{config.data.name}/{config.data.config}"
    if not rows:
        results["not_evaluated"] = plan.message
    if val is not None:
        results["val"] = val
    writer.close()
    ckpt.close()
    if is_main:
        (workdir / "eval.json").write_text(json.dumps(results, indent=2))
        if rows:
            print_table(f"Zero-shot text->image retrieval ({results['dataset']}, step {step})", rows)
        else:
            print(f"step {step}: not evaluated (no evaluation set; eval.json says why)", flush=True)
        tokenizer.save(workdir / "tokenizer")
    return results
