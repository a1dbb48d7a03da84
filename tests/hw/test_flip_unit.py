# amaranth: UnusedElaboratable=no
"""bitswarm.hw.flip_unit: constructor checks, Amaranth simulator and Verilator against golden."""

import pytest
import torch
from amaranth.hdl import Fragment, signed
from amaranth.lib import data
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.flip import FlipRuleConfig
from bitswarm.golden.lfsr import LFSRConfig
from bitswarm.hw.flip_unit import FlipUnit, build
from bitswarm.sim.verilator import BUILD_ROOT, run_cocotb

from .bench import Multi, amaranth_run, cocotb_outcomes, golden_mutant, lint_warnings
from .cocotb_flip_unit import (
    PATTERNS,
    LeakOffByOne,
    NoForwarding,
    ThresholdPlusOne,
    flip_bench,
    make,
)


def _p(**kw):
    base = {"acc_width": 8, "leak_shift": 0, "threshold": 4, "refractory": 0, "noise": "none",
            "fire_prob": 1, "lfsr_width": 16, "lfsr_seed": 0xACE1, "draw_bits": 2,
            "rows": 4, "lanes": 4, "seed": 1}
    return {**base, **kw}


#: Parameter sets (Verilator and Amaranth simulator). Together: acc_width 2, 5, 8 and 16;
#: leak 0, 1, 3 and A-1; all three noise modes; draw_bits 1, 2 and 3; K = 1 and K > 1; R = 1
#: (the read-after-write hazard at the step boundary), 2, 3 and 4; threshold at acc_max,
#: refractory at acc_min. Thresholds are reachable under the leak (a +1 vote stream settles
#: at 2**leak_shift), so weights do flip.
PARAMS = [
    _p(acc_width=2, threshold=1, refractory=-2, rows=1, lanes=1, seed=1),
    _p(acc_width=16, leak_shift=3, threshold=6, refractory=-5, noise="additive",
       lfsr_width=17, lfsr_seed=0x1F00D, draw_bits=3, rows=4, lanes=5, seed=2),
    _p(acc_width=8, leak_shift=1, threshold=2, refractory=-3, noise="stochastic", fire_prob=3,
       lfsr_width=8, lfsr_seed=0x5A, draw_bits=2, rows=3, lanes=8, seed=3),
    _p(acc_width=5, leak_shift=4, threshold=15, refractory=-16, noise="additive",
       lfsr_width=32, lfsr_seed=0xDEADBEEF, draw_bits=1, rows=2, lanes=3, seed=4),
]
#: Amaranth simulator only: the remaining corners.
SIM_ONLY = [
    _p(acc_width=2, threshold=1, refractory=-1, noise="additive", draw_bits=1, rows=1,
       lanes=6, seed=5),  # R = 1 with K > 1 and noise
    _p(acc_width=3, leak_shift=2, threshold=2, refractory=-4, noise="stochastic",
       fire_prob=4, draw_bits=2, rows=5, lanes=2, seed=6),  # fire_prob = 2**b: always
    _p(acc_width=6, leak_shift=0, threshold=20, refractory=-32, noise="additive",
       lfsr_width=9, lfsr_seed=3, draw_bits=9, rows=2, lanes=4, seed=7),  # draw_bits = width
    _p(acc_width=4, leak_shift=1, threshold=1, refractory=0, noise="stochastic", fire_prob=1,
       lfsr_width=12, lfsr_seed=5, draw_bits=3, rows=2, lanes=1, seed=8),
]


def _id(p):
    return f"a{p['acc_width']}_l{p['leak_shift']}_{p['noise'][:5]}_r{p['rows']}_k{p['lanes']}"


IDS = [_id(p) for p in PARAMS]


def test_init():
    cfg = FlipRuleConfig(acc_width=6, threshold=3, refractory=-2, noise="additive",
                         lfsr=LFSRConfig(width=12, seed=7, draw_bits=3))
    u = FlipUnit(cfg, rows=5, lanes=3, init_w=[[1, 0, 1]] * 5,
                 init_acc=torch.full((5, 3), -32, dtype=torch.int32))
    Fragment.get(u, None)
    assert (u.config, u.rows, u.lanes, u.acc_width, u.addr_width) == (cfg, 5, 3, 6, 3)
    assert u.i_stream.payload.shape() == data.StructLayout(
        {"votes": data.ArrayLayout(signed(2), 3)})
    assert u.o_stream.payload.shape() == data.StructLayout({"row": 3, "fired": 3})
    row = data.StructLayout({"w": 3, "acc": data.ArrayLayout(signed(6), 3)})
    assert u.dbg_rd.data.shape() == row and u.dbg_wr.data.shape() == row
    assert len(u.dbg_rd.addr) == 3 and u.lfsr_state.shape().width == 12
    assert u.lfsr_state.init == 7
    b = build()
    Fragment.get(b, None)  # created in hw/flip_unit.py: use it
    assert (b.rows, b.lanes, b.acc_width, b.config.noise) == (4, 8, 8, "none")
    b = build(rows=1, lanes=1, noise="stochastic", fire_prob=2)
    Fragment.get(b, None)
    assert b.addr_width == 1


def test_init_wrong_config():
    with pytest.raises(TypeError, match=r"config must be a FlipRuleConfig, not dict"):
        FlipUnit({"acc_width": 8}, rows=1, lanes=1)
    with pytest.raises(ConfigError, match=r"flip.threshold must be in 1..7, not 8"):
        build(acc_width=4, threshold=8)
    with pytest.raises(ConfigError, match=r"flip.noise must be one of"):
        build(noise="gaussian")


