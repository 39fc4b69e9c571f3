"""bench/downstream.py: the rows each protocol runs, the resume from finished rows, the table."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402  (bench/common.py)
import downstream as D  # noqa: E402  (bench/downstream.py)


def test_each_protocol_runs_plip_and_random_init_on_its_datasets():
    rows = D.rows_of(["main", "cross_domain", "few_shot"], steps=0)
    assert [(r["protocol"], r["init"]) for r in rows[:2]] == [("main", "plip"), ("main", "random")]
    cross = [(r["train"], r["test"]) for r in rows if r["protocol"] == "cross_domain"]
    assert set(cross) == {("cuhk_pedes", "icfg_pedes"), ("icfg_pedes", "cuhk_pedes")}
    assert all("eval_dataset=" + r["test"] in r["arg"] for r in rows if r["protocol"] == "cross_domain")
    few = sorted({r["few_shot"] for r in rows if r["protocol"] == "few_shot"})
    assert few == sorted(D.FEW_SHOT) and len(rows) == 2 + 4 + 2 * len(D.FEW_SHOT)
    assert D.rows_of(["main"], steps=30)[0]["arg"].endswith(":mini,steps=30")
    # few-shot at 100% is main's configuration: the same argument, hence the same workdir and runs
    full = [r for r in rows if r["protocol"] == "few_shot" and r["few_shot"] == 1.0]
    assert [r["arg"] for r in full] == [r["arg"] for r in rows[:2]]
    with pytest.raises(SystemExit, match="unknown protocol"):
        D.rows_of(["zero"], steps=0)


def test_a_finished_row_is_read_not_rerun_and_tabulated(tmp_path):
    row = D.rows_of(["main"], steps=0)[0]
    for seed, (z, f) in enumerate([(10.0, 20.0), (12.0, 24.0)]):
        work = tmp_path / f"plip-cuhk_pedes-cuhk_pedes-f1.0-s{seed}"
        work.mkdir()
        metrics = lambda r1: {"R1": r1, "R5": r1 + 1, "mAP": r1 - 1}  # noqa: E731
        (work / "eval.json").write_text(json.dumps({"zero_shot": metrics(z), "finetuned": metrics(f), "seconds": 3}))
    runs = [D.run_one(row, s, "/nonexistent/init", "/nonexistent/data", tmp_path) for s in (0, 1)]
    assert [r["finetuned"]["R1"] for r in runs] == [20.0, 24.0]
    agg = {k: {m: common.seed_summary([r[k][m] for r in runs]) for m in D.METRICS} for k in ("zero_shot", "finetuned")}
    assert agg["finetuned"]["R1"]["mean"] == 22.0 and agg["finetuned"]["R1"]["sd"] == pytest.approx(2 ** 0.5 * 2)
    line = D.table([{**row, **agg}]).splitlines()[-1]
    assert line == "| main | plip | cuhk_pedes -> cuhk_pedes | 1 | 11.00 ± 1.41 | 22.00 ± 2.83 | 21.00 ± 2.83 |"


def test_image_reid_rows_run_its_own_config_without_a_cross_domain_eval_set(tmp_path, monkeypatch):
    rows = D.rows_of(["main", "few_shot"], steps=0, task="image_reid")
    assert {r["arg"].split(":")[0] for r in rows} == {"configs/finetune_image_reid.py"}
    with pytest.raises(SystemExit, match="not run for image_reid"):
        D.rows_of(["cross_domain"], steps=0, task="image_reid")
    with pytest.raises(SystemExit, match="unknown task"):
        D.rows_of(["main"], steps=0, task="captioning")
    calls = []

    def fake_run(args, **kw):
        calls.append(args)
        work = Path(args[args.index("--workdir") + 1])
        work.mkdir()
        m = {"R1": 1.0, "R5": 2.0, "mAP": 3.0}
        (work / "eval.json").write_text(json.dumps({"zero_shot": m, "finetuned": m}))
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    run = D.run_one(rows[0], 1, "/init", "/data", tmp_path)
    assert run["name"] == "image_reid-plip-cuhk_pedes-cuhk_pedes-f1.0-s1"
    assert "--config.data.data_dir=/data" in calls[0] and not any("eval_data" in a for a in calls[0])
