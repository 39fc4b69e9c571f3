"""Base TFDS builder for datasets ingested from a manual folder (annotation JSON + images).

Subclasses say where the annotation lives and how its entries look (an `ingest.Schema`); this
class locates the files, validates every entry before writing, assigns splits and yields the
contract features. `skip_bad=True` leaves bad entries out and reports them in `self.skipped`.
A config with a `render(download_dir)` method (a rendered stand-in) writes the released layout
first, and the same ingest reads it.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds
from tqdm import tqdm

from tfds_synth_pedes import features, ingest


@dataclasses.dataclass(eq=False)
class StoredSizeConfig(tfds.core.BuilderConfig):
    """The dataset as released with its images stored at image_height x image_width (resized at build)."""

    image_height: int = 0
    image_width: int = 0

    @property
    def stored_size(self) -> tuple[int, int] | None:
        return (self.image_height, self.image_width) if self.image_height else None


def stored_size_params(params: dict[str, Any], dataset: str) -> tuple[int, int] | None:
    """(H, W) from the build params `image_size=(H, W)` or `image_height` + `image_width`; None
    without them. Pops them from `params`."""
    size = params.pop("image_size", None)
    h, w = params.pop("image_height", None), params.pop("image_width", None)
    if size is not None and (h is not None or w is not None):
        raise ingest.DatasetError(f"{dataset}: give image_size=HxW or image_height + image_width, not both")
    if size is None and (h is None) != (w is None):
        raise ingest.DatasetError(f"{dataset}: resizing at build needs both image_height and image_width "
                                  "(or image_size=HxW)")
    if size is None and h is not None:
        size = (h, w)
    if size is None:
        return None
    if not (isinstance(size, Sequence) and len(size) == 2) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
        raise ingest.DatasetError(f"{dataset}: image_size must be two integers >= 1 (HxW), got {size!r}")
    return int(size[0]), int(size[1])


def stored_size_config(dataset: str, config: str | None, **params: Any) -> StoredSizeConfig | None:
    """The config of a single-config dataset: None for the as-released build (config None, 'default'
    or 'full'), else `full_hH_wW` from that name or from the params image_size / image_height+width."""
    named = None
    if config not in (None, "", "default", "full"):
        m = re.fullmatch(r"full_h(\d+)_w(\d+)", config)
        if not m:
            raise ingest.DatasetError(f"{dataset} has one config ('full', or 'full_hH_wW' to store images "
                                      f"resized to H x W), not {config!r}")
        named = (int(m.group(1)), int(m.group(2)))
    params = dict(params)
    size = stored_size_params(params, dataset)
    if params:
        raise ingest.DatasetError(f"{dataset} takes only the parameter image_size=HxW (got {sorted(params)})")
    if named and size and named != size:
        raise ingest.DatasetError(f"{dataset}: image_size {size} contradicts the config name {config!r}")
    size = size or named
    if size is None:
        return None
    h, w = size
    if h < 1 or w < 1:
        raise ingest.DatasetError(f"{dataset}: image size must be >= 1, got {h}x{w}")
    return StoredSizeConfig(name=f"full_h{h}_w{w}", description=f"as released, images stored at {h}x{w}",
                            image_height=h, image_width=w)


class ManualCaptionBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Annotation JSON + image folder -> array_record with the contract features."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: contract features, official splits."}
    ANNOTATION_FILES: tuple[str, ...] = ()
    DATASET_FOLDERS: tuple[str, ...] = ()  # sub-folders of the manual dir that may hold the dataset
    IMAGE_SUBDIR = "imgs"  # image root, relative to the annotation file's folder
    SCHEMA = ingest.Schema()
    # The style of the dataset's rendered `procedural` config, None without one: 'synth' (SYNTH-PEDES),
    # 'A' / 'B' (the shifted CUHK-PEDES- / ICFG-PEDES-like stand-ins of tfds_synth_pedes.shifted).
    PROCEDURAL_STYLE: str | None = None

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
        """The folder that holds the annotation file (or a dataset sub-folder with it): the manual dir,
        or where a rendering config wrote the released layout."""
        render = getattr(self.builder_config, "render", None)
        return render(Path(dl_manager.download_dir)) if render is not None else self._manual_root(dl_manager)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = self._data_root(dl_manager)
        annotation = ingest.find_annotation(root, self.ANNOTATION_FILES, self.DATASET_FOLDERS, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        entries = self._load_entries(annotation, annotation.parent / self.IMAGE_SUBDIR)
        return {split: self._generate_examples(items, str(annotation)) for split, items in self._assign_splits(entries).items()}

    def stored_size(self) -> tuple[int, int] | None:
        """(H, W) the images are stored at (resized at build), None for their original sizes."""
        return getattr(self.builder_config, "stored_size", None)

    def _generate_examples(self, entries: Sequence[ingest.Entry], source: str) -> Iterator[tuple[str, dict]]:
        size = self.stored_size()
        for e in entries:
            try:
                example = features.make_example(e, size)
            except ValueError as err:  # an image that passed the header check but does not decode
                bad = ingest.BadEntry(e.index, e.file_path, str(err))
                ingest.resolve_bad([bad], self.skip_bad, source)
                self.skipped.append(bad)
                continue
            yield e.file_path, example
