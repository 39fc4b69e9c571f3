"""SPAC captions: determinism, spans recoverable from text, phrase finder on human captions, labels."""

from __future__ import annotations

import numpy as np
import pytest

from tfds_synth_pedes import spac, vocab
from tfds_synth_pedes.phrases import phrase_parts
from tfds_synth_pedes.synth_pedes.procedural import sample_identities

ATTRS = spac.parse_attributes(["man,short black hair,navy blue t-shirt,grey shorts,white shoes,red backpack"])


def _all(out: spac.SpacOutput) -> list[spac.Caption]:
    return [out.prompt, *out.captions]


def test_same_seed_same_captions_other_seed_differs():
    a = spac.generate_captions(ATTRS, 3, num_captions=3)
    b = spac.generate_captions(ATTRS, 3, num_captions=3)
    assert a == b
    others = {spac.generate_captions(ATTRS, s, num_captions=3).captions for s in range(4, 10)}
    assert len(others) > 1


def test_captions_of_one_image_differ_in_style():
    out = spac.generate_captions(ATTRS, 0, num_captions=3)
    texts = [c.text for c in _all(out)]
    assert len(set(texts)) == 4


def test_prompt_caption_fills_attribute_phrases_verbatim():
    out = spac.generate_captions(ATTRS, 1)
    spans = [out.prompt.text[s:e] for s, e in out.prompt.spans]
    assert spans == ["man", "short black hair", "navy blue t-shirt", "grey shorts", "white shoes", "red backpack"]


def test_unknown_slots_are_left_out():
    attrs = spac.parse_attributes("woman,unknown,green vest,black skirt,unknown,unknown")
    for cap in _all(spac.generate_captions(attrs, 2, num_captions=3)):
        assert "unknown" not in cap.text
        assert len(cap.spans) == 3


def test_spans_are_what_the_phrase_finder_finds_and_belong_to_the_identity():
    for ident in sample_identities(150, seed=11):
        heads = {phrase_parts(v)[1] for v in ident.attributes.values() if v != vocab.UNKNOWN}
        colours = set().union(*(phrase_parts(v)[0] for v in ident.attributes.values()))
        out = spac.generate_captions(ident.attributes, [ident.id, 5], num_captions=3, shades=ident.shades)
        for cap in _all(out):
            assert tuple(spac.find_attribute_phrases(cap.text)) == cap.spans, cap.text
            for s, e in cap.spans:
                pcolours, phead, _ = phrase_parts(cap.text[s:e])
                assert phead in heads and pcolours <= colours, (cap.text[s:e], ident.attributes)


@pytest.mark.parametrize(
    "text, phrases",
    [
        ("A woman wearing a white shirt, a pair of black pants and black shoes.",
         ["woman", "white shirt", "black pants", "black shoes"]),
        ("The man has short dark hair and wears a black and white striped T-shirt.",
         ["man", "short dark hair", "black and white striped T-shirt"]),
        ("She carries a bag. Her hair is long.", ["bag"]),
        ("He stands on top of the stairs in a light blue tank top", ["light blue tank top"]),
    ],
)
def test_find_attribute_phrases_on_human_captions(text, phrases):
    assert [text[s:e] for s, e in spac.find_attribute_phrases(text)] == phrases


def test_parse_attributes_accepts_the_released_one_string_form_only_with_six_slots():
    assert spac.parse_attributes(["man,a,b,c,d,unknown"])["others"] == "unknown"
    assert spac.format_attributes(ATTRS) == "man,short black hair,navy blue t-shirt,grey shorts,white shoes,red backpack"
    with pytest.raises(ValueError, match="6 comma-separated slots"):
        spac.parse_attributes(["man,black hair"])


def test_attribute_labels_multi_hot_with_unknown_minus_one():
    labels = dict(zip(spac.ATTRIBUTE_LABELS, spac.attribute_labels(ATTRS).tolist()))
    assert len(set(spac.ATTRIBUTE_LABELS)) == len(spac.ATTRIBUTE_LABELS)
    assert labels["female"] == 0 and labels["long_hair"] == 0 and labels["hair_black"] == 1
    assert labels["upper_blue"] == 1 and labels["upper_red"] == 0 and labels["upper_t-shirt"] == 1
    assert labels["lower_grey"] == 1 and labels["lower_shorts"] == 1 and labels["boots"] == 0
    assert labels["backpack"] == 1 and labels["hat"] == 0
    unknown = spac.attribute_labels({**ATTRS, "others": "unknown", "upper": "sparkly thing"})
    labels = dict(zip(spac.ATTRIBUTE_LABELS, unknown.tolist()))
    assert labels["backpack"] == labels["hat"] == labels["upper_blue"] == labels["upper_coat"] == -1
    assert spac.attribute_labels({}).dtype == np.int8 and set(spac.attribute_labels({}).tolist()) == {-1}
