"""Modules from an architecture dict (`{'image': {...}, 'text': BertConfig dict, 'recipe': ...}`, the
form checkpoints, `from_pretrained` and the fine-tunes carry): the one place that builds them."""
from __future__ import annotations

from typing import Any, Mapping

from plip_jax.models.bert import Bert, BertConfig
from plip_jax.models.resnet import ModifiedResNet


def image_encoder(image: Mapping[str, Any]) -> ModifiedResNet:
    """The ModifiedResNet of an architecture's `image` entry (layers, width, heads, output_dim,
    input_size, pool)."""
    return ModifiedResNet(layers=tuple(image["layers"]), width=int(image["width"]), heads=int(image["heads"]),
                          output_dim=int(image["output_dim"]), input_size=tuple(image["input_size"]),
                          pool=image["pool"])


def text_encoder(text: Mapping[str, Any] | BertConfig, *, pooler: bool = True, frozen_layers: int = 0) -> Bert:
    """The BERT of an architecture's `text` entry (a BertConfig or its dict)."""
    cfg = text if isinstance(text, BertConfig) else BertConfig.from_dict(dict(text))
    return Bert(cfg, frozen_layers=int(frozen_layers), add_pooler=bool(pooler))
