"""Orbax checkpoints of a run: train state, config JSON and the data-iterator state, together.

The only module that imports Orbax, so a move to Orbax's v1 API touches one file. Layout:
`WORKDIR/checkpoints/<step>/{state, config, data}`; `data` holds one JSON per process (grain's
handler), so multi-host runs resume each host's input shard exactly.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

STATE, CONFIG, DATA = "state", "config", "data"


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
        opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(
            self.directory, options=opts, item_names=(STATE, CONFIG, DATA),
            item_handlers={STATE: ocp.StandardCheckpointHandler(),
                           CONFIG: ocp.JsonCheckpointHandler(),
                           DATA: grain.checkpoint.CheckpointHandler()})

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, config: dict, data_state: Any = None, force: bool = True) -> bool:
        """Save now (async for the arrays). `data_state` is the iterator's JSON-able state."""
        args = ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            CONFIG: ocp.args.JsonSave(config),
            DATA: grain.checkpoint.CheckpointSave(IteratorState(data_state)),
        })
        return self.manager.save(int(step), args=args, force=force)

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

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


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
    checkpointer = ocp.PyTreeCheckpointer()
    meta = checkpointer.metadata(step_dir / STATE)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    if not isinstance(tree, dict):
        # No tree metadata (seen on checkpoints finished from a signal handler): restore the whole
        # state without a target and keep the variables.
        try:
            full = checkpointer.restore(step_dir / STATE)
        except Exception as e:  # noqa: BLE001 - report one clear line
            raise FileNotFoundError(f"checkpoint {step_dir} cannot be read: {e}") from None
        if not isinstance(full, dict) or "params" not in full:
            raise FileNotFoundError(f"checkpoint {step_dir} is not a PLIP train state")
        return {k: jax.tree.map(np.asarray, full[k]) for k in ("params", "batch_stats") if k in full}, config
    if "params" not in tree:
        raise FileNotFoundError(f"checkpoint {step_dir} is not a PLIP train state (no params)")
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    wanted = {k: tree[k] for k in ("params", "batch_stats") if k in tree}
    restore_args = jax.tree.map(lambda m: ocp.ArrayRestoreArgs(sharding=sharding, restore_type=np.ndarray), wanted)
    restored = checkpointer.restore(step_dir / STATE, args=ocp.args.PyTreeRestore(
        item=wanted, restore_args=restore_args, partial_restore=True))
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
