"""Tests for the losses: NumPy references of each formula, the official PyTorch CMPM/CMPC, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from plip_jax.losses import attributes, cmpm, colorization, total

RNG = np.random.default_rng(0)
IDS_REPEATED = np.array([0, 0, 1, 2, 2, 2, 3], np.int32)


def _emb(b=7, d=5, scale=3.0):
    return [(scale * RNG.standard_normal((b, d))).astype(np.float32) for _ in range(2)]


# ---------------------------------------------------------------------------- references
def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def numpy_cmpm(v, t, ids, eps=1e-8, cosine=False):
    """The official code form, written out with explicit loops for the target distribution."""
    v, t = v.astype(np.float64), t.astype(np.float64)
    vh = v / np.linalg.norm(v, axis=1, keepdims=True)
    th = t / np.linalg.norm(t, axis=1, keepdims=True)
    li2t, lt2i = (vh @ th.T, th @ vh.T) if cosine else (v @ th.T, t @ vh.T)
    b = len(ids)
    mask = (ids[:, None] == ids[None, :]).astype(np.float64)
    q = np.zeros((b, b))
    for i in range(b):
        for j in range(b):  # torch broadcasting (B,B)/(B,): the divisor is indexed by the column
            q[i, j] = mask[i, j] / np.sqrt(mask[j].sum())
    loss = 0.0
    for logits in (li2t, lt2i):
        lp = _log_softmax(logits)
        loss += np.mean(np.sum(np.exp(lp) * (lp - np.log(q + eps)), axis=1))
    return loss


def torch_cmpm(v, t, ids, eps=1e-8):
    """Verbatim logic of Zplusdragon/PLIP Downstreams/CMPM-C/loss.py compute_cmpm_loss."""
    image_embeddings, text_embeddings, labels = torch.tensor(v), torch.tensor(t), torch.tensor(ids)
    batch_size = image_embeddings.shape[0]
    labels_reshape = torch.reshape(labels, (batch_size, 1))
    labels_mask = (labels_reshape - labels_reshape.t()) == 0
    image_norm = image_embeddings / image_embeddings.norm(dim=1, keepdim=True)
    text_norm = text_embeddings / text_embeddings.norm(dim=1, keepdim=True)
    image_proj_text = torch.matmul(image_embeddings, text_norm.t())
    text_proj_image = torch.matmul(text_embeddings, image_norm.t())
    labels_mask_norm = labels_mask.float() / labels_mask.float().norm(dim=1)
    i2t_pred = F.softmax(image_proj_text, dim=1)
    i2t_loss = i2t_pred * (F.log_softmax(image_proj_text, dim=1) - torch.log(labels_mask_norm + eps))
    t2i_pred = F.softmax(text_proj_image, dim=1)
    t2i_loss = t2i_pred * (F.log_softmax(text_proj_image, dim=1) - torch.log(labels_mask_norm + eps))
    return (torch.mean(torch.sum(i2t_loss, dim=1)) + torch.mean(torch.sum(t2i_loss, dim=1))).item()


def torch_cmpc(v, t, labels, w):
    """Verbatim logic of Zplusdragon/PLIP Downstreams/CMPM-C/loss.py compute_cmpc_loss."""
    image_embeddings, text_embeddings, W = torch.tensor(v), torch.tensor(t), torch.tensor(w)
    labels = torch.tensor(labels).long()
    W_norm = W / W.norm(dim=0)
    image_norm = image_embeddings / image_embeddings.norm(dim=1, keepdim=True)
    text_norm = text_embeddings / text_embeddings.norm(dim=1, keepdim=True)
    image_proj_text = torch.sum(image_embeddings * text_norm, dim=1, keepdim=True) * text_norm
    text_proj_image = torch.sum(text_embeddings * image_norm, dim=1, keepdim=True) * image_norm
    criterion = torch.nn.CrossEntropyLoss(reduction="mean")
    return (criterion(image_proj_text @ W_norm, labels) + criterion(text_proj_image @ W_norm, labels)).item()


def numpy_cmpc(v, t, labels, w):
    v, t, w = v.astype(np.float64), t.astype(np.float64), w.astype(np.float64)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    vh = v / np.linalg.norm(v, axis=1, keepdims=True)
    th = t / np.linalg.norm(t, axis=1, keepdims=True)
    loss = 0.0
    for proj in ((v * th).sum(1, keepdims=True) * th, (t * vh).sum(1, keepdims=True) * vh):
        lp = _log_softmax(proj @ wn)
        loss += -np.mean(lp[np.arange(len(labels)), labels])
    return loss


# ---------------------------------------------------------------------------- CMPM / CMPC
@pytest.mark.parametrize("ids", [IDS_REPEATED, np.arange(7, dtype=np.int32), np.zeros(7, np.int32)])
def test_cmpm_matches_numpy_and_official_torch(ids):
    v, t = _emb()
    got = float(jax.jit(cmpm.cmpm_loss)(v, t, ids))
    np.testing.assert_allclose(got, numpy_cmpm(v, t, ids), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, torch_cmpm(v, t, ids), rtol=1e-5, atol=1e-5)


def numpy_cmpm_groups(v, t, image_ids, text_ids, eps=1e-8, cosine_scale=None):
    """CMPM with Nv images and Nt captions: each direction's target rows are the identity-match rows
    divided by their L2 norm (the official q when the mask is the square identity mask)."""
    v, t = v.astype(np.float64), t.astype(np.float64)
    vh = v / np.linalg.norm(v, axis=1, keepdims=True)
    th = t / np.linalg.norm(t, axis=1, keepdims=True)
    if cosine_scale is None:
        li2t, lt2i = v @ th.T, t @ vh.T
    else:
        li2t = cosine_scale * vh @ th.T
        lt2i = li2t.T
    mask = (image_ids[:, None] == text_ids[None, :]).astype(np.float64)
    loss = 0.0
    for logits, m in ((li2t, mask), (lt2i, mask.T)):
        q = np.zeros_like(m)
        for i in range(m.shape[0]):
            q[i] = m[i] / np.sqrt(m[i].sum())
        lp = _log_softmax(logits)
        loss += np.mean(np.sum(np.exp(lp) * (lp - np.log(q + eps)), axis=1))
    return loss


@pytest.mark.parametrize("cosine_scale", [None, 20.0])
def test_cmpm_several_images_per_caption(cosine_scale):
    """text_ids: 3 images per caption (the data's images_per_caption), captions with repeated ids."""
    text_ids = np.array([4, 7, 4, 9], np.int32)
    image_ids = np.repeat(text_ids, 3)
    v = (3.0 * RNG.standard_normal((12, 5))).astype(np.float32)
    t = (3.0 * RNG.standard_normal((4, 5))).astype(np.float32)
    kw = {} if cosine_scale is None else dict(cosine_logits=True, cosine_scale=cosine_scale)
    got = float(jax.jit(lambda a, b: cmpm.cmpm_loss(a, b, image_ids, text_ids=text_ids, **kw))(v, t))
    np.testing.assert_allclose(got, numpy_cmpm_groups(v, t, image_ids, text_ids, cosine_scale=cosine_scale),
                               rtol=1e-5, atol=1e-5)
    # One image per caption through text_ids is the square official form.
    sq = float(cmpm.cmpm_loss(v[:4], t, text_ids, text_ids=text_ids, **kw))
    np.testing.assert_allclose(sq, float(cmpm.cmpm_loss(v[:4], t, text_ids, **kw)), rtol=1e-6)
    with pytest.raises(ValueError, match="text_ids"):
        cmpm.cmpm_loss(v, t, image_ids, text_ids=text_ids[:3])


def test_cmpm_target_is_l2_normalised_over_identity_groups():
    # For the symmetric identity mask, q equals 1/sqrt(n_i) on positives (not the paper's 1/n_i):
    # with logits making p equal to the L1 target, the loss is sum p*log(p/q) = 0.5*log(1/n) per row.
    ids = IDS_REPEATED
    counts = np.array([np.sum(ids == i) for i in ids], np.float64)
    expected_row = 0.5 * np.log(1.0 / counts)
    d = 8
    v = np.zeros((7, d), np.float32)
    v[np.arange(7), ids] = 1.0  # one-hot per identity => p is uniform over same-id items at large scale
    scale = 60.0
    got = float(cmpm.cmpm_loss(scale * v, scale * v, ids))
    np.testing.assert_allclose(got, 2 * expected_row.mean(), atol=1e-4)


def test_cmpm_cosine_logits_option():
    v, t = _emb()
    got = float(cmpm.cmpm_loss(v, t, IDS_REPEATED, cosine_logits=True))
    np.testing.assert_allclose(got, numpy_cmpm(v, t, IDS_REPEATED, cosine=True), rtol=1e-5, atol=1e-6)
    # Cosine logits ignore the embedding norms; projection logits do not.
    assert np.isclose(float(cmpm.cmpm_loss(5 * v, t, IDS_REPEATED, cosine_logits=True)), got)
    assert not np.isclose(float(cmpm.cmpm_loss(5 * v, t, IDS_REPEATED)), float(cmpm.cmpm_loss(v, t, IDS_REPEATED)))


def test_cmpm_bf16_inputs_float32_math_and_finite_grads():
    v, t = _emb()
    vb, tb = jnp.asarray(v, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
    loss, grads = jax.jit(jax.value_and_grad(cmpm.cmpm_loss, argnums=(0, 1)))(vb, tb, IDS_REPEATED)
    assert loss.dtype == jnp.float32
    ref = numpy_cmpm(np.asarray(vb, np.float32), np.asarray(tb, np.float32), IDS_REPEATED)
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    assert all(np.isfinite(np.asarray(g, np.float32)).all() for g in grads)


def test_cmpm_grads_match_torch():
    v, t = _emb()
    gv, gt = jax.grad(cmpm.cmpm_loss, argnums=(0, 1))(v, t, IDS_REPEATED)
    tv, tt = torch.tensor(v, requires_grad=True), torch.tensor(t, requires_grad=True)
    labels = torch.tensor(IDS_REPEATED)
    mask = (labels[:, None] == labels[None, :]).float()
    q = mask / mask.norm(dim=1)
    loss = 0
    for logits in (tv @ (tt / tt.norm(dim=1, keepdim=True)).t(), tt @ (tv / tv.norm(dim=1, keepdim=True)).t()):
        loss = loss + torch.mean(torch.sum(F.softmax(logits, 1) * (F.log_softmax(logits, 1) - torch.log(q + 1e-8)), 1))
    loss.backward()
    np.testing.assert_allclose(np.asarray(gv), tv.grad.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(gt), tt.grad.numpy(), atol=1e-5)


def test_cmpm_under_auto_mesh_matches_unsharded():
    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,))
    b = 4 * len(devices)
    v, t = _emb(b=b)
    ids = RNG.integers(0, 3, size=b).astype(np.int32)
    shard = NamedSharding(mesh, P("data"))
    args = [jax.device_put(x, shard) for x in (v, t, ids)]
    with jax.set_mesh(mesh):
        got = jax.jit(cmpm.cmpm_loss)(*args)
    np.testing.assert_allclose(float(got), numpy_cmpm(v, t, ids), rtol=1e-5)


