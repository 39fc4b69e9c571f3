"""PyTorch twin of the whole PLIP pre-training step (plip_jax/models/plip.py, the objective of
plip_jax/trainers/pretrain_step.py and the step of plip_jax/core/step.py).

Written from the architecture and the official code's conventions, not from the JAX code's internals:
ModifiedResNet (tests/reference/torch_resnet.py), transformers' BertModel, the official colorization
decoder (channelunity1..4, SE_block1/2, deconv1/2), the attribute head (fusion, pre-LN transformer
blocks, ln_post, decoder), CMPM / colorization / attribute losses with the config's weights, the two
image passes (colour; gray for TIC, train-mode BN that by default leaves the running statistics alone)
and two text passes (plain; masked for IAP), and the optimizer (Adan of tests/reference/torch_adan.py,
AdamW or SGD) with the config's frozen parameters, lr multipliers and no-decay rule as param groups.

Weights come from JAX variables through the project's converter (plip_jax.convert.mapping.flax_to_torch),
so a parity test of this twin also tests the converter. Used by tests/test_torch_twin.py and by
bench/torch_reference.py (the `full` work). Needs torch, transformers, numpy and plip_jax.convert only.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plip_jax.convert.mapping import flax_to_torch, torch_key
from tests.reference.torch_resnet import ModifiedResNet

MEAN = (0.357, 0.323, 0.328)
STD = (0.252, 0.242, 0.239)
# PIL's fixed-point ITU-R 601-2 luma, what torchvision Grayscale(3) computes on PIL images.
LUMA_FIXED = (19595, 38470, 7471)
TASKS = ("ivlc", "tic", "iap")


# ------------------------------------------------------------------------------------ preprocessing
def normalize(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW, ToTensor + Normalize(MEAN, STD)."""
    x = images_u8.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def gray_normalized(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> the normalised 3-channel gray copy (PIL 'L' luma, replicated), float32 NCHW."""
    x = images_u8.to(torch.int64)
    r, g, b = LUMA_FIXED
    luma = ((x[..., 0] * r + x[..., 1] * g + x[..., 2] * b + 0x8000) >> 16).to(torch.uint8)
    return normalize(luma[..., None].expand(*luma.shape, 3))


# ------------------------------------------------------------------------------------ heads
class SEBlock(nn.Module):
    """Official SE_block_mm: channel gate sigmoid(fc2(relu(fc1([avgpool(F), T])))) times F."""

    def __init__(self, channels: int, text_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels + text_dim, channels)
        self.fc2 = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        a = torch.cat([x.mean(dim=(2, 3)), text], dim=1)
        a = torch.sigmoid(self.fc2(F.relu(self.fc1(a))))
        return x * a[:, :, None, None]


class ColorizationDecoder(nn.Module):
    """Official Image_decoder_ModifiedResNet: FPN over x1..x4, SE, two x2 ConvTranspose2d -> RGB."""

    def __init__(self, in_channels: Sequence[int], fpn_dim: int, text_dim: int) -> None:
        super().__init__()
        for i, c in enumerate(in_channels):
            setattr(self, f"channelunity{i + 1}", nn.Conv2d(c, fpn_dim, 1))
        self.SE_block1 = SEBlock(4 * fpn_dim, text_dim)
        self.deconv1 = nn.ConvTranspose2d(4 * fpn_dim, fpn_dim, 3, stride=2, padding=1, output_padding=1)
        self.SE_block2 = SEBlock(fpn_dim, text_dim)
        self.deconv2 = nn.ConvTranspose2d(fpn_dim, 3, 3, stride=2, padding=1, output_padding=1)

    def forward(self, feats: Sequence[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        up = lambda x, s: F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)  # noqa: E731
        c1, c2, c3, c4 = (getattr(self, f"channelunity{i + 1}")(f) for i, f in enumerate(feats))
        y3 = up(c4, 2) + c3
        y2 = up(y3, 2) + c2
        y1 = up(y2, 2) + c1
        f = torch.cat([y1, up(y2, 2), up(y3, 4), up(c4, 8)], dim=1)
        f = self.deconv1(self.SE_block1(f, text))
        return self.deconv2(self.SE_block2(f, text))


class Attention(nn.Module):
    """Multi-head self-attention with separate query/key/value/out projections and a key padding mask."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        split = lambda t: t.view(n, length, self.heads, dim // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / (dim // self.heads) ** 0.5
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, dim=-1) @ v
        return self.out(out.transpose(1, 2).reshape(n, length, dim))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + c_proj(gelu(c_fc(ln_2(x))))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.c_fc = nn.Linear(dim, mlp_dim)
        self.c_proj = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), key_mask)
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class AttributeHead(nn.Module):
    """IAP head: fuse the masked caption's tokens with the image embedding, block(s), vocabulary logits
    at the masked positions. fusion 'add' (tokens + image, a Linear when the widths differ) or
    'concat_mlp' (official Text_decoder: fc2(relu(fc1([token, image]))))."""

    def __init__(self, vocab_size: int, hidden: int, image_dim: int, heads: int, mlp_dim: int,
                 fusion: str = "add", num_layers: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        if fusion not in ("add", "concat_mlp"):
            raise ValueError(f"unknown IAP fusion {fusion!r}")
        self.fusion = fusion
        if fusion == "add" and image_dim != hidden:
            self.image_proj = nn.Linear(image_dim, hidden)
        if fusion == "concat_mlp":
            self.fc1 = nn.Linear(hidden + image_dim, hidden)
            self.fc2 = nn.Linear(hidden, hidden)
        for i in range(num_layers):
            setattr(self, f"resblocks_{i}", Block(hidden, heads, mlp_dim, eps))
        self.num_layers = num_layers
        self.ln_post = nn.LayerNorm(hidden, eps=eps)
        self.decoder = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: torch.Tensor, image: torch.Tensor, attention_mask: torch.Tensor,
                positions: torch.Tensor) -> torch.Tensor:
        if self.fusion == "add":
            img = self.image_proj(image) if hasattr(self, "image_proj") else image
            x = tokens + img[:, None, :]
        else:
            img = image[:, None, :].expand(-1, tokens.shape[1], -1)
            x = self.fc2(F.relu(self.fc1(torch.cat([tokens, img], dim=-1))))
        key_mask = attention_mask > 0
        for i in range(self.num_layers):
            x = getattr(self, f"resblocks_{i}")(x, key_mask)
        idx = positions.long().clamp(0, x.shape[1] - 1)
        x = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
        return self.decoder(self.ln_post(x))


