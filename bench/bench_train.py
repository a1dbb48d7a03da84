"""Training benchmark: every rule on every offline data set, same budget (``make bench-train``).

Writes ``bench/results/train.json`` and ``bench/results/train.md``: per rule and data set the
final and best test accuracy (golden forward pass for exportable rules), epochs, wall time and
training samples/s, the golden rule's samples/s relative to ``ste-adam`` on the same network in
the same run, and the no-collapse check (golden rule, mnist5k, 60 epochs: final accuracy
>= best - 1 point). Fashion-MNIST runs only when its IDX files are installed
(``apt-get install dataset-fashion-mnist``) or ``--data-dir`` is given.

CNN rows (data-set keys ``digits-cnn`` and ``fashion-cnn``, not in the default list): every
rule trains the same convolutional network (:data:`CNN`: arch, batch, epochs; the golden
rule's conv options and flip threshold, recorded in the model file), the float reference
being the float CNN of that arch. Run them with ``--datasets digits-cnn,fashion-cnn --merge``.

Golden-rule rows of issue 17 (keys of :data:`VARIANTS`, in the default list): mnist5k with seeds
1 and 2 (the mnist5k target is the mean of seeds 0-2), swarms ``S = 4`` and ``S = 32`` on
mnist5k and Fashion-MNIST (same arch, i.e. logical width, batch and epochs as the ``S = 1`` row;
checked: S = 4 beats S = 1 by >= 1 point) and integer votes (``-int``: rule ``onchip``, i.e.
``bitswarm train --votes integer``, same arch and epochs; checked: within 1 point of the
host-assisted row). Each gets its own table below the main one.

Long parts can be run on their own: ``--datasets``, ``--rules``, ``--epochs-for
fashion=5`` and ``--collapse-epochs 0`` (skip the collapse check) select what runs;
``--merge`` keeps the rows already in ``train.json`` that this invocation does not re-run, so
a table can be completed piece by piece. Each run prints a ``[k/n]`` progress line (with
``--verbose`` also the trainer's progress bars and per-epoch lines). Results are written after
every run, so an interrupted bench keeps what it measured. ``--quick`` runs one epoch of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from bitswarm.golden.errors import BitswarmError
from bitswarm.train import TrainConfig, load_dataset, train
from bitswarm.train.trainer import DEFAULT_EPOCHS, arch_text, default_flip

RESULTS = Path(__file__).resolve().parent / "results"
#: Epochs per data set: the trainer's defaults (``bitswarm train`` without ``--epochs``).
EPOCHS = DEFAULT_EPOCHS
RULES = ("golden", "ste-adam", "bop", "float")
#: The no-collapse check: golden rule, this data set, this many epochs, final >= best - 1 point.
COLLAPSE_DATASET, COLLAPSE_EPOCHS, COLLAPSE_TOLERANCE = "mnist5k", 60, 0.01
#: Accuracy targets of the golden rule, checked against the final accuracy (issue 17; mnist5k:
#: the mean over the seeds of :data:`SEED_ROWS`).
TARGETS = {"digits": 0.985, "mnist5k": 0.945, "fashion": 0.88, "digits-cnn": 0.985, "fashion-cnn": 0.91}
#: Golden-rule-only rows (issue 17): key -> the data set and what differs from its S = 1 seed-0
#: row (swarm size, seed, the rule), same arch (logical width) and batch; ``epochs`` where the
#: CPU budget of the bench cannot give the data set's (S = 32 flips 32x the bits; the per-sample
#: integer rule trains ~300 samples/s, so 20 Fashion-MNIST epochs would take over an hour):
#: those rows are compared with the S = 1 / host run after as many epochs (its curve).
#: The integer-vote rows (``-int``) and their host-assisted twins (``-int-host``, golden rule,
#: otherwise its defaults) keep the network and batch the per-sample rule was measured at,
#: 784-512-10 and 128 (the integer rule trains ~40 samples/s at that width on this machine).
NARROW = (784, 512, 10)
INT_NET = {"arch": NARROW, "batch_size": 128}
VARIANTS = {
    "mnist5k-seed1": {"dataset": "mnist5k", "seed": 1},
    "mnist5k-seed2": {"dataset": "mnist5k", "seed": 2},
    "mnist5k-s4": {"dataset": "mnist5k", "swarm": 4},
    "mnist5k-s32": {"dataset": "mnist5k", "swarm": 32, "epochs": 3},
    "mnist5k-int": {"dataset": "mnist5k", "rule": "onchip", "epochs": 20, **INT_NET},
    "mnist5k-int-host": {"dataset": "mnist5k", "epochs": 20, **INT_NET},
    "fashion-s4": {"dataset": "fashion", "swarm": 4, "epochs": 3},
    "fashion-s32": {"dataset": "fashion", "swarm": 32, "epochs": 1},
    "fashion-int": {"dataset": "fashion", "rule": "onchip", "epochs": 1, **INT_NET},
    "fashion-int-host": {"dataset": "fashion", "epochs": 1, **INT_NET},
    # the swarm at the narrower 784-512-10 (S = 4: 1.6 M weight bits, as many as the default
    # S = 1 network), where S = 1 does not saturate the training set
    "mnist5k-512": {"dataset": "mnist5k", "arch": NARROW},
    "mnist5k-512-s4": {"dataset": "mnist5k", "arch": NARROW, "swarm": 4},
    "fashion-512": {"dataset": "fashion", "arch": NARROW},
    "fashion-512-s4": {"dataset": "fashion", "arch": NARROW, "swarm": 4},
}
#: Swarm comparisons: (S = 1 row, S = 4 row, S = 32 row or None), same arch, batch and seed.
SWARM_ROWS = (("mnist5k", "mnist5k-s4", "mnist5k-s32"), ("fashion", "fashion-s4", "fashion-s32"),
              ("mnist5k-512", "mnist5k-512-s4", None), ("fashion-512", "fashion-512-s4", None))
#: Rows whose mean final accuracy is checked against the data set's target.
SEED_ROWS = {"mnist5k": ("mnist5k", "mnist5k-seed1", "mnist5k-seed2")}
#: Swarm rows: S = 4 must beat S = 1 by this much (points of final accuracy).
SWARM_GAIN, ONCHIP_GAP = 0.01, 0.01
#: Epochs at which integer votes are compared with host-assisted ones.
ONCHIP_EPOCHS = 20
#: CNN rows: key -> the data set, the network and budget every rule gets, and the golden rule's
#: options (``options``) and flip threshold (``flip_threshold``; the other rules ignore both).
#: What ``make bench-train`` runs: every rule on the three data sets, then the golden rule's
#: extra seeds, swarm and integer-vote rows.
DEFAULT_DATASETS = ("digits", "mnist5k", "fashion", *VARIANTS)
CNN = {
    "digits-cnn": {"dataset": "digits", "arch": "1x8x8-c32k3p1-512-10", "epochs": 30,
                   "batch_size": 64, "options": {"homeostasis_shift": 12}, "flip_threshold": 32},
    "fashion-cnn": {"dataset": "fashion", "arch": "1x28x28-c32k3p1-mp2-512-10", "epochs": 3,
                    "batch_size": 64, "options": {"homeostasis_shift": 12}, "flip_threshold": 32},
}


def _run(key: str, rule: str, epochs: int, args, tmp: Path) -> dict:
    kw = {} if args.batch_size is None else {"batch_size": args.batch_size}
    dataset, swarm, seed = key, args.swarm, args.seed
    if key in VARIANTS:
        v = VARIANTS[key]
        dataset, swarm, seed = v["dataset"], v.get("swarm", swarm), v.get("seed", seed)
        rule = v.get("rule", rule)
        kw = {**{k: v[k] for k in ("arch", "batch_size") if k in v}, **kw}
    if key in CNN:
        c = CNN[key]
        dataset = c["dataset"]
        kw = {"arch": c["arch"], "batch_size": c["batch_size"], **kw,
              "flip": dataclasses.replace(default_flip(args.swarm), threshold=c["flip_threshold"])}
        if rule == "golden":
            kw["options"] = dict(c["options"])
    cfg = TrainConfig(dataset=dataset, rule=rule, epochs=epochs, seed=seed, swarm=swarm, **kw)
    out = tmp / f"{rule}-{key}.bsm" if rule != "float" else None
    t0 = time.perf_counter()
    res = train(cfg, out=out, run_dir=tmp / f"{rule}-{key}-{epochs}.run", data_dir=args.data_dir,
                quiet=not args.verbose, plots=False, overwrite=True)
    wall = time.perf_counter() - t0
    acc = [m["test_accuracy"] for m in res.metrics]
    samples = sum(m["steps"] for m in res.metrics) * res.config.batch_size
    train_s = sum(m["steps"] * res.config.batch_size / m["train_samples_per_s"]
                  for m in res.metrics if m["train_samples_per_s"] > 0)
    return {
        "rule": rule, "dataset": key, "seed": seed, "arch": arch_text(res.config.arch),
        "swarm": res.config.swarm, "batch_size": res.config.batch_size, "epochs": epochs,
        "final_accuracy": acc[-1], "best_accuracy": max(acc), "best_epoch": acc.index(max(acc)) + 1,
        "wall_s": wall, "train_samples_per_s": samples / train_s if train_s else 0.0,
        "exportable": out is not None, "accuracy_curve": acc,
        **({"options": cfg.options, "flip_threshold": cfg.flip.threshold} if key in CNN else {}),
    }


def _at_epoch(r: dict, epochs: int) -> float:
    """Test accuracy of run ``r`` after ``epochs`` epochs (its curve; the runs of one data set
    share the data order and no schedule depends on the total, so this is the shorter run's)."""
    return r["accuracy_curve"][min(epochs, len(r["accuracy_curve"])) - 1]


def _collapse(r: dict) -> dict:
    drop = r["best_accuracy"] - r["final_accuracy"]
    return {"dataset": r["dataset"], "rule": r["rule"], "epochs": r["epochs"],
            "final_accuracy": r["final_accuracy"], "best_accuracy": r["best_accuracy"],
            "best_epoch": r["best_epoch"], "drop": drop, "passed": drop <= COLLAPSE_TOLERANCE + 1e-12}


def _markdown(rows: list[dict], collapse: list[dict], meta: dict) -> str:
    lines = [
        "# Training benchmark (`make bench-train`)", "",
        f"Machine: {meta['machine']}; torch {meta['torch']}, {meta['threads']} threads; "
        f"seed {meta['seed']}; generated by `bench/bench_train.py {' '.join(meta['argv'])}`"
        + (" (merged with rows of earlier invocations, see `train.json`)" if meta.get("merged") else "")
        + ".", "",
        *([meta["note"], ""] if meta.get("note") else []),
        "Accuracy is on the fixed test split (digits 360, mnist5k 1,000, fashion 10,000), computed "
        "by the golden forward pass of the exported model (`float`: the float network itself, "
        "not exportable). Every rule trains the same network (arch, S, batch) on the same data "
        "order. samples/s counts training steps only (no evaluation), measured in the same "
        "process one run after the other; other jobs shared the machine, so compare rows of one "
        "data set rather than absolute numbers.", "",
        "| data set | rule | arch | S | batch | epochs | final acc % | best acc % (epoch) | wall s | train samples/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['rule']} | | | | | skipped: {r['error']} | | | |")
            continue
        lines.append(
            f"| {r['dataset']} | {r['rule']} | {r['arch']} | {r['swarm']} | {r['batch_size']} | "
            f"{r['epochs']} | {100 * r['final_accuracy']:.2f} | "
            f"{100 * r['best_accuracy']:.2f} ({r['best_epoch']}) | "
            f"{r['wall_s']:.1f} | {r['train_samples_per_s']:.0f} |")
    cnn = [r for r in rows if r.get("dataset") in CNN and r.get("rule") == "golden" and "error" not in r]
    if cnn:
        lines += ["", "`*-cnn` rows: binary CNNs (W1A1 hidden activations, 8-bit pixels into the "
                  "first convolution; the float row is the float CNN of the same arch); every rule "
                  "of a data set has the same arch, batch, epochs and data order. Golden rule "
                  "settings: " + "; ".join(
                      f"{r['dataset']}: flip threshold {r['flip_threshold']}"
                      + "".join(f", {k}={v}" for k, v in sorted(r["options"].items())) for r in cnn) + "."]
    by = {(r["dataset"], r["rule"]): r for r in rows if "error" not in r}
    ratios = [(ds, by[(ds, "golden")], by[(ds, "ste-adam")]) for ds in dict.fromkeys(d for d, _ in by)
              if (ds, "golden") in by and (ds, "ste-adam") in by]
    if ratios:
        lines += ["", "## Throughput: golden vs the STE-Adam reference (same network, same run)", "",
                  "| data set | golden samples/s | ste-adam samples/s | golden / ste-adam |",
                  "|---|---|---|---|"]
        for ds, g, s in ratios:
            q = g["train_samples_per_s"] / s["train_samples_per_s"] if s["train_samples_per_s"] else 0.0
            lines.append(f"| {ds} | {g['train_samples_per_s']:.0f} | {s['train_samples_per_s']:.0f} | {q:.2f} |")
    goals = [(ds, by[(ds, "golden")]) for ds in TARGETS if (ds, "golden") in by]
    if goals:
        lines += ["", "## Golden rule vs its accuracy targets (final accuracy of the runs above)", "",
                  "| data set | target % | final % | best % | check |", "|---|---|---|---|---|"]
        for ds, _g in goals:
            seeds = [by[(k, "golden")] for k in SEED_ROWS.get(ds, (ds,)) if (k, "golden") in by]
            final = sum(r["final_accuracy"] for r in seeds) / len(seeds)
            best = sum(r["best_accuracy"] for r in seeds) / len(seeds)
            name = ds if len(seeds) == 1 else (f"{ds} (mean of seeds "
                                               f"{', '.join(str(r.get('seed', 0)) for r in seeds)})")
            ok = final >= TARGETS[ds]
            gap = "" if ok else f" (short by {100 * (TARGETS[ds] - final):.2f})"
            lines.append(f"| {name} | {100 * TARGETS[ds]:.1f} | {100 * final:.2f} | "
                         f"{100 * best:.2f} | {'met' if ok else 'missed' + gap} |")
    swarm = [(k1, k4, k32) for k1, k4, k32 in SWARM_ROWS if (k1, "golden") in by and (k4, "golden") in by]
    if swarm:
        lines += ["", "## Swarm: S = 4 and S = 32 vs S = 1 (golden rule, same arch, batch, epochs, seed 0)", "",
                  f"| data set | arch | epochs | S = 1 % | S = 4 % | S = 32 % | S4 - S1 | check (>= {100 * SWARM_GAIN:.0f} point) |",
                  "|---|---|---|---|---|---|---|---|"]
        for k1, k4, k32 in swarm:
            g, s4, s32 = by[(k1, "golden")], by[(k4, "golden")], by.get((k32, "golden"))
            ds = VARIANTS[k1]["dataset"] if k1 in VARIANTS else k1
            s1 = _at_epoch(g, s4["epochs"])
            d = s4["final_accuracy"] - s1
            ok = d >= SWARM_GAIN - 1e-12
            short = "" if s4["epochs"] == EPOCHS[ds] else f" (not {EPOCHS[ds]})"
            note = "" if s4["epochs"] == g["epochs"] else f" (epoch {s4['epochs']} of the {g['epochs']}-epoch run)"
            t32 = "" if s32 is None else f"{100 * s32['final_accuracy']:.2f}" + (
                "" if s32["epochs"] == s4["epochs"] else
                f" ({s32['epochs']} epochs; S = 1 after {s32['epochs']}: {100 * _at_epoch(g, s32['epochs']):.2f})")
            lines.append(f"| {ds} | {g['arch']} | {s4['epochs']}{short} | {100 * s1:.2f}{note} | "
                         f"{100 * s4['final_accuracy']:.2f} | {t32} | {100 * d:+.2f} | "
                         f"{'met' if ok else f'missed (short by {100 * (SWARM_GAIN - d):.2f})'} |")
    ints = [(ds, by[(f"{ds}-int-host", "golden")], by[(f"{ds}-int", "onchip")]) for ds in EPOCHS
            if (f"{ds}-int-host", "golden") in by and (f"{ds}-int", "onchip") in by]
    if ints:
        lines += ["", "## Integer votes (`--votes integer`, rule `onchip`) vs host-assisted (golden), same arch and epochs", "",
                  f"Both at {'-'.join(map(str, INT_NET['arch']))}, batch {INT_NET['batch_size']} (rows `-int` and "
                  "`-int-host`).", "",
                  f"| data set | epochs | host % | integer % | integer - host | check (>= -{100 * ONCHIP_GAP:.0f} point) |",
                  "|---|---|---|---|---|---|"]
        for ds, g, o in ints:
            host = _at_epoch(g, o["epochs"])
            d = o["final_accuracy"] - host
            ok = d >= -ONCHIP_GAP - 1e-12
            note = "" if o["epochs"] == g["epochs"] else f" (epoch {o['epochs']} of the {g['epochs']}-epoch run)"
            lines.append(f"| {ds} | {o['epochs']}{'' if o['epochs'] == ONCHIP_EPOCHS else f' (not {ONCHIP_EPOCHS})'} | {100 * host:.2f}{note} | "
                         f"{100 * o['final_accuracy']:.2f} | {100 * d:+.2f} | "
                         f"{'met' if ok else f'missed (short by {100 * (-ONCHIP_GAP - d):.2f})'} |")
    if collapse:
        lines += ["", f"## No collapse: final accuracy >= best - {100 * COLLAPSE_TOLERANCE:.0f} point", "",
                  "| data set | rule | epochs | final acc % | best acc % (epoch) | best - final | check |",
                  "|---|---|---|---|---|---|---|"]
        for c in collapse:
            lines.append(
                f"| {c['dataset']} | {c['rule']} | {c['epochs']} | {100 * c['final_accuracy']:.2f} | "
                f"{100 * c['best_accuracy']:.2f} ({c['best_epoch']}) | {100 * c['drop']:.2f} | "
                f"{'pass' if c['passed'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def _epochs_for(text: str | None) -> dict[str, int]:
    out = {}
    for item in filter(None, (text or "").split(",")):
        name, _, n = item.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise SystemExit(f"bench-train: --epochs-for wants DATASET=N[,DATASET=N], not {item!r}")
        out[name] = int(n)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                   help=f"data-set keys (default {','.join(DEFAULT_DATASETS)}; also "
                        f"{', '.join(CNN)})")
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply the default epochs")
    p.add_argument("--epochs", type=int, default=None, help="epochs for every run (overrides)")
    p.add_argument("--epochs-for", default=None, metavar="DS=N,...",
                   help="epochs per data set (defaults: "
                        f"{', '.join(f'{k}={v}' for k, v in {**EPOCHS, **{k: c['epochs'] for k, c in CNN.items()}}.items())})")
    p.add_argument("--collapse-epochs", type=int, default=COLLAPSE_EPOCHS,
                   help=f"epochs of the golden {COLLAPSE_DATASET} no-collapse check (0: skip); reuses "
                        f"the table's golden {COLLAPSE_DATASET} run when it has this many epochs")
    p.add_argument("--quick", action="store_true", help="one epoch per run (smoke test)")
    p.add_argument("--swarm", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=None, help="default: the trainer's (256 for MNIST-sized inputs, 128 below)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder")
    p.add_argument("--out-dir", default=str(RESULTS))
    p.add_argument("--merge", action="store_true",
                   help="keep rows of an existing train.json that this invocation does not re-run")
    p.add_argument("--verbose", action="store_true", help="progress bars and per-epoch lines")
    p.add_argument("--render", action="store_true",
                   help="only rewrite train.md from the existing train.json (no training)")
    args = p.parse_args(argv)
    if args.render:
        d = json.loads((Path(args.out_dir) / "train.json").read_text())
        (Path(args.out_dir) / "train.md").write_text(_markdown(d["runs"], d.get("collapse", []), d["meta"]))
        return 0
    per_ds = _epochs_for(args.epochs_for)
    out = Path(args.out_dir)
    meta = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "seed": args.seed,
            "argv": sys.argv[1:] if argv is None else argv}
    rows: list[dict] = []
    collapse: list[dict] = []
    if args.merge and (out / "train.json").is_file():
        old = json.loads((out / "train.json").read_text())
        rows, collapse = list(old.get("runs", [])), list(old.get("collapse", []))
        meta["merged"] = True

    def put(lst: list[dict], row: dict) -> None:
        for i, r in enumerate(lst):
            if (r["dataset"], r["rule"]) == (row["dataset"], row["rule"]):
                lst[i] = row
                return
        lst.append(row)

    def write() -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train.json").write_text(
            json.dumps({"meta": meta, "runs": rows, "collapse": collapse}, indent=2) + "\n")
        (out / "train.md").write_text(_markdown(rows, collapse, meta))

    def epochs_of(ds: str) -> int:
        if args.quick:
            return 1
        if args.epochs:
            return args.epochs
        name = VARIANTS[ds]["dataset"] if ds in VARIANTS else ds
        if per_ds.get(ds) is None and "epochs" in VARIANTS.get(ds, {}):
            return VARIANTS[ds]["epochs"]
        base = CNN[name]["epochs"] if name in CNN else EPOCHS.get(name, 10)
        return per_ds.get(ds) or per_ds.get(name) or max(1, round(base * args.epochs_scale))

    datasets = [d for d in args.datasets.split(",") if d]
    rules = [r for r in args.rules.split(",") if r]
    ce = 0 if args.quick else args.collapse_epochs
    plan = [(ds, VARIANTS.get(ds, {}).get("rule", rule), epochs_of(ds)) for ds in datasets
            for rule in (rules if ds not in VARIANTS else rules[:1])]
    extra = ce and not any(x == (COLLAPSE_DATASET, "golden", ce) for x in plan)
    total = len(plan) + bool(extra)
    t_start = time.perf_counter()

    def progress(k: int, ds: str, rule: str, epochs: int) -> None:
        el = time.perf_counter() - t_start
        print(f"bench-train [{k}/{total}] {ds} {rule}, {epochs} epochs ... ({el:.0f} s elapsed)",
              file=sys.stderr, flush=True)

    k = 0
    with tempfile.TemporaryDirectory(prefix="bitswarm-bench-") as tmp:
        skipped = set()
        for ds in datasets:
            try:
                load_dataset(CNN[ds]["dataset"] if ds in CNN else VARIANTS[ds]["dataset"]
                             if ds in VARIANTS else ds, args.data_dir)
            except BitswarmError as e:
                print(f"bench-train: skipping {ds}: {e}", file=sys.stderr)
                skipped.add(ds)
                put(rows, {"dataset": ds, "rule": "*", "error": str(e)})
                write()
        for ds, rule, epochs in plan:
            k += 1
            if ds in skipped:
                continue
            progress(k, ds, rule, epochs)
            r = _run(ds, rule, epochs, args, Path(tmp))
            put(rows, r)
            if ce and (ds, rule, epochs) == (COLLAPSE_DATASET, "golden", ce):
                put(collapse, _collapse(r))
            write()
            print(f"bench-train: {ds:8s} {rule:9s} final {100 * r['final_accuracy']:6.2f} %  best "
                  f"{100 * r['best_accuracy']:6.2f} %  {r['wall_s']:7.1f} s  "
                  f"{r['train_samples_per_s']:8.0f} samples/s", flush=True)
        if extra:
            k += 1
            progress(k, COLLAPSE_DATASET, "golden", ce)
            c = _collapse(_run(COLLAPSE_DATASET, "golden", ce, args, Path(tmp)))
            put(collapse, c)
            write()
            print(f"bench-train: collapse check {COLLAPSE_DATASET} golden {ce} epochs: final "
                  f"{100 * c['final_accuracy']:.2f} %, best {100 * c['best_accuracy']:.2f} % -> "
                  f"{'pass' if c['passed'] else 'FAIL'}", flush=True)
    write()
    print(f"bench-train: wrote {out / 'train.json'} and {out / 'train.md'} "
          f"({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
