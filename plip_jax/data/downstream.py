"""Image-only data for the downstream heads: record scans, the P x K identity sampler, a threaded
batch loader, the few-shot identity subset, and the query/gallery split of a held-out test set.

Text Re-ID fine-tuning reuses the caption pipeline (plip_jax.data.pipeline); image Re-ID and
attribute recognition need images, ids, cameras and attribute labels only, and their datasets
(Market-1501, PA-100K, ...) have no captions, so they read through this module.
"""
from __future__ import annotations

import concurrent.futures as futures
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from plip_jax.data import transforms


def scan_labels(source: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """ids (N,), camera_ids (N,) and attribute_labels (N, K) of every record (K = 0 when absent)."""
    n = len(source)
    ids = np.zeros(n, np.int64)
    cams = np.full(n, -1, np.int64)
    attrs: list[np.ndarray] = []
    for i in range(n):
        ex = source[i]
        ids[i] = int(ex["id"])
        cams[i] = int(ex.get("camera_id", -1))
        attrs.append(np.asarray(ex.get("attribute_labels", np.zeros(0, np.int8)), np.int8))
    return {"ids": ids, "camera_ids": cams,
            "attribute_labels": np.stack(attrs) if attrs else np.zeros((0, 0), np.int8)}


def few_shot_ids(ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A deterministic random subset of the distinct ids: ceil(fraction * #ids) of them (>= 1)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"few-shot fraction must be in (0, 1], got {fraction}")
    uniq = np.unique(ids)
    n = max(1, int(np.ceil(fraction * len(uniq))))
    if n >= len(uniq):
        return uniq
    return np.sort(np.random.default_rng((seed, 0xF5)).choice(uniq, n, replace=False))


def contiguous_labels(ids: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Person ids -> class indices 0..C-1 (sorted id order), and the mapping."""
    uniq = np.unique(ids)
    mapping = {int(v): i for i, v in enumerate(uniq)}
    return np.searchsorted(uniq, ids).astype(np.int32), mapping


def pk_batches(ids: np.ndarray, p: int, k: int, seed: int, epoch: int) -> list[np.ndarray]:
    """One epoch of P x K batches over record indices (BoT ``RandomIdentitySampler``).

    Each identity's images are shuffled and cut into groups of K (an identity with fewer than K
    images is sampled with replacement up to K; a last partial group is dropped). Batches take one
    group from each of P distinct identities, drawn at random among those with groups left.
    """
    if p <= 0 or k <= 0:
        raise ValueError(f"P and K must be positive, got P={p}, K={k}")
    rng = np.random.default_rng((seed, epoch, 0x9C))
    uniq, inverse = np.unique(ids, return_inverse=True)
    if len(uniq) < p:
        raise ValueError(f"P x K sampler needs at least P={p} identities; the data has {len(uniq)}")
    groups: list[list[np.ndarray]] = []
    for c in range(len(uniq)):
        idx = rng.permutation(np.flatnonzero(inverse == c))
        if len(idx) < k:
            idx = rng.choice(idx, k, replace=True)
        groups.append([idx[j:j + k] for j in range(0, len(idx) - k + 1, k)])
    batches = []
    while True:
        alive = [c for c, g in enumerate(groups) if g]
        if len(alive) < p:
            break
        for c in rng.choice(alive, p, replace=False):
            batches.append(groups[c].pop())
        batches[-p:] = [np.concatenate(batches[-p:])]
    return batches


def shuffled_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """One epoch of plain shuffled batches (last partial batch dropped)."""
    order = np.random.default_rng((seed, epoch, 0x5B)).permutation(n)
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


class ImageBatches:
    """Endless stream of augmented image batches {image, label, attribute_labels} over a source.

    `sampler` 'pk' (P x K identity batches) or 'shuffle'. Decoding runs on a thread pool, one batch
    ahead. `labels` are the class indices of the records (identity classes or unused zeros).
    """

    def __init__(self, source: Sequence[Mapping[str, Any]], indices: np.ndarray, labels: np.ndarray,
                 attributes: np.ndarray | None, image_size: tuple[int, int], batch_size: int,
                 sampler: str, k: int, seed: int, aug: transforms.AugmentConfig, threads: int = 2):
        if sampler not in ("pk", "shuffle"):
            raise ValueError(f"sampler must be 'pk' or 'shuffle', got {sampler!r}")
        if sampler == "pk" and batch_size % k:
            raise ValueError(f"batch_size {batch_size} must be a multiple of K={k} for the P x K sampler")
        self.source, self.indices, self.labels = source, np.asarray(indices), np.asarray(labels)
        self.attributes = attributes
        self.size, self.batch_size, self.sampler, self.k = tuple(image_size), batch_size, sampler, k
        self.seed, self.aug = seed, aug
        self.pool = futures.ThreadPoolExecutor(max(1, threads))
        self.epoch, self._queue, self._pending = 0, [], None
        self.steps_per_epoch = len(self._epoch_batches(0))
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.indices)} training images give no full batch of {batch_size}")

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        if self.sampler == "pk":
            return pk_batches(self.labels, self.batch_size // self.k, self.k, self.seed, epoch)
        return shuffled_batches(len(self.indices), self.batch_size, self.seed, epoch)

    def _load(self, rows: np.ndarray, tag: int) -> dict[str, np.ndarray]:
        def one(j: int) -> np.ndarray:
            rng = np.random.default_rng((self.seed, tag, j))
            return transforms.load_train_image(self.source[int(self.indices[rows[j]])]["image"], self.size,
                                               rng, self.aug)
        images = list(self.pool.map(one, range(len(rows))))
        out = {"image": np.stack(images), "label": self.labels[rows].astype(np.int32)}
        if self.attributes is not None:
            out["attribute_labels"] = self.attributes[rows].astype(np.int8)
        return out

    def _next_rows(self) -> tuple[np.ndarray, int]:
        if not self._queue:
            self._queue = list(reversed(self._epoch_batches(self.epoch)))
            self._tag_base = self.epoch * 1_000_003
            self.epoch += 1
        rows = self._queue.pop()
        return rows, self._tag_base + len(self._queue)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._pending is None:
            self._pending = self.pool.submit(self._load, *self._next_rows())
        batch = self._pending.result()
        self._pending = self.pool.submit(self._load, *self._next_rows())
        return batch

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def split_query_gallery(ids: np.ndarray, cams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Query/gallery masks for a held-out set without an official split (the procedural test set).

    Per identity: query = its images from the camera of its first image (source order), gallery =
    all its other images; identities seen by one camera only go to the gallery (distractors). With
    the Market rule (same id + same camera ignored) every query then has a cross-camera match.
    """
    ids, cams = np.asarray(ids), np.asarray(cams)
    if (cams < 0).any():
        raise ValueError("query/gallery split by camera needs known camera ids (>= 0)")
    query = np.zeros(len(ids), bool)
    for pid in np.unique(ids):
        rows = np.flatnonzero(ids == pid)
        if len(np.unique(cams[rows])) < 2:
            continue
        query[rows[cams[rows] == cams[rows[0]]]] = True
    return query, ~query
