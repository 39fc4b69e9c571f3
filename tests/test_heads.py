"""Tests for the pretext heads: PyTorch parity of the decoder pieces, shapes, masking, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from plip_jax.models import heads

RNG = np.random.default_rng(0)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2))))


def _nhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


# ---------------------------------------------------------------------------- torch reference
class TorchSE(torch.nn.Module):
    """The official SE_block_mm (PLIP git history), rewritten for the test."""

    def __init__(self, c, t):
        super().__init__()
        self.fc1 = torch.nn.Linear(c + t, c)
        self.fc2 = torch.nn.Linear(c, c)

    def forward(self, x, txt):
        a = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        a = torch.sigmoid(self.fc2(F.relu(self.fc1(torch.cat([a, txt], -1)))))
        return x * a[:, :, None, None]


class TorchDecoder(torch.nn.Module):
    """The official Image_decoder_ModifiedResNet with configurable widths."""

    def __init__(self, chans, fpn, t):
        super().__init__()
        for i, c in enumerate(chans):
            setattr(self, f"channelunity{i + 1}", torch.nn.Conv2d(c, fpn, 1))
        self.SE_block1 = TorchSE(4 * fpn, t)
        self.SE_block2 = TorchSE(fpn, t)
        self.deconv1 = torch.nn.ConvTranspose2d(4 * fpn, fpn, 3, 2, 1, output_padding=1)
        self.deconv2 = torch.nn.ConvTranspose2d(fpn, 3, 3, 2, 1, output_padding=1)

    def forward(self, x1, x2, x3, x4, txt):
        up = lambda x, s: F.interpolate(x, scale_factor=s, mode="bilinear")  # noqa: E731
        c1, c2, c3, c4 = (getattr(self, f"channelunity{i + 1}")(x) for i, x in enumerate((x1, x2, x3, x4)))
        y3 = up(c4, 2) + c3
        y2 = up(y3, 2) + c2
        y1 = up(y2, 2) + c1
        out = torch.cat([y1, up(y2, 2), up(y3, 4), up(c4, 8)], 1)
        out = self.deconv1(self.SE_block1(out, txt))
        return self.deconv2(self.SE_block2(out, txt))


def _se_params(m):
    return {f"fc{i}": {"kernel": getattr(m, f"fc{i}").weight.detach().numpy().T,
                       "bias": getattr(m, f"fc{i}").bias.detach().numpy()} for i in (1, 2)}


def _decoder_params(m):
    p = {}
    for i in range(1, 5):
        conv = getattr(m, f"channelunity{i}")
        p[f"channelunity{i}"] = {"kernel": conv.weight.detach().numpy().transpose(2, 3, 1, 0),
                                 "bias": conv.bias.detach().numpy()}
    for i in (1, 2):
        p[f"SE_block{i}"] = _se_params(getattr(m, f"SE_block{i}"))
        d = getattr(m, f"deconv{i}")
        p[f"deconv{i}"] = {"kernel": heads.deconv_kernel_from_torch(d.weight.detach().numpy()),
                           "bias": d.bias.detach().numpy()}
    return p


def _random_params(module, *args):
    """Random float32 params with the module's structure; eval_shape avoids compiling the RNG-heavy init."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes)), "params must be float32"
    return jax.tree.map(lambda s: (0.3 * RNG.standard_normal(s.shape)).astype(np.float32), shapes)


def _feats(n, h, w, chans, dtype=np.float32):
    return tuple(RNG.standard_normal((n, h >> k, w >> k, c)).astype(dtype) for k, c in enumerate(chans))


# ---------------------------------------------------------------------------- parity tests
@pytest.mark.parametrize("cin,cout,h,w", [(5, 4, 6, 3), (8, 3, 4, 4)])
def test_deconv_matches_torch_conv_transpose2d(cin, cout, h, w):
    torch.manual_seed(0)
    ref = torch.nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
    x = RNG.standard_normal((2, h, w, cin)).astype(np.float32)
    params = {"kernel": heads.deconv_kernel_from_torch(ref.weight.detach().numpy()),
              "bias": ref.bias.detach().numpy()}
    ours = heads.torch_deconv_3x3_s2(cout, jnp.float32, "deconv").apply({"params": params}, x)
    want = _nhwc(ref(_nchw(x)))
    assert ours.shape == (2, 2 * h, 2 * w, cout) == want.shape
    np.testing.assert_allclose(np.asarray(ours), want, atol=1e-5, rtol=1e-5)


