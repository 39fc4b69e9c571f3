"""Benchmark: the anchor work (a) in PyTorch, to compare the JAX step with (bench/NOTES.md).

ModifiedResNet-50 at 256x128 (tests/reference/torch_resnet.py, the module of the parity tests) +
transformers BertModel(BertConfig()) randomly initialised (bert-base shape, nothing downloaded) with
embeddings and layers 0-7 frozen (requires_grad=False, so autograd never goes below layer 8), the
CMPM loss in the official code form (Downstreams/CMPM-C/loss.py; fp32), and AdamW over the trainable parameters. Same
synthetic batches as the JAX bench (plip_jax.data.synthetic), on the device before timing; images
are uint8 NHWC and normalised inside the step, as in JAX.

Work `full` (rows `full:MODE:DTYPE:BATCH`): the whole PLIP objective in PyTorch, the twin of the JAX
step (tests/reference/torch_plip.py: release recipe, two image passes incl. the TIC gray pass, plain
and masked caption passes, colorization decoder, attribute head, CMPM + colorization + attribute
losses, the official Adan with text lr x0.1 and no decay on 1-D leaves), for the JAX bench's `full` rows.

Modes: eager (fp32 or bf16 autocast), channels_last (bf16 autocast, NHWC image tower), compile
(torch.compile of model+loss, channels_last, bf16 autocast; backward compiled by AOTAutograd; the
AdamW step stays eager/foreach). Per row: median of --steps steps each ended by a device sync,
compile/first-step seconds, peak allocated memory, FLOPs from torch.utils.flop_counter (one eager
step of the same model and batch), TFLOP/s and MFU.
  python bench/torch_reference.py --smoke            # tiny shapes on CPU; compile uses aot_eager
  python bench/torch_reference.py --rows compile:bf16:256,eager:bf16:128 --time-budget 150
  python bench/torch_reference.py --rows full:eager:bf16:128,full:compile:bf16:128
Writes bench/results/torch_reference-<date>-<card>[-smoke].json (or --out).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402  (bench/common.py)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from transformers import BertConfig, BertModel  # noqa: E402

from plip_jax.data import synthetic  # noqa: E402  (numpy only)

MEAN = (0.357, 0.323, 0.328)
STD = (0.252, 0.242, 0.239)
MODES = ("eager", "channels_last", "compile")
WORKS = ("anchor", "full", "mini")  # mini: eager fp32 on CPU (the JAX side of bench/train_step.py)
DTYPES = ("fp32", "bf16")


def _load_reference_resnet():
    """tests/reference/torch_resnet.py by path (tests/ is not a package)."""
    path = ROOT / "tests" / "reference" / "torch_resnet.py"
    spec = importlib.util.spec_from_file_location("plip_torch_resnet_reference", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the PyTorch ModifiedResNet reference from {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # torch.compile (dynamo) looks modules up by name
    spec.loader.exec_module(mod)
    return mod.ModifiedResNet


@dataclasses.dataclass(frozen=True)
class Sizes:
    image_layers: tuple[int, ...] = (3, 4, 6, 3)
    image_width: int = 64
    image_heads: int = 8
    output_dim: int = 768
    input_size: tuple[int, int] = (256, 128)
    text_layers: int = 12
    text_hidden: int = 768
    text_heads: int = 12
    frozen_layers: int = 8
    max_length: int = 64
    max_masked: int = 24          # the `full` work's masked positions and pretext-head sizes
    fpn_dim: int = 256
    iap_heads: int = 12
    iap_mlp_dim: int = 3072


PAPER = Sizes()
SMOKE = Sizes(image_layers=(1, 1, 1, 1), image_width=16, image_heads=4, output_dim=64, input_size=(64, 32),
              text_layers=2, text_hidden=64, text_heads=2, frozen_layers=1, max_length=16, max_masked=4,
              fpn_dim=16, iap_heads=2, iap_mlp_dim=128)


def cmpm_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, ids: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """CMPM in the official code form (official Downstreams/CMPM-C/loss.py), always in fp32 (autocast off)."""
    with torch.autocast(device_type=image_emb.device.type, enabled=False):
        v, t = image_emb.float(), text_emb.float()
        mask = (ids[:, None] == ids[None, :]).float()
        v_hat = v / v.norm(dim=1, keepdim=True)
        t_hat = t / t.norm(dim=1, keepdim=True)
        logit_i2t = v @ t_hat.t()
        logit_t2i = t @ v_hat.t()
        q = mask / mask.norm(dim=1)  # (B,B)/(B,): broadcast over columns, as the official code
        log_q = torch.log(q + eps)

        def one_direction(logits: torch.Tensor) -> torch.Tensor:
            log_p = F.log_softmax(logits, dim=1)
            return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()

        return one_direction(logit_i2t) + one_direction(logit_t2i)


class AnchorTorch(nn.Module):
    """Image encoder + BERT (pooler output) + CMPM; forward returns the scalar loss."""

    def __init__(self, s: Sizes) -> None:
        super().__init__()
        resnet_cls = _load_reference_resnet()
        self.image = resnet_cls(layers=s.image_layers, output_dim=s.output_dim, heads=s.image_heads,
                                input_resolution=s.input_size, width=s.image_width, pool="attn")
        cfg = BertConfig(hidden_size=s.text_hidden, num_hidden_layers=s.text_layers,
                         num_attention_heads=s.text_heads, intermediate_size=4 * s.text_hidden)
        self.text = BertModel(cfg, add_pooling_layer=True)
        for name, p in self.text.named_parameters():
            m = re.match(r"encoder\.layer\.(\d+)\.", name)
            if name.startswith("embeddings.") or (m and int(m.group(1)) < s.frozen_layers):
                p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.channels_last = False

    def forward(self, image_u8: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                ids: torch.Tensor) -> torch.Tensor:
        x = image_u8.permute(0, 3, 1, 2).float().div(255.0)  # NHWC uint8 -> NCHW float
        x = (x - self.mean) / self.std
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        image_emb = self.image(x)[0]
        text_emb = self.text(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return cmpm_loss(image_emb, text_emb, ids)


# The JAX bench's full-objective losses (bench/train_step.py full_config: configs/pretrain.py:release
# with TIC's sum_sq reduction).
FULL_LOSS_CFG = {"weights": {"ivlc": 1.0, "tic": 0.02, "iap": 0.1}, "cmpm_eps": 1e-8, "cosine_logits": False,
                 "tic_reduction": "sum_sq"}


class FullTorch(nn.Module):
    """The PyTorch twin of the JAX PLIP step (release recipe); forward(**batch) returns the weighted loss."""

    def __init__(self, s: Sizes) -> None:
        super().__init__()
        from tests.reference import torch_plip

        self._plip = torch_plip
        text = dict(hidden_size=s.text_hidden, num_hidden_layers=s.text_layers, num_attention_heads=s.text_heads,
                    intermediate_size=4 * s.text_hidden)
        self.twin = torch_plip.TorchPLIP(
            text, image_layers=s.image_layers, image_width=s.image_width, image_heads=s.image_heads,
            output_dim=s.output_dim, input_size=s.input_size, recipe="release",
            frozen_text_layers=s.frozen_layers, fpn_dim=s.fpn_dim, iap_heads=s.iap_heads, iap_mlp_dim=s.iap_mlp_dim)
        for name, p in self.twin.text.named_parameters():
            m = re.match(r"encoder\.layer\.(\d+)\.", name)
            if name.startswith("embeddings.") or (m and int(m.group(1)) < s.frozen_layers):
                p.requires_grad_(False)
        self.channels_last = False

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        out = self.twin(batch)
        with torch.autocast(device_type=batch["image"].device.type, enabled=False):
            out = {k: v.float() if v.is_floating_point() else v for k, v in out.items()}
            return self._plip.compute_losses(out, batch, FULL_LOSS_CFG)[0]

    def optimizer(self) -> torch.optim.Optimizer:
        """The paper's Adan (tests/reference/torch_adan.py): text lr x0.1, no decay on 1-D leaves."""
        from tests.reference.torch_adan import Adan

        groups: dict[tuple[float, float], list] = {}
        for name, p in self.twin.named_parameters():
            if p.requires_grad:
                key = (0.1 if name.startswith("text.") else 1.0, 0.02 if p.ndim > 1 else 0.0)
                groups.setdefault(key, []).append(p)
        return Adan([{"params": ps, "lr": 2e-3 * mult, "weight_decay": wd} for (mult, wd), ps in groups.items()],
                    lr=2e-3, betas=(0.98, 0.92, 0.99), eps=1e-8)


