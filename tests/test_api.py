"""Public API tests: from_pretrained on official files, saved folders and Orbax runs gives the
PyTorch reference's embeddings; bad paths and inputs give clear errors."""
from __future__ import annotations

import shutil

import jax
import numpy as np
import pytest
from PIL import Image

import plip_jax
from plip_jax import api
from plip_jax.convert import torch_io

torch = pytest.importorskip("torch")
from tests.test_convert import TEXT_CFG, official_arch, official_state_dicts  # noqa: E402

CAPTIONS = ["A man in a red coat and black trousers.", "a woman with long hair carrying a white bag"]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """An official-layout FILE.pth.tar + FILE.json written from the torch reference weights."""
    d = tmp_path_factory.mktemp("official")
    img_sd, txt_sd, img, txt = official_state_dicts(11)
    torch_io.save_official(d / "plip.pth.tar", img_sd, txt_sd, official_arch())
    return d / "plip.pth.tar", img, txt


@pytest.fixture(scope="module")
def model(official):
    return plip_jax.from_pretrained(official[0])


def _torch_image_embeddings(img, images: np.ndarray, size=(64, 32)) -> np.ndarray:
    """Official inference preprocessing: PIL bicubic Resize((H, W)), ToTensor, Normalize."""
    h, w = size
    x = np.stack([np.asarray(Image.fromarray(i).resize((w, h), Image.BICUBIC)) for i in images])
    x = (x.astype(np.float32) / 255.0 - np.float32(torch_io.MEAN)) / np.float32(torch_io.STD)
    with torch.no_grad():
        return img(torch.from_numpy(x).permute(0, 3, 1, 2))[0].numpy()


def test_encode_images_matches_torch_reference(official, model, tmp_path):
    _, img, _ = official
    images = np.random.default_rng(0).integers(0, 256, (3, 90, 41, 3), dtype=np.uint8)
    got = model.encode_images(images, batch_size=2)  # two batches, the last one padded
    assert got.shape == (3, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, _torch_image_embeddings(img, images), atol=1e-4, rtol=1e-4)
    paths = []
    for i, a in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    np.testing.assert_array_equal(model.encode_images([str(p) for p in paths], batch_size=2), got)


