"""JAX's persistent compilation cache for every run: a rerun or resume of the same config loads
its compiled programs from disk instead of compiling again (the train step is ~45 s of XLA work
on a 2-core CPU). On by default in a per-user folder; `--compile_cache=off` or
`PLIP_COMPILE_CACHE=off` turns it off, any other value names the folder."""
from __future__ import annotations

import os
from pathlib import Path

OFF = ("off", "none", "0", "false", "no")


def default_dir() -> Path:
    """`$XDG_CACHE_HOME/plip_jax/xla` (else `~/.cache/plip_jax/xla`): per user, outside workdirs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "plip_jax" / "xla"


def resolve(setting: str | None) -> Path | None:
    """The cache folder for a flag value (None/'' = the env var, else the default), or None for off."""
    if not setting:
        setting = os.environ.get("PLIP_COMPILE_CACHE", "")
    if setting.strip().lower() in OFF:
        return None
    return Path(setting).expanduser() if setting else default_dir()


def enable(setting: str | None = None, min_compile_secs: float = 1.0) -> Path | None:
    """Point JAX at the cache folder (created if missing) and return it; None when turned off.

    Programs that compile in under `min_compile_secs` are not written (cheap to redo). An
    unwritable folder is not fatal: the run goes on without a cache, with a one-line notice.
    """
    import jax

    folder = resolve(setting)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"warning: compilation cache off: cannot create {folder} ({e.strerror or e})", flush=True)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
