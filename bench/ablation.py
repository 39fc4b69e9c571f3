"""The pre-training ablation of the embedded default: full / no TIC / no IAP / no IVLC, several seeds a
row, each checkpoint evaluated zero-shot on the in-distribution test split (the run's own final
evaluation) and on a shifted stand-in's test split (`configs/eval_text_reid.py`).

    python bench/ablation.py --shifted-data-dir /tmp/shifted --workroot runs/abl800 --seeds 0,1,2 \
        --jobs 2 --out bench/results/ablation-<date>.json

Each row is `python -m plip_jax.main --config configs/pretrain.py:mini --config.seed=S` plus
`--config.losses.weights.TASK=0.0`, in its own process; `--jobs 2` runs two at a time (the walls then
depend on it, so none are compared). `--set KEY=VALUE` (repeatable) adds
`--config.KEY=VALUE` to every pre-training and `--tag` names those runs (e.g. the pretext tasks at ten
times their weights: `--tag x10 --set losses.weights.tic=0.2 --set losses.weights.iap=1.0 --rows full`).
A run whose workdir already holds an eval.json is read, not rerun, so an interrupted table resumes.
Prints the table as markdown.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import common  # noqa: E402

ROWS = {"full": None, "no_tic": "tic", "no_iap": "iap", "no_ivlc": "ivlc"}
METRICS = ("R1", "R5", "R10", "mAP")


def run_one(row: str, seed: int, workroot: Path, shifted: str, shifted_dataset: str, pretrain_arg: str,
            overrides: Sequence[str] = (), tag: str = "") -> dict:
    """One pre-training and its two zero-shot evaluations (or their earlier eval.json files)."""
    name = f"{tag}-{row}-s{seed}" if tag else f"{row}-s{seed}"
    work, shifted_work = workroot / name, workroot / f"{name}-{shifted_dataset}"
    if not (work / "eval.json").is_file():
        args = [sys.executable, "-m", "plip_jax.main", "--config", pretrain_arg, "--workdir", str(work),
                f"--config.seed={seed}", *(f"--config.{o}" for o in overrides)]
        if ROWS[row]:
            args.append(f"--config.losses.weights.{ROWS[row]}=0.0")
        common.run_or_exit(args, name)
    if not (shifted_work / "eval.json").is_file():
        common.run_or_exit([sys.executable, "-m", "plip_jax.main", "--config", "configs/eval_text_reid.py",
              "--workdir", str(shifted_work), f"--config.checkpoint={work}", f"--config.dataset={shifted_dataset}",
              "--config.dataset_config=procedural", f"--config.data_dir={shifted}"], f"{name} shifted eval")
    ind = json.loads((work / "eval.json").read_text())
    sh = json.loads((shifted_work / "eval.json").read_text())
    return {"row": row, "seed": seed, "name": name, "workdir": str(work),
            "in_distribution": {m: ind[m] for m in METRICS}, "shifted": {m: sh[m] for m in METRICS}}


def table(rows: Sequence[dict]) -> str:
    lines = ["| tasks | test R@1 | R@1 per seed | mAP | shifted R@1 | shifted R@1 per seed |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        i, s = r["in_distribution"], r["shifted"]
        per = lambda d: " / ".join(f"{v:.2f}" for v in d["R1"]["values"])  # noqa: E731
        lines.append(f"| {r.get('label', r['row'])} | {i['R1']['mean']:.2f} ± {i['R1']['sd']:.2f} | {per(i)} | "
                     f"{i['mAP']['mean']:.2f} ± {i['mAP']['sd']:.2f} | {s['R1']['mean']:.2f} ± {s['R1']['sd']:.2f} | "
                     f"{per(s)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shifted-data-dir", required=True, help="TFDS data dir of the shifted builds (built on first use)")
    ap.add_argument("--shifted-dataset", default="cuhk_pedes", help="the shifted style to test on (style A)")
    ap.add_argument("--workroot", default="runs/abl800", help="one workdir per row and seed below it")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--config", default="configs/pretrain.py:mini", help="the pre-training config argument")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every pre-training (repeatable)")
    ap.add_argument("--tag", default="", help="prefix of the workdirs of runs with --set overrides")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/ablation-<date>.json)")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = a.rows.split(",")
    if bad := [r for r in rows if r not in ROWS]:
        raise SystemExit(f"error: unknown rows {bad} ({', '.join(ROWS)})")
    if a.jobs < 1:
        raise SystemExit(f"error: --jobs {a.jobs}: must be >= 1")
    if bad := [o for o in a.set if "=" not in o or o.startswith("=")]:
        raise SystemExit(f"error: --set {bad[0]!r}: expected KEY=VALUE")
    if a.set and not a.tag:
        raise SystemExit("error: --set needs a --tag, so that the runs do not share the plain rows' workdirs")
    t0 = time.time()
    jobs = [(r, s) for r in rows for s in seeds]
    with ThreadPoolExecutor(a.jobs) as pool, tqdm(total=len(jobs), desc="pre-trainings", unit="run") as bar:
        futures = [pool.submit(run_one, r, s, Path(a.workroot), a.shifted_data_dir, a.shifted_dataset, a.config,
                               a.set, a.tag) for r, s in jobs]
        runs = []
        for f in futures:
            runs.append(f.result())
            bar.update()
    out_rows = []
    for r in rows:
        rr = [x for x in runs if x["row"] == r]
        out_rows.append({"row": r, "label": f"{r} ({a.tag})" if a.tag else r, "zeroed": ROWS[r], "runs": rr,
                         **{k: {m: common.seed_summary([x[k][m] for x in rr]) for m in METRICS}
                            for k in ("in_distribution", "shifted")}})
    doc = {"schema": "plip-jax-ablation/1", **common.base_info(), "config": a.config, "overrides": a.set, "tag": a.tag,
           "seeds": seeds, "shifted": f"{a.shifted_dataset}/procedural", "jobs": a.jobs, "wall_s": time.time() - t0, "rows": out_rows}
    out = Path(a.out or common.RESULTS_DIR / f"ablation-{common.today()}.json")
    common.write_json(doc, out)
    print(table(out_rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
