"""Write a model's accelerator as Verilog plus a JSON report (``bitswarm verilog MODEL``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bitswarm.golden.files import atomic_write_bytes, check_outputs
from bitswarm.golden.model import Model

from .plan import AccelPlan

__all__ = ["accelerator_files", "export_accelerator", "to_verilog"]


def to_verilog(component, name: str) -> str:
    """Verilog text of an Amaranth ``wiring.Component`` (ports from its signature)."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog

    return verilog.convert(component, name=name, emit_src=False)


def accelerator_files(name: str = "bitswarm_accel", asic: bool = False) -> list[str]:
    """The files :func:`export_accelerator` writes into its folder."""
    files = [f"{name}.v", f"{name}.fold.json", f"{name}.json"]
    if asic:
        files += [f"{name}.sdc", f"{name}_asic.json", f"{name}_asic.md"]
    return files


def export_accelerator(model: Model, plan: AccelPlan, out_dir: str | os.PathLike,
                       name: str = "bitswarm_accel", *,
                       asic_clock_mhz: float | None = None, overwrite: bool = False) -> dict:
    """Generate ``DIR/<name>.v``, ``DIR/<name>.json`` and the fold file
    ``DIR/<name>.fold.json``; returns the report.

    The report holds the cycle model (latency, streaming interval), weight memory bits, the
    per-layer folding, the resource estimate for iCE40 and ECP5 and the top's ports (the
    datasheet: :meth:`AccelPlan.ports`). With ``asic_clock_mhz`` also an SDC constraint and a
    yosys generic-cell synthesis report (:func:`bitswarm.hw.asic.export_asic`). Files are written
    atomically after the whole design has been generated, so an error leaves nothing behind;
    existing files of these names are refused (before any work) unless ``overwrite``.
    """
    check_outputs([Path(out_dir) / f for f in accelerator_files(name, asic_clock_mhz is not None)],
                  overwrite=overwrite)
    from .accel import Accelerator
    from .resources import estimate

    accel = Accelerator(model, plan)
    text = to_verilog(accel, name)
    rep = plan.report()
    rep.update({
        "top": name,
        "verilog": f"{name}.v",
        "fold_file": f"{name}.fold.json",
        "verilog_dialect": "Verilog-2005 (amaranth.back.verilog via yosys); a simulator in "
                           "SystemVerilog mode must hold rst high for at least 2 cycles from time 0",
        "ports": plan.ports(),
        "estimate": {fam: estimate(plan, fam).totals() for fam in ("ice40", "ecp5")},
        "input_shape": list(model.cfg.input_shape),
        "meta": dict(model.cfg.meta),
    })
    asic = None
    if asic_clock_mhz is not None:
        import tempfile

        from .asic import export_asic

        with tempfile.TemporaryDirectory() as td:
            asic = export_asic(text, name, Path(td) / "asic", clock_mhz=asic_clock_mhz)
            asic_files = {f: (Path(td) / "asic" / f).read_bytes() for f in asic["files"]
                          if f != f"{name}.v"}
        rep["asic"] = {k: v for k, v in asic.items() if k != "cells_by_type"}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / f"{name}.v", text.encode())
    atomic_write_bytes(out / f"{name}.fold.json", (json.dumps(plan.to_dict(), indent=2) + "\n").encode())
    if asic is not None:
        for f, data in asic_files.items():
            atomic_write_bytes(out / f, data)
    atomic_write_bytes(out / f"{name}.json", (json.dumps(rep, indent=2) + "\n").encode())
    return rep
