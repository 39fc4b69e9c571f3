"""Identity-level cross-modal projection losses: CMPM (IVLC pre-training) and CMPC (fine-tuning).

Both follow the official PyTorch code (Zplusdragon/PLIP ``Downstreams/CMPM-C/loss.py``), not the
paper's Eq. 4-5 (docs/method.md "Identity-based vision-language contrast").
Pure functions, float32 math, jit- and mesh-friendly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_pair(image_emb: jax.Array, text_emb: jax.Array, ids: jax.Array, what: str) -> None:
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"{what}: image_emb and text_emb must both be (B, D), got "
                         f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    if ids.shape != image_emb.shape[:1]:
        raise ValueError(f"{what}: ids/labels must be (B,) = ({image_emb.shape[0]},), got {tuple(ids.shape)}")


def _check_groups(image_emb: jax.Array, text_emb: jax.Array, image_ids: jax.Array, text_ids: jax.Array,
                  what: str) -> None:
    """_check_pair for Nv images and Nt captions, each with its own identity labels."""
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"{what}: image_emb (Nv, D) and text_emb (Nt, D) must share D, got "
                         f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    if image_ids.shape != image_emb.shape[:1] or text_ids.shape != text_emb.shape[:1]:
        raise ValueError(f"{what}: ids must be ({image_emb.shape[0]},) and text_ids ({text_emb.shape[0]},), "
                         f"got {tuple(image_ids.shape)} and {tuple(text_ids.shape)}")


def _unit(x: jax.Array) -> jax.Array:
    # Row L2 normalisation without eps, exactly as the official code.
    return x / jnp.linalg.norm(x, axis=1, keepdims=True)


def cmpm_loss(image_emb: jax.Array, text_emb: jax.Array, ids: jax.Array,
              eps: float = 1e-8, cosine_logits: bool = False, cosine_scale: float = 1.0,
              text_ids: jax.Array | None = None) -> jax.Array:
    """CMPM loss L_i2t + L_t2i in the official code form (projection logits, L2-normalised targets).

    logits_i2t = v @ unit(t).T (the raw norm acts as a temperature); ``cosine_logits=True`` uses
    cosine_scale * unit(v) @ unit(t).T instead (a fixed inverse temperature, as CLIP's logit scale).
    Target q = mask / mask.norm(dim=1) with torch broadcasting, i.e. q[i, j] = mask[i, j] / ||mask[j, :]||,
    which for the square identity mask equals each row divided by its own norm.
    ``text_ids`` (Nt,) allows Nv images != Nt captions (several images per caption): ``ids`` then label
    the images and each direction's target rows are L2-normalised, the same q in the square case.
    """
    if text_ids is None:
        _check_pair(image_emb, text_emb, ids, "cmpm_loss")
        text_ids = ids
    else:
        _check_groups(image_emb, text_emb, ids, text_ids, "cmpm_loss")
    v = image_emb.astype(jnp.float32)
    t = text_emb.astype(jnp.float32)
    v_hat, t_hat = _unit(v), _unit(t)
    if cosine_logits:
        logits_i2t = cosine_scale * jnp.matmul(v_hat, t_hat.T, precision=_HIGHEST)
        logits_t2i = logits_i2t.T
    else:
        logits_i2t = jnp.matmul(v, t_hat.T, precision=_HIGHEST)
        logits_t2i = jnp.matmul(t, v_hat.T, precision=_HIGHEST)
    mask = (ids[:, None] == text_ids[None, :]).astype(jnp.float32)   # (Nv, Nt)

    def one_direction(logits: jax.Array, m: jax.Array) -> jax.Array:
        norm = jnp.linalg.norm(m, axis=1, keepdims=True)
        log_q = jnp.log(m / jnp.where(norm > 0, norm, 1.0) + eps)   # a row without positives: q = 0
        log_p = jax.nn.log_softmax(logits, axis=1)
        return jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=1))

    return one_direction(logits_i2t, mask) + one_direction(logits_t2i, mask.T)


def cmpc_loss(image_emb: jax.Array, text_emb: jax.Array, labels: jax.Array,
              weight: jax.Array) -> jax.Array:
    """CMPC loss (fine-tuning): identity CE of each modality projected onto the other.

    As the official ``Downstreams/CMPM-C/loss.py`` ``compute_cmpc_loss``:
    v_proj = (v . t_hat) t_hat, t_proj = (t . v_hat) v_hat, logits = proj @ (W / ||W||_col);
    returns CE(v_proj W_n, y) + CE(t_proj W_n, y), each averaged over the batch. ``weight`` is (D, C).
    """
    _check_pair(image_emb, text_emb, labels, "cmpc_loss")
    if weight.ndim != 2 or weight.shape[0] != image_emb.shape[1]:
        raise ValueError(f"cmpc_loss: weight must be (D={image_emb.shape[1]}, num_classes), "
                         f"got {tuple(weight.shape)}")
    v = image_emb.astype(jnp.float32)
    t = text_emb.astype(jnp.float32)
    w = weight.astype(jnp.float32)
    w_n = w / jnp.linalg.norm(w, axis=0, keepdims=True)
    v_hat, t_hat = _unit(v), _unit(t)
    v_proj = jnp.sum(v * t_hat, axis=1, keepdims=True) * t_hat
    t_proj = jnp.sum(t * v_hat, axis=1, keepdims=True) * v_hat
    labels = labels.astype(jnp.int32)

    def ce(x: jax.Array) -> jax.Array:
        logits = jnp.matmul(x, w_n, precision=_HIGHEST)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    return ce(v_proj) + ce(t_proj)
