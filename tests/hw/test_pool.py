# amaranth: UnusedElaboratable=no
"""Pool: constructor checks, and the Amaranth simulator against golden ``maxpool_bits`` with
idle input and output backpressure; an AND (min-)pool must fail."""

from __future__ import annotations

import pytest
import torch
from amaranth.hdl import Fragment
from bitswarm.golden.conv import ConvGeometry, maxpool_bits
from bitswarm.golden.errors import ConfigError
from bitswarm.hw.plan import conv_outputs
from bitswarm.hw.pool import Pool

from .bench import TB, AmaranthSim, amaranth_run

#: name: (geometry (C, H, W, K, stride, pad, pool), channels F, pe)
CASES = {
    "q2_f4_pe2": ((1, 8, 8, 3, 1, 1, 2), 4, 2),
    "q3_drops_f6_pe6": ((1, 8, 7, 1, 1, 0, 3), 6, 6),
    "q2_odd_f3_pe1": ((2, 7, 5, 3, 1, 0, 2), 3, 1),
    "q1_pass": ((1, 4, 4, 3, 1, 1, 1), 2, 1),
}


def _run(dut: Pool, images=2, idle="full", bp="full", seed=0):
    g, f, pe = dut.geometry, dut.channels, dut.pe
    bits = torch.randint(0, 2, (images * g.positions, f), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))
    want = maxpool_bits(g, bits, f).reshape(-1, f).tolist()
    hc, wc = conv_outputs(g)
    kept = bits.reshape(images, g.out_height, g.out_width, f)[:, :hc, :wc].reshape(-1, f).tolist()

    def groups(rows):
        return [sum(b << i for i, b in enumerate(r[k:k + pe])) for r in rows for k in range(0, f, pe)]

    ins, outs = groups(kept), groups(want)

    def check(i, raw):
        assert raw == outs[i], f"group {i}: {raw:#x} != {outs[i]:#x}"

    async def bench(sim: AmaranthSim):
        tb = TB(sim)
        await tb.reset()
        tb.source("i_stream", ins, idle, pe, seed)
        tb.sink("o_stream", bp, len(outs), check, seed)
        await tb.run(max_cycles=40 * len(ins) + 1000)

    amaranth_run(dut, bench)


def _dut(name, cls=Pool):
    geo, f, pe = CASES[name]
    return cls(ConvGeometry(*geo), channels=f, pe=pe)


def test_init():
    g = ConvGeometry(1, 8, 7, 1, 1, 0, 3)
    p = Pool(g, channels=6, pe=3)
    assert (p.geometry, p.channels, p.pe, p.groups, p.buffer_bits) == (g, 6, 3, 2, 12)
    Fragment.get(p, None)


def test_init_wrong():
    g = ConvGeometry(1, 8, 8, 3, 1, 1, 2)
    with pytest.raises(TypeError, match=r"geometry must be a ConvGeometry, not None"):
        Pool(None, channels=4)
    with pytest.raises(TypeError, match=r"channels must be an integer, not '4'"):
        Pool(g, channels="4")
    with pytest.raises(ConfigError, match=r"pe must divide the channels F = 6, not 4"):
        Pool(g, channels=6, pe=4)
    with pytest.raises(ConfigError, match=r"channels must be >= 1, not 0"):
        Pool(g, channels=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sim_pool_equals_golden(name):
    _run(_dut(name))


@pytest.mark.parametrize("idle, bp", [("random", "random"), ("sparse", "10")])
def test_sim_pool_idle_and_backpressure(idle, bp):
    _run(_dut("q2_odd_f3_pe1"), images=3, idle=idle, bp=bp, seed=4)
    _run(_dut("q3_drops_f6_pe6"), images=2, idle=idle, bp=bp, seed=4)


class _AndPool(Pool):
    """Mutant: AND (a min-pool of the bits) instead of OR."""

    @staticmethod
    def combine(a, b):
        return a & b


def test_sim_mutant_and_pool_fails():
    with pytest.raises(AssertionError, match=r"group \d+"):
        _run(_dut("q2_f4_pe2", _AndPool))
