# amaranth: UnusedElaboratable=no
"""bitswarm.hw.uart: constructor checks, the software references, and the gateware on the
Amaranth simulator against them (exact bit timing, backpressure, overrun, framing errors)."""

import itertools
import random

import pytest
from amaranth.sim import Simulator
from bitswarm.golden.errors import ConfigError
from bitswarm.hw.uart import BYTE_LAYOUT, UARTRx, UARTTx, uart_decode, uart_divisor, uart_line

DATA = bytes([0x00, 0xFF, 0xA5, 0x5A, 0x01, 0x80, 0x7F, 0x3C]) + bytes(random.Random(3).randbytes(8))


def test_init():
    rx, tx = UARTRx(5), UARTTx(4)
    assert (rx.divisor, tx.divisor) == (5, 4)
    assert rx.o_stream.payload.shape() == BYTE_LAYOUT
    assert tx.i_stream.payload.shape() == BYTE_LAYOUT
    assert rx.rx.init == 1 and tx.tx.init == 1


@pytest.mark.parametrize("cls", [UARTRx, UARTTx])
def test_init_wrong_divisor(cls):
    for bad in (3, 0, -4, 4.0, True, "8"):
        with pytest.raises(ConfigError, match=r"divisor must be an integer >= 4 \(clock cycles "
                                              r"per bit\), not "):
            cls(bad)


def test_divisor():
    assert uart_divisor(12e6, 115200) == 104
    assert uart_divisor(50e6, 1_000_000) == 50
    with pytest.raises(ConfigError, match=r"4000000 baud needs at least 4 cycles per bit; the "
                                          r"12 MHz clock gives 3\.00"):
        uart_divisor(12e6, 4_000_000)
    with pytest.raises(ConfigError, match=r"off by 7\.1% \(divisor 7\)"):
        uart_divisor(12e6, 1_600_000 + 1)
    with pytest.raises(ConfigError, match=r"baud must be a positive integer, not 0"):
        uart_divisor(12e6, 0)


def test_reference_round_trip():
    for d in (4, 5, 104):
        assert uart_decode(uart_line(DATA, d, gap_bits=1), d) == DATA
    line = uart_line(b"\x12", 4)
    line[-1] = line[-2] = 0  # stop bit 0
    with pytest.raises(ConfigError, match="framing error"):
        uart_decode(line, 4)


def _run(dut, *benches, limit=20000):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for b in benches:
        sim.add_testbench(b)
    sim.run_until(limit * 1e-6)


@pytest.mark.parametrize("divisor", [4, 7])
@pytest.mark.parametrize("idle", ["full", "gaps"])
def test_sim_tx(divisor, idle):
    dut = UARTTx(divisor)
    line, starts = [], []
    rng = random.Random(divisor)

    async def source(ctx):
        for b in DATA:
            if idle == "gaps":
                for _ in range(rng.randrange(3) * 7):
                    await ctx.tick()
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(dut.i_stream.payload.data, b)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i_stream.ready)
                if ready:
                    break
            starts.append(len(line))
            ctx.set(dut.i_stream.valid, 0)

    async def monitor(ctx):
        for _ in range(len(DATA) * (10 * divisor + 30) + 50):
            _, _, tx = await ctx.tick().sample(dut.tx)
            line.append(tx)

    _run(dut, source, monitor)
    assert uart_decode(line, divisor) == DATA
    if idle == "full":  # back to back: exactly the line rate, and the reference's waveform
        assert [b - a for a, b in itertools.pairwise(starts)] == [10 * divisor] * (len(DATA) - 1)
        first = line.index(0)
        assert line[first:first + 10 * divisor * len(DATA)] == uart_line(DATA, divisor)


