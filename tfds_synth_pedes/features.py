"""The example features every dataset here shares (docs/contracts.md), and building one example."""

from __future__ import annotations

import json
import re

import numpy as np
import tensorflow_datasets as tfds

from tfds_synth_pedes import spac, vocab
from tfds_synth_pedes.ingest import Entry, read_image_bytes, slot_attributes


def features() -> tfds.features.FeaturesDict:
    """The contract FeaturesDict: encoded image, id, texts, six attribute slots, spans, camera, labels."""
    text = tfds.features.Text()
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
            "id": tfds.features.Scalar(dtype=np.int64),
            "file_path": text,
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "prompt_caption": tfds.features.Text(),
            "attributes": tfds.features.FeaturesDict({slot: tfds.features.Text() for slot in vocab.SLOTS}),
            "spans_json": tfds.features.Text(),
            "camera_id": tfds.features.Scalar(dtype=np.int64),
            "attribute_labels": tfds.features.Tensor(shape=(len(spac.ATTRIBUTE_LABELS),), dtype=np.int8),
        }
    )


def _overlaps(span: tuple[int, int], taken: list[tuple[int, int]]) -> bool:
    return any(span[0] < e and s < span[1] for s, e in taken)


def prompt_spans(text: str, attributes: dict[str, str]) -> list[tuple[int, int]]:
    """Spans of a prompt caption: its attribute slot fillers where found verbatim, plus found phrases."""
    spans: list[tuple[int, int]] = []
    for value in attributes.values():
        if value and value != vocab.UNKNOWN:
            m = re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", text, flags=re.IGNORECASE)
            if m and not _overlaps(m.span(), spans):
                spans.append(m.span())
    spans += [s for s in spac.find_attribute_phrases(text) if not _overlaps(s, spans)]
    return sorted(spans)


def make_example(entry: Entry, image_size: tuple[int, int] | None = None) -> dict:
    """The example dict TFDS serialises for one validated entry (reads and converts the image;
    `image_size` (H, W) stores it resized to that size, see `ingest.read_image_bytes`)."""
    attributes = slot_attributes(entry.attributes)
    spans = {
        "captions": [[list(s) for s in spac.find_attribute_phrases(c)] for c in entry.captions],
        "prompt_caption": [list(s) for s in prompt_spans(entry.prompt_caption, attributes)],
    }
    labels = spac.attribute_labels(attributes) if entry.attributes else np.full(len(spac.ATTRIBUTE_LABELS), -1, np.int8)
    return {
        "image": read_image_bytes(entry.image_path, image_size),
        "id": entry.id,
        "file_path": entry.file_path,
        "captions": list(entry.captions),
        "prompt_caption": entry.prompt_caption,
        "attributes": attributes,
        "spans_json": json.dumps(spans, separators=(",", ":")),
        "camera_id": entry.camera_id,
        "attribute_labels": labels,
    }
