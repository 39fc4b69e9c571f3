"""PLIP image encoder: the CLIP-style ModifiedResNet in Flax Linen, NHWC (docs/method.md "Model";
the official ``visual_model.py``).

Submodule and parameter names mirror the official PyTorch state_dict (``conv1``, ``bn1``,
``layer1/0/downsample/0``, ``attnpool/q_proj`` ...) so checkpoint conversion is renaming plus
kernel transposes (``plip_jax.convert.mapping``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
Array = jax.Array

# PyTorch's default Conv2d/Linear weight init (kaiming_uniform, a=sqrt(5)) is U(+-1/sqrt(fan_in)).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default Linear bias init, U(+-1/sqrt(fan_in)), as a Flax initializer."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _avg_pool(x: Array, stride: int) -> Array:
    """AvgPool2d(stride) on NHWC: kernel = stride, no padding, floor (PyTorch semantics)."""
    if stride == 1:
        return x
    return nn.avg_pool(x, (stride, stride), strides=(stride, stride), padding="VALID")


class TorchConv2d(nn.Module):
    """Bias-free NHWC conv with PyTorch's symmetric padding kernel//2 (Flax 'SAME' differs at stride 2).

    Same parameter as ``nn.Conv`` (``kernel``, (k, k, in, out)). A stride-1 conv whose input is
    smaller than its kernel in H or W (layer4 of a 64x32 input) runs as patches @ kernel: XLA:CPU
    lowers that conv with input and kernel roles swapped, ~20x slower than the matmul
    (docs/contracts.md "Small-map convolutions"). Both forms compute the same sums.
    """

    features: int
    kernel_size: int
    stride: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k, pad = self.kernel_size, self.kernel_size // 2
        kernel = self.param("kernel", torch_default_kernel_init, (k, k, x.shape[-1], self.features),
                            jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        h, w = x.shape[1:3]
        if self.stride == 1 and k == 1:
            # A 1x1 conv is a matmul over channels. As a dot its weight gradient is one GEMM over
            # (N*H*W); as a convolution XLA:CPU transposes activations and gradients to channel-
            # major for the backward-filter conv, ~45% of the ResNet-50 step (bench/NOTES.md).
            return x @ kernel.reshape(x.shape[-1], self.features)
        if self.stride == 1 and k > 1 and min(h, w) < k:
            xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            patches = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(k) for j in range(k)],
                                      axis=-1)
            return patches @ kernel.reshape(-1, self.features)
        return jax.lax.conv_general_dilated(
            x, kernel, (self.stride, self.stride), ((pad, pad), (pad, pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv(features: int, kernel: int, dtype: Dtype, name: str, stride: int = 1) -> TorchConv2d:
    """Bias-free conv with PyTorch's padding (TorchConv2d)."""
    return TorchConv2d(features, kernel, stride=stride, dtype=dtype, name=name)


def _bn(train: bool, dtype: Dtype, name: str, zero_scale: bool = False,
        update_stats: bool = True) -> nn.BatchNorm:
    """BatchNorm matching PyTorch (momentum 0.1 == Flax 0.9, eps 1e-5); stats in 'batch_stats'.

    ``update_stats=False`` (train mode only): normalise with the batch statistics but leave the
    running ones as they are (Flax momentum 1.0 keeps ``1.0 * running + 0.0 * batch``).
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9 if update_stats else 1.0,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
        name=name,
    )


class Downsample(nn.Module):
    """Shortcut of block 0: AvgPool(stride) then 1x1 conv ('0') + BN ('1'), as nn.Sequential."""

    features: int
    stride: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False, update_stats: bool = True) -> Array:
        x = _avg_pool(x, self.stride)
        x = _conv(self.features, 1, self.dtype, "0")(x)
        return _bn(train, self.dtype, "1", update_stats=update_stats)(x)


class Bottleneck(nn.Module):
    """Anti-aliased bottleneck (expansion 4): the stride is an AvgPool after conv2, never a conv stride."""

    planes: int
    stride: int = 1
    expansion: int = 4
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False, update_stats: bool = True) -> Array:
        out_features = self.planes * self.expansion
        bn = functools.partial(_bn, train, self.dtype, update_stats=update_stats)
        out = nn.relu(bn("bn1")(_conv(self.planes, 1, self.dtype, "conv1")(x)))
        out = nn.relu(bn("bn2")(_conv(self.planes, 3, self.dtype, "conv2")(out)))
        out = _avg_pool(out, self.stride)
        out = bn("bn3", zero_scale=True)(_conv(out_features, 1, self.dtype, "conv3")(out))
        identity = x
        if self.stride > 1 or x.shape[-1] != out_features:
            identity = Downsample(
                features=out_features, stride=self.stride, dtype=self.dtype, name="downsample"
            )(x, train, update_stats)
        return nn.relu(out + identity)


class ResLayer(nn.Module):
    """One stage (PyTorch ``layerS``): ``blocks`` Bottlenecks named '0', '1', ...; stride on block 0.
    ``remat``: each block's activations are recomputed in the backward pass instead of kept."""

    planes: int
    blocks: int
    stride: int = 1
    dtype: Dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool = False, update_stats: bool = True) -> Array:
        block = nn.remat(Bottleneck, static_argnums=(2, 3)) if self.remat else Bottleneck
        for i in range(self.blocks):
            x = block(
                planes=self.planes, stride=self.stride if i == 0 else 1, dtype=self.dtype, name=str(i)
            )(x, train, update_stats)
        return x


