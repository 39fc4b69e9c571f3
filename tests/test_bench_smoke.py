"""Speed-benchmark scripts (bench/) run end to end with tiny shapes and write schema-valid results.

Each case runs the script in a subprocess on CPU. On this 2-core shared machine the fast cases
take ~60-70 s each (XLA/torch compile dominate), so the whole module is marked slow.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402  (bench/common.py)
from conftest import subprocess_env  # noqa: E402

pytestmark = pytest.mark.slow


def _run(args: list[str], out: Path, timeout: int = 600) -> dict:
    p = subprocess.run([sys.executable, *args, "--out", str(out)], cwd=ROOT, env=subprocess_env(1),
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    doc = json.loads(out.read_text())
    common.validate_result(doc)
    return doc


def test_jax_train_step_smoke(tmp_path: Path) -> None:
    doc = _run(["bench/train_step.py", "--smoke", "--rows", "anchor:bf16:4"], tmp_path / "jax.json")
    assert doc["kind"] == "train_step" and doc["smoke"] is True
    assert doc["config"]["forbidden_imports"] == [], "the lent GPU image has no tfds/grain"
    (row,) = doc["rows"]
    assert row["status"] == "ok", row
    assert row["work"] == "anchor" and row["dtype"] == "bf16" and row["batch"] == 4
    assert row["step_ms"] > 0 and row["samples_per_s"] > 0 and row["compile_s"] > 0
    assert row["flops_per_step"] and row["gflop_per_sample"] > 0


def test_jax_full_objective_smoke_isolated(tmp_path: Path) -> None:
    doc = _run(["bench/train_step.py", "--smoke", "--isolate", "--rows", "full:fp32:4"], tmp_path / "full.json")
    (row,) = doc["rows"]
    assert row["status"] == "ok", row
    assert row["work"] == "full" and row["peak_mem_gib"] is not None


def test_torch_reference_mini_twin_smoke(tmp_path: Path) -> None:
    """The `mini` work in PyTorch: the twin of configs/pretrain.py:mini as the run builder builds it
    (the JAX side is bench/train_step.py's pretraining_row, the path of the `full` rows)."""
    doc = _run(["bench/torch_reference.py", "--device", "cpu", "--rows", "mini:eager:fp32:2", "--steps", "1",
                "--warmup", "0"], tmp_path / "torch.json")
    (row,) = doc["rows"]
    assert row["status"] == "ok", row
    assert row["work"] == "mini" and row["batch"] == 2 and row["step_ms"] > 0


def test_torch_reference_smoke(tmp_path: Path) -> None:
    doc = _run(["bench/torch_reference.py", "--smoke", "--rows", "eager:fp32:4,channels_last:bf16:4,compile:bf16:4"],
               tmp_path / "torch.json")
    assert doc["kind"] == "torch_reference"
    assert [r["mode"] for r in doc["rows"]] == ["eager", "channels_last", "compile"]
    for r in doc["rows"]:
        assert r["status"] == "ok", r
        assert r["impl"] == "torch" and r["flops_per_step"] > 0


def test_torch_reference_full_objective_smoke(tmp_path: Path) -> None:
    """The `full` work: the PyTorch twin of the whole PLIP step (tests/reference/torch_plip.py) + Adan."""
    doc = _run(["bench/torch_reference.py", "--smoke", "--rows", "full:eager:fp32:4"], tmp_path / "full.json")
    (row,) = doc["rows"]
    assert row["status"] == "ok", row
    assert row["work"] == "full" and row["mode"] == "eager" and row["flops_per_step"] > 0


def test_merge_and_ratio() -> None:
    """The merged GPU file takes the best (a) rows of each side; no subprocess."""
    def row(**kw):
        return common.finish_row({"status": "ok", **kw}, "NVIDIA H100 80GB HBM3")
    jax_doc = common.make_result("train_step", {"kind": "NVIDIA H100 80GB HBM3"}, {"jax": "x"}, [
        row(work="anchor", impl="jax", mode="jit", dtype="bf16", batch=256, step_ms=50.0, flops_per_step=1e13),
        row(work="anchor", impl="jax", mode="jit", dtype="bf16", batch=128, step_ms=30.0),
        row(work="full", impl="jax", mode="jit", dtype="bf16", batch=128, step_ms=10.0)], {}, smoke=False)
    torch_doc = common.make_result("torch_reference", {"kind": "NVIDIA H100 80GB HBM3"}, {"torch": "y"}, [
        row(work="anchor", impl="torch", mode="compile", dtype="bf16", batch=256, step_ms=64.0),
        row(work="anchor", impl="torch", mode="eager", dtype="bf16", batch=128, step_ms=10.0)], {}, smoke=False)
    merged = common.merge(jax_doc, torch_doc)
    common.validate_result(merged)
    ratio = merged["ratio_jax_over_torch_compile"]
    assert ratio["jax"]["batch"] == 256 and ratio["torch_compile"]["batch"] == 256
    assert ratio["value"] == pytest.approx((256 / 0.05) / (256 / 0.064), rel=1e-3)
    assert merged["rows"][0]["mfu"] == pytest.approx(1e13 / 0.05 / 989.4e12, rel=1e-2)
    assert common.card_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"


def test_input_pipeline_smoke(tmp_path: Path) -> None:
    """bench/input_pipeline.py builds its own datasets (as released + resized at build) and reports
    every stage and the end-to-end rows (0 and 1 grain workers)."""
    out = tmp_path / "input.json"
    p = subprocess.run([sys.executable, "bench/input_pipeline.py", "--smoke", "--out", str(out)], cwd=ROOT,
                       env=subprocess_env(1), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    doc = json.loads(out.read_text())
    assert doc["kind"] == "input_pipeline" and doc["smoke"] is True
    assert [r["decoded_at"] for r in doc["stages"]] == ["256x128", "256x128", "512x256", "128x64"]
    for r in doc["stages"]:
        assert r["samples_per_s_per_core"] > 0 and set(r["us_per_sample"]) >= {"decode", "resize", "tokenize", "mask"}
    assert doc["stages"][0]["us_per_sample"]["resize"] == 0.0  # stored at the training size: no resize
    assert [r["workers"] for r in doc["rows"]] == [0, 1, 0]
    assert all(r["samples_per_s"] > 0 and r["samples_per_cpu_s"] for r in doc["rows"])
