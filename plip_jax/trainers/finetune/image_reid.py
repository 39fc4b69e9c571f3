"""Image Re-ID fine-tune: the BoT strong baseline on the image encoder (BNNeck, label-smoothed
identity CE + batch-hard triplet, P x K batches); Market-1501 query/gallery protocol, or the
procedural test split divided by camera."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from plip_jax.data import downstream as fd
from plip_jax.evals.embed import Embedder
from plip_jax.evals.tasks import image_reid_eval
from plip_jax.losses.reid import label_smoothing_ce, triplet_loss
from plip_jax.models.reid_heads import BNNeck
from plip_jax.trainers.finetune import common
from plip_jax.trainers.finetune.common import Backbone, Task

TRAINS_TEXT = False
COLUMNS = ("mAP", "mAP_official", "R1", "R5", "R10", "mINP")


def _query_gallery(config, backbone: Backbone) -> tuple[dict, dict, str]:
    """(query, gallery, protocol): the official query/gallery splits, or the camera split of `test`."""
    d = config.data
    if d.query_split and d.gallery_split:
        query, gallery = (common.eval_split(config, backbone, s) for s in (d.query_split, d.gallery_split))
        return query, gallery, f"{d.query_split}/{d.gallery_split}"
    s = common.eval_split(config, backbone, d.test_split)
    qm, gm = fd.split_query_gallery(s["image_ids"], s["camera_ids"])
    pick = lambda m: {k: s[k][m] for k in ("images", "image_ids", "camera_ids")}  # noqa: E731
    return pick(qm), pick(gm), f"{d.test_split} split by camera"


def build(config, backbone: Backbone, sharding) -> Task:
    d, lc = config.data, config.losses
    source, scan = common.train_records(config)
    valid = np.flatnonzero(scan["ids"] >= 0)           # junk / distractor ids (< 0) never train
    rows = valid[common.few_shot_rows(scan["ids"][valid], config)]
    labels, _ = fd.contiguous_labels(scan["ids"][rows])
    num_classes = int(labels.max()) + 1
    data = common.image_batches(config, backbone, source, rows, labels, None, "pk", bool(d.random_erasing))
    neck = BNNeck(num_classes=num_classes)
    dim = int(backbone.arch["image"]["output_dim"])
    image_m = backbone.image
    margin = None if float(lc.triplet_margin) <= 0 else float(lc.triplet_margin)

    def loss_fn(params, batch_stats, batch, rng):
        f, image_bs = common.encode_images(image_m, params, batch_stats, batch["image"])
        (_, logits), mn = neck.apply({"params": params["neck"], "batch_stats": batch_stats["neck"]}, f,
                                     train=True, mutable=["batch_stats"])
        parts = {"loss_id": label_smoothing_ce(logits, batch["label"], float(lc.label_smoothing)),
                 "loss_triplet": triplet_loss(f, batch["label"], margin)}
        loss = float(lc.id_weight) * parts["loss_id"] + float(lc.triplet_weight) * parts["loss_triplet"]
        parts["accuracy"] = jnp.mean(jnp.argmax(logits, 1) == batch["label"])
        return loss, (parts, {"image": image_bs, "neck": mn["batch_stats"]})

    query, gallery, how = _query_gallery(config, backbone)
    bs = int(config.train.eval_batch_size)
    raw = Embedder.for_encoders(image_m, batch_size=bs, sharding=sharding)
    bn = Embedder.for_encoders(image_m, batch_size=bs, sharding=sharding, image_head=lambda v, e: neck.apply(
        {"params": v["params"]["neck"], "batch_stats": v["batch_stats"]["neck"]}, e, train=False)[0])
    tuned_embedder = bn if config.eval_feature == "bn" else raw

    def evaluate(variables: dict, finetuned: bool) -> dict:
        return image_reid_eval(tuned_embedder if finetuned else raw, variables, query, gallery)

    return Task(
        name="image_reid", heads=common.init_head("neck", neck, config, jnp.zeros((2, dim)), train=False),
        trainable=("image", "neck"), loss_fn=loss_fn, data=data, evaluate=evaluate, columns=COLUMNS,
        title=f"Image Re-ID, {d.name}/{d.config} ({how})",
        info={"dataset": f"{d.name}/{d.config}", "protocol": how, "num_train_ids": num_classes,
              "num_query": len(query["image_ids"]), "num_gallery": len(gallery["image_ids"]),
              "eval_feature": config.eval_feature},
        postfix=("loss", "loss_id", "loss_triplet"), close=data.close)
