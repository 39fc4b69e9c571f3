"""The one builder of a run: config -> mesh, optimizer and schedule, abstract state and its
shardings, the jitted step, total steps.

Pre-training, the three fine-tunes, the ahead-of-time compiler (`python -m plip_jax.aot`) and the
bench scripts all build here, so the program compiled for a TPU slice or timed in a benchmark is
the program a real run executes. Nothing here reads data or touches device memory: every tree is
shapes (`jax.ShapeDtypeStruct`) until a caller materialises it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from plip_jax.core import optim
from plip_jax.core import sharding as shd
from plip_jax.core import state as state_lib
from plip_jax.core.step import LossFn, jit_step, make_step, split_trainable
from plip_jax.data import sources
from plip_jax.losses.total import active_tasks
from plip_jax.models import text_tower
from plip_jax.models.bert import BertConfig
from plip_jax.models.plip import build_model
from plip_jax.trainers.pretrain_step import pretrain_loss


@dataclasses.dataclass
class Run:
    """Everything a training loop (or a compiler) needs besides data and concrete weights."""
    mesh: jax.sharding.Mesh
    batch_sharding: jax.sharding.NamedSharding
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    abstract: state_lib.TrainState          # shapes only
    shardings: state_lib.TrainState         # NamedShardings of the state
    step: Callable                          # jitted (state, batch, rng) -> (state, metrics); state donated
    steps_per_epoch: int
    total_steps: int
    global_batch: int
    trainable: tuple[str, ...] | None = None

    @property
    def target(self) -> state_lib.TrainState:
        """The abstract state carrying its shardings (what Orbax restores into, what AOT lowers)."""
        return state_lib.with_shardings(self.abstract, self.shardings)

    def rng_spec(self) -> jax.ShapeDtypeStruct:
        """The step's key argument (replicated), for ahead-of-time lowering."""
        key = jax.eval_shape(lambda: jax.random.key(0))
        return jax.ShapeDtypeStruct(key.shape, key.dtype,
                                    sharding=jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec()))


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """`train.steps` when set, else `train.epochs` x steps per epoch (rounded up)."""
    return int(config.train.steps) or int(math.ceil(float(config.train.epochs) * max(int(steps_per_epoch), 1)))


def mesh_of(config: ml_collections.ConfigDict, devices: Sequence[Any] | None = None) -> jax.sharding.Mesh:
    """The ('data', 'fsdp') mesh `config.mesh` asks for over `devices` (default: all)."""
    return shd.make_mesh(config.mesh.data, config.mesh.fsdp, devices)


def shapes(tree: Any) -> Any:
    """ShapeDtypeStructs of a tree of arrays (or of ShapeDtypeStructs)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), getattr(x, "dtype", None) or np.asarray(x).dtype),
                        tree)


def make_run(config: ml_collections.ConfigDict, *, loss_fn: LossFn, params: Any, batch_stats: Any,
             steps_per_epoch: int, trainable: Sequence[str] | None = None,
             devices: Sequence[Any] | None = None, process_count: int | None = None,
             mesh: jax.sharding.Mesh | None = None) -> Run:
    """The run of any loss over any parameter tree (arrays or shapes): `config.mesh` over `devices`
    (default: all; or the `mesh` already made, see `mesh_of`), `config.optim` over the `trainable`
    groups, `config.data.batch_size` global."""
    mesh = mesh if mesh is not None else mesh_of(config, devices)
    procs = jax.process_count() if process_count is None else int(process_count)
    batch = int(config.data.batch_size)
    shd.check_batch_size(batch, mesh, procs)
    steps_per_epoch = max(int(steps_per_epoch), 1)
    steps = total_steps(config, steps_per_epoch)
    params, batch_stats = shapes(params), shapes(batch_stats)
    trained, _ = split_trainable(params, trainable)
    tx, schedule = optim.make_optimizer(config.optim, trained, steps_per_epoch, steps, batch)
    abstract = state_lib.TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                                    batch_stats=batch_stats, opt_state=jax.eval_shape(tx.init, trained))
    shardings = state_lib.state_shardings(abstract, mesh, int(config.mesh.fsdp_min_size))
    batch_sharding = shd.batch_sharding(mesh)
    layout = shd.FsdpLayout(mesh, shardings.params) if mesh.shape["fsdp"] > 1 else None
    step = jit_step(make_step(loss_fn, tx, schedule, trainable, layout), shardings, batch_sharding, mesh)
    return Run(mesh=mesh, batch_sharding=batch_sharding, tx=tx, schedule=schedule, abstract=abstract,
               shardings=shardings, step=step, steps_per_epoch=steps_per_epoch, total_steps=steps,
               global_batch=batch, trainable=None if trainable is None else tuple(trainable))


@dataclasses.dataclass
class Pretraining:
    """The pre-training model and its run."""
    run: Run
    model: Any                               # models.plip.PLIP
    text_cfg: BertConfig
    tasks: tuple[str, ...]
    example: dict                            # a small host batch with the training spec (init, shapes)

    def fresh_state(self, seed: int) -> state_lib.TrainState:
        """A freshly initialised state laid out in the run's shardings (random text tower: the
        pretrained weights are put in by the trainer)."""
        return state_lib.materialize(self.model, self.run.tx, self.example, seed, self.run.shardings)

    def batch_spec(self, global_batch: int | None = None) -> dict:
        """The global training batch as sharded ShapeDtypeStructs (ahead-of-time lowering)."""
        b = int(global_batch or self.run.global_batch)
        return {k: jax.ShapeDtypeStruct((b,) + v.shape[1:], v.dtype, sharding=self.run.batch_sharding)
                for k, v in self.example.items()}


def pretrain_model(config: ml_collections.ConfigDict) -> tuple[Any, BertConfig, tuple[str, ...]]:
    """(PLIP module, text architecture, active tasks) of a pre-training config. The text shape comes
    from the weights folder's config.json when it is there, else from the named shape (bert-base), so
    this needs no weights."""
    text_cfg = text_tower.architecture_from_config(config.model)
    tasks = tuple(active_tasks(dict(config.losses.weights)))
    return build_model(config.model, text_cfg, tasks), text_cfg, tasks


def pretraining(config: ml_collections.ConfigDict, steps_per_epoch: int,
                devices: Sequence[Any] | None = None, process_count: int | None = None) -> Pretraining:
    """The pre-training run of `config` (steps per epoch from the training stream, or from the
    dataset's size for a run that is only compiled)."""
    model, text_cfg, tasks = pretrain_model(config)
    example = sources.example_batch(config, text_cfg)
    abstract = state_lib.abstract_state(model, optax.identity(), example, state_lib.init_key(config.seed))
    run = make_run(config, loss_fn=pretrain_loss(model, config.losses), params=abstract.params,
                   batch_stats=abstract.batch_stats, steps_per_epoch=steps_per_epoch, devices=devices,
                   process_count=process_count)
    return Pretraining(run=run, model=model, text_cfg=text_cfg, tasks=tasks, example=example)


__all__ = ["Pretraining", "Run", "make_run", "mesh_of", "pretrain_model", "pretraining", "shapes", "total_steps"]
