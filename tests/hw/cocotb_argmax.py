# amaranth: UnusedElaboratable=no
"""Argmax bench: every class index and max score against golden ``argmax``.

The same :func:`argmax_bench` runs in the Amaranth simulator (``tests/hw/test_argmax.py``) and,
through the cocotb tests below, on Verilator (a :class:`~.bench.Multi` of instances).
Scores are drawn from a handful of values (edges included) so ties are frequent.
"""

from __future__ import annotations

import random

import cocotb
import torch
from amaranth.lib import data
from bitswarm.golden import layer as gl
from bitswarm.hw.argmax import Argmax
from bitswarm.sim.verilator import cocotb_params

from .bench import TB, CocotbSim, golden_mutant

PATTERNS = (("full", "full"), ("1110", "random"), ("random", "1110"), ("sparse", "sparse"))


class BrokenArgmax(Argmax):
    """Fault injection for the mutation checks: ties go to the highest index."""

    @staticmethod
    def _wins(challenger, holder):
        return challenger >= holder


def make(p: dict, broken: bool = False) -> Argmax:
    return (BrokenArgmax if broken else Argmax)(p["width"], p["classes"], lanes=p["lanes"])


async def argmax_bench(sim, p: dict, src: str, sink: str, samples: int = 40, seed: int = 0,
                       prefix: str = "", tail: int = 8) -> int:
    """``samples`` score vectors through the unit built from ``p``."""
    w, c, lanes = p["width"], p["classes"], p["lanes"]
    beats = -(-c // lanes)
    rng = random.Random(seed * 31 + w * 1000 + c)
    lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
    scores = []
    for _ in range(samples):
        pool = [lo, hi, 0, -1] + [rng.randint(lo, hi) for _ in range(3)]
        pool = [min(hi, max(lo, v)) for v in pool]
        if rng.random() < 0.3:
            pool = [rng.randint(lo, hi) for _ in range(16)]  # wide values, fewer ties
        scores.append([rng.choice(pool) for _ in range(c)])
    st = torch.tensor(scores, dtype=torch.int64)
    cls = gl.argmax(st).tolist()
    il, ol = Argmax.i_layout(w, lanes), Argmax.o_layout(w, c)
    items = []
    for s in range(samples):
        for b in range(beats):
            lane = scores[s][b * lanes:(b + 1) * lanes]
            lane += [rng.randint(lo, hi) for _ in range(lanes - len(lane))]  # don't-care lanes
            items.append(il.const({"scores": lane}).as_bits())

    def check(i, raw):
        got = data.Const(ol, raw)
        want = (cls[i], scores[i][cls[i]])
        assert (got.cls, got.score) == want, (
            f"sample {i}: (cls, score) {(got.cls, got.score)} != golden {want} "
            f"(scores {scores[i]})"
        )

    tb = TB(sim, prefix)
    await tb.reset()
    tb.source("i_stream", items, src, il.size, seed)
    tb.sink("o_stream", sink, samples, check, seed + 1)
    return await tb.run(tail=tail)


@cocotb.test()
async def matches_golden(dut):
    p = cocotb_params()
    sim = CocotbSim(dut)
    with golden_mutant(p.get("golden_mutant")):
        for name, ip in p["instances"].items():
            for i, (src, snk) in enumerate(PATTERNS):
                await argmax_bench(sim, ip, src, snk, p.get("samples", 40), seed=i,
                                   prefix=f"{name}__")


@cocotb.test()
async def broken_component(dut):
    p = cocotb_params()
    name, ip = p["mutant"]
    await argmax_bench(CocotbSim(dut), ip, "random", "random", 30, prefix=f"{name}__")
