"""bench/ablation.py: the commands each row runs, the resume from finished runs, the table, bad arguments."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402  (bench/common.py)
import ablation as A  # noqa: E402  (bench/ablation.py)


def _metrics(r1: float) -> dict:
    return {"R1": r1, "R5": r1 + 1, "R10": r1 + 2, "mAP": r1 - 1}


def test_a_missing_run_pretrains_with_its_task_zeroed_then_evaluates_on_the_shifted_set(tmp_path, monkeypatch):
    calls = []

    def fake_run(args, **kw):
        calls.append(args)
        work = Path(args[args.index("--workdir") + 1])
        work.mkdir(parents=True)
        (work / "eval.json").write_text(json.dumps(_metrics(40.0 if len(calls) == 1 else 3.0)))
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    run = A.run_one("no_iap", 2, tmp_path, "/data/shifted", "cuhk_pedes", "configs/pretrain.py:mini")
    pretrain, shifted = calls
    assert pretrain[pretrain.index("--config") + 1] == "configs/pretrain.py:mini"
    assert "--config.seed=2" in pretrain and "--config.losses.weights.iap=0.0" in pretrain
    assert shifted[shifted.index("--config") + 1] == "configs/eval_text_reid.py"
    assert f"--config.checkpoint={tmp_path / 'no_iap-s2'}" in shifted
    assert {"--config.dataset=cuhk_pedes", "--config.dataset_config=procedural",
            "--config.data_dir=/data/shifted"} <= set(shifted)
    assert run["in_distribution"]["R1"] == 40.0 and run["shifted"]["R1"] == 3.0
    # the full row zeroes nothing; --set overrides go to every pre-training, in workdirs named by the tag
    calls.clear()
    A.run_one("full", 0, tmp_path, "/data/shifted", "cuhk_pedes", "configs/pretrain.py:mini")
    assert not any("losses.weights" in a for a in calls[0])
    calls.clear()
    run = A.run_one("full", 0, tmp_path, "/d", "cuhk_pedes", "configs/pretrain.py:mini",
                    overrides=["losses.weights.tic=0.2"], tag="x10")
    assert "--config.losses.weights.tic=0.2" in calls[0] and run["name"] == "x10-full-s0"
    assert Path(run["workdir"]) == tmp_path / "x10-full-s0"


def test_finished_runs_are_read_not_rerun_and_tabulated(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("a finished run was rerun"))
    for seed, (ind, sh) in enumerate([(70.0, 2.0), (74.0, 4.0)]):
        for name, r1 in ((f"no_tic-s{seed}", ind), (f"no_tic-s{seed}-cuhk_pedes", sh)):
            (tmp_path / name).mkdir()
            (tmp_path / name / "eval.json").write_text(json.dumps(_metrics(r1)))
    runs = [A.run_one("no_tic", s, tmp_path, "/nonexistent", "cuhk_pedes", "configs/pretrain.py:mini") for s in (0, 1)]
    row = {"row": "no_tic", **{k: {m: common.seed_summary([r[k][m] for r in runs]) for m in A.METRICS}
                              for k in ("in_distribution", "shifted")}}
    assert row["in_distribution"]["R1"]["mean"] == 72.0 and row["shifted"]["R1"]["sd"] == pytest.approx(2 ** 0.5)
    assert A.table([row]).splitlines()[-1] == (
        "| no_tic | 72.00 ± 2.83 | 70.00 / 74.00 | 71.00 ± 2.83 | 3.00 ± 1.41 | 2.00 / 4.00 |")


def test_a_failed_run_and_bad_arguments_end_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run",
                        lambda args, **k: subprocess.CompletedProcess(args, 3, "", "Traceback\nerror: boom"))
    with pytest.raises(SystemExit, match=r"no_ivlc-s0 failed \(rc 3\).*error: boom"):
        A.run_one("no_ivlc", 0, tmp_path, "/d", "cuhk_pedes", "configs/pretrain.py:mini")
    with pytest.raises(SystemExit, match="unknown rows"):
        A.main(["--shifted-data-dir", str(tmp_path), "--rows", "full,no_xyz"])
    with pytest.raises(SystemExit, match="--jobs 0"):
        A.main(["--shifted-data-dir", str(tmp_path), "--jobs", "0"])
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        A.main(["--shifted-data-dir", str(tmp_path), "--tag", "t", "--set", "losses.weights.tic"])
    with pytest.raises(SystemExit, match="needs a --tag"):
        A.main(["--shifted-data-dir", str(tmp_path), "--set", "losses.weights.tic=0.2"])
