"""Jitted, batched embedding of images and captions with a PLIP model (eval mode).

Works on one device or a mesh: each batch is placed with the batch sharding (every process passes
the same host arrays), and results come back to every host as numpy.
"""
from __future__ import annotations

from typing import Any

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
    """Holds the two jitted encoders of a PLIP module; call with variables and host arrays."""

    def __init__(self, model, batch_size: int = 256, sharding=None):
        from plip_jax.models.plip import PLIP

        self.batch_size = int(batch_size)
        self.sharding = sharding
        if sharding is not None:
            n = sharding.mesh.size
            self.batch_size = max(n, (self.batch_size // n) * n)

        def img_fn(variables, images_u8):
            x = transforms.normalize(images_u8)
            emb, _ = model.apply(variables, x, train=False, method=PLIP.encode_image)
            return emb.astype(jnp.float32)

        def txt_fn(variables, ids, mask):
            emb, _ = model.apply(variables, ids, mask, train=False, method=PLIP.encode_text)
            return emb.astype(jnp.float32)

        self._img = jax.jit(img_fn)
        self._txt = jax.jit(txt_fn)

    @staticmethod
    def eval_variables(variables: dict) -> dict:
        return {k: variables[k] for k in ("params", "batch_stats") if k in variables}

    def images(self, variables: dict, images_u8: np.ndarray) -> np.ndarray:
        """(N,H,W,3) uint8 at the model's input size -> (N,D) float32."""
        v = self.eval_variables(variables)
        out = []
        for s, e in _batches(len(images_u8), self.batch_size):
            x = _pad(np.asarray(images_u8[s:e]), self.batch_size)
            out.append(_get(self._img(v, _put(x, self.sharding)))[: e - s])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def texts(self, variables: dict, input_ids: np.ndarray, attention_mask: np.ndarray,
              bucket: int = 8) -> np.ndarray:
        """Token ids (N,L) -> (N,D) float32.

        Captions are encoded in order of length, each batch cut to its longest caption rounded up to
        a multiple of `bucket` (at most L/bucket compiled shapes): padding columns are masked out
        anyway, and a 48-token pad on 32-token captions costs twice the compute. `bucket=0` keeps L.
        """
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
        for s, e in _batches(len(order), self.batch_size):
            idx = order[s:e]
            cut = min(length, max(bucket, -(-int(ends[idx].max()) // bucket) * bucket)) if bucket else length
            ids = _pad(input_ids[idx, :cut], self.batch_size)
            mask = _pad(attention_mask[idx, :cut], self.batch_size)
            out.append(_get(self._txt(v, _put(ids, self.sharding), _put(mask, self.sharding)))[: e - s])
        return np.concatenate(out)[np.argsort(order)]


def text_reid_eval(embedder: Embedder, variables: dict, split: dict[str, Any]) -> dict:
    """Zero-shot text->image retrieval on a loaded eval split (query = every caption); both mAPs."""
    from plip_jax.evals.retrieval import retrieval_metrics

    img = embedder.images(variables, split["images"])
    txt = embedder.texts(variables, split["input_ids"], split["attention_mask"])
    metrics = retrieval_metrics(txt, img, np.asarray(split["caption_ids"]), np.asarray(split["image_ids"]))
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in metrics.items()}
