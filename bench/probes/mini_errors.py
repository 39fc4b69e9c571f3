"""What a run's wrong top-1 retrievals confuse: for each test caption whose nearest image belongs to
another identity, how many of the six attribute slots (gender, head, upper, lower, shoes, others)
of the two identities differ, and which slots. Few differing slots = fine details missed; 4-6 = the
encoders have not learnt the basic attributes yet. Also each side's nearest-neighbour identity
accuracy (caption -> other caption, image -> other image, leave-one-out): which tower separates
identities. Source of docs/results.md "Why the two knobs".

  python bench/probes/mini_errors.py runs/mini [--data-dir /tmp/pd] [--step STEP] [--split test]

The run must be trained on a procedural synth_pedes build (its identities carry the attribute
slots); --data-dir overrides the run's config.data.data_dir, --step evaluates an older kept
checkpoint of the run.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import ml_collections
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import plip_jax  # noqa: E402
from plip_jax.core import checkpoint  # noqa: E402
from plip_jax.data import sources  # noqa: E402
from plip_jax.data.tokenizer import load_tokenizer  # noqa: E402

SLOTS = ("gender", "head", "upper", "lower", "shoes", "others")


def nn_accuracy(x: np.ndarray, ids: np.ndarray) -> float:
    """Share of rows whose most cosine-similar other row has the same identity."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    return float((ids[s.argmax(1)] == ids).mean())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir", help="a pre-training workdir")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir (default: the run's config.data.data_dir)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--split", default="test")
    a = p.parse_args(argv)
    run = Path(a.workdir) / "checkpoints" / str(a.step) if a.step is not None else Path(a.workdir)
    _, cfg = checkpoint.restore_for_inference(run)
    config = ml_collections.ConfigDict(cfg)
    if a.data_dir:
        config.data.data_dir = a.data_dir
    ev = sources.open_eval(config, load_tokenizer(config.data.tokenizer_dir, max_length=config.data.max_length),
                           a.split)
    cap_ids, img_ids = np.asarray(ev["caption_ids"]), np.asarray(ev["image_ids"])
    source = sources.open_source(config.data, a.split, decode_images=False)
    attrs = {}
    for i in range(len(source)):
        ex = source[i]
        at = ex["attributes"]
        attrs[int(ex["id"])] = [at[s].decode() if isinstance(at[s], bytes) else str(at[s]) for s in SLOTS]
    m = plip_jax.from_pretrained(run)
    txt = m.encode_texts(ev["captions"], batch_size=64)
    img = m.encode_images(ev["images"], batch_size=64)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    top = img_ids[(txt @ img.T).argmax(1)]
    out = {"R1": 100 * float((top == cap_ids).mean()), "caption_nn_same_id": 100 * nn_accuracy(txt, cap_ids),
           "image_nn_same_id": 100 * nn_accuracy(img, img_ids)}
    print(f"{a.split} R@1 {out['R1']:.2f}  caption NN same-id {out['caption_nn_same_id']:.2f}"
          f"  image NN same-id {out['image_nn_same_id']:.2f}")
    n_diff, per_slot = collections.Counter(), collections.Counter()
    for q, r in zip(cap_ids, top):
        if q != r:
            d = [s for s, x, y in zip(SLOTS, attrs[int(q)], attrs[int(r)]) if x != y]
            n_diff[len(d)] += 1
            per_slot.update(d)
    out["differing_slots"] = dict(sorted(n_diff.items()))
    out["slot_differs"] = dict(per_slot.most_common())
    print("wrong top-1: number of differing slots -> count", out["differing_slots"])
    print("wrong top-1: slot -> times it differs", out["slot_differs"])
    return out


if __name__ == "__main__":
    main()
