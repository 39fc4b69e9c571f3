"""Faults a long run meets, each reproduced: a truncated file in the latest checkpoint, no readable
checkpoint, a full filesystem at save (tmpfs, else an injected ENOSPC), a second run on a held
workdir, a stale lock, and the CLIs' one-line errors (PLIP_DEBUG=1 brings the traceback back)."""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import ROOT, subprocess_env

from plip_jax.core import checkpoint as ckpt_lib
from plip_jax.core.checkpoint import Checkpointer, CheckpointError
from plip_jax.core.cli import oom_message, run_cli
from plip_jax.core.workdir_lock import LOCK_NAME, WorkdirLock, WorkdirLocked

MAIN = [sys.executable, "-m", "plip_jax.main"]


def _run(args: list[str], workdir: Path | None = None, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", *args] + (["--workdir", str(workdir)] if workdir else [])
    return subprocess.run(cmd, cwd=ROOT, env=subprocess_env(1, **env), capture_output=True, text=True,
                          timeout=600)


def _err_lines(p: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in p.stderr.splitlines() if ln.strip()]


def _losses(workdir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]


def _state(seed: int = 0, n: int = 8, size: int = 64 * 1024) -> dict:
    rng = np.random.default_rng(seed)  # random values: compressed files keep their size
    return {f"w{i}": jax.numpy.asarray(rng.random(size // 4, np.float32)) for i in range(n)}


def _abstract(state: dict) -> dict:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _truncate_largest(step_dir: Path) -> Path:
    files = sorted((step_dir / "state").rglob("ocdbt.process_*/d/*"), key=lambda f: f.stat().st_size)
    assert files, f"no OCDBT data file under {step_dir}"
    os.truncate(files[-1], 100)
    return files[-1]


def _listing(d: Path) -> dict[str, int]:
    return {str(f.relative_to(d)): f.stat().st_size for f in d.rglob("*") if f.is_file()}


# ---------------------------------------------------------------------------------------------
# Corrupt checkpoints
# ---------------------------------------------------------------------------------------------
def test_truncated_latest_step_falls_back_and_is_moved_aside(tmp_path, capsys):
    ck = Checkpointer(tmp_path, max_to_keep=3, async_save=False)
    states = {s: _state(s) for s in (1, 2, 3)}
    for s, st in states.items():
        ck.save(s, st, {"step": s}, [s])
    ck.close()
    _truncate_largest(tmp_path / "3")
    ck = Checkpointer(tmp_path, max_to_keep=3, async_save=False)
    state, config, data_state, step = ck.restore_latest(_abstract(states[3]))
    assert (step, config, data_state) == (2, {"step": 2}, [2])
    for k in states[2]:
        np.testing.assert_array_equal(np.asarray(state[k]), np.asarray(states[2][k]))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("warning: checkpoint step 3 cannot be read (")
    assert "OUT_OF_RANGE" in err[0] and "resuming from step 2" in err[0], err
    moved = list((tmp_path / ckpt_lib.CORRUPT).iterdir())
    assert [m.name.split("-")[0] for m in moved] == ["3"] and (moved[0] / "state").is_dir()
    assert not (tmp_path / "3").exists() and ck.all_steps() == [1, 2]
    ck.save(3, states[3], {"step": 3}, [3])  # the moved-aside step does not block a new save
    ck.close()
    assert Checkpointer(tmp_path).all_steps() == [1, 2, 3]


def test_no_readable_checkpoint_is_one_error_and_nothing_moves(tmp_path):
    ck = Checkpointer(tmp_path, max_to_keep=3, async_save=False)
    for s in (1, 2):
        ck.save(s, _state(s), {"step": s}, [s])
    ck.close()
    for s in (1, 2):
        _truncate_largest(tmp_path / str(s))
    before = _listing(tmp_path)
    with pytest.raises(CheckpointError) as e:
        Checkpointer(tmp_path).restore_latest(_abstract(_state()))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"no readable checkpoint in {tmp_path}")
    assert "step 2: OUT_OF_RANGE" in msg and "step 1: OUT_OF_RANGE" in msg
    assert _listing(tmp_path) == before


def test_no_readable_checkpoint_cli_one_line_nonzero_nothing_deleted(tmp_path):
    # Checkpoints that do not restore into the tiny model's state (another tree), one truncated too.
    ck = Checkpointer(tmp_path / "checkpoints", max_to_keep=3, async_save=False)
    for s in (2, 4):
        ck.save(s, _state(s), {"step": s}, [s])
    ck.close()
    _truncate_largest(tmp_path / "checkpoints" / "4")
    before = _listing(tmp_path / "checkpoints")
    p = _run(["plip_jax.main", "--config", "tests/tiny_cfg.py:steps=4"], tmp_path)
    assert p.returncode == 2, p.stderr[-3000:]
    err = _err_lines(p)
    assert len(err) == 1 and err[0].startswith("error: no readable checkpoint in "), p.stderr[-3000:]
    assert "step 4:" in err[0] and "step 2:" in err[0]
    assert _listing(tmp_path / "checkpoints") == before
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.slow
def test_resume_after_truncated_latest_checkpoint_matches_uninterrupted(tmp_path):
    """The tiny run saves steps 2 and 4; step 4 loses most of an array file; the same command again
    resumes from step 2, and steps 3-4 give the losses the first (uninterrupted) pass logged."""
    args = ["plip_jax.main", "--config", "tests/tiny_cfg.py:steps=4", "--config.train.final_val=False"]
    p = _run(args, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    _truncate_largest(tmp_path / "checkpoints" / "4")
    p = _run(args, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    err = [ln for ln in _err_lines(p) if "checkpoint" in ln]
    assert len(err) == 1 and err[0].startswith("warning: checkpoint step 4 cannot be read ("), p.stderr[-3000:]
    assert "Resumed from" in p.stdout and "at step 2" in p.stdout
    rows = _losses(tmp_path)
    first, resumed = rows[:4], rows[4:]
    assert [r["step"] for r in first] == [1, 2, 3, 4] and [r["step"] for r in resumed] == [3, 4]
    for a, b in zip(first[2:], resumed):
        for key in ("loss", "loss_ivlc", "loss_tic", "loss_iap"):
            assert abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(a[key])), (a["step"], key, a[key], b[key])
    moved = [d.name for d in (tmp_path / "checkpoints" / "corrupt").iterdir()]
    assert len(moved) == 1 and moved[0].startswith("4-")
    assert sorted(int(d.name) for d in (tmp_path / "checkpoints").iterdir() if d.name.isdigit()) == [2, 4]


# ---------------------------------------------------------------------------------------------
# Full disk
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """A mounted tmpfs factory (root only); skips where mount is not allowed."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        d = tmp_path / f"tmpfs{len(mounted)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _check_save_error(msg: str, directory: Path, step: int, kept: int) -> None:
    assert "\n" not in msg
    assert msg.startswith(f"cannot save checkpoint step {step} in {directory}: "), msg
    assert "[Errno 28] No space left on device" in msg and " free of " in msg, msg
    assert msg.endswith(f"rerun to resume from step {kept}"), msg


# Orbax's leftover callbacks after the failed write find their loop closed (pytest reports that
# 'Exception ignored'; outside pytest plip_jax.core.checkpoint drops exactly this noise).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("async_save", [False, True])
def test_full_tmpfs_save_fails_in_one_line_and_older_checkpoint_restores(tmpfs, capsys, async_save):
    d = tmpfs("3m") / "checkpoints"
    state = _state(n=8, size=256 * 1024)  # 2 MB: the first save fits, the second does not
    ck = Checkpointer(d, max_to_keep=3, async_save=async_save)
    ck.save(1, state, {"step": 1}, [1])
    with pytest.raises(CheckpointError) as e:
        ck.save(2, _state(1, n=8, size=256 * 1024), {"step": 2}, [2])
        ck.wait()  # async: the write error surfaces here (or at the next save)
    _check_save_error(str(e.value), d, 2, kept=1)
    ck.close(quiet=True)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith(f"warning: {d} has ") and "keep_checkpoints" in err[0], err
    assert any(".orbax-checkpoint-tmp" in f.name for f in d.iterdir())  # the failed save's leftovers
    restored, config, _, step = Checkpointer(d).restore_latest(_abstract(state))
    assert (step, config) == (1, {"step": 1})
    np.testing.assert_array_equal(np.asarray(restored["w0"]), np.asarray(state["w0"]))
    assert sorted(f.name for f in d.iterdir()) == ["1"]  # removed once the run resumed from step 1


def test_injected_write_failure_names_workdir_step_oserror_and_free_space(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    state = _state()
    ck = Checkpointer(d, max_to_keep=3, async_save=False)
    ck.save(1, state, {"step": 1}, [1])

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(d / "2"))

    monkeypatch.setattr(ck.manager, "save", full)
    with pytest.raises(CheckpointError) as e:
        ck.save(2, state, {"step": 2}, [2])
    _check_save_error(str(e.value), d, 2, kept=1)
    assert Checkpointer(d).restore_latest(_abstract(state))[3] == 1


@pytest.mark.slow
def test_full_disk_cli_stops_in_one_line_then_resumes_once_space_is_free(tmpfs):
    work = tmpfs("30m")  # the tiny state is ~17 MB: step 2 fits, step 4 does not
    args = ["plip_jax.main", "--config", "tests/tiny_cfg.py:steps=4", "--config.train.final_val=False",
            "--config.train.keep_checkpoints=1"]
    p = _run(args, work)
    assert p.returncode == 2, p.stderr[-3000:]
    err = _err_lines(p)
    assert len(err) == 1 and err[0].startswith("error: "), p.stderr[-3000:]
    _check_save_error(err[0][len("error: "):], work / "checkpoints", 4, kept=2)
    subprocess.run(["mount", "-o", "remount,size=80m", str(work)], check=True)
    p = _run(args, work)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "at step 2" in p.stdout
    assert json.loads((work / "eval.json").read_text())["step"] == 4


# ---------------------------------------------------------------------------------------------
# One run per workdir
# ---------------------------------------------------------------------------------------------
def test_second_run_on_held_workdir_stops_in_one_line(tmp_path):
    with WorkdirLock(tmp_path) as lock:
        info = json.loads((tmp_path / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["started"]
        p = _run(["plip_jax.main", "--config", "tests/tiny_cfg.py"], tmp_path)
        assert p.returncode == 2, p.stderr[-3000:]
        err = _err_lines(p)
        assert len(err) == 1 and err[0].startswith(f"error: workdir {tmp_path} is in use by pid {os.getpid()} "
                                                   f"on host {socket.gethostname()}"), p.stderr
        assert not (tmp_path / "config.json").exists()
        assert lock.held
    assert not (tmp_path / LOCK_NAME).exists()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_lock_is_taken_over_with_a_notice(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(),
                                                  "started": "2020-01-01T00:00:00"}))
    notes: list[str] = []
    with WorkdirLock(tmp_path, notice=notes.append):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and notes[0].startswith("note: taking over the stale lock of pid ")
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_another_host_or_being_written_is_held(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "other-host", "pid": _dead_pid(), "started": "x"}))
    with pytest.raises(WorkdirLocked, match="in use by pid .* on host other-host"):
        WorkdirLock(tmp_path).acquire()
    (tmp_path / LOCK_NAME).write_text("")  # created, not yet written: held for a few seconds
    with pytest.raises(WorkdirLocked):
        WorkdirLock(tmp_path).acquire()
    old = time.time() - 60
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with WorkdirLock(tmp_path, notice=lambda m: None):
        pass


def test_remote_workdir_takes_no_lock(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with WorkdirLock("gs://bucket/run") as lock:
        assert not lock.held
    assert not any(tmp_path.iterdir())


def test_lock_released_on_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with WorkdirLock(tmp_path):
            raise RuntimeError("boom")
    assert not (tmp_path / LOCK_NAME).exists()


def test_cli_stale_lock_notice_and_sigterm_releases_lock(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started": "x"}))
    p = subprocess.Popen([*MAIN, "--config", "tests/tiny_cfg.py:steps=100000", "--workdir", str(tmp_path)],
                         cwd=ROOT, env=subprocess_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / LOCK_NAME
    deadline = time.time() + 300
    while time.time() < deadline:
        if p.poll() is not None:
            raise AssertionError(p.stderr.read()[-3000:])
        try:
            if json.loads(lock.read_text()).get("pid") == p.pid:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    assert "note: taking over the stale lock of pid " in err
    assert p.returncode in (0, -signal.SIGTERM), err[-3000:]  # 0 if the loop had begun (saves, exits)
    assert not lock.exists()


# ---------------------------------------------------------------------------------------------
# One line per known fault, for every CLI
# ---------------------------------------------------------------------------------------------
CLI_FAULTS = [
    (["plip_jax.main", "--config", "tests/tiny_cfg.py", "--workdir", "{tmp}/w", "--config.data.batch_size=0"],
     "error: config.data.batch_size must be positive"),
    (["plip_jax.main", "--config", "configs/eval_text_reid.py", "--workdir", "{tmp}/w",
      "--config.checkpoint={tmp}/nope"], "error: "),
    (["plip_jax.convert", "to-torch", "--checkpoint", "{tmp}/nope", "--out", "{tmp}/x.pth.tar"], "error: "),
    (["plip_jax.search", "--checkpoint", "{tmp}/nope", "--images", "{tmp}", "--query", "a man"], "error: "),
    (["plip_jax.report", "--workdir", "{tmp}/nope"], "error: "),
    (["tfds_synth_pedes.build", "synth_pedes", "--data_dir", "{tmp}/d", "--param", "seed"],
     "error: --param takes KEY=VALUE"),
]


@pytest.mark.parametrize("args,prefix", CLI_FAULTS, ids=["main", "main-eval", "convert", "search", "report", "build"])
def test_cli_known_fault_is_one_stderr_line_and_debug_shows_traceback(tmp_path, args, prefix):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    p = _run(args)
    err = _err_lines(p)
    assert p.returncode == 2 and len(err) == 1 and err[0].startswith(prefix), (p.returncode, p.stderr[-3000:])
    assert "Traceback" not in p.stderr
    d = _run(args, PLIP_DEBUG="1")
    assert d.returncode != 0 and "Traceback (most recent call last)" in d.stderr, d.stderr[-3000:]


def test_main_debug_flag_shows_traceback(tmp_path):
    p = _run(["plip_jax.main", "--config", "tests/tiny_cfg.py", "--config.data.batch_size=0", "--debug"], tmp_path)
    assert p.returncode != 0 and "Traceback (most recent call last)" in p.stderr
    assert "ConfigError: config.data.batch_size must be positive" in p.stderr


def test_evaluate_module_points_to_main():
    p = _run(["plip_jax.trainers.evaluate"])
    err = _err_lines(p)
    assert p.returncode == 2 and len(err) == 1
    assert "python -m plip_jax.main --config configs/eval_text_reid.py" in err[0]


def test_out_of_device_memory_is_one_line_with_batch_size_and_flags(capsys):
    def step(_argv):  # a real XLA RESOURCE_EXHAUSTED: 1 TiB on the host device
        jax.jit(lambda: jax.numpy.ones((1 << 38,), jax.numpy.float32))().block_until_ready()

    rc = run_cli(step, [], batch_size=lambda: ("config.data.batch_size", 512))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: out of device memory (XLA could not allocate 1.0 TiB) at "
                             "config.data.batch_size=512; lower --config.data.batch_size"), err
    assert "--config.optim.grad_accum_steps" in err[0]
    gpu = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 154.00GiB.")
    assert "could not allocate 154.00 GiB" in oom_message(gpu, 8)


def test_unknown_errors_keep_their_traceback():
    def bug(_argv):
        raise KeyError("a bug, not a known fault")

    with pytest.raises(KeyError):
        run_cli(bug, [])
