# amaranth: UnusedElaboratable=no
"""Flip-unit bench: ``steps`` full steps of R vote rows against golden ``flip_step``.

Every flip mask on ``o_stream`` (golden's ``fired``), the LFSR state on every cycle, and at the
end both whole memories (read back through ``dbg_rd``) are compared with golden. Optionally the
memories are first loaded through ``dbg_wr``. The same :func:`flip_bench` runs in the Amaranth
simulator (``tests/hw/test_flip_unit.py``) and, through the cocotb tests below, on Verilator
(a :class:`~.bench.Multi` of instances).
"""

from __future__ import annotations

import random

import cocotb
import torch
from amaranth.lib import data
from bitswarm.golden import flip as gf
from bitswarm.golden.lfsr import LFSR as GoldenLFSR
from bitswarm.golden.lfsr import LFSRConfig
from bitswarm.hw.flip_unit import FlipUnit
from bitswarm.sim.verilator import cocotb_params

from .bench import TB, CocotbSim, golden_mutant

PATTERNS = (("full", "full"), ("1110", "random"), ("random", "1110"), ("sparse", "random"))


def config_of(p: dict) -> gf.FlipRuleConfig:
    return gf.FlipRuleConfig(
        acc_width=p["acc_width"], leak_shift=p["leak_shift"], threshold=p["threshold"],
        refractory=p["refractory"], noise=p["noise"], fire_prob=p.get("fire_prob", 1),
        lfsr=LFSRConfig(width=p["lfsr_width"], seed=p["lfsr_seed"], draw_bits=p["draw_bits"]),
    )


