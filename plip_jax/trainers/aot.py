"""Ahead-of-time compilation of a run for a TPU slice that is not here: the pre-training step and
the evaluation embedding steps are lowered for the slice's devices (libtpu's deviceless topology)
with the run's own builder, compiled, and measured per chip: memory against HBM, FLOPs and bytes
accessed, the collectives in the compiled HLO, and a roofline floor on the step time.

The floor is max(FLOPs / peak bf16 FLOP/s, bytes accessed / HBM bandwidth) per chip: a step can
be no faster (XLA's own `optimal_seconds` estimate comes back negative for these programs).
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from plip_jax.core import topology
from plip_jax.core.cli import human_bytes

# The paper's pre-training: 70 epochs over SYNTH-PEDES's captions (~12.5M a pass: 4.8M images,
# 2.6 captions each; see docs/method.md, "Data").
PAPER_EPOCHS = 70.0
PAPER_CAPTIONS_PER_EPOCH = 12_500_000

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1}
_OP = re.compile(r"^\s*(?:ROOT )?%?\S+ = (.*?) (" + "|".join(COLLECTIVES) + r")(-start)?\(", re.MULTILINE)
_SHAPE = re.compile(r"([a-z0-9]+)\[([0-9,]*)\]")


class DoesNotFit(ValueError):
    """The step needs more memory per chip than the chip has (one line, with what to try)."""


def _shape_bytes(text: str) -> list[int]:
    out = []
    for dtype, dims in _SHAPE.findall(text):
        n = 1
        for d in dims.split(","):
            if d:
                n *= int(d)
        out.append(n * _DTYPE_BYTES.get(dtype, 4))
    return out


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """Count and result bytes of each collective in a compiled (partitioned) HLO module, as written
    (an op inside a loop body counts once). A combined op (XLA:TPU sums many gradients in one
    tuple-shaped all-reduce) counts once with all its results; an async `-start` op's tuple holds
    its operands then its results, and only the results count."""
    out = {name: {"count": 0, "bytes": 0} for name in COLLECTIVES}
    for m in _OP.finditer(hlo_text):
        sizes = _shape_bytes(m.group(1))
        if m.group(3) and len(sizes) >= 2:
            sizes = sizes[len(sizes) // 2:]
        out[m.group(2)]["count"] += 1
        out[m.group(2)]["bytes"] += sum(sizes)
    return out


def _cost(compiled) -> dict[str, float]:
    c = compiled.cost_analysis()
    if isinstance(c, (list, tuple)):
        c = c[0] if c else {}
    return dict(c or {})


def memory(compiled) -> dict[str, int]:
    """Per-chip bytes of a compiled program: arguments, outputs, temporaries, aliased (outputs that
    reuse donated arguments), generated code, and total = arguments + outputs + temporaries - aliased."""
    m = compiled.memory_analysis()
    d = {"arguments": int(m.argument_size_in_bytes), "outputs": int(m.output_size_in_bytes),
         "temporaries": int(m.temp_size_in_bytes), "aliased": int(m.alias_size_in_bytes),
         "code": int(m.generated_code_size_in_bytes)}
    d["total"] = d["arguments"] + d["outputs"] + d["temporaries"] - d["aliased"]
    return d


def roofline(flops: float, bytes_accessed: float, chip: topology.Chip) -> dict[str, float]:
    """The step-time floor per chip and which roof sets it."""
    compute, hbm = flops / chip.peak_bf16_flops, bytes_accessed / chip.hbm_bandwidth
    return {"compute_s": compute, "hbm_s": hbm, "floor_s": max(compute, hbm),
            "bound": "compute" if compute >= hbm else "memory"}


_OOM = re.compile(r"(?:Used|required[^(]*\()\s*([\d.]+)([KMGT])\b.*?(?:of|exceeds available HBM \()\s*([\d.]+)([KMGT])",
                  re.IGNORECASE | re.DOTALL)
_UNIT = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_oom(message: str) -> tuple[int, int] | None:
    """(bytes needed, bytes available) from XLA:TPU's out-of-HBM compile error, when it says them."""
    m = _OOM.search(message)
    if not m:
        return None
    return int(float(m.group(1)) * _UNIT[m.group(2).upper()]), int(float(m.group(3)) * _UNIT[m.group(4).upper()])


