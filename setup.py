"""Packages of ``bitswarm`` and its compiled popcount kernel ``bitswarm.sim._popcount`` (all
other metadata is in pyproject.toml).

The packages are discovered: ``bitswarm`` is the repository root (``package-dir`` in
pyproject.toml) and every folder with an ``__init__.py`` under :data:`SUBPACKAGES` is
``bitswarm.<folder>`` (``train/zoo`` -> ``bitswarm.train.zoo``). ``tests/`` and ``bench/`` do not
ship, nor does this file (it sits in the root package's folder).

The kernel runs on a pool of POSIX threads (no extra runtime). ``BITSWARM_THREADS=openmp`` in
the environment builds it with an OpenMP parallel region instead, when the compiler supports
``-fopenmp`` (measured: the pool degrades gracefully on a loaded machine, OpenMP's end-of-region
barrier does not; see bench/results/kernel.md). The extension is optional: where it cannot be compiled, the install still succeeds
and ``bitswarm.sim.popcount`` falls back to numpy (``np.bitwise_count``).
"""

from __future__ import annotations

import os
import tempfile

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

#: Top-level folders that are sub-packages of ``bitswarm``.
SUBPACKAGES = ("golden", "hw", "interop", "sim", "train")
PACKAGES = ["bitswarm"] + [
    f"bitswarm.{p}"
    for p in find_packages(os.path.dirname(os.path.abspath(__file__)),
                           include=[*SUBPACKAGES, *(f"{s}.*" for s in SUBPACKAGES)])
]

_OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_num_procs() > 0 ? 0 : 1; }\n"


def _compiler_has_openmp(compiler) -> bool:
    """Whether ``compiler`` compiles and links a program with ``-fopenmp``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(_OPENMP_PROBE)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=["-fopenmp"])
        except Exception:  # any compiler or linker failure means: no OpenMP
            return False
    return True


class BuildExt(build_ext):
    """``build_ext`` that picks POSIX threads (default) or OpenMP for the popcount kernel."""

    def build_extensions(self) -> None:
        want = os.environ.get("BITSWARM_THREADS", "pthreads")
        use_omp = want == "openmp" and _compiler_has_openmp(self.compiler)
        for ext in self.extensions:
            if use_omp:
                ext.define_macros.append(("BITSWARM_OPENMP", "1"))
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
            else:
                ext.extra_link_args.append("-pthread")
        super().build_extensions()


class BuildPy(build_py):
    """``build_py`` that leaves ``setup.py`` out of the root package ``bitswarm``."""

    def find_package_modules(self, package, package_dir):
        mods = super().find_package_modules(package, package_dir)
        return [m for m in mods if not (package == "bitswarm" and m[1] == "setup")]


setup(
    packages=PACKAGES,
    ext_modules=[
        Extension(
            "bitswarm.sim._popcount",
            ["sim/_popcount.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
)
