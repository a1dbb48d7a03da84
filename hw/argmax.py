"""Argmax over class scores, bit-exact with :func:`bitswarm.golden.layer.argmax` (SPEC.md §7).

The class with the largest score wins; among equal maxima the **lowest class index** wins (the
golden tie rule). Scores arrive SIMD-folded: ``lanes`` (P) scores per transfer, classes in
order, ``ceil(C / P)`` transfers ("beats") per sample; in the last beat the lanes past class
``C - 1`` are ignored (their payload bits are don't-care). A beat counter restarts at 0 on
reset, so the stream must carry whole samples.

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

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.errors import ConfigError

from .plan import class_width

__all__ = ["Argmax", "argmax_tree", "build"]

MAX_WIDTH = 64
MAX_CLASSES = 65536


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Argmax(wiring.Component):
    """Folded argmax with the lowest-index tie rule.

    Parameters
    ----------
    width : int
        Signed score width W, 1..64 (e.g. the output layer's ``LayerConfig.z_width``).
    classes : int
        Number of classes C, 1..65536.
    lanes : int
        Scores per transfer P, 1..C.

    Members
    -------
    i_stream : ``In(stream.Signature(StructLayout({"scores": ArrayLayout(signed(W), P)})))``
        Beat ``b`` of a sample carries classes ``b * P .. b * P + P - 1``.
    o_stream : ``Out(stream.Signature(StructLayout({"cls": unsigned(cls_width), "score": signed(W)})))``
        One per sample: the winning class (``cls_width = max(1, ceil(log2(C)))``) and its score;
        with ``scores=True`` also every class's score (``"scores": ArrayLayout(signed(W), C)``).

    Notes
    -----
    Latency 1 cycle from the last beat of a sample to ``o_stream.valid`` (registered output).
    Throughput one beat per cycle, i.e. one sample per ``ceil(C / P)`` cycles. Backpressure:
    only the last beat of a sample waits for the one-entry output register
    (``ready = ~last_beat | ~o_stream.valid | o_stream.ready``, combinational from
    ``o_stream.ready``); earlier beats are always accepted. Logic per beat: a binary tree of
    ``P - 1`` W-bit signed comparators (depth ``ceil(log2 P)``) plus one against the running
    maximum. Overflow: none; comparisons only.

    Raises
    ------
    TypeError
        If a parameter is not an integer.
    ConfigError
        If a parameter is out of range.
    """

    def __init__(self, width: int, classes: int, *, lanes: int = 1, scores: bool = False):
        for name, v in (("width", width), ("classes", classes), ("lanes", lanes)):
            if not _is_int(v):
                raise TypeError(f"{name} must be an integer, not {v!r}")
        if not 1 <= width <= MAX_WIDTH:
            raise ConfigError(f"width must be in 1..{MAX_WIDTH}, not {width}")
        if not 1 <= classes <= MAX_CLASSES:
            raise ConfigError(f"classes must be in 1..{MAX_CLASSES}, not {classes}")
        if not 1 <= lanes <= classes:
            raise ConfigError(f"lanes must be in 1..classes = {classes}, not {lanes}")
        if not isinstance(scores, bool):
            raise TypeError(f"scores must be a bool, not {scores!r}")
        self._width, self._classes, self._lanes = width, classes, lanes
        self._scores = scores
        super().__init__({
            "i_stream": In(stream.Signature(self.i_layout(width, lanes))),
            "o_stream": Out(stream.Signature(self.o_layout(width, classes, scores))),
        })

    @staticmethod
    def i_layout(width: int, lanes: int) -> data.StructLayout:
        return data.StructLayout({"scores": data.ArrayLayout(signed(width), lanes)})

    @staticmethod
    def o_layout(width: int, classes: int, scores: bool = False) -> data.StructLayout:
        fields = {"cls": class_width(classes), "score": signed(width)}
        if scores:
            fields["scores"] = data.ArrayLayout(signed(width), classes)
        return data.StructLayout(fields)

    @property
    def width(self) -> int:
        return self._width

    @property
    def classes(self) -> int:
        return self._classes

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def beats(self) -> int:
        """Transfers per sample, ``ceil(classes / lanes)``."""
        return -(-self._classes // self._lanes)

    def elaborate(self, platform):
        m = Module()
        w, p, nb = self._width, self._lanes, self.beats
        cw = len(self.o_stream.payload.cls)
        tail = self._classes - (nb - 1) * p  # valid lanes in the last beat

        if nb > 1:
            beat = Signal(range(nb), name="beat")  # beat index within the sample
            base = Signal(cw, name="base")  # class index of lane 0 of this beat: beat * P
            first, last = Signal(name="first"), Signal(name="last")
            m.d.comb += [first.eq(~beat.any()), last.eq(beat == nb - 1)]
        else:  # one beat per sample: no counter
            base, first, last = Const(0, cw), Const(1), Const(1)

        wins = self._wins

        # Reduction tree over the lanes of this beat; nodes are (score, lane, valid) signals.
        level = []
        for i in range(p):
            ok = 1 if i < tail else ~last  # lanes past the last class only exist in the tail
            level.append((self.i_stream.payload.scores[i], i, ok))
        depth = 0
        while len(level) > 1:
            nxt = []
            for k in range(0, len(level) - 1, 2):
                (ls, li, lv), (rs, ri, rv) = level[k], level[k + 1]
                s = Signal(signed(w), name=f"t{depth}_{k // 2}_score")
                i = Signal(range(p), name=f"t{depth}_{k // 2}_lane")
                take = Signal(name=f"t{depth}_{k // 2}_take")
                m.d.comb += [
                    take.eq(wins(rs, ls) if isinstance(rv, int) else (rv & wins(rs, ls))),
                    s.eq(Mux(take, rs, ls)),
                    i.eq(Mux(take, ri, li)),
                ]
                # invalid lanes form a suffix: the pair is valid iff its left child is
                nxt.append((s, i, lv))
            if len(level) % 2:
                nxt.append(level[-1])
            level, depth = nxt, depth + 1
        beat_score, beat_lane, _ = level[0]

        best_score = Signal(signed(w), name="best_score")
        best_cls = Signal(cw, name="best_cls")
        new_score = Signal(signed(w), name="new_score")
        new_cls = Signal(cw, name="new_cls")
        take = Signal(name="take")
        m.d.comb += take.eq(first | wins(beat_score, best_score))
        m.d.comb += [
            new_score.eq(Mux(take, beat_score, best_score)),
            new_cls.eq(Mux(take, base + beat_lane, best_cls)),
        ]

        m.d.comb += self.i_stream.ready.eq(~last | ~self.o_stream.valid | self.o_stream.ready)
        accept = self.i_stream.valid & self.i_stream.ready
        with m.If(accept & last):
            m.d.sync += [
                self.o_stream.valid.eq(1),
                self.o_stream.payload.cls.eq(new_cls),
                self.o_stream.payload.score.eq(new_score),
            ]
        with m.Elif(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        with m.If(accept):
            if nb > 1:
                with m.If(last):
                    m.d.sync += [beat.eq(0), base.eq(0)]
                with m.Else():
                    m.d.sync += [beat.eq(beat + 1), base.eq(base + p)]
            m.d.sync += [best_score.eq(new_score), best_cls.eq(new_cls)]
        if self._scores:
            self._collect(m, accept, last, beat if nb > 1 else None)
        return m

    @staticmethod
    def _wins(challenger, holder):
        """Strictly greater: ties stay with the lower index (the golden tie rule)."""
        return challenger > holder

    def _collect(self, m, accept, last, beat):
        """``scores=True``: every lane of every beat into a work register; on the last beat the
        whole vector moves to the output payload (held with the class until accepted)."""
        p, c, w = self._lanes, self._classes, self._width
        nb = self.beats
        work = [Signal(signed(w), name=f"work{j}") for j in range(c)]
        ins = self.i_stream.payload.scores
        with m.If(accept):
            for j in range(c):
                b, i = divmod(j, p)
                if b == nb - 1:
                    continue  # the last beat goes straight to the output
                with m.If(Const(1) if beat is None else (beat == b)):
                    m.d.sync += work[j].eq(ins[i])
        held = [Signal(signed(w), name=f"held{j}") for j in range(c)]  # the output vector
        with m.If(accept & last):
            for j in range(c):
                b, i = divmod(j, p)
                m.d.sync += held[j].eq(ins[i] if b == nb - 1 else work[j])
        for j in range(c):
            m.d.comb += self.o_stream.payload.scores[j].eq(held[j])


def argmax_tree(m: Module, scores: list, width: int):
    """Combinational argmax over signed ``scores`` with ties to the lowest index.

    Returns ``(index, value)``; ``value`` is ``None`` at the root (only the index is built). A balanced tree of comparators: at each node the right
    candidate wins only if strictly greater, and the left subtree always holds lower indices.
    """
    cands = []
    for i, s in enumerate(scores):
        idx = Signal(range(max(2, len(scores))), name=f"am_i{i}")
        m.d.comb += idx.eq(i)
        cands.append((idx, s))
    k = 0
    while len(cands) > 1:
        nxt = []
        for j in range(0, len(cands) - 1, 2):
            (ia, va), (ib, vb) = cands[j], cands[j + 1]
            root = len(cands) == 2
            iw = Signal.like(ia, name=f"am_w{k}_i")
            vw = None if root else Signal(signed(width), name=f"am_w{k}_v")
            with m.If(vb > va):
                m.d.comb += iw.eq(ib)
                if vw is not None:
                    m.d.comb += vw.eq(vb)
            with m.Else():
                m.d.comb += iw.eq(ia)
                if vw is not None:
                    m.d.comb += vw.eq(va)
            nxt.append((iw, vw))
            k += 1
        if len(cands) % 2:
            nxt.append(cands[-1])
        cands = nxt
    return cands[0]


def build(*, width: int = 16, classes: int = 10, lanes: int = 1) -> Argmax:
    """An :class:`Argmax` from plain integers (``bitswarm verilog --component argmax``)."""
    return Argmax(width, classes, lanes=lanes)
