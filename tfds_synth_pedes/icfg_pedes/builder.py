"""TFDS builder `icfg_pedes`: official train/test splits from the JSON (ICFG-PEDES has no val split);
config `procedural` renders a shifted stand-in in that layout (tfds_synth_pedes.shifted, style B)."""

from __future__ import annotations

from tfds_synth_pedes import cameras, ingest
from tfds_synth_pedes.manual_builder import ManualCaptionBuilder


class IcfgPedes(ManualCaptionBuilder):
    """ICFG-PEDES: 4,102 ids from MSMT17, one caption per image. Splits: `train`, `test` (no `val`)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
ICFG-PEDES is released on request by its authors (Ding et al., SSAN 2021): see
https://github.com/zifyloo/SSAN . Put
  <manual_dir>/ICFG_PEDES.json  (or ICFG-PEDES.json; entries: split, captions, file_path, processed_tokens, id)
  <manual_dir>/imgs/            (file_path is relative to it; the split comes from the JSON, not the folders)
(or the same inside <manual_dir>/ICFG-PEDES/). The dataset has no val split: use `test` or carve one from `train`.
No download needed for the rendered stand-in: --config procedural.
"""
    HOMEPAGE = "https://github.com/zifyloo/SSAN"
    ANNOTATION_FILES = ("ICFG_PEDES.json", "ICFG-PEDES.json")
    DATASET_FOLDERS = ("ICFG-PEDES", "ICFG_PEDES")
    SCHEMA = ingest.Schema(splits=("train", "test"), camera_from_path=cameras.msmt17_camera)
    PROCEDURAL_STYLE = "B"
