"""The TPU table of README: the paper's pre-training step compiled on this CPU for named slices
(plip_jax.trainers.aot), at the paper's global batch 512 and at the recommended setting, fsdp 1/4/16
at v5e-256, and where the FLOPs of a sample go (per task, from the lowered programs).

    python bench/aot_table.py --out bench/results/aot-2026-12-06.json [--rows v5e-16:512:1 ...]

A row is SLICE:GLOBAL_BATCH:FSDP[:remat]. Every row is a fresh process (a compile holds GBs of host
memory); the JSON keeps each row's whole report, or its one-line does-not-fit error.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/pretrain.py"
# The paper's run (BERT-base's first 8 layers and embeddings frozen) with bf16 compute; the text
# tower's shape is bert-base-uncased's whether or not its weights are in the local HF cache.
BASE = ["--config.model.dtype=bfloat16"]
ROWS = [
    # slice:global batch:fsdp[:remat] -- the paper's batch 512, then the recommended setting
    "v4-8:512:1", "v4-8:64:1",
    "v4-32:512:1",
    "v5e-16:512:1",
    "v5e-64:512:1", "v5e-64:1024:1",
    "v5e-256:512:1", "v5e-256:4096:1", "v5e-256:4096:4", "v5e-256:4096:16",
    "v5p-64:512:1",
    "v6e-64:512:1", "v6e-64:1024:1",
]


def run_row(row: str, timeout: float, eval_programs: bool) -> dict:
    parts = row.split(":")
    name, batch, fsdp = parts[0], int(parts[1]), int(parts[2])
    remat = parts[3] if len(parts) > 3 else "none"
    out = ROOT / "bench" / "results" / f".aot-row-{os.getpid()}.json"
    cmd = [sys.executable, "-m", "plip_jax.aot", "--config", CONFIG, "--topology", name, *BASE,
           f"--config.data.batch_size={batch}", f"--config.mesh.fsdp={fsdp}", f"--config.model.remat={remat}",
           "--out", str(out)] + ([] if eval_programs else ["--noeval"])
    t = time.time()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    wall = time.time() - t
    row_info = {"row": row, "topology": name, "global_batch": batch, "fsdp": fsdp, "remat": remat,
                "wall_s": round(wall, 1), "command": " ".join(["python", "-m", "plip_jax.aot"] + cmd[3:-2])}
    if p.returncode == 0:
        report = json.loads(out.read_text())
        out.unlink()
        return {**row_info, "fits": report["fits"], "report": report}
    err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
    return {**row_info, "fits": False, "error": err}


def flop_split(batch: int = 8) -> dict:
    """FLOPs per sample of the paper step by task: the step lowered (not compiled) for one CPU
    device with each task alone and all three, from XLA's cost analysis of the lowered program."""
    import jax

    from plip_jax import config_parts
    from plip_jax.trainers import build

    out = {}
    for name, weights in (("all", dict(ivlc=1.0, tic=0.02, iap=0.1)), ("ivlc", dict(ivlc=1.0, tic=0.0, iap=0.0)),
                          ("ivlc+tic", dict(ivlc=1.0, tic=0.02, iap=0.0)), ("ivlc+iap", dict(ivlc=1.0, tic=0.0, iap=0.1))):
        c = config_parts.load(CONFIG)
        c.model.dtype = "bfloat16"
        c.losses.weights = weights
        c.data.batch_size = batch
        built = build.pretraining(c, steps_per_epoch=100, devices=jax.devices()[:1])
        run = built.run
        lowered = run.step.lower(run.target, built.batch_spec(), run.rng_spec())
        cost = lowered.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        out[name] = float(cost["flops"]) / batch
    out["tic"] = out["ivlc+tic"] - out["ivlc"]
    out["iap"] = out["ivlc+iap"] - out["ivlc"]
    out["ivlc_and_encoders"] = out["ivlc"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", nargs="*", default=ROWS)
    ap.add_argument("--timeout", type=float, default=1500)
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation programs")
    ap.add_argument("--no-flops", action="store_true", help="skip the per-task FLOP split")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    result = {"kind": "tpu_aot", "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores",
              "load_at_start": round(load, 2), "config": CONFIG, "overrides": BASE, "rows": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.no_flops:
        result["flops_per_sample_by_task"] = flop_split()
        out.write_text(json.dumps(result, indent=2) + "\n")
    for row in args.rows:
        r = run_row(row, args.timeout, not args.no_eval)
        result["rows"].append(r)
        print(f"{row}: " + (f"fits={r['fits']} {r['report']['total_bytes_per_chip'] / 2**30:.2f} GiB "
                            f"compile {r['report']['compile_s']:.0f} s" if "report" in r else r["error"]), flush=True)
        out.write_text(json.dumps(result, indent=2) + "\n")  # every row kept as soon as it is measured
    result["load_at_end"] = round(os.getloadavg()[0], 2)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
