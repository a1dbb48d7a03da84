# amaranth: UnusedElaboratable=no
"""Board constraints, ``bitswarm bitstream`` and ``bitswarm run``.

- the raw constraint files in ``constraints/`` name the same pins as the amaranth-boards
  platforms the builds use;
- ``bitswarm run`` over a real pseudo-terminal against a device emulator (the golden model
  behind the byte protocol; a broken emulator must be reported as mismatches);
- bad input gives one error line and writes nothing;
- Arty: Verilog + XDC + Vivado Tcl; a small iCEBreaker bitstream in the default suite (~40 s
  here); the ULX3S one behind the ``synth`` marker.
"""

import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from bitswarm.cli import main
from bitswarm.golden import Model, ModelConfig
from bitswarm.golden.model import save_model
from bitswarm.hw.board import BOARDS
from bitswarm.sim.hostlink import LinkFormat

from .test_accel import _random_model

REPO = Path(__file__).resolve().parents[2]

#: top-level port -> (resource, number, subsignal) in the amaranth-boards platforms
PORTS = {
    "icebreaker": {"clk12": ("clk12", 0, None), "uart_rx": ("uart", 0, "rx"),
                   "uart_tx": ("uart", 0, "tx"), "led0": ("led", 0, None), "led1": ("led", 1, None)},
    "ulx3s": {"clk25": ("clk25", 0, None), "uart_rx": ("uart", 0, "rx"),
              "uart_tx": ("uart", 0, "tx"), "led0": ("led", 0, None), "led1": ("led", 1, None)},
    "arty": {"clk100": ("clk100", 0, None), "rst_n": ("rst", 0, None),
             "uart_rx": ("uart", 0, "rx"), "uart_tx": ("uart", 0, "tx"),
             "led0": ("led", 0, None), "led1": ("led", 1, None)},
}

PIN_RE = {
    "pcf": re.compile(r"^set_io\s+(?:-\S+\s+(?:yes\s+)?)*(\S+)\s+(\S+)", re.M),
    "lpf": re.compile(r'^LOCATE COMP "(\S+)" SITE "(\S+)";', re.M),
    "xdc": re.compile(r"PACKAGE_PIN (\S+).*get_ports \{ (\S+) \}", re.M),
}


def _platform_pin(platform, res, num, sub):
    r = platform.resources[(res, num)]
    ios = r.ios
    if sub is not None:
        ios = next(s for s in ios if getattr(s, "name", None) == sub).ios
    pins = next(p for p in ios if hasattr(p, "names"))
    assert len(pins.names) == 1
    return pins.names[0]


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_constraints_match_platform(board):
    spec = BOARDS[board]
    text = (REPO / "constraints" / spec.constraints).read_text()
    kind = spec.constraints.rsplit(".", 1)[1]
    pairs = PIN_RE[kind].findall(text)
    pins = {b: a for a, b in pairs} if kind == "xdc" else dict(pairs)
    assert set(pins) == set(PORTS[board])
    platform = spec.platform_class()()
    for port, (res, num, sub) in PORTS[board].items():
        assert pins[port] == _platform_pin(platform, res, num, sub), port
    clk = next(p for p in PORTS[board] if p.startswith("clk"))
    mhz = platform.resources[(clk, 0)].clock.frequency / 1e6
    assert mhz == spec.osc_hz / 1e6
    assert re.search(rf"{mhz:g}\b", text.split(clk, 2)[-1][:200] + text)  # a clock constraint


# -- bitswarm run over a pseudo-terminal -----------------------------------------------------
class _Emulator(threading.Thread):
    """The device end of the protocol on a pty master: golden replies (or corrupted ones)."""

    def __init__(self, fd, model, corrupt_every=0):
        super().__init__(daemon=True)
        self.fd, self.model, self.corrupt_every = fd, model, corrupt_every
        self.fmt = LinkFormat.for_model(model)
        self.frames = 0

    def run(self):
        buf, active = bytearray(), False
        try:
            while True:
                chunk = os.read(self.fd, 4096)
                if not chunk:
                    return
                for b in chunk:
                    if not active:
                        active = b == 0xA5
                        continue
                    buf.append(b)
                    if len(buf) == self.fmt.n_pixels:
                        self._reply(bytes(buf))
                        buf.clear()
                        active = False
        except OSError:
            return

    def _reply(self, pix):
        x = torch.tensor(list(pix), dtype=torch.uint8)[None]  # flat, as golden reads it (HWC)
        s = self.model.forward(x)[0].numpy()
        self.frames += 1
        if self.corrupt_every and self.frames % self.corrupt_every == 0:
            s = s.copy()
            s[0] += 1
        os.write(self.fd, self.fmt.reply_for(int(np.argmax(s)), s))


