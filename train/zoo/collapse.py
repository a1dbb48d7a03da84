"""The v17/v20 collapse study (``python -m bitswarm.train.zoo.collapse``), see ``COLLAPSE.md``.

Runs a bounded-vote rule with per-step instrumentation (flips per layer, accumulator
saturation, swarm-plane synchrony, and on the seed network gains, thresholds and
dead/saturated hidden neurons) and the test accuracy every ``eval_every`` steps, on the
trainer's data order. Writes ``<out>/<tag>.json`` and, with ``--plots``, PNG figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..data import load_dataset
from ..rules import NetSpec, get_rule
from ..trainer import default_flip, epoch_order

__all__ = ["study", "main"]


def study(rule: str, options: dict, dataset: str = "mnist5k", hidden: int = 128, swarm: int = 32,
          steps: int = 2400, batch: int = 100, seed: int = 0, eval_every: int = 40, log=None) -> dict:
    """Train ``rule`` for ``steps`` minibatches with instrumentation; return the trace.

    Bounded-vote rules (v17-v20) record saturation, synchrony, gains and neuron statistics;
    other rules (e.g. ``golden``) record flip rates and accuracy only.
    """
    ds = load_dataset(dataset)
    cls = get_rule(rule)
    spec = NetSpec((ds.n_inputs, hidden, ds.classes), ds.input_shape, swarm=swarm, seed=seed,
                   flip=default_flip(swarm))
    r = cls(spec, options)
    xtr, ytr = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    xte, yte = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)
    r.init_state(xtr)
    r.record = []
    per = len(ytr) // batch
    acc, flips, t0 = [], [], time.perf_counter()
    for s in range(steps):
        e, k = divmod(s, per)
        if k == 0:
            r.start_epoch(e)
            order = torch.from_numpy(epoch_order(seed, e, len(ytr)))
        idx = order[k * batch : (k + 1) * batch]
        flips.append(r.train_step(xtr[idx], ytr[idx]).flips)
        if (s + 1) % eval_every == 0:
            acc.append((s + 1, float((r.predict(xte) == yte).double().mean())))
            if log is not None:
                print(f"step {s + 1}: acc {acc[-1][1]:.3f} flips {flips[-1]} {time.perf_counter() - t0:.0f} s",
                      file=log, flush=True)
    bits = r.weight_bits()
    tr = {k: [rec[k] for rec in r.record] for k in (r.record[0] if r.record else {}) if k != "flips"}
    tr["flip_rate"] = [[f / b for f, b in zip(fl, bits, strict=True)] for fl in flips]
    return {"rule": rule, "options": options, "dataset": dataset, "arch": [ds.n_inputs, hidden, ds.classes],
            "swarm": swarm, "batch": batch, "steps": steps, "steps_per_epoch": per, "accuracy": acc,
            "trace": tr, "seconds": time.perf_counter() - t0}


def _smooth(v, n=20):
    v = np.asarray(v, dtype=float)
    if len(v) < n:
        return v
    return np.convolve(v, np.ones(n) / n, mode="same")


def plot(res: list[dict], path: Path) -> None:
    """Accuracy, flip rate, saturation/synchrony and gain panels for several runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("flip_rate", "sync", "gain_neg", "theta_absmax") if any(k in r["trace"] for r in res)]
    fig, axes = plt.subplots(1 + len(keys), 1, figsize=(8, 2.2 * (1 + len(keys))), sharex=True)
    for r in res:
        lab = r["tag"]
        s, a = zip(*r["accuracy"], strict=True)
        axes[0].plot(s, a, label=lab)
        for ax, k in zip(axes[1:], keys, strict=True):
            if k not in r["trace"]:
                continue
            v = np.asarray(r["trace"][k], dtype=float)
            for j in range(v.shape[1]):
                ax.plot(_smooth(v[:, j]), label=f"{lab} L{j}", lw=0.8)
            ax.set_ylabel(k)
    axes[0].set_ylabel("test acc")
    axes[0].legend(fontsize=7)
    axes[1].set_yscale("log")
    if "theta_absmax" in keys:
        axes[1 + keys.index("theta_absmax")].set_yscale("log")
    axes[-1].set_xlabel("step")
    for ax in axes[1:]:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rule", default="v20-lif")
    p.add_argument("--opt", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--tag", default=None)
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--swarm", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--out", default="train/zoo/figures")
    a = p.parse_args(argv)
    opts = dict(o.split("=", 1) for o in a.opt)
    tag = a.tag or "_".join([a.rule] + [f"{k}-{v}" for k, v in opts.items()])
    torch.set_num_threads(1)
    res = study(a.rule, opts, a.dataset, a.hidden, a.swarm, a.steps, log=sys.stdout)
    res["tag"] = tag
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(res))
    accs = res["accuracy"]
    best = max(accs, key=lambda t: t[1])
    print(f"{tag}: best {best[1]:.3f} at step {best[0]}, final {accs[-1][1]:.3f}, {res['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
