"""``make bench-sim``: simulation throughput of the accelerator, Verilator vs virtual.

Trains (or reuses, with ``--model``) the demo's digits model, then measures on the whole digits
test set, repeated ``--repeat`` times:

- Verilator (bulk C++ harness): images/s of host time and simulated cycles/s, isolated
  inferences and streamed back to back; every run is checked bit-exact against golden;
- the virtual accelerator: images/s;
- the binary layer kernel against a torch float32 matmul of the same shape, same run
  (256 x 1024 x 1024 by default).

Writes ``bench/results/sim.json`` and ``bench/results/sim.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _load(n: int):
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0]) if n else None


def main(argv: list[str] | None = None) -> dict:
    from bench_kernel import bench_shape
    from bitswarm.golden import load_model
    from bitswarm.hw.resources import board_fold
    from bitswarm.sim.driver import make_backend
    from bitswarm.sim.popcount import default_backend
    from bitswarm.train import TrainConfig, load_dataset, train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="model file (default: train the demo model)")
    p.add_argument("--repeat", type=int, default=10, help="test-set repetitions per run (default 10)")
    p.add_argument("--kernel-repeats", type=int, default=30)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as td:
        if args.model is None:
            print("training the demo model (digits, golden rule, 30 epochs) ...", flush=True)
            train(TrainConfig(dataset="digits", epochs=30), out=Path(td) / "digits.bsm",
                  run_dir=Path(td) / "run", quiet=True, plots=False)
            model = load_model(Path(td) / "digits.bsm")
        else:
            model = load_model(args.model)
    ds = load_dataset("digits")
    x = np.tile(ds.x_test.reshape((-1,) + tuple(model.cfg.input_shape)), (args.repeat,) + (1,) * len(model.cfg.input_shape))
    gold = model.forward(x).numpy()
    plan = board_fold(model.cfg, "icebreaker")  # the demo's plan (the iCEBreaker build's fold)
    report: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg_start": _load(1)},
        "model": {"arch": model.cfg.arch, "swarm": model.cfg.layers[0].swarm,
                  "fold": plan.to_dict()},
        "images": int(len(x)),
        "cycles_per_inference": plan.latency_cycles(),
        "interval_cycles": plan.interval_cycles(),
        "target_simulated_cycles_per_s": 1_000_000,
    }
    print("building the accelerator on Verilator ...", flush=True)
    vb = make_backend("verilator", model, plan)
    t0 = time.perf_counter()
    vb.sim.build()
    report["verilator_build_s"] = round(time.perf_counter() - t0, 1)
    for mode in ("isolated", "stream"):
        r = vb.sim.run(x, stream=mode == "stream")
        if not (np.array_equal(r.scores, gold)):
            raise AssertionError(f"Verilator {mode} run differs from golden")
        report[f"verilator_{mode}"] = {
            "simulated_cycles": r.cycles,
            "seconds": r.seconds,
            "simulated_cycles_per_s": r.cycles_per_second,
            "images_per_s": len(x) / r.seconds,
            "cycles_per_image": r.cycles / len(x),
        }
        print(f"verilator {mode}: {r.cycles_per_second / 1e6:.2f} M cycles/s, {len(x) / r.seconds:,.0f} images/s")
    va = make_backend("virtual", model, plan)
    best = None
    for _ in range(5):
        t = time.perf_counter()
        s = va.va.forward(x)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    if not np.array_equal(s, gold):
        raise AssertionError("virtual accelerator differs from golden")
    report["virtual"] = {"images_per_s": len(x) / best, "seconds": best, "kernel_backend": default_backend()}
    print(f"virtual: {len(x) / best:,.0f} images/s")
    print("kernel vs torch float32 at 256x1024x1024 ...", flush=True)
    kb = default_backend()
    k = bench_shape(256, 1024, 1024, args.kernel_repeats, [(kb, 1), (kb, 2)])
    report["kernel_256x1024x1024"] = k
    report["kernel_speedup_vs_torch_f32"] = max(k["speedup_vs_torch_f32"].values())
    report["machine"]["loadavg_end"] = _load(1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sim.json").write_text(json.dumps(report, indent=2) + "\n")
    vi, vs = report["verilator_isolated"], report["verilator_stream"]
    md = [
        "# Simulation throughput (`make bench-sim`)",
        "",
        f"Model: digits {'-'.join(map(str, model.cfg.arch))} (the demo model), fold "
        f"{[(f.pe, f.simd, f.pipeline) for f in plan.folds]} (pe, simd, pipeline per layer; "
        f"the iCEBreaker fold the demo uses); {len(x)} images (test set x {args.repeat}); "
        f"load average {report['machine']['loadavg_start']} -> {report['machine']['loadavg_end']} "
        f"on {report['machine']['cores']} cores.",
        "",
        "| backend | mode | images/s (host) | simulated cycles/s | cycles/image |",
        "|---|---|---:|---:|---:|",
        f"| Verilator (C++ harness) | isolated | {vi['images_per_s']:,.0f} | {vi['simulated_cycles_per_s']:,.0f} | {vi['cycles_per_image']:.1f} |",
        f"| Verilator (C++ harness) | streamed | {vs['images_per_s']:,.0f} | {vs['simulated_cycles_per_s']:,.0f} | {vs['cycles_per_image']:.1f} |",
        f"| virtual accelerator | batch | {report['virtual']['images_per_s']:,.0f} | — | {plan.latency_cycles()} (model) |",
        "",
        f"Cycle model: {plan.latency_cycles()} cycles per isolated inference and a streaming "
        f"interval of {plan.interval_cycles()} cycles (both equal to Verilator: checked by the "
        "tests). Target: at least 1,000,000 simulated cycles/s on Verilator: "
        + ("met" if min(vi['simulated_cycles_per_s'], vs['simulated_cycles_per_s']) >= 1e6
           else "**not met**") + ".",
        "",
        "Binary layer kernel vs torch float32 matmul, 256x1024x1024, same run (median ms):",
        "",
        "| variant | ms | speedup vs best torch f32 |",
        "|---|---:|---:|",
    ]
    for name, ms in k["median_ms"].items():
        sp = k["speedup_vs_torch_f32"].get(name)
        md.append(f"| {name} | {ms:.3f} | {'' if sp is None else f'{sp:.1f}x'} |")
    (args.out / "sim.md").write_text("\n".join(md) + "\n")
    print(f"wrote {args.out / 'sim.json'} and {args.out / 'sim.md'}")
    return report


if __name__ == "__main__":
    main()
