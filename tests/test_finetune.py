"""Tiny end-to-end fine-tunes of each head on procedural data (toy model sizes): text Re-ID from
scratch, image Re-ID and attributes starting from that run's checkpoint (the init_checkpoint path),
each ending with eval.json; plus config errors that fail before anything is compiled."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    from tiny_finetune_cfg import tiny_finetune_config
    from plip_jax.trainers import finetune

    task, workdir, data_dir, init = sys.argv[1:5]
    c = tiny_finetune_config(task, steps=2, batch=8)
    c.data.data_dir = data_dir
    if init != "-":
        c.init_checkpoint = init
    r = finetune.run(c, workdir)
    print("RESULT " + json.dumps({k: v for k, v in r.items() if not isinstance(v, dict)}))
""")


@pytest.mark.slow
def test_three_tasks_end_to_end(tmp_path: Path, run_in_subprocess):
    script = tmp_path / "ft.py"
    script.write_text(SCRIPT)
    data = str(tmp_path / "data")
    text = run_in_subprocess([str(script), "text_reid", str(tmp_path / "t"), data, "-"], timeout=600)
    assert text["task"] == "text_reid" and text["init"].startswith("scratch")
    assert text["steps"] == 2 and 0.0 <= text["R1"] <= 100.0
    ev = json.loads((tmp_path / "t" / "eval.json").read_text())
    assert set(ev["zero_shot"]) >= {"R1", "mAP", "mAP_official"} and set(ev["finetuned"]) >= {"R1", "mAP", "mAP_official"}
    assert (tmp_path / "t" / "metrics.jsonl").read_text().count("loss_cmpc") == 2

    img = run_in_subprocess([str(script), "image_reid", str(tmp_path / "i"), data, str(tmp_path / "t")], timeout=600)
    assert img["init"].startswith("checkpoint") and img["protocol"] == "test split by camera"
    assert img["num_query"] > 0 and img["num_gallery"] > 0 and 0.0 <= img["mAP"] <= 100.0

    assert 0.0 <= img["mAP_official"] <= 100.0
    att = run_in_subprocess([str(script), "attributes", str(tmp_path / "a"), data, str(tmp_path / "i")], timeout=600)
    assert att["num_attributes"] == 50 and att["num_evaluated_attributes"] > 0 and 0.0 <= att["mA"] <= 100.0
    assert (tmp_path / "a" / "checkpoints").is_dir()


def test_config_errors(tmp_path: Path):
    from tiny import config_file
    finetune_image_reid = config_file("finetune_image_reid")
    finetune_text_reid = config_file("finetune_text_reid")
    from plip_jax.core.errors import ConfigError
    from plip_jax.trainers import finetune

    c = finetune_text_reid.get_config("mini,few_shot=0.0")
    with pytest.raises(ConfigError, match="few_shot"):
        finetune.run(c, tmp_path)
    c = finetune_text_reid.get_config("mini")
    c.init_checkpoint = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no such file"):
        finetune.run(c, tmp_path)
    c = finetune_image_reid.get_config("mini,batch=30")
    with pytest.raises(ConfigError, match="k_images"):
        finetune.run(c, tmp_path)
    c = finetune_image_reid.get_config("mini")
    c.mesh.fsdp = 3                                    # does not divide the device count
    with pytest.raises(ConfigError, match="config.mesh.*fsdp=3"):
        finetune.run(c, tmp_path)
    c = finetune_image_reid.get_config("mini")
    c.train.ckpt_every = -1
    with pytest.raises(ConfigError, match="ckpt_every"):
        finetune.run(c, tmp_path)
    assert not (tmp_path / "checkpoints").exists()
    assert finetune_image_reid.get_config("dataset=market1501").data.query_split == "query"
    # :mini image Re-ID runs on the shifted style-A stand-in unless told SYNTH-PEDES; never on a real set
    assert (finetune_image_reid.get_config("mini").data.name, finetune_image_reid.get_config().data.name) == (
        "cuhk_pedes", "market1501")
    assert finetune_image_reid.get_config("mini,dataset=synth_pedes").data.name == "synth_pedes"
    with pytest.raises(ValueError, match="procedural stand-ins"):
        finetune_image_reid.get_config("mini,dataset=market1501")
