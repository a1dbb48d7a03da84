"""Benchmark: the packed XNOR-popcount layer kernel against a torch float32 matmul.

For each shape ``B x M x N`` (B input rows, M outputs, N bits per row) the same run times

- ``torch.mm`` of float32 ``[B, N] @ [N, M]`` (the dense layer as a float matmul, torch's threads);
- :func:`bitswarm.sim.popcount.xnor_popcount` on packed words ``[B, N/64]`` x ``[M, N/64]``, per
  backend and thread count,

interleaved repeat by repeat (so background load hits both alike), and reports medians. It
checks once per shape that the kernel equals the ±1 float matmul exactly. A second section
times a whole model forward: golden ``Model.forward`` vs :class:`VirtualAccelerator`.

Writes ``bench/results/kernel.json`` and ``bench/results/kernel.md``.

Usage: ``python bench/bench_kernel.py [--repeats R] [--quick]``  (``make bench-kernel``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bitswarm.golden import Model, ModelConfig, pack_bits
from bitswarm.sim.popcount import available_backends, cpu_info, xnor_popcount
from bitswarm.sim.virtual import VirtualAccelerator

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results"
#: (B, M, N); the first is the headline shape.
SHAPES = [
    (256, 1024, 1024),
    (1, 1024, 1024),
    (64, 256, 784),
    (1024, 1024, 1024),
    (256, 4096, 4096),
    (256, 10, 1024),
]
TARGET = 8.0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_shape(b: int, m: int, n: int, repeats: int, variants: list[tuple[str, int]]) -> dict:
    """Time torch float32 and every kernel variant on one shape, interleaved; medians in ms."""
    rng = np.random.default_rng(b * 31 + m * 7 + n)
    abits = rng.integers(0, 2, (b, n), dtype=np.uint8)
    wbits = rng.integers(0, 2, (m, n), dtype=np.uint8)
    a, w = pack_bits(abits), pack_bits(wbits)
    x = torch.from_numpy(abits.astype(np.float32) * 2 - 1)
    wt = torch.from_numpy((wbits.astype(np.float32) * 2 - 1).T.copy())  # [N, M]
    o = torch.empty((b, m), dtype=torch.float32)
    out = np.empty((b, m), dtype=np.int32)
    want = torch.mm(x, wt, out=o).numpy().astype(np.int64)  # exact: |partial sums| <= n < 2**24
    for be, th in variants:
        got = xnor_popcount(a, w, n, out=out, threads=th, backend=be)
        if not np.array_equal(got, want):
            raise AssertionError(f"kernel {be}/{th} differs from the float matmul at {b}x{m}x{n}")
    torch_threads = torch.get_num_threads()

    def torch_t1() -> float:
        torch.set_num_threads(1)
        try:
            t = _time(lambda: torch.mm(x, wt, out=o))
        finally:
            torch.set_num_threads(torch_threads)
        return t

    calls = {"torch_f32": lambda: torch.mm(x, wt, out=o)}
    if torch_threads > 1:
        calls["torch_f32_t1"] = torch_t1
    for be, th in variants:
        calls[f"{be}_t{th}"] = lambda be=be, th=th: xnor_popcount(
            a, w, n, out=out, threads=th, backend=be
        )
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(2):  # warm up
        for fn in calls.values():
            fn()
    order = list(calls)
    rng_order = np.random.default_rng(0)
    for _ in range(repeats):  # a fresh order each repeat: no variant always follows torch
        for k in rng_order.permutation(order):
            fn = calls[k]
            times[k].append(fn() if k == "torch_f32_t1" else _time(fn))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    torch_best = min(v for k, v in med.items() if k.startswith("torch"))
    macs = b * m * n
    res = {
        "shape": {"B": b, "M": m, "N": n},
        "macs": macs,
        "median_ms": med,
        "min_ms": {k: min(v) * 1e3 for k, v in times.items()},
        "torch_best_ms": torch_best,
        "speedup_vs_torch_f32": {
            k: torch_best / v for k, v in med.items() if not k.startswith("torch")
        },
        "gmacs_per_s": {k: macs / (v * 1e-3) / 1e9 for k, v in med.items()},
        "repeats": repeats,
    }
    return res


def bench_model(repeats: int) -> dict:
    """Golden ``Model.forward`` vs the virtual accelerator on a 784-1024-1024-10 model."""
    cfg = ModelConfig.mlp([784, 1024, 1024, 10], input_shape=(28, 28), swarm=1, input_bits=8)
    model = Model.random(cfg, seed=0)
    x = torch.randint(
        0, 256, (256, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    va = VirtualAccelerator(model)
    if not np.array_equal(va.forward(x), model.forward(x).numpy()):
        raise AssertionError("virtual accelerator differs from golden")
    times: dict[str, list[float]] = {"golden_forward": [], "virtual_forward": []}
    for _ in range(repeats):
        times["golden_forward"].append(_time(lambda: model.forward(x)))
        times["virtual_forward"].append(_time(lambda: va.forward(x)))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {
        "model": "784-1024-1024-10, S=1, 8-bit input, batch 256",
        "median_ms": med,
        "speedup": med["golden_forward"] / med["virtual_forward"],
        "repeats": repeats,
    }


def _fmt(load: float | None) -> str:
    return "unknown" if load is None else f"{load:.2f}"


def _markdown(report: dict) -> str:
    lines = [
        "# Kernel benchmark: packed XNOR-popcount vs torch float32 matmul",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpus']} CPUs, "
        f"torch {report['machine']['torch']} ({report['machine']['torch_threads']} threads), "
        f"kernel {report['kernel']}. Load average {_fmt(report['machine']['load_before'])} before, "
        f"{_fmt(report['machine']['load_after'])} after (other jobs share this machine).",
        "",
        "Medians of interleaved repeats, milliseconds. `torch_f32`: `torch.mm` float32 with "
        "torch's default threads; `torch_f32_t1`: one thread; `<backend>_t<k>`: the packed kernel "
        "on k threads. Speedup = the faster torch median / kernel median. A binary MAC is one "
        "bit pair. Every kernel output was checked equal to the float matmul.",
        "",
    ]
    keys = [k for k in report["shapes"][0]["median_ms"]]
    lines.append("| B x M x N | " + " | ".join(keys) + " | best speedup |")
    lines.append("|---" * (len(keys) + 2) + "|")
    for r in report["shapes"]:
        s = r["shape"]
        cells = []
        for k in keys:
            ms = r["median_ms"].get(k)
            if ms is None:
                cells.append("—")
            elif k.startswith("torch"):
                cells.append(f"{ms:.3f}")
            else:
                cells.append(f"{ms:.3f} ({r['speedup_vs_torch_f32'][k]:.1f}x)")
        best = max(r["speedup_vs_torch_f32"].values())
        lines.append(
            f"| {s['B']} x {s['M']} x {s['N']} | " + " | ".join(cells) + f" | {best:.1f}x |"
        )
    h = report["headline"]
    lines += [
        "",
        f"**Headline** ({h['shape']}): {h['variant']} {h['kernel_ms']:.3f} ms vs torch float32 "
        f"{h['torch_ms']:.3f} ms = **{h['speedup']:.1f}x** (target {TARGET:.0f}x: "
        f"{'met' if h['speedup'] >= TARGET else 'NOT met'}); {h['gmacs']:.0f} G binary MAC/s.",
    ]
    lines += [
        "",
        "Reading these numbers: torch's threaded float32 matmul is very sensitive to other jobs on "
        "the machine (its thread barrier waits for descheduled threads), so its medians swing "
        "between runs; compare runs by their load average. The kernel's single-thread time is the "
        "stable figure. Its ceiling is about 341 binary MACs per cycle and core (XOR, VPOPCNTQ "
        "and VPADDQ per 512 bit pairs, on two vector ports). Two threads help only when a second "
        "core is idle.",
    ]
    if "model" in report:
        mo = report["model"]
        lines += [
            "",
            f"Whole model ({mo['model']}): golden `Model.forward` "
            f"{mo['median_ms']['golden_forward']:.1f} ms, `VirtualAccelerator.forward` "
            f"{mo['median_ms']['virtual_forward']:.1f} ms ({mo['speedup']:.1f}x).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30, help="timed repeats per shape (default 30)")
    p.add_argument("--quick", action="store_true", help="headline shape only, 10 repeats")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = p.parse_args(argv)
    shapes = SHAPES[:1] if args.quick else SHAPES
    repeats = 10 if args.quick else args.repeats
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = sorted({1, cpus})
    backends = available_backends()
    report: dict = {
        "machine": {
            "cpu": _cpu_model(),
            "cpus": cpus,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "numpy": np.__version__,
            "load_before": _loadavg(),
        },
        "kernel": cpu_info(),
        "shapes": [],
    }
    for b, m, n in shapes:
        variants = [(be, th) for be in backends if be != "numpy" for th in threads]
        if "numpy" in backends and b * m * n <= 1 << 28:
            variants.append(("numpy", 1))
        r = bench_shape(b, m, n, repeats, variants)
        report["shapes"].append(r)
        best = max(r["speedup_vs_torch_f32"], key=r["speedup_vs_torch_f32"].get)
        print(
            f"{b}x{m}x{n}: "
            + "; ".join(f"{k} {v:.3f} ms" for k, v in r["median_ms"].items())
            + f"; best {best} {r['speedup_vs_torch_f32'][best]:.1f}x",
            flush=True,
        )
    head = report["shapes"][0]
    best = max(head["speedup_vs_torch_f32"], key=head["speedup_vs_torch_f32"].get)
    report["headline"] = {
        "shape": "{B} x {M} x {N}".format(**head["shape"]),
        "variant": best,
        "kernel_ms": head["median_ms"][best],
        "torch_ms": head["torch_best_ms"],
        "speedup": head["speedup_vs_torch_f32"][best],
        "gmacs": head["gmacs_per_s"][best],
        "target": TARGET,
    }
    if not args.quick:
        report["model"] = bench_model(max(3, repeats // 5))
        print(
            "model: golden {golden_forward:.1f} ms, virtual {virtual_forward:.1f} ms".format(
                **report["model"]["median_ms"]
            )
        )
    report["machine"]["load_after"] = _loadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernel.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "kernel.md").write_text(_markdown(report))
    h = report["headline"]
    print(
        f"headline {h['shape']}: {h['variant']} {h['speedup']:.1f}x torch float32 (target {TARGET:.0f}x)"
    )
    return report


if __name__ == "__main__":
    main()
