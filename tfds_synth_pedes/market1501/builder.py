"""TFDS builder `market1501` from the official Market-1501 folders; shared by `dukemtmc`.

Splits: train (bounding_box_train), query (query), gallery (bounding_box_test). Person id and
camera come from the file name `PPPP_cCsS_FFFFFF_NN.jpg`. Protocol (Market devkit): gallery
images with id -1 are junk, kept with id -1 so that `plip_jax.evals.reid.reid_metrics` ignores
them; id 0000 are distractors, kept as ordinary negatives; the same id seen by the query's camera
is junk at evaluation time. Training uses only ids >= 1 (junk/distractors are left out, as BoT).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from tfds_synth_pedes import ingest

_NAME = re.compile(r"^(-?\d+)_c(\d+)")


def parse_name(name: str) -> tuple[int, int]:
    """(person id, camera) of a Market/Duke file name; ValueError when it does not match."""
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"file name {name!r} does not start with '<id>_c<camera>'")
    return int(m.group(1)), int(m.group(2))


def reid_features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
        "id": tfds.features.Scalar(dtype=np.int64),
        "camera_id": tfds.features.Scalar(dtype=np.int64),
        "file_path": tfds.features.Text(),
    })


class ReidFolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Market-style folders of person crops -> train/query/gallery splits."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Official train/query/gallery folders, ids and cameras from file names."}
    DATASET_FOLDERS: tuple[str, ...] = ()
    SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}

    def __init__(self, *, skip_bad: bool = False, **kwargs) -> None:
        self.skip_bad = skip_bad
        self.skipped: list[ingest.BadEntry] = []
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(features=reid_features(), homepage=getattr(self, "HOMEPAGE", None))

    def _root(self, dl_manager) -> Path:
        try:
            manual = Path(dl_manager.manual_dir)
        except AssertionError as e:
            raise ingest.DatasetError(str(e)) from None
        for cand in [manual, *(manual / f for f in self.DATASET_FOLDERS)]:
            if all((cand / d).is_dir() for d in self.SPLIT_FOLDERS.values()):
                return cand
        raise ingest.DatasetError(f"{manual} lacks the folders {sorted(self.SPLIT_FOLDERS.values())}.\n"
                                  f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

    def _entries(self, folder: Path, split: str) -> list[tuple[str, Path, int, int]]:
        out, bad = [], []
        for i, path in enumerate(sorted(folder.glob("*.jpg"))):
            try:
                pid, cam = parse_name(path.name)
                ingest.check_image_file(path)
            except (ValueError, ingest.DatasetError) as e:
                bad.append(ingest.BadEntry(i, f"{folder.name}/{path.name}", str(getattr(e, "message", e))))
                continue
            if split == "train" and pid <= 0:
                continue  # junk (-1) and distractors (0) never train
            out.append((f"{folder.name}/{path.name}", path, pid, cam))
        ingest.resolve_bad(bad, self.skip_bad, str(folder))
        self.skipped.extend(bad)
        if not out:
            raise ingest.DatasetError(f"{folder} holds no usable '<id>_c<camera>...jpg' images")
        return out

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        return {s: self._generate_examples(self._entries(root / d, s)) for s, d in self.SPLIT_FOLDERS.items()}

    def _generate_examples(self, entries) -> Iterator[tuple[str, dict]]:
        for rel, path, pid, cam in entries:
            yield rel, {"image": ingest.read_image_bytes(path), "id": pid, "camera_id": cam, "file_path": rel}


class Market1501(ReidFolderBuilder):
    """Market-1501: 1,501 ids, 6 cameras; 12,936 train / 3,368 query / 19,732 gallery images."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Market-1501 (Zheng et al., ICCV 2015). Put the extracted release so that
  <manual_dir>/bounding_box_train/  <manual_dir>/bounding_box_test/  <manual_dir>/query/
exist (or inside <manual_dir>/Market-1501-v15.09.15/). File names: 0002_c1s1_000451_03.jpg.
"""
    HOMEPAGE = "https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html"
    DATASET_FOLDERS = ("Market-1501-v15.09.15", "Market-1501", "market1501")
