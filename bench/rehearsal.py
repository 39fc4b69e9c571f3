"""The rehearsal: `configs/pretrain.py:rehearsal` (the paper's model, objective and optimizer,
a random BERT-base-shaped text tower, procedural data at 256x128) end to end on this CPU, measured.

  python bench/rehearsal.py [--cut-down] [--workroot DIR] [--data-dir DIR] [--out-dir bench/results]

(a) the run, `python -m plip_jax.main --config configs/pretrain.py:rehearsal`, under /usr/bin/time -v
    (peak RSS); compile seconds of its first step and seconds per step from its own metrics.jsonl;
    checkpoint size (du) and save / restore seconds (a fresh process, synchronous Orbax);
(b) kill-and-resume: a second run SIGKILLed once its step-3 checkpoint is written
    (SIGKILLed once checkpoint 3 is committed), then the same command again; its losses at steps 4..6 against (a);
(c) export with `python -m plip_jax.convert to-torch`, strict load into tests/reference/torch_resnet.py
    and transformers.BertModel, embeddings of a few test images / captions against plip_jax.api;
(d) per-device bytes of the train state (params + optimizer state) for mesh fsdp=1 (1 device) and
    fsdp=8 (8 fake CPU devices, --config.mesh.fsdp=8): the step is lowered and compiled, never run;
    XLA's memory analysis beside the sum of the state's shard sizes, and what stays replicated.

Writes bench/results/rehearsal-<date>[-cut-down].json and prints a Markdown table for README.
`--cut-down` runs the same on a small model (ResNet (1,1,1,1) width 16, BERT 2x64x2, 64x32, batch 4):
a few minutes on 2 busy cores (tests/test_rehearsal.py). The full size needs ~13 GB RAM, ~10 GB disk.
Internally the script re-runs itself with `--part NAME` for the pieces that need a fresh process.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
CONFIG = "configs/pretrain.py:rehearsal"
KILL_STEP = 3
PROBE_BATCHES = 2   # training batches the falling-loss probe evaluates before / after
MEMORY_DEVICES = 8
# The small version (--cut-down): every piece of the rehearsal at toy size.
CUT_DOWN: dict[str, Any] = {
    "model.image.layers": (1, 1, 1, 1), "model.image.width": 16, "model.image.heads": 2,
    "model.image.output_dim": 64, "model.image.input_size": (64, 32),
    "model.text.init": "random:2x64x2",
    "model.tic.fpn_dim": 16, "model.iap.heads": 2, "model.iap.mlp_dim": 128,
    "data.procedural.num_identities": 60, "data.procedural.images_per_identity": 4,
    "data.procedural.image_height": 64, "data.procedural.image_width": 32,
    "data.procedural.num_val_ids": 8, "data.procedural.num_test_ids": 8,
    "data.batch_size": 4, "data.max_length": 32, "data.max_masked": 8,
    "mesh.fsdp_min_size": 1024,    # so that the toy arrays shard at fsdp=8 too
}


class RehearsalError(RuntimeError):
    """A piece of the rehearsal failed; the message names it and the log to read."""


# Config -------------------------------------------------------------------------------------------
def load_config(overrides: dict[str, Any]):
    """configs/pretrain.py:rehearsal with dotted-key overrides (the same ones the CLI gets)."""
    from plip_jax.config_parts import config_module
    pretrain = config_module(Path(__file__).resolve().parents[1] / "configs" / "pretrain.py")

    c = pretrain.get_config("rehearsal")
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = c
        for p in path:
            node = node[p]
        if isinstance(value, list):
            value = tuple(value)
        node[last] = value
    return c


def cli_flags(overrides: dict[str, Any]) -> list[str]:
    def fmt(v: Any) -> str:
        if isinstance(v, (tuple, list)):
            return "(" + ",".join(str(x) for x in v) + ("," if len(v) == 1 else "") + ")"
        return str(v)
    return [f"--config.{k}={fmt(v)}" for k, v in overrides.items()]


# Small helpers ------------------------------------------------------------------------------------
def du_bytes(path: Path) -> int:
    """Apparent size of a file or folder in bytes."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def read_metrics(workdir: Path) -> dict[int, dict]:
    """Training rows of metrics.jsonl by step (the last row of a step wins: a resumed run appends)."""
    rows: dict[int, dict] = {}
    f = workdir / "metrics.jsonl"
    if f.is_file():
        for line in f.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if "loss" in r:
                    rows[int(r["step"])] = r
    return rows


