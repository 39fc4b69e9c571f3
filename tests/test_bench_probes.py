"""The probes of bench/probes/ run end to end on a tiny run (tests/tiny.py's config on a procedural
build) and return what they print. One tiny run is trained for the module (a subprocess, ~45 s on
2 busy cores), so the module is slow; each probe then runs in-process in seconds, compiled with
`jax_disable_most_optimizations` (their numbers are not judged, only that they come out)."""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from conftest import ROOT, subprocess_env

pytestmark = pytest.mark.slow

PROBES = ROOT / "bench" / "probes"


def probe(name: str):
    """bench/probes/<name>.py as a module (the probes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_probe_{name}", PROBES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", autouse=True)
def quick_compiles():
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """(workdir, data_dir): the tiny config trained 2 steps on a 40-identity procedural build."""
    tmp = tmp_path_factory.mktemp("probe_run")
    run, data = tmp / "run", tmp / "data"
    p = subprocess.run([sys.executable, "-m", "plip_jax.main", "--config", "tests/tiny_cfg.py:data=procedural,steps=2",
                        "--workdir", str(run), f"--config.data.data_dir={data}", "--config.train.final_val=False"],
                       cwd=ROOT, env=subprocess_env(1), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-5000:]}"
    return run, data


def test_mini_step_profile_times_each_variant(capsys):
    out = probe("mini_step_profile").main(
        ["--config", str(ROOT / "tests" / "tiny_cfg.py"), "--steps", "1", "--warmup", "0", "ivlc_only",
         "wide:losses.weights.tic=0.0,losses.weights.iap=0.0,model.image.width=16"])
    assert list(out) == ["ivlc_only", "wide"]
    for ms, gflop in out.values():
        assert ms > 0 and gflop > 0
    assert out["ivlc_only"][1] < out["wide"][1]
    assert "ivlc_only" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown variant"):
        probe("mini_step_profile").main(["nope"])


def test_mini_errors_counts_differing_slots(tiny_run, capsys):
    run, data = tiny_run
    out = probe("mini_errors").main([str(run), "--data-dir", str(data), "--step", "2"])
    assert 0.0 <= out["R1"] <= 100.0
    assert 0.0 <= out["caption_nn_same_id"] <= 100.0 and 0.0 <= out["image_nn_same_id"] <= 100.0
    assert set(out["differing_slots"]) <= set(range(7))
    assert sum(out["slot_differs"].values()) == sum(k * n for k, n in out["differing_slots"].items())
    assert "wrong top-1" in capsys.readouterr().out


def test_mini_bn_check_reestimates_statistics(tiny_run):
    run, _ = tiny_run
    out = probe("mini_bn_check").main([str(run), "--split", "test", "--batches", "2"])
    assert 0.0 <= out["as_saved"] <= 100.0 and 0.0 <= out["colour_only_bn_stats"] <= 100.0


def test_mini_iap_check_position_cosines(tiny_run):
    run, _ = tiny_run
    out = probe("mini_iap_check").main([str(run), "--shipped", "minilm"])
    assert out["masked_tokens"] > 0
    for key in ("shipped_tower", "run_tower", "fused_ln_1"):
        assert -1.0 <= out[key] <= 1.0 + 1e-6
    assert out["image_norm"] > 0 and out["token_norm"] > 0


def test_mini_task_grads_per_group(tiny_run):
    run, _ = tiny_run
    out = probe("mini_task_grads").main([str(run), "--batches", "1"])
    assert set(out["weights"]) == {"ivlc", "tic", "iap"}
    assert "image layer4" in out["groups"] and "iap head" in out["groups"]
    for group in out["groups"].values():
        assert all(math.isfinite(v) and v >= 0 for v in group["norm"].values())
        assert all(-1.0 - 1e-6 <= v <= 1.0 + 1e-6 for v in group["cos"].values())
    assert 0.0 <= out["iap"]["accuracy"] <= 100.0 and 0.0 < out["iap"]["top_prediction_share"] <= 100.0
