"""TFDS builder `rap` (RAP v1) from `RAP_annotation/RAP_annotation.mat` + `RAP_dataset/`.

`RAP_annotation[0][0]`: [0] the 5 partitions {trainval, test} (1-based rows), [1] the (41585, 92)
label matrix, [5] image names, [6] attribute names. The standard 51 attributes are the first 51;
partition `PARTITION` (0): trainval -> split `train`, test -> `test`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tfds_synth_pedes import ingest
from tfds_synth_pedes.pa100k.builder import AttributeMatBuilder, load_mat, mat_text


class Rap(AttributeMatBuilder):
    """RAP v1: 41,585 images, 51 attributes, 33,268 train(val) / 8,317 test."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
RAP v1 (Li et al., 2016), released on request (http://rap.idealtest.org/). Put
  <manual_dir>/RAP_annotation/RAP_annotation.mat   <manual_dir>/RAP_dataset/  (the .png crops)
(or inside <manual_dir>/RAP/ or <manual_dir>/rap/).
"""
    HOMEPAGE = "http://rap.idealtest.org/"
    NUM_ATTRIBUTES = 51
    ANNOTATION_FILE = "RAP_annotation.mat"
    IMAGE_SUBDIR = "RAP_dataset"
    DATASET_FOLDERS = ("RAP_annotation", "RAP", "rap", "RAP/RAP_annotation", "rap/RAP_annotation")
    PARTITION = 0

    def _image_root(self, annotation: Path) -> Path:
        for cand in (annotation.parent / self.IMAGE_SUBDIR, annotation.parent.parent / self.IMAGE_SUBDIR):
            if cand.is_dir():
                return cand
        return annotation.parent / self.IMAGE_SUBDIR

    def read(self, annotation: Path):
        m = load_mat(annotation)
        if "RAP_annotation" not in m:
            raise ingest.DatasetError(f"{annotation} has no 'RAP_annotation' struct")
        a = m["RAP_annotation"][0][0]
        labels = np.asarray(a[1])[:, : self.NUM_ATTRIBUTES]
        images = [mat_text(x) for x in np.asarray(a[5]).reshape(-1)]
        names = [mat_text(x) for x in np.asarray(a[6]).reshape(-1)][: self.NUM_ATTRIBUTES]
        part = np.asarray(a[0]).reshape(-1)[self.PARTITION][0][0]
        splits = {"train": np.asarray(part[0]).reshape(-1).astype(np.int64) - 1,
                  "test": np.asarray(part[1]).reshape(-1).astype(np.int64) - 1}
        return names, images, labels.astype(np.int64), splits
