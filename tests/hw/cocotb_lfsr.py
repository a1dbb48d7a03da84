# amaranth: UnusedElaboratable=no
"""LFSR bench: every payload (each cycle) and the state (each cycle) against golden.

The same :func:`lfsr_bench` runs in the Amaranth simulator (``tests/hw/test_lfsr.py``) and,
through the cocotb tests below, on Verilator. The Verilator build is a :class:`~.bench.Multi`
of several LFSRs; params ``instances`` maps instance names to parameter sets, ``mutant`` names
the deliberately broken instance, ``golden_mutant`` breaks the reference of ``matches_golden``.
"""

from __future__ import annotations

import cocotb
from amaranth.lib import data
from bitswarm.golden import lfsr as gl
from bitswarm.hw.lfsr import LFSR
from bitswarm.sim.verilator import cocotb_params

from .bench import TB, CocotbSim, golden_mutant

SINK_PATTERNS = ("full", "1110", "random")


def config_of(p: dict) -> gl.LFSRConfig:
    return gl.LFSRConfig(width=p["width"], seed=p["seed"], draw_bits=p["draw_bits"])


async def lfsr_bench(sim, p: dict, sink_pattern: str, transfers: int = 300, seed: int = 0,
                     prefix: str = "") -> int:
    """Check ``transfers`` transfers of the LFSR built from params ``p`` under backpressure:
    every cycle the state and the (offered) payload, whether or not it is accepted."""
    cfg, lanes = config_of(p), p["lanes"]
    layout = LFSR.payload_layout(cfg, lanes)
    o, st = f"{prefix}o_stream", f"{prefix}state"
    tb = TB(sim, prefix)
    await tb.reset()
    model = {"state": cfg.seed}  # golden state after all accepted transfers

    def on_cycle(inputs, out):
        g = gl.LFSR(cfg, state=model["state"])
        draws = [g.draw() for _ in range(lanes)]
        assert out[st] == model["state"], f"state {out[st]:#x} != golden {model['state']:#x}"
        assert out[f"{o}__valid"] == 1, "o_stream must be always valid"
        got = list(data.Const(layout, out[f"{o}__payload"]).draws)
        assert got == draws, f"draws {got} != golden {draws} (state {model['state']:#x})"
        if inputs[f"{o}__ready"]:
            model["state"] = g.state

    tb.sink("o_stream", sink_pattern, transfers, lambda i, raw: None, seed)
    return await tb.run(monitors=(st,), on_cycle=on_cycle, tail=0)


@cocotb.test()
async def matches_golden(dut):
    p = cocotb_params()
    sim = CocotbSim(dut)
    with golden_mutant(p.get("golden_mutant")):
        for name, ip in p["instances"].items():
            for i, pat in enumerate(SINK_PATTERNS):
                await lfsr_bench(sim, ip, pat, p.get("transfers", 300), seed=i,
                                 prefix=f"{name}__")


@cocotb.test()
async def broken_component(dut):
    p = cocotb_params()
    name, ip = p["mutant"]
    await lfsr_bench(CocotbSim(dut), ip, "random", 100, prefix=f"{name}__")
