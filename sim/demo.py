"""``bitswarm demo`` — the main job, end to end on the embedded digits data set.

1. golden self-check; 2. train a W1A1-style golden model on digits (golden integrate-and-fire
rule, default architecture); 3. export the model file; 4. generate the accelerator's Verilog
and report; 5. run the whole digits test set cycle-accurately on Verilator and 6. on the
virtual accelerator; print accuracy, mismatches against golden, cycles per inference and the
modeled throughput.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["register", "run_demo"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: train on digits, export, Verilog, Verilator + virtual runs")
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="clock for the modeled throughput (default: the iCEBreaker core clock, "
                   "at which the default model's fold meets timing)")
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output folder that already holds files (refused without it)")
    p.set_defaults(func=lambda a: run_demo(a.out, a.epochs, a.clock_mhz, a.json, a.overwrite))


def _step(i: int, n: int, text: str) -> float:
    print(f"[{i}/{n}] {text}", flush=True)
    return time.perf_counter()


def run_demo(out: str, epochs: int = 30, clock_mhz: float | None = None,
             as_json: bool = False, overwrite: bool = False) -> int:
    from bitswarm.golden.cli import selfcheck
    from bitswarm.golden.errors import ConfigError
    from bitswarm.golden.files import atomic_write_bytes, check_outputs
    from bitswarm.golden.model import load_model
    from bitswarm.hw.board import board_spec
    from bitswarm.hw.export import export_accelerator
    from bitswarm.hw.resources import board_fold
    from bitswarm.train import TrainConfig, load_dataset, train

    from .driver import evaluate, make_backend

    if epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, not {epochs}")
    clock_note = "chosen with --clock-mhz"
    if clock_mhz is None:
        clock_mhz = board_spec("icebreaker").clock_hz / 1e6
        clock_note = ("the iCEBreaker core clock; the default model's fold meets timing there "
                      "(bench/results/boards.md)")
    if not 0 < clock_mhz < float("inf"):
        raise ConfigError(f"--clock-mhz must be positive, not {clock_mhz}")
    out_dir = Path(out)
    check_outputs([], folders=[out_dir], overwrite=overwrite)
    n = 6
    t = _step(1, n, "golden selfcheck")
    checks = selfcheck(0)
    print("      ok  " + "  ".join(f"{k}={v}" for k, v in checks.items()))

    t = _step(2, n, f"train on digits: golden integrate-and-fire rule, {epochs} epochs")
    model_path = out_dir / "digits.bsm"
    res = train(TrainConfig(dataset="digits", epochs=epochs), out=model_path,
                run_dir=out_dir / "digits.run", quiet=True, overwrite=True)
    last = res.metrics[-1]
    print(f"      test accuracy {last['test_accuracy']:.4f} (best {max(m['test_accuracy'] for m in res.metrics):.4f}) "
          f"in {time.perf_counter() - t:.1f} s")

    t = _step(3, n, f"model file -> {model_path}")
    model = load_model(model_path)
    print(f"      arch {'-'.join(map(str, model.cfg.arch))}, swarm {model.cfg.layers[0].swarm}, "
          f"{model_path.stat().st_size} bytes, reloaded and validated")

    t = _step(4, n, f"Verilog -> {out_dir / 'verilog'}")
    plan = board_fold(model.cfg, "icebreaker")  # the fold `bitswarm bitstream` builds
    rep = export_accelerator(model, plan, out_dir / "verilog", overwrite=True)
    print("      plan " + ", ".join(f"L{i}: pe={f.pe} simd={f.simd} pipeline={f.pipeline}"
                                   for i, f in enumerate(plan.folds))
          + f" (the iCEBreaker fold); {rep['weight_memory_bits']} weight ROM bits; latency "
          f"{rep['latency_cycles']} cycles, streaming interval {rep['interval_cycles']} cycles")

    ds = load_dataset("digits")
    x = ds.x_test.reshape((len(ds.x_test),) + tuple(model.cfg.input_shape))
    results = {}
    for step, name in ((5, "verilator"), (6, "virtual")):
        label = "cycle-accurate RTL on Verilator" if name == "verilator" else "virtual accelerator"
        t = _step(step, n, f"whole digits test set ({len(x)} images) on the {label}")
        backend = make_backend(name, model, plan)
        r = evaluate(backend, x, ds.y_test)
        r.pop("_bad_images")
        r["seconds"] = round(time.perf_counter() - t, 2)
        results[name] = r
        extra = (f", {r['simulated_cycles_per_s'] / 1e6:.2f} M simulated cycles/s"
                 if "simulated_cycles_per_s" in r else f", {r.get('images_per_s_host', 0):,.0f} images/s on this CPU")
        print(f"      accuracy {r['accuracy']:.4f}, mismatches vs golden {r['mismatches']}, "
              f"{r['cycles_per_inference']} cycles/inference{extra}")

    f = clock_mhz * 1e6
    summary = {
        "model": str(model_path),
        "arch": model.cfg.arch,
        "golden_accuracy": last["test_accuracy"],
        "verilator": results["verilator"],
        "virtual": results["virtual"],
        "cycles_per_inference": plan.latency_cycles(),
        "clock_mhz": clock_mhz,
        "clock_note": clock_note,
        "fold": plan.to_dict(),
        "interval_cycles": plan.interval_cycles(),
        "modeled_latency_us": plan.latency_cycles() / clock_mhz,
        "modeled_images_per_s_streaming": f / plan.interval_cycles(),
        "modeled_images_per_s_isolated": f / plan.latency_cycles(),
    }
    print("\nsummary")
    print(f"  accuracy (digits test, {len(x)} images): {results['verilator']['accuracy']:.4f}")
    print(f"  mismatches vs golden: Verilator {results['verilator']['mismatches']}, "
          f"virtual {results['virtual']['mismatches']}")
    print(f"  cycles per inference: {plan.latency_cycles()} (cycle model = Verilator)")
    print(f"  throughput at {clock_mhz:g} MHz ({clock_note}): "
          f"{summary['modeled_images_per_s_streaming']:,.0f} images/s streaming (interval "
          f"{plan.interval_cycles()} cycles), {summary['modeled_images_per_s_isolated']:,.0f} "
          "images/s one at a time")
    atomic_write_bytes(out_dir / "demo.json", (json.dumps(summary, indent=2) + "\n").encode())
    if as_json:
        print(json.dumps(summary))
    ok = results["verilator"]["mismatches"] == 0 and results["virtual"]["mismatches"] == 0
    return 0 if ok else 1
