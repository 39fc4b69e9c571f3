"""The PLIP model: image and text encoders plus the colorization (TIC) and attribute (IAP) heads.

One module so that one `init` creates every variable under the names of docs/contracts.md
(params/{image,text,tic,iap}, batch_stats/image). The train step calls `__call__` (two image
and two text passes, docs/method.md "The three pretext tasks"); inference calls `encode_image` / `encode_text`.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from plip_jax.data import transforms
from plip_jax.models.bert import Bert, BertConfig, masked_mean
from plip_jax.models.heads import AttributeHead, ColorizationDecoder
from plip_jax.models.resnet import ModifiedResNet

RECIPES = ("release", "paper_v2")
TASKS = ("ivlc", "tic", "iap")


def text_global(last_hidden: jax.Array, pooled: jax.Array, attention_mask: jax.Array,
                recipe: str, mask_padding: bool = True) -> jax.Array:
    """Global caption embedding: BERT pooler (release weights) or mean of hidden states (paper v2)."""
    if recipe == "release":
        return pooled
    if mask_padding:
        return masked_mean(last_hidden, attention_mask)
    return jnp.mean(last_hidden.astype(jnp.float32), axis=1)


def image_pool(recipe: str, pool: str | None = None) -> str:
    """The image encoder's global pooling: `pool` when given, else the recipe's (attn | max)."""
    if pool is None:
        return "attn" if recipe == "release" else "max"
    if pool not in ("attn", "max"):
        raise ValueError(f"config.model.image.pool must be 'attn', 'max' or None (the recipe's), got {pool!r}")
    return pool


class PLIP(nn.Module):
    """PLIP encoders + pretext heads; `tasks` decides which heads exist (ablations)."""

    image_layers: Sequence[int] = (3, 4, 6, 3)
    image_width: int = 64
    image_heads: int = 8
    output_dim: int = 768
    input_size: tuple[int, int] = (256, 128)
    text_config: BertConfig = None  # type: ignore[assignment]
    recipe: Literal["release", "paper_v2"] = "release"
    image_pool: str | None = None  # None: the recipe's pooling
    frozen_text_layers: int = 0
    mask_padding: bool = True
    tasks: tuple[str, ...] = TASKS
    fpn_dim: int = 256
    gray_updates_bn_stats: bool = False
    iap_fusion: Literal["add", "concat_mlp"] = "add"  # heads.IAP_FUSIONS
    iap_layers: int = 1
    iap_heads: int = 12
    iap_mlp_dim: int = 3072
    iap_stride: int = 1
    tic_stride: int = 1
    dtype: Any = jnp.float32
    remat: bool = False     # recompute encoder blocks in the backward pass (config.model.remat='blocks')

    def setup(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; expected one of {RECIPES}")
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown pretext tasks {sorted(unknown)}; expected a subset of {TASKS}")
        self.image = ModifiedResNet(
            layers=tuple(self.image_layers), width=self.image_width, heads=self.image_heads,
            output_dim=self.output_dim, input_size=tuple(self.input_size),
            pool=image_pool(self.recipe, self.image_pool), dtype=self.dtype, remat=self.remat)
        self.text = Bert(self.text_config, dtype=self.dtype, frozen_layers=self.frozen_text_layers,
                         remat=self.remat)
        if "tic" in self.tasks:
            self.tic = ColorizationDecoder(text_dim=self.text_config.hidden_size,
                                           fpn_dim=self.fpn_dim, dtype=self.dtype)
        if "iap" in self.tasks:
            self.iap = AttributeHead(
                vocab_size=self.text_config.vocab_size, hidden=self.text_config.hidden_size,
                heads=self.iap_heads, mlp_dim=self.iap_mlp_dim, fusion=self.iap_fusion,
                num_layers=self.iap_layers, dtype=self.dtype)

    def encode_image(self, images: jax.Array, train: bool = False, update_stats: bool = True):
        """Normalised NHWC float images -> (global embedding, (x1, x2, x3, x4))."""
        return self.image(images, train=train, update_stats=update_stats)

    def encode_text(self, input_ids: jax.Array, attention_mask: jax.Array, train: bool = False):
        """Token ids -> (global embedding, last hidden states)."""
        last, pooled = self.text(input_ids, attention_mask, deterministic=not train)
        return text_global(last, pooled, attention_mask, self.recipe, self.mask_padding), last

    def __call__(self, batch: dict[str, jax.Array], train: bool = True) -> dict[str, jax.Array]:
        """The pre-training forward: returns every output the three losses need."""
        image_u8 = batch["image"]
        out: dict[str, jax.Array] = {}
        if "more_images" in batch:
            # K images per caption (DataConfig.images_per_caption): one colour pass over all B*K
            # images (BatchNorm statistics over all of them); IVLC contrasts every image with every
            # caption by identity, TIC and IAP use each caption's own image (row 0 of its group).
            more = batch["more_images"]
            k = more.shape[1] + 1
            group = jnp.concatenate([image_u8[:, None], more], axis=1)
            every = transforms.normalize(group.reshape((-1,) + image_u8.shape[1:])).astype(self.dtype)
            colour = every.reshape(group.shape)[:, 0]
            all_emb, _ = self.encode_image(every, train=train)
            v_global = all_emb.reshape((image_u8.shape[0], k, -1))[:, 0]
            out["image_emb"], out["image_ids"] = all_emb, jnp.repeat(batch["id"], k)
        else:
            colour = transforms.normalize(image_u8).astype(self.dtype)
            v_global, _ = self.encode_image(colour, train=train)
            out["image_emb"], out["image_ids"] = v_global, batch["id"]
        t_global, _ = self.encode_text(batch["input_ids"], batch["attention_mask"], train=train)
        out["text_emb"] = t_global
        if "tic" in self.tasks:
            # Like IAP, training may colourise every `tic_stride`-th sample only (1 = every sample).
            tic_rows = slice(None, None, self.tic_stride if train else 1)
            out["target"] = colour[tic_rows].astype(jnp.float32)
            gray = transforms.gray_normalized(image_u8[tic_rows]).astype(self.dtype)
            # The gray pass normalises with its own batch statistics; by default it does not write
            # the running ones, which evaluation (colour images) uses (docs/contracts.md).
            _, gray_feats = self.encode_image(gray, train=train,
                                              update_stats=self.gray_updates_bn_stats)
            out["colour_pred"] = self.tic(gray_feats, t_global[tic_rows])
        if "iap" in self.tasks:
            # Training may run the masked pass on every `iap_stride`-th sample only (a compute knob
            # for small machines; 1 = every sample, the paper). Evaluation always uses all rows.
            rows = slice(None, None, self.iap_stride if train else 1)
            mask = batch["attention_mask"][rows]
            _, masked_hidden = self.encode_text(batch["masked_input_ids"][rows], mask, train=train)
            out["iap_logits"] = self.iap(masked_hidden, v_global[rows], mask, batch["mlm_positions"][rows])
            out["iap_labels"], out["iap_weights"] = batch["mlm_labels"][rows], batch["mlm_weights"][rows]
        return out


def _stride(section, name: str) -> int:
    stride = section.get("sample_stride", 1)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"config.model.{name}.sample_stride must be an integer >= 1, got {stride!r}")
    return stride


def build_model(model_cfg, text_config: BertConfig, tasks: Sequence[str] = TASKS) -> PLIP:
    """PLIP from the `config.model` section and the text tower's BertConfig."""
    img = model_cfg.image
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(str(model_cfg.dtype))
    if dtype is None:
        raise ValueError(f"config.model.dtype must be 'float32' or 'bfloat16', got {model_cfg.dtype!r}")
    remat = str(model_cfg.get("remat", "none"))
    if remat not in ("none", "blocks"):
        raise ValueError(f"config.model.remat must be 'none' or 'blocks', got {remat!r}")
    iap_stride = _stride(model_cfg.iap, "iap")
    tic_stride = _stride(model_cfg.tic, "tic")
    if int(img.output_dim) != text_config.hidden_size:
        raise ValueError(
            f"config.model.image.output_dim ({img.output_dim}) must equal the text hidden size "
            f"({text_config.hidden_size}): CMPM compares the two embeddings directly")
    return PLIP(
        image_layers=tuple(img.layers), image_width=int(img.width), image_heads=int(img.heads),
        output_dim=int(img.output_dim), input_size=tuple(img.input_size), text_config=text_config,
        recipe=model_cfg.recipe, image_pool=image_pool(model_cfg.recipe, img.get("pool", None)),
        frozen_text_layers=int(model_cfg.text.frozen_layers),
        mask_padding=bool(model_cfg.text.get("mask_padding", True)), tasks=tuple(tasks),
        fpn_dim=int(model_cfg.tic.fpn_dim),
        gray_updates_bn_stats=bool(model_cfg.tic.get("gray_updates_bn_stats", False)),
        iap_fusion=model_cfg.iap.fusion,
        iap_layers=int(model_cfg.iap.num_layers), iap_heads=int(model_cfg.iap.heads),
        iap_mlp_dim=int(model_cfg.iap.mlp_dim), iap_stride=iap_stride, tic_stride=tic_stride, dtype=dtype,
        remat=remat == "blocks")
