"""PyTorch reference of PLIP's ModifiedResNet, written from the architecture (docs/method.md "Model").

State-dict names match the official ``Image_encoder_ModifiedResNet`` (``visual_model.py``), so official
weights load with ``strict=True``. Used by the Flax parity tests and by bench/torch_reference.py;
no data-dependent control flow, so it works under ``torch.compile`` and with channels_last inputs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    """Anti-aliased bottleneck: every conv has stride 1; the stride is an AvgPool after conv2."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != out:
            # "-1" is the parameter-free AvgPool, so the state dict has downsample.0 / downsample.1 only.
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, out, 1, stride=1, bias=False)),
                        ("1", nn.BatchNorm2d(out)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP attention pooling: mean token prepended before the positional embedding, query = token 0."""

    def __init__(self, num_tokens: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        # Registration order matches the official state dict: pos-emb, k, q, v, c.
        self.positional_embedding = nn.Parameter(torch.randn(num_tokens, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        tokens = x.flatten(2).transpose(1, 2)  # (N, h*w, C), row-major over (h, w)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self.positional_embedding.to(tokens.dtype)
        heads, head_dim = self.num_heads, c // self.num_heads
        q = self.q_proj(tokens[:, :1]).view(n, 1, heads, head_dim).transpose(1, 2)
        k = self.k_proj(tokens).view(n, -1, heads, head_dim).transpose(1, 2)
        v = self.v_proj(tokens).view(n, -1, heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # scale = head_dim ** -0.5
        out = out.transpose(1, 2).reshape(n, 1, c)
        return self.c_proj(out)[:, 0]


class ModifiedResNet(nn.Module):
    """CLIP/PLIP ModifiedResNet; ``pool='attn'`` is the release recipe, ``'max'`` the paper_v2 one.

    ``forward(x NCHW) -> (emb, x1, x2, x3, x4)`` like the official ``Image_encoder_ModifiedResNet``.
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        output_dim: int = 768,
        heads: int = 8,
        input_resolution: Sequence[int] = (256, 128),
        width: int = 64,
        pool: str = "attn",
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must have 4 stages, got {tuple(layers)}")
        if pool not in ("attn", "max"):
            raise ValueError(f"pool must be 'attn' or 'max', got {pool!r}")
        self.pool = pool
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)

        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)

        embed_dim = width * 32
        if pool == "attn":
            h, w = input_resolution[0] // 32, input_resolution[1] // 32
            self.attnpool = AttentionPool2d(h * w + 1, embed_dim, heads, output_dim)
        else:
            self.proj = nn.Linear(embed_dim, output_dim)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        mods = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        mods += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def _init_weights(self) -> None:
        """Official init: q/k/v/c_proj weights N(0, C^-0.5) and every Bottleneck bn3 scale zero."""
        if self.pool == "attn":
            pool = self.attnpool
            std = pool.c_proj.in_features**-0.5
            for lin in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(lin.weight, std=std)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                nn.init.zeros_(block.bn3.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x.to(self.conv1.weight.dtype)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x1 = self.layer1(x)
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        if self.pool == "attn":
            emb = self.attnpool(x4)
        else:
            emb = self.proj(torch.amax(x4, dim=(2, 3)))
        return emb, x1, x2, x3, x4
