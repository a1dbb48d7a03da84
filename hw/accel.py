"""The accelerator top: a whole golden model as a dataflow pipeline of folded MAC arrays.

::

    pixels ─► >> (8-B) ─► MACArray 0 ─► ThresholdPack 0 ─► MACArray 1 ─► ... ─► ScoreArgmax ─► class, scores

Each layer is a :class:`~bitswarm.hw.mac_array.MACArray` with its weights in ROM (initialised
from the model file), folded by the :class:`~bitswarm.hw.plan.AccelPlan`. Between layers a
:class:`ThresholdPack` applies the golden activation ``((z - θ) >= 0) XOR invert`` (SPEC §7) to
each output group and repacks the layer's M bits into the next layer's SIMD-wide input slices.
After the last layer :class:`ScoreArgmax` forms the scores ``z - θ`` and the class (argmax, ties
to the lowest index).

Timing: see :mod:`bitswarm.hw.plan` (the cycle model the tests check against Verilator).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Module, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.model import PIXEL_BITS, Model

from .mac_array import MACArray
from .plan import AccelPlan

__all__ = ["ThresholdPack", "ScoreArgmax", "Accelerator", "argmax_tree"]


def _words(values, width):
    """Pack a list of integers (two's complement, ``width`` bits each) into one integer."""
    out = 0
    for i, v in enumerate(values):
        out |= (int(v) & ((1 << width) - 1)) << (i * width)
    return out


def _group_rom(m: Module, name: str, words: list[int], width: int, ins) -> Value:
    """The per-group table word for the group now on ``ins`` (one word: a constant).

    Groups arrive in order ``0, 1, ..., NF-1`` (the MAC array's schedule, ``last`` on the final
    one), so a counter knows the next group in advance and the table is a *synchronous* ROM
    (block RAM on FPGAs) addressed one cycle ahead: no added latency. The counter follows the
    accepted transfers, so its address equals ``ins.payload.group`` whenever ``ins.valid``.
    """
    if len(words) == 1:
        return Const(words[0], width)
    m.submodules[name] = rom = memory.Memory(shape=unsigned(width), depth=len(words), init=words)
    rd = rom.read_port()
    cnt = Signal(range(len(words)), name=f"{name}_next")
    nxt = Signal.like(cnt, name=f"{name}_addr")
    m.d.comb += nxt.eq(cnt)
    with m.If(ins.valid & ins.ready):
        with m.If(ins.payload.last):
            m.d.comb += nxt.eq(0)
        with m.Else():
            m.d.comb += nxt.eq(cnt + 1)
    m.d.sync += cnt.eq(nxt)
    m.d.comb += rd.addr.eq(nxt)
    return rd.data


class ThresholdPack(wiring.Component):
    """Threshold a layer's output groups and repack the bits as the next layer's input slices.

    Parameters
    ----------
    theta, invert : int arrays ``[M]``
        The golden thresholds and invert bits of the layer.
    pe : int
        Neurons per incoming group (the producing MAC array's PE).
    z_width : int
        Signed width of the incoming ``z`` lanes.
    simd_next : int
        Bits per outgoing slice (the next MAC array's SIMD).

    Members
    -------
    i_stream : ``{"z": ArrayLayout(signed(z_width), pe), "group", "last"}`` (MAC array output).
    o_stream : ``{"x": ArrayLayout(unsigned(1), simd_next)}``, ``ceil(M/simd_next)`` slices.

    Timing: accepts one group per cycle; the cycle after the vector's last group it emits one
    slice per cycle (``i_stream.ready`` is low while emitting). Latency one cycle; no loss under
    backpressure (the output holds until accepted).
    """

    def __init__(self, theta, invert, *, pe: int, z_width: int, simd_next: int, group_width: int):
        self._theta = np.asarray(theta, dtype=np.int64)
        self._invert = np.asarray(invert, dtype=np.int64)
        self._m = len(self._theta)
        if len(self._invert) != self._m:
            raise ConfigError("theta and invert must have the same length")
        self._pe, self._zw, self._simd = pe, z_width, simd_next
        self._nf = -(-self._m // pe)
        self._sf = -(-self._m // simd_next)
        super().__init__({
            "i_stream": In(stream.Signature(data.StructLayout({
                "z": data.ArrayLayout(signed(z_width), pe),
                "group": unsigned(group_width),
                "last": 1,
            }))),
            "o_stream": Out(stream.Signature(data.StructLayout({
                "x": data.ArrayLayout(unsigned(1), simd_next),
            }))),
        })

    def elaborate(self, platform):
        m = Module()
        pe, nf, sf, simd = self._pe, self._nf, self._sf, self._simd
        th = np.zeros(nf * pe, dtype=np.int64)
        th[: self._m] = self._theta
        iv = np.zeros(nf * pe, dtype=np.int64)
        iv[: self._m] = self._invert
        ins, outs = self.i_stream, self.o_stream
        t_word = _group_rom(m, "trom", [_words(th[g * pe:(g + 1) * pe], self._zw) for g in range(nf)],
                            pe * self._zw, ins)
        i_word = _group_rom(m, "irom", [_words(iv[g * pe:(g + 1) * pe], 1) for g in range(nf)],
                            pe, ins)

        buf = Signal(max(nf * pe, sf * simd))
        emitting = Signal()
        idx = Signal(range(max(2, sf)))
        bits = Signal(pe)
        for p in range(pe):
            theta = t_word.word_select(p, self._zw).as_signed()
            diff = ins.payload.z[p] - theta
            m.d.comb += bits[p].eq((diff >= 0) ^ i_word[p])
        m.d.comb += ins.ready.eq(~emitting)
        with m.If(ins.valid & ins.ready):
            for g in range(nf):
                with m.If(ins.payload.group == g):
                    m.d.sync += buf[g * pe:(g + 1) * pe].eq(bits)
            with m.If(ins.payload.last):
                m.d.sync += [emitting.eq(1), idx.eq(0)]
        m.d.comb += [outs.valid.eq(emitting), outs.payload.x.as_value().eq(buf.word_select(idx, simd))]
        with m.If(outs.valid & outs.ready):
            m.d.sync += idx.eq(idx + 1)
            with m.If(idx == sf - 1):
                m.d.sync += emitting.eq(0)
        return m


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


class ScoreArgmax(wiring.Component):
    """Collect the output layer's groups into scores ``z - θ`` and emit them with the class.

    Members
    -------
    i_stream : the last MAC array's output groups.
    o_stream : ``{"cls": unsigned, "scores": ArrayLayout(signed(z_width), C)}``, one per image.

    Timing: one group per cycle; the result is valid the cycle after the last group and holds
    until accepted (``i_stream.ready`` is low meanwhile).
    """

    def __init__(self, theta, *, pe: int, z_width: int, group_width: int):
        self._theta = np.asarray(theta, dtype=np.int64)
        self._c = len(self._theta)
        self._pe, self._zw = pe, z_width
        self._nf = -(-self._c // pe)
        super().__init__({
            "i_stream": In(stream.Signature(data.StructLayout({
                "z": data.ArrayLayout(signed(z_width), pe),
                "group": unsigned(group_width),
                "last": 1,
            }))),
            "o_stream": Out(stream.Signature(data.StructLayout({
                "cls": unsigned(max(1, (self._c - 1).bit_length())),
                "scores": data.ArrayLayout(signed(z_width), self._c),
            }))),
        })

    def elaborate(self, platform):
        m = Module()
        pe, nf, c, zw = self._pe, self._nf, self._c, self._zw
        th = np.zeros(nf * pe, dtype=np.int64)
        th[:c] = self._theta
        ins, outs = self.i_stream, self.o_stream
        t_word = _group_rom(m, "trom", [_words(th[g * pe:(g + 1) * pe], zw) for g in range(nf)],
                            pe * zw, ins)
        regs = [Signal(signed(zw), name=f"score{j}") for j in range(nf * pe)]
        full = Signal()
        m.d.comb += ins.ready.eq(~full)
        with m.If(ins.valid & ins.ready):
            for g in range(nf):
                with m.If(ins.payload.group == g):
                    for p in range(pe):
                        theta = t_word.word_select(p, zw).as_signed()
                        m.d.sync += regs[g * pe + p].eq(ins.payload.z[p] - theta)
            with m.If(ins.payload.last):
                m.d.sync += full.eq(1)
        idx, _ = argmax_tree(m, regs[:c], zw)
        m.d.comb += [outs.valid.eq(full), outs.payload.cls.eq(idx)]
        for j in range(c):
            m.d.comb += outs.payload.scores[j].eq(regs[j])
        with m.If(outs.valid & outs.ready):
            m.d.sync += full.eq(0)
        return m


class Accelerator(wiring.Component):
    """A whole golden model in hardware: pixels in, class and integer scores out.

    Parameters
    ----------
    model : bitswarm.golden.Model
        Weights become ROMs; thresholds and invert bits become small ROMs in the glue stages.
    plan : AccelPlan, optional
        Per-layer folding; default :meth:`AccelPlan.auto`.

    Members
    -------
    i_stream : ``{"x": ArrayLayout(unsigned(8), SIMD_0)}`` — raw 8-bit pixels,
        ``plan.input_slices()`` transfers per image (lane ``i`` of slice ``k`` is pixel
        ``k·SIMD_0 + i`` of the flattened image; lanes past the image are ignored).
    o_stream : ``{"cls": unsigned, "scores": ArrayLayout(signed(W), C)}`` — one per image;
        ``W`` is the output layer's ``z_width``.

    Latency, throughput and backpressure: see :mod:`bitswarm.hw.plan`; every stage holds its
    output until accepted, so backpressure never loses data.
    """

    def __init__(self, model: Model, plan: AccelPlan | None = None):
        if not isinstance(model, Model):
            self._MustUse__silence = True  # never elaborated: don't warn about it
            raise TypeError(f"model must be a bitswarm.golden.Model, not {model!r}")
        self._model = model
        self._plan = plan or AccelPlan.auto(model.cfg)
        if self._plan.cfg.to_dict() != model.cfg.to_dict():
            self._MustUse__silence = True
            raise ConfigError("the plan was made for a different model configuration")
        lays = model.cfg.layers
        self._macs = []
        for i, (lay, f) in enumerate(zip(lays, self._plan.folds, strict=True)):
            self._macs.append(MACArray(lay, model.weights[i], pe=f.pe, simd=f.simd, pipeline=f.pipeline))
        simd0 = self._plan.folds[0].simd
        last = lays[-1]
        super().__init__({
            "i_stream": In(stream.Signature(data.StructLayout({
                "x": data.ArrayLayout(unsigned(PIXEL_BITS), simd0)}))),
            "o_stream": Out(stream.Signature(data.StructLayout({
                "cls": unsigned(max(1, (last.n_out - 1).bit_length())),
                "scores": data.ArrayLayout(signed(last.z_width), last.n_out),
            }))),
        })

    @property
    def plan(self) -> AccelPlan:
        return self._plan

    @property
    def model(self) -> Model:
        return self._model

    def elaborate(self, platform):
        m = Module()
        model, plan = self._model, self._plan
        lays = model.cfg.layers
        b0 = lays[0].input_bits
        for i, mac in enumerate(self._macs):
            m.submodules[f"mac{i}"] = mac
        # pixels -> first layer's B-bit inputs
        mac0 = self._macs[0]
        m.d.comb += [
            mac0.i_stream.valid.eq(self.i_stream.valid),
            self.i_stream.ready.eq(mac0.i_stream.ready),
        ]
        for k in range(plan.folds[0].simd):
            m.d.comb += mac0.i_stream.payload.x[k].eq(self.i_stream.payload.x[k][PIXEL_BITS - b0:])
        gw = [len(mac.o_stream.payload.group) for mac in self._macs]
        for i in range(len(lays) - 1):
            tp = ThresholdPack(
                model.theta[i].numpy(), model.invert[i].numpy(), pe=plan.folds[i].pe,
                z_width=lays[i].z_width, simd_next=plan.folds[i + 1].simd, group_width=gw[i])
            m.submodules[f"thr{i}"] = tp
            wiring.connect(m, mac=self._macs[i].o_stream, thr=tp.i_stream)
            nxt = self._macs[i + 1].i_stream
            m.d.comb += [
                nxt.valid.eq(tp.o_stream.valid),
                tp.o_stream.ready.eq(nxt.ready),
                nxt.payload.x.as_value().eq(tp.o_stream.payload.x.as_value()),
            ]
        out = ScoreArgmax(model.theta[-1].numpy(), pe=plan.folds[-1].pe,
                          z_width=lays[-1].z_width, group_width=gw[-1])
        m.submodules.out = out
        wiring.connect(m, mac=self._macs[-1].o_stream, out=out.i_stream)
        wiring.connect(m, out=out.o_stream, top=wiring.flipped(self.o_stream))
        return m
