"""SPAC-style captions: six attributes -> one prompt caption + stylistically different captions.

A rule-based stand-in for PLIP's SPAC captioner (PLIP paper App. A.5, A.7): the prompt caption fills the
attribute phrases verbatim into a template; the stylish captions use template banks, synonyms,
shade words, clause order and optional details. Every caption carries the character spans of
its attribute phrases, which `find_attribute_phrases` recovers from the text alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from tfds_synth_pedes import vocab
from tfds_synth_pedes.labels import ATTRIBUTE_LABELS, attribute_labels
from tfds_synth_pedes.phrases import find_attribute_phrases, phrase_parts

__all__ = [
    "ATTRIBUTE_LABELS",
    "Caption",
    "SpacOutput",
    "attribute_labels",
    "find_attribute_phrases",
    "format_attributes",
    "generate_captions",
    "parse_attributes",
    "prompt_caption",
    "stylish_captions",
]

Span = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Caption:
    """A caption and the character spans of its attribute phrases."""

    text: str
    spans: tuple[Span, ...]


@dataclasses.dataclass(frozen=True)
class SpacOutput:
    prompt: Caption
    captions: tuple[Caption, ...]


def parse_attributes(value: str | Sequence[str]) -> dict[str, str]:
    """Released SYNTH-PEDES attributes (["man,black hair,..."], one comma-joined string) -> slot dict."""
    if isinstance(value, str):
        parts = value.split(",")
    elif len(value) == 1 and isinstance(value[0], str):
        parts = value[0].split(",")
    elif len(value) == len(vocab.SLOTS) and all(isinstance(v, str) for v in value):
        parts = list(value)
    else:
        raise ValueError(f"attributes must be one comma-joined string of {len(vocab.SLOTS)} slots, got {value!r}")
    if len(parts) != len(vocab.SLOTS):
        raise ValueError(
            f"attributes must have {len(vocab.SLOTS)} comma-separated slots {vocab.SLOTS}, got {len(parts)}: {value!r}"
        )
    return {slot: part.strip() for slot, part in zip(vocab.SLOTS, parts)}


def format_attributes(attributes: Mapping[str, str]) -> str:
    """Slot dict -> the released one-string form 'man,black hair,...,unknown'."""
    return ",".join(attributes.get(slot) or vocab.UNKNOWN for slot in vocab.SLOTS)


class _Writer:
    """Accumulates caption text and the spans of the attribute phrases written into it."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._len = 0
        self._spans: list[Span] = []

    def text(self, s: str) -> None:
        self._parts.append(s)
        self._len += len(s)

    def phrase(self, s: str) -> None:
        self._spans.append((self._len, self._len + len(s)))
        self.text(s)

    def item(self, article: str, phrase: str) -> None:
        self.text(article)
        self.phrase(phrase)

    def items(self, items: Sequence[tuple[str, str]], last_joiner: str = " and ") -> None:
        for k, (article, phrase) in enumerate(items):
            if k:
                self.text(last_joiner if k == len(items) - 1 else ", ")
            self.item(article, phrase)

    def build(self) -> Caption:
        text = "".join(self._parts)
        text = text[:1].upper() + text[1:]
        return Caption(text, tuple(self._spans))


def _known(attributes: Mapping[str, str], slot: str) -> str:
    value = (attributes.get(slot) or "").strip()
    return "" if value.lower() == vocab.UNKNOWN else value


def _article(phrase: str, shoes_pair: bool = False) -> str:
    last = phrase.rsplit(maxsplit=1)[-1].lower() if phrase.strip() else ""
    if last in vocab.PLURAL_HEADS:
        return "a pair of " if shoes_pair else ""
    return "an " if phrase[:1].lower() in "aeiou" else "a "


def _pronouns(gender: str) -> tuple[str, str]:
    head = phrase_parts(gender)[1] if gender else None
    return {"man": ("he", "his"), "woman": ("she", "her")}.get(head or "", ("the person", "their"))


def _others_verb(phrase: str) -> str:
    head = phrase.split()[-1].lower()
    return "wearing" if head in vocab.WORN_ACCESSORIES else "carrying"


