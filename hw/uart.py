"""UART receiver and transmitter with stream interfaces (8 data bits, no parity, 1 stop bit).

Both cores count ``divisor`` clock cycles per bit (``divisor = round(f_clk / baud)``, see
:func:`uart_divisor`); bits go least significant first, framed by a start bit (0) and a stop
bit (1); the idle line is 1. Next to the cores sit their software references,
:func:`uart_line` (the line levels one cycle at a time for a byte string) and
:func:`uart_decode` (the bytes back from sampled levels), which the tests compare the gateware
with.

:class:`UARTRx` — ``rx`` pin in, ``o_stream`` of bytes out.
    The pin passes a two-flip-flop synchronizer. A falling edge starts a frame; the start bit is
    checked again half a bit later (a shorter low pulse is ignored as a glitch), then each data
    bit and the stop bit are sampled in the middle of their bit times. Latency: the byte is valid
    ``3 + divisor // 2 + 9 * divisor`` cycles after the start edge reaches the pin (the middle of
    the stop bit), leaving half a stop bit of slack for clock mismatch. Throughput: one byte per
    ``10 * divisor`` cycles, the line rate. Backpressure: the byte is held until accepted; a
    byte that completes while the previous one is still unaccepted is dropped and ``overrun``
    pulses for one cycle. A stop bit read as 0 drops the byte, pulses ``frame_err`` and waits
    for the line to return to 1.

:class:`UARTTx` — ``i_stream`` of bytes in, ``tx`` pin out (a register: no glitches).
    A byte is accepted when the transmitter is idle or in the last cycle of a stop bit, so back
    to back bytes leave at exactly ``10 * divisor`` cycles each. Latency: the start bit appears
    on ``tx`` one cycle after the handshake.
"""


from collections.abc import Iterable, Sequence

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.errors import ConfigError

__all__ = ["MIN_DIVISOR", "BYTE_LAYOUT", "UARTRx", "UARTTx", "uart_divisor", "uart_line",
           "uart_decode"]

#: Smallest supported cycles per bit (the receiver samples at half a bit).
MIN_DIVISOR = 4

#: Payload of the byte streams.
BYTE_LAYOUT = data.StructLayout({"data": unsigned(8)})


def _check_divisor(divisor) -> int:
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        raise ConfigError(f"divisor must be an integer >= {MIN_DIVISOR} (clock cycles per bit), "
                          f"not {divisor!r}")
    return divisor


def uart_divisor(clk_hz: float, baud: int, max_error: float = 0.02) -> int:
    """Cycles per bit for ``baud`` at ``clk_hz``, refusing a baud error above ``max_error``.

    Raises
    ------
    ConfigError
        If the rate is not positive, the divisor would be below :data:`MIN_DIVISOR`, or the
        rounded divisor misses the baud rate by more than ``max_error`` (relative).
    """
    if not isinstance(baud, int) or isinstance(baud, bool) or baud <= 0:
        raise ConfigError(f"baud must be a positive integer, not {baud!r}")
    if not clk_hz > 0:
        raise ConfigError(f"clock frequency must be positive, not {clk_hz!r}")
    d = round(clk_hz / baud)
    if d < MIN_DIVISOR:
        raise ConfigError(f"{baud} baud needs at least {MIN_DIVISOR} cycles per bit; the "
                          f"{clk_hz / 1e6:g} MHz clock gives {clk_hz / baud:.2f}")
    err = abs(clk_hz / d - baud) / baud
    if err > max_error:
        raise ConfigError(f"{baud} baud at {clk_hz / 1e6:g} MHz is off by {err:.1%} "
                          f"(divisor {d}); pick another baud rate")
    return d


def uart_line(payload: Iterable[int], divisor: int, gap_bits: int = 0) -> list[int]:
    """Reference transmitter: the line level for each clock cycle carrying ``payload``.

    Each byte is a start bit, 8 data bits LSB first and a stop bit, ``divisor`` cycles each,
    followed by ``gap_bits`` idle bit times.
    """
    _check_divisor(divisor)
    out: list[int] = []
    for b in payload:
        if not 0 <= int(b) <= 255:
            raise ConfigError(f"a UART byte must be in 0..255, not {b!r}")
        bits = [0] + [(int(b) >> i) & 1 for i in range(8)] + [1] + [1] * gap_bits
        for bit in bits:
            out += [bit] * divisor
    return out


