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
from bitswarm.golden.model import Model, save_model
from bitswarm.golden.onchip import OnChipConfig, onchip_train
from bitswarm.sim.onchip import VirtualTrainer, cycles_per_sample
from bitswarm.train import TrainConfig, load_dataset, train
from bitswarm.train.rule_onchip import ONCHIP_FLIP
from bitswarm.train.trainer import default_flip

RESULTS = Path(__file__).resolve().parent / "results"


def _synth_fmax(case: str = "onchip-trainer") -> float | None:
    p = RESULTS / "synth.json"
    if not p.exists():
        return None
    cases = json.loads(p.read_text()).get("cases", {})
    dev = cases.get(case, {}).get("devices", {})
    f = [d.get("pnr", {}).get("fmax_mhz") for d in dev.values()]
    f = [v for v in f if v]
    return max(f) if f else None


def _run(rule: str, ds: str, arch, epochs: int, seed: int, tmp: Path, data_dir) -> dict:
    flip = ONCHIP_FLIP if rule == "onchip" else default_flip(1)
    cfg = TrainConfig(dataset=ds, arch=arch, epochs=epochs, rule=rule, seed=seed, flip=flip)
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


def _check_verilator(model: Model, ds_name: str, tmp: Path, n: int, data_dir) -> dict:
    """``bitswarm sim MODEL --backend verilator --train --limit n --json`` on ``model`` (a fresh
    process: builds the RTL trainer, trains, compares with golden)."""
    path = tmp / f"{ds_name}-verilator-check.bsm"
    save_model(model, path)
    cmd = [sys.executable, "-m", "bitswarm", "sim", str(path), "--backend", "verilator", "--train",
           "--dataset", ds_name, "--limit", str(n), "--json"]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    print(f"  {ds_name}: RTL trainer on Verilator, {n} samples (build + run) ...", end="", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    sec = time.perf_counter() - t0
    if r.returncode not in (0, 1) or not r.stdout.strip():
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    print(f" {sec:.0f} s: mismatches {rep['mismatches']}, {rep['cycles_per_sample']} cycles/sample "
          f"(model {rep['cycles_per_sample_model']})", flush=True)
    return rep | {"seconds_build_and_run": sec}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="digits,mnist5k,fashion")
    ap.add_argument("--epochs", default="digits=10,mnist5k=3,fashion=1",
                    help="epochs per data set (same for both vote sources)")
    ap.add_argument("--seeds", default="digits=0-3,mnist5k=0-3,fashion=0",
                    help="seeds per data set, a range A-B or one seed (same for both vote sources)")
    ap.add_argument("--hidden", type=int, default=256, help="hidden width (one hidden layer)")
    ap.add_argument("--fmax", type=float, default=None, help="clock in MHz for the modeled rate")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--check-samples", type=int, default=200,
                    help="samples of the virtual and Verilator bit-exactness checks (0: skip Verilator)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    epochs = dict((k, int(v)) for k, v in (kv.split("=") for kv in args.epochs.split(",")))
    seeds = dict((k, _seeds(v)) for k, v in (kv.split("=") for kv in args.seeds.split(",")))
    t_start = time.perf_counter()
    fmax = args.fmax or _synth_fmax()
    fmax_src = ("--fmax" if args.fmax else "bench/results/synth.json") if fmax else \
        "assumed 100 MHz (bench/results/synth.json has no on-chip trainer case)"
    fmax = fmax or 100.0
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for name in args.datasets.split(","):
            try:
                ds = load_dataset(name, args.data_dir)
            except Exception as e:  # fashion is optional
                rows.append({"dataset": name, "skipped": str(e).splitlines()[0]})
                print(f"{name}: skipped ({str(e).splitlines()[0]})", flush=True)
                continue
            arch = (ds.n_inputs, args.hidden, ds.classes)
            e = epochs.get(name, 1)
            ss = seeds.get(name, [0])
            print(f"{name}: arch {'-'.join(map(str, arch))}, {e} epochs, seeds {ss} "
                  f"({time.perf_counter() - t_start:.0f} s so far)", flush=True)
            hosts, ints = [], []
            for sd in ss:
                hosts.append(_run("golden", name, arch, e, sd, Path(td), args.data_dir))
                ints.append(_run("onchip", name, arch, e, sd, Path(td), args.data_dir))
            host, integer = _summary(hosts), _summary(ints)
            cyc = cycles_per_sample(ints[0]["model"].cfg)
            chip = fmax * 1e6 / cyc.total
            bad = _check_virtual(ints[0]["model"], ds, max(1, args.check_samples))
            ver = (_check_verilator(ints[0]["model"], name, Path(td), args.check_samples, args.data_dir)
                   if args.check_samples > 0 else None)
            row = {
                "dataset": name, "arch": list(arch), "epochs": e, "seeds": ss,
                "onchip_config": json.loads(ints[0]["model"].cfg.meta["onchip"]),
                "flip": ints[0]["model"].cfg.flip.to_dict(),
                "host_votes": host, "integer_votes": integer,
                "gap_points": 100 * (host["mean_final_accuracy"] - integer["mean_final_accuracy"]),
                "cycles_per_sample": cyc.total, "cycles": dataclasses.asdict(cyc),
                "onchip_samples_per_s_modeled": chip,
                "speedup_vs_cpu_host": chip / host["train_samples_per_s"],
                "speedup_vs_cpu_integer": chip / integer["train_samples_per_s"],
                "check_samples": args.check_samples,
                "virtual_mismatches": bad, "verilator": ver,
            }
            rows.append(row)
            print(f"{name}: host-assisted {100 * host['mean_final_accuracy']:.2f} %, integer "
                  f"{100 * integer['mean_final_accuracy']:.2f} % (mean of {len(ss)} seeds), gap "
                  f"{row['gap_points']:.2f} points; {cyc.total} cycles/sample, modeled "
                  f"{chip:.0f} samples/s at {fmax:g} MHz; virtual mismatches {bad}", flush=True)
    out = {"date": time.strftime("%Y-%m-%d"), "host": platform.platform(), "fmax_mhz": fmax,
           "fmax_source": fmax_src, "rtl": "hw/onchip.py OnChipTrainer (row-serial datapath); "
           "cycles per sample from its cycle model, checked against Verilator", "results": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "onchip.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["# On-chip (fully integer) training vs host-assisted votes", "",
          f"Clock for the modeled rate: {fmax:g} MHz ({fmax_src}). CPU trainer: 2 shared cores, "
          f"{args.threads} torch thread(s). Both vote sources use their defaults (`--rule golden`; `--votes integer`, "
          "SPEC §12 with the top-rival margin rule). Accuracy: mean final test accuracy over the "
          "seeds (min-max in brackets); gap = host minus integer.", "",
          "| data set | arch | epochs | seeds | host-assisted acc | integer acc | gap (points) | CPU host samples/s "
          "| CPU integer samples/s | cycles/sample (model / Verilator) | modeled on-chip samples/s | x CPU integer "
          "| x CPU host | mismatches virtual / Verilator |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def acc(v):
        return (f"{100 * v['mean_final_accuracy']:.2f} % ({100 * v['min_final_accuracy']:.1f}-"
                f"{100 * v['max_final_accuracy']:.1f})")

    for r in rows:
        if "skipped" in r:
            md.append(f"| {r['dataset']} | skipped: {r['skipped']} |||||||||||||")
            continue
        h, i, v = r["host_votes"], r["integer_votes"], r["verilator"]
        sd = f"{r['seeds'][0]}-{r['seeds'][-1]}" if len(r["seeds"]) > 1 else str(r["seeds"][0])
        md.append(f"| {r['dataset']} | {'-'.join(map(str, r['arch']))} | {r['epochs']} | {sd} | "
                  f"{acc(h)} | {acc(i)} | "
                  f"{r['gap_points']:.2f} | {h['train_samples_per_s']:.0f} | {i['train_samples_per_s']:.0f} | "
                  f"{r['cycles_per_sample']} / {v['cycles_per_sample'] if v else 'n/a'} | "
                  f"{r['onchip_samples_per_s_modeled']:.0f} | {r['speedup_vs_cpu_integer']:.1f} | "
                  f"{r['speedup_vs_cpu_host']:.1f} | {r['virtual_mismatches']} / "
                  f"{v['mismatches'] if v else 'n/a'} |")
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
               "(Verilator); mismatches count state elements (weights, accumulators, thresholds, "
               "LFSR) plus predictions and error flags that differ from golden. x CPU integer: "
               "modeled on-chip rate / the CPU trainer running the same integer per-sample step; "
               "x CPU host: / the host-assisted minibatch trainer (128 samples per flip step). "
               "The synthesized trainer is the digits network; wider first layers (784 inputs) "
               "have a deeper popcount and would clock lower than that Fmax.",
               f"Total bench time {time.perf_counter() - t_start:.0f} s."]
    (RESULTS / "onchip.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
