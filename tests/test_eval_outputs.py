"""What evaluation writes and prints: both AP conventions (mAP = IRRA, mAP_official = PLIP's
trapezoid) in every metrics dict, eval.json and printed table, and no config switch between them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from plip_jax.evals.retrieval import retrieval_metrics
from plip_jax.evals.tasks import text_reid_eval


class _FixedEmbedder:
    """Stands in for evals.embed.Embedder: returns given embeddings, so no model is compiled."""

    def __init__(self, img: np.ndarray, txt: np.ndarray):
        self.img, self.txt = img, txt

    def images(self, variables, images):
        return self.img

    def texts(self, variables, input_ids, attention_mask):
        return self.txt


def _split_and_embeddings(seed: int = 0):
    rng = np.random.default_rng(seed)
    img, txt = rng.normal(size=(12, 6)), rng.normal(size=(20, 6))
    image_ids, caption_ids = np.arange(12) % 4, np.arange(20) % 4
    split = {"images": np.zeros((12, 2, 2, 3), np.uint8), "image_ids": image_ids,
             "input_ids": np.zeros((20, 4), np.int32), "attention_mask": np.ones((20, 4), np.int32),
             "caption_ids": caption_ids}
    return split, img, txt


def test_text_reid_eval_returns_both_maps_from_one_ranking():
    split, img, txt = _split_and_embeddings()
    m = text_reid_eval(_FixedEmbedder(img, txt), {}, split)
    ref = retrieval_metrics(txt, img, split["caption_ids"], split["image_ids"])
    assert m["mAP"] == pytest.approx(ref["mAP"]) and m["mAP_official"] == pytest.approx(ref["mAP_official"])
    assert m["mAP"] != pytest.approx(m["mAP_official"])
    json.dumps(m)  # plain floats/ints: goes into eval.json as is


def test_pretraining_table_prints_both_map_columns(capsys):
    from plip_jax.core.metrics import print_table

    split, img, txt = _split_and_embeddings()
    m = retrieval_metrics(txt, img, split["caption_ids"], split["image_ids"])
    text = print_table("Zero-shot", {"val": m, "test": m})
    assert capsys.readouterr().out.strip() == text.strip()
    header, val = text.splitlines()[1:3]
    assert header.split() == ["split", "R1", "R5", "R10", "mAP", "mAP_official", "mINP"]
    values = [float(v) for v in val.split()[1:]]
    assert values == pytest.approx([m[k] for k in ("R1", "R5", "R10", "mAP", "mAP_official", "mINP")], abs=0.01)
    assert len(header) == len(val)  # columns line up


def test_finetune_table_and_eval_json_carry_both(tmp_path, capsys):
    from plip_jax.trainers.finetune import common

    split, img, txt = _split_and_embeddings(1)
    m = retrieval_metrics(txt, img, split["caption_ids"], split["image_ids"])
    cols = ["R1", "R5", "R10", "mAP", "mAP_official", "mINP"]
    common.write_eval(tmp_path, {"finetuned": m, **{k: m[k] for k in cols}}, "T", {"fine-tuned": m}, cols)
    header, row = capsys.readouterr().out.splitlines()[1:3]
    assert header.split() == cols and len(header) == len(row)
    assert float(row.split()[-2]) == pytest.approx(m["mAP_official"], abs=0.01)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["mAP_official"] == pytest.approx(m["mAP_official"]) and saved["mAP"] == pytest.approx(m["mAP"])


def test_a_config_that_still_sets_ap_fails_clearly(tmp_path):
    from tiny import config_file
    eval_text_reid = config_file("eval_text_reid")
    finetune_text_reid = config_file("finetune_text_reid")
    from plip_jax.core.errors import ConfigError
    from plip_jax.trainers import evaluate, finetune

    c = eval_text_reid.get_config()
    assert "ap" not in c
    with c.unlocked():
        c.checkpoint = str(tmp_path)
        c.ap = "trapezoid"
    with pytest.raises(ConfigError, match="config.ap was removed.*mAP_official"):
        evaluate.run(c, tmp_path / "out")
    f = finetune_text_reid.get_config("mini")
    assert "ap" not in f
    with f.unlocked():
        f.ap = "irra"
    with pytest.raises(ConfigError, match="config.ap was removed.*mAP_official"):
        finetune.validate(f)