def uart_decode(levels: Sequence[int], divisor: int) -> bytes:
    """Reference receiver: the bytes in a cycle-by-cycle line capture (mid-bit sampling).

    Raises
    ------
    ConfigError
        On a stop bit that reads 0.
    """
    _check_divisor(divisor)
    out = bytearray()
    i, n = 0, len(levels)
    while i < n:
        if levels[i]:
            i += 1
            continue
        mid = i + divisor // 2
        if mid + 9 * divisor >= n:
            break  # an incomplete frame at the end of the capture
        byte = sum(levels[mid + (k + 1) * divisor] << k for k in range(8))
        if not levels[mid + 9 * divisor]:
            raise ConfigError(f"framing error: stop bit of the byte starting at cycle {i} is 0")
        out.append(byte)
        i = mid + 9 * divisor
    return bytes(out)


class UARTRx(wiring.Component):
    """UART receiver (8N1) with a byte stream out.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    rx : In(1)
        The serial line (idle 1); asynchronous, synchronized inside.
    o_stream : Out(stream.Signature(BYTE_LAYOUT))
        Received bytes; ``valid`` holds until ``ready``.
    overrun : Out(1)
        One-cycle pulse: a byte was dropped because the previous one was not accepted yet.
    frame_err : Out(1)
        One-cycle pulse: a stop bit read 0; the byte was dropped.

    Raises
    ------
    ConfigError
        If ``divisor`` is not an integer >= :data:`MIN_DIVISOR`.
    """

    rx: In(1, init=1)
    o_stream: Out(stream.Signature(BYTE_LAYOUT))
    overrun: Out(1)
    frame_err: Out(1)

    def __init__(self, divisor: int):
        try:
            self._divisor = _check_divisor(divisor)
        except ConfigError:
            self._MustUse__silence = True  # never elaborated: don't warn about it
            raise
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        meta = Signal(init=1)
        line = Signal(init=1)
        m.d.sync += [meta.eq(self.rx), line.eq(meta)]

        cnt = Signal(range(d))
        bit = Signal(range(8))
        sreg = Signal(8)
        o = self.o_stream
        with m.If(o.valid & o.ready):
            m.d.sync += o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += cnt.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(cnt == 0):
                    m.d.sync += [cnt.eq(d - 1), bit.eq(0)]
                    with m.If(line):  # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += cnt.eq(cnt - 1)
            with m.State("DATA"):
                with m.If(cnt == 0):
                    m.d.sync += [cnt.eq(d - 1), sreg.eq(Cat(sreg[1:], line)), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += cnt.eq(cnt - 1)
            with m.State("STOP"):
                with m.If(cnt == 0):
                    with m.If(line):
                        with m.If(o.valid & ~o.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [o.valid.eq(1), o.payload.data.eq(sreg)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.frame_err.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += cnt.eq(cnt - 1)
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """UART transmitter (8N1) with a byte stream in.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    i_stream : In(stream.Signature(BYTE_LAYOUT))
        Bytes to send; accepted when idle or in the last cycle of a stop bit.
    tx : Out(1)
        The serial line, registered, idle 1.

    Raises
    ------
    ConfigError
        If ``divisor`` is not an integer >= :data:`MIN_DIVISOR`.
    """

    i_stream: In(stream.Signature(BYTE_LAYOUT))
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        try:
            self._divisor = _check_divisor(divisor)
        except ConfigError:
            self._MustUse__silence = True  # never elaborated: don't warn about it
            raise
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        busy = Signal()
        cnt = Signal(range(d))
        left = Signal(range(10))  # bits still to put on the line after the current one
        sreg = Signal(9)  # data bits, then the stop bit
        i = self.i_stream
        done = Signal()  # last cycle of the current frame's stop bit
        m.d.comb += [
            done.eq(busy & (cnt == 0) & (left == 0)),
            i.ready.eq(~busy | done),
        ]
        with m.If(busy):
            with m.If(cnt == 0):
                with m.If(left == 0):
                    m.d.sync += busy.eq(0)
                with m.Else():
                    m.d.sync += [self.tx.eq(sreg[0]), sreg.eq(sreg >> 1), left.eq(left - 1),
                                 cnt.eq(d - 1)]
            with m.Else():
                m.d.sync += cnt.eq(cnt - 1)
        with m.If(i.valid & i.ready):
            m.d.sync += [busy.eq(1), self.tx.eq(0), sreg.eq(Cat(i.payload.data, 1)),
                         left.eq(9), cnt.eq(d - 1)]
        return m
