"""The one fine-tune driver on the pre-training engine, and what the three tasks share.

A task (text_reid.py, image_reid.py, attributes.py) builds a `Task`: its heads, loss, resumable
training data, evaluator and result fields. `finetune` does the rest for every task: the mesh from
`config.mesh`, the optimizer over the trainable groups, the (fsdp-)sharded state, resume from the
workdir (`core.loop.resume_or_start`), the zero-shot evaluation of a fresh start (kept in
WORKDIR/zero_shot.json so a resumed run still reports it), the engine's loop (`core.loop.run`:
checkpoints every `config.train.ckpt_every`, SIGTERM, the non-finite guard), the final evaluation,
eval.json and the printed table. Every checkpoint carries the encoders' architecture, so
`plip_jax.from_pretrained(WORKDIR)` loads the fine-tuned encoders at any step.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from plip_jax.convert import text_weights
from plip_jax.core import checkpoint as ckpt_lib
from plip_jax.core import loop, optim
from plip_jax.core import sharding as shd
from plip_jax.core import state as state_lib
from plip_jax.core.errors import ConfigError
from plip_jax.core.metrics import MetricWriter, print_table
from plip_jax.core.step import LossFn, split_trainable
from plip_jax.data import downstream as fd
from plip_jax.data import sources, transforms
from plip_jax.models import text_tower
from plip_jax.models.bert import Bert, BertConfig
from plip_jax.models.build import image_encoder, text_encoder
from plip_jax.models.plip import image_pool
from plip_jax.models.resnet import ModifiedResNet
from plip_jax.trainers import build

ZERO_SHOT_FILE = "zero_shot.json"


# ---------------------------------------------------------------------------------------------
# Backbone: the PLIP encoders from a checkpoint or from scratch
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Backbone:
    """The two encoder modules, their host variables and where they came from."""
    image: ModifiedResNet
    text: Bert | None               # None for image-only tasks (the tower's weights stay in `variables`)
    recipe: str
    arch: dict                      # image / text (BertConfig dict) / recipe / max_length
    variables: dict                 # {'params': {'image', 'text'}, 'batch_stats': {'image'}}
    tokenizer: Any
    origin: str

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.arch["image"]["input_size"])  # type: ignore[return-value]


def load_backbone(config: ml_collections.ConfigDict, with_text: bool) -> Backbone:
    """Encoders from `config.init_checkpoint`, else randomly initialised (scratch baseline); the
    text tower's weights are kept even for image-only tasks, so every checkpoint stays loadable."""
    from plip_jax.data.tokenizer import load_tokenizer

    dropout = config.model.text.get("dropout", None)
    if config.init_checkpoint:
        from plip_jax.api import from_pretrained

        m = from_pretrained(config.init_checkpoint)
        arch = dict(m.config)
        variables = jax.device_get(m.variables)
        tokenizer, origin = m.tokenizer, f"checkpoint {config.init_checkpoint}"
        text_cfg = BertConfig.from_dict(dict(arch["text"]))
    else:
        img = dict(config.model.image)
        img["pool"] = image_pool(config.model.recipe, img.get("pool", None))
        text_cfg, folder = text_tower.from_config(config.model)
        arch = {"image": img, "text": text_cfg.to_dict(), "recipe": config.model.recipe,
                "max_length": int(config.data.max_length)}
        key = state_lib.init_key(config.seed)
        h, w = img["input_size"]
        image_vars = jax.jit(image_encoder(img).init)(key, jnp.zeros((1, h, w, 3), jnp.float32))
        variables = {"params": {"image": image_vars["params"]},
                     "batch_stats": {"image": image_vars.get("batch_stats", {})}}
        if folder is not None:
            variables["params"]["text"], _ = text_weights.load_params(folder, text_cfg.num_hidden_layers)
        else:
            ids = jnp.zeros((1, 4), jnp.int32)
            variables["params"]["text"] = jax.jit(text_encoder(text_cfg).init)(key, ids, jnp.ones_like(ids))["params"]
        variables = jax.device_get(variables)
        tokenizer = load_tokenizer(config.data.get("tokenizer_dir"), max_length=int(config.data.max_length))
        origin = "scratch (random image encoder" + (f", text {config.model.text.init})" if with_text else ")")
    if dropout is not None:
        text_cfg = dataclasses.replace(text_cfg, hidden_dropout_prob=float(dropout),
                                       attention_probs_dropout_prob=float(dropout))
    text = None
    if with_text:
        has_pooler = "pooler" in variables["params"]["text"]
        if arch["recipe"] == "release" and not has_pooler:
            raise ConfigError("recipe 'release' needs the BERT pooler, which the text weights lack")
        text = text_encoder(text_cfg, pooler=has_pooler,
                            frozen_layers=int(config.model.text.get("frozen_layers", 0)))
    arch["text"] = text_cfg.to_dict()
    arch["image"] = dict(arch["image"], pool=image_pool(arch["recipe"], arch["image"].get("pool") or None))
    return Backbone(image_encoder(arch["image"]), text, arch["recipe"], arch, variables, tokenizer, origin)


