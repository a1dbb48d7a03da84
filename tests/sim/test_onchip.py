"""Tests of sim/onchip.py: on-chip training on the virtual accelerator equals golden over whole
runs (weights, accumulators, thresholds, LFSR state), and the cycle model."""

import pytest
import torch
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.flip import FlipRuleConfig
from bitswarm.golden.lfsr import LFSRConfig
from bitswarm.golden.model import Model, ModelConfig
from bitswarm.golden.onchip import OnChipConfig, onchip_train
from bitswarm.sim.onchip import VirtualTrainer, cycles_per_sample

ARCHS = [(70, 33, 10), (64, 17, 9, 10), (20, 2)]


def _setup(arch, swarm, noise, seed=1):
    flip = FlipRuleConfig(acc_width=6, threshold=3, leak_shift=2, noise=noise, fire_prob=5,
                          lfsr=LFSRConfig(width=16, seed=7, draw_bits=3))
    mc = ModelConfig.mlp(list(arch), swarm=swarm, flip=flip)
    m = Model.random(mc, seed)
    m.acc = [torch.zeros(lay.weight_shape(), dtype=torch.int32) for lay in mc.layers]
    m.lfsr_state = 7
    hidden = len(arch) - 2
    cfg = OnChipConfig(margin=3, windows=tuple([60] + [8] * (hidden - 1))[:hidden], theta_step=2,
                       out_theta_step=1, homeostasis_shift=3)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (200, arch[0]), generator=g, dtype=torch.uint8)
    y = torch.randint(0, arch[-1], (200,), generator=g)
    return m, cfg, x, y


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("swarm,noise", [(1, "additive"), (4, "stochastic"), (1, "none")])
def test_virtual_equals_golden_over_200_samples(arch, swarm, noise):
    m, cfg, x, y = _setup(arch, swarm, noise)
    vt = VirtualTrainer(m, cfg)
    vt.train(x.numpy(), y.numpy())
    onchip_train(cfg, m, x, y)
    got = vt.export()
    assert got.equal(m)
    assert sum(int((a != 0).sum()) for a in got.acc) > 0  # the run did learn something


def test_virtual_detects_a_broken_state():
    m, cfg, x, y = _setup(ARCHS[0], 1, "additive")
    vt = VirtualTrainer(m, cfg)
    vt.train(x[:50].numpy(), y[:50].numpy())
    onchip_train(cfg, m, x[:50], y[:50])
    vt.acc[0][0, 0, 0] += 1  # mutation: one accumulator off by one
    assert not vt.export().equal(m)


