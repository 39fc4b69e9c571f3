"""Converter tests: bit-exact round trips, strict loads into the PyTorch references, file safety, CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plip_jax.convert import torch_io
from plip_jax.convert.mapping import ConversionError, count_parameters, flax_to_torch, torch_to_flax
from plip_jax.models.bert import Bert, BertConfig
from plip_jax.models.resnet import ModifiedResNet

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tests.reference.torch_resnet import ModifiedResNet as TorchResNet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMG_ARCH = dict(layers=(1, 1, 1, 1), width=8, heads=8, output_dim=16, input_size=(64, 32))
TEXT_CFG = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=37, max_position_embeddings=64)


# Tiny models shared with test_api.py ------------------------------------------------------------
def torch_image_model(seed: int = 0):
    """Tiny torch reference ModifiedResNet with non-trivial BN scales and running statistics."""
    torch.manual_seed(seed)
    m = TorchResNet(layers=IMG_ARCH["layers"], output_dim=IMG_ARCH["output_dim"], heads=IMG_ARCH["heads"],
                    input_resolution=IMG_ARCH["input_size"], width=IMG_ARCH["width"]).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 1.5)
                mod.num_batches_tracked.fill_(7)
    return m


class TorchText(torch.nn.Module):
    """The official Textual_encoder wrapper: a HF BertModel under the attribute `encoder`."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = transformers.BertModel(transformers.BertConfig(**TEXT_CFG))
        self.eval()


def official_state_dicts(seed: int = 0):
    """(img_sd, txt_sd, torch image model, torch text model); txt_sd has 4.26-style position_ids."""
    img, txt = torch_image_model(seed), TorchText(seed)
    img_sd = {k: v.numpy().copy() for k, v in img.state_dict().items()}
    txt_sd = {"encoder.embeddings.position_ids": np.arange(64, dtype=np.int64)[None]}
    txt_sd.update({k: v.numpy().copy() for k, v in txt.state_dict().items()})
    return img_sd, txt_sd, img, txt


def official_arch() -> dict:
    """The architecture JSON (docs/contracts.md "Architecture JSON") of the tiny models."""
    return {"image": {**IMG_ARCH, "layers": list(IMG_ARCH["layers"]), "input_size": list(IMG_ARCH["input_size"]),
                      "pool": "attn"},
            "text": dict(TEXT_CFG), "mean": list(torch_io.MEAN), "std": list(torch_io.STD),
            "max_length": 64, "recipe": "release"}


# Flax side -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flax_image():
    """(model, variables, template): the torch reference's random weights, imported (no Flax init)."""
    model = ModifiedResNet(**IMG_ARCH)
    template = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 32, 3)))
    img_sd = {k: v.numpy().copy() for k, v in torch_image_model(7).state_dict().items()}
    return model, torch_to_flax(img_sd, template), template


@pytest.fixture(scope="module")
def flax_text():
    model = Bert(BertConfig(**TEXT_CFG))
    ids = jnp.ones((1, 8), jnp.int32)
    template = jax.eval_shape(model.init, jax.random.key(0), ids, ids)
    sd = {k: v.numpy().copy() for k, v in TorchText(8).state_dict().items()}
    return model, torch_to_flax(sd, template, prefix="encoder.", kind="text"), template


def _assert_trees_bit_equal(a, b):
    fa, fb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, x), (_, y) in zip(fa, fb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), f"{path} differs"


def test_image_round_trip_is_bit_exact(flax_image):
    _, variables, template = flax_image
    sd = flax_to_torch(variables)
    assert sd["conv1.weight"].shape == (4, 3, 3, 3)  # OIHW
    assert sd["attnpool.c_proj.weight"].shape == (16, 256)  # (out, in)
    bns = [k[: -len(".running_mean")] for k in sd if k.endswith(".running_mean")]
    assert bns and all(sd[b + ".num_batches_tracked"].dtype == np.int64 for b in bns)
    assert all(sd[b + ".num_batches_tracked"].shape == () for b in bns)
    _assert_trees_bit_equal(torch_to_flax(sd, template), variables)


def test_text_round_trip_and_position_ids(flax_text):
    _, variables, template = flax_text
    sd = flax_to_torch(variables, prefix="encoder.", kind="text")
    pos = sd["encoder.embeddings.position_ids"]
    assert pos.dtype == np.int64 and np.array_equal(pos, np.arange(64)[None])
    assert sd["encoder.encoder.layer.1.intermediate.dense.weight"].shape == (37, 32)
    _assert_trees_bit_equal(torch_to_flax(sd, template, prefix="encoder.", kind="text"), variables)
    no_pos = flax_to_torch(variables, prefix="encoder.", kind="text", position_ids=False)
    assert set(sd) - set(no_pos) == {"encoder.embeddings.position_ids"}


