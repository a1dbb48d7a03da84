"""The accelerator top: a whole golden model as a dataflow pipeline of folded MAC arrays.

::

    pixels ─► >> (8-B) ─► MACArray 0 ─► Threshold 0 ─► Repack 0 ─► MACArray 1 ─► ...
        ... ─► MACArray L-1 ─► Threshold L-1 (scores z - θ) ─► Serializer ─► Argmax ─► class, scores

Each layer is a :class:`~bitswarm.hw.mac_array.MACArray` with its weights in ROM (initialised
from the model file), folded by its :class:`~bitswarm.hw.plan.LayerFold`. Between layers the
tested :class:`~bitswarm.hw.threshold.Threshold` applies the golden activation
``((z - θ) >= 0) XOR invert`` (SPEC §7) to each ``PE``-neuron group and :class:`Repack`
collects the groups into the next layer's ``SIMD``-wide slices. After the last layer the same
:class:`~bitswarm.hw.threshold.Threshold` forms the scores ``z - θ``, :class:`Serializer` hands
them on one per cycle and the tested :class:`~bitswarm.hw.argmax.Argmax` picks the class (ties
to the lowest index) and carries all scores. Every stage holds its output until accepted, so backpressure never loses data.

A convolutional layer (SPEC §14, the first layers of a CNN) is the same chain with a
:class:`~bitswarm.hw.sliding_window.SlidingWindow` in front of its MAC array (the windows are
its vectors) and a :class:`~bitswarm.hw.pool.Pool` after its threshold::

    [Unpack] ─► SlidingWindow i ─► MACArray i ─► Threshold i ─► [Pool i] ─► Repack i ─► ...

The pixels arrive in HWC order; :class:`Unpack` splits them one pixel per transfer when the
first layer's slices are ``J > 1`` pixels of a kernel row; the pooled map leaves the repack
stage as the next layer's input, a flat HWC vector for the first dense layer.

Timing: see :mod:`bitswarm.hw.plan` (the cycle model the tests check against Verilator).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.model import PIXEL_BITS, Model

from .argmax import Argmax
from .mac_array import MACArray
from .plan import AccelPlan, class_width
from .pool import Pool
from .sliding_window import SlidingWindow
from .threshold import Threshold

__all__ = ["Repack", "Unpack", "Serializer", "Accelerator"]


class Repack(wiring.Component):
    """Width converter: ``PE``-bit activation groups in, ``SIMD``-bit input slices out.

    Parameters
    ----------
    n : int
        Activation bits per vector (the producing layer's M).
    pe : int
        Bits per incoming group; groups ``0 .. ceil(n/pe) - 1`` of a vector arrive in order.
    simd : int
        Bits per outgoing slice, a multiple of ``pe``: slice ``s`` holds bits
        ``s·simd .. s·simd + simd - 1``; the last slice of a vector may be partial (its lanes past
        ``n`` are don't-care, masked by the consuming MAC array).

    Members
    -------
    i_stream : ``{"bits": unsigned(pe)}`` (a hidden :class:`Threshold`'s output).
    o_stream : ``{"x": ArrayLayout(unsigned(1), simd)}`` (a MAC array's input).

    Timing: one group per cycle in; a slice leaves one cycle after its last group (registered).
    ``i_stream.ready = ~o_stream.valid | o_stream.ready``. A shift register of ``simd`` bits.
    """

    def __init__(self, n: int, *, pe: int, simd: int):
        if simd % pe:
            raise ConfigError(f"simd = {simd} must be a multiple of pe = {pe}")
        self._n, self._pe, self._simd = n, pe, simd
        super().__init__({
            "i_stream": In(stream.Signature(data.StructLayout({"bits": pe}))),
            "o_stream": Out(stream.Signature(data.StructLayout({
                "x": data.ArrayLayout(unsigned(1), simd)}))),
        })

    def elaborate(self, platform):
        m = Module()
        pe, simd, n = self._pe, self._simd, self._n
        per = simd // pe  # groups per full slice
        nf = -(-n // pe)
        tail = nf - (-(-n // simd) - 1) * per  # groups in the last slice
        ins, outs = self.i_stream, self.o_stream
        sr = Signal(simd)
        shifted = Signal(simd)
        m.d.comb += shifted.eq(ins.payload.bits << (simd - pe) if per == 1 else
                               (sr >> pe) | (ins.payload.bits << (simd - pe)))
        g = Signal(range(max(2, nf)))  # group index within the vector
        k = Signal(range(max(2, per)))  # group index within the slice
        accept = ins.valid & ins.ready
        m.d.comb += ins.ready.eq(~outs.valid | outs.ready)
        with m.If(outs.ready):
            m.d.sync += outs.valid.eq(0)
        with m.If(accept):
            m.d.sync += sr.eq(shifted)
            last_g = g == nf - 1
            m.d.sync += [g.eq(Mux(last_g, 0, g + 1)), k.eq(Mux(last_g | (k == per - 1), 0, k + 1))]
            with m.If(last_g):
                # the last slice holds `tail` groups, shifted in from the top: align them
                m.d.sync += [outs.valid.eq(1),
                             outs.payload.x.as_value().eq(shifted >> ((per - tail) * pe))]
            with m.Elif(k == per - 1):
                m.d.sync += [outs.valid.eq(1), outs.payload.x.as_value().eq(shifted)]
        return m


class Unpack(wiring.Component):
    """Width converter: ``lanes_in``-element transfers in, ``lanes_out``-element transfers out.

    Feeds a first-layer :class:`~bitswarm.hw.sliding_window.SlidingWindow` whose slices are
    ``J`` pixels (``SIMD_0 = J·C``) one pixel (``C`` elements) at a time from the accelerator's
    ``SIMD_0``-pixel input transfers.

    Parameters
    ----------
    n : int
        Elements per vector (an image's ``C·H·W``); its last input transfer may be partial.
    lanes_in, lanes_out : int
        Elements per transfer in and out; ``lanes_out`` divides ``lanes_in`` and ``n``.
    bits : int
        Bits per element.

    Members
    -------
    i_stream : ``{"x": ArrayLayout(unsigned(bits), lanes_in)}``; ``ceil(n / lanes_in)`` per vector.
    o_stream : ``{"x": ArrayLayout(unsigned(bits), lanes_out)}``; ``n / lanes_out`` per vector,
        in order (lanes of the last input transfer past ``n`` are dropped).

    Timing: a transfer is taken into a shift register and leaves ``lanes_in / lanes_out`` parts
    one per cycle from the next cycle on; the next transfer is accepted in the cycle its
    predecessor's last part leaves (as :class:`Serializer`), so the output streams without a
    bubble while the input keeps up.
    """

    def __init__(self, n: int, *, lanes_in: int, lanes_out: int, bits: int):
        if lanes_in % lanes_out or n % lanes_out:
            raise ConfigError(f"lanes_out = {lanes_out} must divide lanes_in = {lanes_in} and "
                              f"n = {n}")
        self._n, self._li, self._lo, self._bits = n, lanes_in, lanes_out, bits
        super().__init__({
            "i_stream": In(stream.Signature(data.StructLayout({
                "x": data.ArrayLayout(unsigned(bits), lanes_in)}))),
            "o_stream": Out(stream.Signature(data.StructLayout({
                "x": data.ArrayLayout(unsigned(bits), lanes_out)}))),
        })

    def elaborate(self, platform):
        m = Module()
        per = self._li // self._lo
        slices = -(-self._n // self._li)
        tail = (self._n - (slices - 1) * self._li) // self._lo  # parts of the last transfer
        _shift_out(m, self.i_stream.payload.x, self.o_stream.payload.x, self.i_stream,
                   self.o_stream, part=self._lo * self._bits, parts=per, tail=tail,
                   transfers=slices)
        return m


class Serializer(wiring.Component):
    """Score groups of ``pe`` lanes in, one score per transfer out (classes in order).

    Parameters
    ----------
    classes : int
        Scores per vector, C; the last group's lanes past class ``C - 1`` are dropped.
    pe : int
        Lanes per incoming group.
    width : int
        Signed score width.

    Members
    -------
    i_stream : ``{"scores": ArrayLayout(signed(width), pe)}`` (the output layer's Threshold).
    o_stream : ``{"scores": ArrayLayout(signed(width), 1)}`` (an :class:`Argmax` with one lane).

    Timing: a group is taken into a shift register and leaves one lane per cycle from the next
    cycle on; the next group is accepted in the cycle its predecessor's last lane leaves, so
    groups ``pe`` cycles apart stream without a bubble. Serializing keeps the argmax to one
    comparison per cycle (its critical path does not grow with ``pe``).
    """

    def __init__(self, classes: int, *, pe: int, width: int):
        self._c, self._pe, self._w = classes, pe, width
        super().__init__({
            "i_stream": In(stream.Signature(data.StructLayout({
                "scores": data.ArrayLayout(signed(width), pe)}))),
            "o_stream": Out(stream.Signature(data.StructLayout({
                "scores": data.ArrayLayout(signed(width), 1)}))),
        })

    def elaborate(self, platform):
        m = Module()
        c, pe, w = self._c, self._pe, self._w
        nf = -(-c // pe)
        tail = c - (nf - 1) * pe  # lanes of the last group
        _shift_out(m, self.i_stream.payload.scores, self.o_stream.payload.scores, self.i_stream,
                   self.o_stream, part=w, parts=pe, tail=tail, transfers=nf)
        return m


def _shift_out(m, x_in, x_out, ins, outs, *, part: int, parts: int, tail: int, transfers: int):
    """The shift register of :class:`Unpack` and :class:`Serializer`: a transfer of ``parts``
    ``part``-bit parts (``tail`` for the last of every ``transfers``) leaves one part per cycle
    from the next cycle on; the next transfer is taken in the cycle the last part leaves."""
    sr = Signal(len(x_in.as_value()))
    left = Signal(range(parts + 1))  # parts still to send
    g = Signal(range(max(2, transfers)))
    m.d.comb += [outs.valid.eq(left != 0), x_out.as_value().eq(sr[:part])]
    take = outs.valid & outs.ready
    m.d.comb += ins.ready.eq((left == 0) | (take & (left == 1)))
    with m.If(take):
        m.d.sync += [sr.eq(sr >> part), left.eq(left - 1)]
    with m.If(ins.valid & ins.ready):
        last = g == transfers - 1
        m.d.sync += [sr.eq(x_in.as_value()), left.eq(Mux(last, tail, parts)),
                     g.eq(Mux(last, 0, g + 1))]


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

    The ports, handshake and reset are documented in :meth:`AccelPlan.ports`; latency and the
    streaming interval in :mod:`bitswarm.hw.plan`.
    """

    def __init__(self, model: Model, plan: AccelPlan | None = None):
        if not isinstance(model, Model):
            self._MustUse__silence = True  # never elaborated: don't warn about it
            raise TypeError(f"model must be a bitswarm.golden.Model, not {model!r}")
        self._model = model
        try:
            self._plan = plan or AccelPlan.auto(model.cfg)
        except ConfigError:
            self._MustUse__silence = True
            raise
        if self._plan.cfg.to_dict() != model.cfg.to_dict():
            self._MustUse__silence = True
            raise ConfigError("the plan was made for a different model configuration")
        self._macs = [MACArray(lay, model.weights[i], f) for i, (lay, f)
                      in enumerate(zip(model.cfg.layers, self._plan.folds, strict=True))]
        simd0 = self._plan.folds[0].simd
        last = model.cfg.layers[-1]
        super().__init__({
            "i_stream": In(stream.Signature(data.StructLayout({
                "x": data.ArrayLayout(unsigned(PIXEL_BITS), simd0)}))),
            "o_stream": Out(stream.Signature(data.StructLayout({
                "cls": unsigned(class_width(last.n_out)),
                "scores": data.ArrayLayout(signed(last.z_width), last.n_out),
            }))),
        })

    @property
    def plan(self) -> AccelPlan:
        return self._plan

    @property
    def model(self) -> Model:
        return self._model

    @property
    def macs(self) -> list[MACArray]:
        """The layers' MAC arrays (submodules ``mac0`` …), e.g. for a per-layer trace."""
        return list(self._macs)

    def elaborate(self, platform):
        m = Module()
        model, plan = self._model, self._plan
        lays = model.cfg.layers
        macs = self._macs
        for i, mac in enumerate(macs):
            m.submodules[f"mac{i}"] = mac
        src = self._input(m, lays[0], plan.folds[0].simd)
        for i, lay in enumerate(lays):
            fold = plan.folds[i]
            if lay.conv is not None:
                gen = SlidingWindow(lay.conv, simd=fold.simd, bits=lay.input_bits)
                m.submodules[f"window{i}"] = gen
                if i == 0 and gen.lanes != fold.simd:  # J pixels per slice: one in at a time
                    up = Unpack(lay.conv.in_size, lanes_in=fold.simd, lanes_out=gen.lanes,
                                bits=lay.input_bits)
                    m.submodules.unpack = up
                    wiring.connect(m, src=src, unpack=up.i_stream)
                    src = up.o_stream
                wiring.connect(m, src=src, window=gen.i_stream)
                src = gen.o_stream
            wiring.connect(m, src=src, mac=macs[i].i_stream)
            thr = Threshold(lay, lanes=fold.pe, theta=model.theta[i].tolist(),
                            invert=None if lay.output else model.invert[i].tolist())
            m.submodules[f"thr{i}"] = thr
            self._connect_z(m, macs[i], thr)
            if lay.output:
                break
            bits = thr.o_stream
            if lay.conv is not None and lay.conv.pool > 1:
                pool = Pool(lay.conv, channels=lay.n_out, pe=fold.pe)
                m.submodules[f"pool{i}"] = pool
                wiring.connect(m, thr=bits, pool=pool.i_stream)
                bits = pool.o_stream
            rp = Repack(lay.out_size, pe=fold.pe, simd=plan.folds[i + 1].in_lanes(lays[i + 1]))
            m.submodules[f"repack{i}"] = rp
            wiring.connect(m, src=bits, repack=rp.i_stream)
            src = rp.o_stream
        last = lays[-1]
        m.submodules.serializer = ser = Serializer(last.n_out, pe=plan.folds[-1].pe,
                                                   width=last.z_width)
        m.submodules.argmax = am = Argmax(last.z_width, last.n_out, lanes=1, scores=True)
        wiring.connect(m, thr=thr.o_stream, serializer=ser.i_stream)
        wiring.connect(m, serializer=ser.o_stream, argmax=am.i_stream)
        o = self.o_stream
        m.d.comb += [
            o.valid.eq(am.o_stream.valid),
            am.o_stream.ready.eq(o.ready),
            o.payload.cls.eq(am.o_stream.payload.cls),
            o.payload.scores.eq(am.o_stream.payload.scores),
        ]
        return m

    def _input(self, m, lay0, simd0):
        """Raw pixels -> the first layer's B-bit inputs (the top B bits of each pixel)."""
        b0 = lay0.input_bits
        s = stream.Signature(data.StructLayout({
            "x": data.ArrayLayout(unsigned(b0), simd0)})).create(path=("pixels",))
        m.d.comb += [s.valid.eq(self.i_stream.valid), self.i_stream.ready.eq(s.ready)]
        for k in range(simd0):
            m.d.comb += s.payload.x[k].eq(self.i_stream.payload.x[k][PIXEL_BITS - b0:])
        return s

    @staticmethod
    def _connect_z(m, mac, thr):
        """MAC array groups (z, group, last) into a Threshold (z only: it counts folds)."""
        m.d.comb += [
            thr.i_stream.valid.eq(mac.o_stream.valid),
            mac.o_stream.ready.eq(thr.i_stream.ready),
            thr.i_stream.payload.z.eq(mac.o_stream.payload.z),
        ]
