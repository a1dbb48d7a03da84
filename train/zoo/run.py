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

``collapsed`` is true when a run that learned (best epoch above twice chance) ends more than
5 points below its best epoch — a drop after learning, never a warm-up; ``never_learned``
marks runs whose best epoch stayed at or below twice chance.

Seed-scale rows
---------------
A seed notebook rule (one with an entry in :data:`~bitswarm.train.zoo.record.SEED_RESULTS`)
runs as its seed ran it: the seed network (``net=seed``), the seed's swarm size (32 for the
swarm rules, and a second row at S = 1), batch and number of epochs, an epoch being
``epoch_steps`` minibatches (default: one pass over the training set; the seed's MNIST epoch
was 600). These rows carry ``seed_reported`` (the seed's own number), ``verdict`` and
``collapse`` (:func:`~bitswarm.train.zoo.record.verdict`); every row carries ``swarm``, ``net``,
``batch`` and ``steps_per_epoch``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from bitswarm.golden.arch import parse_arch as golden_arch
from bitswarm.golden.errors import ConfigError

from ..rules import RULES, NetSpec, get_rule
from ..trainer import TrainConfig, arch_text, default_flip, epoch_order, parse_arch, train
from .base import ZooRule
from .record import SEED_RESULTS, curve_shape, verdict

__all__ = ["CONTRACT_KEYS", "REFERENCES", "parse_rules", "run_zoo", "run_seed_row", "state_bytes_per_weight",
           "zoo_row"]

CONTRACT_KEYS = ("rule", "source", "hardware_trainable", "final_accuracy", "best_accuracy", "collapsed",
                 "flip_rate", "seconds_per_epoch", "state_bytes_per_weight", "swarm", "seed_reported", "verdict")

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
    """One results row from a :class:`~bitswarm.train.TrainResult` (or the same fields)."""
    return _row(name, result.rule, [m["test_accuracy"] for m in result.metrics], result.metrics[-1],
                [m["seconds"] for m in result.metrics], swarm, classes, result.config.flip.acc_width)


def _row(name, rule, accs, last, seconds, swarm, classes, acc_width) -> dict:
    cls = get_rule(name)
    final, best = accs[-1], max(accs)
    bits = rule.weight_bits()
    total = sum(bits)
    fr = sum(f for f in last["flips"]) / (total * last["steps"]) if total and last["steps"] else 0.0
    shape = curve_shape(accs, classes)
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
        "collapsed": shape == "collapsed",
        "never_learned": shape == "never learned",
        "flip_rate": fr,
        "flip_rate_per_layer": last["flip_rate"],
        "seconds_per_epoch": sum(seconds) / len(seconds),
        "state_bytes_per_weight": state_bytes_per_weight(name, swarm, acc_width),
        "accuracy_per_epoch": accs,
        "epochs": len(accs),
        "swarm": swarm,
        "net": getattr(getattr(rule, "opts", None), "net", "golden") if isinstance(rule, ZooRule) else "trainer",
        "seed_reported": None,
        "verdict": "reference (no seed run)" if not issubclass(cls, ZooRule) else "not at seed scale",
        "collapse": None if shape != "collapsed" else "not at seed scale",
    }


def seed_scale(name: str) -> bool:
    """Whether ``name`` has a seed run to reproduce (a seed-scale row)."""
    cls = get_rule(name)
    return (issubclass(cls, ZooRule) and SEED_RESULTS.get(name) is not None
            and getattr(cls.Options(), "net", "golden") == "seed")


