"""cocotb testbench for the trainer board core (:class:`bitswarm.hw.onchip_board.UARTTrainer`).

The host is the real host code: :class:`bitswarm.sim.hostlink.TrainerLink` runs in a cocotb
bridge thread over :class:`PinTransport`, whose ``write`` drives the ``rx`` pin bit by bit
(``divisor`` clock cycles per bit, the UART model of ``tests/hw/cocotb_board.py``) and whose
``read`` returns the bytes decoded mid-bit from ``tx``. The link identifies the trainer (INFO),
streams every labelled sample with as many TRAIN frames in flight as the device's FIFO allows
(back-to-back samples), then reads the whole training state back through READ commands. The
results go to ``out`` (JSON: INFO fields, predictions, error flags, the clock cycles the
training took; the read-back model as a model file next to it); the pytest driver compares them
with golden.

Parameters (``BITSWARM_PARAMS``): ``divisor``, ``model`` (model file path), ``xs`` (pixel
lists), ``ys`` (labels), ``out`` (JSON path), ``timeout_cycles`` (per read).
"""

import json

import cocotb
import numpy as np
from bitswarm.golden.model import load_model, save_model
from bitswarm.sim.hostlink import TrainerLink
from bitswarm.sim.verilator import cocotb_params
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

from tests.hw.cocotb_board import UARTModel


class PinTransport:
    """A :class:`~bitswarm.sim.hostlink.Transport` on the simulated pins, for a bridge thread."""

    def __init__(self, uart: UARTModel, timeout_cycles: int):
        self.uart, self.timeout = uart, timeout_cycles
        self.written = 0

    def write(self, data: bytes) -> int:
        resume(self.uart.send)(bytes(data))
        self.written += len(data)
        return len(data)

    def read(self, n: int) -> bytes:
        return resume(self._recv)(n)

    async def _recv(self, n: int) -> bytes:
        waited = 0
        rx = self.uart.received
        while len(rx) < n and waited < self.timeout:
            await RisingEdge(self.uart.dut.clk)
            waited += 1
        out = bytes(rx[:n])
        del rx[:n]
        return out

    def reset_input_buffer(self) -> None:
        self.uart.received.clear()


@cocotb.test()
async def train_over_uart(dut):
    p = cocotb_params()
    d = p["divisor"]
    model = load_model(p["model"])
    Clock(dut.clk, 10, unit="ns").start()
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    uart = UARTModel(dut, d)
    cocotb.start_soon(uart.monitor())
    tr = PinTransport(uart, p["timeout_cycles"])
    xs = np.array(p["xs"], dtype=np.uint8)
    ys = np.array(p["ys"], dtype=np.int64)

    async def now():
        return get_sim_time("ns") / 10  # clock cycles (10 ns period)

    def host():
        link = TrainerLink(model, tr)
        info = link.identify()
        t0 = resume(now)()
        preds, errs = link.train(xs, ys)
        cycles = resume(now)() - t0
        state = link.read_state()
        after = link.identify(fresh=False)
        return info, preds, errs, state, after, cycles

    info, preds, errs, state, after, cycles = await bridge(host)()
    await ClockCycles(dut.clk, 20 * d)
    assert not uart.received, f"unexpected extra bytes {bytes(uart.received).hex()}"
    assert int(dut.led.value) & 2 == 0, "the error LED is lit (overrun, framing error or FIFO overflow)"
    save_model(state, p["out"] + ".bsm")
    with open(p["out"], "w") as f:
        json.dump({"preds": preds.tolist(), "errors": errs.tolist(), "samples_after": after.samples,
                   "samples_before": info.samples, "fifo_depth": info.fifo_depth,
                   "bytes_sent": tr.written, "train_cycles": cycles}, f)
