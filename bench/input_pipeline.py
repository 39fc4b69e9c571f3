"""Benchmark: training input pipeline throughput (samples/s per host core) at 256x128.

Measures the full per-sample path (source read, JPEG decode, bicubic resize, flip, tokenize to 64,
phrase masking, batching) for grain worker counts 0 (in-process, one core) and N, plus a per-stage
breakdown of one sample. Data: a procedural SYNTH-PEDES built with tfds_synth_pedes when that builder
is available (or --data_dir), else an in-memory source of 128x64 JPEGs in the docs/contracts.md format.

  python bench/input_pipeline.py [--smoke] [--workers N] [--batches B] [--data_dir D]
Writes bench/results/input_pipeline-<date>-cpu.json.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plip_jax.data import masking, pipeline, transforms  # noqa: E402
from plip_jax.data.tokenizer import load_tokenizer  # noqa: E402

COLOURS = ["red", "blue", "dark green", "black", "white", "light grey", "yellow", "navy blue"]
UPPER = ["jacket", "t-shirt", "long-sleeved shirt", "hooded sweater", "coat"]
LOWER = ["jeans", "shorts", "long skirt", "trousers"]


def _caption(rng: np.random.Generator) -> tuple[str, list[list[int]]]:
    """A SPAC-like caption of ~25-35 tokens with 3-4 attribute phrases and their char spans."""
    phrases = [f"{rng.choice(COLOURS)} {rng.choice(UPPER)}", f"{rng.choice(COLOURS)} {rng.choice(LOWER)}",
               f"{rng.choice(COLOURS)} shoes", "a black backpack"]
    text = (f"The young woman with long black hair is wearing a {phrases[0]} over her shoulders and "
            f"{phrases[1]}, with {phrases[2]} on her feet, and she is carrying {phrases[3]} on her back.")
    spans, start = [], 0
    for p in phrases:
        s = text.index(p, start)
        spans.append([s, s + len(p)])
        start = s + len(p)
    return text, spans


def in_memory_source(num_images: int, size=(128, 64), seed: int = 0) -> list[dict]:
    """Examples with JPEG-encoded images (as tfds would store them), 3 captions + a prompt caption."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size[0], :size[1]]
    out = []
    for n in range(num_images):
        c = rng.integers(0, 256, 3)
        img = (np.sin(yy[..., None] / (5 + n % 7) + c / 40) * 60 + c * 0.7 + rng.normal(0, 12, (*size, 3)))
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        caps = [_caption(rng) for _ in range(4)]
        out.append({"image": buf.getvalue(), "id": np.int64(n // 4), "file_path": f"{n}.jpg".encode(),
                    "captions": np.array([c.encode() for c, _ in caps[:3]], dtype=object),
                    "prompt_caption": caps[3][0].encode(),
                    "spans_json": json.dumps({"captions": [s for _, s in caps[:3]],
                                              "prompt_caption": caps[3][1]}).encode(),
                    "camera_id": np.int64(-1), "attribute_labels": np.zeros(4, np.int8)})
    return out


def procedural_source(data_dir: str | None, num_ids: int):
    """Build (or reuse) a tiny procedural synth_pedes with tfds_synth_pedes; None if unavailable."""
    try:
        from tfds_synth_pedes import build as tsp_build  # noqa: F401
        import tensorflow_datasets as tfds
    except ImportError:
        return None, "in-memory JPEG 128x64 (tfds_synth_pedes.build not available)"
    d = data_dir or tempfile.mkdtemp(prefix="plip_bench_tfds_")
    try:
        builder = tsp_build.build("synth_pedes", "procedural", d, num_identities=num_ids, images_per_identity=4,
                                  image_size=(128, 64), num_val_ids=2, num_test_ids=2)
        src = builder.as_data_source("train", decoders={"image": tfds.decode.SkipDecoding()})
    except Exception as e:  # a builder still under development must not sink the benchmark
        return None, f"in-memory JPEG 128x64 (procedural build failed: {type(e).__name__}: {e})"
    return src, f"tfds synth_pedes/procedural ({num_ids} ids) in {d}"


def stage_breakdown(source, tok, n: int = 200, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Per-stage microseconds per sample, two ways: `cpu` = process CPU time, best of `rounds` round
    averages; `min` = the fastest single call (wall clock), a lower bound close to an idle core."""
    rng = np.random.default_rng(0)
    aug = transforms.AugmentConfig()
    names = ["read", "decode", "resize", "flip+to_numpy", "tokenize", "mask"]
    best = dict.fromkeys(names, float("inf"))
    fastest = dict.fromkeys(names, float("inf"))
    per_round = max(1, n // rounds)
    for clock, table in ((time.process_time, best), (time.perf_counter, fastest)):
        for r in range(rounds):
            t = dict.fromkeys(names, 0.0)
            for i in range(r * per_round, (r + 1) * per_round):
                t0 = clock()
                ex = source[i % len(source)]
                t1 = clock()
                img = transforms.decode_image(ex["image"], size_hint=(256, 128))
                img.load()
                t2 = clock()
                img = img.resize((128, 256), Image.BICUBIC)
                t3 = clock()
                transforms.augment(img, rng, aug)
                t4 = clock()
                cap, spans = pipeline._caption_and_spans(ex, i % 3)
                enc = tok.encode_with_offsets([cap], max_length=64)
                t5 = clock()
                masking.mask_phrases(enc["input_ids"][0], enc["offsets"][0], spans, 0.5, rng,
                                     tok.mask_token_id, 24)
                t6 = clock()
                for k, dt in zip(names, np.diff([t0, t1, t2, t3, t4, t5, t6])):
                    t[k] += dt
                    if table is fastest:
                        fastest[k] = min(fastest[k], dt)
            if table is best:
                best = {k: min(best[k], t[k] / per_round) for k in names}
    return {"cpu": {k: round(v * 1e6, 1) for k, v in best.items()},
            "min": {k: round(v * 1e6, 1) for k, v in fastest.items()}}


def reference_copy_us(reps: int = 200) -> float:
    """Median time to copy one 256x128x3 uint8 image: ~5-10 us on an idle core; shows host contention."""
    x = np.zeros((256, 128, 3), np.uint8)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        x.copy()
        ts.append(time.perf_counter() - t0)
    return round(float(np.median(ts)) * 1e6, 1)


def measure(source, tok, index, workers: int, batch: int, batches: int, warmup: int) -> dict:
    cfg = pipeline.DataConfig(batch_size=batch, workers=workers, read_threads=0 if workers == 0 else 1)
    data = pipeline.make_train_dataset(source, tok, cfg, seed=0, total_epochs=1000, caption_index=index)
    it = data.iterator()
    try:
        t_start = time.perf_counter()
        for _ in range(warmup):
            next(it)
        t0 = time.perf_counter()
        cpu = []
        for _ in range(batches):
            c0 = time.process_time()
            b = next(it)
            cpu.append(time.process_time() - c0)
        dt = time.perf_counter() - t0
        assert b["image"].shape == (batch, 256, 128, 3)
    finally:
        if hasattr(it, "close"):
            it.close()
    cores = max(1, min(workers, os.cpu_count() or 1)) if workers else 1
    sps = batches * batch / dt
    return {"workers": workers, "cores_used": cores, "samples_per_s": round(sps, 1),
            "samples_per_s_per_core": round(sps / cores, 1), "startup_s": round(t0 - t_start, 2),
            "batches": batches, "batch_size": batch,
            # workers=0: all work runs in this process, so its CPU time per batch (median, to filter
            # contention on a shared host) gives a load-robust samples per core-second.
            "samples_per_cpu_s_in_process": round(batch / float(np.median(cpu)), 1) if workers == 0 else None}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N for the multi-worker row")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--data_dir", default=None, help="reuse/build the procedural dataset here")
    ap.add_argument("--in_memory", action="store_true", help="skip tfds_synth_pedes, use in-memory JPEGs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.smoke:
        args.batch, args.batches, args.workers = 8, 3, min(args.workers, 2)

    tok = load_tokenizer()
    num_images = 64 if args.smoke else 512
    src, desc = (None, "in-memory JPEG 128x64") if args.in_memory else procedural_source(args.data_dir, num_images // 4)
    if src is None:
        src = in_memory_source(num_images)
    t0 = time.perf_counter()
    index = pipeline.CaptionIndex.build(pipeline.train_fields_view(src))
    index_s = time.perf_counter() - t0
    ref_us = reference_copy_us()
    stages = stage_breakdown(pipeline.train_fields_view(src), tok, 50 if args.smoke else 300)

    rows = []
    for w in sorted({0, args.workers}):
        rows.append(measure(src, tok, index, w, args.batch, args.batches, warmup=1 if args.smoke else 3))
    load = os.getloadavg()
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
              "cpu_count": os.cpu_count(), "loadavg": [round(x, 2) for x in load], "data": desc,
              "num_images": len(src), "num_pairs": len(index), "caption_index_s": round(index_s, 3),
              "image_size": [256, 128], "max_length": 64, "max_masked": 24, "smoke": args.smoke,
              "stage_us_per_sample": stages, "reference_image_copy_us": ref_us,
              "stage_min_samples_per_s_per_core": round(1e6 / max(1.0, sum(stages["min"].values())), 1),
              "rows": rows, "target_per_core": 400}

    print(f"data: {desc}; {len(src)} images, {len(index)} pairs; load average {load[0]:.2f} on "
          f"{os.cpu_count()} cores")
    for kind, table in stages.items():
        total = sum(table.values())
        print(f"stage us/sample ({kind}): " + ", ".join(f"{k} {v}" for k, v in table.items())
              + f" (sum {total:.0f} us -> {1e6 / max(1.0, total):.0f}/s/core)")
    print(f"reference: copying one 256x128x3 image takes {ref_us} us (idle core: ~5-10 us)")
    print(f"{'workers':>8} {'cores':>6} {'samples/s':>10} {'per core':>9} {'per CPU-s':>10} {'startup s':>10}")
    for r in rows:
        print(f"{r['workers']:>8} {r['cores_used']:>6} {r['samples_per_s']:>10} "
              f"{r['samples_per_s_per_core']:>9} {str(r['samples_per_cpu_s_in_process'] or '-'):>10} "
              f"{r['startup_s']:>10}")
    out = Path(args.out) if args.out else (
        ROOT / "bench" / "results" / f"input_pipeline-{datetime.date.today().isoformat()}-cpu.json")
    if not args.smoke or args.out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