def full_device_batches(s: Sizes, batch: int, vocab: int, device: torch.device, n: int = 2) -> list[dict]:
    """Every key of a training batch (masked captions, positions, labels) as device tensors."""
    out = []
    for i in range(n):
        b = synthetic.synthetic_batch(batch, s.input_size, s.max_length, s.max_masked, vocab_size=vocab, seed=i)
        out.append({k: torch.from_numpy(v).to(device) for k, v in b.items()})
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_batches(s: Sizes, batch: int, vocab: int, device: torch.device, n: int = 2) -> list[dict]:
    out = []
    for i in range(n):
        b = synthetic.synthetic_batch(batch, s.input_size, s.max_length, 0, vocab_size=vocab, seed=i)
        out.append({"image_u8": torch.from_numpy(b["image"]).to(device),
                    "input_ids": torch.from_numpy(b["input_ids"]).long().to(device),
                    "attention_mask": torch.from_numpy(b["attention_mask"]).long().to(device),
                    "ids": torch.from_numpy(b["id"]).long().to(device)})
    return out


def count_flops(model: AnchorTorch, batch: dict, dtype: str, device: torch.device) -> float | None:
    """FLOPs of one eager training step (forward + backward) by PyTorch's FLOP counter."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model(**batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def run_row(mode: str, dtype: str, batch: int, s: Sizes, steps: int, warmup: int, device: torch.device,
            compile_backend: str, work: str = "anchor") -> dict[str, Any]:
    """Build, warm up and time one (work, mode, dtype, batch) row."""
    row: dict[str, Any] = {"work": work, "impl": "torch", "mode": mode, "dtype": dtype, "batch": batch,
                           "steps": steps, "warmup": warmup}
    if work == "mini":
        return _run_mini_row(row, mode, dtype, batch, steps, warmup, device)
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = (FullTorch(s) if work == "full" else AnchorTorch(s)).to(device).train()
    image, text = (model.twin.image, model.twin.text) if work == "full" else (model.image, model.text)
    if mode in ("channels_last", "compile"):
        model.channels_last = True
        image.to(memory_format=torch.channels_last)
    row["attn_implementation"] = getattr(text.config, "_attn_implementation", None)
    make_batches = full_device_batches if work == "full" else device_batches
    batches = make_batches(s, batch, text.config.vocab_size, device)
    row["flops_per_step"] = count_flops(model, batches[0], dtype, device)
    if work == "full":
        opt = model.optimizer()
    else:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-2)
    fwd = torch.compile(model, backend=compile_backend, dynamic=False) if mode == "compile" else model
    use_bf16 = dtype == "bf16"

    def step(b: dict) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = fwd(**b)
        loss.backward()
        opt.step()
        return loss.detach()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    loss = step(batches[0])
    _sync(device)
    row["compile_s"] = round(time.perf_counter() - t0, 2)  # first step: compile (or cuDNN autotune) + run
    for i in range(warmup):
        loss = step(batches[(i + 1) % len(batches)])
    _sync(device)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        loss = step(batches[i % len(batches)])
        _sync(device)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(steps):
        loss = step(batches[i % len(batches)])
    _sync(device)
    pipelined = (time.perf_counter() - t) / steps
    value = float(loss)
    if not np.isfinite(value):
        raise FloatingPointError(f"torch {work}/{mode}/{dtype}/b{batch}: non-finite loss {value}")
    row.update(step_ms=round(1e3 * statistics.median(times), 3), step_ms_pipelined=round(1e3 * pipelined, 3),
               step_ms_min=round(1e3 * min(times), 3), loss=round(value, 4), status="ok")
    if device.type == "cuda":
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        row["peak_mem_source"] = "torch.cuda.max_memory_allocated"
    return row


def mini_twin_step(batch: int):
    """step(i) -> loss of the PyTorch twin (tests/reference/torch_plip.py) of the JAX mini row: the
    same config, run (bench/train_step.py builds it with plip_jax.trainers.build), initial variables,
    parameter groups, lr schedule and synthetic batches."""
    import jax
    import train_step as jax_bench  # bench/train_step.py: the JAX side of the same work

    from plip_jax.trainers import build
    from tests.reference import torch_plip

    c = jax_bench.mini_config(batch)
    built = build.pretraining(c, jax_bench.MINI_STEPS_PER_EPOCH)
    state = built.fresh_state(0)
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    host = jax_bench.host_batches(c, built.text_cfg.vocab_size)
    torch.manual_seed(0)
    twin = torch_plip.TorchPLIP.like(built.model)
    torch_plip.load_jax_variables(twin, variables)
    opt = torch_plip.make_optimizer(torch_plip.param_groups(twin, variables, c.optim), c.optim)
    step = torch_plip.TorchTrainStep(twin, opt, c.losses, lambda k: float(built.run.schedule(k)))
    batches = [torch_plip.batch_to_torch(b) for b in host]
    return lambda i: step(batches[i % len(batches)])["loss"]


def _run_mini_row(row: dict, mode: str, dtype: str, batch: int, steps: int, warmup: int,
                  device: torch.device) -> dict[str, Any]:
    """The embedded default's step (configs/pretrain.py:mini) in the twin, eager fp32 on CPU."""
    if (mode, dtype, device.type) != ("eager", "fp32", "cpu"):
        raise ValueError("the mini work runs eager fp32 on CPU")
    step = mini_twin_step(batch)
    t0 = time.perf_counter()
    loss = step(0)
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    for i in range(warmup):
        loss = step(i + 1)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        loss = step(i)
        times.append(time.perf_counter() - t)
    if not np.isfinite(loss):
        raise FloatingPointError(f"torch mini b{batch}: non-finite loss {loss}")
    row.update(step_ms=round(1e3 * statistics.median(times), 3), step_ms_min=round(1e3 * min(times), 3),
               loss=round(float(loss), 4), status="ok")
    return row


