"""The one train step of every run: (state, batch, rng) -> (state, metrics), pure.

A run supplies only its loss, `loss_fn(params, batch_stats, batch, rng) -> (loss, (metrics,
new_batch_stats))`. A non-finite loss leaves the state untouched and raises the `nonfinite` flag,
so the loop stops with the last good parameters and checkpoint intact. With `trainable`, only
those top-level parameter groups get gradients and optimizer state (a fine-tune keeps its
untrained text tower in the state, so the workdir stays loadable, at no optimizer cost).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from plip_jax.core.state import TrainState

LossFn = Callable[[Any, Any, dict, jax.Array], tuple[jax.Array, tuple[dict, Any]]]


def split_trainable(params: dict, trainable: Sequence[str] | None) -> tuple[dict, dict]:
    """(trained, fixed) top-level groups of a params dict; `None` trains everything."""
    if trainable is None:
        return params, {}
    missing = sorted(set(trainable) - set(params))
    if missing:
        raise ValueError(f"trainable groups {missing} are not in the parameters {sorted(params)}")
    return ({k: v for k, v in params.items() if k in trainable},
            {k: v for k, v in params.items() if k not in trainable})


def make_step(loss_fn: LossFn, tx: optax.GradientTransformation, schedule: Callable[[jax.Array], jax.Array],
              trainable: Sequence[str] | None = None, layout: Any = None) -> Callable:
    """The pure step function (jit it with `jit_step`); `tx` is over the trainable groups only.
    `layout` (core.sharding.FsdpLayout, for fsdp > 1) gathers the sharded parameters whole where
    the passes use them and reduce-scatters their gradients back: FSDP as designed, not left to
    the partitioner's choice."""

    def step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(rng, state.step)
        trained, fixed = split_trainable(state.params, trainable)

        def objective(p):
            whole = p if not fixed else {**p, **fixed}
            return loss_fn(whole if layout is None else layout.gather(whole), state.batch_stats, batch, rng)

        (loss, (metrics, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(trained)
        updates, opt_state = tx.update(grads, state.opt_state, trained)
        new_trained = optax.apply_updates(trained, updates)
        finite = jnp.isfinite(loss)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        params = keep(new_trained, trained)
        new_state = TrainState(step=state.step + 1, params=params if not fixed else {**params, **fixed},
                               batch_stats=keep(batch_stats, state.batch_stats),
                               opt_state=keep(opt_state, state.opt_state))
        metrics = dict(metrics)
        metrics.setdefault("loss", loss)
        metrics["grad_norm"] = optax.global_norm(grads)
        metrics["lr"] = schedule(state.step)
        metrics["nonfinite"] = jnp.logical_not(finite)
        return new_state, metrics

    return step


def jit_step(step: Callable, state_shardings: Any, batch_sharding: Any, mesh) -> Callable:
    """jit with explicit in/out shardings and the state donated."""
    repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(step, in_shardings=(state_shardings, batch_sharding, repl),
                   out_shardings=(state_shardings, repl), donate_argnums=(0,))
