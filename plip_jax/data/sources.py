"""Glue from `config.data` to the data modules: which TFDS source, built on first use when it is
a rendered `procedural` config (SYNTH-PEDES, or the shifted CUHK-PEDES / ICFG-PEDES stand-ins), the
per-process training stream, eval splits, and example batches.

`config.data.name = 'synthetic'` feeds in-memory batches (data/synthetic.py), deterministic per
step: for tests and benchmarks that must not depend on TFDS.

Where a run evaluates is `eval_plan`'s choice: the training dataset's own `val` / `test` splits
when it has them (procedural SYNTH-PEDES; `full` built with num_val_ids / num_test_ids), else a
built text-ReID dataset in the same data_dir (CUHK-PEDES first), else nowhere, said in one line.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from plip_jax.data import synthetic

TFDS_NAMES = ("synth_pedes", "cuhk_pedes", "icfg_pedes", "rstp_reid")
# Zero-shot evaluation sets, in order of preference, for training data without held-out splits.
TEXT_REID_FALLBACK = ("cuhk_pedes", "icfg_pedes", "rstp_reid")


def data_dir(data_cfg) -> str:
    """config.data.data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    d = data_cfg.get("data_dir") or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return d if "://" in d else str(Path(d).expanduser())


def validate(data_cfg) -> None:
    """Data config errors that can be told before anything is read."""
    from plip_jax.core.errors import ConfigError

    name = data_cfg.name
    if name != "synthetic" and name not in TFDS_NAMES:
        raise ConfigError(f"config.data.name={name!r} is not a dataset (expected one of "
                          f"{TFDS_NAMES + ('synthetic',)})")
    if name == "synthetic":
        return
    if data_cfg.config == "procedural":  # rendered into the data dir on first use
        from tfds_synth_pedes import build as tb

        if tb.has_procedural(name):
            return
        raise ConfigError(f"{name} has no 'procedural' config (those with one: "
                          f"{', '.join(n for n in TFDS_NAMES if tb.has_procedural(n))})")
    d = data_dir(data_cfg)
    if "://" not in d and not Path(d).is_dir() and not (data_cfg.get("manual_dir") and Path(data_cfg.manual_dir).is_dir()):
        raise ConfigError(
            f"data directory {d} does not exist: build {name}/{data_cfg.config} first with "
            f"`python -m tfds_synth_pedes.build {name} --config {data_cfg.config} --data_dir DIR "
            f"--manual_dir M` and pass --config.data.data_dir=DIR")


def _procedural_params(data_cfg) -> dict:
    return dict(data_cfg.get("procedural", {}) or {})


def _builder(data_cfg):
    """The tfds builder of (name, config): a `procedural` config is built on first use (with the
    params `data.procedural`), a dataset with `manual_dir` from its files; any other comes as found
    in the data dir (built or not)."""
    from tfds_synth_pedes import build as tb

    name, cfg_name = data_cfg.name, data_cfg.config
    params = _procedural_params(data_cfg) if cfg_name == "procedural" else {}
    if cfg_name == "procedural" or data_cfg.get("manual_dir"):
        return tb.build(name, cfg_name, data_dir(data_cfg), manual_dir=data_cfg.get("manual_dir"), **params)
    return tb.get_builder(name, cfg_name, data_dir(data_cfg))


def open_source(data_cfg, split: str, decode_images: bool = True):
    """A random-access tfds source of `split` of any registered dataset (`data_cfg`: name, config,
    data_dir, manual_dir, procedural; see `_builder` for what gets built). `decode_images=False`
    keeps the images as encoded bytes, for the data pipelines that decode them themselves."""
    import tensorflow_datasets as tfds

    from tfds_synth_pedes.ingest import DatasetError

    builder = _builder(data_cfg)
    what = f"{data_cfg.name}/{builder.builder_config.name if builder.builder_config else 'default'}"
    if not builder.is_prepared():
        raise DatasetError(f"{what} is not built in {data_dir(data_cfg)}: run `python -m tfds_synth_pedes.build "
                           f"{data_cfg.name} --data_dir DIR --manual_dir M` first")
    have = list(builder.info.splits)
    if split.split("[")[0] not in have:
        hint = ("; synth_pedes/full trains on every identity: build held-out identities with --param "
                "num_val_ids=N --param num_test_ids=M and use the config name it prints, or evaluate on "
                "cuhk_pedes" if data_cfg.name == "synth_pedes" else "")
        raise DatasetError(f"{what} has no split {split!r} (it has {have}){hint}")
    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    return builder.as_data_source(split=split, decoders=decoders)


