"""PNG plots of a run's metrics (matplotlib, Agg backend): accuracy, loss, flip rate per layer."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["plot_metrics"]


def plot_metrics(metrics: list[dict], folder: str | os.PathLike, title: str = "") -> list[Path]:
    """Write ``accuracy.png``, ``loss.png`` and ``flip_rate.png`` into ``folder``; return paths."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bitswarm.golden.model import atomic_write_bytes

    folder = Path(folder)
    ep = [r["epoch"] for r in metrics]
    out = []

    def _save(fig, name):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        atomic_write_bytes(folder / name, buf.getvalue())
        out.append(folder / name)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ep, [100 * r["test_accuracy"] for r in metrics], marker="o", label="test")
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{title} test accuracy".strip())
    ax.grid(alpha=0.3)
    _save(fig, "accuracy.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ep, [r["train_loss"] for r in metrics], marker="o")
    ax.set(xlabel="epoch", ylabel="surrogate cross-entropy", title=f"{title} train loss".strip())
    ax.grid(alpha=0.3)
    _save(fig, "loss.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    n_layers = len(metrics[0]["flip_rate"]) if metrics else 0
    for i in range(n_layers):
        ax.plot(ep, [r["flip_rate"][i] for r in metrics], marker="o", label=f"layer {i}")
    ax.set(xlabel="epoch", ylabel="flips per weight bit per step", title=f"{title} flip rate".strip())
    if n_layers and any(r["flip_rate"][i] > 0 for r in metrics for i in range(n_layers)):
        ax.set_yscale("log")
    if n_layers:
        ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, "flip_rate.png")
    return out
