"""``make bench-onchip``: fully integer (on-chip) training vs host-assisted votes.

For each data set (digits, mnist5k, and fashion when its IDX files are present) both vote
sources train the same architecture for the same number of epochs on the CPU trainer, with
their default settings, for each of the data set's seeds: ``--rule golden`` (host-assisted
STE votes, minibatches) and ``--votes integer`` (``--rule onchip``: the SPEC §12 step per
sample). Defaults: digits 64-256-10 x 10 epochs, seeds 0-3; mnist5k 784-256-10 x 3 epochs,
seeds 0-3; fashion 784-256-10 x 1 epoch, seed 0. The gap is the mean host-assisted minus the
mean integer final accuracy over the seeds. Reported: final and best test accuracy, the CPU
trainer's training samples/s, the cycle model's cycles per training sample of the row-serial
on-chip datapath (:func:`bitswarm.sim.onchip.cycles_per_sample`) and the modeled on-chip
training samples/s at a clock of ``--fmax`` MHz (default: the Fmax that ``make synth-report``
measured for the ``onchip-trainer`` case in bench/results/synth.json -- the digits network
64-256-10 on an ECP5-85F; 100 MHz, stated as an assumption, when that case is missing). Per data
set, ``--check-samples`` (default 200) samples continue training the integer-trained model on the
virtual accelerator and on the RTL trainer (Verilator, ``bitswarm sim --backend verilator
--train``), both checked against golden (state, predictions and error flags); the Verilator run
also measures the cycles per sample, which must equal the cycle model.

Hardware (``--boards``, default ``digits=ulx3s,mnist5k=ulx3s,small=icebreaker``): for each
data set so named, the trainer fold the fitter chooses for the board
(:func:`bitswarm.hw.resources.board_trainer_fold`) is built as a real trainer bitstream behind
its UART link (:func:`bitswarm.hw.bitstream.build_trainer_bitstream`: YoWASP yosys + nextpnr,
clock ``--clock``), and the modeled on-chip rate is the cycle model at that fold times the
post-place-and-route Fmax of that build (the 784-input trainer is synthesized for itself, not
given the 64-input Fmax). ``small`` is the digits network for the iCEBreaker: the widest
hidden layer of ``--small-hidden`` whose trainer the fitter fits on the UP5K. The Verilator
check runs at the same fold. Resources: the model's estimate
(:func:`bitswarm.hw.resources.estimate_trainer`) beside the actual post-PnR counts.

Writes bench/results/onchip.json and onchip.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.model import Model, ModelConfig, save_model
from bitswarm.golden.onchip import OnChipConfig, onchip_train
from bitswarm.hw.bitstream import ToolError
from bitswarm.hw.plan import TrainerFold, cycles_per_sample
from bitswarm.hw.resources import PARTS, board_trainer_fold, estimate_trainer
from bitswarm.sim.onchip import VirtualTrainer
from bitswarm.train import TrainConfig, load_dataset, train
from bitswarm.train.rule_onchip import ONCHIP_FLIP
from bitswarm.train.trainer import default_flip

RESULTS = Path(__file__).resolve().parent / "results"


def _run(rule: str, ds: str, arch, epochs: int, seed: int, tmp: Path, data_dir) -> dict:
    flip = ONCHIP_FLIP if rule == "onchip" else default_flip(1)
    # batch 128 and (host-assisted) homeostasis shift 12: the settings bench/results/onchip.md
    # was measured with (the trainer's defaults before issue 17's last change, train/RULES.md)
    opts = {"homeostasis_shift": 12} if rule == "golden" else {}
    cfg = TrainConfig(dataset=ds, arch=arch, epochs=epochs, rule=rule, seed=seed, flip=flip,
                      batch_size=128, options=opts)
    print(f"  {ds} seed {seed}: {rule} ({'integer' if rule == 'onchip' else 'host-assisted'} votes), "
          f"{epochs} epochs ...", end="", flush=True)
    t0 = time.perf_counter()
    res = train(cfg, out=tmp / f"{ds}-{rule}-s{seed}.bsm", quiet=True, plots=False, data_dir=data_dir,
                overwrite=True)
    accs = [m["test_accuracy"] for m in res.metrics]
    sps = [m["train_samples_per_s"] for m in res.metrics]
    sec = time.perf_counter() - t0
    print(f" {sec:.0f} s, test accuracy per epoch {' '.join(f'{100 * a:.2f}' for a in accs)} %", flush=True)
    return {"rule": rule, "seed": seed, "final_accuracy": accs[-1], "best_accuracy": max(accs),
            "accuracy_per_epoch": accs, "train_samples_per_s": float(np.median(sps)),
            "seconds": sec, "model": res.model,
            "settings": {"batch_size": res.config.batch_size, "options": dataclasses.asdict(res.rule.opts),
                         "flip": {k: v for k, v in res.config.flip.to_dict().items() if k != "lfsr"}}}


def _summary(runs: list[dict]) -> dict:
    f = [r["final_accuracy"] for r in runs]
    return {"seeds": [r["seed"] for r in runs], "final_accuracy": f,
            "mean_final_accuracy": float(np.mean(f)), "min_final_accuracy": min(f),
            "max_final_accuracy": max(f),
            "train_samples_per_s": float(np.median([r["train_samples_per_s"] for r in runs])),
            "runs": [{k: v for k, v in r.items() if k != "model"} for r in runs]}


def _seeds(text: str) -> list[int]:
    """``"0-3"`` -> [0, 1, 2, 3]; ``"4"`` -> [4]."""
    if "-" in text:
        a, b = (int(t) for t in text.split("-"))
        return list(range(a, b + 1))
    return [int(text)]


def _check_virtual(model: Model, ds, n: int = 200) -> int:
    oc = OnChipConfig.from_meta(model.cfg.meta)
    x = np.ascontiguousarray(ds.x_train[:n].reshape(n, -1))
    y = ds.y_train[:n]
    vt = VirtualTrainer(model, oc)
    vt.train(x, y)
    gold = Model(model.cfg, [w.clone() for w in model.weights], [t.clone() for t in model.theta],
                 [v.clone() for v in model.invert], [a.clone() for a in model.acc], model.lfsr_state)
    onchip_train(oc, gold, torch.from_numpy(x), torch.from_numpy(y))
    got = vt.export()
    bad = int(got.lfsr_state != gold.lfsr_state)
    for name in ("weights", "acc", "theta"):
        bad += sum(int((a != b).sum()) for a, b in zip(getattr(got, name), getattr(gold, name), strict=True))
    return bad


def _check_verilator(model: Model, ds_name: str, tmp: Path, n: int, data_dir, fold: str | None) -> dict:
    """``bitswarm sim MODEL --backend verilator --train --limit n --json [--fold F]`` on ``model``
    (a fresh process: builds the RTL trainer at that fold, trains, compares with golden)."""
    path = tmp / f"{ds_name}-verilator-check.bsm"
    save_model(model, path)
    cmd = [sys.executable, "-m", "bitswarm", "sim", str(path), "--backend", "verilator", "--train",
           "--dataset", ds_name, "--limit", str(n), "--json"]
    if fold:
        cmd += ["--fold", fold]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    print(f"  {ds_name}: RTL trainer on Verilator, fold {fold or 'default'}, {n} samples (build + run) ...",
          end="", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    sec = time.perf_counter() - t0
    if r.returncode not in (0, 1) or not r.stdout.strip():
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    print(f" {sec:.0f} s: mismatches {rep['mismatches']}, {rep['cycles_per_sample']} cycles/sample "
          f"(model {rep['cycles_per_sample_model']})", flush=True)
    return rep | {"seconds_build_and_run": sec}


def _fold_text(fold) -> str:
    return ",".join(f"{pe}x{simd}" for pe, simd in fold.layers)


def _small_archs(ds, hiddens: list[int], board: str) -> list[tuple]:
    """The ``(N, H, C)`` of ``hiddens`` whose trainer the fitter fits on ``board``, widest first
    (the bench builds the first and falls back to the next when place and route fails)."""
    out = []
    for h in sorted(hiddens, reverse=True):
        cfg = ModelConfig.mlp([ds.n_inputs, h, ds.classes], input_bits=8, flip=ONCHIP_FLIP)
        try:
            board_trainer_fold(cfg, board)
        except ConfigError as e:
            print(f"  small: {ds.n_inputs}-{h}-{ds.classes} does not fit the {board}: {e}", flush=True)
            continue
        out.append((ds.n_inputs, h, ds.classes))
    if not out:
        raise ConfigError(f"no hidden width of {hiddens} fits the {board}")
    return out


def _build(model: Model, board: str, fold, clock_mhz: float | None, tmp: Path, tag: str,
           timeout_s: float) -> dict:
    from bitswarm.hw.bitstream import build_trainer_bitstream

    fam = PARTS[board]["family"]
    est = estimate_trainer(model.cfg, fold, fam, board=True).totals()
    print(f"  {tag}: trainer bitstream for {board}, fold {_fold_text(fold)} (estimate {est['luts']} LUT, "
          f"{est['brams']} BRAM), clock {clock_mhz or 'default'} MHz ...", end="", flush=True)
    t0 = time.perf_counter()
    rec = build_trainer_bitstream(model, board, tmp / f"{tag}-{board}", fold=fold,
                                  clock_hz=clock_mhz * 1e6 if clock_mhz else None, timeout_s=timeout_s)
    sec = time.perf_counter() - t0
    print(f" {sec:.0f} s: {rec['luts']} LUT, {rec['ffs']} FF, {rec['brams']} BRAM, Fmax "
          f"{rec['fmax_mhz']} MHz at {rec['clock_mhz']} MHz (timing {'met' if rec['timing_met'] else 'NOT met'})",
          flush=True)
    keep = ("board", "device", "luts", "ffs", "brams", "fmax_mhz", "clock_mhz", "timing_met",
            "cycles_per_sample", "samples_per_s", "uart_samples_per_s", "fold", "baud")
    return {k: rec.get(k) for k in keep} | {"estimate": est, "seconds": sec}


def _kv(text: str) -> dict:
    return dict(kv.split("=") for kv in text.split(",") if kv)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="digits,mnist5k,fashion,small",
                    help="data sets (small: the iCEBreaker digits network)")
    ap.add_argument("--epochs", default="digits=10,mnist5k=3,fashion=1,small=10",
                    help="epochs per data set (same for both vote sources)")
    ap.add_argument("--seeds", default="digits=0-3,mnist5k=0-3,fashion=0,small=0-1",
                    help="seeds per data set, a range A-B or one seed (same for both vote sources)")
    ap.add_argument("--hidden", type=int, default=256, help="hidden width (one hidden layer)")
    ap.add_argument("--small-hidden", default="128,96,64,48,32,16",
                    help="hidden widths tried for the iCEBreaker digits trainer, widest first")
    ap.add_argument("--boards", default="digits=ulx3s,mnist5k=ulx3s,small=icebreaker",
                    help="data set=board: build that data set's trainer bitstream at the fitter's fold "
                    "(empty: no builds; the clock then comes from --fmax)")
    ap.add_argument("--clock", default="ulx3s=60,icebreaker=18",
                    help="board=MHz requested of the trainer build (the PLL clock nextpnr is asked for)")
    ap.add_argument("--fill", default="digits=0.5",
                    help="data set or board=fraction of the LUTs the trainer fitter plans for (default: digits 0.5, "
                    "so that synthesis of the bench's builds stays within --build-timeout; other boards "
                    "the fitter's default, hw/resources.py TRAINER_FILL)")
    ap.add_argument("--build-timeout", type=float, default=1500, help="seconds per trainer build")
    ap.add_argument("--folds", default="",
                    help="data set=trainer fold (PExSIMD per layer joined by '+', e.g. digits=8x64+1x256) "
                    "for data sets without a board build (default: the unfolded trainer)")
    ap.add_argument("--fmax", type=float, default=None,
                    help="clock in MHz for the modeled rate of data sets without a build")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--check-samples", type=int, default=200,
                    help="samples of the virtual and Verilator bit-exactness checks (0: skip Verilator)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    epochs = {k: int(v) for k, v in _kv(args.epochs).items()}
    seeds = {k: _seeds(v) for k, v in _kv(args.seeds).items()}
    boards, clocks = _kv(args.boards), {k: float(v) for k, v in _kv(args.clock).items()}
    fills = {k: float(v) for k, v in _kv(args.fill).items()}
    folds = {k: v.replace("+", ",") for k, v in _kv(args.folds).items()}
    t_start = time.perf_counter()
    rows, builds = [], {}
    with tempfile.TemporaryDirectory() as td:
        for name in args.datasets.split(","):
            dsname = "digits" if name == "small" else name
            try:
                ds = load_dataset(dsname, args.data_dir)
            except Exception as e:  # fashion is optional
                rows.append({"dataset": name, "skipped": str(e).splitlines()[0]})
                print(f"{name}: skipped ({str(e).splitlines()[0]})", flush=True)
                continue
            board = boards.get(name)
            if name == "small":
                cands = _small_archs(ds, [int(v) for v in args.small_hidden.split(",")], board or "icebreaker")
            else:
                cands = [(ds.n_inputs, args.hidden, ds.classes)]
            e = epochs.get(name, 1)
            ss = seeds.get(name, [0])
            for n_try, arch in enumerate(cands):
                print(f"{name}: arch {'-'.join(map(str, arch))}, {e} epochs, seeds {ss} "
                      f"({time.perf_counter() - t_start:.0f} s so far)", flush=True)
                hosts, ints = [], []
                for sd in ss:
                    hosts.append(_run("golden", dsname, arch, e, sd, Path(td), args.data_dir))
                    ints.append(_run("onchip", dsname, arch, e, sd, Path(td), args.data_dir))
                host, integer = _summary(hosts), _summary(ints)
                model = ints[0]["model"]
                # the fold and clock: this data set's board build, or one of the same arch already built
                build = builds.get(tuple(arch)) if not board else None
                fold_board = board or (build["board"] if build else None)
                if fold_board:
                    fold = board_trainer_fold(model.cfg, fold_board, fill=fills.get(name, fills.get(fold_board)))
                elif name in folds:
                    fold = TrainerFold.parse(folds[name], model.cfg)
                else:
                    fold = None
                if board:
                    try:
                        build = _build(model, board, fold, clocks.get(board), Path(td), name,
                                       args.build_timeout)
                    except ToolError as err:  # over the part after all: the next smaller network
                        print(f" failed: {str(err).splitlines()[0]}", flush=True)
                        if n_try + 1 < len(cands):
                            continue
                        build = {"board": board, "error": str(err).splitlines()[0], "fmax_mhz": None}
                    builds[tuple(arch)] = build
                break
            cyc = cycles_per_sample(model.cfg, None, fold)
            if build and build["fmax_mhz"]:
                clock, clock_src = float(build["fmax_mhz"]), f"post-PnR Fmax, {build['board']} build"
            elif args.fmax:
                clock, clock_src = args.fmax, "--fmax"
            else:
                clock, clock_src = 60.0, ("ASSUMED 60 MHz: the build failed" if build else
                                          "ASSUMED 60 MHz: no build")
            chip = clock * 1e6 / cyc.total
            bad = _check_virtual(model, ds, max(1, args.check_samples))
            ver = (_check_verilator(model, dsname, Path(td), args.check_samples, args.data_dir,
                                    _fold_text(fold) if fold else None)
                   if args.check_samples > 0 else None)
            row = {
                "dataset": name, "data": dsname, "arch": list(arch), "epochs": e, "seeds": ss,
                "onchip_config": json.loads(model.cfg.meta["onchip"]),
                "flip": model.cfg.flip.to_dict(),
                "host_votes": host, "integer_votes": integer,
                "gap_points": 100 * (host["mean_final_accuracy"] - integer["mean_final_accuracy"]),
                "fold": _fold_text(fold) if fold else "default",
                "cycles_per_sample": cyc.total, "cycles": dataclasses.asdict(cyc),
                "clock_mhz": clock, "clock_source": clock_src, "build": build,
                "onchip_samples_per_s_modeled": chip,
                "speedup_vs_cpu_host": chip / host["train_samples_per_s"],
                "speedup_vs_cpu_integer": chip / integer["train_samples_per_s"],
                "check_samples": args.check_samples,
                "virtual_mismatches": bad, "verilator": ver,
            }
            rows.append(row)
            print(f"{name}: host-assisted {100 * host['mean_final_accuracy']:.2f} %, integer "
                  f"{100 * integer['mean_final_accuracy']:.2f} % (mean of {len(ss)} seeds), gap "
                  f"{row['gap_points']:.2f} points; fold {row['fold']}, {cyc.total} cycles/sample, modeled "
                  f"{chip:.0f} samples/s at {clock:g} MHz ({clock_src}) = {row['speedup_vs_cpu_host']:.1f}x "
                  f"CPU host; virtual mismatches {bad}", flush=True)
    out = {"date": time.strftime("%Y-%m-%d"), "host": platform.platform(),
           "rtl": "hw/onchip.py OnChipTrainer (folded: per layer pe rows x simd lanes per cycle); "
           "cycles per sample from its cycle model, checked against Verilator", "results": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "onchip.json").write_text(json.dumps(out, indent=2) + "\n")
    _markdown(rows, args, time.perf_counter() - t_start)
    return 0


def _markdown(rows, args, seconds: float) -> None:
    md = ["# On-chip (fully integer) training vs host-assisted votes", "",
          f"Generated by `make bench-onchip` (`python bench/bench_onchip.py`) on {time.strftime('%Y-%m-%d')}. "
          f"CPU trainer: 2 shared cores, {args.threads} torch thread(s). Both vote sources use their "
          "defaults (`--rule golden`; `--votes integer`, SPEC §12 with the top-rival margin rule). "
          "Accuracy: mean final test accuracy over the seeds (min-max in brackets); gap = host minus "
          "integer. The on-chip rate is the cycle model at the fold times the clock (the post-PnR Fmax "
          "of the trainer bitstream built in this run, where there is one).", "",
          "| data set | arch | epochs | seeds | host-assisted acc | integer acc | gap (points) | CPU host samples/s "
          "| CPU integer samples/s | fold | cycles/sample (model / Verilator) | clock MHz | modeled on-chip "
          "samples/s | x CPU integer | x CPU host | mismatches virtual / Verilator |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def acc(v):
        return (f"{100 * v['mean_final_accuracy']:.2f} % ({100 * v['min_final_accuracy']:.1f}-"
                f"{100 * v['max_final_accuracy']:.1f})")

    for r in rows:
        if "skipped" in r:
            md.append(f"| {r['dataset']} | skipped: {r['skipped']} ||||||||||||||")
            continue
        h, i, v = r["host_votes"], r["integer_votes"], r["verilator"]
        sd = f"{r['seeds'][0]}-{r['seeds'][-1]}" if len(r["seeds"]) > 1 else str(r["seeds"][0])
        md.append(f"| {r['dataset']} | {'-'.join(map(str, r['arch']))} | {r['epochs']} | {sd} | "
                  f"{acc(h)} | {acc(i)} | "
                  f"{r['gap_points']:.2f} | {h['train_samples_per_s']:.0f} | {i['train_samples_per_s']:.0f} | "
                  f"`{r['fold']}` | {r['cycles_per_sample']} / {v['cycles_per_sample'] if v else 'n/a'} | "
                  f"{r['clock_mhz']:.1f}{'' if r['clock_source'].startswith('post-PnR') else ' (assumed)'} | "
                  f"{r['onchip_samples_per_s_modeled']:.0f} | "
                  f"{r['speedup_vs_cpu_integer']:.1f} | **{r['speedup_vs_cpu_host']:.1f}** | "
                  f"{r['virtual_mismatches']} / {v['mismatches'] if v else 'n/a'} |")
    built = [r for r in rows if r.get("build") and r["dataset"] != "fashion"]
    if built:
        md += ["", "## Trainer bitstreams (built in this run)", "",
               "| data set | board | arch | fold | LUT est. / actual | FF est. / actual | BRAM est. / actual "
               "| Fmax MHz | clock MHz | timing | UART-bound samples/s |",
               "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in built:
            b = r["build"]
            if b.get("error"):
                md.append(f"| {r['dataset']} | {b['board']} | {'-'.join(map(str, r['arch']))} | `{r['fold']}` | "
                          f"build failed: {b['error']} ||||||||")
                continue
            est = b["estimate"]
            md.append(f"| {r['dataset']} | {b['board']} ({b['device']}) | {'-'.join(map(str, r['arch']))} | "
                      f"`{r['fold']}` | {est['luts']} / {b['luts']} | {est['ffs']} / {b['ffs']} | "
                      f"{est['brams']} / {b['brams']} | {b['fmax_mhz']} | {b['clock_mhz']} | "
                      f"{'met' if b['timing_met'] else 'NOT met'} | {b['uart_samples_per_s']} |")
    done = [r for r in rows if "skipped" not in r]
    if done:
        r0 = done[0]
        md += ["", f"Integer-vote constants (§12 `OnChipConfig`, {r0['dataset']}): "
               f"`{json.dumps(r0['onchip_config'], sort_keys=True)}`; flip rule: "
               f"`{json.dumps({k: v for k, v in r0['flip'].items() if k != 'lfsr'}, sort_keys=True)}`.",
               f"Host-assisted (`--rule golden`) settings: "
               f"`{json.dumps(r0['host_votes']['runs'][0]['settings'], sort_keys=True)}`.",
               f"Checks: {args.check_samples} training samples continuing from the integer-trained "
               "model (seed of the first run) on the virtual accelerator and on the RTL trainer "
               "(Verilator, at the row's fold); mismatches count state elements (weights, accumulators, "
               "thresholds, LFSR) plus predictions and error flags that differ from golden. x CPU integer: "
               "modeled on-chip rate / the CPU trainer running the same integer per-sample step; "
               "x CPU host: / the host-assisted minibatch trainer (128 samples per flip step), both "
               "measured in this run. Fashion reuses the mnist5k build (same arch and fold). Clock per row: "
               + "; ".join(f"{r['dataset']}: {r['clock_source']}" for r in done) + ".",
               f"Total bench time {seconds:.0f} s."]
    (RESULTS / "onchip.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    raise SystemExit(main())