def parse_time_v(text: str) -> dict[str, float]:
    """Peak RSS (bytes) and wall seconds from GNU time -v output."""
    out: dict[str, float] = {}
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        out["peak_rss_bytes"] = int(m.group(1)) * 1024
    m = re.search(r"Elapsed \(wall clock\) time.*?: (?:(\d+):)?(\d+):([\d.]+)", text)
    if m:
        h, mi, s = m.groups()
        out["wall_s"] = int(h or 0) * 3600 + int(mi) * 60 + float(s)
    return out


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PLIP_NO_PROGRESS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def _tail(path: Path, n: int = 25) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(lines[-n:])


def main_cmd(workdir: Path, overrides: dict[str, Any], cache: Path) -> list[str]:
    return [sys.executable, "-m", "plip_jax.main", "--config", CONFIG, "--workdir", str(workdir),
            f"--compile_cache={cache}", *cli_flags(overrides)]


def run_logged(cmd: list[str], log: Path, timeout: float, env_extra: dict[str, str] | None = None) -> str:
    """Run cmd with stdout+stderr into `log`; a non-zero exit is a RehearsalError naming the log."""
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=ROOT, env=_env(env_extra), stdout=f, stderr=subprocess.STDOUT,
                           timeout=timeout)
    if p.returncode != 0:
        raise RehearsalError(f"{' '.join(cmd[:4])}... exited {p.returncode}; see {log}:\n{_tail(log)}")
    return log.read_text(errors="replace")


def run_part(name: str, overrides: dict[str, Any], root: Path, timeout: float, devices: int = 1,
             **kw: str) -> dict:
    """This script again with `--part name` in a fresh process (own XLA device count); its JSON."""
    result = root / f"part-{name}-{devices}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--overrides", json.dumps(overrides),
           "--result", str(result), *[a for k, v in kw.items() for a in (f"--{k.replace('_', '-')}", v)]]
    # More devices only where asked: XLA flags are part of the compile-cache key.
    extra = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"} if devices > 1 else {}
    run_logged(cmd, root / f"part-{name}-{devices}.log", timeout, extra)
    return json.loads(result.read_text())


# (a) the run --------------------------------------------------------------------------------------
def rehearsal_run(workdir: Path, overrides: dict[str, Any], cache: Path, timeout: float) -> dict:
    """The uninterrupted run under /usr/bin/time -v: losses, compile s, s/step, peak RSS, eval."""
    time_file = workdir.parent / f"{workdir.name}.time"
    cmd = main_cmd(workdir, overrides, cache)
    timed = Path("/usr/bin/time").is_file()   # GNU time: the peak RSS of the run's process
    if timed:
        cmd = ["/usr/bin/time", "-v", "-o", str(time_file), *cmd]
    t0 = time.perf_counter()
    out = run_logged(cmd, workdir.parent / f"{workdir.name}.log", timeout)
    res: dict[str, Any] = {"command": " ".join(main_cmd(workdir, overrides, cache)[1:]),
                           "wall_s": time.perf_counter() - t0}
    if timed:
        res.update(parse_time_v(time_file.read_text()))
    lines = [ln for ln in out.splitlines() if ln.strip()]
    res["first_line"] = lines[0] if lines else ""
    res["header"] = next((ln for ln in lines if ln.startswith("PLIP ")), "")
    rows = read_metrics(workdir)
    steps = sorted(rows)
    res["losses"] = {s: {k: v for k, v in rows[s].items() if k.startswith("loss")} for s in steps}
    res["compile_s_first_step"] = rows[steps[0]].get("compile_s") if steps else None
    res["first_step_s"] = rows[steps[0]].get("step_s") if steps else None
    later = [rows[s]["step_s"] for s in steps[1:] if "step_s" in rows[s]]
    res["s_per_step"] = statistics.median(later) if later else None
    res["s_per_step_all"] = later
    losses = [rows[s]["loss"] for s in steps]
    res["finite"] = bool(losses) and all(math.isfinite(v) for v in losses)
    res["loss_first"], res["loss_last"] = (losses[0], losses[-1]) if losses else (None, None)
    res["logged_first_gt_last"] = bool(losses) and losses[-1] < losses[0]   # noisy at batch 8: see probe
    ev = workdir / "eval.json"
    if ev.is_file():
        e = json.loads(ev.read_text())
        res["eval"] = {k: e.get(k) for k in ("split", "R1", "R5", "R10", "mAP")}
    ck = workdir / "checkpoints"
    res["checkpoint_steps"] = sorted(int(d.name) for d in ck.iterdir() if d.name.isdigit()) if ck.is_dir() else []
    if (ck / str(KILL_STEP)).is_dir():
        res["checkpoint_bytes"] = du_bytes(ck / str(KILL_STEP))
    return res