def _is_oom(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text or "exceeds available" in text


def not_fit_message(config: ml_collections.ConfigDict, s: topology.Slice, chips: int, mesh,
                    needed: int | None) -> str:
    """The one line of a step that does not fit a chip: what it needs, the HBM, what to try."""
    batch = int(config.data.batch_size)
    need = f"needs {human_bytes(needed)} per chip" if needed else "does not fit"
    return (f"{s.name}: global batch {batch} ({batch // chips}/chip) with mesh data={mesh.shape['data']} x "
            f"fsdp={mesh.shape['fsdp']} {need}, more than the {human_bytes(s.chip.hbm_bytes)} HBM of a "
            f"{s.chip.name} chip; try {_fit_advice(config, chips)}")


def _fit_advice(config: ml_collections.ConfigDict, chips: int) -> str:
    batch, fsdp = int(config.data.batch_size), int(config.mesh.fsdp)
    tries = []
    if str(config.model.get("remat", "none")) == "none":
        tries.append("--config.model.remat=blocks")
    if batch // 2 >= chips and (batch // 2) % chips == 0:
        tries.append(f"--config.data.batch_size={batch // 2}")
    if chips % (fsdp * 4) == 0:
        tries.append(f"--config.mesh.fsdp={fsdp * 4}")
    return " or ".join(tries) if tries else "a larger slice"


@dataclasses.dataclass
class Compiled:
    """One program compiled for the slice, with its measurements."""
    seconds: float
    memory: dict[str, int]
    flops: float
    bytes_accessed: float
    collectives: dict[str, dict[str, int]]


def _compile(lowered) -> Compiled:
    t = time.perf_counter()
    compiled = lowered.compile()
    seconds = time.perf_counter() - t
    cost = _cost(compiled)
    return Compiled(seconds=seconds, memory=memory(compiled), flops=float(cost.get("flops", 0.0)),
                    bytes_accessed=float(cost.get("bytes accessed", 0.0)),
                    collectives=collectives(compiled.as_text()))


def _eval_programs(built, cfg: ml_collections.ConfigDict, slice_: topology.Slice) -> dict[str, Any]:
    """The zero-shot evaluation's image and text embedding steps for the slice."""
    from plip_jax.evals.embed import Embedder

    run = built.run
    embedder = Embedder.for_plip(built.model, int(cfg.train.eval_batch_size), sharding=run.batch_sharding)
    b = embedder.batch_size
    variables = {"params": run.target.params, "batch_stats": run.target.batch_stats}
    h, w = (int(s) for s in cfg.model.image.input_size)
    sds = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=run.batch_sharding)  # noqa: E731
    out: dict[str, Any] = {"eval_batch": b}
    for name, step, args in (("image", embedder.image_step, (sds((b, h, w, 3), jnp.uint8),)),
                             ("text", embedder.text_step, (sds((b, int(cfg.data.max_length)), jnp.int32),) * 2)):
        c = _compile(step.lower(variables, *args))
        out[name] = {"compile_s": round(c.seconds, 2), "bytes": c.memory, "flops_per_chip": c.flops,
                     "fits": c.memory["total"] <= slice_.chip.hbm_bytes}
    return out


