# amaranth: UnusedElaboratable=no
"""MACArray: construction, Amaranth-simulator runs against golden ``preact``, Verilator runs
(cocotb, ``tests/hw/cocotb_mac_array.py``) with random idle input and output backpressure,
the cycle formula, and mutation checks (a broken golden and a broken DUT must fail)."""

from __future__ import annotations

import functools
import random

import numpy as np
import pytest
import torch
from amaranth.hdl import Fragment, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
from amaranth.sim import Simulator
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.layer import LayerConfig, preact, preact_packed
from bitswarm.hw.mac_array import MACArray, build
from bitswarm.hw.plan import LayerFold


def _case(n_in, n_out, swarm=1, input_bits=1, weights="binary", seed=0, batch=3):
    cfg = LayerConfig(n_in=n_in, n_out=n_out, swarm=swarm, input_bits=input_bits, weights=weights)
    g = torch.Generator().manual_seed(seed)
    if weights == "binary":
        w = torch.randint(0, 2, cfg.weight_shape(), generator=g, dtype=torch.uint8)
    else:
        w = torch.randint(-1, 2, cfg.weight_shape(), generator=g, dtype=torch.int8)
    x = torch.randint(0, 1 << input_bits, (batch, n_in), generator=g, dtype=torch.uint8)
    return cfg, w, x


def simulate(dut: MACArray, x, *, p_idle=0.0, p_stall=0.0, seed=0):
    """Run ``dut`` in the Amaranth simulator on vectors ``x``; returns (groups [batch, NF, PE],
    per-transfer (group, last) list, cycle of first input handshake, cycle of last output)."""
    slices = dut.to_slices(x)
    batch = slices.shape[0]
    n_out = batch * dut.nf
    got, meta, times = [], [], {}
    rng_i, rng_o = random.Random(seed), random.Random(seed + 1)

    async def producer(ctx):
        cyc = 0
        for v in range(batch):
            for s in range(dut.sf):
                while rng_i.random() < p_idle:
                    await ctx.tick()
                    cyc += 1
                ctx.set(dut.i_stream.valid, 1)
                ctx.set(dut.i_stream.payload.x, [int(e) for e in slices[v, s]])
                while True:
                    _, _, ready = await ctx.tick().sample(dut.i_stream.ready)
                    cyc += 1
                    if ready:
                        break
                times.setdefault("first_in", cyc - 1)
                ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        cyc = 0
        while len(got) < n_out:
            ready = rng_o.random() >= p_stall
            ctx.set(dut.o_stream.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload)
            cyc += 1
            if valid and ready:
                got.append([int(z) for z in payload.z])
                meta.append((int(payload.group), int(payload.last)))
                times["last_out"] = cyc - 1
        for _ in range(5):  # nothing more comes out
            ctx.set(dut.o_stream.ready, 1)
            _, _, valid = await ctx.tick().sample(dut.o_stream.valid)
            assert not valid, "extra output transfer"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return np.array(got, dtype=np.int64).reshape(batch, dut.nf, dut.pe), meta, times


# -- construction ------------------------------------------------------------------------------
def test_init():
    cfg, w, _ = _case(37, 5, swarm=4)
    dut = MACArray(cfg, w, pe=2, simd=8, pipeline=2)
    assert (dut.pe, dut.simd, dut.pipeline, dut.sf, dut.nf) == (2, 8, 2, 5, 3)
    assert dut.tree_depth == 4  # 32 bits: 8 LUT4 popcounts, then 3 adder levels
    assert dut.latency == 5
    assert dut.cycles_per_vector() == 3 * 1 * 5
    assert dut.cycles(4) == 5 + 2 + 4 * 15 + 5  # SF slices fill the first bank (+2: write,
    # the registered buffer read)
    assert dut.fold == LayerFold(2, 8, 2)
    assert MACArray(cfg, w, LayerFold(2, 8, 2, "bram")).fold.mem == "bram"
    assert dut.cfg is cfg
    assert len(dut.i_stream.payload.x.as_value()) == 8
    assert dut.o_stream.payload.z[0].shape() == signed(cfg.z_width)
    cfg8, w8, _ = _case(20, 3, input_bits=8)
    dut8 = MACArray(cfg8, w8)  # defaults: SIMD = N, PE = 1, no pipeline registers
    assert (dut8.simd, dut8.pe, dut8.pipeline, dut8.cycles_per_vector()) == (20, 1, 0, 24)
    assert len(dut8.i_stream.payload.x.as_value()) == 160
    dflt = build()  # created inside hw/mac_array.py: elaborate it so it counts as used
    assert (dflt.cfg.n_in, dflt.pe, dflt.simd, dflt.pipeline) == (64, 4, 16, dflt.tree_depth)
    Fragment.get(dflt, None)