def test_encode_texts_release_is_the_bert_pooler(official, model):
    _, _, txt = official
    tok = model.tokenizer(CAPTIONS)
    assert tok["input_ids"].shape == (2, 64)
    with torch.no_grad():
        want = txt.encoder(input_ids=torch.from_numpy(tok["input_ids"]).long(),
                           attention_mask=torch.from_numpy(tok["attention_mask"]).long()).pooler_output.numpy()
    got = model.encode_texts(CAPTIONS)
    assert got.shape == (2, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_paper_v2_recipe_is_the_masked_mean(official):
    path, _, txt = official
    m = plip_jax.from_pretrained(path, recipe="paper_v2")
    assert m.config["recipe"] == "paper_v2"
    tok = m.tokenizer(CAPTIONS)
    with torch.no_grad():
        last = txt.encoder(input_ids=torch.from_numpy(tok["input_ids"]).long(),
                           attention_mask=torch.from_numpy(tok["attention_mask"]).long()).last_hidden_state.numpy()
    mask = tok["attention_mask"][..., None].astype(np.float32)
    want = (last * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(m.encode_texts(CAPTIONS), want, atol=1e-4, rtol=1e-4)


def test_model_exposes_config_variables_and_towers(model):
    assert model.config["image"]["input_size"] == [64, 32] and model.config["recipe"] == "release"
    assert model.config["text"]["hidden_size"] == 32 and model.input_size == (64, 32)
    assert set(model.variables) == {"params", "batch_stats"}
    assert set(model.variables["params"]) == {"image", "text"}
    assert model.image_model.heads == 8 and model.text_model.config.num_attention_heads == 2


def _assert_same_variables(a, b):
    fa, fb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (p, x), (_, y) in zip(fa, fb):
        assert np.array_equal(np.asarray(x), np.asarray(y)), p


def test_save_pretrained_round_trip(model, tmp_path):
    written = model.save_pretrained(tmp_path / "saved")
    assert all(p.exists() for p in written)
    assert (tmp_path / "saved" / "tokenizer" / "vocab.txt").is_file()
    again = plip_jax.from_pretrained(tmp_path / "saved")
    assert again.config == model.config
    _assert_same_variables(again.variables, model.variables)


def test_saved_folder_with_wrong_shapes_names_them(model, tmp_path):
    from safetensors.numpy import load_file, save_file

    from plip_jax.convert.mapping import ConversionError

    model.save_pretrained(tmp_path / "s")
    f = tmp_path / "s" / api.VARIABLES_FILE
    flat = load_file(str(f))
    flat["params/image/conv1/kernel"] = np.zeros((1, 1, 1, 1), np.float32)
    del flat["params/text/pooler/dense/bias"]
    save_file(flat, str(f))
    with pytest.raises(ConversionError, match=r"missing: params/text/pooler/dense/bias.*mis-shaped: "
                                              r"params/image/conv1/kernel"):
        plip_jax.from_pretrained(tmp_path / "s")


def test_architecture_is_inferred_without_json(official, tmp_path):
    path = tmp_path / "nojson.pth.tar"
    shutil.copy(official[0], path)
    with pytest.raises(torch_io.CheckpointError, match="pass text heads"):
        plip_jax.from_pretrained(path)  # hidden 32 is not a multiple of 64
    m = api.from_official(path, text_heads=2)
    assert m.config["image"]["heads"] == 8 and m.config["image"]["input_size"] == [64, 32]
    assert {k: m.config["text"][k] for k in TEXT_CFG} == TEXT_CFG


def test_orbax_workdir_loads_encoders(model, tmp_path, caplog):
    import logging

    from plip_jax.core import checkpoint
    from plip_jax.models.bert import Bert, BertConfig

    cfg = BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=128)
    ids = np.ones((1, 4), np.int32)
    shapes = jax.eval_shape(Bert(cfg).init, jax.random.key(0), ids, ids)["params"]
    rng = np.random.default_rng(0)
    text = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
    params = {"image": model.variables["params"]["image"], "text": text,
              "tic": {"w": np.ones((2, 2), np.float32)}}
    # Only the variables: restore_for_inference currently fails on other leaves (see report).
    state = {"params": params, "batch_stats": model.variables["batch_stats"]}
    train_cfg = {"model": {"recipe": "paper_v2", "image": {**model.config["image"], "pool": "attn"},
                           "text": {"init": "random:2x32x2"}},
                 "data": {"max_length": 16}}
    ck = checkpoint.Checkpointer(tmp_path / "run" / "checkpoints", async_save=False)
    ck.save(3, state, train_cfg)
    ck.close()
    for p in (tmp_path / "run", tmp_path / "run" / "checkpoints" / "3"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="absl"):
            m = plip_jax.from_pretrained(p)
        # No library warning comes before a command's answer (Orbax's "_CHECKPOINT_METADATA" was one).
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        assert m.config["recipe"] == "paper_v2" and m.config["max_length"] == 16
        _assert_same_variables(m.variables["params"]["text"], text)
        _assert_same_variables(m.variables["params"]["image"], model.variables["params"]["image"])
    assert m.encode_texts(["a man"]).shape == (1, 32)


def test_bad_paths_and_inputs_are_clear_errors(model, tmp_path):
    with pytest.raises(torch_io.CheckpointError, match="holds neither a PLIP checkpoint nor a config"):
        plip_jax.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        plip_jax.from_pretrained(tmp_path / "nope.pth.tar")
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"\x00\x01 not a checkpoint")
    with pytest.raises(torch_io.CheckpointError, match="not a PyTorch checkpoint"):
        plip_jax.from_pretrained(junk)
    with pytest.raises(ValueError, match="unknown recipe"):
        plip_jax.from_pretrained(junk, recipe="v3")
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        model.encode_images(np.zeros((64, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="expected uint8 RGB"):
        model.encode_images(np.zeros((1, 64, 32, 3), np.float32))
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_texts("a man")
