"""Threshold activation unit, bit-exact with :func:`bitswarm.golden.layer.threshold` (SPEC.md §4).

Each hidden neuron ``j`` fires ``a_j = ((z_j - theta_j) >= 0) XOR invert_j``. The unit takes
``lanes`` (P) pre-activations per transfer, FINN-style folded: a layer of M neurons arrives as
``M / P`` consecutive transfers per sample (transfer ``t`` carries neurons
``(t mod M/P) * P .. + P - 1``), and the per-neuron ``theta`` / ``invert`` live in a ROM of
``M / P`` rows indexed by a fold counter. The counter restarts at 0 on reset, so the stream must
carry whole samples.

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

import operator
from collections.abc import Sequence

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.layer import LayerConfig, signed_width

from .plan import MEM_ATTRS, auto_mem_style

__all__ = ["Threshold", "build"]



def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Threshold(wiring.Component):
    """Folded threshold unit with per-neuron thresholds and inverts in a ROM.

    Parameters
    ----------
    layer : :class:`~bitswarm.golden.layer.LayerConfig`
        A hidden layer: each lane fires ``((z - theta) >= 0) XOR invert``; or the output
        layer: each lane gives the score ``z - theta``. ``z`` is ``layer.z_width`` bits signed,
        thresholds ``signed_width(layer.theta_bound)`` bits.
    lanes : int
        Neurons per transfer, P, 1..n_out. When P does not divide ``n_out`` the last transfer's
        lanes past neuron ``n_out - 1`` use threshold 0 and no invert (don't-care outputs).
    theta : sequence of int, optional
        ``n_out`` thresholds, each in ``-theta_bound..theta_bound`` (default all 0).
    invert : sequence of int, optional
        ``n_out`` invert flags, 0 or 1 (default all 0; must be 0 for the output layer).

    Members
    -------
    i_stream : ``In(stream.Signature(StructLayout({"z": ArrayLayout(signed(z_width), P)})))``
        Pre-activations, P neurons per transfer, folds in order (``ceil(n_out / P)`` per sample).
    o_stream : ``Out(stream.Signature(StructLayout({"bits": unsigned(P)})))`` (hidden layer) or
    ``Out(stream.Signature(StructLayout({"scores": ArrayLayout(signed(z_width), P)})))`` (output)
        Bit / score ``i`` belongs to lane ``i`` of the matching input transfer.

    Notes
    -----
    Latency 1 cycle (registered output). Throughput one transfer per cycle. Backpressure: a
    one-entry output register; ``i_stream.ready = ~o_stream.valid | o_stream.ready`` (a
    combinational path from ``o_stream.ready`` to ``i_stream.ready``). With more than one fold
    the table is a synchronous ROM (block RAM on FPGAs) addressed one cycle ahead by the fold
    counter's next value, so its word is ready when the transfer arrives (``i_stream.ready`` is
    held low until the first clock edge has read it). Overflow: none;
    ``z - theta`` is computed one bit wider than its operands, exact for every input value;
    scores are ``z_width`` bits, exact while ``|z| <= z_bound`` (golden's range).

    Raises
    ------
    TypeError
        If ``layer`` is not a ``LayerConfig``, ``lanes`` not an integer, or theta/invert not
        sequences of integers.
    ConfigError
        If ``lanes`` is out of range, a theta / invert has the wrong length or an out-of-range
        value, or an output layer has an invert set.
    """

    def __init__(
        self,
        layer: LayerConfig,
        *,
        lanes: int = 1,
        theta: Sequence[int] | None = None,
        invert: Sequence[int] | None = None,
    ):
        if not isinstance(layer, LayerConfig):
            raise TypeError(f"layer must be a LayerConfig, not {type(layer).__name__}")
        if not _is_int(lanes):
            raise TypeError(f"lanes must be an integer, not {lanes!r}")
        if not 1 <= lanes <= layer.n_out:
            raise ConfigError(f"lanes must be in 1..n_out = {layer.n_out}, not {lanes!r}")
        m = layer.n_out
        theta = [0] * m if theta is None else _int_list("theta", theta)
        invert = [0] * m if invert is None else _int_list("invert", invert)
        if len(theta) != m:
            raise ConfigError(f"theta must have n_out = {m} entries, found {len(theta)}")
        if len(invert) != m:
            raise ConfigError(f"invert must have n_out = {m} entries, found {len(invert)}")
        bad = [t for t in theta if abs(t) > layer.theta_bound]
        if bad:
            raise ConfigError(
                f"theta must lie in -{layer.theta_bound}..{layer.theta_bound}, found {bad[0]}"
            )
        bad = [v for v in invert if v not in (0, 1)]
        if bad:
            raise ConfigError(f"invert must be 0 or 1, found {bad[0]}")
        if layer.output and any(invert):
            raise ConfigError("the output layer has no invert bits (its scores are z - theta)")
        self._layer, self._lanes = layer, lanes
        self._theta, self._invert = tuple(theta), tuple(invert)
        super().__init__({
            "i_stream": In(stream.Signature(self.i_layout(layer, lanes))),
            "o_stream": Out(stream.Signature(self.o_layout(lanes, layer))),
        })

    @staticmethod
    def i_layout(layer: LayerConfig, lanes: int) -> data.StructLayout:
        return data.StructLayout({"z": data.ArrayLayout(signed(layer.z_width), lanes)})

    @staticmethod
    def o_layout(lanes: int, layer: LayerConfig | None = None) -> data.StructLayout:
        if layer is not None and layer.output:
            return data.StructLayout({"scores": data.ArrayLayout(signed(layer.z_width), lanes)})
        return data.StructLayout({"bits": lanes})

    @property
    def layer(self) -> LayerConfig:
        return self._layer

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def folds(self) -> int:
        """Transfers per sample, ``ceil(n_out / lanes)``."""
        return -(-self._layer.n_out // self._lanes)

    @property
    def z_width(self) -> int:
        return self._layer.z_width

    @property
    def theta_width(self) -> int:
        return signed_width(self._layer.theta_bound)

    @property
    def theta(self) -> tuple[int, ...]:
        return self._theta

    @property
    def invert(self) -> tuple[int, ...]:
        return self._invert

    def _fire(self, diff):
        """Activation of one lane from ``z - theta``: ``diff >= 0`` (the sign bit clear)."""
        return ~diff[-1]

    def _table(self, m, accept):
        """The (theta, invert) row of the fold now on ``i_stream``."""
        p, f = self._lanes, self.folds
        entry = data.StructLayout({"theta": signed(self.theta_width), "invert": 1})
        n = self._layer.n_out

        def row(r):
            return [{"theta": self._theta[r * p + i] if r * p + i < n else 0,
                     "invert": self._invert[r * p + i] if r * p + i < n else 0}
                    for i in range(p)]

        if f == 1:  # one fold: the thresholds are constants
            return data.ArrayLayout(entry, p).const(row(0)), 1
        shape = data.ArrayLayout(entry, p)
        style = auto_mem_style(shape.size, f)
        m.submodules.rom = rom = memory.Memory(shape=shape, depth=f, init=[row(r) for r in range(f)],
                                               attrs=MEM_ATTRS[style])
        rd = rom.read_port()
        cnt = Signal(range(f), name="fold")
        nxt = Signal(range(f), name="fold_next")
        m.d.comb += nxt.eq(cnt)
        with m.If(accept):
            m.d.comb += nxt.eq(Mux(cnt == f - 1, 0, cnt + 1))
        m.d.sync += cnt.eq(nxt)
        m.d.comb += rd.addr.eq(nxt)  # read one cycle ahead: rd.data is row `cnt`
        primed = Signal()  # rd.data is valid from the first clock edge on
        m.d.sync += primed.eq(1)
        return rd.data, primed

    def elaborate(self, platform):
        m = Module()
        p = self._lanes
        accept = self.i_stream.valid & self.i_stream.ready
        rom_data, primed = self._table(m, accept)
        out = Signal(self.o_stream.payload.shape())
        for i in range(p):
            diff = self.i_stream.payload.z[i] - rom_data[i].theta  # exact: one bit wider
            if self._layer.output:
                m.d.comb += out.scores[i].eq(diff)
            else:
                m.d.comb += out.bits[i].eq(self._fire(diff) ^ rom_data[i].invert)
        m.d.comb += self.i_stream.ready.eq(primed & (~self.o_stream.valid | self.o_stream.ready))
        with m.If(accept):
            m.d.sync += [
                self.o_stream.valid.eq(1),
                self.o_stream.payload.eq(out),
            ]
        with m.Elif(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        return m


def _int_list(name: str, values) -> list[int]:
    """Integers (Python, numpy or 0-d integer tensors) from a sequence; floats are rejected."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of integers, not {type(values).__name__}")
    out = []
    for v in values:
        try:
            out.append(operator.index(v))
        except TypeError:
            raise TypeError(f"{name} must be a sequence of integers, found {v!r}") from None
    return out


def build(
    *, n_in: int = 64, n_out: int = 8, swarm: int = 1, input_bits: int = 1, lanes: int = 1
) -> Threshold:
    """A :class:`Threshold` from plain integers (thresholds 0, no inverts), for
    ``bitswarm verilog --component threshold``."""
    layer = LayerConfig(n_in=n_in, n_out=n_out, swarm=swarm, input_bits=input_bits)
    return Threshold(layer, lanes=lanes)
