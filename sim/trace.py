"""Per-layer traces and where two of them first differ.

:func:`locate_mismatch` compares a backend's per-layer trace with golden's
(:meth:`bitswarm.golden.Model.forward` with ``trace=``) and names the first differing value:
layer, image and neuron for a dense layer; layer, image, channel and pixel ``(y, x)`` of the
(pooled) output map for a convolutional one, from the flat HWC index
``(y·W_q + x)·F + c`` (SPEC.md §14).

Bulk Verilator runs only see the accelerator's outputs. When they disagree with golden,
:func:`rtl_trace` runs a few images through the *same* Amaranth design on Amaranth's simulator
and records each MAC array's pre-activations, from which it forms what each layer hands to the
next (activation bits; for a convolution the OR-pooled HWC map) and the final scores, in the
format of golden's trace.
"""

from __future__ import annotations

import numpy as np

__all__ = ["locate_mismatch", "rtl_trace"]


def locate_mismatch(cfg, golden_trace: list, other_trace: list, image_ids=None) -> str | None:
    """Describe the first value where ``other_trace`` differs from ``golden_trace``, or None.

    Layers are compared in order and, within a layer, the first differing image, then the
    first differing value of its row. ``image_ids[k]`` (default ``k``) names the traces'
    ``k``-th row: pass the test-set indices of the traced images.

    Parameters
    ----------
    cfg : bitswarm.golden.ModelConfig
        The traced model's config (it says which layers are convolutions and their map sizes).
    golden_trace, other_trace : list of array-like
        Per-layer outputs ``[n, out_size]``: activation bits, then the scores.

    Returns
    -------
    str or None
        ``"layer L, image I, neuron J: activation bit is 1, golden 0 (D differing values in
        this layer)"`` (``score`` for the output layer); for a convolution ``"layer L (conv,
        HqxWqxF map), image I, channel C, pixel (y=Y, x=X): ..."``; a shape or length
        difference is named as such.
    """
    layers = cfg.layers
    for li, (g, o) in enumerate(zip(golden_trace, other_trace, strict=False)):
        g, o = np.asarray(g), np.asarray(o)
        if g.shape != o.shape:
            return f"layer {li}: shape {list(o.shape)} differs from golden {list(g.shape)}"
        diff = np.argwhere(g != o)
        if not len(diff):
            continue
        k, j = (int(v) for v in diff[0])
        img = int(image_ids[k]) if image_ids is not None else k
        last = li == len(golden_trace) - 1
        what = (f"{'score' if last else 'activation bit'} is {int(o[k, j])}, golden {int(g[k, j])} "
                f"({len(diff)} differing values in this layer)")
        geo = layers[li].conv if li < len(layers) else None
        if geo is None:
            return f"layer {li}, image {img}, neuron {j}: {what}"
        f, wq = layers[li].n_out, geo.pooled_width
        y, x, c = j // (wq * f), (j // f) % wq, j % f
        return (f"layer {li} (conv, {geo.pooled_height}x{wq}x{f} map), image {img}, channel {c}, "
                f"pixel (y={y}, x={x}): {what}")
    if len(golden_trace) != len(other_trace):
        return f"trace lengths differ: {len(other_trace)} vs golden {len(golden_trace)}"
    return None


