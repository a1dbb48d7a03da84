"""The built wheel is the whole tool: every sub-package, the kernel and harness sources.

The wheel is built from a copy of the source tree (so the checkout is left as it is), installed
without dependencies into a fresh virtual environment whose only view of the project's
environment is a ``.pth`` line naming its site-packages (a path line appends that folder; it
does not run the editable install's finder there), and the installed ``bitswarm`` command runs
from a folder outside the repository: ``selfcheck`` and a 4-image Verilator run.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from bitswarm.golden.model import save_model

from tests.hw.test_accel import _random_model

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("golden", "hw", "interop", "sim", "train")
HARNESS = ("harness.cpp", "harness_onchip.cpp", "harness_common.h", "_popcount.c")
_SKIP = (".venv", ".git", "sim_build", "out", "build", "runs", "*.egg-info", "__pycache__",
         "*.so", ".pytest_cache", ".hypothesis", ".ruff_cache", "*.vcd", "*.fst")


def _expected_packages() -> set[str]:
    found = {"bitswarm"}
    for top in SUBPACKAGES:
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO)
            found.add(".".join(("bitswarm", *rel.parts)))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*_SKIP))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp / "dist"), str(src)],
                       capture_output=True, text=True, timeout=300, cwd=tmp)
    assert r.returncode == 0, r.stderr
    (whl,) = (tmp / "dist").glob("bitswarm-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    pkgs = {n.rsplit("/", 1)[0].replace("/", ".") for n in names
            if n.endswith("/__init__.py")}
    assert pkgs == _expected_packages()
    assert "bitswarm.train.zoo" in pkgs
    assert "bitswarm.interop" in pkgs
    for f in HARNESS:
        assert f"bitswarm/sim/{f}" in names, f
    assert "bitswarm/golden/SPEC.md" in names
    assert "bitswarm/setup.py" not in names
    assert not [n for n in names if n.startswith(("bitswarm/tests/", "bitswarm/bench/"))]


@pytest.mark.verilator
def test_wheel_installs_and_runs(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                        "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the project's dependencies (torch, amaranth, verilator ...) without its editable bitswarm
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_project_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    work = tmp_path / "cwd"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["BITSWARM_BUILD_DIR"] = str(tmp_path / "builds")

    def run(*args, timeout=300):
        return subprocess.run(list(args), capture_output=True, text=True, cwd=work, env=env,
                              timeout=timeout)

    r = run(str(py), "-c", "import bitswarm, bitswarm.train.zoo.cli; print(bitswarm.__file__)")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(site), r.stdout
    exe = str(venv / "bin" / "bitswarm")
    r = run(exe, "--help")
    assert r.returncode == 0 and "zoo" in r.stdout, r.stderr
    r = run(exe, "selfcheck")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    save_model(_random_model([64, 16, 10], 1, 8, shape=(8, 8), seed=1), work / "m.bsm")
    r = run(exe, "sim", "m.bsm", "--backend", "verilator", "--dataset", "digits", "--limit", "4",
            "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["n"] == 4 and d["mismatches"] == 0 and d["backend"] == "verilator"
    assert any((tmp_path / "builds").iterdir())
    assert not (work / "sim_build").exists()
