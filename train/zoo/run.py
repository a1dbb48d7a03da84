"""Measuring rules side by side (``bitswarm.train.zoo.run``): the engine of ``bitswarm zoo``.

Every rule runs through the ordinary trainer (:func:`bitswarm.train.train`) with the same
data set, architecture, batch size, epochs and seed, so data order and initial bits are equal
where the rules share a weight alphabet. One row per rule, with the contract keys
:data:`CONTRACT_KEYS`:

``rule``, ``source`` (seed and version), ``hardware_trainable`` (and its ``reason``),
``final_accuracy`` / ``best_accuracy`` (test set, after each epoch), ``collapsed``,
``flip_rate`` (weight changes per stored weight element per step, mean over the last epoch),
``seconds_per_epoch`` (wall clock, mean), ``state_bytes_per_weight`` (weight storage plus
training state per logical weight, at the widths each rule declares; float = 4 bytes).

``collapsed`` is true when the final accuracy is more than 5 points below the best epoch's or
at most 1.5 times chance (``1 / classes``); ``never_learned`` separates rules whose best epoch
never got above 1.5 times chance.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bitswarm.golden.errors import ConfigError

from ..rules import RULES, get_rule
from ..trainer import TrainConfig, train
from .base import ZooRule

__all__ = ["CONTRACT_KEYS", "REFERENCES", "parse_rules", "run_zoo", "state_bytes_per_weight", "zoo_row"]

CONTRACT_KEYS = ("rule", "source", "hardware_trainable", "final_accuracy", "best_accuracy", "collapsed",
                 "flip_rate", "seconds_per_epoch", "state_bytes_per_weight")

#: Provenance and labels of the trainer's own rules (they are not zoo classes).
REFERENCES = {
    "golden": ("bitswarm golden rule", "votes come from the host's float softmax; the flip step itself is golden integer"),
    "float": ("reference: float MLP + Adam", "float weights and Adam"),
    "ste-adam": ("reference: STE + latent floats + Adam", "float latent weights, BatchNorm and Adam"),
    "bop": ("reference: Bop (Helwegen et al. 2019)", "float momentum per bit, BatchNorm via Adam"),
}


def parse_rules(text: str | None) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (all registered rules for ``None``); unknown names raise."""
    get_rule("golden")
    if text is None:
        return list(RULES)
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ConfigError("--rules needs at least one rule name")
    for n in names:
        get_rule(n)
    return names


def state_bytes_per_weight(name: str, swarm: int, flip_acc_width: int) -> float | None:
    """Weight storage plus training state per logical weight, in bytes, at declared widths
    (``None`` for a registered rule outside the zoo and the references: it declares none)."""
    cls = get_rule(name)
    if issubclass(cls, ZooRule):
        if cls.weight_kind == "ternary":
            return (8 / 5 + cls.state_bits) / 8
        return swarm * (1 + cls.state_bits) / 8
    return {"golden": swarm * (1 + flip_acc_width) / 8, "float": 12.0, "ste-adam": swarm * 12.0,
            "bop": swarm * (1 + 32) / 8}.get(name)


def zoo_row(name: str, result, swarm: int, classes: int) -> dict:
    """One results row from a :class:`~bitswarm.train.TrainResult`."""
    cls = get_rule(name)
    rule = result.rule
    accs = [m["test_accuracy"] for m in result.metrics]
    final, best = accs[-1], max(accs)
    chance = 1.0 / classes
    last = result.metrics[-1]
    bits = rule.weight_bits()
    total = sum(bits)
    fr = sum(f for f in last["flips"]) / (total * last["steps"]) if total and last["steps"] else 0.0
    if issubclass(cls, ZooRule):
        source, reason = cls.source, cls.reason
        integer = cls.integer_update
    else:
        source, reason = REFERENCES.get(name, ("registered rule", ""))
        integer = False
    own = getattr(rule, "own_forward", not rule.exportable)
    return {
        "rule": name,
        "source": source,
        "summary": cls.summary,
        "hardware_trainable": bool(rule.hardware_trainable),
        "integer_update": integer,
        "reason": reason,
        "evaluated_by": "own float forward" if own else "golden export",
        "final_accuracy": final,
        "best_accuracy": best,
        "best_epoch": accs.index(best) + 1,
        "collapsed": bool(final < best - 0.05 or final <= 1.5 * chance),
        "never_learned": bool(best <= 1.5 * chance),
        "flip_rate": fr,
        "flip_rate_per_layer": last["flip_rate"],
        "seconds_per_epoch": sum(m["seconds"] for m in result.metrics) / len(result.metrics),
        "state_bytes_per_weight": state_bytes_per_weight(name, swarm, result.config.flip.acc_width),
        "accuracy_per_epoch": accs,
        "epochs": len(accs),
    }


def run_zoo(
    dataset: str,
    rules: list[str] | None = None,
    epochs: int = 10,
    arch: tuple[int, ...] | None = None,
    swarm: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    options: dict[str, dict] | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    progress=None,
) -> list[dict]:
    """Train every rule on the same data, network, budget and seed; return one row each.

    Parameters
    ----------
    dataset, arch, swarm, batch_size, seed, epochs :
        As :class:`~bitswarm.train.TrainConfig`; ternary rules always use swarm 1.
    rules : list of str, optional
        Registered rule names (default: all).
    options : dict, optional
        ``{rule: {option: value}}``.
    progress : callable, optional
        Called with each finished row.
    """
    names = parse_rules(None if rules is None else ",".join(rules))
    options = options or {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bitswarm-zoo-") as tmp:
        for name in names:
            cls = get_rule(name)
            s = 1 if getattr(cls, "weight_kind", "binary") == "ternary" else swarm
            cfg = TrainConfig(dataset=dataset, arch=arch, swarm=s, epochs=epochs, batch_size=batch_size,
                              seed=seed, rule=name, options=dict(options.get(name, {})))
            res = train(cfg, run_dir=Path(tmp) / name, quiet=True, plots=False, data_dir=data_dir,
                        device=device, overwrite=True)
            row = zoo_row(name, res, s, res.config.arch[-1])
            row["dataset"] = dataset
            row["arch"] = "-".join(map(str, res.config.arch))
            row["swarm"] = s
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows
