"""Adan as the official PyTorch code (sail-sg/Adan, used by PLIP) computes it, as an optax transform.

We own it because `optax.adan` (0.2.x) differs from the official code in two ways that matter for
the paper setting: it weights the gradient-difference term by `1 - b2` (0.08) where the algorithm
weights it by `b2` (0.92; optax PR #1715), and its weight decay is `p * (1 - lr * wd)` where the
official default is the proximal `p / (1 + lr * wd)`. Betas follow the official convention: each
moment is `x <- b * x + (1 - b) * input`, so (0.98, 0.92, 0.99) are decays. tests/test_adan.py
checks this against an independent PyTorch implementation (tests/reference/torch_adan.py).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

ScalarOrSchedule = Union[float, optax.Schedule]


class AdanState(NamedTuple):
    """count: steps taken; m, v, n: the three moments; prev_grad: the last step's gradient."""
    count: jax.Array
    m: Any
    v: Any
    n: Any
    prev_grad: Any


def _decay_tree(mask: Any, updates: Any, params: Any, weight_decay: float) -> Any:
    """weight_decay or 0.0 per leaf of `updates` (the mask may be a prefix tree or a callable)."""
    if mask is None:
        return jax.tree.map(lambda _: weight_decay, updates)
    mask_tree = mask(params) if callable(mask) else mask
    # The mask is a prefix of updates: under optax.partition, leaves of other groups are
    # MaskedNode subtrees without leaves, which the inner tree.map leaves as they are.
    return jax.tree.map(lambda m, sub: jax.tree.map(lambda _: weight_decay if m else 0.0, sub),
                        mask_tree, updates)


def adan(learning_rate: ScalarOrSchedule, b1: float = 0.98, b2: float = 0.92, b3: float = 0.99,
         eps: float = 1e-8, weight_decay: float = 0.0, mask: Any = None,
         no_prox: bool = False) -> optax.GradientTransformation:
    """Official Adan; `update(grads, state, params)` returns `new_params - params`.

    no_prox=False (official default): p <- (p - lr * d) / (1 + lr * wd); no_prox=True:
    p <- p * (1 - lr * wd) - lr * d, with d = (m_hat + b2 * v_hat) / (sqrt(n_hat) + eps).
    `mask` (pytree of bools or callable on params) selects the leaves that get weight decay.
    """
    for name, b in (("b1", b1), ("b2", b2), ("b3", b3)):
        if not 0.0 <= float(b) < 1.0:
            raise ValueError(f"adan: {name} must be in [0, 1), got {b!r}")
    if float(eps) < 0.0 or float(weight_decay) < 0.0:
        raise ValueError(f"adan: eps and weight_decay must be >= 0, got {eps!r}, {weight_decay!r}")
    wd = float(weight_decay)

    def init_fn(params: Any) -> AdanState:
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return AdanState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros(), zeros())

    def update_fn(updates: Any, state: AdanState, params: Any = None) -> tuple[Any, AdanState]:
        if params is None:
            raise ValueError("adan: update needs params (the weight decay acts on them)")
        count = state.count
        lr = jnp.asarray(learning_rate(count) if callable(learning_rate) else learning_rate)
        t = (count + 1).astype(jnp.result_type(float))   # float64 under x64, else float32
        bc1, bc2, bc3 = 1.0 - b1 ** t, 1.0 - b2 ** t, 1.0 - b3 ** t
        first = count == 0
        decay = _decay_tree(mask, updates, params, wd)

        def leaf(g, m, v, n, prev, p, leaf_wd):
            dt = p.dtype
            g = g.astype(dt)
            diff = jnp.where(first, jnp.zeros_like(g), g - prev)  # official: pre_grad = grad at step 1
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * diff
            look = g + b2 * diff
            n = b3 * n + (1.0 - b3) * look * look
            lr_ = lr.astype(dt)
            denom = jnp.sqrt(n) / jnp.sqrt(bc3).astype(dt) + eps
            step = ((lr_ / bc1.astype(dt)) * m + (lr_ * b2 / bc2.astype(dt)) * v) / denom
            if leaf_wd == 0.0:
                u = -step
            else:
                a = lr_ * leaf_wd
                # new_p - p, written so that p + u rounds to the official new_p.
                u = -(a * p) - step if no_prox else -(step + a * p) / (1.0 + a)
            return u.astype(dt), m, v, n, g

        flat_g, treedef = jax.tree.flatten(updates)
        rest = [treedef.flatten_up_to(x) for x in (state.m, state.v, state.n, state.prev_grad,
                                                    params, decay)]
        out = [leaf(*args) for args in zip(flat_g, *rest)]
        unflat = lambda i: treedef.unflatten([o[i] for o in out])  # noqa: E731
        new_state = AdanState(optax.safe_int32_increment(count), unflat(1), unflat(2), unflat(3),
                              unflat(4))
        return unflat(0), new_state

    return optax.GradientTransformation(init_fn, update_fn)
