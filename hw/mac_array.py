"""FINN-style folded XNOR-popcount MAC array for one golden dense layer.

The component computes exactly :func:`bitswarm.golden.layer.preact` — the integer
pre-activations ``z[j]`` of a :class:`~bitswarm.golden.layer.LayerConfig` — for a stream of
input vectors, with PE output neurons and SIMD input elements per clock cycle and the layer's
weights in a ROM built from the golden weight tensor.

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
by ``b``, into that neuron's accumulator. The first pass (``nf = 0, b = 0``) takes the slices
from ``i_stream`` and stores them in an input buffer (a ``SF``-word memory, a register when
``SF = 1``, absent when ``NF·B = 1``); every later pass reads them back from the buffer, so
each vector is sent exactly once.

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

__all__ = ["MACArray", "build"]

_MUTANTS = (None, "mask", "stall")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _idx(n: int):
    """Shape of an index into ``n`` items, at least 1 bit (no 0-width signals in the Verilog)."""
    return unsigned(max(1, (n - 1).bit_length()))


def _tree_depth(n: int) -> int:
    """Adder-tree levels for ``n`` bits: one level of 4-input LUT popcounts, then binary adds."""
    leaves = _ceil_div(n, 4)
    return 1 + (leaves - 1).bit_length()


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
        synthesis folds into the XNOR gates.
    pe : int
        Output neurons computed in parallel, 1..M.
    simd : int
        Input elements consumed per cycle, 1..N.
    pipeline : int
        Register stages inside each popcount adder tree, 0..``tree_depth`` (the tree has one
        level of 4-input popcounts and then ``ceil(log2(ceil(S·SIMD/4)))`` adder levels;
        ``pipeline = tree_depth`` registers every level: fully pipelined). Registers are spread
        evenly over the levels.

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
    ``i_stream`` has a slice ready whenever the first pass asks for one and ``o_stream`` is
    always ready; one output group every ``B · SF`` cycles. ``i_stream.ready`` is high only
    during the first pass of a vector (the first SF steps), so a new vector's slices are
    accepted right after the previous vector's last step (no double buffering).

    Latency: :attr:`latency` ``= pipeline + 3`` cycles from the cycle a group's last step is
    issued (for ``NF·B = 1``: the cycle of the vector's last input handshake) to the cycle its
    result is valid on ``o_stream``: 1 (ROM / buffer read) + ``pipeline`` (tree registers) + 1
    (accumulator) + 1 (output register, the head of the skid buffer, which also forms
    ``2T - S·U``). For V vectors streamed back to back without stalls, the first input
    handshake in cycle 0 puts the last output handshake in cycle
    ``V · cycles_per_vector() - 1 + latency`` (:meth:`cycles`).

    Backpressure: the whole pipeline advances with one enable, a register that is high while
    the 2-entry output skid buffer has room after the current cycle. When ``o_stream`` stalls,
    results fill the buffer, then everything stops (including ``i_stream.ready``) until the
    consumer takes one; a stall costs no throughput while ``o_stream.ready`` returns within a
    cycle. ``i_stream.ready`` (``enable AND first pass``) does not depend combinationally on
    ``o_stream.ready``; ``o_stream.valid`` and the payload come straight from registers. Idle
    input cycles in the first pass insert bubbles. No data is dropped or reordered.

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
    def check(cfg: LayerConfig, weights, *, pe: int = 1, simd: int | None = None,
              pipeline: int = 0, _mutant: str | None = None):
        """Validate constructor arguments without building anything (so a failed ``build()``
        leaves no half-made component behind); returns ``(weights, simd, tree_depth)``."""
        if not isinstance(cfg, LayerConfig):
            raise TypeError(f"cfg must be a LayerConfig, not {cfg!r}")
        if simd is None:
            simd = cfg.n_in
        for name, v, hi in (("pe", pe, cfg.n_out), ("simd", simd, cfg.n_in)):
            if not _is_int(v):
                raise TypeError(f"{name} must be an integer, not {v!r}")
            if not 1 <= v <= hi:
                raise ConfigError(f"{name} must be in 1..{hi} for this layer, not {v}")
        # bits per tree: S*SIMD products (binary), SIMD (ternary: mask and sign are one term)
        depth = _tree_depth((cfg.swarm if cfg.weights == "binary" else 1) * simd)
        if not _is_int(pipeline):
            raise TypeError(f"pipeline must be an integer, not {pipeline!r}")
        if not 0 <= pipeline <= depth:
            raise ConfigError(
                f"pipeline must be in 0..{depth} (the adder tree's depth for "
                f"S*SIMD = {cfg.swarm * simd}), not {pipeline}")
        if _mutant not in _MUTANTS:
            raise ConfigError(f"_mutant must be one of {_MUTANTS}, not {_mutant!r}")
        w = np.asarray(weights.cpu() if hasattr(weights, "cpu") else weights)
        if tuple(w.shape) != cfg.weight_shape():
            raise ConfigError(f"weights must have shape {cfg.weight_shape()}, found {tuple(w.shape)}")
        lo = 0 if cfg.weights == "binary" else -1
        if w.size and (w.min() < lo or w.max() > 1 or not np.issubdtype(w.dtype, np.integer)):
            kind = "bits 0/1" if cfg.weights == "binary" else "trits -1/0/+1"
            raise ConfigError(f"{cfg.weights} weights must be integer {kind}")
        return w, simd, depth

    def __init__(self, cfg: LayerConfig, weights, *, pe: int = 1, simd: int | None = None,
                 pipeline: int = 0, _mutant: str | None = None):
        w, simd, depth = self.check(cfg, weights, pe=pe, simd=simd, pipeline=pipeline,
                                    _mutant=_mutant)
        planes = cfg.swarm if cfg.weights == "binary" else 2
        self._cfg = cfg
        self._pe, self._simd, self._pipeline = pe, simd, pipeline
        self._planes = planes
        self._depth = depth
        self._mutant = _mutant
        self._w = w.astype(np.int8)
        self._i_layout = data.StructLayout({"x": data.ArrayLayout(unsigned(cfg.input_bits), simd)})
        self._o_layout = data.StructLayout({
            "z": data.ArrayLayout(signed(cfg.z_width), pe),
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
    def pe(self) -> int:
        return self._pe

    @property
    def simd(self) -> int:
        return self._simd

    @property
    def pipeline(self) -> int:
        return self._pipeline

    @property
    def sf(self) -> int:
        """Input folds per bit-plane, ``ceil(N / SIMD)``."""
        return _ceil_div(self._cfg.n_in, self._simd)

    @property
    def nf(self) -> int:
        """Neuron folds (output groups per vector), ``ceil(M / PE)``."""
        return _ceil_div(self._cfg.n_out, self._pe)

    @property
    def tree_depth(self) -> int:
        """Levels of each popcount adder tree; the largest allowed ``pipeline``."""
        return self._depth

    @property
    def latency(self) -> int:
        """Cycles from issuing a group's last step to its result being valid: ``pipeline + 3``."""
        return self._pipeline + 3

    def cycles_per_vector(self) -> int:
        """Cycles per input vector at full rate: ``ceil(M/PE) · B · ceil(N/SIMD)``."""
        return self.nf * self._cfg.input_bits * self.sf

    def cycles(self, n_vectors: int) -> int:
        """Cycles from the first input handshake to the last output handshake, inclusive, for
        ``n_vectors`` vectors at full rate (no idle input, no backpressure)."""
        return n_vectors * self.cycles_per_vector() + self.latency

    # -- software helpers for drivers and checkers -------------------------------------------
    def to_slices(self, x) -> np.ndarray:
        """Input vectors ``[batch, N]`` as the stream's lane values ``[batch, SF, SIMD]``
        (padding lanes 0)."""
        x = np.asarray(x.cpu() if hasattr(x, "cpu") else x).astype(np.int64)
        out = np.zeros((x.shape[0], self.sf * self._simd), dtype=np.int64)
        out[:, : self._cfg.n_in] = x
        return out.reshape(x.shape[0], self.sf, self._simd)

    def to_groups(self, z) -> np.ndarray:
        """Golden ``z [batch, M]`` as the output transfers' lanes ``[batch, NF, PE]``
        (padding lanes 0)."""
        z = np.asarray(z.cpu() if hasattr(z, "cpu") else z).astype(np.int64)
        out = np.zeros((z.shape[0], self.nf * self._pe), dtype=np.int64)
        out[:, : self._cfg.n_out] = z
        return out.reshape(z.shape[0], self.nf, self._pe)

    def _rom_init(self) -> list[int]:
        cfg, pe, simd, P = self._cfg, self._pe, self._simd, self._planes
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
        cfg, pe, simd, P = self._cfg, self._pe, self._simd, self._planes
        S, B, N = cfg.swarm, cfg.input_bits, cfg.n_in
        SF, NF = self.sf, self.nf
        ternary = cfg.weights == "ternary"
        m = Module()

        # Global pipeline enable, a register: high while the 2-entry output skid buffer has room
        # (so the enable net, fanning out to every pipeline register, starts at a flip-flop and
        # i_stream.ready does not depend combinationally on o_stream.ready).
        adv = Signal(init=1)

        # -- weight ROM and input buffer ------------------------------------------------------
        # A one-word ROM is a constant and a one-slice buffer a register (no 0-width addresses).
        init = self._rom_init()
        if len(init) > 1:
            m.submodules.rom = rom = memory.Memory(
                shape=unsigned(pe * P * simd), depth=NF * SF, init=init)
            rom_rd = rom.read_port()
            word = rom_rd.data
        else:
            rom_rd = None
            word = Const(init[0], pe * P * simd)
        reuse = NF * B > 1
        if reuse and SF > 1:
            m.submodules.ibuf = ibuf = memory.Memory(shape=unsigned(B * simd), depth=SF, init=[])
            buf_wr = ibuf.write_port()
            buf_rd = ibuf.read_port()
            buf_data = buf_rd.data
        elif reuse:
            buf_data = Signal(B * simd)

        # -- stage 0: sequencer ---------------------------------------------------------------
        sf = Signal(_idx(SF))
        b = Signal(_idx(B))
        nf = Signal(_idx(NF))
        base = Signal(_idx(NF * SF))  # nf * SF
        first_pass = Signal(init=1)  # (nf == 0) & (b == 0), kept as a register for timing
        go = Signal()
        m.d.comb += [
            go.eq(adv & (~first_pass | self.i_stream.valid)),
            self.i_stream.ready.eq(adv & first_pass),
        ]
        if rom_rd is not None:
            m.d.comb += [rom_rd.addr.eq(base + sf), rom_rd.en.eq(adv)]
        if reuse and SF > 1:
            m.d.comb += [
                buf_rd.addr.eq(sf),
                buf_rd.en.eq(adv),
                buf_wr.addr.eq(sf),
                buf_wr.data.eq(self.i_stream.payload.x.as_value()),
                buf_wr.en.eq(go & first_pass),
            ]
        elif reuse:
            with m.If(go & first_pass):
                m.d.sync += buf_data.eq(self.i_stream.payload.x.as_value())
        with m.If(go):
            with m.If(sf == SF - 1):
                m.d.sync += sf.eq(0)
                with m.If(b == B - 1):
                    m.d.sync += b.eq(0)
                    with m.If(nf == NF - 1):
                        m.d.sync += [nf.eq(0), base.eq(0), first_pass.eq(1)]
                    with m.Else():
                        m.d.sync += [nf.eq(nf + 1), base.eq(base + SF), first_pass.eq(0)]
                with m.Else():
                    m.d.sync += [b.eq(b + 1), first_pass.eq(0)]
            with m.Else():
                m.d.sync += sf.eq(sf + 1)

        ctl_layout = data.StructLayout({
            "valid": 1, "b": _idx(B), "first": 1, "last": 1, "group": _idx(NF),
        })
        ctl1 = Signal(ctl_layout)
        tail1 = Signal()
        fp1 = Signal()
        x1 = Signal(B * simd)
        with m.If(adv):
            m.d.sync += [
                ctl1.valid.eq(go),
                ctl1.b.eq(b),
                ctl1.first.eq((sf == 0) & (b == 0)),
                ctl1.last.eq((sf == SF - 1) & (b == B - 1)),
                ctl1.group.eq(nf),
                tail1.eq(sf == SF - 1),
                fp1.eq(first_pass),
                x1.eq(self.i_stream.payload.x.as_value()),
            ]

        # -- stage 1: plane select, mask, XNOR/AND, popcount trees ---------------------------
        slice_ = Signal(B * simd)
        if reuse:
            m.d.comb += slice_.eq(Mux(fp1, x1, buf_data))
        else:
            m.d.comb += slice_.eq(x1)
        tail_lanes = N - (SF - 1) * simd  # valid lanes in the last slice
        lane_ok = Signal(simd)
        if tail_lanes == simd or self._mutant == "mask":
            m.d.comb += lane_ok.eq((1 << simd) - 1)
        else:
            m.d.comb += lane_ok.eq(Mux(tail1, (1 << tail_lanes) - 1, (1 << simd) - 1))
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

        depth = _tree_depth(len(t_bits[0]))
        k = self._pipeline
        reg_after = {((i + 1) * depth) // k for i in range(k)} if k else set()
        trees = _Trees(m, adv, reg_after, depth)
        t_out = [trees.add(f"t{p}", bits) for p, bits in enumerate(t_bits)]
        u_out = [trees.add(f"u{p}", bits) for p, bits in enumerate(u_bits)]
        ctl = trees.carry(ctl1, ctl_layout)
        t_out = [trees.result(x) for x in t_out]
        u_out = [trees.result(x) for x in u_out]

        # -- accumulators ---------------------------------------------------------------------
        xmax = cfg.x_max
        t_max = N * xmax * (S if not ternary else 1)
        u_max = N * xmax
        t_acc = [Signal(t_max.bit_length(), name=f"t_acc{p}") for p in range(pe)]
        u_acc = [Signal(u_max.bit_length(), name=f"u_acc{p}") for p in range(len(u_out))]
        t_fin = [Signal(t_max.bit_length(), name=f"t_fin{p}") for p in range(pe)]
        u_fin = [Signal(u_max.bit_length(), name=f"u_fin{p}") for p in range(len(u_out))]
        fin_valid = Signal()
        fin_group = Signal(_idx(NF))
        with m.If(adv):
            m.d.sync += fin_valid.eq(ctl.valid & ctl.last)
            with m.If(ctl.valid):
                m.d.sync += fin_group.eq(ctl.group)
                for acc, fin, val in zip(t_acc + u_acc, t_fin + u_fin, t_out + u_out, strict=True):
                    nxt = Signal.like(acc, name=f"{acc.name}_nxt")
                    if SF * B == 1:  # one step per group: no accumulation, no shift
                        m.d.comb += nxt.eq(val)
                    else:
                        term = val if B == 1 else (val << ctl.b)
                        m.d.comb += nxt.eq(Mux(ctl.first, 0, acc) + term)
                        m.d.sync += acc.eq(nxt)
                    with m.If(ctl.last):
                        m.d.sync += fin.eq(nxt)

        # -- output skid buffer (2 entries): z = 2T - S*U -------------------------------------
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
        if self._mutant == "stall":  # broken on purpose: ignores a full buffer, drops results
            m.d.sync += adv.eq(1)
        else:
            m.d.sync += adv.eq(nxt_count != 2)
        with m.If(pop & (count == 2)):
            m.d.sync += head.eq(tail)
        with m.Elif(push & ((count == 0) | pop)):
            m.d.sync += head.eq(new)
        with m.Elif(push):
            m.d.sync += tail.eq(new)
        return m


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
          seed: int = 0) -> MACArray:
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
        planes = swarm if weights == "binary" else 1
        pipeline = _tree_depth(planes * simd)
    MACArray.check(cfg, w, pe=pe, simd=simd, pipeline=pipeline)
    return MACArray(cfg, w, pe=pe, simd=simd, pipeline=pipeline)
