# amaranth: UnusedElaboratable=no
"""SlidingWindow: constructor checks, and the Amaranth simulator against golden ``im2col``
(whole windows in ``(ky, kx, c)`` order, padding, stride, the rows and columns pooling drops),
with idle input and output backpressure; wrong padding and an off-by-one stride must fail."""

from __future__ import annotations

import pytest
import torch
from amaranth.hdl import Fragment
from bitswarm.golden.conv import ConvGeometry, im2col
from bitswarm.golden.errors import ConfigError
from bitswarm.hw.plan import conv_outputs, line_rows
from bitswarm.hw.sliding_window import SlidingWindow

from .bench import TB, AmaranthSim, amaranth_run

#: name: (geometry (C, H, W, K, stride, pad, pool), simd, bits)
CASES = {
    "c1_k3p1_8bit": ((1, 8, 8, 3, 1, 1, 2), 1, 8),
    "c4_k3s2p1_simd2": ((4, 7, 6, 3, 2, 1, 1), 2, 1),
    "c2_k2s2_pool_drops": ((2, 7, 7, 2, 2, 0, 2), 1, 4),
    "c3_k1_simd3": ((3, 3, 5, 1, 1, 0, 1), 3, 1),
    "c1_k5p2_s3": ((1, 9, 7, 5, 3, 2, 1), 1, 2),
    # J > 1: a slice is J neighbouring pixels of a kernel row
    "c1_k3p1_row3_8bit": ((1, 8, 8, 3, 1, 1, 2), 3, 8),
    "c2_k3s2p1_row3": ((2, 7, 6, 3, 2, 1, 1), 6, 1),
    "c1_k5p2_s3_row5": ((1, 9, 7, 5, 3, 2, 1), 5, 2),
    "c3_k4s3p3_row2_drops": ((3, 8, 9, 4, 3, 3, 2), 6, 1),
    "c1_k3p0_row3": ((1, 6, 7, 3, 1, 0, 1), 3, 4),
}
FLOWS = [("full", "full"), ("random", "random"), ("sparse", "1110")]


def _pack(lanes, bits: int) -> int:
    return sum(int(v) << (i * bits) for i, v in enumerate(lanes))


def _items(g: ConvGeometry, simd: int, bits: int, images: int, seed: int = 0):
    """Input transfers and the expected output transfers (raw payloads) of ``images`` maps."""
    x = torch.randint(0, 1 << bits, (images, g.in_size), dtype=torch.int64,
                      generator=torch.Generator().manual_seed(seed))
    lanes = SlidingWindow(g, simd=simd, bits=bits).lanes
    ins = [_pack(row[k:k + lanes], bits) for row in x.tolist() for k in range(0, g.in_size, lanes)]
    win = im2col(g, x).reshape(images, g.out_height, g.out_width, g.window)
    hc, wc = conv_outputs(g)
    outs = [_pack(w[k:k + simd], bits) for img in win[:, :hc, :wc].reshape(-1, g.window).tolist()
            for w in [img] for k in range(0, g.window, simd)]
    return ins, outs


def _run(dut: SlidingWindow, images: int = 2, idle: str = "full", bp: str = "full", seed: int = 0):
    g, simd, bits = dut.geometry, dut.simd, dut.bits
    ins, outs = _items(g, simd, bits, images, seed)

    def check(i, raw):
        assert raw == outs[i], f"slice {i} (window {i // dut.slices}): {raw:#x} != {outs[i]:#x}"

    async def bench(sim: AmaranthSim):
        tb = TB(sim)
        await tb.reset()
        tb.source("i_stream", ins, idle, simd * bits, seed)
        tb.sink("o_stream", bp, len(outs), check, seed)
        await tb.run(max_cycles=50 * (len(ins) + len(outs)) + 1000)

    amaranth_run(dut, bench)


def _dut(name: str, cls=SlidingWindow) -> SlidingWindow:
    geo, simd, bits = CASES[name]
    return cls(ConvGeometry(*geo), simd=simd, bits=bits)


def test_init():
    g = ConvGeometry(4, 7, 6, 3, 2, 1, 1)
    d = SlidingWindow(g, simd=2, bits=1)
    assert (d.geometry, d.simd, d.bits, d.chunks, d.slices) == (g, 2, 1, 2, 18)
    assert d.rows == line_rows(g) == 5 and d.depth == 5 * 6 * 2 and d.width == 2
    assert d.mem_style() == "bram" and d.pad_word() == 0 and d.step() == (2, 2)  # 60 words
    assert SlidingWindow(ConvGeometry(1, 4, 4, 3, 1, 1, 1)).mem_style() == "logic"  # 16 words
    assert line_rows(ConvGeometry(1, 8, 8, 3, 1, 1, 1)) == 4  # K + 1 for a padded 3x3
    assert line_rows(ConvGeometry(1, 8, 8, 3, 1, 0, 1)) == 6  # last 3 rows + next image's 3
    big = SlidingWindow(ConvGeometry(16, 28, 28, 3, 1, 1, 2), simd=4, bits=1)
    assert big.mem_style() == "bram"
    Fragment.get(d, None)


def test_init_wrong_geometry():
    with pytest.raises(TypeError, match=r"geometry must be a ConvGeometry, not \(1, 8, 8\)"):
        SlidingWindow((1, 8, 8))


def test_init_wrong_simd_bits():
    g = ConvGeometry(6, 5, 5, 3)
    with pytest.raises(TypeError, match=r"simd must be an integer, not 2.0"):
        SlidingWindow(g, simd=2.0)
    msg = (r"simd = {} must divide the convolution's input channels C = 6, or be J·C with J "
           r"dividing the kernel K = 3 \(a window slice is part of one pixel, or J whole pixels "
           r"of one kernel row\)")
    for bad in (4, 12, 0, 36):
        with pytest.raises(ConfigError, match=msg.format(bad)):
            SlidingWindow(g, simd=bad)
    d = SlidingWindow(g, simd=18)  # a whole kernel row of 3 pixels
    assert (d.chunks, d.pixels, d.lanes, d.slices, d.offset) == (1, 3, 6, 3, 0)
    assert d.i_stream.payload.shape().size == 6 and d.o_stream.payload.shape().size == 18
    with pytest.raises(ConfigError, match=r"bits must be in 1..8, not 9"):
        SlidingWindow(g, simd=3, bits=9)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sim_windows_equal_im2col(name):
    _run(_dut(name), images=2)


@pytest.mark.parametrize("idle, bp", FLOWS[1:])
def test_sim_windows_idle_and_backpressure(idle, bp):
    for name in ("c4_k3s2p1_simd2", "c1_k5p2_s3", "c2_k3s2p1_row3", "c3_k4s3p3_row2_drops"):
        _run(_dut(name), images=3, idle=idle, bp=bp, seed=5)


class _PadPlusOne(SlidingWindow):
    """Mutant: padding reads as +1 (bit 1) instead of the encoded zero."""

    def pad_word(self):
        return (1 << self.width) - 1


class _StrideOffByOne(SlidingWindow):
    """Mutant: columns advance by s + 1."""

    def step(self):
        s = self.geometry.stride
        return s, s + 1


@pytest.mark.parametrize("mutant", [_PadPlusOne, _StrideOffByOne])
def test_sim_mutants_fail(mutant):
    with pytest.raises(AssertionError, match=r"slice \d+ \(window \d+\)"):
        _run(_dut("c1_k3p1_8bit", mutant), images=1)
    for name in ("c4_k3s2p1_simd2", "c2_k3s2p1_row3"):
        with pytest.raises(AssertionError, match=r"slice \d+"):
            _run(_dut(name, mutant), images=1)
