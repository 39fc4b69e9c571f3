"""Sizing a TPU slice: compile the pre-training step at several global batches, fsdp sizes and
rematerialisation choices, and report which fit a chip and their roofline floor
(`python -m plip_jax.aot --sweep`)."""
from __future__ import annotations

import itertools
from typing import Any, Sequence

import ml_collections

from plip_jax.core import topology
from plip_jax.core.cli import human_bytes
from plip_jax.trainers import aot


def choices(slice_name: str, global_batch: int) -> list[dict[str, Any]]:
    """The settings tried for a slice: the config's global batch and 16 samples per chip (the
    per-chip batch that fills a v5e chip's matrix units without the temporaries outgrowing 16 GiB),
    fsdp 1 / 4 / 16 where they divide the chips, remat off and on."""
    chips = topology.parse(slice_name).chips
    batches = sorted({b for b in (int(global_batch), 16 * chips) if b % chips == 0})
    fsdps = [f for f in (1, 4, 16) if chips % f == 0]
    return [{"batch": b, "fsdp": f, "remat": r} for b, f, r in itertools.product(batches, fsdps, ("none", "blocks"))]


def sweep(config: ml_collections.ConfigDict, slice_name: str, settings: Sequence[dict[str, Any]] | None = None,
          **kwargs: Any) -> dict:
    """Compile every setting (no evaluation programs); a setting that does not fit is a row too."""
    rows = []
    for s in settings if settings is not None else choices(slice_name, int(config.data.batch_size)):
        c = ml_collections.ConfigDict(config.to_dict())
        c.data.batch_size, c.mesh.fsdp, c.model.remat = int(s["batch"]), int(s["fsdp"]), str(s["remat"])
        try:
            r = aot.compile_for_slice(c, slice_name, with_eval=False, **kwargs)
        except aot.DoesNotFit as e:
            rows.append({**s, "fits": False, "error": str(e)})
            continue
        rows.append({**s, "fits": r["fits"], "error": r["not_fit_message"], "total_bytes_per_chip": r["total_bytes_per_chip"],
                     "temporaries": r["bytes_per_chip"]["temporaries"], "compile_s": r["compile_s"],
                     "floor_step_s": r["floor_step_s"], "floor_samples_per_s": r["floor_samples_per_s"],
                     "floor_paper_hours": r["floor_paper_hours"], "report": r})
    fitting = [r for r in rows if r["fits"]]
    best = max(fitting, key=lambda r: (r["floor_samples_per_s"], -r["total_bytes_per_chip"])) if fitting else None
    return {"topology": topology.parse(slice_name).name, "rows": rows,
            "recommended": None if best is None else {k: best[k] for k in ("batch", "fsdp", "remat")}}


def table(result: dict) -> str:
    """The sweep as a text table, the recommended setting marked."""
    rec = result.get("recommended")
    lines = [f"{result['topology']}: batch  fsdp  remat   per-chip     fits  floor ms/step  samples/s  paper h"]
    for r in result["rows"]:
        mark = "*" if rec and all(r[k] == rec[k] for k in ("batch", "fsdp", "remat")) else " "
        if "total_bytes_per_chip" in r:
            lines.append(f"{mark} {r['batch']:>12} {r['fsdp']:>5}  {r['remat']:<6} {human_bytes(r['total_bytes_per_chip']):>10}  "
                         f"{'yes' if r['fits'] else 'no':>4}  {r['floor_step_s'] * 1e3:>13.1f}  "
                         f"{r['floor_samples_per_s']:>9,.0f}  {r['floor_paper_hours']:>7.1f}")
        else:
            lines.append(f"{mark} {r['batch']:>12} {r['fsdp']:>5}  {r['remat']:<6} {'-':>10}    no  ({r['error']})")
    return "\n".join(lines)


__all__ = ["choices", "sweep", "table"]
