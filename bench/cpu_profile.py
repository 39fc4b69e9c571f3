"""Where the CPU step's time goes, per op class, in JAX and in PyTorch eager
(bench/NOTES.md "CPU step vs PyTorch eager").

JAX: the compiled step traced with the XLA:CPU thunk runtime's TraceMe events
(`--xla_cpu_enable_xprof_traceme=true`), each event mapped to its HLO instruction's op class by the
compiled module's text. PyTorch: torch.profiler over the same eager step, aten ops grouped the
same way. Same work as `bench/train_step.py` / `bench/torch_reference.py` (anchor or mini), same
batch; one process per framework so they never share the cores.

    python bench/cpu_profile.py --work anchor --batch 8 --steps 3 [--out F.json]
    python bench/cpu_profile.py --smoke --batch 2 --steps 1     # tiny shapes: checks the path
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CLASSES = ("convolution", "matmul", "reduce", "elementwise/fusion", "copy/transpose/layout", "scatter/gather",
           "optimizer", "other")


def hlo_classes(text: str) -> dict[str, str]:
    """instruction name -> op class, from an optimised HLO module's text (fusions by their root ops)."""
    comp_ops: dict[str, set[str]] = collections.defaultdict(set)
    current = None
    kinds: dict[str, str] = {}
    calls: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
        if m and "=" not in line.split("{")[0]:
            current = m.group(1)
            continue
        m = re.match(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^=]*?\s([a-z][\w\-]*)\(", line)
        if not m:
            continue
        name, op = m.group(1), m.group(2)
        if current:
            comp_ops[current].add(op)
        kinds[name] = op
        c = re.search(r"calls=%?([\w.\-]+)", line)
        if c:
            calls[name] = c.group(1)
        cc = re.search(r'custom_call_target="([^"]+)"', line)
        if cc:
            kinds[name] = "custom-call:" + cc.group(1)

    def classify(op: str, inner: set[str]) -> str:
        ops = {op} | inner
        if any(o == "convolution" or "conv" in o.lower() for o in ops):
            return "convolution"
        if any(o in ("dot",) or "matmul" in o.lower() or "gemm" in o.lower() for o in ops):
            return "matmul"
        if any(o in ("scatter", "gather", "dynamic-slice", "dynamic-update-slice") for o in ops):
            return "scatter/gather"
        if any(o in ("reduce", "reduce-window", "select-and-scatter") for o in ops):
            return "reduce"
        if ops <= {"copy", "transpose", "bitcast", "reshape", "broadcast", "slice", "concatenate", "pad",
                   "parameter", "tuple", "get-tuple-element", "constant"}:
            return "copy/transpose/layout"
        if op in ("fusion",) or inner:
            return "elementwise/fusion"
        return "other"

    return {name: classify(op, comp_ops.get(calls.get(name, ""), set())) for name, op in kinds.items()}


def profile_jax(work: str, batch: int, steps: int, smoke: bool = False) -> dict:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT))
    import jax
    import train_step as ts  # bench/train_step.py
    from jax.profiler import ProfileData

    sizes = ts.SMOKE if smoke else ts.PAPER
    fn, args, advance = ts.build_row(work, "fp32", batch, sizes, "adamw")
    compiled = fn.lower(*args).compile()
    names = hlo_classes(compiled.as_text())
    i, out = 0, None
    for _ in range(2):
        out = compiled(*args)
        i += 1
        args = advance(args, out, i)
    jax.block_until_ready(out)
    trace = tempfile.mkdtemp(prefix="plip_prof_")
    t = time.perf_counter()
    jax.profiler.start_trace(trace)
    for _ in range(steps):
        out = compiled(*args)
        jax.block_until_ready(out)
        i += 1
        args = advance(args, out, i)
    jax.profiler.stop_trace()
    wall = (time.perf_counter() - t) / steps
    by_class: dict[str, float] = collections.defaultdict(float)
    by_op: dict[str, float] = collections.defaultdict(float)
    path = sorted(glob.glob(f"{trace}/**/*.xplane.pb", recursive=True))[-1]
    for plane in ProfileData.from_file(path).planes:
        for line in plane.lines:
            if "XLAPjRtCpuClient" not in line.name and "XLAEigen" not in line.name:
                continue
            for e in line.events:
                name = e.name
                if name.startswith(("ThreadpoolListener", "end:", "ThunkExecutor")):
                    continue
                key = name.split(":")[0].strip()
                cls = names.get(key) or ("matmul" if "ynn" in key or "xnn" in key else "other")
                by_class[cls] += e.duration_ns / 1e6 / steps
                by_op[key] += e.duration_ns / 1e6 / steps
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:25]
    # Fusions by their name stem (transpose_copy_fusion, ynn_fusion, ...): which kinds of kernels.
    stems: dict[str, float] = collections.defaultdict(float)
    for k, v in by_op.items():
        stems[re.sub(r"\.\d+$", "", k)] += v
    return {"framework": "jax", "step_ms_traced": round(1e3 * wall, 1),
            "ms_per_class": {k: round(v, 1) for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])},
            "ms_per_kernel_kind": {k: round(v, 1) for k, v in sorted(stems.items(), key=lambda kv: -kv[1])[:20]},
            "top_ops_ms": [(k, names.get(k, "?"), round(v, 1)) for k, v in top]}


