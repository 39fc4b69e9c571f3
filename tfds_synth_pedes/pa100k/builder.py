"""TFDS builder `pa100k` from the released `annotation.mat`; the base of the `peta` and `rap`
builders (MATLAB annotations -> image, attribute_labels, file_path).

Examples: image, id (the image's index: these datasets have no usable identity labels),
file_path, attribute_labels int8 (K,). Attribute names are stored in the dataset metadata
(`builder.info.metadata['attribute_names']`).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from tfds_synth_pedes import ingest


def mat_text(x) -> str:
    """A MATLAB char array as loadmat returns it inside cells ((1,) array of str, or nested)."""
    while isinstance(x, np.ndarray):
        if x.size == 0:
            return ""
        x = x.reshape(-1)[0]
    return str(x)


def load_mat(path: Path) -> dict:
    """scipy.io.loadmat with a one-line error for a missing or unreadable file."""
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except (OSError, ValueError, NotImplementedError) as e:  # v7.3 (HDF5) files raise NotImplementedError
        raise ingest.DatasetError(f"cannot read {path}: {e}") from None


class AttributeMatBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Annotation .mat + image folder -> splits of (image, attribute_labels)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Released annotation format, standard partition."}
    NUM_ATTRIBUTES = 0
    ANNOTATION_FILE = ""
    IMAGE_SUBDIR = ""
    DATASET_FOLDERS: tuple[str, ...] = ()

    def __init__(self, *, skip_bad: bool = False, **kwargs) -> None:
        self.skip_bad = skip_bad
        self.skipped: list[ingest.BadEntry] = []
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
                "id": tfds.features.Scalar(dtype=np.int64),
                "file_path": tfds.features.Text(),
                "attribute_labels": tfds.features.Tensor(shape=(self.NUM_ATTRIBUTES,), dtype=np.int8),
            }),
            metadata=tfds.core.MetadataDict(),
            homepage=getattr(self, "HOMEPAGE", None))

    def _annotation(self, dl_manager) -> Path:
        try:
            manual = Path(dl_manager.manual_dir)
        except AssertionError as e:
            raise ingest.DatasetError(str(e)) from None
        return ingest.find_annotation(manual, (self.ANNOTATION_FILE,), self.DATASET_FOLDERS,
                                      self.MANUAL_DOWNLOAD_INSTRUCTIONS)

    def read(self, annotation: Path) -> tuple[list[str], list[str], np.ndarray, dict[str, np.ndarray]]:
        """(attribute names, image names, labels (N, K), {split: row indices}) from the .mat."""
        raise NotImplementedError

    def _image_root(self, annotation: Path) -> Path:
        return annotation.parent / self.IMAGE_SUBDIR

    def _split_generators(self, dl_manager):
        annotation = self._annotation(dl_manager)
        names, images, labels, splits = self.read(annotation)
        if labels.shape != (len(images), self.NUM_ATTRIBUTES) or len(names) != self.NUM_ATTRIBUTES:
            raise ingest.DatasetError(f"{annotation}: expected {self.NUM_ATTRIBUTES} attributes for "
                                      f"{len(images)} images, got labels {labels.shape} and {len(names)} names")
        if not np.isin(labels, (0, 1)).all():
            raise ingest.DatasetError(f"{annotation}: labels must be 0/1, found {np.unique(labels)[:5].tolist()}")
        root = self._image_root(annotation)
        if not root.is_dir():
            raise ingest.DatasetError(f"image folder {root} not found next to {annotation.name}")
        bad = []
        for split, rows in splits.items():
            if len(rows) and (rows.min() < 0 or rows.max() >= len(images)):
                raise ingest.DatasetError(f"{annotation}: split {split} indexes images outside 1..{len(images)}")
        used = sorted({int(r) for rows in splits.values() for r in rows})
        for r in used:
            try:
                ingest.check_image_file(root / images[r])
            except ingest.DatasetError as e:
                bad.append(ingest.BadEntry(r, images[r], e.message))
        ingest.resolve_bad(bad, self.skip_bad, str(annotation))
        self.skipped.extend(bad)
        skip = {b.index for b in bad}
        self.info.metadata["attribute_names"] = list(names)
        return {s: self._generate_examples(root, images, labels, [int(r) for r in rows if int(r) not in skip])
                for s, rows in splits.items()}

    def _generate_examples(self, root: Path, images: list[str], labels: np.ndarray, rows) -> Iterator:
        for r in rows:
            yield images[r], {"image": ingest.read_image_bytes(root / images[r]), "id": r,
                              "file_path": images[r], "attribute_labels": labels[r].astype(np.int8)}


class Pa100k(AttributeMatBuilder):
    """PA-100K: 100,000 images, 26 attributes, 80k/10k/10k train/val/test from `annotation.mat`."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
PA-100K (Liu et al., ICCV 2017). Put
  <manual_dir>/annotation.mat   (attributes, {train,val,test}_images_name, {train,val,test}_label)
  <manual_dir>/data/            (000001.jpg ...)
(or the same inside <manual_dir>/PA-100K/ or <manual_dir>/pa100k/).
"""
    HOMEPAGE = "https://github.com/xh-liu/HydraPlus-Net"
    NUM_ATTRIBUTES = 26
    ANNOTATION_FILE = "annotation.mat"
    IMAGE_SUBDIR = "data"
    DATASET_FOLDERS = ("PA-100K", "pa100k")

    def read(self, annotation: Path):
        m = load_mat(annotation)
        missing = [k for k in ("attributes", "train_images_name", "train_label") if k not in m]
        if missing:
            raise ingest.DatasetError(f"{annotation} lacks {missing} (is it PA-100K's annotation.mat?)")
        names = [mat_text(a) for a in m["attributes"].reshape(-1)]
        images, labels, splits, n = [], [], {}, 0
        for s in ("train", "val", "test"):
            if f"{s}_images_name" not in m:
                continue
            imgs = [mat_text(x) for x in m[f"{s}_images_name"].reshape(-1)]
            images += imgs
            labels.append(np.asarray(m[f"{s}_label"]).reshape(len(imgs), -1))
            splits[s] = np.arange(n, n + len(imgs))
            n += len(imgs)
        return names, images, np.concatenate(labels).astype(np.int64), splits
