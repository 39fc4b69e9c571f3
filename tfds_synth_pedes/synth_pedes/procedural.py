"""Procedural SYNTH-PEDES: sample identities and render them into the released folder layout.

Writes `synthpedes_dataset.json` + `PartN/<id>/<k>.jpg` exactly like the release (plus an
optional per-entry `camera_id`), so the `full` ingest code reads it unchanged and every procedural
build exercises the path real SYNTH-PEDES takes.
Identities are unique combinations of the six caption-visible attribute slots, so held-out
identities are distinguishable from text; everything is a pure function of the seed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfds_synth_pedes import spac, vocab
from tfds_synth_pedes.synth_pedes.render import Look, random_view, render

ANNOTATION_FILE = "synthpedes_dataset.json"
PARAMS_FILE = "procedural_params.json"
NUM_PARTS = 11
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (250, 222, 196), (238, 192, 160), (222, 170, 128), (196, 134, 92), (140, 88, 56), (92, 62, 42),
)
SHOE_COLOURS: tuple[str, ...] = ("black", "white", "grey", "brown", "red", "blue")
HAIR_COLOUR_P = {"black": 0.45, "brown": 0.3, "blonde": 0.15, "grey": 0.1}


@dataclasses.dataclass(frozen=True)
class Identity:
    """One procedural person: the released-format attributes, caption shades and the drawn look."""

    id: int
    attributes: dict[str, str]
    shades: dict[str, str]
    look: Look


def _choice(rng: np.random.Generator, options: dict[str, float] | tuple[str, ...]) -> str:
    if isinstance(options, dict):
        keys = list(options)
        p = np.asarray([options[k] for k in keys], np.float64)
        return keys[int(rng.choice(len(keys), p=p / p.sum()))]
    return options[int(rng.integers(len(options)))]


def _colour(rng: np.random.Generator, name: str, shade: str, table: dict[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    rgb = np.asarray(table[name], np.float64)
    if shade == "dark":
        rgb = rgb * 0.6
    elif shade == "light":
        rgb = rgb + 0.45 * (255 - rgb)
    rgb = rgb + rng.uniform(-10, 10, 3)  # the identity's exact shade
    return tuple(int(v) for v in np.clip(rgb, 0, 255))  # type: ignore[return-value]


def _sample_identity(rng: np.random.Generator, pid: int) -> Identity:
    female = bool(rng.random() < 0.5)
    long_hair = bool(rng.random() < (0.75 if female else 0.1))
    hair = _choice(rng, HAIR_COLOUR_P)
    upper_type, upper = _choice(rng, tuple(vocab.UPPER_TYPES)), _choice(rng, tuple(vocab.COLOURS))
    lower_type = _choice(rng, {"pants": 0.45, "shorts": 0.2, "skirt": 0.35} if female else {"pants": 0.7, "shorts": 0.3})
    lower = _choice(rng, tuple(vocab.COLOURS))
    shoes_type, shoes = _choice(rng, {"shoes": 0.75, "boots": 0.25}), _choice(rng, SHOE_COLOURS)
    others_type = _choice(rng, {"none": 0.35, "backpack": 0.25, "handbag": 0.25 if female else 0.08, "hat": 0.15})
    others = _choice(rng, tuple(vocab.COLOURS))
    shades = {
        "upper": _choice(rng, vocab.SHADES.get(upper, ("",))),
        "lower": _choice(rng, vocab.SHADES.get(lower, ("",))),
        "others": _choice(rng, vocab.SHADES.get(others, ("",))),
    }
    attributes = {
        "gender": "woman" if female else "man",
        "head": f"{'long' if long_hair else 'short'} {hair} hair",
        "upper": f"{upper} {upper_type}",
        "lower": f"{lower} {lower_type}",
        "shoes": f"{shoes} {shoes_type}",
        "others": vocab.UNKNOWN if others_type == "none" else f"{others} {others_type}",
    }
    skin = np.asarray(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], np.float64) + rng.uniform(-8, 8, 3)
    look = Look(
        female=female,
        build=float(rng.uniform(0.85, 1.15)),
        skin=tuple(int(v) for v in np.clip(skin, 0, 255)),  # type: ignore[arg-type]
        hair=_colour(rng, hair, "", vocab.HAIR_COLOURS),
        long_hair=long_hair,
        upper_type=upper_type,
        upper=_colour(rng, upper, shades["upper"], vocab.COLOURS),
        lower_type=lower_type,
        lower=_colour(rng, lower, shades["lower"], vocab.COLOURS),
        shoes_type=shoes_type,
        shoes=_colour(rng, shoes, "", vocab.COLOURS),
        others_type=None if others_type == "none" else others_type,
        others=_colour(rng, others, shades["others"], vocab.COLOURS),
    )
    return Identity(pid, attributes, shades, look)


def sample_identities(num_identities: int, seed: int) -> list[Identity]:
    """`num_identities` identities (ids 1..N) whose six attribute strings are pairwise different."""
    rng = np.random.default_rng([seed, 0x5EED])
    seen: set[str] = set()
    out: list[Identity] = []
    while len(out) < num_identities:
        for _ in range(1000):
            ident = _sample_identity(rng, len(out) + 1)
            key = spac.format_attributes(ident.attributes)
            if key not in seen:
                break
        else:
            raise ValueError(f"cannot find {num_identities} identities with distinct attributes; lower num_identities")
        seen.add(key)
        out.append(ident)
    return out


def _entries_for(ident: Identity, params: dict, image_dir: Path) -> list[dict]:
    """Renders one identity's images into image_dir and returns its annotation entries."""
    seed, n_img, n_cam = params["seed"], params["images_per_identity"], params["num_cameras"]
    size = (params["image_height"], params["image_width"])
    part = 1 + (ident.id - 1) * NUM_PARTS // params["num_identities"]
    rel_dir = f"Part{part}/{ident.id}"
    (image_dir / rel_dir).mkdir(parents=True, exist_ok=True)
    cameras = np.random.default_rng([seed, ident.id, 0xCA]).permutation(n_cam)
    entries = []
    attributes = [spac.format_attributes(ident.attributes)]
    for k in range(n_img):
        rng = np.random.default_rng([seed, ident.id, k])
        camera = int(cameras[k % n_cam])
        render(ident.look, random_view(rng, camera), size).save(image_dir / rel_dir / f"{k + 1}.jpg", quality=90)
        out = spac.generate_captions(ident.attributes, [seed, ident.id, k, 7], 2 + int(rng.random() < 0.5), ident.shades)
        entries.append(
            {
                "id": ident.id,
                "file_path": f"{rel_dir}/{k + 1}.jpg",
                "attributes": attributes,
                "captions": [c.text for c in out.captions],
                "prompt_caption": [out.prompt.text],
                "camera_id": camera,
            }
        )
    return entries


