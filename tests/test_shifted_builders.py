"""The shifted procedural stand-ins (`cuhk_pedes` / `icfg_pedes` config `procedural`): deterministic
renders, the released layouts and splits, and a real shift from procedural SYNTH-PEDES (caption
words, image statistics, identities) and between the two styles."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfds_synth_pedes import build as tb
from tfds_synth_pedes.ingest import DatasetError
from tfds_synth_pedes.shifted import config as shifted_config
from tfds_synth_pedes.shifted import language, world

SIZE = (64, 32)
A = dict(num_identities=60, images_per_identity=3, num_val_ids=10, num_test_ids=10, image_size=SIZE)
B = dict(num_identities=80, images_per_identity=3, num_test_ids=10, image_size=SIZE)
SYNTH = dict(num_identities=60, images_per_identity=3, num_val_ids=5, num_test_ids=5, image_size=SIZE)
WORD = re.compile(r"[a-z]+")
# Bounds (measured on these builds: see docs/downstream.md "Shifted stand-ins").
MAX_OVERLAP_WITH_SYNTH = 0.45  # share of a shifted set's word types found in SYNTH-PEDES captions
MAX_A_B_JACCARD = 0.35


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _read(name: str, config: str, data_dir: Path, params: dict) -> dict[str, list[dict]]:
    builder = tb.get_builder(name, config, data_dir, **params)
    return {s: [src[i] for i in range(len(src))] for s in builder.info.splits
            for src in [builder.as_data_source(split=s)]}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, dict[str, list[dict]]]:
    d = tmp_path_factory.mktemp("shifted")
    out = {}
    for name, params in (("cuhk_pedes", A), ("icfg_pedes", B), ("synth_pedes", SYNTH)):
        tb.build(name, "procedural", d, **params)
        out[name] = _read(name, "procedural", d, params)
    return out


def _all(splits: dict[str, list[dict]]) -> list[dict]:
    return [x for xs in splits.values() for x in xs]


def _captions(splits: dict[str, list[dict]], prompts: bool = False) -> list[str]:
    out = [_text(c) for x in _all(splits) for c in x["captions"]]
    return out + ([_text(x["prompt_caption"]) for x in _all(splits)] if prompts else [])


def _types(captions: list[str]) -> set[str]:
    return {w for c in captions for w in WORD.findall(c.lower())}


def _names(text: str, words: tuple[str, ...]) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text) for w in words)


def _stats(splits: dict[str, list[dict]]) -> dict[str, float]:
    """Mean over images of: luma, HSV saturation, R - B; and the mean per-image luma std."""
    imgs = np.stack([x["image"] for x in _all(splits)]).astype(np.float32)
    luma = imgs @ np.asarray([0.299, 0.587, 0.114], np.float32)
    sat = np.stack([np.asarray(Image.fromarray(x["image"]).convert("HSV"))[..., 1] for x in _all(splits)])
    return {"luma": float(luma.mean()), "saturation": float(sat.mean()),
            "warmth": float((imgs[..., 0] - imgs[..., 2]).mean()), "contrast": float(luma.std(axis=(1, 2)).mean())}


def test_config_names_params_and_errors():
    assert shifted_config.make_config("cuhk_pedes", "A").name == "procedural"
    cfg = shifted_config.make_config("cuhk_pedes", "A", **A)
    assert cfg.name == "procedural_n60_k3_h64_w32_v10_t10"
    assert shifted_config.make_config("cuhk_pedes", "A", cfg.name).params() == cfg.params()
    assert shifted_config.make_config("icfg_pedes", "B").params() == dict(
        num_identities=1000, images_per_identity=4, image_height=128, image_width=64, seed=0, num_cameras=15,
        num_val_ids=0, num_test_ids=200)
    assert tb.get_builder("cuhk_pedes", "procedural", "/nonexistent").builder_config.name == "procedural"
    assert tb.get_builder("cuhk_pedes", None, "/nonexistent").builder_config is None  # as released: unchanged
    assert tb.has_procedural("icfg_pedes") and tb.has_procedural("synth_pedes") and not tb.has_procedural("rstp_reid")
    with pytest.raises(DatasetError, match="no val split"):
        shifted_config.make_config("icfg_pedes", "B", num_val_ids=5)
    with pytest.raises(DatasetError, match=r"unknown parameter\(s\) \['size'\]"):
        shifted_config.make_config("cuhk_pedes", "A", size=3)
    with pytest.raises(DatasetError, match="too few"):
        shifted_config.make_config("cuhk_pedes", "A", num_identities=300)
    with pytest.raises(DatasetError, match="contradict"):
        shifted_config.make_config("cuhk_pedes", "A", "procedural_n60", num_identities=70)
    with pytest.raises(DatasetError, match="one config"):
        tb.get_builder("rstp_reid", "procedural", "/nonexistent")


@pytest.mark.parametrize("style", ["A", "B"])
def test_render_is_a_pure_function_of_the_seed(tmp_path, style):
    kw = dict(style=style, num_identities=6, images_per_identity=2, image_height=32, image_width=16,
              num_cameras=4, num_val_ids=1 if style == "A" else 0, num_test_ids=1)
    a, b, c = (world.write_layout(tmp_path / n, seed=s, **kw) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    name = world.DOMAINS[style].annotation
    ja, jb, jc = (json.loads((p / name).read_text()) for p in (a, b, c))
    assert ja == jb and len(ja) == 12
    for e in ja:
        assert (a / "imgs" / e["file_path"]).read_bytes() == (b / "imgs" / e["file_path"]).read_bytes()
    assert [e["captions"] for e in ja] != [e["captions"] for e in jc]
    assert all((a / "imgs" / x["file_path"]).read_bytes() != (c / "imgs" / y["file_path"]).read_bytes()
               for x, y in zip(ja, jc))
    assert set(ja[0]) == {"split", "captions", "file_path", "processed_tokens", "id"}  # the released fields


@pytest.mark.parametrize("name,params,style,captions,splits", [
    ("cuhk_pedes", A, "A", 2, {"train": 40, "val": 10, "test": 10}),
    ("icfg_pedes", B, "B", 1, {"train": 70, "test": 10}),
])
def test_built_splits_identities_cameras_and_captions(built, name, params, style, captions, splits):
    data = built[name]
    assert {s: len({int(x["id"]) for x in xs}) for s, xs in data.items()} == splits
    offset = world.DOMAINS[style].id_offset
    ids = [sorted({int(x["id"]) for x in data[s]}) for s in splits]  # as released: train, then val, then test ids
    assert sum(ids, []) == list(range(offset + 1, offset + params["num_identities"] + 1))
    people = {p.id: p.traits for p in world.sample_people(params["num_identities"], 0, style)}
    lex = language.STYLES[style][0]
    cameras = set()
    for x in _all(data):
        assert x["image"].shape == (*SIZE, 3) and len(x["captions"]) == captions
        cameras.add(int(x["camera_id"]))
        t = people[int(x["id"])]
        for c in map(_text, x["captions"]):
            c = c.lower()
            assert 12 <= language.num_words(c) <= 48, c
            assert _names(c, lex.people[t.female]), c  # gender ...
            assert _names(c, lex.colours[t.upper]), c  # ... and the upper garment: always named
            assert _names(c, sum(lex.garments[t.upper_type], ())), c
    assert cameras <= set(range(1, 16)) and len(cameras) > 3  # parsed from the released file names


def test_captions_are_another_language(built):
    synth = _types(_captions(built["synth_pedes"], prompts=True))
    a, b = _types(_captions(built["cuhk_pedes"])), _types(_captions(built["icfg_pedes"]))
    assert len(_captions(built["synth_pedes"])) > 300 and len(_captions(built["cuhk_pedes"])) > 300
    assert len(a & synth) / len(a) < MAX_OVERLAP_WITH_SYNTH
    assert len(b & synth) / len(b) < MAX_OVERLAP_WITH_SYNTH
    assert len(a & b) / len(a | b) < MAX_A_B_JACCARD
    words = {n: np.mean([language.num_words(c) for c in _captions(built[n])]) for n in ("cuhk_pedes", "icfg_pedes")}
    assert 18 <= words["cuhk_pedes"] <= 28 and words["icfg_pedes"] >= words["cuhk_pedes"] + 6


def test_pictures_differ_from_synth_pedes_and_between_styles(built):
    s, a, b = (_stats(built[n]) for n in ("synth_pedes", "cuhk_pedes", "icfg_pedes"))
    assert a["luma"] > s["luma"] + 40 and b["luma"] < s["luma"] - 25  # sunny street / dim campus
    assert a["warmth"] > s["warmth"] + 5 and a["warmth"] > b["warmth"] + 10  # warm sunlight
    assert b["saturation"] > s["saturation"] + 30 and b["saturation"] > a["saturation"] + 30
    assert b["contrast"] > s["contrast"] + 8


def test_identities_are_disjoint(built):
    ids = {n: {int(x["id"]) for x in _all(built[n])} for n in built}
    assert not ids["cuhk_pedes"] & ids["icfg_pedes"]
    assert not ids["synth_pedes"] & (ids["cuhk_pedes"] | ids["icfg_pedes"])
    keys = {s: [p.traits.key() for p in world.sample_people(400, 0, s)] for s in "AB"}
    assert all(len(set(k)) == 400 for k in keys.values())  # text tells people apart within a set
    assert not set(keys["A"]) & set(keys["B"])  # and no person is in both styles


def test_sources_validate_and_build_procedural_configs_on_first_use(tmp_path):
    import ml_collections

    from plip_jax.core.errors import ConfigError
    from plip_jax.data import sources

    params = dict(num_identities=12, images_per_identity=2, num_val_ids=2, num_test_ids=2, image_height=32,
                  image_width=16)
    cfg = ml_collections.ConfigDict(dict(name="cuhk_pedes", config="procedural", data_dir=str(tmp_path / "d"),
                                         manual_dir=None, procedural=params))
    sources.validate(cfg)  # no data dir yet: built on first use
    builder = sources._builder(cfg)
    assert builder.is_prepared() and builder.builder_config.name == "procedural_n12_k2_h32_w16_v2_t2"
    assert builder.info.splits["test"].num_examples == 4
    with pytest.raises(ConfigError, match="no 'procedural' config"):
        sources.validate(ml_collections.ConfigDict(dict(name="rstp_reid", config="procedural", data_dir=None)))


def test_preview_draws_one_row_and_caption_per_domain(built, tmp_path):
    from tfds_synth_pedes.shifted import preview

    rows = [(name, built[name]["test"]) for name in ("synth_pedes", "cuhk_pedes", "icfg_pedes")]
    out = preview.preview(rows, tmp_path / "p.png", per_row=4)
    with Image.open(out) as im:
        assert im.size == (preview.LABEL_W + 4 * preview.TILE[0], 3 * (preview.TILE[1] + 12 * preview.CAPTION_LINES + 8))
        px = np.asarray(im.convert("RGB"), np.float32)
    h = preview.TILE[1] + 12 * preview.CAPTION_LINES + 8
    tiles = [px[r * h:r * h + preview.TILE[1], preview.LABEL_W:] for r in range(3)]
    assert min(abs(tiles[0].mean() - t.mean()) for t in tiles[1:]) > 10   # the domains look different
    with pytest.raises(ValueError, match="empty"):
        preview.preview([("x", [])], tmp_path / "q.png")
