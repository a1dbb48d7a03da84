# amaranth: UnusedElaboratable=no
"""bitswarm.hw.argmax: constructor checks, Amaranth simulator and Verilator against golden."""

import pytest
from amaranth.hdl import Fragment, signed
from amaranth.lib import data
from bitswarm.golden.errors import ConfigError
from bitswarm.hw.argmax import Argmax, build
from bitswarm.sim.verilator import BUILD_ROOT, run_cocotb

from .bench import Multi, amaranth_run, cocotb_outcomes, golden_mutant, lint_warnings
from .cocotb_argmax import PATTERNS, argmax_bench, make

#: Parameter sets: W = 1 (scores -1/0 only: ties everywhere), one lane; W = 3 with 10 classes
#: in 4-lane beats (the last beat has 2 don't-care lanes); W = 32, 16 classes in one beat.
PARAMS = [
    {"width": 1, "classes": 3, "lanes": 1},
    {"width": 3, "classes": 10, "lanes": 4},
    {"width": 32, "classes": 16, "lanes": 16},
]
IDS = [f"w{p['width']}_c{p['classes']}_p{p['lanes']}" for p in PARAMS]
SIM_ONLY = [{"width": 8, "classes": 1, "lanes": 1}, {"width": 5, "classes": 7, "lanes": 3}]


def test_init():
    a = Argmax(16, 10, lanes=4)
    assert (a.width, a.classes, a.lanes, a.beats) == (16, 10, 4, 3)
    assert a.i_stream.payload.shape() == data.StructLayout(
        {"scores": data.ArrayLayout(signed(16), 4)})
    assert a.o_stream.payload.shape() == data.StructLayout({"cls": 4, "score": signed(16)})
    assert Argmax(8, 1).o_stream.payload.shape() == data.StructLayout({"cls": 1, "score": signed(8)})
    b = build()
    Fragment.get(b, None)  # created in hw/argmax.py: use it
    assert (b.width, b.classes, b.lanes) == (16, 10, 1)


def test_init_wrong_types():
    with pytest.raises(TypeError, match=r"width must be an integer, not '16'"):
        Argmax("16", 10)
    with pytest.raises(TypeError, match=r"classes must be an integer, not 10.0"):
        Argmax(16, 10.0)
    with pytest.raises(TypeError, match=r"lanes must be an integer, not None"):
        Argmax(16, 10, lanes=None)


def test_init_wrong_values():
    with pytest.raises(ConfigError, match=r"width must be in 1..64, not 0"):
        Argmax(0, 10)
    with pytest.raises(ConfigError, match=r"classes must be in 1..65536, not 0"):
        Argmax(8, 0)
    with pytest.raises(ConfigError, match=r"lanes must be in 1..classes = 10, not 11"):
        Argmax(8, 10, lanes=11)


@pytest.mark.parametrize("p", PARAMS + SIM_ONLY,
                         ids=IDS + [f"w{p['width']}_c{p['classes']}_p{p['lanes']}" for p in SIM_ONLY])
@pytest.mark.parametrize("src,sink", PATTERNS[:3])
def test_sim_matches_golden(p, src, sink):
    amaranth_run(make(p), lambda sim: argmax_bench(sim, p, src, sink, samples=30))


def test_sim_full_throughput():
    """One beat per cycle, latency 1 after the last beat: S samples of B beats take
    S * B + 1 cycles."""
    p = PARAMS[1]  # 3 beats per sample

    async def bench(sim):
        assert await argmax_bench(sim, p, "full", "full", samples=20, tail=0) == 20 * 3 + 1

    amaranth_run(make(p), bench)


def test_sim_golden_mutant_fails():
    p = PARAMS[1]
    with golden_mutant("argmax_last"), pytest.raises(AssertionError, match="golden"):
        amaranth_run(make(p), lambda sim: argmax_bench(sim, p, "random", "random", 30))


@pytest.mark.parametrize("p", PARAMS[1:], ids=IDS[1:])
def test_sim_broken_component_fails(p):
    with pytest.raises(AssertionError, match="golden"):
        amaranth_run(make(p, broken=True),
                     lambda sim: argmax_bench(sim, p, "random", "random", 30))


@pytest.mark.verilator
@pytest.mark.parametrize("p", PARAMS, ids=IDS)
def test_lint(p, tmp_path):
    assert lint_warnings(make(p), tmp_path) == []


def _multi():
    """One Verilator build: every parameter set, plus a broken instance."""
    duts = {f"p{i}": make(p) for i, p in enumerate(PARAMS)}
    duts["mut"] = make(PARAMS[1], broken=True)
    params = {"instances": {f"p{i}": p for i, p in enumerate(PARAMS)}, "mutant": ["mut", PARAMS[1]]}
    return Multi(duts), params


@pytest.mark.verilator
def test_verilator_matches_golden():
    dut, params = _multi()
    run_cocotb(dut, name="hw_argmax", test_module="tests.hw.cocotb_argmax", params=params,
               testcase="matches_golden")


@pytest.mark.verilator
def test_verilator_mutants_fail():
    """Same build: golden with the highest-index tie rule fails ``matches_golden``; a unit with
    the same slip (``>=`` in its comparators) fails ``broken_component``."""
    dut, params = _multi()
    with pytest.raises(AssertionError, match="cocotb"):
        run_cocotb(dut, name="hw_argmax", test_module="tests.hw.cocotb_argmax",
                   params={**params, "golden_mutant": "argmax_last"})
    assert cocotb_outcomes(BUILD_ROOT / "hw_argmax" / "results.xml") == {
        "matches_golden": False, "broken_component": False}


@pytest.mark.verilator
def test_lint_build_defaults(tmp_path):
    """What `bitswarm verilog --component ...` emits with default parameters lints clean."""
    assert lint_warnings(build(), tmp_path) == []
