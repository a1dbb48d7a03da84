"""The RTL on-chip trainer (hw/onchip.py) against golden ``onchip_train`` (SPEC.md §12).

Whole trajectories: after K samples the weight bits, accumulators, thresholds and LFSR state
read back through the debug port equal golden's, every sample's predicted class and error flag
equal golden's, and the streamed interval between samples equals the cycle model. Short runs on
the Amaranth simulator cover the parameter space (noise modes, S, homeostasis, input signs,
invert bits, multi-transfer input, 1..3 layers); Verilator runs (C++ harness) cover K >= 200
samples on digits and random data, S in {1, 4}, with idle input and output backpressure, and
agree with the virtual accelerator's trainer too.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator
from bitswarm.golden.errors import BitswarmError, ConfigError
from bitswarm.golden.flip import FlipRuleConfig
from bitswarm.golden.lfsr import LFSRConfig
from bitswarm.golden.model import Model, ModelConfig
from bitswarm.golden.onchip import OnChipConfig, onchip_train
from bitswarm.hw.onchip import OnChipTrainer, dbg_decode, dbg_queries
from bitswarm.hw.plan import TrainerFold
from bitswarm.sim.onchip import VirtualTrainer, cycles_per_sample


def _flip(noise: str, acc_width: int = 6, threshold: int = 3, leak: int = 2) -> FlipRuleConfig:
    return FlipRuleConfig(acc_width=acc_width, threshold=threshold, leak_shift=leak, noise=noise,
                          fire_prob=100, lfsr=LFSRConfig(width=16, seed=0xACE1, draw_bits=8))


def _random_case(arch, swarm, noise, *, input_bits=4, seed=0, k=12, hs=3, input_sign="msb"):
    """A random model with random accumulators, thresholds and invert bits, samples, labels."""
    mc = ModelConfig.mlp(list(arch), swarm=swarm, input_bits=input_bits, flip=_flip(noise))
    m = Model.random(mc, seed)
    g = torch.Generator().manual_seed(seed + 1)
    f = mc.flip
    m.acc = [torch.randint(f.acc_min, f.acc_max + 1, lay.weight_shape(), generator=g, dtype=torch.int32)
             for lay in mc.layers]
    m.theta = [torch.randint(-3, 4, (lay.n_out,), generator=g, dtype=torch.int32) for lay in mc.layers]
    m.invert = [torch.randint(0, 2, (lay.n_out,), generator=g, dtype=torch.uint8) for lay in mc.layers[:-1]]
    m.invert.append(torch.zeros(mc.layers[-1].n_out, dtype=torch.uint8))
    m.lfsr_state = f.lfsr.seed
    hidden = len(arch) - 2
    oc = OnChipConfig(margin=2, windows=tuple(5 - i for i in range(hidden)), theta_step=1, out_theta_step=2,
                      homeostasis_shift=hs, input_sign=input_sign)
    xs = torch.randint(0, 256, (k, arch[0]), generator=g, dtype=torch.uint8)
    ys = torch.randint(0, arch[-1], (k,), generator=g)
    return m, oc, xs, ys


def _golden(m, oc, xs, ys):
    gm = copy.deepcopy(m)
    res = onchip_train(oc, gm, xs, ys)
    preds = np.array([r.pred for r in res])
    errs = np.array([int(bool(r.errors[-1].any())) for r in res])
    return gm, preds, errs, res


def amaranth_run(dut: OnChipTrainer, xs, ys):
    """Stream samples through ``dut`` on the Amaranth simulator; returns (preds, errors,
    output cycle stamps, read-back Model)."""
    cfg = dut.model.cfg
    p, t = dut.in_lanes, dut.load_transfers()
    n0 = cfg.layers[0].n_in
    k = len(ys)
    outs, stamps, state = [], [], {}
    cycle = [0]

    async def feed(ctx):
        for i in range(k):
            px = xs[i].tolist() + [0] * (t * p - n0)
            for s in range(t):
                ctx.set(dut.i_stream.valid, 1)
                ctx.set(dut.i_stream.payload, {"pixels": px[s * p:(s + 1) * p], "label": int(ys[i])})
                await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)

    async def collect(ctx):
        ctx.set(dut.o_stream.ready, 1)
        while len(outs) < k:
            await ctx.tick()
            cycle[0] += 1
            if ctx.get(dut.o_stream.valid):
                o = ctx.get(dut.o_stream.payload)
                outs.append((o.pred, o.error))
                stamps.append(cycle[0])
        while not ctx.get(dut.idle):
            await ctx.tick()
        q = dbg_queries(cfg, dut.fold)
        vals = []
        for kind, layer, row, word in q:
            ctx.set(dut.dbg_en, 1)
            ctx.set(dut.dbg_kind, kind)
            ctx.set(dut.dbg_layer, layer)
            ctx.set(dut.dbg_row, row)
            ctx.set(dut.dbg_word, word)
            await ctx.tick()
            ctx.set(dut.dbg_en, 0)
            vals.append(ctx.get(dut.dbg_data))
        state["model"] = dbg_decode(cfg, q, vals, dut.model.invert, dut.fold)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed)
    sim.add_testbench(collect)
    sim.run()
    o = np.array(outs, dtype=np.int64).reshape(-1, 2)
    return o[:, 0], o[:, 1], np.array(stamps), state["model"]


AMARANTH_CASES = [
    # arch, swarm, noise, input_bits, hs, input_sign, in_lanes, fold (None: pe = 1, simd = N)
    ((16, 8, 6, 4), 1, "none", 4, 3, "msb", 5, None),
    ((16, 8, 6, 4), 2, "additive", 4, 0, "nonzero", 5, None),
    ((16, 8, 6, 4), 1, "stochastic", 8, 2, "msb", 16, None),
    ((12, 7, 3), 4, "stochastic", 1, 1, "msb", 4, None),     # binarized input: ±1 votes on layer 0
    ((10, 5), 1, "additive", 8, 0, "msb", 3, None),          # no hidden layer
    ((9, 1, 2), 1, "none", 2, 4, "nonzero", 9, None),        # one hidden neuron: R = 1 rows
    # folded: pe > 1 (LFSR jump-ahead between banks), simd < N (several words per row)
    ((16, 8, 6, 4), 1, "stochastic", 8, 2, "msb", 16, ((2, 4), (3, 2), (2, 3))),
    ((12, 7, 3), 4, "stochastic", 1, 1, "msb", 4, ((7, 3), (1, 1))),   # S = 4, pe = M, simd = 1
    ((10, 5), 1, "additive", 8, 0, "msb", 3, ((5, 5),)),     # one row group, two words
    ((9, 1, 2), 1, "none", 2, 4, "nonzero", 9, ((1, 3), (2, 1))),
    ((40, 8, 6), 2, "stochastic", 8, 2, "msb", 7, ((4, 20), (3, 8))),   # split tree (K = 2)
    ((80, 8, 4), 1, "additive", 1, 2, "msb", 16, ((2, 80), (2, 4))),    # 80-bit popcount, K = 2
]


def _fold(fold):
    return None if fold is None else TrainerFold(fold)


@pytest.mark.parametrize("arch,swarm,noise,bits,hs,sign,lanes,fold", AMARANTH_CASES)
def test_rtl_step_equals_golden(arch, swarm, noise, bits, hs, sign, lanes, fold):
    m, oc, xs, ys = _random_case(arch, swarm, noise, input_bits=bits, hs=hs, input_sign=sign, k=14)
    gm, g_pred, g_err, res = _golden(m, oc, xs, ys)
    assert sum(sum(r.flips) for r in res) > 0 and g_err.sum() > 0  # the run changes the state
    dut = OnChipTrainer(m, oc, in_lanes=lanes, fold=_fold(fold))
    pred, err, stamps, got = amaranth_run(dut, xs, ys)
    assert (pred == g_pred).all() and (err == g_err).all()
    assert got.equal(gm)
    assert set(np.diff(stamps).tolist()) == {cycles_per_sample(m.cfg, lanes, _fold(fold)).total}


@pytest.mark.parametrize("change", [{"margin": 3}, {"windows": (4, 4)}, {"theta_step": 2},
                                    {"homeostasis_shift": 2}, {"input_sign": "nonzero"}])
def test_rtl_built_with_other_constants_differs(change):
    """Mutation check: hardware built from a different step (one constant changed) is caught."""
    m, oc, xs, ys = _random_case((16, 8, 6, 4), 1, "stochastic", k=14)
    gm, g_pred, g_err, _ = _golden(m, oc, xs, ys)
    dut = OnChipTrainer(m, dataclasses.replace(oc, **change), in_lanes=8)
    pred, err, _, got = amaranth_run(dut, xs, ys)
    assert not (got.equal(gm) and (pred == g_pred).all() and (err == g_err).all())


class _WrongJump(OnChipTrainer):
    """Bank 1's lanes draw one LFSR step late (a wrong jump-ahead)."""

    def _draw_steps(self, n_in, p, lane):
        return super()._draw_steps(n_in, p, lane) + (p == 1)


