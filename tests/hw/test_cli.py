"""``bitswarm verilog --component NAME [--param KEY=VALUE ...] -o DIR``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from bitswarm.cli import main
from bitswarm.hw import cli as hwcli


def _run(capsys, *argv):
    rc = main(["verilog", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_verilog_mac_array_defaults(tmp_path, capsys):
    rc, out, err = _run(capsys, "--component", "mac-array", "-o", str(tmp_path))
    assert rc == 0, err
    v = (tmp_path / "mac_array.v").read_text()
    assert "module mac_array(" in v and "i_stream__payload" in v and "o_stream__ready" in v
    info = json.loads((tmp_path / "mac_array.json").read_text())
    assert info["component"] == "mac-array" and info["module"] == "mac_array"
    assert info["params"] == {"n_in": 64, "n_out": 16, "swarm": 1, "input_bits": 1,
                              "weights": "binary", "pe": 4, "simd": 16, "pipeline": -1, "mem": "auto",
                              "seed": 0}
    assert info["resolved"] == {"pipeline": 3}  # fully pipelined: 16 bits -> 3 tree levels
    assert info["ports"]["i_stream__payload"] == {"dir": "In", "width": 16}
    assert info["cycles_per_vector"] == 16 and info["latency"] == 6
    assert f"wrote {tmp_path / 'mac_array.v'}" in out


def test_verilog_mac_array_params(tmp_path, capsys):
    rc, _, err = _run(capsys, "--component", "mac-array", "--param", "n_in=10",
                      "--param", "input-bits=8", "--param", "simd=3", "--param", "pe=0x2",
                      "--param", "weights=ternary", "--param", "pipeline=0", "-o", str(tmp_path))
    assert rc == 0, err
    info = json.loads((tmp_path / "mac_array.json").read_text())
    assert info["params"]["input_bits"] == 8 and info["params"]["pe"] == 2
    assert info["params"]["weights"] == "ternary" and "resolved" not in info
    assert info["ports"]["i_stream__payload"]["width"] == 24
    assert info["cycles_per_vector"] == 8 * 8 * 4  # NF=8 (M=16, PE=2), B=8, SF=4


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["--component", "nope"], "unknown component 'nope'; expected one of: mac-array, "),
        (["--component", "mac-array", "--param", "bogus=1"],
         "unknown parameter 'bogus' for mac-array; expected one of: n_in, n_out,"),
        (["--component", "mac-array", "--param", "simd"], "--param must be KEY=VALUE, not 'simd'"),
        (["--component", "mac-array", "--param", "simd=abc"],
         "parameter 'simd' of mac-array must be an integer, not 'abc'"),
        (["--component", "mac-array", "--param", "simd=1", "--param", "simd=2"],
         "parameter 'simd' given twice"),
        (["--component", "mac-array", "--param", "simd=0"],
         "mac-array: simd must be an integer in 1..64, not 0"),
        (["--component", "mac-array", "--param", "swarm=3"],
         "mac-array: layer.swarm must be one of (1, 2, 4, 8, 16, 32), not 3"),
        (["--component", "mac-array", "--param", "weights=quaternary"],
         "mac-array: layer.weights must be one of"),
        (["--component", "mac-array", "--param", "pipeline=9"],
         "mac-array: pipeline must be in 0..3"),
        (["model.bsm"], "model.bsm: no such model file"),
        (["model.bsm", "--param", "pe=2"], "--param applies to --component"),
        (["model.bsm", "--component", "lfsr"], "give either a MODEL file or --component"),
        ([], "give --component NAME (one of: mac-array, threshold, sliding-window, pool, argmax, lfsr, "
         "flip-unit, onchip-trainer)"),
    ],
)
def test_verilog_errors(tmp_path, capsys, argv, msg):
    out_dir = tmp_path / "out"
    rc, out, err = _run(capsys, *argv, "-o", str(out_dir))
    assert rc == 2
    assert err.startswith("bitswarm: error: ") and err.count("\n") == 1, err
    assert msg in err
    assert not out_dir.exists()  # nothing written


def test_verilog_missing_module(tmp_path, capsys, monkeypatch):
    """A component whose module has not landed yet: a clear one-line error."""
    monkeypatch.setitem(hwcli.COMPONENTS, "future", "bitswarm.hw._no_such_module")
    rc, _, err = _run(capsys, "--component", "future", "-o", str(tmp_path / "o"))
    assert rc == 2
    assert err == ("bitswarm: error: component 'future' is not available yet "
                   "(module bitswarm.hw._no_such_module does not exist)\n")
    assert not (tmp_path / "o").exists()


def test_parse_params_types():
    def build(width: int = 4, mode: str = "a", flag: bool = False):
        raise AssertionError("not called")

    assert hwcli.parse_params("x", build, ["width=0b101", "mode=zz", "flag=true"]) == {
        "width": 5, "mode": "zz", "flag": True}
    assert hwcli.parse_params("x", build, []) == {"width": 4, "mode": "a", "flag": False}


def test_verilog_subprocess_no_traceback(tmp_path):
    """The installed entry point: one line on stderr, exit status 2, no traceback."""
    r = subprocess.run([sys.executable, "-m", "bitswarm", "verilog", "--component", "mac-array",
                        "--param", "pe=99", "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr == "bitswarm: error: mac-array: pe must be an integer in 1..16, not 99\n"
    assert "Traceback" not in r.stdout + r.stderr


def test_verilog_help_lists_components(capsys):
    with pytest.raises(SystemExit):
        main(["verilog", "--help"])
    out = capsys.readouterr().out
    assert "--component NAME" in out and "MODEL" in out
    for name in hwcli.COMPONENTS:
        assert name in out


def test_verilog_model_writes_accelerator_and_report(tmp_path, capsys):
    import json

    from bitswarm.golden import Model, ModelConfig, save_model
    from bitswarm.hw.plan import AccelPlan

    cfg = ModelConfig.mlp([16, 12, 4], swarm=2)
    save_model(Model.random(cfg, 0), tmp_path / "m.bsm")
    out_dir = tmp_path / "v"
    rc, out, err = _run(capsys, str(tmp_path / "m.bsm"), "--pe", "3", "--simd", "8", "--json",
                        "-o", str(out_dir))
    assert rc == 0, err
    rep = json.loads(out)
    plan = AccelPlan.auto(cfg, pe=3, simd=8)
    assert rep["cycles_per_inference"] == plan.latency_cycles()
    assert rep["weight_memory_bits"] == plan.weight_memory_bits()
    # layer 1's SIMD becomes a multiple of layer 0's PE; the output layer's PE is at most B*SF
    assert [(r["pe"], r["simd"]) for r in rep["layers"]] == [(3, 8), (2, 6)]
    assert "module bitswarm_accel(" in (out_dir / "bitswarm_accel.v").read_text()
    assert json.loads((out_dir / "bitswarm_accel.json").read_text()) == rep
    assert rep["interval_cycles"] == plan.interval_cycles()
    assert rep["latency_cycles"] == plan.latency_cycles()
    assert set(rep["estimate"]) == {"ice40", "ecp5"}
    ports = rep["ports"]
    assert ports["i_stream__payload"]["width"] == 8 * 8
    assert "[8k+7:8k]" in ports["i_stream__payload"]["doc"]
    assert "2 cycles" in ports["rst"]["doc"]
    # the report's fold file reproduces the plan through --fold
    fold = out_dir / "bitswarm_accel.fold.json"
    assert json.loads(fold.read_text()) == plan.to_dict() == rep["fold"]
    rc, out, err = _run(capsys, str(tmp_path / "m.bsm"), "--fold", str(fold), "--json",
                        "-o", str(tmp_path / "v2"))
    assert rc == 0, err
    assert json.loads(out)["fold"] == plan.to_dict()
    rc, out, err = _run(capsys, str(tmp_path / "m.bsm"), "--fold", str(fold), "--pe", "2",
                        "-o", str(tmp_path / "v3"))
    assert rc == 2 and "give either --fold or --pe" in err
    rc, out, err = _run(capsys, str(tmp_path / "m.bsm"), "--fold", str(tmp_path / "no.json"),
                        "-o", str(tmp_path / "v3"))
    assert rc == 2 and "does not exist" in err


def test_verilog_never_replaces_without_overwrite(tmp_path, capsys):
    import os

    from bitswarm.golden import Model, ModelConfig, save_model

    save_model(Model.random(ModelConfig.mlp([16, 12, 4]), 0), tmp_path / "m.bsm")
    v = tmp_path / "v"
    old = os.umask(0o022)
    try:
        assert _run(capsys, str(tmp_path / "m.bsm"), "-o", str(v))[0] == 0
    finally:
        os.umask(old)
    before = {p.name: p.read_bytes() for p in v.iterdir()}
    assert all((p.stat().st_mode & 0o777) == 0o644 for p in v.iterdir())  # umask 022, not 0600
    (v / "bitswarm_accel.v").write_text("// my edits")
    rc, _, err = _run(capsys, str(tmp_path / "m.bsm"), "--pe", "2", "-o", str(v))
    assert rc == 2 and err.count("\n") == 1 and "bitswarm_accel.v exists; pass --overwrite" in err
    assert (v / "bitswarm_accel.v").read_text() == "// my edits"
    assert _run(capsys, str(tmp_path / "m.bsm"), "-o", str(v), "--overwrite")[0] == 0
    assert {p.name: p.read_bytes() for p in v.iterdir()} == before
    # -o naming an existing file (once a traceback), and a component into a used folder
    rc, _, err = _run(capsys, str(tmp_path / "m.bsm"), "-o", str(tmp_path / "m.bsm"))
    assert rc == 2 and err.count("\n") == 1 and "is a file, not a folder" in err
    assert _run(capsys, "--component", "lfsr", "-o", str(v))[0] == 0
    rc, _, err = _run(capsys, "--component", "lfsr", "-o", str(v))
    assert rc == 2 and "lfsr.v exists; pass --overwrite" in err


def test_verilog_model_asic(tmp_path, capsys):
    import json

    from bitswarm.golden import Model, ModelConfig, save_model

    save_model(Model.random(ModelConfig.mlp([8, 6, 3]), 0), tmp_path / "m.bsm")
    rc, out, err = _run(capsys, str(tmp_path / "m.bsm"), "--asic", "--clock-mhz", "250",
                        "--json", "-o", str(tmp_path / "a"))
    assert rc == 0, err
    rep = json.loads(out)["asic"]
    assert rep["cells"] > 0 and rep["flip_flops"] > 0 and rep["transistors_estimate"] > 0
    assert rep["longest_path_cells"] >= 1 and "estimate" in rep["label"]
    sdc = (tmp_path / "a" / "bitswarm_accel.sdc").read_text()
    assert "-period 4" in sdc and "get_ports clk" in sdc
    assert (tmp_path / "a" / "bitswarm_accel_asic.md").exists()
    rc, out, err = _run(capsys, str(tmp_path / "m.bsm"), "--asic", "--clock-mhz", "0",
                        "-o", str(tmp_path / "b"))
    assert rc == 2 and "--clock-mhz must be a positive number" in err


def test_verilog_and_fold_conv_model(tmp_path, capsys):
    """``bitswarm fold CNN --board ulx3s`` writes a fold ``bitswarm verilog CNN --fold`` builds;
    the report carries each conv layer's geometry, vectors and line-buffer rows."""
    import json

    from bitswarm.cli import main
    from bitswarm.golden import Model, ModelConfig, save_model
    from bitswarm.hw.plan import AccelPlan, load_fold

    cfg = ModelConfig.from_arch("1x8x8-c4k3p1-mp2-c8k3s2-10")
    save_model(Model.random(cfg, 0), tmp_path / "m.bsm")
    fold = tmp_path / "f.json"
    assert main(["fold", str(tmp_path / "m.bsm"), "--board", "ulx3s", "-o", str(fold),
                 "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    plan = load_fold(fold, cfg)
    assert rep["interval_cycles"] == plan.interval_cycles() and rep["latency_cycles"] > 0
    assert json.loads(fold.read_text())["arch_string"] == "1x8x8-c4k3p1-mp2-c8k3s2-10"
    rc, out, err = _run(capsys, str(tmp_path / "m.bsm"), "--fold", str(fold), "--json",
                        "-o", str(tmp_path / "v"))
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["fold"] == plan.to_dict() and rep["latency_cycles"] == plan.latency_cycles()
    l0, l1 = rep["layers"][:2]
    assert l0["conv"]["pad"] == 1 and l0["vectors"] == 64 and l0["line_rows"] == 4
    assert l1["conv"]["stride"] == 2 and l1["vectors"] == 1
    assert "HWC" in rep["ports"]["i_stream__payload"]["doc"]
    text = (tmp_path / "v" / "bitswarm_accel.v").read_text()
    assert "module bitswarm_accel(" in text and "window0" in text and "pool0" in text
    # a fold file of another geometry with the same activation sizes is refused
    other = ModelConfig.from_arch("1x8x8-c4k5p2-mp2-c8k3s2-10")
    assert other.arch == cfg.arch
    save_model(Model.random(other, 0), tmp_path / "o.bsm")
    rc, _, err = _run(capsys, str(tmp_path / "o.bsm"), "--fold", str(fold), "-o", str(tmp_path / "w"))
    assert rc == 2 and "the fold file is for architecture 1x8x8-c4k3p1-mp2-c8k3s2-10" in err
    assert AccelPlan.from_dict(cfg, plan.to_dict()) == plan
