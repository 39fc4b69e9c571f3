"""Run metrics: metrics.jsonl + TensorBoard events (process 0), device metrics to host floats, and
the paper-style retrieval table every run prints."""
from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import numpy as np


class MetricWriter:
    """metrics.jsonl (one JSON object per logged step) + TensorBoard events, process 0 only."""

    def __init__(self, workdir: Path, enabled: bool):
        self.enabled = enabled
        self.tb = None
        if enabled:
            self.file = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(str(workdir / "tensorboard"))
            except ImportError:  # pragma: no cover - optional
                self.tb = None

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": int(step), **metrics}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, int(step))

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def host_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


RETRIEVAL_COLUMNS = ("R1", "R5", "R10", "mAP", "mAP_official", "mINP")


def print_table(title: str, rows: dict[str, dict[str, float]], cols: tuple[str, ...] = RETRIEVAL_COLUMNS,
                label: str = "split") -> str:
    """A small paper-style table, one row per split (or model): by default R@1/R@5/R@10/mAP (IRRA)/
    mAP_official (PLIP's trapezoid)/mINP; a fine-tune passes its task's columns."""
    first = max([10, len(label) + 1] + [len(name) + 2 for name in rows])
    lines = [title, f"{label:<{first}}" + "".join(f"{c:>{max(9, len(c) + 1)}}" for c in cols)]
    for name, m in rows.items():
        lines.append(f"{name:<{first}}" + "".join(f"{m.get(c, float('nan')):>{max(9, len(c) + 1)}.2f}" for c in cols))
    text = "\n".join(lines)
    print(text, flush=True)
    return text
