"""PLIP text encoder: BERT (post-LN, exact GELU) in Flax Linen (docs/method.md "Model").

Submodule and parameter names mirror HF PyTorch ``BertModel`` (``embeddings/word_embeddings``,
``encoder/layer/<i>/attention/self/query``, ``pooler/dense`` ...) so that checkpoints convert by
renaming plus Dense transposes (``plip_jax.convert.mapping``). Parameters are float32; ``dtype`` is
the compute dtype, with softmax and LayerNorm always computed in float32.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
Array = jax.Array

# HF `ACT2FN` names we support -> Flax activation. "gelu" is the exact erf GELU of BERT.
_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The HF ``config.json`` fields that fix a BERT architecture; defaults are bert-base-uncased."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"BertConfig.hidden_act {self.hidden_act!r} is not supported; use one of {sorted(_ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"BertConfig.{name} must be a probability in [0, 1), got {value!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"BertConfig.{name} must be a positive number, got {value!r}")
        if not isinstance(self.pad_token_id, (int, np.integer)) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"BertConfig.pad_token_id must be an id in [0, vocab_size={self.vocab_size}), got {self.pad_token_id!r}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BertConfig":
        """Build from an HF config dict; unknown keys are ignored, a non-absolute position embedding is refused."""
        if not isinstance(d, Mapping):
            raise TypeError(f"BertConfig.from_dict expects a mapping, got {type(d).__name__}")
        pos_type = d.get("position_embedding_type", "absolute")
        if pos_type not in (None, "absolute"):
            raise ValueError(f"position_embedding_type {pos_type!r} is not supported (only 'absolute')")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names and v is not None}
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "BertConfig":
        """Read an HF ``config.json`` (or the ``text`` section written by our exporter)."""
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"BERT config file not found: {path}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"BERT config file {path} is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in HF ``config.json`` field names (JSON-serialisable)."""
        return dataclasses.asdict(self)


def bert_base() -> BertConfig:
    """bert-base-uncased: 12 layers, hidden 768, 12 heads, FFN 3072 (PLIP's text tower)."""
    return BertConfig()


def _normal(config: BertConfig) -> nn.initializers.Initializer:
    return nn.initializers.normal(stddev=config.initializer_range)


def _dense(features: int, config: BertConfig, dtype: Dtype, name: str) -> nn.Dense:
    """HF-initialised Linear: N(0, initializer_range) kernel, zero bias, float32 params."""
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, kernel_init=_normal(config),
                    bias_init=nn.initializers.zeros, name=name)


def _layer_norm(x: Array, config: BertConfig, dtype: Dtype, name: str) -> Array:
    """LayerNorm computed in float32 (eps from config), result cast to the compute dtype."""
    y = nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, param_dtype=jnp.float32,
                     name=name)(x.astype(jnp.float32))
    return y.astype(dtype)


class _BertModule(nn.Module):
    """What every BERT module is built from: the architecture and the compute dtype."""

    config: BertConfig
    dtype: Dtype = jnp.float32


