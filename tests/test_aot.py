"""Ahead-of-time compilation for TPU slices on this CPU (libtpu's deviceless topologies): the tiny
config compiled for 4-chip slices with data=2 x fsdp=2, the one-line faults, and the pieces of the
report (collective counting, the out-of-memory message, the roofline)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, subprocess_env

from plip_jax.core import topology
from plip_jax.trainers import aot

needs_libtpu = pytest.mark.skipif(not topology.libtpu_installed(), reason="libtpu not installed (pip install -e '.[tpu]')")


def _aot(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)  # the TPU compiler's own settings, as a user gets
    return subprocess.run([sys.executable, "-m", "plip_jax.aot", "--config", "tests/tiny_cfg.py", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@needs_libtpu
@pytest.mark.slow  # a TPU compile each (~40 s here); in the full suite, which CI runs
@pytest.mark.parametrize("name", ["v5e:2x2", "v4:2x2x1"])
def test_tiny_config_compiles_for_a_four_chip_slice_with_data_and_fsdp(tmp_path, name):
    out = tmp_path / "aot.json"
    p = _aot("--topology", name, "--config.mesh.fsdp=2", "--config.mesh.fsdp_min_size=64", "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.strip() == "", p.stderr  # no libtpu start-up noise
    r = json.loads(out.read_text())
    assert r["topology_name"] == name and r["chips"] == 4 and r["hosts"] == 1
    assert r["mesh"] == {"data": 2, "fsdp": 2}
    assert r["global_batch"] == 16 and r["per_chip_batch"] == 4
    b = r["bytes_per_chip"]
    assert b["arguments"] > 0 and b["temporaries"] > 0 and b["outputs"] > 0
    assert r["total_bytes_per_chip"] == b["arguments"] + b["outputs"] + b["temporaries"] - b["aliased"]
    assert r["fits"] is True and 0 < r["total_bytes_per_chip"] < r["hbm_bytes_per_chip"]
    assert r["hbm_bytes_per_chip"] == topology.parse(name).chip.hbm_bytes
    assert r["flops_per_chip"] > 0 and r["bytes_accessed_per_chip"] > 0 and r["compile_s"] > 0
    assert r["floor_step_s"] > 0 and r["floor_samples_per_s"] > 0 and r["floor_paper_hours"] > 0
    # fsdp=2 shards parameters: the step gathers them and reduce-scatters their gradients.
    assert r["collectives"]["all-gather"]["count"] > 0
    assert r["collectives"]["reduce-scatter"]["count"] + r["collectives"]["all-reduce"]["count"] > 0
    assert r["eval"]["image"]["bytes"]["total"] > 0 and r["eval"]["text"]["bytes"]["total"] > 0


@needs_libtpu
@pytest.mark.slow
def test_a_batch_that_cannot_fit_is_one_line_with_what_to_try():
    p = _aot("--topology", "v5e:2x2", "--config.data.batch_size=65536", "--noeval")
    assert p.returncode == 2, p.stderr[-3000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    line = lines[0]
    assert line.startswith("error: v5e-4: global batch 65536 (16384/chip)") and "per chip" in line
    assert "16.0 GiB HBM" in line and "--config.data.batch_size=32768" in line


def test_an_unknown_topology_lists_the_valid_names():
    p = _aot("--topology", "v5e-3")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown TPU topology 'v5e-3'; valid names:")
    assert all(n in lines[0] for n in ("v4-8", "v5e-256", "v5p-64", "v6e-64"))


def test_a_batch_not_divisible_by_the_chips_is_the_one_line_check():
    p = _aot("--topology", "v5e-16", "--config.data.batch_size=40")
    assert p.returncode == 2
    assert p.stderr.strip() == ("error: config.data.batch_size=40 is not divisible by the device count 16; "
                                "use a multiple of 16")


def test_without_libtpu_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(topology, "libtpu_installed", lambda: False)
    with pytest.raises(topology.TopologyError, match=r"pip install -e '\.\[tpu\]'"):
        topology.devices(topology.parse("v5e-4"))


def test_topology_names_map_to_libtpu_shapes():
    assert topology.parse("v5e-64").topology_name == "v5e:8x8"
    assert topology.parse("v4-8").topology_name == "v4:2x2x1" and topology.parse("v4-8").chips == 4
    assert topology.parse("v5p-64").topology_name == "v5:2x4x4" and topology.parse("v5p-64").chips == 32
    assert topology.parse("v6e-256").chips == 256
    assert topology.parse("v5e:2x2").name == "v5e-4"  # libtpu's own name is accepted too
    assert len(topology.names()) == len(set(topology.names()))


def test_collectives_are_counted_from_compiled_hlo():
    hlo = """
  %all-gather-start.1 = (f32[4,8]{1,0}, f32[16,8]{1,0}) all-gather-start(f32[4,8]{1,0} %p), dimensions={0}
  %all-gather-done.1 = f32[16,8]{1,0} all-gather-done((f32[4,8]{1,0}, f32[16,8]{1,0}) %all-gather-start.1)
  %reduce-scatter.2 = bf16[2,8]{1,0} reduce-scatter(bf16[8,8]{1,0} %g), dimensions={0}, to_apply=%add
  %all-reduce.3 = f32[] all-reduce(f32[] %x), to_apply=%add
  %all-reduce.5 = (f32[4,2]{1,0}, bf16[8]{0}) all-reduce(f32[4,2]{1,0} %g1, bf16[8]{0} %g2), to_apply=%add
  %add.4 = f32[16,8]{1,0} add(f32[16,8]{1,0} %a, f32[16,8]{1,0} %b)