def rtl_trace(accel, images, max_cycles_per_image: int | None = None) -> list[np.ndarray]:
    """Per-layer outputs of ``accel`` (an :class:`~bitswarm.hw.accel.Accelerator`) for
    ``images``: hidden layers' activation bits ``[n, out_size]`` (uint8; a convolution's pooled
    HWC map), then scores ``[n, C]``.

    Each hidden layer's bits are ``((z - θ) >= 0) XOR inv`` of the ``z`` its MAC array emits
    (groups of ``PE`` outputs, group 0 starting a vector). A convolution's vectors are its
    computed windows in raster order over the ``H_q·Q x W_q·Q`` pixels pooling keeps
    (:func:`bitswarm.hw.plan.conv_outputs`); their bits are OR-pooled over ``Q x Q``.
    """
    from amaranth.sim import Simulator

    from .driver import hw_order

    plan = accel.plan
    cfg = accel.model.cfg
    lays = cfg.layers
    x = np.asarray(hw_order(cfg, np.asarray(images, dtype=np.uint8)), dtype=np.uint8)
    simd0, sf0 = plan.folds[0].simd, plan.input_slices()
    pad = np.zeros((len(x), sf0 * simd0), dtype=np.uint8)
    pad[:, : x.shape[1]] = x
    limit = max_cycles_per_image or (plan.latency_cycles() + 64)
    # elaborate once so submodules (MAC arrays) exist, and keep handles to their outputs
    macs = accel.macs
    # per hidden layer and image: the z vectors in arrival order (a list of [n_out] lists)
    hidden: list[list[list[list[int]]]] = [[[] for _ in range(len(x))] for _ in lays[:-1]]
    scores = np.zeros((len(x), lays[-1].n_out), dtype=np.int64)

    sim = Simulator(accel)
    sim.add_clock(1e-6)

    async def bench(ctx):
        for img in range(len(x)):
            sent = 0
            cycles = 0
            while True:
                if sent < sf0:
                    ctx.set(accel.i_stream.valid, 1)
                    for k in range(simd0):
                        ctx.set(accel.i_stream.payload.x[k], int(pad[img, sent * simd0 + k]))
                else:
                    ctx.set(accel.i_stream.valid, 0)
                ctx.set(accel.o_stream.ready, 1)
                # record layer handshakes of this cycle (values settle after the sets above)
                for li in range(len(lays) - 1):
                    mo = macs[li].o_stream
                    if ctx.get(mo.valid) and ctx.get(mo.ready):
                        g = ctx.get(mo.payload.group)
                        pe = plan.folds[li].pe
                        vecs = hidden[li][img]
                        if g == 0 or not vecs:
                            vecs.append([0] * lays[li].n_out)
                        for p in range(pe):
                            j = g * pe + p
                            if j < lays[li].n_out:
                                vecs[-1][j] = int(ctx.get(mo.payload.z[p]))
                in_hs = ctx.get(accel.i_stream.valid) and ctx.get(accel.i_stream.ready)
                out_hs = ctx.get(accel.o_stream.valid) and ctx.get(accel.o_stream.ready)
                if out_hs:
                    for j in range(lays[-1].n_out):
                        scores[img, j] = ctx.get(accel.o_stream.payload.scores[j])
                await ctx.tick()
                cycles += 1
                if in_hs:
                    sent += 1
                if out_hs:
                    break
                if cycles > limit:
                    raise AssertionError(f"image {img}: no output after {limit} cycles")

    sim.add_testbench(bench)
    sim.run()
    out = [_layer_bits(lays[li], accel.model.theta[li].numpy(), accel.model.invert[li].numpy(),
                       hidden[li]) for li in range(len(lays) - 1)]
    out.append(scores)
    return out


def _layer_bits(lay, theta, invert, vectors) -> np.ndarray:
    """A hidden layer's trace entry from its MAC vectors per image (see :func:`rtl_trace`)."""
    g = lay.conv
    rows = 1 if g is None else (g.pooled_height * g.pool) * (g.pooled_width * g.pool)
    z = np.zeros((len(vectors), rows, lay.n_out), dtype=np.int64)
    for img, vecs in enumerate(vectors):
        if vecs:
            z[img, : len(vecs)] = np.asarray(vecs[:rows], dtype=np.int64)
    bits = ((z >= theta.astype(np.int64)) ^ invert.astype(bool)).astype(np.uint8)
    if g is None:
        return bits[:, 0]
    q = g.pool
    m = bits.reshape(len(vectors), g.pooled_height, q, g.pooled_width, q, lay.n_out)
    return np.ascontiguousarray(m.max(axis=(2, 4)).reshape(len(vectors), -1))
