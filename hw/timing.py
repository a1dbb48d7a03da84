"""Cycle model of the convolution stages: a handshake-level model of the front of the pipeline.

A convolution's timing depends on the map geometry (line-buffer rows fill and free, the first
window of each output row waits for its rows, stages downstream may hold a stage upstream), so
the latency of the convolution stages is not one sum of per-layer tails as it is for dense
layers. :func:`conv_front` steps the stages' *control* cycle by cycle — only counters, valid,
ready and the registers between them, no data — with exactly the rules each component's
docstring states (:class:`~bitswarm.hw.sliding_window.SlidingWindow`,
:class:`~bitswarm.hw.mac_array.MACArray`, :class:`~bitswarm.hw.threshold.Threshold`,
:class:`~bitswarm.hw.pool.Pool`, :class:`~bitswarm.hw.accel.Repack`,
:class:`~bitswarm.hw.accel.Unpack`), from the first input
handshake to the handshake of the last slice the convolutions hand to the first dense layer.
The dense layers after it are then the closed form of :mod:`bitswarm.hw.plan`. The tests
assert the sum equals Verilator's measured cycles for every image.

No Amaranth here (the contract module :mod:`bitswarm.hw.plan` imports it).
"""

from __future__ import annotations

from bitswarm.golden.layer import LayerConfig

__all__ = ["conv_front"]


class _Source:
    """The accelerator's input: ``slices`` transfers per image, offered every cycle."""

    def __init__(self, slices: int, images: int):
        self.left = slices * images

    def valid(self) -> bool:
        return self.left > 0

    def tick(self, hs: bool, _down: bool) -> None:
        self.left -= hs


