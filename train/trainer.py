"""The training loop: data order, epochs, metrics, checkpoints, export (``bitswarm.train.trainer``).

The trainer only orchestrates; what a step does is the rule's business
(:mod:`bitswarm.train.rules`). A run is a function of its :class:`TrainConfig`:

- data order: epoch ``e`` visits the training set in the order
  ``numpy.random.default_rng([seed, e]).permutation(n)``, in minibatches of ``batch_size``;
  the last incomplete minibatch of an epoch is dropped. No RNG state has to be carried:
  the checkpoint records ``seed`` and the next epoch.
- initial weights: the rule's, from ``seed``.

After every epoch the trainer evaluates the test set (golden ``Model.forward`` for exportable
rules), appends a metrics record, rewrites ``metrics.jsonl`` and writes ``last.ckpt`` (all
state, atomically) in the run folder. Killing a run loses at most the epoch in progress;
``resume`` continues it and the result is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from bitswarm.golden.arch import parse_arch as golden_parse_arch
from bitswarm.golden.errors import BitswarmError, ConfigError
from bitswarm.golden.files import atomic_write_bytes, check_outputs
from bitswarm.golden.flip import FlipRuleConfig
from bitswarm.golden.layer import SWARM_SIZES
from bitswarm.golden.model import Model, save_model

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .data import DataError, Dataset, load_dataset
from .distributed import env_world_size
from .distributed import init as init_comm
from .rules import NetSpec, Rule, get_rule

__all__ = [
    "DEFAULT_FLIP",
    "default_flip",
    "TrainConfig",
    "TrainResult",
    "default_arch",
    "default_batch",
    "default_epochs",
    "DEFAULT_EPOCHS",
    "parse_arch",
    "arch_text",
    "check_arch",
    "train",
    "evaluate",
    "epoch_order",
    "run_dir_for",
]

#: Integrate-and-fire constants of the golden rule unless given, defined once in golden
#: (:meth:`FlipRuleConfig.for_training`): a bit flips after 48 net "wrong" votes (positive
#: accumulators below ``2**leak_shift = 64`` do not leak; see ``train/RULES.md``).
DEFAULT_FLIP = FlipRuleConfig.for_training()


def default_flip(swarm: int, rule: str = "golden") -> FlipRuleConfig:
    """The flip constants a run of ``rule`` with swarm size ``swarm`` gets unless given:
    :meth:`FlipRuleConfig.for_training` with the rule's vote kind (``onchip``: integer votes),
    stochastic LFSR firing (probability 8/16) when ``swarm > 1``.

    All planes of a swarm weight see the same gradient; without noise, planes holding the same
    bit would integrate identical votes and flip together forever, so the swarm would act as
    one bit. Random firing lets them drift apart and use all 2S+1 levels.
    """
    return FlipRuleConfig.for_training(swarm, get_rule(rule).votes)

# Fields of TrainConfig that a resumed run may change (they do not change the result).
_RESUMABLE = ("epochs",)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: Inputs from which a data set is "MNIST-sized" for the default recipe (:func:`default_arch`,
#: :func:`default_batch`).
LARGE_INPUTS = 784


def default_arch(ds: Dataset) -> tuple[int, ...]:
    """``inputs-2048-classes`` for MNIST-sized inputs (784-2048-10: mnist5k, Fashion-MNIST),
    ``inputs-512-classes`` below (digits: 64-512-10); train/RULES.md, "Defaults"."""
    return (ds.n_inputs, 2048 if ds.n_inputs >= LARGE_INPUTS else 512, ds.classes)


#: Epochs of a run per named data set (``None`` in :class:`TrainConfig`); the benchmark's
#: (bench/bench_train.py), the budgets the accuracy targets are met in. Other data sets: 30.
DEFAULT_EPOCHS = {"digits": 30, "mnist5k": 60, "fashion": 20}


def default_epochs(ds: Dataset) -> int:
    """:data:`DEFAULT_EPOCHS` of the data set, 30 for any other (``npz:PATH``)."""
    return DEFAULT_EPOCHS.get(ds.name, 30)


def default_batch(ds: Dataset) -> int:
    """256 for MNIST-sized inputs, 128 below (digits: 11 steps per epoch, so that a 3-epoch
    run gets through the threshold ramp); train/RULES.md, "Defaults"."""
    return 256 if ds.n_inputs >= LARGE_INPUTS else 128


def parse_arch(text) -> tuple[int, ...] | str:
    """An architecture string (:data:`bitswarm.golden.arch.ARCH_HELP`) as a run stores it:
    MLP widths as a tuple (``"64-128-10"`` -> ``(64, 128, 10)``), a network with convolutions
    as its canonical string (``"1x8x8-c16k3p1-mp2-10"``). One-line ConfigError otherwise."""
    a = golden_parse_arch(text)
    return a.widths if a.is_mlp else str(a)


def arch_text(arch: tuple[int, ...] | str) -> str:
    """The canonical string of a run's arch (``64-128-10``, ``1x8x8-c16k3p1-mp2-10``)."""
    return arch if isinstance(arch, str) else "-".join(map(str, arch))


