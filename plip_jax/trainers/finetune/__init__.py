"""Downstream fine-tuning of the PLIP encoders (issue 6), one entry point for three tasks:

- ``finetune_text_reid``: CMPM + CMPC (learnable class matrix over training ids), PLIP_SPEC 3.3;
  few-shot (fraction of training ids) and cross-domain evaluation (another builder).
- ``finetune_image_reid``: BoT strong baseline on the image encoder: BNNeck, label-smoothed
  identity CE + batch-hard triplet, P x K batches; Market-1501 query/gallery protocol.
- ``finetune_attributes``: attribute classifier (Linear + BN) with weighted BCE; mA/Acc/F1.

Each run starts from ``config.init_checkpoint`` (a workdir, an Orbax step dir or an official
.pth.tar) or from scratch (None: random image encoder, text tower from ``config.model.text.init``),
evaluates before training (zero-shot column) and after, saves the final weights to
WORKDIR/checkpoints (loadable with ``plip_jax.from_pretrained(WORKDIR)``) and writes
WORKDIR/eval.json.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from plip_jax.convert import text_weights
from plip_jax.core import optim
from plip_jax.core import sharding as shd
from plip_jax.core.errors import ConfigError
from plip_jax.core.metrics import MetricWriter
from plip_jax.data import downstream as fd
from plip_jax.data import sources as data_setup
from plip_jax.data import transforms
from plip_jax.losses.cmpm import cmpc_loss, cmpm_loss
from plip_jax.losses.reid import attribute_pos_weights, label_smoothing_ce, triplet_loss, weighted_bce
from plip_jax.models import text_tower
from plip_jax.models.bert import Bert, BertConfig
from plip_jax.models.plip import image_pool, text_global
from plip_jax.models.reid_heads import AttributeClassifier, BNNeck, CMPCClassifier
from plip_jax.models.resnet import ModifiedResNet

log = logging.getLogger("plip_jax")
MODES = ("finetune_text_reid", "finetune_image_reid", "finetune_attributes")


# ---------------------------------------------------------------------------------------------
# Backbone: the PLIP encoders from a checkpoint or from scratch
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Backbone:
    """The two encoder modules, their host variables and where they came from."""
    image: ModifiedResNet
    text: Bert | None
    recipe: str
    arch: dict                      # image / text (BertConfig dict) / recipe / max_length
    variables: dict                 # {'params': {'image', 'text'?}, 'batch_stats': {'image'}}
    tokenizer: Any
    origin: str


def _image_module(img: dict) -> ModifiedResNet:
    return ModifiedResNet(layers=tuple(img["layers"]), width=int(img["width"]), heads=int(img["heads"]),
                          output_dim=int(img["output_dim"]), input_size=tuple(img["input_size"]),
                          pool=img["pool"])


def load_backbone(config: ml_collections.ConfigDict, with_text: bool) -> Backbone:
    """Encoders from `config.init_checkpoint`, else randomly initialised (scratch baseline)."""
    from plip_jax.data.tokenizer import load_tokenizer

    frozen = int(config.model.text.get("frozen_layers", 0))
    dropout = config.model.text.get("dropout", None)
    if config.init_checkpoint:
        from plip_jax.api import from_pretrained

        m = from_pretrained(config.init_checkpoint)
        arch = dict(m.config)
        variables = jax.device_get(m.variables)
        tokenizer, origin = m.tokenizer, f"checkpoint {config.init_checkpoint}"
        text_cfg = BertConfig.from_dict(dict(arch["text"]))
    else:
        img = dict(config.model.image)
        img["pool"] = image_pool(config.model.recipe, img.get("pool", None))
        text_cfg, folder = text_tower.from_config(config.model)
        arch = {"image": img, "text": text_cfg.to_dict(), "recipe": config.model.recipe,
                "max_length": int(config.data.max_length)}
        key = jax.random.key(int(config.seed), impl="rbg")
        h, w = img["input_size"]
        image_vars = jax.jit(_image_module(img).init)(key, jnp.zeros((1, h, w, 3), jnp.float32))
        variables = {"params": {"image": image_vars["params"]},
                     "batch_stats": {"image": image_vars.get("batch_stats", {})}}
        # The text tower is kept even for image-only tasks, so every fine-tuned workdir loads
        # with `from_pretrained` (it is not trained there).
        if folder is not None:
            variables["params"]["text"], _ = text_weights.load_params(folder, text_cfg.num_hidden_layers)
        else:
            ids = jnp.zeros((1, 4), jnp.int32)
            variables["params"]["text"] = jax.jit(Bert(text_cfg).init)(key, ids, jnp.ones_like(ids))["params"]
        variables = jax.device_get(variables)
        tokenizer = load_tokenizer(config.data.get("tokenizer_dir"), max_length=int(config.data.max_length))
        origin = "scratch (random image encoder" + (f", text {config.model.text.init})" if with_text else ")")
    if dropout is not None:
        text_cfg = dataclasses.replace(text_cfg, hidden_dropout_prob=float(dropout),
                                       attention_probs_dropout_prob=float(dropout))
    text = None
    if with_text:
        has_pooler = "pooler" in variables["params"]["text"]
        if arch["recipe"] == "release" and not has_pooler:
            raise ConfigError("recipe 'release' needs the BERT pooler, which the text weights lack")
        text = Bert(text_cfg, frozen_layers=frozen, add_pooler=has_pooler)
    arch["text"] = text_cfg.to_dict()
    arch["image"] = dict(arch["image"], pool=arch["image"].get("pool", "attn" if arch["recipe"] == "release" else "max"))
    return Backbone(_image_module(arch["image"]), text, arch["recipe"], arch, variables, tokenizer, origin)


# ---------------------------------------------------------------------------------------------
# A small generic trainer (state = params + batch_stats + opt_state, replicated; batch sharded)
# ---------------------------------------------------------------------------------------------
@flax.struct.dataclass
class FTState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def make_step(loss_fn: Callable, tx: optax.GradientTransformation, schedule: Callable) -> Callable:
    """jit((state, batch, rng) -> (state, metrics)); loss_fn(params, batch_stats, batch, rng) ->
    (loss, (metrics, new_batch_stats))."""

    def step(state: FTState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        (loss, (metrics, bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, batch, rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads), lr=schedule(state.step))
        return FTState(state.step + 1, params, bs, opt_state), metrics

    return jax.jit(step, donate_argnums=(0,))


def _global(batch: dict, sharding) -> dict:
    """This process's contiguous rows of a host batch as global arrays."""
    from plip_jax.data.pipeline import global_batch

    pi, pc = jax.process_index(), jax.process_count()
    local = {k: v[len(v) // pc * pi: len(v) // pc * (pi + 1)] for k, v in batch.items()}
    return global_batch(local, sharding)


def train_loop(config, workdir: Path, state: FTState, step_fn: Callable, batches, total_steps: int,
               prepare: Callable[[dict], dict], mesh) -> FTState:
    """Run `total_steps` steps with logging to metrics.jsonl; stops on a non-finite loss."""
    from tqdm import tqdm

    bsh = shd.batch_sharding(mesh)
    writer = MetricWriter(workdir, jax.process_index() == 0)
    rng = jax.random.key(int(config.seed) + 1)
    pbar = tqdm(total=total_steps, desc=config.mode, dynamic_ncols=True,
                disable=os.environ.get("PLIP_NO_PROGRESS") == "1" or jax.process_index() != 0)
    t0 = time.time()
    try:
        for step in range(1, total_steps + 1):
            state, metrics = step_fn(state, _global(prepare(next(batches)), bsh), rng)
            if step % int(config.train.log_every) == 0 or step == total_steps:
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if not math.isfinite(m["loss"]):
                    raise FloatingPointError(f"loss became {m['loss']} at step {step}; stopping")
                m["seconds"] = round(time.time() - t0, 1)
                writer.write(step, m)
                pbar.set_postfix({k: f"{v:.3g}" for k, v in m.items() if k.startswith("loss")})
            pbar.update(1)
    finally:
        pbar.close()
        writer.close()
    return state


def _build_state(params: dict, batch_stats: dict, config, steps_per_epoch: int, total_steps: int,
                 batch_size: int, mesh) -> tuple[FTState, optax.GradientTransformation, Callable]:
    tx, schedule = optim.make_optimizer(config.optim, params, steps_per_epoch, total_steps, batch_size)
    state = FTState(jnp.zeros((), jnp.int32), params, batch_stats, tx.init(params))
    state = jax.device_put(state, shd.replicated(mesh))
    return state, tx, schedule


def _total_steps(config, steps_per_epoch: int) -> int:
    return int(config.train.steps) or int(math.ceil(float(config.train.epochs) * steps_per_epoch))


def _save(workdir: Path, state: FTState, backbone: Backbone, config) -> None:
    """Final weights as an Orbax checkpoint whose config lets `from_pretrained(workdir)` load the
    fine-tuned encoders (heads are stored beside them)."""
    from plip_jax.core.checkpoint import Checkpointer

    arch = backbone.arch
    cfg = {"model": {"image": arch["image"], "text_config": arch["text"], "recipe": arch["recipe"]},
           "data": {"max_length": int(arch.get("max_length", config.data.max_length))},
           "finetune": json.loads(config.to_json())}
    ck = Checkpointer(workdir / "checkpoints", max_to_keep=1, async_save=False)
    if "text" not in state.params:  # image-only tasks: keep the text tower for a loadable model
        text = backbone.variables["params"].get("text")
        if text is not None:
            state = dataclasses.replace(state, params={**state.params, "text": text})
    ck.save(int(jax.device_get(state.step)), state, cfg, None)
    ck.close()
    if backbone.tokenizer is not None and jax.process_index() == 0:
        backbone.tokenizer.save(workdir / "tokenizer")


# ---------------------------------------------------------------------------------------------
# Data helpers
# ---------------------------------------------------------------------------------------------
def _data_cfg(d: ml_collections.ConfigDict, name: str | None = None) -> ml_collections.ConfigDict:
    out = ml_collections.ConfigDict(dict(
        name=name or d.name, config=d.config, data_dir=d.get("data_dir"), manual_dir=d.get("manual_dir"),
        procedural=d.procedural.to_dict() if hasattr(d.procedural, "to_dict") else dict(d.procedural)))
    return out


def _open(d, split: str):
    """A tfds source of any registered builder (procedural synth_pedes built on first use)."""
    import tensorflow_datasets as tfds

    from tfds_synth_pedes import build as tb

    if d.name == "synth_pedes":
        return data_setup.open_source(d, split, decode_images=False)
    if d.name not in tb.BUILDERS:
        raise ConfigError(f"dataset {d.name!r} is not a builder; choose one of {sorted(tb.BUILDERS)}")
    builder = (tb.build(d.name, d.config, data_setup.data_dir(d), manual_dir=d.manual_dir)
               if d.get("manual_dir") else tb.get_builder(d.name, d.config, data_setup.data_dir(d)))
    if not builder.is_prepared():
        raise ConfigError(f"{d.name} is not built in {data_setup.data_dir(d)}: run `python -m "
                          f"tfds_synth_pedes.build {d.name} --data_dir DIR --manual_dir M` first")
    if split not in builder.info.splits:
        raise ConfigError(f"{d.name} has no split {split!r}; it has {list(builder.info.splits)}")
    return builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})


