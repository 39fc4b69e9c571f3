"""plip_jax.core.adan (the official sail-sg Adan as an optax transform) against an independent PyTorch
implementation (tests/reference/torch_adan.py), why optax.adan is not used, and the config path."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from plip_jax import config_parts
from plip_jax.core import optim
from plip_jax.core.adan import adan
from plip_jax.core.tree import flatten_names
from tests.reference.torch_adan import Adan as TorchAdan

SHAPES = {"scalar": (1,), "vec": (7,), "mat": (5, 3), "conv": (3, 3, 4, 2)}
DECAY = {"scalar": False, "vec": False, "mat": True, "conv": True}


def _grads(rng: np.random.Generator, params: dict) -> dict:
    """Pseudo-random gradients at a log-uniform scale in [1e-5, 10] per parameter and step, plus a
    small pull towards 0 (so the trajectories feed back through the parameters)."""
    return {k: 10.0 ** rng.uniform(-5, 1) * (rng.standard_normal(SHAPES[k]) + 0.5 * params[k])
            for k in SHAPES}   # fixed order (jax returns dicts with sorted keys)


def _run_both(dtype, no_prox: bool, steps: int = 200) -> tuple[dict, dict]:
    """`steps` Adan steps in JAX and in PyTorch from the same start, schedule and gradients."""
    base = optax.warmup_cosine_decay_schedule(0.0, 0.05, 20, steps, end_value=1e-3)
    # On the int32 count an optax schedule computes in float32 (even under x64, and jit may round
    # it differently from eager); on a float count it follows the dtype, so both sides get one lr.
    sched = lambda c: base(jnp.asarray(c, jnp.result_type(float)))  # noqa: E731
    lrs = [float(sched(i)) for i in range(steps)]
    init = {k: np.random.default_rng(1).standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    wd = 0.1

    tx = adan(sched, weight_decay=wd, mask=DECAY, no_prox=no_prox)
    p_jax = {k: jnp.asarray(v) for k, v in init.items()}
    state = tx.init(p_jax)

    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p_t = {k: torch.tensor(v) for k, v in init.items()}
    opt = TorchAdan([{"params": [p_t[k] for k in SHAPES if DECAY[k]], "weight_decay": wd},
                     {"params": [p_t[k] for k in SHAPES if not DECAY[k]], "weight_decay": 0.0}],
                    lr=lrs[0], no_prox=no_prox)
    rng_j, rng_t = np.random.default_rng(0), np.random.default_rng(0)
    for i in range(steps):
        g = _grads(rng_j, {k: np.asarray(v) for k, v in p_jax.items()})
        p_jax, state = step(p_jax, state, {k: jnp.asarray(v, dtype) for k, v in g.items()})
        g = _grads(rng_t, {k: v.numpy() for k, v in p_t.items()})
        for k, v in p_t.items():
            v.grad = torch.tensor(g[k].astype(dtype))
        for group in opt.param_groups:
            group["lr"] = lrs[i]
        opt.step()
    assert int(state.count) == steps
    return {k: np.asarray(v) for k, v in p_jax.items()}, {k: v.numpy() for k, v in p_t.items()}


@pytest.mark.parametrize("no_prox", [False, True])
def test_matches_torch_reference_float64(no_prox):
    """Same arithmetic in float64: only rounding separates them, so 1e-10 relative is a real bound
    (the brief's 1e-6 with four orders to spare); a wrong coefficient moves params by >1e-3."""
    with jax.enable_x64(True):
        pj, pt = _run_both(np.float64, no_prox)
    for k in SHAPES:
        assert pj[k].dtype == np.float64
        np.testing.assert_allclose(pj[k], pt[k], rtol=1e-10, atol=1e-12, err_msg=k)
    decayed_norm = np.abs(pt["mat"]).mean()
    assert 0.05 < decayed_norm < 2.0   # weight decay kept it bounded, not collapsed to 0


def test_matches_torch_reference_float32():
    """The float32 training setting: 200 steps stay within 2e-5 of each param's scale. Both sides
    round p (~6e-8 relative) and the O(lr) step each step in their own op order, so the gap grows
    like a random walk of ~200 such terms, fed back through the gradients' 0.5 * p (measured: at
    most 3.4e-6, on the scalar); 1e-6 holds only in float64, tested above."""
    pj, pt = _run_both(np.float32, no_prox=False)
    for k in SHAPES:
        scale = max(np.abs(pt[k]).max(), 1e-3)
        np.testing.assert_allclose(pj[k], pt[k], rtol=0, atol=2e-5 * scale, err_msg=k)


def _numpy_adan(grads: list, p0: float, lr: float, w: float, eps_root: float = 0.0,
                b=(0.98, 0.92, 0.99), eps: float = 1e-8) -> float:
    """Adan on a scalar with gradient-difference weight `w` (b2: official, 1 - b2: optax.adan)
    and `eps_root` inside the square root (0: official, 1e-8: optax.adan's default)."""
    b1, b2, b3 = b
    m = v = n = 0.0
    prev, p = grads[0], p0
    for t, g in enumerate(grads, start=1):
        d = g - prev
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * d
        n = b3 * n + (1 - b3) * (g + w * d) ** 2
        denom = np.sqrt(n / (1 - b3 ** t) + eps_root) + eps
        p -= lr * (m / (1 - b1 ** t) + w * v / (1 - b2 ** t)) / denom
        prev = g
    return p


def _steps(tx, grads: list, p0: float) -> list[float]:
    p = jnp.array([p0], jnp.float64)
    s, out = tx.init(p), []
    for g in grads:
        u, s = tx.update(jnp.array([g], jnp.float64), s, p)
        p = optax.apply_updates(p, u)
        out.append(float(p[0]))
    return out


def test_why_not_optax_adan():
    """What optax.adan (as the project used it: eps=1e-8, default eps_root=1e-8, wd through
    add_decayed_weights) does differently from the official code, each shown on a scalar:
    (1) eps_root=1e-8 inside the sqrt: any |g| below ~1e-4 gets a damped step (official: eps only
    outside); (2) the gradient difference weighted by 1 - b2 = 0.08 instead of b2 = 0.92, from
    step 2 on; (3) decay p(1 - lr wd), the official no_prox form, not the default p / (1 + lr wd)."""
    lr, p0 = 1e-2, 0.3
    small = [1e-6, 4e-6, -2e-6, 3e-6]
    with jax.enable_x64(True):
        ours = _steps(adan(lr), small, p0)
        theirs = _steps(optax.adan(lr, eps=1e-8, weight_decay=0.0), small, p0)
        for k in range(1, len(small) + 1):
            np.testing.assert_allclose(ours[k - 1], _numpy_adan(small[:k], p0, lr, w=0.92), rtol=1e-12)
            np.testing.assert_allclose(theirs[k - 1], _numpy_adan(small[:k], p0, lr, w=0.08, eps_root=1e-8),
                                       rtol=1e-12)
        # (1) step 1 has no gradient difference: ours moves by ~lr, optax.adan by ~lr * |g| / 1e-4
        assert ours[0] == pytest.approx(p0 - lr * 1e-6 / (1e-6 + 1e-8), rel=1e-12)
        assert abs(theirs[0] - p0) < 0.02 * abs(ours[0] - p0)

        # (2) with eps_root=0 and O(1) gradients step 1 agrees; steps 2+ differ by the b2 weighting
        big = [0.5, 2.0, -1.0, 1.5]
        ours = _steps(adan(lr), big, p0)
        theirs = _steps(optax.adan(lr, eps=1e-8, eps_root=0.0, weight_decay=0.0), big, p0)
        assert ours[0] == pytest.approx(theirs[0], rel=1e-12)
        np.testing.assert_allclose(theirs, [_numpy_adan(big[:k], p0, lr, w=0.08) for k in range(1, 5)],
                                   rtol=1e-12)
        assert min(abs(a - b) for a, b in zip(ours[1:], theirs[1:])) > 1e-4   # >= 4% of a step

        # (3) weight decay forms on step 1
        wd, g = 0.5, [0.1]
        prox = _steps(adan(lr, weight_decay=wd), g, p0)[0]
        no_prox = _steps(adan(lr, weight_decay=wd, no_prox=True), g, p0)[0]
        optax_wd = _steps(optax.adan(lr, eps_root=0.0, weight_decay=wd), g, p0)[0]
        step1 = lr * 0.1 / (0.1 + 1e-8)
        assert prox == pytest.approx((p0 - step1) / (1 + lr * wd), rel=1e-12)
        assert no_prox == pytest.approx(p0 * (1 - lr * wd) - step1, rel=1e-12)
        assert optax_wd == pytest.approx(no_prox, rel=1e-12)
        assert abs(optax_wd - prox) > 1e-6


def test_make_optimizer_adan_config_is_the_official_adan():
    """Through optim.make_optimizer with frozen and lr-multiplier groups and the no-decay regexes:
    equal to the PyTorch reference with the corresponding param groups (frozen: untouched)."""
    cfg = config_parts.optim_config()
    cfg.lr, cfg.scale_lr_by_batch, cfg.weight_decay = 1e-2, False, 0.05
    cfg.warmup_epochs, cfg.decay_epochs = 1.0, (3.0,)
    cfg.frozen = (r"^text/embeddings/.*",)
    cfg.lr_multipliers = ((r"^text/.*", 0.1),)
    shapes = {"image": {"conv": {"kernel": (3, 3, 2, 4)}, "bn": {"scale": (4,)}, "fc": {"bias": (4,)}},
              "text": {"embeddings": {"word": (10, 4)}, "dense": {"kernel": (4, 4), "bias": (4,)}}}
    # (name, lr multiplier, decayed?) per trainable leaf, as the config's regexes place them
    groups = {"image/conv/kernel": (1.0, True), "image/bn/scale": (1.0, False),
              "image/fc/bias": (1.0, False), "text/dense/kernel": (0.1, True),
              "text/dense/bias": (0.1, False)}
    steps, rng = 8, np.random.default_rng(3)
    with jax.enable_x64(True):
        init = jax.tree.map(lambda s: rng.standard_normal(s), shapes, is_leaf=lambda x: isinstance(x, tuple))
        params = jax.tree.map(jnp.asarray, init)
        tx, sched = optim.make_optimizer(cfg, params, steps_per_epoch=2, total_steps=steps, global_batch=8)
        state = tx.init(params)
        flat0 = flatten_names(init)
        p_t = {k: torch.tensor(v) for k, v in flat0.items()}
        opt = TorchAdan([{"params": [p_t[k]], "weight_decay": cfg.weight_decay if dec else 0.0, "mult": mult}
                         for k, (mult, dec) in groups.items()], lr=0.0)
        grad_rng = np.random.default_rng(4)
        for i in range(steps):
            g = {k: grad_rng.standard_normal(v.shape) for k, v in flat0.items()}
            gtree = jax.tree_util.tree_unflatten(jax.tree.structure(params),
                                                 [jnp.asarray(g[k]) for k in flatten_names(params)])
            u, state = tx.update(gtree, state, params)
            params = optax.apply_updates(params, u)
            for k, v in p_t.items():
                v.grad = torch.tensor(g[k])
            for group in opt.param_groups:
                group["lr"] = float(sched(jnp.asarray(i, jnp.int32)) * group["mult"])   # as optim computes it
            opt.step()
        out = flatten_names(params)
    assert float(sched(0)) < float(sched(2)) and float(sched(7)) < float(sched(5))   # warm-up, step
    np.testing.assert_array_equal(np.asarray(out["text/embeddings/word"]), flat0["text/embeddings/word"])
    for k in groups:
        np.testing.assert_allclose(np.asarray(out[k]), p_t[k].numpy(), rtol=1e-10, atol=1e-12, err_msg=k)
        assert not np.allclose(np.asarray(out[k]), flat0[k])
