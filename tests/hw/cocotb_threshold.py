# amaranth: UnusedElaboratable=no
"""Threshold bench: every output bit against golden ``threshold`` under idle + backpressure.

The same :func:`threshold_bench` runs in the Amaranth simulator (``tests/hw/test_threshold.py``)
and, through the cocotb tests below, on Verilator (a :class:`~.bench.Multi` of instances).
"""

from __future__ import annotations

import random

import cocotb
import torch
from amaranth.lib import data
from bitswarm.golden import layer as gl
from bitswarm.hw.threshold import Threshold
from bitswarm.sim.verilator import cocotb_params

from .bench import TB, CocotbSim, golden_mutant

PATTERNS = (("full", "full"), ("1110", "random"), ("random", "1110"), ("sparse", "random"))


def layer_of(p: dict) -> gl.LayerConfig:
    return gl.LayerConfig(n_in=p["n_in"], n_out=p["n_out"], swarm=p["swarm"],
                          input_bits=p["input_bits"])


def rom_of(p: dict) -> tuple[list[int], list[int]]:
    """Seeded thresholds (edges +-theta_bound and 0 included) and inverts for params ``p``."""
    lay, rng = layer_of(p), random.Random(p["seed"])
    b = lay.theta_bound
    theta = [rng.choice([-b, b, 0, rng.randint(-b, b)]) for _ in range(lay.n_out)]
    invert = [rng.randrange(2) for _ in range(lay.n_out)]
    return theta, invert


class BrokenThreshold(Threshold):
    """Fault injection for the mutation checks: fires on ``z - theta > 0`` (not ``>= 0``)."""

    def _fire(self, diff):
        return ~diff[-1] & diff.any()


def make(p: dict, broken: bool = False) -> Threshold:
    theta, invert = rom_of(p)
    cls = BrokenThreshold if broken else Threshold
    return cls(layer_of(p), lanes=p["lanes"], theta=theta, invert=invert)


async def threshold_bench(sim, p: dict, src: str, sink: str, samples: int = 40, seed: int = 0,
                          prefix: str = "", tail: int = 8) -> int:
    """``samples`` samples of ``n_out`` pre-activations through the unit built from ``p``."""
    lay, lanes = layer_of(p), p["lanes"]
    theta, invert = rom_of(p)
    zw, folds = lay.z_width, lay.n_out // lanes
    rng = random.Random(seed * 7919 + p["seed"])
    lo, hi = -(1 << (zw - 1)), (1 << (zw - 1)) - 1
    z = [[min(hi, max(lo, rng.choice([rng.randint(lo, hi), theta[j] + rng.randint(-1, 1),
                                       lo, hi])))
          for j in range(lay.n_out)] for _ in range(samples)]
    expect = gl.threshold(torch.tensor(z, dtype=torch.int64), torch.tensor(theta),
                          torch.tensor(invert, dtype=torch.uint8)).tolist()
    il, ol = Threshold.i_layout(lay, lanes), Threshold.o_layout(lanes)
    items = [il.const({"z": z[s][f * lanes:(f + 1) * lanes]}).as_bits()
             for s in range(samples) for f in range(folds)]

    def check(i, raw):
        s, f = divmod(i, folds)
        got = data.Const(ol, raw).bits
        want = sum(bit << k for k, bit in enumerate(expect[s][f * lanes:(f + 1) * lanes]))
        assert got == want, (
            f"sample {s} fold {f}: bits {got:0{lanes}b} != golden {want:0{lanes}b} "
            f"(z {z[s][f * lanes:(f + 1) * lanes]}, theta {theta[f * lanes:(f + 1) * lanes]})"
        )

    tb = TB(sim, prefix)
    await tb.reset()
    tb.source("i_stream", items, src, il.size, seed)
    tb.sink("o_stream", sink, len(items), check, seed + 1)
    return await tb.run(tail=tail)


@cocotb.test()
async def matches_golden(dut):
    p = cocotb_params()
    sim = CocotbSim(dut)
    with golden_mutant(p.get("golden_mutant")):
        for name, ip in p["instances"].items():
            for i, (src, snk) in enumerate(PATTERNS):
                await threshold_bench(sim, ip, src, snk, p.get("samples", 30), seed=i,
                                      prefix=f"{name}__")


@cocotb.test()
async def broken_component(dut):
    p = cocotb_params()
    name, ip = p["mutant"]
    await threshold_bench(CocotbSim(dut), ip, "random", "random", 20, prefix=f"{name}__")
