"""The persistent compilation cache changes nothing but the compile: a second process with the same
cache folder loads the train step from disk (a cache hit, no miss), and its losses and parameters
equal a run with the cache off, bit for bit."""
from __future__ import annotations

import pytest
from conftest import run_result

from plip_jax.core import compile_cache

SCRIPT = "tests/scripts/cached_step.py"


@pytest.mark.slow  # three processes, ~38 s
def test_cache_hit_on_rerun_and_results_equal_cache_off(tmp_path):
    cache = tmp_path / "xla"
    first = run_result([SCRIPT, str(cache)])
    second = run_result([SCRIPT, str(cache)])
    off = run_result([SCRIPT, "off"])
    assert first["folder"] == str(cache) and first["entries"] > 0 and first["misses"] > 0
    assert second["step_hit"] and second["misses"] == 0 and second["hits"] >= first["misses"] - 1
    assert off["folder"] is None and off["hits"] == 0
    for run in (second, off):
        assert run["losses"] == first["losses"]
        assert run["param_sum"] == first["param_sum"] and run["param_abs"] == first["param_abs"]


def test_cache_setting_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("PLIP_COMPILE_CACHE", "off")
    assert compile_cache.resolve(None) is None and compile_cache.resolve("") is None
    assert compile_cache.resolve(str(tmp_path)) == tmp_path
    monkeypatch.setenv("PLIP_COMPILE_CACHE", str(tmp_path / "env"))
    assert compile_cache.resolve(None) == tmp_path / "env"
    monkeypatch.delenv("PLIP_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.resolve(None) == tmp_path / "xdg" / "plip_jax" / "xla"
    assert compile_cache.resolve("OFF") is None
