"""The driver API and the per-layer trace: same results on every backend, mismatches located."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from bitswarm.golden import ConfigError, save_model
from bitswarm.hw.accel import Accelerator
from bitswarm.hw.plan import AccelPlan, LayerFold
from bitswarm.sim.driver import evaluate, first_mismatch, make_backend
from bitswarm.sim.trace import rtl_trace

from tests.hw.test_accel import _random_model


def _case():
    m = _random_model([16, 12, 5], 2, 8, seed=5)
    plan = AccelPlan(m.cfg, (LayerFold(3, 8, 1), LayerFold(2, 6, 1)))
    x = torch.randint(0, 256, (40, 16), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    return m, plan, x


def test_rtl_trace_equals_golden_trace():
    m, plan, x = _case()
    gt: list = []
    m.forward(x, trace=gt)
    rt = rtl_trace(Accelerator(m, plan), x.numpy())
    assert len(rt) == len(gt)
    for g, r in zip(gt, rt, strict=True):
        np.testing.assert_array_equal(g.numpy(), r)
    assert first_mismatch([g.numpy() for g in gt], rt) is None


def test_trace_locates_a_broken_weight():
    m, plan, x = _case()
    gt: list = []
    m.forward(x, trace=gt)
    broken = _random_model([16, 12, 5], 2, 8, seed=5)
    broken.weights[0] = broken.weights[0].clone()
    broken.weights[0][:, 7, :] ^= 1  # neuron 7 of layer 0 computes -z
    msg = first_mismatch([g.numpy() for g in gt], rtl_trace(Accelerator(broken, plan), x.numpy()))
    assert msg is not None and msg.startswith("layer 0, image ") and "neuron 7" in msg


def test_virtual_backend_matches_golden_and_cycle_model():
    m, plan, x = _case()
    b = make_backend("virtual", m, plan)
    rep = evaluate(b, x.numpy(), labels=np.zeros(len(x), dtype=np.int64))
    assert rep["mismatches"] == 0 and rep["n"] == 40
    assert rep["cycles_per_inference"] == plan.latency_cycles()


def test_make_backend_errors():
    m, plan, _ = _case()
    with pytest.raises(ConfigError, match="backend must be one of"):
        make_backend("fpga", m, plan)
    other = _random_model([16, 10, 5], 2, 8)
    with pytest.raises(ConfigError, match="different model configuration"):
        make_backend("virtual", other, plan)


def _bitswarm(*args):
    return subprocess.run([sys.executable, "-m", "bitswarm", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_sim_virtual_json(tmp_path):
    m = _random_model([64, 20, 10], 1, 8, shape=(8, 8), seed=1)
    p = tmp_path / "m.bsm"
    save_model(m, p)
    r = _bitswarm("sim", str(p), "--backend", "virtual", "--dataset", "digits", "--limit", "50", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["n"] == 50 and d["mismatches"] == 0 and 0 <= d["accuracy"] <= 1
    assert d["cycles_per_inference"] == AccelPlan.auto(m.cfg).latency_cycles()


def test_cli_sim_errors(tmp_path):
    m = _random_model([16, 12, 5], 1, 8)
    p = tmp_path / "m.bsm"
    save_model(m, p)
    for args, msg in [
        (("sim", str(p), "--dataset", "digits"), "digits samples are 8x8 but the model takes 16"),
        (("sim", str(tmp_path / "none.bsm")), "no such model file"),
        (("sim", str(p), "--limit", "0"), "--limit must be >= 1"),
    ]:
        r = _bitswarm(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_hw_order_streams_conv_images_channel_last():
    from bitswarm.golden import ModelConfig
    from bitswarm.sim.driver import hw_order

    cnn = ModelConfig.from_arch("2x3x4-c2k3p1-5")
    x = np.arange(2 * 24, dtype=np.uint8).reshape(2, 2, 3, 4)  # [n, C, H, W]
    got = hw_order(cnn, x)
    assert got.shape == (2, 24) and got[0, :4].tolist() == [0, 12, 1, 13]  # (y0, x0, c0), c1, ...
    assert np.array_equal(hw_order(cnn, got), got)  # flat rows are already HWC
    mlp = ModelConfig.mlp([12, 4, 3], input_shape=(3, 4))
    assert hw_order(mlp, x[:, 0]).tolist() == x[:, 0].reshape(2, 12).tolist()
