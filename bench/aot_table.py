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
    # slice:global batch:fsdp[:remat]: pod scale at 16 samples/chip with fsdp 1 / 4 / 16, then the
    # paper's global batch 512 on each slice of the README table
    "v5e-256:4096:1", "v5e-256:4096:4", "v5e-256:4096:16",
    "v5e-16:512:1", "v5e-64:512:1", "v4-32:512:1", "v5p-64:512:1", "v6e-64:512:1", "v4-8:512:1",
    "v5e-256:512:1",
]
EVAL_ROWS = {"v5e-16:512:1"}   # the evaluation programs are compiled (and reported) once


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

    out, built_all = {}, None
    for name, weights in (("all", dict(ivlc=1.0, tic=0.02, iap=0.1)), ("ivlc", dict(ivlc=1.0, tic=0.0, iap=0.0)),
                          ("ivlc+tic", dict(ivlc=1.0, tic=0.02, iap=0.0)), ("ivlc+iap", dict(ivlc=1.0, tic=0.0, iap=0.1))):
        c = config_parts.load(CONFIG)
        c.model.dtype = "bfloat16"
        c.losses.weights = weights
        c.data.batch_size = batch
        built = build.pretraining(c, steps_per_epoch=100, devices=jax.devices()[:1])
        built_all = built_all or built
        run = built.run
        lowered = run.step.lower(run.target, built.batch_spec(), run.rng_spec())
        cost = lowered.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        out[name] = float(cost["flops"]) / batch
    out["tic"] = out["ivlc+tic"] - out["ivlc"]
    out["iap"] = out["ivlc+iap"] - out["ivlc"]
    out["forward_per_sample"] = component_forward_flops(built_all, batch)
    return out


def component_forward_flops(built, batch: int) -> dict:
    """Forward FLOPs per sample of each part of the model (lowered alone): what the sizes predict.
    A training pass costs ~3x its forward (the backward ~2x), a frozen part ~1x."""
    import jax
    import jax.numpy as jnp

    from plip_jax.models.plip import PLIP

    model, spec = built.model, built.batch_spec(batch)
    variables = {"params": built.run.abstract.params, "batch_stats": built.run.abstract.batch_stats}
    img = jax.ShapeDtypeStruct(spec["image"].shape, jnp.bfloat16)
    ids, mask = spec["input_ids"], spec["attention_mask"]

    def flops(fn, *args) -> float:
        cost = jax.jit(fn).lower(*args).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) / batch

    def image(v, x):
        return model.apply(v, x, train=False, method=PLIP.encode_image)

    def text(v, i, m):
        return model.apply(v, i, m, train=False, method=PLIP.encode_text)

    def decoder(v, x, i, m):
        (_, feats), (t, _) = image(v, x), text(v, i, m)
        return model.apply(v, feats, t, method=lambda mdl, f, g: mdl.tic(f, g))

    def head(v, x, i, m, pos):
        (g, _), (_, hidden) = image(v, x), text(v, i, m)
        return model.apply(v, hidden, g, m, pos, method=lambda mdl, h, gg, mm, p: mdl.iap(h, gg, mm, p))

    enc_image, enc_text = flops(image, variables, img), flops(text, variables, ids, mask)
    return {"image_encoder": enc_image, "text_encoder": enc_text,
            "tic_decoder": flops(decoder, variables, img, ids, mask) - enc_image - enc_text,
            "iap_head": flops(head, variables, img, ids, mask, spec["mlm_positions"]) - enc_image - enc_text}


def markdown(result: dict) -> str:
    """The README / docs/tpu.md table from the JSON."""
    gib = lambda b: f"{b / 2**30:.1f}"  # noqa: E731
    lines = ["| slice | global batch (per chip) | fsdp | per chip GiB / HBM | fits | compile s | GFLOP/sample | "
             "floor ms/step | floor samples/s | floor h, paper run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "report" not in r:
            lines.append(f"| {r['topology']} | {r['global_batch']} | {r['fsdp']} | - | no: {r['error']} | | | | | |")
            continue
        p = r["report"]
        lines.append(
            f"| {p['topology']} | {p['global_batch']} ({p['per_chip_batch']}) | {p['mesh']['fsdp']} | "
            f"{gib(p['total_bytes_per_chip'])} / {gib(p['hbm_bytes_per_chip'])} | {'yes' if p['fits'] else 'no'} | "
            f"{p['compile_s']:.0f} | {p['flops_per_sample'] / 1e9:.0f} | {p['floor_step_s'] * 1e3:.1f} | "
            f"{p['floor_samples_per_s']:,.0f} | {p['floor_paper_hours']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the JSON to write (or, with --markdown, to read)")
    ap.add_argument("--markdown", action="store_true", help="print the table of an existing --out JSON and exit")
    ap.add_argument("--rows", nargs="*", default=ROWS)
    ap.add_argument("--timeout", type=float, default=1500)
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation programs")
    ap.add_argument("--no-flops", action="store_true", help="skip the per-task FLOP split")
    ap.add_argument("--include", nargs="*", default=[], metavar="SLICE:BATCH:FSDP=REPORT.json",
                    help="rows already compiled with `python -m plip_jax.aot ... --out REPORT.json` (same config)")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return 0
    included = {}
    for item in args.include:
        row, path = item.split("=", 1)
        report = json.loads(Path(path).read_text())
        name, batch, fsdp = row.split(":")[:3]
        included[row] = {"row": row, "topology": name, "global_batch": int(batch), "fsdp": int(fsdp),
                         "remat": "none", "fits": report["fits"], "report": report, "included_from": path}
    load = os.getloadavg()[0]
    result = {"kind": "tpu_aot", "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores",
              "load_at_start": round(load, 2), "config": CONFIG, "overrides": BASE, "rows": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for row in args.rows:
        if row in included:
            r = included[row]
            print(f"{row}: from {r['included_from']}", flush=True)
        else:
            r = run_row(row, args.timeout, not args.no_eval and row in EVAL_ROWS)
        result["rows"].append(r)
        print(f"{row}: " + (f"fits={r['fits']} {r['report']['total_bytes_per_chip'] / 2**30:.2f} GiB "
                            f"compile {r['report']['compile_s']:.0f} s" if "report" in r else r["error"]), flush=True)
        out.write_text(json.dumps(result, indent=2) + "\n")  # every row kept as soon as it is measured
    if not args.no_flops:  # last: seconds of lowering, after the rows that take minutes each
        result["flops_per_sample_by_task"] = flop_split()
    result["load_at_end"] = round(os.getloadavg()[0], 2)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