"""
    c = aot.collectives(hlo)
    assert c["all-gather"] == {"count": 1, "bytes": 16 * 8 * 4}
    assert c["reduce-scatter"] == {"count": 1, "bytes": 2 * 8 * 2}
    assert c["all-reduce"] == {"count": 2, "bytes": 4 + 4 * 2 * 4 + 8 * 2}  # a combined one: all its results
    assert c["all-to-all"] == {"count": 0, "bytes": 0}


def test_out_of_memory_messages_are_read():
    msg = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. "
           "Used 17.16G of 15.75G hbm. Exceeded hbm capacity by 1.41G.")
    need, have = aot.parse_oom(msg)
    assert need == int(17.16 * 2**30) and have == int(15.75 * 2**30)
    msg2 = "the total memory required for HLO temporaries (17.16G) exceeds available HBM (15.75G)"
    assert aot.parse_oom(msg2) == (int(17.16 * 2**30), int(15.75 * 2**30))
    assert aot.parse_oom("something else") is None


def test_roofline_takes_the_slower_roof():
    chip = topology.CHIPS["v5e"]
    r = aot.roofline(197e12, 819e9 * 2, chip)  # 1 s of compute, 2 s of HBM traffic
    assert r["bound"] == "memory" and r["floor_s"] == pytest.approx(2.0)
    r = aot.roofline(197e12 * 3, 819e9, chip)
    assert r["bound"] == "compute" and r["floor_s"] == pytest.approx(3.0)


@needs_libtpu
@pytest.mark.slow
def test_sweep_reports_each_setting_and_recommends_one_that_fits():
    from tiny import tiny_config

    from plip_jax.trainers import aot_sweep

    c = tiny_config()
    c.mesh.fsdp_min_size = 64
    assert {"batch": 16, "fsdp": 4, "remat": "blocks"} in aot_sweep.choices("v5e-4", 16)
    r = aot_sweep.sweep(c, "v5e-4", settings=[{"batch": 16, "fsdp": 2, "remat": "blocks"}])
    (row,) = r["rows"]
    assert row["fits"] and row["report"]["remat"] == "blocks" and row["report"]["mesh"]["fsdp"] == 2
    assert row["floor_samples_per_s"] > 0
    assert r["recommended"] == {"batch": 16, "fsdp": 2, "remat": "blocks"}
    assert "v5e-4" in aot_sweep.table(r) and "*" in aot_sweep.table(r)