def test_cycle_model():
    from bitswarm.hw.plan import TrainerFold

    mc = ModelConfig.mlp([64, 128, 10], swarm=4)  # 8-bit pixels: 64 inputs a word -> K = 2
    c = cycles_per_sample(mc)
    t = [4 * 128, 4 * 10]
    assert (c.load, c.forward, c.error, c.backward, c.update, c.report) == (
        1, sum(t) + (2 + 1) + 2 + 3, 4 + 1, t[1] + 1, sum(t) + 2, 1)
    assert cycles_per_sample(mc, in_lanes=8).load == 8
    f = TrainerFold(((8, 8), (5, 128)))   # K = 1 (8 pixels a word), K = 2 (128 bits)
    t = [4 * 128 // 8 * 8, 4 * 10 // 5]
    c = cycles_per_sample(mc, fold=f)
    assert (c.forward, c.backward, c.update) == (sum(t) + 2 + 2 + 3, t[1] + 1, sum(t) + 2)
    digits = ModelConfig.mlp([64, 256, 10])
    assert cycles_per_sample(digits, fold=TrainerFold(((8, 64), (10, 256)))).total == 85
    with pytest.raises(ConfigError, match="in_lanes"):
        cycles_per_sample(mc, in_lanes=0)
    with pytest.raises(ConfigError, match="must divide"):
        cycles_per_sample(mc, fold=TrainerFold(((3, 64), (1, 128))))


def test_needs_training_state():
    m, cfg, _, _ = _setup(ARCHS[0], 1, "none")
    m.acc = None
    with pytest.raises(ConfigError, match="accumulators"):
        VirtualTrainer(m, cfg)


@pytest.mark.verilator
def test_sim_cli_train(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "m.bsm"
    r = subprocess.run([sys.executable, "-m", "bitswarm", "train", "--dataset", "digits", "--arch", "64-16-10",
                        "--votes", "integer", "--epochs", "1", "--out", str(out), "--quiet", "--no-plots"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "bitswarm", "sim", str(out), "--train", "--dataset", "digits",
                        "--limit", "200", "--json"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["samples"] == 200 and rep["mismatches"] == 0 and rep["accuracy_after"] > 0.1
    from bitswarm.golden.model import load_model

    assert rep["cycles_per_sample"] == cycles_per_sample(load_model(out).cfg).total
    fold = ["--fold", "4x16,5x8"]  # the trainer fold: PExSIMD per layer
    r = subprocess.run([sys.executable, "-m", "bitswarm", "sim", str(out), "--train", "--backend", "verilator",
                        "--dataset", "digits", "--limit", "200", "--json", *fold],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    rtl = json.loads(r.stdout)
    assert rtl["samples"] == 200 and rtl["mismatches"] == 0 and rtl["backend"] == "verilator"
    from bitswarm.hw.plan import TrainerFold

    cfg = load_model(out).cfg
    folded = cycles_per_sample(cfg, fold=TrainerFold(((4, 16), (5, 8)))).total
    assert rtl["cycles_per_sample"] == rtl["cycles_per_sample_model"] == folded < rep["cycles_per_sample"]
    assert rtl["accuracy_after"] == rep["accuracy_after"]
    r = subprocess.run([sys.executable, "-m", "bitswarm", "sim", str(out), "--train", "--dataset", "digits",
                        "--limit", "20", "--json", *fold], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and json.loads(r.stdout)["cycles_per_sample"] == folded, r.stderr
    r = subprocess.run([sys.executable, "-m", "bitswarm", "sim", str(out), "--train", "--dataset", "digits",
                        "--limit", "20", "--fold", "3x16,5x8"], capture_output=True, text=True, check=False)
    assert r.returncode != 0 and "pe = 3 must divide" in r.stderr and "Traceback" not in r.stderr


def test_trainer_fold():
    from bitswarm.hw.plan import TrainerFold

    mc = ModelConfig.mlp([64, 256, 10])
    f = TrainerFold(((8, 64), (5, 256)))
    f.check(mc)
    assert TrainerFold.from_dict(f.to_dict(mc), mc) == f
    assert TrainerFold.parse("8x64,5x256", mc) == f
    assert TrainerFold.default(mc) == TrainerFold(((1, 64), (1, 256)))
    assert TrainerFold.resolve(mc, None) == TrainerFold.default(mc)
    assert (f.words(mc, 0), f.groups(mc, 0), f.steps(mc, 1)) == (1, 32, 2)
    with pytest.raises(ConfigError, match="pe = 3 must divide"):
        TrainerFold(((3, 64), (1, 256))).check(mc)
    with pytest.raises(ConfigError, match="simd = 48 must divide"):
        TrainerFold(((1, 48), (1, 256))).check(mc)
    with pytest.raises(ConfigError, match="1 layer entries, the model 2"):
        TrainerFold(((1, 64),)).check(mc)
    with pytest.raises(ConfigError, match="two positive integers"):
        TrainerFold(((0, 64), (1, 256)))
    with pytest.raises(ConfigError, match="PExSIMD"):
        TrainerFold.parse("8,5", mc)
    with pytest.raises(ConfigError, match="architecture"):
        TrainerFold.from_dict(f.to_dict(ModelConfig.mlp([64, 128, 10])), mc)
