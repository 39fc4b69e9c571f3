"""Tiny PLIP configs for tests: the real code paths at toy sizes (seconds on 2 CPU cores)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import ml_collections

from plip_jax.config_parts import config_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_file(name: str):
    """configs/<name>.py as a module (config files are loaded by path, not imported as a package)."""
    return config_module(CONFIGS / f"{name}.py")


pretrain = config_file("pretrain")

TINY_BERT = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128)


def tiny_bert_dir() -> str:
    """A HF BERT folder (config.json + model.safetensors + vocab.txt) of a 2-layer 32-wide BERT with
    seeded random weights: the tiny runs' 'pretrained' text tower, so their frozen layers are legal
    and the weight-loading path runs. Written once per machine, atomically (parallel processes)."""
    folder = Path(tempfile.gettempdir()) / "plip_jax_tests" / "tiny-bert-2x32x2-v1"
    if (folder / "model.safetensors").is_file():
        return str(folder)
    import jax
    import jax.numpy as jnp

    from plip_jax.convert.torch_io import save_hf_bert
    from plip_jax.models.bert import Bert, BertConfig

    cfg = BertConfig(**TINY_BERT)
    ids = jnp.zeros((1, 4), jnp.int32)
    params = jax.device_get(jax.jit(Bert(cfg).init)(jax.random.key(0), ids, jnp.ones_like(ids))["params"])
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
    save_hf_bert(tmp, params, cfg)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process won the race: its folder is identical
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def tiny_config(data: str = "synthetic", steps: int = 4, batch: int = 16) -> ml_collections.ConfigDict:
    """configs/pretrain.py:mini shrunk: ResNet (1,1,1,1) width 8 at 64x32, a 2-layer 32-wide BERT
    loaded from `tiny_bert_dir()`."""
    c = pretrain.get_config("mini")
    c.model.image = dict(layers=(1, 1, 1, 1), width=8, heads=2, output_dim=32, input_size=(64, 32))
    c.model.text = dict(init=tiny_bert_dir(), frozen_layers=1, mask_padding=True, dropout=0.0)
    c.model.tic.fpn_dim = 8
    c.model.iap = dict(fusion="add", num_layers=1, heads=2, mlp_dim=64)
    c.optim.frozen = (r"^text/embeddings/.*", r"^text/encoder/layer/0/.*")
    if data == "procedural":
        c.data.name, c.data.config = "synth_pedes", "procedural"
        c.data.procedural = dict(num_identities=40, images_per_identity=2, num_val_ids=6, num_test_ids=6,
                                 image_height=64, image_width=32)
    else:
        c.data.name = data
    c.data.batch_size = batch
    c.data.max_length = 16
    c.data.max_masked = 4
    c.data.images_per_caption = 2  # keeps the loop/sharding/resume tests on the K-images path, cheaply
    c.train.steps = steps
    c.train.log_every = 1
    c.train.eval_every = 0
    c.train.ckpt_every = 2
    c.train.eval_batch_size = 16
    c.train.async_checkpoints = False
    return c
