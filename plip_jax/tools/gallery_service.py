"""The searches behind the person-search server, free of HTTP: text, uploaded-image and gallery-image
queries over an indexed folder, each input checked (SearchError carries the HTTP status and the
message), gallery paths resolved without leaving the folder, and gallery files that disappeared
since indexing left out of the results and said once.

Every method is safe to call from many threads at once: a request's query vector and results are
its own; the only shared state, the set of disappeared files, is guarded by a lock.
"""
from __future__ import annotations

import io
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

MAX_QUERY_CHARS = 500
MAX_K = 100
DEFAULT_K = 20
MAX_UPLOAD_BYTES = 8 << 20
MAX_UPLOAD_PIXELS = 40_000_000


class SearchError(Exception):
    """A request the service refuses: `status` is the HTTP status, `message` says why in one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every symlink resolved, is `root` itself or lies under it."""
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):
        return False
    return real == root or root in real.parents


def inside_only(gallery: Any) -> tuple[Any, int]:
    """The gallery without the files whose symlinks lead out of its folder, and how many those were."""
    import dataclasses

    real_root = Path(os.path.realpath(gallery.root))
    keep = [i for i, p in enumerate(gallery.paths) if inside(real_root, Path(gallery.root) / p)]
    if len(keep) == len(gallery.paths):
        return gallery, 0
    kept = [gallery.paths[i] for i in keep]
    out = dataclasses.replace(gallery, paths=kept, embeddings=gallery.embeddings[keep],
                              skipped=sorted(set(gallery.skipped) | (set(gallery.paths) - set(kept))))
    return out, len(gallery.paths) - len(keep)