# (b) kill and resume ------------------------------------------------------------------------------
def kill_and_resume(workdir: Path, overrides: dict[str, Any], cache: Path, timeout: float,
                    reference: dict[int, dict]) -> dict:
    """SIGKILL a run once checkpoint KILL_STEP is written, rerun the command, compare losses."""
    log = workdir.parent / f"{workdir.name}-killed.log"
    cmd = main_cmd(workdir, overrides, cache)
    # Killed once checkpoint KILL_STEP is committed (Orbax renames its folder to the step number
    # last) and before the next one: the rerun must resume from it. Steps take tens of seconds here.
    committed = workdir / "checkpoints" / str(KILL_STEP)
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + timeout
        held = False
        try:
            while p.poll() is None and time.time() < deadline:
                if committed.is_dir():
                    held = True
                    os.kill(p.pid, signal.SIGKILL)
                    break
                time.sleep(0.2)
        finally:
            p.kill()
            p.wait()
    if not held:
        raise RehearsalError(f"the run to be killed ended (exit {p.returncode}) before checkpoint {KILL_STEP}; "
                             f"see {log}:\n{_tail(log)}")
    ck = workdir / "checkpoints"
    after_kill = sorted(int(d.name) for d in ck.iterdir() if d.name.isdigit())
    out = run_logged(cmd, workdir.parent / f"{workdir.name}-resumed.log", timeout)
    resumed_line = next((ln for ln in out.splitlines() if ln.startswith("Resumed from")), "")
    rows = read_metrics(workdir)
    diffs = {}
    for s in sorted(rows):
        if s <= KILL_STEP or s not in reference:
            continue
        for k, v in rows[s].items():
            if k.startswith("loss") and k in reference[s]:
                diffs[f"{s}/{k}"] = abs(float(v) - float(reference[s][k]))
    return {"signal": "SIGKILL", "returncode": p.returncode, "checkpoints_after_kill": after_kill,
            "resumed_line": resumed_line, "compared": sorted(diffs),
            "max_abs_diff": max(diffs.values()) if diffs else None,
            "losses_resumed": {s: rows[s]["loss"] for s in sorted(rows) if s > KILL_STEP}}


# (c) export ---------------------------------------------------------------------------------------
def export_torch(workdir: Path, export: Path, root: Path, timeout: float) -> dict:
    """`python -m plip_jax.convert to-torch` on the run's workdir (its latest checkpoint)."""
    pth = export / "plip.pth.tar"
    cmd = [sys.executable, "-m", "plip_jax.convert", "to-torch", "--checkpoint", str(workdir),
           "--out", str(pth), "--no-position-ids"]
    t0 = time.perf_counter()
    run_logged(cmd, root / "export.log", timeout)
    return {"command": " ".join(cmd[1:]), "export_s": time.perf_counter() - t0, "pth": str(pth),
            "pth_bytes": pth.stat().st_size}


