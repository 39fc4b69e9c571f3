"""The pre-training loop: data -> sharded state (fresh or resumed) -> jitted steps with progress,
metrics.jsonl + TensorBoard events, periodic zero-shot retrieval, Orbax checkpoints, a NaN guard,
SIGTERM handling, and a final evaluation (eval.json) with a printed table."""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from plip_jax import checkpoint as ckpt_lib
from plip_jax import data_setup, optim, sharding as shd, state as state_lib, text_tower, timing
from plip_jax.data.tokenizer import load_tokenizer
from plip_jax.evals.embed import Embedder, text_reid_eval
from plip_jax.models.plip import build_model
from plip_jax.train_step import active_tasks, jit_train_step, make_train_step

log = logging.getLogger("plip_jax")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


class ConfigError(ValueError):
    """A config that cannot run; raised before anything is compiled."""


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Cheap checks that fail in one clear line before any data is read or compiled."""
    weights = dict(config.losses.weights)
    bad = set(weights) - {"ivlc", "tic", "iap"}
    if bad:
        raise ConfigError(f"config.losses.weights has unknown tasks {sorted(bad)} (expected ivlc, tic, iap)")
    if not active_tasks(weights):
        raise ConfigError("config.losses.weights switches every pretext task off; keep at least one > 0")
    if config.data.batch_size <= 0:
        raise ConfigError(f"config.data.batch_size must be positive, got {config.data.batch_size}")
    n = jax.device_count()
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
    data_setup.validate(config.data)
    try:  # pretrained weights found locally, or a random tower named so and not frozen
        text_tower.validate(config.model, tuple(config.optim.frozen))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _to_dict(config: ml_collections.ConfigDict, text_cfg=None) -> dict:
    d = json.loads(config.to_json())
    if text_cfg is not None:
        d["model"]["text_config"] = text_cfg.to_dict()  # the exact text architecture, for loaders
    return d


class MetricWriter:
    """metrics.jsonl (one JSON object per logged step) + TensorBoard events, process 0 only."""

    def __init__(self, workdir: Path, enabled: bool):
        self.enabled = enabled
        self.tb = None
        if enabled:
            self.file = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(str(workdir / "tensorboard"))
            except ImportError:  # pragma: no cover - optional
                self.tb = None

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": int(step), **metrics}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, int(step))

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def load_text_weights(config, state: state_lib.TrainState, shardings) -> state_lib.TrainState:
    """Put the pretrained text tower (MiniLM / a HF folder) into a fresh state, outside jit, so
    large embeddings never become compile-time constants."""
    text_cfg, folder = text_tower.from_config(config.model)
    if folder is None:
        return state
    params, report = text_tower.load_params(folder, text_cfg.num_hidden_layers)
    if jax.process_index() == 0:
        print(text_tower.describe_load(report), flush=True)
    current = state.params["text"]
    mismatched = [f"{a.shape} vs {np.shape(b)}" for a, b in zip(jax.tree.leaves(current), jax.tree.leaves(params))
                  if tuple(a.shape) != tuple(np.shape(b))]
    if jax.tree.structure(current) != jax.tree.structure(params) or mismatched:
        raise ConfigError(f"text weights in {folder} do not fit the text tower: {mismatched[:3]}")
    text = jax.tree.map(lambda a, b, s: state_lib.place(np.asarray(b, a.dtype), s),
                        current, params, shardings.params["text"])
    return state.replace(params={**state.params, "text": text})


def _host_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def print_table(title: str, rows: dict[str, dict[str, float]]) -> str:
    """A small paper-style table: one row per split, R@1/R@5/R@10/mAP (IRRA)/mAP_official (PLIP's
    trapezoid)/mINP."""
    cols = ["R1", "R5", "R10", "mAP", "mAP_official", "mINP"]
    lines = [title, f"{'split':<10}" + "".join(f"{c:>{max(9, len(c) + 1)}}" for c in cols)]
    for name, m in rows.items():
        lines.append(f"{name:<10}" + "".join(f"{m.get(c, float('nan')):>{max(9, len(c) + 1)}.2f}" for c in cols))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


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

    mesh = shd.make_mesh(config.mesh.data, config.mesh.fsdp)
    shd.check_batch_size(config.data.batch_size, mesh, jax.process_count())
    batch_sharding = shd.batch_sharding(mesh)

    # Data (builds the procedural dataset on first use).
    tokenizer = load_tokenizer(config.data.tokenizer_dir, max_length=config.data.max_length)
    data = data_setup.open_train(config, tokenizer)
    plan = data_setup.eval_plan(config)  # own val/test, else a built text-ReID set, else none (said here)
    if is_main and plan.message:
        print(plan.message, flush=True)
    steps_per_epoch = max(data.steps_per_epoch, 1)
    total_steps = int(config.train.steps) or int(math.ceil(config.train.epochs * steps_per_epoch))

    # Model, optimizer, state.
    text_cfg, _ = text_tower.from_config(config.model)
    tasks = active_tasks(dict(config.losses.weights))
    model = build_model(config.model, text_cfg, tasks)
    rng = state_lib.init_key(config.seed)
    example = data_setup.example_batch(config, text_cfg)
    abstract = state_lib.abstract_state(model, optax.identity(), example, rng)
    tx, schedule = optim.make_optimizer(config.optim, abstract.params, steps_per_epoch, total_steps,
                                        config.data.batch_size)
    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", max_to_keep=config.train.keep_checkpoints,
                                 async_save=config.train.async_checkpoints)
    # Only the optimizer state's shapes are new: no second trace of the model.
    abstract = abstract.replace(opt_state=jax.eval_shape(tx.init, abstract.params))
    shardings = state_lib.state_shardings(abstract, mesh, config.mesh.fsdp_min_size)
    start_step = 0
    # The newest readable checkpoint; unreadable newer steps are reported and moved aside.
    restored = ckpt.restore_latest(state_lib.with_shardings(abstract, shardings))
    if restored is not None:
        state, _, data_state, _ = restored
        start_step = int(jax.device_get(state.step))
        data.restore(data_state, start_step)
        if is_main:
            print(f"Resumed from {workdir / 'checkpoints'} at step {start_step}", flush=True)
    else:
        state, _ = state_lib.create_state(model, tx, example, config.seed, mesh, config.mesh.fsdp_min_size)
        state = load_text_weights(config, state, shardings)
        data.restore(None, 0)
    ckpt.check_space(state)  # one warning now if keep_checkpoints copies cannot fit

    if is_main:
        labels = optim.param_labels(abstract.params, config.optim)
        counts = optim.count_params(abstract.params, labels)
        print(f"PLIP {config.model.recipe} | tasks {','.join(tasks)} | devices {jax.device_count()} "
              f"(mesh data={mesh.shape['data']} fsdp={mesh.shape['fsdp']}) | params "
              + ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items()))
              + f" | {total_steps} steps ({steps_per_epoch}/epoch) x batch {config.data.batch_size}", flush=True)

    step_fn = jit_train_step(make_train_step(model, tx, config.losses, schedule), shardings, batch_sharding, mesh)
    embedder = Embedder(model, config.train.eval_batch_size, sharding=batch_sharding)
    final_val = bool(config.train.get("final_val", True)) and plan.val is not None
    periodic = plan.periodic if config.train.eval_every else None
    # The validation split (the test split when there is none) is read only when something uses it.
    eval_name = periodic or (plan.val if final_val else None)
    eval_split = data_setup.open_eval(config, tokenizer, eval_name, plan.data) if eval_name else None
    writer = MetricWriter(workdir, is_main)
    base_rng = jax.random.key(config.seed + 1)

    stop = {"signal": None}

    def on_sigterm(signum, _frame):
        stop["signal"] = signum

    prev = signal.signal(signal.SIGTERM, on_sigterm)

    def save(step: int, force: bool = True) -> None:
        ckpt.save(step, state, _to_dict(config, text_cfg), data.state(), force=force)

    def evaluate(split, name: str) -> dict:
        m = text_reid_eval(embedder, {"params": state.params, "batch_stats": state.batch_stats}, split)
        return m

    fault_step = int(os.environ.get("PLIP_CRASH_AFTER_CHECKPOINT", "0") or 0)
    hold_step = int(os.environ.get("PLIP_HOLD_AFTER_CHECKPOINT", "0") or 0)  # wait there to be killed
    pending: list[tuple[int, dict]] = []
    step = start_step
    t_last, n_last = time.time(), 0
    clock = timing.CompileClock()
    window = timing.StepWindow(clock)   # step_s / compile_s in metrics.jsonl, less eval and saves
    pbar = None
    if is_main:
        from tqdm import tqdm

        pbar = tqdm(total=total_steps, initial=start_step, desc="pretrain", dynamic_ncols=True,
                    disable=os.environ.get("PLIP_NO_PROGRESS") == "1")

    def flush_pending() -> dict[str, float] | None:
        last = None
        for s, m in pending:
            hm = _host_metrics(m)
            if hm.get("nonfinite", 0.0) > 0 or not math.isfinite(hm.get("loss", 0.0)):
                raise NonFiniteLoss(
                    f"loss became {hm.get('loss')} at step {s + 1}; stopping. The last good checkpoint "
                    f"(step {ckpt.latest_step()}) is kept in {workdir / 'checkpoints'}")
            last = (s, hm)
        pending.clear()
        return last

    try:
        while step < total_steps:
            batch = data.next_global(batch_sharding)
            state, metrics = step_fn(state, batch, base_rng)
            pending.append((step, metrics))
            step += 1
            window.step()
            n_last += config.data.batch_size
            if step % config.train.log_every == 0 or step == total_steps:
                last = flush_pending()
                dt = max(time.time() - t_last, 1e-9)
                sps = n_last / dt
                t_last, n_last = time.time(), 0
                times = window.read()
                if last is not None:
                    hm = {k: v for k, v in last[1].items() if k != "nonfinite"}
                    hm["samples_per_s"] = sps
                    hm.update(times)
                    hm["epoch"] = step / steps_per_epoch
                    writer.write(step, hm)
                    if pbar is not None:
                        pbar.set_postfix({k.replace("loss_", ""): f"{hm[k]:.3g}" for k in
                                          ("loss", "loss_ivlc", "loss_tic", "loss_iap") if k in hm}
                                         | {"samples/s": f"{sps:.1f}"})
            if pbar is not None:
                pbar.update(1)
            if periodic and step % config.train.eval_every == 0 and step < total_steps:
                with window.exclude():
                    m = evaluate(eval_split, periodic)
                writer.write(step, {f"{plan.key(periodic)}/{k}": v for k, v in m.items()
                                    if isinstance(v, float)})
                if is_main:
                    msg = f"step {step}: zero-shot text->image on {plan.key(periodic)}: " \
                          f"R1 {m['R1']:.2f} R5 {m['R5']:.2f} R10 {m['R10']:.2f} mAP {m['mAP']:.2f} " \
                          f"mAP_official {m['mAP_official']:.2f}"
                    (pbar.write(msg) if pbar is not None else print(msg, flush=True))
            if config.train.ckpt_every and step % config.train.ckpt_every == 0:
                flush_pending()
                with window.exclude():
                    save(step)
                if hold_step and step == hold_step:
                    # Fault injection for kill-and-resume (bench/rehearsal.py): the checkpoint is
                    # written, then the run waits for its SIGKILL at a known point.
                    ckpt.wait()
                    print(f"PLIP_HOLD: checkpoint {step} written; waiting to be killed", flush=True)
                    while True:
                        time.sleep(60)
                if fault_step and step == fault_step:
                    # Fault injection for resume tests: a hard crash right after a checkpoint.
                    ckpt.wait()
                    os._exit(3)
            if stop["signal"] is not None:
                flush_pending()
                save(step)
                ckpt.close()
                if is_main:
                    print(f"\nSIGTERM: saved step {step} to {workdir / 'checkpoints'}; exiting.", flush=True)
                writer.close()
                raise SystemExit(0)
        flush_pending()
        if ckpt.latest_step() != step:
            save(step)
    except BaseException:
        ckpt.close(quiet=True)  # let an in-flight save of a good step finish; no shutdown noise
        raise
    finally:
        if pbar is not None:
            pbar.close()
        signal.signal(signal.SIGTERM, prev)
        clock.close()
    ckpt.wait()

    # Final evaluation: validation (selection; `train.final_val=False` skips it) and test (report).
    results: dict[str, Any] = {"step": step}
    rows = {}
    val = None
    if final_val:
        val = evaluate(eval_split, plan.val)
        rows[plan.val] = val
    if plan.test:
        test_split = eval_split if eval_name == plan.test else data_setup.open_eval(config, tokenizer, plan.test, plan.data)
        test = evaluate(test_split, plan.test)
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
