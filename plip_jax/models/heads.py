"""Pretext-task heads of PLIP: the text-guided colorization decoder (TIC) and the attribute head (IAP).

Both are Flax Linen modules (NHWC, float32 params, ``dtype`` = compute dtype, float32 outputs).
Submodule names of the decoder mirror the official PyTorch ``Image_decoder_ModifiedResNet``
(``visual_model.py`` in the git history of github.com/Zplusdragon/PLIP), so conversion is renaming + transposes:

    Flax                         PyTorch                          kernel transform (torch -> flax)
    channelunity{1..4}/kernel    channelunity{1..4}.weight        OIHW -> HWIO  (transpose(2,3,1,0))
    SE_block{1,2}/fc{1,2}/kernel SE_block{1,2}.fc{1,2}.weight     (out,in) -> (in,out)  (.T)
    deconv{1,2}/kernel           deconv{1,2}.weight               deconv_kernel_from_torch
    */bias                       *.bias                           none
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# PyTorch's default init for Linear/Conv/ConvTranspose (kaiming_uniform with a=sqrt(5)).
_torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# SE_block_mm: init.kaiming_normal_(weight, mode='fan_out') (official visual_model.py, git history).
_kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# PyTorch ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1) as a dilated conv:
# low pad = k-1-p = 1, high pad = k-1-p+output_padding = 2; the output is exactly 2x the input.
DECONV_PADDING = ((1, 2), (1, 2))

IAP_FUSIONS = ("add", "concat_mlp")


def deconv_kernel_from_torch(weight: np.ndarray) -> np.ndarray:
    """PyTorch ConvTranspose2d weight (in, out, kh, kw) -> our Flax kernel (kh, kw, out, in).

    Our deconvs use ``nn.ConvTranspose(transpose_kernel=True)``, which flips the spatial axes
    itself (gradient-of-conv semantics, like PyTorch), so the conversion is a pure transpose.
    """
    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise ValueError(f"expected a 4-D ConvTranspose2d weight (in,out,kh,kw), got shape {weight.shape}")
    return np.transpose(weight, (2, 3, 1, 0))


def deconv_kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """Our Flax deconv kernel (kh, kw, out, in) -> PyTorch ConvTranspose2d weight (in, out, kh, kw)."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"expected a 4-D Flax ConvTranspose kernel (kh,kw,out,in), got shape {kernel.shape}")
    return np.transpose(kernel, (3, 2, 0, 1))


def upsample_bilinear(x: jax.Array, factor: int) -> jax.Array:
    """Bilinear x``factor`` upsampling of NHWC maps, equal to PyTorch F.interpolate(align_corners=False)."""
    n, h, w, c = x.shape
    return jax.image.resize(x, (n, h * factor, w * factor, c), method="bilinear")


