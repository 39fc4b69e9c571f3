"""Orbax checkpoints of a run: train state, config JSON and the data-iterator state, together.

The only module that imports Orbax, so a move to Orbax's v1 API touches one file. Layout:
`WORKDIR/checkpoints/<step>/{state, config, data}`; `data` holds one JSON per process (grain's
handler), so multi-host runs resume each host's input shard exactly. Faults are `CheckpointError`s
with one-line messages: a step that cannot be read is moved to `checkpoints/corrupt/<step>-<time>`
and the next older one is tried (`restore_latest`); a failed save names the directory, the step,
the OS error and the free space; a first save that cannot fit `max_to_keep` copies is warned about.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from plip_jax.core.cli import human_bytes

STATE, CONFIG, DATA = "state", "config", "data"
CORRUPT = "corrupt"  # not a step name: Orbax's step listing and find_checkpoint skip it


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or written; the message is one line for the user."""


def _chain(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def fault_cause(e: BaseException, limit: int = 300) -> str:
    """The innermost useful message of an exception chain, on one line (Orbax wraps TensorStore's
    errors in messages that only point at 'full TensorStore details')."""
    for c in reversed(_chain(e)):
        line = next((ln.strip() for ln in str(c).splitlines() if ln.strip()), "")
        if line:
            return line if len(line) <= limit else line[:limit - 3] + "..."
    return type(e).__name__


def _not_an_abandoned_read(record: logging.LogRecord) -> bool:
    """asyncio log filter: False for a never-retrieved exception of a checkpoint read."""
    msg = record.getMessage()
    return not ("exception was never retrieved" in msg
                and any(w in msg for w in ("orbax", "OCDBT", "TensorStore")))


def _drop_abandoned_reads() -> None:
    """After a failed restore, Orbax's other shard reads of that step are coroutines and tasks that
    never finish; when they are dropped Python prints each one's error ('Exception ignored in:
    <coroutine ... _read_array_index_and_device_put>', or asyncio's 'Task exception was never
    retrieved') with TensorStore's whole spec, hundreds of lines after our one-line report. Drop
    exactly those (PLIP_DEBUG keeps them)."""
    import gc

    if os.environ.get("PLIP_DEBUG", "") not in ("", "0"):
        return
    previous = sys.unraisablehook
    if getattr(previous, "_plip_drops_abandoned_reads", False):
        gc.collect()
        return

    def hook(unraisable) -> None:
        where = f"{getattr(unraisable, 'object', '')!r} {getattr(unraisable, 'err_msg', '') or ''}"
        if "_read_array_index_and_device_put" in where or "orbax" in where:
            return
        previous(unraisable)

    hook._plip_drops_abandoned_reads = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
    # The same reads as asyncio tasks and futures: "Task/Future exception was never retrieved"
    # records (Orbax's async_deserialize, TensorStore's OCDBT reads), logged when the loop drops them.
    logging.getLogger("asyncio").addFilter(_not_an_abandoned_read)
    gc.collect()


def os_error_text(e: BaseException) -> str:
    """'[Errno 28] No space left on device' from an OSError or TensorStore's os_error_code."""
    for c in _chain(e):
        if isinstance(c, OSError) and c.errno:
            return f"[Errno {c.errno}] {c.strerror or os.strerror(c.errno)}"
    for c in _chain(e):
        m = re.search(r"os_error_code='?(\d+)", str(c))
        if m:
            return f"[Errno {m.group(1)}] {os.strerror(int(m.group(1)))}"
    return fault_cause(e)




def _disk_usage(path: Any):
    """shutil.disk_usage of the nearest existing ancestor (None for remote paths)."""
    if "://" in str(path):
        return None
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p)
    except OSError:
        return None


def free_space_text(path: Any) -> str:
    u = _disk_usage(path)
    return "free space unknown" if u is None else f"{human_bytes(u.free)} free of {human_bytes(u.total)}"


