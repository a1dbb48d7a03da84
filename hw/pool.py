"""Max-pooling of activation bits: OR over ``Q x Q`` windows, step ``Q`` (SPEC.md §14).

Sits between a convolution's :class:`~bitswarm.hw.threshold.Threshold` and the
:class:`~bitswarm.hw.accel.Repack` that feeds the next stage, so it pools the bits *after* the
invert, as :func:`bitswarm.golden.conv.maxpool_bits` does.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.conv import ConvGeometry
from bitswarm.golden.errors import ConfigError

from .plan import conv_outputs

__all__ = ["Pool", "build"]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Pool(wiring.Component):
    """OR-pooling of a convolution's activation groups.

    Parameters
    ----------
    geometry : ConvGeometry
        The convolution: its output map ``H_o x W_o`` and pool size ``Q`` (at least 2 for a
        pooling stage; 1 works and passes every group through).
    channels : int
        Output channels ``F`` of the convolution.
    pe : int
        Bits per group (the convolution's PE); must divide ``F``.

    Members
    -------
    i_stream : ``In(stream.Signature(StructLayout({"bits": unsigned(pe)})))``
        Activation bits of the ``H_q·Q x W_q·Q`` computed positions in raster order (the
        remainder rows and columns of the ``H_o x W_o`` output, which fill no pooling window,
        are dropped before they are computed: the
        :class:`~bitswarm.hw.sliding_window.SlidingWindow` does not generate them,
        :func:`~bitswarm.hw.plan.conv_outputs`), ``NF = F / PE`` groups per position (group
        ``nf`` holds channels ``nf·PE .. nf·PE + PE - 1``).
    o_stream : ``Out(stream.Signature(StructLayout({"bits": unsigned(pe)})))``
        The pooled ``H_q x W_q`` map in raster order, ``NF`` groups per position: the OR of the
        ``Q x Q`` positions ``(yq·Q + dy, xq·Q + dx)``.

    Row buffer: ``W_q·NF`` words of ``PE`` bits (``W_q·F`` bits) holding the partial ORs of the
    current pooled row, read combinationally and written on each group (registers or LUT RAM). Timing: one group per cycle in; a pooled group leaves one cycle after the last group
    of its window (a one-entry output register). ``i_stream.ready = ~o_stream.valid |
    o_stream.ready``. Nothing overflows; nothing is reordered.

    Raises
    ------
    TypeError
        ``geometry`` is not a :class:`ConvGeometry`, or ``channels`` / ``pe`` not integers.
    ConfigError
        ``pe`` does not divide ``channels``.
    """

    def __init__(self, geometry: ConvGeometry, *, channels: int, pe: int = 1):
        if not isinstance(geometry, ConvGeometry):
            raise TypeError(f"geometry must be a ConvGeometry, not {geometry!r}")
        for name, v in (("channels", channels), ("pe", pe)):
            if not _is_int(v):
                raise TypeError(f"{name} must be an integer, not {v!r}")
        if channels < 1:
            raise ConfigError(f"channels must be >= 1, not {channels}")
        if not 1 <= pe <= channels or channels % pe:
            raise ConfigError(f"pe must divide the channels F = {channels}, not {pe}")
        self._g, self._f, self._pe = geometry, channels, pe
        layout = data.StructLayout({"bits": pe})
        super().__init__({
            "i_stream": In(stream.Signature(layout)),
            "o_stream": Out(stream.Signature(layout)),
        })

    @property
    def geometry(self) -> ConvGeometry:
        return self._g

    @property
    def channels(self) -> int:
        return self._f

    @property
    def pe(self) -> int:
        return self._pe

    @property
    def groups(self) -> int:
        """Groups per position, ``NF = F / PE``."""
        return self._f // self._pe

    @property
    def buffer_bits(self) -> int:
        """Row-buffer bits, ``W_q·F``."""
        return self._g.pooled_width * self._f

    @staticmethod
    def combine(a, b):
        """Pooling of two bit vectors: OR (the maximum of ±1 activations, SPEC.md §14)."""
        return a | b

    def elaborate(self, platform):
        m = Module()
        g, NF, pe = self._g, self.groups, self._pe
        Q, Wq = g.pool, g.pooled_width
        Hc, Wc = conv_outputs(g)
        ins, o = self.i_stream, self.o_stream
        m.submodules.rowbuf = buf = memory.Memory(shape=pe, depth=max(2, Wq * NF), init=[])
        rd, wr = buf.read_port(domain="comb"), buf.write_port()
        nf = Signal(range(max(2, NF)))
        ox, oy = Signal(range(max(2, Wc))), Signal(range(max(2, Hc)))
        dx, dy = Signal(range(max(2, Q))), Signal(range(max(2, Q)))
        xq = Signal(range(max(2, Wq)))
        addr = Signal(range(max(2, Wq * NF)))
        m.d.comb += addr.eq(xq * NF + nf)
        fresh, emit = Signal(), Signal()
        m.d.comb += [fresh.eq((dx == 0) & (dy == 0)), emit.eq((dx == Q - 1) & (dy == Q - 1))]
        v = Signal(pe)  # the window's OR so far, this group included
        m.d.comb += [rd.addr.eq(addr), v.eq(Mux(fresh, ins.payload.bits, self.combine(ins.payload.bits, rd.data)))]
        accept = Signal()
        m.d.comb += [ins.ready.eq(~o.valid | o.ready), accept.eq(ins.valid & ins.ready)]
        m.d.comb += [wr.addr.eq(addr), wr.data.eq(v), wr.en.eq(accept)]
        with m.If(accept):
            m.d.sync += [o.valid.eq(emit), o.payload.bits.eq(v)]
        with m.Elif(o.ready):
            m.d.sync += o.valid.eq(0)
        # walk (oy, ox, nf) with (dy, dx) the position inside its pooling window, xq its column
        with m.If(accept):
            m.d.sync += nf.eq(Mux(nf == NF - 1, 0, nf + 1))
            with m.If(nf == NF - 1):
                end_x, end_dx = ox == Wc - 1, dx == Q - 1
                m.d.sync += [ox.eq(Mux(end_x, 0, ox + 1)), dx.eq(Mux(end_dx, 0, dx + 1))]
                with m.If(end_x):
                    m.d.sync += [xq.eq(0), oy.eq(Mux(oy == Hc - 1, 0, oy + 1)),
                                 dy.eq(Mux(dy == Q - 1, 0, dy + 1))]
                with m.Elif(end_dx):
                    m.d.sync += xq.eq(xq + 1)
        return m


def build(height: int = 8, width: int = 8, pool: int = 2, channels: int = 8,
          pe: int = 2) -> Pool:
    """A :class:`Pool` after a 1x1 convolution of an ``height x width`` map, from plain
    integers, for ``bitswarm verilog --component pool``."""
    return Pool(ConvGeometry(1, height, width, 1, 1, 0, pool), channels=channels, pe=pe)
