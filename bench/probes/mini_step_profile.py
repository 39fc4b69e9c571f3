"""Where the :mini train step's CPU time goes: the step of configs/pretrain.py:mini timed with pieces
switched off (a task weight 0, fewer MiniLM layers, a shorter caption length).

  python bench/probes/mini_step_profile.py [VARIANT | NAME:key=value,key=value ...] [--config SPEC]

e.g. `python bench/probes/mini_step_profile.py mini wide:model.image.width=32` (values are Python
literals; no variant: all of VARIANTS). Each variant is built by the run builder and timed by
bench/train_step.py's `time_step` (the one way bench/ times a step): ms/step is the median of
--steps synced steps after --warmup, on synthetic batches at the config's batch size, and GFLOP/step
is XLA's cost analysis of the lowered step. Used to size the :mini recipe for 2 CPU cores
(docs/results.md "How the mini recipe got there", docs/ablations.md).
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import train_step  # noqa: E402  (bench/train_step.py)

from plip_jax import config_parts  # noqa: E402

VARIANTS = {
    "mini": {},
    "one_image_per_caption": {"data.images_per_caption": 1},
    "iap_every_sample": {"data.images_per_caption": 1, "model.iap.sample_stride": 1},
    "no_tic": {"losses.weights.tic": 0.0},
    "no_iap": {"losses.weights.iap": 0.0},
    "ivlc_only": {"losses.weights.tic": 0.0, "losses.weights.iap": 0.0},
    "text_3_layers": {"model.text.num_layers": 3, "model.text.frozen_layers": 2,
                      "optim.frozen": (r"^text/embeddings/.*", r"^text/encoder/layer/[0-1]/.*")},
    "len_32": {"data.max_length": 32},
    "text_dropout_0": {"model.text.dropout": 0.0},
}


def _set(c, key: str, value) -> None:
    *path, last = key.split(".")
    for p in path:
        c = c[p]
    c[last] = value


def parse_variant(arg: str) -> tuple[str, dict]:
    """A named variant, or `NAME:key=value,...` with config keys under the config."""
    if ":" not in arg:
        if arg not in VARIANTS:
            raise SystemExit(f"unknown variant {arg!r}; known: {', '.join(VARIANTS)} (or NAME:key=value,...)")
        return arg, VARIANTS[arg]
    name, _, spec = arg.partition(":")
    overrides = {}
    for item in filter(None, spec.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"bad override {item!r} in {arg!r}: expected key=value")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return name, overrides


def time_variant(config_spec: str, overrides: dict, steps: int, warmup: int) -> tuple[float, float]:
    """(ms per step, GFLOP per step) of the config with `overrides`."""
    c = config_parts.load(config_spec)
    for k, v in overrides.items():
        _set(c, k, v)
    fn, args, advance = train_step.pretraining_row(c, train_step.MINI_STEPS_PER_EPOCH)
    r = train_step.time_step(fn, args, advance, steps, warmup, pipelined=False)
    return r["step_ms"], (r["flops_per_step"] or float("nan")) / 1e9


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="*", help="VARIANT or NAME:key=value,... (default: all named variants)")
    p.add_argument("--config", default=f"{ROOT / 'configs' / 'pretrain.py'}:mini",
                   help="config file[:argument] the variants change (default configs/pretrain.py:mini)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args(argv)
    variants = [parse_variant(v) for v in (a.variants or list(VARIANTS))]
    print(f"{'variant':<16} {'ms/step':>9} {'GFLOP':>7}")
    out = {}
    for name, overrides in variants:
        out[name] = time_variant(a.config, overrides, a.steps, a.warmup)
        print(f"{name:<16} {out[name][0]:9.0f} {out[name][1]:7.1f}", flush=True)
    return out


if __name__ == "__main__":
    main()
