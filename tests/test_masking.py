"""Attribute-phrase masking: whole phrases only, never other tokens, ratio curriculum."""
import numpy as np
import pytest

from plip_jax.data.masking import mask_phrases, mask_phrases_batch, mask_ratio
from plip_jax.data.tokenizer import load_tokenizer

CAPTION = "A man is wearing a dark blue jacket with grey shorts, carrying a blue backpack."
PHRASES = ["dark blue jacket", "grey shorts", "blue backpack"]
SPANS = [[CAPTION.index(p), CAPTION.index(p) + len(p)] for p in PHRASES]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(max_length=32)


def _phrase_tokens(enc, spans):
    """Token positions of each phrase (by character overlap)."""
    offs = enc["offsets"][0]
    return [set(np.flatnonzero((offs[:, 1] > offs[:, 0]) & (offs[:, 0] < e) & (offs[:, 1] > s)).tolist())
            for s, e in spans]


def _mask(tok, ratio, seed, max_masked=24, caption=CAPTION, spans=SPANS, max_length=None):
    enc = tok.encode_with_offsets([caption], max_length=max_length)
    out = mask_phrases(enc["input_ids"][0], enc["offsets"][0], spans, ratio,
                       np.random.default_rng(seed), tok.mask_token_id, max_masked)
    return enc, out


@pytest.mark.parametrize("schedule,expected", [("sqrt", 0.5), ("linear", 0.35), ("square", 0.2375),
                                               ("constant", 0.2)])
def test_mask_ratio_schedules(schedule, expected):
    # e/E = 1/4: sqrt -> 0.5, linear -> 0.25, square -> 1/16; r = G * 0.6 + 0.2
    assert mask_ratio(10, 40, schedule=schedule) == pytest.approx(expected)
    assert mask_ratio(0, 70, schedule=schedule) == pytest.approx(0.2)
    end = 0.2 if schedule == "constant" else 0.8
    assert mask_ratio(70, 70, schedule=schedule) == pytest.approx(end)


def test_mask_ratio_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown mask schedule"):
        mask_ratio(1, 10, schedule="cosine")
    with pytest.raises(ValueError, match="total_epochs"):
        mask_ratio(1, 0)


def test_ratio_one_masks_every_phrase_and_nothing_else(tok):
    enc, (masked, pos, labels, weights) = _mask(tok, 1.0, 0)
    ids = enc["input_ids"][0]
    expected = sorted(set().union(*_phrase_tokens(enc, SPANS)))
    n = int(weights.sum())
    assert pos[:n].tolist() == expected
    assert (masked[expected] == tok.mask_token_id).all()
    keep = np.setdiff1d(np.arange(len(ids)), expected)
    np.testing.assert_array_equal(masked[keep], ids[keep])  # specials, padding, other words kept
    np.testing.assert_array_equal(labels[:n], ids[expected])
    assert (pos[n:] == 0).all() and (labels[n:] == 0).all() and (weights[n:] == 0).all()
    assert tok.decode(labels[:n]).split() == " ".join(PHRASES).split()


def test_ratio_zero_masks_nothing(tok):
    enc, (masked, pos, labels, weights) = _mask(tok, 0.0, 0)
    np.testing.assert_array_equal(masked, enc["input_ids"][0])
    assert weights.sum() == 0 and pos.dtype == np.int32 and weights.dtype == np.float32


def test_random_masks_are_unions_of_whole_phrases(tok):
    enc = tok.encode_with_offsets([CAPTION])
    phrases = _phrase_tokens(enc, SPANS)
    hits = np.zeros(len(PHRASES))
    trials = 300
    for seed in range(trials):
        _, (masked, pos, _, weights) = _mask(tok, 0.5, seed)
        got = set(pos[:int(weights.sum())].tolist())
        chosen = [p <= got for p in phrases]
        assert got == set().union(set(), *[p for p, c in zip(phrases, chosen) if c])
        hits += chosen
    assert np.all(np.abs(hits / trials - 0.5) < 0.1), hits / trials