# Parts (fresh processes) --------------------------------------------------------------------------
def build_setup(config) -> SimpleNamespace:
    """The run as pre-training builds it (plip_jax.trainers.build.pretraining, steps per epoch from
    the training stream: the lr schedule is compiled into the step, and the same program is what
    the persistent cache hands back), its training stream and the loop's base key."""
    import jax

    from plip_jax.data import sources
    from plip_jax.data.tokenizer import load_tokenizer
    from plip_jax.trainers import build

    tokenizer = load_tokenizer(config.data.tokenizer_dir, max_length=config.data.max_length)
    data = sources.open_train(config, tokenizer)
    built = build.pretraining(config, data.steps_per_epoch)
    run = built.run
    return SimpleNamespace(built=built, mesh=run.mesh, bsh=run.batch_sharding, data=data, abstract=run.abstract,
                           shardings=run.shardings, step_fn=run.step, target=run.target,
                           rng=jax.random.key(config.seed + 1))   # the loop's base key


def part_data(config, args) -> dict:
    """Build (or find) the procedural dataset of the config, timed."""
    from plip_jax.data import sources
    from tfds_synth_pedes import build as tb

    t0 = time.perf_counter()
    b = tb.build(config.data.name, config.data.config, sources.data_dir(config.data),
                 **dict(config.data.procedural))
    return {"name": f"{config.data.name}/{b.builder_config.name}", "data_dir": sources.data_dir(config.data),
            "build_s": time.perf_counter() - t0, "splits": {k: v.num_examples for k, v in b.info.splits.items()}}


def part_single(config, args) -> dict:
    """The one-device pieces, on the finished run: checkpoint timing, loss probe, state bytes at
    fsdp=1, and the exported .pth.tar in the PyTorch references."""
    s = build_setup(config)
    out = {"checkpoint": checkpoint_timing(s, Path(args.workdir), Path(args.copy_dir))}
    out["probe"] = loss_probe(config, s, Path(args.workdir))
    out["memory"] = memory_analysis(config, s)
    out["torch"] = torch_compare(config, args.workdir, args.pth)
    return out


def part_memory(config, args) -> dict:
    return memory_analysis(config, build_setup(config))


def checkpoint_timing(s: SimpleNamespace, workdir: Path, copy_dir: Path) -> dict:
    """Restore the run's step-KILL_STEP checkpoint (timed), save it again synchronously (timed)."""
    import jax

    from plip_jax.core import checkpoint as ckpt_lib

    src = ckpt_lib.Checkpointer(workdir / "checkpoints", max_to_keep=3, async_save=False)
    t0 = time.perf_counter()
    state, cfg, data_state = src.restore(s.target, step=KILL_STEP)
    jax.block_until_ready(state)
    restore_s = time.perf_counter() - t0
    dst = ckpt_lib.Checkpointer(copy_dir, max_to_keep=1, async_save=False)
    t0 = time.perf_counter()
    dst.save(KILL_STEP, state, cfg, data_state)
    dst.wait()
    save_s = time.perf_counter() - t0
    dst.close()
    src.close()
    leaves = jax.tree.leaves(state)
    out = {"restore_s": restore_s, "save_s": save_s, "saved_bytes": du_bytes(copy_dir / str(KILL_STEP)),
           "state_bytes": int(sum(x.size * x.dtype.itemsize for x in leaves)), "arrays": len(leaves)}
    shutil.rmtree(copy_dir, ignore_errors=True)
    return out


