"""The `procedural` builder config of `cuhk_pedes` (style A) and `icfg_pedes` (style B).

It renders the dataset's released layout (`world.write_layout`) into the download dir, and the
builder then runs its as-released ingest on that folder. Params (`DEFAULTS`) change the config name
(`procedural_n300_k2`), and such a name can be passed back as the config.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds
from tqdm import tqdm

from tfds_synth_pedes import config_names, ingest
from tfds_synth_pedes.shifted import world

# Param -> tag in the name of a non-default config.
TAGS = {"num_identities": "n", "images_per_identity": "k", "image_height": "h", "image_width": "w", "seed": "s",
        "num_cameras": "c", "num_val_ids": "v", "num_test_ids": "t"}
# Per style: the defaults (a mini fine-tune benchmark that builds in seconds). Style B (ICFG-PEDES)
# has no val split, as released; MSMT17 has 15 cameras.
DEFAULTS: dict[str, dict[str, int]] = {
    "A": dict(num_identities=1000, images_per_identity=4, image_height=128, image_width=64, seed=0,
              num_cameras=6, num_val_ids=200, num_test_ids=200),
    "B": dict(num_identities=1000, images_per_identity=4, image_height=128, image_width=64, seed=0,
              num_cameras=15, num_val_ids=0, num_test_ids=200),
}
MAX_IDENTITIES = 999_999  # below the gap between the styles' id offsets


@dataclasses.dataclass(eq=False)
class ShiftedConfig(tfds.core.BuilderConfig):
    """A rendered stand-in in `style`; the other fields are `world.write_layout`'s params."""

    style: str = "A"
    num_identities: int = 1000
    images_per_identity: int = 4
    image_height: int = 128
    image_width: int = 64
    seed: int = 0
    num_cameras: int = 6
    num_val_ids: int = 200
    num_test_ids: int = 200
    procedural: bool = True

    def params(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in TAGS}

    def render(self, download_dir: Path) -> Path:
        """Renders the released layout into download_dir (reused when already complete)."""
        out = Path(download_dir) / f"shifted_{self.style}" / self.name
        total = self.num_identities * self.images_per_identity
        with tqdm(total=total, desc=f"Rendering procedural style {self.style}", unit=" images", file=sys.stderr) as bar:
            return world.write_layout(out, style=self.style, progress=bar.update, **self.params())


def make_config(dataset: str, style: str, name: str | None = None, **params: Any) -> ShiftedConfig:
    """The procedural config of `dataset` in `style` from its name ('procedural', or a tagged name
    this function gave) and params (`DEFAULTS[style]` keys, or image_size=(H, W))."""
    what = f"{dataset}/procedural: "
    parsed = config_names.parse(name or "procedural", TAGS)
    if parsed is None or parsed[0] != "procedural":
        tags = ", ".join(f"{t}<{k}>" for k, t in TAGS.items())
        raise ingest.DatasetError(f"{dataset}: a procedural config is named 'procedural', optionally with param "
                                  f"tags ({tags}), not {name!r}")
    defaults = DEFAULTS[style]
    values = {**defaults, **config_names.merge(parsed[1], params, what)}
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ingest.DatasetError(f"unknown parameter(s) {unknown} for {dataset}/procedural; allowed: "
                                  f"{tuple(defaults)} or image_size")
    config_names.check_counts(values, what)
    if style == "B" and values["num_val_ids"]:
        raise ingest.DatasetError(f"{dataset}/procedural has no val split (as released: train and test); "
                                  "leave num_val_ids out or 0")
    if values["num_identities"] > MAX_IDENTITIES:
        raise ingest.DatasetError(f"{dataset}/procedural: num_identities must be <= {MAX_IDENTITIES}")
    if values["num_val_ids"] + values["num_test_ids"] >= values["num_identities"]:
        raise ingest.DatasetError(
            f"{dataset}/procedural: {values['num_identities']} identities are too few for {values['num_val_ids']} "
            f"val + {values['num_test_ids']} test identities; lower num_val_ids / num_test_ids")
    config_name, changed = config_names.tagged_name("procedural", values, defaults, TAGS)
    return ShiftedConfig(name=config_name, description=f"rendered stand-in, style {style}: {changed or 'defaults'}",
                         style=style, **values)
