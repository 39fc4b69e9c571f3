"""Benchmark: PLIP training-step speed in JAX (issue 7).

Two kinds of work, each for several batch sizes in fp32 and bf16 (bf16 compute, fp32 params):
  anchor  the work of the PyTorch anchor: ModifiedResNet-50 (256x128, attention pool) + BERT-base
          with embeddings and layers 0-7 frozen, CMPM loss, AdamW. Gradients and optimizer state
          exist only for the trainable parameters (the frozen ones are a separate, undonated input).
  full    the full PLIP objective with the real model and step: plip_jax.models.plip.PLIP (two image
          and two text passes, CMPM + colorization + attribute heads) and plip_jax.trainers.pretrain_step.
Batches come from plip_jax.data.synthetic and sit on the device before timing. Per row: compile
seconds, then warm-up, then the median of --steps steps each ended by block_until_ready (samples/s
and step ms come from it), plus the same steps dispatched back to back with one sync at the end
(step_ms_pipelined); FLOPs from XLA's cost analysis of the compiled step; peak device memory from
the allocator (GPU, exact with --isolate: one process per row) or XLA's memory analysis (CPU).

Imports only jax, flax, optax, numpy and plip_jax (no tfds/grain/ml_collections: the GPU image
lacks them). Examples:
  python bench/train_step.py --smoke                              # tiny shapes, CPU, seconds
  python bench/train_step.py --rows anchor:bf16:256,full:bf16:128 --isolate --time-budget 240
Writes bench/results/train_step-<date>-<card>[-smoke].json (or --out).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402  (bench/common.py)
import flax  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import traverse_util  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

from plip_jax.core import optim, sharding
from plip_jax.core import state as state_lib
from plip_jax.data import synthetic, transforms  # noqa: E402
from plip_jax.losses.cmpm import cmpm_loss  # noqa: E402
from plip_jax.models.bert import Bert, BertConfig  # noqa: E402
from plip_jax.models.plip import PLIP  # noqa: E402
from plip_jax.models.resnet import ModifiedResNet  # noqa: E402
from plip_jax.models.text_tower import resolve  # noqa: E402
from plip_jax.trainers import pretrain_step as train_step  # noqa: E402

FORBIDDEN = ("tensorflow", "tensorflow_datasets", "grain", "ml_collections")
DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}
WORKS = ("anchor", "full", "mini")  # mini: CPU only (configs/pretrain.py:mini via bench/mini_work.py)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Model and batch shapes of one benchmark setting."""

    image_layers: tuple[int, ...] = (3, 4, 6, 3)
    image_width: int = 64
    image_heads: int = 8
    output_dim: int = 768
    input_size: tuple[int, int] = (256, 128)
    text: str = "random:bert-base"   # plip_jax.models.text_tower.resolve name (random init either way)
    frozen_layers: int = 8
    max_length: int = 64
    max_masked: int = 24
    fpn_dim: int = 256
    iap_heads: int = 12
    iap_mlp_dim: int = 3072


PAPER = Sizes()
SMOKE = Sizes(image_layers=(1, 1, 1, 1), image_width=16, image_heads=4, output_dim=64, input_size=(64, 32),
              text="random:2x64x2", frozen_layers=1, max_length=16, max_masked=4, fpn_dim=16, iap_heads=2,
              iap_mlp_dim=128)


def frozen_patterns(k: int) -> tuple[str, ...]:
    """Regexes of PLIP's frozen text parameters: embeddings + encoder layers 0..k-1."""
    if k <= 0:
        return ()
    layers = "|".join(str(i) for i in range(k))
    return (r"^text/embeddings/.*", rf"^text/encoder/layer/({layers})/.*")


class AnchorModel(nn.Module):
    """The anchor's model: image encoder + text encoder (pooler output), no pretext heads."""

    sizes: Sizes
    text_config: BertConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        s = self.sizes
        self.image = ModifiedResNet(layers=s.image_layers, width=s.image_width, heads=s.image_heads,
                                    output_dim=s.output_dim, input_size=s.input_size, pool="attn",
                                    dtype=self.dtype)
        self.text = Bert(self.text_config, dtype=self.dtype, frozen_layers=s.frozen_layers)

    def __call__(self, batch: dict[str, jax.Array], train: bool = True) -> dict[str, jax.Array]:
        colour = transforms.normalize(batch["image"]).astype(self.dtype)
        image_emb, _ = self.image(colour, train=train)
        _, pooled = self.text(batch["input_ids"], batch["attention_mask"], deterministic=not train)
        return {"image_emb": image_emb, "text_emb": pooled}


