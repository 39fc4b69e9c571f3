"""Probe for the :mini recipe: train only the image encoder (IVLC/CMPM) against a frozen MiniLM and
print val R@1 of held-out identities as it goes. Cheap (~0.5 s/step on 2 cores), so loss forms,
temperatures and batch sizes can be compared at equal CPU time before a full :mini run.

  DATA=/tmp/pd MODE=raw SCALE=20 NL=6 B=32 STEPS=300 EV=100 python bench/mini_probe.py

MODE: official (raw-norm CMPM logits) | raw (cosine x SCALE) | center (cosine of text minus the val
caption mean: a probe of centring only, it peeks at val statistics) | proj (learned text projection).
NL: MiniLM layers kept; B: batch; LR: AdamW lr; W: ResNet width. Used for the numbers in README.
"""
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plip_jax.config_parts import config_module

pretrain = config_module(Path(__file__).resolve().parents[1] / "configs" / "pretrain.py")
from plip_jax.convert import text_weights
from plip_jax.data import sources as data_setup
from plip_jax.data import transforms
from plip_jax.data.tokenizer import load_tokenizer
from plip_jax.losses.cmpm import cmpm_loss
from plip_jax.models import text_tower
from plip_jax.models.bert import Bert, masked_mean
from plip_jax.models.resnet import ModifiedResNet

MODE = os.environ.get("MODE", "official"); SCALE = float(os.environ.get("SCALE", 20)); STEPS = int(os.environ.get("STEPS", 200))
LR = float(os.environ.get("LR", 2e-3)); NL = int(os.environ.get("NL", 3)); W = int(os.environ.get("W", 16))
c = pretrain.get_config("mini"); c.data.data_dir = os.environ.get("DATA", "/tmp/pd"); c.data.batch_size = int(os.environ.get("B", 64))
tok = load_tokenizer()
cfg, folder = text_tower.resolve("minilm", num_layers=NL)
tparams, _ = text_weights.load_params(folder, NL)
bert = Bert(cfg)
temb = jax.jit(lambda i, a: masked_mean(bert.apply({"params": tparams}, i, a, deterministic=True)[0], a))
val = data_setup.open_eval(c, tok, "val")
T_val = np.concatenate([np.asarray(temb(val["input_ids"][s:s+256], val["attention_mask"][s:s+256])) for s in range(0, len(val["caption_ids"]), 256)])
mu = T_val.mean(0)  # centering vector (from val captions: a probe only)
net = ModifiedResNet(layers=(1,1,1,1), width=W, heads=4, output_dim=384, input_size=(64,32), pool="max")
var = net.init(jax.random.key(0), jnp.zeros((2,64,32,3)), train=False)
params, bs = var["params"], var["batch_stats"]
proj = {"w": jnp.eye(384), "b": jnp.zeros(384)}
tx = optax.adamw(LR, weight_decay=1e-4); allp = {"img": params, "proj": proj}; opt = tx.init(allp)
def loss_fn(p, bs, img, t, ids):
    x = transforms.normalize(img)
    (v, _), mut = net.apply({"params": p["img"], "batch_stats": bs}, x, train=True, mutable=["batch_stats"])
    if MODE == "center": t = t - mu
    if MODE == "proj": t = t @ p["proj"]["w"] + p["proj"]["b"]
    if MODE == "official":
        l = cmpm_loss(v, t, ids)
    else:
        l = cmpm_loss(v, t, ids, cosine_logits=True, cosine_scale=SCALE)
    return l, mut["batch_stats"]
@jax.jit
def step(p, bs, opt, img, t, ids):
    (l, bs), g = jax.value_and_grad(loss_fn, has_aux=True)(p, bs, img, t, ids)
    u, opt = tx.update(g, opt, p); return optax.apply_updates(p, u), bs, opt, l
ienc = jax.jit(lambda p, bs, x: net.apply({"params": p, "batch_stats": bs}, transforms.normalize(x), train=False)[0])
def evaluate(p, bs):
    V = np.concatenate([np.asarray(ienc(p["img"], bs, val["images"][s:s+256])) for s in range(0, len(val["images"]), 256)])
    T = T_val
    if MODE == "center": T = T - mu
    if MODE == "proj": T = T @ np.asarray(p["proj"]["w"]) + np.asarray(p["proj"]["b"])
    V = V / np.linalg.norm(V, axis=1, keepdims=True); T = T / np.linalg.norm(T, axis=1, keepdims=True)
    top = (T @ V.T).argmax(1)
    return (val["image_ids"][top] == val["caption_ids"]).mean()
ts = data_setup.open_train(c, tok); it = iter(ts._make_iter())
t0 = time.time()
for k in range(1, STEPS + 1):
    b = next(it)
    t = temb(b["input_ids"], b["attention_mask"])
    allp, bs, opt, l = step(allp, bs, opt, b["image"], t, b["id"])
    if k % int(os.environ.get("EV", 50)) == 0:
        print(k, "loss %.3f" % float(l), "val R1 %.3f" % evaluate(allp, bs), "%.0fs" % (time.time() - t0), flush=True)
