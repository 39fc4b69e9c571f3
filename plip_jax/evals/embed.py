"""Jitted, batched embedding of images and captions with a PLIP model (eval mode).

Works on one device or a mesh: each batch is placed with the batch sharding (every process passes
the same host arrays), and results come back to every host as numpy.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from plip_jax.data import transforms


def _put(x: np.ndarray, sharding) -> jax.Array:
    if sharding is None:
        return jnp.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _get(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1 and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    pad = np.zeros((size - x.shape[0],) + x.shape[1:], x.dtype)
    return np.concatenate([x, pad])


class Embedder:
    """Jitted encoders run over padded fixed-size batches (one compile per split): the one embedder
    of training, evaluation, fine-tuning, `from_pretrained` and the report.

    `image_fn(variables, uint8 images) -> (B, D)` and `text_fn(variables, ids, mask) -> (B, D)`;
    build it with `for_plip` (a PLIP module) or `for_encoders` (the encoder modules of an
    architecture dict, optionally with a head on the image embedding).
    """

    def __init__(self, image_fn: Callable | None = None, text_fn: Callable | None = None,
                 batch_size: int = 256, sharding=None):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.sharding = sharding
        self._multiple = 1
        if sharding is not None:
            self._multiple = sharding.mesh.size
            self.batch_size = max(self._multiple, (self.batch_size // self._multiple) * self._multiple)
        self._img = jax.jit(image_fn) if image_fn is not None else None
        self._txt = jax.jit(text_fn) if text_fn is not None else None

    @classmethod
    def for_plip(cls, model, batch_size: int = 256, sharding=None) -> "Embedder":
        """The two towers of a PLIP module (variables: the whole PLIP tree)."""
        from plip_jax.models.plip import PLIP

        def img_fn(variables, images_u8):
            x = transforms.normalize(images_u8)
            emb, _ = model.apply(variables, x, train=False, method=PLIP.encode_image)
            return emb.astype(jnp.float32)

        def txt_fn(variables, ids, mask):
            emb, _ = model.apply(variables, ids, mask, train=False, method=PLIP.encode_text)
            return emb.astype(jnp.float32)

        return cls(img_fn, txt_fn, batch_size, sharding)

    @classmethod
    def for_encoders(cls, image_model, text_model=None, recipe: str = "release", *,
                     image_head: Callable | None = None, mean=None, std=None,
                     batch_size: int = 256, sharding=None) -> "Embedder":
        """Encoder modules with variables {'params': {'image', 'text', heads...}, 'batch_stats':
        {'image', ...}}; `image_head(variables, emb)` maps the image embedding (BNNeck, a classifier)."""
        from plip_jax.models.plip import text_global

        def img_fn(variables, images_u8):
            if mean is None:
                x = transforms.normalize(images_u8)
            else:
                x = (images_u8.astype(jnp.float32) / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
            emb, _ = image_model.apply({"params": variables["params"]["image"],
                                        "batch_stats": variables["batch_stats"]["image"]}, x, train=False)
            emb = emb if image_head is None else image_head(variables, emb)
            return emb.astype(jnp.float32)

        def txt_fn(variables, ids, mask):
            last, pooled = text_model.apply({"params": variables["params"]["text"]}, ids, mask, deterministic=True)
            return text_global(last, pooled, mask, recipe).astype(jnp.float32)

        return cls(img_fn, txt_fn if text_model is not None else None, batch_size, sharding)

    @property
    def image_step(self) -> Callable:
        """The jitted image encoder `(variables, uint8 images) -> (B, D)` (ahead-of-time lowering)."""
        return self._img

    @property
    def text_step(self) -> Callable:
        """The jitted text encoder `(variables, ids, mask) -> (B, D)` (ahead-of-time lowering)."""
        return self._txt

    def with_batch_size(self, batch_size: int) -> "Embedder":
        """The same jitted encoders (no recompile) at another padded batch size."""
        import copy

        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        other = copy.copy(self)
        other.batch_size = max(self._multiple, int(batch_size) // self._multiple * self._multiple)
        return other

    def _size(self, n: int, batch_size: int | None = None) -> int:
        """The padded batch: the configured size (or `batch_size`), less for fewer inputs."""
        bs = self.batch_size if batch_size is None else int(batch_size)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {bs}")
        bs = max(self._multiple, bs // self._multiple * self._multiple)
        return min(bs, -(-max(n, 1) // self._multiple) * self._multiple)

    @staticmethod
    def eval_variables(variables: dict) -> dict:
        return {k: variables[k] for k in ("params", "batch_stats") if k in variables}

    def images(self, variables: dict, images_u8: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """(N,H,W,3) uint8 at the model's input size -> (N,D) float32."""
        if self._img is None:
            raise ValueError("this embedder has no image encoder")
        v = self.eval_variables(variables)
        out = []
        size = self._size(len(images_u8), batch_size)
        for s, e in _batches(len(images_u8), size):
            x = _pad(np.asarray(images_u8[s:e]), size)
            out.append(_get(self._img(v, _put(x, self.sharding)))[: e - s])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def texts(self, variables: dict, input_ids: np.ndarray, attention_mask: np.ndarray,
              bucket: int = 8, batch_size: int | None = None) -> np.ndarray:
        """Token ids (N,L) -> (N,D) float32.

        Captions are encoded in order of length, each batch cut to its longest caption rounded up to
        a multiple of `bucket` (at most L/bucket compiled shapes): padding columns are masked out
        anyway, and a 48-token pad on 32-token captions costs twice the compute. `bucket=0` keeps L.
        """
        if self._txt is None:
            raise ValueError("this embedder has no text encoder")
        v = self.eval_variables(variables)
        input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask)
        if len(input_ids) == 0:
            return np.zeros((0, 0), np.float32)
        length = input_ids.shape[1]
        # One past the last attended position per caption (robust to any padding side).
        nonzero = attention_mask > 0
        ends = np.where(nonzero.any(axis=1), length - np.argmax(nonzero[:, ::-1], axis=1), 0)
        order = np.argsort(ends, kind="stable") if bucket else np.arange(len(input_ids))
        out = []
        size = self._size(len(order), batch_size)
        for s, e in _batches(len(order), size):
            idx = order[s:e]
            cut = min(length, max(bucket, -(-int(ends[idx].max()) // bucket) * bucket)) if bucket else length
            ids = _pad(input_ids[idx, :cut], size)
            mask = _pad(attention_mask[idx, :cut], size)
            out.append(_get(self._txt(v, _put(ids, self.sharding), _put(mask, self.sharding)))[: e - s])
        return np.concatenate(out)[np.argsort(order)]
