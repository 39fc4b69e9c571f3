"""The evaluation run end to end: a tiny trained workdir evaluated on the procedural test split."""
from __future__ import annotations

import json

import pytest
from test_train_loop import _main, _ok


@pytest.mark.slow
def test_eval_run_writes_eval_json_and_table(tmp_path):
    run, out = tmp_path / "run", tmp_path / "eval"
    data = tmp_path / "data"
    _ok(_main(run, "data=procedural,steps=2", f"--config.data.data_dir={data}"))
    p = _main(out, "", f"--config.checkpoint={run}", "--config.dataset=synth_pedes",
              "--config.procedural.num_identities=40", "--config.procedural.images_per_identity=2",
              "--config.procedural.num_val_ids=6", "--config.procedural.num_test_ids=6",
              "--config.procedural.image_height=64", "--config.procedural.image_width=32",
              f"--config.data_dir={data}", config="configs/eval_text_reid.py")
    _ok(p)
    result = json.loads((out / "eval.json").read_text())
    for key in ("R1", "R5", "R10", "mAP", "mAP_official", "mINP", "num_queries", "num_gallery"):
        assert key in result
    assert result["num_gallery"] == 12 and result["num_queries"] > 12
    assert 0.0 <= result["R1"] <= result["R5"] <= result["R10"] <= 100.0
    assert "R1" in p.stdout and "mAP_official" in p.stdout and "Text-to-image retrieval" in p.stdout


def test_eval_run_without_checkpoint_fails_in_one_line(tmp_path):
    p = _main(tmp_path, "", config="configs/eval_text_reid.py")
    assert p.returncode == 2
    assert "config.checkpoint" in p.stderr and "Traceback" not in p.stderr
