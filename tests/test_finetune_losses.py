"""Downstream heads and losses against NumPy references: CMPC, batch-hard triplet, label-smoothed
CE, weighted BCE; the heads' shapes and BN behaviour; the P x K sampler's batches."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plip_jax.data import downstream as fd
from plip_jax.losses.cmpm import cmpc_loss
from plip_jax.losses.reid import (
    attribute_pos_weights,
    batch_hard_mining,
    label_smoothing_ce,
    pairwise_distances,
    triplet_loss,
    weighted_bce,
)
from plip_jax.models.reid_heads import AttributeClassifier, BNNeck, CMPCClassifier


def _log_softmax(x):
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def np_cmpc(v, t, y, w):
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    vh = v / np.linalg.norm(v, axis=1, keepdims=True)
    th = t / np.linalg.norm(t, axis=1, keepdims=True)
    vp = (v * th).sum(1, keepdims=True) * th
    tp = (t * vh).sum(1, keepdims=True) * vh
    ce = lambda x: -_log_softmax(x @ wn)[np.arange(len(y)), y].mean()  # noqa: E731
    return ce(vp) + ce(tp)


def np_triplet(x, ids, margin):
    n = len(x)
    ap, an = np.zeros(n), np.zeros(n)
    for i in range(n):
        d = np.sqrt(np.maximum(((x[i] - x) ** 2).sum(1), 1e-12))
        ap[i] = d[ids == ids[i]].max()
        an[i] = d[ids != ids[i]].min()
    return np.maximum(ap - an + margin, 0).mean(), ap, an


def test_cmpc_matches_numpy():
    rng = np.random.default_rng(0)
    v, t = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
    y = np.array([0, 1, 2, 0, 4, 1])
    w = rng.normal(size=(8, 5))
    got = float(cmpc_loss(jnp.asarray(v, jnp.float32), jnp.asarray(t, jnp.float32), jnp.asarray(y),
                          jnp.asarray(w, jnp.float32)))
    np.testing.assert_allclose(got, np_cmpc(v, t, y, w), rtol=1e-5)


def test_cmpc_classifier_is_xavier_and_usable():
    head = CMPCClassifier(num_classes=7, dim=16)
    w = head.apply(head.init(jax.random.key(0)))
    assert w.shape == (16, 7)
    bound = np.sqrt(6 / (16 + 7))
    assert float(jnp.abs(w).max()) <= bound and float(jnp.abs(w).max()) > bound / 2


def test_triplet_batch_hard_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 5)).astype(np.float32)
    ids = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    ref, ap_ref, an_ref = np_triplet(x.astype(np.float64), ids, 0.3)
    ap, an = batch_hard_mining(pairwise_distances(jnp.asarray(x)), jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(ap), ap_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(an), an_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(triplet_loss(jnp.asarray(x), jnp.asarray(ids), 0.3)), ref, rtol=1e-4)
    soft = np.log1p(np.exp(ap_ref - an_ref)).mean()
    np.testing.assert_allclose(float(triplet_loss(jnp.asarray(x), jnp.asarray(ids), None)), soft, rtol=1e-4)


def test_triplet_zero_when_separated_and_grad_finite():
    x = jnp.asarray([[0.0, 0.0], [0.0, 0.1], [10.0, 0.0], [10.0, 0.1]])
    ids = jnp.asarray([0, 0, 1, 1])
    assert float(triplet_loss(x, ids, 0.3)) == 0.0
    g = jax.grad(lambda z: triplet_loss(z, ids, 0.3))(x + 0.0)
    assert np.isfinite(np.asarray(g)).all()
    with pytest.raises(ValueError, match="features must be"):
        triplet_loss(x, ids[:3])


def test_label_smoothing_ce_matches_numpy():
    rng = np.random.default_rng(2)
    logits, y = rng.normal(size=(5, 7)), rng.integers(0, 7, 5)
    target = np.full((5, 7), 0.1 / 7)
    target[np.arange(5), y] += 0.9
    ref = -(target * _log_softmax(logits)).sum(1).mean()
    np.testing.assert_allclose(float(label_smoothing_ce(jnp.asarray(logits, jnp.float32), jnp.asarray(y), 0.1)),
                               ref, rtol=1e-5)
    plain = -_log_softmax(logits)[np.arange(5), y].mean()
    np.testing.assert_allclose(float(label_smoothing_ce(jnp.asarray(logits, jnp.float32), jnp.asarray(y), 0.0)),
                               plain, rtol=1e-5)


def test_weighted_bce_matches_numpy_and_masks_unknown():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(6, 4)) * 3
    y = rng.integers(0, 2, (6, 4))
    y[0, 1] = -1
    ratio = attribute_pos_weights(y)
    known = y >= 0
    np.testing.assert_allclose(ratio, [(y[:, j][known[:, j]] == 1).mean() for j in range(4)], rtol=1e-6)
    yc = np.clip(y, 0, 1)
    p = 1 / (1 + np.exp(-z))
    bce = -(yc * np.log(p) + (1 - yc) * np.log(1 - p))
    w = np.where(yc == 1, np.exp(1 - ratio), np.exp(ratio))
    ref = (bce * w * known).sum() / 6
    got = float(weighted_bce(jnp.asarray(z, jnp.float32), jnp.asarray(y), jnp.asarray(ratio)))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    np.testing.assert_allclose(float(weighted_bce(jnp.asarray(z, jnp.float32), jnp.asarray(y))),
                               (bce * known).sum() / 6, rtol=1e-5)


def test_bnneck_and_attribute_head():
    neck = BNNeck(num_classes=5)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(8, 6)) * 3 + 1, jnp.float32)
    v = neck.init(jax.random.key(0), x, train=False)
    assert "bias" not in v["params"]["bottleneck"]
    (bn, logits), mut = neck.apply(v, x, train=True, mutable=["batch_stats"])
    assert bn.shape == (8, 6) and logits.shape == (8, 5)
    np.testing.assert_allclose(np.asarray(bn).mean(0), 0, atol=1e-5)   # train mode: batch statistics
    np.testing.assert_allclose(np.asarray(mut["batch_stats"]["bottleneck"]["mean"]),
                               0.1 * np.asarray(x).mean(0), rtol=1e-5)
    head = AttributeClassifier(num_attributes=3)
    hv = head.init(jax.random.key(1), x, train=False)
    assert head.apply(hv, x, train=False).shape == (8, 3)


def test_pk_sampler_batches():
    ids = np.repeat(np.arange(10), [6, 5, 4, 4, 3, 8, 4, 4, 2, 4])  # id 8 has fewer than K images
    batches = fd.pk_batches(ids, p=4, k=4, seed=0, epoch=0)
    assert len(batches) >= 2
    seen = []
    for b in batches:
        assert b.shape == (16,)
        groups = ids[b].reshape(4, 4)
        assert (groups == groups[:, :1]).all()          # K images of one identity per group
        assert len(np.unique(groups[:, 0])) == 4        # P distinct identities
        seen += [i for i in b if ids[i] != 8]
    assert len(seen) == len(set(seen))                  # no image twice in an epoch (ids with >= K images)
    again = fd.pk_batches(ids, 4, 4, seed=0, epoch=0)
    assert all((a == b).all() for a, b in zip(batches, again))
    assert any((a != b).any() for a, b in zip(batches, fd.pk_batches(ids, 4, 4, seed=0, epoch=1)))
    with pytest.raises(ValueError, match="at least P=20"):
        fd.pk_batches(ids, 20, 4, 0, 0)


def test_query_gallery_split_and_few_shot():
    ids = np.array([1, 1, 1, 2, 2, 3])
    cams = np.array([0, 1, 0, 2, 3, 1])
    q, g = fd.split_query_gallery(ids, cams)
    assert q.tolist() == [True, False, True, True, False, False]
    assert (q ^ g).all()
    sub = fd.few_shot_ids(np.arange(100) % 20, 0.25, seed=0)
    assert len(sub) == 5 and set(sub) <= set(range(20))
    with pytest.raises(ValueError, match="few-shot fraction"):
        fd.few_shot_ids(ids, 0.0, 0)
