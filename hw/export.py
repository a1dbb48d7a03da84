"""Write a model's accelerator as Verilog plus a JSON report (``bitswarm verilog MODEL``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bitswarm.golden.model import Model, atomic_write_bytes

from .plan import AccelPlan

__all__ = ["export_accelerator"]


def export_accelerator(model: Model, plan: AccelPlan, out_dir: str | os.PathLike,
                       name: str = "bitswarm_accel") -> dict:
    """Generate ``DIR/<name>.v`` and ``DIR/<name>.json``; returns the report.

    The report holds the cycle model (cycles per inference, streaming interval bound), weight
    memory bits and the per-layer folding, plus the top's port widths. Both files are written
    atomically after the whole design has been generated, so an error leaves nothing behind.
    """
    from bitswarm.sim.verilator import to_verilog

    from .accel import Accelerator

    accel = Accelerator(model, plan)
    text = to_verilog(accel, name)
    rep = plan.report()
    lay = model.cfg.layers
    rep.update({
        "top": name,
        "verilog": f"{name}.v",
        "ports": {
            "i_stream__payload": 8 * plan.folds[0].simd,
            "o_stream__payload": max(1, (lay[-1].n_out - 1).bit_length()) + lay[-1].z_width * lay[-1].n_out,
            "o_stream fields": "cls (low bits), then scores[0..C-1] as signed z_width each",
        },
        "input_shape": list(model.cfg.input_shape),
        "meta": dict(model.cfg.meta),
    })
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / f"{name}.v", text.encode())
    atomic_write_bytes(out / f"{name}.json", (json.dumps(rep, indent=2) + "\n").encode())
    return rep
