"""Benchmark: PLIP training-step speed in JAX (bench/NOTES.md).

Every row is built by the run builder (plip_jax.trainers.build), so what is timed is the step a
real run executes (mesh, optimizer, shardings, donated state, the engine's step of core.step):
  anchor  the work of the PyTorch anchor: ModifiedResNet-50 (256x128, attention pool) + BERT-base
          with embeddings and layers 0-7 frozen, CMPM loss, AdamW at a constant lr
          (`build.make_run` with this file's loss; the frozen layers get no optimizer state).
  full    the full PLIP objective: configs/pretrain.py:release (two image and two text passes,
          CMPM + colorization + attribute heads, Adan) with a random BERT-base-shaped tower
          (`build.pretraining`); TIC's reduction is sum_sq, as the PyTorch twin's.
  mini    configs/pretrain.py:mini, the embedded default's step (`build.pretraining`), CPU fp32.
Batches come from plip_jax.data.synthetic and sit on the device before timing. `time_step` is the
one way a step is timed in bench/ (bench/probes/mini_step_profile.py uses it too): compile
seconds, then warm-up, then the median of --steps steps each ended by block_until_ready (samples/s
and step ms come from it), plus the same steps dispatched back to back with one sync at the end
(step_ms_pipelined); FLOPs from XLA's cost analysis of the lowered step; peak device memory from
the allocator (GPU, exact with --isolate: one process per row) or XLA's memory analysis (CPU).

Imports jax, flax, optax, numpy, ml_collections and plip_jax, no tfds/grain (the lent GPU image has
none of them, nor ml_collections: bench/README.md "On a GPU machine"). Examples:
  python bench/train_step.py --smoke                              # tiny shapes, CPU, seconds
  python bench/train_step.py --rows anchor:bf16:256,full:bf16:128 --isolate --time-budget 240
Writes bench/results/train_step-<date>-<card>[-smoke].json (or --out).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402  (bench/common.py)
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from plip_jax import config_parts  # noqa: E402
from plip_jax.core import state as state_lib  # noqa: E402
from plip_jax.data import synthetic, transforms  # noqa: E402
from plip_jax.losses.cmpm import cmpm_loss  # noqa: E402
from plip_jax.models.bert import Bert, BertConfig  # noqa: E402
from plip_jax.models.resnet import ModifiedResNet  # noqa: E402
from plip_jax.models.text_tower import resolve  # noqa: E402
from plip_jax.trainers import build  # noqa: E402

FORBIDDEN = ("tensorflow", "tensorflow_datasets", "grain")
DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}
WORKS = ("anchor", "full", "mini")  # mini: CPU only (configs/pretrain.py:mini)
MINI_STEPS_PER_EPOCH = 1050   # the default procedural build's (the lr schedule is compiled into the step)


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


def anchor_loss(model: AnchorModel) -> Callable:
    """The anchor's loss in the engine's form: (params, batch_stats, batch, rng) -> (loss, (metrics, stats))."""

    def loss_fn(params: Any, batch_stats: Any, batch: dict, rng: jax.Array):
        out, mutated = model.apply({"params": params, "batch_stats": batch_stats}, batch, train=True,
                                   mutable=["batch_stats"], rngs={"dropout": rng})
        loss = cmpm_loss(out["image_emb"], out["text_emb"], batch["id"])
        return loss, ({"loss": loss}, mutated["batch_stats"])

    return loss_fn


def anchor_config(sizes: Sizes, batch: int) -> ml_collections.ConfigDict:
    """The anchor's run: AdamW lr 1e-4, weight decay 1e-2, constant lr, the frozen text layers frozen."""
    optim_cfg = config_parts.optim_config()
    optim_cfg.update(dict(name="adamw", lr=1e-4, scale_lr_by_batch=False, weight_decay=1e-2,
                          schedule="constant", warmup_epochs=0.0, frozen=frozen_patterns(sizes.frozen_layers),
                          lr_multipliers=(), no_decay=()))
    return ml_collections.ConfigDict(dict(
        seed=0, optim=optim_cfg, data=dict(batch_size=int(batch)),
        mesh=dict(data=-1, fsdp=1, fsdp_min_size=2**18), train=dict(steps=100_000, epochs=0.0)))


def full_config(sizes: Sizes, dtype: str, batch: int, optimizer: str) -> ml_collections.ConfigDict:
    """configs/pretrain.py:release at `sizes`, a random text tower (sizes.text), `optimizer`."""
    c = config_parts.load(f"{ROOT / 'configs' / 'pretrain.py'}:release")
    c.model.dtype = "bfloat16" if dtype == "bf16" else "float32"
    c.model.image.update(dict(layers=sizes.image_layers, width=sizes.image_width, heads=sizes.image_heads,
                              output_dim=sizes.output_dim, input_size=sizes.input_size))
    c.model.text.init = sizes.text
    c.model.text.frozen_layers = sizes.frozen_layers
    c.model.tic.fpn_dim = sizes.fpn_dim
    c.model.iap.update(dict(heads=sizes.iap_heads, mlp_dim=sizes.iap_mlp_dim))
    c.optim.name = optimizer
    c.optim.frozen = frozen_patterns(sizes.frozen_layers)
    c.losses.tic_reduction = "sum_sq"   # as the PyTorch twin's (bench/torch_reference.py FULL_LOSS_CFG)
    c.data.batch_size = int(batch)
    c.data.max_length, c.data.max_masked = sizes.max_length, sizes.max_masked
    c.train.steps = 100_000
    return c


