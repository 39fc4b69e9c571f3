"""Start-up of a CPU run with and without libtpu installed: seconds from `python` to JAX's devices,
and the lines on stderr, for `import plip_jax` first (what every command does) and for bare JAX.

    python bench/startup.py --repeat 5 --out bench/results/startup-2026-12-06.json

"Without libtpu" hides the package from the import system (`sys.modules['libtpu'] = None`), which
is what JAX and plip_jax look for; runs alternate between the settings.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HIDE = "import sys; sys.modules['libtpu'] = None; "
CASES = {
    "plip_jax, libtpu installed": "import plip_jax, jax; jax.devices()",
    "plip_jax, no libtpu": HIDE + "import plip_jax, jax; jax.devices()",
    "bare jax, libtpu installed": "import jax; jax.devices()",
    "bare jax, no libtpu": HIDE + "import jax; jax.devices()",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    times: dict[str, list[float]] = {k: [] for k in CASES}
    stderr: dict[str, int] = {}
    load = os.getloadavg()[0]
    for _ in range(args.repeat):
        for name, code in CASES.items():
            t = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            times[name].append(time.perf_counter() - t)
            stderr[name] = len(p.stderr.strip().splitlines())
    result = {"kind": "startup", "date": time.strftime("%Y-%m-%d"), "load_at_start": round(load, 2),
              "load_at_end": round(os.getloadavg()[0], 2), "repeat": args.repeat,
              "cases": {k: {"median_s": round(statistics.median(v), 3), "runs_s": [round(x, 3) for x in v],
                            "stderr_lines": stderr[k]} for k, v in times.items()}}
    for k, v in result["cases"].items():
        print(f"{k:<28} {v['median_s']:.2f} s (median of {args.repeat}), {v['stderr_lines']} stderr lines")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
