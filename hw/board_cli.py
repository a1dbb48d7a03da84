"""``bitswarm bitstream`` (board builds with the open tools) and ``bitswarm fold`` (the fold
optimizer). ``bitswarm run`` (a board over its UART link) is host software: :mod:`bitswarm.sim.cli`."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "BOARD_CHOICES"]

BOARD_CHOICES = ("icebreaker", "ulx3s", "arty")


def register(sub: argparse._SubParsersAction) -> None:
    from .plan import add_fold_args

    p = sub.add_parser(
        "bitstream", help="build a board bitstream (iCEBreaker, ULX3S) or Vivado sources (Arty)")
    p.add_argument("model", help="model file (.bsm)")
    p.add_argument("--board", required=True, choices=BOARD_CHOICES)
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="core clock (default: the board's; with --train its oscillator, 12 / 25 MHz; a PLL "
                   "makes any other from the oscillator)")
    p.add_argument("--baud", type=int, default=115200, help="UART rate (default 115200)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--overwrite", action="store_true",
                   help="build into an output folder that already holds files (refused without it)")
    p.add_argument("--train", action="store_true",
                   help="build the on-chip trainer behind the UART (TRAIN/READ/INFO protocol, "
                   "hw/onchip_board.py) instead of the accelerator; drive it with `bitswarm run "
                   "MODEL --train`")
    p.add_argument("--trainer-fold", metavar="PExSIMD,...|FILE", default=None,
                   help="with --train: the trainer fold, one PExSIMD pair per layer (e.g. 8x64,5x256) "
                   "or a trainer fold file (default: the trainer fitter's fold for the board, "
                   "hw/resources.py board_trainer_fold)")
    p.add_argument("--in-lanes", type=int, default=None,
                   help="with --train: pixels per trainer input transfer (default min(N, 64))")
    add_fold_args(p)
    p.set_defaults(func=_cmd_bitstream)

    f = sub.add_parser(
        "fold", help="the fold optimizer: write the fold that maximizes streaming throughput "
        "on a board (or a LUT/BRAM budget)",
        description="Write a fold file (JSON, one entry per layer: pe, simd, pipeline, mem) for "
        "MODEL: the fastest streaming interval whose resource estimate fits the board's part "
        f"(planning for {int(100 * 0.75)} %% of its LUTs, or --fill, UART link included) or the given "
        "budget; with --target-fps, the most folded plan (fewest LUTs) that reaches it.")
    f.add_argument("model", help="model file (.bsm)")
    f.add_argument("--board", choices=BOARD_CHOICES, default=None)
    f.add_argument("--fill", type=float, default=None,
                   help="fraction of the board's LUTs to plan for (with --board; default 0.75)")
    f.add_argument("--luts", type=int, default=None, help="LUT budget (instead of --board)")
    f.add_argument("--brams", type=int, default=None, help="block RAM budget (with --luts)")
    f.add_argument("--family", choices=("ice40", "ecp5"), default="ecp5",
                   help="resource model for --luts/--brams (default ecp5)")
    f.add_argument("--target-fps", type=float, default=None,
                   help="images per second to reach with the fewest LUTs (at --clock-mhz)")
    f.add_argument("--clock-mhz", type=float, default=None,
                   help="clock for --target-fps (default: the board's core clock)")
    f.add_argument("-o", "--out", required=True, metavar="FILE", help="fold file to write")
    f.add_argument("--overwrite", action="store_true", help="replace an existing fold file")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.set_defaults(func=_cmd_fold)


def _cmd_bitstream(args) -> int:
    from bitswarm.golden.errors import ConfigError
    from bitswarm.golden.files import check_outputs
    from bitswarm.golden.model import load_model

    from .bitstream import build_bitstream
    from .plan import plan_from_args
    from .resources import board_fold

    check_outputs([], folders=[args.out], overwrite=args.overwrite)
    if args.clock_mhz is not None and not 0 < args.clock_mhz < float("inf"):
        raise ConfigError(f"--clock-mhz must be a positive number, not {args.clock_mhz}")
    if args.train:
        return _cmd_trainer_bitstream(args)
    for flag in ("trainer_fold", "in_lanes"):
        if getattr(args, flag) is not None:
            raise ConfigError(f"--{flag.replace('_', '-')} needs --train")
    model = load_model(args.model)
    plan = plan_from_args(model.cfg, args, default=lambda cfg: board_fold(cfg, args.board))
    clock = args.clock_mhz * 1e6 if args.clock_mhz is not None else None
    rec = build_bitstream(model, args.board, args.out, plan=plan, clock_hz=clock,
                          baud=args.baud, seed=args.seed)
    keys = ("board", "bitstream", "luts", "ffs", "brams", "fmax_mhz", "clock_mhz", "timing_met",
            "images_per_s")
    out = {k: rec[k] for k in keys} | {k: v for k, v in rec.items() if k not in keys}
    if args.json:
        print(json.dumps(out))
    elif rec["bitstream"]:
        e = rec["estimate"]
        print(f"{rec['bitstream']}: {rec['luts']}/{rec['lut_total']} LUT cells (estimate "
              f"{e['luts']}), {rec['ffs']} FF (estimate {e['ffs']}), {rec['brams']}/"
              f"{rec['bram_total']} BRAM (estimate {e['brams']}), Fmax {rec['fmax_mhz']} MHz at "
              f"{rec['clock_mhz']} MHz (timing {'met' if rec['timing_met'] else 'NOT met'}), "
              f"interval {rec['interval_cycles']} cycles: {rec['images_per_s']} images/s "
              f"streaming, latency {rec['latency_cycles']} cycles; fold in "
              f"{args.out}/bitswarm_board.fold.json")
    else:
        print(f"{args.out}: {rec['note']}")
    return 0 if rec["timing_met"] is not False else 1


def _cmd_trainer_bitstream(args) -> int:
    from bitswarm.golden.errors import ConfigError
    from bitswarm.golden.model import load_model

    from .bitstream import build_trainer_bitstream
    from .onchip_board import check_trainable
    from .plan import TrainerFold

    given = [n for n in ("fold", "pe", "simd", "pipeline") if getattr(args, n, None) is not None]
    if given:
        raise ConfigError(f"--{'/--'.join(given)} fold the accelerator; with --train give "
                          "--trainer-fold PExSIMD,...")
    model = load_model(args.model)
    try:
        check_trainable(model)
    except ConfigError as e:
        raise ConfigError(f"{args.model}: {e}") from None
    fold = TrainerFold.parse(args.trainer_fold, model.cfg) if args.trainer_fold is not None else None
    clock = args.clock_mhz * 1e6 if args.clock_mhz is not None else None
    rec = build_trainer_bitstream(model, args.board, args.out, in_lanes=args.in_lanes, fold=fold,
                                  clock_hz=clock, baud=args.baud, seed=args.seed)
    if args.json:
        print(json.dumps(rec))
    elif rec["bitstream"]:
        print(f"{rec['bitstream']}: on-chip trainer, {rec['luts']}/{rec['lut_total']} LUT cells, "
              f"{rec['ffs']} FF, {rec['brams']}/{rec['bram_total']} BRAM, Fmax {rec['fmax_mhz']} MHz "
              f"at {rec['clock_mhz']} MHz (timing {'met' if rec['timing_met'] else 'NOT met'}), "
              f"{rec['cycles_per_sample']} cycles per sample: {rec['samples_per_s']} samples/s "
              f"on chip, {rec['uart_samples_per_s']} samples/s over the link at {rec['baud']} "
              f"baud; config hash {rec['info']['config_hash']}")
    else:
        print(f"{args.out}: {rec['note']}")
    return 0 if rec["timing_met"] is not False else 1


def _cmd_fold(args) -> int:
    from bitswarm.golden.errors import ConfigError
    from bitswarm.golden.model import load_model

    from .board import board_spec
    from .resources import FILL, PARTS, estimate, optimize

    if (args.board is None) == (args.luts is None):
        raise ConfigError("give either --board or --luts (with --brams)")
    if args.luts is not None and args.brams is None:
        raise ConfigError("--luts needs --brams")
    fill = FILL if args.fill is None else args.fill
    if args.fill is not None and (args.board is None or not 0 < fill <= 1):
        raise ConfigError(f"--fill needs --board and a value in (0, 1], not {args.fill!r}")
    model = load_model(args.model)
    if args.board is not None:
        part = PARTS[args.board]
        family, luts, brams = part["family"], int(part["luts"] * fill), part["brams"]
        clock = args.clock_mhz * 1e6 if args.clock_mhz else board_spec(args.board).clock_hz
    else:
        family, luts, brams = args.family, args.luts, args.brams
        clock = args.clock_mhz * 1e6 if args.clock_mhz else None
    target = None
    if args.target_fps is not None:
        if not args.target_fps > 0:
            raise ConfigError(f"--target-fps must be positive, not {args.target_fps}")
        if clock is None or not clock > 0:
            raise ConfigError("--target-fps with --luts needs --clock-mhz")
        target = max(1, int(clock // args.target_fps))
    plan = optimize(model.cfg, luts=luts, brams=brams, family=family, target_interval=target,
                    board=args.board is not None)
    plan.write(args.out, overwrite=args.overwrite)
    est = estimate(plan, family, board=args.board is not None)
    out = {"fold_file": args.out, "fold": plan.to_dict(), "interval_cycles": plan.interval_cycles(),
           "latency_cycles": plan.latency_cycles(), "estimate": est.totals(),
           "stages": est.table(), "budget": {"luts": luts, "brams": brams, "family": family}}
    if clock:
        out["clock_mhz"] = clock / 1e6
        out["images_per_s"] = round(clock / plan.interval_cycles(), 1)
    if args.json:
        print(json.dumps(out))
    else:
        t = est.totals()
        print(f"wrote {args.out}: " + ", ".join(
            f"L{i}(pe={f.pe},simd={f.simd},pipeline={f.pipeline})" for i, f in enumerate(plan.folds))
            + f"; interval {plan.interval_cycles()} cycles"
            + (f" = {out['images_per_s']:,} images/s at {clock / 1e6:g} MHz" if clock else "")
            + f"; estimate {t['luts']} LUTs, {t['ffs']} FFs, {t['brams']} BRAMs "
              f"(budget {luts} LUTs, {brams} BRAMs, {family})")
    return 0