# ---------------------------------------------------------------------------------------------
# Pieces the tasks share
# ---------------------------------------------------------------------------------------------
def init_head(name: str, module, config, *inputs, **kwargs) -> dict:
    """Host variables {'params': {name: ...}[, 'batch_stats': {name: ...}]} of a head, seeded from
    config.seed."""
    key = jax.random.key(int(config.seed) + 7, impl="rbg")
    variables = jax.device_get(dict(module.init(key, *inputs, **kwargs)))
    return {kind: {name: tree} for kind, tree in variables.items()}


def encode_images(image_m: ModifiedResNet, params: dict, batch_stats: dict, images_u8: jax.Array):
    """Train-mode image embeddings and the encoder's new BN statistics."""
    (f, _), mut = image_m.apply({"params": params["image"], "batch_stats": batch_stats["image"]},
                                transforms.normalize(images_u8), train=True, mutable=["batch_stats"])
    return f, mut["batch_stats"]


def train_records(config) -> tuple[Any, dict[str, np.ndarray]]:
    """(source, label scan) of the training split, for the image-only tasks."""
    source = sources.open_source(config.data, config.data.train_split, decode_images=False)
    return source, fd.scan_labels(source)


def few_shot_rows(ids: np.ndarray, config) -> np.ndarray:
    """The records of a deterministic `config.few_shot` fraction of the identities in `ids`."""
    return np.flatnonzero(np.isin(ids, fd.few_shot_ids(ids, float(config.few_shot), int(config.seed))))


def image_batches(config, backbone: Backbone, source, rows: np.ndarray, labels: np.ndarray,
                  attributes: np.ndarray | None, sampler: str, random_erasing: bool):
    """This process's resumable, augmented image batches (data.downstream.ImageBatches)."""
    d = config.data
    aug = transforms.AugmentConfig(flip=bool(d.flip), pad_crop=bool(d.pad_crop), random_erasing=random_erasing)
    return fd.ImageBatches(source, rows, labels, attributes, backbone.input_size, int(d.batch_size), sampler,
                           int(d.k_images) if sampler == "pk" else 1, int(config.seed), aug, threads=int(d.threads),
                           process_index=jax.process_index(), process_count=jax.process_count())


def eval_split(config, backbone: Backbone, split: str, source=None, max_length: int = 8) -> dict:
    """A loaded evaluation split at the encoder's input size (capped by train.eval_max_items)."""
    from plip_jax.data.pipeline import load_eval_split

    if source is None:
        source = sources.open_source(config.data, split, decode_images=False)
    return load_eval_split(source, backbone.tokenizer, backbone.input_size,
                           max_items=int(config.train.eval_max_items) or None, max_length=max_length)


total_steps = build.total_steps


# ---------------------------------------------------------------------------------------------
# The task interface
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Task:
    """What one fine-tune adds to the engine."""
    name: str                                   # eval.json "task"
    heads: dict                                 # host variables of the new heads: {'params', 'batch_stats'}
    trainable: tuple[str, ...] | None           # top-level param groups that train (None: all)
    loss_fn: LossFn                             # (params, batch_stats, batch, rng) -> (loss, (metrics, bs))
    data: loop.TrainData                        # resumable global batches, with `steps_per_epoch`
    evaluate: Callable[[dict, bool], dict]      # (variables, fine-tuned?) -> metrics (floats)
    columns: tuple[str, ...]                    # table columns, also copied to eval.json's top level
    title: str
    info: dict                                  # eval.json fields of the task (datasets, sizes, ...)
    before: tuple[str, str] = ("zero_shot", "zero-shot")   # eval.json key and table row before training
    postfix: tuple[str, ...] = ("loss",)        # progress-bar metrics
    close: Callable[[], None] = lambda: None    # release the data's threads


def write_eval(workdir: Path, result: dict, title: str, rows: dict[str, dict], cols: tuple[str, ...]) -> None:
    """eval.json and the printed table (process 0)."""
    if jax.process_index() != 0:
        return
    (workdir / "eval.json").write_text(json.dumps(result, indent=2, default=float))
    print_table(title, rows, tuple(cols), label="")


def checkpoint_config(backbone: Backbone, config) -> dict:
    """The config stored with every checkpoint: the encoders' architecture where `from_pretrained`
    reads it (model.image / model.text_config / model.recipe, data.max_length), and the run's config."""
    arch = backbone.arch
    return {"model": {"image": arch["image"], "text_config": arch["text"], "recipe": arch["recipe"]},
            "data": {"max_length": int(arch.get("max_length", config.data.max_length))},
            "finetune": json.loads(config.to_json())}