class _Unpack:
    """Unpack: a shift register of ``per`` parts; takes the next transfer as the last leaves."""

    def __init__(self, n: int, lanes_in: int, lanes_out: int):
        self.per = lanes_in // lanes_out
        self.slices = -(-n // lanes_in)
        self.tail = (n - (self.slices - 1) * lanes_in) // lanes_out
        self.left = self.g = 0

    def ready(self, down: bool) -> bool:
        return self.left == 0 or (down and self.left == 1)

    def valid(self) -> bool:
        return self.left != 0

    def tick(self, accept: bool, _down: bool, hs_out: bool) -> None:
        self.left -= hs_out
        if accept:
            last = self.g == self.slices - 1
            self.left = self.tail if last else self.per
            self.g = 0 if last else self.g + 1


class _Window:
    """SlidingWindow: writer ring of ``R`` rows, reader walking the windows row by row."""

    def __init__(self, lay: LayerConfig, fold):
        from .plan import conv_outputs, conv_rows, line_rows

        g = lay.conv
        self.R = line_rows(g)
        self.rows = conv_rows(g)
        self.row_chunks = g.in_width * g.in_channels // fold.in_lanes(lay)
        self.row_slices = conv_outputs(g)[1] * fold.sf(lay)
        self.mid = False
        self.wpos = 0
        self.held = self.filled = 0
        self.oy = self.rpos = 0
        self.v = False

    def ready(self, _down: bool) -> bool:
        return self.mid or self.held < self.R

    def valid(self) -> bool:
        return self.v

    def tick(self, accept: bool, down: bool, hs_out: bool) -> None:
        start = done = False
        if accept:
            start = not self.mid
            self.wpos += 1
            done = self.wpos == self.row_chunks
            if done:
                self.wpos = 0
            self.mid = not done
        en = (not self.v) or down
        _, need, release = self.rows[self.oy]
        issue = en and (self.rpos != 0 or self.filled >= need)
        dec = 0
        if en:
            self.v = issue
        if issue:
            self.rpos += 1
            if self.rpos == self.row_slices:
                self.rpos = 0
                dec = release
                self.oy = (self.oy + 1) % len(self.rows)
        self.held += start - dec
        self.filled += done - dec


class _Mac:
    """MACArray control: input banks (or direct steps), the step pipeline, the skid buffer."""

    def __init__(self, lay: LayerConfig, fold):
        from .plan import BUFFER_BANKS

        self.buffered = fold.buffered(lay)
        self.SF, self.B, self.NF = fold.sf(lay), lay.input_bits, fold.nf(lay)
        self.cpv = fold.cycles_per_vector(lay)
        self.K = BUFFER_BANKS
        # go -> ctl0 (buffered) -> ctl1 -> pipeline tree registers -> fin_valid
        self.line = [False] * ((3 if self.buffered else 2) + fold.pipeline)
        self.count, self.adv = 0, True
        self.ready_r, self.taken, self.wsf, self.w_last, self.wb = True, 0, 0, False, 0
        self.full, self.full_rb, self.rb, self.step = [False] * self.K, False, 0, 0
        self.sf = 0

    def ready(self, _down: bool) -> bool:
        return self.ready_r if self.buffered else self.adv

    def valid(self) -> bool:
        return self.count != 0

    def tick(self, accept: bool, _down: bool, pop: bool) -> None:
        adv = self.adv
        push = adv and self.line[-1]
        if self.buffered:
            SF, K = self.SF, self.K
            a_last = accept and self.wsf == SF - 1
            go = adv and self.full_rb
            end_group = (self.step + 1) % (self.B * SF) == 0
            free = go and self.step == self.cpv - 1
            if accept:
                self.wsf = (self.wsf + 1) % SF
            full = list(self.full)
            if free:
                full[self.rb] = False
            if self.w_last:
                full[self.wb] = True
                self.wb = (self.wb + 1) % K
            if free:
                self.rb = (self.rb + 1) % K
            self.full, self.full_rb = full, full[self.rb]
            self.taken += a_last - free
            self.ready_r = self.taken < K
            self.w_last = a_last
            if go:
                self.step = (self.step + 1) % self.cpv
            entry = go and end_group
        else:
            go = adv and accept
            entry = go and self.sf == self.SF - 1
            if go:
                self.sf = (self.sf + 1) % self.SF
        if adv:
            self.line = [entry] + self.line[:-1]
        self.count += push - pop
        self.adv = self.count != 2


class _Threshold:
    """Threshold: a one-entry output register; ready once primed."""

    def __init__(self):
        self.v, self.primed = False, False

    def ready(self, down: bool) -> bool:
        return self.primed and ((not self.v) or down)

    def valid(self) -> bool:
        return self.v

    def tick(self, accept: bool, down: bool, _hs_out: bool) -> None:
        if accept:
            self.v = True
        elif down:
            self.v = False
        self.primed = True


class _Pool:
    """Pool: a one-entry output register, set on the last group of each window."""

    def __init__(self, lay: LayerConfig, fold):
        from .plan import conv_outputs

        self.q, self.NF = lay.conv.pool, fold.nf(lay)
        self.h, self.w = conv_outputs(lay.conv)
        self.nf = self.ox = self.oy = 0
        self.v = False

    def ready(self, down: bool) -> bool:
        return (not self.v) or down

    def valid(self) -> bool:
        return self.v

    def tick(self, accept: bool, down: bool, _hs_out: bool) -> None:
        q = self.q
        if accept:
            self.v = self.ox % q == q - 1 and self.oy % q == q - 1
            self.nf += 1
            if self.nf == self.NF:
                self.nf = 0
                self.ox += 1
                if self.ox == self.w:
                    self.ox = 0
                    self.oy = (self.oy + 1) % self.h
        elif down:
            self.v = False


class _Repack:
    """Repack: a slice leaves one cycle after its last group."""

    def __init__(self, n: int, pe: int, simd: int):
        self.per = simd // pe
        self.nf = -(-n // pe)
        self.g = self.k = 0
        self.v = False

    def ready(self, down: bool) -> bool:
        return (not self.v) or down

    def valid(self) -> bool:
        return self.v

    def tick(self, accept: bool, down: bool, _hs_out: bool) -> None:
        if down:
            self.v = False
        if accept:
            last_g = self.g == self.nf - 1
            if last_g or self.k == self.per - 1:
                self.v = True
            self.k = 0 if (last_g or self.k == self.per - 1) else self.k + 1
            self.g = 0 if last_g else self.g + 1


def conv_front(plan, images: int = 1, *, limit: int | None = None) -> list[int]:
    """Cycles (from the first input handshake, cycle 0) of the handshake of each image's last
    slice into the first dense layer, for ``images`` images offered back to back at full rate
    (one image: the isolated case)."""
    cfg, folds = plan.cfg, plan.folds
    lays = cfg.layers
    n_conv = sum(lay.conv is not None for lay in lays)
    stages: list = [_Source(plan.input_slices(), images)]
    for i in range(n_conv):
        lay, f = lays[i], folds[i]
        if i == 0 and f.in_lanes(lay) != f.simd:
            stages.append(_Unpack(lay.conv.in_size, f.simd, f.in_lanes(lay)))
        stages += [_Window(lay, f), _Mac(lay, f), _Threshold()]
        if lay.conv.pool > 1:
            stages.append(_Pool(lay, f))
        stages.append(_Repack(lay.out_size, f.pe, folds[i + 1].in_lanes(lays[i + 1])))
    d0 = lays[n_conv]
    per_image = folds[n_conv].sf(d0)
    out: list[int] = []
    seen = 0
    cycle = 0
    limit = limit or (1 << 40)
    n = len(stages)
    while len(out) < images:
        if cycle > limit:
            raise RuntimeError(f"the conv cycle model made no progress in {limit} cycles")
        # valid from registers, ready from the sink back to the source
        valid = [s.valid() for s in stages]
        ready = [False] * (n + 1)
        ready[n] = True  # the first dense MAC array takes every slice of an isolated image
        for k in range(n - 1, 0, -1):
            ready[k] = stages[k].ready(ready[k + 1])
        hs = [valid[k] and ready[k + 1] for k in range(n)]  # hs[k]: stage k -> stage k + 1
        stages[0].tick(hs[0], ready[1])
        for k in range(1, n):
            stages[k].tick(hs[k - 1], ready[k + 1], hs[k])
        if hs[n - 1]:
            seen += 1
            if seen % per_image == 0:
                out.append(cycle)
        cycle += 1
    return out
