"""Flax ModifiedResNet vs the PyTorch reference: names, param count, eval/train parity, bf16."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from plip_jax.convert.mapping import flax_to_torch, torch_to_flax
from plip_jax.models.resnet import ModifiedResNet, resnet_param_count
from tests.reference import torch_resnet

SMALL = dict(layers=(2, 1, 1, 1), width=16, heads=2, output_dim=24, input_size=(64, 32))
RTOL = 1e-4


def _flax_model(cfg: dict, pool: str, dtype=jnp.float32) -> ModifiedResNet:
    return ModifiedResNet(pool=pool, dtype=dtype, **cfg)


def _torch_model(cfg: dict, pool: str, seed: int = 0) -> torch_resnet.ModifiedResNet:
    """Reference model with random weights and non-trivial BN affine params and running stats."""
    torch.manual_seed(seed)
    model = torch_resnet.ModifiedResNet(
        layers=cfg["layers"],
        output_dim=cfg["output_dim"],
        heads=cfg["heads"],
        input_resolution=cfg["input_size"],
        width=cfg["width"],
        pool=pool,
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # bn3 included: its zero init would hide bugs
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _convert(tmodel: torch.nn.Module, fmodel: ModifiedResNet, cfg: dict) -> dict:
    """Import the torch weights through the project converter, shaped by an abstract Flax init."""
    x = jnp.zeros((1, *cfg["input_size"], 3), jnp.float32)
    template = jax.eval_shape(fmodel.init, jax.random.key(0), x)
    # Copy: the converter may alias torch memory, and torch's train mode updates stats in place.
    state_dict = {k: v.detach().clone() for k, v in tmodel.state_dict().items()}
    return torch_to_flax(state_dict, template, prefix="", kind="image")


@functools.cache
def _small_apply(pool: str, dtype_name: str = "float32", train: bool = False):
    """One jitted apply per (pool, dtype, mode) of the SMALL config, shared by the tests."""
    model = _flax_model(SMALL, pool, jnp.dtype(dtype_name))
    if train:
        return jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
    return jax.jit(model.apply)


@functools.cache
def _small_variables(pool: str) -> dict:
    return _convert(_torch_model(SMALL, pool), _flax_model(SMALL, pool), SMALL)


def _inputs(cfg: dict, n: int = 2, seed: int = 1) -> tuple[torch.Tensor, jnp.ndarray]:
    x = torch.randn(n, 3, *cfg["input_size"], generator=torch.Generator().manual_seed(seed))
    return x, jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def _rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _nchw_to_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


def test_default_param_count_matches_official():
    variables = jax.eval_shape(
        ModifiedResNet().init, jax.random.key(0), jnp.zeros((1, 256, 128, 3), jnp.float32)
    )
    assert resnet_param_count(variables) == 37_757_536
    pos = variables["params"]["attnpool"]["positional_embedding"]
    assert pos.shape == (8 * 4 + 1, 2048)
    tmodel = torch_resnet.ModifiedResNet()
    assert len(tmodel.state_dict()) == 339
    assert sum(p.numel() for p in tmodel.parameters()) == 37_757_536


@pytest.mark.parametrize("pool", ["attn", "max"])
def test_names_and_shapes_mirror_torch(pool):
    fmodel = _flax_model(SMALL, pool)
    shapes = jax.eval_shape(fmodel.init, jax.random.key(0), jnp.zeros((1, *SMALL["input_size"], 3)))
    variables = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    exported = flax_to_torch(variables, kind="image")
    reference = _torch_model(SMALL, pool).state_dict()
    assert set(exported) == set(reference)
    for k, v in reference.items():
        assert tuple(exported[k].shape) == tuple(v.shape), k


def test_official_init():
    # An 'rbg' key: threefry's XLA:CPU compile costs seconds per parameter shape.
    variables = jax.jit(_flax_model(SMALL, "attn").init)(
        jax.random.key(0, impl="rbg"), jnp.zeros((1, *SMALL["input_size"], 3))
    )
    params = variables["params"]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for block in params[stage].values():
            np.testing.assert_array_equal(block["bn3"]["scale"], 0.0)
        np.testing.assert_array_equal(params[stage]["0"]["downsample"]["1"]["scale"], 1.0)
    c = SMALL["width"] * 32
    q = np.asarray(params["attnpool"]["q_proj"]["kernel"])
    assert q.dtype == np.float32
    assert abs(q.std() * c**0.5 - 1.0) < 0.05
    assert np.allclose(variables["batch_stats"]["bn1"]["var"], 1.0)


@pytest.mark.parametrize("pool", ["attn", "max"])
def test_eval_parity_small(pool):
    tmodel = _torch_model(SMALL, pool)
    xt, xj = _inputs(SMALL)
    with torch.no_grad():
        ref = tmodel(xt)
    emb, feats = _small_apply(pool)(_small_variables(pool), xj)
    assert emb.dtype == jnp.float32 and emb.shape == (2, SMALL["output_dim"])
    assert _rel_err(emb, ref[0]) < RTOL
    for ours, theirs in zip(feats, ref[1:]):
        assert _rel_err(ours, _nchw_to_nhwc(theirs)) < RTOL


def test_eval_parity_default_geometry():
    """The released geometry: RN50 (3,4,6,3), width 64, 8 heads, 256x128 input (~10 s on CPU)."""
    cfg = dict(layers=(3, 4, 6, 3), width=64, heads=8, output_dim=768, input_size=(256, 128))
    tmodel = _torch_model(cfg, "attn")
    fmodel = _flax_model(cfg, "attn")
    variables = _convert(tmodel, fmodel, cfg)
    xt, xj = _inputs(cfg, n=1)
    with torch.no_grad():
        ref = tmodel(xt)
    emb, feats = jax.jit(fmodel.apply)(variables, xj)
    assert [f.shape[1:3] for f in feats] == [(64, 32), (32, 16), (16, 8), (8, 4)]
    assert _rel_err(emb, ref[0]) < RTOL
    for ours, theirs in zip(feats, ref[1:]):
        assert _rel_err(ours, _nchw_to_nhwc(theirs)) < RTOL


def test_train_mode_batch_stats_parity():
    """train=True normalises with batch statistics and updates running stats like PyTorch."""
    tmodel = _torch_model(SMALL, "attn")
    variables = _small_variables("attn")
    old_stats = {k: v.clone() for k, v in tmodel.state_dict().items() if "running_" in k}

    # Elements per channel seen by each BN, to undo PyTorch's unbiased (n/(n-1)) running var.
    counts: dict[str, int] = {}

    def record(name: str):
        def hook(module, inputs, output):
            counts[name] = inputs[0].numel() // inputs[0].shape[1]

        return hook

    hooks = [
        m.register_forward_hook(record(name))
        for name, m in tmodel.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    xt, xj = _inputs(SMALL, n=3)
    tmodel.train()
    with torch.no_grad():
        ref = tmodel(xt)
    for h in hooks:
        h.remove()

    (emb, feats), updates = _small_apply("attn", train=True)(variables, xj)
    assert _rel_err(emb, ref[0]) < RTOL
    for ours, theirs in zip(feats, ref[1:]):
        assert _rel_err(ours, _nchw_to_nhwc(theirs)) < RTOL

    new_flax = flax_to_torch({"params": variables["params"], **updates}, kind="image")
    new_torch = tmodel.state_dict()
    assert len(counts) == sum(k.endswith("running_mean") for k in new_torch)
    for name, n in counts.items():
        mean_key, var_key = f"{name}.running_mean", f"{name}.running_var"
        assert _rel_err(new_flax[mean_key], new_torch[mean_key]) < RTOL, mean_key
        # torch: 0.9*old + 0.1*unbiased;  flax: 0.9*old + 0.1*biased, biased = unbiased*(n-1)/n.
        old = old_stats[var_key]
        unbiased = (new_torch[var_key] - 0.9 * old) / 0.1
        expected = 0.9 * old + 0.1 * unbiased * (n - 1) / n
        assert _rel_err(new_flax[var_key], expected) < RTOL, var_key


def test_train_pass_without_stat_update():
    """update_stats=False: same batch-statistics output as train mode, running stats untouched."""
    variables = _small_variables("attn")
    model = _flax_model(SMALL, "attn")
    _, xj = _inputs(SMALL, n=3)
    (emb, feats), updates = _small_apply("attn", train=True)(variables, xj)
    (emb2, feats2), kept = jax.jit(functools.partial(
        model.apply, train=True, update_stats=False, mutable=["batch_stats"]))(variables, xj)
    np.testing.assert_array_equal(np.asarray(emb2), np.asarray(emb))
    for a, b in zip(feats2, feats):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                                         updates["batch_stats"], variables["batch_stats"]))
    assert all(moved)  # the ordinary train pass moves every running statistic
    jax.tree.map(np.testing.assert_array_equal, kept["batch_stats"], variables["batch_stats"])


def test_bfloat16_compute():
    """dtype=bf16 runs with float32 params, returns a float32 embedding close to the fp32 one."""
    variables = _small_variables("attn")
    _, xj = _inputs(SMALL)
    emb32, _ = _small_apply("attn")(variables, xj)
    emb16, feats16 = _small_apply("attn", "bfloat16")(variables, xj)
    assert emb16.dtype == jnp.float32
    assert all(f.dtype == jnp.bfloat16 for f in feats16)
    assert np.isfinite(np.asarray(emb16)).all()
    assert _rel_err(emb16, emb32) < 0.1
    for pool in ("attn", "max"):
        model = _flax_model(SMALL, pool, jnp.bfloat16)
        init16 = jax.eval_shape(model.init, jax.random.key(0), xj)
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(init16)} == {jnp.dtype(jnp.float32)}
        emb_shape, _ = jax.eval_shape(model.apply, init16, xj)
        assert emb_shape.dtype == jnp.float32


@pytest.mark.parametrize(
    "kwargs, shape, match",
    [
        ({}, (1, 64, 32, 1), "NHWC images"),
        ({}, (1, 96, 32, 3), "input image size must equal input_size"),
        ({}, (1, 32, 64, 3), "input image size must equal input_size"),
        ({"pool": "mean"}, (1, 64, 32, 3), "pool must be"),
        ({"layers": (1, 1, 1)}, (1, 64, 32, 3), "4 stages"),
    ],
)
def test_bad_input_raises_clear_error(kwargs, shape, match):
    cfg = {**SMALL, **kwargs}
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(ModifiedResNet(**cfg).init, jax.random.key(0), jnp.zeros(shape))


@pytest.mark.parametrize("hw", [(4, 2), (2, 1), (1, 3), (5, 5)])
def test_small_map_conv_equals_lax_conv(hw):
    """TorchConv2d's patches @ kernel path (input smaller than the kernel) computes the conv's sums:
    same outputs and gradients as lax.conv_general_dilated, and the same parameter and init as
    nn.Conv with PyTorch padding (checkpoints and seeds are unaffected)."""
    import flax.linen as nn

    from plip_jax.models.resnet import TorchConv2d, torch_default_kernel_init

    x = jax.random.normal(jax.random.key(0), (3, *hw, 5))
    conv = TorchConv2d(7, 3)
    variables = conv.init(jax.random.key(1), x)
    ref = nn.Conv(7, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, kernel_init=torch_default_kernel_init)
    np.testing.assert_array_equal(variables["params"]["kernel"],
                                  ref.init(jax.random.key(1), x)["params"]["kernel"])

    _assert_same_conv(conv, ref, variables, x)


def test_one_by_one_conv_is_the_lax_conv():
    """TorchConv2d's 1x1 path (x @ kernel, for XLA:CPU's weight gradient) computes the same outputs
    and gradients as lax.conv_general_dilated, with the same (1, 1, in, out) parameter."""
    import flax.linen as nn

    from plip_jax.models.resnet import TorchConv2d, torch_default_kernel_init

    x = jax.random.normal(jax.random.key(0), (2, 6, 4, 5))
    conv = TorchConv2d(7, 1)
    variables = conv.init(jax.random.key(1), x)
    assert variables["params"]["kernel"].shape == (1, 1, 5, 7)
    ref = nn.Conv(7, (1, 1), padding="VALID", use_bias=False, kernel_init=torch_default_kernel_init)

    _assert_same_conv(conv, ref, variables, x)


def _assert_same_conv(conv, ref, variables, x) -> None:
    """Outputs and gradients (variables and input) of two conv modules on one parameter tree."""
    def loss(fn, v, x):
        return jnp.sum(jnp.sin(fn(v, x)))

    ours = lambda v, x: conv.apply(v, x)  # noqa: E731
    theirs = lambda v, x: ref.apply(v, x)  # noqa: E731
    np.testing.assert_allclose(ours(variables, x), theirs(variables, x), rtol=1e-5, atol=1e-5)
    g_ours = jax.grad(functools.partial(loss, ours), argnums=(0, 1))(variables, x)
    g_ref = jax.grad(functools.partial(loss, theirs), argnums=(0, 1))(variables, x)
    for a, b in zip(jax.tree_util.tree_leaves(g_ours), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
