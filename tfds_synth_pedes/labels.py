"""Binary attribute labels (multi-hot, -1 = unknown) derived from the six attribute slots.

They give the attribute-recognition downstream a target on any dataset with SYNTH-PEDES style
attributes: the procedural world, the released SYNTH-PEDES, or -1s where there are none.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tfds_synth_pedes import vocab
from tfds_synth_pedes.phrases import phrase_parts

# (slot, group name, values): labels of a group are decided together from one slot phrase.
_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("gender", "female", ("female",)),
    ("head", "length", ("long_hair",)),
    ("head", "colour", tuple(f"hair_{c}" for c in vocab.HAIR_COLOURS)),
    ("upper", "colour", tuple(f"upper_{c}" for c in vocab.COLOURS)),
    ("upper", "type", tuple(f"upper_{t}" for t in vocab.UPPER_TYPES)),
    ("lower", "colour", tuple(f"lower_{c}" for c in vocab.COLOURS)),
    ("lower", "type", tuple(f"lower_{t}" for t in vocab.LOWER_TYPES)),
    ("shoes", "colour", tuple(f"shoes_{c}" for c in vocab.COLOURS)),
    ("shoes", "type", ("boots",)),
    ("others", "type", tuple(vocab.ACCESSORIES)),
)
ATTRIBUTE_LABELS: tuple[str, ...] = tuple(name for _, _, names in _GROUPS for name in names)


def _group_values(slot: str, group: str, names: tuple[str, ...], phrase: str) -> list[int] | None:
    colours, head, words = phrase_parts(phrase)
    if group == "colour":
        prefix = names[0].split("_")[0] + "_"
        hits = [int(n[len(prefix):] in colours) for n in names]
        return hits if any(hits) else None
    if slot == "gender":
        return {"woman": [1], "man": [0]}.get(head or "")
    if group == "length":
        return [1] if "long" in words else [0] if ("short" in words or "bald" in words) else None
    if slot == "shoes":
        return {"boots": [1], "shoes": [0]}.get(head or "")
    kinds = tuple(n.split("_")[-1] for n in names)
    return [int(head == k) for k in kinds] if head in kinds else None


def attribute_labels(attributes: Mapping[str, str]) -> np.ndarray:
    """int8 (len(ATTRIBUTE_LABELS),): 1/0 where the slot phrase decides the label, -1 where unknown."""
    out: list[int] = []
    for slot, group, names in _GROUPS:
        phrase = attributes.get(slot, "") or ""
        values = None
        if phrase and phrase != vocab.UNKNOWN:
            values = _group_values(slot, group, names, phrase)
        out.extend(values if values is not None else [-1] * len(names))
    return np.asarray(out, dtype=np.int8)
