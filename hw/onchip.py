"""On-chip learning datapath: the fully integer training step in RTL (SPEC.md §12).

:class:`OnChipTrainer` holds a whole binary model as training state — per layer a
:class:`~bitswarm.hw.flip_unit.FlipUnit` (weight memory ``S·M`` rows x ``N`` bits, accumulator
memory ``S·M`` rows x ``N`` signed ``A``-bit values), a threshold memory (``M`` signed values)
and one shared noise LFSR — and trains it on a stream of ``(image, label)`` samples, one golden
:func:`~bitswarm.golden.onchip.onchip_step` per sample, bit for bit.

Row-serial schedule of one sample. Row ``(s, j)`` of layer ``l`` is address ``s·M_l + j`` of
its memories (golden's ``[S, M, N]`` row-major order); every phase reads one row per cycle
through the flip unit's read port (one cycle latency) and processes it on all ``N`` lanes::

    LOAD    ceil(N_0 / P) cycles   P pixels per i_stream transfer; the label comes with the last
    FWD     sum_l R_l + 1          rows in neuron order (j outer, s inner); z_j summed over the
                                   S planes; when z_j is complete: hidden activation and gate bit
                                   |z_j - θ_j| <= window, θ_j += (z_j - θ_j) >> shift, or the score
                                   z_j - θ_j at the output; layer l+1 starts reading while layer
                                   l's last row is being summed; one drain cycle at the end
    ERR     1                      margin rule against the rival (highest-scoring class other
                                   than the label) on the registered scores; argmax (reported)
    BWD     sum_{l>=1} R_l         delta_k += e_j (2 w[s, j, k] - 1) on N_l lanes, l = L-1 .. 1;
                                   e_{l-1} = gate · sign(delta) · (1 - 2 inv) is combinational
    UPD     sum_l R_l + 1          rows in golden order; each row's votes -e_j xs_k (2 w - 1) and
                                   its N_l LFSR draws go to the layer's flip unit (one row per
                                   cycle, one cycle read + one cycle write-back); θ_j steps by
                                   -e_j · step (clamped) at the row of plane s = 0; one drain
                                   cycle (the last row's votes; its write-back overlaps REPORT)
    REPORT  1                      o_stream: predicted class (before the update), error flag

with ``R_l = S·M_l``. :func:`bitswarm.hw.plan.cycles_per_sample` is this table; the Verilator
tests compare it with the measured interval between samples.

Timing: the digits bench network 64-256-10 places and routes on an ECP5-85F at 22.4 MHz (20k
LUT4, 35 block RAMs; ``onchip-trainer`` in bench/results/synth.md). nextpnr's critical path runs
from the weight memory's read port through the N-lane XNOR popcount into the row-sum register
``z_acc`` in one cycle; registering the popcount would shorten it at the cost of one cycle per
layer and phase (and a matching change of the cycle model).

Interfaces: ``i_stream`` (pixels, label), ``o_stream`` (pred, error) and a debug read port used
while idle (``idle`` high: no sample in progress) that reads any weight row with its
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

from .argmax import argmax_tree
from .flip_unit import FlipUnit
from .lfsr import galois_steps
from .plan import DEFAULT_IN_LANES, TrainerFold

__all__ = ["OnChipTrainer", "DBG_ROW", "DBG_THETA", "DBG_LFSR", "DEFAULT_IN_LANES", "build",
           "dbg_queries", "dbg_decode"]

DBG_ROW, DBG_THETA, DBG_LFSR = 0, 1, 2


def _bits(n: int) -> int:
    """Unsigned width of the values ``0..n`` (at least 1)."""
    return max(1, int(n).bit_length())


def _tree(vals):
    """Balanced sum of Amaranth values (each addition widens by one bit)."""
    vals = list(vals)
    while len(vals) > 1:
        vals = [vals[i] + vals[i + 1] if i + 1 < len(vals) else vals[i] for i in range(0, len(vals), 2)]
    return vals[0]


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
    i_stream : ``In(stream.Signature(StructLayout({"pixels": ArrayLayout(8, P), "label": cb})))``
        Raw uint8 pixels ``t·P .. t·P + P - 1`` in transfer ``t`` (pixels past ``N_0`` ignored);
        the label of the sample is taken from its last transfer.
    o_stream : ``Out(stream.Signature(StructLayout({"pred": cb, "error": 1})))``
        Per sample: the predicted class before the update (argmax, ties to the lowest index)
        and whether the margin rule found an error.
    idle : ``Out(1)``
        No sample in progress (between samples); the debug port may be used.
    fold : TrainerFold, optional
        Per-layer ``(pe, simd)`` (:class:`~bitswarm.hw.plan.TrainerFold`; default ``pe = 1``,
        ``simd = N``).

    Members
    -------
    dbg_en, dbg_kind, dbg_layer, dbg_row, dbg_word : ``In``
        Debug read request: kind ``DBG_ROW`` returns memory word ``dbg_word`` (lanes
        ``dbg_word·simd .. +simd-1``; always 0 when ``simd == N``) of row ``dbg_row`` of layer
        ``dbg_layer`` as ``w | acc << simd`` (the word's weight bits, then its ``simd`` signed
        ``A``-bit accumulators, lowest lane first), ``DBG_THETA`` threshold ``dbg_row`` (two's
        complement, ``z_width`` bits), ``DBG_LFSR`` the LFSR state.
    dbg_data : ``Out(D)``
        The data, one cycle after ``dbg_en``; ``D = max_l simd_l (1 + A)`` (at least the
        threshold and LFSR widths), :attr:`dbg_width`.
    """

    def __init__(self, model: Model, config: OnChipConfig | None = None, *, in_lanes: int | None = None,
                 fold: TrainerFold | None = None):
        try:
            p = self._check(model, config, in_lanes)
            self._fold = TrainerFold.resolve(model.cfg, fold)
            if self._fold != TrainerFold.default(model.cfg):
                raise ConfigError("this OnChipTrainer supports only the default fold (pe = 1, simd = N)")
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

    # -- gateware ------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        model, oc = self._model, self._config
        cfg = model.cfg
        lays = cfg.layers
        n_l = len(lays)
        f = cfg.flip
        b0 = lays[0].input_bits
        p, t_in = self._p, self.load_transfers()
        n0 = lays[0].n_in

        # -- state: flip units (weights + accumulators), thresholds, LFSR --------------------
        fus, th_mems, th_rd, th_wr = [], [], [], []
        for i, lay in enumerate(lays):
            w = model.weights[i].to("cpu")
            acc = model.acc[i].to("cpu")
            s_, m_, n_ = lay.swarm, lay.n_out, lay.n_in
            init_w = w.reshape(s_ * m_, n_).tolist()
            init_acc = acc.reshape(s_ * m_, n_).tolist()
            fu = FlipUnit(f, rows=s_ * m_, lanes=n_, init_w=init_w, init_acc=init_acc, external_draws=True)
            m.submodules[f"flip{i}"] = fu
            m.d.comb += fu.o_stream.ready.eq(1)
            fus.append(fu)
            mem = memory.Memory(shape=signed(lay.z_width), depth=max(2, m_),
                                init=[int(v) for v in model.theta[i].tolist()])
            m.submodules[f"theta{i}"] = mem
            th_mems.append(mem)
            th_rd.append(mem.read_port())
            th_wr.append(mem.write_port())

        lfsr_w = f.lfsr.width
        lfsr = Signal(lfsr_w, name="lfsr", init=model.lfsr_state if model.lfsr_state is not None else f.lfsr.seed)
        max_n = max(lay.n_in for lay in lays)
        steps = galois_steps(m, lfsr, f.lfsr.taps, max_n, name="lfsr_step") if f.uses_lfsr else []
        db = f.lfsr.draw_bits

        # -- per-sample registers ------------------------------------------------------------
        x = Signal(t_in * p * b0, name="x")             # layer 0 input, B bits per pixel
        label = Signal(self._cb, name="label")
        acts = [Signal(lay.n_out, name=f"act{i}") for i, lay in enumerate(lays[:-1])]
        gates = [Signal(lay.n_out, name=f"gate{i}") for i, lay in enumerate(lays[:-1])]
        out = lays[-1]
        scores = Array(Signal(signed(out.z_width), name=f"score{c}") for c in range(out.n_out))
        # errors: e_pos/e_neg bit vectors per layer; output registered, hidden combinational
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

        # layer inputs as per-lane values
        def layer_input(i: int):
            if i == 0:
                return [x[k * b0:(k + 1) * b0] for k in range(n0)]
            return [acts[i - 1][k] for k in range(lays[i].n_in)]

        # -- pipeline registers of the data stage (FWD, BWD) and the vote stage (UPD) -------
        d_valid = Signal(name="d_valid")
        d_layer = Signal(range(max(2, n_l)), name="d_layer")
        d_j = Signal(range(max(2, max(lay.n_out for lay in lays))), name="d_j")
        d_first = Signal(name="d_first")   # plane s == 0
        d_last = Signal(name="d_last")     # plane s == S - 1
        z_acc = Signal(signed(max(lay.z_width for lay in lays) + 1), name="z_acc")

        # issue counters
        c_j = Signal(range(max(2, max(lay.n_out for lay in lays))), name="c_j")
        c_s = Signal(range(max(2, max(lay.swarm for lay in lays))), name="c_s")
        load_t = Signal(range(max(2, t_in)), name="load_t")
        pred = Signal(self._cb, name="pred")
        err = Signal(name="err")

        issue_addr = Signal(range(max(2, max(lay.swarm * lay.n_out for lay in lays))), name="issue_addr")
        issue_layer = Signal(range(max(2, n_l)), name="issue_layer")
        issue_en = Signal(name="issue_en")
        th_issue = Signal(name="th_issue")

        dbg_state = Signal(name="dbg_state")  # idle: the debug port owns the read ports
        for i, fu in enumerate(fus):
            with m.If(dbg_state):
                m.d.comb += [fu.dbg_rd.addr.eq(self.dbg_row),
                             fu.dbg_rd.en.eq(self.dbg_en & (self.dbg_layer == i) & (self.dbg_kind == DBG_ROW))]
            with m.Else():
                m.d.comb += [fu.dbg_rd.addr.eq(issue_addr), fu.dbg_rd.en.eq(issue_en & (issue_layer == i))]
            with m.If(dbg_state):
                m.d.comb += [th_rd[i].addr.eq(self.dbg_row),
                             th_rd[i].en.eq(self.dbg_en & (self.dbg_layer == i) & (self.dbg_kind == DBG_THETA))]
            with m.Else():
                m.d.comb += [th_rd[i].addr.eq(c_j), th_rd[i].en.eq(th_issue & (issue_layer == i))]

        # -- debug read-back -----------------------------------------------------------------
        q_kind = Signal(2, name="q_kind")
        q_layer = Signal.like(self.dbg_layer, name="q_layer")
        lfsr_q = Signal(lfsr_w, name="lfsr_q")
        with m.If(self.dbg_en):
            m.d.sync += [q_kind.eq(self.dbg_kind), q_layer.eq(self.dbg_layer), lfsr_q.eq(lfsr)]
        with m.Switch(q_kind):
            with m.Case(DBG_ROW):
                for i, fu in enumerate(fus):
                    with m.If(q_layer == i):
                        m.d.comb += self.dbg_data.eq(Cat(fu.dbg_rd.data.w, fu.dbg_rd.data.acc))
            with m.Case(DBG_THETA):
                for i in range(n_l):
                    with m.If(q_layer == i):
                        m.d.comb += self.dbg_data.eq(th_rd[i].data.as_unsigned())
            with m.Case(DBG_LFSR):
                m.d.comb += self.dbg_data.eq(lfsr_q)

        # -- data stage (FWD, BWD): one read row per cycle on all lanes --------------------
        d_bwd = Signal(name="d_bwd")
        th_wr_fwd = [Signal(name=f"th_wr_fwd{i}") for i in range(n_l)]
        for i, lay in enumerate(lays):
            w = fus[i].dbg_rd.data.w
            xin = layer_input(i)
            if lay.input_bits == 1:
                contrib = (_tree([~(w[k] ^ xin[k]) for k in range(lay.n_in)]) << 1) - lay.n_in
            else:
                contrib = (_tree([Mux(w[k], xin[k], 0) for k in range(lay.n_in)]) << 1) - _tree(xin)
            zj = Signal(signed(lay.z_width + 1), name=f"fwd{i}_z")
            zt = Signal(signed(lay.z_width + 1), name=f"fwd{i}_zt")
            m.d.comb += [zj.eq(Mux(d_first, 0, z_acc) + contrib), zt.eq(zj - th_rd[i].data)]
            with m.If(d_valid & ~d_bwd & (d_layer == i)):
                with m.If(d_last):
                    if lay.output:
                        m.d.sync += scores[d_j].eq(zt)
                    else:
                        inv = Const(sum(int(v) << k for k, v in enumerate(model.invert[i].tolist())), lay.n_out)
                        win = oc.windows[i]
                        m.d.sync += [acts[i].bit_select(d_j, 1).eq((zt >= 0) ^ inv.bit_select(d_j, 1)),
                                     gates[i].bit_select(d_j, 1).eq((zt >= -win) & (zt <= win))]
                        if oc.homeostasis_shift:
                            m.d.comb += [th_wr_fwd[i].eq(1), th_wr[i].addr.eq(d_j),
                                         th_wr[i].data.eq(th_rd[i].data + (zt >> oc.homeostasis_shift))]
                with m.Else():
                    m.d.sync += z_acc.eq(zj)
            if i > 0:
                ep, en = e_pos[i].bit_select(d_j, 1), e_neg[i].bit_select(d_j, 1)
                with m.If(d_valid & d_bwd & (d_layer == i)):
                    for k, dk in enumerate(deltas[i]):
                        with m.If(ep):
                            m.d.sync += dk.eq(dk + Mux(w[k], 1, -1))
                        with m.Elif(en):
                            m.d.sync += dk.eq(dk + Mux(w[k], -1, 1))

        # -- vote stage (UPD): votes + draws to the layer's flip unit, threshold step --------
        v_valid = Signal(name="v_valid")
        v_layer = Signal(range(max(2, n_l)), name="v_layer")
        v_j = Signal.like(d_j, name="v_j")
        v_first = Signal(name="v_first")
        for i, lay in enumerate(lays):
            fu = fus[i]
            w = fu.dbg_rd.data.w
            xin = layer_input(i)
            ep, en = e_pos[i].bit_select(v_j, 1), e_neg[i].bit_select(v_j, 1)
            e = Signal(signed(2), name=f"upd{i}_e")
            m.d.comb += e.eq(Mux(ep, 1, Mux(en, -1, 0)))
            sel = v_valid & (v_layer == i)
            m.d.comb += fu.i_stream.valid.eq(sel)
            for k in range(lay.n_in):
                if lay.input_bits == 1:
                    vote = Mux(w[k] == xin[k], -e, e)
                else:
                    hk = xin[k]
                    xs = hk[lay.input_bits - 1] if oc.input_sign == "msb" else hk.any()
                    vote = Mux(xs, Mux(w[k], -e, e), 0)
                m.d.comb += fu.i_stream.payload.votes[k].eq(vote)
                if f.uses_lfsr:
                    m.d.comb += fu.i_stream.payload.draws[k].eq(steps[k][:db])
            if f.uses_lfsr:
                with m.If(fu.i_stream.valid & fu.i_stream.ready):
                    m.d.sync += lfsr.eq(steps[lay.n_in - 1])
            step = oc.out_theta_step if lay.output else oc.theta_step
            bound = lay.theta_bound
            th_new = Signal(signed(lay.z_width + 18), name=f"upd{i}_theta")
            th_cl = Signal(signed(lay.z_width), name=f"upd{i}_theta_clamped")
            m.d.comb += th_new.eq(th_rd[i].data - e * step)
            with m.If(th_new > bound):
                m.d.comb += th_cl.eq(bound)
            with m.Elif(th_new < -bound):
                m.d.comb += th_cl.eq(-bound)
            with m.Else():
                m.d.comb += th_cl.eq(th_new)
            with m.If(sel & v_first & ~th_wr_fwd[i]):
                m.d.comb += [th_wr[i].addr.eq(v_j), th_wr[i].data.eq(th_cl), th_wr[i].en.eq(1)]
            with m.Elif(th_wr_fwd[i]):
                m.d.comb += th_wr[i].en.eq(1)

        # -- control -------------------------------------------------------------------------
        layer = Signal(range(max(2, n_l)), name="layer")
        m.d.sync += [d_valid.eq(0), v_valid.eq(0)]
        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)

        def issue(j_major: bool, bwd: bool, vote: bool):
            """Issue row (c_s, c_j) of ``layer``; advance the counters; True-branch at the end."""
            m.d.comb += [issue_en.eq(1), issue_layer.eq(layer), th_issue.eq(c_s == 0)]
            if vote:
                m.d.sync += [v_valid.eq(1), v_layer.eq(layer), v_j.eq(c_j), v_first.eq(c_s == 0)]
            else:
                m.d.sync += [d_valid.eq(1), d_bwd.eq(bwd), d_layer.eq(layer), d_j.eq(c_j),
                             d_first.eq(c_s == 0)]
            with m.Switch(layer):
                for i, lay in enumerate(lays):
                    with m.Case(i):
                        s_last, j_last = c_s == lay.swarm - 1, c_j == lay.n_out - 1
                        m.d.comb += issue_addr.eq(c_s * lay.n_out + c_j)
                        if not vote:
                            m.d.sync += d_last.eq(s_last)
                        inner, outer = (c_s, c_j) if j_major else (c_j, c_s)
                        in_last, out_last = (s_last, j_last) if j_major else (j_last, s_last)
                        with m.If(in_last):
                            m.d.sync += inner.eq(0)
                            with m.If(out_last):
                                m.d.sync += outer.eq(0)
                            with m.Else():
                                m.d.sync += outer.eq(outer + 1)
                        with m.Else():
                            m.d.sync += inner.eq(inner + 1)
                        m.d.comb += layer_done.eq(in_last & out_last)

        layer_done = Signal(name="layer_done")
        with m.FSM(name="phase") as fsm:
            with m.State("LOAD"):
                m.d.comb += [self.i_stream.ready.eq(1), dbg_state.eq(load_t == 0),
                             self.idle.eq(load_t == 0)]
                with m.If(self.i_stream.valid):
                    pix = self.i_stream.payload.pixels
                    m.d.sync += x.word_select(load_t, p * b0).eq(
                        Cat(pix[i][PIXEL_BITS - b0:] for i in range(p)))
                    with m.If(load_t == t_in - 1):
                        m.d.sync += [load_t.eq(0), label.eq(self.i_stream.payload.label), layer.eq(0),
                                     c_j.eq(0), c_s.eq(0)]
                        m.next = "FWD"
                    with m.Else():
                        m.d.sync += load_t.eq(load_t + 1)
            with m.State("FWD"):
                issue(j_major=True, bwd=False, vote=False)
                with m.If(layer_done):
                    with m.If(layer == n_l - 1):
                        m.next = "FWD_DRAIN"
                    with m.Else():
                        m.d.sync += layer.eq(layer + 1)
            with m.State("FWD_DRAIN"):
                m.next = "ERR"
            with m.State("ERR"):
                st = scores[label]
                # rival: the highest-scoring class other than the label (ties: lowest index);
                # the label competes with `floor`, below every reachable score (|z - θ| <= 2 z_bound)
                floor = Const(-(1 << (out.z_width - 1)), signed(out.z_width))
                rv, _ = argmax_tree(m, [Mux(label == c, floor, scores[c]) for c in range(out.n_out)],
                                    out.z_width)
                offend = Cat((rv == c) & ((scores[c] + oc.margin) > st) for c in range(out.n_out))
                am, _ = argmax_tree(m, list(scores), out.z_width)
                m.d.sync += [pred.eq(am), err.eq(offend.any()), e_neg[-1].eq(offend),
                             e_pos[-1].eq(Mux(offend.any(), Const(1, out.n_out) << label, 0)),
                             c_j.eq(0), c_s.eq(0)]
                for i in range(1, n_l):
                    m.d.sync += [dk.eq(0) for dk in deltas[i]]
                if n_l > 1:
                    m.d.sync += layer.eq(n_l - 1)
                    m.next = "BWD"
                else:
                    m.d.sync += layer.eq(0)
                    m.next = "UPD"
            with m.State("BWD"):
                issue(j_major=False, bwd=True, vote=False)
                with m.If(layer_done):
                    m.d.sync += layer.eq(layer - 1)
                    with m.If(layer == 1):
                        m.next = "UPD"
            with m.State("UPD"):
                issue(j_major=False, bwd=False, vote=True)
                with m.If(layer_done):
                    with m.If(layer == n_l - 1):
                        m.next = "UPD_DRAIN"
                    with m.Else():
                        m.d.sync += layer.eq(layer + 1)
            with m.State("UPD_DRAIN"):
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
    seed: int = 0,
) -> OnChipTrainer:
    """An :class:`OnChipTrainer` for a random model of ``arch`` (``"N-H...-C"``), accumulators
    0, thresholds 0 (``bitswarm verilog --component onchip-trainer``; ``in_lanes`` 0 = default)."""
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
    return OnChipTrainer(model, oc, in_lanes=in_lanes or None)
