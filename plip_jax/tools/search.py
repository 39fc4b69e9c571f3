"""Text-to-image person search over a folder of crops with a PLIP checkpoint.

    python -m plip_jax.search --checkpoint PATH --images DIR --query "a woman in a red coat" \
        [--query "..."] [--top-k 10] [--out result.png]

Every file under DIR (recursively, hidden entries excluded) is tried as an image; files that are
not readable images are skipped and counted, never fatal. Image embeddings are cached in
`DIR/.plip_search/<model fingerprint>.npz` and refreshed per file when its size or mtime changes
(new files are embedded, removed ones dropped). Ranking is by cosine similarity. For each query the
tool prints rank, score and path, and `--out` draws the query above its top-k crops with scores.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from plip_jax.core.cli import ArgumentParser
from plip_jax.tools.drawing import Tile, draw_rows

CACHE_DIRNAME = ".plip_search"
CACHE_VERSION = 1
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


@dataclasses.dataclass
class Gallery:
    """Embedded images of a folder: relative paths, L2-normalised embeddings, skipped files."""
    root: Path
    paths: list[str]
    embeddings: np.ndarray  # (N, D) float32, unit rows
    skipped: list[str]
    num_cached: int = 0
    num_embedded: int = 0
    cache_file: Path | None = None


@dataclasses.dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    path: str  # relative to the gallery root


# --------------------------------------------------------------------------------------------
# Files and cache
# --------------------------------------------------------------------------------------------
def list_files(root: str | os.PathLike) -> list[str]:
    """Every regular file under `root` (relative POSIX paths, sorted), hidden files/dirs excluded."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        out += [(rel / f).as_posix() for f in filenames if not f.startswith(".")]
    return sorted(out)


def load_image(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray | None:
    """uint8 RGB (H, W, 3) at `size` (bicubic, the official preprocessing), or None if unreadable."""
    from PIL import Image

    h, w = size
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            if rgb.size != (w, h):
                rgb = rgb.resize((w, h), Image.BICUBIC)
            return np.asarray(rgb, np.uint8)
    except _READ_ERRORS + (Image.DecompressionBombError,):
        return None


def model_fingerprint(model: Any) -> str:
    """A short hash of the model's architecture config and every weight (cache key)."""
    import jax

    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(model.config, sort_keys=True, default=str).encode())
    for path, leaf in jax.tree_util.tree_leaves_with_path(model.variables):
        a = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _stat(root: Path, rel: str) -> tuple[int, int]:
    st = (root / rel).stat()
    return int(st.st_size), int(st.st_mtime_ns)


def _read_cache(file: Path) -> dict[str, Any]:
    """{'emb': {path: (size, mtime, vector)}, 'bad': {path: (size, mtime)}}; empty on any problem."""
    empty: dict[str, Any] = {"emb": {}, "bad": {}}
    if not file.is_file():
        return empty
    try:
        with np.load(file, allow_pickle=False) as z:
            if int(z["version"]) != CACHE_VERSION:
                return empty
            emb = {str(p): (int(s), int(m), e) for p, s, m, e in
                   zip(z["paths"], z["sizes"], z["mtimes"], z["embeddings"])}
            bad = {str(p): (int(s), int(m)) for p, s, m in zip(z["bad_paths"], z["bad_sizes"], z["bad_mtimes"])}
        return {"emb": emb, "bad": bad}
    except (OSError, ValueError, KeyError) as e:
        print(f"warning: ignoring unreadable cache {file} ({e})", file=sys.stderr)
        return empty


def _write_cache(file: Path, root: Path, paths: list[str], emb: np.ndarray, bad: list[str]) -> bool:
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        st = [_stat(root, p) for p in paths]
        bst = [_stat(root, p) for p in bad]
        tmp = file.with_name(file.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp, version=np.int64(CACHE_VERSION), paths=np.asarray(paths, dtype=str),
                 sizes=np.asarray([s for s, _ in st], np.int64).reshape(-1),
                 mtimes=np.asarray([m for _, m in st], np.int64).reshape(-1), embeddings=emb,
                 bad_paths=np.asarray(bad, dtype=str), bad_sizes=np.asarray([s for s, _ in bst], np.int64),
                 bad_mtimes=np.asarray([m for _, m in bst], np.int64))
        os.replace(tmp, file)
        return True
    except OSError as e:  # a read-only folder still searches, just without a cache
        print(f"warning: cannot write the embedding cache {file} ({e})", file=sys.stderr)
        return False