def parse_rows(spec: str) -> list[tuple[str, str, str, int]]:
    """'compile:bf16:256,full:eager:bf16:128' -> [(work, mode, dtype, batch), ...]; no work = anchor."""
    rows = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        fields = part.split(":")
        if len(fields) == 3:
            fields.insert(0, "anchor")
        try:
            work, mode, dtype, batch = fields
            rows.append((work, mode, dtype, int(batch)))
        except ValueError:
            raise SystemExit(f"--rows entry {part!r} must be [WORK:]MODE:DTYPE:BATCH, e.g. compile:bf16:256 "
                             "or full:eager:bf16:128") from None
        if work not in WORKS or mode not in MODES or dtype not in DTYPES:
            raise SystemExit(f"--rows entry {part!r}: work in {WORKS}, mode in {MODES}, dtype in {DTYPES}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny model and batches (CPU check of the whole path)")
    p.add_argument("--rows", default=None, help="MODE:DTYPE:BATCH,... in priority order")
    p.add_argument("--steps", type=int, default=None, help="timed steps per row (default 20, smoke 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps after the first (default 3, smoke 1)")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; smoke aot_eager)")
    p.add_argument("--time-budget", type=float, default=0.0, help="seconds; rows not started by then are skipped")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--out", default=None)
    p.add_argument("--also-dir", action="append", default=[])
    a = p.parse_args(argv)
    s = SMOKE if a.smoke else PAPER
    steps = a.steps if a.steps is not None else (3 if a.smoke else 20)
    warmup = a.warmup if a.warmup is not None else (1 if a.smoke else 3)
    backend = a.compile_backend or ("aot_eager" if a.smoke else "inductor")
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    default_rows = ("eager:fp32:4,eager:bf16:4,channels_last:bf16:4,compile:bf16:4" if a.smoke else
                    "compile:bf16:256,eager:bf16:128,channels_last:bf16:128,eager:fp32:128,eager:bf16:256,"
                    "channels_last:bf16:256,compile:bf16:128,compile:bf16:512")
    plan = parse_rows(a.rows or default_rows)
    kind = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    dev = {"platform": device.type, "kind": kind, "count": torch.cuda.device_count() if device.type == "cuda" else 1,
           "card_family": common.card_family(kind)}

    def save(rows: list[dict]) -> list[Path]:
        versions = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                    **common.package_versions(("transformers", "triton"))}
        config = {"sizes": dataclasses.asdict(s), "compile_backend": backend,
                  "cudnn_benchmark": torch.backends.cudnn.benchmark,
                  "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                  "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
        notes = ["torch fp32 rows: PyTorch defaults (cuDNN convs may use TF32, matmuls full fp32).",
                 "compile = torch.compile(model+CMPM, dynamic=False) with channels_last and bf16 autocast; "
                 "AdamW (foreach) step eager.", "compile_s = wall time of the first step (includes compilation).",
                 "full = tests/reference/torch_plip.py (release recipe, ivlc+tic+iap) with the official Adan "
                 "(tests/reference/torch_adan.py, per-parameter loop)."]
        doc = common.make_result("torch_reference", dev, versions, rows, config, smoke=a.smoke, notes=notes)
        common.validate_result(doc)
        out = a.out or (common.RESULTS_DIR /
                        f"torch_reference-{common.today()}-{common.card_slug(kind)}{'-smoke' if a.smoke else ''}.json")
        paths = common.write_json(doc, out, a.also_dir)
        return paths

    start = time.perf_counter()
    rows = []
    for work, mode, dtype, batch in plan:
        base = {"work": work, "impl": "torch", "mode": mode, "dtype": dtype, "batch": batch,
                "steps": steps, "warmup": warmup}
        if a.time_budget and time.perf_counter() - start > a.time_budget:
            rows.append(common.finish_row({**base, "status": "skipped: time budget"}, kind))
            continue
        print(f"[torch_reference] {work} {mode} {dtype} b{batch} ...", flush=True)
        try:
            row = run_row(mode, dtype, batch, s, steps, warmup, device, backend, work)
        except Exception as e:  # e.g. out of memory or a compile failure: record it, keep going
            row = {**base, "status": f"error: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(common.finish_row(row, kind))
        r = rows[-1]
        print(f"  -> {r['status']}  {r['samples_per_s']} samples/s  {r['step_ms']} ms  first step {r['compile_s']} s",
              flush=True)
        save(rows)  # after every row: a hard timeout still leaves the finished rows

    paths = save(rows)
    print(common.format_table(rows))
    print("wrote", ", ".join(map(str, paths)))
    return 0 if any(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
