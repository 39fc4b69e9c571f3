"""Command line: `python -m plip_jax.aot --config configs/pretrain.py --topology v5e-64
[--config.key=value ...] [--out FILE.json] [--sweep]`.

Compiles the run's pre-training step and evaluation embedding steps for a TPU slice on this
machine (no TPU needed; libtpu from `pip install -e ".[tpu]"`) and reports per-chip memory
against HBM, FLOPs, collectives and the roofline floor (plip_jax.trainers.aot). `--sweep` tries
global batch x fsdp x rematerialisation for the slice (plip_jax.trainers.aot_sweep). Known faults end
in one line and exit 2 (plip_jax.core.cli).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from plip_jax.core.cli import fail, quiet_library_loggers

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/pretrain.py[:variant]).",
                                          lock_config=True)
flags.DEFINE_string("topology", None, "TPU slice as Cloud TPU names it: v4-8 .. v4-512, v5e-1 .. v5e-256, "
                    "v5p-8 .. v5p-256, v6e-1 .. v6e-256.")
flags.DEFINE_string("out", None, "Write the report (JSON) here.")
flags.DEFINE_bool("sweep", False, "Try global batch x fsdp x remat choices for the slice and report which fit.")
flags.DEFINE_integer("captions_per_epoch", None, "Captions in one pass over the data (default: SYNTH-PEDES's 12.5M).")
flags.DEFINE_float("epochs", None, "Epochs of the pre-training whose floor is reported (default: the paper's 70).")
flags.DEFINE_bool("eval", True, "Also compile the evaluation embedding steps.")
flags.DEFINE_bool("debug", False, "Show the traceback of known faults too (also PLIP_DEBUG=1).")
FLAGS = flags.FLAGS


def main(argv) -> None:
    del argv
    quiet_library_loggers()
    from plip_jax.core.cli import config_value

    config = config_value(_CONFIG)
    if config is None:
        fail("--config is required (e.g. --config configs/pretrain.py)")
    if not FLAGS.topology:
        fail("--topology is required (e.g. --topology v5e-64)")
    from plip_jax.core import topology
    from plip_jax.trainers import aot

    topology.parse(FLAGS.topology)  # a bad name fails here, before anything is built
    kwargs = {}
    if FLAGS.captions_per_epoch is not None:
        if FLAGS.captions_per_epoch < 1:
            fail(f"--captions_per_epoch must be >= 1, got {FLAGS.captions_per_epoch}")
        kwargs["captions_per_epoch"] = FLAGS.captions_per_epoch
    if FLAGS.epochs is not None:
        if FLAGS.epochs <= 0:
            fail(f"--epochs must be > 0, got {FLAGS.epochs}")
        kwargs["epochs"] = FLAGS.epochs
    if FLAGS.sweep:
        from plip_jax.trainers import aot_sweep

        result = aot_sweep.sweep(config, FLAGS.topology, **kwargs)
        print(aot_sweep.table(result), flush=True)
    else:
        result = aot.compile_for_slice(config, FLAGS.topology, with_eval=FLAGS.eval, **kwargs)
        if result["fits"]:
            print(aot.summary(result), flush=True)
    if FLAGS.out:
        out = Path(FLAGS.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}", flush=True)
    if not FLAGS.sweep and not result["fits"]:
        fail(result["not_fit_message"])


def run(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from plip_jax.core.cli import parse_absl_flags, run_cli

    return run_cli(lambda args: main(parse_absl_flags([sys.argv[0], *args])), argv)


if __name__ == "__main__":
    sys.exit(run())