def test_deconv_kernel_conversion_round_trips():
    w = RNG.standard_normal((6, 4, 3, 3)).astype(np.float32)
    k = heads.deconv_kernel_from_torch(w)
    assert k.shape == (3, 3, 4, 6)
    np.testing.assert_array_equal(heads.deconv_kernel_to_torch(k), w)
    with pytest.raises(ValueError, match="4-D"):
        heads.deconv_kernel_from_torch(w[0])


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bilinear_upsample_matches_torch_interpolate(factor):
    x = RNG.standard_normal((2, 3, 5, 4)).astype(np.float32)
    ours = heads.upsample_bilinear(jnp.asarray(x), factor)
    want = _nhwc(F.interpolate(_nchw(x), scale_factor=factor, mode="bilinear", align_corners=False))
    np.testing.assert_allclose(np.asarray(ours), want, atol=1e-6)


def test_se_block_matches_torch():
    torch.manual_seed(1)
    ref = TorchSE(6, 5)
    x = RNG.standard_normal((3, 4, 2, 6)).astype(np.float32)
    t = RNG.standard_normal((3, 5)).astype(np.float32)
    ours = heads.TextGatedSE().apply({"params": _se_params(ref)}, x, t)
    want = _nhwc(ref(_nchw(x), torch.from_numpy(t)))
    np.testing.assert_allclose(np.asarray(ours), want, atol=1e-6)


