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
    """Resumable stream of augmented image batches {image, label[, attribute_labels]} over a source.

    Global batch (epoch, position) is a pure function of the seed: the sampler's epoch order ('pk':
    P x K identity batches, 'shuffle': plain shuffled batches) and, for row j of that batch, the
    augmentation rng (seed, epoch, position, j). Each process decodes only its contiguous rows of
    the global batch, on a thread pool one batch ahead. `state()` is the (epoch, position) of the
    next batch, so `restore()` resumes exactly, at any process count. `labels` are the class indices
    of the records (identity classes, or unused zeros).
    """

    def __init__(self, source: Sequence[Mapping[str, Any]], indices: np.ndarray, labels: np.ndarray,
                 attributes: np.ndarray | None, image_size: tuple[int, int], batch_size: int,
                 sampler: str, k: int, seed: int, aug: transforms.AugmentConfig, threads: int = 2,
                 process_index: int = 0, process_count: int = 1):
        if sampler not in ("pk", "shuffle"):
            raise ValueError(f"sampler must be 'pk' or 'shuffle', got {sampler!r}")
        if sampler == "pk" and batch_size % k:
            raise ValueError(f"batch_size {batch_size} must be a multiple of K={k} for the P x K sampler")
        if process_count < 1 or not 0 <= process_index < process_count or batch_size % process_count:
            raise ValueError(f"batch_size {batch_size} must split evenly over {process_count} processes "
                             f"(process {process_index})")
        self.source, self.indices, self.labels = source, np.asarray(indices), np.asarray(labels)
        self.attributes = attributes
        self.size, self.batch_size, self.sampler, self.k = tuple(image_size), batch_size, sampler, k
        self.seed, self.aug = seed, aug
        self.local_batch = batch_size // process_count
        self._rows = slice(process_index * self.local_batch, (process_index + 1) * self.local_batch)
        self.pool = futures.ThreadPoolExecutor(max(1, threads))
        self._orders: dict[int, list[np.ndarray]] = {}
        self._next = (0, 0)                      # (epoch, position) of the batch next() returns
        self._pending: tuple[tuple[int, int], tuple[np.ndarray, list[futures.Future]]] | None = None
        self.steps_per_epoch = len(self._order(0))
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.indices)} training images give no full batch of {batch_size}")

    def _order(self, epoch: int) -> list[np.ndarray]:
        """The global batches (record rows) of an epoch; the last two epochs are cached."""
        if epoch not in self._orders:
            if len(self._orders) >= 2:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = (pk_batches(self.labels, self.batch_size // self.k, self.k, self.seed, epoch)
                                   if self.sampler == "pk" else
                                   shuffled_batches(len(self.indices), self.batch_size, self.seed, epoch))
        return self._orders[epoch]

    def _after(self, epoch: int, pos: int) -> tuple[int, int]:
        return (epoch, pos + 1) if pos + 1 < len(self._order(epoch)) else (epoch + 1, 0)

    def _submit(self, epoch: int, pos: int) -> tuple[np.ndarray, list[futures.Future]]:
        """This process's rows of global batch (epoch, pos) and their decodes, one task per image."""
        first = self._rows.start
        mine = self._order(epoch)[pos][self._rows]

        def one(j: int) -> np.ndarray:
            rng = np.random.default_rng((self.seed, epoch, pos, first + j))
            return transforms.load_train_image(self.source[int(self.indices[mine[j]])]["image"], self.size,
                                               rng, self.aug)

        return mine, [self.pool.submit(one, j) for j in range(len(mine))]

    def next_local(self) -> dict[str, np.ndarray]:
        """This process's rows of the next global batch."""
        if self._pending is None or self._pending[0] != self._next:
            self._pending = (self._next, self._submit(*self._next))
        mine, images = self._pending[1]
        self._next = self._after(*self._next)
        self._pending = (self._next, self._submit(*self._next))
        out = {"image": np.stack([f.result() for f in images]), "label": self.labels[mine].astype(np.int32)}
        if self.attributes is not None:
            out["attribute_labels"] = self.attributes[mine].astype(np.int8)
        return out

    def next_global(self, sharding) -> dict:
        """The next global batch as jax.Arrays (each process passes its own rows)."""
        from plip_jax.data.pipeline import global_batch

        return global_batch(self.next_local(), sharding)

    def state(self) -> dict[str, int]:
        epoch, pos = self._next
        return {"epoch": int(epoch), "position": int(pos)}

    def restore(self, state: Mapping[str, int] | None, step: int) -> None:
        """Continue at a saved `state()`, else (None) at the batch `step` batches from the start."""
        if state is not None:
            self._next = (int(state["epoch"]), int(state["position"]))
        else:
            epoch = 0
            while step >= len(self._order(epoch)):
                step -= len(self._order(epoch))
                epoch += 1
            self._next = (epoch, int(step))
        self._pending = None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return self.next_local()

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
