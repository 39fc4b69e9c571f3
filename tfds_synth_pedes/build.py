"""Build and read our TFDS datasets without TensorFlow (the `tfds build` CLI needs TF).

    python -m tfds_synth_pedes.build NAME --config CFG --data_dir D [--manual_dir M] [--skip_bad]
                                     [--param num_identities=60 ...]

`synth_pedes --config full` puts every identity in `train` (the paper's setting); held-out
identities only when asked: `--param num_val_ids=N --param num_test_ids=M` builds the config
`full_vN_tM` with `val` / `test` splits (name it so in a run: --config.data.config=full_vN_tM).
`--param image_size=HxW` stores the images resized to H x W at build time (JPEG q95), so training
at that size decodes small images and skips the resize: synth_pedes `full_hH_wW` (procedural renders
at that size) and cuhk_pedes / icfg_pedes / rstp_reid `full_hH_wW`, each in its own data dir.
`cuhk_pedes --config procedural` / `icfg_pedes --config procedural` render shifted stand-ins of
those datasets (tfds_synth_pedes.shifted; params num_identities, images_per_identity, image_size,
seed, num_cameras, num_val_ids (cuhk_pedes), num_test_ids) and ingest them as released.

Python: `build(...)` returns the prepared builder (a no-op when already built) and
`data_source(...)` the random-access `tfds` data source of one split.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from tfds_synth_pedes.cuhk_pedes import CuhkPedes
from tfds_synth_pedes.dukemtmc import DukeMtmc
from tfds_synth_pedes.icfg_pedes import IcfgPedes
from tfds_synth_pedes.ingest import DatasetError
from tfds_synth_pedes.manual_builder import ManualCaptionBuilder, stored_size_config
from tfds_synth_pedes.market1501 import Market1501
from tfds_synth_pedes.pa100k import Pa100k
from tfds_synth_pedes.peta import Peta
from tfds_synth_pedes.rap import Rap
from tfds_synth_pedes.rstp_reid import RstpReid
from tfds_synth_pedes.shifted import config as shifted_config
from tfds_synth_pedes.synth_pedes import SynthPedes, make_config

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "synth_pedes": SynthPedes,
    "cuhk_pedes": CuhkPedes,
    "icfg_pedes": IcfgPedes,
    "rstp_reid": RstpReid,
    "market1501": Market1501, "dukemtmc": DukeMtmc, "pa100k": Pa100k, "peta": Peta, "rap": Rap,
}
DEFAULT_DATA_DIR = os.path.expanduser("~/tensorflow_datasets")


def has_procedural(name: str) -> bool:
    """Whether dataset `name` has a rendered `procedural` config (built on first use, no download)."""
    return getattr(BUILDERS.get(name), "PROCEDURAL_STYLE", None) is not None


def get_builder(
    name: str, config: str | None = None, data_dir: str | os.PathLike = DEFAULT_DATA_DIR, skip_bad: bool = False, **params: Any
) -> tfds.core.GeneratorBasedBuilder:
    """The (unprepared) builder for NAME/config; params make a uniquely named config (synth_pedes,
    a `procedural` config, or a `full_hH_wW` resize)."""
    if name not in BUILDERS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(BUILDERS)}")
    cls = BUILDERS[name]
    kwargs: dict[str, Any] = dict(data_dir=os.fspath(data_dir), file_format="array_record", skip_bad=skip_bad)
    if cls is SynthPedes:
        cfg = make_config(config or SynthPedes.DEFAULT_CONFIG_NAME, **params)
        registered = {c.name for c in SynthPedes.BUILDER_CONFIGS}
        kwargs["config"] = cfg.name if cfg.name in registered else cfg  # TFDS wants registered ones by name
    elif has_procedural(name) and (config or "").split("_")[0] == "procedural":  # rendered, shifted stand-in
        kwargs["config"] = shifted_config.make_config(name, cls.PROCEDURAL_STYLE, config, **params)
    elif issubclass(cls, ManualCaptionBuilder):  # as released, or images stored resized: full_hH_wW
        cfg = stored_size_config(name, config, **params)
        if cfg is not None:
            kwargs["config"] = cfg
    else:
        if config not in (None, "", "default", "full"):  # one config; 'full' accepted for uniform configs
            raise DatasetError(f"{name} has no configs (got --config {config!r})")
        if params:
            raise DatasetError(f"{name} takes no parameters (got {sorted(params)})")
    with _quiet_custom_config():
        return cls(**kwargs)


class _DropCustomConfigNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Using custom data configuration")


@contextlib.contextmanager
def _quiet_custom_config():
    """TFDS logs a WARNING for every config passed as an object ("Using custom data configuration:
    <repr>"); ours are made by name from params, so the line says nothing and would come before a
    command's answer."""
    f = _DropCustomConfigNotice()
    logger = logging.getLogger("absl")
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


def build(
    name: str,
    config: str | None = None,
    data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
    manual_dir: str | os.PathLike | None = None,
    skip_bad: bool = False,
    **params: Any,
) -> tfds.core.GeneratorBasedBuilder:
    """Builds NAME/config into data_dir (array_record) unless already built; returns the builder."""
    builder = get_builder(name, config, data_dir, skip_bad, **params)
    if manual_dir is not None and not Path(manual_dir).is_dir():
        raise DatasetError(f"Manual directory {manual_dir} does not exist.\n{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir) if manual_dir is not None else None)
    builder.download_and_prepare(download_config=download_config)
    return builder


def data_source(
    name: str, config: str | None, split: str, data_dir: str | os.PathLike = DEFAULT_DATA_DIR, **params: Any
) -> Sequence[dict[str, Any]]:
    """Random-access source of one split of a built dataset (Text features come back as bytes)."""
    builder = get_builder(name, config, data_dir, **params)
    if not builder.is_prepared():
        cfg = f" --config {builder.builder_config.name}" if builder.builder_config else ""
        raise DatasetError(
            f"{name}{'/' + builder.builder_config.name if builder.builder_config else ''} is not built in {data_dir}; "
            f"run: python -m tfds_synth_pedes.build {name}{cfg} --data_dir {data_dir}"
        )
    splits = list(builder.info.splits)
    if split.split("[")[0] not in splits:
        raise DatasetError(f"{name} has no split {split!r}; it has {splits}")
    return builder.as_data_source(split=split)


def _parse_params(items: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise DatasetError(f"--param takes KEY=VALUE, got {item!r}")
        try:
            params[key] = tuple(int(v) for v in value.split("x")) if "x" in value else int(value)
        except ValueError:
            raise DatasetError(f"--param {key} must be an integer (or HxW for image_size), got {value!r}") from None
    return params


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints one message (no traceback) for dataset problems."""
    from plip_jax.core.cli import ArgumentParser

    parser = ArgumentParser(prog="python -m tfds_synth_pedes.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(BUILDERS))
    parser.add_argument("--config", default=None, help="synth_pedes: procedural (default) or full; "
                        "cuhk_pedes / icfg_pedes: procedural (rendered, shifted stand-in) or as released")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--manual_dir", default=None, help="default: DATA_DIR/downloads/manual")
    parser.add_argument("--skip_bad", action="store_true", help="build without bad entries, listing each one")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="procedural: num_identities, images_per_identity, image_size=HxW (rendered), seed, "
                        "num_cameras; both synth_pedes configs: num_val_ids, num_test_ids (held-out identities; "
                        "full: 0 + 0 by default, procedural: 200 + 200); synth_pedes full, cuhk_pedes, "
                        "icfg_pedes, rstp_reid: image_size=HxW (images stored resized to HxW at build); "
                        "cuhk_pedes / icfg_pedes procedural: num_identities, images_per_identity, image_size, "
                        "seed, num_cameras, num_val_ids (cuhk_pedes), num_test_ids")
    from plip_jax.core.cli import add_debug_flag

    add_debug_flag(parser)
    args = parser.parse_args(argv)
    start = time.time()
    try:
        builder = build(args.name, args.config, args.data_dir, args.manual_dir, args.skip_bad, **_parse_params(args.param))
    except DatasetError as e:
        from plip_jax.core.cli import reraise_if_debug

        reraise_if_debug()
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    info = builder.info
    print(f"{info.full_name} in {builder.data_dir} ({time.time() - start:.1f} s)")
    for split, split_info in info.splits.items():
        print(f"  {split:6s} {split_info.num_examples:8d} examples")
    cfg = builder.builder_config
    if cfg is not None and not getattr(cfg, "procedural", False) and cfg.name != "full":
        print(f"  train on it with --config.data.config={cfg.name}")
    skipped = getattr(builder, "skipped", [])
    if skipped:
        print(f"  skipped {len(skipped)} bad entries (listed above)")
    return 0


if __name__ == "__main__":
    from plip_jax.core.cli import run_cli

    sys.exit(run_cli(main))  # DatasetError is a ValueError: one line, exit 2