class _SwappedBanks(OnChipTrainer):
    """A folded row off by one: the neuron of bank p is taken as that of bank pe - 1 - p."""

    def _neuron(self, jg, p, pe):
        return super()._neuron(jg, pe - 1 - p, pe)


@pytest.mark.parametrize("cls", [_WrongJump, _SwappedBanks])
def test_rtl_fold_mutants_are_caught(cls):
    case = AMARANTH_CASES[6]
    arch, swarm, noise, bits, hs, sign, lanes, fold = case
    m, oc, xs, ys = _random_case(arch, swarm, noise, input_bits=bits, hs=hs, input_sign=sign, k=6)
    gm, g_pred, g_err, _ = _golden(m, oc, xs, ys)
    pred, err, _, got = amaranth_run(cls(m, oc, in_lanes=lanes, fold=_fold(fold)), xs, ys)
    assert not (got.equal(gm) and (pred == g_pred).all() and (err == g_err).all())


def test_jump_masks_equal_golden_steps():
    from bitswarm.golden.lfsr import LFSR, LFSRConfig
    from bitswarm.hw.onchip import jump_masks

    cfg = LFSRConfig(width=16, seed=0xACE1, draw_bits=8)
    masks = jump_masks(16, cfg.taps, [1, 7, 64, 300])
    for n, mk in masks.items():
        ref = LFSR(cfg, 0xACE1)
        ref.draws(n)
        got = sum((bin(0xACE1 & mk[b]).count("1") & 1) << b for b in range(16))
        assert got == ref.state, n


