"""Shared benchmark helpers: device/version info, peak FLOP/s table, timing statistics, the results
JSON format (schema "plip-jax-bench/1"), table printing, and merging of the per-framework files.

No jax/torch import at module level: the torch reference and the JAX bench both use this file, and
each imports only its own framework. Also a tiny CLI used by bench/run_gpu.sh:

  python bench/common.py merge JAX.json TORCH.json --out-dir bench/results [--out-dir $OUT]
  python bench/common.py table FILE.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

SCHEMA = "plip-jax-bench/1"
ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"

# Dense peak FLOP/s per chip (vendor data sheets, no sparsity). "fp32" is the TF32 tensor-core peak:
# both XLA's default precision and cuDNN's default allow TF32 for fp32 convolutions on Hopper.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"bf16": 989.4e12, "fp32": 494.7e12},
    "H100 PCIe": {"bf16": 756.0e12, "fp32": 378.0e12},
    "H100 NVL": {"bf16": 835.0e12, "fp32": 417.5e12},
    "H200": {"bf16": 989.4e12, "fp32": 494.7e12},
    "A100": {"bf16": 312.0e12, "fp32": 156.0e12},
}

# Columns of every row; missing values are null.
ROW_FIELDS = ("work", "impl", "mode", "dtype", "batch", "status", "samples_per_s", "step_ms",
              "step_ms_pipelined", "compile_s", "peak_mem_gib", "flops_per_step", "gflop_per_sample",
              "tflops", "mfu", "steps", "warmup")


def card_family(device_kind: str) -> str | None:
    """Map a device name ('NVIDIA H100 80GB HBM3') to a PEAK_FLOPS key, or None if unknown."""
    k = device_kind.upper()
    if "H200" in k:
        return "H200"
    if "H100" in k:
        if "PCIE" in k:
            return "H100 PCIe"
        if "NVL" in k:
            return "H100 NVL"
        return "H100 SXM"
    if "A100" in k:
        return "A100"
    return None


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of the card for 'bf16' or 'fp32' (TF32), None for CPUs/unknown cards."""
    fam = card_family(device_kind)
    return PEAK_FLOPS[fam][dtype] if fam else None


def card_slug(device_kind: str) -> str:
    """File-name friendly card name: 'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3', CPU -> 'cpu'."""
    s = re.sub(r"^nvidia\s+", "", device_kind.strip(), flags=re.I)
    s = re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")
    return s or "unknown"


def today() -> str:
    return datetime.date.today().isoformat()


