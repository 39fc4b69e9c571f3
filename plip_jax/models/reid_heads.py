"""Downstream heads on the PLIP encoders: BNNeck (image Re-ID strong baseline), the CMPC class
matrix (text Re-ID fine-tuning) and the attribute classifier (Rethinking-PAR baseline)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class BNNeck(nn.Module):
    """BoT neck: feature -> BatchNorm (bias fixed at 0) -> bias-free classifier.

    Returns (bn_feature, logits); the triplet loss uses the pre-BN feature, the identity loss the
    logits, and retrieval the BN feature (BoT ``neck_feat='after'``).
    """

    num_classes: int
    momentum: float = 0.9      # torch BatchNorm1d momentum 0.1

    @nn.compact
    def __call__(self, feature: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        x = feature.astype(jnp.float32)
        bn = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=1e-5,
                          use_bias=False, name="bottleneck")(x)
        logits = nn.Dense(self.num_classes, use_bias=False, name="classifier",
                          kernel_init=nn.initializers.normal(0.001))(bn)
        return bn, logits


class CMPCClassifier(nn.Module):
    """The learnable CMPC class matrix W (D, C), xavier-uniform as the official code."""

    num_classes: int
    dim: int

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("W", nn.initializers.xavier_uniform(), (self.dim, self.num_classes))


class AttributeClassifier(nn.Module):
    """Linear -> BatchNorm over the attribute logits (Rethinking PAR ``BaseClassifier``)."""

    num_attributes: int
    momentum: float = 0.9

    @nn.compact
    def __call__(self, feature: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Dense(self.num_attributes, name="logits")(feature.astype(jnp.float32))
        return nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=1e-5,
                            name="bn")(x)
