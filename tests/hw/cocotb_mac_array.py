"""cocotb testbench for :class:`bitswarm.hw.mac_array.MACArray` on Verilator.

Layered like cocotb's ``matrix_multiplier`` example: a :class:`Driver` feeds input slices with
random idle cycles, a :class:`Monitor` applies random backpressure and records output
transfers, the golden model (:func:`bitswarm.golden.layer.preact`, computed here from the
weights and inputs passed in the parameters) gives the expected transfers, and an in-order
:class:`Checker` compares every lane, ``group`` and ``last``. Each run ends by asserting that
every input was consumed, every expected output arrived, nothing extra came out, and the
checker saw no error. The full-rate run also asserts the exact cycle count
``MACArray.cycles(V)`` (passed in as ``cycles``).

Parameters (``run_cocotb(params={"cases": {prefix: case, ...}})``): several DUTs share one
top, each under its port prefix (``<prefix>__i_stream__valid`` ...); every case is tested
under every flow pattern. A case holds ``cfg`` (LayerConfig dict), ``pe``, ``simd``,
``weights`` and ``x`` (nested lists), ``cycles`` (expected full-rate cycle count) and
``golden_mutant`` (True: deliberately break the reference, for the mutation check).
"""

from __future__ import annotations

import random
from collections import deque

import cocotb
import numpy as np
import torch
from bitswarm.golden.layer import LayerConfig, preact
from bitswarm.sim.verilator import cocotb_params
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


