"""Attribute-phrase masking for IAP and its mask-ratio curriculum (PLIP_SPEC 2.2).

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
