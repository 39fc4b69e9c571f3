"""bench/serve.py end to end at toy size (--smoke): data with planted neighbours, exact vs IVF, the
crossover, and the real server loaded by concurrent clients without an error (slow: ~1 min here)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_serve_bench_smoke(tmp_path):
    from conftest import subprocess_env

    out = tmp_path / "serve.json"
    p = subprocess.run([sys.executable, "bench/serve.py", "--smoke", "--out", str(out)], cwd=ROOT,
                       env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["kind"] == "serve" and doc["smoke"] and "load average" in doc["uptime_at_start"]
    assert doc["exact"]["recall_at_10"] == 1.0
    assert [r["probe_fraction"] for r in doc["ivf"]["sweep"]] == [64, 32, 16, 8, 4]
    assert doc["ivf"]["chosen"]["recall_at_10"] >= 0.9
    assert [c["n"] for c in doc["crossover"]["sizes"]] == [2000, 5000, 20000]
    for kind in ("exact", "ivf"):
        run = doc["server"][kind]
        assert run["errors"] == 0 and run["requests"] == 40 and run["queries_per_s"] > 0