class BertEmbeddings(_BertModule):
    """word + absolute position + token-type embeddings, then LayerNorm and dropout."""

    @nn.compact
    def __call__(self, input_ids: Array, token_type_ids: Array, deterministic: bool) -> Array:
        cfg = self.config
        pad = cfg.pad_token_id
        normal = _normal(cfg)

        def word_init(key: Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> Array:
            # HF's nn.Embedding(padding_idx=pad) starts with a zero padding row.
            return normal(key, shape, dtype).at[pad].set(0)

        def embed(num: int, name: str, init: nn.initializers.Initializer = normal) -> nn.Embed:
            return nn.Embed(num, cfg.hidden_size, dtype=jnp.float32, param_dtype=jnp.float32,
                            embedding_init=init, name=name)

        positions = jnp.arange(input_ids.shape[1])[None, :]
        x = (embed(cfg.vocab_size, "word_embeddings", word_init)(input_ids)
             + embed(cfg.max_position_embeddings, "position_embeddings")(positions)
             + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids))
        x = _layer_norm(x, cfg, self.dtype, "LayerNorm")
        return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class BertSelfAttention(_BertModule):
    """Multi-head scaled dot-product attention with an additive padding mask (HF ``attention.self``)."""

    @nn.compact
    def __call__(self, x: Array, mask_bias: Array, deterministic: bool) -> Array:
        cfg = self.config
        heads, head_dim = cfg.num_attention_heads, cfg.head_dim

        def project(name: str) -> Array:
            y = _dense(cfg.hidden_size, cfg, self.dtype, name)(x)
            return y.reshape(*y.shape[:-1], heads, head_dim)  # (N, L, heads, head_dim)

        q, k, v = project("query"), project("key"), project("value")
        q = q / jnp.sqrt(head_dim).astype(q.dtype)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + mask_bias
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return out.reshape(*out.shape[:2], cfg.hidden_size)


class BertResidualOutput(_BertModule):
    """dense -> dropout -> residual add -> LayerNorm (HF ``BertSelfOutput`` / ``BertOutput``)."""

    @nn.compact
    def __call__(self, h: Array, residual: Array, deterministic: bool) -> Array:
        cfg = self.config
        h = _dense(cfg.hidden_size, cfg, self.dtype, "dense")(h)
        h = nn.Dropout(cfg.hidden_dropout_prob)(h, deterministic=deterministic)
        return _layer_norm(h + residual, cfg, self.dtype, "LayerNorm")


class BertAttention(_BertModule):
    """Self-attention followed by its output projection and post-LN (HF ``attention``)."""

    @nn.compact
    def __call__(self, x: Array, mask_bias: Array, deterministic: bool) -> Array:
        h = BertSelfAttention(self.config, self.dtype, name="self")(x, mask_bias, deterministic)
        return BertResidualOutput(self.config, self.dtype, name="output")(h, x, deterministic)


class BertIntermediate(_BertModule):
    """FFN expansion: dense to intermediate_size and the config's activation (exact GELU for BERT)."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        return _ACTIVATIONS[cfg.hidden_act](_dense(cfg.intermediate_size, cfg, self.dtype, "dense")(x))


class BertLayer(_BertModule):
    """One post-LN transformer block (HF ``encoder.layer.<i>``)."""

    @nn.compact
    def __call__(self, x: Array, mask_bias: Array, deterministic: bool) -> Array:
        x = BertAttention(self.config, self.dtype, name="attention")(x, mask_bias, deterministic)
        h = BertIntermediate(self.config, self.dtype, name="intermediate")(x)
        return BertResidualOutput(self.config, self.dtype, name="output")(h, x, deterministic)


class BertLayerCollection(_BertModule):
    """The stack of layers named '0', '1', ...; gradients stop after the first `frozen_layers`.
    `remat`: each trained layer's activations are recomputed in the backward pass instead of kept."""
    frozen_layers: int = 0
    remat: bool = False

    @nn.compact
    def __call__(self, x: Array, mask_bias: Array, deterministic: bool) -> Array:
        if self.frozen_layers > 0:
            # Embeddings are frozen together with the first layers: cut the graph before layer 0 too,
            # so no backward pass is built through them at all.
            x = jax.lax.stop_gradient(x)
        remat_layer = nn.remat(BertLayer, static_argnums=(3,))
        for i in range(self.config.num_hidden_layers):
            layer = remat_layer if self.remat and i >= self.frozen_layers else BertLayer
            x = layer(self.config, self.dtype, name=str(i))(x, mask_bias, deterministic)
            if i < self.frozen_layers:
                x = jax.lax.stop_gradient(x)
        return x