def data_config(name: str, config: str | None = None, data_dir: str | None = None,
                manual_dir: str | None = None, procedural: Any = None):
    """The dataset fields every reader takes, from any config's spelling of them (`config.data`,
    an eval config's `dataset*` keys, a fine-tune's `eval_data`); config None = 'procedural' for
    synth_pedes, else 'default'."""
    import ml_collections

    procedural = procedural.to_dict() if hasattr(procedural, "to_dict") else dict(procedural or {})
    return ml_collections.ConfigDict(dict(
        name=name, config=config or ("procedural" if name == "synth_pedes" else "default"),
        data_dir=data_dir, manual_dir=manual_dir, procedural=procedural))


@dataclasses.dataclass(frozen=True)
class EvalPlan:
    """Where a run evaluates: `data` (a config.data-like dict; None = nowhere), the split for
    selection (`val`) and for the report (`test`), each None when absent, and a line saying so."""

    data: Any
    val: str | None
    test: str | None
    message: str
    own: bool = True  # the training dataset itself (metric keys keep their plain split names)

    @property
    def periodic(self) -> str | None:
        """The split periodic evaluation runs on: val, or test when there is no val."""
        return self.val or self.test

    @property
    def name(self) -> str | None:
        return f"{self.data.name}/{self.data.config}" if self.data is not None else None

    def key(self, split: str) -> str:
        """Metric-name prefix of `split`: 'val' on the training data, 'cuhk_pedes/test' elsewhere."""
        return split if self.own else f"{self.data.name}/{split}"


def _prepared_splits(builder) -> set[str]:
    return set(builder.info.splits) if builder.is_prepared() else set()


def eval_plan(config) -> EvalPlan:
    """Choose the evaluation data: the training set's config.data.eval_split / test_split if it has
    them; else the first built dataset of TEXT_REID_FALLBACK in the data_dir; else none."""
    import ml_collections

    from tfds_synth_pedes import build as tb

    d = config.data
    if d.name == "synthetic":
        return EvalPlan(d, d.eval_split, d.test_split, "")
    splits = _prepared_splits(_builder(d))
    val, test = (s if s in splits else None for s in (d.eval_split, d.test_split))
    if val and test:
        return EvalPlan(d, val, test, "")
    if val or test:
        missing = d.test_split if val else d.eval_split
        return EvalPlan(d, val, test, f"evaluation: {d.name}/{d.config} {val or test} only (it has no {missing!r} split)")
    why = (f"{d.name}/{d.config} has no {d.eval_split!r} / {d.test_split!r} split"
           + (" (every identity trains, as in the paper)" if d.name == "synth_pedes" else ""))
    root = data_dir(d)
    for name in TEXT_REID_FALLBACK:
        if name == d.name:
            continue
        splits = _prepared_splits(tb.get_builder(name, None, root))
        val, test = (s if s in splits else None for s in (d.eval_split, d.test_split))
        if val or test:
            other = ml_collections.ConfigDict(dict(name=name, config="default", data_dir=root,
                                                   manual_dir=None, procedural={}))
            return EvalPlan(other, val, test, f"evaluation: {why}; zero-shot on {name} (built in {root}): "
                                              f"{' + '.join(s for s in (val, test) if s)}", own=False)
    hold_out = (f", or hold out identities: python -m tfds_synth_pedes.build synth_pedes --config {d.config} "
                "--param num_val_ids=N --param num_test_ids=M (then --config.data.config=<the name it prints>)"
                if d.name == "synth_pedes" else "")
    return EvalPlan(None, None, None, f"no evaluation: {why}, and none of {', '.join(TEXT_REID_FALLBACK)} is "
                                      f"built in {root}. To evaluate, build one there{hold_out}")


class TrainStream:
    """This process's batches; `state()` / `restore()` make resume exact."""

    def __init__(self, steps_per_epoch: int, make_iter, local_batch: int):
        self.steps_per_epoch = steps_per_epoch
        self._make_iter = make_iter
        self.local_batch = local_batch
        self._it = None

    def restore(self, state: Any, step: int) -> None:
        """Continue from a saved iterator state, or (state None, step > 0: the checkpoint came from
        another process count) from the stream position implied by the step."""
        self._it = self._make_iter()
        if state is not None:
            self._it.set_state(state)
        elif step > 0:
            self._it.set_state(self._position_state(step))

    def _position_state(self, step: int) -> Any:
        if isinstance(self._it, _SyntheticIterator):
            return {"k": step}
        current = self._it.get_state()
        if isinstance(current, dict) and set(current) == {"next_index"}:
            return {"next_index": step}
        raise ValueError(
            "cannot resume the data stream at another process count with worker processes; rerun "
            "with the process count of the checkpoint or with config.data.workers=0")

    def state(self) -> Any:
        return self._it.get_state()

    def next_global(self, sharding) -> dict:
        from plip_jax.data.pipeline import global_batch

        return global_batch(next(self._it), sharding)


