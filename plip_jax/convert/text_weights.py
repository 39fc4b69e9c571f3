"""The pretrained text tower's weights: a HF BERT folder read into the Flax tree (optionally cut to
its first layers), and the one line that says what was loaded. `models.text_tower` says which folder."""
from __future__ import annotations

from pathlib import Path

from plip_jax.convert.torch_io import load_hf_bert


def load_params(folder: Path, num_layers: int | None = None) -> tuple[dict, dict]:
    """Flax params of a HF BERT folder, and the load report (ignored/initialised keys); with
    `num_layers`, only encoder layers 0..num_layers-1 are kept (the rest are reported as dropped)."""
    _, params, report = load_hf_bert(folder)
    if num_layers is not None:
        layers = params["encoder"]["layer"]
        dropped = sorted((k for k in layers if int(k) >= int(num_layers)), key=int)
        params = {**params, "encoder": {**params["encoder"],
                                        "layer": {k: v for k, v in layers.items() if int(k) < int(num_layers)}}}
        report = {**report, "dropped_layers": dropped}
    return params, report


def describe_load(report: dict) -> str:
    """One line saying where the text weights came from and what was skipped or initialised."""
    parts = [f"text tower: {report['tensors']} tensors from {report['source']}"]
    ignored = report.get("ignored", [])
    if ignored:
        heads = sorted({k.split(".")[0] + ".*" if k.startswith("cls.") else k for k in ignored})
        parts.append(f"ignored {len(ignored)} ({', '.join(heads)})")
    if report.get("initialized"):
        parts.append(f"initialised {', '.join(report['initialized'])}")
    if report.get("dropped_layers"):
        parts.append(f"dropped layers {','.join(report['dropped_layers'])}")
    return "; ".join(parts)
