"""Sliding-window generator: a feature map's pixel stream in, every window's input slices out.

The convolution front end of the dataflow accelerator (FINN's ConvolutionInputGenerator): it
turns the channel-last raster stream of one map (SPEC.md §14) into the ``K·K·C``-element
windows a :class:`~bitswarm.hw.mac_array.MACArray` folded at ``SIMD`` consumes as its input
vectors, in ``(ky, kx, c)`` order, with the encoded-zero padding injected and the stride
applied. The MAC array then is the convolution: ``PE`` output channels in parallel, ``SIMD``
window elements per cycle.

Folding rule: ``SIMD`` divides ``C``, so one slice is ``SIMD`` consecutive channels of one
pixel (chunk ``cg`` of ``CG = C / SIMD``) and a window is ``SF = K·K·CG`` slices; the line
buffer is addressed in such chunks (one write per input transfer, one read per output slice).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.conv import ConvGeometry
from bitswarm.golden.errors import ConfigError

from .plan import MEM_ATTRS, auto_mem_style, conv_outputs, line_rows

__all__ = ["SlidingWindow", "build"]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _span(n: int):
    """Shape of a counter over ``0 .. n`` inclusive (at least 1 bit)."""
    return unsigned(max(1, n.bit_length()))


class SlidingWindow(wiring.Component):
    """Line-buffered sliding-window generator for one convolution.

    Parameters
    ----------
    geometry : ConvGeometry
        The map (``C x H x W``), kernel ``K``, stride ``s`` and padding ``P``; its ``pool`` is
        not used here.
    simd : int
        Elements per transfer, in and out; must divide ``C``.
    bits : int
        Bits per element: 1 for a hidden map (activation bits), ``B`` for a first layer's
        unsigned inputs.

    Members
    -------
    i_stream : ``In(stream.Signature(StructLayout({"x": ArrayLayout(unsigned(bits), simd)})))``
        The map in HWC raster order, ``H·W·CG`` transfers per image: transfer ``(y·W + x)·CG +
        cg`` carries channels ``cg·SIMD .. cg·SIMD + SIMD - 1`` of pixel ``(y, x)``.
    o_stream : ``Out(stream.Signature(StructLayout({"x": ArrayLayout(unsigned(bits), simd)})))``
        The windows of the computed output positions (:func:`~bitswarm.hw.plan.conv_outputs`:
        ``H_o x W_o`` less the rows and columns that fill no ``Q x Q`` pooling window, which
        would be dropped) in raster order, each ``SF = K·K·CG`` transfers in
        ``(ky, kx, cg)`` order: the chunk ``cg`` of map pixel ``(oy·s - P + ky, ox·s - P + kx)``,
        or all-zero lanes (the encoded value 0: bit 0 = -1, or the integer 0) where that
        position lies in the padding. This is a :class:`~bitswarm.hw.mac_array.MACArray`'s
        ``i_stream`` layout.

    Line buffer
    -----------
    ``R = line_rows(geometry)`` rows of ``W·CG`` words of ``SIMD·bits`` bits
    (:func:`~bitswarm.hw.plan.line_rows`: the rows one output row reads plus those the next
    output row adds, or at the end of an image the rows of its next image's first output row;
    4 rows for a stride-1 3x3 window with padding 1), written in order around a ring. Output
    row ``oy`` starts once the rows ``conv_rows(geometry)[oy]`` names are complete, and frees
    its ``release`` rows when its last slice has been read
    (:func:`~bitswarm.hw.plan.conv_rows`). Memory style: :func:`~bitswarm.hw.plan.auto_mem_style`
    (block RAM from 1 kbit).

    Timing
    ------
    Input: one transfer per cycle while a row slot is free; ``i_stream.ready`` comes from
    registers only (mid-row, or fewer than ``R`` rows held). Output: one slice per cycle; a
    slice is offered the cycle after its read is issued (the memory's read register is the
    output register). The first slice of an output row waits until its rows are written: the
    cycle after the write of the last chunk it needs. Backpressure: the read side advances
    only when ``o_stream`` can take a transfer (``~valid | ready``, a combinational path from
    ``o_stream.ready`` to the memory's read enable); nothing is dropped. Latency of an
    isolated image: the last needed chunk of the first output row is accepted in cycle ``t``;
    the first slice is offered in cycle ``t + 2``.

    Raises
    ------
    TypeError
        ``geometry`` is not a :class:`ConvGeometry`, or ``simd`` / ``bits`` not integers.
    ConfigError
        ``simd`` does not divide ``C``, or ``bits`` is not in 1..8.
    """

    def __init__(self, geometry: ConvGeometry, *, simd: int = 1, bits: int = 1):
        if not isinstance(geometry, ConvGeometry):
            raise TypeError(f"geometry must be a ConvGeometry, not {geometry!r}")
        for name, v in (("simd", simd), ("bits", bits)):
            if not _is_int(v):
                raise TypeError(f"{name} must be an integer, not {v!r}")
        c = geometry.in_channels
        if not 1 <= simd <= c or c % simd:
            raise ConfigError(f"simd must divide the input channels C = {c}, not {simd}")
        if not 1 <= bits <= 8:
            raise ConfigError(f"bits must be in 1..8, not {bits}")
        self._g, self._simd, self._bits = geometry, simd, bits
        layout = data.StructLayout({"x": data.ArrayLayout(unsigned(bits), simd)})
        super().__init__({
            "i_stream": In(stream.Signature(layout)),
            "o_stream": Out(stream.Signature(layout)),
        })

    # -- parameters --------------------------------------------------------------------------
    @property
    def geometry(self) -> ConvGeometry:
        return self._g

    @property
    def simd(self) -> int:
        return self._simd

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def chunks(self) -> int:
        """Transfers per pixel, ``CG = C / SIMD``."""
        return self._g.in_channels // self._simd

    @property
    def rows(self) -> int:
        """Line-buffer rows ``R``."""
        return line_rows(self._g)

    @property
    def slices(self) -> int:
        """Transfers per window, ``SF = K·K·CG``."""
        return self._g.kernel * self._g.kernel * self.chunks

    @property
    def depth(self) -> int:
        """Line-buffer words, ``R·W·CG``."""
        return self.rows * self._g.in_width * self.chunks

    @property
    def width(self) -> int:
        """Line-buffer word width, ``SIMD·bits``."""
        return self._simd * self._bits

    def mem_style(self) -> str:
        return auto_mem_style(self.width, self.depth, writable=True)

    def pad_word(self) -> int:
        """The slice a padding position reads: every lane the encoded value 0 (SPEC.md §14)."""
        return 0

    def step(self) -> tuple[int, int]:
        """Map rows and columns between consecutive windows: ``(s, s)``."""
        return self._g.stride, self._g.stride

    # -- gateware ----------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        m.submodules.lbuf = lbuf = memory.Memory(shape=unsigned(self.width), depth=self.depth,
                                                 init=[], attrs=MEM_ATTRS[self.mem_style()])
        inc, held, filled = self._writer(m, lbuf.write_port())
        dec = self._reader(m, lbuf.read_port(), filled)
        # rows held (started) and rows complete: the writer adds, the reader's releases free
        m.d.sync += [held.eq(held + inc[0] - dec), filled.eq(filled + inc[1] - dec)]
        return m

    def _writer(self, m, wr):
        """Write side: chunks into the ring in arrival order; a new row needs a free slot."""
        g, CG, R = self._g, self.chunks, self.rows
        ins = self.i_stream
        held = Signal(_span(R))  # rows started and not released
        filled = Signal(_span(R))  # rows complete and not released
        mid = Signal()  # a row is partly written
        wx = Signal(range(max(2, g.in_width)))
        wcg = Signal(range(max(2, CG)))
        waddr = Signal(range(self.depth))
        m.d.comb += ins.ready.eq(mid | (held < R))
        accept = Signal()
        m.d.comb += accept.eq(ins.valid & ins.ready)
        row_end = Signal()
        m.d.comb += row_end.eq((wx == g.in_width - 1) & (wcg == CG - 1))
        m.d.comb += [wr.addr.eq(waddr), wr.data.eq(ins.payload.x.as_value()), wr.en.eq(accept)]
        start, done = Signal(), Signal()
        m.d.comb += [start.eq(accept & ~mid), done.eq(accept & row_end)]
        with m.If(accept):
            m.d.sync += [
                waddr.eq(Mux(waddr == self.depth - 1, 0, waddr + 1)),
                mid.eq(~row_end),
                wcg.eq(Mux(wcg == CG - 1, 0, wcg + 1)),
            ]
            with m.If(wcg == CG - 1):
                m.d.sync += wx.eq(Mux(wx == g.in_width - 1, 0, wx + 1))
        return (start, done), held, filled

    def _reader(self, m, rd, filled):
        """Read side: the window walk ``(oy, ox, ky, kx, cg)``, one slice per cycle."""
        g, CG, R = self._g, self.chunks, self.rows
        K, P, H, W = g.kernel, g.pad, g.in_height, g.in_width
        s, sx = self.step()
        Ho, Wo = conv_outputs(g)
        o = self.o_stream
        span = max(H, W) + K + max(s, sx) + P
        pos = signed(span.bit_length() + 1)
        oy = Signal(range(max(2, Ho)))
        ox = Signal(range(max(2, Wo)))
        ky = Signal(range(max(2, K)))
        kx = Signal(range(max(2, K)))
        cg = Signal(range(max(2, CG)))
        y0 = Signal(pos, init=-P)  # oy·s - P
        x0 = Signal(pos, init=-P)  # ox·s - P
        head = Signal(range(max(2, R)))  # ring slot of map row lo(oy)
        # this output row's rows: lo, need, release (SPEC geometry, plan.conv_rows)
        lo, top_next = Signal(pos), Signal(pos)
        m.d.comb += [lo.eq(Mux(y0 < 0, 0, y0)), top_next.eq(Mux(y0 + s < 0, 0, y0 + s))]
        last_row = Signal()
        m.d.comb += last_row.eq(oy == Ho - 1)
        hi = Signal(pos)
        m.d.comb += hi.eq(Mux(last_row | (y0 + K > H), H, y0 + K))
        need = Signal(pos)
        release = Signal(pos)
        m.d.comb += [need.eq(hi - lo), release.eq(Mux(last_row, H - lo, top_next - lo))]
        # the slice now up for issue
        yy, xx = Signal(pos), Signal(pos)
        m.d.comb += [yy.eq(y0 + ky), xx.eq(x0 + kx)]
        inside = Signal()
        m.d.comb += inside.eq((yy >= 0) & (yy < H) & (xx >= 0) & (xx < W))
        slot = Signal(range(2 * R))
        m.d.comb += slot.eq(head + (yy - lo)[: slot.shape().width])
        slot_w = Signal(range(R))
        m.d.comb += slot_w.eq(Mux(slot >= R, slot - R, slot))
        addr = Signal(range(self.depth))
        m.d.comb += addr.eq(slot_w * (W * CG) + xx[: max(1, (W - 1).bit_length())] * CG + cg)
        row_start = Signal()
        m.d.comb += row_start.eq((ox == 0) & (ky == 0) & (kx == 0) & (cg == 0))
        en, issue = Signal(), Signal()
        m.d.comb += [
            en.eq(~o.valid | o.ready),
            issue.eq(en & (~row_start | (filled >= need))),
            rd.addr.eq(addr),
            rd.en.eq(en),
        ]
        pad = Signal()
        with m.If(en):
            m.d.sync += [o.valid.eq(issue), pad.eq(~inside)]
        m.d.comb += o.payload.x.as_value().eq(Mux(pad, self.pad_word(), rd.data))
        # walk (oy, ox, ky, kx, cg); the row's last slice releases its rows
        end_cg, end_kx, end_ky = cg == CG - 1, kx == K - 1, ky == K - 1
        end_win = end_cg & end_kx & end_ky
        end_row = end_win & (ox == Wo - 1)
        dec = Signal(_span(R))
        with m.If(issue):
            m.d.sync += cg.eq(Mux(end_cg, 0, cg + 1))
            with m.If(end_cg):
                m.d.sync += kx.eq(Mux(end_kx, 0, kx + 1))
                with m.If(end_kx):
                    m.d.sync += ky.eq(Mux(end_ky, 0, ky + 1))
            with m.If(end_win):
                m.d.sync += [ox.eq(Mux(ox == Wo - 1, 0, ox + 1)),
                             x0.eq(Mux(ox == Wo - 1, -P, x0 + sx))]
            with m.If(end_row):
                m.d.comb += dec.eq(release)
                nh = Signal(range(2 * R))
                m.d.comb += nh.eq(head + release[: nh.shape().width])
                m.d.sync += [oy.eq(Mux(last_row, 0, oy + 1)),
                             y0.eq(Mux(last_row, -P, y0 + s)),
                             head.eq(Mux(nh >= R, nh - R, nh))]
        return dec


def build(channels: int = 2, height: int = 8, width: int = 8, kernel: int = 3, stride: int = 1,
          pad: int = 1, pool: int = 1, simd: int = 1, bits: int = 1) -> SlidingWindow:
    """A :class:`SlidingWindow` from plain integers, for ``bitswarm verilog --component
    sliding-window``."""
    return SlidingWindow(ConvGeometry(channels, height, width, kernel, stride, pad, pool),
                         simd=simd, bits=bits)
