"""CLI between plip-jax checkpoints and the official PyTorch layout (docs/contracts.md "Architecture JSON").

  python -m plip_jax.convert to-torch --checkpoint PATH --out FILE.pth.tar [--bert-dir DIR]
         [--no-position-ids] [--safetensors]
  python -m plip_jax.convert from-torch --torch FILE.pth.tar --out DIR [--image-heads N] [--text-heads N]

`from-torch` writes DIR/{config.json, variables.safetensors, tokenizer/}, loadable with
`plip_jax.from_pretrained(DIR)`. Errors are printed as one line; the exit code is then 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from plip_jax.convert.mapping import ConversionError, count_parameters, flax_to_torch
from plip_jax.convert.torch_io import TEXT_PREFIX, CheckpointError
from plip_jax.core.cli import ArgumentParser


def _parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="python -m plip_jax.convert", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("to-torch", help="export to the official FILE.pth.tar (+ FILE.json)")
    t.add_argument("--checkpoint", required=True,
                   help="workdir, Orbax step dir, from-torch folder, or official .pth.tar")
    t.add_argument("--out", required=True, help="output FILE.pth.tar")
    t.add_argument("--bert-dir", help="also write the text tower as a HF BertModel folder here")
    t.add_argument("--no-position-ids", action="store_true",
                   help="omit encoder.embeddings.position_ids (strict loads with transformers>=4.31)")
    t.add_argument("--safetensors", action="store_true", help="also write FILE.safetensors")
    f = sub.add_parser("from-torch", help="import an official .pth.tar into a plip-jax folder")
    f.add_argument("--torch", required=True, help="official FILE.pth.tar or FILE.safetensors")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--image-heads", type=int, help="attention-pool heads when there is no FILE.json (default 8)")
    f.add_argument("--text-heads", type=int, help="BERT heads when there is no FILE.json (default hidden/64)")
    f.add_argument("--recipe", choices=("release", "paper_v2"), help="override the stored recipe")
    from plip_jax.core.cli import add_debug_flag

    for p in (t, f):
        add_debug_flag(p)
    return ap


def _summary(label: str, sd: dict) -> str:
    return f"  {label}: {len(sd)} tensors, {count_parameters(sd):,} parameters"


def to_torch(args: argparse.Namespace) -> None:
    """Load any plip-jax checkpoint and write it in the official PyTorch layout."""
    from plip_jax.api import from_pretrained
    from plip_jax.convert.torch_io import save_hf_bert, save_official
    from plip_jax.models.bert import BertConfig

    m = from_pretrained(args.checkpoint)
    image = {"params": m.variables["params"]["image"], "batch_stats": m.variables["batch_stats"]["image"]}
    img_sd = flax_to_torch(image, prefix="", kind="image")
    txt_sd = flax_to_torch({"params": m.variables["params"]["text"]}, prefix=TEXT_PREFIX, kind="text",
                           position_ids=not args.no_position_ids)
    written = save_official(args.out, img_sd, txt_sd, m.config, safetensors=args.safetensors)
    if args.bert_dir:
        written += save_hf_bert(args.bert_dir, m.variables["params"]["text"],
                                BertConfig.from_dict(m.config["text"]), tokenizer=m.tokenizer)
    print(f"wrote official PLIP checkpoint (recipe {m.config['recipe']}):")
    print(_summary("ImgEncoder_state_dict", img_sd))
    print(_summary("TxtEncoder_state_dict", txt_sd))
    for p in written:
        print(f"  {p}")


def from_torch(args: argparse.Namespace) -> None:
    """Read an official checkpoint and write a folder `from_pretrained` loads."""
    from plip_jax.api import from_official

    m = from_official(args.torch, recipe=args.recipe, image_heads=args.image_heads, text_heads=args.text_heads)
    written = m.save_pretrained(args.out)
    img = {"params": m.variables["params"]["image"], "batch_stats": m.variables["batch_stats"]["image"]}
    print(f"wrote plip-jax folder (recipe {m.config['recipe']}, image {m.config['image']['layers']} "
          f"width {m.config['image']['width']}, text {m.config['text']['num_hidden_layers']} layers):")
    print(_summary("image", flax_to_torch(img, kind="image")))
    print(_summary("text", flax_to_torch({"params": m.variables["params"]["text"]}, kind="text",
                                         position_ids=False)))
    for p in written:
        print(f"  {p}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 on a conversion or input error)."""
    from plip_jax.core.cli import reraise_if_debug

    args = _parser().parse_args(argv)
    try:
        (to_torch if args.command == "to-torch" else from_torch)(args)
    except (CheckpointError, ConversionError, FileNotFoundError, NotADirectoryError, ImportError,
            ValueError, TypeError) as e:
        reraise_if_debug()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        reraise_if_debug()
        print(f"error: {Path(getattr(e, 'filename', '') or '')}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from plip_jax.core.checkpoint import CheckpointError as OrbaxCheckpointError
    from plip_jax.core.cli import run_cli

    sys.exit(run_cli(main, known=(OrbaxCheckpointError, CheckpointError, ConversionError, ImportError)))
