"""Text-based Re-ID fine-tune: both encoders with CMPM + CMPC (a learnable class matrix over the
training ids), as the official Downstreams/CMPM-C/loss.py and train.py; few-shot (a fraction of the
training ids) and cross-domain evaluation (`config.eval_data` names another builder). Text->image
retrieval before and after."""
from __future__ import annotations

import math

import jax
import numpy as np

from plip_jax.core.metrics import RETRIEVAL_COLUMNS
from plip_jax.data import sources
from plip_jax.evals.embed import Embedder
from plip_jax.evals.tasks import scalars, text_reid_eval
from plip_jax.losses.cmpm import cmpc_loss, cmpm_loss
from plip_jax.models.plip import text_global
from plip_jax.models.reid_heads import CMPCClassifier
from plip_jax.trainers.finetune import common
from plip_jax.trainers.finetune.common import Backbone, Task

TRAINS_TEXT = True
COLUMNS = RETRIEVAL_COLUMNS


def _captions(config, backbone: Backbone):
    """(resumable per-process caption stream, training classes): few-shot pairs, labels = class indices."""
    from plip_jax.data.pipeline import CaptionIndex, DataConfig, make_train_dataset

    d = config.data
    source = sources.open_source(d, d.train_split, decode_images=False)
    index = CaptionIndex.build(source)
    keep = np.isin(index.image, common.few_shot_rows(index.image_ids, config))   # pairs of the few-shot ids
    index = CaptionIndex(image=index.image[keep], slot=index.slot[keep], image_ids=index.image_ids)
    classes = np.unique(index.image_ids[index.image])
    pcfg = DataConfig(image_size=backbone.input_size, batch_size=int(d.batch_size), max_length=int(d.max_length),
                      max_masked=1, flip=bool(d.flip), sampler=str(d.sampler), k_images=int(d.k_images),
                      workers=int(d.workers))
    steps_per_epoch = max(1, len(index) // int(d.batch_size))
    epochs = max(1, math.ceil(common.total_steps(config, steps_per_epoch) / steps_per_epoch))
    td = make_train_dataset(source, backbone.tokenizer, pcfg, seed=int(config.seed), total_epochs=epochs,
                            process_index=jax.process_index(), process_count=jax.process_count(),
                            caption_index=index)

    def prepare(b: dict) -> dict:  # what the loss reads; labels are the training classes
        return {"image": b["image"], "input_ids": b["input_ids"], "attention_mask": b["attention_mask"],
                "label": np.searchsorted(classes, b["id"]).astype(np.int32)}

    stream = sources.TrainStream(td.steps_per_epoch, lambda: iter(td.dataset.map(prepare)), td.local_batch_size)
    return stream, classes


def _eval_data(config):
    """The evaluation dataset: `config.eval_data.name` (cross-domain), else the training dataset."""
    d, ed = config.data, config.eval_data
    if not ed.name:
        return sources.data_config(d.name, d.config, d.get("data_dir"), d.get("manual_dir"), d.procedural)
    return sources.data_config(ed.name, ed.config or None, ed.data_dir or d.get("data_dir"), ed.manual_dir,
                               d.procedural if ed.name == d.name else {})


def build(config, backbone: Backbone, sharding) -> Task:
    d, ed = config.data, config.eval_data
    data, classes = _captions(config, backbone)
    dim = int(backbone.arch["image"]["output_dim"])
    head = CMPCClassifier(num_classes=len(classes), dim=dim)
    image_m, text_m, recipe = backbone.image, backbone.text, backbone.recipe
    w_cmpm, w_cmpc = float(config.losses.cmpm), float(config.losses.cmpc)

    def loss_fn(params, batch_stats, batch, rng):
        v, image_bs = common.encode_images(image_m, params, batch_stats, batch["image"])
        last, pooled = text_m.apply({"params": params["text"]}, batch["input_ids"], batch["attention_mask"],
                                    deterministic=False, rngs={"dropout": rng})
        t = text_global(last, pooled, batch["attention_mask"], recipe)
        parts = {"loss_cmpm": cmpm_loss(v, t, batch["label"]),
                 "loss_cmpc": cmpc_loss(v, t, batch["label"], params["cmpc"]["W"])}
        loss = w_cmpm * parts["loss_cmpm"] + w_cmpc * parts["loss_cmpc"]
        return loss, (parts, {"image": image_bs})

    edc = _eval_data(config)
    split = common.eval_split(config, backbone, ed.split, sources.open_source(edc, ed.split, decode_images=False),
                              max_length=int(d.max_length))
    embedder = Embedder.for_encoders(image_m, text_m, recipe, batch_size=int(config.train.eval_batch_size),
                                     sharding=sharding)
    eval_name = f"{edc.name}/{edc.config}"
    return Task(
        name="text_reid", heads=common.init_head("cmpc", head, config), trainable=None,
        loss_fn=loss_fn, data=data, evaluate=lambda variables, _: scalars(text_reid_eval(embedder, variables, split)),
        columns=COLUMNS, title=f"Text->image retrieval, {eval_name} {ed.split}",
        info={"train_dataset": f"{d.name}/{d.config}", "eval_dataset": eval_name, "split": ed.split,
              "few_shot": float(config.few_shot), "num_train_ids": len(classes)},
        postfix=("loss", "loss_cmpm", "loss_cmpc"))