def test_colorization_decoder_matches_torch_reference():
    chans, fpn, tdim = (4, 6, 8, 10), 4, 5
    torch.manual_seed(2)
    ref = TorchDecoder(chans, fpn, tdim)
    feats = _feats(2, 16, 8, chans)  # x1 of a 64x32 image
    t = RNG.standard_normal((2, tdim)).astype(np.float32)
    dec = heads.ColorizationDecoder(text_dim=tdim, fpn_dim=fpn)
    ours = dec.apply({"params": _decoder_params(ref)}, feats, t)
    want = _nhwc(ref(*(_nchw(f) for f in feats), torch.from_numpy(t)))
    assert ours.shape == (2, 64, 32, 3)
    np.testing.assert_allclose(np.asarray(ours), want, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- decoder shapes
def test_decoder_shapes_names_and_bf16_output():
    chans = (4, 6, 8, 10)
    feats = _feats(2, 16, 8, chans)
    t = jnp.ones((2, 12))
    dec = heads.ColorizationDecoder(text_dim=12, fpn_dim=4, dtype=jnp.bfloat16)
    variables = _random_params(dec, feats, t)
    names = set(variables["params"])
    assert names == {"channelunity1", "channelunity2", "channelunity3", "channelunity4",
                     "SE_block1", "SE_block2", "deconv1", "deconv2"}
    assert variables["params"]["deconv1"]["kernel"].shape == (3, 3, 4, 16)
    out = dec.apply(variables, feats, t)
    assert out.shape == (2, 64, 32, 3) and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()


def test_decoder_full_size_parameter_count():
    # 256x128 geometry: x1..x4 = 64x32..8x4 with RN50 widths; the official decoder has 6,564,355 params
    # (1x1 convs 0.98M + SE1 2.89M + deconv1 2.36M + SE2 0.33M + deconv2 7k).
    feats = tuple(jax.ShapeDtypeStruct((1, 64 >> k, 32 >> k, 256 << k), jnp.float32) for k in range(4))
    text = jax.ShapeDtypeStruct((1, 768), jnp.float32)
    dec = heads.ColorizationDecoder()
    shapes = jax.eval_shape(dec.init, jax.random.key(0), feats, text)
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == 6_564_355
    out = jax.eval_shape(dec.apply, shapes, feats, text)
    assert out.shape == (1, 256, 128, 3)


def test_decoder_rejects_bad_inputs():
    dec = heads.ColorizationDecoder(text_dim=12, fpn_dim=4)
    feats = _feats(2, 16, 8, (4, 6, 8, 10))
    with pytest.raises(ValueError, match="4 feature maps"):
        dec.init(jax.random.key(0), feats[:3], jnp.ones((2, 12)))
    with pytest.raises(ValueError, match="halve"):
        dec.init(jax.random.key(0), (feats[0], feats[0], feats[2], feats[3]), jnp.ones((2, 12)))
    with pytest.raises(ValueError, match="text_global"):
        dec.init(jax.random.key(0), feats, jnp.ones((2, 7)))


# ---------------------------------------------------------------------------- attribute head
def _iap_inputs(n=2, length=7, d=16, di=16, m=3):
    tokens = RNG.standard_normal((n, length, d)).astype(np.float32)
    image = RNG.standard_normal((n, di)).astype(np.float32)
    mask = np.ones((n, length), np.int32)
    mask[0, 4:] = 0
    mask[1, 6:] = 0
    positions = np.array([[1, 3, 0], [2, 5, 0]], np.int32)[:, :m]
    return tokens, image, mask, positions


@pytest.mark.parametrize("fusion,di", [("add", 16), ("add", 10), ("concat_mlp", 10)])
def test_attribute_head_shapes_and_params(fusion, di):
    head = heads.AttributeHead(vocab_size=30, hidden=16, heads=2, mlp_dim=32, fusion=fusion, num_layers=2)
    args = _iap_inputs(di=di)
    variables = _random_params(head, *args)
    logits = head.apply(variables, *args)
    assert logits.shape == (2, 3, 30) and logits.dtype == jnp.float32
    names = set(variables["params"])
    assert {"resblocks_0", "resblocks_1", "ln_post", "decoder"} <= names
    assert ("image_proj" in names) == (fusion == "add" and di != 16)
    assert ({"fc1", "fc2"} <= names) == (fusion == "concat_mlp")


@pytest.mark.parametrize("fusion", ["add", "concat_mlp"])
def test_attribute_head_ignores_padded_tokens(fusion):
    head = heads.AttributeHead(vocab_size=30, hidden=16, heads=2, mlp_dim=32, fusion=fusion)
    tokens, image, mask, positions = _iap_inputs()
    variables = _random_params(head, tokens, image, mask, positions)
    base = head.apply(variables, tokens, image, mask, positions)
    changed = tokens.copy()
    changed[mask == 0] = 100.0 * RNG.standard_normal(changed[mask == 0].shape)
    np.testing.assert_allclose(np.asarray(head.apply(variables, changed, image, mask, positions)),
                               np.asarray(base), atol=1e-5)
    # ... while a real (unpadded, unmasked-out) token does change the predictions.
    changed = tokens.copy()
    changed[:, 0] += RNG.standard_normal(changed[:, 0].shape)
    assert not np.allclose(np.asarray(head.apply(variables, changed, image, mask, positions)), np.asarray(base))


def test_attribute_head_gathers_positions():
    head = heads.AttributeHead(vocab_size=30, hidden=16, heads=2, mlp_dim=32)
    tokens, image, mask, _ = _iap_inputs()
    all_pos = np.tile(np.arange(7, dtype=np.int32), (2, 1))
    variables = _random_params(head, tokens, image, mask, all_pos)
    full = np.asarray(head.apply(variables, tokens, image, mask, all_pos))
    some = np.array([[3, 1], [0, 5]], np.int32)
    picked = np.asarray(head.apply(variables, tokens, image, mask, some))
    np.testing.assert_allclose(picked, np.take_along_axis(full, some[..., None], axis=1), atol=1e-5)


def test_attribute_head_bf16_compute_gives_float32_logits():
    head = heads.AttributeHead(vocab_size=30, hidden=16, heads=2, mlp_dim=32, dtype=jnp.bfloat16)
    args = _iap_inputs()
    variables = _random_params(head, *args)
    logits = head.apply(variables, *args)
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()


def test_attribute_head_rejects_bad_config_and_inputs():
    args = _iap_inputs()
    with pytest.raises(ValueError, match="fusion 'sum'"):
        heads.AttributeHead(vocab_size=30, hidden=16, heads=2, mlp_dim=32, fusion="sum").init(
            jax.random.key(0), *args)
    with pytest.raises(ValueError, match="token_states"):
        heads.AttributeHead(vocab_size=30, hidden=8, heads=2, mlp_dim=32).init(jax.random.key(0), *args)
    tokens, image, mask, positions = args
    with pytest.raises(ValueError, match="attention_mask"):
        heads.AttributeHead(vocab_size=30, hidden=16, heads=2, mlp_dim=32).init(
            jax.random.key(0), tokens, image, mask[:, :3], positions)
