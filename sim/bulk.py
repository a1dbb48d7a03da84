"""Bulk cycle-accurate runs of the accelerator on Verilator through a C++ harness.

cocotb touching every cycle runs at ~50 k cycles/s; whole test sets instead go through
``sim/harness.cpp``, which moves whole transactions in C++ (millions of cycles per second).
Each build is cached under its own folder, keyed by a hash of the Verilog and the harness.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bitswarm.golden.errors import BitswarmError

from .verilator import BUILD_ROOT, setup_verilator_env, to_verilog

__all__ = ["BulkResult", "VerilatorAccelerator"]

_HARNESS = Path(__file__).with_name("harness.cpp")


@dataclass
class BulkResult:
    """Outputs of a bulk run: classes ``[n]``, scores ``[n, C]`` (int64), per-image cycle
    stamps of the first input handshake and of the output handshake, and run totals."""

    classes: np.ndarray
    scores: np.ndarray
    first_in: np.ndarray
    out_cycle: np.ndarray
    cycles: int
    seconds: float

    @property
    def latencies(self) -> np.ndarray:
        return self.out_cycle - self.first_in

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.seconds if self.seconds > 0 else float("inf")


class VerilatorAccelerator:
    """Build the accelerator's Verilog with the bulk harness and run images through it.

    Parameters
    ----------
    accel : bitswarm.hw.accel.Accelerator
    build_root : folder for cached builds (default ``sim_build/``).
    """

    def __init__(self, accel, build_root: Path | None = None, verbose: bool = False):
        self.accel = accel
        self.plan = accel.plan
        self.verilog = to_verilog(accel, "top")
        lay = accel.model.cfg.layers
        self.in_bytes = self.plan.folds[0].simd  # one byte per pixel lane
        self.cls_bits = max(1, (lay[-1].n_out - 1).bit_length())
        self.score_bits = lay[-1].z_width
        self.n_classes = lay[-1].n_out
        self.out_bits = self.cls_bits + self.score_bits * self.n_classes
        self.out_bytes = (self.out_bits + 7) // 8
        key = hashlib.sha256(self.verilog.encode() + _HARNESS.read_bytes()).hexdigest()[:16]
        self.build_dir = Path(build_root or BUILD_ROOT) / f"bulk_{key}"
        self.binary = self.build_dir / "Vtop"
        self.verbose = verbose
        self.build_seconds = 0.0

    def build(self) -> Path:
        if self.binary.exists():
            return self.binary
        setup_verilator_env()
        self.build_dir.mkdir(parents=True, exist_ok=True)
        (self.build_dir / "top.v").write_text(self.verilog)
        cmd = [
            "verilator", "--cc", "--exe", "--build", "-j", str(os.cpu_count() or 2),
            "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert", "-Wno-fatal",
            "--top-module", "top", "-Mdir", str(self.build_dir / "obj"),
            "-CFLAGS", f"-O2 -DIN_BYTES={self.in_bytes} -DOUT_BYTES={self.out_bytes}",
            "-o", str(self.binary), str(self.build_dir / "top.v"), str(_HARNESS),
        ]
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        self.build_seconds = time.monotonic() - t0
        (self.build_dir / "build.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0 or not self.binary.exists():
            raise BitswarmError(f"Verilator build failed; see {self.build_dir / 'build.log'}")
        return self.binary

    def slices(self, images: np.ndarray) -> np.ndarray:
        """Raw uint8 images ``[n, ...]`` -> harness input records ``[n, SF, SIMD]`` bytes."""
        x = np.asarray(images, dtype=np.uint8).reshape(len(images), -1)
        simd, sf = self.plan.folds[0].simd, self.plan.input_slices()
        out = np.zeros((len(x), sf * simd), dtype=np.uint8)
        out[:, : x.shape[1]] = x
        return out.reshape(len(x), sf, simd)

    def run(self, images: np.ndarray, *, stream: bool = False, idle_pct: int = 0,
            bp_pct: int = 0, seed: int = 1) -> BulkResult:
        """Run ``images`` (raw uint8 ``[n, *input_shape]``); isolated or streamed."""
        self.build()
        n = len(images)
        if n == 0:
            raise BitswarmError("no images to run")
        sl = self.slices(images)
        budget = (self.plan.latency_cycles() + 16) * n * (1 + 4 * max(idle_pct, bp_pct)) + 10_000
        with tempfile.TemporaryDirectory() as td:
            fin, fout = Path(td) / "in.bin", Path(td) / "out.bin"
            fin.write_bytes(sl.tobytes())
            r = subprocess.run(
                [str(self.binary), str(fin), str(fout), str(n), str(sl.shape[1]),
                 "1" if stream else "0", str(idle_pct), str(bp_pct), str(seed), str(budget)],
                capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise BitswarmError(f"Verilator run failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
            raw = np.frombuffer(fout.read_bytes(), dtype=np.uint8).reshape(n, self.out_bytes + 16)
        stats = dict(kv.split("=") for kv in r.stdout.split())
        payload = raw[:, : self.out_bytes]
        ints = [int.from_bytes(row.tobytes(), "little") for row in payload]
        cls = np.array([v & ((1 << self.cls_bits) - 1) for v in ints], dtype=np.int64)
        w = self.score_bits
        scores = np.zeros((n, self.n_classes), dtype=np.int64)
        for i, v in enumerate(ints):
            v >>= self.cls_bits
            for j in range(self.n_classes):
                s = (v >> (j * w)) & ((1 << w) - 1)
                scores[i, j] = s - (1 << w) if s >> (w - 1) else s
        stamps = raw[:, self.out_bytes:].copy().view("<u8").reshape(n, 2).astype(np.int64)
        return BulkResult(cls, scores, stamps[:, 0], stamps[:, 1], int(stats["cycles"]), float(stats["seconds"]))