def test_init_wrong_geometry():
    cfg = FlipRuleConfig()
    with pytest.raises(TypeError, match=r"rows must be an integer, not '4'"):
        FlipUnit(cfg, rows="4", lanes=1)
    with pytest.raises(TypeError, match=r"lanes must be an integer, not 2.5"):
        FlipUnit(cfg, rows=4, lanes=2.5)
    with pytest.raises(ConfigError, match=r"rows must be in 1..1048576, not 0"):
        FlipUnit(cfg, rows=0, lanes=1)
    with pytest.raises(ConfigError, match=r"lanes must be in 1..1024, not 1025"):
        FlipUnit(cfg, rows=1, lanes=1025)


def test_init_wrong_init():
    cfg = FlipRuleConfig(acc_width=4, threshold=3)  # accumulators -8..7
    with pytest.raises(ConfigError, match=r"init_w must have shape 2 x 3"):
        FlipUnit(cfg, rows=2, lanes=3, init_w=[[0, 1, 0]])
    with pytest.raises(ConfigError, match=r"init_w values must lie in 0..1, found 2"):
        FlipUnit(cfg, rows=1, lanes=3, init_w=[[0, 1, 2]])
    with pytest.raises(TypeError, match=r"init_w must hold integers, found 0.5"):
        FlipUnit(cfg, rows=1, lanes=2, init_w=[[0, 0.5]])
    with pytest.raises(TypeError, match=r"init_acc must be a 1 x 2 nested sequence of integers"):
        FlipUnit(cfg, rows=1, lanes=2, init_acc=5)
    with pytest.raises(ConfigError, match=r"init_acc values must lie in -8..7, found 8"):
        FlipUnit(cfg, rows=1, lanes=2, init_acc=[[0, 8]])


@pytest.mark.parametrize("p", PARAMS + SIM_ONLY, ids=IDS + [_id(p) for p in SIM_ONLY])
@pytest.mark.parametrize("src,sink,load", [PATTERNS[0] + (False,), PATTERNS[1] + (True,),
                                           PATTERNS[3] + (True,)])
def test_sim_matches_golden(p, src, sink, load):
    amaranth_run(make(p), lambda sim: flip_bench(sim, p, src, sink, steps=10, load=load))


def test_sim_full_throughput():
    """R rows x S steps at one row per cycle: the last flip mask leaves 2 cycles after the
    last row was accepted; no stall on the way (asserted in the bench)."""
    p = PARAMS[2]

    async def bench(sim):
        cycles = await flip_bench(sim, p, "full", "full", steps=8, tail=0)
        assert cycles == 8 * p["rows"] + 2

    amaranth_run(make(p), bench)


@pytest.mark.parametrize("mutant", ["flip_threshold", "flip_leak"])
def test_sim_golden_mutant_fails(mutant):
    p = PARAMS[1]
    with golden_mutant(mutant), pytest.raises(AssertionError, match="golden"):
        amaranth_run(make(p), lambda sim: flip_bench(sim, p, "random", "random", steps=10))


@pytest.mark.parametrize("p,broken", [(PARAMS[1], ThresholdPlusOne), (PARAMS[2], LeakOffByOne),
                                      (PARAMS[0], NoForwarding), (SIM_ONLY[0], NoForwarding)],
                         ids=["threshold", "leak", "no_forward_k1", "no_forward_k6"])
def test_sim_broken_component_fails(p, broken):
    with pytest.raises(AssertionError, match="golden"):
        amaranth_run(make(p, broken),
                     lambda sim: flip_bench(sim, p, "full", "full", steps=10))


def test_sim_no_forward_mutant_passes_with_gaps():
    """The hazard is real and only where documented: without transparent reads, R = 1 still
    passes when there is a bubble between consecutive rows (a source idle every other cycle)."""
    p = PARAMS[0]
    amaranth_run(make(p, NoForwarding),
                 lambda sim: flip_bench(sim, p, "10", "full", steps=10, seed=9, load=True))


@pytest.mark.verilator
@pytest.mark.parametrize("p", PARAMS, ids=IDS)
def test_lint(p, tmp_path):
    assert lint_warnings(make(p), tmp_path) == []


def _multi():
    """One Verilator build: every parameter set, plus a broken instance."""
    duts = {f"p{i}": make(p) for i, p in enumerate(PARAMS)}
    duts["mut"] = make(PARAMS[2], ThresholdPlusOne)
    params = {"instances": {f"p{i}": p for i, p in enumerate(PARAMS)}, "mutant": ["mut", PARAMS[2]]}
    return Multi(duts), params


@pytest.mark.verilator
def test_verilator_matches_golden():
    dut, params = _multi()
    run_cocotb(dut, name="hw_flip_unit", test_module="tests.hw.cocotb_flip_unit", params=params,
               testcase="matches_golden")


@pytest.mark.verilator
def test_verilator_mutants_fail():
    """Same build: golden with an off-by-one threshold fails ``matches_golden``; a unit with
    the same slip in its comparator fails ``broken_component``."""
    dut, params = _multi()
    with pytest.raises(AssertionError, match="cocotb"):
        run_cocotb(dut, name="hw_flip_unit", test_module="tests.hw.cocotb_flip_unit",
                   params={**params, "golden_mutant": "flip_threshold"})
    assert cocotb_outcomes(BUILD_ROOT / "hw_flip_unit" / "results.xml") == {
        "matches_golden": False, "broken_component": False}


@pytest.mark.verilator
def test_lint_build_defaults(tmp_path):
    """What `bitswarm verilog --component ...` emits with default parameters lints clean."""
    assert lint_warnings(build(), tmp_path) == []
