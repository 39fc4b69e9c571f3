"""Evaluation run: embed a text-ReID split with a checkpoint, rank, print a paper-style table and
write WORKDIR/eval.json (keys R1, R5, R10, mAP (IRRA), mAP_official (PLIP's trapezoid), mINP in
percent, num_queries, num_gallery)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from plip_jax.core.errors import ConfigError
from plip_jax.core.metrics import print_table

REMOVED_AP = ("config.ap was removed: every result has both mAP (IRRA, what text-ReID papers report) "
              "and mAP_official (the official PLIP trapezoid AP); drop the key from the config")


def run(config, workdir: str | Path) -> dict:
    """Evaluate `config.checkpoint` on `config.dataset`/`config.split`."""
    from plip_jax.api import from_pretrained
    from plip_jax.data import sources
    from plip_jax.data.pipeline import load_eval_split
    from plip_jax.evals.tasks import text_reid_eval

    if not config.checkpoint:
        raise ConfigError("set --config.checkpoint=PATH (a workdir, an Orbax step dir or an official .pth.tar)")
    if "ap" in config:
        raise ConfigError(REMOVED_AP)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_cfg = sources.data_config(config.dataset, config.dataset_config, config.data_dir,
                                   config.manual_dir, config.procedural)
    sources.validate(data_cfg)
    t0 = time.time()
    model = from_pretrained(config.checkpoint, **({"recipe": config.recipe} if config.recipe else {}))
    size = tuple(model.config["image"]["input_size"])
    source = sources.open_source(data_cfg, config.split, decode_images=False)
    split = load_eval_split(source, model.tokenizer, size, max_items=int(config.max_items) or None,
                            max_length=int(model.config["max_length"]))
    result = text_reid_eval(model.embedder(int(config.batch_size)), model.variables, split)
    result.update(dataset=f"{data_cfg.name}/{data_cfg.config}", split=config.split,
                  checkpoint=str(config.checkpoint), seconds=round(time.time() - t0, 1))
    (workdir / "eval.json").write_text(json.dumps(result, indent=2))
    print_table(f"Text-to-image retrieval: {result['dataset']} {config.split} "
                f"({result['num_queries']} queries, {result['num_gallery']} images)", {config.split: result})
    return result


if __name__ == "__main__":  # the evaluation runs through plip_jax.main; say so instead of exiting 0
    import sys

    print("error: evaluation runs through plip_jax.main: python -m plip_jax.main --config "
          "configs/eval_text_reid.py --config.checkpoint=WORKDIR_OR_PTH --workdir DIR", file=sys.stderr)
    sys.exit(2)
