"""Does the TIC gray pass spoil the image encoder's BatchNorm running statistics?

Evaluates a pre-training run's text->image R@1 as saved, then re-estimates the BatchNorm running
statistics from colour training images only (--batches forward passes in train mode over the run's
own training stream, weights unchanged) and evaluates again. How the gray-pass bug of
docs/contracts.md was found (docs/ablations.md).

  python bench/probes/mini_bn_check.py runs/mini [--data-dir /tmp/pd] [--split val] [--batches 60]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_run import load_run  # noqa: E402

from plip_jax.data import sources, transforms  # noqa: E402
from plip_jax.evals.embed import Embedder  # noqa: E402
from plip_jax.evals.tasks import text_reid_eval  # noqa: E402
from plip_jax.models.plip import PLIP  # noqa: E402
from plip_jax.trainers import build  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir", help="a pre-training workdir (or one of its checkpoints/<step> folders)")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir (default: the run's config.data.data_dir)")
    p.add_argument("--split", default="val")
    p.add_argument("--batches", type=int, default=60, help="training batches the statistics are re-estimated on")
    p.add_argument("--eval-batch-size", type=int, default=128)
    a = p.parse_args(argv)
    variables, config, tok = load_run(a.workdir, a.data_dir)
    model, _, _ = build.pretrain_model(config)
    split = sources.open_eval(config, tok, a.split)
    emb = Embedder.for_plip(model, a.eval_batch_size)
    out = {"as_saved": float(text_reid_eval(emb, variables, split)["R1"])}
    print("as saved:", round(out["as_saved"], 2), flush=True)

    @jax.jit
    def update(v, img):
        _, mut = model.apply(v, transforms.normalize(img), train=True, method=PLIP.encode_image,
                             mutable=["batch_stats"])
        return {**v, "batch_stats": mut["batch_stats"]}

    stream = sources.open_train(config, tok)
    stream.restore(None, 0)
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    v = dict(variables)
    for _ in range(a.batches):
        v = update(v, stream.next_global(one_device)["image"])
    out["colour_only_bn_stats"] = float(text_reid_eval(emb, jax.device_get(v), split)["R1"])
    print("colour-only BN stats:", round(out["colour_only_bn_stats"], 2), flush=True)
    return out


if __name__ == "__main__":
    main()
