"""On-chip learning datapath: the fully integer training step in RTL (SPEC.md §12).

:class:`OnChipTrainer` holds a whole binary model as training state — per layer ``pe`` memory
banks of weight words and their accumulators, ``pe`` threshold banks, and one shared noise
LFSR — and trains it on a stream of ``(image, label)`` samples, one golden
:func:`~bitswarm.golden.onchip.onchip_step` per sample, bit for bit.

Folding (:class:`~bitswarm.hw.plan.TrainerFold`, per layer ``(pe, simd)``): row
``r = s·M + j`` of layer ``l`` (golden's ``[S, M, N]`` order) lives in bank ``r mod pe``; its
``N / simd`` words (``simd`` weight bits and their ``simd`` signed ``A``-bit accumulators, one
memory word) at addresses ``(r div pe)·W + w``, ``W = N/simd``. ``pe`` divides ``M``, so a row
group ``g`` (rows ``g·pe .. g·pe + pe - 1``) is ``pe`` neurons ``jg·pe + p`` of one plane
``s`` (``g = s·M/pe + jg``); neuron ``j``'s threshold is in threshold bank ``j mod pe``. Every
cycle of a pass reads one word address in all ``pe`` banks of a layer: ``pe·simd`` lanes.

Pipeline of every pass (issue at cycle ``t``): the banks' synchronous read (``t``), a register
of the read words (``t + 1``), the lane logic (``t + 2``, forward: ``K`` register stages of the
XNOR-popcount / signed-sum tree, :meth:`~bitswarm.hw.plan.TrainerFold.tree_stages`), then::

    LOAD    ceil(N_0 / P)              P pixels per i_stream transfer; the label with the last
    FWD     T_l per layer, order       word sums accumulated into z of pe neurons (stage t+2+K),
            (jg, s, w), w fastest;     at the group's last word: z - θ, the activation, gate
            K_l + 1 bubbles after      |z - θ| <= window, θ += (z - θ) >> shift, or the score
            each hidden layer, K + 3   (stage t+3+K); the next layer's first word issues when
            drain cycles at the end    its popcount stage sees the finished activations
    ERR     ceil(log2 C) + 1           pipelined argmax (prediction) and rival tree, one
                                       register level per cycle, then the margin rule
    BWD     T_l + 1, l = L-1 .. 1      delta_k += sum_p e_{j_p} (2 w - 1) on the simd lanes of
                                       the word (stage t+2); e_{l-1} = gate · sign(delta) ·
                                       (1 - 2 inv) is combinational, registered per bank at
                                       t+1, hence one bubble after each layer
    UPD     T_l per layer, + 2 drain   rows in golden order (g, w), w fastest; errors, input
                                       signs and LFSR draws registered at t+1, votes
                                       -e_j xs_k (2 w - 1) and the integrate-and-fire rule on
                                       pe·simd lanes at t+2, write-back at t+3; θ_j steps by
                                       -e_j · step (clamped) on plane s = 0's words w = 0
    REPORT  1                          o_stream: predicted class (before the update), error flag

with ``T_l = S·M_l/pe_l · N_l/simd_l``. :func:`bitswarm.hw.plan.cycles_per_sample` is this
table; the Verilator tests compare it with the measured interval between samples.

LFSR draw order is golden's (row-major within a layer: row ``r`` lane ``k`` takes the layer's
draw ``r·N + k``): at UPD word ``(g, w)`` the register holds the state after the layer's first
``g·pe·N + w·simd`` draws; lane ``(p, i)`` takes the low bits of that state advanced
``p·N + i + 1`` Galois steps, each a constant GF(2) matrix (a jump-ahead XOR network,
:func:`jump_masks`), and the register advances ``simd`` steps, or ``simd + (pe - 1)·N`` after
a row group's last word.

Timing: no cycle goes from a memory read through more than the lane logic: memory → register →
XNOR/popcount (K stages) → register → z accumulator → register → threshold compare, and memory
→ register → vote + flip rule → register → write-back. Area grows with the ``pe·simd`` lanes
(each an integrate-and-fire rule and a share of a popcount tree), speed with the same product:
64-256-10 takes 560 cycles per sample at the default fold, 106 at ``8x64,5x64`` (832 lanes) and
85 at ``8x64,10x256`` (3,072 lanes, more than an ECP5-85F holds). Board builds of this RTL
(``bench/results/resources.md``) and ``bench/results/synth.md`` have the measured resources and
Fmax.

Interfaces: ``i_stream`` (pixels, label), ``o_stream`` (pred, error) and a debug read port used
while idle (``idle`` high: no sample in progress) that reads any weight word with its
accumulators, any threshold and the LFSR state, one cycle after ``dbg_en``; it is how the host
(and the bit-exact tests) read the trained state back.
"""

from __future__ import annotations

import math

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.model import PIXEL_BITS, Model
from bitswarm.golden.onchip import OnChipConfig

from .flip_unit import flip_lane
from .plan import DEFAULT_IN_LANES, TrainerFold, argmax_levels, trainer_mem_attrs

__all__ = ["OnChipTrainer", "DBG_ROW", "DBG_THETA", "DBG_LFSR", "DEFAULT_IN_LANES", "build",
           "dbg_queries", "dbg_decode", "jump_masks"]

DBG_ROW, DBG_THETA, DBG_LFSR = 0, 1, 2
FWD, BWD, UPD = 0, 1, 2


def _bits(n: int) -> int:
    """Unsigned width of the values ``0..n`` (at least 1)."""
    return max(1, int(n).bit_length())


def _tree(vals):
    """Balanced sum of Amaranth values (each addition widens by one bit)."""
    vals = list(vals)
    while len(vals) > 1:
        vals = [vals[i] + vals[i + 1] if i + 1 < len(vals) else vals[i] for i in range(0, len(vals), 2)]
    return vals[0]


