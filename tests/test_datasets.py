"""TFDS builders on tiny fixtures: procedural read-back, each official format, and every bad input."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.pedes import FORMATS, make_entries, write_dataset, write_image
from tfds_synth_pedes import build as tb
from tfds_synth_pedes import spac, vocab
from tfds_synth_pedes.ingest import DatasetError
from tfds_synth_pedes.phrases import phrase_parts
from tfds_synth_pedes.synth_pedes import heldout_ids, make_config
from tfds_synth_pedes.synth_pedes.procedural import sample_identities, write_layout

TINY = dict(num_identities=16, images_per_identity=2, image_size=(32, 16), num_val_ids=3, num_test_ids=4)


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _read_all(source) -> list[dict]:
    return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def procedural(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("pd")
    tb.build("synth_pedes", "procedural", data_dir, **TINY)
    return data_dir


def test_procedural_config_name_is_unique_per_size():
    assert make_config("procedural").name == "procedural"
    assert make_config("procedural", num_identities=60, images_per_identity=3).name == "procedural_n60_k3"
    assert make_config("procedural", **TINY).name == "procedural_n16_k2_h32_w16_v3_t4"
    with pytest.raises(DatasetError, match="procedural only"):
        make_config("full", num_identities=5)
    with pytest.raises(DatasetError, match="integer >= 1"):
        make_config("procedural", num_identities=0)


def test_procedural_read_back_ids_splits_captions_spans(procedural):
    splits = {s: _read_all(tb.data_source("synth_pedes", "procedural", s, procedural, **TINY)) for s in ("train", "val", "test")}
    ids = {s: {int(x["id"]) for x in xs} for s, xs in splits.items()}
    assert (len(ids["val"]), len(ids["test"]), len(ids["train"])) == (3, 4, 9)
    assert not (ids["val"] & ids["test"]) and not (ids["train"] & (ids["val"] | ids["test"]))
    assert sum(len(xs) for xs in splits.values()) == 32
    by_id: dict[int, str] = {}
    for x in (x for xs in splits.values() for x in xs):
        assert x["image"].shape == (32, 16, 3) and x["image"].dtype == np.uint8
        attrs = {k: _text(v) for k, v in x["attributes"].items()}
        assert by_id.setdefault(int(x["id"]), spac.format_attributes(attrs)) == spac.format_attributes(attrs)
        assert 0 <= int(x["camera_id"]) < 6
        np.testing.assert_array_equal(x["attribute_labels"], spac.attribute_labels(attrs))
        heads = {phrase_parts(v)[1] for v in attrs.values() if v != vocab.UNKNOWN}
        spans = json.loads(_text(x["spans_json"]))
        captions = [_text(c) for c in x["captions"]]
        assert len(captions) >= 2 and len(spans["captions"]) == len(captions)
        for text, caption_spans in [*zip(captions, spans["captions"]), (_text(x["prompt_caption"]), spans["prompt_caption"])]:
            assert caption_spans, text
            for s, e in caption_spans:
                assert phrase_parts(text[s:e])[1] in heads, (text[s:e], attrs)
        assert [_text(x["prompt_caption"])[s:e] for s, e in spans["prompt_caption"]] == [
            attrs[slot] for slot in vocab.SLOTS if attrs[slot] != vocab.UNKNOWN
        ]
    assert len(set(by_id.values())) == len(by_id)  # identities never share all attributes


def test_procedural_render_is_deterministic(tmp_path):
    kw = dict(num_identities=3, images_per_identity=2, image_height=32, image_width=16, seed=7, num_cameras=2)
    a, b = write_layout(tmp_path / "a", **kw), write_layout(tmp_path / "b", **kw)
    ja = json.loads((a / "synthpedes_dataset.json").read_text())
    assert ja == json.loads((b / "synthpedes_dataset.json").read_text())
    assert ja[0]["file_path"] == "Part1/1/1.jpg" and len(ja[0]["attributes"]) == 1
    for e in ja:
        assert (a / e["file_path"]).read_bytes() == (b / e["file_path"]).read_bytes()


def test_identities_have_distinct_attributes_and_heldout_split_is_stable():
    idents = sample_identities(400, seed=0)
    assert len({spac.format_attributes(i.attributes) for i in idents}) == 400
    val, test = heldout_ids(range(1, 401), 30, 40)
    assert (len(val), len(test), val & test) == (30, 40, set())
    assert heldout_ids(reversed(range(1, 401)), 30, 40) == (val, test)


def test_full_config_reads_released_layout_and_converts_images(tmp_path):
    entries = make_entries("synth_pedes")
    root = write_dataset(tmp_path / "m", "synth_pedes", entries)
    write_image(root / entries[0]["file_path"], mode="L")  # grayscale JPEG
    write_image(root / entries[1]["file_path"], mode="CMYK")  # CMYK JPEG
    write_image(root / entries[2]["file_path"], mode="RGBA", fmt="PNG")  # PNG with alpha, named .jpg
    write_image(root / entries[3]["file_path"], mode="P", fmt="GIF")  # palette GIF
    builder = tb.build("synth_pedes", "full", tmp_path / "d", manual_dir=root, num_val_ids=1, num_test_ids=1)
    xs = [x for s in ("train", "val", "test") for x in _read_all(builder.as_data_source(split=s))]
    assert len(xs) == len(entries)
    assert all(x["image"].shape == (32, 16, 3) for x in xs)
    x = xs[0]
    assert _text(x["attributes"]["others"]) == "unknown" and _text(x["attributes"]["gender"]) == "woman"
    assert int(x["camera_id"]) == -1 and int(x["attribute_labels"][0]) == 1
    spans = json.loads(_text(x["spans_json"]))
    prompt = _text(x["prompt_caption"])
    assert [prompt[s:e] for s, e in spans["prompt_caption"]] == ["woman", "long black hair", "red coat", "blue pants"]


@pytest.mark.parametrize("kind", ["cuhk_pedes", "icfg_pedes", "rstp_reid"])
def test_official_format_builders_keep_official_splits(tmp_path, kind):
    root = write_dataset(tmp_path / "m" / {"cuhk_pedes": "CUHK-PEDES", "icfg_pedes": "ICFG-PEDES", "rstp_reid": "RSTPReid"}[kind], kind)
    builder = tb.build(kind, None, tmp_path / "d", manual_dir=tmp_path / "m")
    splits = FORMATS[kind][3]
    assert list(builder.info.splits) == list(splits)
    for i, split in enumerate(splits):
        xs = _read_all(builder.as_data_source(split=split))
        assert sorted({int(x["id"]) for x in xs}) == [2 * i + 1, 2 * i + 2]
        x = xs[0]
        assert _text(x["prompt_caption"]) == "" and _text(x["attributes"]["upper"]) == ""
        assert set(x["attribute_labels"].tolist()) == {-1} and int(x["camera_id"]) in (1, 2)
        caption = _text(x["captions"][0])
        spans = json.loads(_text(x["spans_json"]))["captions"][0]
        assert [caption[s:e] for s, e in spans] == ["woman", "red coat", "blue pants"]


def test_icfg_accepts_the_dash_file_name(tmp_path):
    root = write_dataset(tmp_path / "m", "icfg_pedes")
    os.rename(root / "ICFG_PEDES.json", root / "ICFG-PEDES.json")
    assert tb.build("icfg_pedes", None, tmp_path / "d", manual_dir=root).info.splits["test"].num_examples == 4


def test_missing_manual_dir_gives_download_instructions(tmp_path):
    with pytest.raises(DatasetError, match="Zplusdragon/PLIP"):
        tb.build("synth_pedes", "full", tmp_path / "d", manual_dir=tmp_path / "nope")
    with pytest.raises(DatasetError, match="does not exist or is empty"):
        tb.build("rstp_reid", None, tmp_path / "d")
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(DatasetError, match="No annotation file reid_raw.json"):
        tb.build("cuhk_pedes", None, tmp_path / "d", manual_dir=tmp_path / "empty")


def test_json_that_is_not_a_list(tmp_path):
    root = write_dataset(tmp_path / "m", "cuhk_pedes", entries=[])
    (root / "reid_raw.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="must hold a JSON list of entries, got a dict"):
        tb.build("cuhk_pedes", None, tmp_path / "d", manual_dir=root)


def _truncate(path: Path) -> None:
    """A noisy JPEG cut after its header, the way an interrupted copy leaves it."""
    noise = np.random.default_rng(0).integers(0, 255, (64, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])


def _break(kind: str, root: Path, entries: list[dict], case: str) -> None:
    """Makes entry 1 bad in the way `case` names (files are already written)."""
    key, sub = FORMATS[kind][1], root / FORMATS[kind][2]
    e = entries[1]
    if case == "missing image":
        (sub / e[key]).unlink()
    elif case == "truncated image":
        _truncate(sub / e[key])
    elif case == "not an image":
        (sub / e[key]).write_text("not a picture")
    elif case == "missing field":
        del e["captions"]
    elif case == "empty captions":
        e["captions"] = []
    elif case == "non-integer id":
        e["id"] = "7a"
    elif case == "duplicate file path":
        e[key] = entries[0][key]
    elif case == "absolute path":
        e[key] = str(sub / e[key])
    elif case == "escapes manual dir":
        e[key] = "../outside.jpg"
        write_image(root.parent / "outside.jpg")
    elif case == "symlink outside":
        write_image(root.parent / "elsewhere.jpg")
        (sub / e[key]).unlink()
        os.symlink(root.parent / "elsewhere.jpg", sub / e[key])
    (root / FORMATS[kind][0]).write_text(json.dumps(entries))


BAD = {
    "missing image": "image file is missing",
    "truncated image": "image cannot be decoded",
    "not an image": "not an image file",
    "missing field": r"missing field\(s\) \['captions'\]",
    "empty captions": "empty captions",
    "non-integer id": "id must be an integer, got '7a'",
    "duplicate file path": "duplicate file path \\(first used by entry 0\\)",
    "absolute path": "file path is absolute",
    "escapes manual dir": "escapes the dataset folder",
    "symlink outside": "symlink pointing outside",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_entry_stops_build_naming_entry_and_problem(tmp_path, case):
    entries = make_entries("cuhk_pedes", ids_per_split=1)
    root = write_dataset(tmp_path / "m", "cuhk_pedes", entries)
    path = entries[1]["file_path"]
    _break("cuhk_pedes", root, entries, case)
    with pytest.raises(DatasetError) as err:
        tb.build("cuhk_pedes", None, tmp_path / "d", manual_dir=root)
    message = err.value.message
    assert "entry 1 (" in message and re.search(BAD[case], message), message
    if case not in ("absolute path", "escapes manual dir", "duplicate file path"):
        assert repr(path) in message


def test_skip_bad_builds_the_rest_and_reports_every_skipped_entry(tmp_path, capsys):
    entries = make_entries("rstp_reid", ids_per_split=2, images_per_id=2)  # 12 entries
    root = write_dataset(tmp_path / "m", "rstp_reid", entries)
    key, sub = "img_path", root / "imgs"
    (sub / entries[1][key]).unlink()
    _truncate(sub / entries[4][key])
    entries[7]["id"] = 1.5
    (root / "data_captions.json").write_text(json.dumps(entries))
    assert tb.main(["rstp_reid", "--data_dir", str(tmp_path / "d"), "--manual_dir", str(root), "--skip_bad"]) == 0
    out, errs = capsys.readouterr()
    for i in (1, 4, 7):
        assert f"skipped entry {i} ({entries[i][key]!r})" in errs
    assert "skipped 3 bad entries" in errs and "skipped 3 bad entries (listed above)" in out
    builder = tb.get_builder("rstp_reid", None, tmp_path / "d")
    assert sum(s.num_examples for s in builder.info.splits.values()) == 9


def test_cli_reports_problem_in_one_line_and_data_source_needs_a_build(tmp_path, capsys):
    assert tb.main(["cuhk_pedes", "--data_dir", str(tmp_path / "d"), "--manual_dir", str(tmp_path / "none")]) == 2
    assert "error: Manual directory" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="is not built"):
        tb.data_source("synth_pedes", "procedural", "train", tmp_path / "d", num_identities=5)


def _textured(path: Path, size_wh: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth, natural-ish RGB JPEG (gradients + a few blobs) at `size_wh`; returns its pixels."""
    w, h = size_wh
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    rng = np.random.default_rng(seed)
    img = np.stack([128 + 90 * np.sin(6 * yy + c + 3 * xx * rng.random()) for c in range(3)], -1)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, format="JPEG", quality=95)
    return np.asarray(Image.open(path).convert("RGB"))