def check_arch(arch: tuple[int, ...] | str, ds: Dataset) -> None:
    """Raise :class:`DataError` unless ``arch`` takes ``ds``'s inputs and gives its classes
    (a convolutional arch's input shape ``CxHxW`` must be the samples' shape, ``1xHxW`` for
    ``HxW`` samples)."""
    a = golden_parse_arch(arch)
    text, shape = str(a), "x".join(map(str, ds.input_shape))
    if a.n_inputs != ds.n_inputs:
        hint = (f"start the arch with {ds.n_inputs}" if a.is_mlp
                else f"start the arch with {'1x' if len(ds.input_shape) == 2 else ''}{shape}")
        raise DataError(f"arch {text} takes {a.n_inputs} inputs but {ds.name} samples have "
                        f"{ds.n_inputs} ({shape}); {hint}")
    if not a.is_mlp:
        want = ds.input_shape if len(ds.input_shape) == 3 else (1, *ds.input_shape)
        if tuple(a.input_shape) != tuple(want):
            raise DataError(f"arch {text} takes {'x'.join(map(str, a.input_shape))} maps but "
                            f"{ds.name} samples are {shape}; start the arch with "
                            f"{'x'.join(map(str, want))}")
    if a.classes != ds.classes:
        raise DataError(f"arch {text} gives {a.classes} outputs but {ds.name} has {ds.classes} classes")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's result.

    Parameters
    ----------
    dataset : str
        ``digits``, ``mnist5k``, ``fashion`` or ``npz:PATH``.
    arch : tuple of int, str or None
        MLP layer widths, or the canonical string of a network with convolutions (a string
        is read by :func:`parse_arch`: an MLP string becomes its widths); ``None`` picks
        :func:`default_arch`.
    batch_size : int or None
        Minibatch size; ``None`` picks :func:`default_batch` (128 or 256 by the data set).
    swarm, input_bits : int
        Golden ``LayerConfig.swarm`` (1, 2, 4, ..., 32) and first-layer input bits (1..8).
    epochs : int or None
        Total epochs; ``None`` picks :func:`default_epochs` (or, resuming, the checkpoint's).
    seed : int
    rule : str
        A registered rule name (``golden``, ``ste-adam``, ``bop``, ``float``, ...).
    options : dict
        The rule's options (``--opt NAME=VALUE``).
    flip : FlipRuleConfig or None
        Integrate-and-fire constants recorded in the model file (used by the golden and
        on-chip rules); ``None`` means :func:`default_flip` of ``swarm`` and ``rule``.
    """

    dataset: str = "digits"
    arch: tuple[int, ...] | str | None = None
    swarm: int = 1
    input_bits: int = 8
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    rule: str = "golden"
    options: dict = field(default_factory=dict)
    flip: FlipRuleConfig | None = None

    def __post_init__(self):
        if isinstance(self.arch, list):
            object.__setattr__(self, "arch", tuple(self.arch))
        if isinstance(self.arch, str):
            object.__setattr__(self, "arch", parse_arch(self.arch))
        if isinstance(self.flip, dict):
            object.__setattr__(self, "flip", FlipRuleConfig.from_dict(self.flip))
        if self.flip is None and _is_int(self.swarm) and self.swarm >= 1:
            object.__setattr__(self, "flip", default_flip(self.swarm, self.rule))
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError(f"dataset must be a name, not {self.dataset!r}")
        if self.arch is not None and not isinstance(self.arch, str) and (
            not isinstance(self.arch, tuple) or len(self.arch) < 2
            or not all(_is_int(a) and a >= 1 for a in self.arch)
        ):
            raise ConfigError(f"arch must be at least two positive widths or an arch string, "
                              f"not {self.arch!r}")
        if not _is_int(self.swarm) or self.swarm not in SWARM_SIZES:
            raise ConfigError(f"swarm must be one of {SWARM_SIZES}, not {self.swarm!r}")
        if not _is_int(self.input_bits) or not 1 <= self.input_bits <= 8:
            raise ConfigError(f"input_bits must be in 1..8, not {self.input_bits!r}")
        for name, lo in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            v = getattr(self, name)
            if name in ("batch_size", "epochs") and v is None:
                continue
            if not _is_int(v) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, not {v!r}")
        if not isinstance(self.options, dict):
            raise ConfigError("options must be a mapping of rule option names to values")
        if not isinstance(self.flip, FlipRuleConfig):
            raise ConfigError("flip must be a FlipRuleConfig")
        get_rule(self.rule)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["arch"] = list(self.arch) if isinstance(self.arch, tuple) else self.arch
        d["flip"] = self.flip.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or set(d) - names:
            raise ConfigError(f"train config has unknown fields {sorted(set(d) - names)}")
        return cls(**d)


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    config: TrainConfig
    metrics: list[dict]
    model: Model | None
    run_dir: Path
    rule: Rule


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The training-set order of epoch ``epoch`` (0-based)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def run_dir_for(out: str | os.PathLike | None, cfg: TrainConfig) -> Path:
    """Default run folder: ``OUT`` without suffix plus ``.run`` (``model.bsm`` -> ``model.run``),
    or ``runs/<rule>-<dataset>-s<seed>`` without ``--out``."""
    if out is not None:
        p = Path(out)
        return p.with_name(p.stem + ".run")
    safe = cfg.dataset.replace("npz:", "npz-").replace("/", "_")
    return Path("runs") / f"{cfg.rule}-{safe}-s{cfg.seed}"


def _device(name: str) -> torch.device:
    try:
        d = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', not {name!r}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA device")
    if d.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', not {name!r}")
    return d


def _spec(cfg: TrainConfig, ds: Dataset, arch: tuple[int, ...] | str) -> NetSpec:
    meta = {
        "dataset": cfg.dataset, "rule": cfg.rule, "seed": str(cfg.seed),
        "arch": arch_text(arch), "batch_size": str(cfg.batch_size),
        "options": json.dumps(cfg.options, sort_keys=True), "trainer": "bitswarm.train",
    }
    return NetSpec(arch, ds.input_shape, cfg.swarm, cfg.input_bits, cfg.seed, cfg.flip, meta)


def _final_model(rule: Rule, epochs: int) -> Model | None:
    m = rule.export()
    if m is None:
        return None
    cfg = dataclasses.replace(m.cfg, meta={**m.cfg.meta, "epochs": str(epochs)})
    return Model(cfg, m.weights, m.theta, m.invert, m.acc, m.lfsr_state)


def evaluate(model: Model, x, y, batch: int = 4096) -> tuple[float, int]:
    """Accuracy of the golden forward pass (``Model.predict``) on raw uint8 samples."""
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if len(x) == 0:
        raise DataError("no samples to evaluate")
    pred = torch.cat([model.predict(x[i : i + batch]).cpu() for i in range(0, len(x), batch)])
    return float((pred == y.cpu()).double().mean()), len(y)


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _check_world(world: int, batch: int) -> None:
    if world > batch:
        raise ConfigError(f"batch_size {batch} is smaller than the {world} processes; "
                          "each rank needs at least one sample of every minibatch")


def train(
    config: TrainConfig,
    out: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    device: str = "cpu",
    data_dir: str | os.PathLike | None = None,
    quiet: bool = False,
    plots: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train (or continue) a run and export its model.

    Parameters
    ----------
    config : TrainConfig
        The run. With ``resume``, it must equal the checkpoint's except for ``epochs``.
    out : path, optional
        Model file to write at the end (refused for non-exportable rules).
    run_dir : path, optional
        Folder for ``last.ckpt``, ``metrics.jsonl``, ``config.json`` and plots (default:
        :func:`run_dir_for`, or the checkpoint's folder when resuming).
    resume : path, optional
        A checkpoint file (or run folder) to continue from.
    device : str
        ``cpu`` (default) or ``cuda``; the integer state is identical on both.
    data_dir : path, optional
        IDX folder for ``fashion``.
    quiet : bool
        No progress bar and no per-epoch lines on stderr.
    plots : bool
        Write PNG plots at the end.
    overwrite : bool
        Allow replacing an existing ``out`` and a fresh run in a folder that already holds
        ``last.ckpt``; without it both are refused before any work.

    Raises
    ------
    BitswarmError
        Any invalid setting, data or checkpoint, before anything is written.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, not {type(config).__name__}")
    dev = _device(device)
    rule_cls = get_rule(config.rule)
    world = env_world_size()  # > 1 under torchrun: data-parallel (train/distributed.py)
    if world > 1 and not rule_cls.data_parallel:
        raise ConfigError(f"rule {config.rule!r} cannot train on {world} processes: "
                          f"{rule_cls.serial_reason}; run it in one process (no torchrun, no --nproc)")
    if config.batch_size is not None:  # before any rendezvous; a default batch is checked below
        _check_world(world, config.batch_size)
    if out is not None and not rule_cls.exportable:
        raise ConfigError(
            f"rule {config.rule!r} trains a float reference network that is not a bitswarm "
            "model and cannot be exported: omit --out (metrics, plots and checkpoints go to "
            "the run folder)"
        )
    if out is None and rule_cls.exportable and resume is None and run_dir is None:
        raise ConfigError("give --out MODEL (or --checkpoint-dir DIR) for the run's results")
    if out is not None and Path(out).is_dir():
        raise ConfigError(f"--out {out} is a directory; give a model file path")
    if out is not None:  # refuse before any work, not after the run
        check_outputs([out], overwrite=overwrite)
    ck: Checkpoint | None = None
    if resume is not None:
        ck = load_checkpoint(resume)
        try:
            saved = TrainConfig.from_dict(ck.config)
        except (ConfigError, TypeError) as e:
            raise CheckpointError(f"{resume}: invalid run config ({e})") from None
        a, b = saved.to_dict(), config.to_dict()
        for k in a:
            if k not in _RESUMABLE and a[k] != b[k] and not (k in ("arch", "batch_size") and b[k] is None):
                raise ConfigError(f"{k} differs from the checkpoint's ({b[k]!r} vs {a[k]!r}); "
                                  "a resumed run keeps its configuration")
        config = dataclasses.replace(saved, epochs=config.epochs or saved.epochs)
        if run_dir is None:
            rp = Path(resume)
            run_dir = rp if rp.is_dir() else rp.parent
        if ck.epoch > config.epochs:
            raise ConfigError(f"the checkpoint has {ck.epoch} epochs already; --epochs {config.epochs} is fewer")
    run_dir = Path(run_dir) if run_dir is not None else run_dir_for(out, config)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} exists and is not a folder")
    if ck is None and (run_dir / "last.ckpt").exists() and not overwrite:
        raise ConfigError(
            f"{run_dir} already holds a run (last.ckpt): continue it with --resume "
            f"{run_dir / 'last.ckpt'}, pick another --checkpoint-dir, or pass --overwrite"
        )
    check_outputs([run_dir / "last.ckpt"], overwrite=True)  # the run folder must be writable
    comm, dev = init_comm(dev)  # one process: LOCAL (no process group), dev unchanged
    quiet = quiet or not comm.is_writer  # rank 0 alone reports and writes

    ds = load_dataset(config.dataset, data_dir)
    arch = config.arch or default_arch(ds)
    check_arch(arch, ds)
    config = dataclasses.replace(config, arch=arch, batch_size=config.batch_size or default_batch(ds),
                                 epochs=config.epochs or default_epochs(ds))
    _check_world(world, config.batch_size)
    rule = rule_cls(_spec(config, ds, arch), config.options, dev)
    rule.comm = comm

    x_train = torch.from_numpy(ds.x_train).to(dev)
    y_train = torch.from_numpy(ds.y_train).to(dev)
    x_test = torch.from_numpy(ds.x_test).to(dev)
    y_test = torch.from_numpy(ds.y_test).to(dev)
    n = len(y_train)
    if config.batch_size > n:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {n} training samples")
    steps = n // config.batch_size

    if ck is None:
        rule.init_state(x_train)
        metrics: list[dict] = []
        start = 0
    else:
        rule.load_state(ck.model, ck.tensors, ck.rule_meta)
        metrics = list(ck.metrics)
        start = ck.epoch
    with comm.writes("writing config.json") as writer:
        if writer:  # world_size and backend only here: model and checkpoint bytes do not depend on them
            run_dir.mkdir(parents=True, exist_ok=True)
            run_cfg = {**config.to_dict(), "world_size": comm.world_size, "backend": comm.backend}
            atomic_write_bytes(run_dir / "config.json",
                               (json.dumps(run_cfg, indent=2, sort_keys=True) + "\n").encode())
    _log(f"bitswarm train: {ds.describe()}; rule {config.rule}, arch {arch_text(arch)}, "
         f"swarm {config.swarm}, {config.epochs} epochs x {steps} steps; run folder {run_dir}", quiet)

    from tqdm import tqdm

    bits = rule.weight_bits()
    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        rule.start_epoch(epoch)
        order = torch.from_numpy(epoch_order(config.seed, epoch, n)).to(dev)
        loss_sum, flips, correct = 0.0, [0] * len(bits), 0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{config.epochs}", file=sys.stderr,
                   disable=quiet, leave=False, unit="step", dynamic_ncols=True)
        for s in bar:
            idx = order[s * config.batch_size : (s + 1) * config.batch_size]
            r = rule.train_step(x_train[idx], y_train[idx])
            if not math.isfinite(r.loss):
                raise BitswarmError(f"training diverged (loss {r.loss}) in epoch {epoch + 1}")
            loss_sum += r.loss
            correct = None if correct is None or r.correct is None else correct + r.correct
            flips = [a + b for a, b in zip(flips, r.flips, strict=True)]
            if s % 10 == 0:
                bar.set_postfix(loss=f"{loss_sum / (s + 1):.3f}")
        bar.close()
        train_s = time.perf_counter() - t0
        pred = rule.predict(x_test)
        acc = float((pred == y_test).double().mean())
        rec = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(1, steps),
            "test_accuracy": acc,
            "flip_rate": [f / (b * steps) if b and steps else 0.0 for f, b in zip(flips, bits, strict=True)],
            "flips": flips,
            "steps": steps,
            "seconds": time.perf_counter() - t0,
            "train_samples_per_s": steps * config.batch_size / train_s if train_s > 0 else 0.0,
        }
        if correct is not None and steps:  # running: each minibatch scored before its step
            rec["train_accuracy"] = correct / (steps * config.batch_size)
        metrics.append(rec)
        model = rule.export()
        with comm.writes(f"writing the epoch-{epoch + 1} checkpoint") as writer:
            if writer:
                save_checkpoint(run_dir / "last.ckpt", Checkpoint(
                    config=config.to_dict(), epoch=epoch + 1, model=model, tensors=rule.state_tensors(),
                    rule_meta=rule.state_meta(), metrics=metrics,
                    data_order={"kind": "numpy default_rng([seed, epoch]).permutation",
                                "seed": config.seed, "next_epoch": epoch + 1},
                ))
                atomic_write_bytes(run_dir / "metrics.jsonl",
                                   "".join(json.dumps(m, sort_keys=True) + "\n" for m in metrics).encode())
        comm.checkpoint_note = (f"{run_dir / 'last.ckpt'} holds epoch {epoch + 1}, intact "
                                f"(continue with --resume {run_dir / 'last.ckpt'})")
        fr = " ".join(f"{f:.2e}" for f in rec["flip_rate"])
        _log(f"epoch {epoch + 1:3d}/{config.epochs}: loss {rec['train_loss']:.4f}  test accuracy "
             f"{100 * acc:6.2f} %  flip rate [{fr}]  {rec['seconds']:.1f} s "
             f"({rec['train_samples_per_s']:.0f} samples/s)", quiet)
    final = _final_model(rule, config.epochs) if rule.exportable else None
    with comm.writes("writing the model file and plots") as writer:
        if writer and out is not None and final is not None:
            save_model(final, out)
        if writer and plots and metrics:
            from .plots import plot_metrics

            plot_metrics(metrics, run_dir, f"{config.rule} {config.dataset}")
    comm.close()
    return TrainResult(config, metrics, final, run_dir, rule)