class _SyntheticIterator:
    """Deterministic synthetic batches: global batch k is a pure function of (seed, k); each process
    takes its rows [process_index::process_count], so any process count sees the same global data."""

    def __init__(self, config, vocab_size: int):
        self.config, self.vocab_size, self.k = config, vocab_size, 0

    def __next__(self) -> dict:
        d = self.config.data
        b = synthetic.synthetic_batch(
            d.batch_size, tuple(self.config.model.image.input_size), d.max_length, d.max_masked,
            vocab_size=self.vocab_size, num_ids=max(1, d.batch_size // 2),
            seed=(int(self.config.seed) * 1_000_003 + self.k) % 2**31,
            images_per_caption=int(d.get("images_per_caption", 1)))
        self.k += 1
        pi, pc = jax.process_index(), jax.process_count()
        return {key: v[pi::pc] for key, v in b.items()}

    def get_state(self) -> dict:
        return {"k": self.k}

    def set_state(self, state: dict) -> None:
        self.k = int(state["k"])


def open_train(config, tokenizer) -> TrainStream:
    """The training stream of this process (global batch split over processes)."""
    d = config.data
    local = d.batch_size // jax.process_count()
    if d.name == "synthetic":
        steps = int(d.get("synthetic_steps_per_epoch", 100) or 100)
        vocab = tokenizer.vocab_size
        return TrainStream(steps, lambda: _SyntheticIterator(config, vocab), local)
    from plip_jax.data.pipeline import CaptionIndex, DataConfig, make_train_dataset

    source = open_source(d, d.train_split, decode_images=False)
    pcfg = DataConfig(
        image_size=tuple(config.model.image.input_size), batch_size=d.batch_size,
        max_length=d.max_length, max_masked=d.max_masked, flip=d.flip, pad_crop=d.pad_crop,
        random_erasing=d.random_erasing, sampler=d.sampler, p_identities=d.p_identities,
        k_images=d.k_images, workers=d.workers, mask_schedule=d.mask_schedule,
        mask_lower=d.mask_lower, mask_upper=d.mask_upper,
        images_per_caption=int(d.get("images_per_caption", 1)))
    index = CaptionIndex.build(source)
    steps_per_epoch = max(1, len(index) // d.batch_size)
    total_epochs = (math.ceil(config.train.steps / steps_per_epoch) if config.train.steps
                    else math.ceil(float(config.train.epochs)))
    td = make_train_dataset(source, tokenizer, pcfg, seed=config.seed, total_epochs=max(1, total_epochs),
                            process_index=jax.process_index(), process_count=jax.process_count(),
                            caption_index=index)
    return TrainStream(td.steps_per_epoch, td.iterator, local)


def open_eval(config, tokenizer, split: str, data_cfg=None) -> dict:
    """A loaded eval split (gallery images at the model's input size, tokenized captions) of
    `data_cfg` (an `EvalPlan.data`; default config.data)."""
    d = config.data
    if d.name == "synthetic" and (data_cfg is None or data_cfg.name == "synthetic"):
        n = 32
        b = synthetic.synthetic_batch(n, tuple(config.model.image.input_size), d.max_length, d.max_masked,
                                      vocab_size=tokenizer.vocab_size, num_ids=8, seed=99)
        return {"images": b["image"], "image_ids": b["id"].astype(np.int64),
                "input_ids": b["input_ids"], "attention_mask": b["attention_mask"],
                "caption_ids": b["id"].astype(np.int64), "captions": [""] * n,
                "file_paths": [f"synthetic/{i}" for i in range(n)]}
    from plip_jax.data.pipeline import load_eval_split

    source = open_source(d if data_cfg is None else data_cfg, split, decode_images=False)
    max_items = int(config.train.get("eval_max_items", 0) or 0) or None
    return load_eval_split(source, tokenizer, tuple(config.model.image.input_size), max_items=max_items,
                           max_length=d.max_length)


def example_batch(config, text_cfg) -> dict:
    """A small batch with the training spec (for shape inference and init)."""
    d = config.data
    b = synthetic.synthetic_batch(2, tuple(config.model.image.input_size), d.max_length, d.max_masked,
                                  vocab_size=max(text_cfg.vocab_size, 1001), num_ids=2, seed=0,
                                  images_per_caption=int(d.get("images_per_caption", 1)))
    b["input_ids"] = np.minimum(b["input_ids"], text_cfg.vocab_size - 1)
    b["masked_input_ids"] = np.minimum(b["masked_input_ids"], text_cfg.vocab_size - 1)
    b["mlm_labels"] = np.minimum(b["mlm_labels"], text_cfg.vocab_size - 1)
    return b