def test_init_wrong_cfg():
    with pytest.raises(TypeError, match=r"cfg must be a LayerConfig, not \{'n_in': 4\}"):
        MACArray({"n_in": 4}, np.zeros((1, 1, 4)))


@pytest.mark.parametrize(
    ("kw", "exc", "msg"),
    [
        ({"pe": 0}, ConfigError, r"pe must be in 1\.\.5 for this layer, not 0"),
        ({"pe": 6}, ConfigError, r"pe must be in 1\.\.5 for this layer, not 6"),
        ({"pe": 2.0}, TypeError, r"pe must be an integer, not 2\.0"),
        ({"simd": 38}, ConfigError, r"simd must be in 1\.\.37 for this layer, not 38"),
        ({"simd": True}, TypeError, r"simd must be an integer, not True"),
        ({"simd": 8, "pipeline": 5}, ConfigError, r"pipeline must be in 0\.\.4 .*, not 5"),
        ({"pipeline": -1}, ConfigError, r"pipeline must be in 0\.\.\d+ .*, not -1"),
        ({"pipeline": "2"}, TypeError, r"pipeline must be an integer, not '2'"),
    ],
)
def test_init_wrong_params(kw, exc, msg):
    cfg, w, _ = _case(37, 5, swarm=4)
    with pytest.raises(exc, match=msg):
        MACArray(cfg, w, **kw)


def test_init_wrong_weights():
    cfg, w, _ = _case(37, 5, swarm=4)
    with pytest.raises(ConfigError, match=r"weights must have shape \(4, 5, 37\), found \(5, 37\)"):
        MACArray(cfg, w[0])
    with pytest.raises(ConfigError, match=r"binary weights must be integer bits 0/1"):
        MACArray(cfg, w * 2)
    with pytest.raises(ConfigError, match=r"binary weights must be integer bits 0/1"):
        MACArray(cfg, w.float())
    cfg_t, wt, _ = _case(9, 2, weights="ternary")
    with pytest.raises(ConfigError, match=r"ternary weights must be integer trits -1/0/\+1"):
        MACArray(cfg_t, wt * 2)


def test_init_wrong_build():
    with pytest.raises(ConfigError, match=r"layer.swarm must be one of"):
        build(swarm=3)
    with pytest.raises(ConfigError, match=r"simd must be an integer in 1\.\.64, not 65"):
        build(simd=65)


# -- Amaranth simulator vs golden -------------------------------------------------------------
SIM_CASES = [
    # (n_in, n_out, swarm, input_bits, weights, pe, simd, pipeline)
    (37, 5, 4, 1, "binary", 2, 8, 2),       # N % SIMD != 0, M % PE != 0
    (20, 3, 1, 8, "binary", 1, 20, 0),      # SIMD = N, PE = 1, 8-bit pixels, no tree regs
    (19, 7, 32, 3, "binary", 3, 4, 6),      # S = 32, fully pipelined
    (1, 1, 1, 1, "binary", 1, 1, 0),        # the smallest layer
    (13, 4, 1, 1, "ternary", 4, 5, 1),      # ternary ±1 inputs, PE = M
    (13, 4, 1, 8, "ternary", 3, 13, 3),     # ternary pixels
    (64, 2, 2, 2, "binary", 2, 64, 1),      # one step per group
]


