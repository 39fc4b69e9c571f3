"""Benchmark blockwise retrieval ranking: queries/s and peak memory on random planted-match data.

Cases: CUHK-PEDES test size (6,156 captions x 3,074 images) and 100k x 100k, D=768. Each gallery
identity has ~3 images (as in CUHK); a query is its identity's centre plus Gaussian noise, so the
metrics are non-trivial. A case whose estimated time exceeds ``--max-seconds`` is run on a prefix
of the queries only (full gallery) and marked ``partial`` with the extrapolated full time.

    python bench/retrieval.py            # real sizes -> bench/results/retrieval-<date>-cpu.json
    python bench/retrieval.py --smoke    # tiny sizes, seconds
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plip_jax.evals.retrieval import retrieval_metrics, similarity_topk  # noqa: E402

CASES = {"cuhk": (6156, 3074), "100k": (100_000, 100_000)}
SMOKE_CASES = {"smoke-small": (300, 200), "smoke-large": (1000, 1500)}


def make_data(num_queries: int, num_gallery: int, dim: int, noise: float, seed: int = 0):
    """Random embeddings with planted matches: ~3 gallery images per identity, float32."""
    rng = np.random.default_rng(seed)
    num_ids = max(1, num_gallery // 3)
    centres = rng.standard_normal((num_ids, dim), dtype=np.float32)
    g_ids = np.arange(num_gallery) % num_ids
    q_ids = rng.integers(0, num_ids, num_queries)
    gallery = centres[g_ids]
    gallery += noise * rng.standard_normal(gallery.shape, dtype=np.float32)
    queries = centres[q_ids]
    queries += noise * rng.standard_normal(queries.shape, dtype=np.float32)
    return queries, gallery, q_ids, g_ids


def measure(fn, *args, **kwargs) -> tuple[object, float, int]:
    """Run ``fn`` once; return (result, wall seconds, peak bytes allocated above the baseline)."""
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    wall = time.perf_counter() - start
    return out, wall, tracemalloc.get_traced_memory()[1] - base


def run_case(name: str, nq: int, ng: int, args) -> list[dict]:
    """Time the metric computation (and top-k) for one size; prefix-only when over budget."""
    q, g, q_ids, g_ids = make_data(nq, ng, args.dim, args.noise)
    calib = min(nq, args.block_size)
    _, t_calib, _ = measure(retrieval_metrics, q[:calib], g, q_ids[:calib], g_ids,
                            block_size=args.block_size, method=args.method)
    estimate = t_calib * nq / calib
    run_q = nq if estimate <= args.max_seconds else max(calib, int(args.max_seconds / t_calib) * calib)
    run_q = min(run_q, nq)
    # One ranking pass gives both AP conventions (mAP = IRRA, mAP_official = PLIP's trapezoid).
    metrics, wall, peak = measure(retrieval_metrics, q[:run_q], g, q_ids[:run_q], g_ids,
                                  block_size=args.block_size, method=args.method)
    rows = [{
        "case": name, "op": "retrieval_metrics", "num_queries": nq,
        "num_gallery": ng, "queries_run": run_q, "partial": run_q < nq, "wall_s": wall,
        "queries_per_s": run_q / wall, "estimated_full_s": wall * nq / run_q,
        "peak_alloc_mib": peak / 2**20,
        "metrics": {k: metrics[k] for k in ("R1", "R5", "R10", "mAP", "mAP_official", "mINP")},
    }]
    topk_q = min(run_q, 2 * args.block_size)
    _, wall, peak = measure(similarity_topk, q[:topk_q], g, 10, block_size=args.block_size)
    rows.append({
        "case": name, "op": "similarity_topk(k=10)", "num_queries": nq, "num_gallery": ng,
        "queries_run": topk_q, "partial": topk_q < nq, "wall_s": wall,
        "queries_per_s": topk_q / wall, "estimated_full_s": wall * nq / topk_q,
        "peak_alloc_mib": peak / 2**20,
    })
    return rows


def machine_info() -> dict:
    """Host, CPU and library versions so numbers from different boxes are not mixed up."""
    import jax

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # show_config layout differs between numpy versions
        blas = "unknown"
    return {
        "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
        "python": platform.python_version(), "numpy": np.__version__, "jax": jax.__version__,
        "blas": blas,
        "cpu_model": next((line.split(":", 1)[1].strip() for line in
                           Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name")), platform.processor()),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse flags, run the cases, print a table, write the JSON result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes for a quick check")
    p.add_argument("--cases", default="cuhk,100k", help=f"comma list of {sorted(CASES)}")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--noise", type=float, default=2.5, help="per-dim noise around id centres")
    p.add_argument("--block-size", type=int, default=4096)
    p.add_argument("--method", default="auto", choices=["auto", "count", "sort"])
    p.add_argument("--max-seconds", type=float, default=420.0,
                   help="per-case budget; bigger cases run a query prefix and extrapolate")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/...)")
    args = p.parse_args(argv)
    if args.smoke:
        cases = SMOKE_CASES
        args.dim, args.block_size = min(args.dim, 64), min(args.block_size, 256)
    else:
        unknown = set(args.cases.split(",")) - set(CASES)
        if unknown:
            p.error(f"unknown case(s) {sorted(unknown)}; choose from {sorted(CASES)}")
        cases = {c: CASES[c] for c in args.cases.split(",")}

    tracemalloc.start()
    rows = []
    for name, (nq, ng) in cases.items():
        rows.extend(run_case(name, nq, ng, args))
        print(f"done {name}", file=sys.stderr, flush=True)
    tracemalloc.stop()

    print(f"{'case':<12} {'op':<32} {'queries':>8} {'gallery':>8} {'run':>8} "
          f"{'q/s':>10} {'wall s':>8} {'full s':>8} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['case']:<12} {r['op']:<32} {r['num_queries']:>8} {r['num_gallery']:>8} "
              f"{r['queries_run']:>8} {r['queries_per_s']:>10.1f} {r['wall_s']:>8.2f} "
              f"{r['estimated_full_s']:>8.1f} {r['peak_alloc_mib']:>9.1f}")
    result = {
        "benchmark": "retrieval", "date": datetime.date.today().isoformat(),
        "device": "cpu", "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows,
    }
    suffix = "-smoke" if args.smoke else ""
    out = Path(args.out or Path(__file__).parent / "results" /
               f"retrieval-{result['date']}-cpu{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
