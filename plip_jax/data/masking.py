"""Attribute-phrase masking for IAP and its mask-ratio curriculum (PLIP paper Sec. 2.2, Tab. 16b).

Only attribute phrases are masked, each one independently with probability r, and always whole:
every word-piece of a chosen phrase becomes [MASK]. r follows r(e) = G(e/E) * (upper - lower) + lower.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

_SCHEDULES = {
    "sqrt": np.sqrt,
    "linear": lambda x: x,
    "square": np.square,
    "constant": lambda x: 0.0 * x,
}


def mask_ratio(epoch: float, total_epochs: int, lower: float = 0.2, upper: float = 0.8,
               schedule: str = "sqrt") -> float:
    """r(e) = G(e/E) * (upper - lower) + lower, with G in {sqrt, linear, square, constant(=lower)}."""
    if schedule not in _SCHEDULES:
        raise ValueError(f"unknown mask schedule {schedule!r}; choose one of {sorted(_SCHEDULES)}")
    if total_epochs <= 0:
        raise ValueError(f"total_epochs must be positive; got {total_epochs}")
    if not 0.0 <= lower <= 1.0 or not 0.0 <= upper <= 1.0:
        raise ValueError(f"mask ratio bounds must lie in [0, 1]; got lower={lower}, upper={upper}")
    progress = float(np.clip(epoch / total_epochs, 0.0, 1.0))
    return float(_SCHEDULES[schedule](progress) * (upper - lower) + lower)


def mask_phrases(input_ids: np.ndarray, offsets: np.ndarray, spans: Sequence[Sequence[int]] | np.ndarray,
                 ratio: float, rng: np.random.Generator, mask_token_id: int, max_masked: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mask whole attribute phrases of one tokenized caption.

    Args:
      input_ids: (L,) token ids. offsets: (L, 2) character offsets, (0, 0) for specials and padding.
      spans: (S, 2) character spans [start, end) of the attribute phrases.
      ratio: probability of masking each phrase. rng: numpy Generator (S draws, always).
      mask_token_id: id of [MASK]. max_masked: M, length of the padded outputs.
    Returns:
      masked_ids (L,) int32, positions (M,) int32, labels (M,) int32, weights (M,) float32.
    A token belongs to a phrase when its character range overlaps the span. A phrase is skipped
    (never partly masked) when it would exceed `max_masked` or was cut by truncation.
    """
    ids = np.asarray(input_ids)
    offs = np.asarray(offsets)
    if ids.ndim != 1 or offs.shape != (ids.shape[0], 2):
        raise ValueError(f"expected input_ids (L,) and offsets (L, 2); got {ids.shape} and {offs.shape}")
    sp = np.asarray(spans, dtype=np.int64).reshape(-1, 2) if len(spans) else np.zeros((0, 2), np.int64)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1]; got {ratio}")
    if max_masked < 0:
        raise ValueError(f"max_masked must be >= 0; got {max_masked}")

    masked = ids.astype(np.int32, copy=True)
    positions = np.zeros(max_masked, np.int32)
    labels = np.zeros(max_masked, np.int32)
    weights = np.zeros(max_masked, np.float32)
    chosen = rng.random(len(sp)) < ratio  # always S draws, so the stream does not depend on ratio
    if not chosen.any():
        return masked, positions, labels, weights

    start, end = offs[:, 0], offs[:, 1]
    real = end > start  # specials and padding have empty (0, 0) offsets
    if not real.any():
        return masked, positions, labels, weights
    text_end = end[real].max()  # spans ending past the last kept character were truncated
    member = real[None] & (start[None] < sp[:, 1:2]) & (end[None] > sp[:, 0:1])  # (S, L)

    take = np.zeros(ids.shape[0], bool)
    for s in np.flatnonzero(chosen):
        if sp[s, 1] > text_end or not member[s].any():
            continue
        new = member[s] & ~take
        if take.sum() + new.sum() <= max_masked:
            take |= new
    pos = np.flatnonzero(take)
    n = len(pos)
    positions[:n] = pos
    labels[:n] = ids[pos]
    weights[:n] = 1.0
    masked[pos] = mask_token_id
    return masked, positions, labels, weights


