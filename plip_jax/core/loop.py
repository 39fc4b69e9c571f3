"""The one training loop of every run (pre-training and the three fine-tunes).

Around a jitted step it owns what a long run needs: resume from the newest readable checkpoint
with the data-iterator state, progress bar and metrics.jsonl (loss, samples/s, step and compile
seconds), periodic hooks (evaluation), Orbax checkpoints every `ckpt_every` steps, a stop on a
non-finite loss that names the step and keeps the last good checkpoint, and SIGTERM: save, exit 0.
A run supplies its state, step, data and hooks; the loop knows nothing of models or tasks.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import jax

from plip_jax.core import state as state_lib
from plip_jax.core import timing
from plip_jax.core.checkpoint import Checkpointer
from plip_jax.core.errors import NonFiniteLoss
from plip_jax.core.metrics import MetricWriter, host_metrics


class TrainData(Protocol):
    """What the loop needs of a training input: global batches and a resumable position."""

    def next_global(self, sharding: Any) -> dict: ...
    def state(self) -> dict: ...
    def restore(self, state: dict | None, step: int) -> None: ...


@dataclasses.dataclass(frozen=True)
class Hook:
    """`fn(step, state, say)` every `every` steps (not at the last step: the run's final evaluation
    follows); `say` prints one line above the progress bar."""
    every: int
    fn: Callable[[int, Any, Callable[[str], None]], None]


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    total_steps: int
    steps_per_epoch: int
    batch_size: int                      # global batch, for samples/s
    log_every: int
    ckpt_every: int
    desc: str = "train"                  # progress bar label
    postfix: Sequence[str] = ("loss",)   # metrics shown in the progress bar


def resume_or_start(ckpt: Checkpointer, abstract: Any, shardings: Any, start: Callable[[], Any],
                    data: TrainData, workdir: Path) -> tuple[Any, int]:
    """(state, first step): the newest readable checkpoint (unreadable newer steps are reported and
    moved aside) with its data position, else `start()` and the data from its beginning."""
    restored = ckpt.restore_latest(state_lib.with_shardings(abstract, shardings))
    if restored is not None:
        state, _, data_state, _ = restored
        step = int(jax.device_get(state.step))
        data.restore(data_state, step)
        if jax.process_index() == 0:
            print(f"Resumed from {workdir / 'checkpoints'} at step {step}", flush=True)
        return state, step
    data.restore(None, 0)
    return start(), 0


def run(cfg: LoopConfig, *, state: Any, step_fn: Callable, data: TrainData, batch_sharding: Any,
        rng: jax.Array, start_step: int, ckpt: Checkpointer, save_config: dict, writer: MetricWriter,
        workdir: Path, hooks: Sequence[Hook] = ()) -> tuple[Any, int]:
    """Steps `start_step` .. `cfg.total_steps`; returns (state, step) with the last step saved.

    Raises NonFiniteLoss (the step named, the last good checkpoint kept) and SystemExit(0) on
    SIGTERM after saving. `save_config` is stored with every checkpoint (config.json beside the
    arrays: what `from_pretrained` and resume read).
    """
    is_main = jax.process_index() == 0
    stop = {"signal": None}

    def on_sigterm(signum, _frame):
        stop["signal"] = signum

    prev = signal.signal(signal.SIGTERM, on_sigterm)

    def save(step: int) -> None:
        ckpt.save(step, state, save_config, data.state(), force=True)

    pending: list[tuple[int, dict]] = []
    step = start_step
    t_last, n_last = time.time(), 0
    clock = timing.CompileClock()
    window = timing.StepWindow(clock)   # step_s / compile_s in metrics.jsonl, less hooks and saves
    pbar = None
    if is_main:
        from tqdm import tqdm

        pbar = tqdm(total=cfg.total_steps, initial=start_step, desc=cfg.desc, dynamic_ncols=True,
                    disable=os.environ.get("PLIP_NO_PROGRESS") == "1")

    def say(msg: str) -> None:
        if is_main:
            (pbar.write(msg) if pbar is not None else print(msg, flush=True))

    def flush_pending() -> tuple[int, dict[str, float]] | None:
        last = None
        for s, m in pending:
            hm = host_metrics(m)
            if hm.get("nonfinite", 0.0) > 0 or not math.isfinite(hm.get("loss", 0.0)):
                raise NonFiniteLoss(
                    f"loss became {hm.get('loss')} at step {s + 1}; stopping. The last good checkpoint "
                    f"(step {ckpt.latest_step()}) is kept in {workdir / 'checkpoints'}")
            last = (s, hm)
        pending.clear()
        return last

    try:
        while step < cfg.total_steps:
            batch = data.next_global(batch_sharding)
            state, metrics = step_fn(state, batch, rng)
            pending.append((step, metrics))
            step += 1
            window.step()
            n_last += cfg.batch_size
            if step % cfg.log_every == 0 or step == cfg.total_steps:
                last = flush_pending()
                dt = max(time.time() - t_last, 1e-9)
                sps = n_last / dt
                t_last, n_last = time.time(), 0
                times = window.read()
                if last is not None:
                    hm = {k: v for k, v in last[1].items() if k != "nonfinite"}
                    hm["samples_per_s"] = sps
                    hm.update(times)
                    hm["epoch"] = step / max(cfg.steps_per_epoch, 1)
                    writer.write(step, hm)
                    if pbar is not None:
                        pbar.set_postfix({k.replace("loss_", ""): f"{hm[k]:.3g}" for k in cfg.postfix if k in hm}
                                         | {"samples/s": f"{sps:.1f}"})
            if pbar is not None:
                pbar.update(1)
            for hook in hooks:
                if hook.every and step % hook.every == 0 and step < cfg.total_steps:
                    with window.exclude():
                        hook.fn(step, state, say)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                flush_pending()
                with window.exclude():
                    save(step)
            if stop["signal"] is not None:
                flush_pending()
                if ckpt.latest_step() != step:  # a SIGTERM at a checkpoint step: saved just above
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
    return state, step
