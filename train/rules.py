"""The training-rule interface and its registry (``bitswarm.train.rules``).

A *rule* turns minibatches into updates of one network. Every rule is one small class,
registered by name with :func:`register_rule`, with

- ``Options``: a frozen dataclass of its hyperparameters (all defaulted; set from the command
  line with ``--opt NAME=VALUE``);
- :meth:`Rule.init_state` (fresh start), :meth:`Rule.start_epoch` (schedules, a function of
  the epoch number only), :meth:`Rule.train_step` (one minibatch),
  :meth:`Rule.predict` (classes for raw uint8 samples), :meth:`Rule.export` (the golden
  :class:`~bitswarm.golden.Model`, or ``None`` for rules that cannot be exported);
- :meth:`Rule.state_tensors` / :meth:`Rule.load_state`: every piece of state that is not in
  the exported model (float latents, optimizer moments, batch-norm statistics), so that a
  checkpoint resumes bit for bit.

The trainer (:mod:`bitswarm.train.trainer`) owns data order, epochs, metrics and checkpoints;
rules own nothing else. ``RULES`` maps names to classes; a later rule zoo adds classes here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.flip import FlipRuleConfig
from bitswarm.golden.model import Model, ModelConfig

__all__ = [
    "RULES",
    "NetSpec",
    "Rule",
    "StepResult",
    "parse_options",
    "register_rule",
    "get_rule",
]

#: name -> rule class, in registration order.
RULES: dict[str, type["Rule"]] = {}


class NetSpec:
    """What every rule trains: the golden network configuration and the seed of its weights.

    The golden :class:`~bitswarm.golden.model.ModelConfig` is the one object that carries the
    architecture, swarm size, input bits and flip constants; the other members are views of it.
    Build a spec from a ``ModelConfig`` (``NetSpec(model_config, seed=0)``) or from its parts
    (``NetSpec(arch, input_shape, swarm, input_bits, seed, flip, meta)``), which builds the
    ``ModelConfig`` once.

    Parameters
    ----------
    arch : ModelConfig, tuple of int or str
        A golden model configuration, or MLP widths, input first, classes last (e.g.
        ``(64, 128, 10)``), or the canonical architecture string of a network with
        convolutions (``"1x8x8-c16k3p1-mp2-10"``, :func:`bitswarm.golden.arch.parse_arch`).
    input_shape : tuple of int
        Shape of one raw uint8 sample (its product is the arch's input size); not with a
        ``ModelConfig``.
    swarm : int
        Bits per logical weight (golden ``LayerConfig.swarm``).
    input_bits : int
        First-layer input bits: 8 (pixels) or fewer (``pixel >> (8 - input_bits)``).
    seed : int
        Seed of the initial weights (and of the data order, used by the trainer).
    flip : FlipRuleConfig
        Integrate-and-fire constants recorded in the model file (default: the spec's field
        defaults, ``FlipRuleConfig()``; the trainer passes :meth:`FlipRuleConfig.for_training`).
    meta : dict of str to str
        Provenance written into the model file.

    Members
    -------
    model : ModelConfig
        The golden configuration (validated widths, swarm, input bits, flip constants).
    seed : int
    """

    __slots__ = ("model", "seed")

    def __init__(self, arch, input_shape=None, swarm: int = 1, input_bits: int = 8, seed: int = 0,
                 flip: FlipRuleConfig | None = None, meta: dict | None = None):
        if isinstance(arch, ModelConfig):
            if input_shape is not None or swarm != 1 or input_bits != 8 or flip is not None or meta:
                raise ConfigError("NetSpec(ModelConfig, seed=...) takes no other network settings")
            model = arch
        else:
            if input_shape is None:
                raise ConfigError("NetSpec needs the input shape of one sample")
            flip = flip if flip is not None else FlipRuleConfig()
            kw = dict(input_shape=tuple(input_shape), swarm=swarm, input_bits=input_bits,
                      flip=flip, meta=dict(meta or {}))
            model = (ModelConfig.from_arch(arch, **kw) if isinstance(arch, str)
                     else ModelConfig.mlp(list(arch), **kw))
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, not {seed!r}")
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "seed", seed)

    def __setattr__(self, name, value):
        raise AttributeError("NetSpec is immutable")

    def __eq__(self, other):
        return (isinstance(other, NetSpec) and self.seed == other.seed
                and self.model.to_dict() == other.model.to_dict())

    def __hash__(self):
        return hash((self.seed, json.dumps(self.model.to_dict(), sort_keys=True)))

    def __repr__(self):
        return f"NetSpec({self.model.arch_string!r}, swarm={self.swarm}, seed={self.seed})"

    @property
    def arch(self) -> tuple[int, ...] | str:
        """MLP widths, or the canonical arch string of a network with convolutions."""
        m = self.model
        return m.arch_string if m.has_conv else tuple(m.arch)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.model.input_shape)

    @property
    def swarm(self) -> int:
        return self.model.layers[0].swarm

    @property
    def input_bits(self) -> int:
        return self.model.layers[0].input_bits

    @property
    def flip(self) -> FlipRuleConfig:
        return self.model.flip

    @property
    def meta(self) -> dict:
        return dict(self.model.meta)

    def model_config(self) -> ModelConfig:
        """The golden configuration (:attr:`model`)."""
        return self.model


@dataclass
class StepResult:
    """What one minibatch step reports: the surrogate loss, bit flips per layer and, where the
    rule's step scores the minibatch anyway, how many of its samples the network classified
    correctly before the step (``None`` where the rule does not say)."""

    loss: float
    flips: list[int]
    correct: int | None = None


def parse_options(cls: type, given: dict[str, Any] | None) -> Any:
    """Build a rule's ``Options`` dataclass from ``{name: value}`` (values may be strings).

    Raises
    ------
    ConfigError
        Unknown names or values that do not convert to the field's type.
    """
    given = dict(given or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown rule option(s) {unknown}; this rule takes: {', '.join(fields) or 'none'}"
        )
    kw = {}
    for name, value in given.items():
        default = fields[name].default
        typ = type(default)
        try:
            if isinstance(value, str):
                if typ is bool:
                    if value.lower() not in ("0", "1", "true", "false", "yes", "no"):
                        raise ValueError(value)
                    value = value.lower() in ("1", "true", "yes")
                else:
                    value = typ(value)
            elif typ is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not typ:
                raise ValueError(value)
        except ValueError:
            raise ConfigError(f"rule option {name} must be a {typ.__name__}, not {value!r}") from None
        kw[name] = value
    opts = cls(**kw)
    check = getattr(opts, "check", None)
    if check is not None:
        check()
    return opts


class Rule:
    """Base class of training rules (see the module docstring).

    Class attributes
    ----------------
    name : str
        Registry name (``--rule NAME``).
    summary : str
        One line for ``--help`` and the results table.
    exportable : bool
        Whether :meth:`export` gives a golden model (``False``: metrics only, ``--out`` refused).
    hardware_trainable : bool
        Whether the rule needs nothing but integers (could run on chip).
    votes : str
        ``"host"`` (one vote per minibatch) or ``"integer"`` (one per sample): which
        :meth:`FlipRuleConfig.for_training` defaults a run of this rule gets.
    data_parallel : bool
        Whether :meth:`train_step` splits the minibatch over the ranks of :attr:`comm` (it is
        given the whole global minibatch, takes ``comm.shard(B)`` and sums integers with
        ``comm.all_reduce_sum``; see :mod:`bitswarm.train.distributed`). Other rules are
        refused under ``torchrun`` with :attr:`serial_reason`.
    serial_reason : str
        Why a rule that is not ``data_parallel`` stays in one process.
    trains_conv : bool
        Whether the rule trains networks with convolutional layers (SPEC.md §14); the others
        refuse such an arch with one line when they are built.

    Members
    -------
    comm : Comm
        The ranks this rule trains with (:data:`~bitswarm.train.distributed.LOCAL` in one
        process; the trainer sets it).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    exportable: ClassVar[bool] = True
    hardware_trainable: ClassVar[bool] = False
    votes: ClassVar[str] = "host"
    data_parallel: ClassVar[bool] = False
    serial_reason: ClassVar[str] = "it has no data-parallel step (its float or per-sample state is not an integer sum)"
    trains_conv: ClassVar[bool] = False

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, spec: NetSpec, options: Any = None, device: str | torch.device = "cpu"):
        if not isinstance(spec, NetSpec):
            raise ConfigError(f"spec must be a NetSpec, not {type(spec).__name__}")
        self.spec = spec
        self.opts = options if isinstance(options, self.Options) else parse_options(self.Options, options)
        self.device = torch.device(device)
        self.model_config = spec.model_config()  # validates widths, swarm, input bits
        if self.model_config.has_conv and not self.trains_conv:
            able = ", ".join(n for n, c in RULES.items() if c.trains_conv)
            raise ConfigError(f"rule {self.name!r} does not train convolutional layers (arch "
                              f"{self.model_config.arch_string}); use an MLP arch or one of: {able}")
        from .distributed import LOCAL

        self.comm = LOCAL

    # -- to implement ------------------------------------------------------------------------
    def init_state(self, x_train: torch.Tensor) -> None:
        """Fresh state; ``x_train`` (uint8, on the device) may be used for data-dependent init."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Called before epoch ``epoch`` (0-based) starts; schedules depend only on it."""

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """One update from a minibatch of raw uint8 samples and int64 labels."""
        raise NotImplementedError

    def export(self) -> Model | None:
        """The network as a golden model (with training state where the rule has it)."""
        raise NotImplementedError

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Rule state beyond the exported model, as named CPU tensors."""
        return {}

    def state_meta(self) -> dict:
        """JSON-serializable rule state beyond the tensors (step counters, ...)."""
        return {}

    def load_state(self, model: Model | None, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore what :meth:`export`, :meth:`state_tensors` and :meth:`state_meta` saved."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def weight_bits(self) -> list[int]:
        """Weight bits per layer (the denominator of the flip rate)."""
        return [lay.weight_bits for lay in self.model_config.layers]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        """Classes of raw uint8 samples; exportable rules use the golden forward pass."""
        m = self.export()
        m = _on_device(m, self.device)
        return torch.cat([m.predict(x[i : i + batch]) for i in range(0, len(x), batch)])


def _on_device(m: Model, device: torch.device) -> Model:
    if all(w.device == device for w in m.weights):
        return m
    return Model(m.cfg, [w.to(device) for w in m.weights], [t.to(device) for t in m.theta],
                 [v.to(device) for v in m.invert])


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Class decorator: add a rule to :data:`RULES` under ``cls.name``."""
    if not cls.name or cls.name in RULES:
        raise ConfigError(f"rule name {cls.name!r} is empty or taken")
    RULES[cls.name] = cls
    return cls


def get_rule(name: str) -> type[Rule]:
    """The rule class registered under ``name``."""
    from . import rule_golden, rule_onchip, rule_ref, zoo  # noqa: F401  (registration side effects)

    if name not in RULES:
        raise ConfigError(f"unknown rule {name!r}: expected one of {', '.join(RULES)}")
    return RULES[name]


def isqrt_floor(v: int) -> int:
    """Integer square root of a non-negative int (``math.isqrt``)."""
    return math.isqrt(max(0, int(v)))