def test_resize_at_build_stores_images_at_the_asked_size(tmp_path):
    """`image_size=HxW` (synth_pedes full, text-ReID builders): its own config name and data dir,
    every image stored resized (bicubic of the full decode, JPEG q95), the as-released build kept."""
    import tensorflow_datasets as tfds

    from plip_jax.data import pipeline
    from plip_jax.data.tokenizer import load_tokenizer

    entries = make_entries("synth_pedes")
    root = write_dataset(tmp_path / "m", "synth_pedes", entries)
    originals = {e["file_path"]: _textured(root / e["file_path"], (48 + 8 * i, 96 + 8 * i), i)
                 for i, e in enumerate(entries)}  # varied sizes, none already 64x32
    assert make_config("full", image_size=(64, 32)).name == "full_h64_w32"
    assert make_config("full_h64_w32_v1_t1").image_height == 64
    with pytest.raises(DatasetError, match="both image_height and image_width"):
        make_config("full", image_height=64)
    resized = tb.build("synth_pedes", "full", tmp_path / "d", manual_dir=root, image_size=(64, 32))
    plain = tb.build("synth_pedes", "full", tmp_path / "d", manual_dir=root)
    assert resized.builder_config.name == "full_h64_w32" and resized.data_dir != plain.data_dir
    raw = resized.as_data_source("train", decoders={"image": tfds.decode.SkipDecoding()})
    for i in range(len(raw)):
        ex = raw[i]
        img = Image.open(io.BytesIO(ex["image"]))
        assert img.format == "JPEG" and img.size == (32, 64)
        ref = np.asarray(Image.fromarray(originals[_text(ex["file_path"])]).resize((32, 64), Image.BICUBIC))
        assert np.abs(np.asarray(img.convert("RGB"), np.float64) - ref).mean() < 2.0  # JPEG q95 only
    assert {plain.as_data_source("train")[i]["image"].shape for i in range(3)} != {(64, 32, 3)}

    tok = load_tokenizer()
    cfg = pipeline.DataConfig(image_size=(64, 32), batch_size=4, max_masked=8, read_threads=0)
    shapes = [{k: v.shape for k, v in next(pipeline.make_train_dataset(
        b.as_data_source("train", decoders={"image": tfds.decode.SkipDecoding()}), tok, cfg, seed=0,
        total_epochs=1).iterator()).items()} for b in (resized, plain)]
    assert shapes[0] == shapes[1] and shapes[0]["image"] == (4, 64, 32, 3)

    cuhk = write_dataset(tmp_path / "c", "cuhk_pedes")
    for i, e in enumerate(make_entries("cuhk_pedes")):
        _textured(cuhk / "imgs" / e["file_path"], (40, 100), i)
    built = tb.build("cuhk_pedes", None, tmp_path / "d", manual_dir=cuhk, image_size=(64, 32))
    assert built.builder_config.name == "full_h64_w32"
    again = tb.get_builder("cuhk_pedes", "full_h64_w32", tmp_path / "d")  # the name a run config gives
    assert again.is_prepared() and again.data_dir == built.data_dir
    assert not tb.get_builder("cuhk_pedes", None, tmp_path / "d").is_prepared()  # as released: not built
    assert {x["image"].shape for x in _read_all(again.as_data_source("test"))} == {(64, 32, 3)}
    with pytest.raises(DatasetError, match="only the parameter image_size"):
        tb.get_builder("cuhk_pedes", None, tmp_path / "d", num_val_ids=3)
    with pytest.raises(DatasetError, match="contradicts the config name"):
        tb.get_builder("cuhk_pedes", "full_h64_w32", tmp_path / "d", image_size=(32, 16))
    with pytest.raises(DatasetError, match="has one config"):
        tb.get_builder("cuhk_pedes", "small", tmp_path / "d")


def test_a_config_made_from_params_logs_no_custom_config_warning(tmp_path, caplog):
    """TFDS's "Using custom data configuration" WARNING would come before a command's answer."""
    import logging

    from tfds_synth_pedes import build as tb

    with caplog.at_level(logging.INFO, logger="absl"):
        b = tb.get_builder("synth_pedes", "procedural", tmp_path, num_identities=30, images_per_identity=2)
        c = tb.get_builder("cuhk_pedes", "procedural", tmp_path, num_identities=40, num_val_ids=5, num_test_ids=5)
    assert b.builder_config.name != "procedural" and c.builder_config.name != "procedural"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
