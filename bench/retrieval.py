"""Ranking vs its floor: text->image metrics time next to the bare blockwise similarity matmul.

For each size the same query blocks are scored twice on the same backend: once as the bare matmul
(normalised inputs, one reused (block, G) output buffer, nothing else) and once through
``retrieval_metrics`` (normalisation, id lookup, match-rank counting, both mAPs, mINP). The ratio
metrics / floor is kept <= 1.5 on CPU (docs/results.md "CPU speed"). Peak memory is tracemalloc's
(numpy's host allocations; a device's memory is not seen) above the inputs, next to the size of
one similarity block. Data: ~3 gallery images per identity, a query is its identity's centre plus
Gaussian noise, float32.

    python bench/retrieval.py --sizes 20000                 # 20k x 20k, d=384
    python bench/retrieval.py --sizes 100000 --out bench/results/retrieval-<date>-cpu.json
    python bench/retrieval.py --sizes 100000 --query-limit 8192   # full gallery, first 8192 queries
    python bench/retrieval.py --smoke
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

from plip_jax.evals.ranking import pick_backend  # noqa: E402
from plip_jax.evals.retrieval import (  # noqa: E402
    l2_normalize,
    retrieval_metrics,
    similarity_topk,
)

METRIC_KEYS = ("R1", "R5", "R10", "mAP", "mAP_official", "mINP")


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


CPU_S: list[float] = []  # process CPU seconds of the last measure() (all threads)


def measure(fn, *args, **kwargs) -> tuple[object, float, int]:
    """Run ``fn`` once; return (result, wall seconds, peak bytes allocated above the baseline;
    0 when tracemalloc is off). Its process CPU seconds go to ``CPU_S[-1]``."""
    tracing = tracemalloc.is_tracing()
    if tracing:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    wall = time.perf_counter() - start
    CPU_S.append(time.process_time() - cpu)
    return out, wall, (tracemalloc.get_traced_memory()[1] - base) if tracing else 0


def floor_numpy(q: np.ndarray, gt: np.ndarray, block: int) -> None:
    """The bare blockwise matmul: normalised blocks into one reused (block, G) buffer."""
    buf = np.empty((min(block, q.shape[0]), gt.shape[1]), dtype=np.float32)
    for lo in range(0, q.shape[0], block):
        qb = q[lo : lo + block]
        np.matmul(qb, gt, out=buf[: qb.shape[0]])


def floor_jax(q: np.ndarray, gt: np.ndarray, block: int) -> None:
    """The same on the jax device: one jitted fp32 (HIGHEST) matmul per padded block."""
    import jax
    import jax.numpy as jnp

    mm = jax.jit(lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST))
    g_dev = jax.device_put(np.ascontiguousarray(gt))
    block = min(block, q.shape[0])
    blocks = [q[lo : lo + block] for lo in range(0, q.shape[0], block)]
    if blocks[-1].shape[0] < block:
        blocks[-1] = np.concatenate([blocks[-1], np.zeros((block - blocks[-1].shape[0], q.shape[1]),
                                                          np.float32)])
    mm(jax.device_put(blocks[0]), g_dev).block_until_ready()  # compile outside the timing
    start = time.perf_counter()
    prev = None
    for b in blocks:
        out = mm(jax.device_put(b), g_dev)
        if prev is not None:
            prev.block_until_ready()
        prev = out
    prev.block_until_ready()
    return time.perf_counter() - start


def run_size(nq: int, ng: int, args) -> list[dict]:
    """Floor, metrics (and optionally top-10) for one Q x G size on the chosen backend."""
    q, g, q_ids, g_ids = make_data(nq, ng, args.dim, args.noise)
    run_q = min(nq, args.query_limit) if args.query_limit else nq
    q, q_ids = q[:run_q], q_ids[:run_q]
    backend = pick_backend(args.backend, np.dtype(np.float32), args.method)
    qn, gn = l2_normalize(q), l2_normalize(g)
    gt = gn.T  # what retrieval_metrics multiplies by (a transposed view, no copy)
    block = args.block_size
    kw = dict(block_size=block, method=args.method, backend=backend)
    if backend == "jax":  # compile both programs outside the timings (shapes depend on the block)
        retrieval_metrics(q[: min(run_q, block)], g, q_ids[: min(run_q, block)], g_ids, **kw)
    # Floor and metrics alternate, best of --repeat each, so a load change hits both alike.
    floor_s = metrics_s = floor_cpu = metrics_cpu = float("inf")
    floor_peak = peak = 0
    for _ in range(args.repeat):
        if backend == "jax":
            floor_s = min(floor_s, floor_jax(qn, gt, block))  # device time: no CPU ratio
        else:
            _, wall, floor_peak = measure(floor_numpy, qn, gt, block)
            floor_s, floor_cpu = min(floor_s, wall), min(floor_cpu, CPU_S[-1])
        metrics, wall, peak = measure(retrieval_metrics, q, g, q_ids, g_ids, **kw)
        metrics_s, metrics_cpu = min(metrics_s, wall), min(metrics_cpu, CPU_S[-1])
    del qn, gn, gt
    row = {
        "case": f"{nq}x{ng}", "op": "retrieval_metrics", "backend": backend, "dim": args.dim,
        "num_queries": nq, "num_gallery": ng, "queries_run": run_q, "partial": run_q < nq,
        "block_size": block, "floor_s": floor_s, "metrics_s": metrics_s,
        "ratio": metrics_s / floor_s, "floor_cpu_s": floor_cpu if backend == "numpy" else None,
        "metrics_cpu_s": metrics_cpu,
        "cpu_ratio": metrics_cpu / floor_cpu if backend == "numpy" else None,
        "estimated_full_floor_s": floor_s * nq / run_q,
        "estimated_full_metrics_s": metrics_s * nq / run_q,
        "block_mib": min(block, run_q) * ng * 4 / 2**20,
        "floor_peak_alloc_mib": floor_peak / 2**20, "metrics_peak_alloc_mib": peak / 2**20,
        "metrics": {k: metrics[k] for k in METRIC_KEYS},
    }
    rows = [row]
    if args.topk:
        topk_q = min(run_q, 2 * block)
        if backend == "jax":  # compile outside the timing
            similarity_topk(q[: min(topk_q, block)], g, 10, block_size=block, backend=backend)
        _, wall, tpeak = measure(similarity_topk, q[:topk_q], g, 10, block_size=block,
                                 backend=backend)
        rows.append({
            "case": f"{nq}x{ng}", "op": "similarity_topk(k=10)", "backend": backend,
            "num_queries": nq, "num_gallery": ng, "queries_run": topk_q, "wall_s": wall,
            "estimated_full_s": wall * nq / topk_q, "peak_alloc_mib": tpeak / 2**20,
        })
    return rows


def machine_info() -> dict:
    """Host, CPU, load and library versions so numbers from different boxes are not mixed up."""
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
        "jax_backend": jax.default_backend(),
        "jax_devices": [d.device_kind for d in jax.devices()], "blas": blas,
        "cpu_model": next((line.split(":", 1)[1].strip() for line in
                           Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name")), platform.processor()),
    }


def parse_size(text: str) -> tuple[int, int]:
    """``20000`` -> (20000, 20000); ``6156x3074`` -> (6156, 3074)."""
    parts = text.lower().replace("k", "000").split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"size must be N or QxG (e.g. 20000, 100k, 6156x3074), got {text!r}")
    return int(parts[0]), int(parts[1])


def main(argv: list[str] | None = None) -> None:
    """Parse flags, run the sizes, print the table; write JSON only with ``--out``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="20000", help="comma list of N (N x N) or QxG, e.g. 20k,100k")
    p.add_argument("--smoke", action="store_true", help="tiny sizes for a quick check")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--noise", type=float, default=2.5, help="per-dim noise around id centres")
    p.add_argument("--block-size", type=int, default=4096)
    p.add_argument("--backend", default="auto", choices=["auto", "numpy", "jax"])
    p.add_argument("--method", default="auto", choices=["auto", "count", "sort"])
    p.add_argument("--query-limit", type=int, default=0,
                   help="score only the first N queries (full gallery); 0 = all")
    p.add_argument("--repeat", type=int, default=1, help="best of N runs of each timing")
    p.add_argument("--topk", action="store_true", help="also time similarity_topk(k=10)")
    p.add_argument("--no-trace", action="store_true",
                   help="time without tracemalloc (peak memory then reads 0)")
    p.add_argument("--out", default=None, help="write the JSON result here (nothing is written without it)")
    args = p.parse_args(argv)
    sizes = [(300, 200), (1000, 1500)] if args.smoke else [parse_size(s) for s in args.sizes.split(",")]
    if args.smoke:
        args.dim, args.block_size = min(args.dim, 64), min(args.block_size, 256)

    info = machine_info()
    if not args.no_trace:
        tracemalloc.start()
    rows = []
    for nq, ng in sizes:
        rows.extend(run_size(nq, ng, args))
        print(f"done {nq}x{ng}", file=sys.stderr, flush=True)
    if not args.no_trace:
        tracemalloc.stop()
    info["loadavg_1m_end"] = os.getloadavg()[0]

    print(f"load avg (1 min) {info['loadavg_1m']:.1f} -> {info['loadavg_1m_end']:.1f} on "
          f"{info['cpu_count']} CPUs; jax backend {info['jax_backend']}")
    print(f"{'case':<14} {'backend':<7} {'run q':>7} {'block':>6} {'floor s':>8} {'metrics s':>9} "
          f"{'ratio':>6} {'cpu ratio':>9} {'full s':>8} {'block MiB':>9} {'peak MiB':>9}  "
          "R1 / mAP / mAP_off / mINP")
    for r in rows:
        if r["op"] != "retrieval_metrics":
            print(f"{r['case']:<14} {r['backend']:<7} {r['queries_run']:>7} top-10 {r['wall_s']:.2f} s "
                  f"(full {r['estimated_full_s']:.1f} s, peak {r['peak_alloc_mib']:.1f} MiB)")
            continue
        m = r["metrics"]
        print(f"{r['case']:<14} {r['backend']:<7} {r['queries_run']:>7} {r['block_size']:>6} "
              f"{r['floor_s']:>8.2f} {r['metrics_s']:>9.2f} {r['ratio']:>6.2f} {r['cpu_ratio'] or float('nan'):>9.2f} "
              f"{r['estimated_full_metrics_s']:>8.1f} {r['block_mib']:>9.1f} "
              f"{r['metrics_peak_alloc_mib']:>9.1f}  {m['R1']:.2f} / {m['mAP']:.2f} / "
              f"{m['mAP_official']:.2f} / {m['mINP']:.2f}")
    if args.out:
        result = {
            "benchmark": "retrieval", "date": datetime.date.today().isoformat(),
            "device": info["jax_backend"] if any(r["backend"] == "jax" for r in rows) else "cpu",
            "machine": info, "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rows": rows,
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