def _zero_shot(workdir: Path, task: Task, state, fresh: bool) -> dict | None:
    """The evaluation before training: run on a fresh start and stored, read back on a resume."""
    path = workdir / ZERO_SHOT_FILE
    if not fresh:
        return json.loads(path.read_text()) if path.is_file() else None
    m = task.evaluate({"params": state.params, "batch_stats": state.batch_stats}, False)
    if jax.process_index() == 0:
        path.write_text(json.dumps(m, indent=2, default=float))
        print(f"{task.before[1]}: " + " ".join(f"{c} {m[c]:.2f}" for c in task.columns if c in m), flush=True)
    return m


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------
def finetune(config: ml_collections.ConfigDict, workdir: Path,
             make_task: Callable[[ml_collections.ConfigDict, Backbone, Any], Task], with_text: bool) -> dict:
    """Run (or resume) one fine-tune in `workdir`; returns the eval.json dict."""
    t_start = time.time()
    is_main = jax.process_index() == 0
    mesh = build.mesh_of(config)
    batch_sharding = shd.batch_sharding(mesh)
    backbone = load_backbone(config, with_text)
    task = make_task(config, backbone, batch_sharding)
    try:
        return _train_and_evaluate(config, workdir, backbone, task, mesh, batch_sharding, t_start, is_main)
    finally:
        task.close()


def _train_and_evaluate(config, workdir: Path, backbone: Backbone, task: Task, mesh, batch_sharding,
                        t_start: float, is_main: bool) -> dict:
    batch = int(config.data.batch_size)
    params = {**backbone.variables["params"], **task.heads["params"]}
    batch_stats = {**backbone.variables["batch_stats"], **task.heads.get("batch_stats", {})}
    trained, _ = split_trainable(params, task.trainable)
    run = build.make_run(config, loss_fn=task.loss_fn, params=params, batch_stats=batch_stats,
                         steps_per_epoch=task.data.steps_per_epoch, trainable=task.trainable,
                         mesh=mesh)
    tx, shardings, abstract = run.tx, run.shardings, run.abstract
    steps, steps_per_epoch = run.total_steps, run.steps_per_epoch

    def start() -> state_lib.TrainState:
        host = state_lib.TrainState(step=np.zeros((), np.int32), params=params, batch_stats=batch_stats,
                                    opt_state=jax.device_get(jax.jit(tx.init)(trained)))
        return jax.tree.map(lambda x, s: state_lib.place(np.asarray(x), s), host, shardings)

    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", max_to_keep=int(config.train.keep_checkpoints),
                                 async_save=bool(config.train.async_checkpoints))
    state, start_step = loop.resume_or_start(ckpt, abstract, shardings, start, task.data, workdir)
    ckpt.check_space(state)
    if is_main:
        counts = optim.count_params(trained, optim.param_labels(trained, config.optim))
        print(f"{config.mode} | {backbone.origin} | devices {jax.device_count()} (mesh data={mesh.shape['data']} "
              f"fsdp={mesh.shape['fsdp']}) | trained groups {','.join(sorted(trained))}: "
              + ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items()))
              + f" | {steps} steps ({steps_per_epoch}/epoch) x batch {batch}", flush=True)
    if is_main and backbone.tokenizer is not None:  # beside the checkpoints: from_pretrained(WORKDIR) at any step
        backbone.tokenizer.save(workdir / "tokenizer")
    zero = _zero_shot(workdir, task, state, fresh=start_step == 0)

    step_fn = run.step
    loop_cfg = loop.LoopConfig(total_steps=steps, steps_per_epoch=steps_per_epoch, batch_size=batch,
                               log_every=int(config.train.log_every), ckpt_every=int(config.train.ckpt_every),
                               desc=config.mode, postfix=task.postfix)
    writer = MetricWriter(workdir, is_main)
    t_train = time.time()
    try:
        state, step = loop.run(loop_cfg, state=state, step_fn=step_fn, data=task.data,
                               batch_sharding=batch_sharding, rng=jax.random.key(int(config.seed) + 1),
                               start_step=start_step, ckpt=ckpt, save_config=checkpoint_config(backbone, config),
                               writer=writer, workdir=workdir)
    finally:
        writer.close()
    train_s = time.time() - t_train
    ckpt.close()

    tuned = task.evaluate({"params": state.params, "batch_stats": state.batch_stats}, True)
    key, label = task.before
    result = {"task": task.name, "init": backbone.origin, **task.info, "steps": step, "batch_size": batch,
              "train_seconds": round(train_s, 1), "seconds": round(time.time() - t_start, 1)}
    if start_step:
        result["resumed_at"] = start_step
    result.update({key: zero, "finetuned": tuned, **{c: tuned[c] for c in task.columns}})
    rows = {label: zero, "fine-tuned": tuned} if zero is not None else {"fine-tuned": tuned}
    write_eval(workdir, result, f"{task.title} | init: {backbone.origin}", rows, task.columns)
    return result


__all__ = ["ZERO_SHOT_FILE", "Backbone", "Task", "checkpoint_config", "encode_images", "eval_split", "few_shot_rows",
           "finetune", "image_batches", "init_head", "load_backbone", "total_steps", "train_records",
           "write_eval"]