def test_cmpm_rejects_bad_shapes():
    v, t = _emb()
    with pytest.raises(ValueError, match="image_emb and text_emb"):
        cmpm.cmpm_loss(v, t[:, :3], IDS_REPEATED)
    with pytest.raises(ValueError, match="ids"):
        cmpm.cmpm_loss(v, t, IDS_REPEATED[:3])


def test_cmpc_matches_numpy_and_official_torch():
    v, t = _emb()
    labels = IDS_REPEATED
    w = RNG.standard_normal((5, 4)).astype(np.float32)
    loss, grads = jax.value_and_grad(cmpm.cmpc_loss, argnums=(0, 1, 3))(v, t, labels, w)
    np.testing.assert_allclose(float(loss), numpy_cmpc(v, t, labels, w), rtol=1e-5)
    np.testing.assert_allclose(float(loss), torch_cmpc(v, t, labels, w), rtol=1e-5)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    with pytest.raises(ValueError, match="weight must be"):
        cmpm.cmpc_loss(v, t, labels, w.T)


# ---------------------------------------------------------------------------- colorization
def test_colorization_reductions_match_numpy():
    pred, target = (RNG.standard_normal((3, 8, 4, 3)).astype(np.float32) for _ in range(2))
    d = (pred - target).astype(np.float64).reshape(3, -1)
    want = {"sum_sq": np.mean(np.sum(d ** 2, 1)), "l2": np.mean(np.linalg.norm(d, axis=1)),
            "mean": np.mean(d ** 2)}
    for reduction, value in want.items():
        got = jax.jit(colorization.colorization_loss, static_argnames="reduction")(pred, target, reduction=reduction)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(float(got), value, rtol=1e-5)


