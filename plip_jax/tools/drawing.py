"""The drawing helper the tools share: rows of image tiles with headings, titles, captions and
true/false-match frames, saved as one PNG (search results, the report's retrieval and colorization)."""
from __future__ import annotations

import dataclasses
import os
import textwrap
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tile:
    """One picture of a result row: pixels, a title above, a caption below, an optional frame."""
    image: np.ndarray
    title: str = ""
    caption: str = ""
    mark: bool | None = None  # True: green frame (a true match), False: red, None: none


def save_figure(fig, out: str | os.PathLike, dpi: int) -> None:
    """fig.savefig, where text in a script the font lacks draws as boxes without a warning line."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font")
        fig.savefig(out, dpi=dpi)


def draw_rows(rows: Sequence[tuple[str, Sequence[Tile]]], out: str | os.PathLike, dpi: int = 80,
              tile_size: tuple[float, float] = (1.25, 2.6)) -> Path:
    """A PNG with one block per row: the heading text on top, its tiles side by side below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("nothing to draw: no rows")
    k = max(max((len(t) for _, t in rows), default=1), 1)
    fig = plt.figure(figsize=(max(tile_size[0] * k, 5.0), tile_size[1] * len(rows)), dpi=dpi)
    subfigs = np.atleast_1d(fig.subfigures(len(rows), 1))
    for sf, (heading, tiles) in zip(subfigs, rows):
        lines = textwrap.wrap(heading, width=max(int(13 * k), 40))[:3]
        sf.suptitle("\n".join(lines), fontsize=9)
        axes = np.atleast_1d(sf.subplots(1, k))
        sf.subplots_adjust(top=0.86 - 0.07 * len(lines), bottom=0.07, left=0.02, right=0.98, wspace=0.08)
        for ax in axes:
            ax.set_axis_off()
        for ax, t in zip(axes, tiles):
            ax.imshow(t.image, interpolation="nearest")
            ax.set_title(t.title, fontsize=8)
            if t.caption:
                ax.text(0.5, -0.04, t.caption, transform=ax.transAxes, ha="center", va="top", fontsize=6)
            if t.mark is not None:
                ax.set_axis_on()
                ax.set_xticks([])
                ax.set_yticks([])
                for s in ax.spines.values():
                    s.set_color("#1a9e1a" if t.mark else "#d62728")
                    s.set_linewidth(3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out, dpi)
    plt.close(fig)
    return out
