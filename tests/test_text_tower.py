"""The text tower is pretrained unless a random one is asked for by name: HF cache lookup, one-line
errors before anything is built, the four ways HF BERT checkpoints are written (safetensors / bin,
LayerNorm weight/bias / gamma/beta, with / without `bert.`) loading to the torch model's outputs."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import ROOT, subprocess_env
from test_bert import hf, randomize_biases_and_norms, torch_forward  # noqa: F401 (hf: fixture)
from tiny import tiny_bert_dir

from plip_jax.convert import text_weights
from plip_jax.models import text_tower
from plip_jax.models.bert import Bert

FLAG = "--config.model.text.init=/path/to/bert-base-uncased"


@pytest.fixture
def empty_hf(tmp_path, monkeypatch) -> Path:
    """HF_HOME at an empty folder (and no HF_HUB_CACHE): no BERT weights anywhere."""
    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return home


def _snapshot(cache: Path, repo: str, rev: str, weights: bool = True) -> Path:
    snap = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / rev
    snap.mkdir(parents=True)
    shutil.copy(Path(tiny_bert_dir()) / "config.json", snap / "config.json")
    if weights:
        (snap / "model.safetensors").symlink_to(Path(tiny_bert_dir()) / "model.safetensors")
    else:  # an interrupted download: the blob the symlink points to is missing
        (snap / "model.safetensors").symlink_to(cache / "blobs" / "missing")
    return snap


# Where the weights come from --------------------------------------------------------------------
def test_default_is_found_in_the_hf_cache_only(empty_hf, tmp_path, monkeypatch):
    from plip_jax import config_parts

    assert config_parts.model_config().text.init == text_tower.DEFAULT_INIT == "bert-base-uncased"
    with pytest.raises(text_tower.TextTowerError) as e:
        text_tower.resolve("bert-base-uncased")
    msg = str(e.value)
    assert "\n" not in msg and FLAG in msg
    assert str(empty_hf / "hub" / "models--bert-base-uncased" / "snapshots" / "*") in msg
    assert str(empty_hf / "hub" / "models--google-bert--bert-base-uncased" / "snapshots" / "*") in msg
    # The shape is known without the weights (stored runs carry theirs in the checkpoint).
    assert text_tower.architecture("bert-base-uncased").num_hidden_layers == 12

    hub = empty_hf / "hub"
    _snapshot(hub, "bert-base-uncased", "aaa", weights=False)     # incomplete: skipped
    with pytest.raises(text_tower.TextTowerError, match="no pretrained weights"):
        text_tower.resolve("bert-base-uncased")
    good = _snapshot(hub, "google-bert/bert-base-uncased", "bbb")   # the repo's newer id
    cfg, folder = text_tower.resolve("bert-base-uncased")
    assert folder == good and cfg.hidden_size == 32
    newer = _snapshot(hub, "google-bert/bert-base-uncased", "ccc")
    assert text_tower.resolve("bert-base-uncased")[1] == newer     # newest without refs/main
    (hub / "models--google-bert--bert-base-uncased" / "refs").mkdir()
    (hub / "models--google-bert--bert-base-uncased" / "refs" / "main").write_text("bbb")
    assert text_tower.resolve("bert-base-uncased")[1] == good      # refs/main wins

    # HF_HUB_CACHE is looked in first; with neither variable, ~/.cache/huggingface/hub.
    other = tmp_path / "hub_cache"
    first = _snapshot(other, "bert-base-uncased", "ddd")
    monkeypatch.setenv("HF_HUB_CACHE", str(other))
    assert text_tower.resolve("bert-base-uncased")[1] == first
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert text_tower.hub_cache_dirs() == [tmp_path / "home" / ".cache" / "huggingface" / "hub"]


def test_folders_and_names(empty_hf, tmp_path):
    cfg, folder = text_tower.resolve(tiny_bert_dir())
    assert folder == Path(tiny_bert_dir()) and cfg.num_hidden_layers == 2
    assert text_tower.resolve("minilm")[1] is not None
    bare = tmp_path / "bert"
    bare.mkdir()
    (bare / "config.json").write_text((Path(tiny_bert_dir()) / "config.json").read_text())
    with pytest.raises(text_tower.TextTowerError, match="model.safetensors or pytorch_model.bin"):
        text_tower.resolve(str(bare))
    assert text_tower.architecture(str(bare)).hidden_size == 32   # the shape needs config.json only
    with pytest.raises(text_tower.TextTowerError, match="no such folder"):
        text_tower.resolve(str(tmp_path / "nope"))
    # The old name of a random BERT-base is refused, naming both new names.
    with pytest.raises(text_tower.TextTowerError, match="'bert-base-uncased'.*'random:bert-base'"):
        text_tower.resolve("bert-base")
    cfg, folder = text_tower.resolve("random:bert-base")
    assert folder is None and (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
                               cfg.vocab_size) == (12, 768, 12, 30522)
    cfg, folder = text_tower.resolve("random:2x32x2")
    assert folder is None and (cfg.num_hidden_layers, cfg.hidden_size) == (2, 32)
    with pytest.raises(text_tower.TextTowerError, match="random:LAYERSxHIDDENxHEADS"):
        text_tower.resolve("random:big")


# Random towers: only by name, never frozen ----------------------------------------------------
def test_random_tower_with_frozen_layers_is_refused(empty_hf, tmp_path):
    from tiny import config_file
    pretrain = config_file("pretrain")
    from tiny import tiny_config

    from plip_jax.core.errors import ConfigError
    from plip_jax.trainers.pretrain import validate_config

    c = pretrain.get_config()                      # the paper setting: frozen embeddings + layers 0-7
    c.data.data_dir = str(tmp_path)                # a data folder that exists wherever the test runs
    with pytest.raises(ConfigError, match=re.escape(FLAG)):
        validate_config(c)
    c.model.text.init = "random:bert-base"
    with pytest.raises(ConfigError, match="random tower but config.model.text.frozen_layers=8"):
        validate_config(c)
    c = tiny_config()
    validate_config(c)                             # the tiny 'pretrained' folder, frozen: fine
    c.model.text.init = "random:2x32x2"
    c.model.text.frozen_layers = 0
    with pytest.raises(ConfigError, match=r"config.optim.frozen freezes \d+ of its parameters "
                                          r"\(e.g. text/embeddings/"):
        validate_config(c)
    c.optim.frozen = (r"^image/.*",)
    validate_config(c)                             # random, asked for by name, nothing frozen


def test_finetune_scratch_baseline_follows_the_same_rule(empty_hf, tmp_path):
    from tiny import config_file
    finetune_image_reid = config_file("finetune_image_reid")
    finetune_text_reid = config_file("finetune_text_reid")
    from plip_jax.core.errors import ConfigError
    from plip_jax.trainers import finetune

    for mod in (finetune_text_reid, finetune_image_reid):
        c = mod.get_config()
        assert c.model.text.init == "bert-base-uncased" and not c.init_checkpoint
        t0 = time.time()
        with pytest.raises(ConfigError, match=re.escape(FLAG)):
            finetune.run(c, tmp_path / "w")
        assert time.time() - t0 < 5 and not (tmp_path / "w").exists()
    c = finetune_text_reid.get_config()
    c.model.text.init = "random:bert-base"        # named and trainable: the from-scratch baseline
    finetune.validate(c)
    c.model.text.frozen_layers = 2
    with pytest.raises(ConfigError, match="random tower"):
        finetune.validate(c)
    c = finetune_image_reid.get_config()          # image-only: the text tower is never trained
    c.model.text.init = "random:bert-base"
    assert c.optim.frozen == (r"^text/.*",)
    finetune.validate(c)


def test_paper_config_without_weights_fails_in_one_line_before_building(tmp_path):
    home, work, data = tmp_path / "hf_home", tmp_path / "w", tmp_path / "data"
    home.mkdir()
    env = subprocess_env(HF_HOME=str(home))
    env.pop("HF_HUB_CACHE", None)
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "plip_jax.main", "--config", "configs/pretrain.py",
                        "--workdir", str(work), "--config.data.config=procedural",
                        f"--config.data.data_dir={data}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    took = time.time() - t0
    assert p.returncode == 2, p.stderr[-3000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, p.stderr[-3000:]
    assert FLAG in errors[0] and str(home / "hub" / "models--bert-base-uncased" / "snapshots") in errors[0]
    assert "Traceback" not in p.stderr
    assert not data.exists() and not (work / "config.json").exists(), "failed after the data / workdir setup"
    assert took < 60, f"took {took:.1f} s"


# HF checkpoint files: 2 formats x 2 LayerNorm namings x with / without 'bert.' ----------------
@pytest.fixture(scope="module")
def pretraining_model(hf):
    """A tiny BertForPreTraining with random weights (biases and LayerNorms too) and its config."""
    torch, transformers = hf
    torch.manual_seed(0)
    hf_cfg = transformers.BertConfig(
        vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=20, layer_norm_eps=1e-12, hidden_act="gelu", attn_implementation="eager")
    model = transformers.BertForPreTraining(hf_cfg).eval()
    randomize_biases_and_norms(model)
    return model, hf_cfg


def _write_variant(folder: Path, model, hf_cfg, fmt: str, names: str, prefixed: bool) -> None:
    import torch

    sd = model.state_dict() if prefixed else model.bert.state_dict()
    assert any(k.startswith("cls.") for k in sd) == prefixed
    if names == "gamma_beta":
        sd = {k[: -len("weight")] + "gamma" if "LayerNorm" in k and k.endswith("weight") else
              k[: -len("bias")] + "beta" if "LayerNorm" in k and k.endswith("bias") else k: v
              for k, v in sd.items()}
    sd = {k: v.detach().clone().contiguous() for k, v in sd.items()}  # untie the MLM decoder
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf_cfg.to_dict()))
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(folder / "model.safetensors"))
    else:
        torch.save(sd, folder / "pytorch_model.bin")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("names", ["weight_bias", "gamma_beta"])
@pytest.mark.parametrize("prefixed", [False, True], ids=["BertModel", "BertForPreTraining"])
def test_hf_checkpoint_variants_give_the_torch_outputs(tmp_path, pretraining_model, fmt, names, prefixed):
    model, hf_cfg = pretraining_model
    folder = tmp_path / "bert"
    _write_variant(folder, model, hf_cfg, fmt, names, prefixed)
    cfg, found = text_tower.resolve(str(folder))
    assert found == folder
    params, report = text_weights.load_params(found)
    assert report["source"].endswith("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")
    assert report["initialized"] == []
    assert (report["renamed_gamma_beta"] > 0) == (names == "gamma_beta")
    assert any(k.startswith("cls.") for k in report["ignored"]) == prefixed
    assert ("ignored" in text_weights.describe_load(report)) == prefixed
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 101, (3, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, 7:] = 0
    mask[2, 3:] = 0
    hidden, pooled = jax.jit(Bert(cfg).apply)({"params": params}, ids, mask)
    ref_hidden, ref_pooled = torch_forward(model.bert, ids, mask)
    assert np.abs(np.asarray(hidden) - ref_hidden).max() < 1e-5
    assert np.abs(np.asarray(pooled) - ref_pooled).max() < 1e-5
