"""Diagnostic: does the TIC gray pass spoil the image encoder's BatchNorm running statistics?

Loads a :mini workdir (default runs/mini), evaluates val R@1 as saved, then re-estimates the
BatchNorm running statistics from colour training images only (60 forward batches in train mode,
weights unchanged) and evaluates again.   python bench/mini_bn_check.py [WORKDIR] [DATA_DIR]
"""
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plip_jax.config_parts import config_module

pretrain = config_module(Path(__file__).resolve().parents[1] / "configs" / "pretrain.py")
from plip_jax.core import checkpoint
from plip_jax.data import sources as data_setup
from plip_jax.data import transforms
from plip_jax.data.tokenizer import load_tokenizer
from plip_jax.evals.embed import Embedder
from plip_jax.evals.tasks import text_reid_eval
from plip_jax.models import text_tower
from plip_jax.models.plip import PLIP, build_model

c = pretrain.get_config("mini"); c.data.data_dir = sys.argv[2] if len(sys.argv) > 2 else "/tmp/pd"
tok = load_tokenizer()
variables, _ = checkpoint.restore_for_inference(sys.argv[1] if len(sys.argv) > 1 else "runs/mini")
text_cfg, _ = text_tower.from_config(c.model)
model = build_model(c.model, text_cfg)
val = data_setup.open_eval(c, tok, "val")
emb = Embedder.for_plip(model, 128)
print("as saved:", round(text_reid_eval(emb, variables, val)["R1"], 2), flush=True)
@jax.jit
def upd(v, img):
    _, mut = model.apply(v, transforms.normalize(img), train=True, method=PLIP.encode_image, mutable=["batch_stats"])
    return {**v, "batch_stats": mut["batch_stats"]}
ts = data_setup.open_train(c, tok); it = iter(ts._make_iter())
v = dict(variables)
for k in range(60):
    v = upd(v, next(it)["image"])
print("colour-only BN stats:", round(text_reid_eval(emb, jax.device_get(v), val)["R1"], 2), flush=True)
