"""Galois LFSR noise generator, bit-exact with :mod:`bitswarm.golden.lfsr` (SPEC.md §6).

The register is the golden right-shifting Galois LFSR::

    out   = state & 1
    state = (state >> 1) ^ (taps if out else 0)

with ``taps = LFSRConfig.taps`` (:func:`bitswarm.golden.lfsr.taps_mask`). A *draw* is one step
followed by the low ``draw_bits`` of the new state (golden :meth:`LFSR.draw`). With ``lanes``
L > 1 the component unrolls L steps combinationally, so that one stream transfer delivers L
consecutive draws (lane ``i`` is the draw after ``i + 1`` steps) and the register advances by L
steps: this is how a flip unit with L SIMD lanes gets one draw per weight per cycle.

Lint: the generated Verilog passes ``verilator --lint-only -Wall`` except for warnings that
Amaranth's Verilog output draws by construction and that are waived for that reason (the
check lives in ``tests/hw/bench.py:lint_warnings``): DECLFILENAME (module ``top`` / ``top.sub``
in a file of another name), PROCASSINIT (every register has an initial value *and* a
synchronous reset), UNUSEDSIGNAL on non-port names (Amaranth/Yosys emit alias wires for named
signals and struct/array fields that consumers bypass; an unused *port* is not waived) and
WIDTHEXPAND on arithmetic/compare operators (Amaranth keeps operands at natural width and makes
the result one bit wider; Verilog's context-determined extension is exactly Amaranth's
semantics).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import Out
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.lfsr import LFSRConfig

__all__ = ["LFSR", "build", "galois_steps"]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def galois_steps(m: Module, state: Value, taps: int, n: int, name: str = "step") -> list[Signal]:
    """Signals (driven in ``m.d.comb``) holding the states after 1..n Galois steps of ``state``.

    Each step is its own signal, so the expression of step ``i`` refers to step ``i - 1`` once
    by name instead of inlining a tree that doubles with every step.
    """
    width = len(state)
    out, s = [], state
    for i in range(n):
        nxt = Signal(width, name=f"{name}{i + 1}")
        m.d.comb += nxt.eq((s >> 1) ^ Mux(s[0], Const(taps, width), Const(0, width)))
        out.append(nxt)
        s = nxt
    return out


class LFSR(wiring.Component):
    """Galois LFSR with a stream of draws, ``lanes`` draws per transfer.

    Parameters
    ----------
    config : :class:`~bitswarm.golden.lfsr.LFSRConfig`
        Width (8..32), seed (the reset state) and bits per draw.
    lanes : int
        Draws per transfer, L >= 1. The register advances L steps per accepted transfer; the
        L steps are unrolled combinationally (L XOR layers between ``state`` and the payload
        and back into ``state``; keep L moderate for Fmax).

    Members
    -------
    state : ``Out(width)``
        The register; resets to ``config.seed``. After ``n`` accepted transfers it equals the
        golden LFSR after ``n * lanes`` steps.
    o_stream : ``Out(stream.Signature(StructLayout({"draws": ArrayLayout(draw_bits, lanes)})))``
        Always valid. ``draws[i]`` is the low ``draw_bits`` of the state after ``i + 1`` steps
        of the current ``state``, i.e. exactly the next L golden ``LFSR.draw()`` results.

    Notes
    -----
    Latency 0: the payload is a combinational function of ``state``. Throughput one transfer
    (L draws) per cycle. Backpressure: while ``ready`` is low the register holds, so the payload
    stays stable and no draw is lost or repeated.

    Widths and overflow: ``state`` is ``config.width`` bits, each draw ``config.draw_bits``
    bits; there is no arithmetic, so nothing overflows. The all-zero state is unreachable from a
    valid seed.

    Raises
    ------
    TypeError
        If ``config`` is not an ``LFSRConfig`` or ``lanes`` is not an integer.
    ConfigError
        If ``lanes < 1``.
    """

    def __init__(self, config: LFSRConfig, *, lanes: int = 1):
        if not isinstance(config, LFSRConfig):
            raise TypeError(f"config must be an LFSRConfig, not {type(config).__name__}")
        if not _is_int(lanes):
            raise TypeError(f"lanes must be an integer, not {lanes!r}")
        if lanes < 1:
            raise ConfigError(f"lanes must be a positive integer, not {lanes!r}")
        self._config = config
        self._lanes = lanes
        super().__init__({
            "state":    Out(config.width, init=config.seed),
            "o_stream": Out(stream.Signature(self.payload_layout(config, lanes))),
        })

    @staticmethod
    def payload_layout(config: LFSRConfig, lanes: int) -> data.StructLayout:
        """The ``o_stream`` payload layout for ``config`` and ``lanes``."""
        return data.StructLayout({"draws": data.ArrayLayout(config.draw_bits, lanes)})

    @property
    def config(self) -> LFSRConfig:
        return self._config

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def width(self) -> int:
        return self._config.width

    @property
    def draw_bits(self) -> int:
        return self._config.draw_bits

    def _taps(self) -> int:
        """The Galois feedback mask (``config.taps``)."""
        return self._config.taps

    def _lane_states(self, steps: list[Signal]) -> list[Signal]:
        """The state each lane draws from, given the states after 1..L steps: lane ``i`` the
        state after ``i + 1`` steps."""
        return steps

    def elaborate(self, platform):
        m = Module()
        nxt = galois_steps(m, self.state, self._taps(), self._lanes)
        m.d.comb += self.o_stream.valid.eq(1)
        for i, s in enumerate(self._lane_states(nxt)):
            m.d.comb += self.o_stream.payload.draws[i].eq(s[: self._config.draw_bits])
        with m.If(self.o_stream.ready):
            m.d.sync += self.state.eq(nxt[-1])
        return m


def build(*, width: int = 16, seed: int = 1, draw_bits: int = 8, lanes: int = 1) -> LFSR:
    """An :class:`LFSR` from plain integers (``bitswarm verilog --component lfsr``)."""
    return LFSR(LFSRConfig(width=width, seed=seed, draw_bits=draw_bits), lanes=lanes)
