"""TFDS builder `synth_pedes`: config `full` (the released SYNTH-PEDES) and `procedural` (rendered).

`procedural` renders the released layout into the download dir, then runs exactly the `full`
ingest on it, so the real data's code path runs on every procedural build. `full` puts every
identity in `train`, as the paper pre-trains on all of SYNTH-PEDES; `procedural` holds out
200 + 200 identities by default. Either takes the builder params num_val_ids / num_test_ids:
that many identities, chosen by a stable hash of the id, go to
`val` / `test` (disjoint from train and from each other) for zero-shot monitoring and selection.
A non-default config is named after its params (`full_v10_t5`), and that name can be passed back
as the config (`--config.data.config=full_v10_t5`). `image_size=(H, W)` is the stored image size:
`procedural` renders at it, `full` resizes every image to it at build time (`full_h256_w128`, JPEG
q95), so training at that size skips the resize and decodes small images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds
from tqdm import tqdm

from tfds_synth_pedes import config_names, ingest
from tfds_synth_pedes.manual_builder import ManualCaptionBuilder
from tfds_synth_pedes.synth_pedes import procedural

_INSTRUCTIONS = """\
SYNTH-PEDES (PLIP, NeurIPS 2024) is distributed by its authors, not downloadable by TFDS.
Get it from https://github.com/Zplusdragon/PLIP (README, "SYNTH-PEDES": Baidu Yun / Baidu pan
link and extraction code), extract every part, and arrange the manual dir as
  <manual_dir>/synthpedes_dataset.json
  <manual_dir>/Part1/ ... <manual_dir>/Part11/
(or the same inside <manual_dir>/SYNTH-PEDES/). Then run
  python -m tfds_synth_pedes.build synth_pedes --config full --data_dir D --manual_dir <manual_dir>
