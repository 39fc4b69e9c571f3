"""Shifted procedural people and pictures: a CUHK-like (A) and an ICFG-like (B) domain.

The drawn person is SYNTH-PEDES procedural's (`render.draw_person`); the world around it is not:
each style has its own palette, garment mix, body proportions, framing and aspect, backgrounds,
light and occluders. Identities come from their own seed stream and id range, their attribute keys
are unique within a set and split between A and B by a hash, so no person is in both. Each style is
written in its dataset's released layout: CUHK-PEDES (`reid_raw.json`, Market-1501 file names) and
ICFG-PEDES (`ICFG-PEDES.json`, MSMT17 file names), splits in the entries' `split` field.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tfds_synth_pedes.shifted.language import STYLES, Traits, describe, tokens
from tfds_synth_pedes.synth_pedes import procedural
from tfds_synth_pedes.synth_pedes.render import Look, View, draw_person

RGB = tuple[int, int, int]
Range = tuple[float, float]
DAYTIMES = ("morning", "noon", "afternoon")
# Daylight colour casts (R, G, B gains) of style B's times of day.
DAYTIME_CAST = {"morning": (0.9, 0.98, 1.12), "noon": (1.0, 1.0, 1.0), "afternoon": (1.12, 1.0, 0.84)}


@dataclasses.dataclass(frozen=True)
class Domain:
    """Everything that makes one style's pictures and people differ from the others'."""

    style: str  # 'A' | 'B' (the caption style too)
    stream: int  # seed-stream tag; SYNTH-PEDES procedural draws from other streams
    id_offset: int  # ids are id_offset + 1 ..
    annotation: str  # the released annotation file name
    palette: dict[str, RGB]  # garment colour name -> RGB
    colour_weights: dict[str, float]
    shoe_colours: dict[str, float]
    hair: dict[str, RGB]
    hair_weights: dict[str, float]
    upper_types: dict[str, float]
    lower_types: dict[bool, dict[str, float]]  # female -> type weights
    boots: float
    extras: dict[bool, dict[str, float]]
    build: Range  # shoulder/waist width factor
    head: Range  # head size factor
    scale: Range  # person height / image height (> 1 crops head or feet)
    dx: float  # horizontal offset, fraction of the width
    dy: Range
    aspect: Range  # drawing canvas height / width, before resizing to the stored size
    gamma: Range
    brightness: Range
    contrast: Range
    noise: Range  # sensor noise sigma (0..255 scale)
    blur: float  # chance of a slight blur
    occlusion: float  # chance of an occluder
    occluders: tuple[str, ...]
    jpeg_quality: int
    captions_per_image: int
    scene: Callable[[np.random.Generator, int, int], np.ndarray]  # rng, height, width -> float RGB


def _jitter(rgb: RGB | tuple[float, ...], rng: np.random.Generator, amount: float) -> RGB:
    out = np.clip(np.asarray(rgb, np.float64) + rng.uniform(-amount, amount, 3), 0, 255)
    return tuple(int(v) for v in out)  # type: ignore[return-value]


def _street(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A sunny street: sky strip, a facade with a window grid, trees, a light tiled pavement."""
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    sky, horizon = int(h * rng.uniform(0.0, 0.22)), int(h * rng.uniform(0.55, 0.75))
    facades = ((176, 92, 70), (214, 190, 146), (228, 222, 210), (140, 176, 190))  # brick, sandstone, plaster, glass
    facade = np.asarray(_jitter(facades[int(rng.integers(4))], rng, 14), np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = facade
    t = (y[:sky] / max(1, sky))[..., None]
    img[:sky] = np.asarray((170, 202, 240), np.float32) * (1 - t) + np.asarray((222, 234, 246), np.float32) * t
    sx, sy = int(rng.integers(max(3, w // 6), max(4, w // 3))), int(rng.integers(max(3, h // 12), max(4, h // 6)))
    window = ((x % sx) < sx * 0.55) & ((y % sy) < sy * 0.5) & (y >= sky + 2) & (y < horizon - 3)
    img[window] = np.asarray(_jitter((70, 92, 112), rng, 20), np.float32)
    for _ in range(int(rng.integers(0, 3))):  # trees
        cx, cy = rng.uniform(0, w), rng.uniform(sky, horizon)
        rx, ry = rng.uniform(w * 0.12, w * 0.3), rng.uniform(h * 0.08, h * 0.18)
        img[((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1] = np.asarray(_jitter((64, 132, 60), rng, 20), np.float32)
    tile = int(rng.integers(max(3, w // 10), max(4, w // 5)))
    ground = (y >= horizon) & np.ones_like(x, bool)
    img[ground] = np.asarray(_jitter((192, 186, 174), rng, 12), np.float32)
    seams = ground & ((((y - horizon) % tile) < 1) | ((x % tile) < 1))
    img[seams] *= np.float32(0.82)
    img[horizon : horizon + max(1, h // 40)] = np.asarray((150, 148, 142), np.float32)  # kerb
    if rng.random() < 0.5:  # a cast shadow across the ground
        x0 = rng.uniform(0, w)
        img[ground & (x - x0 < (y - horizon) * rng.uniform(-1.5, 1.5))] *= np.float32(0.78)
    return img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(6.0)


def _campus(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A hall (saturated wall, ceiling lights, posters, glossy checked floor) or a dusk campus walk
    (dark asphalt, lawn, a dark building with lit windows)."""
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    horizon = int(h * rng.uniform(0.5, 0.68))
    img = np.empty((h, w, 3), np.float32)
    if rng.random() < 0.5:
        wall = ((72, 96, 142), (150, 70, 56), (58, 120, 96), (176, 158, 88))[int(rng.integers(4))]
        img[:] = np.asarray(_jitter(wall, rng, 12), np.float32)
        img[: max(2, h // 10)] = np.asarray((235, 235, 222), np.float32)  # ceiling lights
        for _ in range(int(rng.integers(1, 4))):  # posters
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(h // 8, max(h // 8 + 1, horizon - h // 8)))
            poster = ((230, 40, 60), (250, 200, 30), (30, 160, 220), (240, 240, 240))[int(rng.integers(4))]
            img[y0 : y0 + int(rng.integers(h // 10, h // 5)), x0 : x0 + int(rng.integers(w // 8, w // 3))] = \
                np.asarray(_jitter(poster, rng, 15), np.float32)
        depth = np.maximum(y - horizon + 1, 0) / max(1, h - horizon)  # tiles grow towards the camera
        size = 2 + 10 * depth
        checker = ((np.floor((x - w / 2) / size) + np.floor((y - horizon) / size)) % 2 == 0) & (y >= horizon)
        img[y[:, 0] >= horizon] = np.asarray(_jitter((196, 192, 184), rng, 10), np.float32)
        img[checker] = np.asarray(_jitter((96, 92, 90), rng, 10), np.float32)
    else:
        img[:] = np.asarray(_jitter((78, 80, 94), rng, 10), np.float32)  # building
        lit = ((x % 7) < 3) & ((y % 9) < 4) & (y < horizon - 4) & (rng.random((h, w)) < 0.35)
        img[lit] = np.asarray((232, 206, 128), np.float32)
        img[horizon:] = np.asarray(_jitter((62, 66, 72), rng, 8), np.float32)  # asphalt
        lawn = int(rng.integers(2, max(3, h // 10)))
        img[horizon : horizon + lawn] = np.asarray(_jitter((58, 98, 50), rng, 12), np.float32)
    return img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(5.0)


_COLOURS = ("black", "white", "grey", "red", "blue", "navy", "green", "yellow", "pink", "purple", "orange",
            "brown", "beige", "teal")
DOMAINS: dict[str, Domain] = {
    "A": Domain(
        style="A", stream=0xC0C1, id_offset=1_000_000, annotation="reid_raw.json",
        palette={"black": (45, 40, 38), "white": (246, 243, 232), "grey": (152, 148, 142), "red": (200, 28, 62),
                 "blue": (40, 112, 222), "navy": (30, 40, 96), "green": (40, 162, 104), "yellow": (232, 192, 40),
                 "pink": (242, 112, 152), "purple": (150, 80, 182), "orange": (252, 122, 40), "brown": (112, 66, 36),
                 "beige": (216, 196, 156), "teal": (30, 152, 152)},
        colour_weights={c: 1.0 for c in _COLOURS},
        shoe_colours={"black": 2.0, "white": 2.0, "grey": 1.0, "brown": 1.0, "red": 0.5, "blue": 0.5, "beige": 1.0},
        hair={"black": (34, 30, 28), "brown": (116, 70, 40), "blonde": (232, 202, 122), "grey": (178, 178, 172),
              "auburn": (152, 62, 30)},
        hair_weights={"black": 0.4, "brown": 0.3, "blonde": 0.15, "grey": 0.07, "auburn": 0.08},
        upper_types={"t-shirt": 0.4, "shirt": 0.25, "coat": 0.15, "vest": 0.2},
        lower_types={True: {"pants": 0.45, "shorts": 0.3, "skirt": 0.25}, False: {"pants": 0.6, "shorts": 0.4}},
        boots=0.15,
        extras={True: {"none": 0.3, "backpack": 0.3, "handbag": 0.2, "hat": 0.2},
                False: {"none": 0.35, "backpack": 0.35, "handbag": 0.08, "hat": 0.22}},
        build=(0.74, 1.0), head=(1.0, 1.2), scale=(0.62, 0.82), dx=0.15, dy=(0.2, 0.9), aspect=(1.6, 1.9),
        gamma=(0.7, 0.88), brightness=(1.0, 1.15), contrast=(0.85, 1.0), noise=(0.0, 2.0), blur=0.25,
        occlusion=0.3, occluders=("pole", "hedge", "bicycle"), jpeg_quality=88, captions_per_image=2, scene=_street,
    ),
    "B": Domain(
        style="B", stream=0x1CF6, id_offset=2_000_000, annotation="ICFG-PEDES.json",
        palette={"black": (20, 22, 28), "white": (224, 228, 236), "grey": (100, 102, 112), "red": (170, 24, 34),
                 "blue": (26, 60, 172), "navy": (20, 28, 70), "green": (72, 102, 50), "yellow": (216, 170, 30),
                 "pink": (222, 60, 142), "purple": (96, 44, 122), "orange": (202, 90, 34), "brown": (90, 54, 34),
                 "beige": (180, 164, 120), "teal": (20, 110, 122)},
        colour_weights={c: {"black": 3.0, "navy": 1.5, "grey": 1.5, "white": 1.2}.get(c, 1.0) for c in _COLOURS},
        shoe_colours={"black": 3.0, "white": 2.0, "grey": 1.0, "brown": 1.0, "navy": 0.5},
        hair={"black": (14, 14, 18), "brown": (86, 54, 34), "blonde": (206, 176, 110), "grey": (140, 140, 146),
              "auburn": (130, 50, 24)},
        hair_weights={"black": 0.6, "brown": 0.2, "blonde": 0.06, "grey": 0.08, "auburn": 0.06},
        upper_types={"t-shirt": 0.15, "shirt": 0.35, "coat": 0.45, "vest": 0.05},
        lower_types={True: {"pants": 0.8, "shorts": 0.05, "skirt": 0.15}, False: {"pants": 0.92, "shorts": 0.08}},
        boots=0.4,
        extras={True: {"none": 0.3, "backpack": 0.4, "handbag": 0.2, "hat": 0.1},
                False: {"none": 0.4, "backpack": 0.45, "handbag": 0.05, "hat": 0.1}},
        build=(0.95, 1.2), head=(0.85, 1.0), scale=(0.88, 1.0), dx=0.06, dy=(0.3, 0.7), aspect=(2.2, 2.5),
        gamma=(1.1, 1.4), brightness=(0.85, 1.0), contrast=(1.1, 1.3), noise=(3.0, 7.0), blur=0.5,
        occlusion=0.35, occluders=("passer", "railing", "pillar"), jpeg_quality=75, captions_per_image=1, scene=_campus,
    ),
}


def _weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _side(key: str) -> str:
    """The style an attribute key belongs to: A and B never share a person."""
    return "AB"[hashlib.sha256(key.encode()).digest()[0] % 2]


def sample_traits(rng: np.random.Generator, d: Domain) -> Traits:
    """One person's attributes, drawn from the domain's garment and colour mix."""
    female = bool(rng.random() < 0.5)
    return Traits(
        female=female,
        hair_length="long" if rng.random() < (0.7 if female else 0.08) else "short",
        hair=_weighted(rng, d.hair_weights),
        upper_type=_weighted(rng, d.upper_types), upper=_weighted(rng, d.colour_weights),
        lower_type=_weighted(rng, d.lower_types[female]), lower=_weighted(rng, d.colour_weights),
        shoes_type="boots" if rng.random() < d.boots else "shoes", shoes=_weighted(rng, d.shoe_colours),
        extra_type=_weighted(rng, d.extras[female]), extra=_weighted(rng, d.colour_weights),
    )


def make_look(t: Traits, rng: np.random.Generator, d: Domain) -> Look:
    """The drawn look of `t` in domain `d` (the identity's own shades, build and head size)."""
    colour = lambda name: _jitter(d.palette[name], rng, 12)  # noqa: E731
    return Look(
        female=t.female, build=float(rng.uniform(*d.build)),
        skin=_jitter(procedural.SKIN_TONES[int(rng.integers(len(procedural.SKIN_TONES)))], rng, 8),
        hair=_jitter(d.hair[t.hair], rng, 8), long_hair=t.hair_length == "long",
        upper_type=t.upper_type, upper=colour(t.upper), lower_type=t.lower_type, lower=colour(t.lower),
        shoes_type=t.shoes_type, shoes=colour(t.shoes),
        others_type=None if t.extra_type == "none" else t.extra_type, others=colour(t.extra),
        head=float(rng.uniform(*d.head)),
    )


@dataclasses.dataclass(frozen=True)
class Person:
    id: int
    traits: Traits
    look: Look


def sample_people(num_identities: int, seed: int, style: str) -> list[Person]:
    """`num_identities` people of `style` (ids id_offset + 1 ..), attribute keys unique and on the style's side."""
    d = DOMAINS[style]
    rng = np.random.default_rng([seed, d.stream])
    seen: set[str] = set()
    out: list[Person] = []
    while len(out) < num_identities:
        for _ in range(2000):
            t = sample_traits(rng, d)
            key = t.key()
            if key not in seen and _side(key) == style:
                break
        else:
            raise ValueError(f"cannot find {num_identities} people with distinct attributes; lower num_identities")
        seen.add(key)
        out.append(Person(d.id_offset + len(out) + 1, t, make_look(t, rng, d)))
    return out


@dataclasses.dataclass(frozen=True)
class Shot:
    """One picture of a person: camera, pose, framing, light and what is in the way."""

    camera: int
    pose: View  # back / stride / swing for draw_person
    scale: float
    dx: float
    dy: float
    aspect: float
    mirror: bool
    cast: tuple[float, float, float]
    gamma: float
    brightness: float
    contrast: float
    noise: float
    blur: float
    occluder: str | None
    daytime: str
    seed: int


def _scene_cast(seed: int, d: Domain, camera: int) -> tuple[float, float, float]:
    rng = np.random.default_rng([seed, d.stream, camera, 0xCA57])
    if d.style == "A":  # warm sunlight
        return float(rng.uniform(1.04, 1.12)), float(rng.uniform(1.0, 1.04)), float(rng.uniform(0.82, 0.92))
    return tuple(float(v) for v in rng.uniform(0.96, 1.04, 3))  # type: ignore[return-value]


def sample_shot(rng: np.random.Generator, d: Domain, camera: int, seed: int) -> Shot:
    """One shot in domain `d` from `camera` (style B adds a time-of-day colour cast)."""
    daytime = DAYTIMES[int(rng.integers(len(DAYTIMES)))]
    cast = np.asarray(_scene_cast(seed, d, camera)) * (np.asarray(DAYTIME_CAST[daytime]) if d.style == "B" else 1.0)
    back = bool(rng.random() < 0.4)
    pose = View(camera=camera, scale=1.0, dx=0.0, dy=0.0, back=back, stride=float(rng.uniform(0.0, 0.08)),
                swing=float(rng.uniform(-0.045, 0.045)), mirror=False, brightness=1.0, contrast=1.0, blur=0.0,
                occluder=None, bg_seed=0)
    return Shot(
        camera=camera, pose=pose, scale=float(rng.uniform(*d.scale)), dx=float(rng.uniform(-d.dx, d.dx)),
        dy=float(rng.uniform(*d.dy)), aspect=float(rng.uniform(*d.aspect)), mirror=bool(rng.random() < 0.5),
        cast=tuple(float(v) for v in cast * rng.uniform(0.97, 1.03, 3)),  # type: ignore[arg-type]
        gamma=float(rng.uniform(*d.gamma)), brightness=float(rng.uniform(*d.brightness)),
        contrast=float(rng.uniform(*d.contrast)), noise=float(rng.uniform(*d.noise)),
        blur=float(rng.uniform(0.3, 0.8)) if rng.random() < d.blur else 0.0,
        occluder=d.occluders[int(rng.integers(len(d.occluders)))] if rng.random() < d.occlusion else None,
        daytime=daytime, seed=int(rng.integers(2**31)),
    )


@functools.lru_cache(maxsize=64)
def _panorama(style: str, seed: int, camera: int, h: int, w: int) -> np.ndarray:
    """A camera's fixed scene, twice as wide as one picture (each shot looks at a part of it)."""
    d = DOMAINS[style]
    return d.scene(np.random.default_rng([seed, d.stream, camera, 0xB6]), h, 2 * w)


def _occlude(draw: ImageDraw.ImageDraw, kind: str, rng: np.random.Generator, d: Domain, w: int, h: int, ph: float,
             top: float) -> None:
    """Draws an occluder of `kind` on the w x h canvas (the person is ph tall from `top`)."""
    metal = _jitter((120, 122, 126), rng, 25)
    if kind == "pole":
        x0, pw = rng.uniform(0.05, 0.9) * w, rng.uniform(0.05, 0.09) * w
        draw.rectangle([x0, 0, x0 + pw, h], fill=metal)
        draw.rectangle([x0 + pw * 0.2, 0, x0 + pw * 0.35, h], fill=_jitter((190, 192, 196), rng, 10))
    elif kind == "hedge":
        y0 = h * (1 - rng.uniform(0.12, 0.25))
        xs = np.linspace(0, w, 9)
        edge = [(float(x), float(y0 + rng.uniform(-0.03, 0.03) * h)) for x in xs]
        points = [(0.0, float(h)), *edge, (float(w), float(h))]
        draw.polygon(points, fill=_jitter((52, 112, 48), rng, 15))
    elif kind == "bicycle":
        r, y = rng.uniform(0.12, 0.18) * w, h - rng.uniform(0.1, 0.16) * w
        x0 = rng.uniform(0.1, 0.5) * w
        colour = _jitter((40, 40, 44), rng, 20)
        for cx in (x0, x0 + 2.6 * r):
            draw.ellipse([cx - r, y - r, cx + r, y + r], outline=colour, width=max(2, int(0.02 * w)))
        draw.line([(x0, y), (x0 + 1.3 * r, y - r), (x0 + 2.6 * r, y)], fill=colour, width=max(2, int(0.02 * w)))
    elif kind == "passer":  # another pedestrian at the edge of the frame, in front
        other = make_look(sample_traits(rng, d), rng, d)
        side = -1 if rng.random() < 0.5 else 1
        pose = View(0, 1.0, 0.0, 0.0, bool(rng.random() < 0.5), float(rng.uniform(0, 0.06)), 0.0, False, 1.0, 1.0, 0.0,
                    None, 0)
        cx = w / 2 + side * rng.uniform(0.48, 0.62) * w
        draw_person(draw, other, pose, cx, top + rng.uniform(-0.05, 0.08) * ph, ph * rng.uniform(0.95, 1.08))
    elif kind == "railing":
        for fy in (rng.uniform(0.5, 0.6), rng.uniform(0.7, 0.8)):
            draw.rectangle([0, fy * h, w, fy * h + 0.012 * h], fill=metal)
        for fx in np.arange(rng.uniform(0, 0.3), 1.0, 0.3):
            draw.rectangle([fx * w, 0.5 * h, fx * w + 0.03 * w, h], fill=metal)
    elif kind == "pillar":
        pw = rng.uniform(0.15, 0.25) * w
        x0 = 0 if rng.random() < 0.5 else w - pw
        draw.rectangle([x0, 0, x0 + pw, h], fill=_jitter((150, 150, 144), rng, 12))
        draw.rectangle([x0 + pw * 0.7, 0, x0 + pw, h], fill=_jitter((118, 118, 112), rng, 8))


def render_shot(look: Look, shot: Shot, size: tuple[int, int], style: str, seed: int) -> Image.Image:
    """Draws `look` in `shot` as an RGB image of `size` = (height, width): the person is drawn on a
    canvas of the shot's aspect (so resizing to `size` squeezes or stretches them), then the shot's
    light (colour cast, gamma, contrast, brightness), sensor noise and blur are applied."""
    d = DOMAINS[style]
    h, w = size
    cw = max(4, round(h / shot.aspect))
    rng = np.random.default_rng(shot.seed)
    pano = _panorama(style, seed, shot.camera, h, cw)
    x0 = int(rng.integers(0, pano.shape[1] - cw + 1))
    back = Image.fromarray(np.clip(pano[:, x0 : x0 + cw], 0, 255).astype(np.uint8))
    big_w, big_h = 2 * cw, 2 * h
    img = back.resize((big_w, big_h), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    ph = shot.scale * big_h
    top = (big_h - ph) * shot.dy
    draw_person(draw, look, shot.pose, big_w / 2 + shot.dx * big_w, top, ph)
    if shot.occluder is not None:
        _occlude(draw, shot.occluder, rng, d, big_w, big_h, ph, top)
    img = img.resize((w, h), Image.Resampling.BOX)
    if shot.mirror:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    x = np.asarray(img, np.float32) / np.float32(255.0)
    x = x ** np.float32(shot.gamma) * np.asarray(shot.cast, np.float32)
    mean = x.mean()
    x = ((x - mean) * np.float32(shot.contrast) + mean) * np.float32(shot.brightness)
    x = x * 255 + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(shot.noise)
    img = Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(shot.blur)) if shot.blur > 0 else img


def _file_name(style: str, pid: int, k: int, shot: Shot, split: str) -> str:
    """Released file names, from which `cameras.cuhk_pedes_camera` / `msmt17_camera` read the camera."""
    if style == "A":  # Market-1501: <pid>_c<cam>s<seq>_<frame>_<box>.jpg
        return f"Market/{pid:07d}_c{shot.camera}s{1 + shot.seed % 6}_{(shot.seed >> 3) % 10**6:06d}_01.jpg"
    # MSMT17: <split>/<pid>/<pid>_<seq>_<cam>_<date><time>_<frame>_<box>.jpg
    frame = (shot.seed >> 3) % 10**4
    return f"{split}/{pid:07d}/{pid:07d}_{k:03d}_{shot.camera:02d}_0303{shot.daytime}_{frame:04d}_0.jpg"


def _entries_for(item: tuple[Person, str], params: dict, image_dir: Path) -> list[dict]:
    """Renders one person's images into image_dir; returns their annotation entries."""
    person, split = item
    style, seed = params["style"], params["seed"]
    d = DOMAINS[style]
    size = (params["image_height"], params["image_width"])
    cameras = 1 + np.random.default_rng([seed, d.stream, person.id, 0xCA]).permutation(params["num_cameras"])
    entries = []
    for k in range(params["images_per_identity"]):
        rng = np.random.default_rng([seed, d.stream, person.id, k])
        shot = sample_shot(rng, d, int(cameras[k % len(cameras)]), seed)
        rel = _file_name(style, person.id, k + 1, shot, split)
        (image_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        render_shot(person.look, shot, size, style, seed).save(image_dir / rel, quality=d.jpeg_quality)
        captions = [describe(person.traits, style, rng, back=shot.pose.back) for _ in range(d.captions_per_image)]
        entries.append({"split": split, "captions": captions, "file_path": rel,
                        "processed_tokens": [tokens(c) for c in captions], "id": person.id})
    return entries


def split_of(index: int, num_identities: int, num_val_ids: int, num_test_ids: int) -> str:
    """As released: train ids first, then val, then test (contiguous id ranges)."""
    if index >= num_identities - num_test_ids:
        return "test"
    return "val" if index >= num_identities - num_test_ids - num_val_ids else "train"


def write_layout(
    out_dir: str | os.PathLike,
    *,
    style: str,
    num_identities: int,
    images_per_identity: int,
    image_height: int,
    image_width: int,
    seed: int,
    num_cameras: int,
    num_val_ids: int,
    num_test_ids: int,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Renders style `style` into out_dir in its dataset's released layout (annotation JSON + imgs/);
    reuses a complete earlier render with the same params."""
    if style not in DOMAINS or style not in STYLES:
        raise ValueError(f"style must be one of {sorted(DOMAINS)}, got {style!r}")
    if num_val_ids + num_test_ids >= num_identities:
        raise ValueError(f"{num_identities} identities are too few for {num_val_ids} val + {num_test_ids} test")
    out = Path(out_dir)
    params = dict(style=style, num_identities=num_identities, images_per_identity=images_per_identity,
                  image_height=image_height, image_width=image_width, seed=seed, num_cameras=num_cameras,
                  num_val_ids=num_val_ids, num_test_ids=num_test_ids)

    def items() -> list[tuple[Person, str]]:
        people = sample_people(num_identities, seed, style)
        return [(p, split_of(i, num_identities, num_val_ids, num_test_ids)) for i, p in enumerate(people)]

    render_one = functools.partial(_entries_for, params=params, image_dir=out / "imgs")
    return procedural.write_rendered(out, DOMAINS[style].annotation, params, items, render_one,
                                     images_per_identity, progress)