@pytest.mark.parametrize("divisor", [4, 9])
@pytest.mark.parametrize("ready", ["full", "random"])
def test_sim_rx(divisor, ready):
    dut = UARTRx(divisor)
    # random gaps and a one-cycle glitch (ignored as a start bit) between some bytes
    line = [1] * 5
    rng = random.Random(divisor)
    for b in DATA:
        line += uart_line([b], divisor) + [1] * rng.randrange(2 * divisor)
        if rng.random() < 0.3:
            line += [0] + [1] * divisor
    got, flags = [], []
    rdy = itertools.cycle([1]) if ready == "full" else (rng.randrange(2) for _ in itertools.count())

    async def driver(ctx):
        for lvl in line:
            ctx.set(dut.rx, lvl)
            await ctx.tick()

    async def sink(ctx):
        for _ in range(len(line) + 10):
            r = next(rdy) if ready == "full" else 1 if rng.random() < 0.5 else 0
            ctx.set(dut.o_stream.ready, r)
            _, _, v, d, ov, fe = await ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.payload.data, dut.overrun, dut.frame_err)
            if v and r:
                got.append(d)
            flags.append((ov, fe))

    _run(dut, driver, sink)
    assert bytes(got) == DATA
    assert not any(ov or fe for ov, fe in flags)


def test_sim_rx_latency():
    d = 6
    dut = UARTRx(d)
    seen = []

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for n, lvl in enumerate([1, 1] + uart_line(b"\x5a", d) + [1] * d):
            ctx.set(dut.rx, lvl)
            _, _, v = await ctx.tick().sample(dut.o_stream.valid)
            if v:
                seen.append(n)
    _run(dut, bench)
    # the start edge is applied in cycle 2; valid is sampled high 3 + d//2 + 9*d cycles later
    assert seen == [2 + 3 + d // 2 + 9 * d]


def test_sim_rx_overrun_and_framing():
    d = 4
    dut = UARTRx(d)
    bad = uart_line(b"\x33", d)
    bad[9 * d:] = [0] * d  # stop bit 0
    line = uart_line(b"\x11\x22", d) + bad + [1] * 3 * d + uart_line(b"\x44", d) + [1] * d
    ov = fe = 0
    got = []

    async def bench(ctx):
        nonlocal ov, fe
        for n, lvl in enumerate(line):
            ctx.set(dut.rx, lvl)
            ctx.set(dut.o_stream.ready, int(n > 25 * d))  # not ready during the first 2 bytes
            _, _, o, f, v, r, data = await ctx.tick().sample(
                dut.overrun, dut.frame_err, dut.o_stream.valid, dut.o_stream.ready,
                dut.o_stream.payload.data)
            ov, fe = ov + o, fe + f
            if v and r:
                got.append(data)
    _run(dut, bench)
    assert (ov, fe) == (1, 1)
    assert bytes(got) == b"\x11\x44"  # 0x22 overran the unaccepted 0x11, 0x33 had no stop bit


def test_sim_loopback():
    """TX's line into RX: the software references are not involved at all."""
    from amaranth.hdl import Module
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In, Out

    class Loop(wiring.Component):
        i_stream: In(stream.Signature(BYTE_LAYOUT))
        o_stream: Out(stream.Signature(BYTE_LAYOUT))

        def elaborate(self, platform):
            m = Module()
            m.submodules.tx = tx = UARTTx(5)
            m.submodules.rx = rx = UARTRx(5)
            m.d.comb += rx.rx.eq(tx.tx)
            wiring.connect(m, wiring.flipped(self.i_stream), tx=tx.i_stream)
            wiring.connect(m, rx=rx.o_stream, top=wiring.flipped(self.o_stream))
            return m

    dut = Loop()
    got = []

    async def source(ctx):
        for b in DATA:
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(dut.i_stream.payload.data, b)
            while not (await ctx.tick().sample(dut.i_stream.ready))[2]:
                pass
        ctx.set(dut.i_stream.valid, 0)

    async def sink(ctx):
        ctx.set(dut.o_stream.ready, 1)
        while len(got) < len(DATA):
            _, _, v, d = await ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload.data)
            if v:
                got.append(d)

    _run(dut, source, sink)
    assert bytes(got) == DATA