def test_torch_weights_round_trip_and_give_the_torch_output(flax_image):
    """torch -> flax -> torch is bit-exact, loads strictly, and both frameworks agree on outputs."""
    model, variables, template = flax_image
    img_sd, _, ref, _ = official_state_dicts(7)
    sd = flax_to_torch(variables)
    assert set(sd) == set(img_sd)
    for k, v in img_sd.items():
        if not k.endswith("num_batches_tracked"):  # written as 0; PyTorch ignores it with momentum set
            assert v.dtype == sd[k].dtype and np.array_equal(v, sd[k]), k
    fresh = TorchResNet(layers=IMG_ARCH["layers"], output_dim=16, heads=8, input_resolution=(64, 32), width=8)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    fresh.eval()
    x = np.random.default_rng(1).standard_normal((2, 64, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x).permute(0, 3, 1, 2))[0].numpy()
        again = fresh(torch.from_numpy(x).permute(0, 3, 1, 2))[0].numpy()
    np.testing.assert_array_equal(again, want)
    got = np.asarray(jax.jit(model.apply)(variables, x)[0])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_export_loads_strict_into_hf_bert(flax_text):
    _, variables, _ = flax_text
    ref = TorchText()
    sd = flax_to_torch(variables, prefix="encoder.", kind="text", position_ids=False)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    with_pos = flax_to_torch(variables, prefix="encoder.", kind="text")
    res = ref.load_state_dict({k: torch.from_numpy(v) for k, v in with_pos.items()}, strict=False)
    assert list(res.unexpected_keys) == ["encoder.embeddings.position_ids"] and not res.missing_keys
    assert np.array_equal(ref.encoder.pooler.dense.weight.detach().numpy(),
                          np.asarray(variables["params"]["pooler"]["dense"]["kernel"]).T)


def test_mismatched_keys_are_reported_together(flax_image):
    _, variables, template = flax_image
    sd = flax_to_torch(variables)
    del sd["layer2.0.conv1.weight"], sd["bn1.running_var"]
    sd["attnpool.extra.weight"] = np.zeros(3, np.float32)
    sd["attnpool.q_proj.weight"] = np.zeros((5, 5), np.float32)
    with pytest.raises(ConversionError) as e:
        torch_to_flax(sd, template)
    msg = str(e.value)
    for name in ("layer2.0.conv1.weight", "bn1.running_var", "attnpool.extra.weight",
                 "attnpool.q_proj.weight: checkpoint (5, 5) vs model (256, 256)"):
        assert name in msg
    assert "2 missing" in msg and "1 unexpected" in msg and "1 mis-shaped" in msg


def test_bad_kind_and_bf16_export(flax_image):
    _, variables, _ = flax_image
    with pytest.raises(ValueError, match="kind must be one of"):
        flax_to_torch(variables, kind="audio")
    bf16 = jax.tree.map(lambda x: np.asarray(x).astype(jnp.bfloat16), variables)
    sd = flax_to_torch(bf16)
    assert {v.dtype for k, v in sd.items() if not k.endswith("num_batches_tracked")} == {np.dtype(np.float32)}
    assert count_parameters(sd) == count_parameters(flax_to_torch(variables))


def test_save_and_load_official_pth_safetensors_json(tmp_path):
    img_sd, txt_sd, _, _ = official_state_dicts()
    written = torch_io.save_official(tmp_path / "m.pth.tar", img_sd, txt_sd, official_arch(), safetensors=True)
    assert [p.name for p in written] == ["m.pth.tar", "m.json", "m.safetensors"]
    raw = torch.load(tmp_path / "m.pth.tar", weights_only=True)
    assert set(raw) == {"ImgEncoder_state_dict", "TxtEncoder_state_dict"}
    for f in ("m.pth.tar", "m.safetensors"):
        img2, txt2, arch = torch_io.load_official(tmp_path / f)
        assert arch == official_arch()
        for a, b in ((img_sd, img2), (txt_sd, txt2)):
            assert set(a) == set(b)
            assert all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_infer_architecture_from_shapes():
    img_sd, txt_sd, _, _ = official_state_dicts()
    arch = torch_io.infer_architecture(img_sd, txt_sd, text_heads=2)
    assert arch["image"] == official_arch()["image"]
    assert {k: arch["text"][k] for k in TEXT_CFG} == TEXT_CFG
    assert arch["recipe"] == "release" and arch["max_length"] == 64
    with pytest.raises(torch_io.CheckpointError, match="hidden size 32 is not a multiple of 64"):
        torch_io.infer_architecture(img_sd, txt_sd)