def compile_for_slice(config: ml_collections.ConfigDict, slice_name: str, *, captions_per_epoch: int =
                      PAPER_CAPTIONS_PER_EPOCH, epochs: float = PAPER_EPOCHS, with_eval: bool = True) -> dict:
    """Build the pre-training run of `config` for the named slice, compile its step (and the
    evaluation embedding steps), and return the report (see `plip_jax.aot`). Raises DoesNotFit
    when the step does not fit a chip, TopologyError / ValueError for bad input (one line each)."""
    from plip_jax.trainers import build
    from plip_jax.trainers.pretrain import validate_config

    s = topology.parse(slice_name)
    devices = topology.devices(s)
    hosts = len({d.process_index for d in devices})
    validate_config(config, device_count=len(devices), weights_needed=False)
    global_batch = int(config.data.batch_size)
    steps_per_epoch = max(1, math.ceil(captions_per_epoch / global_batch))
    t0 = time.perf_counter()
    built = build.pretraining(config, steps_per_epoch, devices=devices, process_count=hosts)
    run = built.run
    lowered = run.step.lower(run.target, built.batch_spec(), run.rng_spec())
    build_s = time.perf_counter() - t0
    try:
        step = _compile(lowered)
    except Exception as e:  # noqa: BLE001 - XLA's out-of-memory error has no own type
        if not _is_oom(e):
            raise
        got = parse_oom(str(e))
        raise DoesNotFit(not_fit_message(config, s, len(devices), run.mesh, got[0] if got else None)) from None
    hbm = s.chip.hbm_bytes
    roof = roofline(step.flops, step.bytes_accessed, s.chip)
    total_steps = epochs * captions_per_epoch / global_batch
    report = {
        "topology": s.name, "topology_name": s.topology_name, "chip": s.chip.name,
        "chips": len(devices), "hosts": hosts,
        "mesh": {"data": int(run.mesh.shape["data"]), "fsdp": int(run.mesh.shape["fsdp"])},
        "global_batch": global_batch, "per_chip_batch": global_batch // len(devices),
        "recipe": str(config.model.recipe), "dtype": str(config.model.dtype),
        "remat": str(config.model.get("remat", "none")),
        "bytes_per_chip": step.memory, "total_bytes_per_chip": step.memory["total"],
        "hbm_bytes_per_chip": hbm, "headroom_bytes": hbm - step.memory["total"],
        "fits": step.memory["total"] <= hbm,
        "not_fit_message": None if step.memory["total"] <= hbm else not_fit_message(
            config, s, len(devices), run.mesh, step.memory["total"]),
        "build_s": round(build_s, 2), "compile_s": round(step.seconds, 2),
        "flops_per_chip": step.flops, "flops_per_sample": step.flops * len(devices) / global_batch,
        "bytes_accessed_per_chip": step.bytes_accessed, "collectives": step.collectives,
        "collectives_counted": "every op line, combined (tuple) ops with all their results",
        "roofline": roof, "floor_step_s": roof["floor_s"],
        "floor_samples_per_s": global_batch / roof["floor_s"] if roof["floor_s"] > 0 else None,
        "paper": {"epochs": epochs, "captions_per_epoch": captions_per_epoch, "steps": total_steps},
        "floor_paper_hours": total_steps * roof["floor_s"] / 3600.0,
        "peak_bf16_flops_per_chip": s.chip.peak_bf16_flops, "hbm_bandwidth_per_chip": s.chip.hbm_bandwidth,
        "jax": jax.__version__,
    }
    if with_eval:
        report["eval"] = _eval_programs(built, config, s)
    return report


def summary(r: dict) -> str:
    """The report in a few human lines."""
    b = r["bytes_per_chip"]
    coll = ", ".join(f"{k} {v['count']} ({human_bytes(v['bytes'])})" for k, v in r["collectives"].items() if v["count"])
    lines = [
        f"{r['topology']} ({r['topology_name']}): {r['chips']} chips, {r['hosts']} hosts, mesh data={r['mesh']['data']} "
        f"x fsdp={r['mesh']['fsdp']}, global batch {r['global_batch']} ({r['per_chip_batch']}/chip)",
        f"per chip: {human_bytes(r['total_bytes_per_chip'])} of {human_bytes(r['hbm_bytes_per_chip'])} HBM "
        f"(arguments {human_bytes(b['arguments'])}, outputs {human_bytes(b['outputs'])}, temporaries "
        f"{human_bytes(b['temporaries'])}, aliased {human_bytes(b['aliased'])}): "
        + ("fits" if r["fits"] else "DOES NOT FIT"),
        f"compile {r['compile_s']:.1f} s here; {r['flops_per_chip'] / 1e12:.2f} TFLOP and "
        f"{human_bytes(r['bytes_accessed_per_chip'])} accessed per chip per step "
        f"({r['flops_per_sample'] / 1e9:.1f} GFLOP/sample)",
        f"collectives per step: {coll or 'none'}",
        f"roofline floor {r['floor_step_s'] * 1e3:.1f} ms/step ({r['roofline']['bound']}-bound) = "
        f"{r['floor_samples_per_s']:,.0f} samples/s; the paper's pre-training ({r['paper']['epochs']:g} epochs x "
        f"{r['paper']['captions_per_epoch']:,} captions) >= {r['floor_paper_hours']:.1f} h",
    ]
    if "eval" in r:
        e = r["eval"]
        lines.append(f"eval embedding (batch {e['eval_batch']}): image {human_bytes(e['image']['bytes']['total'])}/chip "
                     f"compile {e['image']['compile_s']:.1f} s, text {human_bytes(e['text']['bytes']['total'])}/chip "
                     f"compile {e['text']['compile_s']:.1f} s")
    return "\n".join(lines)


__all__ = ["COLLECTIVES", "DoesNotFit", "PAPER_CAPTIONS_PER_EPOCH", "PAPER_EPOCHS", "collectives",
           "compile_for_slice", "memory", "parse_oom", "roofline", "summary"]
