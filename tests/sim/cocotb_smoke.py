"""cocotb testbench for the toolchain smoke test: a registered adder."""

import random

import cocotb
from bitswarm.sim.verilator import cocotb_params
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge


@cocotb.test()
async def add_matches_model(dut):
    p = cocotb_params()
    w = p["width"]
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    rng = random.Random(1)
    prev = None
    for _ in range(200):
        a, b = rng.randrange(1 << w), rng.randrange(1 << w)
        dut.a.value, dut.b.value = a, b
        await RisingEdge(dut.clk)
        await cocotb.triggers.ReadOnly()
        assert int(dut.s.value) == (a + b) % (1 << (w + 1))
        prev = (a, b)
        await cocotb.triggers.NextTimeStep()
    assert prev is not None
