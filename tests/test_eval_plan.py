"""SYNTH-PEDES `full` trains on every identity (held-out val/test only via builder params), and the
run's evaluation choice: its own val split, else a built text-ReID set (CUHK-PEDES), else none."""
from __future__ import annotations

from pathlib import Path

import pytest
from tiny import config_file

pretrain = config_file("pretrain")
from plip_jax.data import sources
from plip_jax.data.tokenizer import load_tokenizer
from tests.fixtures.pedes import make_entries, write_dataset
from tfds_synth_pedes import build as tb
from tfds_synth_pedes.ingest import DatasetError
from tfds_synth_pedes.synth_pedes import make_config


def _ids(builder, split: str) -> list[int]:
    source = builder.as_data_source(split=split)
    return [int(source[i]["id"]) for i in range(len(source))]


def _manual(root: Path, ids_per_part: int) -> Path:
    """A released-format SYNTH-PEDES folder with 3 * ids_per_part identities, 2 images each."""
    return write_dataset(root, "synth_pedes", make_entries("synth_pedes", ids_per_split=ids_per_part))


def _config(data_dir: Path, cfg: str = "full"):
    """The paper's pre-training config (synth_pedes/full), pointed at data_dir, tiny sizes."""
    c = pretrain.get_config()
    c.data.config, c.data.data_dir, c.data.max_length = cfg, str(data_dir), 16
    c.model.image.input_size = (64, 32)
    return c


def test_full_config_names_and_defaults():
    assert (make_config("full").num_val_ids, make_config("full").num_test_ids) == (0, 0)
    assert (make_config("procedural").num_val_ids, make_config("procedural").num_test_ids) == (200, 200)
    assert make_config("full").name == "full" and str(make_config("full").version) == "1.1.0"
    asked = make_config("full", num_val_ids=10, num_test_ids=5)
    assert asked.name == "full_v10_t5"
    back = make_config("full_v10_t5")  # the printed name works as a config
    assert (back.name, back.num_val_ids, back.num_test_ids) == ("full_v10_t5", 10, 5)
    assert make_config("procedural_n16_k2", num_val_ids=3).name == "procedural_n16_k2_v3"
    with pytest.raises(DatasetError, match="contradict"):
        make_config("full_v10", num_val_ids=3)
    with pytest.raises(DatasetError, match="not 'full_x3'"):
        make_config("full_x3")
    with pytest.raises(DatasetError, match="procedural only"):
        make_config("full_n40")


def test_full_build_without_params_puts_every_identity_in_train(tmp_path, capsys):
    root = _manual(tmp_path / "m", ids_per_part=1)  # 3 identities
    assert tb.main(["synth_pedes", "--config", "full", "--data_dir", str(tmp_path / "d"),
                    "--manual_dir", str(root)]) == 0
    assert "train on it" not in capsys.readouterr().out
    builder = tb.get_builder("synth_pedes", "full", tmp_path / "d")
    assert list(builder.info.splits) == ["train"]
    assert sorted(_ids(builder, "train")) == [1, 1, 2, 2, 3, 3]


def test_full_build_with_params_holds_out_disjoint_identities(tmp_path, capsys):
    root = _manual(tmp_path / "m", ids_per_part=3)  # 9 identities
    assert tb.main(["synth_pedes", "--config", "full", "--data_dir", str(tmp_path / "d"), "--manual_dir",
                    str(root), "--param", "num_val_ids=2", "--param", "num_test_ids=3"]) == 0
    assert "--config.data.config=full_v2_t3" in capsys.readouterr().out
    builder = tb.get_builder("synth_pedes", "full_v2_t3", tmp_path / "d")
    ids = {s: set(_ids(builder, s)) for s in ("train", "val", "test")}
    assert (len(ids["val"]), len(ids["test"]), len(ids["train"])) == (2, 3, 4)
    assert not (ids["val"] & ids["test"]) and not (ids["train"] & (ids["val"] | ids["test"]))
    assert ids["train"] | ids["val"] | ids["test"] == set(range(1, 10))
    with pytest.raises(DatasetError, match="too few"):
        tb.build("synth_pedes", "full", tmp_path / "d2", manual_dir=root, num_val_ids=5, num_test_ids=4)


def test_eval_plan_uses_the_training_sets_own_val_split(tmp_path):
    tb.build("synth_pedes", "full", tmp_path / "d", manual_dir=_manual(tmp_path / "m", 2), num_val_ids=1,
             num_test_ids=1)
    config = _config(tmp_path / "d", "full_v1_t1")
    plan = sources.eval_plan(config)
    assert (plan.own, plan.val, plan.test, plan.periodic, plan.message) == (True, "val", "test", "val", "")
    assert plan.name == "synth_pedes/full_v1_t1" and plan.key("val") == "val"
    split = sources.open_eval(config, load_tokenizer(max_length=16), plan.val, plan.data)
    assert len(set(split["image_ids"].tolist())) == 1 and split["images"].shape[1:] == (64, 32, 3)


def test_eval_plan_falls_back_to_a_built_cuhk_pedes(tmp_path):
    data = tmp_path / "d"
    tb.build("synth_pedes", "full", data, manual_dir=_manual(tmp_path / "m", 1))
    tb.build("cuhk_pedes", None, data, manual_dir=write_dataset(tmp_path / "cuhk", "cuhk_pedes"))
    config = _config(data)
    plan = sources.eval_plan(config)
    assert (plan.own, plan.name, plan.val, plan.test) == (False, "cuhk_pedes/default", "val", "test")
    assert "every identity trains" in plan.message and "zero-shot on cuhk_pedes" in plan.message
    assert plan.key("test") == "cuhk_pedes/test"
    split = sources.open_eval(config, load_tokenizer(max_length=16), plan.test, plan.data)
    assert sorted(set(split["image_ids"].tolist())) == [5, 6]  # the fixture's CUHK test identities
    assert split["input_ids"].shape[1] == 16


def test_eval_plan_test_only_fallback_and_nothing_to_evaluate(tmp_path):
    data = tmp_path / "d"
    tb.build("synth_pedes", "full", data, manual_dir=_manual(tmp_path / "m", 1))
    plan = sources.eval_plan(_config(data))
    assert plan.data is None and plan.periodic is None and plan.test is None and plan.name is None
    assert plan.message.startswith("no evaluation: synth_pedes/full has no 'val' / 'test' split")
    assert "cuhk_pedes" in plan.message and "--param num_val_ids=N" in plan.message
    with pytest.raises(DatasetError, match=r"synth_pedes/full has no split 'test' \(it has \['train'\]\)"):
        sources.open_source(_config(data).data, "test")  # e.g. plip_jax.trainers.evaluate on it: one line
    # ICFG-PEDES has no val split: periodic evaluation runs on its test split.
    tb.build("icfg_pedes", None, data, manual_dir=write_dataset(tmp_path / "icfg", "icfg_pedes"))
    plan = sources.eval_plan(_config(data))
    assert (plan.name, plan.val, plan.test, plan.periodic) == ("icfg_pedes/default", None, "test", "test")


def test_eval_plan_of_synthetic_data_is_unchanged():
    c = _config(Path("/nonexistent"))
    c.data.name = "synthetic"
    plan = sources.eval_plan(c)
    assert (plan.own, plan.val, plan.test, plan.message) == (True, "val", "test", "")