def _eval_jit(backbone: Backbone, head_fn: Callable | None = None) -> Callable:
    """jit(variables, uint8 images) -> features (head_fn maps (variables, emb) -> features)."""
    def fn(variables, images):
        x = transforms.normalize(images)
        emb, _ = backbone.image.apply({"params": variables["params"]["image"],
                                       "batch_stats": variables["batch_stats"]["image"]}, x, train=False)
        return emb if head_fn is None else head_fn(variables, emb)
    return jax.jit(fn)


def _batched(fn: Callable, variables, arrays: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Run fn over fixed-size (padded) batches so one compile serves the whole split."""
    n = len(arrays[0])
    out = []
    for s in range(0, n, batch_size):
        chunk = [a[s:s + batch_size] for a in arrays]
        m = len(chunk[0])
        chunk = [np.concatenate([c, np.zeros((batch_size - m,) + c.shape[1:], c.dtype)]) if m < batch_size else c
                 for c in chunk]
        out.append(np.asarray(jax.device_get(fn(variables, *chunk)))[:m])
    return np.concatenate(out)


def _write_eval(workdir: Path, result: dict, title: str, rows: dict[str, dict], cols: list[str]) -> None:
    if jax.process_index() != 0:
        return
    (workdir / "eval.json").write_text(json.dumps(result, indent=2, default=float))
    widths = [max(9, len(c) + 1) for c in cols]
    lines = [title, f"{'':<12}" + "".join(f"{c:>{w}}" for c, w in zip(cols, widths))]
    for name, m in rows.items():
        lines.append(f"{name:<12}" + "".join(f"{m.get(c, float('nan')):>{w}.2f}" for c, w in zip(cols, widths)))
    print("\n".join(lines), flush=True)


def _scalars(m: dict) -> dict:
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in m.items()
            if not isinstance(v, np.ndarray)}


# ---------------------------------------------------------------------------------------------
# Task 1: text-based Re-ID, CMPM + CMPC
# ---------------------------------------------------------------------------------------------
def run_text_reid(config, workdir: Path) -> dict:
    """Fine-tune both encoders with CMPM + CMPC; evaluate text->image retrieval before and after."""
    from plip_jax.data.pipeline import CaptionIndex, DataConfig, load_eval_split, make_train_dataset
    from plip_jax.evals.retrieval import retrieval_metrics

    t_start = time.time()
    backbone = load_backbone(config, with_text=True)
    d = config.data
    size = tuple(backbone.arch["image"]["input_size"])
    source = _open(_data_cfg(d), d.train_split)
    index = CaptionIndex.build(source)
    keep_ids = fd.few_shot_ids(index.image_ids, float(config.few_shot), int(config.seed))
    pair_ids = index.image_ids[index.image]
    keep = np.isin(pair_ids, keep_ids)
    index = CaptionIndex(image=index.image[keep], slot=index.slot[keep], image_ids=index.image_ids)
    classes = np.unique(index.image_ids[index.image])
    pcfg = DataConfig(image_size=size, batch_size=int(d.batch_size), max_length=int(d.max_length),
                      max_masked=1, flip=bool(d.flip), sampler=str(d.sampler), k_images=int(d.k_images),
                      workers=int(d.workers))
    steps_per_epoch = max(1, len(index) // int(d.batch_size))
    total_steps = _total_steps(config, steps_per_epoch)
    td = make_train_dataset(source, backbone.tokenizer, pcfg, seed=int(config.seed),
                            total_epochs=max(1, math.ceil(total_steps / steps_per_epoch)), caption_index=index)
    batches = td.iterator()

    dim = int(backbone.arch["image"]["output_dim"])
    head = CMPCClassifier(num_classes=len(classes), dim=dim)
    params = dict(backbone.variables["params"])
    params["cmpc"] = jax.device_get(head.init(jax.random.key(int(config.seed) + 7, impl="rbg")))["params"]
    mesh = shd.make_mesh(-1, 1)
    state, tx, schedule = _build_state(params, backbone.variables["batch_stats"], config, steps_per_epoch,
                                       total_steps, int(d.batch_size), mesh)
    image_m, text_m, recipe = backbone.image, backbone.text, backbone.recipe
    w_cmpm, w_cmpc = float(config.losses.cmpm), float(config.losses.cmpc)

    def loss_fn(params, batch_stats, batch, rng):
        x = transforms.normalize(batch["image"])
        (v, _), mut = image_m.apply({"params": params["image"], "batch_stats": batch_stats["image"]}, x,
                                    train=True, mutable=["batch_stats"])
        last, pooled = text_m.apply({"params": params["text"]}, batch["input_ids"], batch["attention_mask"],
                                    deterministic=False, rngs={"dropout": rng})
        t = text_global(last, pooled, batch["attention_mask"], recipe)
        parts = {"loss_cmpm": cmpm_loss(v, t, batch["label"]),
                 "loss_cmpc": cmpc_loss(v, t, batch["label"], params["cmpc"]["W"])}
        loss = w_cmpm * parts["loss_cmpm"] + w_cmpc * parts["loss_cmpc"]
        return loss, (parts, {"image": mut["batch_stats"]})

    def prepare(b: dict) -> dict:
        return {"image": b["image"], "input_ids": b["input_ids"], "attention_mask": b["attention_mask"],
                "label": np.searchsorted(classes, b["id"]).astype(np.int32)}

    # Evaluation (zero-shot before training, fine-tuned after) on the eval dataset.
    ed = config.eval_data
    eval_name = ed.name or d.name
    edc = _data_cfg(d, eval_name) if not ed.name else ml_collections.ConfigDict(dict(
        name=ed.name, config=ed.config or ("procedural" if ed.name == "synth_pedes" else "default"),
        data_dir=ed.data_dir or d.get("data_dir"), manual_dir=ed.manual_dir,
        procedural=dict(d.procedural) if ed.name == d.name else {}))
    split = load_eval_split(_open(edc, ed.split), backbone.tokenizer, size,
                            max_items=int(config.train.eval_max_items) or None, max_length=int(d.max_length))
    bs = int(config.train.eval_batch_size)
    img_fn = _eval_jit(backbone)

    @jax.jit
    def txt_fn(variables, ids, mask):
        last, pooled = text_m.apply({"params": variables["params"]["text"]}, ids, mask, deterministic=True)
        return text_global(last, pooled, mask, recipe)

    def evaluate(variables) -> dict:
        g = _batched(img_fn, variables, [split["images"]], bs)
        q = _batched(txt_fn, variables, [split["input_ids"], split["attention_mask"]], bs)
        return _scalars(retrieval_metrics(q, g, split["caption_ids"], split["image_ids"]))

    variables0 = {"params": state.params, "batch_stats": state.batch_stats}
    zero = evaluate(variables0)
    print(f"zero-shot {eval_name}/{ed.split}: R1 {zero['R1']:.2f} mAP {zero['mAP']:.2f} "
          f"mAP_official {zero['mAP_official']:.2f}", flush=True)
    t_train = time.time()
    state = train_loop(config, workdir, state, make_step(loss_fn, tx, schedule), batches, total_steps, prepare, mesh)
    train_s = time.time() - t_train
    tuned = evaluate({"params": state.params, "batch_stats": state.batch_stats})
    _save(workdir, state, backbone, config)
    result = {"task": "text_reid", "init": backbone.origin, "train_dataset": f"{d.name}/{d.config}",
              "eval_dataset": f"{edc.name}/{edc.config}", "split": ed.split, "few_shot": float(config.few_shot),
              "num_train_ids": int(len(classes)), "steps": total_steps, "batch_size": int(d.batch_size),
              "train_seconds": round(train_s, 1), "seconds": round(time.time() - t_start, 1),
              "zero_shot": zero, "finetuned": tuned, **{k: tuned[k] for k in ("R1", "R5", "R10", "mAP", "mAP_official", "mINP")}}
    _write_eval(workdir, result, f"Text->image retrieval, {result['eval_dataset']} {ed.split} ({backbone.origin})",
                {"zero-shot": zero, "fine-tuned": tuned}, ["R1", "R5", "R10", "mAP", "mAP_official", "mINP"])
    return result


# ---------------------------------------------------------------------------------------------
# Task 2: image Re-ID, BoT strong baseline
# ---------------------------------------------------------------------------------------------
def _reid_eval_sets(config, size, tokenizer) -> tuple[dict, dict, str]:
    """(query, gallery, how): the official query/gallery splits, or the camera split of `test`."""
    from plip_jax.data.pipeline import load_eval_split

    d = config.data
    dc = _data_cfg(d)
    mx = int(config.train.eval_max_items) or None
    if d.query_split and d.gallery_split:
        q = load_eval_split(_open(dc, d.query_split), tokenizer, size, max_items=mx, max_length=8)
        g = load_eval_split(_open(dc, d.gallery_split), tokenizer, size, max_items=mx, max_length=8)
        return q, g, f"{d.query_split}/{d.gallery_split}"
    s = load_eval_split(_open(dc, d.test_split), tokenizer, size, max_items=mx, max_length=8)
    qm, gm = fd.split_query_gallery(s["image_ids"], s["camera_ids"])
    pick = lambda m: {k: s[k][m] for k in ("images", "image_ids", "camera_ids")}  # noqa: E731
    return pick(qm), pick(gm), f"{d.test_split} split by camera"


def run_image_reid(config, workdir: Path) -> dict:
    """BNNeck + label-smoothed CE + batch-hard triplet on the image encoder; Market-style eval."""
    from plip_jax.evals.reid import reid_metrics

    t_start = time.time()
    backbone = load_backbone(config, with_text=False)
    d = config.data
    size = tuple(backbone.arch["image"]["input_size"])
    source = _open(_data_cfg(d), d.train_split)
    scan = fd.scan_labels(source)
    rows = np.flatnonzero(np.isin(scan["ids"], fd.few_shot_ids(scan["ids"][scan["ids"] >= 0],
                                                                   float(config.few_shot), int(config.seed))))
    labels, _ = fd.contiguous_labels(scan["ids"][rows])
    num_classes = int(labels.max()) + 1
    aug = transforms.AugmentConfig(flip=bool(d.flip), pad_crop=bool(d.pad_crop), random_erasing=bool(d.random_erasing))
    batches = fd.ImageBatches(source, rows, labels, None, size, int(d.batch_size), "pk", int(d.k_images),
                              int(config.seed), aug, threads=int(d.threads))
    total_steps = _total_steps(config, batches.steps_per_epoch)

    neck = BNNeck(num_classes=num_classes)
    dim = int(backbone.arch["image"]["output_dim"])
    nv = jax.device_get(neck.init(jax.random.key(int(config.seed) + 7, impl="rbg"), jnp.zeros((2, dim)), train=False))
    params = {"image": backbone.variables["params"]["image"], "neck": nv["params"]}
    batch_stats = {"image": backbone.variables["batch_stats"]["image"], "neck": nv["batch_stats"]}
    mesh = shd.make_mesh(-1, 1)
    state, tx, schedule = _build_state(params, batch_stats, config, batches.steps_per_epoch, total_steps,
                                       int(d.batch_size), mesh)
    image_m, lc = backbone.image, config.losses
    margin = None if float(lc.triplet_margin) <= 0 else float(lc.triplet_margin)

    def loss_fn(params, batch_stats, batch, rng):
        x = transforms.normalize(batch["image"])
        (f, _), mi = image_m.apply({"params": params["image"], "batch_stats": batch_stats["image"]}, x,
                                   train=True, mutable=["batch_stats"])
        (_, logits), mn = neck.apply({"params": params["neck"], "batch_stats": batch_stats["neck"]}, f,
                                     train=True, mutable=["batch_stats"])
        parts = {"loss_id": label_smoothing_ce(logits, batch["label"], float(lc.label_smoothing)),
                 "loss_triplet": triplet_loss(f, batch["label"], margin)}
        loss = float(lc.id_weight) * parts["loss_id"] + float(lc.triplet_weight) * parts["loss_triplet"]
        parts["accuracy"] = jnp.mean(jnp.argmax(logits, 1) == batch["label"])
        return loss, (parts, {"image": mi["batch_stats"], "neck": mn["batch_stats"]})

    query, gallery, how = _reid_eval_sets(config, size, backbone.tokenizer)
    bs = int(config.train.eval_batch_size)
    raw_fn = _eval_jit(backbone)
    neck_fn = _eval_jit(backbone, lambda v, e: neck.apply(
        {"params": v["params"]["neck"], "batch_stats": v["batch_stats"]["neck"]}, e, train=False)[0])

    def evaluate(variables, fn) -> dict:
        qf = _batched(fn, variables, [query["images"]], bs)
        gf = _batched(fn, variables, [gallery["images"]], bs)
        return _scalars(reid_metrics(qf, gf, query["image_ids"], gallery["image_ids"], query["camera_ids"],
                                     gallery["camera_ids"]))

    zero = evaluate({"params": state.params, "batch_stats": state.batch_stats}, raw_fn)
    print(f"zero-shot ({how}): mAP {zero['mAP']:.2f} mAP_official {zero['mAP_official']:.2f} "
          f"R1 {zero['R1']:.2f}", flush=True)
    t_train = time.time()
    try:
        state = train_loop(config, workdir, state, make_step(loss_fn, tx, schedule), batches, total_steps,
                           lambda b: {"image": b["image"], "label": b["label"]}, mesh)
    finally:
        batches.close()
    train_s = time.time() - t_train
    tuned = evaluate({"params": state.params, "batch_stats": state.batch_stats},
                     neck_fn if config.eval_feature == "bn" else raw_fn)
    _save(workdir, state, backbone, config)
    result = {"task": "image_reid", "init": backbone.origin, "dataset": f"{d.name}/{d.config}", "protocol": how,
              "num_train_ids": num_classes, "num_query": int(len(query["image_ids"])),
              "num_gallery": int(len(gallery["image_ids"])), "steps": total_steps, "batch_size": int(d.batch_size),
              "eval_feature": config.eval_feature, "train_seconds": round(train_s, 1),
              "seconds": round(time.time() - t_start, 1), "zero_shot": zero, "finetuned": tuned,
              **{k: tuned[k] for k in ("mAP", "mAP_official", "R1", "R5", "R10", "mINP")}}
    _write_eval(workdir, result, f"Image Re-ID, {result['dataset']} ({how}; {backbone.origin})",
                {"zero-shot": zero, "fine-tuned": tuned}, ["mAP", "mAP_official", "R1", "R5", "R10", "mINP"])
    return result


# ---------------------------------------------------------------------------------------------
# Task 3: pedestrian attribute recognition
# ---------------------------------------------------------------------------------------------
def run_attributes(config, workdir: Path) -> dict:
    """Attribute classifier on the image encoder with weighted BCE; label-based mA and instance F1."""
    from plip_jax.data.pipeline import load_eval_split
    from plip_jax.evals.attributes import attribute_metrics

    t_start = time.time()
    backbone = load_backbone(config, with_text=False)
    d = config.data
    size = tuple(backbone.arch["image"]["input_size"])
    source = _open(_data_cfg(d), d.train_split)
    scan = fd.scan_labels(source)
    attrs = scan["attribute_labels"]
    if attrs.ndim != 2 or attrs.shape[1] == 0:
        raise ConfigError(f"{d.name} has no attribute_labels to learn")
    rows = np.flatnonzero(np.isin(scan["ids"], fd.few_shot_ids(scan["ids"], float(config.few_shot), int(config.seed))))
    ratio = attribute_pos_weights(attrs[rows])
    k = attrs.shape[1]
    aug = transforms.AugmentConfig(flip=bool(d.flip), pad_crop=bool(d.pad_crop), random_erasing=False)
    batches = fd.ImageBatches(source, rows, np.zeros(len(rows), np.int32), attrs[rows], size, int(d.batch_size),
                              "shuffle", 1, int(config.seed), aug, threads=int(d.threads))
    total_steps = _total_steps(config, batches.steps_per_epoch)
    head = AttributeClassifier(num_attributes=k)
    dim = int(backbone.arch["image"]["output_dim"])
    hv = jax.device_get(head.init(jax.random.key(int(config.seed) + 7, impl="rbg"), jnp.zeros((2, dim)), train=False))
    params = {"image": backbone.variables["params"]["image"], "head": hv["params"]}
    batch_stats = {"image": backbone.variables["batch_stats"]["image"], "head": hv["batch_stats"]}
    mesh = shd.make_mesh(-1, 1)
    state, tx, schedule = _build_state(params, batch_stats, config, batches.steps_per_epoch, total_steps,
                                       int(d.batch_size), mesh)
    image_m = backbone.image
    pos_ratio = jnp.asarray(ratio) if config.losses.weighted else None

    def loss_fn(params, batch_stats, batch, rng):
        x = transforms.normalize(batch["image"])
        (f, _), mi = image_m.apply({"params": params["image"], "batch_stats": batch_stats["image"]}, x,
                                   train=True, mutable=["batch_stats"])
        logits, mh = head.apply({"params": params["head"], "batch_stats": batch_stats["head"]}, f,
                                train=True, mutable=["batch_stats"])
        loss = weighted_bce(logits, batch["attribute_labels"], pos_ratio)
        return loss, ({"loss_bce": loss}, {"image": mi["batch_stats"], "head": mh["batch_stats"]})

    split = load_eval_split(_open(_data_cfg(d), d.test_split), backbone.tokenizer, size,
                            max_items=int(config.train.eval_max_items) or None, max_length=8)
    labels = split["attribute_labels"]
    known = np.flatnonzero((labels >= 0).all(0))   # attributes labelled on every eval image
    head_fn = _eval_jit(backbone, lambda v, e: head.apply(
        {"params": v["params"]["head"], "batch_stats": v["batch_stats"]["head"]}, e, train=False))
    bs = int(config.train.eval_batch_size)

    def evaluate(variables) -> dict:
        logits = _batched(head_fn, variables, [split["images"]], bs)
        return _scalars(attribute_metrics(logits[:, known], labels[:, known], threshold=0.0))

    zero = evaluate({"params": state.params, "batch_stats": state.batch_stats})
    t_train = time.time()
    try:
        state = train_loop(config, workdir, state, make_step(loss_fn, tx, schedule), batches, total_steps,
                           lambda b: {"image": b["image"], "attribute_labels": b["attribute_labels"]}, mesh)
    finally:
        batches.close()
    train_s = time.time() - t_train
    tuned = evaluate({"params": state.params, "batch_stats": state.batch_stats})
    _save(workdir, state, backbone, config)
    result = {"task": "attributes", "init": backbone.origin, "dataset": f"{d.name}/{d.config}",
              "split": d.test_split, "num_attributes": k, "num_evaluated_attributes": int(len(known)),
              "num_eval_images": int(len(labels)), "steps": total_steps, "batch_size": int(d.batch_size),
              "weighted": bool(config.losses.weighted), "train_seconds": round(train_s, 1),
              "seconds": round(time.time() - t_start, 1), "untrained_head": zero, "finetuned": tuned,
              **{k2: tuned[k2] for k2 in ("mA", "Acc", "Prec", "Rec", "F1")}}
    _write_eval(workdir, result, f"Attribute recognition, {result['dataset']} {d.test_split} ({backbone.origin})",
                {"untrained": zero, "fine-tuned": tuned}, ["mA", "Acc", "Prec", "Rec", "F1"])
    return result


# ---------------------------------------------------------------------------------------------
def validate(config) -> None:
    """One-line errors for configs that cannot run."""
    if config.mode not in MODES:
        raise ConfigError(f"config.mode={config.mode!r}; expected one of {MODES}")
    if not 0.0 < float(config.few_shot) <= 1.0:
        raise ConfigError(f"config.few_shot must be a fraction in (0, 1], got {config.few_shot}")
    if int(config.data.batch_size) <= 0 or int(config.data.batch_size) % jax.device_count():
        raise ConfigError(f"config.data.batch_size={config.data.batch_size} must be a positive multiple "
                          f"of the device count {jax.device_count()}")
    if "ap" in config:
        raise ConfigError("config.ap was removed: every result has both mAP (IRRA / BoT) and "
                          "mAP_official (the official PLIP / Market devkit trapezoid AP); drop the key")
    if config.init_checkpoint and not Path(config.init_checkpoint).exists():
        raise ConfigError(f"config.init_checkpoint={config.init_checkpoint}: no such file or directory")
    if not config.init_checkpoint:  # from scratch: pretrained text weights, or a named random tower
        trains_text = config.mode == "finetune_text_reid"  # image-only tasks keep the tower untrained
        try:
            text_tower.validate(config.model, tuple(config.optim.frozen) if trains_text else None)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if config.mode == "finetune_image_reid" and int(config.data.batch_size) % int(config.data.k_images):
        raise ConfigError(f"config.data.batch_size={config.data.batch_size} must be a multiple of "
                          f"config.data.k_images={config.data.k_images} (P x K sampler)")


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Entry point of `python -m plip_jax.main` for modes finetune_*; returns the eval.json dict."""
    validate(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json(indent=2))
    return {"finetune_text_reid": run_text_reid, "finetune_image_reid": run_image_reid,
            "finetune_attributes": run_attributes}[config.mode](config, workdir)
