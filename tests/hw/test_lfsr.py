# amaranth: UnusedElaboratable=no
"""bitswarm.hw.lfsr: constructor checks, Amaranth simulator and Verilator against golden."""

import pytest
from amaranth.hdl import Fragment
from amaranth.lib import data
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.lfsr import LFSRConfig
from bitswarm.hw.lfsr import LFSR, build
from bitswarm.sim.verilator import BUILD_ROOT, run_cocotb

from .bench import Multi, amaranth_run, cocotb_outcomes, golden_mutant, lint_warnings
from .cocotb_lfsr import config_of, lfsr_bench

#: Parameter sets: edge widths (8, 17, 32), draw_bits 1 and = width, lanes 1 and > 1.
PARAMS = [
    {"width": 8, "seed": 1, "draw_bits": 1, "lanes": 1},
    {"width": 17, "seed": 0x1ABCD, "draw_bits": 17, "lanes": 5},
    {"width": 32, "seed": 0xFFFFFFFF, "draw_bits": 7, "lanes": 3},
]
IDS = [f"w{p['width']}_d{p['draw_bits']}_l{p['lanes']}" for p in PARAMS]


class WrongTaps(LFSR):
    """Fault injection for the mutation checks: one feedback tap flipped (bit ``width // 2``)."""

    def _taps(self):
        return self.config.taps ^ (1 << (self.width // 2))


class LaneOffByOne(LFSR):
    """Fault injection: lane ``i`` shows the state after ``i`` steps instead of ``i + 1``."""

    def _lane_states(self, steps):
        return [self.state] + steps[:-1]


def _dut(p, cls=LFSR):
    return cls(config_of(p), lanes=p["lanes"])


def test_init():
    cfg = LFSRConfig(width=17, seed=5, draw_bits=3)
    dut = LFSR(cfg, lanes=4)
    assert (dut.config, dut.lanes, dut.width, dut.draw_bits) == (cfg, 4, 17, 3)
    assert dut.state.shape().width == 17 and dut.state.init == 5
    assert dut.o_stream.payload.shape() == data.StructLayout(
        {"draws": data.ArrayLayout(3, 4)}
    )
    d = build()
    Fragment.get(d, None)  # build() objects are created in hw/lfsr.py: use them
    assert (d.width, d.config.seed, d.draw_bits, d.lanes) == (16, 1, 8, 1)
    d = build(width=8, seed=3, draw_bits=8, lanes=2)
    Fragment.get(d, None)
    assert d.lanes == 2


def test_init_wrong_config():
    with pytest.raises(TypeError, match=r"config must be an LFSRConfig, not dict"):
        LFSR({"width": 16})


def test_init_wrong_lanes():
    with pytest.raises(TypeError, match=r"lanes must be an integer, not '2'"):
        LFSR(LFSRConfig(), lanes="2")
    with pytest.raises(TypeError, match=r"lanes must be an integer, not True"):
        LFSR(LFSRConfig(), lanes=True)
    with pytest.raises(ConfigError, match=r"lanes must be a positive integer, not 0"):
        LFSR(LFSRConfig(), lanes=0)


def test_init_wrong_build_params():
    with pytest.raises(ConfigError, match=r"lfsr.width must be an integer in 8..32, not 7"):
        build(width=7)
    with pytest.raises(ConfigError, match=r"lfsr.seed must be an integer in 1..255"):
        build(width=8, seed=256)
    with pytest.raises(ConfigError, match=r"lfsr.draw_bits must be an integer in 1..8, not 9"):
        build(width=8, draw_bits=9)


@pytest.mark.parametrize("p", PARAMS + [{"width": 16, "seed": 0xACE1, "draw_bits": 8, "lanes": 16}],
                         ids=IDS + ["w16_d8_l16"])
@pytest.mark.parametrize("sink", ["full", "random"])
def test_sim_matches_golden(p, sink):
    amaranth_run(_dut(p), lambda sim: lfsr_bench(sim, p, sink, transfers=150, seed=len(IDS)))


def test_sim_golden_mutant_fails():
    p = PARAMS[0]
    with golden_mutant("lfsr_step"), pytest.raises(AssertionError, match="golden"):
        amaranth_run(_dut(p), lambda sim: lfsr_bench(sim, p, "random", transfers=100))


@pytest.mark.parametrize("broken", [WrongTaps, LaneOffByOne], ids=["taps", "lane_order"])
def test_sim_broken_component_fails(broken):
    p = PARAMS[1]
    with pytest.raises(AssertionError, match="golden"):
        amaranth_run(_dut(p, broken), lambda sim: lfsr_bench(sim, p, "random", 100))


@pytest.mark.verilator
@pytest.mark.parametrize("p", PARAMS, ids=IDS)
def test_lint(p, tmp_path):
    assert lint_warnings(_dut(p), tmp_path) == []


def _multi():
    """One Verilator build: every parameter set, plus a broken instance."""
    duts = {f"p{i}": _dut(p) for i, p in enumerate(PARAMS)}
    duts["mut"] = _dut(PARAMS[0], WrongTaps)
    params = {"instances": {f"p{i}": p for i, p in enumerate(PARAMS)}, "mutant": ["mut", PARAMS[0]]}
    return Multi(duts), params


@pytest.mark.verilator
def test_verilator_matches_golden():
    dut, params = _multi()
    run_cocotb(dut, name="hw_lfsr", test_module="tests.hw.cocotb_lfsr", params=params,
               testcase="matches_golden")


@pytest.mark.verilator
def test_verilator_mutants_fail():
    """Same build: a broken golden rule fails ``matches_golden``, a broken LFSR (wrong taps)
    fails ``broken_component``."""
    dut, params = _multi()
    with pytest.raises(AssertionError, match="cocotb"):
        run_cocotb(dut, name="hw_lfsr", test_module="tests.hw.cocotb_lfsr",
                   params={**params, "golden_mutant": "lfsr_step"})
    assert cocotb_outcomes(BUILD_ROOT / "hw_lfsr" / "results.xml") == {
        "matches_golden": False, "broken_component": False}


@pytest.mark.verilator
def test_lint_build_defaults(tmp_path):
    """What `bitswarm verilog --component ...` emits with default parameters lints clean."""
    assert lint_warnings(build(), tmp_path) == []