def test_colorization_l2_gradient_is_finite_at_zero_distance():
    x = RNG.standard_normal((2, 4, 2, 3)).astype(np.float32)
    target = x.copy()
    target[1] += 1.0  # sample 0 is exact, sample 1 is not
    g = jax.grad(colorization.colorization_loss)(jnp.asarray(x), target, "l2")
    g = np.asarray(g)
    assert np.isfinite(g).all() and np.all(g[0] == 0) and np.any(g[1] != 0)


def test_colorization_rejects_bad_reduction_and_shapes():
    x = np.zeros((2, 4, 2, 3), np.float32)
    with pytest.raises(ValueError, match="sum_sq"):
        colorization.colorization_loss(x, x, "l1")
    with pytest.raises(ValueError, match="same"):
        colorization.colorization_loss(x, x[:, :2])


# ---------------------------------------------------------------------------- attributes
def _attr_inputs(b=3, m=4, v=11):
    logits = (3 * RNG.standard_normal((b, m, v))).astype(np.float32)
    labels = RNG.integers(0, v, size=(b, m)).astype(np.int32)
    weights = (RNG.random((b, m)) > 0.4).astype(np.float32)
    weights[0, 0] = 1.0
    return logits, labels, weights


def test_attribute_loss_and_accuracy_match_numpy():
    logits, labels, weights = _attr_inputs()
    lp = _log_softmax(logits.reshape(-1, logits.shape[-1]).astype(np.float64))
    ce = -lp[np.arange(lp.shape[0]), labels.reshape(-1)]
    w = weights.reshape(-1)
    want = ce[w > 0].mean()
    np.testing.assert_allclose(float(jax.jit(attributes.attribute_loss)(logits, labels, weights)), want, rtol=1e-5)
    correct = (logits.argmax(-1) == labels).reshape(-1)
    np.testing.assert_allclose(float(attributes.attribute_accuracy(logits, labels, weights)), correct[w > 0].mean())