def run_seed_row(name: str, dataset: str, swarm: int, epochs: int, batch: int, epoch_steps: int | None = None,
                 seed: int = 0, options: dict | None = None, arch: tuple[int, ...] | None = None,
                 data_dir: str | None = None, device: str = "cpu") -> dict:
    """Train ``name`` on its seed network for ``epochs`` epochs of ``epoch_steps`` minibatches
    (default: one pass) on the trainer's data order; return its row with the verdict fields."""
    from ..data import load_dataset

    ds = load_dataset(dataset, data_dir)
    arch = (arch if isinstance(arch, str) else tuple(arch)) if arch else (ds.n_inputs, 128, ds.classes)
    spec = NetSpec(arch, ds.input_shape, swarm=swarm, seed=seed, flip=default_flip(swarm))
    rule = get_rule(name)(spec, dict(options or {}), device)
    xtr, ytr = torch.from_numpy(ds.x_train).to(device), torch.from_numpy(ds.y_train).to(device)
    xte, yte = torch.from_numpy(ds.x_test).to(device), torch.from_numpy(ds.y_test).to(device)
    rule.init_state(xtr)
    per = max(1, len(ytr) // batch)
    steps = epoch_steps or per
    accs, secs, k, pass_no, order, total_flips = [], [], per, -1, None, 0
    n_layers = len(rule.model_config.layers)
    last = {"flips": [0] * n_layers, "steps": 0}
    for e in range(epochs):
        rule.start_epoch(e)
        t0 = time.perf_counter()
        flips = [0] * n_layers
        for _ in range(steps):
            if k == per:
                pass_no += 1
                order = torch.from_numpy(epoch_order(seed, pass_no, len(ytr))).to(device)
                k = 0
            idx = order[k * batch : (k + 1) * batch]
            k += 1
            f = rule.train_step(xtr[idx], ytr[idx]).flips
            flips = [a + b for a, b in zip(flips, f, strict=True)]
        secs.append(time.perf_counter() - t0)
        total_flips += sum(flips)
        accs.append(float((rule.predict(xte) == yte).double().mean()))
        last = {"flips": flips, "steps": steps,
                "flip_rate": [f / (b * steps) for f, b in zip(flips, rule.weight_bits(), strict=True)]}
    row = _row(name, rule, accs, last, secs, swarm, ds.classes, 0)
    row.update(dataset=dataset, arch=rule.model_config.arch_string if isinstance(arch, str) else arch_text(arch),
               batch=batch, steps_per_epoch=steps)
    rec = SEED_RESULTS.get(name)
    row["total_flips"] = total_flips
    row.update(verdict(name, accs, dataset, ds.classes, total_flips, updates=steps * epochs) if rec is None or swarm == rec.swarm else
               {"seed_reported": SEED_RESULTS[name].summary(), "verdict": f"S = {swarm} row (the seed ran S = "
                f"{SEED_RESULTS[name].swarm}): {curve_shape(accs, ds.classes)}, best {100 * max(accs):.1f} %",
                "collapse": None if curve_shape(accs, ds.classes) != "collapsed" else "S = 1 variant",
                "shape": curve_shape(accs, ds.classes)})
    return row


def run_zoo(
    dataset: str,
    rules: list[str] | None = None,
    epochs: int | None = None,
    arch: tuple[int, ...] | None = None,
    swarm: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    options: dict[str, dict] | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    progress=None,
    epoch_steps: int | None = None,
    seed_swarms: tuple[int, ...] | None = None,
) -> list[dict]:
    """Train every rule on the same data and seed; return one row each (two for swarm rules).

    Parameters
    ----------
    dataset, arch, swarm, batch_size, seed :
        As :class:`~bitswarm.train.TrainConfig` for the rows that run through the trainer
        (references, the golden rule, rules without a seed run, and any rule given
        ``net=golden``); ternary rules always use swarm 1.
    epochs : int, optional
        Epochs of every row (default: the seed's for seed-scale rows, 10 for the others).
    rules : list of str, optional
        Registered rule names (default: all).
    options : dict, optional
        ``{rule: {option: value}}``.
    epoch_steps : int, optional
        Minibatches per epoch of the seed-scale rows (default: one pass over the data).
    seed_swarms : tuple of int, optional
        Swarm sizes of the rows of a rule the seed ran as a swarm (default: the seed's and 1);
        the seed's single-bit rules always run at S = 1.
    progress : callable, optional
        Called with each finished row.
    """
    names = parse_rules(None if rules is None else ",".join(rules))
    for what, v in (("epochs", epochs), ("epoch_steps", epoch_steps)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ConfigError(f"{what} must be an integer >= 1, not {v!r}")
    if isinstance(arch, str):
        arch = parse_arch(arch)
    if isinstance(arch, str):  # convolutions: refuse, before any run, the rules that lack them
        lacking = [n for n in names if not get_rule(n).trains_conv]
        if lacking:
            able = ",".join(n for n in names if get_rule(n).trains_conv) or "golden,ste-adam,bop,float"
            raise ConfigError(f"arch {arch} has convolutions, which rule(s) {', '.join(lacking)} "
                              f"do not train; pick --rules from those that do (e.g. --rules {able})")
    options = options or {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bitswarm-zoo-") as tmp:
        for name in names:
            cls = get_rule(name)
            opts = dict(options.get(name, {}))
            if seed_scale(name) and opts.get("net", "seed") == "seed":
                rec = SEED_RESULTS[name]
                swarms = (seed_swarms or (rec.swarm, 1)) if rec.swarm > 1 else (1,)
                for s in swarms:
                    row = run_seed_row(name, dataset, s, epochs or rec.epochs, rec.batch, epoch_steps, seed, opts,
                                       arch, data_dir, device)
                    rows.append(row)
                    if progress is not None:
                        progress(row)
                continue
            s = 1 if getattr(cls, "weight_kind", "binary") == "ternary" else swarm
            cfg = TrainConfig(dataset=dataset, arch=arch, swarm=s, epochs=epochs or 10, batch_size=batch_size,
                              seed=seed, rule=name, options=opts)
            res = train(cfg, run_dir=Path(tmp) / name, quiet=True, plots=False, data_dir=data_dir,
                        device=device, overwrite=True)
            row = zoo_row(name, res, s, golden_arch(res.config.arch).classes)
            row["dataset"] = dataset
            row["arch"] = arch_text(res.config.arch)
            row["batch"] = batch_size
            row["steps_per_epoch"] = res.metrics[-1]["steps"]
            if issubclass(cls, ZooRule) and name in SEED_RESULTS:
                v = verdict(name, row["accuracy_per_epoch"], dataset, golden_arch(res.config.arch).classes)
                if SEED_RESULTS[name] is None:
                    row.update(v)
                else:
                    row["seed_reported"] = v["seed_reported"]
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows
