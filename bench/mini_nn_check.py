"""Which side of a mini run separates identities: nearest-neighbour identity accuracy on the val split
of caption->caption (text tower alone) and image->image (image encoder alone), leave-one-out.

  python bench/mini_nn_check.py runs/mini /tmp/pd

Prints both for the run's encoders and caption->caption for the untouched MiniLM-L6 (mean-pooled).
"""
from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import plip_jax  # noqa: E402
from plip_jax.config_parts import config_module

pretrain  # noqa: E402 = config_module(Path(__file__).resolve().parents[1] / "configs" / "pretrain  # noqa: E402.py")
from plip_jax.convert import text_weights  # noqa: E402
from plip_jax.data import sources as data_setup
from plip_jax.data.tokenizer import load_tokenizer  # noqa: E402
from plip_jax.models import text_tower  # noqa: E402
from plip_jax.models.bert import Bert, masked_mean  # noqa: E402


def nn_accuracy(x: np.ndarray, ids: np.ndarray) -> float:
    """Share of rows whose most cosine-similar other row has the same identity."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    return float((ids[s.argmax(1)] == ids).mean())


def main(workdir: str, data_dir: str) -> None:
    c = pretrain.get_config("mini")
    c.data.data_dir = data_dir
    val = data_setup.open_eval(c, load_tokenizer(max_length=c.data.max_length), "val")
    cap_ids, img_ids = np.asarray(val["caption_ids"]), np.asarray(val["image_ids"])
    cfg, folder = text_tower.resolve("minilm")
    params, _ = text_weights.load_params(folder)
    bert = Bert(cfg)
    enc = jax.jit(lambda i, a: masked_mean(bert.apply({"params": params}, i, a, deterministic=True)[0], a))
    raw = np.concatenate([np.asarray(enc(val["input_ids"][s:s + 64], val["attention_mask"][s:s + 64]))
                          for s in range(0, len(cap_ids), 64)])
    m = plip_jax.from_pretrained(workdir)
    txt = m.encode_texts(val["captions"], batch_size=64)
    img = m.encode_images(val["images"], batch_size=64)
    print(f"{'encoder':<34} {'NN same-id':>10}")
    print(f"{'MiniLM-L6 as shipped, captions':<34} {100 * nn_accuracy(raw, cap_ids):10.2f}")
    print(f"{'run text tower, captions':<34} {100 * nn_accuracy(txt, cap_ids):10.2f}")
    print(f"{'run image encoder, images':<34} {100 * nn_accuracy(img, img_ids):10.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
