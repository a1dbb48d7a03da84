"""Integrate-and-fire flip unit: on-chip learning over a weight memory (SPEC.md §8).

Bit-exact with :func:`bitswarm.golden.flip.flip_step`. The unit owns a weight memory of R rows
x K bits and an accumulator memory of R rows x K signed ``acc_width``-bit values. A golden step
over an ``[R, K]`` tensor is R vote rows streamed in row order 0..R-1; for every weight of the
row, in parallel over the K lanes::

    a1   = a - (a >> leak_shift)            # arithmetic shift; skipped when leak_shift == 0
    n    = d - 2**(b-1)   (noise "additive", else 0; d = this weight's LFSR draw, b bits)
    a2   = clamp(a1 + vote + n, A_MIN, A_MAX)   # one saturation of the exact sum
    fire = a2 >= threshold  [and d < fire_prob for noise "stochastic"]
    w'   = w XOR fire;   a' = refractory if fire else a2

The draws come from a :class:`~bitswarm.hw.lfsr.LFSR` with ``lanes = K``: row ``r`` of a step
gets draws ``r*K .. r*K + K-1`` of that step, i.e. row-major order as in golden. The LFSR only
exists (and only advances) when ``noise != "none"``.

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

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.flip import FlipRuleConfig
from bitswarm.golden.lfsr import LFSRConfig

from .lfsr import LFSR

__all__ = ["FlipUnit", "build", "flip_lane"]

MAX_ROWS = 1 << 20
MAX_LANES = 1024


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def flip_lane(m: Module, cfg: FlipRuleConfig, w, a, vote, d, name: str, *, leak: int | None = None,
              threshold: int | None = None):
    """SPEC §8's integrate-and-fire rule on one lane, as gateware in ``m``: weight bit ``w``,
    signed ``A``-bit accumulator ``a``, vote ``vote`` (-1, 0, +1) and LFSR draw ``d`` (used by
    the noise modes) give ``(new weight bit, new accumulator, fire)``. ``leak`` and
    ``threshold`` default to ``cfg``'s (:class:`FlipUnit` passes its own, which the mutation
    tests override); :class:`~bitswarm.hw.onchip.OnChipTrainer` uses the same function."""
    a_w, b = cfg.acc_width, cfg.lfsr.draw_bits
    leak = cfg.leak_shift if leak is None else leak
    thr = cfg.threshold if threshold is None else threshold
    a1 = a
    if leak:
        a1 = Signal(signed(a_w), name=f"{name}_leaked")
        m.d.comb += a1.eq(a - (a >> leak))  # fits: |a >> leak| <= |a| / 2
    total = a1 + vote
    if cfg.noise == "additive":
        # d - 2**(b-1) is d with its top bit inverted, read as b-bit two's complement
        total = total + Cat(d[: b - 1], ~d[b - 1]).as_signed()
    s = Signal(signed(len(total)), name=f"{name}_sum")
    sat = Signal(signed(a_w), name=f"{name}_sat")
    m.d.comb += s.eq(total)
    with m.If(s > cfg.acc_max):
        m.d.comb += sat.eq(cfg.acc_max)
    with m.Elif(s < cfg.acc_min):
        m.d.comb += sat.eq(cfg.acc_min)
    with m.Else():
        m.d.comb += sat.eq(s)
    fire = sat >= Const(thr, signed(a_w + 1)) if thr > cfg.acc_max else sat >= Const(thr, signed(a_w))
    if cfg.noise == "stochastic" and cfg.fire_prob < (1 << b):
        fire = fire & (d < Const(cfg.fire_prob, b))
    return w ^ fire, Mux(fire, Const(cfg.refractory, signed(a_w)), sat), fire


class FlipUnit(wiring.Component):
    """Pipelined read-modify-write flip unit, one vote row (K weights) per cycle.

    Parameters
    ----------
    config : :class:`~bitswarm.golden.flip.FlipRuleConfig`
        Every constant of the rule: accumulator width A, leak shift, threshold, refractory
        value, noise mode, stochastic firing probability and the noise LFSR.
    rows : int
        R, rows per step (1..2**20).
    lanes : int
        K, weights per row, updated in parallel (1..1024).
    init_w : R x K nested sequence of 0/1, optional
        Initial weight bits (default all 0).
    init_acc : R x K nested sequence of int, optional
        Initial accumulators, each in ``acc_min..acc_max`` (default all 0).

    Members
    -------
    i_stream : ``In(stream.Signature(StructLayout({"votes": ArrayLayout(signed(2), K)})))``
        One row of votes per transfer, rows 0..R-1 in order, then the next step. Votes must be
        -1, 0 or +1 (the bit pattern of -2 is not a legal vote).
    o_stream : ``Out(stream.Signature(StructLayout({"row": unsigned(aw), "fired": unsigned(K)})))``
        Per processed row its index and which weights flipped (golden's ``fired``, bit k =
        lane k). Tie ``ready`` high when the flips are not wanted.
    lfsr_state : ``Out(lfsr.width)``
        The noise LFSR's state: after ``n`` accepted rows it equals golden's LFSR after
        ``n * K`` draws (constant at the seed when ``noise == "none"``). Absent with
        ``external_draws``.

    With ``external_draws=True`` (and a rule that uses noise) the unit has no LFSR of its own:
    ``i_stream`` also carries ``draws`` (``ArrayLayout(draw_bits, K)``), the row's K draws in
    lane order, so that several units can share one LFSR (the on-chip trainer, whose layers
    draw from one register in layer order).
    busy : ``Out(1)``
        A row is between its read and its write-back.
    dbg_rd : ``Out(memory.ReadPort.Signature(addr_width=aw, shape=row_layout))``
        Debug read of row ``addr`` of both memories (``row_layout`` =
        ``StructLayout({"w": unsigned(K), "acc": ArrayLayout(signed(A), K)})``); ``data`` is
        valid one cycle after ``addr`` with ``en`` high; not transparent (a row written in the
        same cycle reads old).
    dbg_wr : ``Out(memory.WritePort.Signature(addr_width=aw, shape=row_layout))``
        Debug write of one row of both memories. It takes priority: while ``en`` is high no row
        is accepted or written back. Use it (and ``dbg_rd``) while idle (``busy`` low, no votes
        offered): a debug write to the row in flight is overwritten by the write-back.

    ``aw = max(1, ceil(log2(R)))``; for R = 1 the memories have two rows, only row 0 is used.

    Notes
    -----
    Pipeline: cycle 0 accepts a vote row, takes the row's K draws from the LFSR and issues the
    synchronous reads of both memories; cycle 1 computes the rule and writes both rows back
    while the registered ``o_stream`` takes the flip mask, so the memories hold the new row at
    the end of cycle 1 and ``o_stream`` is valid from cycle 2. Throughput one row per cycle,
    indefinitely: ``i_stream.ready = (~busy | write-back) & ~dbg_wr.en`` where write-back
    happens when ``o_stream`` has room (``~o_stream.valid | o_stream.ready``; a combinational
    path from ``o_stream.ready`` to ``i_stream.ready``). Under backpressure the row in flight
    stalls with its read data held (read enable low).

    Read-after-write hazards: a row is read in the cycle in which the previous row is written
    back. Rows within a step are distinct, and row 0 of the next step follows row R-1, so the
    only collision is R = 1 (a row read while the same row is being written). The pipeline's
    read ports are transparent for the write port: a read that coincides with a write of the
    same row returns the new data, so back-to-back steps are exact for every R.

    Widths and overflow: the sum ``a1 + vote + n`` is formed exactly (enough bits for every
    operand), then saturated once to A bits; nothing wraps.

    Raises
    ------
    TypeError
        If ``config`` is not a ``FlipRuleConfig``, or rows / lanes / init values are not
        integers.
    ConfigError
        If rows / lanes / init values are out of range or of the wrong shape.
    """

    def __init__(
        self,
        config: FlipRuleConfig,
        *,
        rows: int,
        lanes: int,
        init_w=None,
        init_acc=None,
        external_draws: bool = False,
    ):
        if not isinstance(config, FlipRuleConfig):
            raise TypeError(f"config must be a FlipRuleConfig, not {type(config).__name__}")
        for name, v, top in (("rows", rows, MAX_ROWS), ("lanes", lanes, MAX_LANES)):
            if not _is_int(v):
                raise TypeError(f"{name} must be an integer, not {v!r}")
            if not 1 <= v <= top:
                raise ConfigError(f"{name} must be in 1..{top}, not {v}")
        self._config, self._rows, self._lanes = config, rows, lanes
        self._init_w = _grid("init_w", init_w, rows, lanes, 0, 1)
        self._init_acc = _grid("init_acc", init_acc, rows, lanes, config.acc_min, config.acc_max)
        self._external = bool(external_draws) and config.uses_lfsr
        aw = self.addr_width
        row = self.row_layout(config, lanes)
        ports = {
            "i_stream":   In(stream.Signature(self.i_layout(lanes, config if self._external else None))),
            "o_stream":   Out(stream.Signature(self.o_layout(rows, lanes))),
            "busy":       Out(1),
            "dbg_rd":     Out(memory.ReadPort.Signature(addr_width=aw, shape=row)),
            "dbg_wr":     Out(memory.WritePort.Signature(addr_width=aw, shape=row)),
        }
        if not self._external:
            ports["lfsr_state"] = Out(config.lfsr.width, init=config.lfsr.seed)
        super().__init__(ports)

    # -- layouts and parameters ----------------------------------------------------------
    @staticmethod
    def i_layout(lanes: int, external: FlipRuleConfig | None = None) -> data.StructLayout:
        """``{"votes"}``; with ``external`` (the rule config) also ``{"draws"}``."""
        fields = {"votes": data.ArrayLayout(signed(2), lanes)}
        if external is not None:
            fields["draws"] = data.ArrayLayout(external.lfsr.draw_bits, lanes)
        return data.StructLayout(fields)

    @staticmethod
    def o_layout(rows: int, lanes: int) -> data.StructLayout:
        return data.StructLayout({"row": max(1, (rows - 1).bit_length()), "fired": lanes})

    @staticmethod
    def row_layout(config: FlipRuleConfig, lanes: int) -> data.StructLayout:
        return data.StructLayout(
            {"w": lanes, "acc": data.ArrayLayout(signed(config.acc_width), lanes)}
        )

    @property
    def config(self) -> FlipRuleConfig:
        return self._config

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def acc_width(self) -> int:
        return self._config.acc_width

    @property
    def addr_width(self) -> int:
        return max(1, (self._rows - 1).bit_length())

    # -- pieces of the rule ----------------------------------------------------------------
    def _forwarding(self, write_port):
        """``transparent_for`` of a pipeline read port: the memory's write-back port, so that a
        row read while it is being written returns the new data (the R = 1 hazard)."""
        return (write_port,)

    def _leak_shift(self) -> int:
        """The leak shift of the rule (0: no leak)."""
        return self._config.leak_shift

    def _threshold(self) -> int:
        """The firing threshold: a lane fires when its saturated accumulator is at least this."""
        return self._config.threshold

    # -- gateware --------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        cfg, k, r = self._config, self._lanes, self._rows
        a_w = cfg.acc_width
        depth = max(r, 2)

        m.submodules.w_mem = w_mem = memory.Memory(
            shape=k, depth=depth,
            init=[sum(b << i for i, b in enumerate(row)) for row in self._init_w],
        )
        m.submodules.acc_mem = acc_mem = memory.Memory(
            shape=data.ArrayLayout(signed(a_w), k), depth=depth, init=self._init_acc
        )
        w_wr, acc_wr = w_mem.write_port(), acc_mem.write_port()
        w_rd = w_mem.read_port(transparent_for=self._forwarding(w_wr))
        acc_rd = acc_mem.read_port(transparent_for=self._forwarding(acc_wr))
        w_dbg, acc_dbg = w_mem.read_port(), acc_mem.read_port()

        # Debug read: both memories at dbg_rd.addr, one cycle latency.
        m.d.comb += [
            w_dbg.addr.eq(self.dbg_rd.addr), acc_dbg.addr.eq(self.dbg_rd.addr),
            w_dbg.en.eq(self.dbg_rd.en), acc_dbg.en.eq(self.dbg_rd.en),
            self.dbg_rd.data.w.eq(w_dbg.data), self.dbg_rd.data.acc.eq(acc_dbg.data),
        ]

        # Stage 0: accept a vote row, read its weights and accumulators, take its draws.
        s1_valid = Signal(name="s1_valid")
        s1_row = Signal(self.addr_width, name="s1_row")
        s1_votes = Signal(data.ArrayLayout(signed(2), k), name="s1_votes")
        row = Signal(self.addr_width, name="row")
        commit = Signal(name="commit")
        b = cfg.lfsr.draw_bits
        if cfg.uses_lfsr and not self._external:
            m.submodules.lfsr = lfsr = LFSR(cfg.lfsr, lanes=k)
            draws_ok = lfsr.o_stream.valid  # always valid; kept for the stream contract
        else:
            draws_ok = Const(1)
        m.d.comb += [
            commit.eq(s1_valid & (~self.o_stream.valid | self.o_stream.ready)
                      & ~self.dbg_wr.en),
            self.i_stream.ready.eq((~s1_valid | commit) & ~self.dbg_wr.en & draws_ok),
            self.busy.eq(s1_valid),
        ]
        accept = self.i_stream.valid & self.i_stream.ready
        m.d.comb += [
            w_rd.addr.eq(row), acc_rd.addr.eq(row),
            w_rd.en.eq(accept), acc_rd.en.eq(accept),
        ]
        if self._external:
            s1_draws = Signal(data.ArrayLayout(b, k), name="s1_draws")
            with m.If(accept):
                m.d.sync += s1_draws.eq(self.i_stream.payload.draws)
        elif cfg.uses_lfsr:
            s1_draws = Signal(data.ArrayLayout(b, k), name="s1_draws")
            m.d.comb += [lfsr.o_stream.ready.eq(accept), self.lfsr_state.eq(lfsr.state)]
            with m.If(accept):
                m.d.sync += s1_draws.eq(lfsr.o_stream.payload.draws)
        else:
            m.d.comb += self.lfsr_state.eq(cfg.lfsr.seed)
        with m.If(accept):
            m.d.sync += [s1_valid.eq(1), s1_row.eq(row), s1_votes.eq(self.i_stream.payload.votes)]
            if r > 1:
                with m.If(row == r - 1):
                    m.d.sync += row.eq(0)
                with m.Else():
                    m.d.sync += row.eq(row + 1)
        with m.Elif(commit):
            m.d.sync += s1_valid.eq(0)

        # Stage 1: the rule, lane by lane, on the read data; write back on commit.
        leak = self._leak_shift()
        thr = self._threshold()
        new_w = Signal(k, name="new_w")
        new_acc = Signal(data.ArrayLayout(signed(a_w), k), name="new_acc")
        fired = Signal(k, name="fired")
        for i in range(k):
            d = s1_draws[i] if cfg.uses_lfsr else None
            new_wi, new_ai, fire = flip_lane(m, cfg, w_rd.data[i], acc_rd.data[i], s1_votes[i], d,
                                             f"l{i}", leak=leak, threshold=thr)
            m.d.comb += [fired[i].eq(fire), new_w[i].eq(new_wi), new_acc[i].eq(new_ai)]

        with m.If(self.dbg_wr.en):
            m.d.comb += [
                w_wr.addr.eq(self.dbg_wr.addr), acc_wr.addr.eq(self.dbg_wr.addr),
                w_wr.data.eq(self.dbg_wr.data.w), acc_wr.data.eq(self.dbg_wr.data.acc),
                w_wr.en.eq(1), acc_wr.en.eq(1),
            ]
        with m.Else():
            m.d.comb += [
                w_wr.addr.eq(s1_row), acc_wr.addr.eq(s1_row),
                w_wr.data.eq(new_w), acc_wr.data.eq(new_acc),
                w_wr.en.eq(commit), acc_wr.en.eq(commit),
            ]

        with m.If(commit):
            m.d.sync += [
                self.o_stream.valid.eq(1),
                self.o_stream.payload.row.eq(s1_row),
                self.o_stream.payload.fired.eq(fired),
            ]
        with m.Elif(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        return m


def _grid(name: str, values, rows: int, lanes: int, lo: int, hi: int) -> list[list[int]]:
    """An R x K list of ints in lo..hi from a nested sequence (lists, numpy, torch)."""
    if values is None:
        return [[0] * lanes for _ in range(rows)]
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a {rows} x {lanes} nested sequence of integers, "
                        f"not {type(values).__name__}")
    if len(values) != rows or any(
        isinstance(row, (str, bytes)) or not hasattr(row, "__len__") or len(row) != lanes
        for row in values
    ):
        raise ConfigError(f"{name} must have shape {rows} x {lanes}")
    out = []
    for row in values:
        cur = []
        for v in row:
            try:
                v = operator.index(v)
            except TypeError:
                raise TypeError(f"{name} must hold integers, found {v!r}") from None
            if not lo <= v <= hi:
                raise ConfigError(f"{name} values must lie in {lo}..{hi}, found {v}")
            cur.append(v)
        out.append(cur)
    return out


def build(
    *,
    rows: int = 4,
    lanes: int = 8,
    acc_width: int = 8,
    leak_shift: int = 0,
    threshold: int = 4,
    refractory: int = 0,
    noise: str = "none",
    fire_prob: int = 1,
    lfsr_width: int = 16,
    lfsr_seed: int = 0xACE1,
    draw_bits: int = 2,
) -> FlipUnit:
    """A :class:`FlipUnit` from plain integers and strings (memories initialised to 0), for
    ``bitswarm verilog --component flip-unit``."""
    cfg = FlipRuleConfig(
        acc_width=acc_width, leak_shift=leak_shift, threshold=threshold, refractory=refractory,
        noise=noise, fire_prob=fire_prob,
        lfsr=LFSRConfig(width=lfsr_width, seed=lfsr_seed, draw_bits=draw_bits),
    )
    return FlipUnit(cfg, rows=rows, lanes=lanes)