def _warn(msg: str) -> None:
    if jax.process_index() == 0:
        print(f"warning: {msg}", file=sys.stderr, flush=True)


class _QuietOrbax(logging.Filter):
    """Drops Orbax's ERROR records (each with a traceback, one per writer thread): the fault reaches
    the caller as one CheckpointError instead. PLIP_DEBUG=1 keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "orbax" in (record.pathname or ""):
            return os.environ.get("PLIP_DEBUG", "") not in ("", "0")
        return True


_QUIET = _QuietOrbax()


def _is_closed_loop_noise(exc: BaseException | None) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _install_noise_hooks() -> None:
    """After a failed read or write, Orbax's leftover callbacks find their asyncio loop closed and
    Python prints each as an 'Exception ignored' / thread traceback; drop exactly those."""
    if getattr(sys.unraisablehook, "_plip_quiet", False):
        return
    prev_unraisable, prev_thread = sys.unraisablehook, threading.excepthook

    def unraisable(u):
        if not _is_closed_loop_noise(u.exc_value):
            prev_unraisable(u)

    def thread(args):
        if not _is_closed_loop_noise(args.exc_value):
            prev_thread(args)

    unraisable._plip_quiet = True
    sys.unraisablehook, threading.excepthook = unraisable, thread


class IteratorState:
    """Holds a JSON-able iterator state for grain's checkpoint handler (captured at save time)."""

    def __init__(self, state: Any = None):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state).encode()

    def set_state(self, state: bytes) -> None:
        self.state = json.loads(state.decode())

    def start_prefetch(self) -> None:  # required by grain's handler; nothing to prefetch here
        pass