def test_rtl_rejects_bad_models():
    m, oc, _, _ = _random_case((16, 8, 4), 1, "none")
    with pytest.raises(ConfigError, match="in_lanes"):
        OnChipTrainer(m, oc, in_lanes=0)
    with pytest.raises(ConfigError, match="in_lanes"):
        OnChipTrainer(m, oc, in_lanes=17)
    with pytest.raises(ConfigError, match="windows"):
        OnChipTrainer(m, dataclasses.replace(oc, windows=()))
    with pytest.raises(ConfigError, match="pe = 3 must divide"):
        OnChipTrainer(m, oc, fold=TrainerFold(((3, 16), (1, 8))))
    with pytest.raises(ConfigError, match="simd = 5 must divide"):
        OnChipTrainer(m, oc, fold=TrainerFold(((1, 5), (1, 8))))
    m.acc = None
    with pytest.raises(ConfigError, match="accumulators"):
        OnChipTrainer(m, oc)
    with pytest.raises(TypeError):
        OnChipTrainer("model.safetensors", oc)  # type: ignore[arg-type]
    t = ModelConfig.mlp([16, 4], flip=_flip("none"))
    t = dataclasses.replace(t, layers=(dataclasses.replace(t.layers[0], weights="ternary"),))
    with pytest.raises(ConfigError, match="binary"):
        OnChipTrainer(Model.random(t, 0), OnChipConfig(windows=()))


# -- Verilator: whole runs, K >= 200 -------------------------------------------------------------


def _digits_case(swarm: int, pretrain: int):
    """Digits, the on-chip rule's own initial state (thresholds and windows from data), with
    ``pretrain`` golden steps first so the RTL starts from a trained state."""
    from bitswarm.train import load_dataset
    from bitswarm.train.rule_onchip import initial_onchip_model

    ds = load_dataset("digits")
    flip = dataclasses.replace(_flip("stochastic" if swarm > 1 else "none", acc_width=8, threshold=12, leak=0),
                               fire_prob=64)
    mc = ModelConfig.mlp([64, 16, 10], input_shape=(8, 8), swarm=swarm, flip=flip)
    m, oc = initial_onchip_model(mc, torch.from_numpy(ds.x_train), 0)
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    if pretrain:
        onchip_train(oc, m, x[:pretrain], y[:pretrain])
    return m, oc, x[pretrain:pretrain + 250], y[pretrain:pretrain + 250]


