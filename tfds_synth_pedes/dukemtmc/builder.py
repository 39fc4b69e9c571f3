"""TFDS builder `dukemtmc` (DukeMTMC-reID): the Market-style folder layout, names PPPP_cC_fFFFFFFF.jpg."""
from __future__ import annotations

from tfds_synth_pedes.market1501.builder import ReidFolderBuilder


class DukeMtmc(ReidFolderBuilder):
    """DukeMTMC-reID: 702 train ids / 702 test ids (+ 408 distractor ids in the gallery), 8 cameras.

    No junk images; gallery distractor ids are ordinary negatives. Withdrawn by its creators;
    only build it from a copy you are licensed to use.
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
DukeMTMC-reID (Zheng et al., ICCV 2017; withdrawn by its creators). Put
  <manual_dir>/bounding_box_train/  <manual_dir>/bounding_box_test/  <manual_dir>/query/
(or inside <manual_dir>/DukeMTMC-reID/). File names: 0001_c2_f0046182.jpg.
"""
    HOMEPAGE = "https://github.com/layumi/DukeMTMC-reID_evaluation"
    DATASET_FOLDERS = ("DukeMTMC-reID",)