@flax.struct.dataclass
class AnchorState:
    step: jax.Array
    trainable: Any       # flat {'/'-joined name: array} of the trainable parameters
    batch_stats: Any
    opt_state: Any


def split_params(params: Any, patterns: tuple[str, ...]) -> tuple[dict, dict]:
    """(trainable, frozen) flat dicts keyed by '/'-joined names."""
    flat = traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
    frozen = {k: v for k, v in flat.items() if any(re.fullmatch(p, k) for p in patterns)}
    return {k: v for k, v in flat.items() if k not in frozen}, frozen


def make_anchor_step(model: AnchorModel, tx: optax.GradientTransformation) -> Callable:
    """(state, frozen, batch, rng) -> (state, metrics): grads of the trainable parameters only."""

    def step(state: AnchorState, frozen: dict, batch: dict, rng: jax.Array) -> tuple[AnchorState, dict]:
        rng = jax.random.fold_in(rng, state.step)

        def loss_fn(trainable: dict):
            params = traverse_util.unflatten_dict({**trainable, **frozen}, sep="/")
            out, mutated = model.apply({"params": params, "batch_stats": state.batch_stats}, batch, train=True,
                                       mutable=["batch_stats"], rngs={"dropout": rng})
            return cmpm_loss(out["image_emb"], out["text_emb"], batch["id"]), mutated["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable)
        updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        return AnchorState(step=state.step + 1, trainable=trainable, batch_stats=batch_stats,
                           opt_state=opt_state), {"loss": loss}

    return step


def paper_optim_cfg(name: str, frozen: tuple[str, ...]) -> types.SimpleNamespace:
    """configs/common.optim_config() as a plain namespace (ml_collections is not on the GPU image)."""
    return types.SimpleNamespace(
        name=name, lr=2e-3, scale_lr_by_batch=True, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, weight_decay=0.02,
        schedule="step", warmup_epochs=10.0, decay_epochs=(30.0, 50.0), decay_factor=0.1, clip_norm=0.0,
        grad_accum_steps=1, frozen=frozen, lr_multipliers=((r"^text/.*", 0.1),),
        no_decay=(r".*/bias$", r".*/scale$", r".*LayerNorm.*", r".*/bn\d?/.*"))


LOSS_CFG = types.SimpleNamespace(weights={"ivlc": 1.0, "tic": 0.02, "iap": 0.1}, cmpm_eps=1e-8,
                                 cosine_logits=False, tic_reduction="sum_sq")


def device_batches(sizes: Sizes, batch: int, vocab: int, mesh, n: int = 2) -> list[dict]:
    """`n` distinct synthetic batches, already on the device(s) in the batch sharding."""
    sh = sharding.batch_sharding(mesh)
    out = []
    for i in range(n):
        b = synthetic.synthetic_batch(batch, sizes.input_size, sizes.max_length, sizes.max_masked,
                                      vocab_size=vocab, seed=i)
        out.append(jax.device_put(b, sh))
    return out


def _cost_flops(stage) -> float | None:
    """FLOPs of one step from XLA's cost analysis of a lowered (or compiled) computation.

    Use the lowered, pre-optimisation HLO: once XLA:GPU has turned convolutions and GEMMs into
    cuDNN/cuBLAS custom calls the compiled module's count misses them (seen on an H100: 3.4 vs
    40.3 GFLOP/sample for the anchor; PyTorch's counter gives 40.9 for the same work)."""
    try:
        ca = stage.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    flops = (ca or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _memory_estimate(compiled) -> float | None:
    try:
        m = compiled.memory_analysis()
        total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                 - m.alias_size_in_bytes + getattr(m, "generated_code_size_in_bytes", 0))
        return total / 2**30
    except Exception:
        return None


def _device_peak_gib() -> float | None:
    stats = jax.local_devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 2**30


def create_state_compat(model, tx, example_batch: dict, seed: int, mesh):
    """plip_jax.core.state.create_state across its two signatures (int `seed` now, a PRNG key before)."""
    import inspect

    params = list(inspect.signature(state_lib.create_state).parameters)
    arg = seed if params[3] == "seed" else jax.random.key(seed)
    return state_lib.create_state(model, tx, example_batch, arg, mesh)


def build_row(work: str, dtype: str, batch: int, sizes: Sizes, full_optimizer: str) -> tuple[Callable, tuple, Callable]:
    """(jitted step, its initial args, advance(args, outputs) -> next args) for one row."""
    text_cfg, _ = resolve(sizes.text)
    mesh = sharding.make_mesh()
    sharding.check_batch_size(batch, mesh)
    repl = NamedSharding(mesh, P())
    batches = device_batches(sizes, batch, text_cfg.vocab_size, mesh)
    rng = jax.device_put(jax.random.key(0), repl)
    init_rng = jax.random.key(0, impl="rbg")  # RBG: init compiles much faster than threefry on CPU
    patterns = frozen_patterns(sizes.frozen_layers)
    if work == "anchor":
        model = AnchorModel(sizes, text_cfg, DTYPES[dtype])
        variables = jax.jit(lambda r: model.init({"params": r, "dropout": r}, batches[0], train=True),
                            out_shardings=repl)(init_rng)
        trainable, frozen = split_params(variables["params"], patterns)
        tx = optax.adamw(1e-4, weight_decay=1e-2)
        st = jax.jit(lambda t, bs: AnchorState(step=jnp.zeros((), jnp.int32), trainable=t, batch_stats=bs,
                                                opt_state=tx.init(t)), out_shardings=repl)(
            jax.tree.map(jnp.copy, trainable), variables["batch_stats"])  # copies: never donate init buffers
        fn = jax.jit(make_anchor_step(model, tx), donate_argnums=(0,))
        args = (st, frozen, batches[0], rng)
        advance = lambda a, out, i: (out[0], a[1], batches[i % len(batches)], a[3])
        return fn, args, advance
    if work == "mini":
        if dtype != "fp32":
            raise ValueError("the mini work is the embedded default's fp32 step")
        import mini_work  # bench/mini_work.py: the trainer's own step of configs/pretrain.py:mini

        return mini_work.jax_step(batch)
    if work == "full":
        model = PLIP(image_layers=sizes.image_layers, image_width=sizes.image_width, image_heads=sizes.image_heads,
                     output_dim=sizes.output_dim, input_size=sizes.input_size, text_config=text_cfg,
                     recipe="release", frozen_text_layers=sizes.frozen_layers, fpn_dim=sizes.fpn_dim,
                     iap_heads=sizes.iap_heads, iap_mlp_dim=sizes.iap_mlp_dim, dtype=DTYPES[dtype])
        host_example = jax.tree.map(np.asarray, batches[0])
        shapes = jax.eval_shape(lambda r: state_lib.init_variables(model, r, host_example), jax.random.key(0))
        tx, schedule = optim.make_optimizer(paper_optim_cfg(full_optimizer, patterns), shapes["params"],
                                            steps_per_epoch=1000, total_steps=100_000, global_batch=batch)
        st, st_sh = create_state_compat(model, tx, host_example, 0, mesh)
        step = train_step.make_train_step(model, tx, LOSS_CFG, schedule)
        fn = train_step.jit_train_step(step, st_sh, sharding.batch_sharding(mesh), mesh)
        args = (st, batches[0], rng)
        advance = lambda a, out, i: (out[0], batches[i % len(batches)], a[2])
        return fn, args, advance
    raise ValueError(f"unknown work {work!r}; expected one of {WORKS}")


def run_row(work: str, dtype: str, batch: int, sizes: Sizes, steps: int, warmup: int,
            full_optimizer: str) -> dict[str, Any]:
    """Compile, warm up and time one (work, dtype, batch) row in this process."""
    row: dict[str, Any] = {"work": work, "impl": "jax", "mode": "jit", "dtype": dtype, "batch": batch,
                           "steps": steps, "warmup": warmup}
    fn, args, advance = build_row(work, dtype, batch, sizes, full_optimizer)
    t0 = time.perf_counter()
    lowered = fn.lower(*args)
    compiled = lowered.compile()
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    row["flops_per_step"] = _cost_flops(lowered) or _cost_flops(compiled)
    row["flops_source"] = "xla_cost_analysis_lowered_hlo"
    est = _memory_estimate(compiled)
    row["xla_memory_estimate_gib"] = round(est, 3) if est is not None else None

    i = 0
    out = None
    for _ in range(warmup):
        out = compiled(*args)
        i += 1
        args = advance(args, out, i)
    jax.block_until_ready(out)
    times = []
    for _ in range(steps):  # per-step: dispatch + wait
        t = time.perf_counter()
        out = compiled(*args)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t)
        i += 1
        args = advance(args, out, i)
    t = time.perf_counter()
    for _ in range(steps):  # pipelined: no host sync inside the loop
        out = compiled(*args)
        i += 1
        args = advance(args, out, i)
    jax.block_until_ready(out)
    pipelined = (time.perf_counter() - t) / steps
    loss = float(out[1]["loss"])
    if not np.isfinite(loss):
        raise FloatingPointError(f"{work}/{dtype}/b{batch}: non-finite loss {loss}")
    row.update(step_ms=round(common.median_ms(times), 3), step_ms_pipelined=round(1e3 * pipelined, 3),
               step_ms_min=round(1e3 * min(times), 3), loss=round(loss, 4), status="ok")
    peak = _device_peak_gib()
    row["peak_mem_gib"] = round(peak if peak is not None else (est or 0.0), 3) if (peak or est) else None
    row["peak_mem_source"] = "allocator" if peak is not None else "xla_memory_analysis"
    return row