class Geometry:
    """Port layout of the MAC array, derived from the same parameters as the component."""

    def __init__(self, p: dict):
        self.cfg = LayerConfig(**p["cfg"])
        self.pe, self.simd = p["pe"], p["simd"]
        self.sf = -(-self.cfg.n_in // self.simd)
        self.nf = -(-self.cfg.n_out // self.pe)
        self.zw = self.cfg.z_width
        self.gw = max(1, (self.nf - 1).bit_length())

    def slices(self, x: np.ndarray) -> list[int]:
        """Packed ``i_stream`` payloads, SF per vector."""
        B = self.cfg.input_bits
        pad = np.zeros((x.shape[0], self.sf * self.simd), dtype=np.int64)
        pad[:, : x.shape[1]] = x
        out = []
        for row in pad.reshape(-1, self.simd):
            out.append(sum(int(e) << (i * B) for i, e in enumerate(row)))
        return out

    def expected(self, z: np.ndarray) -> list[tuple[list[int], int, int]]:
        """Expected ``o_stream`` transfers ``(z lanes, group, last)``, in order."""
        pad = np.zeros((z.shape[0], self.nf * self.pe), dtype=np.int64)
        pad[:, : z.shape[1]] = z
        return [
            ([int(v) for v in pad[b, g * self.pe:(g + 1) * self.pe]], g, int(g == self.nf - 1))
            for b in range(z.shape[0]) for g in range(self.nf)
        ]

    def decode(self, raw: int) -> tuple[list[int], int, int]:
        lanes = []
        for p in range(self.pe):
            v = (raw >> (p * self.zw)) & ((1 << self.zw) - 1)
            lanes.append(v - (1 << self.zw) if v >> (self.zw - 1) else v)
        rest = raw >> (self.pe * self.zw)
        return lanes, rest & ((1 << self.gw) - 1), (rest >> self.gw) & 1


class Ports:
    """The DUT's stream signals by role, under an optional port-name prefix."""

    def __init__(self, dut, prefix: str = ""):
        pre = f"{prefix}__" if prefix else ""
        for role in ("i_stream__valid", "i_stream__ready", "i_stream__payload",
                     "o_stream__valid", "o_stream__ready", "o_stream__payload"):
            setattr(self, role, getattr(dut, pre + role))
        self.clk, self.rst = dut.clk, dut.rst


class Driver:
    """Drives ``i_stream``: each slice waits a random number of idle cycles (``p_idle``)."""

    def __init__(self, dut, payloads, p_idle, rng):
        self.dut, self.queue, self.p_idle, self.rng = dut, deque(payloads), p_idle, rng
        self.cur = None
        self.handshakes = []  # cycle of each accepted slice

    def drive(self):
        if self.cur is None and self.queue and self.rng.random() >= self.p_idle:
            self.cur = self.queue.popleft()
        self.dut.i_stream__valid.value = int(self.cur is not None)
        self.dut.i_stream__payload.value = self.cur if self.cur is not None else 0

    def sample(self, cycle):
        if self.cur is not None and int(self.dut.i_stream__ready.value):
            self.handshakes.append(cycle)
            self.cur = None

    @property
    def drained(self):
        return self.cur is None and not self.queue


class Monitor:
    """Drives ``o_stream.ready`` low with probability ``p_stall`` and records transfers."""

    def __init__(self, dut, p_stall, rng, on_transfer):
        self.dut, self.p_stall, self.rng, self.on_transfer = dut, p_stall, rng, on_transfer
        self.ready = 0
        self.handshakes = []

    def drive(self):
        self.ready = int(self.rng.random() >= self.p_stall)
        self.dut.o_stream__ready.value = self.ready

    def sample(self, cycle):
        if self.ready and int(self.dut.o_stream__valid.value):
            self.handshakes.append(cycle)
            self.on_transfer(int(self.dut.o_stream__payload.value))


class Checker:
    """In-order comparison of observed transfers with the golden queue."""

    def __init__(self, geo: Geometry, expected):
        self.geo, self.expected = geo, deque(expected)
        self.errors, self.extra, self.seen = 0, 0, 0

    def __call__(self, raw):
        got = self.geo.decode(raw)
        self.seen += 1
        if not self.expected:
            self.extra += 1
            cocotb.log.error(f"unexpected output transfer {got}")
            return
        want = self.expected.popleft()
        if got != want:
            self.errors += 1
            if self.errors <= 5:
                cocotb.log.error(f"transfer {self.seen - 1}: got {got}, golden {want}")


class TB:
    """Owns the clock, reset, driver, monitor and checker for one run."""

    def __init__(self, dut, prefix: str, p: dict, p_idle: float, p_stall: float, seed: int):
        self.dut, self.geo = Ports(dut, prefix), Geometry(p)
        cfg = self.geo.cfg
        w = torch.tensor(p["weights"], dtype=torch.uint8 if cfg.weights == "binary" else torch.int8)
        x = torch.tensor(p["x"], dtype=torch.uint8)
        z = preact(cfg, x, w).numpy()
        if p.get("golden_mutant"):  # a deliberately broken reference: the testbench must fail
            z = z.copy()
            z[:, -1] += 2
        self.n_vectors = x.shape[0]
        self.checker = Checker(self.geo, self.geo.expected(z))
        self.n_out = len(self.checker.expected)
        rng = random.Random(seed)
        self.driver = Driver(self.dut, self.geo.slices(x.numpy()), p_idle, rng)
        self.monitor = Monitor(self.dut, p_stall, random.Random(seed + 1), self.checker)

    async def reset(self):
        Clock(self.dut.clk, 10, unit="ns").start()
        self.dut.rst.value = 1
        self.dut.i_stream__valid.value = 0
        self.dut.o_stream__ready.value = 0
        for _ in range(2):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0

    async def run(self, max_cycles: int, tail: int = 8) -> int:
        """Cycle loop: drive after each edge, sample the settled handshakes; returns cycles."""
        cycle, idle_after = 0, 0
        while cycle < max_cycles:
            await RisingEdge(self.dut.clk)
            self.driver.drive()
            self.monitor.drive()
            await ReadOnly()
            self.driver.sample(cycle)
            self.monitor.sample(cycle)
            cycle += 1
            if self.driver.drained and self.checker.seen >= self.n_out:
                idle_after += 1  # keep watching: nothing more may come out
                if idle_after > tail:
                    break
        return cycle

    def check(self):
        c = self.checker
        assert self.driver.drained, f"{len(self.driver.queue)} input slices never accepted"
        assert c.seen >= self.n_out, f"only {c.seen} of {self.n_out} output transfers arrived"
        assert c.extra == 0, f"{c.extra} extra output transfers"
        assert c.errors == 0, f"{c.errors} of {self.n_out} output transfers differ from golden"


#: (p_idle, p_stall): full rate (also checks the cycle count), random idle input with random
#: backpressure, heavy backpressure, sparse input.
FLOWS = [(0.0, 0.0), (0.3, 0.3), (0.0, 0.7), (0.6, 0.0)]
CASES = sorted(cocotb_params().get("cases", {})) or ["none"]


@cocotb.test()
@cocotb.parametrize(case=CASES, flow=FLOWS)
async def mac_array_matches_golden(dut, case, flow):
    p = cocotb_params()["cases"][case]
    p_idle, p_stall = flow
    tb = TB(dut, case, p, p_idle, p_stall, seed=int(100 * p_idle + 10 * p_stall))
    await tb.reset()
    await tb.run(20 * p["cycles"] + 1000)
    tb.check()
    if flow == (0.0, 0.0):  # full rate: the exact cycle formula of MACArray.cycles()
        span = tb.monitor.handshakes[-1] - tb.driver.handshakes[0] + 1
        assert span == p["cycles"], f"full-rate run took {span} cycles, MACArray.cycles() = {p['cycles']}"
