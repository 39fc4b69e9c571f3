"""The fine-tunes on the pre-training engine: the image batches resume exactly and split over
processes; through `python -m plip_jax.main`, an image Re-ID fine-tune stopped by SIGTERM and a
text Re-ID fine-tune that crashed after a checkpoint both resume to the losses of an uninterrupted
run; the resumed run still reports its zero-shot column; `from_pretrained(WORKDIR)` loads the
fine-tuned encoders with the untrained text tower; a non-finite loss ends in one line."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, subprocess_env
from test_train_loop import MAIN, _losses, _main, _ok

CFG = "tests/tiny_finetune_cfg.py"


def _close(a: dict, b: dict, steps, keys) -> None:
    for step in steps:
        for key in keys:
            assert abs(a[step][key] - b[step][key]) <= 1e-6 * max(1.0, abs(a[step][key])), (step, key, a[step], b[step])


# ---------------------------------------------------------------------------------------------
# ImageBatches: exact resume, per-process rows
# ---------------------------------------------------------------------------------------------
def _batches(**kw):
    from plip_jax.data import downstream as fd
    from plip_jax.data.transforms import AugmentConfig

    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(7), 3)                      # 7 identities x 3 images: 3 P x K batches/epoch
    source = [{"image": rng.integers(0, 255, (8, 4, 3), dtype=np.uint8), "id": int(i)} for i in ids]
    labels, _ = fd.contiguous_labels(ids)
    return fd.ImageBatches(source, np.arange(len(ids)), labels, None, (8, 4), 4, "pk", 2, seed=3,
                           aug=AugmentConfig(flip=True, pad_crop=True), threads=2, **kw)


def test_image_batches_resume_exactly_and_decode_only_their_rows():
    ref = _batches()
    assert ref.steps_per_epoch == 3
    ref.restore(None, 0)
    want = [ref.next_local() for _ in range(8)]          # crosses two epoch boundaries
    a = _batches()
    a.restore(None, 0)
    for _ in range(4):
        a.next_local()
    saved = a.state()
    assert saved == {"epoch": 1, "position": 1}
    b, c = _batches(), _batches()
    b.restore(json.loads(json.dumps(saved)), 4)          # the checkpoint's JSON round trip
    c.restore(None, 4)                                   # another process count: from the step
    for got in ([b.next_local() for _ in range(4)], [c.next_local() for _ in range(4)]):
        for x, y in zip(got, want[4:]):
            np.testing.assert_array_equal(x["image"], y["image"])
            np.testing.assert_array_equal(x["label"], y["label"])
    halves = [_batches(process_index=i, process_count=2) for i in range(2)]
    for h in halves:
        h.restore(None, 0)
    for y in want[:4]:
        parts = [h.next_local() for h in halves]
        assert all(len(p["label"]) == 2 for p in parts)
        np.testing.assert_array_equal(np.concatenate([p["image"] for p in parts]), y["image"])
        np.testing.assert_array_equal(np.concatenate([p["label"] for p in parts]), y["label"])
    assert len(np.unique(want[0]["label"])) == 2         # P=2 identities x K=2 images
    for s in (ref, a, b, c, *halves):
        s.close()


# ---------------------------------------------------------------------------------------------
# End to end through plip_jax.main
# ---------------------------------------------------------------------------------------------
def _sigterm_after(workdir: Path, cfg_arg: str, min_step: int, *overrides: str) -> tuple[int, str]:
    """Run until metrics.jsonl has `min_step`, SIGTERM it; (the step it saved, stdout)."""
    p = subprocess.Popen([*MAIN, "--config", f"{CFG}:{cfg_arg}", "--workdir", str(workdir), *overrides],
                         cwd=ROOT, env=subprocess_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 600
    try:
        while not (metrics.exists() and max(_losses(workdir), default=0) >= min_step):
            assert p.poll() is None and time.time() < deadline, p.stderr.read()[-3000:]
            time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err[-3000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("SIGTERM: saved step"))
    return int(line.split()[3]), out


@pytest.mark.slow
def test_image_reid_sigterm_resume_matches_uninterrupted_and_loads(tmp_path):
    import jax
    from flax import traverse_util
    from tiny import tiny_bert_dir

    import plip_jax
    from plip_jax.convert.text_weights import load_params
    from plip_jax.data import downstream as fd
    from plip_jax.data import sources
    from plip_jax.data.pipeline import load_eval_split
    from plip_jax.evals.reid import reid_metrics

    # Constant lr: the run is cut at a step only known after the signal, and the uninterrupted run
    # then trains to the same end (a schedule over total_steps would differ between the two).
    common = [f"--config.data.data_dir={tmp_path / 'data'}", "--config.train.ckpt_every=2",
              "--config.optim.schedule=constant", "--config.eval_feature=raw"]
    cut, full = tmp_path / "cut", tmp_path / "full"
    s, out = _sigterm_after(cut, "task=image_reid,steps=100000", 3, *common)
    assert s >= 3 and "zero-shot:" in out
    end = s + 4                                          # two P x K epochs of 3 batches: epoch boundaries
    resumed = _main(cut, f"task=image_reid,steps={end}", *common, config=CFG)
    _ok(resumed)
    assert f"at step {s}" in resumed.stdout and "zero-shot:" not in resumed.stdout  # not evaluated again
    _ok(_main(full, f"task=image_reid,steps={end}", *common, config=CFG))
    _close(_losses(full), _losses(cut), range(s + 1, end + 1), ("loss", "loss_id", "loss_triplet"))
    ev_cut, ev_full = (json.loads((w / "eval.json").read_text()) for w in (cut, full))
    assert ev_cut["resumed_at"] == s and ev_cut["steps"] == ev_full["steps"] == end
    assert ev_cut["zero_shot"] == ev_full["zero_shot"]   # the stored zero-shot column of the fresh start
    assert ev_cut["finetuned"]["mAP"] == pytest.approx(ev_full["finetuned"]["mAP"], abs=1e-4)

    # from_pretrained(WORKDIR): the fine-tuned image encoder (its raw features give eval.json's
    # numbers again) and the untrained text tower, kept in the state of an image-only task.
    model = plip_jax.from_pretrained(cut)
    text, _ = load_params(Path(tiny_bert_dir()), 2)
    got = traverse_util.flatten_dict(jax.device_get(model.variables["params"]["text"]), sep="/")
    want = traverse_util.flatten_dict(text, sep="/")
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert model.encode_texts(["a man in a red coat"]).shape == (1, 32)
    data = json.loads((cut / "config.json").read_text())["data"]      # the run's own test set
    d = sources.data_config(data["name"], data["config"], str(tmp_path / "data"), None, data["procedural"])
    split = load_eval_split(sources.open_source(d, "test", decode_images=False), model.tokenizer, model.input_size, max_length=8)
    qm, gm = fd.split_query_gallery(split["image_ids"], split["camera_ids"])
    feats = model.encode_images(split["images"])
    m = reid_metrics(feats[qm], feats[gm], split["image_ids"][qm], split["image_ids"][gm],
                     split["camera_ids"][qm], split["camera_ids"][gm])
    assert float(m["mAP"]) == pytest.approx(ev_cut["finetuned"]["mAP"], abs=1e-3)


@pytest.mark.slow
def test_text_reid_crash_resume_matches_uninterrupted(tmp_path):
    common = [f"--config.data.data_dir={tmp_path / 'data'}", "--config.train.ckpt_every=2"]
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    _ok(_main(full, "task=text_reid,steps=4", *common, config=CFG))
    p = _main(crashed, "task=text_reid,steps=4", *common, config=CFG, crash_after_checkpoint=2)
    assert p.returncode == 3, p.stderr[-2000:]
    resumed = _main(crashed, "task=text_reid,steps=4", *common, config=CFG)
    _ok(resumed)
    assert "at step 2" in resumed.stdout
    _close(_losses(full), _losses(crashed), (3, 4), ("loss", "loss_cmpm", "loss_cmpc"))
    ev = json.loads((crashed / "eval.json").read_text())
    assert ev["zero_shot"] == json.loads((full / "eval.json").read_text())["zero_shot"]


@pytest.mark.slow
def test_nonfinite_finetune_loss_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    p = _main(tmp_path / "w", "task=image_reid,steps=6", f"--config.data.data_dir={tmp_path / 'data'}",
              "--config.train.ckpt_every=1", "--config.optim.lr=1e30", config=CFG)
    assert p.returncode == 2, p.stderr[-3000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and p.stderr.strip().splitlines()[-1] == errors[0], p.stderr[-3000:]
    assert errors[0].startswith("error: loss became ") and "Traceback" not in p.stderr
    bad = int(errors[0].split(" at step ")[1].split(";")[0])
    steps = sorted(int(d.name) for d in (tmp_path / "w" / "checkpoints").iterdir() if d.name.isdigit())
    assert steps and steps[-1] == bad - 1 and f"(step {bad - 1})" in errors[0]
    assert not (tmp_path / "w" / "eval.json").exists()