def prompt_caption(attributes: Mapping[str, str], rng: np.random.Generator) -> Caption:
    """The prompt caption: attribute phrases filled verbatim into a template (PLIP's 'prompt engineering')."""
    a = {slot: _known(attributes, slot) for slot in vocab.SLOTS}
    he = _pronouns(a["gender"])[0]
    template = int(rng.integers(4))
    w = _Writer()
    w.text("A ")
    w.phrase(a["gender"]) if a["gender"] else w.text("person")
    if a["head"]:
        w.text(" with ")
        w.phrase(a["head"])
    worn = [(_article(a[s], shoes_pair=s == "shoes"), a[s]) for s in ("upper", "lower", "shoes") if a[s]]
    if worn:
        w.text((" is wearing ", ", wearing ", " is dressed in ", " wears ")[template])
        w.items(worn)
    w.text(".")
    if a["others"]:
        w.text(f" {he.capitalize()} is also {_others_verb(a['others'])} {_article(a['others'])}")
        w.phrase(a["others"])
        w.text(".")
    return w.build()


def _colour_phrase(colour: str, shade: str, rng: np.random.Generator) -> str:
    if shade and (colour, shade) in vocab.SHADE_WORDS and rng.random() < 0.75:
        options = vocab.SHADE_WORDS[(colour, shade)]
    else:
        options = vocab.COLOUR_SYNONYMS.get(colour, (colour,))
    return options[int(rng.integers(len(options)))]


def _synonyms(head: str) -> tuple[str, ...] | None:
    for table in (vocab.UPPER_TYPES, vocab.LOWER_TYPES, vocab.SHOE_TYPES, vocab.ACCESSORIES, vocab.GENDERS):
        if head in table:
            return table[head]
    return None


def _stylise(slot: str, value: str, shade: str, female: bool, rng: np.random.Generator) -> str:
    """Re-words one attribute phrase (synonyms, shade words, optional hair length); verbatim if unfamiliar."""
    words = value.lower().split()
    colours = [w for w in words if w in vocab.COLOURS or w in vocab.HAIR_COLOURS]
    if slot == "head" and words and words[-1] == "hair" and set(words[:-1]) <= set(vocab.HAIR_LENGTHS) | set(colours):
        lengths = [w for w in words if w in vocab.HAIR_LENGTHS]
        colour = [_colour_phrase(c, "", rng) for c in colours]
        if lengths and colour and rng.random() < 0.3:
            lengths = []  # optional detail left out
        return " ".join([*lengths, *colour, "hair"])
    head = " ".join(w for w in words if w not in colours)
    options = _synonyms(head)
    if options is None or len(colours) > 1:
        return value
    if not female:
        options = tuple(o for o in options if o not in vocab.FEMALE_ONLY_WORDS) or options
    noun = options[int(rng.integers(len(options)))]
    colour = [_colour_phrase(c, shade, rng) for c in colours]
    if noun.startswith("long "):  # "long blue pants", not "blue long pants"
        return " ".join(["long", *colour, noun[len("long "):]])
    return " ".join([*colour, noun])


def _style_compact(a: Mapping[str, str], rng: np.random.Generator) -> Caption:
    w = _Writer()
    w.text("a ")
    w.phrase(a["gender"]) if a["gender"] else w.text("person")
    hair_first = bool(a["head"]) and rng.random() < 0.5
    if hair_first:
        w.text(" with ")
        w.phrase(a["head"])
    keep_shoes = a["shoes"] and rng.random() < 0.75
    worn = [(_article(a[s], shoes_pair=s == "shoes"), a[s]) for s in ("upper", "lower") if a[s]]
    if keep_shoes:
        worn.append((_article(a["shoes"], shoes_pair=rng.random() < 0.5), a["shoes"]))
    if worn:
        w.text((" in ", " wearing ", " dressed in ")[int(rng.integers(3))])
        w.items(worn)
    if a["head"] and not hair_first:
        w.text(", with ")
        w.phrase(a["head"])
    if a["others"]:
        w.text(f", {_others_verb(a['others'])} {_article(a['others'])}")
        w.phrase(a["others"])
    w.text(".")
    return w.build()


