"""Attribute-phrase finder for captions we did not write (keyword sets; docs/method.md, IAP masking).

A phrase is a run of modifiers (colours, shades, lengths, patterns; "and" may join two of them)
ending in an attribute head noun (garment, hair, shoes, belongings, gender): "dark blue jacket",
"black and white sneakers", "long black hair", "woman". IAP masks these spans whole.
"""

from __future__ import annotations

import re

from tfds_synth_pedes import vocab

_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")
_MULTIWORD_HEADS: dict[str, tuple[str, ...]] = {
    words[0]: tuple(words[1:])
    for head in set().union(*vocab.HEAD_NOUNS.values())
    if len(words := head.split()) > 1
}


def _tokens(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]


def _head_at(tokens: list[tuple[int, int, str]], j: int) -> tuple[str, int] | None:
    """Returns (head, index after it) when tokens[j:] starts with a head noun."""
    if j >= len(tokens):
        return None
    word = tokens[j][2]
    rest = _MULTIWORD_HEADS.get(word)
    if rest and tuple(t[2] for t in tokens[j + 1 : j + 1 + len(rest)]) == rest:
        return " ".join((word, *rest)), j + 1 + len(rest)
    if word in vocab.HEAD_TO_SLOT:
        return word, j + 1
    return None


def _adjacent(text: str, end: int, start: int) -> bool:
    """True when only spaces separate two tokens (no punctuation breaks the phrase)."""
    return text[end:start].strip() == ""


def _modifier_run(tokens: list[tuple[int, int, str]], text: str, i: int) -> int:
    """Index just after the run of modifiers starting at tokens[i] ('and' may join two)."""
    j = i
    while j < len(tokens) and tokens[j][2] in vocab.MODIFIER_WORDS:
        if j > i and not _adjacent(text, tokens[j - 1][1], tokens[j][0]):
            break
        j += 1
        if (
            j + 1 < len(tokens)
            and tokens[j][2] == "and"
            and tokens[j + 1][2] in vocab.MODIFIER_WORDS
            and _adjacent(text, tokens[j - 1][1], tokens[j][0])
            and _adjacent(text, tokens[j][1], tokens[j + 1][0])
        ):
            j += 1
    return j


def find_attribute_phrases(text: str) -> list[tuple[int, int]]:
    """Character spans (start, end) of the attribute phrases in `text`, left to right."""
    tokens = _tokens(text)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        j = _modifier_run(tokens, text, i)
        if j > i and (j == len(tokens) or not _adjacent(text, tokens[j - 1][1], tokens[j][0])):
            i = j  # modifiers not followed by a word (end or punctuation): no phrase
            continue
        found = _head_at(tokens, j)
        if found is None or (j == i and found[0] in vocab.NEEDS_MODIFIER):
            i = max(j, i + 1)
            continue
        after = found[1]
        spans.append((tokens[i][0], tokens[after - 1][1]))
        i = after
    return spans


def phrase_parts(phrase: str) -> tuple[frozenset[str], str | None, frozenset[str]]:
    """Splits an attribute phrase into (canonical colours, canonical head noun or None, words).

    "navy blue tank top" -> ({"blue"}, "vest", {...}); used to turn free-text attributes into labels.
    """
    tokens = _tokens(phrase)
    words = frozenset(t[2] for t in tokens)
    colours = frozenset(vocab.COLOUR_CANON[w] for w in words if w in vocab.COLOUR_CANON)
    head, j = None, 0
    while j < len(tokens):
        found = _head_at(tokens, j)
        if found is None:
            j += 1
        else:
            head, j = vocab.HEAD_CANON.get(found[0], found[0]), found[1]
    return colours, head, words
