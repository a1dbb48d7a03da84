"""FINN-style folded XNOR-popcount MAC array for one golden dense layer.

The component computes exactly :func:`bitswarm.golden.layer.preact` — the integer
pre-activations ``z[j]`` of a :class:`~bitswarm.golden.layer.LayerConfig` — for a stream of
input vectors, with PE output neurons and SIMD input elements per clock cycle (a
:class:`~bitswarm.hw.plan.LayerFold`) and the layer's weights in a ROM built from the golden
weight tensor.

Schedule (one input vector)
---------------------------
With ``SF = ceil(N / SIMD)`` input folds, ``NF = ceil(M / PE)`` neuron folds and
``B = input_bits`` bit-planes, the sequencer walks, one step per cycle::

    for nf in range(NF):          # output group: neurons nf*PE .. nf*PE + PE - 1
        for b in range(B):        # input bit-plane (B = 1: the ±1 bit itself)
            for sf in range(SF):  # input slice: elements sf*SIMD .. sf*SIMD + SIMD - 1
                ...

Step ``(nf, b, sf)`` XNORs (B = 1) or ANDs (B > 1) plane ``b`` of input slice ``sf`` with
all S swarm bit-planes of the PE neurons' weights for slice ``sf``, popcounts the S·SIMD
product bits of each PE neuron in one pipelined adder tree, and adds the count, shifted left
by ``b``, into that neuron's accumulator. Slices arrive once per vector and are stored in an
input buffer of three banks (``3·SF`` words): while one bank is computed the next vectors fill
the others, so the array never waits for its producer in steady state. When every slice is
used once (``NF·B = 1``) there is no buffer: each accepted slice is one step.

Arithmetic (exact, SPEC §3): with ``T_j = sum_b 2**b sum_s popcount(f(x_b, w_sj))`` and
``U = sum_b 2**b popcount(x_b)``,

- binary, B = 1: ``f = XNOR``, ``z_j = 2 T_j - S N``;
- binary, B > 1: ``f = AND``, ``z_j = 2 T_j - S U``;
- ternary (S = 1, planes mask ``m`` and sign ``s``): ``f = m AND XNOR(x, s)`` (B = 1) or
  ``m AND x_b AND s`` (B > 1), ``U_j = sum_b 2**b popcount(m_j AND x_b)`` (B > 1) or
  ``popcount(m_j)`` (B = 1), ``z_j = 2 T_j - U_j``.

Elements past N in the last slice are masked off, neurons past M in the last group read
all-zero weights and are forced to ``z = 0`` on the output.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.layer import LayerConfig

from .plan import BUFFER_BANKS, MEM_ATTRS, LayerFold, auto_mem_style, weight_planes

__all__ = ["MACArray", "build"]



def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _idx(n: int):
    """Shape of an index into ``n`` items, at least 1 bit (no 0-width signals in the Verilog)."""
    return unsigned(max(1, (n - 1).bit_length()))


def _popcount4(bits):
    """Popcount of up to 4 one-bit values as plain logic (each output bit is one LUT4)."""
    a, b, c, d = (list(bits) + [Const(0, 1)] * 4)[:4]
    s1, c1, s2, c2 = a ^ b, a & b, c ^ d, c & d
    k = s1 & s2
    return Const(0, 3) | ((c1 & c2) << 2 | (c1 ^ c2 ^ k) << 1 | (s1 ^ s2))


class MACArray(wiring.Component):
    """Folded XNOR-popcount matrix-vector unit: ``z = preact(cfg, x, weights)``.

    Parameters
    ----------
    cfg : LayerConfig
        The golden layer (N = ``n_in``, M = ``n_out``, S = ``swarm``, B = ``input_bits``,
        ``weights`` binary or ternary). ``output`` is ignored (scores are thresholded later).
    weights : array-like
        The golden weight tensor, ``cfg.weight_shape()``: ``[S, M, N]`` bits (binary) or
        ``[M, N]`` trits in {-1, 0, +1} (ternary). Stored in a ROM
        (:class:`amaranth.lib.memory.Memory`, ``NF·SF`` words of ``PE·P·SIMD`` bits, P = S
        planes, or 2 for ternary (mask, sign)); a one-word ROM becomes a constant, which
        synthesis folds into the XNOR gates. ``fold.mem`` sets the ROM's memory style.
    fold : LayerFold, optional
        PE (neurons in parallel, 1..M), SIMD (inputs per cycle, 1..N), pipeline (register
        stages inside each popcount adder tree, 0..``tree_depth``; registers are spread evenly
        over the levels) and memory style. Without it, the keywords ``pe`` (default 1),
        ``simd`` (default N) and ``pipeline`` (default 0) build one.

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"x": ArrayLayout(unsigned(B), SIMD)})))
        One input slice per transfer; a vector is SF consecutive transfers, slice ``sf``
        carrying elements ``sf*SIMD + i`` in lane ``i`` (bits ``i*B .. i*B+B-1``). Lanes past N
        in the last slice are ignored. For B = 1 lane bit 1 is +1 and 0 is -1 (golden
        encoding); for B > 1 lanes are unsigned pixels.
    o_stream : Out(stream.Signature(StructLayout({"z": ArrayLayout(signed(z_width), PE),
    "group": unsigned(max(1, ceil(log2(NF)))), "last": 1})))
        One transfer per output group: ``z[p]`` is ``z`` of neuron ``group*PE + p`` (0 for
        ``p`` past M in the last group), ``last`` marks the vector's final group.

    Timing
    ------
    Throughput: :meth:`cycles_per_vector` ``= NF · B · SF`` cycles per vector, exactly, when
    the next vector's slices have arrived by the time the current one finishes and ``o_stream``
    is always ready; one output group every ``B · SF`` cycles. ``i_stream.ready`` is high while
    a buffer bank is free (three vectors may be buffered), a register.

    Latency: a vector's steps start two cycles after its last slice is accepted (the registered
    write, then the bank's full flag), and the buffered slice is registered once more after its
    read (so the memory's output does not fan out to the PE trees directly); :attr:`latency` ``= pipeline + 3`` cycles pass from a group's last step to its result
    on ``o_stream``: 1 (ROM / buffer read) + ``pipeline`` (tree registers) + 1 (accumulator) +
    1 (output register, the head of the skid buffer, which also forms ``2T - S·U``). For V
    vectors offered back to back, the first input handshake in cycle 0 puts the last output
    handshake in cycle ``SF + V · cycles_per_vector() + latency + 1`` (:meth:`cycles`). Without a
    buffer (``NF·B = 1``) a step is issued in the cycle its slice is accepted, so the last
    output handshake is in cycle ``V · cycles_per_vector() + latency - 1``.

    Backpressure: the compute pipeline advances with one enable, a register that is high while
    the 2-entry output skid buffer has room after the current cycle. When ``o_stream`` stalls,
    results fill the buffer, then the steps stop until the consumer takes one; the input side
    keeps filling free banks. ``o_stream.valid`` and the payload come straight from registers.
    No data is dropped or reordered.

    Widths and overflow: tree sums are sized exactly; ``T`` and ``U`` accumulators are
    unsigned, ``bit_length(N · S · x_max)`` and ``bit_length(N · x_max)`` bits; ``z`` is
    ``cfg.z_width`` bits signed (golden's width, which also holds ``z - theta``), while
    ``|z| <= cfg.z_bound``. Nothing can overflow.

    Raises
    ------
    TypeError
        ``cfg`` is not a :class:`LayerConfig`, or a fold parameter is not an integer.
    ConfigError
        A fold parameter is out of range, or the weights have the wrong shape or values.
    """

    @staticmethod
    def check(cfg: LayerConfig, weights, fold: LayerFold | None = None, *, pe: int = 1,
              simd: int | None = None, pipeline: int = 0):
        """Validate constructor arguments without building anything (so a failed ``build()``
        leaves no half-made component behind); returns ``(weights, fold)``."""
        if not isinstance(cfg, LayerConfig):
            raise TypeError(f"cfg must be a LayerConfig, not {cfg!r}")
        if fold is None:
            if simd is None:
                simd = cfg.n_in
            for name, v in (("pe", pe), ("simd", simd), ("pipeline", pipeline)):
                if not _is_int(v):
                    raise TypeError(f"{name} must be an integer, not {v!r}")
            fold = LayerFold(pe, simd, pipeline)
        elif not isinstance(fold, LayerFold):
            raise TypeError(f"fold must be a LayerFold, not {fold!r}")
        for name, v, hi in (("pe", fold.pe, cfg.n_out), ("simd", fold.simd, cfg.n_in)):
            if not _is_int(v):
                raise TypeError(f"{name} must be an integer, not {v!r}")
            if not 1 <= v <= hi:
                raise ConfigError(f"{name} must be in 1..{hi} for this layer, not {v}")
        depth = fold.tree_depth(cfg)
        if not _is_int(fold.pipeline):
            raise TypeError(f"pipeline must be an integer, not {fold.pipeline!r}")
        if not 0 <= fold.pipeline <= depth:
            raise ConfigError(
                f"pipeline must be in 0..{depth} (the adder tree's depth for "
                f"S*SIMD = {cfg.swarm * fold.simd}), not {fold.pipeline}")
        fold.check(cfg)
        w = np.asarray(weights.cpu() if hasattr(weights, "cpu") else weights)
        if tuple(w.shape) != cfg.weight_shape():
            raise ConfigError(f"weights must have shape {cfg.weight_shape()}, found {tuple(w.shape)}")
        lo = 0 if cfg.weights == "binary" else -1
        if w.size and (w.min() < lo or w.max() > 1 or not np.issubdtype(w.dtype, np.integer)):
            kind = "bits 0/1" if cfg.weights == "binary" else "trits -1/0/+1"
            raise ConfigError(f"{cfg.weights} weights must be integer {kind}")
        return w, fold

    def __init__(self, cfg: LayerConfig, weights, fold: LayerFold | None = None, *,
                 pe: int = 1, simd: int | None = None, pipeline: int = 0):
        w, fold = self.check(cfg, weights, fold, pe=pe, simd=simd, pipeline=pipeline)
        self._cfg = cfg
        self._fold = fold
        self._planes = weight_planes(cfg)
        self._w = w.astype(np.int8)
        self._i_layout = data.StructLayout({"x": data.ArrayLayout(unsigned(cfg.input_bits),
                                                                  fold.simd)})
        self._o_layout = data.StructLayout({
            "z": data.ArrayLayout(signed(cfg.z_width), fold.pe),
            "group": _idx(self.nf),
            "last": 1,
        })
        super().__init__({
            "i_stream": In(stream.Signature(self._i_layout)),
            "o_stream": Out(stream.Signature(self._o_layout)),
        })

    # -- parameters --------------------------------------------------------------------------
    @property
    def cfg(self) -> LayerConfig:
        return self._cfg

    @property
    def fold(self) -> LayerFold:
        return self._fold

    @property
    def pe(self) -> int:
        return self._fold.pe

    @property
    def simd(self) -> int:
        return self._fold.simd

    @property
    def pipeline(self) -> int:
        return self._fold.pipeline

    @property
    def sf(self) -> int:
        """Input folds per bit-plane, ``ceil(N / SIMD)``."""
        return self._fold.sf(self._cfg)

    @property
    def nf(self) -> int:
        """Neuron folds (output groups per vector), ``ceil(M / PE)``."""
        return self._fold.nf(self._cfg)

    @property
    def tree_depth(self) -> int:
        """Levels of each popcount adder tree; the largest allowed ``pipeline``."""
        return self._fold.tree_depth(self._cfg)

    @property
    def latency(self) -> int:
        """Cycles from issuing a group's last step to its result being valid: ``pipeline + 3``."""
        return self._fold.mac_latency()

    @property
    def buffered(self) -> bool:
        """Whether the array has an input buffer (slices are reused: ``NF·B > 1``)."""
        return self._fold.buffered(self._cfg)

    def cycles_per_vector(self) -> int:
        """Cycles per input vector at full rate: ``ceil(M/PE) · B · ceil(N/SIMD)``."""
        return self._fold.cycles_per_vector(self._cfg)

    def cycles(self, n_vectors: int) -> int:
        """Cycles from the first input handshake to the last output handshake, inclusive, for
        ``n_vectors`` vectors offered back to back (no idle input, no backpressure)."""
        if not self.buffered:
            return n_vectors * self.cycles_per_vector() + self.latency
        return self.sf + 2 + n_vectors * self.cycles_per_vector() + self.latency


    # -- software helpers for drivers and checkers -------------------------------------------
    def to_slices(self, x) -> np.ndarray:
        """Input vectors ``[batch, N]`` as the stream's lane values ``[batch, SF, SIMD]``
        (padding lanes 0)."""
        x = np.asarray(x.cpu() if hasattr(x, "cpu") else x).astype(np.int64)
        out = np.zeros((x.shape[0], self.sf * self.simd), dtype=np.int64)
        out[:, : self._cfg.n_in] = x
        return out.reshape(x.shape[0], self.sf, self.simd)

    def to_groups(self, z) -> np.ndarray:
        """Golden ``z [batch, M]`` as the output transfers' lanes ``[batch, NF, PE]``
        (padding lanes 0)."""
        z = np.asarray(z.cpu() if hasattr(z, "cpu") else z).astype(np.int64)
        out = np.zeros((z.shape[0], self.nf * self.pe), dtype=np.int64)
        out[:, : self._cfg.n_out] = z
        return out.reshape(z.shape[0], self.nf, self.pe)

    def _rom_init(self) -> list[int]:
        cfg, pe, simd, P = self._cfg, self._fold.pe, self._fold.simd, self._planes
        if cfg.weights == "binary":
            pl = self._w.astype(np.uint8)  # [S, M, N]
        else:
            pl = np.stack([(self._w != 0), (self._w > 0)]).astype(np.uint8)  # [2, M, N]
        full = np.zeros((P, self.nf * pe, self.sf * simd), dtype=np.uint8)
        full[:, : cfg.n_out, : cfg.n_in] = pl
        # word (nf, sf), bit ((p * P + s) * SIMD + i) = plane s, neuron nf*PE+p, element sf*SIMD+i
        words = full.reshape(P, self.nf, pe, self.sf, simd).transpose(1, 3, 2, 0, 4)
        words = words.reshape(self.nf * self.sf, pe * P * simd)
        packed = np.packbits(words, axis=-1, bitorder="little")
        return [int.from_bytes(row.tobytes(), "little") for row in packed]

    # -- gateware ----------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        # Global pipeline enable, a register: high while the 2-entry output skid buffer has room
        # (the enable net starts at a flip-flop; i_stream.ready never depends on o_stream.ready).
        adv = Signal(init=1)
        word, rom_rd, rom_reg = self._weight_rom(m, adv)
        if self.buffered:
            buf_data, go, ctl1 = self._sequencer(m, adv, rom_rd, rom_reg)
        else:
            buf_data, go, ctl1 = self._direct(m, adv, rom_rd)
        t_out, u_out, ctl = self._products(m, adv, word, buf_data, ctl1)
        fin = self._accumulate(m, adv, t_out, u_out, ctl)
        self._output(m, adv, *fin)
        return m

    def _weight_rom(self, m, adv):
        """The weight ROM (``NF·SF`` words; a one-word ROM is a constant)."""
        init = self._rom_init()
        width = self._fold.rom_width(self._cfg)
        if len(init) == 1:
            return Const(init[0], width), None, False
        style = self._fold.rom_style(self._cfg)
        m.submodules.rom = rom = memory.Memory(shape=unsigned(width), depth=len(init),
                                               init=init, attrs=MEM_ATTRS[style])
        rd = rom.read_port()
        m.d.comb += rd.en.eq(adv)
        if style != "bram" or not self.buffered:
            return rd.data, rd, False
        # a block RAM's output is registered next to it (its clock-to-out is slow and the tree
        # logic may sit far away); the ROM is then read in the same cycle as the input buffer
        word = Signal(width)
        with m.If(adv):
            m.d.sync += word.eq(rd.data)
        return word, rd, True

    def _sequencer(self, m, adv, rom_rd, rom_reg=False):
        """Input buffer (three banks of SF slices) and the step sequencer.

        Write side: slices of a vector go into the next free bank through one register stage
        (data, address and enable are registered before the memory write, so no decode sits on
        the handshake path); ``i_stream.ready`` is a register, high while fewer than three banks
        are taken. Read side: the bank of the oldest complete vector is walked ``(nf, b, sf)``,
        one step per cycle while ``adv``; its last step frees it.
        """
        cfg, simd = self._cfg, self._fold.simd
        B = cfg.input_bits
        SF, NF, K = self.sf, self.nf, BUFFER_BANKS
        style = auto_mem_style(B * simd, K * SF, writable=True)
        m.submodules.ibuf = ibuf = memory.Memory(shape=unsigned(B * simd), depth=K * SF, init=[],
                                                 attrs=MEM_ATTRS[style])
        wr, rd = ibuf.write_port(), ibuf.read_port()
        ins = self.i_stream
        ready = Signal(init=1)
        m.d.comb += ins.ready.eq(ready)
        accept = Signal()
        m.d.comb += accept.eq(ins.valid & ready)
        wsf = Signal(_idx(SF))
        waddr = Signal(range(K * SF))
        taken = Signal(range(K + 1))  # banks accepted in full and not yet freed
        a_last = Signal()
        m.d.comb += a_last.eq(accept & (wsf == SF - 1))
        with m.If(accept):
            m.d.sync += waddr.eq(Mux(waddr == K * SF - 1, 0, waddr + 1))
            m.d.sync += wsf.eq(Mux(wsf == SF - 1, 0, wsf + 1))
        # registered write stage
        w_en, w_last = Signal(), Signal()
        w_addr = Signal.like(waddr)
        w_data = Signal(B * simd)
        m.d.sync += [w_en.eq(accept), w_last.eq(a_last), w_addr.eq(waddr),
                     w_data.eq(ins.payload.x.as_value())]
        m.d.comb += [wr.addr.eq(w_addr), wr.data.eq(w_data), wr.en.eq(w_en)]
        wb = Signal(range(K))  # bank of the registered write
        with m.If(w_last):
            m.d.sync += wb.eq(Mux(wb == K - 1, 0, wb + 1))

        # read side: counters and address registers (no adders in the memory address paths)
        sf, b, nf = Signal(_idx(SF)), Signal(_idx(B)), Signal(_idx(NF))
        rb = Signal(range(K))  # bank being computed
        raddr = Signal(_idx(NF * SF))  # weight word nf*SF + sf
        baddr = Signal(range(K * SF))  # buffer word rb*SF + sf
        full = Signal(K)
        full_rb = Signal()  # full[rb], kept as a register
        go = Signal()
        m.d.comb += go.eq(adv & full_rb)
        # The buffer's data is registered (x2) before it fans out to the PE trees. A block-RAM ROM
        # is registered too and read in the same cycle; any other ROM is read one cycle later and
        # feeds its tree directly. Both reach the products in the same cycle.
        raddr_d = Signal.like(raddr)
        with m.If(adv):
            m.d.sync += raddr_d.eq(raddr)
        if rom_rd is not None:
            m.d.comb += rom_rd.addr.eq(raddr if rom_reg else raddr_d)
        m.d.comb += [rd.addr.eq(baddr), rd.en.eq(adv)]
        end_plane = sf == SF - 1
        end_group = end_plane & (b == B - 1)
        end_vec = end_group & (nf == NF - 1)
        with m.If(go):
            with m.If(end_plane):
                m.d.sync += sf.eq(0)
                with m.If(b == B - 1):
                    m.d.sync += b.eq(0)
                    with m.If(nf == NF - 1):
                        m.d.sync += [nf.eq(0), raddr.eq(0), rb.eq(Mux(rb == K - 1, 0, rb + 1)),
                                     baddr.eq(Mux(rb == K - 1, 0, baddr + 1))]
                    with m.Else():
                        m.d.sync += [nf.eq(nf + 1), raddr.eq(raddr + 1), baddr.eq(baddr - (SF - 1))]
                with m.Else():
                    m.d.sync += [b.eq(b + 1), raddr.eq(raddr - (SF - 1)),
                                 baddr.eq(baddr - (SF - 1))]
            with m.Else():
                m.d.sync += [sf.eq(sf + 1), raddr.eq(raddr + 1), baddr.eq(baddr + 1)]
        free = Signal()
        m.d.comb += free.eq(go & end_vec)
        full_nxt = Signal(K)
        for k in range(K):  # a bank is filled and freed in different cycles (never both)
            m.d.comb += full_nxt[k].eq(Mux(w_last & (wb == k), 1,
                                           Mux(free & (rb == k), 0, full[k])))
        m.d.sync += full.eq(full_nxt)
        rb_nxt = Signal.like(rb)
        m.d.comb += rb_nxt.eq(Mux(free, Mux(rb == K - 1, 0, rb + 1), rb))
        m.d.sync += full_rb.eq(full_nxt.bit_select(rb_nxt, 1))
        taken_nxt = Signal.like(taken)
        m.d.comb += taken_nxt.eq(taken + a_last - free)
        m.d.sync += [taken.eq(taken_nxt), ready.eq(taken_nxt < K)]

        ctl0 = Signal(_CtlLayout(B, NF))
        ctl1 = Signal(_CtlLayout(B, NF))
        x2 = Signal(B * simd)
        with m.If(adv):
            m.d.sync += [
                ctl0.valid.eq(go),
                ctl0.b.eq(b),
                ctl0.first.eq((sf == 0) & (b == 0)),
                ctl0.last.eq(end_group),
                ctl0.group.eq(nf),
                ctl0.tail.eq(end_plane),
                ctl1.eq(ctl0),
                x2.eq(rd.data),
            ]
        return x2, go, ctl1

    def _direct(self, m, adv, rom_rd):
        """No input buffer (``NF·B = 1``: every slice is used once): a step per accepted slice.

        ``i_stream.ready = adv`` (a register); the slice is registered beside the ROM read.
        """
        SF = self.sf
        ins = self.i_stream
        sf = Signal(_idx(SF))
        go = Signal()
        m.d.comb += [ins.ready.eq(adv), go.eq(adv & ins.valid)]
        if rom_rd is not None:
            m.d.comb += rom_rd.addr.eq(sf)
        with m.If(go):
            m.d.sync += sf.eq(Mux(sf == SF - 1, 0, sf + 1))
        ctl1 = Signal(_CtlLayout(1, 1))
        x1 = Signal(len(ins.payload.x.as_value()))
        with m.If(adv):
            m.d.sync += [
                ctl1.valid.eq(go),
                ctl1.first.eq(sf == 0),
                ctl1.last.eq(sf == SF - 1),
                ctl1.tail.eq(sf == SF - 1),
                x1.eq(ins.payload.x.as_value()),
            ]
        return x1, go, ctl1

    def _lane_mask(self, m, ctl1):
        """Lanes of the current slice that hold elements (the last slice may be partial)."""
        simd, SF, N = self._fold.simd, self.sf, self._cfg.n_in
        tail_lanes = N - (SF - 1) * simd
        lane_ok = Signal(simd)
        if tail_lanes == simd:
            m.d.comb += lane_ok.eq((1 << simd) - 1)
        else:
            m.d.comb += lane_ok.eq(Mux(ctl1.tail, (1 << tail_lanes) - 1, (1 << simd) - 1))
        return lane_ok

    def _products(self, m, adv, word, slice_, ctl1):
        """Stage 1: plane select, mask, XNOR/AND, then the pipelined popcount trees."""
        cfg, pe, simd, P = self._cfg, self._fold.pe, self._fold.simd, self._planes
        S, B = cfg.swarm, cfg.input_bits
        ternary = cfg.weights == "ternary"
        lane_ok = self._lane_mask(m, ctl1)
        a = Signal(simd)  # plane b of the slice, masked
        for i in range(simd):
            elem = slice_[i * B:(i + 1) * B]
            bit = elem[0] if B == 1 else elem.bit_select(ctl1.b, 1)
            m.d.comb += a[i].eq(bit & lane_ok[i])

        def wbit(p, s, i):
            return word[(p * P + s) * simd + i]

        t_bits, u_bits = [], []
        for p in range(pe):
            if not ternary:
                if B == 1:
                    t_bits.append([~(a[i] ^ wbit(p, s, i)) & lane_ok[i]
                                   for s in range(S) for i in range(simd)])
                else:
                    t_bits.append([a[i] & wbit(p, s, i) for s in range(S) for i in range(simd)])
            else:
                if B == 1:
                    t_bits.append([wbit(p, 0, i) & ~(a[i] ^ wbit(p, 1, i)) & lane_ok[i]
                                   for i in range(simd)])
                    u_bits.append([wbit(p, 0, i) & lane_ok[i] for i in range(simd)])
                else:
                    t_bits.append([wbit(p, 0, i) & a[i] & wbit(p, 1, i) for i in range(simd)])
                    u_bits.append([wbit(p, 0, i) & a[i] for i in range(simd)])
        if not ternary and B > 1:
            u_bits.append([a[i] for i in range(simd)])  # shared by all PEs

        depth, k = self.tree_depth, self._fold.pipeline
        reg_after = {((i + 1) * depth) // k for i in range(k)} if k else set()
        trees = _Trees(m, adv, reg_after, depth)
        t_out = [trees.add(f"t{p}", bits) for p, bits in enumerate(t_bits)]
        u_out = [trees.add(f"u{p}", bits) for p, bits in enumerate(u_bits)]
        ctl = trees.carry(ctl1, _CtlLayout(B, self.nf))
        return [trees.result(x) for x in t_out], [trees.result(x) for x in u_out], ctl

    def _accumulate(self, m, adv, t_out, u_out, ctl):
        """Accumulators over the (b, sf) steps of a group; ``fin`` holds a finished group."""
        cfg, pe = self._cfg, self._fold.pe
        S, B, N = cfg.swarm, cfg.input_bits, cfg.n_in
        ternary = cfg.weights == "ternary"
        xmax = cfg.x_max
        t_max = N * xmax * (S if not ternary else 1)
        u_max = N * xmax
        t_acc = [Signal(t_max.bit_length(), name=f"t_acc{p}") for p in range(pe)]
        u_acc = [Signal(u_max.bit_length(), name=f"u_acc{p}") for p in range(len(u_out))]
        t_fin = [Signal(t_max.bit_length(), name=f"t_fin{p}") for p in range(pe)]
        u_fin = [Signal(u_max.bit_length(), name=f"u_fin{p}") for p in range(len(u_out))]
        fin_valid = Signal()
        fin_group = Signal(_idx(self.nf))
        with m.If(adv):
            m.d.sync += fin_valid.eq(ctl.valid & ctl.last)
            with m.If(ctl.valid):
                m.d.sync += fin_group.eq(ctl.group)
                for acc, fin, val in zip(t_acc + u_acc, t_fin + u_fin, t_out + u_out, strict=True):
                    nxt = Signal.like(acc, name=f"{acc.name}_nxt")
                    if self.sf * B == 1:  # one step per group: no accumulation, no shift
                        m.d.comb += nxt.eq(val)
                    else:
                        term = val if B == 1 else (val << ctl.b)
                        m.d.comb += nxt.eq(Mux(ctl.first, 0, acc) + term)
                        m.d.sync += acc.eq(nxt)
                    with m.If(ctl.last):
                        m.d.sync += fin.eq(nxt)
        return t_fin, u_fin, fin_valid, fin_group

    def _advance(self, m, adv, nxt_count):
        """The enable's next value: advance while the skid buffer will have room."""
        m.d.sync += adv.eq(nxt_count != 2)

    def _output(self, m, adv, t_fin, u_fin, fin_valid, fin_group):
        """Output skid buffer (2 entries) holding ``z = 2T - S·U`` per lane."""
        cfg, pe = self._cfg, self._fold.pe
        S, B, N, NF = cfg.swarm, cfg.input_bits, cfg.n_in, self.nf
        ternary = cfg.weights == "ternary"
        o = self.o_stream
        last_lanes = cfg.n_out - (NF - 1) * pe
        new = Signal(self._o_layout)
        m.d.comb += [new.group.eq(fin_group), new.last.eq(fin_group == NF - 1)]
        for p in range(pe):
            if ternary:
                z = (t_fin[p] << 1) - u_fin[p]
            elif B == 1:
                z = (t_fin[p] << 1) - Const(S * N)
            else:
                z = (t_fin[p] << 1) - (u_fin[0] << (S.bit_length() - 1))
            if p >= last_lanes:
                z = Mux(fin_group == NF - 1, 0, z)
            m.d.comb += new.z[p].eq(z)
        head = Signal(self._o_layout)
        tail = Signal(self._o_layout)
        count = Signal(range(3))
        push = Signal()
        pop = Signal()
        m.d.comb += [
            push.eq(adv & fin_valid),
            pop.eq(o.valid & o.ready),
            o.valid.eq(count != 0),
            o.payload.eq(head),
        ]
        nxt_count = Signal(range(3))
        m.d.comb += nxt_count.eq(count + push - pop)
        m.d.sync += count.eq(nxt_count)
        self._advance(m, adv, nxt_count)
        with m.If(pop & (count == 2)):
            m.d.sync += head.eq(tail)
        with m.Elif(push & ((count == 0) | pop)):
            m.d.sync += head.eq(new)
        with m.Elif(push):
            m.d.sync += tail.eq(new)


def _CtlLayout(B: int, NF: int) -> data.StructLayout:
    """Control word travelling beside the products through the tree registers."""
    return data.StructLayout({"valid": 1, "b": _idx(B), "first": 1, "last": 1,
                              "group": _idx(NF), "tail": 1})


class _Trees:
    """Pipelined popcount adder trees, all with the same register placement (``reg_after``:
    the levels after which a register stage sits), advancing with ``en``."""

    def __init__(self, m, en, reg_after, depth):
        self.m, self.en, self.reg_after, self.depth = m, en, reg_after, depth

    def _reg(self, v, name):
        r = Signal(len(v), name=name)
        with self.m.If(self.en):
            self.m.d.sync += r.eq(v)
        return r

    def add(self, name, bits):
        # nodes: (value, max)
        nodes = []
        for g in range(0, len(bits), 4):
            grp = bits[g:g + 4]
            n = len(grp)
            if n == 1:
                nodes.append((grp[0], 1))
            else:
                nodes.append((_popcount4(grp)[: n.bit_length()], n))
        level = 1
        nodes = self._stage(nodes, level, name)
        while level < self.depth:  # smaller trees (the shared input count) pass levels through
            nxt = []
            for j in range(0, len(nodes) - 1, 2):
                (va, ma), (vb, mb) = nodes[j], nodes[j + 1]
                mx = ma + mb
                nxt.append(((va + vb)[: mx.bit_length()], mx))
            if len(nodes) % 2:
                nxt.append(nodes[-1])
            nodes = nxt
            level += 1
            nodes = self._stage(nodes, level, name)
        return nodes[0]

    def _stage(self, nodes, level, name):
        if level not in self.reg_after:
            return nodes
        return [(self._reg(v, f"{name}_l{level}_{j}"), mx) for j, (v, mx) in enumerate(nodes)]

    def carry(self, ctl, layout):
        """Delay ``ctl`` by the trees' register stages."""
        cur = ctl
        for level in sorted(self.reg_after):
            nxt = Signal(layout, name=f"ctl_l{level}")
            with self.m.If(self.en):
                self.m.d.sync += nxt.eq(cur)
            cur = nxt
        return cur

    @staticmethod
    def result(node):
        return node[0]


def build(n_in: int = 64, n_out: int = 16, swarm: int = 1, input_bits: int = 1,
          weights: str = "binary", pe: int = 4, simd: int = 16, pipeline: int = -1,
          mem: str = "auto", seed: int = 0) -> MACArray:
    """A :class:`MACArray` with random weights (``seed``) for ``bitswarm verilog``.

    ``pipeline = -1`` means fully pipelined (``tree_depth`` stages).
    """
    import torch

    cfg = LayerConfig(n_in=n_in, n_out=n_out, swarm=swarm, input_bits=input_bits, weights=weights)
    if not _is_int(seed):
        raise ConfigError(f"seed must be an integer, not {seed!r}")
    g = torch.Generator().manual_seed(seed)
    if weights == "binary":
        w = torch.randint(0, 2, cfg.weight_shape(), generator=g, dtype=torch.uint8)
    else:
        w = torch.randint(-1, 2, cfg.weight_shape(), generator=g, dtype=torch.int8)
    for name, v, hi in (("pe", pe, n_out), ("simd", simd, n_in)):
        if not _is_int(v) or not 1 <= v <= hi:
            raise ConfigError(f"{name} must be an integer in 1..{hi}, not {v!r}")
    if pipeline == -1:
        pipeline = LayerFold(pe, simd, 0).tree_depth(cfg)
    fold = LayerFold(pe, simd, pipeline, mem)
    MACArray.check(cfg, w, fold)
    return MACArray(cfg, w, fold)
