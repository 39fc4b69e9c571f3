"""Input pipeline: batch spec, resume, samplers, process sharding, epoch-driven masking, transforms."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from plip_jax.data import pipeline, synthetic, transforms
from plip_jax.data.tokenizer import load_tokenizer

IMAGE_SIZE = (32, 16)
COLOURS = ["red", "blue", "green", "black", "white", "grey", "yellow", "pink"]
GARMENTS = ["jacket", "coat", "shirt", "sweater"]


def _caption(i, j):
    """A caption with two attribute phrases and a word unique to (i, j), plus its spans."""
    a = f"{COLOURS[(i + j) % 8]} {GARMENTS[j % 4]}"
    b = f"{COLOURS[(i * 3 + j) % 8]} trousers"
    text = f"person number {i} caption {j} wears a {a} and {b}."
    return text, [[text.index(a), text.index(a) + len(a)], [text.index(b), text.index(b) + len(b)]]


def make_source(num_ids=6, per_id=2, encoded=False, size=(16, 8)):
    """In-memory examples in the docs/contracts.md format (text fields as bytes, like TFDS)."""
    rng = np.random.default_rng(0)
    out = []
    for n in range(num_ids * per_id):
        img = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        if encoded:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG")
            img = buf.getvalue()
        caps = [_caption(n, j) for j in range(2)]
        prompt, pspans = _caption(n, 9)
        out.append({
            "image": img, "id": np.int64(100 + n // per_id), "file_path": f"p/{n}.jpg".encode(),
            "captions": np.array([c.encode() for c, _ in caps], dtype=object),
            "prompt_caption": prompt.encode(),
            "attributes": {k: b"unknown" for k in ("gender", "head", "upper", "lower", "shoes", "others")},
            "spans_json": json.dumps({"captions": [s for _, s in caps], "prompt_caption": pspans}).encode(),
            "camera_id": np.int64(n % 3), "attribute_labels": np.array([1, 0, -1], np.int8)})
    return out


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def source():
    return make_source()


def cfg(**kw):
    base = dict(image_size=IMAGE_SIZE, batch_size=4, max_masked=8, read_threads=0)
    base.update(kw)
    return pipeline.DataConfig(**base)


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batch_spec_matches_contract_and_synthetic(tok, source):
    data = pipeline.make_train_dataset(source, tok, cfg(), seed=0, total_epochs=1)
    assert data.num_pairs == 36 and data.steps_per_epoch == 9
    batch = next(data.iterator())
    spec = synthetic.batch_spec(4, IMAGE_SIZE, 64, 8)
    assert set(batch) == set(synthetic.BATCH_KEYS)
    for k, (shape, dtype) in spec.items():
        assert batch[k].shape == shape and batch[k].dtype == dtype, k
    syn = synthetic.synthetic_batch(4, IMAGE_SIZE, 64, 8)
    assert {k: (v.shape, v.dtype) for k, v in syn.items()} == {k: (v.shape, v.dtype) for k, v in batch.items()}
    # Masked tokens are consistent with the labels and the complete caption.
    for i in range(4):
        n = int(batch["mlm_weights"][i].sum())
        pos = batch["mlm_positions"][i, :n]
        np.testing.assert_array_equal(batch["mlm_labels"][i, :n], batch["input_ids"][i, pos])
        assert (batch["masked_input_ids"][i, pos] == tok.mask_token_id).all()
        rest = np.setdiff1d(np.arange(64), pos)
        np.testing.assert_array_equal(batch["masked_input_ids"][i, rest], batch["input_ids"][i, rest])


def test_synthetic_batch_structure():
    b = synthetic.synthetic_batch(8, (16, 8), 32, 6, num_ids=3, seed=1)
    assert set(b["id"].tolist()) <= {0, 1, 2}
    assert (b["input_ids"][:, 0] == synthetic.CLS_ID).all()
    lengths = b["attention_mask"].sum(1)
    assert (b["input_ids"][np.arange(8), lengths - 1] == synthetic.SEP_ID).all()
    for i in range(8):
        n = int(b["mlm_weights"][i].sum())
        pos = b["mlm_positions"][i, :n]
        assert ((pos > 0) & (pos < lengths[i] - 1)).all()
        assert (b["masked_input_ids"][i, pos] == synthetic.MASK_ID).all()


def test_epoch_covers_every_caption_once(tok, source):
    data = pipeline.make_train_dataset(source, tok, cfg(), seed=3, total_epochs=2)
    batches = list(data.iterator())
    assert len(batches) == 2 * data.steps_per_epoch
    per_epoch = [np.concatenate([b["input_ids"] for b in batches[e * 9:(e + 1) * 9]]) for e in range(2)]
    for ep in per_epoch:
        assert len({r.tobytes() for r in ep}) == 36  # all 24 captions + 12 prompt captions, once each
    assert not np.array_equal(per_epoch[0], per_epoch[1])  # reshuffled per epoch


def test_resume_from_saved_state_is_bit_exact(tok, source):
    c = cfg(pad_crop=True, random_erasing=True, read_threads=2)  # threaded prefetch in the state
    data = pipeline.make_train_dataset(source, tok, c, seed=1, total_epochs=2)
    it = data.iterator()
    take(it, 11)  # cross into epoch 1
    state = it.get_state()
    expected = take(it, 2)
    fresh = pipeline.make_train_dataset(source, tok, c, seed=1, total_epochs=2).iterator()
    fresh.set_state(state)
    for a, b in zip(expected, take(fresh, 2)):
        assert_batches_equal(a, b)


def test_batch_rows_are_the_per_element_function(tok):
    """Batches are built in one call, yet row r of batch j is the element g = 4j + r alone: its own
    rng((seed, g)) draws augmentation then masks, with the epoch's order and mask ratio."""
    from plip_jax.data import masking

    src = make_source(encoded=True, size=(64, 32))  # JPEGs larger than IMAGE_SIZE: the draft path
    c = cfg(pad_crop=True, random_erasing=True, mask_schedule="linear", mask_lower=0.3, mask_upper=1.0)
    batches = take(pipeline.make_train_dataset(src, tok, c, seed=4, total_epochs=2).iterator(), 11)
    index = pipeline.CaptionIndex.build(src)
    order = pipeline.CaptionOrder(len(index), 4)
    for j, batch in enumerate(batches):
        for r in range(4):
            g = 4 * j + r
            epoch, pos = divmod(g, 36)
            pair = order(epoch, pos)
            ex = src[int(index.image[pair])]
            rng = np.random.default_rng((4, g))
            image = transforms.load_train_image(ex["image"], IMAGE_SIZE, rng, c.augment_config())
            text, spans = pipeline.caption_and_spans(ex, int(index.slot[pair]))
            enc = tok.encode_with_offsets([text], max_length=64)
            masked, positions, labels, weights = masking.mask_phrases(
                enc["input_ids"][0], enc["offsets"][0], spans, masking.mask_ratio(epoch, 2, 0.3, 1.0, "linear"),
                rng, tok.mask_token_id, 8)
            want = {"image": image, "input_ids": enc["input_ids"][0], "attention_mask": enc["attention_mask"][0],
                    "masked_input_ids": masked, "mlm_positions": positions, "mlm_labels": labels,
                    "mlm_weights": weights, "id": index.image_ids[index.image[pair]]}
            for k, v in want.items():
                np.testing.assert_array_equal(batch[k][r], v, err_msg=f"batch {j} row {r} {k}")
    assert sum(b["mlm_weights"].sum() for b in batches) > 0


