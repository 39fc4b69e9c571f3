"""TFDS builder `cuhk_pedes` from the official `reid_raw.json` (splits train/val/test from the file);
config `procedural` renders a shifted stand-in in that layout (tfds_synth_pedes.shifted, style A)."""

from __future__ import annotations

from tfds_synth_pedes import cameras, ingest
from tfds_synth_pedes.manual_builder import ManualCaptionBuilder


class CuhkPedes(ManualCaptionBuilder):
    """CUHK-PEDES: 13,003 ids, 40,206 images, ~2 captions each; ids as in the file (train from 1)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
CUHK-PEDES is released on request by its authors (Li et al., CVPR 2017): see
https://github.com/ShuangLI59/Person-Search-with-Natural-Language-Description . Put
  <manual_dir>/reid_raw.json      (entries: split, captions, file_path, processed_tokens, id)
  <manual_dir>/imgs/              (cam_a, cam_b, CUHK01, CUHK03, Market, test_query, train_query)
(or the same inside <manual_dir>/CUHK-PEDES/). `caption_all.json` has no splits and is not accepted.
No download needed for the rendered stand-in: --config procedural.
"""
    HOMEPAGE = "https://github.com/ShuangLI59/Person-Search-with-Natural-Language-Description"
    ANNOTATION_FILES = ("reid_raw.json",)
    DATASET_FOLDERS = ("CUHK-PEDES",)
    SCHEMA = ingest.Schema(splits=("train", "val", "test"), camera_from_path=cameras.cuhk_pedes_camera)
    PROCEDURAL_STYLE = "A"