def _pty_run(tmp_path, capsys, corrupt_every, arch=None):
    import tty

    cfg = (ModelConfig.mlp([64, 16, 10], input_shape=(8, 8)) if arch is None
           else ModelConfig.from_arch(arch))
    model = Model.random(cfg, 3)
    save_model(model, tmp_path / "m.bsm")
    master, slave = os.openpty()
    tty.setraw(slave)
    emu = _Emulator(master, model, corrupt_every)
    emu.start()
    try:
        rc = main(["run", str(tmp_path / "m.bsm"), "--port", os.ttyname(slave), "--limit", "12",
                   "--json"])
    finally:
        os.close(slave)
        os.close(master)
    return rc, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("arch", [None, "1x8x8-c4k3p1-mp2-10"], ids=["mlp", "cnn"])
def test_run_over_pty(tmp_path, capsys, arch):
    rc, out = _pty_run(tmp_path, capsys, 0, arch)
    assert rc == 0 and out["n"] == 12 and out["mismatches"] == 0
    assert 0 <= out["accuracy"] <= 1


def test_run_over_pty_reports_mismatches(tmp_path, capsys):
    rc, out = _pty_run(tmp_path, capsys, 4)  # every 4th reply corrupted (resync zeros: no frame)
    assert rc == 1 and out["mismatches"] == 3 and out["mismatched_images"] == [3, 7, 11]