def test_phrase_that_does_not_fit_is_skipped_not_cut(tok):
    enc = tok.encode_with_offsets([CAPTION])
    sizes = [len(p) for p in _phrase_tokens(enc, SPANS)]
    budget = sizes[0] + sizes[1] - 1  # phrase 0 fits, phrase 1 does not, phrase 2 might
    _, (_, pos, _, weights) = _mask(tok, 1.0, 0, max_masked=budget)
    got = set(pos[:int(weights.sum())].tolist())
    phrases = _phrase_tokens(enc, SPANS)
    assert phrases[0] <= got and not (phrases[1] & got)
    assert len(got) <= budget


def test_truncated_phrase_is_not_masked(tok):
    # Keep only "[CLS] a man is wearing a dark [SEP]": the jacket phrase is cut, so never masked.
    enc, (masked, _, _, weights) = _mask(tok, 1.0, 0, max_length=8)
    assert weights.sum() == 0
    np.testing.assert_array_equal(masked, enc["input_ids"][0])


def test_partial_word_overlap_counts_as_in_phrase(tok):
    # The span covers only "back" of "backpack"; the whole word-piece(s) overlapping it are masked.
    s = CAPTION.index("backpack")
    enc, (masked, pos, _, weights) = _mask(tok, 1.0, 0, spans=[[s, s + 4]])
    n = int(weights.sum())
    assert n >= 1
    assert tok.decode(enc["input_ids"][0][pos[:n]]).replace(" ##", "").replace(" ", "").startswith("back")


def test_bad_input_errors(tok):
    enc = tok.encode_with_offsets([CAPTION])
    with pytest.raises(ValueError, match="offsets"):
        mask_phrases(enc["input_ids"][0], enc["offsets"][0][:5], SPANS, 0.5, np.random.default_rng(0), 103, 8)
    with pytest.raises(ValueError, match="mask ratio"):
        mask_phrases(enc["input_ids"][0], enc["offsets"][0], SPANS, 1.5, np.random.default_rng(0), 103, 8)


def test_batch_masking_equals_row_by_row(tok):
    """mask_phrases_batch == mask_phrases on every row: same rng draws, same greedy skips (budget,
    truncation, overlapping and empty span lists), ratios per row."""
    words = CAPTION.rstrip(".").split()
    rng = np.random.default_rng(0)
    texts, spans = [], []
    for i in range(40):
        text = " ".join(words[: 4 + i % len(words)]) + "."
        cut = [int(x) for x in sorted(rng.integers(0, len(text), size=2 * (i % 5)))]
        sp = [[a, b + 1] for a, b in zip(cut[::2], cut[1::2])]
        if i % 7 == 0 and sp:
            sp.append([sp[0][0], sp[0][1] + 3])  # overlaps an earlier span
        texts.append(text)
        spans.append(sp)
    spans.append([])  # a row without phrases
    texts.append("no phrases here")
    for max_length, max_masked in ((32, 24), (10, 4), (32, 2), (6, 30)):
        enc = tok.encode_with_offsets(texts, max_length=max_length)
        ratios = np.linspace(0.0, 1.0, len(texts))
        got = mask_phrases_batch(enc["input_ids"], enc["offsets"], spans, ratios,
                                 [np.random.default_rng((3, i)) for i in range(len(texts))], tok.mask_token_id, max_masked)
        for i in range(len(texts)):
            ref = mask_phrases(enc["input_ids"][i], enc["offsets"][i], spans[i], ratios[i],
                               np.random.default_rng((3, i)), tok.mask_token_id, max_masked)
            for g, r in zip(got, ref):
                assert g[i].dtype == r.dtype
                np.testing.assert_array_equal(g[i], r, err_msg=f"row {i}, L={max_length}, M={max_masked}")
        assert got[3].sum() > 0
    with pytest.raises(ValueError, match="one span list and one rng per row"):
        mask_phrases_batch(enc["input_ids"], enc["offsets"], spans[:2], 0.5, [], 103, 8)
