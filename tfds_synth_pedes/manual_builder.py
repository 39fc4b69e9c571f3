"""Base TFDS builder for datasets ingested from a manual folder (annotation JSON + images).

Subclasses say where the annotation lives and how its entries look (an `ingest.Schema`); this
class locates the files, validates every entry before writing, assigns splits and yields the
contract features. `skip_bad=True` leaves bad entries out and reports them in `self.skipped`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from tqdm import tqdm

from tfds_synth_pedes import features, ingest


class ManualCaptionBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Annotation JSON + image folder -> array_record with the contract features."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: contract features, official splits."}
    ANNOTATION_FILES: tuple[str, ...] = ()
    DATASET_FOLDERS: tuple[str, ...] = ()  # sub-folders of the manual dir that may hold the dataset
    IMAGE_SUBDIR = "imgs"  # image root, relative to the annotation file's folder
    SCHEMA = ingest.Schema()

    def __init__(self, *, skip_bad: bool = False, **kwargs) -> None:
        self.skip_bad = skip_bad
        self.skipped: list[ingest.BadEntry] = []
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features.features(),
            supervised_keys=None,
            homepage=getattr(self, "HOMEPAGE", None),
        )

    def _manual_root(self, dl_manager: tfds.download.DownloadManager) -> Path:
        try:
            return Path(dl_manager.manual_dir)
        except AssertionError as e:  # TFDS: missing or empty manual dir; its text has our instructions
            raise ingest.DatasetError(str(e)) from None

    def _load_entries(self, annotation: Path, image_root: Path) -> list[ingest.Entry]:
        """Loads and validates all entries (one pass, before any writing); stops or skips on bad ones."""
        if not image_root.is_dir():
            raise ingest.DatasetError(f"image folder {image_root} not found next to {annotation.name}")
        raw = ingest.load_annotations(annotation)
        bar = lambda it: tqdm(it, total=len(raw), desc=f"Checking {annotation.name}", unit=" entries", file=sys.stderr)  # noqa: E731
        good, bad = ingest.validate_entries(raw, image_root, self.SCHEMA, progress=bar)
        ingest.resolve_bad(bad, self.skip_bad, str(annotation))
        self.skipped.extend(bad)
        if not good:
            raise ingest.DatasetError(f"{annotation} has no usable entries")
        return good

    def _assign_splits(self, entries: Sequence[ingest.Entry]) -> dict[str, list[ingest.Entry]]:
        """Official splits from the entries' 'split' field; splits without entries are left out."""
        out: dict[str, list[ingest.Entry]] = {}
        for e in entries:
            out.setdefault(e.split or "train", []).append(e)
        order = self.SCHEMA.splits or ("train",)
        return {s: out[s] for s in order if s in out}

    def _data_root(self, dl_manager: tfds.download.DownloadManager) -> Path:
        """The folder that holds the annotation file (or a dataset sub-folder with it)."""
        return self._manual_root(dl_manager)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = self._data_root(dl_manager)
        annotation = ingest.find_annotation(root, self.ANNOTATION_FILES, self.DATASET_FOLDERS, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        entries = self._load_entries(annotation, annotation.parent / self.IMAGE_SUBDIR)
        return {split: self._generate_examples(items, str(annotation)) for split, items in self._assign_splits(entries).items()}

    def _generate_examples(self, entries: Sequence[ingest.Entry], source: str) -> Iterator[tuple[str, dict]]:
        for e in entries:
            try:
                example = features.make_example(e)
            except ValueError as err:  # an image that passed the header check but does not decode
                bad = ingest.BadEntry(e.index, e.file_path, str(err))
                ingest.resolve_bad([bad], self.skip_bad, source)
                self.skipped.append(bad)
                continue
            yield e.file_path, example
