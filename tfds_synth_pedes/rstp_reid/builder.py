"""TFDS builder `rstp_reid` from `data_captions.json` (note: `img_path`, not `file_path`)."""

from __future__ import annotations

from tfds_synth_pedes import cameras, ingest
from tfds_synth_pedes.manual_builder import ManualCaptionBuilder


class RstpReid(ManualCaptionBuilder):
    """RSTPReid: 4,101 ids from MSMT17, 5 images per id, 2 captions per image; camera from the name."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
RSTPReid is released by its authors (Zhu et al., DSSL 2021): see
https://github.com/NjtechCVLab/RSTPReid-Dataset . Put
  <manual_dir>/data_captions.json  (entries: id, img_path, captions, split)
  <manual_dir>/imgs/               (img_path is relative to it)
(or the same inside <manual_dir>/RSTPReid/).
"""
    HOMEPAGE = "https://github.com/NjtechCVLab/RSTPReid-Dataset"
    ANNOTATION_FILES = ("data_captions.json",)
    DATASET_FOLDERS = ("RSTPReid",)
    SCHEMA = ingest.Schema(path_key="img_path", splits=("train", "val", "test"), camera_from_path=cameras.rstp_camera)
