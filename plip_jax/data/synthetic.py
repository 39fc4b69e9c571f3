"""In-memory training batches with the exact spec of the grain pipeline (no tfds/grain import).

Used by unit tests and by the GPU benchmark, whose image has neither tfds nor grain. Batches have
realistic structure: [CLS] caption [SEP] then padding, whole masked phrases inside the caption,
and identities repeated within the batch so CMPM has positives.
"""
from __future__ import annotations

import numpy as np

# bert-base-uncased special ids (the default vocab of plip_jax.data.tokenizer).
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103
_FIRST_WORD_ID = 1000  # ids below are [unused*] / specials in the BERT vocab

BATCH_KEYS = ("image", "input_ids", "attention_mask", "masked_input_ids",
              "mlm_positions", "mlm_labels", "mlm_weights", "id")


def batch_spec(batch_size: int, image_size: tuple[int, int] = (256, 128), max_length: int = 64,
               max_masked: int = 24, images_per_caption: int = 1) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every key of a training batch (docs/contracts.md)."""
    b, (h, w), l, m = batch_size, image_size, max_length, max_masked
    spec = {
        "image": ((b, h, w, 3), np.dtype(np.uint8)),
        "input_ids": ((b, l), np.dtype(np.int32)),
        "attention_mask": ((b, l), np.dtype(np.int32)),
        "masked_input_ids": ((b, l), np.dtype(np.int32)),
        "mlm_positions": ((b, m), np.dtype(np.int32)),
        "mlm_labels": ((b, m), np.dtype(np.int32)),
        "mlm_weights": ((b, m), np.dtype(np.float32)),
        "id": ((b,), np.dtype(np.int32)),
    }
    if images_per_caption > 1:  # K-1 more images of each caption's identity (DataConfig.images_per_caption)
        spec["more_images"] = ((b, images_per_caption - 1, h, w, 3), np.dtype(np.uint8))
    return spec


def synthetic_batch(batch_size: int, image_size: tuple[int, int] = (256, 128), max_length: int = 64,
                    max_masked: int = 24, vocab_size: int = 30522, num_ids: int | None = None,
                    seed: int = 0, images_per_caption: int = 1) -> dict[str, np.ndarray]:
    """A random training batch; `num_ids` distinct identities (default batch_size // 2).

    `images_per_caption` K > 1 adds `more_images` (B, K-1, H, W, 3): more images of each row's identity.
    """
    if batch_size <= 0 or max_length < 3 or max_masked < 0:
        raise ValueError(f"need batch_size > 0, max_length >= 3, max_masked >= 0; got "
                         f"{batch_size}, {max_length}, {max_masked}")
    if vocab_size <= _FIRST_WORD_ID:
        raise ValueError(f"vocab_size must exceed {_FIRST_WORD_ID} (BERT-style vocab); got {vocab_size}")
    rng = np.random.default_rng(seed)
    h, w = image_size
    num_ids = max(1, batch_size // 2) if num_ids is None else int(num_ids)
    if num_ids <= 0:
        raise ValueError(f"num_ids must be positive; got {num_ids}")

    # Smooth-ish images: a per-identity colour plus noise, so identical ids look alike.
    ids = rng.integers(0, num_ids, size=batch_size).astype(np.int32)
    base = np.random.default_rng(seed + 1).integers(0, 256, size=(num_ids, 1, 1, 3))
    noise = rng.integers(-40, 41, size=(batch_size, h, w, 3))
    image = np.clip(base[ids] + noise, 0, 255).astype(np.uint8)

    input_ids = np.full((batch_size, max_length), PAD_ID, np.int32)
    attention = np.zeros((batch_size, max_length), np.int32)
    masked = np.empty_like(input_ids)
    positions = np.zeros((batch_size, max_masked), np.int32)
    labels = np.zeros((batch_size, max_masked), np.int32)
    weights = np.zeros((batch_size, max_masked), np.float32)
    for i in range(batch_size):
        n_words = int(rng.integers(min(10, max_length - 2), max_length - 1))  # caption tokens
        input_ids[i, 0] = CLS_ID
        input_ids[i, 1:n_words + 1] = rng.integers(_FIRST_WORD_ID, vocab_size, size=n_words)
        input_ids[i, n_words + 1] = SEP_ID
        attention[i, :n_words + 2] = 1
        masked[i] = input_ids[i]
        # Whole "phrases" of 1-3 word-pieces inside the caption, never past max_masked.
        taken: list[int] = []
        cursor = 1
        while cursor <= n_words:
            length = int(rng.integers(1, 4))
            if cursor + length - 1 <= n_words and rng.random() < 0.3 and len(taken) + length <= max_masked:
                taken.extend(range(cursor, cursor + length))
            cursor += length + int(rng.integers(1, 5))
        n = len(taken)
        positions[i, :n] = taken
        labels[i, :n] = input_ids[i, taken]
        weights[i, :n] = 1.0
        masked[i, taken] = MASK_ID
    out = {"image": image, "input_ids": input_ids, "attention_mask": attention,
           "masked_input_ids": masked, "mlm_positions": positions, "mlm_labels": labels,
           "mlm_weights": weights, "id": ids}
    if images_per_caption > 1:
        more_noise = rng.integers(-40, 41, size=(batch_size, images_per_caption - 1, h, w, 3))
        out["more_images"] = np.clip(base[ids][:, None] + more_noise, 0, 255).astype(np.uint8)
    return out
