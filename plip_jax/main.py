"""Command line: `python -m plip_jax.main --config configs/pretrain.py[:mini] --workdir DIR
[--config.key=value ...]`. The config's `mode` picks pre-training, evaluation or fine-tuning."""
from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).",
                                          lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: config.json, checkpoints/, metrics.jsonl, eval.json.")
flags.DEFINE_string("coordinator", None, "host:port of process 0 for multi-process runs (else auto-detect).")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.DEFINE_string("compile_cache", None, "Persistent XLA compilation cache folder; 'off' disables "
                    "it (default: $PLIP_COMPILE_CACHE, else ~/.cache/plip_jax/xla).")
FLAGS = flags.FLAGS


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def main(argv) -> None:
    del argv
    logging.getLogger("absl").setLevel(logging.WARNING)
    from plip_jax import distributed

    distributed.maybe_initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
    from plip_jax import compile_cache

    compile_cache.enable(FLAGS.compile_cache)
    config = _CONFIG.value
    if config is None:
        _fail("--config is required (e.g. --config configs/pretrain.py:mini)")
    mode = config.get("mode", "pretrain")
    workdir = FLAGS.workdir or config.get("workdir", None)
    if not workdir:
        _fail("--workdir is required")
    from plip_jax.train import ConfigError, NonFiniteLoss

    try:
        if mode == "pretrain":
            from plip_jax.train import train_and_evaluate

            train_and_evaluate(config, workdir)
        elif mode == "eval_text_reid":
            from plip_jax.evaluate import run as run_eval

            run_eval(config, workdir)
        elif mode.startswith("finetune"):
            from plip_jax.finetune import run as run_finetune

            run_finetune(config, workdir)
        else:
            _fail(f"unknown config.mode {mode!r}")
    except (ConfigError, FileNotFoundError, NonFiniteLoss) as e:
        _fail(str(e))


def run() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)


if __name__ == "__main__":
    run()