def parse_rows(spec: str) -> list[tuple[str, str, int]]:
    """'anchor:bf16:128,full:fp32:64' -> [(work, dtype, batch), ...] (order = priority)."""
    rows = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            work, dtype, batch = part.split(":")
            rows.append((work, dtype, int(batch)))
        except ValueError:
            raise SystemExit(f"--rows entry {part!r} must be WORK:DTYPE:BATCH, e.g. anchor:bf16:128") from None
        if work not in WORKS or dtype not in DTYPES:
            raise SystemExit(f"--rows entry {part!r}: work in {WORKS}, dtype in {tuple(DTYPES)}")
    return rows


def device_info() -> dict[str, Any]:
    d = jax.devices()[0]
    info = {"platform": d.platform, "kind": d.device_kind, "count": jax.device_count(),
            "card_family": common.card_family(d.device_kind)}
    try:
        import jax.extend as jex

        info["platform_version"] = jex.backend.get_backend().platform_version
    except Exception:
        pass
    return info


def _run_isolated(r: tuple[str, str, int], a: argparse.Namespace, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--row", ":".join(map(str, r)), "--row-out", str(out),
               "--steps", str(a.steps), "--warmup", str(a.warmup), "--full-optimizer", a.full_optimizer]
        if a.smoke:
            cmd.append("--smoke")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": f"error: timeout after {timeout:.0f}s"}
        if p.returncode != 0 or not out.is_file():
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"]
            return {"status": f"error: exit {p.returncode}: {tail[0][:300]}"}
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny model and batches (CPU check of the whole path)")
    p.add_argument("--rows", default=None, help="WORK:DTYPE:BATCH,... in priority order")
    p.add_argument("--steps", type=int, default=None, help="timed steps per row (default 20, smoke 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3, smoke 1)")
    p.add_argument("--full-optimizer", choices=("adan", "adamw"), default="adan",
                   help="optimizer of the full-objective rows (paper: adan)")
    p.add_argument("--isolate", action="store_true", help="one subprocess per row (exact peak memory, OOM-safe)")
    p.add_argument("--time-budget", type=float, default=0.0, help="seconds; rows not started by then are skipped")
    p.add_argument("--row-timeout", type=float, default=300.0, help="seconds per isolated row")
    p.add_argument("--row-grace", type=float, default=120.0,
                   help="with --time-budget: an isolated row may run this long past the budget")
    p.add_argument("--out", default=None, help="results file (default bench/results/train_step-<date>-<card>.json)")
    p.add_argument("--also-dir", action="append", default=[], help="also copy the results file here (repeatable)")
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)
    p.add_argument("--row-out", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    sizes = SMOKE if a.smoke else PAPER
    if a.smoke:  # XLA:CPU spends minutes optimising even the tiny model; smoke numbers are not timings
        jax.config.update("jax_disable_most_optimizations", True)
    a.steps = a.steps if a.steps is not None else (3 if a.smoke else 20)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.smoke else 3)
    if a.steps < 1 or a.warmup < 0:
        raise SystemExit("--steps must be >= 1 and --warmup >= 0")

    if a.row:  # child of --isolate
        (work, dtype, batch), = parse_rows(a.row)
        row = run_row(work, dtype, batch, sizes, a.steps, a.warmup, a.full_optimizer)
        Path(a.row_out).write_text(json.dumps(row))
        return 0

    default_rows = ("anchor:fp32:4,anchor:bf16:4,full:fp32:4" if a.smoke else
                    "anchor:bf16:128,anchor:bf16:256,anchor:fp32:128,full:bf16:128,anchor:bf16:512,"
                    "full:bf16:256,anchor:fp32:256,full:fp32:128,full:bf16:512,full:fp32:256")
    plan = parse_rows(a.rows or default_rows)
    dev = device_info()

    def save(rows: list[dict]) -> list[Path]:
        versions = {"jax": jax.__version__, **common.package_versions(("jaxlib", "flax", "optax", "numpy")),
                    "default_matmul_precision": str(jax.config.jax_default_matmul_precision)}
        notes = ["fp32 rows use XLA's default precision (TF32 tensor cores on Ampere/Hopper); MFU of fp32 rows is "
                 "against the TF32 dense peak, bf16 rows against the bf16 dense peak.",
                 "anchor = ModifiedResNet-50 + BERT-base (embeddings + layers 0-7 frozen) + CMPM + AdamW; "
                 f"full = PLIP (ivlc+tic+iap) with optimizer {a.full_optimizer}.",
                 "samples_per_s = batch / median per-step time (each step synced); step_ms_pipelined = no sync."]
        if a.smoke:
            notes.append("smoke: tiny shapes compiled with jax_disable_most_optimizations; not a timing.")
        if not a.isolate and dev["platform"] != "cpu":
            notes.append("peak_mem_gib is the process-wide allocator peak so far (rows share a process).")
        forbidden = sorted(m for m in FORBIDDEN if m in sys.modules)
        doc = common.make_result("train_step", dev, versions, rows,
                                 config={"sizes": dataclasses.asdict(sizes), "isolate": a.isolate,
                                         "full_optimizer": a.full_optimizer, "forbidden_imports": forbidden},
                                 smoke=a.smoke, notes=notes)
        common.validate_result(doc)
        out = a.out or (common.RESULTS_DIR /
                        f"train_step-{common.today()}-{common.card_slug(dev['kind'])}{'-smoke' if a.smoke else ''}.json")
        paths = common.write_json(doc, out, a.also_dir)
        return paths

    start = time.perf_counter()
    rows = []
    for work, dtype, batch in plan:
        elapsed = time.perf_counter() - start
        base = {"work": work, "impl": "jax", "mode": "jit", "dtype": dtype, "batch": batch,
                "steps": a.steps, "warmup": a.warmup}
        if a.time_budget and elapsed > a.time_budget:
            rows.append(common.finish_row({**base, "status": "skipped: time budget"}, dev["kind"]))
            continue
        print(f"[train_step] {work} {dtype} b{batch} ...", flush=True)
        if a.isolate:
            timeout = a.row_timeout if not a.time_budget else min(a.row_timeout, a.time_budget - elapsed + a.row_grace)
            row = {**base, **_run_isolated((work, dtype, batch), a, timeout)}
        else:
            try:
                row = run_row(work, dtype, batch, sizes, a.steps, a.warmup, a.full_optimizer)
            except Exception as e:  # e.g. out of memory: record it, keep going
                row = {**base, "status": f"error: {type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        rows.append(common.finish_row(row, dev["kind"]))
        r = rows[-1]
        print(f"  -> {r['status']}  {r['samples_per_s']} samples/s  {r['step_ms']} ms  compile {r['compile_s']} s",
              flush=True)
        save(rows)  # after every row: a hard timeout still leaves the finished rows

    paths = save(rows)
    forbidden = sorted(m for m in FORBIDDEN if m in sys.modules)
    print(common.format_table(rows))
    print("wrote", ", ".join(map(str, paths)))
    if forbidden:
        print(f"WARNING: imported {forbidden}; the GPU image does not have them", file=sys.stderr)
    return 0 if any(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
