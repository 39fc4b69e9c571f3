"""What a mini run's wrong top-1 retrievals confuse: for each test caption whose nearest image belongs
to another identity, how many of the six attribute slots (gender, head, upper, lower, shoes, others)
of the two identities differ, and which slots. Few differing slots = fine details missed; 4-6 =
the encoders have not learnt the basic attributes yet.

  python bench/mini_errors.py runs/mini /tmp/pd [STEP]

STEP evaluates an older kept checkpoint of the run (the run folder is copied with only that step).
"""
from __future__ import annotations

import collections
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import plip_jax  # noqa: E402
from plip_jax.config_parts import config_module

pretrain  # noqa: E402 = config_module(Path(__file__).resolve().parents[1] / "configs" / "pretrain  # noqa: E402.py")
from mini_nn_check import nn_accuracy  # noqa: E402  (bench/mini_nn_check.py)

from plip_jax.data import sources as data_setup  # noqa: E402
from plip_jax.data.tokenizer import load_tokenizer  # noqa: E402

SLOTS = ("gender", "head", "upper", "lower", "shoes", "others")


def main(workdir: str, data_dir: str, step: str | None = None) -> None:
    if step is not None:  # a copy of the run that holds only checkpoint STEP
        tmp = Path(tempfile.mkdtemp()) / "run"
        shutil.copytree(workdir, tmp)
        for ck in (tmp / "checkpoints").iterdir():
            if ck.name != step:
                shutil.rmtree(ck)
        workdir = str(tmp)
    c = pretrain.get_config("mini")
    c.data.data_dir = data_dir
    ev = data_setup.open_eval(c, load_tokenizer(max_length=c.data.max_length), "test")
    cap_ids, img_ids = np.asarray(ev["caption_ids"]), np.asarray(ev["image_ids"])
    source = data_setup.open_source(c.data, "test", decode_images=False)
    attrs = {}
    for i in range(len(source)):
        ex = source[i]
        a = ex["attributes"]
        attrs[int(ex["id"])] = [a[s].decode() if isinstance(a[s], bytes) else str(a[s]) for s in SLOTS]
    m = plip_jax.from_pretrained(workdir)
    txt = m.encode_texts(ev["captions"], batch_size=64)
    img = m.encode_images(ev["images"], batch_size=64)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    top = img_ids[(txt @ img.T).argmax(1)]
    print(f"test R@1 {100 * (top == cap_ids).mean():.2f}  caption NN same-id {100 * nn_accuracy(txt, cap_ids):.2f}"
          f"  image NN same-id {100 * nn_accuracy(img, img_ids):.2f}")
    n_diff, per_slot = collections.Counter(), collections.Counter()
    for q, r in zip(cap_ids, top):
        if q != r:
            d = [s for s, a, b in zip(SLOTS, attrs[int(q)], attrs[int(r)]) if a != b]
            n_diff[len(d)] += 1
            per_slot.update(d)
    print("wrong top-1: number of differing slots -> count", dict(sorted(n_diff.items())))
    print("wrong top-1: slot -> times it differs", dict(per_slot.most_common()))


if __name__ == "__main__":
    main(*sys.argv[1:4])
