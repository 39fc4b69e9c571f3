"""The downstream protocols on the shifted stand-ins, several seeds a row: zero-shot vs fine-tuned and
PLIP vs random init (`main`), few-shot fractions of the training identities (`few_shot`), and
cross-domain (fine-tune on one style, test on the other: `cross_domain`). Text Re-ID by default;
`--task image_reid` runs `main` and `few_shot` of image Re-ID (the test split by camera).

    python bench/downstream.py --init runs/mini --data-dir /tmp/shifted --seeds 0,1,2 \
        --protocols main,cross_domain,few_shot --out bench/results/downstream-<date>.json

Every row is `python -m plip_jax.main --config configs/finetune_<task>.py:mini,...` in its own
process, one after another (run it alone on the machine); a row whose workdir already holds an
eval.json is read, not rerun, so an interrupted table resumes. Prints the table as markdown.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import common  # noqa: E402

FEW_SHOT = (0.01, 0.05, 0.1, 0.25, 1.0)
CROSS = (("cuhk_pedes", "icfg_pedes"), ("icfg_pedes", "cuhk_pedes"))
METRICS = ("R1", "R5", "mAP")
TASKS = {"text_reid": ("main", "cross_domain", "few_shot"), "image_reid": ("main", "few_shot")}


def rows_of(protocols: Sequence[str], steps: int, task: str = "text_reid") -> list[dict]:
    """The runs each protocol needs: (name, init, config argument) without the seed."""
    rows: list[dict] = []
    if task not in TASKS:
        raise SystemExit(f"error: unknown task {task!r} ({', '.join(TASKS)})")
    base = f"configs/finetune_{task}.py:mini" + (f",steps={steps}" if steps else "")
    for p in protocols:
        if p in ("main", "few_shot", "cross_domain") and p not in TASKS[task]:
            raise SystemExit(f"error: protocol {p!r} is not run for {task} ({', '.join(TASKS[task])})")
        if p == "main":
            rows += [dict(protocol=p, init=i, train="cuhk_pedes", test="cuhk_pedes", few_shot=1.0, arg=base)
                     for i in ("plip", "random")]
        elif p == "few_shot":
            rows += [dict(protocol=p, init=i, train="cuhk_pedes", test="cuhk_pedes", few_shot=f,
                          arg=f"{base},few_shot={f}" if f < 1 else base) for f in FEW_SHOT for i in ("plip", "random")]
        elif p == "cross_domain":
            rows += [dict(protocol=p, init=i, train=a, test=b, few_shot=1.0,
                          arg=f"{base},dataset={a},eval_dataset={b}") for a, b in CROSS for i in ("plip", "random")]
        else:
            raise SystemExit(f"error: unknown protocol {p!r} (main, few_shot, cross_domain)")
    return [{**r, "task": task} for r in rows]


def run_one(row: dict, seed: int, init: str, data_dir: str, workroot: Path) -> dict:
    """One fine-tune (or its earlier eval.json): zero-shot and fine-tuned metrics and seconds.

    The workdir names the run, not the protocol, so few-shot's 100% row reads main's runs."""
    text = row["task"] == "text_reid"          # text Re-ID keeps the workdir names it was first run with
    name = ("" if text else f"{row['task']}-") + f"{row['init']}-{row['train']}-{row['test']}-f{row['few_shot']}-s{seed}"
    work = workroot / name
    if not (work / "eval.json").is_file():
        args = [sys.executable, "-m", "plip_jax.main", "--config", row["arg"], "--workdir", str(work),
                f"--config.seed={seed}", f"--config.data.data_dir={data_dir}"]
        if text:                                   # the only task with a cross-domain eval set
            args.append("--config.eval_data.data_dir=" + data_dir)
        if row["init"] == "plip":
            args.append(f"--config.init_checkpoint={init}")
        common.run_or_exit(args, name)
    ev = json.loads((work / "eval.json").read_text())
    return {"name": name, "seed": seed, "seconds": ev.get("seconds"),
            "zero_shot": {m: ev["zero_shot"][m] for m in METRICS},
            "finetuned": {m: ev["finetuned"][m] for m in METRICS}}


def table(rows: Sequence[dict]) -> str:
    lines = ["| protocol | init | train -> test | few-shot | zero-shot R@1 | fine-tuned R@1 | fine-tuned mAP |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        z, f, m = r["zero_shot"]["R1"], r["finetuned"]["R1"], r["finetuned"]["mAP"]
        lines.append(f"| {r['protocol']} | {r['init']} | {r['train']} -> {r['test']} | {r['few_shot']:g} | "
                     f"{z['mean']:.2f} ± {z['sd']:.2f} | {f['mean']:.2f} ± {f['sd']:.2f} | {m['mean']:.2f} ± {m['sd']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", required=True, help="the PLIP pre-training workdir (configs/pretrain.py:mini)")
    ap.add_argument("--data-dir", required=True, help="TFDS data dir for the shifted builds (built on first use)")
    ap.add_argument("--workroot", default="runs/downstream", help="one workdir per row and seed below it")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--task", default="text_reid", help=f"one of {', '.join(TASKS)}")
    ap.add_argument("--protocols", default=None, help="default: all of the task's (main,cross_domain,few_shot)")
    ap.add_argument("--steps", type=int, default=0, help="fine-tune steps (0: the config's)")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/downstream[-<task>]-<date>.json)")
    a = ap.parse_args(argv)
    if not Path(a.init).is_dir():
        raise SystemExit(f"error: --init {a.init}: not a directory")
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = rows_of(a.protocols.split(",") if a.protocols else list(TASKS.get(a.task, ())), a.steps, a.task)
    out_rows = []
    bar = tqdm(total=len(rows) * len(seeds), desc="fine-tunes", unit="run")
    t0 = time.time()
    for row in rows:
        runs = []
        for s in seeds:
            runs.append(run_one(row, s, a.init, a.data_dir, Path(a.workroot)))
            bar.update()
        agg = {k: {m: common.seed_summary([r[k][m] for r in runs]) for m in METRICS} for k in ("zero_shot", "finetuned")}
        out_rows.append({**{k: v for k, v in row.items() if k != "arg"}, "config": row["arg"], **agg, "runs": runs})
    bar.close()
    doc = {"schema": "plip-jax-downstream/1", **common.base_info(), "task": a.task, "init": a.init, "seeds": seeds,
           "wall_s": time.time() - t0, "rows": out_rows}
    prefix = "downstream-" if a.task == "text_reid" else f"downstream-{a.task}-"
    out = Path(a.out or common.RESULTS_DIR / f"{prefix}{common.today()}.json")
    common.write_json(doc, out)
    print(table(out_rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
