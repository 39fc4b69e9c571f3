"""Evaluation run: embed a text-ReID split with a checkpoint, rank, print a paper-style table and
write WORKDIR/eval.json (keys R1, R5, R10, mAP (IRRA), mAP_official (PLIP's trapezoid), mINP in
percent, num_queries, num_gallery)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from plip_jax.core.errors import ConfigError
from plip_jax.core.metrics import print_table

REMOVED_AP = ("config.ap was removed: every result has both mAP (IRRA, what text-ReID papers report) "
              "and mAP_official (the official PLIP trapezoid AP); drop the key from the config")


def _data_cfg(config):
    import ml_collections

    name = config.dataset
    cfg_name = config.dataset_config or ("procedural" if name == "synth_pedes" else "default")
    return ml_collections.ConfigDict(dict(
        name=name, config=cfg_name, data_dir=config.data_dir, manual_dir=config.manual_dir,
        procedural=config.procedural.to_dict() if hasattr(config.procedural, "to_dict") else dict(config.procedural)))


def run(config, workdir: str | Path) -> dict:
    """Evaluate `config.checkpoint` on `config.dataset`/`config.split`."""
    from plip_jax.api import from_pretrained
    from plip_jax.data import sources as data_setup
    from plip_jax.data.pipeline import load_eval_split
    from plip_jax.evals.retrieval import retrieval_metrics

    if not config.checkpoint:
        raise ConfigError("set --config.checkpoint=PATH (a workdir, an Orbax step dir or an official .pth.tar)")
    if "ap" in config:
        raise ConfigError(REMOVED_AP)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_cfg = _data_cfg(config)
    data_setup.validate(data_cfg)
    t0 = time.time()
    model = from_pretrained(config.checkpoint, **({"recipe": config.recipe} if config.recipe else {}))
    size = tuple(model.config["image"]["input_size"])
    source = data_setup.open_source(data_cfg, config.split, decode_images=False)
    split = load_eval_split(source, model.tokenizer, size, max_items=int(config.max_items) or None)
    img = model.encode_images(split["images"], batch_size=int(config.batch_size)) \
        if _accepts_batch_size(model.encode_images) else model.encode_images(split["images"])
    txt = model.encode_texts(split["captions"])
    metrics = retrieval_metrics(txt, img, split["caption_ids"], split["image_ids"])
    result = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in metrics.items()}
    result.update(dataset=f"{data_cfg.name}/{data_cfg.config}", split=config.split,
                  checkpoint=str(config.checkpoint), seconds=round(time.time() - t0, 1))
    (workdir / "eval.json").write_text(json.dumps(result, indent=2))
    print_table(f"Text-to-image retrieval: {result['dataset']} {config.split} "
                f"({result['num_queries']} queries, {result['num_gallery']} images)", {config.split: result})
    return result


def _accepts_batch_size(fn) -> bool:
    import inspect

    try:
        return "batch_size" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


if __name__ == "__main__":  # the evaluation runs through plip_jax.main; say so instead of exiting 0
    import sys

    print("error: evaluation runs through plip_jax.main: python -m plip_jax.main --config "
          "configs/eval_text_reid.py --config.checkpoint=WORKDIR_OR_PTH --workdir DIR", file=sys.stderr)
    sys.exit(2)
