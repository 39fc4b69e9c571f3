"""The PLIP module's pre-training forward (which passes write the BatchNorm running statistics) and
the length-bucketed caption embedding of evaluation."""
from __future__ import annotations

import functools

import jax
import numpy as np

from plip_jax.core import state as state_lib
from plip_jax.data import sources, transforms
from plip_jax.models import text_tower
from plip_jax.models.plip import build_model
from tests.tiny import tiny_config


@functools.cache
def _setup(recipe: str = "paper_v2", tasks: tuple[str, ...] = ("ivlc", "tic", "iap")):
    c = tiny_config()
    c.model.recipe = recipe
    text_cfg, _ = text_tower.resolve(c.model.text.init, dropout=0.0)
    batch = sources.example_batch(c, text_cfg)
    batch["image"] = np.random.default_rng(0).integers(0, 256, batch["image"].shape).astype(np.uint8)
    model = build_model(c.model, text_cfg, tasks=tasks)
    variables = jax.jit(lambda: state_lib.init_variables(model, state_lib.init_key(0), batch))()
    return c, text_cfg, batch, variables


def _running_stats_after_step(gray_updates: bool, tasks: tuple[str, ...]) -> dict:
    """batch_stats after one train-mode forward of a model with `tasks`, from the same variables."""
    c, text_cfg, batch, variables = _setup()
    c = c.copy_and_resolve_references()
    c.model.tic.gray_updates_bn_stats = gray_updates
    model = build_model(c.model, text_cfg, tasks=tasks)
    apply = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
    _, mutated = apply(variables, batch, rngs={"dropout": jax.random.key(2)})
    return mutated["batch_stats"]


def test_gray_pass_leaves_running_stats_to_the_colour_pass():
    """Default: the running statistics after a TIC step are those of the colour pass alone; the
    option gray_updates_bn_stats=True (PyTorch's train-mode default) blends the gray batch in."""
    before = _setup()[3]["batch_stats"]
    colour_only = _running_stats_after_step(False, ("ivlc",))
    with_tic = _running_stats_after_step(False, ("ivlc", "tic", "iap"))
    jax.tree.map(np.testing.assert_array_equal, with_tic, colour_only)
    assert any(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), with_tic, before)))
    blended = _running_stats_after_step(True, ("ivlc", "tic", "iap"))
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), blended, colour_only))
    assert max(diffs) > 1e-3


