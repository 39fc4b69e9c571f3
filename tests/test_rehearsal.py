"""The rehearsal (the paper's model end to end on a CPU) at toy size: `bench/rehearsal.py --cut-down`
end to end (the run, its checkpoint, kill-and-resume, the .pth.tar export in the PyTorch references,
per-device state bytes at fsdp=1 and 8). The full size is a measurement for an idle machine
(docs/results.md "Rehearsal")."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, subprocess_env

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("rehearsal")
    p = subprocess.run(
        [sys.executable, "bench/rehearsal.py", "--cut-down", "--workroot", str(tmp / "w"),
         "--data-dir", str(tmp / "data"), "--out-dir", str(tmp / "out")],
        cwd=ROOT, env=subprocess_env(1), capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-5000:]}"
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))
    r = json.loads(Path(json.loads(line[len("RESULT "):])["path"]).read_text())
    assert "| cut-down |" in p.stdout   # the Markdown row for README
    return r


@pytest.mark.slow
def test_cut_down_rehearsal(rehearsal):
    r = rehearsal
    run = r["run"]
    # The random text tower is named, and the run's first line says so.
    assert "RANDOM" in run["first_line"] and "random:2x64x2" in run["first_line"]
    # Finite losses at every step; falling on the same batches from the initial to the final
    # parameters (the probe reproduces the run's own step-1 loss first).
    losses = [run["losses"][str(s)]["loss"] for s in range(1, 7)]
    assert all(math.isfinite(v) for v in losses)
    probe = r["checkpoint"]["probe"]
    assert probe["before"]["batch1_loss"] == pytest.approx(losses[0], abs=1e-5)
    assert probe["after"]["loss"] < probe["before"]["loss"], probe
    assert run["compile_s_first_step"] > 0 and run["s_per_step"] > 0
    assert run["eval"]["split"] == "test" and math.isfinite(run["eval"]["R1"])
    # The checkpoint exists, restores into the run's state shapes and saves again.
    ck = r["checkpoint"]
    assert run["checkpoint_steps"] == [3, 6] and ck["bytes"] > 0 and ck["saved_bytes"] > 0
    assert ck["state_bytes"] == r["memory"]["fsdp1"]["state_bytes_global"] and ck["restore_s"] > 0
    # SIGKILL after the step-3 checkpoint, then the same command: the same losses at steps 4..6.
    res = r["resume"]
    assert res["returncode"] == -9 and res["checkpoints_after_kill"] == [3], res
    assert "at step 3" in res["resumed_line"]
    assert {c.split("/")[0] for c in res["compared"]} == {"4", "5", "6"}
    assert res["max_abs_diff"] <= 1e-6, res
    # The .pth.tar loads strictly into the PyTorch references and embeds like plip_jax.api.
    ex = r["export"]
    assert ex["strict_image"] and ex["strict_text"] and ex["recipe"] == "paper_v2"
    assert ex["image"]["max_abs_diff"] <= 1e-4 and ex["text"]["max_abs_diff"] <= 1e-4, ex
    # fsdp=8 holds 1/8 of the sharded state plus the replicated part, which is listed with reasons;
    # XLA's argument bytes are exactly the state's shard sizes plus the batch and the key.
    mem = r["memory"]
    m1, m8 = mem["fsdp1"], mem["fsdp8"]
    assert (m1["devices"], m1["fsdp"], m8["devices"], m8["fsdp"]) == (1, 1, 8, 8)
    assert m8["params_opt_bytes_per_device"] <= mem["fsdp8_bound"] + 1
    assert m8["params_opt_bytes_per_device"] < m1["params_opt_bytes_per_device"] / 4
    assert m8["replicated_arrays"] > 0 and m8["replicated_largest"]
    assert set(m8["replicated_by_reason"]) >= {"scalar"}
    assert all(e["why"] for e in m8["replicated_largest"])
    for m in (m1, m8):
        assert m["xla_state_bytes_per_device"] == m["state_bytes_per_device"], m
    assert all(r["checks"].values()), r["checks"]


def test_rehearsal_config_is_the_paper_model_with_a_named_random_tower():
    from tiny import config_file
    pretrain = config_file("pretrain")
    from plip_jax.trainers.pretrain import validate_config
    from tfds_synth_pedes.synth_pedes import make_config

    paper, c = pretrain.get_config(), pretrain.get_config("rehearsal")
    for key in ("image", "tic", "iap", "recipe", "dtype"):
        assert c.model[key] == paper.model[key], key
    assert c.losses.to_dict() == paper.losses.to_dict()
    for key in ("name", "lr", "b1", "b2", "b3", "eps", "weight_decay", "lr_multipliers", "no_decay"):
        assert c.optim[key] == paper.optim[key], key
    assert c.model.text.init == "random:bert-base" and c.model.text.frozen_layers == 0
    assert tuple(c.optim.frozen) == ()
    validate_config(c)   # a random tower with frozen layers would be refused here
    # Its own procedural build at the model's input size, beside the default 128x64 one.
    assert (c.data.procedural.image_height, c.data.procedural.image_width) == tuple(c.model.image.input_size)
    assert make_config("procedural", **dict(c.data.procedural)).name not in ("procedural",)
    assert (c.train.steps, c.train.ckpt_every, c.train.log_every) == (6, 3, 1)
    assert 0 < c.train.eval_max_items <= 64


def test_compile_clock_counts_compiles_and_step_window_excludes_spans():
    import jax
    import jax.numpy as jnp

    from plip_jax.core import timing

    clock = timing.CompileClock()
    window = timing.StepWindow(clock)
    jax.jit(lambda x: jnp.sin(x) * 3.0 + 0.125)(jnp.arange(7.0)).block_until_ready()
    window.step()
    with window.exclude():
        jax.jit(lambda x: jnp.cos(x) - 0.5)(jnp.arange(5.0)).block_until_ready()
    first = window.read()
    clock.close()
    assert first["compile_s"] > 0 and first["step_s"] > 0
    assert clock.total > first["compile_s"]   # the excluded compile counted in the total only
    assert window.read()["compile_s"] == 0.0   # a new window starts empty (clock closed)
