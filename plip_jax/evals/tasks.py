"""One evaluator per downstream task, shared by pre-training, evaluation runs, fine-tuning and the
report: embed with an `Embedder`, then the task's metrics (all in percent, both AP conventions)."""
from __future__ import annotations

from typing import Any

import numpy as np

from plip_jax.evals.attributes import attribute_metrics
from plip_jax.evals.embed import Embedder
from plip_jax.evals.reid import reid_metrics
from plip_jax.evals.retrieval import retrieval_metrics


def _floats(metrics: dict) -> dict:
    """Numpy float scalars as Python floats (JSON-ready); other values as they are."""
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in metrics.items()}


def scalars(metrics: dict) -> dict:
    """Numpy scalars as floats; arrays (per-query details) dropped, for eval.json and tables."""
    return {k: v for k, v in _floats(metrics).items() if not isinstance(v, np.ndarray)}


def text_reid_eval(embedder: Embedder, variables: dict, split: dict[str, Any]) -> dict:
    """Text->image retrieval on a loaded split (query = every caption, gallery = every image)."""
    img = embedder.images(variables, split["images"])
    txt = embedder.texts(variables, split["input_ids"], split["attention_mask"])
    metrics = retrieval_metrics(txt, img, np.asarray(split["caption_ids"]), np.asarray(split["image_ids"]))
    return _floats(metrics)


def image_reid_eval(embedder: Embedder, variables: dict, query: dict[str, Any], gallery: dict[str, Any]) -> dict:
    """Image Re-ID (Market-1501 protocol: same-camera matches of the query's id are junk)."""
    qf = embedder.images(variables, query["images"])
    gf = embedder.images(variables, gallery["images"])
    return scalars(reid_metrics(qf, gf, query["image_ids"], gallery["image_ids"], query["camera_ids"],
                                gallery["camera_ids"]))


def attributes_eval(embedder: Embedder, variables: dict, split: dict[str, Any]) -> dict:
    """Attribute recognition from the classifier's logits (the embedder's image head) on the
    attributes labelled on every evaluated image; label-based mA and instance-based Acc/Prec/Rec/F1."""
    labels = np.asarray(split["attribute_labels"])
    known = np.flatnonzero((labels >= 0).all(0))
    logits = embedder.images(variables, split["images"])
    out = scalars(attribute_metrics(logits[:, known], labels[:, known], threshold=0.0))
    out["num_evaluated_attributes"] = int(len(known))
    return out