def test_mask_ratio_follows_current_epoch(tok, source):
    # linear 0 -> 1 over 2 epochs: epoch 0 has ratio 0 (nothing masked), epoch 1 ratio 0.5.
    c = cfg(mask_schedule="linear", mask_lower=0.0, mask_upper=1.0)
    batches = list(pipeline.make_train_dataset(source, tok, c, seed=0, total_epochs=2).iterator())
    masked_per_epoch = [sum(b["mlm_weights"].sum() for b in batches[e * 9:(e + 1) * 9]) for e in range(2)]
    assert masked_per_epoch[0] == 0 and masked_per_epoch[1] > 0


def test_identity_sampler_gives_p_by_k(tok, source):
    c = cfg(batch_size=6, sampler="identity", p_identities=3, k_images=2, read_threads=2)
    data = pipeline.make_train_dataset(source, tok, c, seed=0, total_epochs=2)
    batches = list(data.iterator())
    assert len(batches) == 2 * (36 // 6)
    for b in batches:
        ids, counts = np.unique(b["id"], return_counts=True)
        assert len(ids) == 3 and (counts == 2).all()
    again = list(pipeline.make_train_dataset(source, tok, c, seed=0, total_epochs=2).iterator())
    for a, b in zip(batches, again):
        assert_batches_equal(a, b)  # deterministic per seed/epoch


def test_identity_sampler_split_over_processes(tok, source):
    c = cfg(batch_size=6, sampler="identity", p_identities=3, k_images=2)
    parts = [next(pipeline.make_train_dataset(source, tok, c, seed=0, total_epochs=1, process_index=p,
                                              process_count=2).iterator()) for p in range(2)]
    ids, counts = np.unique(np.concatenate([b["id"] for b in parts]), return_counts=True)
    assert len(ids) == 3 and (counts == 2).all()  # the two local halves form one P x K global batch


def test_process_sharding_partitions_the_data(tok, source):
    seen = []
    for p in range(2):
        data = pipeline.make_train_dataset(source, tok, cfg(), seed=5, total_epochs=1, process_index=p,
                                           process_count=2)
        assert data.local_batch_size == 2
        rows = np.concatenate([b["input_ids"] for b in data.iterator()])
        seen.append({r.tobytes() for r in rows})
    assert not (seen[0] & seen[1])
    assert len(seen[0]) == len(seen[1]) == 18 and len(seen[0] | seen[1]) == 36


def test_encoded_jpeg_source(tok):
    data = pipeline.make_train_dataset(make_source(num_ids=2, encoded=True), tok, cfg(), seed=0, total_epochs=1)
    batch = next(data.iterator())
    assert batch["image"].shape == (4, *IMAGE_SIZE, 3)


@pytest.mark.slow
def test_worker_processes_match_in_process_and_resume(tok, source):
    # Spawning grain workers imports jax in each (~8 s apiece here), hence `slow`.
    base = list(pipeline.make_train_dataset(source, tok, cfg(), seed=2, total_epochs=1).iterator())[:5]
    data = pipeline.make_train_dataset(source, tok, cfg(workers=2), seed=2, total_epochs=1)
    it = data.iterator()
    try:
        got = take(it, 3)
        state = it.get_state()
    finally:
        it.close()
    for a, b in zip(base, got):
        assert_batches_equal(a, b)  # the stream does not depend on the worker count
    fresh = data.iterator()
    try:
        fresh.set_state(state)
        for a, b in zip(base[3:], take(fresh, 2)):
            assert_batches_equal(a, b)
    finally:
        fresh.close()


def test_images_per_caption_adds_other_images_of_the_identity(tok):
    """images_per_caption K: each caption also gets K-1 different images of its own identity."""
    src = make_source(num_ids=6, per_id=3)
    for n, ex in enumerate(src):
        ex["image"] = np.full((16, 8, 3), 10 * n, np.uint8)  # image n is a flat grey level 10n
    data = pipeline.make_train_dataset(src, tok, cfg(images_per_caption=3), seed=0, total_epochs=1)
    spec = synthetic.batch_spec(4, IMAGE_SIZE, 64, 8, images_per_caption=3)
    assert set(spec) == set(synthetic.BATCH_KEYS) | {"more_images"}
    for b in take(data.iterator(), 4):
        for k, (shape, dtype) in spec.items():
            assert b[k].shape == shape and b[k].dtype == dtype, k
        for i in range(4):
            own = (int(b["image"][i, 0, 0, 0]) + 5) // 10
            more = [(int(x) + 5) // 10 for x in b["more_images"][i, :, 0, 0, 0]]
            assert b["id"][i] == 100 + own // 3
            assert sorted([own, *more]) == [3 * (own // 3) + j for j in range(3)]  # the two others, once each
    with pytest.raises(ValueError, match="images_per_caption must be an integer >= 1"):
        pipeline.make_train_dataset(src, tok, cfg(images_per_caption=0), seed=0, total_epochs=1)


def test_config_errors(tok, source):
    with pytest.raises(ValueError, match="unknown data config fields"):
        pipeline.DataConfig.from_any({"batch_sz": 4})
    with pytest.raises(ValueError, match="unknown sampler"):
        pipeline.make_train_dataset(source, tok, cfg(sampler="pk"), seed=0, total_epochs=1)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        pipeline.make_train_dataset(source, tok, cfg(batch_size=64), seed=0, total_epochs=1)
    with pytest.raises(ValueError, match="p_identities"):
        pipeline.make_train_dataset(source, tok, cfg(sampler="identity", p_identities=3, k_images=2),
                                    seed=0, total_epochs=1)
    with pytest.raises(ValueError, match="divisible by the process count"):
        pipeline.make_train_dataset(source, tok, cfg(batch_size=5), seed=0, total_epochs=1, process_count=2)
    assert pipeline.DataConfig.from_any({"image_size": [8, 4]}).image_size == (8, 4)
    assert pipeline.DataConfig.from_any({"name": "synth_pedes", "workers": 3}, strict=False).workers == 3


def test_global_batch_single_process():
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    local = synthetic.synthetic_batch(jax.device_count() * 2, (8, 4), 16, 4)
    out = pipeline.global_batch(local, NamedSharding(mesh, PartitionSpec("data")))
    for k, v in local.items():
        assert out[k].shape == v.shape and out[k].dtype == v.dtype
        np.testing.assert_array_equal(np.asarray(out[k]), v)


def test_load_eval_split(tok, source):
    ev = pipeline.load_eval_split(source, tok, IMAGE_SIZE, max_items=5)
    assert ev["images"].shape == (5, *IMAGE_SIZE, 3) and ev["images"].dtype == np.uint8
    assert ev["image_ids"].tolist() == [100, 100, 101, 101, 102]
    assert len(ev["captions"]) == 10 and ev["input_ids"].shape == (10, 64) and ev["attention_mask"].shape == (10, 64)
    assert ev["caption_ids"].tolist() == [i for i in [100, 100, 101, 101, 102] for _ in range(2)]
    assert ev["caption_image_index"].tolist() == [i for i in range(5) for _ in range(2)]
    assert ev["file_paths"][0] == "p/0.jpg" and ev["camera_ids"].tolist() == [0, 1, 2, 0, 1]
    assert ev["attribute_labels"].shape == (5, 3)
    with_prompt = pipeline.load_eval_split(source, tok, IMAGE_SIZE, max_items=2, include_prompt=True)
    assert len(with_prompt["captions"]) == 6


# --- transforms --------------------------------------------------------------------------------
def test_gray_normalized_matches_pil_grayscale():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(2, 6, 5, 3), dtype=np.uint8)
    pil_gray = np.stack([np.asarray(Image.fromarray(x).convert("L")) for x in img])
    np.testing.assert_array_equal(np.asarray(transforms.grayscale_uint8(img)), pil_gray)
    ref = (np.repeat(pil_gray[..., None], 3, -1) / 255.0 - np.array(transforms.MEAN)) / np.array(transforms.STD)
    np.testing.assert_allclose(np.asarray(transforms.gray_normalized(img)), ref, atol=1e-5)
    ref_c = (img / 255.0 - np.array(transforms.MEAN)) / np.array(transforms.STD)
    np.testing.assert_allclose(np.asarray(transforms.normalize(img)), ref_c, atol=1e-5)
    with pytest.raises(ValueError, match="expected images"):
        transforms.normalize(img[..., :2])


def test_host_transforms():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(16, 8, 3), dtype=np.uint8)
    out = transforms.resize(img, (32, 16))
    ref = np.asarray(Image.fromarray(img).resize((16, 32), Image.BICUBIC))
    np.testing.assert_array_equal(out, ref)
    flips = [transforms.random_flip(img, np.random.default_rng(s)) for s in range(20)]
    assert any(np.array_equal(f, img[:, ::-1]) for f in flips) and any(np.array_equal(f, img) for f in flips)
    cropped = transforms.pad_crop(img, np.random.default_rng(0), pad=2)
    assert cropped.shape == img.shape
    erased = transforms.random_erasing(np.full((32, 16, 3), 7, np.uint8), np.random.default_rng(1), p=1.0)
    assert (erased == 91).any() and erased.shape == (32, 16, 3)
    with pytest.raises(ValueError, match="uint8"):
        transforms.decode_image(np.zeros((4, 4, 3), np.float32))


def _natural_jpeg(h, w, seed=0):
    """A natural-ish photo as JPEG q90: smooth gradients, sharp-edged blobs, a little blur and noise."""
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] / h
    img = np.stack([120 + 60 * np.sin(5 * yy + 2 * c) + 40 * np.cos(7 * xx + c) for c in range(3)], -1)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        draw.ellipse([x0, y0, x0 + int(rng.integers(w // 10, w // 3)), y0 + int(rng.integers(h // 10, h // 3))],
                     fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    arr = np.asarray(im.filter(ImageFilter.GaussianBlur(1.0))) + rng.normal(0, 4, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_draft_decode_is_exact_size_and_close_to_full_decode():
    """Training decodes JPEGs in draft mode (DCT-domain 1/2..1/8, then bicubic to the exact size): the
    image has the target size and stays within 2/255 mean abs of full decode + bicubic resize."""
    no_flip = transforms.AugmentConfig(flip=False)
    for (h, w), drafted in [((512, 256), (256, 128)), ((640, 320), (320, 160)), ((1024, 512), (256, 128)),
                            ((2048, 1024), (256, 128)), ((300, 150), (300, 150))]:
        data = _natural_jpeg(h, w)
        assert transforms.decode_image(data, size_hint=(256, 128)).size[::-1] == drafted  # the DCT scale used
        fast = transforms.load_train_image(data, (256, 128), np.random.default_rng(0), no_flip)
        full = transforms.load_eval_image(data, (256, 128))
        assert fast.shape == full.shape == (256, 128, 3) and fast.dtype == np.uint8
        diff = np.abs(fast.astype(np.float64) - full).mean()
        assert diff < 2.0, ((h, w), diff)
        assert (diff > 0) == (drafted != (h, w))  # identical where draft mode cannot reduce
        full_train = transforms.load_train_image(data, (256, 128), np.random.default_rng(0), no_flip, draft=False)
        np.testing.assert_array_equal(full_train, full)


def test_draft_mode_in_training_only(tok):
    """The training stream decodes in draft mode; eval splits decode in full (as the official code)."""
    src = make_source(num_ids=2, per_id=2)
    datas = [_natural_jpeg(128, 64, seed=n) for n in range(len(src))]
    for ex, data in zip(src, datas):
        ex["image"] = data
    draft = [transforms.load_train_image(d, IMAGE_SIZE, None, transforms.AugmentConfig(flip=False)) for d in datas]
    full = [transforms.load_eval_image(d, IMAGE_SIZE) for d in datas]
    assert all(np.abs(a.astype(int) - b).mean() > 0 for a, b in zip(draft, full))
    batch = next(pipeline.make_train_dataset(src, tok, cfg(flip=False), seed=0, total_epochs=1).iterator())
    for row in batch["image"]:
        assert any(np.array_equal(row, d) for d in draft) and not any(np.array_equal(row, f) for f in full)
    ev = pipeline.load_eval_split(src, tok, IMAGE_SIZE)
    np.testing.assert_array_equal(ev["images"], np.stack(full))


# --- the real TFDS path (tfds_synth_pedes procedural builder), skipped where it is not available ----
@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    build = pytest.importorskip("tfds_synth_pedes.build")
    d = tmp_path_factory.mktemp("tfds")
    build.build("synth_pedes", "procedural", d, **TFDS_PARAMS)
    return d


TFDS_PARAMS = dict(num_identities=8, images_per_identity=2, num_val_ids=2, num_test_ids=2, image_size=(32, 16))


@pytest.mark.parametrize("skip_decoding", [False, True])
def test_tfds_procedural_source_through_pipeline(tok, tfds_dir, skip_decoding):
    import tensorflow_datasets as tfds

    from tfds_synth_pedes import build

    builder = build.get_builder("synth_pedes", "procedural", tfds_dir, **TFDS_PARAMS)
    decoders = {"image": tfds.decode.SkipDecoding()} if skip_decoding else None
    src = builder.as_data_source("train", decoders=decoders)
    view = pipeline.train_fields_view(src)
    assert isinstance(view, pipeline.TrainFieldsView)  # the fast proto path applies to our builder
    for i in (0, len(src) - 1):
        ref, fast = src[i], view[i]
        assert fast["id"] == ref["id"] and fast["captions"] == list(ref["captions"])
        assert fast["prompt_caption"] == ref["prompt_caption"] and fast["spans_json"] == ref["spans_json"]
        np.testing.assert_array_equal(np.asarray(transforms.decode_image(fast["image"])),
                                      np.asarray(transforms.decode_image(ref["image"])))
    data = pipeline.make_train_dataset(src, tok, cfg(), seed=0, total_epochs=1)
    assert data.num_pairs >= 3 * len(src)  # >= 2 captions + the prompt caption per image
    batches = list(data.iterator())
    assert len(batches) == data.steps_per_epoch
    spec = synthetic.batch_spec(4, IMAGE_SIZE, 64, 8)
    for k, (shape, dtype) in spec.items():
        assert batches[0][k].shape == shape and batches[0][k].dtype == dtype, k
    assert sum(b["mlm_weights"].sum() for b in batches) > 0  # its spans produce masked phrases
    slow = list(pipeline.make_train_dataset(src, tok, cfg(), seed=0, total_epochs=1, fast_read=False).iterator())
    for a, b in zip(batches, slow):
        assert_batches_equal(a, b)  # fast proto reads change nothing
    ev = pipeline.load_eval_split(build.data_source("synth_pedes", "procedural", "test", tfds_dir, **TFDS_PARAMS),
                                  tok, IMAGE_SIZE)
    assert ev["images"].shape[1:] == (*IMAGE_SIZE, 3) and len(set(ev["image_ids"].tolist())) == 2
    assert len(ev["captions"]) == len(ev["caption_ids"]) >= 2 * len(ev["image_ids"])
