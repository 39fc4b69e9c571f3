"""Pedestrian attribute recognition fine-tune: an attribute classifier (Linear + BN) on the image
encoder with weighted BCE; label-based mA and instance-based Acc/Prec/Rec/F1 on the test split."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from plip_jax.core.errors import ConfigError
from plip_jax.evals.embed import Embedder
from plip_jax.evals.tasks import attributes_eval
from plip_jax.losses.reid import attribute_pos_weights, weighted_bce
from plip_jax.models.reid_heads import AttributeClassifier
from plip_jax.trainers.finetune import common
from plip_jax.trainers.finetune.common import Backbone, Task

TRAINS_TEXT = False
COLUMNS = ("mA", "Acc", "Prec", "Rec", "F1")


def build(config, backbone: Backbone, sharding) -> Task:
    d = config.data
    source, scan = common.train_records(config)
    attrs = scan["attribute_labels"]
    if attrs.ndim != 2 or attrs.shape[1] == 0:
        raise ConfigError(f"{d.name} has no attribute_labels to learn")
    rows = common.few_shot_rows(scan["ids"], config)
    pos_ratio = jnp.asarray(attribute_pos_weights(attrs[rows])) if config.losses.weighted else None
    data = common.image_batches(config, backbone, source, rows, np.zeros(len(rows), np.int32), attrs[rows],
                                "shuffle", random_erasing=False)
    k = attrs.shape[1]
    head = AttributeClassifier(num_attributes=k)
    dim = int(backbone.arch["image"]["output_dim"])
    image_m = backbone.image

    def loss_fn(params, batch_stats, batch, rng):
        f, image_bs = common.encode_images(image_m, params, batch_stats, batch["image"])
        logits, mh = head.apply({"params": params["head"], "batch_stats": batch_stats["head"]}, f,
                                train=True, mutable=["batch_stats"])
        loss = weighted_bce(logits, batch["attribute_labels"], pos_ratio)
        return loss, ({"loss_bce": loss}, {"image": image_bs, "head": mh["batch_stats"]})

    split = common.eval_split(config, backbone, d.test_split)
    known = int(((split["attribute_labels"] >= 0).all(0)).sum())   # attributes labelled on every eval image
    embedder = Embedder.for_encoders(image_m, batch_size=int(config.train.eval_batch_size), sharding=sharding,
                                     image_head=lambda v, e: head.apply(
                                         {"params": v["params"]["head"], "batch_stats": v["batch_stats"]["head"]},
                                         e, train=False))
    return Task(
        name="attributes", heads=common.init_head("head", head, config, jnp.zeros((2, dim)), train=False),
        trainable=("image", "head"), loss_fn=loss_fn, data=data,
        evaluate=lambda variables, _: attributes_eval(embedder, variables, split), columns=COLUMNS,
        title=f"Attribute recognition, {d.name}/{d.config} {d.test_split}",
        info={"dataset": f"{d.name}/{d.config}", "split": d.test_split, "num_attributes": int(k),
              "num_evaluated_attributes": known, "num_eval_images": len(split["attribute_labels"]),
              "weighted": bool(config.losses.weighted)},
        before=("untrained_head", "untrained"), close=data.close)
