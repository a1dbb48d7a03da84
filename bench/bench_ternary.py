"""Ternary vs binary weights, golden rule (``make bench-ternary``; issue 17 item 5).

Writes ``bench/results/ternary.json`` and ``bench/results/ternary.md``. Every row trains the
same logical network (784-512-10, :data:`ARCH`) with the golden rule for the
same epochs, batch and data order (:data:`bench_train.EPOCHS`: mnist5k 60, Fashion 20); what
differs is how a weight is stored and trained:

- ``binary S=1``: one bit per weight, 2 levels (±1), SPEC.md §8 flips;
- ``binary S=2``: a swarm of two bits per weight, 3 levels (-2, 0, +2), the same storage as a
  trit (2 bits), SPEC.md §8 flips with the trainer's swarm default (stochastic firing);
- ``ternary``: one trit per weight (mask and sign planes, 2 bits), 3 levels (-1, 0, +1),
  SPEC.md §8.1 steps (``bitswarm train --weights ternary``), the default flip constants;
- ``ternary thr 24``: the same with half the flip threshold (a trit step moves a weight by 1,
  a bit flip by 2, so 24 votes per step is the same evidence per unit of weight change).

Per row: final and best test accuracy (golden forward pass of the exported model), the share
of each weight level in the final model (first layer; for S = 2 the levels of the 2-plane sum),
flips (trits moved, or bits flipped) per logical weight per step over the run, wall time and
training samples/s. mnist5k (1,000 test images) runs seeds 0-2 and reports their mean; Fashion
(10,000) seed 0. Fashion runs only when its IDX files are installed or ``--data-dir`` is given.

``--datasets``, ``--variants``, ``--seeds-for``, ``--epochs-for`` select what runs;
``--merge`` keeps the rows of an existing ``ternary.json`` that this invocation does not
re-run; ``--quick`` runs one epoch of each; ``--render`` rewrites the Markdown only.
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
from bench_train import EPOCHS, RESULTS
from bitswarm.golden.errors import BitswarmError
from bitswarm.golden.layer import effective_weights
from bitswarm.train import TrainConfig, load_dataset, train
from bitswarm.train.trainer import arch_text, default_flip

#: variant -> (weights, swarm, flip threshold or None for the trainer's default)
VARIANTS = {
    "binary S=1": ("binary", 1, None),
    "binary S=2": ("binary", 2, None),
    "ternary": ("ternary", 1, None),
    "ternary thr 24": ("ternary", 1, 24),
}
DATASETS = ("mnist5k", "fashion")
#: The network and golden-rule settings every variant shares: the issue-17 comparison was
#: measured at 784-512-10, batch 128, homeostasis shift 12 and the same votes for every swarm
#: plane (the trainer's defaults then; its defaults now, 784-2048-10, batch 256, shift 16,
#: routed swarm votes, are in train/RULES.md "Defaults").
ARCH, BATCH, OPTIONS = (784, 512, 10), 128, {"homeostasis_shift": 12, "swarm_votes": "same"}
SEEDS = {"mnist5k": (0, 1, 2), "fashion": (0,)}


def _config(dataset: str, variant: str, epochs: int, seed: int) -> TrainConfig:
    weights, swarm, thr = VARIANTS[variant]
    flip = default_flip(swarm)
    if thr is not None:
        flip = dataclasses.replace(flip, threshold=thr)
    opts = {**OPTIONS, **({"weights": "ternary"} if weights == "ternary" else {})}
    return TrainConfig(dataset=dataset, arch=ARCH, batch_size=BATCH, epochs=epochs, seed=seed, swarm=swarm,
                       flip=flip, options=opts)


def _levels(model) -> dict[str, float]:
    """Share of each effective weight level in the first layer of the final model."""
    lay, w = model.cfg.layers[0], model.weights[0]
    eff = effective_weights(lay, w).flatten()
    vals, counts = torch.unique(eff, return_counts=True)
    return {str(int(v)): int(c) / eff.numel() for v, c in zip(vals, counts, strict=True)}


def _run(dataset: str, variant: str, epochs: int, seed: int, args, tmp: Path) -> dict:
    cfg = _config(dataset, variant, epochs, seed)
    tag = f"{dataset}-{variant.replace(' ', '_').replace('=', '')}-s{seed}"
    t0 = time.perf_counter()
    res = train(cfg, out=tmp / f"{tag}.bsm", run_dir=tmp / f"{tag}.run", data_dir=args.data_dir,
                quiet=not args.verbose, plots=False, overwrite=True)
    wall = time.perf_counter() - t0
    acc = [m["test_accuracy"] for m in res.metrics]
    steps = sum(m["steps"] for m in res.metrics)
    train_s = sum(m["steps"] * res.config.batch_size / m["train_samples_per_s"]
                  for m in res.metrics if m["train_samples_per_s"] > 0)
    lays = res.model.cfg.layers
    n_weights = sum(lay.n_out * lay.n_in for lay in lays)
    moved = sum(sum(m["flips"]) for m in res.metrics)
    weights, swarm, _ = VARIANTS[variant]
    return {
        "dataset": dataset, "variant": variant, "seed": seed, "weights": weights, "swarm": swarm,
        "arch": arch_text(res.config.arch), "epochs": epochs, "batch_size": res.config.batch_size,
        "flip_threshold": res.config.flip.threshold, "noise": res.config.flip.noise,
        "stored_bits_per_weight": lays[0].weight_bits // (lays[0].n_out * lays[0].n_in),
        "weight_bits": sum(lay.weight_bits for lay in lays),
        "final_accuracy": acc[-1], "best_accuracy": max(acc), "best_epoch": acc.index(max(acc)) + 1,
        "accuracy_curve": acc, "levels_layer0": _levels(res.model),
        "flips_per_weight_step": moved / (n_weights * steps) if steps else 0.0,
        "wall_s": wall, "train_samples_per_s": steps * res.config.batch_size / train_s if train_s else 0.0,
    }


def _mean(xs):
    return sum(xs) / len(xs)


def _markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Ternary vs binary weights, golden rule (`make bench-ternary`)", "",
        f"Machine: {meta['machine']}; torch {meta['torch']}, {meta['threads']} threads; generated by "
        f"`bench/bench_ternary.py {' '.join(meta['argv'])}`"
        + (" (merged with rows of earlier invocations, see `ternary.json`)" if meta.get("merged") else "")
        + ".", "",
        "Every row: golden rule, host-assisted votes, the same logical network, epochs, batch and "
        "data order; final = test accuracy after the last epoch (golden forward pass of the "
        "exported model), mean over the row's seeds (min-max in brackets). Storage: binary S=2 and "
        "ternary both store 2 bits per weight; S=2 has levels -2/0/+2 (a swarm of 2 planes), "
        "ternary -1/0/+1 as (mask, sign) planes (SPEC §5), trained by SPEC §8.1. `thr`: the "
        "flip threshold (default: the trainer's). Levels: share of each effective weight value "
        "in layer 0 of the final model (seed 0). Flips: trits moved (ternary) or bits flipped "
        "(binary) per logical weight per step, over the whole run.", "",
        "| data set | weights | S | bits/weight | arch | epochs | thr | seeds | final acc % | "
        "best acc % (epoch, seed 0) | levels layer 0 (seed 0) | flips/weight/step | wall s | "
        "train samples/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["variant"]), []).append(r)
    summary = {}
    for (ds, var), rs in groups.items():
        if "error" in rs[0]:
            lines.append(f"| {ds} | {var} | | | | | | | skipped: {rs[0]['error']} | | | | | |")
            continue
        rs = sorted(rs, key=lambda r: r["seed"])
        r0 = rs[0]
        fin = [r["final_accuracy"] for r in rs]
        summary[(ds, var)] = _mean(fin)
        spread = f" ({100 * min(fin):.2f}-{100 * max(fin):.2f})" if len(fin) > 1 else ""
        lv = " ".join(f"{k}: {100 * v:.0f}%" for k, v in sorted(r0["levels_layer0"].items(), key=lambda kv: int(kv[0])))
        lines.append(
            f"| {ds} | {r0['weights']} | {r0['swarm']} | {r0['stored_bits_per_weight']} | {r0['arch']} | "
            f"{r0['epochs']} | {r0['flip_threshold']} | {','.join(str(r['seed']) for r in rs)} | "
            f"{100 * _mean(fin):.2f}{spread} | {100 * r0['best_accuracy']:.2f} ({r0['best_epoch']}) | {lv} | "
            f"{_mean([r['flips_per_weight_step'] for r in rs]):.2e} | {_mean([r['wall_s'] for r in rs]):.0f} | "
            f"{_mean([r['train_samples_per_s'] for r in rs]):.0f} |")
    pairs = [(ds, t) for ds in dict.fromkeys(d for d, _ in summary) for t in ("ternary", "ternary thr 24")
             if (ds, t) in summary]
    if pairs:
        lines += ["", "## Ternary minus binary (points of mean final accuracy)", "",
                  "| data set | ternary row | − binary S=1 | − binary S=2 (equal storage) |", "|---|---|---|---|"]
        for ds, t in pairs:
            cells = [f"{100 * (summary[(ds, t)] - summary[(ds, b)]):+.2f}" if (ds, b) in summary else "n/a"
                     for b in ("binary S=1", "binary S=2")]
            lines.append(f"| {ds} | {t} | {cells[0]} | {cells[1]} |")
    if meta.get("total_s") is not None:
        lines += ["", f"Bench time {meta['total_s']:.0f} s"
                  + (" (the last invocation; each row's own time is its wall s)." if meta.get("merged") else ".")]
    return "\n".join(lines) + "\n"


def _pairs(text: str | None, what: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (text or "").split(",")):
        name, sep, v = item.partition("=")
        if not sep or not v:
            raise SystemExit(f"bench-ternary: {what} wants DATASET=VALUE[,DATASET=VALUE], not {item!r}")
        out[name] = v
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"of: {', '.join(VARIANTS)}")
    p.add_argument("--epochs-for", default=None, metavar="DS=N,...",
                   help=f"epochs per data set (default: {', '.join(f'{d}={EPOCHS[d]}' for d in DATASETS)})")
    p.add_argument("--seeds-for", default=None, metavar="DS=A:B:C,...",
                   help="seeds per data set, colon-separated (default: mnist5k=0:1:2, fashion=0)")
    p.add_argument("--quick", action="store_true", help="one epoch, seed 0, per run (smoke test)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder")
    p.add_argument("--out-dir", default=str(RESULTS))
    p.add_argument("--merge", action="store_true",
                   help="keep rows of an existing ternary.json that this invocation does not re-run")
    p.add_argument("--verbose", action="store_true", help="progress bars and per-epoch lines")
    p.add_argument("--render", action="store_true", help="only rewrite ternary.md from ternary.json")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    if args.render:
        d = json.loads((out / "ternary.json").read_text())
        (out / "ternary.md").write_text(_markdown(d["runs"], d["meta"]))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"bench-ternary: unknown variant(s) {bad}; expected some of {list(VARIANTS)}")
    epochs = {d: int(n) for d, n in _pairs(args.epochs_for, "--epochs-for").items()}
    seeds = {d: tuple(int(s) for s in v.split(":")) for d, v in _pairs(args.seeds_for, "--seeds-for").items()}
    meta = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "argv": sys.argv[1:] if argv is None else argv}
    rows: list[dict] = []
    if args.merge and (out / "ternary.json").is_file():
        rows = list(json.loads((out / "ternary.json").read_text()).get("runs", []))
        meta["merged"] = True

    def put(row: dict) -> None:
        key = (row["dataset"], row["variant"], row.get("seed"))
        rows[:] = [r for r in rows if (r["dataset"], r["variant"], r.get("seed")) != key]
        rows.append(row)

    def write() -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "ternary.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=2) + "\n")
        (out / "ternary.md").write_text(_markdown(rows, meta))

    datasets = [d for d in args.datasets.split(",") if d]
    plan = []
    for ds in datasets:
        n = 1 if args.quick else epochs.get(ds, EPOCHS.get(ds, 10))
        for s in ((0,) if args.quick else seeds.get(ds, SEEDS.get(ds, (0,)))):
            plan += [(ds, v, n, s) for v in variants]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bitswarm-bench-ternary-") as tmp:
        skipped = set()
        for ds in datasets:
            try:
                load_dataset(ds, args.data_dir)
            except BitswarmError as e:
                print(f"bench-ternary: skipping {ds}: {e}", file=sys.stderr)
                skipped.add(ds)
                for v in variants:
                    put({"dataset": ds, "variant": v, "seed": None, "error": str(e)})
        for k, (ds, v, n, s) in enumerate(plan, 1):
            if ds in skipped:
                continue
            print(f"bench-ternary [{k}/{len(plan)}] {ds} {v} seed {s}, {n} epochs ... "
                  f"({time.perf_counter() - t_start:.0f} s elapsed)", file=sys.stderr, flush=True)
            r = _run(ds, v, n, s, args, Path(tmp))
            put(r)
            write()
            print(f"bench-ternary: {ds:8s} {v:15s} seed {s}: final {100 * r['final_accuracy']:6.2f} %  "
                  f"best {100 * r['best_accuracy']:6.2f} %  {r['wall_s']:6.1f} s", flush=True)
    meta["total_s"] = time.perf_counter() - t_start
    write()
    print(f"bench-ternary: wrote {out / 'ternary.json'} and {out / 'ternary.md'} ({meta['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
