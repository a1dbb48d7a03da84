"""``bitswarm bitstream`` (board builds with the open tools) and ``bitswarm run`` (a board over
the UART host link, compared with golden)."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "BOARD_CHOICES"]

BOARD_CHOICES = ("icebreaker", "ulx3s", "arty")


def register(sub: argparse._SubParsersAction) -> None:
    from bitswarm.sim.cli import add_fold_args

    p = sub.add_parser(
        "bitstream", help="build a board bitstream (iCEBreaker, ULX3S) or Vivado sources (Arty)")
    p.add_argument("model", help="model file (.bsm)")
    p.add_argument("--board", required=True, choices=BOARD_CHOICES)
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="core clock (default: the board's; a PLL makes it from the oscillator)")
    p.add_argument("--baud", type=int, default=115200, help="UART rate (default 115200)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_fold_args(p)
    p.set_defaults(func=_cmd_bitstream)

    r = sub.add_parser("run", help="classify a data set on a board over its UART host link")
    r.add_argument("model", help="model file (.bsm) the board was built from")
    r.add_argument("--port", required=True,
                   help="serial port (e.g. /dev/ttyUSB1) or a pyserial URL")
    r.add_argument("--baud", type=int, default=115200)
    r.add_argument("--dataset", default="digits", help="digits, mnist5k, fashion or npz:PATH")
    r.add_argument("--data-dir", default=None, help="folder of IDX files for --dataset fashion")
    r.add_argument("--limit", type=int, default=None, help="only the first N test images")
    r.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for a reply")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=_cmd_run)


def _cmd_bitstream(args) -> int:
    from bitswarm.golden.model import load_model
    from bitswarm.sim.cli import plan_from_args

    from .bitstream import build_bitstream

    model = load_model(args.model)
    plan = plan_from_args(model.cfg, args)
    clock = args.clock_mhz * 1e6 if args.clock_mhz is not None else None
    rec = build_bitstream(model, args.board, args.out, plan=plan, clock_hz=clock,
                          baud=args.baud, seed=args.seed)
    keys = ("board", "bitstream", "luts", "ffs", "brams", "fmax_mhz", "clock_mhz", "timing_met",
            "images_per_s")
    out = {k: rec[k] for k in keys} | {k: v for k, v in rec.items() if k not in keys}
    if args.json:
        print(json.dumps(out))
    elif rec["bitstream"]:
        print(f"{rec['bitstream']}: {rec['luts']}/{rec['lut_total']} LUT cells, {rec['ffs']} FF, "
              f"{rec['brams']}/{rec['bram_total']} BRAM, Fmax {rec['fmax_mhz']} MHz at "
              f"{rec['clock_mhz']} MHz (timing {'met' if rec['timing_met'] else 'NOT met'}), "
              f"{rec['images_per_s']} images/s")
    else:
        print(f"{args.out}: {rec['note']}")
    return 0 if rec["timing_met"] is not False else 1


def _cmd_run(args) -> int:
    import numpy as np
    from bitswarm.golden.errors import ConfigError
    from bitswarm.golden.model import load_model
    from bitswarm.sim.driver import evaluate
    from bitswarm.sim.hostlink import BoardBackend, HostLink, LinkFormat, SerialTransport
    from bitswarm.train.data import load_dataset

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, not {args.limit}")
    model = load_model(args.model)
    ds = load_dataset(args.dataset, args.data_dir)
    if ds.n_inputs != model.cfg.layers[0].n_in:
        raise ConfigError(f"{args.dataset} samples have {ds.n_inputs} pixels but the model takes "
                          f"{model.cfg.layers[0].n_in}")
    x, y = ds.x_test, ds.y_test
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    x = np.asarray(x).reshape((len(x),) + tuple(model.cfg.input_shape))
    tr = SerialTransport(args.port, args.baud, timeout=args.timeout)
    try:
        link = HostLink(LinkFormat.for_model(model), tr)
        link.resync()
        rep = evaluate(BoardBackend(model, link), x, y)
    finally:
        tr.close()
    bad = rep.pop("_bad_images")
    out = {"port": args.port, "n": rep["n"], "accuracy": rep["accuracy"],
           "mismatches": rep["mismatches"], "mismatched_images": [int(i) for i in bad[:20]],
           "images_per_s_link": round(rep.get("images_per_s_host", 0.0), 1)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"accuracy {out['accuracy']:.4f} on {out['n']} images over {args.port}, "
              f"mismatches vs golden {out['mismatches']}"
              + (f" (images {out['mismatched_images']})" if out["mismatches"] else "")
              + f", {out['images_per_s_link']} images/s over the link")
    return 1 if out["mismatches"] else 0