@pytest.mark.parametrize("case", SIM_CASES, ids=lambda c: "-".join(map(str, c)))
def test_sim_matches_golden(case):
    n_in, n_out, swarm, bits, kind, pe, simd, pipe = case
    cfg, w, x = _case(n_in, n_out, swarm, bits, kind, seed=sum(case[:4]))
    dut = MACArray(cfg, w, pe=pe, simd=simd, pipeline=pipe)
    z = preact(cfg, x, w)
    assert np.array_equal(z.numpy(), preact_packed(cfg, x, w))
    got, meta, _ = simulate(dut, x, p_idle=0.3, p_stall=0.3, seed=len(SIM_CASES))
    np.testing.assert_array_equal(got, dut.to_groups(z))
    assert meta == [(g, int(g == dut.nf - 1)) for _ in range(x.shape[0]) for g in range(dut.nf)]


@pytest.mark.parametrize("case", SIM_CASES[:3] + SIM_CASES[4:5], ids=lambda c: "-".join(map(str, c)))
def test_sim_cycles(case):
    """At full rate the RTL takes exactly ``cycles(V)`` cycles (the cycle model's contract)."""
    n_in, n_out, swarm, bits, kind, pe, simd, pipe = case
    cfg, w, x = _case(n_in, n_out, swarm, bits, kind, seed=1, batch=3)
    dut = MACArray(cfg, w, pe=pe, simd=simd, pipeline=pipe)
    got, _, t = simulate(dut, x)
    np.testing.assert_array_equal(got, dut.to_groups(preact(cfg, x, w)))
    assert t["last_out"] - t["first_in"] + 1 == dut.cycles(3)


def test_sim_extremes():
    """All-ones / all-zeros inputs and weights reach ±z_bound exactly."""
    cfg = LayerConfig(n_in=10, n_out=2, swarm=8, input_bits=8)
    w = torch.zeros(8, 2, 10, dtype=torch.uint8)
    w[:, 0] = 1
    x = torch.full((2, 10), 255, dtype=torch.uint8)
    x[1] = 0
    dut = MACArray(cfg, w, pe=2, simd=3, pipeline=1)
    got, _, _ = simulate(dut, x, p_stall=0.5)
    assert got[0, 0].tolist() == [cfg.z_bound, -cfg.z_bound]
    np.testing.assert_array_equal(got, dut.to_groups(preact(cfg, x, w)))


# -- Verilator (cocotb) -----------------------------------------------------------------------
# Each set has edge widths; together: N % SIMD != 0, M % PE != 0, SIMD = N, PE = 1, PE = M,
# S in {1, 4, 32}, input_bits 1 and 8, pipeline 0 / 1 / 2 / full, binary and ternary.
VL_CASES = {
    "b1_s4_fold": (37, 5, 4, 1, "binary", 2, 8, 2),
    "b8_s1_flat": (20, 3, 1, 8, "binary", 1, 20, 0),
    "b8_s32_full": (19, 7, 32, 8, "binary", 3, 2, 5),
    "ternary_b8": (13, 4, 1, 8, "ternary", 4, 5, 1),
}
class _NoMask(MACArray):
    """Fault injection: the last slice's lanes past N are not masked."""

    def _lane_mask(self, m, ctl1):
        lane_ok = Signal(self.simd)
        m.d.comb += lane_ok.eq((1 << self.simd) - 1)
        return lane_ok


class _NoStall(MACArray):
    """Fault injection: the pipeline ignores a full output buffer (drops results)."""

    def _advance(self, m, adv, nxt_count):
        m.d.sync += adv.eq(1)


#: Deliberately broken DUTs (test subclasses) for the mutation check.
VL_MUTANTS = {"mutant_mask": ("b1_s4_fold", _NoMask), "mutant_stall": ("b1_s4_fold", _NoStall)}
VL_BATCH = 12


