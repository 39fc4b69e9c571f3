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
