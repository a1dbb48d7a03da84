"""Writing zoo results (``bitswarm.train.zoo.report``): ``zoo.json``, ``zoo.md`` and a plot of
test accuracy per epoch for every row, as ``bitswarm zoo --out DIR`` and ``make bench-zoo`` do."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["format_table", "row_label", "write_report", "plot_accuracy"]


def row_label(r: dict) -> str:
    """``rule`` plus its network and swarm size (``v20-lif seed S=32``)."""
    return f"{r['rule']} {r.get('net', '')} S={r.get('swarm', 1)}".replace("  ", " ")


def format_table(rows: list[dict]) -> str:
    """A Markdown table of zoo rows, with the seed's own result and the verdict."""
    head = ("| rule | net | S | batch x steps | source | evaluated by | final | best | collapsed | flip rate | s/epoch "
            "| state B/weight | seed reported | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        sb = r["state_bytes_per_weight"]
        col = "no"
        if r["collapsed"]:
            col = f"**yes** ({r.get('collapse') or 'unclassified'})"
        arch = f" on `{r['arch']}`" if "x" in str(r.get("arch", "")) else ""
        lines.append(
            f"| `{r['rule']}`{arch} | {r.get('net', '')} | {r.get('swarm', 1)} | {r.get('batch', '')} x "
            f"{r.get('steps_per_epoch', '')} | {r['source']} | {r['evaluated_by']} "
            f"| {100 * r['final_accuracy']:.1f} | {100 * r['best_accuracy']:.1f} (ep {r['best_epoch']}) "
            f"| {col} | {r['flip_rate']:.2e} | {r['seconds_per_epoch']:.2f} "
            f"| {'n/a' if sb is None else f'{sb:.2f}'} | {r.get('seed_reported') or '—'} | {r.get('verdict') or '—'}"
            f"{'; ' + r['cause'] if r.get('cause') else ''} |")
    return "\n".join(lines)


def plot_accuracy(rows: list[dict], path: Path, title: str = "") -> None:
    """Test accuracy per epoch into ``path`` (PNG): one panel per rule with each of its rows
    (S = 32 solid, S = 1 dashed, convolutional dotted) and the seed's own logged curve (black)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .record import SEED_RESULTS

    names = list(dict.fromkeys(r["rule"] for r in rows))
    cols = 6
    nr = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nr, cols, figsize=(2.6 * cols, 2.0 * nr), sharey=True, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for r in (r for r in rows if r["rule"] == name):
            a = r["accuracy_per_epoch"]
            conv = "x" in str(r.get("arch", ""))
            ls = ":" if conv else ("-" if r.get("swarm", 1) > 1 or r.get("net") != "seed" else "--")
            ax.plot(range(1, len(a) + 1), [100 * v for v in a], ls=ls, lw=1.3,
                    label=("conv" if conv else f"S={r.get('swarm', 1)}"))
        rec = SEED_RESULTS.get(name)
        if rec is not None:
            ax.plot(range(1, len(rec.accuracy) + 1), [100 * v for v in rec.accuracy], color="k", lw=0.8,
                    ls="-.", label=f"seed ({rec.dataset.split()[0]})")
        ax.set_title(name, fontsize=8)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5, loc="lower right")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{title} (x: epoch, y: test accuracy %)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(by_ds: dict[str, list[dict]], out: str | Path, meta: dict, preamble: list[str] | None = None,
                 plots: bool = True) -> list[Path]:
    """Write ``zoo.json``, ``zoo.md`` and ``zoo_<dataset>.png`` into ``out``; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "zoo.json", out / "zoo.md"]
    paths[0].write_text(json.dumps({"meta": meta, "results": by_ds}, indent=1) + "\n")
    lines = list(preamble or ["# Rule zoo", ""])
    for ds, rows in by_ds.items():
        if not rows:
            continue
        lines += [f"## {ds}", "", f"![accuracy per epoch](zoo_{ds.replace(':', '_')}.png)", "",
                  format_table(rows), ""]
        if plots:
            p = out / f"zoo_{ds.replace(':', '_').replace('/', '_')}.png"
            plot_accuracy(rows, p, f"{ds}: test accuracy per epoch")
            paths.append(p)
    paths[1].write_text("\n".join(lines) + "\n")
    return paths