No download needed for the rendered stand-in: --config procedural.
"""


@dataclasses.dataclass(eq=False)
class SynthPedesConfig(tfds.core.BuilderConfig):
    """`procedural` renders; held-out val/test identity counts apply to both configs (see
    `_BASE_DEFAULTS` for each base's defaults). image_height/width: the rendered size (procedural)
    or the size `full` stores its images at (0: as released)."""

    procedural: bool = False
    num_identities: int = 2000
    images_per_identity: int = 6
    image_height: int = 128
    image_width: int = 64
    seed: int = 0
    num_cameras: int = 6
    num_val_ids: int = 0
    num_test_ids: int = 0


# Parameter -> short tag used in the name of a non-default config.
_TAGS = {
    "num_identities": "n", "images_per_identity": "k", "image_height": "h", "image_width": "w",
    "seed": "s", "num_cameras": "c", "num_val_ids": "v", "num_test_ids": "t",
}
_PROCEDURAL_ONLY = ("num_identities", "images_per_identity", "seed", "num_cameras")
_DEFAULTS = SynthPedesConfig(name="defaults")
# Held-out identities by default: none for `full` (the paper trains on every identity), 200 + 200
# for `procedural` (the stand-in monitors zero-shot retrieval on its own identities). `full` keeps
# the released image sizes unless image_size is given (resize at build).
_BASE_DEFAULTS = {"full": dict(num_val_ids=0, num_test_ids=0, image_height=0, image_width=0),
                  "procedural": dict(num_val_ids=200, num_test_ids=200)}
# `full` 1.1.0: every identity in train unless asked (1.0.0 held out 200 + 200 by default).
_FULL_VERSION = "1.1.0"
_FULL_NOTES = {"1.1.0": "Every identity in train by default; val/test only via num_val_ids/num_test_ids.",
               "1.0.0": "First release: 200 val + 200 test identities held out."}


def parse_config_name(name: str) -> tuple[str, dict[str, int]]:
    """'full_v10_t5' -> ('full', {'num_val_ids': 10, 'num_test_ids': 5}): the inverse of the names
    `make_config` gives, so a built non-default config can be named in a run's config."""
    parsed = config_names.parse(name, _TAGS)
    if parsed is None or (parsed[1] and parsed[0] not in _BASE_DEFAULTS):
        raise ingest.DatasetError(
            f"synth_pedes has configs 'full' and 'procedural' (optionally with param tags, e.g. "
            f"'full_v10_t5'), not {name!r}")
    return parsed


def make_config(base: str, **params: Any) -> SynthPedesConfig:
    """The config `base` ('full'|'procedural', or a name `make_config` gave) with `params`; a
    non-default one gets a unique name."""
    base, named = parse_config_name(base)
    if base not in _BASE_DEFAULTS:
        raise ingest.DatasetError(f"synth_pedes has configs 'full' and 'procedural', not {base!r}")
    params = config_names.merge(named, params)
    allowed = tuple(_TAGS) if base == "procedural" else ("num_val_ids", "num_test_ids", "image_height", "image_width")
    if base == "full" and ("image_height" in params) != ("image_width" in params):
        raise ingest.DatasetError("synth_pedes/full resizes at build only with both image_height and image_width "
                                  "(or image_size=HxW)")
    for key in params:
        if key not in allowed:
            hint = " (procedural only)" if key in _PROCEDURAL_ONLY else ""
            raise ingest.DatasetError(f"unknown parameter {key!r}{hint} for synth_pedes/{base}; allowed: {allowed}")
    config_names.check_counts(params)
    defaults = {k: getattr(_DEFAULTS, k) for k in _TAGS} | _BASE_DEFAULTS[base]
    params = {**_BASE_DEFAULTS[base], **params}
    name, changed = config_names.tagged_name(base, params, defaults, _TAGS)
    version = dict(version=_FULL_VERSION, release_notes=_FULL_NOTES) if base == "full" else {}
    return SynthPedesConfig(name=name, procedural=base == "procedural", description=f"{base} {changed or 'defaults'}",
                            **version, **params)


def heldout_ids(ids: Sequence[int], num_val: int, num_test: int) -> tuple[set[int], set[int]]:
    """(val ids, test ids): the identities with the smallest stable hash; the rest train (all of
    them when both counts are 0)."""
    unique = sorted(set(ids), key=lambda i: hashlib.sha256(f"synth_pedes/{i}".encode()).digest())
    if len(unique) <= num_val + num_test:
        raise ingest.DatasetError(
            f"the dataset has {len(unique)} identities, too few for {num_val} val + {num_test} test held-out "
            "identities; lower num_val_ids/num_test_ids"
        )
    return set(unique[num_test : num_test + num_val]), set(unique[:num_test])


class SynthPedes(ManualCaptionBuilder):
    """SYNTH-PEDES (released layout) and its procedural stand-in."""

    BUILDER_CONFIGS = [
        SynthPedesConfig(name="procedural", procedural=True, description="Rendered pedestrians, SPAC-style captions.",
                         **_BASE_DEFAULTS["procedural"]),
        SynthPedesConfig(name="full", description="The released SYNTH-PEDES (manual download); every identity trains.",
                         version=_FULL_VERSION, release_notes=_FULL_NOTES, **_BASE_DEFAULTS["full"]),
    ]
    DEFAULT_CONFIG_NAME = "procedural"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    HOMEPAGE = "https://github.com/Zplusdragon/PLIP"
    ANNOTATION_FILES = (procedural.ANNOTATION_FILE,)
    DATASET_FOLDERS = ("SYNTH-PEDES",)
    IMAGE_SUBDIR = "."
    SCHEMA = ingest.Schema(synth=True)
    PROCEDURAL_STYLE = "synth"

    def _render(self, dl_manager: tfds.download.DownloadManager) -> Path:
        cfg = self.builder_config
        out = Path(dl_manager.download_dir) / "synth_pedes_procedural" / cfg.name
        total = cfg.num_identities * cfg.images_per_identity
        with tqdm(total=total, desc="Rendering procedural SYNTH-PEDES", unit=" images", file=sys.stderr) as bar:
            procedural.write_layout(
                out,
                num_identities=cfg.num_identities,
                images_per_identity=cfg.images_per_identity,
                image_height=cfg.image_height,
                image_width=cfg.image_width,
                seed=cfg.seed,
                num_cameras=cfg.num_cameras,
                progress=bar.update,
            )
        return out

    def _data_root(self, dl_manager: tfds.download.DownloadManager) -> Path:
        return self._render(dl_manager) if self.builder_config.procedural else self._manual_root(dl_manager)

    def stored_size(self) -> tuple[int, int] | None:
        """`full`: the build-time resize target, if any; `procedural` renders at its size already."""
        cfg = self.builder_config
        return None if cfg.procedural or not cfg.image_height else (cfg.image_height, cfg.image_width)

    def _assign_splits(self, entries: Sequence[ingest.Entry]) -> dict[str, list[ingest.Entry]]:
        cfg = self.builder_config
        val, test = heldout_ids([e.id for e in entries], cfg.num_val_ids, cfg.num_test_ids)
        out: dict[str, list[ingest.Entry]] = {"train": [], "val": [], "test": []}
        for e in entries:
            out["test" if e.id in test else "val" if e.id in val else "train"].append(e)
        return {k: v for k, v in out.items() if v}