class _Bench(wiring.Component):
    """All Verilator cases side by side in one top (ports ``<case>__i_stream__valid`` ...).

    One Verilator build costs ~40 s on the 2-core machine, most of it compiling the Verilator
    and cocotb runtime, so the cases share a single build (instead of one build directory per
    parameter set) to keep this file's Verilator tests well under the 4-minute budget.
    """

    def __init__(self):
        self.duts = {}
        for name, case in VL_CASES.items():
            self.duts[name] = self._dut(case)
        for name, (base, mutant) in VL_MUTANTS.items():
            self.duts[name] = self._dut(VL_CASES[base], mutant)
        super().__init__({name: Out(d.signature) for name, d in self.duts.items()})

    @staticmethod
    def _dut(case, cls=MACArray):
        n_in, n_out, swarm, bits, kind, pe, simd, pipe = case
        cfg, w, _ = _case(n_in, n_out, swarm, bits, kind, seed=7, batch=VL_BATCH)
        return cls(cfg, w, pe=pe, simd=simd, pipeline=pipe)

    def elaborate(self, platform):
        m = Module()
        for name, dut in self.duts.items():
            m.submodules[name] = dut
            wiring.connect(m, wiring.flipped(getattr(self, name)), dut)
        return m


@functools.cache
def _bench() -> _Bench:
    return _Bench()


def _vl_run(names, *, golden_mutant=False):
    """Run the cocotb bench on the DUTs ``names`` of the shared build (one simulator run)."""
    from bitswarm.sim.verilator import run_cocotb

    cases = {}
    for name in names:
        n_in, n_out, swarm, bits, kind, pe, simd, pipe = VL_CASES[VL_MUTANTS.get(name, (name,))[0]]
        cfg, w, x = _case(n_in, n_out, swarm, bits, kind, seed=7, batch=VL_BATCH)
        cases[name] = {
            "cfg": cfg.to_dict(), "pe": pe, "simd": simd, "weights": w.tolist(), "x": x.tolist(),
            "cycles": _bench().duts[name].cycles(VL_BATCH), "golden_mutant": golden_mutant,
        }
    return run_cocotb(_bench(), name="mac_array", test_module="tests.hw.cocotb_mac_array",
                      params={"cases": cases})


@pytest.mark.verilator
def test_sim_verilator():
    """Every case x every flow pattern (full rate with the exact cycle count, random idle input,
    heavy backpressure, both) against golden, in one Verilator run."""
    _vl_run(list(VL_CASES))


@pytest.mark.verilator
def test_sim_verilator_broken_golden_fails():
    """Mutation check: the same DUT against a deliberately wrong reference must fail."""
    with pytest.raises(AssertionError, match="cocotb"):
        _vl_run(["b1_s4_fold"], golden_mutant=True)


@pytest.mark.verilator
@pytest.mark.parametrize("name", list(VL_MUTANTS))
def test_sim_verilator_broken_dut_fails(name):
    """Mutation check: a DUT without the tail mask, or one that ignores backpressure, fails."""
    with pytest.raises(AssertionError, match="cocotb"):
        _vl_run([name])


# -- synthesis (make synth-report) ------------------------------------------------------------
@pytest.mark.synth
def test_synth_popcount256(tmp_path):
    """The toolchain reference case, a fully pipelined 256-input popcount (N = SIMD = 256,
    PE = 1), fits the UP5K within the reference LC count and comes close to its Fmax (TOOLCHAIN.md:
    1,416 LCs at ~84 MHz on the UP5K, ~320 MHz on the ECP5-85F)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "synth_report.py"
    spec = importlib.util.spec_from_file_location("synth_report", path)
    sr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sr)
    _, name, params, _ = next(c for c in sr.CASES if c[0] == "popcount256")
    res = sr.run_case("popcount256", name, params, ["ice40", "ecp5"], tmp_path)
    ice, ecp = res["devices"]["ice40"]["pnr"], res["devices"]["ecp5"]["pnr"]
    assert ice["cells"] <= 1416, ice  # shim included
    assert ice["fmax_mhz"] >= 75, ice
    assert ecp["fmax_mhz"] >= 240, ecp  # 256-308 MHz seen, depending on placement
