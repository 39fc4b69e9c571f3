"""plip_jax.tools.report: metrics parsing and loss curves (fast), and (slow) the whole report of a tiny
procedural run: loss curves, retrieval with true matches, colorization and attribute predictions."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plip_jax.tools import report as R

ROOT = Path(__file__).resolve().parents[1]


def _metrics(path: Path) -> Path:
    rows = [{"step": s, "loss": 10.0 - s, "loss_ivlc": 5.0 - 0.1 * s, "loss_tic": 3.0, "loss_iap": 2.0,
             "lr": 1e-3, "samples_per_s": 5.0} for s in range(1, 6)]
    rows.append({"step": 3, "loss": 42.0})  # a resumed run logs step 3 again: the last value wins
    rows.append({"step": 5, "val/R1": 12.5, "val/R5": 50.0})
    lines = [json.dumps(r) for r in rows] + ["{not json", "", json.dumps({"no_step": 1})]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_metrics_merges_steps_and_counts_bad_lines(tmp_path):
    series, bad = R.read_metrics(_metrics(tmp_path / "metrics.jsonl"))
    assert bad == 2
    assert series["loss"] == [(1, 9.0), (2, 8.0), (3, 42.0), (4, 6.0), (5, 5.0)]
    assert series["val/R1"] == [(5, 12.5)]
    assert set(series) >= {"loss_ivlc", "loss_tic", "loss_iap", "lr", "val/R5"}


def test_plot_losses_writes_a_png_and_refuses_empty_metrics(tmp_path):
    series, _ = R.read_metrics(_metrics(tmp_path / "metrics.jsonl"))
    out = R.plot_losses(series, tmp_path / "losses.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 600  # 3 columns: 4 losses + lr + R@1
    with pytest.raises(R.ReportError, match="no loss values"):
        R.plot_losses({"lr": [(1, 0.1)]}, tmp_path / "x.png")


def test_join_tokens_merges_word_pieces():
    assert R._join_tokens(["a", "red", "##dish", "[MASK]", "coat"]) == "a reddish [MASK] coat"


def test_page_escapes_text_and_bolds_masks():
    rows = [{"id": 3, "masked_caption": "a <red> [MASK] coat", "predicted": ["red", "x&"], "truth": ["red", "blue"],
             "correct": 1, "masked": 2}]
    table = R.render_page(title="IAP", attributes=rows, attributes_only=True)
    assert "a &lt;red&gt; <b>[MASK]</b> coat" in table and "<h1>" not in table
    assert '<span class="ok">red</span> <span class="bad">x&amp;</span>' in table
    page = R.render_page(title="T <1>", workdir="/w", examples_from="synthetic (test)", split="test",
                         eval_rows=[("val", {"R1": 12.5})], retrieval={"num_captions": 8, "num_gallery": 4,
                                                                       "R1_all_captions": 50.0},
                         attributes=None, notes=["a & b"])
    assert "<h1>T &lt;1&gt;</h1>" in page and "<td>12.50</td><td>-</td>" in page and "<li>a &amp; b</li>" in page
    assert set(re.findall(r"src='([^']+)'", page)) == {"losses.png", "retrieval.png"}
    assert "Colorization" not in page and "Attribute prediction" not in page


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert R.main(["--workdir", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert R.main(["--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no metrics.jsonl" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_report_of_a_tiny_procedural_run(tmp_path):
    from conftest import subprocess_env

    work, data = tmp_path / "run", tmp_path / "data"
    args = [sys.executable, "-m", "plip_jax.main", "--config", "tests/tiny_cfg.py:data=procedural,steps=6",
            "--workdir", str(work), f"--config.data.data_dir={data}",
            "--config.data.procedural.num_identities=16", "--config.data.procedural.num_test_ids=4",
            "--config.data.procedural.num_val_ids=2", "--config.data.procedural.images_per_identity=2"]
    p = subprocess.run(args, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    p = subprocess.run([sys.executable, "-m", "plip_jax.report", "--workdir", str(work), "--examples", "4"],
                       cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    out = work / "report"
    assert f"wrote {out / 'index.html'}" in p.stdout
    for name in ("losses.png", "retrieval.png", "colorization.png", "summary.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and min(im.size) > 200, name
    page = (out / "index.html").read_text()
    for src in re.findall(r"src='([^']+)'", page):
        assert (out / src).is_file(), src
    assert {"losses.png", "retrieval.png", "colorization.png"} <= set(re.findall(r"src='([^']+)'", page))
    assert "[MASK]" in page and "Final evaluation" in page and "predicted words" in page

    rep = json.loads((out / "report.json").read_text())
    assert rep["split"] == "test" and rep["step"] == 6
    *queries, stats = rep["retrieval"]
    assert len(queries) == 4 and len({q["id"] for q in queries}) == 4  # distinct test identities
    assert stats["num_gallery"] == 8 and stats["num_captions"] >= 8
    for q in queries:
        assert len(q["top"]) == 5 and q["scores"] == sorted(q["scores"], reverse=True)
        want = next((r + 1 for r, i in enumerate(q["top"]) if i == q["id"]), None)
        assert q["first_true_rank"] == want
    assert len(rep["colorization"]["mse"]) == 4 and np.isfinite(rep["colorization"]["mse"]).all()
    attrs = rep["attributes"]
    assert len(attrs) == 4
    for a in attrs:
        assert a["masked"] >= 1 and len(a["predicted"]) == len(a["truth"]) == a["masked"]
        assert a["masked_caption"].count("[MASK]") == a["masked"] and 0 <= a["correct"] <= a["masked"]
    assert not any(t in a["masked_caption"] for a in attrs for t in ("[CLS]", "[SEP]", "[PAD]"))