def test_attribute_loss_is_zero_without_masked_tokens():
    logits, labels, _ = _attr_inputs()
    zeros = np.zeros(labels.shape, np.float32)
    loss, g = jax.value_and_grad(attributes.attribute_loss)(jnp.asarray(logits, jnp.bfloat16), labels, zeros)
    assert loss.dtype == jnp.float32 and float(loss) == 0.0
    assert np.all(np.asarray(g, np.float32) == 0)
    assert float(attributes.attribute_accuracy(logits, labels, zeros)) == 0.0


def test_attribute_loss_gradients_only_reach_masked_positions():
    logits, labels, weights = _attr_inputs()
    g = np.asarray(jax.grad(attributes.attribute_loss)(logits, labels, weights))
    assert np.isfinite(g).all()
    assert np.all(g[weights == 0] == 0) and np.all(np.abs(g[weights > 0]).sum(-1) > 0)
    with pytest.raises(ValueError, match="logits"):
        attributes.attribute_loss(logits, labels[:, :2], weights)


# ---------------------------------------------------------------------------- total
def test_total_loss_default_weights():
    parts = {"ivlc": jnp.float32(2.0), "tic": jnp.float32(100.0), "iap": jnp.float32(5.0)}
    loss, metrics = jax.jit(total.total_loss)(parts)
    np.testing.assert_allclose(float(loss), 2.0 + 0.02 * 100.0 + 0.1 * 5.0, rtol=1e-6)
    assert set(metrics) == {"loss", "loss_ivlc", "loss_tic", "loss_iap"}
    assert float(metrics["loss_tic"]) == 100.0 and float(metrics["loss"]) == float(loss)


def test_total_loss_skips_switched_off_tasks():
    parts = {"ivlc": jnp.float32(2.0), "tic": jnp.float32(np.nan)}  # a skipped part never poisons the sum
    loss, metrics = total.total_loss(parts, {"ivlc": 1.0, "tic": 0.0})
    assert float(loss) == 2.0 and set(metrics) == {"loss", "loss_ivlc", "loss_tic"}
    loss, _ = total.total_loss({"iap": jnp.float32(3.0)}, {"iap": 0.5})  # absent tasks are skipped too
    assert float(loss) == 1.5
    assert total.active_tasks({"ivlc": 1.0, "tic": 0.0, "iap": 0.1}) == ("ivlc", "iap")


def test_total_loss_rejects_unknown_or_missing_tasks():
    with pytest.raises(ValueError, match="unknown task name"):
        total.total_loss({"vlm": jnp.float32(1.0)})
    with pytest.raises(ValueError, match="unknown task name"):
        total.total_loss({"ivlc": jnp.float32(1.0)}, {"ivlc": 1.0, "sic": 0.1})
    with pytest.raises(ValueError, match="no loss part"):
        total.total_loss({"ivlc": jnp.float32(1.0)})