def test_run_bad_port(tmp_path, capsys):
    save_model(_random_model([64, 8, 10], 1, shape=(8, 8)), tmp_path / "m.bsm")
    rc = main(["run", str(tmp_path / "m.bsm"), "--port", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"bitswarm: error: cannot open {tmp_path}")


# -- bitswarm bitstream --------------------------------------------------------------------------
def test_bitstream_bad_input_writes_nothing(tmp_path, capsys):
    m = _random_model([16, 8, 3], 1)
    save_model(m, tmp_path / "m.bsm")
    out = tmp_path / "o"
    for argv, msg in [
        (["--board", "icebreaker", "--clock-mhz", "1200"], "the iCE40 PLL cannot make 1200 MHz"),
        (["--board", "icebreaker", "--baud", "12000000"], "12000000 baud needs at least 4 cycles"),
        (["--board", "arty", "--clock-mhz", "50"], "arty: only the 100 MHz board clock"),
        (["--board", "ulx3s", "--pe", "0"], "--pe must be >= 1, not 0"),
    ]:
        rc = main(["bitstream", str(tmp_path / "m.bsm"), "-o", str(out), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and msg in err[0], err
    rc = main(["bitstream", str(tmp_path / "missing.bsm"), "--board", "ulx3s", "-o", str(out)])
    assert rc == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bsm"]


def test_bitstream_arty_writes_vivado_sources(tmp_path, capsys):
    m = _random_model([16, 8, 3], 1)
    save_model(m, tmp_path / "m.bsm")
    rc = main(["bitstream", str(tmp_path / "m.bsm"), "--board", "arty", "-o", str(tmp_path / "a"),
               "--json"])
    rec = json.loads(capsys.readouterr().out)
    assert rc == 0 and rec["bitstream"] is None and "Vivado was not run" in rec["note"]
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert {"bitswarm_board.v", "bitswarm_board.xdc", "bitswarm_board.tcl"} <= files
    xdc = (tmp_path / "a" / "bitswarm_board.xdc").read_text()
    for pin in ("E3", "A9", "D10", "H5", "J5"):
        assert pin in xdc
    assert rec["clock_mhz"] == 100 and rec["images_per_s"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # the folder now holds a build: a second build into it is refused unless --overwrite
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    rc = main(["bitstream", str(tmp_path / "m.bsm"), "--board", "arty", "-o", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "already holds files; pass --overwrite" in err[0]
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before
    assert main(["bitstream", str(tmp_path / "m.bsm"), "--board", "arty", "-o",
                 str(tmp_path / "a"), "--overwrite"]) == 0


def _bitstream(tmp_path, capsys, model_path, board, *extra):
    out = tmp_path / board
    rc = main(["bitstream", str(model_path), "--board", board, "-o", str(out), "--json", *extra])
    cap = capsys.readouterr()
    rec = json.loads(cap.out)
    for what in ("synthesis", "place and route", "packing"):  # one progress line per step
        assert re.search(rf"^bitswarm: {what} \(yowasp-\S+\)\.\.\. done in \d+\.\d s$", cap.err,
                         re.M), cap.err
    log = (out / "build.log").read_text()  # the tools' own output, in order
    assert log.index("Yosys") < log.index("nextpnr") < log.index("### packing")
    assert rc == (0 if rec["timing_met"] else 1)
    assert Path(rec["bitstream"]).stat().st_size > 1000
    for k in ("luts", "ffs", "brams", "fmax_mhz", "clock_mhz", "images_per_s"):
        assert rec[k] > 0, k
    assert json.loads((out / "bitswarm_board.json").read_text())["luts"] == rec["luts"]
    return rec


def test_bitstream_icebreaker_small(tmp_path, capsys):
    """No fold flags: the optimizer's fold; the PLL's 36 MHz core clock; the resource estimate
    within 20 % of the post-place-and-route LUTs; the fold file beside the bitstream."""
    m = _random_model([64, 32, 10], 1, shape=(8, 8))
    save_model(m, tmp_path / "m.bsm")
    rec = _bitstream(tmp_path, capsys, tmp_path / "m.bsm", "icebreaker")
    assert rec["timing_met"] and rec["clock_mhz"] == 36 and rec["pll"]["f_out"] == 36e6
    assert abs(rec["estimate"]["luts"] - rec["luts"]) <= 0.2 * rec["luts"], rec
    assert rec["interval_cycles"] > 0 and rec["latency_cycles"] >= rec["interval_cycles"]
    assert rec["images_per_s"] == round(36e6 / rec["interval_cycles"], 1)
    fold = json.loads((tmp_path / "icebreaker" / "bitswarm_board.fold.json").read_text())
    assert fold == rec["fold"] and fold["format"] == "bitswarm-fold"


@pytest.mark.synth
def test_bitstream_ulx3s_small(tmp_path, capsys):
    m = _random_model([64, 32, 10], 1, shape=(8, 8))
    save_model(m, tmp_path / "m.bsm")
    rec = _bitstream(tmp_path, capsys, tmp_path / "m.bsm", "ulx3s")
    assert rec["timing_met"] and rec["pll"]["f_out"] == rec["clock_mhz"] * 1e6


def test_bitstream_timeout_stops_the_tools(tmp_path):
    """A build over its time limit is one ToolError; the tools it started are stopped and the
    output folder is not created."""
    from bitswarm.hw.bitstream import ToolError, build_bitstream

    m = _random_model([16, 8, 4], 1)
    out = tmp_path / "b"
    with pytest.raises(ToolError, match=r"icebreaker build timed out after 0\.5 s"):
        build_bitstream(m, "icebreaker", out, timeout_s=0.5)
    assert not out.exists()

    def left():  # processes still working in the build folder
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if str(tmp_path) in os.readlink(proc / "cwd"):
                    found.append(proc.name)
            except OSError:
                continue
        return found

    for _ in range(50):  # SIGKILL is delivered asynchronously: allow the kernel a moment
        if not left():
            break
        time.sleep(0.1)
    assert not left()


def test_build_steps_log_and_progress(tmp_path, capsys):
    """Each step: one progress line with its time, its output appended to build.log; a failing
    step stops the build with a ToolError naming it."""
    from bitswarm.hw.bitstream import ToolError, _run_steps

    log = tmp_path / "build.log"
    steps = [("synthesis (fake)", ["sh", "-c", "echo synthesized"]),
             ("packing (fake)", ["sh", "-c", "echo packed >&2"])]
    _run_steps(steps, tmp_path, dict(os.environ), log, "icebreaker", 60)
    err = capsys.readouterr().err.splitlines()
    assert [re.sub(r"\d+\.\d", "T", ln) for ln in err] == [
        "bitswarm: synthesis (fake)... done in T s", "bitswarm: packing (fake)... done in T s"]
    text = log.read_text()
    assert text.index("synthesized") < text.index("### packing (fake)") < text.index("packed")
    bad = [("place and route (fake)", ["sh", "-c", "echo 'ERROR: no fit'; exit 3"]), *steps]
    with pytest.raises(ToolError, match=r"^icebreaker build failed in place and route \(fake\) \(exit 3\)$"):
        _run_steps(bad, tmp_path, dict(os.environ), log, "icebreaker", 60)
    assert "failed after" in capsys.readouterr().err
    assert "ERROR: no fit" in log.read_text() and "synthesized" not in log.read_text()


def test_fold_fill(tmp_path, capsys):
    """``bitswarm fold --board B --fill F`` plans for ``F`` of the part's LUTs (as
    ``board_fold(cfg, B, fill=F)``); ``--fill`` without ``--board`` is refused in one line."""
    from bitswarm.hw.plan import load_fold
    from bitswarm.hw.resources import board_fold

    m = Model.random(ModelConfig.from_arch("1x8x8-c8k3p1-mp2-c16k3p1-mp2-10"), 2)
    save_model(m, tmp_path / "m.bsm")
    rc = main(["fold", str(tmp_path / "m.bsm"), "--board", "icebreaker", "--fill", "0.6",
               "-o", str(tmp_path / "f.json"), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["budget"]["luts"] == int(5280 * 0.6)
    assert load_fold(tmp_path / "f.json", m.cfg) == board_fold(m.cfg, "icebreaker", fill=0.6)
    rc = main(["fold", str(tmp_path / "m.bsm"), "--luts", "900", "--brams", "4", "--fill", "0.6",
               "-o", str(tmp_path / "g.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--fill needs --board" in err[0]


def test_build_bitstream_bad_placer(tmp_path):
    from bitswarm.golden import ConfigError
    from bitswarm.hw.bitstream import build_bitstream

    with pytest.raises(ConfigError, match="placer must be 'heap' or 'sa', not 'x'"):
        build_bitstream(_random_model([16, 8, 3], 1), "icebreaker", tmp_path / "o", placer="x")
    assert not any(tmp_path.iterdir())