# --------------------------------------------------------------------------------------------
# Indexing and search
# --------------------------------------------------------------------------------------------
def index_folder(model: Any, root: str | os.PathLike, cache: bool = True,
                 cache_dir: str | os.PathLike | None = None, batch_size: int = 64,
                 progress: bool = True) -> Gallery:
    """Embed every readable image under `root`, reusing cached embeddings of unchanged files."""
    from tqdm import tqdm

    from plip_jax.evals.retrieval import l2_normalize

    root = Path(root)
    files = list_files(root)
    cache_file = None
    old: dict[str, Any] = {"emb": {}, "bad": {}}
    if cache:
        cache_file = Path(cache_dir or root / CACHE_DIRNAME) / f"{model_fingerprint(model)}.npz"
        old = _read_cache(cache_file)
    stats = {p: _stat(root, p) for p in files}
    vectors: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    todo: list[str] = []
    for p in files:
        hit = old["emb"].get(p)
        if hit is not None and hit[:2] == stats[p]:
            vectors[p] = np.asarray(hit[2], np.float32)
        elif old["bad"].get(p) == stats[p]:
            skipped.append(p)
        else:
            todo.append(p)
    num_cached = len(vectors)
    size = model.input_size
    bar = tqdm(total=len(todo), desc="embedding images", unit="img", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        pixels, ok = [], []
        for p in chunk:
            x = load_image(root / p, size)
            if x is None:
                skipped.append(p)
            else:
                pixels.append(x)
                ok.append(p)
        if pixels:
            emb = model.encode_images(np.stack(pixels), batch_size=batch_size)
            vectors.update(zip(ok, emb))
        bar.update(len(chunk))
    bar.close()
    paths = [p for p in files if p in vectors]
    skipped = sorted(skipped)
    dim = next(iter(vectors.values())).shape[-1] if vectors else 0
    raw = np.stack([vectors[p] for p in paths]).astype(np.float32) if paths else np.zeros((0, dim), np.float32)
    if cache_file is not None and (todo or set(old["emb"]) | set(old["bad"]) != set(files)):
        _write_cache(cache_file, root, paths, raw, skipped)
    return Gallery(root=root, paths=paths, embeddings=l2_normalize(raw) if paths else raw,
                   skipped=skipped, num_cached=num_cached, num_embedded=len(paths) - num_cached,
                   cache_file=cache_file)


def search(model: Any, gallery: Gallery, queries: Sequence[str], top_k: int = 10) -> list[list[Hit]]:
    """For each query, the top-k gallery images by cosine similarity (best first)."""
    from plip_jax.evals.retrieval import similarity_topk

    if isinstance(queries, str):
        raise TypeError("queries must be a list of strings, not a single string")
    if not queries or any(not q.strip() for q in queries):
        raise ValueError("every query must be a non-empty string")
    if not gallery.paths:
        raise ValueError(f"no readable images under {gallery.root}")
    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    k = min(int(top_k), len(gallery.paths))
    text = model.encode_texts(list(queries))
    idx, scores = similarity_topk(text, gallery.embeddings, k)
    return [[Hit(r + 1, float(s), gallery.paths[i]) for r, (i, s) in enumerate(zip(row, srow))]
            for row, srow in zip(idx, scores)]


def format_results(queries: Sequence[str], results: list[list[Hit]], root: str | os.PathLike) -> str:
    """The printed table: per query, lines of rank, score and path."""
    lines = []
    for q, hits in zip(queries, results):
        lines.append(f'query: "{q}"')
        lines.append(f"{'rank':>5}  {'score':>7}  path")
        lines += [f"{h.rank:>5}  {h.score:>7.4f}  {Path(root) / h.path}" for h in hits]
        lines.append("")
    return "\n".join(lines)


def draw_results(queries: Sequence[str], results: list[list[Hit]], root: str | os.PathLike,
                 out: str | os.PathLike, thumb: tuple[int, int] = (128, 64), dpi: int = 80) -> Path:
    """The search picture: each query on top, its top-k crops below with rank and score."""
    rows = []
    for q, hits in zip(queries, results):
        tiles = []
        for h in hits:
            x = load_image(Path(root) / h.path, thumb)
            tiles.append(Tile(x if x is not None else np.zeros((*thumb, 3), np.uint8),
                              f"#{h.rank}  {h.score:.3f}", textwrap.shorten(h.path, 22, placeholder="...")))
        rows.append((f'"{q}"', tiles))
    return draw_rows(rows, out, dpi=dpi)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--checkpoint and --images: the flags of every command that searches a gallery."""
    p.add_argument("--checkpoint", required=True,
                   help="run workdir, Orbax step dir, official .pth.tar, or a from-torch folder")
    p.add_argument("--images", required=True, help="folder of person crops (searched recursively)")


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    """How the gallery is embedded and cached (shared by search and serve)."""
    p.add_argument("--recipe", choices=("release", "paper_v2"), default=None,
                   help="override the text pooling stored with the weights")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cache-dir", default=None, help=f"where to cache embeddings (default DIR/{CACHE_DIRNAME})")
    p.add_argument("--no-cache", action="store_true", help="embed everything, read and write no cache")
    p.add_argument("--no-progress", action="store_true")


def _parser() -> argparse.ArgumentParser:
    from plip_jax.core.cli import add_debug_flag

    p = ArgumentParser(prog="python -m plip_jax.search", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--query", action="append", required=True, help="text query; repeat for several")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--out", default=None, help="PNG to draw the results into")
    add_index_arguments(p)
    add_debug_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        print("error: --top-k and --batch-size must be >= 1", file=sys.stderr)
        return 2
    if not Path(args.images).is_dir():
        print(f"error: --images {args.images}: not a directory", file=sys.stderr)
        return 2
    if any(not q.strip() for q in args.query):
        print("error: every --query must be non-empty", file=sys.stderr)
        return 2
    from plip_jax.api import from_pretrained

    try:
        model = from_pretrained(args.checkpoint, recipe=args.recipe)
    except Exception as e:  # any load failure is one line for the user
        from plip_jax.core.cli import reraise_if_debug

        reraise_if_debug()
        print(f"error: cannot load --checkpoint {args.checkpoint}: {type(e).__name__}: {e}".splitlines()[0],
              file=sys.stderr)
        return 2
    progress = not args.no_progress and os.environ.get("PLIP_NO_PROGRESS") != "1"
    gallery = index_folder(model, args.images, cache=not args.no_cache, cache_dir=args.cache_dir,
                           batch_size=args.batch_size, progress=progress)
    print(f"{len(gallery.paths)} images ({gallery.num_cached} from cache, {gallery.num_embedded} embedded), "
          f"{len(gallery.skipped)} unreadable files skipped", flush=True)
    if not gallery.paths:
        print(f"error: no readable images under {args.images}", file=sys.stderr)
        return 2
    if args.top_k > len(gallery.paths):
        print(f"note: --top-k {args.top_k} > {len(gallery.paths)} images; showing all", file=sys.stderr)
    results = search(model, gallery, args.query, args.top_k)
    print(format_results(args.query, results, args.images), flush=True)
    if args.out:
        out = draw_results(args.query, results, args.images, args.out)
        print(f"wrote {out}")
    return 0



def cli(argv: Sequence[str] | None = None) -> int:
    """`python -m plip_jax.search`: main() with known faults as one `error:` line (plip_jax.core.cli)."""
    from plip_jax.core.checkpoint import CheckpointError
    from plip_jax.core.cli import run_cli

    return run_cli(main, argv, known=(CheckpointError,))


if __name__ == "__main__":
    sys.exit(cli())