def state_of(p: dict, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Seeded initial weights and accumulators: the accumulator extremes, the refractory value,
    and values that leak onto ``threshold - 1 .. threshold + 1`` (so one vote decides whether
    the weight fires: an off-by-one in threshold or leak shows)."""
    cfg, rng = config_of(p), random.Random(seed)
    lo, hi, s = cfg.acc_min, cfg.acc_max, cfg.leak_shift
    near = [a for a in range(lo, hi + 1)
            if abs(a - (a >> s if s else 0) - cfg.threshold) <= 1] or [cfg.threshold]
    w = [[rng.randrange(2) for _ in range(p["lanes"])] for _ in range(p["rows"])]
    acc = [[rng.choice([lo, hi, 0, cfg.refractory, rng.choice(near), rng.choice(near),
                        rng.randint(lo, hi)])
            for _ in range(p["lanes"])] for _ in range(p["rows"])]
    return w, acc


class ThresholdPlusOne(FlipUnit):
    """Fault injection for the mutation checks: fires on ``a2 >= threshold + 1``."""

    def _threshold(self):
        return self.config.threshold + 1


class LeakOffByOne(FlipUnit):
    """Fault injection: leaks with shift ``leak_shift + 1`` (1 where that reaches A)."""

    def _leak_shift(self):
        leak = self.config.leak_shift
        return leak + 1 if leak + 1 < self.acc_width else 1


class NoForwarding(FlipUnit):
    """Fault injection: the pipeline reads are not transparent for the write-back (a row read
    while it is written returns the old data: R = 1 breaks at full throughput)."""

    def _forwarding(self, write_port):
        return ()


def make(p: dict, cls: type[FlipUnit] = FlipUnit) -> FlipUnit:
    """The unit (``cls``: :class:`FlipUnit` or a broken subclass) for params ``p``, its memories
    initialised to ``state_of(p, p["seed"])``."""
    w, acc = state_of(p, p["seed"])
    return cls(config_of(p), rows=p["rows"], lanes=p["lanes"], init_w=w, init_acc=acc)


async def flip_bench(sim, p: dict, src: str, sink: str, steps: int = 6, seed: int = 0,
                     load: bool = False, prefix: str = "", tail: int = 8) -> int:
    """``steps`` (at least ``120 / (R * K)``) golden steps through the unit built by
    :func:`make` from ``p``.

    ``load``: first write fresh random memories through ``dbg_wr`` (else the bench expects the
    memories' initial contents, so it must run first after reset on a fresh unit, or follow a
    ``load`` run). Returns the cycle count of the streaming phase.
    """
    cfg, rows, k = config_of(p), p["rows"], p["lanes"]
    rng = random.Random(seed * 1009 + p["seed"])
    w0, acc0 = state_of(p, seed + 1000 if load else p["seed"])
    steps = max(steps, -(-120 // (rows * k)))  # at least 120 weight updates
    # votes: per row a persistent bias, so accumulators climb to the threshold, fire, and run
    # into both saturation limits
    votes, bias = [], [rng.choice([-1, 1]) for _ in range(rows)]
    for _ in range(steps):
        step = []
        for r in range(rows):
            if rng.random() < 0.2:
                bias[r] = rng.choice([-1, 0, 1, 1])
            step.append([rng.choice([bias[r]] * 3 + [-1, 0, 1]) for _ in range(k)])
        votes.append(step)

    # golden: ``steps`` flip_steps over the [R, K] tensors; LFSR states after each row
    w = torch.tensor(w0, dtype=torch.uint8)
    acc = torch.tensor(acc0, dtype=torch.int32)
    glfsr = GoldenLFSR(cfg.lfsr) if cfg.uses_lfsr else None
    fired = []
    for s in range(steps):
        w, acc, f = gf.flip_step(cfg, w, acc, torch.tensor(votes[s], dtype=torch.int64), glfsr)
        fired += [sum(int(b) << i for i, b in enumerate(row)) for row in f.tolist()]
    lstate = [cfg.lfsr.seed]
    if cfg.uses_lfsr:
        g = GoldenLFSR(cfg.lfsr)
        for _ in range(steps * rows):
            g.states(k)
            lstate.append(g.state)
    else:
        lstate *= steps * rows + 1

    il, ol = FlipUnit.i_layout(k), FlipUnit.o_layout(rows, k)
    rl = FlipUnit.row_layout(cfg, k)
    items = [il.const({"votes": votes[s][r]}).as_bits() for s in range(steps) for r in range(rows)]
    pre = prefix
    tb = TB(sim, prefix)
    await tb.reset()
    idle = {"dbg_wr__en": 0, "dbg_rd__en": 1, "dbg_rd__addr": 0,
            "i_stream__valid": 0, "o_stream__ready": 0}

    if load:  # write every row through the debug port
        for r in range(rows):
            bits = sum(b << i for i, b in enumerate(w0[r]))
            await tb.cycle({**idle, "dbg_wr__en": 1, "dbg_wr__addr": r,
                            "dbg_wr__data": rl.const({"w": bits, "acc": acc0[r]}).as_bits()}, [])

    def check(i, raw):
        got = data.Const(ol, raw)
        s, r = divmod(i, rows)
        assert (got.row, got.fired) == (r, fired[i]), (
            f"step {s} row {r}: (row, fired) {(got.row, got.fired):} != golden {(r, fired[i])}"
        )

    state = {"accepted": 0, "stalls": 0}

    def on_cycle(inputs, out):
        n = state["accepted"]
        assert out[f"{pre}lfsr_state"] == lstate[n], (
            f"after {n} rows: LFSR state {out[f'{pre}lfsr_state']:#x} != golden {lstate[n]:#x}"
        )
        if inputs[f"{pre}i_stream__valid"]:
            if out[f"{pre}i_stream__ready"]:
                state["accepted"] += 1
            else:
                state["stalls"] += 1

    tb.source("i_stream", items, src, il.size, seed)
    tb.sink("o_stream", sink, len(items), check, seed + 1)
    cycles = await tb.run(monitors=(f"{pre}lfsr_state", f"{pre}busy"), on_cycle=on_cycle,
                          extra_inputs={f"{pre}dbg_wr__en": 0}, tail=tail)
    if (src, sink) == ("full", "full"):  # one row per cycle, no bubbles
        assert state["stalls"] == 0, f"{state['stalls']} stall cycles at full throughput"

    # read back both memories, row by row (one cycle read latency)
    got_w, got_acc = [], []
    for r in range(rows + 1):
        out = await tb.cycle({**idle, "dbg_rd__addr": min(r, rows - 1)},
                             ["dbg_rd__data", "busy"])
        assert out["busy"] == 0, "busy after every row was written back"
        if r:
            row = data.Const(rl, out["dbg_rd__data"])
            got_w.append([(row.w >> i) & 1 for i in range(k)])
            got_acc.append(list(row.acc))
    assert got_w == w.tolist(), f"weights {got_w} != golden {w.tolist()}"
    assert got_acc == acc.tolist(), f"accumulators {got_acc} != golden {acc.tolist()}"
    return cycles


@cocotb.test()
async def matches_golden(dut):
    p = cocotb_params()
    sim = CocotbSim(dut)
    with golden_mutant(p.get("golden_mutant")):
        for name, ip in p["instances"].items():
            for i, (src, snk) in enumerate(PATTERNS):
                # the first run uses the memories' initial contents, later runs load them
                await flip_bench(sim, ip, src, snk, p.get("steps", 10), seed=i, load=i > 0,
                                 prefix=f"{name}__")


@cocotb.test()
async def broken_component(dut):
    p = cocotb_params()
    name, ip = p["mutant"]
    await flip_bench(CocotbSim(dut), ip, "random", "random", 10, load=True, prefix=f"{name}__")
