"""Why the :mini's attribute head answers every mask of a caption with one word ("hair hair hair"):
how alike the masked positions of one caption look to the IAP head, on a real training batch.

  python bench/mini_iap_check.py runs/mini

Prints the mean cosine between the text tower's states at the masked positions of each caption
(the run's tower, and MiniLM-L6 as shipped), and after the head's add fusion with the image
embedding and its first LayerNorm. Near 1 means the head cannot tell the positions apart, so it
can only predict the caption's most likely word at all of them. Source of docs/ablations.md's
IAP paragraph.
"""
from __future__ import annotations

import sys
from pathlib import Path

import ml_collections
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import plip_jax  # noqa: E402
from plip_jax.convert import text_weights  # noqa: E402
from plip_jax.core import checkpoint as ckpt_lib
from plip_jax.core import sharding as shd
from plip_jax.data import sources as data_setup
from plip_jax.data.tokenizer import load_tokenizer  # noqa: E402
from plip_jax.models import text_tower  # noqa: E402
from plip_jax.models.bert import Bert  # noqa: E402


def position_cosine(states: np.ndarray, positions: np.ndarray, weights: np.ndarray) -> float:
    """Mean over captions of the mean pairwise cosine between the states at its masked positions."""
    out = []
    for s, p, w in zip(states, positions, weights):
        p = p[w > 0]
        if len(p) < 2:
            continue
        v = s[p] / np.linalg.norm(s[p], axis=1, keepdims=True)
        out.append((v @ v.T)[np.triu_indices(len(p), 1)].mean())
    return float(np.mean(out))


def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def main(workdir: str) -> None:
    variables, cfg_dict = ckpt_lib.restore_for_inference(workdir)
    config = ml_collections.ConfigDict(cfg_dict)
    tokenizer = load_tokenizer(config.data.tokenizer_dir, max_length=config.data.max_length)
    data = data_setup.open_train(config, tokenizer)
    data.restore(None, 0)
    batch = {k: np.asarray(v) for k, v in data.next_global(shd.batch_sharding(shd.make_mesh(1, 1))).items()}
    pos, w = batch["mlm_positions"], batch["mlm_weights"]
    text_cfg, _ = text_tower.from_config(config.model)
    ids, mask = batch["masked_input_ids"], batch["attention_mask"]
    run_states = np.asarray(Bert(text_cfg).apply({"params": variables["params"]["text"]}, ids, mask,
                                                 deterministic=True)[0])
    image = np.asarray(plip_jax.from_pretrained(workdir).encode_images(batch["image"]))
    ln = {k: np.asarray(v) for k, v in variables["params"]["iap"]["resblocks_0"]["ln_1"].items()}
    fused = layer_norm(run_states + image[:, None, :], ln["scale"], ln["bias"])
    shipped_cfg, folder = text_tower.resolve("minilm")
    shipped, _ = text_weights.load_params(folder)
    shipped_states = np.asarray(Bert(shipped_cfg).apply({"params": shipped}, ids, mask, deterministic=True)[0])
    print(f"{workdir}: one training batch, {int((w > 0).sum())} masked tokens; "
          f"mean cosine between the masked positions of a caption:")
    print(f"  MiniLM-L6 as shipped        {position_cosine(shipped_states, pos, w):.3f}")
    print(f"  the run's text tower        {position_cosine(run_states, pos, w):.3f}")
    print(f"  + image (add), IAP ln_1     {position_cosine(fused, pos, w):.3f}")
    print(f"  |image embedding| {np.linalg.norm(image, axis=1).mean():.1f} vs "
          f"|token state| {np.linalg.norm(run_states[mask > 0], axis=1).mean():.1f} (means)")


if __name__ == "__main__":
    main(sys.argv[1])
