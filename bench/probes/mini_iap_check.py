"""Why the :mini's attribute head answers every mask of a caption with one word ("hair hair hair"):
how alike the masked positions of one caption look to the IAP head, on a real training batch.

  python bench/probes/mini_iap_check.py runs/mini [--data-dir /tmp/pd] [--shipped minilm]

Prints the mean cosine between the text tower's states at the masked positions of each caption
(the run's tower, and the --shipped tower as released: MiniLM-L6 for the :mini; `none` skips it),
and after the head's add fusion with the image embedding and its first LayerNorm. Near 1 means the
head cannot tell the positions apart, so it can only predict the caption's most likely word at all
of them. Source of docs/ablations.md's IAP paragraph.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_run import load_run  # noqa: E402

import plip_jax  # noqa: E402
from plip_jax.convert import text_weights  # noqa: E402
from plip_jax.data import sources  # noqa: E402
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
    return float(np.mean(out)) if out else float("nan")


def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir", help="a pre-training workdir with the IAP head (add fusion)")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir (default: the run's config.data.data_dir)")
    p.add_argument("--shipped", default="minilm",
                   help="text tower as released to compare with (a model.text.init name), or 'none'")
    a = p.parse_args(argv)
    variables, config, tokenizer = load_run(a.workdir, a.data_dir)
    stream = sources.open_train(config, tokenizer)
    stream.restore(None, 0)
    batch = jax.device_get(stream.next_global(jax.sharding.SingleDeviceSharding(jax.devices()[0])))
    pos, w = batch["mlm_positions"], batch["mlm_weights"]
    ids, mask = batch["masked_input_ids"], batch["attention_mask"]
    text_cfg = text_tower.architecture_from_config(config.model)
    run_states = np.asarray(Bert(text_cfg).apply({"params": variables["params"]["text"]}, ids, mask,
                                                 deterministic=True)[0])
    image = np.asarray(plip_jax.from_pretrained(a.workdir).encode_images(batch["image"]))
    ln = {k: np.asarray(v) for k, v in variables["params"]["iap"]["resblocks_0"]["ln_1"].items()}
    fused = layer_norm(run_states + image[:, None, :], ln["scale"], ln["bias"])
    out = {"masked_tokens": int((w > 0).sum()), "run_tower": position_cosine(run_states, pos, w),
           "fused_ln_1": position_cosine(fused, pos, w)}
    print(f"{a.workdir}: one training batch, {out['masked_tokens']} masked tokens; "
          f"mean cosine between the masked positions of a caption:")
    if a.shipped != "none":
        shipped_cfg, folder = text_tower.resolve(a.shipped)
        shipped, _ = text_weights.load_params(folder)
        shipped_states = np.asarray(Bert(shipped_cfg).apply({"params": shipped}, ids, mask, deterministic=True)[0])
        out["shipped_tower"] = position_cosine(shipped_states, pos, w)
        print(f"  {a.shipped} as shipped{'':<{max(0, 16 - len(a.shipped))}}{out['shipped_tower']:.3f}")
    print(f"  the run's text tower        {out['run_tower']:.3f}")
    print(f"  + image (add), IAP ln_1     {out['fused_ln_1']:.3f}")
    out["image_norm"] = float(np.linalg.norm(image, axis=1).mean())
    out["token_norm"] = float(np.linalg.norm(run_states[mask > 0], axis=1).mean())
    print(f"  |image embedding| {out['image_norm']:.1f} vs |token state| {out['token_norm']:.1f} (means)")
    return out


if __name__ == "__main__":
    main()
