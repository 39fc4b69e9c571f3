"""The pre-training config's recipes: the bare config is the paper's, `:release` the released weights'."""
from __future__ import annotations

import pytest
from tiny import config_file

pretrain = config_file("pretrain")


def test_pretrain_recipes():
    assert pretrain.get_config().model.recipe == "paper_v2"          # NeurIPS paper (max pool, mean text)
    assert pretrain.get_config("release").model.recipe == "release"  # released PLIP_RN50 (attnpool, pooler)
    assert pretrain.get_config("mini").model.recipe == "paper_v2"
    assert pretrain.get_config("mini,release").model.recipe == "release"
    assert pretrain.get_config("mini,recipe=release").model.recipe == "release"
    with pytest.raises(ValueError, match="contradicts"):
        pretrain.get_config("release,recipe=paper_v2")


def test_mini_text_reid_fine_tunes_on_the_shifted_stand_in():
    """`:mini` trains and tests on the rendered CUHK-style set (another domain than pre-training),
    built with its own defaults; cross-domain evaluates on the ICFG-style one."""
    from plip_jax.data import sources

    text = config_file("finetune_text_reid")
    c = text.get_config("mini")
    assert (c.data.name, c.data.config, dict(c.data.procedural)) == ("cuhk_pedes", "procedural", {})
    sources.validate(c.data)                              # built on first use: no data dir needed
    x = text.get_config("mini,dataset=icfg_pedes,eval_dataset=cuhk_pedes")
    assert (x.data.name, x.eval_data.name, x.eval_data.config) == ("icfg_pedes", "cuhk_pedes", "procedural")
    old = text.get_config("mini,dataset=synth_pedes")    # the pre-training distribution, still there
    assert (old.data.name, old.data.config) == ("synth_pedes", "procedural")
