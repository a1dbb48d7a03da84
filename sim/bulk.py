"""Bulk cycle-accurate runs of the accelerator on Verilator through a C++ harness.

cocotb touching every cycle runs at ~50 k cycles/s; whole test sets instead go through
``sim/harness.cpp``, which moves whole transactions in C++ (millions of cycles per second).
Each build is cached under its own folder of the build root (:func:`~bitswarm.sim.verilator.default_build_root`),
keyed by a hash of the Verilog, the harness and the waveform format; a new build prints one
progress line to stderr, keeps Verilator's and the compiler's output in ``build.log`` and prunes
the cache to its bound (:func:`~bitswarm.sim.verilator.prune_builds`). Builds with waveforms
(``waves="vcd"`` or ``"fst"``, Verilator's ``--trace`` / ``--trace-fst``) dump every signal
of the runs they make to a file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bitswarm.golden.errors import BitswarmError, ConfigError
from bitswarm.progress import step

from .verilator import default_build_root, mark_build, prune_builds, setup_verilator_env, to_verilog

__all__ = ["BulkResult", "VerilatorAccelerator", "VerilatorTrainer", "TrainRun", "build_harness",
           "WAVE_FORMATS"]

#: Waveform formats of :class:`VerilatorAccelerator` -> (Verilator flag, harness define).
WAVE_FORMATS = {"vcd": ("--trace", "BITSWARM_WAVES_VCD"), "fst": ("--trace-fst", "BITSWARM_WAVES_FST")}

_HARNESS = Path(__file__).with_name("harness.cpp")
_HARNESS_ONCHIP = Path(__file__).with_name("harness_onchip.cpp")
_COMMON = Path(__file__).with_name("harness_common.h")


def _key(verilog: str, harness: Path, waves: str | None = None) -> str:
    """Cache key of a build: the Verilog, the harness sources and the waveform format."""
    h = hashlib.sha256(verilog.encode() + harness.read_bytes() + _COMMON.read_bytes()
                       + (f"waves={waves}".encode() if waves else b""))
    return h.hexdigest()[:16]


def _has_lz4() -> bool:
    """Whether the C++ compiler finds ``lz4.h`` (Verilator's FST writer needs it)."""
    r = subprocess.run(["c++", "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                       capture_output=True, text=True, check=False)
    return r.returncode == 0


def build_harness(verilog: str, harness: Path, build_dir: Path, defines: dict[str, int], *,
                  waves: str | None = None, what: str = "Verilator model") -> float:
    """Build ``verilog`` (top module ``top``) with a C++ ``harness`` into ``build_dir/Vtop``;
    returns the build time in seconds. Prints a progress line to stderr, writes Verilator's and
    the compiler's output to ``build_dir/build.log``, drops the object files (the binary is all
    a cached build needs), stamps the folder and prunes the build root to its bound. ``waves``
    (``"vcd"`` / ``"fst"``) builds with signal tracing. Raises :class:`BitswarmError` naming
    the log."""
    if waves is not None and waves not in WAVE_FORMATS:
        raise ConfigError(f"waves must be one of {sorted(WAVE_FORMATS)} or None, not {waves!r}")
    if waves == "fst" and not _has_lz4():
        raise ConfigError("FST waveforms need the LZ4 headers (lz4.h; Debian: liblz4-dev), "
                          "which this machine lacks; write a .vcd file instead")
    setup_verilator_env()
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "top.v").write_text(verilog)
    defs = dict(defines)
    trace = []
    if waves:
        flag, define = WAVE_FORMATS[waves]
        trace = [flag]
        defs[define] = 1
    flags = " ".join(f"-D{k}={v}" for k, v in defs.items())
    cmd = [
        "verilator", "--cc", "--exe", "--build", "-j", str(os.cpu_count() or 2),
        "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert", "-Wno-fatal", *trace,
        "--top-module", "top", "-Mdir", str(build_dir / "obj"),
        "-CFLAGS", f"-O2 -I{harness.parent} {flags}",
        "-o", str(build_dir / "Vtop"), str(build_dir / "top.v"), str(harness),
    ]
    log = build_dir / "build.log"
    t0 = time.monotonic()
    with step(f"building {what} in {build_dir}", hint="once per design, ~15-60 s"):
        with open(log, "w") as fh:
            fh.write(" ".join(cmd) + "\n")
            fh.flush()
            r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
        if r.returncode != 0 or not (build_dir / "Vtop").exists():
            raise BitswarmError(f"Verilator build failed (exit {r.returncode}); see {log}")
    seconds = time.monotonic() - t0
    shutil.rmtree(build_dir / "obj", ignore_errors=True)
    mark_build(build_dir)
    prune_builds(build_dir.parent)
    return seconds


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
    build_root : folder for cached builds (default :func:`~bitswarm.sim.verilator.default_build_root`).
    waves : ``"vcd"``, ``"fst"`` or None
        Build with signal tracing; :meth:`run` then takes a ``waves_file``.
    """

    def __init__(self, accel, build_root: Path | None = None, verbose: bool = False,
                 waves: str | None = None):
        if waves is not None and waves not in WAVE_FORMATS:
            raise ConfigError(f"waves must be one of {sorted(WAVE_FORMATS)} or None, not {waves!r}")
        self.accel = accel
        self.waves = waves
        self.plan = accel.plan
        self.verilog = to_verilog(accel, "top")
        lay = accel.model.cfg.layers
        self.in_bytes = self.plan.folds[0].simd  # one byte per pixel lane
        self.cls_bits = max(1, (lay[-1].n_out - 1).bit_length())
        self.score_bits = lay[-1].z_width
        self.n_classes = lay[-1].n_out
        self.out_bits = self.cls_bits + self.score_bits * self.n_classes
        self.out_bytes = (self.out_bits + 7) // 8
        root = Path(build_root) if build_root is not None else default_build_root()
        self.build_dir = root / f"bulk_{_key(self.verilog, _HARNESS, waves)}"
        self.binary = self.build_dir / "Vtop"
        self.verbose = verbose
        self.build_seconds = 0.0

    def build(self) -> Path:
        if not self.binary.exists():
            self.build_seconds = build_harness(
                self.verilog, _HARNESS, self.build_dir,
                {"IN_BYTES": self.in_bytes, "OUT_BYTES": self.out_bytes}, waves=self.waves,
                what="Verilator model" + (f" with {self.waves.upper()} tracing" if self.waves else ""))
        else:
            mark_build(self.build_dir)
        return self.binary

    def slices(self, images: np.ndarray) -> np.ndarray:
        """Raw uint8 images ``[n, ...]`` -> harness input records ``[n, SF, SIMD]`` bytes."""
        x = np.asarray(images, dtype=np.uint8).reshape(len(images), -1)
        simd, sf = self.plan.folds[0].simd, self.plan.input_slices()
        out = np.zeros((len(x), sf * simd), dtype=np.uint8)
        out[:, : x.shape[1]] = x
        return out.reshape(len(x), sf, simd)

    def run(self, images: np.ndarray, *, stream: bool = False, idle_pct: int = 0,
            bp_pct: int = 0, seed: int = 1, waves_file: str | os.PathLike | None = None) -> BulkResult:
        """Run ``images`` (raw uint8 ``[n, *input_shape]``); isolated or streamed. With a
        tracing build, ``waves_file`` receives every signal of the run (two samples per cycle:
        after the falling and after the rising clock edge)."""
        if waves_file is not None and self.waves is None:
            raise ConfigError("this Verilator model was built without waveforms (waves=None)")
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
                 "1" if stream else "0", str(idle_pct), str(bp_pct), str(seed), str(budget),
                 *([str(waves_file)] if waves_file is not None else [])],
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


@dataclass
class TrainRun:
    """Per-sample outputs of a Verilator training run: predicted class before the update,
    error flag, cycle stamps of the first input transfer and of the output, and run totals."""

    preds: np.ndarray
    errors: np.ndarray
    first_in: np.ndarray
    out_cycle: np.ndarray
    cycles: int
    seconds: float

    @property
    def intervals(self) -> np.ndarray:
        """Cycles between consecutive outputs (the per-sample cost when streaming)."""
        return np.diff(self.out_cycle)


class VerilatorTrainer:
    """The on-chip trainer (:class:`bitswarm.hw.onchip.OnChipTrainer`) on Verilator through
    ``sim/harness_onchip.cpp``: whole training runs at C++ speed, then the trained state read
    back through the debug port (:meth:`export`). Same API as
    :class:`bitswarm.sim.onchip.VirtualTrainer`.

    Parameters
    ----------
    model : Model
        Initial training state (copied into the RTL's memories).
    config : OnChipConfig, optional
        The step's constants (default: from the model's meta).
    in_lanes : int, optional
        Pixels per input transfer (default ``min(N_0, 64)``).
    fold : TrainerFold, optional
        The trainer's per-layer ``(pe, simd)`` (default ``pe = 1``, ``simd = N``).
    """

    def __init__(self, model, config=None, *, in_lanes: int | None = None, fold=None,
                 build_root: Path | None = None):
        from bitswarm.hw.onchip import OnChipTrainer

        self.rtl = OnChipTrainer(model, config, in_lanes=in_lanes, fold=fold)
        self.fold = self.rtl.fold
        self.cfg = model.cfg
        self.config = self.rtl.config
        self.verilog = to_verilog(self.rtl, "top")
        lays = self.cfg.layers
        self.cls_bits = max(1, (lays[-1].n_out - 1).bit_length())
        self.p = self.rtl.in_lanes
        self.slices_per_sample = self.rtl.load_transfers()
        self.in_bytes = (self.p * 8 + self.cls_bits + 7) // 8
        self.out_bytes = (self.cls_bits + 1 + 7) // 8
        self.dbg_bytes = (self.rtl.dbg_width + 7) // 8
        root = Path(build_root) if build_root is not None else default_build_root()
        self.build_dir = root / f"onchip_{_key(self.verilog, _HARNESS_ONCHIP)}"
        self.binary = self.build_dir / "Vtop"
        self.build_seconds = 0.0
        self._state = None  # the last read-back state (a Model)
        self.samples = 0

    def build(self) -> Path:
        if not self.binary.exists():
            self.build_seconds = build_harness(
                self.verilog, _HARNESS_ONCHIP, self.build_dir,
                {"IN_BYTES": self.in_bytes, "OUT_BYTES": self.out_bytes, "DBG_BYTES": self.dbg_bytes},
                what="on-chip trainer")
        else:
            mark_build(self.build_dir)
        return self.binary

    def _records(self, xs: np.ndarray, ys: np.ndarray) -> bytes:
        n0, p, t = self.cfg.layers[0].n_in, self.p, self.slices_per_sample
        x = np.zeros((len(xs), t * p), dtype=np.uint8)
        x[:, :n0] = np.asarray(xs, dtype=np.uint8).reshape(len(xs), -1)
        recs = bytearray()
        for k in range(len(xs)):
            for s in range(t):
                v = int.from_bytes(x[k, s * p:(s + 1) * p].tobytes(), "little") | (int(ys[k]) << (8 * p))
                recs += v.to_bytes(self.in_bytes, "little")
        return bytes(recs)

    def train(self, xs, ys, *, idle_pct: int = 0, bp_pct: int = 0, seed: int = 1) -> TrainRun:
        """Train on samples ``xs`` (uint8 ``[K, ...]``) with labels ``ys`` in order, streaming
        (the next sample is offered as soon as the trainer takes it; ``idle_pct`` / ``bp_pct``
        insert random idle input cycles and output backpressure). A later call continues from
        the read-back state, which becomes the initial memory contents of a new build."""
        xs = np.asarray(xs, dtype=np.uint8)
        ys = np.asarray(ys).reshape(-1).astype(np.int64)
        n = len(ys)
        if n == 0 or len(xs) != n:
            raise BitswarmError(f"need as many samples as labels (>0), got {len(xs)} and {n}")
        c = self.cfg.layers[-1].n_out
        if ys.min() < 0 or ys.max() >= c:
            raise BitswarmError(f"labels must be classes 0..{c - 1}")
        if self._state is not None:  # continue: the read-back state becomes the memories' contents
            samples = self.samples
            self.__init__(self.export(), self.config, in_lanes=self.p, fold=self.fold,
                          build_root=self.build_dir.parent)
            self.samples = samples
        self.build()
        from bitswarm.sim.onchip import cycles_per_sample

        per = cycles_per_sample(self.cfg, self.p, self.fold).total
        budget = (per + 16) * n * (1 + 4 * max(idle_pct, bp_pct)) + 10_000
        from bitswarm.hw.onchip import dbg_queries

        q = dbg_queries(self.cfg, self.fold)
        with tempfile.TemporaryDirectory() as td:
            td = Path(td)
            (td / "in.bin").write_bytes(self._records(xs, ys))
            (td / "q.bin").write_bytes(np.array(q, dtype="<u4").tobytes())
            r = subprocess.run(
                [str(self.binary), str(td / "in.bin"), str(td / "out.bin"), str(n), str(self.slices_per_sample),
                 str(idle_pct), str(bp_pct), str(seed), str(budget), str(td / "q.bin"), str(td / "d.bin")],
                capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise BitswarmError(f"Verilator run failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
            raw = np.frombuffer((td / "out.bin").read_bytes(), dtype=np.uint8).reshape(n, self.out_bytes + 16)
            dbg = np.frombuffer((td / "d.bin").read_bytes(), dtype=np.uint8).reshape(len(q), self.dbg_bytes)
        stats = dict(kv.split("=") for kv in r.stdout.split())
        o = [int.from_bytes(row[: self.out_bytes].tobytes(), "little") for row in raw]
        preds = np.array([v & ((1 << self.cls_bits) - 1) for v in o], dtype=np.int64)
        errs = np.array([(v >> self.cls_bits) & 1 for v in o], dtype=np.int64)
        stamps = raw[:, self.out_bytes:].copy().view("<u8").reshape(n, 2).astype(np.int64)
        from bitswarm.hw.onchip import dbg_decode

        self._state = dbg_decode(self.cfg, q, [int.from_bytes(row.tobytes(), "little") for row in dbg],
                                 self.rtl.model.invert, self.fold)
        self.samples += n
        return TrainRun(preds, errs, stamps[:, 0], stamps[:, 1], int(stats["cycles"]), float(stats["seconds"]))

    def export(self):
        """The trained state as a golden :class:`~bitswarm.golden.Model` (the initial model
        before any :meth:`train`)."""
        return self.rtl.model if self._state is None else self._state
