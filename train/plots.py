"""PNG plots of a run's metrics (matplotlib, Agg backend): accuracy, loss, flip rate per layer.

``accuracy.png`` draws train and test accuracy; ``flip_rate.png`` draws each layer's flips per
weight bit per step on a log axis, where an epoch with no flips at all (rate 0, which a log axis
cannot show) is drawn as a hollow triangle on the axis floor and named in the legend, not left
out or faked as a small number.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["flip_rate_series", "plot_metrics"]


def flip_rate_series(metrics: list[dict]) -> tuple[bool, float, list[tuple[list, list, list]]]:
    """What ``flip_rate.png`` draws: ``(log, floor, layers)`` with, per layer, the epochs and
    rates of the line (NaN, a gap, where the rate is 0: the line does not pretend to pass
    through a zero epoch) and the epochs drawn as "no flips" markers at ``floor`` (a tenth of
    the smallest nonzero rate). Without any nonzero rate the axis is linear and zeros are plain
    points of the line."""
    ep = [r["epoch"] for r in metrics]
    n_layers = len(metrics[0]["flip_rate"]) if metrics else 0
    rates = [[r["flip_rate"][i] for r in metrics] for i in range(n_layers)]
    positive = [v for layer in rates for v in layer if v > 0]
    log = bool(positive)
    floor = min(positive) / 10 if log else 0.0
    layers = []
    for layer in rates:
        ys = [v if v > 0 or not log else math.nan for v in layer]
        zeros = [e for e, v in zip(ep, layer, strict=True) if v == 0] if log else []
        layers.append((list(ep), ys, zeros))
    return log, floor, layers


def plot_metrics(metrics: list[dict], folder: str | os.PathLike, title: str = "") -> list[Path]:
    """Write ``accuracy.png``, ``loss.png`` and ``flip_rate.png`` into ``folder``; return paths."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bitswarm.golden.files import atomic_write_bytes

    folder = Path(folder)
    ep = [r["epoch"] for r in metrics]
    out = []
    title = title.strip()

    from matplotlib.ticker import MaxNLocator

    def _save(fig, ax, name, what):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{title}: {what}" if title else what, fontsize=11)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        atomic_write_bytes(folder / name, buf.getvalue())
        out.append(folder / name)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    with_train = [r for r in metrics if "train_accuracy" in r]
    if with_train:
        ax.plot([r["epoch"] for r in with_train], [100 * r["train_accuracy"] for r in with_train],
                marker="s", label="train (running, during each epoch)")
    ax.plot(ep, [100 * r["test_accuracy"] for r in metrics], marker="o", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.legend(loc="lower right")
    _save(fig, ax, "accuracy.png", "train and test accuracy")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(ep, [r["train_loss"] for r in metrics], marker="o", label="train (surrogate)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy of the surrogate scores")
    ax.legend(loc="upper right")
    _save(fig, ax, "loss.png", "train loss")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    log, floor, layers = flip_rate_series(metrics)
    zero_drawn = False
    for i, (xs, ys, zeros) in enumerate(layers):
        (line,) = ax.plot(xs, ys, marker="o", label=f"layer {i}")
        if zeros:
            ax.plot(zeros, [floor] * len(zeros), linestyle="none", marker="v", markersize=8,
                    markerfacecolor="none", color=line.get_color(),
                    label=None if zero_drawn else "no flips in the epoch (0)")
            zero_drawn = True
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor / 2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("flips per weight bit per step" + (" (log)" if log else ""))
    if layers:
        ax.legend(loc="best", fontsize=9)
    _save(fig, ax, "flip_rate.png", "flip rate per layer")
    return out
