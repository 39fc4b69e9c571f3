"""Shared ingest for the manual caption datasets: validate annotation entries, then read images.

All annotation and file checks run in one pass before TFDS writes anything, so a bad dataset
fails in seconds with one message that names the entry (index, file path) and the problem;
with `skip_bad` the bad entries are listed and left out instead. Never a silent drop.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from tfds_synth_pedes import spac, vocab

MAX_LISTED = 5


class DatasetError(ValueError):
    """A dataset problem a user must fix; `message` is the whole story (no traceback needed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclasses.dataclass(frozen=True)
class BadEntry:
    index: int
    file_path: str
    problem: str

    def __str__(self) -> str:
        return f"entry {self.index} ({self.file_path!r}): {self.problem}"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One validated annotation entry (one image)."""

    index: int
    id: int
    file_path: str
    image_path: Path
    captions: tuple[str, ...]
    prompt_caption: str = ""
    attributes: dict[str, str] | None = None
    split: str | None = None
    camera_id: int = -1


@dataclasses.dataclass(frozen=True)
class Schema:
    """How one dataset's annotation entries look."""

    path_key: str = "file_path"
    splits: tuple[str, ...] | None = None  # None: entries carry no 'split' field
    synth: bool = False  # SYNTH-PEDES fields: attributes, prompt_caption, optional camera_id
    camera_from_path: Callable[[str], int] = lambda path: -1

    @property
    def required(self) -> tuple[str, ...]:
        keys = ("id", self.path_key, "captions")
        if self.splits is not None:
            keys += ("split",)
        if self.synth:
            keys += ("attributes", "prompt_caption")
        return keys


def load_annotations(path: Path) -> list[Any]:
    """Reads an annotation JSON that must hold a list of entries."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path} must hold a JSON list of entries, got a {type(data).__name__}")
    return data


def _text_list(value: Any, field: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ValueError(f"'{field}' must be a list of strings, got {type(value).__name__}")
    return tuple(value)


def _checked_path(root_real: str, root: Path, rel: Any) -> Path:
    if not isinstance(rel, str) or not rel.strip():
        raise ValueError("file path must be a non-empty string")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise ValueError("file path is absolute; it must be relative to the dataset folder")
    norm = os.path.normpath(rel)
    if norm == ".." or norm.startswith(".." + os.sep):
        raise ValueError("file path escapes the dataset folder ('..')")
    path = root / norm
    if not os.path.lexists(path):
        raise ValueError(f"image file is missing ({path})")
    real = os.path.realpath(path)
    if not real.startswith(root_real + os.sep):
        raise ValueError(f"image is a symlink pointing outside the dataset folder ({real})")
    if not os.path.isfile(real):
        raise ValueError(f"image path is not a file ({path})")
    return path


def check_image_file(path: Path) -> None:
    """Pre-pass check: a known image header and, for JPEG/PNG, an intact end of file (cheap);
    other formats (BMP, GIF, ...) are rare and fully decoded here."""
    try:
        with Image.open(path) as img:
            fmt = img.format
    except Exception:  # noqa: BLE001 - PIL raises many types for non-images
        raise ValueError("not an image file, or truncated before its header (PIL cannot identify it)") from None
    if fmt not in ("JPEG", "PNG"):
        read_image_bytes(path)
    else:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 1024))
            tail = f.read()
        marker = b"\xff\xd9" if fmt == "JPEG" else b"IEND"
        if marker not in tail:
            read_image_bytes(path)  # slow path: a full decode decides (trailing bytes are legal)


# Images resized at build time (a `full_hH_wW` config) are stored as JPEG at this quality, without
# chroma subsampling (4:4:4): ~2/3 of the 4:2:0 error for ~15% more decode time: fidelity to
# the source images comes before decode speed.
STORED_JPEG_QUALITY = 95


def read_image_bytes(path: Path, size: tuple[int, int] | None = None) -> bytes:
    """Encoded RGB image bytes: the file as-is for RGB JPEG/PNG, else converted to RGB (PNG/JPEG).

    With `size` (H, W), an image of another size is fully decoded, bicubic-resized to (H, W) (as the
    training transform would) and stored as a JPEG of quality STORED_JPEG_QUALITY (4:4:4)."""
    data = Path(path).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            resize = size is not None and img.size != (int(size[1]), int(size[0]))
            if img.format in ("JPEG", "PNG") and img.mode == "RGB" and not resize:
                return data
            fmt = "JPEG" if img.format == "JPEG" or resize else "PNG"
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                rgb = Image.new("RGB", rgba.size, (255, 255, 255))
                rgb.paste(rgba, mask=rgba.getchannel("A"))
            else:
                rgb = img.convert("RGB")
            if resize:
                rgb = rgb.resize((int(size[1]), int(size[0])), Image.BICUBIC)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"image cannot be decoded ({type(e).__name__}: {e})") from None
    buf = io.BytesIO()
    options = {} if fmt == "PNG" else {"quality": STORED_JPEG_QUALITY, "subsampling": 0} if resize else {"quality": 95}
    rgb.save(buf, format=fmt, **options)
    return buf.getvalue()


def _parse_entry(i: int, raw: Any, schema: Schema, root: Path, root_real: str) -> Entry:
    if not isinstance(raw, dict):
        raise ValueError(f"entry must be a JSON object, got {type(raw).__name__}")
    missing = [k for k in schema.required if k not in raw]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    pid = raw["id"]
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise ValueError(f"id must be an integer, got {pid!r}")
    captions = _text_list(raw["captions"], "captions")
    if not captions or any(not c.strip() for c in captions):
        raise ValueError("empty captions" if not captions else "a caption is empty")
    split = None
    if schema.splits is not None:
        split = raw["split"]
        if split not in schema.splits:
            raise ValueError(f"split must be one of {schema.splits}, got {split!r}")
    rel = raw[schema.path_key]
    path = _checked_path(root_real, root, rel)
    prompt, attributes, camera = "", None, schema.camera_from_path(rel)
    if schema.synth:
        prompts = _text_list(raw["prompt_caption"], "prompt_caption")
        prompt = prompts[0] if prompts else ""
        attributes = spac.parse_attributes(raw["attributes"])
        if "camera_id" in raw:
            if isinstance(raw["camera_id"], bool) or not isinstance(raw["camera_id"], int):
                raise ValueError(f"camera_id must be an integer, got {raw['camera_id']!r}")
            camera = raw["camera_id"]
    check_image_file(path)
    return Entry(i, pid, rel, path, captions, prompt, attributes, split, camera)


def validate_entries(
    raw_entries: Sequence[Any],
    root: Path,
    schema: Schema,
    progress: Callable[[Iterable[Any]], Iterable[Any]] = lambda it: it,
) -> tuple[list[Entry], list[BadEntry]]:
    """One pass over all entries: fields, ids, captions, paths, symlinks, duplicates, image headers."""
    root_real = os.path.realpath(root)
    good: list[Entry] = []
    bad: list[BadEntry] = []
    first_seen: dict[str, int] = {}
    for i, raw in progress(enumerate(raw_entries)):
        rel = raw.get(schema.path_key, "?") if isinstance(raw, dict) else "?"
        try:
            key = os.path.normpath(rel) if isinstance(rel, str) else None
            if key is not None and key in first_seen:
                raise ValueError(f"duplicate file path (first used by entry {first_seen[key]})")
            entry = _parse_entry(i, raw, schema, root, root_real)
        except ValueError as e:
            bad.append(BadEntry(i, str(rel), str(e)))
            continue
        first_seen[key] = i  # type: ignore[index]
        good.append(entry)
    return good, bad


def resolve_bad(bad: Sequence[BadEntry], skip_bad: bool, source: str) -> None:
    """Stops the build on bad entries, or (skip_bad) prints every skipped entry to stderr."""
    if not bad:
        return
    if not skip_bad:
        more = f"\n(and {len(bad) - MAX_LISTED} more bad entries)" if len(bad) > MAX_LISTED else ""
        listed = "\n".join(f"  {b}" for b in bad[:MAX_LISTED])
        raise DatasetError(
            f"{len(bad)} bad entr{'y' if len(bad) == 1 else 'ies'} in {source}:\n{listed}{more}\n"
            "Fix them, or rerun with --skip_bad (skip_bad=True) to build without them."
        )
    for b in bad:
        print(f"skipped {b}", file=sys.stderr)
    print(f"skipped {len(bad)} bad entr{'y' if len(bad) == 1 else 'ies'} in {source}", file=sys.stderr)


def find_annotation(manual_dir: Path, names: Sequence[str], folders: Sequence[str], instructions: str) -> Path:
    """Locates the annotation file in manual_dir or one of its dataset sub-folders."""
    if not manual_dir.is_dir():
        raise DatasetError(f"Manual directory {manual_dir} does not exist.\n{instructions}")
    for base in (manual_dir, *(manual_dir / f for f in folders)):
        for name in names:
            if (base / name).is_file():
                return base / name
    raise DatasetError(
        f"No annotation file {' or '.join(names)} found in {manual_dir}"
        f"{' or its sub-folder ' + ' / '.join(folders) if folders else ''}.\n{instructions}"
    )


def slot_attributes(attributes: dict[str, str] | None) -> dict[str, str]:
    """The contract's six attribute texts ('' for datasets without attributes)."""
    return {slot: (attributes or {}).get(slot, "") for slot in vocab.SLOTS}
