"""TFDS builder `peta` from `PETA.mat` (the DeepMAR / "Rethinking PAR" release) + `images/`.

`peta[0][0][0]` is the (19000, 4 + 105) label matrix (4 leading index columns), `peta[0][0][1]`
the 105 attribute names, `peta[0][0][3]` the 5 random partitions {train, val, test} (1-based rows).
The 35 evaluated attributes are the first 35; partition `PARTITION` (0) is used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tfds_synth_pedes import ingest
from tfds_synth_pedes.pa100k.builder import AttributeMatBuilder, load_mat, mat_text


class Peta(AttributeMatBuilder):
    """PETA: 19,000 images, 35 evaluated binary attributes, 9,500/1,900/7,600 train/val/test."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
PETA (Deng et al., ACM MM 2014), in the DeepMAR release. Put
  <manual_dir>/PETA.mat      <manual_dir>/images/   (00001.png ... 19000.png)
(or inside <manual_dir>/PETA/ or <manual_dir>/peta/).
"""
    HOMEPAGE = "http://mmlab.ie.cuhk.edu.hk/projects/PETA.html"
    NUM_ATTRIBUTES = 35
    ANNOTATION_FILE = "PETA.mat"
    IMAGE_SUBDIR = "images"
    DATASET_FOLDERS = ("PETA", "peta")
    PARTITION = 0
    LABEL_OFFSET = 4

    def read(self, annotation: Path):
        m = load_mat(annotation)
        if "peta" not in m:
            raise ingest.DatasetError(f"{annotation} has no 'peta' struct (is it the DeepMAR PETA.mat?)")
        p = m["peta"][0][0]
        raw = np.asarray(p[0])
        names = [mat_text(a) for a in np.asarray(p[1]).reshape(-1)][: self.NUM_ATTRIBUTES]
        labels = raw[:, self.LABEL_OFFSET: self.LABEL_OFFSET + self.NUM_ATTRIBUTES]
        part = np.asarray(p[3]).reshape(-1)[self.PARTITION][0][0]
        splits = {s: np.asarray(part[i]).reshape(-1).astype(np.int64) - 1 for i, s in enumerate(("train", "val", "test"))}
        images = [f"{i + 1:05d}.png" for i in range(len(raw))]
        return names, images, labels.astype(np.int64), splits