PARALLEL_MIN_IMAGES = 2000  # below this, starting the worker processes costs more than it saves


def render_workers(num_images: int) -> int:
    """Processes to render with: the CPUs this process may use (at most 8), 1 for small renders or
    when PLIP_RENDER_WORKERS says so."""
    env = os.environ.get("PLIP_RENDER_WORKERS", "")
    if env:
        return max(1, int(env))
    if num_images < PARALLEL_MIN_IMAGES:
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def write_rendered(
    out: Path,
    annotation_name: str,
    params: dict,
    make_items: Callable[[], Sequence[Any]],
    render_one: Callable[[Any], list[dict]],
    images_per_item: int,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Renders every item of `make_items()` with `render_one` (which writes its images and returns
    their annotation entries) and writes the annotation JSON last; reuses a complete earlier render
    with the same `params`. Large renders run in worker processes (`render_workers`)."""
    annotation, params_file = out / annotation_name, out / PARAMS_FILE
    if annotation.exists() and params_file.exists() and json.loads(params_file.read_text()) == params:
        return out
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    items = list(make_items())
    workers = render_workers(len(items) * images_per_item)
    # Each item renders from its own seeds, so worker processes write exactly the serial result;
    # `spawn`, so a (possibly) multithreaded parent is never forked.
    pool = (concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            if workers > 1 else contextlib.nullcontext())
    with pool:
        results = (pool.map(render_one, items, chunksize=max(1, len(items) // (workers * 8)))
                   if workers > 1 else map(render_one, items))
        for item_entries in results:
            entries.extend(item_entries)
            if progress is not None:
                progress(images_per_item)
    tmp = annotation.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entries))
    os.replace(tmp, annotation)  # the annotation appears only when every image is written
    params_file.write_text(json.dumps(params))
    return out


def write_layout(
    out_dir: str | os.PathLike,
    *,
    num_identities: int,
    images_per_identity: int,
    image_height: int,
    image_width: int,
    seed: int,
    num_cameras: int,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Renders the dataset into out_dir (released layout); reuses a complete earlier render."""
    out = Path(out_dir)
    params = dict(
        num_identities=num_identities, images_per_identity=images_per_identity, image_height=image_height,
        image_width=image_width, seed=seed, num_cameras=num_cameras,
    )
    render_one = functools.partial(_entries_for, params=params, image_dir=out)
    return write_rendered(out, ANNOTATION_FILE, params, lambda: sample_identities(num_identities, seed),
                          render_one, images_per_identity, progress)
