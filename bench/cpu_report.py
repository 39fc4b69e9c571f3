"""The CPU numbers in one run on this machine: `bench/results/cpu-<date>.json`.

One subprocess at a time, so no two measurements share the cores:
1. the train step, JAX (`bench/train_step.py`) and PyTorch eager (`bench/torch_reference.py`) on the
   anchor work (ResNet-50 256x128 + BERT-base, layers 0-7 frozen, CMPM, AdamW; fp32 b8) and on the
   mini (the embedded default's step, b32), with the ratio JAX speed / torch speed per work;
2. the host input pipeline (`bench/input_pipeline.py`: per stage and end to end, 0/1/2 workers);
3. ranking against its floor (`bench/retrieval.py`, 20k and 100k);
4. the compilation-cache saving: the mini for 10 steps in two fresh workdirs sharing one fresh cache.

    python bench/cpu_report.py [--out bench/results/cpu-DATE.json] [--skip-retrieval]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _run(args: list[str], env: dict | None = None, timeout: int = 1800) -> float:
    t = time.time()
    p = subprocess.run(args, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return time.time() - t


def _rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"]


def step_rows(tmp: Path, steps: int) -> dict:
    out: dict = {"rows": [], "ratios": {}}
    for work, jax_row, torch_row in (("anchor", "anchor:fp32:8", "eager:fp32:8"),
                                     ("mini", "mini:fp32:32", "mini:eager:fp32:32")):
        jf, tf = tmp / f"jax_{work}.json", tmp / f"torch_{work}.json"
        load = os.getloadavg()[0]
        _run([PY, "bench/train_step.py", "--rows", jax_row, "--steps", str(steps), "--warmup", "2", "--out", str(jf)],
             env={"PLIP_COMPILE_CACHE": "off"})
        _run([PY, "bench/torch_reference.py", "--device", "cpu", "--rows", torch_row, "--steps", str(steps),
              "--warmup", "2", "--out", str(tf)])
        j, t = _rows(jf)[0], _rows(tf)[0]
        for r in (j, t):
            out["rows"].append({k: r.get(k) for k in ("work", "impl", "mode", "dtype", "batch", "steps", "step_ms",
                                                      "step_ms_min", "samples_per_s", "compile_s", "loss")}
                               | {"load_1min_before": round(load, 2)})
        out["ratios"][work] = round(t["step_ms"] / j["step_ms"], 3)   # >1: JAX faster than torch eager
    return out


def compile_cache_rows(tmp: Path) -> dict:
    cache = tmp / "xla_cache"
    walls, compiles = [], []
    for i in (1, 2):
        work = tmp / f"mini_cache_{i}"
        wall = _run([PY, "-m", "plip_jax.main", "--config", "configs/pretrain.py:mini,steps=10", "--workdir",
                     str(work), f"--compile_cache={cache}"], env={"PLIP_NO_PROGRESS": "1"})
        rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines() if line.strip()]
        walls.append(round(wall, 1))
        compiles.append(round(sum(r.get("compile_s", 0.0) for r in rows), 1))
    return {"command": "python -m plip_jax.main --config configs/pretrain.py:mini,steps=10 --workdir FRESH "
                       "--compile_cache=SAME", "wall_s": walls, "step_compile_s": compiles,
            "saving_s": round(walls[0] - walls[1], 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--skip-retrieval", action="store_true")
    a = p.parse_args(argv)
    day = datetime.date.today().isoformat()
    out = Path(a.out or ROOT / "bench" / "results" / f"cpu-{day}.json")
    tmp = Path(tempfile.mkdtemp(prefix="plip_cpu_report_"))
    doc: dict = {"kind": "cpu_report", "date": datetime.datetime.now().isoformat(timespec="seconds"),
                 "platform": platform.platform(), "cpu_count": os.cpu_count(),
                 "load_1min_start": round(os.getloadavg()[0], 2),
                 "command": "python bench/cpu_report.py" + (" --skip-retrieval" if a.skip_retrieval else "")}
    t0 = time.time()
    doc["train_step"] = step_rows(tmp, a.steps)
    print("train step:", doc["train_step"]["ratios"], flush=True)
    _run([PY, "bench/input_pipeline.py", "--out", str(tmp / "pipe.json")])
    pipe = json.loads((tmp / "pipe.json").read_text())
    doc["input_pipeline"] = {"stages": pipe["stages"], "rows": pipe["rows"], "target_per_core": 1000}
    print("input pipeline: done", flush=True)
    if not a.skip_retrieval:
        _run([PY, "bench/retrieval.py", "--sizes", "20000,100000", "--repeat", "1", "--out", str(tmp / "rank.json")])
        rank = json.loads((tmp / "rank.json").read_text())
        doc["ranking"] = [{k: r.get(k) for k in ("case", "backend", "floor_s", "metrics_s", "ratio", "block_mib",
                                                 "metrics_peak_alloc_mib")} for r in rank["rows"]]
        print("ranking:", [(r["case"], round(r["ratio"], 2)) for r in doc["ranking"]], flush=True)
    doc["compile_cache"] = compile_cache_rows(tmp)
    print("compile cache:", doc["compile_cache"], flush=True)
    doc["load_1min_end"] = round(os.getloadavg()[0], 2)
    doc["total_s"] = round(time.time() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