class Checkpointer:
    """Save / restore the composite (state, config, data) under `directory`; keep the last N."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute() if "://" not in str(directory) else directory
        self.max_to_keep = max_to_keep
        self.async_save = async_save
        self._pending: int | None = None  # an async save not yet known to have finished
        self._space_checked = False
        self._closed = False
        logging.getLogger("absl").addFilter(_QUIET)  # idempotent: one filter object
        _install_noise_hooks()
        opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                            enable_async_checkpointing=async_save)
        try:
            self.manager = ocp.CheckpointManager(
                self.directory, options=opts, item_names=(STATE, CONFIG, DATA),
                item_handlers={STATE: ocp.StandardCheckpointHandler(),
                               CONFIG: ocp.JsonCheckpointHandler(),
                               DATA: grain.checkpoint.CheckpointHandler()})
        except OSError as e:
            raise CheckpointError(f"cannot use checkpoint directory {self.directory}: {os_error_text(e)}; "
                                  f"{free_space_text(self.directory)} there") from e

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def _steps_on_disk(self) -> list[int]:
        d = Path(str(self.directory))
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []

    def _save_error(self, step: int, e: BaseException) -> CheckpointError:
        kept = self._steps_on_disk()
        tail = (f"kept step{'s' if len(kept) > 1 else ''} {', '.join(map(str, kept))} intact; free space and "
                f"rerun to resume from step {kept[-1]}" if kept else "no earlier checkpoint")
        return CheckpointError(f"cannot save checkpoint step {step} in {self.directory}: {os_error_text(e)}; "
                               f"{free_space_text(self.directory)} there; {tail}")

    def check_space(self, state: Any) -> None:
        """Warn (one line, process 0) when the filesystem cannot hold `max_to_keep` copies of `state`."""
        self._space_checked = True
        nbytes = sum(int(getattr(x, "nbytes", 0) or 0) for x in jax.tree.leaves(state))
        copies = max(int(self.max_to_keep or 1), 1)
        u = _disk_usage(self.directory)
        if u is not None and nbytes and u.free < copies * nbytes:
            _warn(f"{self.directory} has {human_bytes(u.free)} free but {copies} checkpoints (keep_checkpoints) "
                  f"of this {human_bytes(nbytes)} state need {human_bytes(copies * nbytes)}; saves may fail")

    def save(self, step: int, state: Any, config: dict, data_state: Any = None, force: bool = True) -> bool:
        """Save now (async for the arrays). `data_state` is the iterator's JSON-able state.

        Raises CheckpointError naming the failed step: this one, or the previous async save."""
        if not self._space_checked:
            self.check_space(state)
        self.wait()  # a failed previous async save is reported with its own step
        args = ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            CONFIG: ocp.args.JsonSave(config),
            DATA: grain.checkpoint.CheckpointSave(IteratorState(data_state)),
        })
        try:
            saved = self.manager.save(int(step), args=args, force=force)
        except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise ValueError, OSError, ...
            raise self._save_error(int(step), e) from e
        if self.async_save and saved:
            self._pending = int(step)
        return saved

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, Any]:
        """Restore into `abstract_state` (ShapeDtypeStructs carrying target shardings).

        The data state is None when the checkpoint was written by a different process count
        (each process's iterator state is saved separately); the caller then re-derives the
        stream position from the step.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        holder = IteratorState()
        items = {STATE: ocp.args.StandardRestore(abstract_state), CONFIG: ocp.args.JsonRestore()}
        pi, pc = jax.process_index(), jax.process_count()
        data_file = Path(str(self.directory)) / str(step) / DATA / f"process_{pi}-of-{pc}.json"
        has_data = data_file.exists()
        if has_data:
            items[DATA] = grain.checkpoint.CheckpointRestore(holder)
        r = self.manager.restore(step, args=ocp.args.Composite(**items))
        return r[STATE], r[CONFIG], (holder.state if has_data else None)

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict, Any, int] | None:
        """(state, config, data state, step) of the newest readable checkpoint, None if there is none.

        Each unreadable newer step is reported in one line and, once an older one has restored, moved
        to `corrupt/<step>-<time>` (not deleted) so a later save of that step does not trip over it.
        Raises CheckpointError, moving nothing, when no checkpoint can be read."""
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            self._tidy([], None)
            return None
        failed: list[tuple[int, str]] = []
        for step in steps:
            # Installed before the attempt: a failing restore can drop its coroutines while it unwinds.
            _drop_abandoned_reads()
            try:
                state, config, data_state = self.restore(abstract_state, step)
            except Exception as e:  # noqa: BLE001 - truncated files, missing items, wrong shapes, ...
                failed.append((step, fault_cause(e, 200)))
                _drop_abandoned_reads()
                continue
            self._tidy(failed, step)
            return state, config, data_state, step
        raise CheckpointError(f"no readable checkpoint in {self.directory} (nothing moved or deleted): "
                              + "; ".join(f"step {s}: {c}" for s, c in failed))

    def _tidy(self, failed: list[tuple[int, str]], restored: int | None) -> None:
        """Once the run's starting point is settled (by the run that holds the workdir lock): move the
        unreadable steps aside and remove unfinished saves (`<step>.orbax-checkpoint-tmp*`) so that
        saving those steps again neither trips over them nor runs out of space because of them."""
        base = Path(str(self.directory))
        if "://" in str(self.directory):  # remote: report, leave the files where they are
            for step, cause in failed:
                _warn(f"checkpoint step {step} cannot be read ({cause}); resuming from step {restored}")
            return
        if jax.process_index() == 0:
            for d in base.iterdir() if base.is_dir() else []:
                if d.is_dir() and re.match(r"^\d+\.orbax-checkpoint-tmp", d.name):
                    shutil.rmtree(d, ignore_errors=True)
                    _warn(f"removed the unfinished save {d}")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for step, cause in failed:
                dest = base / CORRUPT / f"{step}-{stamp}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(base / str(step), dest)
                _warn(f"checkpoint step {step} cannot be read ({cause}); moved to {dest}, "
                      f"resuming from step {restored}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("plip_checkpoint_tidy")
        self.manager.reload()

    def wait(self) -> None:
        """Wait for an async save; a failure raises CheckpointError naming its step."""
        pending, self._pending = self._pending, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._save_error(pending if pending is not None else -1, e) from e

    def close(self, quiet: bool = False) -> None:
        """Wait for outstanding saves and close; `quiet` swallows errors (used on a failing run's way
        out, after the first error has already been raised)."""
        if self._closed:
            return
        try:
            self.wait()
        except CheckpointError:
            if not quiet:
                self._close_manager()
                raise
        self._close_manager()

    def _close_manager(self) -> None:
        self._closed = True
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001 - the save error was reported by wait()
            pass


def find_checkpoint(path: str | os.PathLike) -> tuple[Path, int]:
    """Resolve a workdir, a `checkpoints/` dir or a step dir to (checkpoints dir, step)."""
    p = Path(path).absolute()
    if (p / "checkpoints").is_dir():
        p = p / "checkpoints"
    if (p / STATE).is_dir() and p.name.isdigit():
        return p.parent, int(p.name)
    steps = sorted(int(d.name) for d in p.iterdir() if d.is_dir() and d.name.isdigit()
                   and (d / STATE).is_dir()) if p.is_dir() else []
    if not steps:
        raise FileNotFoundError(
            f"{path} holds no Orbax checkpoint (expected WORKDIR/checkpoints/<step>/state)")
    return p, steps[-1]


def restore_for_inference(path: str | os.PathLike) -> tuple[dict, dict]:
    """(variables {'params','batch_stats'}, config dict) of the latest (or given) checkpoint,
    restored as host numpy arrays on one device; the optimizer state is not read."""
    ckpt_dir, step = find_checkpoint(path)
    step_dir = ckpt_dir / str(step)
    config = _read_json_item(step_dir / CONFIG)
    # The item's handler, not a Checkpointer: a Checkpointer looks for the step's metadata file in
    # the item folder and logs a warning before the command's answer.
    checkpointer = ocp.PyTreeCheckpointHandler()
    meta = checkpointer.metadata(step_dir / STATE)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    if not isinstance(tree, dict):
        # No tree metadata (seen on checkpoints finished from a signal handler): restore the whole
        # state without a target and keep the variables.
        try:
            with warnings.catch_warnings():  # "Sharding info not provided": one device, as intended
                warnings.simplefilter("ignore", UserWarning)
                full = checkpointer.restore(step_dir / STATE, args=ocp.args.PyTreeRestore())
        except Exception as e:  # noqa: BLE001 - report one clear line
            raise CheckpointError(f"checkpoint {step_dir} cannot be read: {fault_cause(e)}") from None
        if not isinstance(full, dict) or "params" not in full:
            raise FileNotFoundError(f"checkpoint {step_dir} is not a PLIP train state")
        return {k: jax.tree.map(np.asarray, full[k]) for k in ("params", "batch_stats") if k in full}, config
    if "params" not in tree:
        raise FileNotFoundError(f"checkpoint {step_dir} is not a PLIP train state (no params)")
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    wanted = {k: tree[k] for k in ("params", "batch_stats") if k in tree}
    restore_args = jax.tree.map(lambda m: ocp.ArrayRestoreArgs(sharding=sharding, restore_type=np.ndarray), wanted)
    try:
        restored = checkpointer.restore(step_dir / STATE, args=ocp.args.PyTreeRestore(
            item=wanted, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # noqa: BLE001 - a truncated or partial step: one clear line
        raise CheckpointError(f"checkpoint {step_dir} cannot be read: {fault_cause(e)}") from None
    variables = jax.tree.map(np.asarray, dict(restored))
    return variables, config


def _read_json_item(d: Path) -> dict:
    files = [f for f in d.iterdir() if f.is_file() and not f.name.startswith("_")] if d.is_dir() else []
    for f in files:
        try:
            return json.loads(f.read_text())
        except (ValueError, UnicodeDecodeError):
            continue
    raise FileNotFoundError(f"no config JSON in {d}")