def _style_narrative(a: Mapping[str, str], rng: np.random.Generator) -> Caption:
    he, his = _pronouns(a["gender"])
    w = _Writer()
    w.text(("the ", "this ")[int(rng.integers(2))])
    w.phrase(a["gender"]) if a["gender"] else w.text("person")
    if a["head"]:
        w.text(" has ")
        w.phrase(a["head"])
        w.text(".")
    else:
        w.text(" is walking.")
    sentences = []
    clothes = [(_article(a[s]), a[s]) for s in ("upper", "lower") if a[s]]
    if clothes:
        sentences.append(("wear", clothes))
    if a["shoes"]:
        sentences.append(("shoes", [(_article(a["shoes"], shoes_pair=True), a["shoes"])]))
    if a["others"]:
        sentences.append(("others", [(_article(a["others"]), a["others"])]))
    for k in rng.permutation(len(sentences)):
        kind, items = sentences[int(k)]
        w.text(f" {he.capitalize()} ")
        if kind == "wear":
            w.text(("is wearing ", "wears ", "has on ")[int(rng.integers(3))])
            w.items(items, last_joiner=(" with ", " and ")[int(rng.integers(2))])
        elif kind == "shoes":
            w.text(("also wears ", "has ")[int(rng.integers(2))])
            w.items(items)
            w.text(f" on {his} feet" if rng.random() < 0.5 else "")
        else:
            w.text(f"is {_others_verb(items[0][1])} ")
            w.items(items)
        w.text(".")
    return w.build()


def _style_scene(a: Mapping[str, str], rng: np.random.Generator) -> Caption:
    he, his = _pronouns(a["gender"])
    w = _Writer()
    w.text("a ")
    w.phrase(a["gender"]) if a["gender"] else w.text("person")
    directions = ("towards the camera", "away from the camera", "down the street", "along the road")
    w.text(f" walking {directions[int(rng.integers(len(directions)))]}")
    if a["head"]:
        w.text(" with ")
        w.phrase(a["head"])
    w.text(".")
    worn = [(_article(a[s], shoes_pair=s == "shoes"), a[s]) for s in ("upper", "lower", "shoes") if a[s]]
    if worn:
        w.text(f" {he.capitalize()} is dressed in ")
        w.items(worn)
        w.text(".")
    if a["others"]:
        head = phrase_parts(a["others"])[1]
        if head == "backpack":
            w.text(" " + _article(a["others"]).capitalize())
            w.phrase(a["others"])
            w.text(f" is on {his} back.")
        else:
            w.text(f" {he.capitalize()} is {_others_verb(a['others'])} {_article(a['others'])}")
            w.phrase(a["others"])
            w.text(" in one hand." if head == "handbag" else ".")
    return w.build()


_STYLES = (_style_compact, _style_narrative, _style_scene)


def stylish_captions(
    attributes: Mapping[str, str],
    rng: np.random.Generator,
    num: int = 2,
    shades: Mapping[str, str] | None = None,
) -> list[Caption]:
    """`num` captions in different styles, each with its own synonyms/shade words/clause order."""
    if not 1 <= num <= len(_STYLES):
        raise ValueError(f"num captions must be in 1..{len(_STYLES)}, got {num}")
    shades = shades or {}
    known = {slot: _known(attributes, slot) for slot in vocab.SLOTS}
    female = phrase_parts(known["gender"])[1] == "woman" if known["gender"] else False
    out = []
    for style in rng.permutation(len(_STYLES))[:num]:
        a = {
            slot: _stylise(slot, v, shades.get(slot, ""), female, rng) if v else ""
            for slot, v in known.items()
        }
        out.append(_STYLES[int(style)](a, rng))
    return out


def generate_captions(
    attributes: Mapping[str, str],
    seed: int | Sequence[int],
    num_captions: int = 2,
    shades: Mapping[str, str] | None = None,
) -> SpacOutput:
    """Prompt caption + `num_captions` stylish captions, deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    prompt = prompt_caption(attributes, rng)
    return SpacOutput(prompt, tuple(stylish_captions(attributes, rng, num_captions, shades)))
