"""Board builds compared with FINN (``make bench-boards``).

For each configuration below: a model (trained with ``bitswarm train`` unless given), its golden
test accuracy, and a full board build through :func:`bitswarm.hw.bitstream.build_bitstream`
(YoWASP yosys + nextpnr + pack via amaranth-boards): LUT cells, FFs, block RAMs, Fmax, the
clock it runs at, whether timing is met, images/s (clock ÷ the streaming interval) and
images/s per LUT, next to FINN's figures for the same networks: LFC W1A1 (356,633 images/s on
30,249 LUTs, 11.8 images/s per LUT, Pynq-Z1) and SFC-max (12.3 M images/s on ~91k LUTs at
200 MHz, ~135 images/s per LUT) and, for the CNN rows, CNV W1A1 (9,150 images/s on 30,605
LUTs, Pynq-Z1, 0.30 images/s per LUT; a CIFAR-10 VGG-like CNN, listed as a reference row). The
streaming interval is also measured in Verilator. CNN models come from the Makefile
(``out/boards/digits-cnn.bsm``) or ``--model ID=PATH`` (the Fashion CNN of ``bench_train.py``).

Results: ``bench/results/boards.json`` and ``bench/results/boards.md``.

Usage: ``python bench/bench_boards.py [--model NAME=PATH ...] [--only ID ...] [--keep DIR]``;
``--only`` rebuilds the named rows and keeps the others from ``boards.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: FINN's published figures (Umuroglu et al., FINN, FPGA 2017; Blott et al., FINN-R, 2018).
FINN = {
    "lfc": {"name": "FINN LFC W1A1 (784-1024-1024-1024-10, Pynq-Z1)", "images_per_s": 356633,
            "luts": 30249, "accuracy": 0.9769},
    "sfc": {"name": "FINN SFC-max (784-256-256-256-10, ZC706, 200 MHz)", "images_per_s": 12.3e6,
            "luts": 91131, "accuracy": 0.9583},
    "cnv": {"name": "FINN CNV W1A1 (CIFAR-10 VGG-like CNN, Pynq-Z1)", "images_per_s": 9150,
            "luts": 30605, "accuracy": None},
}
for _f in FINN.values():
    _f["images_per_s_per_lut"] = _f["images_per_s"] / _f["luts"]

#: Settings every board model keeps: those of the trainer when bench/results/boards.md was
#: measured (batch 128, homeostasis shift 12; its defaults now are in train/RULES.md "Defaults").
PINNED = ("--batch-size", "128", "--opt", "homeostasis_shift=12")
#: model id -> (data set, arch, epochs, input bits, further ``bitswarm train`` arguments, which
#: override :data:`PINNED`)
MODELS = {
    "digits-64-512-10": ("digits", "64-512-10", 30, None, ()),
    "mnist5k-sfc-b1": ("mnist5k", "784-256-256-256-10", 20, 1, ()),
    "mnist5k-lfc-b1": ("mnist5k", "784-1024-1024-1024-10", 10, 1, ()),
    "digits-cnn": ("digits", "1x8x8-c8k3p1-mp2-10", 15, None, ("--batch-size", "64")),
    # bench_train.py's Fashion CNN (golden rule, 3 epochs, batch 64, flip threshold 32)
    "fashion-cnn": ("fashion", "1x28x28-c32k3p1-mp2-512-10", 3, None,
                    ("--batch-size", "64", "--flip-threshold", "32")),
}

#: (config id, board, model id, FINN reference or None, fill of the part for the optimizer,
#: clock MHz or None = the board's default, note)
CONFIGS = [
    ("icebreaker-digits", "icebreaker", "digits-64-512-10", None, None, None,
     "the default digits model, default fold (the optimizer's for the UP5K)"),
    # ULX3S builds plan for a fifth / a tenth of the ECP5-85F's LUTs: the WebAssembly nextpnr needs well
    # over half an hour to route a 30k-LUT design on 2 cores; images/s per LUT changes little
    # with the fold's size (throughput and LUTs both scale with PE x SIMD)
    ("ulx3s-sfc", "ulx3s", "mnist5k-sfc-b1", "sfc", 0.2, None,
     "SFC-class MLP, binarized input, the fastest fold the optimizer fits in 20 % of the LUTs"),
    ("ulx3s-lfc-small", "ulx3s", "mnist5k-lfc-b1", "lfc", 0.1, None,
     "LFC-class MLP, binarized input, the fastest fold the optimizer fits in 10 % of the LUTs"),
    # conv designs place on the UP5K once yosys keeps small clock-enable groups out of the
    # tiles' shared enables (hw/bitstream.py ICE40_SYNTH_OPTS); without it nextpnr's HeAP
    # legaliser gave up at 59 % of the logic cells
    ("icebreaker-digits-cnn", "icebreaker", "digits-cnn", "cnv", 0.5, 30,
     "digits CNN (8-bit pixels, one 3x3 convolution of 8 channels, 2x2 max-pool), the fastest "
     "fold the optimizer fits in 50 % of the UP5K's LUTs, clocked at 30 MHz; it placed only "
     "after iCE40 synthesis stopped packing flip-flops with rarely shared clock enables into "
     "the tiles' common enable (`-dffe_min_ce_use 8`): before that nextpnr found no legal "
     "placement at 59 % of the logic cells"),
    # at the default 75 MHz this build reaches 62.9 MHz (8636 LUT4, 4852 FF, 194 DP16KD)
    ("ulx3s-fashion-cnn", "ulx3s", "fashion-cnn", "cnv", None, 60,
     "Fashion-MNIST CNN (8-bit pixels, one 3x3 convolution of 32 channels, 2x2 max-pool, 512 "
     "dense), the optimizer's fold for the ECP5-85F (block-RAM bound: the 6272x512 dense "
     "layer's weights), clocked at 60 MHz (built for 75 MHz it reached 62.9 MHz)"),
]

#: config id -> nextpnr placer where the default (HeAP) finds no legal placement
PLACER: dict[str, str] = {}


def _train(mid: str, work: Path) -> Path:
    import subprocess

    ds, arch, epochs, bits, more = MODELS[mid]
    out = work / f"{mid}.bsm"
    if not out.exists():
        print(f"[train] {mid}", flush=True)
        extra = ["--input-bits", str(bits)] if bits else []
        subprocess.run([sys.executable, "-m", "bitswarm", "train", "--dataset", ds, "--arch", arch,
                        "--epochs", str(epochs), "--out", str(out), "--quiet", "--no-plots",
                        "--overwrite", *extra, *PINNED, *more], check=True)
    return out


def _accuracy(model, ds_name: str) -> float:
    import numpy as np
    import torch
    from bitswarm.train import load_dataset

    ds = load_dataset(ds_name)
    x = ds.x_test.reshape((-1,) + tuple(model.cfg.input_shape))
    pred = model.predict(torch.as_tensor(x)).numpy()
    return float(np.mean(pred == ds.y_test))


def _measured_interval(model, plan, n: int = 24) -> dict:
    """Stream ``n`` random images through the accelerator on Verilator: the measured interval
    between output handshakes and the isolated latency (both must equal the plan's model)."""
    import numpy as np
    from bitswarm.hw.accel import Accelerator
    from bitswarm.sim.bulk import VerilatorAccelerator

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, model.cfg.layers[0].in_size), dtype=np.uint8)  # flat HWC
    va = VerilatorAccelerator(Accelerator(model, plan))
    t = time.time()
    r = va.run(x, stream=True)
    iv = sorted(set(np.diff(r.out_cycle)[4:].tolist()))
    lat = sorted(set(va.run(x[:3]).latencies.tolist()))
    return {"interval_measured": iv[0] if len(iv) == 1 else iv, "latency_measured":
            lat[0] if len(lat) == 1 else lat, "verilator_seconds": round(time.time() - t, 1)}


