"""The sharded train step on 8 fake CPU devices against the single-device step."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import run_result


@pytest.fixture(scope="module")
def results():
    return run_result(["tests/scripts/sharded_step.py"], devices=8)


def _max_diff(a: list, b: list) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) if len(x) else 0.0 for x, y in zip(a, b))


@pytest.mark.parametrize("layout", ["data8", "data4_fsdp2"])
def test_sharded_losses_and_gradients_match_single_device(results, layout):
    single, sharded = results["single"], results[layout]
    for step, (s, m) in enumerate(zip(single["losses"], sharded["losses"])):
        for key in ("loss", "loss_ivlc", "loss_tic", "loss_iap"):
            assert abs(s[key] - m[key]) <= 1e-5 * max(1.0, abs(s[key])), (step, key, s[key], m[key])
        # grad_norm sums squares over ~100 leaves reduced in another order: 1e-5 relative on the
        # first step, 1e-4 after updates have spread the rounding (measured 1.4e-5 at step 3).
        tol = 1e-5 if step == 0 else 1e-4
        assert abs(s["grad_norm"] - m["grad_norm"]) <= tol * s["grad_norm"], (step, s["grad_norm"], m["grad_norm"])


@pytest.mark.parametrize("layout", ["data8", "data4_fsdp2"])
def test_sharded_parameters_match_single_device(results, layout):
    single, sharded = results["single"], results[layout]
    assert _max_diff(single["params"], sharded["params"]) <= 1e-5
    assert _max_diff(single["stats"], sharded["stats"]) <= 1e-5


def test_fsdp_layout_really_shards(results):
    assert results["single"]["fsdp_sharded"] == 0
    assert results["data8"]["fsdp_sharded"] == 0
    assert results["data4_fsdp2"]["fsdp_sharded"] > 0