def loss_probe(config, s: SimpleNamespace, workdir: Path) -> dict:
    """Losses of the run's first PROBE_BATCHES training batches with the initial parameters
    (re-created from the seed, as the run made them) and with the last checkpoint's, through the
    run's own compiled step at step 0 (so the same dropout key): a falling-loss check that the
    batch-to-batch noise of a 6-step run cannot fake or hide. Batch 1 at the start must give the
    run's logged step-1 loss."""
    import jax
    import numpy as np

    from plip_jax.core import checkpoint as ckpt_lib
    from plip_jax.core import state as state_lib
    from plip_jax.trainers.pretrain import load_text_weights

    s.data.restore(None, 0)
    batches = [s.data.next_global(s.bsh) for _ in range(PROBE_BATCHES)]
    zero = np.zeros((), np.int32)

    def initial():
        return load_text_weights(config, s.built.fresh_state(config.seed), s.shardings)

    ck = ckpt_lib.Checkpointer(workdir / "checkpoints", max_to_keep=3, async_save=False)
    last = ck.latest_step()

    def final():
        return ck.restore(s.target, step=last)[0]

    def losses(make) -> dict[str, float]:
        rows = []
        for b in batches:   # a fresh state per batch: the step donates (consumes) its input state
            st = make()
            st = st.replace(step=state_lib.place(zero, s.shardings.step))
            _, m = s.step_fn(st, b, s.rng)
            rows.append({k: float(v) for k, v in jax.device_get(m).items() if k.startswith("loss")})
            del st
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"batch1_loss": rows[0]["loss"]}

    before = losses(initial)
    after = losses(final)
    ck.close()
    return {"batches": PROBE_BATCHES, "final_step": last, "before": before, "after": after,
            "falling": after["loss"] < before["loss"]}