def mini_config(batch: int) -> ml_collections.ConfigDict:
    """configs/pretrain.py:mini at `batch` captions (each brings the config's 4 images)."""
    c = config_parts.load(f"{ROOT / 'configs' / 'pretrain.py'}:mini")
    c.data.batch_size = int(batch)
    return c


def host_batches(config: ml_collections.ConfigDict, vocab: int, n: int = 2) -> list[dict]:
    """`n` distinct synthetic host batches with the training spec of `config` (global batch)."""
    d = config.data
    return [synthetic.synthetic_batch(int(d.batch_size), tuple(config.model.image.input_size), int(d.max_length),
                                      int(d.max_masked), vocab_size=vocab, seed=i,
                                      images_per_caption=int(d.get("images_per_caption", 1)))
            for i in range(n)]


def _on_device(run: build.Run, host: list[dict]) -> tuple[list[dict], jax.Array]:
    """The batches in the run's batch sharding and a replicated key."""
    batches = [jax.device_put(h, run.batch_sharding) for h in host]
    rng = jax.device_put(jax.random.key(0), jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec()))
    return batches, rng


def pretraining_row(config: ml_collections.ConfigDict, steps_per_epoch: int,
                    seed: int = 0) -> tuple[Callable, tuple, Callable]:
    """(jitted step, initial args, advance) of a pre-training config, as `build.pretraining` builds it."""
    built = build.pretraining(config, steps_per_epoch)
    batches, rng = _on_device(built.run, host_batches(config, built.text_cfg.vocab_size))
    advance = lambda a, out, i: (out[0], batches[i % len(batches)], a[2])  # noqa: E731
    return built.run.step, (built.fresh_state(seed), batches[0], rng), advance


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


def build_row(work: str, dtype: str, batch: int, sizes: Sizes, full_optimizer: str) -> tuple[Callable, tuple, Callable]:
    """(jitted step, its initial args, advance(args, outputs, i) -> next args) for one row."""
    if work == "anchor":
        text_cfg, _ = resolve(sizes.text)
        model = AnchorModel(sizes, text_cfg, DTYPES[dtype])
        host = [synthetic.synthetic_batch(batch, sizes.input_size, sizes.max_length, sizes.max_masked,
                                          vocab_size=text_cfg.vocab_size, seed=i) for i in range(2)]
        example = {k: v[:2] for k, v in host[0].items()}
        abstract = state_lib.abstract_state(model, optax.identity(), example, state_lib.init_key(0))
        run = build.make_run(anchor_config(sizes, batch), loss_fn=anchor_loss(model), params=abstract.params,
                             batch_stats=abstract.batch_stats, steps_per_epoch=1000)
        batches, rng = _on_device(run, host)
        state = state_lib.materialize(model, run.tx, example, 0, run.shardings)
        advance = lambda a, out, i: (out[0], batches[i % len(batches)], a[2])  # noqa: E731
        return run.step, (state, batches[0], rng), advance
    if work == "mini":
        if dtype != "fp32":
            raise ValueError("the mini work is the embedded default's fp32 step")
        return pretraining_row(mini_config(batch), MINI_STEPS_PER_EPOCH)
    if work == "full":
        return pretraining_row(full_config(sizes, dtype, batch, full_optimizer), 1000)
    raise ValueError(f"unknown work {work!r}; expected one of {WORKS}")


def time_step(fn: Callable, args: tuple, advance: Callable, steps: int, warmup: int,
              pipelined: bool = True) -> dict[str, Any]:
    """Compile, warm up and time a jitted step: the one way bench/ times a step.

    Returns compile_s, flops_per_step (XLA's cost analysis of the lowered step), XLA's memory
    estimate, the median and min of `steps` steps each synced, with `pipelined` the time per step
    of `steps` more dispatched back to back (one sync at the end), and the last loss."""
    row: dict[str, Any] = {}
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
    if pipelined:
        t = time.perf_counter()
        for _ in range(steps):  # pipelined: no host sync inside the loop
            out = compiled(*args)
            i += 1
            args = advance(args, out, i)
        jax.block_until_ready(out)
        row["step_ms_pipelined"] = round(1e3 * (time.perf_counter() - t) / steps, 3)
    row.update(step_ms=round(common.median_ms(times), 3), step_ms_min=round(1e3 * min(times), 3),
               loss=float(out[1]["loss"]))
    return row


def run_row(work: str, dtype: str, batch: int, sizes: Sizes, steps: int, warmup: int,
            full_optimizer: str) -> dict[str, Any]:
    """Compile, warm up and time one (work, dtype, batch) row in this process."""
    row: dict[str, Any] = {"work": work, "impl": "jax", "mode": "jit", "dtype": dtype, "batch": batch,
                           "steps": steps, "warmup": warmup}
    fn, args, advance = build_row(work, dtype, batch, sizes, full_optimizer)
    row.update(time_step(fn, args, advance, steps, warmup))
    if not np.isfinite(row["loss"]):
        raise FloatingPointError(f"{work}/{dtype}/b{batch}: non-finite loss {row['loss']}")
    row.update(loss=round(row["loss"], 4), status="ok")
    peak, est = _device_peak_gib(), row["xla_memory_estimate_gib"]
    row["peak_mem_gib"] = round(peak if peak is not None else est, 3) if (peak or est) else None
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
                 f"full = PLIP (ivlc+tic+iap) with optimizer {a.full_optimizer}; every row built by "
                 "plip_jax.trainers.build.",
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
