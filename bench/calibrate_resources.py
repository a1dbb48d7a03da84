"""Calibrate the resource model against place and route (``make bench-resources``).

Builds each calibration configuration (random weights, an explicit fold) behind the UART link
as a real board build (``bitswarm.hw.bitstream.build_bitstream``: YoWASP yosys + nextpnr) for
the iCEBreaker (iCE40 UP5K) and the ULX3S (ECP5-85F), records the post-PnR LUT metric, FFs and
BRAMs beside the structural features of :mod:`bitswarm.hw.resources`, fits the LUT coefficients
per family by non-negative least squares (``--fit``), and reports estimate vs actual for every
configuration in ``bench/results/resources.{json,md}``.

With ``--trainer`` the same is done for the on-chip trainer
(:func:`bitswarm.hw.bitstream.build_trainer_bitstream`, :data:`TRAINER_CONFIGS`, an explicit
trainer fold each) against :func:`bitswarm.hw.resources.estimate_trainer`, fitting
``TRAINER_COEFFS``; rows and coefficients go under ``trainer`` in the same files.

Usage: ``python bench/calibrate_resources.py [--trainer] [--family ice40|ecp5] [--only NAME ...]
[--fit]`` (measurements are cached in the JSON file: ``--only`` re-measures just those rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bitswarm.golden.model import Model, ModelConfig  # noqa: E402
from bitswarm.hw.bitstream import build_bitstream  # noqa: E402
from bitswarm.hw.plan import AccelPlan, LayerFold  # noqa: E402
from bitswarm.hw.resources import (  # noqa: E402
    COEFFS,
    TRAINER_COEFFS,
    estimate,
    estimate_trainer,
    features,
    trainer_features,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BOARD = {"ice40": "icebreaker", "ecp5": "ulx3s"}

#: name: (arch, input_bits, swarm, folds (pe, simd, pipeline), families)
CONFIGS = {
    "tiny-16-12-5": ([16, 12, 5], 8, 1, [(4, 8, 1), (2, 4, 1)], ("ice40", "ecp5")),
    "d64-64-10-narrow": ([64, 64, 10], 8, 1, [(2, 16, 1), (2, 32, 1)], ("ice40", "ecp5")),
    "d64-128-10-pe8": ([64, 128, 10], 8, 1, [(8, 8, 1), (2, 64, 2)], ("ice40", "ecp5")),
    "d64-128-10-b1": ([64, 128, 10], 1, 1, [(16, 32, 2), (2, 32, 1)], ("ecp5",)),
    "d64-96-10-b1": ([64, 96, 10], 1, 1, [(8, 32, 3), (2, 32, 2)], ("ice40",)),
    "s2-64-64-10-b4": ([64, 64, 10], 4, 2, [(4, 16, 2), (4, 16, 1)], ("ice40", "ecp5")),
    "d64-32-10-const": ([64, 32, 10], 8, 1, [(32, 64, 2), (1, 32, 2)], ("ecp5",)),
    "m100-32-32-10": ([100, 32, 32, 10], 1, 1, [(8, 25, 1), (8, 32, 2), (2, 16, 1)],
                      ("ice40", "ecp5")),
    "d64-512-10-opt": ([64, 512, 10], 8, 1, [(25, 4, 0), (1, 25, 2)], ("ice40", "ecp5")),
    "m784-256-10": ([784, 256, 10], 1, 1, [(16, 64, 2), (4, 64, 2)], ("ecp5",)),
    "m256-256-256-10": ([256, 256, 256, 10], 1, 1, [(32, 128, 3), (16, 64, 2), (2, 64, 2)],
                        ("ecp5",)),
}


#: trainer configs, name: (arch, input_bits, swarm, noise, trainer fold "PExSIMD,...", families)
TRAINER_CONFIGS = {
    "t64-16-10-f": ([64, 16, 10], 8, 1, "none", "1x8,1x4", ("ice40", "ecp5")),
    "t64-16-10-n": ([64, 16, 10], 8, 1, "none", "1x4,1x2", ("ice40",)),
    "t64-24-10-n": ([64, 24, 10], 8, 1, "none", "1x4,1x2", ("ice40",)),
    "t64-32-10-f": ([64, 32, 10], 8, 1, "none", "1x16,1x8", ("ice40", "ecp5")),
    "t64-32-10-s2": ([64, 32, 10], 8, 2, "stochastic", "2x8,1x16", ("ice40", "ecp5")),
    "t64-64-10": ([64, 64, 10], 8, 1, "none", "2x64,2x64", ("ecp5",)),
    "t64-128-10-pe4": ([64, 128, 10], 8, 1, "none", "4x64,1x128", ("ecp5",)),
}


def trainer_model(name: str, seed: int = 0) -> Model:
    """A random trainer model of ``TRAINER_CONFIGS[name]``: zero accumulators, on-chip constants."""
    from bitswarm.golden.flip import FlipRuleConfig
    from bitswarm.golden.lfsr import LFSRConfig
    from bitswarm.golden.onchip import OnChipConfig

    arch, bits, swarm, noise, _, _ = TRAINER_CONFIGS[name]
    flip = FlipRuleConfig(acc_width=8, threshold=30, noise=noise, fire_prob=64 if noise != "none" else 1,
                          lfsr=LFSRConfig(width=16, seed=0xACE1, draw_bits=8))
    oc = OnChipConfig(margin=16, windows=(64,) * (len(arch) - 2), theta_step=1, homeostasis_shift=5)
    cfg = ModelConfig.mlp(arch, input_bits=bits, swarm=swarm, flip=flip, meta=oc.to_meta())
    m = _model(arch, bits, swarm, seed)
    m = Model(cfg, m.weights, m.theta, m.invert,
              [torch.zeros(lay.weight_shape(), dtype=torch.int32) for lay in cfg.layers], None)
    return m


def trainer_fold_of(name: str, cfg: ModelConfig):
    from bitswarm.hw.plan import TrainerFold

    return TrainerFold.parse(TRAINER_CONFIGS[name][4], cfg)


def measure_trainer(name: str, family: str) -> dict:
    from bitswarm.hw.bitstream import build_trainer_bitstream

    m = trainer_model(name)
    t = time.time()
    with tempfile.TemporaryDirectory() as td:
        rec = build_trainer_bitstream(m, BOARD[family], Path(td) / "b", fold=trainer_fold_of(name, m.cfg))
    return {"name": name, "family": family, "luts": rec["luts"], "ffs": rec["ffs"],
            "brams": rec["brams"], "fmax_mhz": rec["fmax_mhz"], "seconds": round(time.time() - t, 1)}


def _trainer_row_features(name, family):
    m = trainer_model(name)
    st = trainer_features(m.cfg, trainer_fold_of(name, m.cfg), family, board=True)
    return [sum(s.other for s in st), sum(s.ffs for s in st), 1.0]


def fit_trainer(rows: list[dict], family: str) -> dict:
    from scipy.optimize import nnls

    rs = [r for r in rows if r["family"] == family and r.get("luts")]
    if len(rs) < 2:
        return dict(TRAINER_COEFFS[family])
    a = np.array([_trainer_row_features(r["name"], family) for r in rs], dtype=float)
    y = np.array([r["luts"] for r in rs], dtype=float)
    w = 1.0 / y
    coef, _ = nnls(a * w[:, None], y * w)
    return dict(zip(("b", "d", "c"), (round(float(c), 4) for c in coef), strict=True))


def report_trainer(rows: list[dict], coeffs: dict) -> list[dict]:
    out = []
    for r in rows:
        m = trainer_model(r["name"])
        est = estimate_trainer(m.cfg, trainer_fold_of(r["name"], m.cfg), r["family"], board=True,
                               coeffs=coeffs[r["family"]]).totals()
        out.append({**r, "fold": TRAINER_CONFIGS[r["name"]][4], "est_luts": est["luts"],
                    "est_ffs": est["ffs"], "est_brams": est["brams"],
                    "lut_error_pct": round(100 * (est["luts"] - r["luts"]) / r["luts"], 1)})
    return out


def _model(arch, bits, swarm, seed=0) -> Model:
    cfg = ModelConfig.mlp(arch, input_bits=bits, swarm=swarm)
    m = Model.random(cfg, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for i, lay in enumerate(cfg.layers):
        spread = max(1, lay.z_bound // 8)
        m.theta[i] = torch.randint(-spread, spread + 1, (lay.n_out,), generator=g,
                                   dtype=torch.int32)
        if not lay.output:
            m.invert[i] = torch.randint(0, 2, (lay.n_out,), generator=g, dtype=torch.uint8)
    return m


def plan_of(name: str) -> AccelPlan:
    arch, bits, swarm, folds, _ = CONFIGS[name]
    m = _model(arch, bits, swarm)
    return AccelPlan(m.cfg, tuple(LayerFold(*f) for f in folds))


def measure(name: str, family: str) -> dict:
    arch, bits, swarm, folds, _ = CONFIGS[name]
    m = _model(arch, bits, swarm)
    plan = AccelPlan(m.cfg, tuple(LayerFold(*f) for f in folds))
    t = time.time()
    with tempfile.TemporaryDirectory() as td:
        rec = build_bitstream(m, BOARD[family], Path(td) / "b", plan=plan)
    return {"name": name, "family": family, "luts": rec["luts"], "ffs": rec["ffs"],
            "brams": rec["brams"], "fmax_mhz": rec["fmax_mhz"], "seconds": round(time.time() - t, 1)}


def _row_features(name, family):
    st = features(plan_of(name), family, board=True)
    return [sum(s.prod_var for s in st), sum(s.prod_const for s in st),
            sum(s.other for s in st), sum(s.ffs for s in st) if family == "ice40" else 0, 1.0]


def fit(rows: list[dict], family: str) -> dict:
    from scipy.optimize import nnls

    rs = [r for r in rows if r["family"] == family and r.get("luts")]
    a = np.array([_row_features(r["name"], family) for r in rs], dtype=float)
    y = np.array([r["luts"] for r in rs], dtype=float)
    w = 1.0 / y  # relative error: every configuration counts alike
    coef, _ = nnls(a * w[:, None], y * w)
    return dict(zip(("a", "a_c", "b", "d", "c"), (round(float(c), 4) for c in coef), strict=True))


def report(rows: list[dict], coeffs: dict) -> list[dict]:
    out = []
    for r in rows:
        est = estimate(plan_of(r["name"]), r["family"], board=True,
                       coeffs=coeffs[r["family"]]).totals()
        out.append({**r, "est_luts": est["luts"], "est_ffs": est["ffs"],
                    "est_brams": est["brams"],
                    "lut_error_pct": round(100 * (est["luts"] - r["luts"]) / r["luts"], 1)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=("ice40", "ecp5"), action="append")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--fit", action="store_true", help="refit the coefficients from the rows")
    ap.add_argument("--trainer", action="store_true",
                    help="the on-chip trainer's configurations and coefficients instead")
    args = ap.parse_args()
    path = RESULTS / "resources.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    rows = {(r["name"], r["family"]): r for r in old.get("rows", [])}
    told = old.get("trainer", {})
    trows = {(r["name"], r["family"]): r for r in told.get("rows", [])}
    coeffs = dict(old.get("coeffs", COEFFS))
    tcoeffs = dict(told.get("coeffs", TRAINER_COEFFS))
    fams = args.family or ["ice40", "ecp5"]
    configs, table, meas = ((TRAINER_CONFIGS, trows, measure_trainer) if args.trainer
                            else (CONFIGS, rows, measure))
    for name, (*_, families) in configs.items():
        for fam in families:
            if fam not in fams or (args.only is not None and name not in args.only) or (
                    args.only is None and (name, fam) in table):
                continue
            print(f"{name} on {fam} ...", end=" ", flush=True)
            try:
                table[(name, fam)] = meas(name, fam)
                print(table[(name, fam)], flush=True)
            except Exception as e:  # a failed build is reported, not fatal
                print(f"failed: {e}", flush=True)
                table[(name, fam)] = {"name": name, "family": fam, "luts": None, "error": str(e)}
            _write(path, list(rows.values()), coeffs, list(trows.values()), tcoeffs)
    if args.fit:
        for fam in ("ice40", "ecp5"):
            if args.trainer:
                tcoeffs[fam] = fit_trainer(list(trows.values()), fam)
            else:
                coeffs[fam] = fit(list(rows.values()), fam)
        print("fitted:", json.dumps(tcoeffs if args.trainer else coeffs))
    _write(path, list(rows.values()), coeffs, list(trows.values()), tcoeffs)
    return 0


def _write(path: Path, rows: list[dict], coeffs: dict, trows: list[dict], tcoeffs: dict) -> None:
    good = [r for r in rows if r.get("luts")]
    rep = report(good, coeffs)
    trep = report_trainer([r for r in trows if r.get("luts")], tcoeffs)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"date": time.strftime("%Y-%m-%d"), "coeffs": coeffs,
           "rows": rows, "report": rep,
           "max_abs_lut_error_pct": max((abs(r["lut_error_pct"]) for r in rep), default=None),
           "trainer": {"coeffs": tcoeffs, "rows": trows, "report": trep,
                       "max_abs_lut_error_pct": max((abs(r["lut_error_pct"]) for r in trep),
                                                    default=None)}}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    lines = ["# Resource model vs place and route", "",
             f"Generated by `make bench-resources` (`python bench/calibrate_resources.py`) on "
             f"{doc['date']}: board builds (UART link included) with YoWASP yosys + nextpnr, random "
             "weights, explicit folds; LUT = iCE40 logic cells / ECP5 LUT4 slots after place and "
             "route. Coefficients (hw/resources.py `COEFFS`): "
             + "; ".join(f"{f}: " + ", ".join(f"{k}={v}" for k, v in c.items())
                         for f, c in coeffs.items()), "",
             "| config | family | fold | LUT est. / actual | error | FF est. / actual | "
             "BRAM est. / actual |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rep:
        fold = CONFIGS[r["name"]][3]
        lines.append(f"| {r['name']} | {r['family']} | {fold} | {r['est_luts']} / {r['luts']} | "
                     f"{r['lut_error_pct']:+.1f} % | {r['est_ffs']} / {r['ffs']} | "
                     f"{r['est_brams']} / {r['brams']} |")
    lines += ["", f"Largest LUT error: {doc['max_abs_lut_error_pct']} %."]
    failed = [f"{r['name']} on {r['family']}: {r['error'].split('; log in')[0]}" for r in rows
              if not r.get("luts")]
    have = {(r["name"], r["family"]) for r in rows}
    missing = [f"{n} on {f}" for n, (*_, fams) in CONFIGS.items() for f in fams
               if (n, f) not in have]
    if failed:
        lines += ["", "Not built (over the part): " + "; ".join(failed) + "."]
    if missing:
        lines += ["", "Not measured yet (run `make bench-resources` to add them): "
                  + ", ".join(missing) + "."]
    lines += ["", "## On-chip trainer (`--trainer`)", "",
              "Trainer board builds (`build_trainer_bitstream`, UART link included), random weights, "
              "zero accumulators, explicit trainer folds (PExSIMD per layer); model "
              "`hw/resources.py estimate_trainer`, LUT = b·datapath bits + d·FF + c with "
              "`TRAINER_COEFFS`: " + "; ".join(f"{f}: " + ", ".join(f"{k}={v}" for k, v in c.items())
                                              for f, c in tcoeffs.items()), "",
              "| config | family | arch, S, noise | fold | LUT est. / actual | error | FF est. / actual | "
              "BRAM est. / actual | Fmax MHz |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in trep:
        arch, _, swarm, noise, fold, _ = TRAINER_CONFIGS[r["name"]]
        lines.append(f"| {r['name']} | {r['family']} | {'-'.join(map(str, arch))}, S={swarm}, {noise} | "
                     f"{fold} | {r['est_luts']} / {r['luts']} | {r['lut_error_pct']:+.1f} % | "
                     f"{r['est_ffs']} / {r['ffs']} | {r['est_brams']} / {r['brams']} | {r['fmax_mhz']} |")
    lines += ["", f"Largest trainer LUT error: {doc['trainer']['max_abs_lut_error_pct']} %. The fit covers "
              "small folds only (the 256-lane folds below did not build), so estimates of wide folds are "
              "extrapolations."]
    tfailed = [f"{r['name']} on {r['family']}: {r['error'].split('; log in')[0]}" for r in trows
               if not r.get("luts")]
    if tfailed:
        lines += ["", "Trainer configs not built: " + "; ".join(tfailed) + "."]
    tmissing = [f"{n} on {f}" for n, (*_, fams) in TRAINER_CONFIGS.items() for f in fams
                if (n, f) not in {(r["name"], r["family"]) for r in trows}]
    if tmissing:
        lines += ["", "Trainer configs not measured yet (`python bench/calibrate_resources.py "
                  "--trainer`): " + ", ".join(tmissing) + "."]
    (path.with_suffix(".md")).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