def _per_lut(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def markdown(res: dict) -> str:
    L = [
        "# Board builds vs FINN",
        "",
        f"Generated by `make bench-boards` (`python bench/bench_boards.py`) on {res['date']} "
        "with the YoWASP tools from PyPI through the amaranth-boards platforms "
        "(`bitswarm bitstream MODEL --board B`, fold from the optimizer; nextpnr "
        "`--timing-allow-fail --seed 1`, the verdict is ours: timing met = Fmax ≥ the clock "
        "the design runs at).",
        "",
        "LUT: iCE40 logic cells (`ICESTORM_LC`) / ECP5 LUT4s (`TRELLIS_COMB`) after place and "
        "route, UART link included; the estimate is the resource model's (`hw/resources.py`). "
        "images/s = clock ÷ the streaming interval (cycles between back-to-back images), "
        "measured in Verilator and equal to the plan's model (column `interval`: model / "
        "measured); images/s at Fmax = Fmax ÷ the interval (what the fold would do at the "
        "fastest clock nextpnr reports; images/s per LUT is at the clock). The UART at 115200 baud limits a board's real rate to a few hundred "
        "images/s; the figure is the accelerator's.",
        "",
        "| config | model (test acc.) | fold (pe, simd) per layer | LUT est. / actual | FF | BRAM |"
        " Fmax MHz | clock MHz | interval | latency | images/s | images/s at Fmax |"
        " images/s per LUT | FINN |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for cid, r in res["configs"].items():
        fold = ", ".join(f"({x['pe']}, {x['simd']})" for x in r["fold"]["layers"])
        if "error" in r:
            e = r["estimate"]
            L.append(f"| {cid} | {r['model']} ({r['accuracy']:.1%}) | {fold} | {e['luts']} / — "
                     f"| — | {e['brams']} (est.) | — | — | {r['interval_cycles']} / — | — | "
                     f"**not built**: {r['error']} | | | |")
            continue
        finn = r.get("finn")
        fref = (f"{_per_lut(finn['images_per_s_per_lut'])} img/s/LUT"
                + (f", {finn['accuracy']:.1%}" if finn.get("accuracy") else "")
                + f" ({finn['name']})" if finn else "—")
        L.append(
            f"| {cid} | {r['model']} ({r['accuracy']:.1%}) | {fold} | "
            f"{r['estimate']['luts']} / {r['luts']} | {r['ffs']} | {r['brams']} | "
            f"{r['fmax_mhz']} | {r['clock_mhz']:g}{'' if r['timing_met'] else ' (NOT met)'} | "
            f"{r['interval_cycles']} / {r.get('interval_measured', '—')} | "
            f"{r['latency_cycles']} | {r['images_per_s']:,.0f} | "
            f"{r['fmax_mhz'] * 1e6 / r['interval_cycles']:,.0f} | "
            f"{r['images_per_s_per_lut']:.2f} | {fref} |")
    f = FINN["cnv"]
    L.append(f"| FINN CNV W1A1 (reference) | {f['name']} | — | "
             f"— / {f['luts']:,} | — | — | — | — | — | — | {f['images_per_s']:,} | — | "
             f"{f['images_per_s_per_lut']:.2f} | published figure |")
    L += ["", "Notes:", ""]
    notes = {c[0]: c[-1] for c in CONFIGS}
    for cid, r in res["configs"].items():
        extra = r.get("note", "")
        text = notes.get(cid, "") + (f"; {extra}" if extra and extra != notes.get(cid) else "")
        if "error" in r:
            text += (f"; not built within the time limit (WebAssembly nextpnr on 2 cores): the "
                     f"estimate uses {r['estimate']['brams']} of the part's block RAMs")
        L.append(f"- **{cid}**: {text}." + (f" PLL {r['pll']}." if r.get("pll") else ""))
    L += [
        "",
        "FINN's accuracies come from full MNIST (60,000 training images); mnist5k has 4,000 "
        "training images, so the accuracy columns are not comparable one to one.",
        "",
        "Reproduce one row: `bitswarm bitstream MODEL --board B -o DIR --json` (add "
        "`--fold FILE` with the row's fold file to pin the fold).",
        "",
    ]
    return "\n".join(L)


def main(argv=None) -> int:
    from bitswarm.golden.errors import BitswarmError
    from bitswarm.golden.model import load_model
    from bitswarm.hw.bitstream import build_bitstream
    from bitswarm.hw.resources import board_fold

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], metavar="ID=PATH",
                    help=f"use a trained model for an id ({', '.join(MODELS)})")
    ap.add_argument("--only", nargs="*", help="config ids to run")
    ap.add_argument("--keep", help="keep models and build folders here")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--timeout", type=float, default=3600,
                    help="seconds one board build may take (a build over it is reported as not "
                    "built; default 3600)")
    ap.add_argument("--reuse", action="store_true",
                    help="take a row's build from the --keep folder (DIR/ID/bitswarm_board.json) "
                    "when it was made for the same board, arch, fold and clock, instead of "
                    "rebuilding it")
    ap.add_argument("--no-verilator", action="store_true",
                    help="skip the Verilator measurement of interval and latency")
    args = ap.parse_args(argv)
    given = dict(kv.split("=", 1) for kv in args.model)
    ctx = tempfile.TemporaryDirectory(prefix="bitswarm-boards-") if not args.keep else None
    work = Path(args.keep or ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    old = Path(args.out) / "boards.json"
    res = {"date": time.strftime("%Y-%m-%d"), "host": platform.platform(), "finn": FINN,
           "configs": {}}
    if args.only and old.exists():  # keep the other rows
        res["configs"] = {k: v for k, v in json.loads(old.read_text()).get("configs", {}).items()
                          if k in {c[0] for c in CONFIGS}}
    try:
        for cid, board, mid, fref, fill, clk, note in CONFIGS:
            if args.only and cid not in args.only:
                continue
            path = Path(given[mid]) if mid in given else _train(mid, work)
            model = load_model(path)
            plan = board_fold(model.cfg, board) if fill is None else board_fold(
                model.cfg, board, fill=fill)
            from bitswarm.hw.resources import PARTS, estimate

            entry = {"board": board, "model": mid, "note": note,
                     "finn": FINN[fref] if fref else None, "fold": plan.to_dict(),
                     "estimate": estimate(plan, PARTS[board]["family"], board=True).totals(),
                     "interval_cycles": plan.interval_cycles()}
            print(f"[{cid}] {board}, {mid}, fold "
                  + ", ".join(f"({f.pe},{f.simd})" for f in plan.folds), flush=True)
            entry["accuracy"] = _accuracy(model, MODELS[mid][0])
            entry["arch"] = list(model.cfg.arch)
            try:
                rec = _reused(work / cid, board, model, plan, clk) if args.reuse else None
                if rec is not None:
                    print(f"  reusing the build in {work / cid}", flush=True)
                else:
                    rec = build_bitstream(model, board, work / cid, plan=plan,
                                          clock_hz=clk * 1e6 if clk else None,
                                          timeout_s=args.timeout, placer=PLACER.get(cid))
            except BitswarmError as e:
                entry["error"] = str(e).split("; log in")[0]
                print(f"  not built: {entry['error']}", flush=True)
            else:
                entry.update(rec)
                entry["images_per_s_per_lut"] = rec["images_per_s"] / rec["luts"]
                print(f"  {rec['luts']} LUT (est. {rec['estimate']['luts']}), {rec['ffs']} FF, "
                      f"{rec['brams']} BRAM, Fmax {rec['fmax_mhz']} MHz at {rec['clock_mhz']} "
                      f"MHz, {rec['images_per_s']:,.0f} images/s ({rec['seconds']} s)", flush=True)
                if not args.no_verilator:
                    entry.update(_measured_interval(model, plan))
                    print(f"  Verilator: interval {entry['interval_measured']} (model "
                          f"{plan.interval_cycles()}), latency {entry['latency_measured']} "
                          f"(model {plan.latency_cycles()})", flush=True)
            res["configs"][cid] = entry
            _write(Path(args.out), res)
    finally:
        if ctx is not None:
            ctx.cleanup()
    out = _write(Path(args.out), res)
    print(f"wrote {out / 'boards.json'} and {out / 'boards.md'}")
    return 0


def _reused(folder: Path, board: str, model, plan, clk) -> dict | None:
    """The build record in ``folder`` if it was made for this board, arch, fold and clock."""
    f = folder / "bitswarm_board.json"
    if not f.exists():
        return None
    rec = json.loads(f.read_text())
    from bitswarm.hw.board import board_spec

    want = clk if clk else board_spec(board).clock_hz / 1e6
    def js(v):
        return json.loads(json.dumps(v))

    same = (rec.get("board") == board and rec.get("arch") == js(list(model.cfg.arch))
            and rec.get("fold") == js(plan.to_dict()) and abs(rec.get("clock_mhz", 0) - want) < 0.1)
    return rec if same and rec.get("luts") else None


def _write(out: Path, res: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "boards.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "boards.md").write_text(markdown(res))
    return out


if __name__ == "__main__":
    sys.exit(main())