def _verilator_check(m, oc, xs, ys, *, in_lanes=None, idle=0, bp=0, fold=None):
    from bitswarm.sim.bulk import VerilatorTrainer

    gm, g_pred, g_err, res = _golden(m, oc, xs, ys)
    assert sum(sum(r.flips) for r in res) > 0
    vt = VerilatorTrainer(m, oc, in_lanes=in_lanes, fold=_fold(fold))
    run = vt.train(xs.numpy(), ys.numpy(), idle_pct=idle, bp_pct=bp, seed=3)
    assert (run.preds == g_pred).all() and (run.errors == g_err).all()
    assert vt.export().equal(gm)
    virt = VirtualTrainer(m, oc)
    virt.train(xs.numpy().reshape(len(ys), -1), ys.numpy())
    assert virt.export().equal(gm)
    if not idle and not bp:
        assert set(run.intervals.tolist()) == {cycles_per_sample(m.cfg, vt.p, vt.fold).total}
    return vt, gm


@pytest.mark.verilator
def test_verilator_trajectory_digits_s1_trained_start():
    m, oc, xs, ys = _digits_case(1, pretrain=300)
    vt, gm = _verilator_check(m, oc, xs, ys)
    # continue from the read-back state: another 200 samples, still bit-exact
    from bitswarm.train import load_dataset

    ds = load_dataset("digits")
    x2, y2 = torch.from_numpy(ds.x_train[600:800]), torch.from_numpy(ds.y_train[600:800])
    vt.train(x2.numpy(), y2.numpy())
    onchip_train(oc, gm, x2, y2)
    assert vt.export().equal(gm) and vt.samples == 450


@pytest.mark.verilator
def test_verilator_trajectory_digits_s4_stochastic_folded():
    """S = 4 with LFSR draws, pe > 1 on both layers, simd < N (4 and 2 words per row)."""
    m, oc, xs, ys = _digits_case(4, pretrain=0)
    _verilator_check(m, oc, xs, ys, in_lanes=16, fold=((4, 16), (5, 8)))


@pytest.mark.slow
@pytest.mark.verilator
def test_verilator_trajectory_folded_three_layers_stochastic_multibit():
    m, oc, xs, ys = _random_case((40, 12, 8, 6), 2, "stochastic", input_bits=8, seed=7, k=220, hs=2)
    _verilator_check(m, oc, xs, ys, in_lanes=7, fold=((4, 20), (4, 4), (2, 8)))


@pytest.mark.verilator
def test_verilator_trajectory_random_two_hidden_binarized_with_stalls():
    m, oc, xs, ys = _random_case((40, 12, 8, 6), 1, "additive", input_bits=1, seed=5, k=220, hs=2)
    _verilator_check(m, oc, xs, ys, in_lanes=7, idle=20, bp=30)


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.parametrize("swarm,noise,bits,fold", [(4, "additive", 8, None), (1, "stochastic", 3, None),
                                                   (4, "none", 1, None), (2, "stochastic", 8, ((10, 15), (5, 20))),
                                                   (1, "additive", 1, ((4, 30), (2, 4)))])
def test_verilator_trajectory_random_long(swarm, noise, bits, fold):
    m, oc, xs, ys = _random_case((30, 20, 10), swarm, noise, input_bits=bits, seed=swarm + bits, k=600, hs=3)
    _verilator_check(m, oc, xs, ys, in_lanes=10, fold=fold)


def test_verilator_trainer_rejects_bad_labels(tmp_path):
    from bitswarm.sim.bulk import VerilatorTrainer

    m, oc, xs, ys = _random_case((16, 8, 4), 1, "none")
    vt = VerilatorTrainer(m, oc, build_root=tmp_path)
    with pytest.raises(BitswarmError, match="labels"):
        vt.train(xs.numpy(), np.full(len(xs), 4))
    with pytest.raises(BitswarmError, match="as many"):
        vt.train(xs.numpy(), ys.numpy()[:3])
    assert not vt.binary.exists()  # nothing built for bad input


def test_verilog_component_fold(tmp_path):
    """``bitswarm verilog --component onchip-trainer --fold PExSIMD,...``: the fold reaches the
    RTL (the debug word port) and an illegal fold is one error line."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "bitswarm", "verilog", "--component", "onchip-trainer", "--param",
           "arch=16-8-4", "-o", str(tmp_path)]
    r = subprocess.run([*cmd, "--fold", "2x8,4x4"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "onchip_trainer.json").read_text())["params"]["fold"] == "2x8,4x4"
    assert "dbg_word" in (tmp_path / "onchip_trainer.v").read_text()
    r = subprocess.run([*cmd, "--fold", "3x8,4x4", "--overwrite"], capture_output=True, text=True, check=False)
    assert r.returncode != 0 and "pe = 3 must divide" in r.stderr and "Traceback" not in r.stderr
