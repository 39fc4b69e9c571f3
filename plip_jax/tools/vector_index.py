"""Top-k cosine ranking over a gallery's unit vectors: exact (the evaluation's matmul top-k) up to a
measured gallery size, a faiss IVF index above it, stored beside the embedding cache and rebuilt
whenever the embeddings it was built from change.

The IVF index (`IVF<nlist>,SQ8`, inner product) only proposes candidates: the best `rerank`
of them by 8-bit scores are re-scored against the float vectors, so every returned score is the
exact cosine and ties go to the lower gallery index, as in the exact path.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

# Gallery sizes up to this are ranked exactly. bench/serve.py (bench/results/serve-2026-12-06.json,
# 768-d, 2-core CPU): exact ranking's single-query p50 reaches the p50 of encoding the text query
# with PLIP's BERT-base tower (52 ms) at ~61k vectors; past that ranking dominates a query.
EXACT_MAX = 60_000
KINDS = ("auto", "exact", "ivf")
INDEX_VERSION = 1
PROBE_FRACTION = 4  # nprobe = nlist // 4: the fewest probes with recall@10 >= 0.95 at 1M (0.98; nlist/8: 0.94)
RERANK = 10           # candidates re-scored exactly per requested result (at least MIN_RERANK)
MIN_RERANK = 100


class Index(Protocol):
    kind: str

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def _top_sorted(idx: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (idx, score) pairs by descending score, ties to the lower index."""
    order = np.lexsort((idx, -scores))[:k]
    return idx[order], scores[order]


class ExactIndex:
    """Exact cosine top-k by one matmul over every unit vector (plip_jax.evals.retrieval)."""
    kind = "exact"

    def __init__(self, embeddings: np.ndarray):
        self.embeddings = embeddings

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices (k,) and cosines (k,) of the best gallery vectors for one unit query (D,)."""
        from plip_jax.evals.retrieval import similarity_topk

        k = min(int(k), len(self.embeddings))
        if k < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.asarray(query, self.embeddings.dtype).reshape(1, -1)
        # numpy, not jax: the jax backend would copy the whole gallery to the device on every call.
        idx, scores = similarity_topk(q, self.embeddings, k, normalize=False, backend="numpy")
        return idx[0], scores[0]


def default_nlist(n: int) -> int:
    """Inverted lists for n vectors: a power of two near 2 sqrt(n), at least 39 training points each."""
    nlist = 1 << max(0, round(math.log2(max(1.0, 2 * math.sqrt(n)))))
    return max(1, min(nlist, n // 39))


class IVFIndex:
    """faiss `IVF<nlist>,SQ8` candidates re-scored exactly against the float unit vectors."""
    kind = "ivf"

    def __init__(self, index, embeddings: np.ndarray, nprobe: int, build_s: float = 0.0):
        self.index = index
        self.embeddings = embeddings
        self.nlist = int(index.nlist)
        self.nprobe = max(1, min(int(nprobe), self.nlist))
        index.nprobe = self.nprobe
        self.build_s = build_s

    @classmethod
    def build(cls, embeddings: np.ndarray, nlist: int | None = None, nprobe: int | None = None,
              seed: int = 0, train_size: int | None = None) -> "IVFIndex":
        """Train the coarse quantizer and the 8-bit codes on a sample, then add every vector."""
        import faiss

        x = np.ascontiguousarray(embeddings, np.float32)
        n, dim = x.shape
        if n == 0:
            raise ValueError("cannot build an IVF index over 0 vectors")
        nlist = int(nlist or default_nlist(n))
        start = time.perf_counter()
        index = faiss.index_factory(dim, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.niter = 10
        index.cp.max_points_per_centroid = 64
        index.cp.min_points_per_centroid = 1  # small galleries: no "please provide more points" warning
        rows = min(n, train_size or 64 * nlist)
        sample = x if rows == n else x[np.sort(np.random.default_rng(seed).choice(n, rows, replace=False))]
        index.train(sample)
        index.add(x)
        nprobe = nprobe or max(1, nlist // PROBE_FRACTION)
        return cls(index, embeddings, nprobe, time.perf_counter() - start)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices (k,) and exact cosines (k,) of the best re-scored candidates for one unit query."""
        k = min(int(k), len(self.embeddings))
        if k < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.ascontiguousarray(np.asarray(query, np.float32).reshape(1, -1))
        want = min(len(self.embeddings), max(MIN_RERANK, RERANK * k))
        _, cand = self.index.search(q, want)
        cand = cand[0][cand[0] >= 0].astype(np.int64)
        scores = self.embeddings[cand] @ q[0].astype(self.embeddings.dtype)
        return _top_sorted(cand, scores, k)

    def save(self, path: Path, meta: dict) -> None:
        """The faiss index at `path` and its JSON description beside it, both written atomically."""
        import faiss

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)
        info = {**meta, "version": INDEX_VERSION, "nlist": self.nlist, "nprobe": self.nprobe,
                "build_s": round(self.build_s, 3), "faiss": faiss.__version__}
        meta_tmp = tmp.with_suffix(".json")
        meta_tmp.write_text(json.dumps(info, indent=1))
        os.replace(meta_tmp, _meta_path(path))

    @classmethod
    def load(cls, path: Path, embeddings: np.ndarray, nprobe: int | None = None) -> "IVFIndex":
        """A saved index over the same `embeddings` (the caller checks they match its digest)."""
        import faiss

        meta = json.loads(_meta_path(path).read_text())
        index = faiss.read_index(str(path))
        if index.ntotal != len(embeddings) or index.d != embeddings.shape[1]:
            raise ValueError(f"{path}: {index.ntotal} x {index.d} vectors, expected {embeddings.shape}")
        return cls(index, embeddings, nprobe or meta["nprobe"], float(meta.get("build_s", 0.0)))


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def digest(paths: Sequence[str], embeddings: np.ndarray) -> str:
    """A hash of the gallery's paths and vectors: a stored index is valid only for the same digest."""
    h = hashlib.blake2b(digest_size=16)
    h.update("\0".join(paths).encode())
    h.update(f"{embeddings.shape}{embeddings.dtype}".encode())
    h.update(np.ascontiguousarray(embeddings).data)
    return h.hexdigest()