def torch_deconv_3x3_s2(features: int, dtype: Dtype, name: str) -> nn.ConvTranspose:
    """PyTorch ``ConvTranspose2d(in, features, 3, stride=2, padding=1, output_padding=1)`` in Flax."""
    return nn.ConvTranspose(
        features,
        kernel_size=(3, 3),
        strides=(2, 2),
        padding=DECONV_PADDING,
        transpose_kernel=True,
        kernel_init=_torch_default_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class TextGatedSE(nn.Module):
    """Text-gated squeeze-excitation ("MSE block", official ``SE_block_mm``): channel gate from [avgpool(F), T]."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, text: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        dense = lambda name: nn.Dense(  # noqa: E731
            channels, kernel_init=_kaiming_normal_fan_out, dtype=self.dtype,
            param_dtype=jnp.float32, name=name)
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        a = jnp.concatenate([pooled, text.astype(self.dtype)], axis=-1)
        a = nn.relu(dense("fc1")(a))
        a = nn.sigmoid(dense("fc2")(a))
        return x * a[:, None, None, :].astype(x.dtype)


class ColorizationDecoder(nn.Module):
    """TIC decoder (PLIP paper Sec. 2.1, App. A.6.2): FPN over (x1..x4) + text-gated SE + two x2 deconvs -> RGB.

    The output has the input size."""

    text_dim: int = 768
    fpn_dim: int = 256
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, feats: Sequence[jax.Array], text_global: jax.Array) -> jax.Array:
        _check_decoder_inputs(feats, text_global, self.text_dim)
        conv = lambda i: nn.Conv(  # noqa: E731
            self.fpn_dim, (1, 1), kernel_init=_torch_default_init, dtype=self.dtype,
            param_dtype=jnp.float32, name=f"channelunity{i}")
        c1, c2, c3, c4 = (conv(i + 1)(f.astype(self.dtype)) for i, f in enumerate(feats))
        y3 = upsample_bilinear(c4, 2) + c3
        y2 = upsample_bilinear(y3, 2) + c2
        y1 = upsample_bilinear(y2, 2) + c1
        f = jnp.concatenate(
            [y1, upsample_bilinear(y2, 2), upsample_bilinear(y3, 4), upsample_bilinear(c4, 8)], axis=-1)
        f = TextGatedSE(dtype=self.dtype, name="SE_block1")(f, text_global)
        f = torch_deconv_3x3_s2(self.fpn_dim, self.dtype, "deconv1")(f)
        f = TextGatedSE(dtype=self.dtype, name="SE_block2")(f, text_global)
        out = torch_deconv_3x3_s2(3, self.dtype, "deconv2")(f)
        return out.astype(jnp.float32)


def _check_decoder_inputs(feats: Sequence[jax.Array], text_global: jax.Array, text_dim: int) -> None:
    if len(feats) != 4:
        raise ValueError(f"ColorizationDecoder needs 4 feature maps (x1,x2,x3,x4), got {len(feats)}")
    if any(f.ndim != 4 for f in feats):
        raise ValueError(f"feature maps must be NHWC, got shapes {[tuple(f.shape) for f in feats]}")
    n, h, w, _ = feats[0].shape
    expected = [(n, h >> k, w >> k) for k in range(4)]
    got = [(f.shape[0], f.shape[1], f.shape[2]) for f in feats]
    if got != expected or h % 8 or w % 8:
        raise ValueError(f"feature maps must halve in size from x1 to x4 (x1 divisible by 8); "
                         f"got (N,H,W) = {got}")
    if text_global.shape != (n, text_dim):
        raise ValueError(f"text_global must have shape (N, text_dim) = {(n, text_dim)}, "
                         f"got {tuple(text_global.shape)}")


class TransformerBlock(nn.Module):
    """Pre-LN transformer block (LN -> MHA -> +res, LN -> MLP(exact GELU) -> +res), CLIP-style names."""

    heads: int
    mlp_dim: int
    layer_norm_eps: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        ln = lambda name: nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,  # noqa: E731
                                       param_dtype=jnp.float32, name=name)
        h = ln("ln_1")(x)
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, dtype=self.dtype, param_dtype=jnp.float32,
            deterministic=True, name="attn")(h, h, mask=mask)
        x = x + h
        h = ln("ln_2")(x)
        h = nn.Dense(self.mlp_dim, dtype=self.dtype, param_dtype=jnp.float32, name="c_fc")(h)
        h = nn.gelu(h, approximate=False)
        h = nn.Dense(x.shape[-1], dtype=self.dtype, param_dtype=jnp.float32, name="c_proj")(h)
        return x + h


class AttributeHead(nn.Module):
    """IAP head (PLIP paper Sec. 2.2, App. A.6.3): masked-caption tokens fused with V_global, block(s), vocab logits.

    ``fusion='add'``: tokens + Dense(image) (identity when dims match; the paper's Eq. 2);
    ``fusion='concat_mlp'``: per-token MLP on concat(token, image) (official ``Text_decoder``; the paper's App. A.6.3).
    Logits are computed for the ``positions`` only and returned in float32.
    """

    vocab_size: int
    hidden: int = 768
    heads: int = 12
    mlp_dim: int = 3072
    fusion: str = "add"
    num_layers: int = 1
    layer_norm_eps: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, token_states: jax.Array, image_global: jax.Array,
                 attention_mask: jax.Array, positions: jax.Array) -> jax.Array:
        self._check_inputs(token_states, image_global, attention_mask, positions)
        dense = lambda d, name, **kw: nn.Dense(  # noqa: E731
            d, dtype=self.dtype, param_dtype=jnp.float32, name=name, **kw)
        x = token_states.astype(self.dtype)
        img = image_global.astype(self.dtype)
        if self.fusion == "add":
            if img.shape[-1] != self.hidden:
                img = dense(self.hidden, "image_proj")(img)
            x = x + img[:, None, :]
        else:  # concat_mlp
            img = jnp.broadcast_to(img[:, None, :], x.shape[:2] + img.shape[-1:])
            x = jnp.concatenate([x, img], axis=-1)
            x = nn.relu(dense(self.hidden, "fc1", kernel_init=_kaiming_normal_fan_out)(x))
            x = dense(self.hidden, "fc2", kernel_init=_kaiming_normal_fan_out)(x)
        mask = (attention_mask > 0)[:, None, None, :]  # key padding mask, broadcast over heads/queries
        for i in range(self.num_layers):
            x = TransformerBlock(self.heads, self.mlp_dim, self.layer_norm_eps, self.dtype,
                                 name=f"resblocks_{i}")(x, mask)
        x = jnp.take_along_axis(x, positions.astype(jnp.int32)[..., None], axis=1, mode="clip")
        x = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, param_dtype=jnp.float32, name="ln_post")(x)
        # The vocabulary projection runs in float32: bf16 logits are too coarse for the cross-entropy.
        logits = nn.Dense(self.vocab_size, dtype=jnp.float32, param_dtype=jnp.float32, name="decoder")(x)
        return logits.astype(jnp.float32)

    def _check_inputs(self, token_states, image_global, attention_mask, positions) -> None:
        if self.fusion not in IAP_FUSIONS:
            raise ValueError(f"unknown AttributeHead fusion {self.fusion!r}; choose one of {IAP_FUSIONS}")
        if token_states.ndim != 3 or token_states.shape[-1] != self.hidden:
            raise ValueError(f"token_states must be (N, L, hidden={self.hidden}), got {tuple(token_states.shape)}")
        n, length = token_states.shape[:2]
        if image_global.ndim != 2 or image_global.shape[0] != n:
            raise ValueError(f"image_global must be (N={n}, Di), got {tuple(image_global.shape)}")
        if attention_mask.shape != (n, length):
            raise ValueError(f"attention_mask must be (N, L) = {(n, length)}, got {tuple(attention_mask.shape)}")
        if positions.ndim != 2 or positions.shape[0] != n:
            raise ValueError(f"positions must be (N={n}, M), got {tuple(positions.shape)}")
