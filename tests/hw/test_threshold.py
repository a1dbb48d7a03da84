# amaranth: UnusedElaboratable=no
"""bitswarm.hw.threshold: constructor checks, Amaranth simulator and Verilator against golden."""

import pytest
import torch
from amaranth.hdl import Fragment, signed
from amaranth.lib import data
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.layer import LayerConfig
from bitswarm.hw.threshold import Threshold, build
from bitswarm.sim.verilator import BUILD_ROOT, run_cocotb

from .bench import Multi, amaranth_run, cocotb_outcomes, golden_mutant, lint_warnings
from .cocotb_threshold import PATTERNS, layer_of, make, threshold_bench

#: Parameter sets: z_width 3 (N=1, one lane, one fold), 11 bits with 4 lanes x 3 folds and
#: swarm 4, and z_width 31, the largest a LayerConfig allows (N=65536, S=32, 8-bit inputs), 8 lanes.
PARAMS = [
    {"n_in": 1, "n_out": 1, "swarm": 1, "input_bits": 1, "lanes": 1, "seed": 1},
    {"n_in": 100, "n_out": 12, "swarm": 4, "input_bits": 1, "lanes": 4, "seed": 2},
    {"n_in": 65536, "n_out": 16, "swarm": 32, "input_bits": 8, "lanes": 8, "seed": 3},
]
IDS = [f"zw{layer_of(p).z_width}_m{p['n_out']}_p{p['lanes']}" for p in PARAMS]


def test_init():
    lay = LayerConfig(n_in=100, n_out=12, swarm=4)
    t = Threshold(lay, lanes=4, theta=list(range(-6, 6)), invert=[0, 1] * 6)
    assert (t.layer, t.lanes, t.folds, t.z_width, t.theta_width) == (lay, 4, 3, 11, 10)
    assert t.theta == tuple(range(-6, 6)) and t.invert == (0, 1) * 6
    assert t.i_stream.payload.shape() == data.StructLayout(
        {"z": data.ArrayLayout(signed(11), 4)})
    assert t.o_stream.payload.shape() == data.StructLayout({"bits": 4})
    t = Threshold(lay, lanes=12, theta=torch.arange(12) - 6, invert=torch.zeros(12, dtype=torch.uint8))
    assert t.theta[0] == -6 and t.folds == 1
    assert [layer_of(p).z_width for p in PARAMS] == [3, 11, 31]
    b = build()
    Fragment.get(b, None)  # created in hw/threshold.py: use it
    assert (b.layer.n_in, b.layer.n_out, b.lanes, b.theta) == (64, 8, 1, (0,) * 8)


def test_init_wrong_layer():
    with pytest.raises(TypeError, match=r"layer must be a LayerConfig, not dict"):
        Threshold({"n_in": 4})
    with pytest.raises(ConfigError, match=r"the output layer has no invert bits"):
        Threshold(LayerConfig(4, 2, output=True), invert=[0, 1])


def test_init_wrong_lanes():
    lay = LayerConfig(4, 6)
    with pytest.raises(TypeError, match=r"lanes must be an integer, not 2.0"):
        Threshold(lay, lanes=2.0)
    with pytest.raises(ConfigError, match=r"lanes must be in 1..n_out = 6, not 7"):
        Threshold(lay, lanes=7)
    with pytest.raises(ConfigError, match=r"lanes must be in 1..n_out = 6, not 0"):
        Threshold(lay, lanes=0)
    assert Threshold(lay, lanes=4).folds == 2  # a non-dividing fold: the last one is padded


def test_init_wrong_theta_invert():
    lay = LayerConfig(4, 2)  # theta_bound 4
    with pytest.raises(ConfigError, match=r"theta must have n_out = 2 entries, found 3"):
        Threshold(lay, theta=[0, 0, 0])
    with pytest.raises(ConfigError, match=r"theta must lie in -4..4, found 5"):
        Threshold(lay, theta=[0, 5])
    with pytest.raises(TypeError, match=r"theta must be a sequence of integers, found 0.5"):
        Threshold(lay, theta=[0, 0.5])
    with pytest.raises(TypeError, match=r"theta must be a sequence of integers, not int"):
        Threshold(lay, theta=3)
    with pytest.raises(ConfigError, match=r"invert must have n_out = 2 entries, found 1"):
        Threshold(lay, invert=[1])
    with pytest.raises(ConfigError, match=r"invert must be 0 or 1, found 2"):
        Threshold(lay, invert=[0, 2])


@pytest.mark.parametrize("p", PARAMS, ids=IDS)
@pytest.mark.parametrize("src,sink", PATTERNS[:3])
def test_sim_matches_golden(p, src, sink):
    amaranth_run(make(p), lambda sim: threshold_bench(sim, p, src, sink, samples=20))


def test_sim_full_throughput():
    """One transfer per cycle, latency 1: N transfers take N + 1 cycles, plus one at start-up
    (the threshold ROM is read one cycle ahead, so the first edge primes it)."""
    p = PARAMS[1]  # 3 folds per sample

    async def bench(sim):
        assert await threshold_bench(sim, p, "full", "full", samples=20, tail=0) == 20 * 3 + 2

    amaranth_run(make(p), bench)


def test_sim_golden_mutant_fails():
    p = PARAMS[1]
    with golden_mutant("threshold_gt"), pytest.raises(AssertionError, match="golden"):
        amaranth_run(make(p), lambda sim: threshold_bench(sim, p, "random", "random", 20))


def test_sim_broken_component_fails():
    p = PARAMS[1]
    with pytest.raises(AssertionError, match="golden"):
        amaranth_run(make(p, broken=True),
                     lambda sim: threshold_bench(sim, p, "random", "random", 20))


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
    run_cocotb(dut, name="hw_threshold", test_module="tests.hw.cocotb_threshold", params=params,
               testcase="matches_golden")


@pytest.mark.verilator
def test_verilator_mutants_fail():
    """Same build: a broken golden rule (``>`` for ``>=``) fails ``matches_golden``, a broken
    unit (the same slip in the gateware) fails ``broken_component``."""
    dut, params = _multi()
    with pytest.raises(AssertionError, match="cocotb"):
        run_cocotb(dut, name="hw_threshold", test_module="tests.hw.cocotb_threshold",
                   params={**params, "golden_mutant": "threshold_gt"})
    assert cocotb_outcomes(BUILD_ROOT / "hw_threshold" / "results.xml") == {
        "matches_golden": False, "broken_component": False}


@pytest.mark.verilator
def test_lint_build_defaults(tmp_path):
    """What `bitswarm verilog --component ...` emits with default parameters lints clean."""
    assert lint_warnings(build(), tmp_path) == []