def base_info() -> dict[str, Any]:
    """Host facts every results file carries."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": socket.gethostname(),
            "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "loadavg": load, "xla_flags": os.environ.get("XLA_FLAGS", "")}


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed versions (importlib.metadata, nothing imported); None when absent."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def median_ms(times_s: Sequence[float]) -> float:
    return 1e3 * statistics.median(times_s)


def seed_summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample sd (0 for one value), count and the values of one metric over seeds."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": list(values)}


def run_or_exit(args: Sequence[str], name: str) -> None:
    """Run one `python -m plip_jax.main ...` from the repo root; a failure ends the bench in one line."""
    p = subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"error: {name} failed (rc {p.returncode}): {p.stderr.strip().splitlines()[-1:]}")


def finish_row(row: dict[str, Any], device_kind: str | None) -> dict[str, Any]:
    """Fill the derived columns (samples/s, TFLOP/s, MFU, GFLOP/sample) and order the keys."""
    ms, b, flops = row.get("step_ms"), row.get("batch"), row.get("flops_per_step")
    if ms and b:
        row["samples_per_s"] = round(b / (ms / 1e3), 1)
    if ms and flops:
        row["tflops"] = round(flops / (ms / 1e3) / 1e12, 2)
        peak = peak_flops(device_kind or "", row.get("dtype", "fp32"))
        row["mfu"] = round(flops / (ms / 1e3) / peak, 4) if peak else None
    if flops and b:
        row["gflop_per_sample"] = round(flops / b / 1e9, 2)
    pms = row.get("step_ms_pipelined")
    if pms and b:  # back-to-back steps, one sync at the end: what a training loop sees
        row["samples_per_s_pipelined"] = round(b / (pms / 1e3), 1)
        if flops:
            peak = peak_flops(device_kind or "", row.get("dtype", "fp32"))
            row["mfu_pipelined"] = round(flops / (pms / 1e3) / peak, 4) if peak else None
    ordered = {k: row.get(k) for k in ROW_FIELDS}
    ordered.update({k: v for k, v in row.items() if k not in ordered})
    return ordered


def make_result(kind: str, device: dict[str, Any], versions: dict[str, Any], rows: list[dict],
                config: dict[str, Any], smoke: bool, notes: Sequence[str] = ()) -> dict[str, Any]:
    """One results document (the format of bench/results/*.json)."""
    return {"schema": SCHEMA, "kind": kind, **base_info(), "smoke": bool(smoke), "device": device,
            "versions": versions, "config": config, "rows": rows, "notes": list(notes)}


def validate_result(doc: dict[str, Any]) -> None:
    """Raise ValueError when a results document does not follow the schema."""
    for key in ("schema", "kind", "date", "device", "versions", "rows", "smoke"):
        if key not in doc:
            raise ValueError(f"results document lacks {key!r}")
    if doc["schema"] != SCHEMA:
        raise ValueError(f"schema {doc['schema']!r} != {SCHEMA!r}")
    for i, row in enumerate(doc["rows"]):
        missing = [f for f in ROW_FIELDS if f not in row]
        if missing:
            raise ValueError(f"row {i} lacks {missing}")
        if row["status"] == "ok" and not (row["step_ms"] and row["samples_per_s"]):
            raise ValueError(f"row {i} is ok but has no timing: {row}")


def write_json(doc: dict[str, Any], path: str | os.PathLike, also_dirs: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Write `doc` to `path` and a copy of it (same file name) into each of `also_dirs`."""
    paths = [Path(path)] + [Path(d) / Path(path).name for d in also_dirs if d]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    return paths


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, (set, tuple)):
        return list(x)
    return str(x)


def format_table(rows: Sequence[dict[str, Any]],
                 columns: Sequence[str] = ("work", "impl", "mode", "dtype", "batch", "samples_per_s", "step_ms",
                                           "compile_s", "peak_mem_gib", "tflops", "mfu", "status")) -> str:
    """A fixed-width text table of the rows."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1 else f"{v:.1f}"
        return str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def _best(rows: Iterable[dict], **match: Any) -> dict | None:
    ok = [r for r in rows if r.get("status") == "ok" and r.get("samples_per_s")
          and all(r.get(k) == v for k, v in match.items())]
    return max(ok, key=lambda r: r["samples_per_s"]) if ok else None


def merge(jax_doc: dict[str, Any], torch_doc: dict[str, Any] | None) -> dict[str, Any]:
    """One GPU results document: both sets of rows, both version sets, and the headline ratio
    ratio_jax_over_torch_compile = best JAX (a) samples/s / best torch.compile (a) samples/s,
    each at its own best batch (any dtype; the winner is bf16 on every card we know)."""
    rows = list(jax_doc["rows"]) + (list(torch_doc["rows"]) if torch_doc else [])
    best_jax = _best(jax_doc["rows"], work="anchor")
    best_tc = _best(torch_doc["rows"], work="anchor", mode="compile") if torch_doc else None
    ratio = None
    if best_jax and best_tc:
        ratio = {"value": round(best_jax["samples_per_s"] / best_tc["samples_per_s"], 3),
                 "jax": {k: best_jax[k] for k in ("dtype", "batch", "samples_per_s")},
                 "torch_compile": {k: best_tc[k] for k in ("dtype", "batch", "samples_per_s")}}
    versions = dict(jax_doc.get("versions", {}))
    if torch_doc:
        versions.update({k: v for k, v in torch_doc.get("versions", {}).items() if v is not None})
    return {"schema": SCHEMA, "kind": "gpu_run", **base_info(), "smoke": bool(jax_doc.get("smoke")),
            "device": jax_doc["device"], "torch_device": (torch_doc or {}).get("device"),
            "versions": versions, "config": {"jax": jax_doc.get("config"), "torch": (torch_doc or {}).get("config")},
            "ratio_jax_over_torch_compile": ratio, "rows": rows,
            "notes": list(jax_doc.get("notes", [])) + list((torch_doc or {}).get("notes", []))}


def _cli(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge", help="merge the JAX and torch files of one GPU run")
    m.add_argument("jax_json")
    m.add_argument("torch_json", nargs="?")
    m.add_argument("--out-dir", action="append", default=[], help="repeatable; first is the main copy")
    m.add_argument("--name", default=None, help="file name (default <date>-<card>.json)")
    t = sub.add_parser("table", help="print the rows of a results file")
    t.add_argument("json")
    a = p.parse_args(argv)
    if a.cmd == "table":
        doc = json.loads(Path(a.json).read_text())
        print(format_table(doc["rows"]))
        return 0
    jax_doc = json.loads(Path(a.jax_json).read_text())
    torch_doc = None
    if a.torch_json and Path(a.torch_json).is_file():
        torch_doc = json.loads(Path(a.torch_json).read_text())
    doc = merge(jax_doc, torch_doc)
    validate_result(doc)
    name = a.name or f"{today()}-{card_slug(doc['device'].get('kind', 'unknown'))}{'-smoke' if doc['smoke'] else ''}.json"
    dirs = a.out_dir or [str(RESULTS_DIR)]
    paths = write_json(doc, Path(dirs[0]) / name, dirs[1:])
    print(format_table(doc["rows"]))
    print("ratio_jax_over_torch_compile:", json.dumps(doc["ratio_jax_over_torch_compile"]))
    print("wrote", ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
