"""A picture of the domains side by side: one row of test images (and one caption) per procedural set.

    python -m tfds_synth_pedes.shifted.preview --data_dir D --out docs/shifted_example.png

Builds the default `procedural` config of each dataset named in --datasets when it is not built yet.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

TILE = (64, 128)  # width, height of one image in the grid
LABEL_W = 120
CAPTION_LINES = 3


def _image(example: dict[str, Any]) -> Image.Image:
    img = example["image"]
    if isinstance(img, bytes):
        return Image.open(io.BytesIO(img)).convert("RGB")
    return Image.fromarray(img).convert("RGB")


def _caption(example: dict[str, Any]) -> str:
    caps = example.get("captions", example.get("caption", b""))
    first = caps[0] if isinstance(caps, (list, tuple)) or getattr(caps, "ndim", 0) else caps
    return first.decode() if isinstance(first, bytes) else str(first)


def preview(rows: Sequence[tuple[str, Sequence[dict[str, Any]]]], out: str | Path, per_row: int = 10) -> Path:
    """Draws `per_row` images (evenly spaced through each source) and the first one's caption per row."""
    if not rows or per_row < 1:
        raise ValueError("preview needs at least one source and per_row >= 1")
    chars = (LABEL_W + per_row * TILE[0]) // 6
    row_h = TILE[1] + 12 * CAPTION_LINES + 8
    sheet = Image.new("RGB", (LABEL_W + per_row * TILE[0], row_h * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, source) in enumerate(rows):
        n = len(source)
        if n == 0:
            raise ValueError(f"{label}: the split is empty")
        picks = [source[i * n // per_row] for i in range(min(per_row, n))]
        y = r * row_h
        draw.text((4, y + TILE[1] // 2 - 6), label, fill="black")
        for c, ex in enumerate(picks):
            sheet.paste(_image(ex).resize(TILE), (LABEL_W + c * TILE[0], y))
        for k, line in enumerate(textwrap.wrap(f'"{_caption(picks[0])}"', chars)[:CAPTION_LINES]):
            draw.text((4, y + TILE[1] + 4 + 12 * k), line, fill=(60, 60, 60))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from plip_jax.core.cli import ArgumentParser, add_debug_flag
    from tfds_synth_pedes import build as tb

    ap = ArgumentParser(prog="python -m tfds_synth_pedes.shifted.preview", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--datasets", default="synth_pedes,cuhk_pedes,icfg_pedes")
    ap.add_argument("--split", default="test")
    ap.add_argument("--per_row", type=int, default=10)
    add_debug_flag(ap)
    a = ap.parse_args(argv)
    rows = []
    for name in a.datasets.split(","):
        tb.build(name, "procedural", a.data_dir)
        rows.append((name, tb.data_source(name, "procedural", a.split, a.data_dir)))
    print(f"wrote {preview(rows, a.out, a.per_row)}")
    return 0


if __name__ == "__main__":
    import sys

    from plip_jax.core.cli import run_cli

    sys.exit(run_cli(main))  # DatasetError, ValueError, OSError: one line, exit 2
