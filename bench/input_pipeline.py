"""Benchmark: training input pipeline throughput (samples/s per host core) at 256x128.

Builds, in a temp dir, a small SYNTH-PEDES in the released layout (procedural renders at 512x256
with photo-like texture, JPEG q90) twice with tfds_synth_pedes: `full` as released (images larger
than the training size) and `full_h256_w128` (resize at build: stored at the training size, JPEG
q95 4:4:4). Then measures
  - per stage, on batches of real records (CPU time per sample, best of a few rounds): read
    (array_record + proto), order (sampler), decode, resize, flip+copy into the batch, tokenize
    (batched, with caption/span fields), phrase masking (batched); four image variants: stored at
    256x128, stored 512x256 with draft decode (training), stored 512x256 full decode + resize (what
    evaluation does), stored 128x64 upscaled;
  - end to end (`make_train_dataset`, batches of 64): in-process (0 workers) and 1 and 2 grain
    workers on the 256x128 build, in-process on the 512x256 build (draft decode).
"per core" columns divide by CPU seconds actually spent (this process plus its workers), which holds
up on a shared host; wall-clock samples/s are printed too. Runs in ~1-2 minutes.

  python bench/input_pipeline.py [--smoke] [--ids 64] [--batch 64] [--batches 20] [--workers 1,2]
                                 [--out bench/results/input_pipeline-<date>-cpu.json]
Writes a JSON document only with --out.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402  (bench/common.py)

from plip_jax.data import masking, pipeline, transforms  # noqa: E402
from plip_jax.data.tokenizer import load_tokenizer  # noqa: E402

SIZE = (256, 128)
TARGET_PER_CORE = 1000


# ---------------------------------------------------------------------------------------------
# Data: a released-layout SYNTH-PEDES, built as released and resized at build
# ---------------------------------------------------------------------------------------------
def _texture(path: Path, rng: np.random.Generator) -> None:
    """Photo-like detail on a flat procedural render (noise + slight blur), so JPEG decode costs what a
    real person crop costs rather than what a cartoon costs."""
    from PIL import ImageFilter

    img = Image.open(path).convert("RGB").filter(ImageFilter.GaussianBlur(0.7))
    arr = np.asarray(img, np.float32) + rng.normal(0, 5, (img.height, img.width, 1)) + rng.normal(0, 3, (img.height, img.width, 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, format="JPEG", quality=90)


def build_datasets(work: Path, num_ids: int, per_id: int) -> dict:
    """Render the layout at 512x256, then build synth_pedes `full` (as released) and `full_h256_w128`."""
    from tfds_synth_pedes import build as tb
    from tfds_synth_pedes.synth_pedes import procedural

    t0 = time.perf_counter()
    layout = procedural.write_layout(work / "layout", num_identities=num_ids, images_per_identity=per_id,
                                     image_height=2 * SIZE[0], image_width=2 * SIZE[1], seed=0, num_cameras=6)
    rng = np.random.default_rng(0)
    for entry in json.loads((layout / procedural.ANNOTATION_FILE).read_text()):
        _texture(layout / entry["file_path"], rng)
    render_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    large = tb.build("synth_pedes", "full", work / "tfds", manual_dir=layout)
    as_released_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    small = tb.build("synth_pedes", "full", work / "tfds", manual_dir=layout, image_size=SIZE)
    resized_s = time.perf_counter() - t0
    return {"large": large, "small": small, "layout": layout,
            "build_s": {"render": round(render_s, 1), "full": round(as_released_s, 1),
                        f"full_h{SIZE[0]}_w{SIZE[1]}": round(resized_s, 1)}}


def raw_source(builder):
    import tensorflow_datasets as tfds

    return builder.as_data_source("train", decoders={"image": tfds.decode.SkipDecoding()})


# ---------------------------------------------------------------------------------------------
# Per-stage timing
# ---------------------------------------------------------------------------------------------
def _cpu_us(fn, n: int, rounds: int) -> float:
    """Best-of-`rounds` process CPU microseconds per sample of fn() (which handles n samples)."""
    fn()  # warm caches / lazy init
    best = float("inf")
    for _ in range(rounds):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return best / n * 1e6


def text_stages(view, tok, batch: int, rounds: int) -> dict[str, float]:
    """CPU us/sample of the non-image stages (read, order, tokenize, mask) on one batch of records."""
    index = pipeline.CaptionIndex.build(view)
    order = pipeline.CaptionOrder(len(index), seed=0)
    pairs = np.array([order(0, p) for p in range(batch)])
    images = index.image[pairs]
    exs = pipeline.read_examples(view, images)
    common_stages = {
        "read": _cpu_us(lambda: pipeline.read_examples(view, images), batch, rounds),
        "order": _cpu_us(lambda: [order(1, p) for p in range(batch)], batch, rounds),
    }
    _, spans = zip(*(pipeline.caption_and_spans(ex, int(s)) for ex, s in zip(exs, index.slot[pairs])))

    def tokenize():
        t, _ = zip(*(pipeline.caption_and_spans(ex, int(s)) for ex, s in zip(exs, index.slot[pairs])))
        return tok.encode_with_offsets(list(t), max_length=64)

    enc = tokenize()
    common_stages["tokenize"] = _cpu_us(tokenize, batch, rounds)
    common_stages["mask"] = _cpu_us(lambda: masking.mask_phrases_batch(
        enc["input_ids"], enc["offsets"], spans, np.full(batch, 0.5),
        [np.random.default_rng((0, g)) for g in range(batch)], tok.mask_token_id, 24), batch, rounds)
    return common_stages


def image_stages(datas: list[bytes], draft: bool, batch: int, rounds: int) -> dict[str, float]:
    """decode / resize / flip+copy CPU us per sample, training transform (`draft` = JPEG draft mode)."""
    h, w = SIZE
    hint = SIZE if draft else None

    def decode():
        out = []
        for d in datas:
            img = transforms.decode_image(d, size_hint=hint)
            img.load()
            out.append(img)
        return out

    decoded = decode()
    resized = [im if im.size == (w, h) else im.resize((w, h), Image.BICUBIC) for im in decoded]
    needs_resize = any(im.size != (w, h) for im in decoded)
    buf = np.empty((len(datas), h, w, 3), np.uint8)

    def flip_copy():
        rng = np.random.default_rng(0)
        for i, im in enumerate(resized):
            buf[i] = transforms.augment(im, rng, transforms.AugmentConfig())

    return {"decode": _cpu_us(decode, batch, rounds),
            "resize": _cpu_us(lambda: [im.resize((w, h), Image.BICUBIC) for im in decoded], batch, rounds)
            if needs_resize else 0.0,
            "flip+copy": _cpu_us(flip_copy, batch, rounds),
            "decoded_at": f"{decoded[0].size[1]}x{decoded[0].size[0]}"}


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    b = io.BytesIO()
    img.save(b, format="JPEG", quality=quality)
    return b.getvalue()


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------
def _children_cpu() -> float:
    import psutil

    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def end_to_end(source, tok, workers: int, batch: int, batches: int, warmup: int, seed: int = 0) -> dict:
    """Steady-state samples/s of `make_train_dataset` (startup excluded) and samples per CPU second."""
    cfg = pipeline.DataConfig(batch_size=batch, workers=workers, read_threads=0 if workers == 0 else 1)
    data = pipeline.make_train_dataset(source, tok, cfg, seed=seed, total_epochs=1000)
    it = data.iterator()
    try:
        t_start = time.perf_counter()
        for _ in range(warmup):
            next(it)
        startup = time.perf_counter() - t_start
        c0, k0, t0 = time.process_time(), _children_cpu(), time.perf_counter()
        for _ in range(batches):
            b = next(it)
        wall = time.perf_counter() - t0
        cpu_main, cpu_workers = time.process_time() - c0, _children_cpu() - k0
        assert b["image"].shape == (batch, *SIZE, 3)
    finally:
        if hasattr(it, "close"):
            it.close()
    n = batches * batch
    cores = min(workers, os.cpu_count() or 1) if workers else 1
    cpu = cpu_main + cpu_workers
    return {"workers": workers, "samples": n, "wall_s": round(wall, 2), "samples_per_s": round(n / wall, 1),
            "samples_per_s_per_core_wall": round(n / wall / cores, 1),
            "cpu_s_main": round(cpu_main, 2), "cpu_s_workers": round(cpu_workers, 2),
            "samples_per_cpu_s": round(n / cpu, 1) if cpu > 0 else None, "startup_s": round(startup, 1)}


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    ap.add_argument("--ids", type=int, default=64, help="identities (4 images each) in the benchmark dataset")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20, help="timed batches per end-to-end row")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per stage (best is kept)")
    ap.add_argument("--workers", default="1,2", help="grain worker counts for the end-to-end rows (0 always runs)")
    ap.add_argument("--data_dir", default=None, help="build/reuse the datasets here instead of a temp dir")
    ap.add_argument("--out", default=None, help="write the JSON document here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.ids, args.batch, args.batches, args.rounds, args.workers = 8, 8, 2, 2, "1"
    workers = sorted({int(w) for w in str(args.workers).split(",") if w.strip()} - {0})

    t_all = time.perf_counter()
    tok = load_tokenizer()
    with tempfile.TemporaryDirectory(prefix="plip_bench_input_") as tmp:
        work = Path(args.data_dir or tmp)
        ds = build_datasets(work, args.ids, 4)
        small, large = pipeline.train_fields_view(raw_source(ds["small"])), pipeline.train_fields_view(raw_source(ds["large"]))
        b = min(args.batch, len(small))

        common_stages = text_stages(small, tok, b, args.rounds)
        idx = list(range(b))
        small_bytes = [ex["image"] for ex in small.__getitems__(idx)]
        large_bytes = [ex["image"] for ex in large.__getitems__(idx)]
        tiny_bytes = [_jpeg(Image.open(io.BytesIO(d)).convert("RGB").resize((SIZE[1] // 2, SIZE[0] // 2), Image.BICUBIC))
                      for d in large_bytes]
        variants = {
            "stored 256x128 (resize at build)": image_stages(small_bytes, True, b, args.rounds),
            "stored 512x256, draft decode (train)": image_stages(large_bytes, True, b, args.rounds),
            "stored 512x256, full decode + resize": image_stages(large_bytes, False, b, args.rounds),
            "stored 128x64, upscaled": image_stages(tiny_bytes, True, b, args.rounds),
        }
        stage_rows = []
        for name, img in variants.items():
            stages = {"read": common_stages["read"], "order": common_stages["order"], "decode": img["decode"],
                      "resize": img["resize"], "flip+copy": img["flip+copy"],
                      "tokenize": common_stages["tokenize"], "mask": common_stages["mask"]}
            total = sum(stages.values())
            stage_rows.append({"variant": name, "decoded_at": img["decoded_at"],
                               "us_per_sample": {k: round(v, 1) for k, v in stages.items()},
                               "total_us": round(total, 1), "samples_per_s_per_core": round(1e6 / total, 1)})

        e2e = []
        warm = 1 if args.smoke else 2
        for w in [0, *workers]:
            row = end_to_end(raw_source(ds["small"]), tok, w, b, args.batches, warm)
            e2e.append({"data": "stored 256x128 (resize at build)", **row})
        row = end_to_end(raw_source(ds["large"]), tok, 0, b, args.batches, warm)
        e2e.append({"data": "stored 512x256, draft decode", **row})
        num_images, num_pairs = len(small), len(pipeline.CaptionIndex.build(small))

    load = os.getloadavg()
    busy = load[0] > 0.5 * (os.cpu_count() or 1)
    doc = {"kind": "input_pipeline", **common.base_info(), "smoke": args.smoke,
           "versions": common.package_versions(["pillow", "tokenizers", "grain", "numpy", "tensorflow-datasets"]),
           "config": {"image_size": list(SIZE), "max_length": 64, "max_masked": 24, "batch": b,
                      "batches": args.batches, "ids": args.ids, "images": num_images, "pairs": num_pairs,
                      "build_s": ds["build_s"], "target_per_core": TARGET_PER_CORE},
           "stages": stage_rows, "rows": e2e, "total_s": round(time.perf_counter() - t_all, 1),
           "notes": [("BUSY host (load average %.1f on %d cores): development numbers, rerun on an idle machine"
                      % (load[0], os.cpu_count() or 1)) if busy else "idle host",
                     "per-core = samples per CPU second (this process + its grain workers); "
                     "'order' is grain's index_shuffle, which cycle-walks (slower) on small datasets"]}

    print(f"{num_images} images, {num_pairs} pairs; builds {ds['build_s']} s; load average {load[0]:.1f} on "
          f"{os.cpu_count()} cores{' -- BUSY HOST: development numbers' if busy else ''}")
    names = list(stage_rows[0]["us_per_sample"])
    print("\nper stage, CPU us/sample (samples/s per core = 1e6 / total):")
    head = f"{'variant':38} {'decoded':>8} " + " ".join(f"{n:>9}" for n in names) + f" {'total':>7} {'/s/core':>8}"
    print(head)
    print("-" * len(head))
    for r in stage_rows:
        print(f"{r['variant']:38} {r['decoded_at']:>8} " + " ".join(f"{r['us_per_sample'][n]:>9.1f}" for n in names)
              + f" {r['total_us']:>7.0f} {r['samples_per_s_per_core']:>8.0f}")
    print("\nend to end (make_train_dataset, batch %d, %d timed batches; startup excluded):" % (b, args.batches))
    cols = ("data", "workers", "samples_per_s", "samples_per_s_per_core_wall", "samples_per_cpu_s",
            "cpu_s_main", "cpu_s_workers", "startup_s")
    print(common.format_table(e2e, cols))
    print(f"target: {TARGET_PER_CORE} samples/s per core; total {doc['total_s']} s")
    if args.out:
        paths = common.write_json(doc, args.out)
        print(f"wrote {paths[0]}")
    return doc


if __name__ == "__main__":
    main()
