"""Shared test helpers: run a Python snippet/script in a fresh process with N fake CPU devices."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def subprocess_env(devices: int = 1, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["PLIP_NO_PROGRESS"] = "1"
    env["JAX_PLATFORMS"] = "cpu"
    # Unoptimised XLA compiles the tiny PLIP step ~2.5x faster on CPU. Caution: under this flag
    # XLA:CPU's gradients through ModifiedResNet's max pool (paper_v2) are wrong by up to 1.26x
    # (found by tests/test_torch_twin.py, which compiles in-process with default settings). The
    # subprocess tests compare JAX with JAX (resume, sharding, process counts), never with a
    # reference; a test that judges numbers against PyTorch must not run under it.
    env.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    env.update(extra)
    return env


def run_result(args: list[str], devices: int = 1, timeout: int = 900, **extra: str) -> dict:
    """Run `python args...` and parse the line starting with 'RESULT '."""
    p = subprocess.run([sys.executable, *args], cwd=ROOT, env=subprocess_env(devices, **extra),
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-5000:]}")
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise AssertionError(f"no RESULT line\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}")


@pytest.fixture
def run_in_subprocess():
    return run_result