def jump_masks(width: int, taps: int, steps) -> dict[int, list[int]]:
    """The Galois LFSR advanced ``n`` steps as a GF(2) matrix, for every ``n`` in ``steps``:
    ``{n: masks}``, bit ``b`` of the state after ``n`` steps being the XOR of the bits of the
    current state set in ``masks[b]`` (a step: ``b' = b[i+1] ^ (taps_i & b[0])``)."""
    st = [1 << b for b in range(width)]
    out, n = {}, 0
    for target in sorted(set(steps)):
        while n < target:
            s0 = st[0]
            st = [(st[b + 1] if b + 1 < width else 0) ^ (s0 if (taps >> b) & 1 else 0) for b in range(width)]
            n += 1
        out[target] = list(st)
    return out


def _apply(state, masks, bits=None):
    """``Cat`` of the XORs of ``state``'s bits selected by each mask (the first ``bits``)."""
    outs = []
    for mk in masks[:bits]:
        sel = [state[b] for b in range(len(state)) if (mk >> b) & 1]
        outs.append(Cat(*sel).xor() if sel else Const(0, 1))
    return Cat(*outs)


def _divmod(m: Module, val, div: int, n: int, name: str):
    """``(val // div, val % div)`` of an unsigned value below ``n``, as signals: slices for a
    power of two, else a constant table (no divider)."""
    q = Signal(range(max(2, -(-n // div))), name=f"{name}_q")
    r = Signal(range(max(2, div)), name=f"{name}_r")
    if div & (div - 1) == 0:
        sh = div.bit_length() - 1
        m.d.comb += [q.eq(val >> sh), r.eq(val & (div - 1))]
    else:
        with m.Switch(val):
            for v in range(n):
                with m.Case(v):
                    m.d.comb += [q.eq(v // div), r.eq(v % div)]
    return q, r


def _argmax_pipe(m: Module, vals: list, width: int, name: str, *, value: bool = True):
    """A registered argmax tree (one level per cycle, ties to the lowest index): the root's
    ``(index, value)`` registers, valid ``argmax_levels(len(vals))`` cycles after ``vals``
    (``value=False``: no root value register, ``None`` in its place)."""
    n = len(vals)
    cands = [(Const(i, range(max(2, n))), v) for i, v in enumerate(vals)]
    lvl = 0
    while True:
        nxt = []
        for j in range(0, len(cands), 2):
            iw = Signal(range(max(2, n)), name=f"{name}{lvl}_{j // 2}_i")
            vw = Signal(signed(width), name=f"{name}{lvl}_{j // 2}_v")
            root = len(cands) <= 2
            if root and not value:  # the caller takes the index only: no root value register
                vw = None
            if j + 1 < len(cands):
                (ia, va), (ib, vb) = cands[j], cands[j + 1]
                m.d.sync += iw.eq(Mux(vb > va, ib, ia))
                if vw is not None:
                    m.d.sync += vw.eq(Mux(vb > va, vb, va))
            else:
                m.d.sync += iw.eq(cands[j][0])
                if vw is not None:
                    m.d.sync += vw.eq(cands[j][1])
            nxt.append((iw, vw))
        cands = nxt
        lvl += 1
        if len(cands) == 1:
            return cands[0]


class OnChipTrainer(wiring.Component):
    """The SPEC §12 training step in hardware, one sample after another (module docstring).

    Parameters
    ----------
    model : Model
        Initial training state: binary weights, thresholds, invert bits, accumulators and LFSR
        state (``lfsr_state`` ``None`` means the seed). It becomes the memories' initial
        contents.
    config : OnChipConfig, optional
        The step's constants (default: from ``model.cfg.meta``).
    in_lanes : int, optional
        P, pixels per ``i_stream`` transfer (default ``min(N_0, 64)``).
    fold : TrainerFold, optional
        Per-layer ``(pe, simd)`` (:class:`~bitswarm.hw.plan.TrainerFold`; default ``pe = 1``,
        ``simd = N``): ``pe`` divides ``M``, ``simd`` divides ``N``.

    Members
    -------
    i_stream : ``In(stream.Signature(StructLayout({"pixels": ArrayLayout(8, P), "label": cb})))``
        Raw uint8 pixels ``t·P .. t·P + P - 1`` in transfer ``t`` (pixels past ``N_0`` ignored);
        the label of the sample is taken from its last transfer.
    o_stream : ``Out(stream.Signature(StructLayout({"pred": cb, "error": 1})))``
        Per sample: the predicted class before the update (argmax, ties to the lowest index)
        and whether the margin rule found an error.
    idle : ``Out(1)``
        No sample in progress (between samples); the debug port may be used.
    dbg_en, dbg_kind, dbg_layer, dbg_row, dbg_word : ``In``
        Debug read request: kind ``DBG_ROW`` returns memory word ``dbg_word`` (lanes
        ``dbg_word·simd .. +simd-1``; always 0 when ``simd == N``) of row ``dbg_row`` of layer
        ``dbg_layer`` as ``w | acc << simd`` (the word's weight bits, then its ``simd`` signed
        ``A``-bit accumulators, lowest lane first), ``DBG_THETA`` threshold ``dbg_row`` (two's
        complement, ``z_width`` bits), ``DBG_LFSR`` the LFSR state.
    dbg_data : ``Out(D)``
        The data, one cycle after ``dbg_en``; ``D = max_l simd_l (1 + A)`` (at least the
        threshold and LFSR widths), :attr:`dbg_width`.

    Notes
    -----
    Throughput one sample per :func:`~bitswarm.hw.plan.cycles_per_sample` cycles when the input
    is offered and the output taken; ``i_stream.ready`` is high only in LOAD, ``o_stream``
    holds its record until taken (REPORT waits). Widths: ``z`` and scores ``z_width`` bits,
    deltas ``bits(S·M) + 1``, accumulators saturate at ``A`` bits (SPEC §8); nothing wraps.
    """

    def __init__(self, model: Model, config: OnChipConfig | None = None, *, in_lanes: int | None = None,
                 fold: TrainerFold | None = None):
        try:
            p = self._check(model, config, in_lanes)
            self._fold = TrainerFold.resolve(model.cfg, fold)
        except (TypeError, ConfigError):
            self._MustUse__silence = True  # never elaborated: don't warn about it
            raise
        cfg = model.cfg
        self._model, self._p = model, p
        lays = cfg.layers
        self._cb = max(1, (lays[-1].n_out - 1).bit_length())
        a = cfg.flip.acc_width
        fd = self._fold
        dw = max(max(fd.simd(i) * (1 + a) for i in range(len(lays))), max(lay.z_width for lay in lays),
                 cfg.flip.lfsr.width)
        self._dw = dw
        super().__init__({
            "i_stream":  In(stream.Signature(data.StructLayout(
                {"pixels": data.ArrayLayout(8, p), "label": self._cb}))),
            "o_stream":  Out(stream.Signature(data.StructLayout({"pred": self._cb, "error": 1}))),
            "idle":      Out(1),
            "dbg_en":    In(1),
            "dbg_kind":  In(2),
            "dbg_layer": In(_bits(len(lays) - 1)),
            "dbg_row":   In(_bits(max(lay.swarm * lay.n_out for lay in lays) - 1)),
            "dbg_word":  In(_bits(max(fd.words(cfg, i) for i in range(len(lays))) - 1)),
            "dbg_data":  Out(dw),
        })

    def _check(self, model, config, in_lanes) -> int:
        if not isinstance(model, Model):
            raise TypeError(f"model must be a golden Model, not {type(model).__name__}")
        model.cfg.require_dense("the on-chip trainer (OnChipTrainer)")
        self._config = config or OnChipConfig.from_meta(model.cfg.meta)
        self._config.check(model.cfg)
        if model.acc is None:
            raise ConfigError("on-chip training needs a model with accumulators (training state)")
        n0 = model.cfg.layers[0].n_in
        p = min(n0, DEFAULT_IN_LANES) if in_lanes is None else in_lanes
        if not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= n0:
            raise ConfigError(f"in_lanes must be an integer in 1..{n0}, not {p!r}")
        return p

    @property
    def model(self) -> Model:
        return self._model

    @property
    def config(self) -> OnChipConfig:
        return self._config

    @property
    def in_lanes(self) -> int:
        return self._p

    @property
    def fold(self) -> TrainerFold:
        return self._fold

    @property
    def dbg_width(self) -> int:
        return self._dw

    def load_transfers(self) -> int:
        return math.ceil(self._model.cfg.layers[0].n_in / self._p)

    # -- the two maps a mutation test may break ------------------------------------------------
    def _neuron(self, jg, p: int, pe: int):
        """Neuron of bank ``p`` in neuron group ``jg`` (``jg·pe + p``)."""
        return jg * pe + p

    def _draw_steps(self, n_in: int, p: int, lane: int) -> int:
        """LFSR steps from a word's base state to the draw of bank ``p``, lane ``lane``."""
        return p * n_in + lane + 1

    # -- gateware ------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        model, oc, fd = self._model, self._config, self._fold
        cfg = model.cfg
        lays = cfg.layers
        n_l = len(lays)
        f = cfg.flip
        a_w = f.acc_width
        b0 = lays[0].input_bits
        p_in, t_in = self._p, self.load_transfers()
        pes = [fd.pe(i) for i in range(n_l)]
        sds = [fd.simd(i) for i in range(n_l)]
        ws = [fd.words(cfg, i) for i in range(n_l)]
        mgs = [lay.n_out // pes[i] for i, lay in enumerate(lays)]   # neuron groups per plane
        gs = [fd.groups(cfg, i) for i in range(n_l)]
        ks = [fd.tree_stages(cfg, i) for i in range(n_l)]
        max_pe = max(pes)
        depth = [max(2, gs[i] * ws[i]) for i in range(n_l)]
        aw = max(_bits(d - 1) for d in depth)

        # -- state: banked word memories (weights + accumulators), thresholds, LFSR ----------
        rd, wr, th_rd, th_wr = [], [], [], []
        for i, lay in enumerate(lays):
            pe, sd, nw = pes[i], sds[i], ws[i]
            layout = data.StructLayout({"w": sd, "acc": data.ArrayLayout(signed(a_w), sd)})
            wt = model.weights[i].to("cpu").reshape(-1, lay.n_in).tolist()
            ac = model.acc[i].to("cpu").reshape(-1, lay.n_in).tolist()
            th = [int(v) for v in model.theta[i].tolist()]
            rd.append([]), wr.append([]), th_rd.append([]), th_wr.append([])
            for p in range(pe):
                init = []
                for g in range(gs[i]):
                    r = g * pe + p
                    for w in range(nw):
                        lo = w * sd
                        init.append({"w": sum(b << k for k, b in enumerate(wt[r][lo:lo + sd])),
                                     "acc": ac[r][lo:lo + sd]})
                mem = memory.Memory(shape=layout, depth=depth[i], init=init,
                                    attrs=trainer_mem_attrs(sd * (1 + a_w), depth[i]))
                m.submodules[f"mem{i}_{p}"] = mem
                rd[i].append(mem.read_port())
                wr[i].append(mem.write_port())
                tm = memory.Memory(shape=signed(lay.z_width), depth=max(2, mgs[i]),
                                   init=[th[jg * pe + p] for jg in range(mgs[i])])
                m.submodules[f"theta{i}_{p}"] = tm
                th_rd[i].append(tm.read_port())
                th_wr[i].append(tm.write_port())

        lfsr_w = f.lfsr.width
        lfsr = Signal(lfsr_w, name="lfsr", init=model.lfsr_state if model.lfsr_state is not None else f.lfsr.seed)
        db = f.lfsr.draw_bits

        # -- per-sample registers ------------------------------------------------------------
        x = Signal(t_in * p_in * b0, name="x")             # layer 0 input, B bits per pixel
        label = Signal(self._cb, name="label")
        acts = [Signal(lay.n_out, name=f"act{i}") for i, lay in enumerate(lays[:-1])]
        gates = [Signal(lay.n_out, name=f"gate{i}") for i, lay in enumerate(lays[:-1])]
        out = lays[-1]
        scores = Array(Signal(signed(out.z_width), name=f"score{c}") for c in range(out.n_out))
        e_pos = [Signal(lay.n_out, name=f"e_pos{i}") for i, lay in enumerate(lays)]
        e_neg = [Signal(lay.n_out, name=f"e_neg{i}") for i, lay in enumerate(lays)]
        deltas = [None] + [
            [Signal(signed(_bits(lay.swarm * lay.n_out) + 1), name=f"delta{i}_{k}") for k in range(lay.n_in)]
            for i, lay in enumerate(lays) if i > 0]
        for i in range(1, n_l):
            prev = i - 1
            inv = [int(v) for v in model.invert[prev].tolist()]
            for k, d in enumerate(deltas[i]):
                pos, neg = (d > 0) & gates[prev][k], (d < 0) & gates[prev][k]
                if inv[k]:
                    pos, neg = neg, pos
                m.d.comb += [e_pos[prev][k].eq(pos), e_neg[prev][k].eq(neg)]

        def in_word(i: int, w):
            """Layer ``i``'s input lanes of word ``w`` (values of B bits, or bits)."""
            sd = sds[i]
            if i == 0:
                word = x.word_select(w, sd * b0) if ws[0] > 1 else x[:sd * b0]
                return [word[k * b0:(k + 1) * b0] for k in range(sd)]
            word = acts[i - 1].word_select(w, sd) if ws[i] > 1 else acts[i - 1]
            return [word[k] for k in range(sd)]

        # -- the pipeline's control: c[0] is the issue (comb), c[d] the item d cycles later ----
        ctl = data.StructLayout({
            "valid": 1, "ph": 2, "layer": range(max(2, n_l)), "jg": range(max(2, max(mgs))),
            "w": range(max(2, max(ws))), "first": 1, "last": 1, "addr": aw})
        n_stage = 4 + max(ks)
        c = [Signal(ctl, name=f"c{d}") for d in range(n_stage)]
        for d in range(1, n_stage):
            m.d.sync += c[d].eq(c[d - 1])

        # read-word registers (free running): the words issued at t, valid at t + 2
        rq = [[Signal.like(rd[i][p].data, name=f"rq{i}_{p}") for p in range(pes[i])] for i in range(n_l)]
        for i in range(n_l):
            for p in range(pes[i]):
                m.d.sync += rq[i][p].eq(rd[i][p].data)

        # -- read ports: the debug request while idle, else the issue ----------------------
        dbg_state = Signal(name="dbg_state")
        th_ra = Signal(range(max(2, max(mgs))), name="th_ra")      # threshold read (pipeline)
        th_re = Signal(name="th_re")
        th_rl = Signal(range(max(2, n_l)), name="th_rl")
        dbg_sel_bank = Signal(range(max(2, max_pe)), name="dbg_bank")
        dbg_addr = Signal(aw, name="dbg_addr")
        dbg_th_bank = Signal(range(max(2, max_pe)), name="dbg_th_bank")
        dbg_th_addr = Signal(range(max(2, max(mgs))), name="dbg_th_addr")
        with m.Switch(self.dbg_layer):
            for i, lay in enumerate(lays):
                with m.Case(i):
                    rows = lay.swarm * lay.n_out
                    q, r = _divmod(m, self.dbg_row[:_bits(rows - 1)], pes[i], rows, f"dbg_rw{i}")
                    m.d.comb += [dbg_sel_bank.eq(r), dbg_addr.eq(q * ws[i] + self.dbg_word)]
                    q, r = _divmod(m, self.dbg_row[:_bits(lay.n_out - 1)], pes[i], lay.n_out, f"dbg_th{i}")
                    m.d.comb += [dbg_th_bank.eq(r), dbg_th_addr.eq(q)]
        for i in range(n_l):
            for p in range(pes[i]):
                with m.If(dbg_state):
                    sel = self.dbg_en & (self.dbg_layer == i)
                    m.d.comb += [rd[i][p].addr.eq(dbg_addr),
                                 rd[i][p].en.eq(sel & (self.dbg_kind == DBG_ROW) & (dbg_sel_bank == p)),
                                 th_rd[i][p].addr.eq(dbg_th_addr),
                                 th_rd[i][p].en.eq(sel & (self.dbg_kind == DBG_THETA) & (dbg_th_bank == p))]
                with m.Else():
                    m.d.comb += [rd[i][p].addr.eq(c[0].addr), rd[i][p].en.eq(c[0].valid & (c[0].layer == i)),
                                 th_rd[i][p].addr.eq(th_ra), th_rd[i][p].en.eq(th_re & (th_rl == i))]
        th_q = [[Signal.like(th_rd[i][p].data, name=f"thq{i}_{p}") for p in range(pes[i])] for i in range(n_l)]
        for i in range(n_l):
            for p in range(pes[i]):
                m.d.sync += th_q[i][p].eq(th_rd[i][p].data)

        # -- debug read-back -----------------------------------------------------------------
        q_kind = Signal(2, name="q_kind")
        q_layer = Signal.like(self.dbg_layer, name="q_layer")
        q_bank = Signal.like(dbg_sel_bank, name="q_bank")
        q_th_bank = Signal.like(dbg_th_bank, name="q_th_bank")
        lfsr_q = Signal(lfsr_w, name="lfsr_q")
        with m.If(self.dbg_en):
            m.d.sync += [q_kind.eq(self.dbg_kind), q_layer.eq(self.dbg_layer), q_bank.eq(dbg_sel_bank),
                         q_th_bank.eq(dbg_th_bank), lfsr_q.eq(lfsr)]
        with m.Switch(q_kind):
            with m.Case(DBG_ROW):
                for i in range(n_l):
                    for p in range(pes[i]):
                        with m.If((q_layer == i) & (q_bank == p)):
                            m.d.comb += self.dbg_data.eq(Cat(rd[i][p].data.w, rd[i][p].data.acc))
            with m.Case(DBG_THETA):
                for i in range(n_l):
                    for p in range(pes[i]):
                        with m.If((q_layer == i) & (q_th_bank == p)):
                            m.d.comb += self.dbg_data.eq(th_rd[i][p].data.as_unsigned())
            with m.Case(DBG_LFSR):
                m.d.comb += self.dbg_data.eq(lfsr_q)

        # -- FWD: word sums (K register stages), z accumulation (A), threshold (B) ----------
        zmax = max(lay.z_width for lay in lays) + 1
        z_acc = [Signal(signed(zmax), name=f"z_acc{p}") for p in range(max_pe)]
        z_done = [Signal(signed(zmax), name=f"z_done{p}") for p in range(max_pe)]
        th_wr_fwd = [Signal(name=f"th_wr_fwd{i}") for i in range(n_l)]
        for i, lay in enumerate(lays):
            pe, sd, k_i = pes[i], sds[i], ks[i]
            xin = in_word(i, c[2].w)
            pcs = []
            for p in range(pe):
                wb = rq[i][p].w
                if lay.input_bits == 1:
                    terms = [~(wb[k] ^ xin[k]) for k in range(sd)]
                else:
                    terms = [Mux(wb[k], Cat(xin[k], Const(0, 1)).as_signed(),
                                 -Cat(xin[k], Const(0, 1)).as_signed()) for k in range(sd)]
                if k_i > 1:  # split the tree: groups of gsz terms registered, then their sum
                    gsz = 1 << -(-(sd - 1).bit_length() // 2)
                    parts = []
                    for g0 in range(0, sd, gsz):
                        ps = _tree(terms[g0:g0 + gsz])
                        pr = Signal(signed(len(ps) + 1), name=f"fwd{i}_{p}_part{g0 // gsz}")
                        m.d.sync += pr.eq(ps)
                        parts.append(pr)
                    tot = _tree(parts)
                else:
                    tot = _tree(terms)
                pc = Signal(signed(lay.z_width + 1), name=f"fwd{i}_pc{p}")
                m.d.sync += pc.eq((tot << 1) - sd if lay.input_bits == 1 else tot)
                pcs.append(pc)
            ct, ca, cb = c[1 + k_i], c[2 + k_i], c[3 + k_i]
            with m.If(ct.valid & (ct.ph == FWD) & (ct.layer == i) & ct.last):
                # thresholds read a cycle ahead and registered (th_q): no block RAM output
                # feeds the subtract-and-compare of the B stage
                m.d.comb += [th_ra.eq(ct.jg), th_re.eq(1), th_rl.eq(i)]
            with m.If(ca.valid & (ca.ph == FWD) & (ca.layer == i)):
                for p in range(pe):
                    zs = Signal(signed(zmax), name=f"fwd{i}_zsum{p}")
                    m.d.comb += zs.eq(Mux(ca.first, 0, z_acc[p]) + pcs[p])
                    m.d.sync += z_acc[p].eq(zs)
                    with m.If(ca.last):
                        m.d.sync += z_done[p].eq(zs)
            inv = [int(v) for v in model.invert[i].tolist()]
            zts = []
            for p in range(pe):
                zt = Signal(signed(lay.z_width + 1), name=f"fwd{i}_zt{p}")
                m.d.comb += zt.eq(z_done[p] - th_q[i][p])
                zts.append(zt)
            with m.If(cb.valid & (cb.ph == FWD) & (cb.layer == i) & cb.last):
                with m.Switch(cb.jg):   # neuron jg·pe + p takes bank p's result (a decoder)
                    for jg in range(mgs[i]):
                        with m.Case(jg):
                            for p, zt in enumerate(zts):
                                j = self._neuron(jg, p, pe)
                                if lay.output:
                                    m.d.sync += scores[j].eq(zt)
                                else:
                                    win = oc.windows[i]
                                    m.d.sync += [acts[i][j].eq((zt >= 0) ^ inv[j]),
                                                 gates[i][j].eq((zt >= -win) & (zt <= win))]
                if oc.homeostasis_shift and not lay.output:
                    m.d.comb += th_wr_fwd[i].eq(1)
                    for p, zt in enumerate(zts):
                        m.d.comb += [th_wr[i][p].addr.eq(cb.jg), th_wr[i][p].en.eq(1),
                                     th_wr[i][p].data.eq(th_q[i][p] + (zt >> oc.homeostasis_shift))]

        # -- c[1]: per-bank errors, input signs, LFSR draws of the word (registered) -------
        e_q = [[Signal(signed(2), name=f"e_q{i}_{p}") for p in range(pes[i])] for i in range(n_l)]
        for i in range(n_l):
            for p in range(pes[i]):  # bank p's neurons jg·pe + p: an M/pe-way mux
                js = [self._neuron(jg, p, pes[i]) for jg in range(mgs[i])]
                ep = Array(e_pos[i][j] for j in js)[c[1].jg] if len(js) > 1 else e_pos[i][js[0]]
                en = Array(e_neg[i][j] for j in js)[c[1].jg] if len(js) > 1 else e_neg[i][js[0]]
                m.d.sync += e_q[i][p].eq(Mux(ep, 1, Mux(en, -1, 0)))
        xs_q = []
        for i, lay in enumerate(lays):
            xin = in_word(i, c[1].w)
            xq = Signal(sds[i], name=f"xs_q{i}")
            if lay.input_bits == 1:
                m.d.sync += xq.eq(Cat(*xin))
            elif oc.input_sign == "msb":
                m.d.sync += xq.eq(Cat(*[v[lay.input_bits - 1] for v in xin]))
            else:
                m.d.sync += xq.eq(Cat(*[v.any() for v in xin]))
            xs_q.append(xq)
        d_q = [None] * n_l
        if f.uses_lfsr:
            c1_upd = c[1].valid & (c[1].ph == UPD)
            for i, lay in enumerate(lays):
                pe, sd, n = pes[i], sds[i], lay.n_in
                lanes = {(p, k): self._draw_steps(n, p, k) for p in range(pe) for k in range(sd)}
                adv_w, adv_g = sd, sd + (pe - 1) * n
                jm = jump_masks(lfsr_w, f.lfsr.taps, list(lanes.values()) + [adv_w, adv_g])
                d_q[i] = [[Signal(db, name=f"draw{i}_{p}_{k}") for k in range(sd)] for p in range(pe)]
                for (p, k), st in lanes.items():
                    m.d.sync += d_q[i][p][k].eq(_apply(lfsr, jm[st], db))
                with m.If(c1_upd & (c[1].layer == i)):
                    with m.If(c[1].w == ws[i] - 1):
                        m.d.sync += lfsr.eq(_apply(lfsr, jm[adv_g]))
                    with m.Else():
                        m.d.sync += lfsr.eq(_apply(lfsr, jm[adv_w]))

        # -- BWD (c[2]): delta_k += sum_p e_p (2 w_p,k - 1) on the word's lanes ------------
        for i in range(1, n_l):
            pe, sd = pes[i], sds[i]
            sums = []
            for k in range(sd):
                sk = Signal(signed(_bits(pe) + 1), name=f"bwd{i}_sum{k}")
                m.d.comb += sk.eq(_tree([Mux(rq[i][p].w[k], e_q[i][p], -e_q[i][p]) for p in range(pe)]))
                sums.append(sk)
            with m.If(c[2].valid & (c[2].ph == BWD) & (c[2].layer == i)):
                with m.Switch(c[2].w):
                    for w in range(ws[i]):
                        with m.Case(w):
                            for k in range(sd):
                                dk = deltas[i][w * sd + k]
                                m.d.sync += dk.eq(dk + sums[k])

        # -- UPD (c[2]): votes and the flip rule on pe·simd lanes; write-back at c[3] -------
        for i, lay in enumerate(lays):
            pe, sd = pes[i], sds[i]
            c2_sel = c[2].valid & (c[2].ph == UPD) & (c[2].layer == i)
            c3_sel = c[3].valid & (c[3].ph == UPD) & (c[3].layer == i)
            step = oc.out_theta_step if lay.output else oc.theta_step
            bound = lay.theta_bound
            for p in range(pe):
                word = rq[i][p]
                e = e_q[i][p]
                nw = Signal.like(word, name=f"upd{i}_new{p}")
                for k in range(sd):
                    if lay.input_bits == 1:
                        vote = Mux(word.w[k] == xs_q[i][k], -e, e)
                    else:
                        vote = Mux(xs_q[i][k], Mux(word.w[k], -e, e), 0)
                    draw = d_q[i][p][k] if f.uses_lfsr else None
                    nwk, nak, _ = flip_lane(m, f, word.w[k], word.acc[k], vote, draw, f"upd{i}_{p}_{k}")
                    m.d.sync += [nw.w[k].eq(nwk), nw.acc[k].eq(nak)]
                with m.If(c3_sel):
                    m.d.comb += [wr[i][p].addr.eq(c[3].addr), wr[i][p].data.eq(nw), wr[i][p].en.eq(1)]
                th_new = Signal(signed(lay.z_width + 18), name=f"upd{i}_theta{p}")
                th_cl = Signal(signed(lay.z_width), name=f"upd{i}_theta_clamped{p}")
                m.d.comb += th_new.eq(th_q[i][p] - e * step)
                with m.If(th_new > bound):
                    m.d.comb += th_cl.eq(bound)
                with m.Elif(th_new < -bound):
                    m.d.comb += th_cl.eq(-bound)
                with m.Else():
                    m.d.comb += th_cl.eq(th_new)
                with m.If(c2_sel & c[2].first & ~th_wr_fwd[i]):
                    m.d.comb += [th_wr[i][p].addr.eq(c[2].jg), th_wr[i][p].data.eq(th_cl), th_wr[i][p].en.eq(1)]

        # -- ERR: registered argmax trees (prediction, rival), then the margin rule ---------
        floor = Const(-(1 << (out.z_width - 1)), signed(out.z_width))
        pred_i, _ = _argmax_pipe(m, list(scores), out.z_width, "am", value=False)
        rv_i, rv_v = _argmax_pipe(m, [Mux(label == cc, floor, scores[cc]) for cc in range(out.n_out)],
                                  out.z_width, "rv")
        levels = argmax_levels(out.n_out)

        # -- control -------------------------------------------------------------------------
        pred = Signal(self._cb, name="pred")
        err = Signal(name="err")
        layer = Signal(range(max(2, n_l)), name="layer")
        c_s = Signal(range(max(2, max(lay.swarm for lay in lays))), name="c_s")
        c_jg = Signal(range(max(2, max(mgs))), name="c_jg")
        c_w = Signal(range(max(2, max(ws))), name="c_w")
        cnt = Signal(range(max(8, max(ks) + 4, levels + 2)), name="cnt")
        load_t = Signal(range(max(2, t_in)), name="load_t")
        layer_done = Signal(name="layer_done")
        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)

        def advance(order):
            """Step the counters ``order`` (innermost first: (counter, is_last) pairs)."""
            (cnt_, last_), rest = order[0], order[1:]
            with m.If(~last_):
                m.d.sync += cnt_.eq(cnt_ + 1)
            with m.Else():
                m.d.sync += cnt_.eq(0)
                if rest:
                    advance(rest)

        def issue(ph: int):
            """Issue word (c_s, c_jg, c_w) of ``layer`` in phase ``ph``; advance the counters."""
            m.d.comb += [c[0].valid.eq(1), c[0].ph.eq(ph), c[0].layer.eq(layer), c[0].jg.eq(c_jg),
                         c[0].w.eq(c_w)]
            with m.Switch(layer):
                for i, lay in enumerate(lays):
                    with m.Case(i):
                        s_last, j_last, w_last = c_s == lay.swarm - 1, c_jg == mgs[i] - 1, c_w == ws[i] - 1
                        m.d.comb += [c[0].first.eq((c_s == 0) & (c_w == 0)), c[0].last.eq(s_last & w_last),
                                     c[0].addr.eq((c_s * mgs[i] + c_jg) * ws[i] + c_w),
                                     layer_done.eq(s_last & j_last & w_last)]
                        if ph == UPD:  # the thresholds of plane 0's word 0, for the step
                            m.d.comb += [th_ra.eq(c_jg), th_re.eq((c_s == 0) & (c_w == 0)), th_rl.eq(i)]
                        if ph == FWD:
                            advance([(c_w, w_last), (c_s, s_last), (c_jg, j_last)])
                        else:
                            advance([(c_w, w_last), (c_jg, j_last), (c_s, s_last)])

        with m.FSM(name="phase") as fsm:
            with m.State("LOAD"):
                m.d.comb += [self.i_stream.ready.eq(1), dbg_state.eq(load_t == 0),
                             self.idle.eq(load_t == 0)]
                with m.If(self.i_stream.valid):
                    pix = self.i_stream.payload.pixels
                    m.d.sync += x.word_select(load_t, p_in * b0).eq(
                        Cat(pix[i][PIXEL_BITS - b0:] for i in range(p_in)))
                    with m.If(load_t == t_in - 1):
                        m.d.sync += [load_t.eq(0), label.eq(self.i_stream.payload.label), layer.eq(0),
                                     c_s.eq(0), c_jg.eq(0), c_w.eq(0)]
                        m.next = "FWD"
                    with m.Else():
                        m.d.sync += load_t.eq(load_t + 1)
            with m.State("FWD"):
                issue(FWD)
                with m.If(layer_done):
                    with m.Switch(layer):
                        for i in range(n_l):
                            with m.Case(i):
                                if i == n_l - 1:
                                    m.d.sync += cnt.eq(ks[i] + 2)
                                    m.next = "FWD_DRAIN"
                                else:
                                    m.d.sync += [cnt.eq(ks[i]), layer.eq(i + 1)]
                                    m.next = "FWD_WAIT"
            with m.State("FWD_WAIT"):
                m.d.sync += cnt.eq(cnt - 1)
                with m.If(cnt == 0):
                    m.next = "FWD"
            with m.State("FWD_DRAIN"):
                m.d.sync += cnt.eq(cnt - 1)
                with m.If(cnt == 0):
                    m.d.sync += cnt.eq(levels)
                    m.next = "ERR"
            with m.State("ERR"):
                m.d.sync += cnt.eq(cnt - 1)
                with m.If(cnt == 0):
                    st = scores[label]
                    offend = (rv_v + oc.margin) > st
                    m.d.sync += [pred.eq(pred_i), err.eq(offend),
                                 e_neg[-1].eq(Mux(offend, Const(1, out.n_out) << rv_i, 0)),
                                 e_pos[-1].eq(Mux(offend, Const(1, out.n_out) << label, 0)),
                                 c_s.eq(0), c_jg.eq(0), c_w.eq(0)]
                    for i in range(1, n_l):
                        m.d.sync += [dk.eq(0) for dk in deltas[i]]
                    if n_l > 1:
                        m.d.sync += layer.eq(n_l - 1)
                        m.next = "BWD"
                    else:
                        m.d.sync += layer.eq(0)
                        m.next = "UPD"
            with m.State("BWD"):
                issue(BWD)
                with m.If(layer_done):
                    m.d.sync += layer.eq(layer - 1)
                    m.next = "BWD_WAIT"
            with m.State("BWD_WAIT"):   # the last word's deltas settle before they are read
                with m.If(layer == 0):
                    m.next = "UPD"
                with m.Else():
                    m.next = "BWD"
            with m.State("UPD"):
                issue(UPD)
                with m.If(layer_done):
                    with m.If(layer == n_l - 1):
                        m.d.sync += cnt.eq(1)
                        m.next = "UPD_DRAIN"
                    with m.Else():
                        m.d.sync += layer.eq(layer + 1)
            with m.State("UPD_DRAIN"):
                m.d.sync += cnt.eq(cnt - 1)
                with m.If(cnt == 0):
                    m.next = "REPORT"
            with m.State("REPORT"):
                with m.If(~self.o_stream.valid | self.o_stream.ready):
                    m.d.sync += [self.o_stream.valid.eq(1), self.o_stream.payload.pred.eq(pred),
                                 self.o_stream.payload.error.eq(err)]
                    m.next = "LOAD"
        del fsm
        return m


def dbg_queries(cfg, fold: TrainerFold | None = None) -> list[tuple[int, int, int, int]]:
    """Debug-port reads ``(kind, layer, row, word)`` that fetch the whole training state of a
    model config under ``fold`` (default :meth:`TrainerFold.default`): every memory word of
    every weight row with its accumulators (row-major, words in order), every threshold, then
    the LFSR. ``word`` is 0 for thresholds, the LFSR and whenever ``simd == N``."""
    fold = TrainerFold.resolve(cfg, fold)
    q = []
    for i, lay in enumerate(cfg.layers):
        q += [(DBG_ROW, i, r, w) for r in range(lay.swarm * lay.n_out) for w in range(fold.words(cfg, i))]
        q += [(DBG_THETA, i, j, 0) for j in range(lay.n_out)]
    return q + [(DBG_LFSR, 0, 0, 0)]


def dbg_decode(cfg, queries, values, invert=None, fold: TrainerFold | None = None) -> Model:
    """The training state read by ``queries`` (:func:`dbg_queries`) with ``dbg_data`` values
    (ints) as a golden :class:`Model`; ``invert`` bits (constants of the RTL) default to 0. A
    ``DBG_ROW`` value is one memory word: its ``simd`` weight bits (lane 0 first), then its
    ``simd`` signed ``A``-bit accumulators."""
    import numpy as np
    import torch

    fold = TrainerFold.resolve(cfg, fold)
    a = cfg.flip.acc_width
    lays = cfg.layers
    w = [np.zeros((lay.swarm * lay.n_out, lay.n_in), dtype=np.uint8) for lay in lays]
    acc = [np.zeros((lay.swarm * lay.n_out, lay.n_in), dtype=np.int32) for lay in lays]
    th = [np.zeros(lay.n_out, dtype=np.int32) for lay in lays]
    lfsr = None
    for (kind, i, r, word), v in zip(queries, values, strict=True):
        if kind == DBG_ROW:
            sd = fold.simd(i)
            lo = word * sd
            w[i][r, lo:lo + sd] = [(v >> k) & 1 for k in range(sd)]
            raw = [(v >> (sd + k * a)) & ((1 << a) - 1) for k in range(sd)]
            acc[i][r, lo:lo + sd] = [x - (1 << a) if x >> (a - 1) else x for x in raw]
        elif kind == DBG_THETA:
            zw = lays[i].z_width
            t = v & ((1 << zw) - 1)
            th[i][r] = t - (1 << zw) if t >> (zw - 1) else t
        else:
            lfsr = v & ((1 << cfg.flip.lfsr.width) - 1)
    shape = [(lay.swarm, lay.n_out, lay.n_in) for lay in lays]
    inv = invert or [torch.zeros(lay.n_out, dtype=torch.uint8) for lay in lays]
    return Model(cfg, [torch.from_numpy(x.reshape(s)) for x, s in zip(w, shape, strict=True)],
                 [torch.from_numpy(t) for t in th], [t.clone() for t in inv],
                 [torch.from_numpy(x.reshape(s)) for x, s in zip(acc, shape, strict=True)], lfsr)


def build(
    *,
    arch: str = "16-8-4",
    swarm: int = 1,
    input_bits: int = 8,
    noise: str = "stochastic",
    acc_width: int = 6,
    threshold: int = 3,
    leak_shift: int = 0,
    fire_prob: int = 128,
    margin: int = 2,
    window: int = 4,
    theta_step: int = 1,
    homeostasis_shift: int = 0,
    in_lanes: int = 0,
    fold: str = "",
    seed: int = 0,
) -> OnChipTrainer:
    """An :class:`OnChipTrainer` for a random model of ``arch`` (``"N-H...-C"``), accumulators
    0, thresholds 0 (``bitswarm verilog --component onchip-trainer``; ``in_lanes`` 0 = default;
    ``fold`` ``"PExSIMD,..."`` one pair per layer, e.g. ``"8x64,5x64"``, or a trainer fold file;
    empty = ``pe = 1``, ``simd = N``)."""
    import torch
    from bitswarm.golden.flip import FlipRuleConfig
    from bitswarm.golden.lfsr import LFSRConfig
    from bitswarm.golden.model import ModelConfig

    try:
        sizes = [int(v) for v in str(arch).split("-")]
    except ValueError:
        raise ConfigError(f"arch must look like 64-32-10, not {arch!r}") from None
    if len(sizes) < 2:
        raise ConfigError(f"arch needs at least an input and an output size, not {arch!r}")
    flip = FlipRuleConfig(acc_width=acc_width, threshold=threshold, leak_shift=leak_shift, noise=noise,
                          fire_prob=fire_prob, lfsr=LFSRConfig(width=16, seed=0xACE1, draw_bits=8))
    mc = ModelConfig.mlp(sizes, swarm=swarm, input_bits=input_bits, flip=flip)
    model = Model.random(mc, seed)
    model.acc = [torch.zeros(lay.weight_shape(), dtype=torch.int32) for lay in mc.layers]
    oc = OnChipConfig(margin=margin, windows=(window,) * (len(sizes) - 2), theta_step=theta_step,
                      homeostasis_shift=homeostasis_shift)
    fd = TrainerFold.parse(fold, mc) if fold else None
    return OnChipTrainer(model, oc, in_lanes=in_lanes or None, fold=fd)