def test_code_carrying_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pth.tar"
    torch.save({"ImgEncoder_state_dict": Evil(), "TxtEncoder_state_dict": {}}, bad)
    with pytest.raises(torch_io.CheckpointError, match="refused to load"):
        torch_io.load_official(bad)
    assert not marker.exists()


def test_non_checkpoint_files_are_clear_errors(tmp_path):
    text = tmp_path / "notes.pth.tar"
    text.write_text("hello")
    with pytest.raises(torch_io.CheckpointError, match="not a PyTorch checkpoint"):
        torch_io.load_official(text)
    other = tmp_path / "other.pth.tar"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(torch_io.CheckpointError, match="lacks ImgEncoder_state_dict, TxtEncoder_state_dict"):
        torch_io.load_official(other)
    with pytest.raises(torch_io.CheckpointError, match="no such checkpoint"):
        torch_io.load_official(tmp_path / "missing.pth.tar")


def test_hf_bert_folder_round_trip_and_missing_pooler(tmp_path, flax_text):
    from safetensors.numpy import load_file, save_file

    _, variables, _ = flax_text
    files = torch_io.save_hf_bert(tmp_path / "bert", variables["params"], BertConfig(**TEXT_CFG))
    assert all(p.exists() for p in files)
    hf, info = transformers.BertModel.from_pretrained(tmp_path / "bert", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    config, params, report = torch_io.load_hf_bert(tmp_path / "bert")
    assert config == BertConfig(**TEXT_CFG) and report["initialized"] == []
    _assert_trees_bit_equal(params, variables["params"])
    # A BertForMaskedLM-style file: `bert.` prefix, MLM head, no pooler.
    sd = load_file(str(tmp_path / "bert" / "model.safetensors"))
    sd = {"bert." + k: v for k, v in sd.items() if not k.startswith("pooler.")}
    sd["cls.predictions.bias"] = np.zeros(30522, np.float32)
    save_file(sd, str(tmp_path / "bert" / "model.safetensors"))
    _, params2, report2 = torch_io.load_hf_bert(tmp_path / "bert")
    assert report2["initialized"] == ["pooler.dense.weight", "pooler.dense.bias"]
    assert report2["ignored"] == ["cls.predictions.bias"]
    assert params2["pooler"]["dense"]["kernel"].shape == (32, 32)
    _assert_trees_bit_equal(params2["encoder"], variables["params"]["encoder"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "plip_jax.convert", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_round_trip_is_bit_exact(tmp_path, capsys):
    img_sd, txt_sd, _, _ = official_state_dicts(5)
    torch_io.save_official(tmp_path / "orig.pth.tar", img_sd, txt_sd, official_arch())
    from plip_jax.convert.__main__ import main

    # from-torch in-process (cheap), to-torch as a real `python -m plip_jax.convert` subprocess.
    assert main(["from-torch", "--torch", str(tmp_path / "orig.pth.tar"), "--out", str(tmp_path / "jax")]) == 0
    out = capsys.readouterr().out
    assert "variables.safetensors" in out and "parameters" in out
    r = _cli("to-torch", "--checkpoint", str(tmp_path / "jax"), "--out", str(tmp_path / "back.pth.tar"),
             "--safetensors", "--bert-dir", str(tmp_path / "bert"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back.json").is_file() and (tmp_path / "bert" / "model.safetensors").is_file()
    img2, txt2, arch = torch_io.load_official(tmp_path / "back.pth.tar")
    assert arch == json.loads((tmp_path / "orig.json").read_text())
    assert set(img2) == set(img_sd) and set(txt2) == set(txt_sd)
    for a, b in ((img_sd, img2), (txt_sd, txt2)):
        for k in a:
            if not k.endswith("num_batches_tracked"):
                assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    from plip_jax.convert.__main__ import main

    junk = tmp_path / "junk.pth.tar"
    junk.write_text("not a checkpoint")
    assert main(["from-torch", "--torch", str(junk), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "not a PyTorch checkpoint" in err
    assert main(["to-torch", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "x.pth.tar")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds neither" in err and err.strip().count("\n") == 0
