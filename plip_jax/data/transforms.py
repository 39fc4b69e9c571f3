"""Image transforms: host-side decode/resize/augment on uint8 (PIL + numpy), device-side normalisation.

Split of work: the host ships ONE uint8 RGB image per sample (after flip/crop/erase) and the device
computes both the normalised colour image and the normalised gray copy for colorization (TIC). Shipping
uint8 instead of two float32 images cuts host->device bytes by 8x, and host CPU is the scarce resource
(TIC's gray copy must see the same augmentation as the colour image, which holds since it is derived on device).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
from PIL import Image

# SYNTH-PEDES statistics used by the official PLIP code (train and inference).
MEAN: tuple[float, float, float] = (0.357, 0.323, 0.328)
STD: tuple[float, float, float] = (0.252, 0.242, 0.239)
# PIL's fixed-point ITU-R 601-2 luma ("L" = R*299/1000 + G*587/1000 + B*114/1000), which is what
# torchvision Grayscale(num_output_channels=3) runs on PIL images; we reproduce it bit-exactly.
_LUMA_FIXED = (19595, 38470, 7471)


# --------------------------------------------------------------------------------------------
# Host side (numpy / PIL)
# --------------------------------------------------------------------------------------------
def decode_image(data: Any, size_hint: tuple[int, int] | None = None) -> Image.Image:
    """Return an RGB PIL image from encoded bytes or a uint8 (H,W,3) array.

    `size_hint` (H, W) is for TRAINING only: it lets the JPEG decoder downscale by 1/2, 1/4 or 1/8
    in the DCT domain while staying >= the target (PIL draft mode), several times cheaper than a
    full decode + resize of a large photo and close to it (tests bound the difference).
    Evaluation decodes in full (no hint), like the official code.
    """
    if isinstance(data, Image.Image):
        img = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        img = Image.open(io.BytesIO(bytes(data)))
        if size_hint is not None and img.format == "JPEG":
            img.draft("RGB", (int(size_hint[1]), int(size_hint[0])))
    else:
        arr = np.asarray(data)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
            raise ValueError(
                f"image must be encoded bytes or a uint8 array (H,W[,1|3|4]); got {arr.dtype} {arr.shape}")
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        img = Image.fromarray(arr)
    return img if img.mode == "RGB" else img.convert("RGB")


def resize(image: np.ndarray | Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize to (H, W) with PIL (== torchvision Resize(interpolation=3) on PIL images)."""
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"resize size must be positive (H, W); got {size}")
    img = image if isinstance(image, Image.Image) else decode_image(image)
    if img.size != (w, h):
        img = img.resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def random_flip(image: np.ndarray | Image.Image, rng: np.random.Generator, p: float = 0.5
                ) -> np.ndarray | Image.Image:
    """Horizontal flip with probability p (torchvision RandomHorizontalFlip); numpy flips are views."""
    if rng.random() >= p:
        return image
    if isinstance(image, Image.Image):
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image[:, ::-1]


def pad_crop(image: np.ndarray, rng: np.random.Generator, pad: int = 10) -> np.ndarray:
    """Zero-pad by `pad` pixels on each side, then crop back at a random offset (Pad + RandomCrop)."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    y, x = rng.integers(0, 2 * pad + 1, size=2)
    return padded[y:y + h, x:x + w]


def random_erasing(image: np.ndarray, rng: np.random.Generator, p: float = 0.5,
                   scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3)
                   ) -> np.ndarray:
    """torchvision RandomErasing(value=0) in uint8 space: 0 after Normalize == the dataset mean colour."""
    if rng.random() >= p:
        return image
    h, w = image.shape[:2]
    area = h * w
    log_ratio = np.log(ratio)
    for _ in range(10):  # same retry budget as torchvision
        erase_area = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(*log_ratio))
        eh = int(round(np.sqrt(erase_area * aspect)))
        ew = int(round(np.sqrt(erase_area / aspect)))
        if 0 < eh < h and 0 < ew < w:
            y = int(rng.integers(0, h - eh + 1))
            x = int(rng.integers(0, w - ew + 1))
            out = np.array(image)
            out[y:y + eh, x:x + ew] = np.round(np.asarray(MEAN) * 255).astype(np.uint8)
            return out
    return image


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation switches (paper: flip only; crop/erase are common Re-ID options)."""
    flip: bool = True
    pad_crop: bool = False
    random_erasing: bool = False


def augment(image: np.ndarray | Image.Image, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Apply the enabled augmentations in torchvision order: flip, pad-crop, erase; returns uint8 (H,W,3).

    The flip runs in PIL when given a PIL image, so the only pixel copy is the final PIL->numpy one
    (batching copies again anyway, so numpy results may be views).
    """
    if cfg.flip:
        image = random_flip(image, rng)
    if isinstance(image, Image.Image):
        image = np.asarray(image, dtype=np.uint8)
    if cfg.pad_crop:
        image = pad_crop(image, rng)
    if cfg.random_erasing:
        image = random_erasing(image, rng)
    return image


def load_train_image(data: Any, size: tuple[int, int], rng: np.random.Generator, cfg: AugmentConfig,
                     draft: bool = True) -> np.ndarray:
    """Hot path of the training pipeline: decode (JPEG draft mode unless `draft=False`) -> bicubic
    resize to (H, W) -> augment, in PIL where possible. Images stored at (H, W) skip the resize."""
    img = decode_image(data, size_hint=size if draft else None)
    h, w = int(size[0]), int(size[1])
    if img.size != (w, h):
        img = img.resize((w, h), Image.BICUBIC)
    return augment(img, rng, cfg)


def load_eval_image(data: Any, size: tuple[int, int]) -> np.ndarray:
    """Evaluation: full decode + bicubic resize to (H, W), as the official code (no draft mode)."""
    return resize(decode_image(data), size)


# --------------------------------------------------------------------------------------------
# Device side (jnp, jit-able)
# --------------------------------------------------------------------------------------------
def _check_uint8_images(x: jnp.ndarray) -> None:
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"expected images (..., H, W, 3); got shape {x.shape}")


def normalize(images: jnp.ndarray) -> jnp.ndarray:
    """uint8 RGB (..., H, W, 3) -> float32 (x/255 - mean) / std, as ToTensor + Normalize."""
    _check_uint8_images(images)
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(MEAN, jnp.float32)) / jnp.asarray(STD, jnp.float32)


def grayscale_uint8(images: jnp.ndarray) -> jnp.ndarray:
    """uint8 RGB (..., H, W, 3) -> uint8 luma (..., H, W), bit-exact with PIL `convert('L')`."""
    _check_uint8_images(images)
    x = images.astype(jnp.int32)
    r, g, b = _LUMA_FIXED
    luma = (x[..., 0] * r + x[..., 1] * g + x[..., 2] * b + 0x8000) >> 16
    return luma.astype(jnp.uint8)


def gray_normalized(images: jnp.ndarray) -> jnp.ndarray:
    """uint8 RGB -> float32 normalised gray copy, = torchvision Grayscale(3) + ToTensor + Normalize."""
    gray = grayscale_uint8(images)
    return normalize(jnp.repeat(gray[..., None], 3, axis=-1))
