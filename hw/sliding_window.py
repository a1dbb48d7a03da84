"""Sliding-window generator: a feature map's pixel stream in, every window's input slices out.

The convolution front end of the dataflow accelerator (FINN's ConvolutionInputGenerator): it
turns the channel-last raster stream of one map (SPEC.md §14) into the ``K·K·C``-element
windows a :class:`~bitswarm.hw.mac_array.MACArray` folded at ``SIMD`` consumes as its input
vectors, in ``(ky, kx, c)`` order, with the encoded-zero padding injected and the stride
applied. The MAC array then is the convolution: ``PE`` output channels in parallel, ``SIMD``
window elements per cycle.

Folding rule (:func:`~bitswarm.hw.plan.window_split`): either ``SIMD`` divides ``C`` — a slice
is ``SIMD`` consecutive channels of one pixel, chunk ``cg`` of ``CG = C / SIMD``, and a window
is ``SF = K·K·CG`` slices — or ``SIMD = J·C`` with ``J`` dividing ``K`` — a slice is ``J``
neighbouring pixels of one kernel row, all channels, and a window is ``SF = K·K / J`` slices.
Either way ``SF = K·K·C / SIMD``. The line buffer is ``J`` banks of pixel chunks (pixel ``x``
of a row in bank ``(x + P) mod J``), so one output slice is one read of each bank.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.conv import ConvGeometry
from bitswarm.golden.errors import ConfigError

from .plan import MEM_ATTRS, conv_outputs, line_mem_style, line_rows, window_split

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
        The map (``C x H x W``), kernel ``K``, stride ``s``, padding ``P`` and pool ``Q`` (the
        rows and columns pooling would drop are not generated).
    simd : int
        Elements per output slice: a divisor of ``C``, or ``J·C`` with ``J`` dividing ``K``.
    bits : int
        Bits per element: 1 for a hidden map (activation bits), ``B`` for a first layer's
        unsigned inputs.

    Members
    -------
    i_stream : ``In(stream.Signature(StructLayout({"x": ArrayLayout(unsigned(bits), L)})))``
        The map in HWC raster order in chunks of ``L = SIMD / J`` elements (``SIMD``, or one
        whole pixel when ``J > 1``), ``H·W·CG`` transfers per image: transfer
        ``(y·W + x)·CG + cg`` carries channels ``cg·L .. cg·L + L - 1`` of pixel ``(y, x)``.
    o_stream : ``Out(stream.Signature(StructLayout({"x": ArrayLayout(unsigned(bits), simd)})))``
        The windows of the computed output positions (:func:`~bitswarm.hw.plan.conv_outputs`:
        ``H_o x W_o`` less the rows and columns that fill no ``Q x Q`` pooling window, which
        would be dropped) in raster order, each ``SF`` transfers in window order ``(ky, kx, c)``:
        slice ``(ky, g, cg)`` holds channels ``cg·L ..`` of the ``J`` pixels ``(oy·s - P + ky,
        ox·s - P + g·J + t)``, ``t < J``, lane ``t·L + c``; a position in the padding reads the
        encoded value 0 (bit 0 = -1, or the integer 0). This is a
        :class:`~bitswarm.hw.mac_array.MACArray`'s ``i_stream`` layout.

    Line buffer
    -----------
    ``R = line_rows(geometry)`` rows (:func:`~bitswarm.hw.plan.line_rows`: the rows one output
    row reads plus those the next output row adds, or at the end of an image the rows of its
    next image's first output row; 4 rows for a stride-1 3x3 window with padding 1), in ``J``
    banks of ``R·ceil((W + P_J) / J)·CG`` words of ``L·bits`` bits (``P_J = P`` for ``J > 1``,
    else 0), written around a ring in arrival order. Output row ``oy`` starts once the rows
    ``conv_rows(geometry)[oy]`` names are complete, and frees its ``release`` rows when its
    last slice has been read (:func:`~bitswarm.hw.plan.conv_rows`). Memory style:
    :func:`~bitswarm.hw.plan.line_mem_style` (block RAM from 32 words or 1 kbit).

    Timing
    ------
    Input: one transfer per cycle while a row slot is free; ``i_stream.ready`` comes from
    registers only (mid-row, or fewer than ``R`` rows held). Output: one slice per cycle; a
    slice is offered the cycle after its reads are issued (the memories' read registers are
    the output register). The first slice of an output row waits until its rows are written:
    the cycle after the write of the last chunk it needs. Backpressure: the read side advances
    only when ``o_stream`` can take a transfer (``~valid | ready``, a combinational path from
    ``o_stream.ready`` to the memories' read enables); nothing is dropped. Latency of an
    isolated image: the last needed chunk of the first output row is accepted in cycle ``t``;
    the first slice is offered in cycle ``t + 2``.

    Raises
    ------
    TypeError
        ``geometry`` is not a :class:`ConvGeometry`, or ``simd`` / ``bits`` not integers.
    ConfigError
        ``simd`` is neither a divisor of ``C`` nor ``J·C`` with ``J`` dividing ``K``, or
        ``bits`` is not in 1..8.
    """

    def __init__(self, geometry: ConvGeometry, *, simd: int = 1, bits: int = 1):
        if not isinstance(geometry, ConvGeometry):
            raise TypeError(f"geometry must be a ConvGeometry, not {geometry!r}")
        for name, v in (("simd", simd), ("bits", bits)):
            if not _is_int(v):
                raise TypeError(f"{name} must be an integer, not {v!r}")
        self._cg, self._j = window_split(geometry, simd)
        if not 1 <= bits <= 8:
            raise ConfigError(f"bits must be in 1..8, not {bits}")
        self._g, self._simd, self._bits = geometry, simd, bits
        super().__init__({
            "i_stream": In(stream.Signature(data.StructLayout({
                "x": data.ArrayLayout(unsigned(bits), self.lanes)}))),
            "o_stream": Out(stream.Signature(data.StructLayout({
                "x": data.ArrayLayout(unsigned(bits), simd)}))),
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
        """Transfers per pixel, ``CG``."""
        return self._cg

    @property
    def pixels(self) -> int:
        """Pixels per output slice, ``J`` (the line buffer's banks)."""
        return self._j

    @property
    def lanes(self) -> int:
        """Elements per input transfer, ``L = SIMD / J``."""
        return self._simd // self._j

    @property
    def rows(self) -> int:
        """Line-buffer rows ``R``."""
        return line_rows(self._g)

    @property
    def slices(self) -> int:
        """Transfers per window, ``SF = K·K·C / SIMD``."""
        return self._g.window // self._simd

    @property
    def offset(self) -> int:
        """Bank coordinate of map column 0: pixel ``x`` sits in bank ``(x + offset) mod J``."""
        return self._g.pad if self._j > 1 else 0

    @property
    def row_words(self) -> int:
        """Words of one row in one bank, ``ceil((W + offset) / J)·CG``."""
        return -(-(self._g.in_width + self.offset) // self._j) * self._cg

    @property
    def depth(self) -> int:
        """Words per bank, ``R·row_words``."""
        return self.rows * self.row_words

    @property
    def width(self) -> int:
        """Word width, ``L·bits``."""
        return self.lanes * self._bits

    def mem_style(self) -> str:
        """The line buffer's memory style (:func:`~bitswarm.hw.plan.line_mem_style`)."""
        return line_mem_style(self.width, self.depth)

    def pad_word(self) -> int:
        """The slice a padding position reads: every lane the encoded value 0 (SPEC.md §14)."""
        return 0

    def step(self) -> tuple[int, int]:
        """Map rows and columns between consecutive windows: ``(s, s)``."""
        return self._g.stride, self._g.stride

    # -- gateware ----------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        banks = []
        for b in range(self._j):
            mem = memory.Memory(shape=unsigned(self.width), depth=self.depth, init=[],
                                attrs=MEM_ATTRS[self.mem_style()])
            m.submodules[f"lbuf{b}" if self._j > 1 else "lbuf"] = mem
            banks.append(mem)
        inc, held, filled = self._writer(m, [b.write_port() for b in banks])
        dec = self._reader(m, [b.read_port() for b in banks], filled)
        # rows held (started) and rows complete: the writer adds, the reader's releases free
        m.d.sync += [held.eq(held + inc[0] - dec), filled.eq(filled + inc[1] - dec)]
        return m

    def _writer(self, m, wrs):
        """Write side: chunks into the ring in arrival order; a new row needs a free slot."""
        g, CG, R, J, off = self._g, self._cg, self.rows, self._j, self.offset
        ins = self.i_stream
        held = Signal(_span(R))  # rows started and not released
        filled = Signal(_span(R))  # rows complete and not released
        mid = Signal()  # a row is partly written
        wx = Signal(range(max(2, g.in_width)))
        wcg = Signal(range(max(2, CG)))
        wq = Signal(range(max(2, self.row_words)), init=off // J)  # (x + off) // J
        wr = Signal(range(max(2, J)), init=off % J)  # (x + off) % J: the bank
        wslot = Signal(range(max(2, R)))
        m.d.comb += ins.ready.eq(mid | (held < R))
        accept = Signal()
        m.d.comb += accept.eq(ins.valid & ins.ready)
        row_end, pix_end = Signal(), Signal()
        m.d.comb += [pix_end.eq(wcg == CG - 1), row_end.eq((wx == g.in_width - 1) & pix_end)]
        addr = Signal(range(self.depth))
        m.d.comb += addr.eq(wslot * self.row_words + wq * CG + wcg)
        for b, port in enumerate(wrs):
            m.d.comb += [port.addr.eq(addr), port.data.eq(ins.payload.x.as_value()),
                         port.en.eq(accept & (wr == b))]
        start, done = Signal(), Signal()
        m.d.comb += [start.eq(accept & ~mid), done.eq(accept & row_end)]
        with m.If(accept):
            m.d.sync += [mid.eq(~row_end), wcg.eq(Mux(pix_end, 0, wcg + 1))]
            with m.If(row_end):
                m.d.sync += [wx.eq(0), wq.eq(off // J), wr.eq(off % J),
                             wslot.eq(Mux(wslot == R - 1, 0, wslot + 1))]
            with m.Elif(pix_end):
                m.d.sync += wx.eq(wx + 1)
                if J > 1:
                    m.d.sync += [wr.eq(Mux(wr == J - 1, 0, wr + 1)),
                                 wq.eq(Mux(wr == J - 1, wq + 1, wq))]
                else:
                    m.d.sync += wq.eq(wq + 1)
        return (start, done), held, filled

    def _reader(self, m, rds, filled):
        """Read side: the window walk ``(oy, ox, ky, g, cg)``, one slice per cycle."""
        g, CG, R, J, off = self._g, self._cg, self.rows, self._j, self.offset
        K, P, H, W = g.kernel, g.pad, g.in_height, g.in_width
        s, sx = self.step()
        G = K // J  # slices per kernel row and chunk
        Ho, Wo = conv_outputs(g)
        o = self.o_stream
        span = max(H, W) + K + max(s, sx) + P + J
        pos = signed(span.bit_length() + 1)
        oy = Signal(range(max(2, Ho)))
        ox = Signal(range(max(2, Wo)))
        ky = Signal(range(max(2, K)))
        kg = Signal(range(max(2, G)))
        cg = Signal(range(max(2, CG)))
        y0 = Signal(pos, init=-P)  # oy·s - P
        # the window's bank coordinate of its left column, x0 + off = qb·J + rb (x0 = ox·s - P)
        base_q, base_r = divmod(off - P, J)
        qb = Signal(pos, init=base_q)
        rb = Signal(range(max(2, J)), init=base_r)
        head = Signal(range(max(2, R)))  # ring slot of map row lo(oy)
        # this output row's rows: lo, need, release (plan.conv_rows)
        lo, top_next = Signal(pos), Signal(pos)
        m.d.comb += [lo.eq(Mux(y0 < 0, 0, y0)), top_next.eq(Mux(y0 + s < 0, 0, y0 + s))]
        last_row = Signal()
        m.d.comb += last_row.eq(oy == Ho - 1)
        hi = Signal(pos)
        m.d.comb += hi.eq(Mux(last_row | (y0 + K > H), H, y0 + K))
        need, release = Signal(pos), Signal(pos)
        m.d.comb += [need.eq(hi - lo), release.eq(Mux(last_row, H - lo, top_next - lo))]
        # the slice now up for issue: map row yy, bank coordinates q·J + rb + t of its lanes
        yy, q = Signal(pos), Signal(pos)
        m.d.comb += [yy.eq(y0 + ky), q.eq(qb + kg)]
        row_in = Signal()
        m.d.comb += row_in.eq((yy >= 0) & (yy < H))
        inside = Signal(J)
        for t in range(J):
            xt = Signal(pos, name=f"x{t}")
            m.d.comb += xt.eq(q * J + rb + t - off)
            m.d.comb += inside[t].eq(row_in & (xt >= 0) & (xt < W))
        slot = Signal(range(2 * R))
        m.d.comb += slot.eq(head + (yy - lo)[: slot.shape().width])
        slot_w = Signal(range(R))
        m.d.comb += slot_w.eq(Mux(slot >= R, slot - R, slot))
        row_start = Signal()
        m.d.comb += row_start.eq((ox == 0) & (ky == 0) & (kg == 0) & (cg == 0))
        en, issue = Signal(), Signal()
        m.d.comb += [
            en.eq(~o.valid | o.ready),
            issue.eq(en & (~row_start | (filled >= need))),
        ]
        qw = max(1, (self.row_words - 1).bit_length() + 1)
        for b, rd in enumerate(rds):
            word = Signal(pos, name=f"word{b}")  # bank b serves lane (b - rb) mod J
            m.d.comb += word.eq(q + (b < rb) if J > 1 else q)
            m.d.comb += [rd.addr.eq(slot_w * self.row_words + word[:qw] * CG + cg), rd.en.eq(en)]
        pad = Signal(J)
        rot = Signal.like(rb)
        with m.If(en):
            m.d.sync += [o.valid.eq(issue), pad.eq(~inside), rot.eq(rb)]
        # lane group t comes from bank (rot + t) mod J; padding lanes read the encoded zero
        pw = self.pad_word()
        for t in range(J):
            lane = Signal(self.width, name=f"lane{t}")
            if J == 1:
                m.d.comb += lane.eq(rds[0].data)
            else:
                with m.Switch(rot):
                    for r in range(J):
                        with m.Case(r):
                            m.d.comb += lane.eq(rds[(r + t) % J].data)
            m.d.comb += o.payload.x.as_value()[t * self.width:(t + 1) * self.width].eq(
                Mux(pad[t], (pw >> (t * self.width)) & ((1 << self.width) - 1), lane))
        # walk (oy, ox, ky, g, cg); the row's last slice releases its rows
        end_cg, end_kg, end_ky = cg == CG - 1, kg == G - 1, ky == K - 1
        end_win = end_cg & end_kg & end_ky
        end_row = end_win & (ox == Wo - 1)
        dec = Signal(_span(R))
        with m.If(issue):
            m.d.sync += cg.eq(Mux(end_cg, 0, cg + 1))
            with m.If(end_cg):
                m.d.sync += kg.eq(Mux(end_kg, 0, kg + 1))
                with m.If(end_kg):
                    m.d.sync += ky.eq(Mux(end_ky, 0, ky + 1))
            with m.If(end_win):
                m.d.sync += ox.eq(Mux(ox == Wo - 1, 0, ox + 1))
                with m.If(ox == Wo - 1):
                    m.d.sync += [qb.eq(base_q), rb.eq(base_r)]
                with m.Else():  # x0 += sx: (qb, rb) += divmod(sx, J)
                    dq, dr = divmod(sx, J)
                    if J > 1:
                        carry = rb + dr >= J
                        m.d.sync += [rb.eq(Mux(carry, rb + dr - J, rb + dr)),
                                     qb.eq(qb + dq + carry)]
                    else:
                        m.d.sync += qb.eq(qb + dq)
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