class SearchService:
    """Text and image person search over one indexed folder, for the server and its tests."""

    def __init__(self, model: Any, root: str | os.PathLike, paths: Sequence[str], embeddings: np.ndarray,
                 index: Any, *, model_name: str, model_detail: str = "", skipped_at_indexing: int = 0,
                 check_files: bool = True, log: Callable[[str], None] | None = None):
        self.model = model
        self.root = Path(root)
        self.real_root = Path(os.path.realpath(self.root))
        self.paths = list(paths)
        self.embeddings = embeddings
        self.index = index
        self.model_name = model_name
        self.model_detail = model_detail
        self.skipped_at_indexing = skipped_at_indexing
        self.check_files = check_files
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._position = {p: i for i, p in enumerate(self.paths)}
        self._missing: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_gallery(cls, model: Any, gallery: Any, index: Any, **kw: Any) -> "SearchService":
        """A service over a `plip_jax.tools.search.Gallery` and its index (see `inside_only`)."""
        return cls(model, gallery.root, gallery.paths, gallery.embeddings, index,
                   skipped_at_indexing=len(gallery.skipped), **kw)

    # Inputs --------------------------------------------------------------------------------------
    @staticmethod
    def parse_k(raw: Any) -> int:
        """The requested number of results: an integer in [1, MAX_K] (400 otherwise)."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return DEFAULT_K
        try:
            k = int(str(raw).strip())
        except ValueError:
            raise SearchError(400, f"k must be an integer in [1, {MAX_K}], got {str(raw)[:40]!r}") from None
        if not 1 <= k <= MAX_K:
            raise SearchError(400, f"k must be in [1, {MAX_K}], got {k}")
        return k

    @staticmethod
    def check_text(q: Any) -> str:
        """A non-empty description of at most MAX_QUERY_CHARS characters (400 otherwise)."""
        text = (q or "").strip() if isinstance(q, str) or q is None else None
        if text is None:
            raise SearchError(400, "the query must be text")
        if not text:
            raise SearchError(400, "empty query: describe the person, e.g. 'a woman in a red coat'")
        if len(text) > MAX_QUERY_CHARS:
            raise SearchError(400, f"query too long: {len(text)} characters, at most {MAX_QUERY_CHARS}")
        return text

    def decode_upload(self, data: bytes, name: str = "upload") -> np.ndarray:
        """uint8 RGB at the model's input size from an uploaded file (400 not an image, 413 too big)."""
        from PIL import Image

        from plip_jax.tools.search import load_image

        if len(data) > MAX_UPLOAD_BYTES:
            raise SearchError(413, f"upload too large: {len(data)} bytes, at most {MAX_UPLOAD_BYTES}")
        if not data:
            raise SearchError(400, f"{name}: empty file, not an image")
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
            raise SearchError(400, f"{name}: not an image (JPEG, PNG, WebP, ... expected)") from None
        if w * h > MAX_UPLOAD_PIXELS:
            raise SearchError(413, f"{name}: image too large: {w}x{h} pixels, at most {MAX_UPLOAD_PIXELS}")
        x = load_image(io.BytesIO(data), self.model.input_size)
        if x is None:
            raise SearchError(400, f"{name}: not a readable image (truncated or corrupt)")
        return x

    # Searches ------------------------------------------------------------------------------------
    def search_text(self, q: Any, k: Any = None) -> dict:
        """The top-k gallery crops for a description of a person."""
        text, k = self.check_text(q), self.parse_k(k)
        start = time.perf_counter()
        vec = self.model.encode_texts([text])[0]
        return self._answer(vec, k, start, {"kind": "text", "text": text})

    def search_upload(self, data: bytes, k: Any = None, name: str = "upload") -> dict:
        """The top-k gallery crops for an uploaded crop (image-to-image with the same image encoder)."""
        k = self.parse_k(k)
        start = time.perf_counter()
        x = self.decode_upload(data, name)
        vec = self.model.encode_images(x[None])[0]
        return self._answer(vec, k, start, {"kind": "image", "name": name})

    def search_gallery_image(self, path: Any, k: Any = None) -> dict:
        """The top-k other gallery crops for a gallery crop, from its indexed embedding."""
        k = self.parse_k(k)
        i = self._position.get(path) if isinstance(path, str) else None
        if i is None:
            raise SearchError(404, f"not a gallery image: {str(path)[:200]!r}")
        start = time.perf_counter()
        return self._answer(self.embeddings[i], k, start, {"kind": "gallery", "path": path}, exclude={path})

    def _answer(self, vec: np.ndarray, k: int, start: float, query: dict, exclude: set[str] = frozenset()) -> dict:
        vec = np.asarray(vec, np.float32)
        vec = vec / (np.linalg.norm(vec) + 1e-12)
        hits, skipped = self._rank(vec, k, exclude)
        ms = (time.perf_counter() - start) * 1000.0
        out = {"results": [{"rank": r + 1, "score": round(float(s), 6), "path": p} for r, (p, s) in enumerate(hits)],
               "ms": round(ms, 3), "query": query}
        if skipped:
            out["skipped"] = skipped
        return out

    def _rank(self, vec: np.ndarray, k: int, exclude: set[str]) -> tuple[list[tuple[str, float]], list[str]]:
        """The best k present, non-excluded paths; files found missing are marked and reported once."""
        n = len(self.paths)
        found_missing: list[str] = []
        want = min(n, k + len(exclude) + len(self._missing))
        while True:
            idx, scores = self.index.search(vec, want)
            hits = []
            for i, s in zip(idx.tolist(), scores.tolist()):
                p = self.paths[i]
                if p in exclude or p in self._missing:
                    continue
                if self.check_files and not (self.root / p).is_file():
                    if self._mark_missing(p):
                        found_missing.append(p)
                    continue
                hits.append((p, s))
                if len(hits) == k:
                    return hits, found_missing
            if want >= n:
                return hits, found_missing
            want = min(n, 2 * want + len(self._missing))

    def _mark_missing(self, path: str) -> bool:
        """Record a gallery file that disappeared; True (and one log line) only the first time."""
        with self._lock:
            if path in self._missing:
                return False
            self._missing.add(path)
        self.log(f"note: gallery file {path} disappeared since indexing: left out of results from now on")
        return True

    # Files and facts -----------------------------------------------------------------------------
    def image_file(self, path: str) -> Path:
        """The file of an indexed gallery image, never anything outside the folder (404 otherwise)."""
        if path not in self._position:
            raise SearchError(404, "not a gallery image")
        full = self.root / path
        if not inside(self.real_root, full) or not full.is_file():
            if not os.path.lexists(full):
                self._mark_missing(path)
            raise SearchError(404, "not a gallery image")
        return full

    def info(self) -> dict:
        """Gallery size, index kind and model, for the page's header."""
        with self._lock:
            missing = len(self._missing)
        return {"gallery_size": len(self.paths) - missing, "indexed": len(self.paths), "missing": missing,
                "skipped_at_indexing": self.skipped_at_indexing, "index": self.index.kind,
                "model": self.model_name, "model_detail": self.model_detail,
                "dim": int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0,
                "max_k": MAX_K, "default_k": DEFAULT_K, "max_query_chars": MAX_QUERY_CHARS,
                "max_upload_bytes": MAX_UPLOAD_BYTES}

    def warm_up(self) -> None:
        """Compile the encoders for every caption-length bucket and one image, so no request compiles."""
        longest = int(self.model.config.get("max_length", 64))
        for length in range(8, longest + 8, 8):  # Embedder.texts cuts batches to multiples of 8 tokens
            self.model.encode_texts([" ".join(["person"] * max(1, min(length, longest) - 2))])
        h, w = self.model.input_size
        self.model.encode_images(np.zeros((1, h, w, 3), np.uint8))