TORCH_CLASS = [
    (r"convolution|conv2d|_convolution|mkldnn_convolution|conv_depthwise|slow_conv", "convolution"),
    (r"\b(mm|bmm|addmm|matmul|linear|baddbmm)\b", "matmul"),
    (r"adam|_foreach|lerp|addcdiv|addcmul", "optimizer"),
    (r"sum|mean|max_pool|avg_pool|norm|softmax|var|std|amax|logsumexp", "reduce"),
    (r"copy_|contiguous|clone|transpose|permute|cat|to\b|_to_copy|reshape|view|expand", "copy/transpose/layout"),
    (r"index|gather|scatter|embedding|select", "scatter/gather"),
]


def profile_torch(work: str, batch: int, steps: int, smoke: bool = False) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT))
    import torch
    import torch_reference as tr  # bench/torch_reference.py
    from torch.profiler import ProfilerActivity, profile

    s = tr.SMOKE if smoke else tr.PAPER
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = tr.AnchorTorch(s).to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-2)
    batches = tr.device_batches(s, batch, model.text.config.vocab_size, device)

    def step(b):
        opt.zero_grad(set_to_none=True)
        loss = model(**b)
        loss.backward()
        opt.step()
        return loss

    for i in range(2):
        step(batches[i % 2])
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(batches[i % 2])
    wall = (time.perf_counter() - t) / steps
    by_class: dict[str, float] = collections.defaultdict(float)
    by_op: dict[str, float] = collections.defaultdict(float)
    for ev in prof.key_averages():
        # self time only, so nested aten calls are not counted twice
        ms = ev.self_cpu_time_total / 1e3 / steps
        if ms <= 0:
            continue
        cls = next((c for pat, c in TORCH_CLASS if re.search(pat, ev.key)), "elementwise/fusion")
        by_class[cls] += ms
        by_op[ev.key] += ms
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:25]
    return {"framework": "torch", "step_ms_traced": round(1e3 * wall, 1),
            "ms_per_class": {k: round(v, 1) for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])},
            "top_ops_ms": [(k, round(v, 1)) for k, v in top]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="anchor", choices=("anchor",))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--framework", choices=("jax", "torch", "both"), default="both")
    p.add_argument("--smoke", action="store_true", help="tiny model (the path, not a profile)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.framework == "both":
        rows = []
        for fw in ("jax", "torch"):
            r = subprocess.run([sys.executable, __file__, "--work", a.work, "--batch", str(a.batch), "--steps",
                                str(a.steps), "--framework", fw] + (["--smoke"] if a.smoke else []),
                               capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-3000:], file=sys.stderr)
                return r.returncode
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        result = {"work": a.work, "batch": a.batch, "steps": a.steps, "smoke": a.smoke, "load_1min": os.getloadavg()[0],
                  "rows": rows}
        text = json.dumps(result, indent=1)
        print(text)
        if a.out:
            Path(a.out).write_text(text)
        return 0
    profile = profile_jax if a.framework == "jax" else profile_torch
    r = profile(a.work, a.batch, a.steps, a.smoke)
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