class AttentionPool2d(nn.Module):
    """CLIP attention pooling: mean token prepended, + pos-emb, one query (token 0) over h*w+1 keys."""

    grid: tuple[int, int]  # (h, w) of the last feature map; h*w + 1 positional embeddings
    heads: int
    output_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        n, h, w, c = x.shape
        if (h, w) != tuple(self.grid):
            raise ValueError(
                f"AttentionPool2d: feature map {h}x{w} does not match the positional embedding's "
                f"{self.grid[0]}x{self.grid[1]} grid; the input image size must equal input_size."
            )
        if c % self.heads:
            raise ValueError(f"AttentionPool2d: {c} channels are not divisible by heads={self.heads}")
        std = c**-0.5
        pos = self.param(
            "positional_embedding",
            lambda k, s: jax.random.normal(k, s, jnp.float32) * std,
            (self.grid[0] * self.grid[1] + 1, c),
        )
        # Row-major over (h, w), i.e. the same order as PyTorch's NCHW .flatten(2).
        tokens = einops.rearrange(x, "n h w c -> n (h w) c")
        tokens = jnp.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1)
        tokens = (tokens + pos.astype(tokens.dtype)).astype(self.dtype)

        def dense(features: int, name: str) -> nn.Dense:
            return nn.Dense(
                features,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=nn.initializers.normal(std),
                bias_init=torch_default_bias_init(c),
                name=name,
            )

        head_dim = c // self.heads
        split = functools.partial(einops.rearrange, pattern="n t (h d) -> n h t d", h=self.heads)
        q = split(dense(c, "q_proj")(tokens[:, :1])) * (head_dim**-0.5)
        k = split(dense(c, "k_proj")(tokens))
        v = split(dense(c, "v_proj")(tokens))
        logits = jnp.einsum("nhqd,nhkd->nhqk", q, k, preferred_element_type=jnp.float32)
        attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = einops.rearrange(jnp.einsum("nhqk,nhkd->nhqd", attn, v), "n h q d -> n q (h d)")
        return dense(self.output_dim, "c_proj")(out)[:, 0]


class ModifiedResNet(nn.Module):
    """PLIP/CLIP ModifiedResNet: 3-conv stem, anti-aliased bottlenecks, attention or max pooling.

    Returns ``(emb, (x1, x2, x3, x4))``: the global embedding (float32) and the four stage maps
    (NHWC, compute dtype) that feed the colorization decoder.
    """

    layers: Sequence[int] = (3, 4, 6, 3)
    width: int = 64
    heads: int = 8
    output_dim: int = 768
    input_size: tuple[int, int] = (256, 128)
    pool: str = "attn"
    dtype: Dtype = jnp.float32
    remat: bool = False             # recompute each bottleneck in the backward pass (memory for FLOPs)

    @nn.compact
    def __call__(self, x: Array, train: bool = False,
                 update_stats: bool = True) -> tuple[Array, tuple[Array, ...]]:
        """``update_stats=False``: a train-mode pass that leaves the BN running statistics alone."""
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"ModifiedResNet expects NHWC images (N, H, W, 3); got shape {x.shape}")
        if len(self.layers) != 4:
            raise ValueError(f"ModifiedResNet needs 4 stages in `layers`; got {tuple(self.layers)}")
        if self.pool not in ("attn", "max"):
            raise ValueError(f"ModifiedResNet pool must be 'attn' or 'max'; got {self.pool!r}")
        x = x.astype(self.dtype)
        # Stem: three 3x3 convs, the first with stride 2 (symmetric padding 1, as in PyTorch).
        stem = ((self.width // 2, 2), (self.width // 2, 1), (self.width, 1))
        for i, (features, stride) in enumerate(stem, start=1):
            x = _conv(features, 3, self.dtype, f"conv{i}", stride=stride)(x)
            x = nn.relu(_bn(train, self.dtype, f"bn{i}", update_stats=update_stats)(x))
        x = _avg_pool(x, 2)

        feats = []
        for i, blocks in enumerate(self.layers):
            x = ResLayer(
                planes=self.width * 2**i,
                blocks=blocks,
                stride=1 if i == 0 else 2,
                dtype=self.dtype,
                remat=self.remat,
                name=f"layer{i + 1}",
            )(x, train, update_stats)
            feats.append(x)

        c = x.shape[-1]
        if self.pool == "attn":
            emb = AttentionPool2d(
                grid=(self.input_size[0] // 32, self.input_size[1] // 32),
                heads=self.heads,
                output_dim=self.output_dim,
                dtype=self.dtype,
                name="attnpool",
            )(x)
        else:
            pooled = jnp.max(x, axis=(1, 2))
            emb = nn.Dense(
                self.output_dim,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=torch_default_kernel_init,
                bias_init=torch_default_bias_init(c),
                name="proj",
            )(pooled)
        return emb.astype(jnp.float32), tuple(feats)


def resnet_param_count(variables: Any) -> int:
    """Number of trainable parameters (the 'params' collection; BN running stats excluded)."""
    params = variables.get("params", variables) if hasattr(variables, "get") else variables
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))
