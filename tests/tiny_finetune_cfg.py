"""Tiny fine-tune configs (toy model sizes on small procedural builds: the shifted style A for text
and image Re-ID, SYNTH-PEDES for attributes, as in `:mini`), in process via
`tiny_finetune_config(task, ...)` or for subprocess runs:
`--config tests/tiny_finetune_cfg.py:task=image_reid,steps=4,batch=8 --config.data.data_dir=D`."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny import config_file, tiny_bert_dir  # noqa: E402

from plip_jax.config_parts import parse_arg  # noqa: E402

TASKS = ("text_reid", "image_reid", "attributes")


def tiny_finetune_config(task: str, steps: int = 2, batch: int = 8):
    """configs/finetune_<task>.py:mini at toy sizes: ResNet (1,1,1,1) width 8 at 64x32, the 2-layer
    32-wide BERT of `tiny_bert_dir()`, 24 procedural identities x 2 images, every step logged."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    c = config_file(f"finetune_{task}").get_config(f"mini,steps={steps},batch={batch}")
    c.model.image = dict(layers=(1, 1, 1, 1), width=8, heads=2, output_dim=32, input_size=(64, 32))
    c.model.text = dict(init=tiny_bert_dir(), frozen_layers=1, mask_padding=True, dropout=0.0)
    c.data.max_length = 16
    c.data.procedural = dict(num_identities=24, images_per_identity=2, num_val_ids=4, num_test_ids=6,
                             image_height=64, image_width=32)
    c.train.eval_batch_size = 16
    c.train.log_every = 1
    c.train.async_checkpoints = False
    if task == "image_reid":
        c.data.k_images = 2
    return c


def get_config(arg=None):
    a = parse_arg(arg, task="image_reid", steps=2, batch=8)
    return tiny_finetune_config(a.task, a.steps, a.batch)