class BertEncoder(_BertModule):
    """Holds the layer collection under the name ``layer`` (HF ``encoder.layer``)."""
    frozen_layers: int = 0
    remat: bool = False

    @nn.compact
    def __call__(self, x: Array, mask_bias: Array, deterministic: bool) -> Array:
        return BertLayerCollection(self.config, self.dtype, self.frozen_layers, self.remat, name="layer")(
            x, mask_bias, deterministic)


class BertPooler(_BertModule):
    """tanh(dense(hidden state of [CLS])) (HF ``pooler``)."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return jnp.tanh(_dense(self.config.hidden_size, self.config, self.dtype, "dense")(x[:, 0]))


def _check_inputs(config: BertConfig, input_ids: Array, attention_mask: Array,
                  token_type_ids: Array | None) -> None:
    """Raise one clear ValueError for malformed inputs (checked on static shapes/dtypes at trace time)."""
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be 2-D (batch, length), got shape {tuple(input_ids.shape)}")
    if not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                         f"{tuple(input_ids.shape)}")
    if token_type_ids is not None and tuple(token_type_ids.shape) != tuple(input_ids.shape):
        raise ValueError(f"token_type_ids shape {tuple(token_type_ids.shape)} != input_ids shape "
                         f"{tuple(input_ids.shape)}")
    if input_ids.shape[1] > config.max_position_embeddings:
        raise ValueError(f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings "
                         f"({config.max_position_embeddings})")


class Bert(_BertModule):
    """HF-compatible BertModel: returns (last_hidden_state (N,L,H), pooled (N,H) or None), both float32.

    ``frozen_layers=k`` (k > 0) puts the embeddings and layers 0..k-1 behind ``stop_gradient``
    (PLIP freezes embeddings + layers 0-7); 0 or -1 trains everything.
    """
    frozen_layers: int = 0
    add_pooler: bool = True
    remat: bool = False             # recompute each trained layer in the backward pass (memory for FLOPs)

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array, token_type_ids: Array | None = None,
                 deterministic: bool = True) -> tuple[Array, Array | None]:
        cfg = self.config
        if not -1 <= self.frozen_layers <= cfg.num_hidden_layers:
            raise ValueError(f"frozen_layers must be in [-1, num_hidden_layers={cfg.num_hidden_layers}], "
                             f"got {self.frozen_layers}")
        input_ids, attention_mask = jnp.asarray(input_ids), jnp.asarray(attention_mask)
        token_type_ids = None if token_type_ids is None else jnp.asarray(token_type_ids)
        _check_inputs(cfg, input_ids, attention_mask, token_type_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)

        # Additive mask (N, 1, 1, L): 0 where attended, float32 min where padded (as HF does).
        mask_bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0,
                              jnp.finfo(jnp.float32).min).astype(jnp.float32)
        x = BertEmbeddings(cfg, self.dtype, name="embeddings")(input_ids, token_type_ids, deterministic)
        x = BertEncoder(cfg, self.dtype, max(self.frozen_layers, 0), self.remat, name="encoder")(
            x, mask_bias, deterministic)
        pooled = BertPooler(cfg, self.dtype, name="pooler")(x).astype(jnp.float32) if self.add_pooler else None
        return x.astype(jnp.float32), pooled


def masked_mean(last_hidden: Array, attention_mask: Array) -> Array:
    """Attention-mask-weighted mean over tokens (paper_v2 text pooling): (N,L,H), (N,L) -> (N,H) float32."""
    if last_hidden.ndim != 3 or tuple(attention_mask.shape) != tuple(last_hidden.shape[:2]):
        raise ValueError(f"masked_mean expects hidden (N,L,H) and mask (N,L); got {tuple(last_hidden.shape)} "
                         f"and {tuple(attention_mask.shape)}")
    m = attention_mask.astype(jnp.float32)[..., None]
    total = jnp.sum(last_hidden.astype(jnp.float32) * m, axis=1)
    return total / jnp.maximum(jnp.sum(m, axis=1), 1.0)