def index_path(cache_file: Path) -> Path:
    """Where the IVF index of an embedding cache `<fingerprint>.npz` lives: `<fingerprint>.ivf.faiss`."""
    return cache_file.with_name(cache_file.stem + ".ivf.faiss")


def choose_kind(kind: str, n: int, exact_max: int = EXACT_MAX) -> str:
    """'exact' or 'ivf' for a gallery of n vectors ('auto': exact up to `exact_max`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
    if kind == "auto":
        return "exact" if n <= exact_max else "ivf"
    if kind == "ivf" and n < 1:
        return "exact"
    return kind


def open_index(embeddings: np.ndarray, paths: Sequence[str], kind: str = "auto", *,
               cache_file: Path | None = None, exact_max: int = EXACT_MAX, nprobe: int | None = None,
               log=None) -> Index:
    """The gallery's index: exact, or IVF loaded from beside `cache_file` when built from the same
    vectors, else built (and stored there when there is a cache)."""
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if choose_kind(kind, len(embeddings), exact_max) == "exact":
        return ExactIndex(embeddings)
    stored = index_path(cache_file) if cache_file is not None and cache_file.is_file() else None
    key = digest(paths, embeddings)
    if stored is not None and stored.is_file() and _meta_path(stored).is_file():
        try:
            meta = json.loads(_meta_path(stored).read_text())
            if meta.get("digest") == key and meta.get("version") == INDEX_VERSION:
                index = IVFIndex.load(stored, embeddings, nprobe)
                say(f"loaded the IVF index ({len(embeddings)} vectors) from {stored}")
                return index
            say(f"the IVF index {stored} is stale (the embeddings changed): rebuilding it")
        except (OSError, ValueError, KeyError, RuntimeError) as e:  # faiss raises RuntimeError
            say(f"warning: ignoring unreadable IVF index {stored} ({type(e).__name__}: {e})".splitlines()[0])
    say(f"building an IVF index over {len(embeddings)} vectors ...")
    index = IVFIndex.build(embeddings, nprobe=nprobe)
    say(f"built IVF{index.nlist},SQ8 (nprobe {index.nprobe}) in {index.build_s:.1f} s")
    if stored is not None:
        try:
            index.save(stored, {"digest": key, "num_vectors": len(embeddings), "dim": int(embeddings.shape[1])})
        except (OSError, RuntimeError) as e:  # a read-only folder still serves, without a stored index
            say(f"warning: cannot store the IVF index at {stored} ({e})".splitlines()[0])
    return index