def memory_analysis(config, s: SimpleNamespace) -> dict:
    """Per-device bytes of the state under config.mesh, from the compiled (never run) train step and
    from the state's shard shapes; which arrays stay whole on every device, and why."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding

    s.data.restore(None, 0)
    real = s.data.next_global(s.bsh)   # the real batch spec (shapes and dtypes of the pipeline)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s.bsh) for k, v in real.items()}
    del real
    t0 = time.perf_counter()
    compiled = s.step_fn.lower(s.target, batch, s.rng).compile()
    compile_s = time.perf_counter() - t0
    ma = compiled.memory_analysis()

    fsdp, min_size = int(s.mesh.shape["fsdp"]), int(config.mesh.fsdp_min_size)
    per_dev: dict[str, int] = {}
    glob: dict[str, int] = {}
    replicated: list[dict] = []

    def visit(path, a, sh: NamedSharding) -> None:
        coll = str(getattr(path[0], "name", path[0]))
        item = np.dtype(a.dtype).itemsize
        g = int(np.prod(a.shape, dtype=np.int64)) * item
        local = int(np.prod(sh.shard_shape(a.shape), dtype=np.int64)) * item
        per_dev[coll] = per_dev.get(coll, 0) + local
        glob[coll] = glob.get(coll, 0) + g
        if fsdp > 1 and local == g:
            why = ("scalar" if a.ndim == 0 else f"smaller than mesh.fsdp_min_size={min_size}"
                   if g // item < min_size else f"no dimension divisible by fsdp={fsdp}")
            replicated.append({"name": jax.tree_util.keystr(path), "collection": coll, "shape": list(a.shape),
                               "bytes": g, "why": why})

    jax.tree_util.tree_map_with_path(visit, s.abstract, s.shardings)
    batch_bytes = sum(int(np.prod(s.bsh.shard_shape(v.shape), dtype=np.int64)) * np.dtype(v.dtype).itemsize
                      for v in batch.values())
    by_reason: dict[str, dict] = {}
    by_coll: dict[str, dict] = {}
    for r in replicated:
        for key, table in ((r["why"], by_reason), (r["collection"], by_coll)):
            e = table.setdefault(key, {"arrays": 0, "bytes": 0})
            e["arrays"] += 1
            e["bytes"] += r["bytes"]
    xla = {k: int(getattr(ma, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                             "alias_size_in_bytes", "temp_size_in_bytes") if hasattr(ma, k)}
    return {
        "devices": jax.device_count(), "fsdp": fsdp, "fsdp_min_size": min_size, "batch": int(config.data.batch_size),
        "compile_s": compile_s,
        "params_opt_bytes_per_device": per_dev.get("params", 0) + per_dev.get("opt_state", 0),
        "state_bytes_per_device": sum(per_dev.values()), "state_bytes_global": sum(glob.values()),
        "per_device_by_collection": per_dev,
        "batch_bytes_per_device": batch_bytes,
        "xla": xla,
        # the step's arguments are the state, the batch and the key (8 bytes of key data)
        "xla_state_bytes_per_device": xla.get("argument_size_in_bytes", 0) - batch_bytes - 8,
        "replicated_bytes": sum(r["bytes"] for r in replicated), "replicated_arrays": len(replicated),
        "replicated_by_reason": by_reason, "replicated_by_collection": by_coll,
        "replicated_largest": sorted(replicated, key=lambda r: -r["bytes"])[:8],
    }


def torch_compare(config, workdir: str, pth: str) -> dict:
    """Strict load of the .pth.tar into the PyTorch references; embeddings against plip_jax.api."""
    import numpy as np
    import torch
    import transformers

    from plip_jax.api import from_pretrained
    from plip_jax.convert.torch_io import IMG_KEY, TEXT_PREFIX, TXT_KEY, read_arch_json
    from plip_jax.data import sources
    from tests.reference.torch_resnet import ModifiedResNet as TorchResNet

    m = from_pretrained(workdir)
    split = sources.open_eval(config, m.tokenizer, config.data.test_split)
    n = 4
    images = np.asarray(split["images"][:n])
    captions = list(split["captions"][:n])
    jax_img = m.encode_images(images)
    jax_txt = m.encode_texts(captions)

    obj = torch.load(pth, map_location="cpu", weights_only=True)
    arch = read_arch_json(pth)
    img = arch["image"]
    resnet = TorchResNet(layers=tuple(img["layers"]), output_dim=int(img["output_dim"]), heads=int(img["heads"]),
                         input_resolution=tuple(img["input_size"]), width=int(img["width"]), pool=img["pool"]).eval()
    resnet.load_state_dict(obj[IMG_KEY], strict=True)
    txt_sd = {k[len(TEXT_PREFIX):]: v for k, v in obj[TXT_KEY].items()}
    has_pooler = any(k.startswith("pooler.") for k in txt_sd)
    bert = transformers.BertModel(transformers.BertConfig(**arch["text"]), add_pooling_layer=has_pooler).eval()
    bert.load_state_dict(txt_sd, strict=True)

    mean = torch.tensor(arch["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(arch["std"], dtype=torch.float32).view(1, 3, 1, 1)
    x = (torch.from_numpy(m.preprocess_images(images)).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    tok = m.tokenizer(captions, max_length=int(m.config["max_length"]))
    ids = torch.from_numpy(np.asarray(tok["input_ids"], np.int64))
    mask = torch.from_numpy(np.asarray(tok["attention_mask"], np.int64))
    with torch.no_grad():
        t_img = resnet(x)[0].numpy()
        out = bert(input_ids=ids, attention_mask=mask)
        if m.recipe == "release":
            t_txt = out.pooler_output.numpy()
        else:
            w = mask[..., None].float()
            t_txt = ((out.last_hidden_state * w).sum(1) / w.sum(1).clamp(min=1.0)).numpy()

    def diff(a: np.ndarray, b: np.ndarray) -> dict:
        return {"max_abs_diff": float(np.max(np.abs(a - b))), "max_abs": float(np.max(np.abs(a))),
                "shape": list(a.shape)}

    return {"strict_image": True, "strict_text": True, "recipe": m.recipe, "pooler": has_pooler,
            "image_keys": len(obj[IMG_KEY]), "text_keys": len(txt_sd),
            "image": diff(jax_img, t_img), "text": diff(jax_txt, t_txt), "items": n}


PARTS = {"data": part_data, "single": part_single, "memory": part_memory}


# Report -------------------------------------------------------------------------------------------
def _gib(b: float | None) -> str:
    return "n/a" if b is None else (f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB")


def markdown_table(r: dict) -> str:
    run, ck, mem = r["run"], r["checkpoint"], r["memory"]
    m1, m8 = mem["fsdp1"], mem["fsdp8"]
    f = lambda v, p=1: "n/a" if v is None else f"{v:.{p}f}"  # noqa: E731
    head = ("| model | compile s | s/step | peak RSS | checkpoint | save s | restore s | "
            "params+opt state/device fsdp=1 | fsdp=8 (ratio) |")
    row = (f"| {r['size']} | {f(run.get('compile_s_first_step'))} | {f(run.get('s_per_step'), 2)} | "
           f"{_gib(run.get('peak_rss_bytes'))} | {_gib(run.get('checkpoint_bytes'))} | {f(ck['save_s'])} | "
           f"{f(ck['restore_s'])} | {_gib(m1['params_opt_bytes_per_device'])} | "
           f"{_gib(m8['params_opt_bytes_per_device'])} ({mem['ratio']:.3f}) |")
    return "\n".join([head, "|" + " --- |" * 9, row])


def summary_checks(r: dict) -> dict[str, bool]:
    """What the rehearsal must show, as booleans (the numbers are in the rest of the results)."""
    mem, ex = r["memory"], r["export"]
    diff = r["resume"]["max_abs_diff"]
    return {
        "first_line_says_random": "RANDOM" in r["run"]["first_line"],
        "losses_finite": r["run"]["finite"],
        "probe_loss_falling": r["checkpoint"]["probe"]["falling"],
        "checkpoint_restores": r["checkpoint"]["restore_s"] is not None,
        "resume_same_losses_1e-6": diff is not None and diff <= 1e-6,
        "export_strict_same_embeddings_1e-4": bool(ex["strict_image"] and ex["strict_text"]
                                                   and ex["image"]["max_abs_diff"] <= 1e-4
                                                   and ex["text"]["max_abs_diff"] <= 1e-4),
        "fsdp8_within_bound": mem["fsdp8"]["params_opt_bytes_per_device"] <= mem["fsdp8_bound"] + 1,
    }


def orchestrate(args: argparse.Namespace) -> dict:
    overrides: dict[str, Any] = dict(CUT_DOWN) if args.cut_down else {}
    if args.data_dir:
        overrides["data.data_dir"] = str(Path(args.data_dir).absolute())
    timeout = args.timeout or (900 if args.cut_down else 5400)
    root = Path(args.workroot).absolute() if args.workroot else Path(tempfile.mkdtemp(prefix="plip-rehearsal-"))
    root.mkdir(parents=True, exist_ok=True)
    for name in ("run", "killed", "ckpt-copy", "export", "xla_cache"):
        shutil.rmtree(root / name, ignore_errors=True)
    cache = root / "xla_cache"   # fresh: the first run's compile is cold, later runs hit it
    t_all = time.perf_counter()
    say = lambda msg: print(f"[rehearsal {time.perf_counter() - t_all:6.0f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    r: dict[str, Any] = {"size": "cut-down" if args.cut_down else "full", "config": CONFIG,
                         "overrides": overrides, "workroot": str(root),
                         "date": datetime.date.today().isoformat()}
    try:
        import jax

        r["versions"] = {"jax": jax.__version__, "python": sys.version.split()[0]}
    except ImportError:  # pragma: no cover
        pass
    r["host"] = {"cpus": os.cpu_count(), "load_avg_at_start": list(os.getloadavg())}
    r["env"] = {k: os.environ.get(k) for k in ("JAX_PLATFORMS", "XLA_FLAGS", "JAX_DISABLE_MOST_OPTIMIZATIONS")}
    if os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS") and not args.cut_down:
        say("warning: JAX_DISABLE_MOST_OPTIMIZATIONS is set: compile and step times are not the real ones")
    say("building the procedural dataset")
    r["data"] = run_part("data", overrides, root, timeout)
    say(f"(a) the run: {CONFIG}")
    r["run"] = rehearsal_run(root / "run", overrides, cache, timeout)
    say("(c) export to .pth.tar")
    r["export"] = export_torch(root / "run", root / "export", root, timeout)
    say("(a) checkpoint save / restore, loss probe; (d) state bytes at fsdp=1; (c) the PyTorch references")
    single = run_part("single", overrides, root, timeout, cache=str(cache), workdir=str(root / "run"),
                      copy_dir=str(root / "ckpt-copy"), pth=r["export"]["pth"])
    r["checkpoint"] = {"bytes": r["run"].get("checkpoint_bytes"), **single["checkpoint"], "probe": single["probe"]}
    r["export"].update(single["torch"])
    m1 = single["memory"]
    reference = read_metrics(root / "run")
    if not args.keep:
        shutil.rmtree(root / "run" / "checkpoints", ignore_errors=True)   # disk: a few GB at full size
    say(f"(b) kill after checkpoint {KILL_STEP}, resume")
    r["resume"] = kill_and_resume(root / "killed", overrides, cache, timeout, reference)
    if not args.keep:
        shutil.rmtree(root / "killed" / "checkpoints", ignore_errors=True)
    # fsdp=1 above lowered the run's own step (its compiled program came from the cache); the
    # fsdp=8 step needs a batch that splits over 8 devices. The state's bytes do not depend on it.
    mem8 = {**overrides, "mesh.fsdp": MEMORY_DEVICES}
    batch = int(load_config(overrides).data.batch_size)
    if batch % MEMORY_DEVICES:
        mem8["data.batch_size"] = MEMORY_DEVICES * math.ceil(batch / MEMORY_DEVICES)
    say(f"(d) state bytes per device, fsdp={MEMORY_DEVICES} ({MEMORY_DEVICES} fake CPU devices)")
    m8 = run_part("memory", mem8, root, timeout, devices=MEMORY_DEVICES, cache=str(cache))
    rep8 = sum(m8["replicated_by_collection"].get(c, {}).get("bytes", 0) for c in ("params", "opt_state"))
    one, eight = m1["params_opt_bytes_per_device"], m8["params_opt_bytes_per_device"]
    r["memory"] = {"fsdp1": m1, "fsdp8": m8, "ratio": eight / one,
                   "replicated_params_opt_bytes": rep8,
                   # what fsdp=8 may hold at most: 1/8 of the sharded part plus the replicated part
                   "fsdp8_bound": (one - rep8) / MEMORY_DEVICES + rep8,
                   "why_replicated": "arrays below mesh.fsdp_min_size (BatchNorm scales/biases and running "
                                     "statistics, LayerNorms, biases), scalars (step, optimizer counts), "
                                     "and arrays with no dimension divisible by fsdp stay whole on every device"}
    r["checks"] = summary_checks(r)
    r["total_s"] = time.perf_counter() - t_all
    say("done")
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cut-down", action="store_true", help="the small version (tests, a few minutes)")
    ap.add_argument("--workroot", help="folder for the runs (default: a new temporary folder)")
    ap.add_argument("--data-dir", help="TFDS data_dir of the procedural build (default: config/$TFDS_DATA_DIR)")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"), help="where the results JSON goes")
    ap.add_argument("--timeout", type=float, default=0, help="seconds per subprocess (default 900 / 5400)")
    ap.add_argument("--keep", action="store_true", help="keep the runs' checkpoints")
    # internal: one piece in a fresh process
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    ap.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--copy-dir", help=argparse.SUPPRESS)
    ap.add_argument("--pth", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.part:
        if args.cache:
            from plip_jax.core import compile_cache

            compile_cache.enable(args.cache)
        out = PARTS[args.part](load_config(json.loads(args.overrides)), args)
        Path(args.result).write_text(json.dumps(out, indent=2))
        return 0
    try:
        r = orchestrate(args)
    except (RehearsalError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"rehearsal-{r['date']}{'-cut-down' if args.cut_down else ''}.json"
    (out_dir / name).write_text(json.dumps(r, indent=2))
    print(markdown_table(r))
    print(f"\nchecks: {json.dumps(r['checks'])}")
    print(f"results: {out_dir / name}")
    print("RESULT " + json.dumps({"path": str(out_dir / name)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
