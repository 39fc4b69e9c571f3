"""Do the pretext tasks pull the shared encoders the same way? Per-task gradients of a :mini run's
checkpoint on real training batches: for each parameter group, the norm of each task's weighted
gradient (w_t * dL_t/dθ) and the cosine between tasks (negative = the tasks fight over it).

  python bench/probes/mini_task_grads.py runs/mini [STEP] [--batches N] [--data-dir DIR]

Also prints what IAP's head predicts on those batches (accuracy and the share of the single most
frequent prediction, "hair hair hair" collapse). Source of docs/ablations.md's task-conflict table.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from plip_jax.core import checkpoint as ckpt_lib  # noqa: E402
from plip_jax.data import sources  # noqa: E402
from plip_jax.data.tokenizer import load_tokenizer  # noqa: E402
from plip_jax.models import text_tower  # noqa: E402
from plip_jax.models.plip import build_model  # noqa: E402
from plip_jax.trainers.pretrain_step import compute_losses  # noqa: E402

GROUPS = (("image stem+layer1-3", r"image/(conv|bn|layer[123])"), ("image layer4", r"image/layer4"),
          ("image pool/proj", r"image/(attnpool|proj|fc|pool)"), ("text (trained)", r"text/"),
          ("tic head", r"tic/"), ("iap head", r"iap/"))


def _group(name: str) -> str:
    import re

    for label, pattern in GROUPS:
        if re.match(pattern, name):
            return label
    return "other"


def _flat(tree) -> dict[str, np.ndarray]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out["/".join(str(getattr(k, "key", k)) for k in path)] = np.asarray(leaf, np.float64).ravel()
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir")
    ap.add_argument("step", nargs="?", type=int)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--data-dir", default=None, help="TFDS data_dir (default: the run's config.data.data_dir)")
    a = ap.parse_args(argv)
    path = Path(a.workdir) / "checkpoints" / str(a.step) if a.step is not None else a.workdir
    variables, cfg_dict = ckpt_lib.restore_for_inference(path)
    config = ml_collections.ConfigDict(cfg_dict)
    if a.data_dir:
        config.data.data_dir = a.data_dir
    text_cfg = text_tower.architecture_from_config(config.model)
    model = build_model(config.model, text_cfg, ("ivlc", "tic", "iap"))
    weights = {"ivlc": 1.0, "tic": 0.02, "iap": 0.1}
    weights.update({k: float(v) for k, v in dict(config.losses.weights).items() if float(v) > 0})
    tokenizer = load_tokenizer(config.data.tokenizer_dir, max_length=config.data.max_length)
    data = sources.open_train(config, tokenizer)
    data.restore(None, 0)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def task_losses(params, batch):
        outputs, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, batch,
                                 train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
        _, metrics = compute_losses(outputs, batch, config.losses)
        return metrics, outputs

    tasks = tuple(weights)

    def grads_and_outputs(params, batch):
        """Each task's weighted gradient and the forward outputs, in one program."""
        grads = {t: jax.grad(lambda p, t=t: weights[t] * task_losses(p, batch)[0][f"loss_{t}"])(params)
                 for t in tasks}
        return grads, task_losses(params, batch)[1]

    grads_and_outputs = jax.jit(grads_and_outputs)
    acc = collections.defaultdict(lambda: collections.defaultdict(float))
    preds, labels_all = [], []
    for _ in range(a.batches):
        batch = data.next_global(sharding)
        grads, out = grads_and_outputs(variables["params"], batch)
        flat = {t: _flat(grads[t]) for t in tasks}
        for name in flat["ivlc"]:
            g = _group(name)
            for t in weights:
                acc[g][f"sq_{t}"] += float(flat[t][name] @ flat[t][name])
            for s, t in (("ivlc", "iap"), ("ivlc", "tic"), ("tic", "iap")):
                acc[g][f"dot_{s}_{t}"] += float(flat[s][name] @ flat[t][name])
        w = np.asarray(out["iap_weights"]) > 0
        preds.append(np.asarray(out["iap_logits"]).argmax(-1)[w])
        labels_all.append(np.asarray(out["iap_labels"])[w])
    print(f"{a.workdir} step {a.step or 'latest'}: {a.batches} training batches, loss weights {weights}")
    head = f"{'group':<22}" + "".join(f"{'|g_' + t + '|':>12}" for t in weights) + \
        f"{'cos(ivlc,iap)':>15}{'cos(ivlc,tic)':>15}{'cos(tic,iap)':>14}"
    print(head)
    result: dict = {"weights": weights, "groups": {}}
    for label, _ in GROUPS:
        if label not in acc:
            continue
        s = acc[label]
        norm = {t: np.sqrt(s[f"sq_{t}"]) for t in weights}
        cos = lambda x, y: s[f"dot_{x}_{y}"] / max(norm[x] * norm[y], 1e-30)  # noqa: E731
        print(f"{label:<22}" + "".join(f"{norm[t]:12.3e}" for t in weights)
              + f"{cos('ivlc', 'iap'):15.3f}{cos('ivlc', 'tic'):15.3f}{cos('tic', 'iap'):14.3f}")
        result["groups"][label] = {"norm": {t: float(norm[t]) for t in weights},
                                   "cos": {f"{x},{y}": float(cos(x, y))
                                           for x, y in (("ivlc", "iap"), ("ivlc", "tic"), ("tic", "iap"))}}
    p, y = np.concatenate(preds), np.concatenate(labels_all)
    top, count = collections.Counter(p.tolist()).most_common(1)[0]
    result["iap"] = {"accuracy": float(100 * (p == y).mean()), "top_prediction_share": 100 * count / len(p)}
    print(f"IAP on these batches: accuracy {result['iap']['accuracy']:.1f}% of {len(y)} masked tokens; "
          f"most frequent prediction {tokenizer.decode([top])!r} = {result['iap']['top_prediction_share']:.1f}% "
          f"of predictions; distinct predictions {len(set(p.tolist()))}, distinct labels {len(set(y.tolist()))}")
    return result


if __name__ == "__main__":
    main()