def mask_phrases_batch(input_ids: np.ndarray, offsets: np.ndarray, spans: Sequence[Sequence[Sequence[int]]],
                       ratios: Sequence[float] | np.ndarray, rngs: Sequence[np.random.Generator],
                       mask_token_id: int, max_masked: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`mask_phrases` for a batch in a few numpy ops: row b is exactly `mask_phrases(input_ids[b],
    offsets[b], spans[b], ratios[b], rngs[b], ...)` (same draws from each rng, same greedy order).

    Args: input_ids (B, L), offsets (B, L, 2), spans: B lists of [start, end) spans, ratios (B,),
    rngs: B Generators. Returns masked_ids (B, L) int32, positions/labels (B, M) int32, weights (B, M)
    float32.
    """
    ids = np.asarray(input_ids)
    offs = np.asarray(offsets)
    if ids.ndim != 2 or offs.shape != (*ids.shape, 2):
        raise ValueError(f"expected input_ids (B, L) and offsets (B, L, 2); got {ids.shape} and {offs.shape}")
    b, length = ids.shape
    ratios = np.broadcast_to(np.asarray(ratios, np.float64), (b,))
    if len(spans) != b or len(rngs) != b:
        raise ValueError(f"need one span list and one rng per row: {b} rows, {len(spans)} span lists, "
                         f"{len(rngs)} rngs")
    if ((ratios < 0.0) | (ratios > 1.0)).any():
        raise ValueError(f"mask ratios must lie in [0, 1]; got {ratios.min()}..{ratios.max()}")
    if max_masked < 0:
        raise ValueError(f"max_masked must be >= 0; got {max_masked}")

    counts = np.fromiter((len(s) for s in spans), np.int64, count=b)
    s_max = int(counts.max()) if b else 0
    sp = np.zeros((b, s_max, 2), np.int64)
    chosen = np.zeros((b, s_max), bool)
    for r in range(b):  # the per-row draws, in the per-row order of `mask_phrases`
        n = int(counts[r])
        if n:
            sp[r, :n] = np.asarray(spans[r], np.int64).reshape(n, 2)
        chosen[r, :n] = rngs[r].random(n) < ratios[r]

    masked = ids.astype(np.int32, copy=True)
    positions = np.zeros((b, max_masked), np.int32)
    labels = np.zeros((b, max_masked), np.int32)
    weights = np.zeros((b, max_masked), np.float32)
    if not chosen.any():
        return masked, positions, labels, weights

    start, end = offs[..., 0], offs[..., 1]                                  # (B, L)
    real = end > start
    text_end = np.where(real, end, -1).max(axis=1)                           # (B,), -1: no text
    member = (real[:, None] & (start[:, None] < sp[:, :, 1:2])
              & (end[:, None] > sp[:, :, 0:1]))                              # (B, S, L)
    usable = chosen & (sp[:, :, 1] <= text_end[:, None]) & member.any(axis=2)  # (B, S)
    take = np.zeros((b, length), bool)
    count = np.zeros(b, np.int64)
    for s in range(s_max):  # greedy in span order, all rows at once
        new = member[:, s] & ~take
        n_new = new.sum(axis=1)
        ok = usable[:, s] & (count + n_new <= max_masked)
        take |= new & ok[:, None]
        count += np.where(ok, n_new, 0)

    masked[take] = mask_token_id
    m = min(max_masked, length)
    order = np.argsort(~take, axis=1, kind="stable")[:, :m]                 # masked positions first
    valid = np.arange(m)[None] < count[:, None]
    positions[:, :m] = np.where(valid, order, 0)
    labels[:, :m] = np.where(valid, np.take_along_axis(ids, order, axis=1), 0)
    weights[:, :m] = valid
    return masked, positions, labels, weights
