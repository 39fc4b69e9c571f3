"""PIL drawing of one procedural pedestrian (the look of an identity seen in one view).

Garment colours fill large areas and garment types differ in silhouette (sleeve length, coat
hem, shorts/skirt, boots), so a small CNN can learn them at 128x64. Everything that varies
between images of one identity (pose, scale, position, background, light, blur, occlusion)
lives in `View`; everything that makes the identity lives in `Look`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

RGB = tuple[int, int, int]

# Muted per-camera backgrounds (garment colours must stand out against them).
CAMERA_BACKGROUNDS: tuple[RGB, ...] = (
    (122, 122, 116),
    (104, 124, 100),
    (150, 140, 124),
    (94, 100, 112),
    (136, 122, 116),
    (168, 168, 162),
)


@dataclasses.dataclass(frozen=True)
class Look:
    """What stays fixed for an identity: body, skin, hair, garments and their exact shades."""

    female: bool
    build: float  # shoulder/waist width factor
    skin: RGB
    hair: RGB
    long_hair: bool
    upper_type: str  # t-shirt | shirt | coat | vest
    upper: RGB
    lower_type: str  # pants | shorts | skirt
    lower: RGB
    shoes_type: str  # shoes | boots
    shoes: RGB
    others_type: str | None  # backpack | handbag | hat | None
    others: RGB
    head: float = 1.0  # head size factor


@dataclasses.dataclass(frozen=True)
class View:
    """What changes between images of one identity."""

    camera: int
    scale: float  # person height / image height
    dx: float  # horizontal offset, fraction of width
    dy: float  # vertical offset, fraction of the free space
    back: bool  # seen from behind
    stride: float  # leg spread, fraction of person height
    swing: float  # arm swing, fraction of person height
    mirror: bool
    brightness: float
    contrast: float
    blur: float  # Gaussian radius in output pixels (0 = sharp)
    occluder: tuple[str, float, RGB] | None  # ('bottom'|'left'|'right', size fraction, colour)
    bg_seed: int


def random_view(rng: np.random.Generator, camera: int) -> View:
    """Samples one view (pose, framing, light, blur, occlusion) for a given camera."""
    occluder = None
    if rng.random() < 0.2:
        side = ("bottom", "left", "right")[int(rng.integers(3))]
        grey = int(rng.integers(60, 170))
        occluder = (side, float(rng.uniform(0.1, 0.22)), (grey, grey, int(grey * 0.95)))
    return View(
        camera=camera,
        scale=float(rng.uniform(0.78, 0.95)),
        dx=float(rng.uniform(-0.1, 0.1)),
        dy=float(rng.uniform(0.1, 0.9)),
        back=bool(rng.random() < 0.35),
        stride=float(rng.uniform(0.0, 0.07)),
        swing=float(rng.uniform(-0.04, 0.04)),
        mirror=bool(rng.random() < 0.5),
        brightness=float(rng.uniform(0.75, 1.2)),
        contrast=float(rng.uniform(0.85, 1.1)),
        blur=float(rng.uniform(0.3, 0.9)) if rng.random() < 0.5 else 0.0,
        occluder=occluder,
        bg_seed=int(rng.integers(2**31)),
    )


def _shade(c: RGB, f: float) -> RGB:
    return tuple(int(max(0, min(255, v * f))) for v in c)  # type: ignore[return-value]


def _background(size: tuple[int, int], view: View) -> Image.Image:
    """Muted camera-coloured backdrop at half the drawing size (cheap), upsampled for drawing."""
    w, h = size[0] // 2, size[1] // 2
    rng = np.random.default_rng(view.bg_seed)
    base = np.asarray(CAMERA_BACKGROUNDS[view.camera % len(CAMERA_BACKGROUNDS)], np.float32)
    base = base + rng.normal(0, 8, 3).astype(np.float32)
    ramp = np.linspace(1.08, 0.92, h, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(base, (h, w, 3)) * ramp
    horizon = int(h * rng.uniform(0.55, 0.8))
    img[horizon:] *= np.float32(rng.uniform(0.7, 0.9))
    for _ in range(int(rng.integers(0, 4))):  # muted boxes: windows, poles, signs
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, horizon))
        x1, y1 = x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 12, h // 3))
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * np.float32(rng.uniform(0.75, 1.2)) + rng.normal(0, 6, 3).astype(np.float32)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(3.0)
    small = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return small.resize(size, Image.Resampling.NEAREST)


def _limb(d: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], width: float, c: RGB) -> None:
    d.line([a, b], fill=c, width=max(1, int(width)))
    r = width / 2
    for x, y in (a, b):
        d.ellipse([x - r, y - r, x + r, y + r], fill=c)


def draw_person(d: ImageDraw.ImageDraw, look: Look, view: View, cx: float, top: float, ph: float) -> None:
    """Draws `look` (pose from `view`: back, stride, swing) centred at cx, from `top`, `ph` pixels tall."""
    y = lambda f: top + f * ph  # noqa: E731 - fractions of the person height
    sw = 0.13 * look.build * (0.88 if look.female else 1.0) * ph  # half shoulder width
    ww = 0.095 * look.build * ph * (1.05 if look.female else 1.0)  # half waist width
    head_r = 0.06 * ph * look.head
    limb_w = 0.075 * ph
    sleeve = {"t-shirt": 0.3, "shirt": 0.5, "coat": 0.5, "vest": 0.0}[look.upper_type]
    # Long hair hangs behind the head and shoulders.
    if look.long_hair and not view.back:
        d.rounded_rectangle([cx - head_r * 1.25, y(0.03), cx + head_r * 1.25, y(0.27)], radius=head_r, fill=look.hair)
    # Backpack body sticks out on both sides of the torso (front) or covers the back.
    if look.others_type == "backpack" and not view.back:
        d.rounded_rectangle([cx - sw - 0.03 * ph, y(0.19), cx + sw + 0.03 * ph, y(0.46)], radius=4, fill=look.others)
    # Legs.
    for side in (-1, 1):
        hip = (cx + side * ww * 0.5, y(0.5))
        ankle = (cx + side * (ww * 0.5 + view.stride * ph / 2), y(0.92))
        knee = ((hip[0] + ankle[0]) / 2, y(0.7))
        if look.lower_type == "pants":
            _limb(d, hip, ankle, limb_w * 1.1, look.lower)
        elif look.lower_type == "shorts":
            _limb(d, knee, ankle, limb_w * 0.85, look.skin)
            _limb(d, hip, (knee[0], y(0.65)), limb_w * 1.2, look.lower)
        else:
            _limb(d, hip, ankle, limb_w * 0.85, look.skin)
        if look.shoes_type == "boots":
            d.rounded_rectangle([ankle[0] - limb_w * 0.6, y(0.82), ankle[0] + limb_w * 0.75, y(0.985)], radius=3, fill=look.shoes)
        else:
            d.ellipse([ankle[0] - limb_w * 0.65, y(0.91), ankle[0] + limb_w * 0.85, y(0.99)], fill=look.shoes)
    if look.lower_type == "skirt":
        d.polygon([(cx - ww * 1.05, y(0.48)), (cx + ww * 1.05, y(0.48)), (cx + ww * 1.7, y(0.73)), (cx - ww * 1.7, y(0.73))], fill=look.lower)
    # Torso (a coat reaches down over the thighs).
    hem = 0.72 if look.upper_type == "coat" else 0.52
    hem_w = ww * (1.45 if look.upper_type == "coat" else 1.0)
    d.polygon([(cx - sw, y(0.165)), (cx + sw, y(0.165)), (cx + hem_w, y(hem)), (cx - hem_w, y(hem))], fill=look.upper)
    if look.upper_type == "coat":
        d.line([(cx, y(0.18)), (cx, y(hem))], fill=_shade(look.upper, 0.6), width=max(1, int(0.012 * ph)))
    if look.lower_type != "skirt" and look.upper_type != "coat":
        d.rectangle([cx - ww * 1.02, y(0.49), cx + ww * 1.02, y(0.54)], fill=look.lower)
    # Arms: sleeve in the garment colour, the rest skin.
    for side in (-1, 1):
        shoulder = (cx + side * (sw - limb_w * 0.35), y(0.19))
        hand = (cx + side * (sw + 0.01 * ph) + view.swing * ph * side, y(0.5))
        _limb(d, shoulder, hand, limb_w * 0.8, look.skin)
        if sleeve:
            f = sleeve / 0.5
            end = (shoulder[0] + (hand[0] - shoulder[0]) * f * 0.92, shoulder[1] + (hand[1] - shoulder[1]) * f * 0.92)
            _limb(d, shoulder, end, limb_w * 0.9, look.upper)
    if look.others_type == "backpack":
        if view.back:
            d.rounded_rectangle([cx - sw * 0.8, y(0.2), cx + sw * 0.8, y(0.46)], radius=5, fill=look.others)
        else:
            for side in (-1, 1):
                d.line([(cx + side * sw * 0.55, y(0.17)), (cx + side * sw * 0.6, y(0.36))], fill=look.others, width=max(2, int(0.025 * ph)))
    if look.others_type == "handbag":
        hx = cx + sw + 0.02 * ph
        d.line([(cx + sw * 0.5, y(0.17)), (hx, y(0.44))], fill=look.others, width=max(1, int(0.012 * ph)))
        d.rounded_rectangle([hx - 0.05 * ph, y(0.44), hx + 0.06 * ph, y(0.54)], radius=3, fill=look.others)
    # Neck, head, hair, hat.
    d.rectangle([cx - head_r * 0.4, y(0.11), cx + head_r * 0.4, y(0.175)], fill=look.skin)
    hy = y(0.075)
    d.ellipse([cx - head_r * 0.9, hy - head_r, cx + head_r * 0.9, hy + head_r], fill=look.hair if view.back else look.skin)
    if not view.back:
        d.chord([cx - head_r * 0.98, hy - head_r * 1.1, cx + head_r * 0.98, hy + head_r * 0.7], 180, 360, fill=look.hair)
    elif look.long_hair:
        d.rounded_rectangle([cx - head_r * 1.2, hy - head_r * 0.3, cx + head_r * 1.2, y(0.28)], radius=head_r, fill=look.hair)
    if look.others_type == "hat":
        d.chord([cx - head_r * 1.05, hy - head_r * 1.35, cx + head_r * 1.05, hy + head_r * 0.4], 180, 360, fill=look.others)
        d.rectangle([cx - head_r * 1.35, hy - head_r * 0.55, cx + head_r * 1.35, hy - head_r * 0.3], fill=look.others)


def render(look: Look, view: View, size: tuple[int, int]) -> Image.Image:
    """Draws `look` seen in `view` into an RGB image of `size` = (height, width)."""
    h, w = size
    big = (2 * w, 2 * h)  # draw at 2x, then box-downsample for anti-aliasing
    img = _background(big, view)
    d = ImageDraw.Draw(img)
    ph = view.scale * big[1]
    top = (big[1] - ph) * view.dy
    cx = big[0] / 2 + view.dx * big[0]
    draw_person(d, look, view, cx, top, ph)
    if view.occluder is not None:
        side, frac, colour = view.occluder
        box = {
            "bottom": [0, big[1] * (1 - frac), big[0], big[1]],
            "left": [0, 0, big[0] * frac, big[1]],
            "right": [big[0] * (1 - frac), 0, big[0], big[1]],
        }[side]
        d.rectangle(box, fill=colour)
    img = img.resize((w, h), Image.Resampling.BOX)
    if view.mirror:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(view.brightness)).enhance(view.contrast)
    if view.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(view.blur))
    return img
