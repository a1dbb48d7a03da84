"""cocotb testbench for the board core (:class:`bitswarm.hw.board.UARTAccelerator`).

A UART model drives the ``rx`` pin bit by bit (``divisor`` clock cycles per bit) with frames
from :class:`bitswarm.sim.hostlink.LinkFormat` and decodes ``tx`` the same way, mid-bit; every
reply must equal, byte for byte, the reply a correct device sends for the golden scores. Bytes
that are not ``SYNC`` are sent between frames (the device must ignore them), and the host waits
a random number of bit times between frames.

Parameters (``BITSWARM_PARAMS``): ``divisor``, ``n_pixels``, ``classes``, ``score_width``,
``images`` (list of pixel lists), ``expected`` (list of reply byte lists).
"""

import random

import cocotb
import numpy as np
from bitswarm.sim.hostlink import LinkFormat
from bitswarm.sim.verilator import cocotb_params
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge


class UARTModel:
    """Host side of the serial line: byte-level send on ``rx``, receive from ``tx``."""

    def __init__(self, dut, divisor: int):
        self.dut, self.d = dut, divisor
        self.received: list[int] = []

    async def send(self, data: bytes, gap_bits: int = 0) -> None:
        for b in data:
            for bit in [0] + [(b >> i) & 1 for i in range(8)] + [1] * (1 + gap_bits):
                self.dut.rx.value = bit
                await ClockCycles(self.dut.clk, self.d)

    async def monitor(self) -> None:
        d, tx = self.d, self.dut.tx
        while True:
            await FallingEdge(tx)
            await ClockCycles(self.dut.clk, d // 2)
            await ReadOnly()
            assert int(tx.value) == 0, "start bit shorter than half a bit"
            byte = 0
            for i in range(8):
                await ClockCycles(self.dut.clk, d)
                await ReadOnly()
                byte |= int(tx.value) << i
            await ClockCycles(self.dut.clk, d)
            await ReadOnly()
            assert int(tx.value) == 1, "framing error on tx"
            self.received.append(byte)

    async def recv(self, n: int, timeout_cycles: int) -> bytes:
        waited = 0
        while len(self.received) < n:
            await RisingEdge(self.dut.clk)
            waited += 1
            assert waited < timeout_cycles, f"timed out with {len(self.received)} of {n} bytes"
        out, self.received[:] = bytes(self.received[:n]), self.received[n:]
        return out


@cocotb.test()
async def replies_equal_golden(dut):
    p = cocotb_params()
    fmt = LinkFormat(p["n_pixels"], p["classes"], p["score_width"])
    d = p["divisor"]
    Clock(dut.clk, 10, unit="ns").start()
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    uart = UARTModel(dut, d)
    cocotb.start_soon(uart.monitor())
    rng = random.Random(7)
    timeout = 10 * d * (fmt.frame_len + fmt.reply_len) + p.get("compute_cycles", 0) + 1000
    errors = 0
    for k, (img, exp) in enumerate(zip(p["images"], p["expected"], strict=True)):
        noise = bytes(rng.choice([0x00, 0x5A, 0xFF, 0x13]) for _ in range(rng.randrange(3)))
        await uart.send(noise + fmt.encode(np.array(img, dtype=np.uint8)), gap_bits=rng.choice([0, 0, 1]))
        reply = await uart.recv(fmt.reply_len, timeout)
        if reply != bytes(exp):
            errors += 1
            dut._log.error(f"image {k}: reply {reply.hex()} expected {bytes(exp).hex()}")
        await ClockCycles(dut.clk, rng.randrange(4) * d)
    await ClockCycles(dut.clk, 20 * d)
    assert not uart.received, f"unexpected extra bytes {bytes(uart.received).hex()}"
    assert int(dut.led.value) & 2 == 0, "the UART error LED is lit"
    assert errors == 0, f"{errors} of {len(p['images'])} replies differ from golden"