def test_embedder_length_buckets_match_full_length():
    """Embedder.texts sorts captions by length and cuts padding columns: same embeddings as padded L."""
    from plip_jax.evals.embed import Embedder

    rng = np.random.default_rng(0)
    n, length = 21, 16
    lengths = rng.integers(3, length + 1, n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(5, 100, (n, length)).astype(np.int32) * mask
    for recipe in ("release", "paper_v2"):  # BERT pooler (token 0) and masked mean
        c, text_cfg, _, variables = _setup(recipe, ("ivlc",))
        emb = Embedder.for_plip(build_model(c.model, text_cfg, tasks=("ivlc",)), batch_size=8)
        bucketed = emb.texts(variables, ids, mask)
        full = emb.texts(variables, ids, mask, bucket=0)
        assert bucketed.shape == (n, text_cfg.hidden_size)
        np.testing.assert_allclose(bucketed, full, rtol=1e-5, atol=1e-6)
        one = emb.texts(variables, ids[5:6], mask[5:6])  # order restored: row 5 is caption 5
        np.testing.assert_allclose(one[0], full[5], rtol=1e-5, atol=1e-6)


def test_image_pool_option_overrides_the_recipe():
    """model.image.pool picks the global pooling independently of the recipe; a bad value is one line."""
    import pytest

    from plip_jax.models.plip import image_pool

    assert image_pool("release") == "attn" and image_pool("paper_v2") == "max"
    c, text_cfg, batch, _ = _setup()
    c = c.copy_and_resolve_references()
    c.model.image["pool"] = "attn"
    model = build_model(c.model, text_cfg)
    shapes = jax.eval_shape(lambda: state_lib.init_variables(model, state_lib.init_key(0), batch))
    assert "attnpool" in shapes["params"]["image"] and "proj" not in shapes["params"]["image"]
    c.model.image["pool"] = "mean"
    with pytest.raises(ValueError, match="pool must be 'attn', 'max' or None"):
        build_model(c.model, text_cfg)


def test_iap_stride_and_several_images_per_caption():
    """model.iap/tic.sample_stride k: the training masked / gray pass sees rows 0, k, 2k, ... (evaluation
    all rows);
    `more_images` (K images per caption): IVLC gets all B*K images with their identities, while TIC
    and IAP use each caption's own image, the first of its group."""
    import pytest

    from plip_jax.data import synthetic
    from plip_jax.trainers.pretrain_step import compute_losses

    c, text_cfg, _, variables = _setup()
    c = c.copy_and_resolve_references()
    d = c.data
    batch = synthetic.synthetic_batch(4, tuple(c.model.image.input_size), d.max_length, d.max_masked,
                                      vocab_size=max(text_cfg.vocab_size, 1001), num_ids=2, seed=3,
                                      images_per_caption=3)
    for k in ("input_ids", "masked_input_ids", "mlm_labels"):
        batch[k] = np.minimum(batch[k], text_cfg.vocab_size - 1)
    c.model.iap.sample_stride = 2
    c.model.tic.sample_stride = 4
    model = build_model(c.model, text_cfg)
    out, _ = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
        variables, batch, rngs={"dropout": jax.random.key(0)})
    assert out["iap_logits"].shape[0] == 2
    # TIC on rows 0, 4, ...: the target is that caption's own colour image.
    assert out["colour_pred"].shape[0] == 1 and out["target"].shape[0] == 1
    np.testing.assert_allclose(out["target"][0], transforms.normalize(batch["image"][:1])[0], atol=1e-6)
    np.testing.assert_array_equal(out["iap_labels"], batch["mlm_labels"][::2])
    np.testing.assert_array_equal(out["iap_weights"], batch["mlm_weights"][::2])
    assert out["image_emb"].shape == (12, text_cfg.hidden_size) and out["text_emb"].shape[0] == 4
    np.testing.assert_array_equal(out["image_ids"], np.repeat(batch["id"], 3))
    loss, metrics = compute_losses(out, batch, c.losses)
    assert np.isfinite(float(loss)) and set(metrics) >= {"loss_ivlc", "loss_tic", "loss_iap"}

    evaluate = jax.jit(functools.partial(model.apply, train=False))
    full = evaluate(variables, batch)
    single = evaluate(variables, {k: v for k, v in batch.items() if k != "more_images"})
    assert full["iap_logits"].shape[0] == 4
    np.testing.assert_allclose(full["image_emb"][::3], single["image_emb"], rtol=1e-5, atol=1e-5)
    for k in ("iap_logits", "colour_pred", "text_emb"):
        np.testing.assert_allclose(full[k], single[k], rtol=1e-5, atol=1e-5, err_msg=k)

    c.model.iap.sample_stride = 0
    with pytest.raises(ValueError, match="iap.sample_stride must be an integer >= 1"):
        build_model(c.model, text_cfg)
    c.model.iap.sample_stride, c.model.tic.sample_stride = 1, 0
    with pytest.raises(ValueError, match="tic.sample_stride must be an integer >= 1"):
        build_model(c.model, text_cfg)


def test_remat_blocks_recompute_the_same_losses_gradients_and_statistics():
    """config.model.remat='blocks' (recompute ResNet blocks and BERT layers in the backward pass)
    changes memory, not the step: same parameter names, loss, gradients and BN statistics."""
    from plip_jax.trainers.pretrain_step import pretrain_loss

    c, text_cfg, batch, variables = _setup()
    outs = {}
    for remat in ("none", "blocks"):
        cfg = c.copy_and_resolve_references()
        cfg.model.remat = remat
        model = build_model(cfg.model, text_cfg, tasks=("ivlc", "tic", "iap"))
        loss_fn = pretrain_loss(model, cfg.losses)
        grad = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, variables["batch_stats"], batch, jax.random.key(3)),
                                          has_aux=True))
        (loss, (_, stats)), grads = grad(variables["params"])
        outs[remat] = (loss, grads, stats)
    (l0, g0, s0), (l1, g1, s1) = outs["none"], outs["blocks"]
    assert jax.tree.structure(g0) == jax.tree.structure(g1)
    np.testing.assert_allclose(float(l0), float(l1), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g0) + jax.tree.leaves(s0), jax.tree.leaves(g1) + jax.tree.leaves(s1)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_typed_choices_are_the_ones_validated():
    """The Literal annotations of the config fields name exactly the values the code accepts."""
    import typing

    import pytest

    from plip_jax.data import masking, pipeline
    from plip_jax.models import heads
    from plip_jax.models import plip as plip_model

    hints = typing.get_type_hints(plip_model.PLIP, globalns=vars(plip_model))
    assert typing.get_args(hints["recipe"]) == plip_model.RECIPES
    assert typing.get_args(hints["iap_fusion"]) == heads.IAP_FUSIONS
    assert pipeline.SAMPLERS == ("caption", "identity")
    schedules = typing.get_args(typing.get_type_hints(pipeline.DataConfig)["mask_schedule"])
    assert all(0.2 <= masking.mask_ratio(1, 2, schedule=s) <= 0.8 for s in schedules)
    with pytest.raises(ValueError, match="unknown mask schedule"):
        masking.mask_ratio(1, 2, schedule="cubic")
