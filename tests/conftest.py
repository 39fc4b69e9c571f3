"""Shared test helpers: run a Python snippet/script in a fresh process with N fake CPU devices; the
trained tiny search checkpoint that the search and server tests share and the search server that the
server and browser tests share (each built once per session)."""
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


@pytest.fixture(scope="session")
def trained_search_run(tmp_path_factory):
    """(workdir, crops folder): the tiny config trained 160 steps on 12 procedural identities."""
    from tests.fixtures.gallery import train_tiny_search_run

    # Default XLA optimisations: under JAX_DISABLE_MOST_OPTIMIZATIONS XLA:CPU's max-pool gradients are
    # wrong (see subprocess_env), and the tests on this run judge what the model learned.
    env = {k: v for k, v in subprocess_env().items() if k != "JAX_DISABLE_MOST_OPTIMIZATIONS"}
    return train_tiny_search_run(tmp_path_factory.mktemp("trained"), env)


@pytest.fixture(scope="session")
def served_site(tmp_path_factory):
    """(base URL, crops folder, server process, log folder, checkpoint folder): `python -m plip_jax.serve`
    with a random tiny checkpoint over tests/fixtures/serving.make_site's folder, ranked by the IVF
    index (--exact-max below the gallery size; every list probed at this size)."""
    from tests.fixtures.gallery import tiny_model_dir
    from tests.fixtures.serving import make_site, start_server, stop_server

    d = tmp_path_factory.mktemp("serve_site")
    model = tiny_model_dir(d / "tiny-ckpt")
    crops = make_site(d)
    env = {k: v for k, v in subprocess_env().items() if k != "JAX_DISABLE_MOST_OPTIMIZATIONS"}  # = in-process
    proc, url = start_server(["--checkpoint", str(model), "--images", str(crops), "--exact-max", "10"], d / "logs", env)
    yield url, crops, proc, d / "logs", model
    stop_server(proc)
