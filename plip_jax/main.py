"""Command line: `python -m plip_jax.main --config configs/pretrain.py[:mini] --workdir DIR
[--config.key=value ...] [--debug]`. The config's `mode` picks pre-training, evaluation or
fine-tuning. One run per workdir (WORKDIR/run.lock); known faults end in one line (plip_jax.core.cli)."""
from __future__ import annotations

import contextlib
import os
import signal
import sys

from absl import flags
from ml_collections import config_flags

from plip_jax.core.cli import fail, quiet_library_loggers

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).",
                                          lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: config.json, checkpoints/, metrics.jsonl, eval.json.")
flags.DEFINE_string("coordinator", None, "host:port of process 0 for multi-process runs (else auto-detect).")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.DEFINE_string("compile_cache", None, "Persistent XLA compilation cache folder; 'off' disables "
                    "it (default: $PLIP_COMPILE_CACHE, else ~/.cache/plip_jax/xla).")
flags.DEFINE_bool("debug", False, "Show the traceback of known faults too (also PLIP_DEBUG=1).")
FLAGS = flags.FLAGS


def main(argv) -> None:
    del argv
    quiet_library_loggers()
    if FLAGS.debug:
        os.environ["PLIP_DEBUG"] = "1"
    import jax

    from plip_jax.core import distributed

    distributed.maybe_initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
    from plip_jax.core import compile_cache

    compile_cache.enable(FLAGS.compile_cache)
    from plip_jax.core.cli import config_value

    config = config_value(_CONFIG)
    if config is None:
        fail("--config is required (e.g. --config configs/pretrain.py:mini)")
    mode = config.get("mode", "pretrain")
    workdir = FLAGS.workdir or config.get("workdir", None)
    if not workdir:
        fail("--workdir is required")
    from plip_jax.core.workdir_lock import WorkdirLock

    # Multi-host: process 0 holds the lock for the run.
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()

    def on_sigterm(signum, _frame) -> None:
        # Outside the training loop (which saves and exits on SIGTERM itself): release the lock, then
        # die of the signal as before. Raising SystemExit here could land inside a library callback.
        if isinstance(lock, WorkdirLock):
            lock.release()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    with lock:
        if mode == "pretrain":
            from plip_jax.trainers.pretrain import train_and_evaluate

            train_and_evaluate(config, workdir)
        elif mode == "eval_text_reid":
            from plip_jax.trainers.evaluate import run as run_eval

            run_eval(config, workdir)
        elif mode.startswith("finetune"):
            from plip_jax.trainers.finetune import run as run_finetune

            run_finetune(config, workdir)
        else:
            fail(f"unknown config.mode {mode!r}")


def _batch_size() -> tuple[str, int] | None:
    """(config key, value) of the batch size, for the out-of-memory line."""
    config = _CONFIG.value
    if config is None:
        return None
    if "data" in config and "batch_size" in config.data:
        return "config.data.batch_size", int(config.data.batch_size)
    if "batch_size" in config:
        return "config.batch_size", int(config.batch_size)
    return None


def run(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from plip_jax.core.checkpoint import CheckpointError
    from plip_jax.core.cli import parse_absl_flags, run_cli
    from plip_jax.core.errors import NonFiniteLoss
    from plip_jax.core.workdir_lock import WorkdirLocked

    # ConfigError and the data errors are ValueErrors; missing files are OSErrors.
    return run_cli(lambda args: main(parse_absl_flags([sys.argv[0], *args])), argv,
                   known=(NonFiniteLoss, CheckpointError, WorkdirLocked), batch_size=_batch_size)


if __name__ == "__main__":
    sys.exit(run())
