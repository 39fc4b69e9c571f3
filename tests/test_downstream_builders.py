"""The downstream builders on tiny fixtures in each released format: Market-1501 and DukeMTMC-reID
folders (ids/cameras from file names, junk and distractors), PA-100K / PETA / RAP .mat files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from tfds_synth_pedes import build as tb
from tfds_synth_pedes.ingest import DatasetError
from tfds_synth_pedes.market1501 import parse_name


def _img(path: Path, fmt: str = "JPEG", seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (16, 8, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)


def _cell(strings: list[str]) -> np.ndarray:
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = s
    return out


def _read(name: str, data_dir: Path, split: str) -> list[dict]:
    src = tb.data_source(name, None, split, data_dir)
    return [src[i] for i in range(len(src))]


def test_parse_name():
    assert parse_name("0002_c1s1_000451_03.jpg") == (2, 1)
    assert parse_name("-1_c3s2_000123_01.jpg") == (-1, 3)
    assert parse_name("0001_c2_f0046182.jpg") == (1, 2)
    with pytest.raises(ValueError, match="does not start"):
        parse_name("Thumbs.db")


def test_market1501_layout(tmp_path: Path):
    root = tmp_path / "manual" / "Market-1501-v15.09.15"
    for n in ("0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s1_000001_01.jpg"):
        _img(root / "bounding_box_train" / n)
    for n in ("0002_c3s1_000551_01.jpg", "0007_c1s1_000101_01.jpg", "0000_c1s1_000001_01.jpg",
              "-1_c2s1_000002_01.jpg"):
        _img(root / "bounding_box_test" / n)
    _img(root / "query" / "0002_c1s1_000700_00.jpg")
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"x")   # not a .jpg: ignored
    tb.build("market1501", None, tmp_path / "data", manual_dir=tmp_path / "manual")
    train = _read("market1501", tmp_path / "data", "train")
    assert sorted((int(e["id"]), int(e["camera_id"])) for e in train) == [(2, 1), (2, 2), (7, 3)]
    gallery = {e["file_path"].decode(): (int(e["id"]), int(e["camera_id"]))
               for e in _read("market1501", tmp_path / "data", "gallery")}
    assert gallery["bounding_box_test/-1_c2s1_000002_01.jpg"] == (-1, 2)     # junk kept as -1
    assert gallery["bounding_box_test/0000_c1s1_000001_01.jpg"] == (0, 1)    # distractor
    query = _read("market1501", tmp_path / "data", "query")
    assert len(query) == 1 and query[0]["image"].shape == (16, 8, 3)


def test_market_bad_name_and_missing_folder(tmp_path: Path):
    root = tmp_path / "m"
    for d in ("bounding_box_train", "bounding_box_test", "query"):
        _img(root / d / "0001_c1s1_000001_01.jpg")
    _img(root / "query" / "person.jpg")
    with pytest.raises(DatasetError, match="person.jpg"):
        tb.build("market1501", None, tmp_path / "d1", manual_dir=root)
    empty = tmp_path / "e"
    empty.mkdir()
    (empty / "x").write_text("x")
    with pytest.raises(DatasetError, match="lacks the folders"):
        tb.build("market1501", None, tmp_path / "d2", manual_dir=empty)


def test_dukemtmc_layout(tmp_path: Path):
    root = tmp_path / "manual" / "DukeMTMC-reID"
    _img(root / "bounding_box_train" / "0001_c2_f0046182.jpg")
    _img(root / "bounding_box_train" / "0001_c5_f0051341.jpg")
    _img(root / "bounding_box_test" / "0005_c1_f0047024.jpg")
    _img(root / "query" / "0005_c2_f0046985.jpg")
    tb.build("dukemtmc", None, tmp_path / "data", manual_dir=tmp_path / "manual")
    assert sorted(int(e["camera_id"]) for e in _read("dukemtmc", tmp_path / "data", "train")) == [2, 5]
    q = _read("dukemtmc", tmp_path / "data", "query")
    assert (int(q[0]["id"]), int(q[0]["camera_id"])) == (5, 2)


def test_pa100k_annotation_mat(tmp_path: Path):
    root = tmp_path / "manual" / "PA-100K"
    names = [f"attr{i}" for i in range(26)]
    imgs = {s: [f"{i:06d}.jpg" for i in range(o, o + n)] for s, o, n in (("train", 1, 3), ("val", 4, 1), ("test", 5, 2))}
    rng = np.random.default_rng(0)
    labels = {s: rng.integers(0, 2, (len(v), 26)).astype(np.uint8) for s, v in imgs.items()}
    for i, v in enumerate(sum(imgs.values(), [])):
        _img(root / "data" / v, seed=i)
    savemat(root / "annotation.mat", {"attributes": _cell(names),
                                      **{f"{s}_images_name": _cell(v) for s, v in imgs.items()},
                                      **{f"{s}_label": labels[s] for s in imgs}})
    b = tb.build("pa100k", None, tmp_path / "data", manual_dir=tmp_path / "manual")
    assert b.info.metadata["attribute_names"] == names
    test = _read("pa100k", tmp_path / "data", "test")
    assert [e["file_path"].decode() for e in test] == imgs["test"]
    np.testing.assert_array_equal(np.stack([e["attribute_labels"] for e in test]), labels["test"])
    assert len(_read("pa100k", tmp_path / "data", "train")) == 3


def _partition(parts: list[dict]) -> np.ndarray:
    cell = np.empty((len(parts), 1), dtype=object)
    for i, p in enumerate(parts):
        cell[i, 0] = p
    return cell


def test_peta_mat(tmp_path: Path):
    root = tmp_path / "manual" / "PETA"
    n = 6
    rng = np.random.default_rng(1)
    attrs = rng.integers(0, 2, (n, 105))
    raw = np.concatenate([np.arange(1, n + 1)[:, None].repeat(4, 1), attrs], 1).astype(np.float64)
    part = {"train": np.array([[1], [2], [3]]), "val": np.array([[4]]), "test": np.array([[5], [6]])}
    root.mkdir(parents=True)
    savemat(root / "PETA.mat",
            {"peta": {"label": raw, "attribute": _cell([f"a{i}" for i in range(105)]),
                      "selected_attribute": np.arange(1, 36)[None], "partition_attribute": _partition([part] * 5)}})
    for i in range(n):
        _img(root / "images" / f"{i + 1:05d}.png", fmt="PNG", seed=i)
    b = tb.build("peta", None, tmp_path / "data", manual_dir=tmp_path / "manual")
    assert b.info.metadata["attribute_names"] == [f"a{i}" for i in range(35)]
    test = _read("peta", tmp_path / "data", "test")
    assert sorted(e["file_path"].decode() for e in test) == ["00005.png", "00006.png"]
    got = {e["file_path"].decode(): e["attribute_labels"] for e in test}
    np.testing.assert_array_equal(got["00005.png"], attrs[4, :35])
    assert len(_read("peta", tmp_path / "data", "val")) == 1


def test_rap_mat_and_bad_labels(tmp_path: Path):
    root = tmp_path / "manual"
    n = 5
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, (n, 92))
    names = [f"CAM01_2014-02-15_{i:08d}.png" for i in range(n)]
    part = {"train": np.array([[1, 2, 3]]), "test": np.array([[4, 5]])}
    (root / "RAP_annotation").mkdir(parents=True)
    ann = {"partion": _partition([part] * 5), "data": labels.astype(np.float64), "x2": np.zeros(1), "x3": np.zeros(1),
           "x4": np.zeros(1), "imagesname": _cell(names), "attribute_eng": _cell([f"r{i}" for i in range(92)])}
    savemat(root / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": ann})
    for i, nm in enumerate(names):
        _img(root / "RAP_dataset" / nm, fmt="PNG", seed=i)
    b = tb.build("rap", None, tmp_path / "data", manual_dir=root)
    assert b.info.metadata["attribute_names"][:2] == ["r0", "r1"] and len(b.info.metadata["attribute_names"]) == 51
    test = _read("rap", tmp_path / "data", "test")
    got = {e["file_path"].decode(): e["attribute_labels"] for e in test}
    np.testing.assert_array_equal(got[names[3]], labels[3, :51])
    assert len(_read("rap", tmp_path / "data", "train")) == 3
    ann["data"][0, 0] = 2
    savemat(root / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": ann})
    with pytest.raises(DatasetError, match="labels must be 0/1"):
        tb.build("rap", None, tmp_path / "data2", manual_dir=root)