# ------------------------------------------------------------------------------------ model
class TorchPLIP(nn.Module):
    """Image encoder, BERT, TIC decoder and IAP head; forward(batch) returns what the losses need
    (the same keys as plip_jax.models.plip.PLIP.__call__)."""

    def __init__(self, text_config: Mapping[str, Any], image_layers: Sequence[int] = (3, 4, 6, 3),
                 image_width: int = 64, image_heads: int = 8, output_dim: int = 768,
                 input_size: Sequence[int] = (256, 128), recipe: str = "release", image_pool: str | None = None,
                 frozen_text_layers: int = 0, mask_padding: bool = True, tasks: Sequence[str] = TASKS,
                 fpn_dim: int = 256, gray_updates_bn_stats: bool = False, iap_fusion: str = "add",
                 iap_layers: int = 1, iap_heads: int = 12, iap_mlp_dim: int = 3072, iap_stride: int = 1,
                 tic_stride: int = 1) -> None:
        super().__init__()
        import transformers

        if recipe not in ("release", "paper_v2"):
            raise ValueError(f"unknown recipe {recipe!r}")
        self.recipe, self.mask_padding, self.tasks = recipe, mask_padding, tuple(tasks)
        self.gray_updates_bn_stats = gray_updates_bn_stats
        self.iap_stride, self.tic_stride = int(iap_stride), int(tic_stride)
        self.frozen_text_layers = int(frozen_text_layers)
        pool = image_pool or ("attn" if recipe == "release" else "max")
        self.image = ModifiedResNet(layers=tuple(image_layers), output_dim=output_dim, heads=image_heads,
                                    input_resolution=tuple(input_size), width=image_width, pool=pool)
        cfg = transformers.BertConfig(**dict(text_config))
        cfg._attn_implementation = "eager"
        self.text = transformers.BertModel(cfg, add_pooling_layer=True)
        hidden = cfg.hidden_size
        if "tic" in self.tasks:
            chans = [image_width * 4 * 2**i for i in range(4)]
            self.tic = ColorizationDecoder(chans, fpn_dim, hidden)
        if "iap" in self.tasks:
            self.iap = AttributeHead(cfg.vocab_size, hidden, output_dim, iap_heads, iap_mlp_dim,
                                     iap_fusion, iap_layers)
        self._bn_momentum = {m: m.momentum for m in self.image.modules() if isinstance(m, nn.BatchNorm2d)}

    @classmethod
    def like(cls, jax_model: Any) -> "TorchPLIP":
        """The twin of a plip_jax.models.plip.PLIP module (its dataclass fields)."""
        m = jax_model
        return cls(text_config=m.text_config.to_dict(), image_layers=m.image_layers, image_width=m.image_width,
                   image_heads=m.image_heads, output_dim=m.output_dim, input_size=m.input_size,
                   recipe=m.recipe, image_pool=m.image_pool, frozen_text_layers=m.frozen_text_layers,
                   mask_padding=m.mask_padding, tasks=m.tasks, fpn_dim=m.fpn_dim,
                   gray_updates_bn_stats=m.gray_updates_bn_stats, iap_fusion=m.iap_fusion,
                   iap_layers=m.iap_layers, iap_heads=m.iap_heads, iap_mlp_dim=m.iap_mlp_dim,
                   iap_stride=m.iap_stride, tic_stride=m.tic_stride)

    def _text(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.text(input_ids=ids.long(), attention_mask=mask.long())
        last = out.last_hidden_state
        if self.recipe == "release":
            return out.pooler_output, last
        if not self.mask_padding:
            return last.mean(dim=1), last
        m = mask.float()[..., None]
        return (last * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0), last

    def _gray_pass(self, gray: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Train-mode BN with the batch's statistics; momentum 0 leaves the running ones unchanged."""
        if not self.gray_updates_bn_stats:
            for m in self._bn_momentum:
                m.momentum = 0.0
        try:
            return self.image(gray)[1:]
        finally:
            for m, mom in self._bn_momentum.items():
                m.momentum = mom

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image_u8, ids = batch["image"], batch["id"].long()
        out: dict[str, torch.Tensor] = {}
        if "more_images" in batch:
            more = batch["more_images"]
            b, k = image_u8.shape[0], more.shape[1] + 1
            group = torch.cat([image_u8[:, None], more], dim=1)
            every = normalize(group.reshape(-1, *image_u8.shape[1:]))
            colour = every.reshape(b, k, *every.shape[1:])[:, 0]
            all_emb = self.image(every)[0]
            v_global = all_emb.reshape(b, k, -1)[:, 0]
            out["image_emb"], out["image_ids"] = all_emb, ids.repeat_interleave(k)
        else:
            colour = normalize(image_u8)
            v_global = self.image(colour)[0]
            out["image_emb"], out["image_ids"] = v_global, ids
        t_global, _ = self._text(batch["input_ids"], batch["attention_mask"])
        out["text_emb"] = t_global
        if "tic" in self.tasks:
            rows = slice(None, None, self.tic_stride if self.training else 1)
            out["target"] = colour[rows]
            feats = self._gray_pass(gray_normalized(image_u8[rows]))
            out["colour_pred"] = self.tic(feats, t_global[rows])
        if "iap" in self.tasks:
            rows = slice(None, None, self.iap_stride if self.training else 1)
            mask = batch["attention_mask"][rows]
            _, masked_hidden = self._text(batch["masked_input_ids"][rows], mask)
            out["iap_logits"] = self.iap(masked_hidden, v_global[rows], mask, batch["mlm_positions"][rows])
            out["iap_labels"], out["iap_weights"] = batch["mlm_labels"][rows], batch["mlm_weights"][rows]
        return out


def use_flax_running_var(model: TorchPLIP) -> None:
    """Make the BN running variance follow Flax's convention (biased batch variance) instead of
    PyTorch's (unbiased, x n/(n-1)): a forward hook takes back m * var_biased / (n-1) after each
    train-mode update. Only the running statistics change; the forward pass is untouched."""
    def hook(bn: nn.BatchNorm2d, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        if not bn.training or not bn.momentum:
            return
        x = inputs[0].detach()
        n = x.numel() // x.shape[1]
        with torch.no_grad():
            var = x.transpose(0, 1).reshape(x.shape[1], -1).var(dim=1, unbiased=False)
            # .data: autograd saved running_var for the backward pass; its version must not change.
            bn.running_var.data.sub_(bn.momentum * var / max(n - 1, 1))
    for m in model.image.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_hook(hook)


# ------------------------------------------------------------------------------------ losses
def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def cmpm_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, image_ids: torch.Tensor,
              text_ids: torch.Tensor, eps: float = 1e-8, cosine_logits: bool = False,
              cosine_scale: float = 1.0) -> torch.Tensor:
    """CMPM in the official code form (official Downstreams/CMPM-C/loss.py), Nv images x Nt captions by identity."""
    v, t = image_emb.float(), text_emb.float()
    if cosine_logits:
        i2t = cosine_scale * _unit(v) @ _unit(t).T
        t2i = i2t.T
    else:
        i2t, t2i = v @ _unit(t).T, t @ _unit(v).T
    mask = (image_ids[:, None] == text_ids[None, :]).float()

    def one_direction(logits: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        norm = m.norm(dim=1, keepdim=True)
        log_q = torch.log(m / torch.where(norm > 0, norm, torch.ones_like(norm)) + eps)
        log_p = F.log_softmax(logits, dim=1)
        return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()

    return one_direction(i2t, mask) + one_direction(t2i, mask.T)


def colorization_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "sum_sq") -> torch.Tensor:
    """Batch mean of the per-image squared L2 ('sum_sq'), L2 norm ('l2'), or the plain MSE ('mean')."""
    diff = pred.float() - target.float()
    if reduction == "mean":
        return diff.square().mean()
    sum_sq = diff.square().flatten(1).sum(dim=1)
    if reduction == "sum_sq":
        return sum_sq.mean()
    if reduction != "l2":
        raise ValueError(f"unknown colorization reduction {reduction!r}")
    return torch.where(sum_sq > 0, sum_sq.clamp_min(1e-30).sqrt(), torch.zeros_like(sum_sq)).mean()


def attribute_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Vocabulary cross-entropy averaged over the masked positions (weight > 0) of the batch."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), labels.long().flatten(), reduction="none")
    w = weights.float().flatten()
    total = w.sum()
    return torch.where(total > 0, (ce * w).sum() / total.clamp_min(1e-30), torch.zeros_like(total))


def compute_losses(outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor],
                   loss_cfg: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-task losses and L = sum_w w * L_task over the tasks with a non-zero weight."""
    weights = {k: float(v) for k, v in dict(loss_cfg["weights"]).items()}
    parts: dict[str, torch.Tensor] = {}
    if weights.get("ivlc", 0) > 0:
        parts["ivlc"] = cmpm_loss(outputs["image_emb"], outputs["text_emb"], outputs["image_ids"],
                                  batch["id"].long(), eps=float(loss_cfg["cmpm_eps"]),
                                  cosine_logits=bool(loss_cfg["cosine_logits"]),
                                  cosine_scale=float(loss_cfg.get("cosine_scale", 1.0)))
    if "colour_pred" in outputs:
        parts["tic"] = colorization_loss(outputs["colour_pred"], outputs["target"], str(loss_cfg["tic_reduction"]))
    if "iap_logits" in outputs:
        parts["iap"] = attribute_loss(outputs["iap_logits"], outputs["iap_labels"], outputs["iap_weights"])
    total = sum(weights[t] * parts[t] for t in TASKS if t in parts and weights.get(t, 0) > 0)
    return total, parts


# ------------------------------------------------------------------------------------ weights
def _iap_as_dense(params: Mapping[str, Any]) -> dict:
    """Flax MultiHeadDotProductAttention leaves as plain Dense ones: query/key/value kernel
    (in, heads, head_dim) -> (in, heads*head_dim), bias (heads, head_dim) -> (heads*head_dim,),
    out kernel (heads, head_dim, out) -> (heads*head_dim, out)."""
    def walk(tree: Mapping[str, Any], path: tuple[str, ...]) -> dict:
        res = {}
        for k, v in tree.items():
            if isinstance(v, Mapping):
                res[k] = walk(v, path + (k,))
                continue
            a = np.asarray(v)
            if len(path) >= 2 and path[-2] == "attn":
                if path[-1] == "out" and k == "kernel":
                    a = a.reshape(-1, a.shape[-1])
                elif k == "kernel":
                    a = a.reshape(a.shape[0], -1)
                elif path[-1] != "out":
                    a = a.reshape(-1)
            res[k] = a
        return res
    return walk(params, ())


def jax_to_torch_state(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """JAX PLIP variables -> this twin's state dict (numpy), through plip_jax.convert.mapping."""
    params, stats = variables["params"], variables.get("batch_stats", {})
    sd: dict[str, np.ndarray] = {}
    sd.update(flax_to_torch({"params": params["image"], "batch_stats": stats.get("image", {})},
                            prefix="image.", kind="image"))
    sd.update(flax_to_torch({"params": params["text"]}, prefix="text.", kind="text", position_ids=False))
    if "tic" in params:
        sd.update(flax_to_torch({"params": params["tic"]}, prefix="tic.", kind="image"))
    if "iap" in params:
        sd.update(flax_to_torch({"params": _iap_as_dense(params["iap"])}, prefix="iap.", kind="image"))
    return {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}


def load_jax_variables(model: TorchPLIP, variables: Mapping[str, Any]) -> None:
    """Copy JAX variables into the twin; every parameter and BN statistic must be covered."""
    sd = jax_to_torch_state(variables)
    own = model.state_dict()
    missing = [k for k, v in own.items() if k not in sd and v.is_floating_point()]
    unexpected = [k for k in sd if k not in own]
    bad = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sd
           if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        raise ValueError(f"JAX -> torch twin: missing {missing[:8]}, unexpected {unexpected[:8]}, mis-shaped {bad[:8]}")
    with torch.no_grad():
        for k, v in sd.items():
            own[k].copy_(torch.from_numpy(np.ascontiguousarray(v)))


def jax_names(variables: Mapping[str, Any]) -> dict[str, str]:
    """{twin parameter name: '/'-joined JAX parameter name} (the names the config's regexes see)."""
    out = {}

    def walk(tree: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for k, v in tree.items():
            if isinstance(v, Mapping):
                walk(v, path + (k,))
            else:
                out[f"{path[0]}." + torch_key(path[1:] + (k,), "params")] = "/".join(path + (k,))
    walk(variables["params"], ())
    return out


# ------------------------------------------------------------------------------------ optimizer, step
def _fullmatch_any(name: str, patterns: Iterable[str]) -> bool:
    return any(re.fullmatch(p, name) for p in patterns)


def param_groups(model: TorchPLIP, variables: Mapping[str, Any], optim_cfg: Mapping[str, Any]) -> list[dict]:
    """Param groups from config.optim: frozen (requires_grad off, not in any group), lr multiplier
    (first matching pattern), weight decay off for 1-D leaves and `no_decay` names. BERT embeddings
    and layers below model.text.frozen_layers get no gradient (JAX: stop_gradient)."""
    names = jax_names(variables)
    shapes = {n: np.shape(v) for n, v in _flat_names(variables["params"]).items()}
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for tname, p in model.named_parameters():
        jname = names[tname]
        m = re.match(r"text\.encoder\.layer\.(\d+)\.", tname)
        if tname.startswith("text.embeddings.") or (m and int(m.group(1)) < model.frozen_text_layers):
            p.requires_grad_(False)
        if _fullmatch_any(jname, optim_cfg["frozen"]):
            p.requires_grad_(False)
            continue
        mult = 1.0
        for pattern, mlt in optim_cfg["lr_multipliers"]:
            if _fullmatch_any(jname, [pattern]):
                mult = float(mlt)
                break
        decay = len(shapes[jname]) > 1 and not _fullmatch_any(jname, optim_cfg["no_decay"])
        groups.setdefault((mult, decay), []).append(p)
    wd = float(optim_cfg["weight_decay"])
    return [{"params": ps, "lr_mult": mult, "weight_decay": wd if decay else 0.0}
            for (mult, decay), ps in sorted(groups.items())]


def _flat_names(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        out.update(_flat_names(v, name) if isinstance(v, Mapping) else {name: v})
    return out


def make_optimizer(groups: list[dict], optim_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """config.optim.name: 'adan' (tests/reference/torch_adan.py), 'adamw' or 'sgd' (momentum 0.9)."""
    name = optim_cfg["name"]
    if float(optim_cfg.get("clip_norm", 0.0) or 0.0) > 0 or int(optim_cfg.get("grad_accum_steps", 1)) > 1:
        raise ValueError("the torch twin has no gradient clipping or accumulation "
                         "(config.optim.clip_norm, config.optim.grad_accum_steps)")
    if name == "adan":
        from tests.reference.torch_adan import Adan

        return Adan(groups, lr=0.0, betas=(optim_cfg["b1"], optim_cfg["b2"], optim_cfg["b3"]),
                    eps=optim_cfg["eps"], no_prox=bool(optim_cfg.get("no_prox", False)))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=0.0, betas=(0.9, 0.999), eps=optim_cfg["eps"])
    if name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=0.9)
    raise ValueError(f"config.optim.name {name!r}: the twin knows 'adan', 'adamw', 'sgd'")


class TorchTrainStep:
    """One pre-training step: forward (train mode), weighted losses, backward, optimizer step at
    lr = schedule(step) * the group's multiplier; a non-finite loss skips the update (as JAX)."""

    def __init__(self, model: TorchPLIP, optimizer: torch.optim.Optimizer, loss_cfg: Mapping[str, Any],
                 schedule: Callable[[int], float]) -> None:
        self.model, self.opt, self.loss_cfg, self.schedule = model, optimizer, loss_cfg, schedule
        self.step_count = 0

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        self.model.train()
        lr = float(self.schedule(self.step_count))
        for g in self.opt.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)
        self.opt.zero_grad(set_to_none=True)
        outputs = self.model(batch)
        loss, parts = compute_losses(outputs, batch, self.loss_cfg)
        loss.backward()
        if torch.isfinite(loss):
            # JAX differentiates every parameter: one the loss does not reach (the BERT pooler under
            # paper_v2) has a zero gradient and still gets weight decay; torch would skip it (grad None).
            for g in self.opt.param_groups:
                for p in g["params"]:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
            self.opt.step()
        self.step_count += 1
        metrics = {f"loss_{k}": float(v.detach()) for k, v in parts.items()}
        metrics["loss"] = float(loss.detach())
        return metrics


def batch_to_torch(batch: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A numpy training batch (docs/contracts.md keys) as torch tensors on `device`."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}
