"""The shared harness of the rule zoo (``bitswarm.train.zoo.base``).

Every zoo rule trains the **same network** as the golden rule: golden binary (or ternary)
layers, integer thresholds with an optional invert bit, golden integer homeostasis of hidden
thresholds, and the same surrogate gradient. What differs between rules is only how the
weight state is updated from that gradient. So the zoo compares update rules, not networks.

The surrogate (:func:`surrogate`) is the golden rule's, written without autograd:

- forward: ``z = h @ W.T`` (float64 holding exact integers for integer weights; the golden
  ``preact`` gives the same numbers), ``zt = z - theta``; hidden activations
  ``a = (zt >= 0) XOR invert`` read as ±1;
- output error ``e`` (``[B, C]``), selected by the ``error`` option:
  ``softmax`` — ``round((softmax(temperature * s / sqrt(N * S)) - onehot) * 2**grad_bits)``,
  a float softmax on the host exactly like ``--rule golden``;
  ``hinge`` — integer only: ``+2**(grad_bits-1)`` for every wrong class whose score reaches the
  true class's score, minus their sum on the true class (a multiclass perceptron error);
- backward: ``G_l = g_l.T @ h_l`` (``[M, N]``), ``g_{l-1} = (g_l @ W_l) * mask * sign`` with the
  hardtanh straight-through mask ``|zt| <= window`` and ``window = max(1, isqrt(mean_j
  var_b zt) * window_pct // 100)``. For integer weights every ``G`` is an exact integer.

``G`` is the gradient of the loss with respect to the *effective* weight ``W[j, k]``; every
swarm plane of a weight sees the same ``G``. A bit with value ``v = 2w - 1`` is "wrong" when
``sign(G) * v > 0`` (descent would push it the other way): the golden vote convention.

Labels
------
``hardware_trainable``: ``True`` only when the whole step, as configured, is integer: the
rule's update is integer (``integer_update``) **and** the vote source is ``error=hinge``. With
the default ``error=softmax`` every zoo rule, like the golden rule, needs the host's float
softmax, and is labelled ``False``; ``reason`` says which part needs floats.

``own_forward``: ``False`` — accuracy is the golden forward pass of :meth:`export`, bit for
bit what the hardware computes. ``True`` — the rule's weights carry float scales the golden
model cannot hold; accuracy is the rule's own float forward and the rule is not exportable.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.homeostasis import HomeostasisConfig, batch_mean, homeostasis_step
from bitswarm.golden.lfsr import LFSR, LFSRConfig
from bitswarm.golden.model import Model, ModelConfig, quantize_input

from ..rule_golden import GoldenRule
from ..rules import Rule, StepResult

__all__ = [
    "ERROR_SOURCES",
    "SurrogateOptions",
    "Surrogate",
    "ZooRule",
    "surrogate",
    "lfsr_uniform",
    "q8_leak",
]

#: Output-error sources of the shared surrogate.
ERROR_SOURCES = ("softmax", "hinge")

#: The golden rule's options: the shared surrogate takes its defaults from them.
_GOLDEN = GoldenRule.Options()


@dataclass(frozen=True)
class SurrogateOptions:
    """Options every zoo rule shares (the golden rule's surrogate and homeostasis, with the
    golden rule's defaults).

    Parameters
    ----------
    error : str
        ``softmax`` (host float softmax, as the golden rule) or ``hinge`` (integer only).
    grad_bits : int
        Score-gradient quantization ``2**grad_bits`` (1..20).
    temperature : float
        Softmax temperature on ``s / sqrt(N * S)``.
    window_pct : int
        Straight-through window in percent of the batch standard deviation of ``z - theta``.
    homeostasis_shift : int
        Golden threshold homeostasis: ``theta`` moves ``2**-shift`` of the way to the batch mean.
    net : str
        ``golden`` (this shared network) or ``seed`` (the seed's own float network,
        :mod:`bitswarm.train.zoo.seednet`, for rules that declare one; the default of the seed
        notebook's rules). The other options above apply to ``golden`` only.
    """

    error: str = "softmax"
    grad_bits: int = _GOLDEN.grad_bits
    temperature: float = _GOLDEN.temperature
    window_pct: int = _GOLDEN.window_pct
    homeostasis_shift: int = 12  # the zoo was measured with the golden rule's earlier shift 12
    net: str = "golden"

    def check(self) -> None:
        if self.net not in ("golden", "seed"):
            raise ConfigError(f"net must be golden or seed, not {self.net!r}")
        if self.error not in ERROR_SOURCES:
            raise ConfigError(f"error must be one of {', '.join(ERROR_SOURCES)}, not {self.error!r}")
        if not 1 <= self.grad_bits <= 20:
            raise ConfigError(f"grad_bits must be in 1..20, not {self.grad_bits}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature must be a positive number, not {self.temperature}")
        if not 1 <= self.window_pct <= 10000:
            raise ConfigError(f"window_pct must be in 1..10000, not {self.window_pct}")
        HomeostasisConfig(self.homeostasis_shift)


@dataclass
class Surrogate:
    """One surrogate pass: loss, per-layer gradients ``G`` ``[M, N]`` and pre-activations ``z``."""

    loss: float
    grads: list[torch.Tensor]
    zs: list[torch.Tensor]


def _window(zt: torch.Tensor, pct: int) -> int:
    b = zt.shape[0]
    zi = torch.floor(zt).to(torch.int64)
    s1 = zi.sum(0)
    var = torch.div(b * (zi * zi).sum(0) - s1 * s1, b * b, rounding_mode="floor")
    return max(1, math.isqrt(max(0, int(var.sum()) // zt.shape[1])) * pct // 100)


def _input_values(cfg: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    h = quantize_input(cfg, x).to(torch.float64)
    return h * 2 - 1 if cfg.layers[0].input_bits == 1 else h


def surrogate(
    cfg: ModelConfig,
    weights: list[torch.Tensor],
    theta: list[torch.Tensor],
    invert: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor | None,
    opts: SurrogateOptions,
) -> Surrogate:
    """Forward (and, with labels ``y``, backward) of the shared surrogate.

    Parameters
    ----------
    cfg : ModelConfig
        The network (only widths, swarm and input bits are read).
    weights : list of float64 tensors ``[M, N]``
        Effective weights (exact integers for binary/ternary rules, scaled for float rules).
    theta, invert : lists of int32 / uint8 tensors ``[M]``
    x : uint8 tensor ``[B, ...]`` of raw samples; y : int64 labels or ``None`` (forward only).
    opts : SurrogateOptions

    Returns
    -------
    Surrogate
        With ``y=None``: loss 0, no gradients, ``zs[-1]`` holds the output scores ``z - theta``.
    """
    h = _input_values(cfg, x.reshape(x.shape[0], -1))
    hs, masks, zs = [], [], []
    for i, lay in enumerate(cfg.layers):
        hs.append(h)
        z = h @ weights[i].T
        zt = z - theta[i].to(torch.float64)
        zs.append(z)
        if lay.output:
            scores = zt
            break
        inv = invert[i].to(torch.bool)
        a = (zt >= 0) ^ inv
        sign = 1.0 - 2.0 * inv.to(torch.float64)
        if y is not None:
            win = _window(zt, opts.window_pct)
            masks.append((zt.abs() <= win).to(torch.float64) * sign)
        h = a.to(torch.float64) * 2 - 1
    if y is None:
        return Surrogate(0.0, [], zs[:-1] + [scores])
    last = cfg.layers[-1]
    one = torch.nn.functional.one_hot(y, scores.shape[1]).to(torch.float64)
    if opts.error == "softmax":
        logits = scores * (opts.temperature / math.sqrt(last.n_in * last.swarm))
        p = torch.softmax(logits, 1)
        loss = float(torch.nn.functional.cross_entropy(logits, y))
        e = torch.round((p - one) * (1 << opts.grad_bits))
    else:
        true = (scores * one).sum(1, keepdim=True)
        viol = ((scores >= true) & (one == 0)).to(torch.float64)
        e = (viol - one * viol.sum(1, keepdim=True)) * (1 << (opts.grad_bits - 1))
        loss = float(viol.sum(1).mean())
    grads: list[torch.Tensor] = [torch.empty(0)] * len(cfg.layers)
    g = e
    for i in range(len(cfg.layers) - 1, -1, -1):
        grads[i] = g.T @ hs[i]
        if i:
            g = (g @ weights[i]) * masks[i - 1]
    return Surrogate(loss, grads, zs)


def lfsr_uniform(lfsr: LFSR, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``prod(shape)`` consecutive 16-bit LFSR draws (golden §6 order) as int64 in ``0..65535``."""
    n = math.prod(shape)
    return torch.from_numpy(lfsr.draws(n, 16)).reshape(shape).to(device)


def q8_leak(acc: torch.Tensor, keep_q8: int) -> torch.Tensor:
    """Multiplicative leak in 8-bit fixed point: ``acc * keep_q8 / 256``, rounded toward 0.

    The seed's float decays (0.9, 0.95, 0.5) become ``keep_q8 = round(decay * 256)``
    (230, 243, 128); the golden shift leak ``a - (a >> k)`` only offers ``1 - 2**-k``.
    """
    p = acc.to(torch.int64) * keep_q8
    return torch.where(p >= 0, p >> 8, -((-p) >> 8))


class ZooRule(Rule):
    """Base of the zoo rules: golden network, shared surrogate, golden homeostasis.

    Subclasses set the class attributes below and implement :meth:`_init_rule` (state beyond
    weights/thresholds) and :meth:`_update` (one update from the gradients).

    Class attributes
    ----------------
    source : str
        Where the rule comes from (``seed 000 v17``).
    integer_update : bool
        Whether the rule's own update uses integers only (LFSR noise, fixed-point leaks).
    reason : str
        Why the rule is (or is not) hardware-trainable.
    weight_kind : str
        ``binary`` (S bit-planes) or ``ternary`` (trits, S = 1).
    own_forward : bool
        Accuracy from the rule's float forward instead of the golden export (not exportable).
    state_bits : int
        Bits of training state per stored weight element (plane bit or trit) beyond the
        weight itself, as the rule declares its widths (float = 32).
    """

    source: ClassVar[str] = ""
    integer_update: ClassVar[bool] = False
    reason: ClassVar[str] = ""
    weight_kind: ClassVar[str] = "binary"
    own_forward: ClassVar[bool] = False
    state_bits: ClassVar[int] = 0

    @dataclass(frozen=True)
    class Options(SurrogateOptions):
        pass

    def __init__(self, spec, options: Any = None, device: str | torch.device = "cpu"):
        super().__init__(spec, options, device)
        if self.weight_kind == "ternary":
            if spec.swarm != 1:
                raise ConfigError(f"rule {self.name} trains ternary weights and needs swarm 1, not {spec.swarm}")
            lays = tuple(dataclasses.replace(lay, weights="ternary") for lay in self.model_config.layers)
            self.model_config = dataclasses.replace(self.model_config, layers=lays)
        self.seed_mode = self.opts.net == "seed"
        if self.model_config.has_conv and not self.seed_mode:
            raise ConfigError(f"rule {self.name} trains convolutional layers on its seed network only; "
                              "use net=seed")
        if self.seed_mode:
            if self.seed_net_config() is None:
                raise ConfigError(f"rule {self.name} has no seed network; use net=golden")
            self.own_forward = True
        self.exportable = not self.own_forward
        self.hardware_trainable = bool(self.integer_update and self.opts.error == "hinge" and not self.seed_mode)
        self.seednet = None
        self.homeostasis = HomeostasisConfig(self.opts.homeostasis_shift)
        self.w: list[torch.Tensor] = []
        self.theta: list[torch.Tensor] = []
        self.invert: list[torch.Tensor] = []
        self.buf: dict[str, list[torch.Tensor]] = {}
        self.meta: dict[str, Any] = {}

    # -- hooks -------------------------------------------------------------------------------
    def seed_net_config(self):
        """The seed's network for ``net=seed`` (a :class:`~.seednet.SeedNetConfig`), or ``None``."""
        return None

    def _seed_weight(self, i: int, train: bool):
        """``(W_forward, leaf)`` of layer ``i`` on the seed network (default: bit planes)."""
        return self.seednet.plane_weight(i, train)

    def _seed_grad(self, i: int, leaf: torch.Tensor) -> torch.Tensor:
        """The seed's ``p.grad`` of one weight element (one plane) of layer ``i``, ``[M, N]``."""
        g = leaf.grad
        if self.seednet.config.proxy == "mean":
            g = g / self.w[i].shape[0]
        return g

    def _alpha(self, i: int) -> torch.Tensor:
        """Per-row forward scale ``[M]`` of layer ``i`` (seed networks with ``alpha``)."""
        raise NotImplementedError

    def _init_rule(self) -> None:
        """Rule state beyond weights and thresholds (buffers in ``self.buf``, scalars in ``self.meta``)."""

    def _update(self, grads: list[torch.Tensor], zs: list[torch.Tensor]) -> list[int]:
        """Update ``self.w`` (and buffers) from the gradients; return changed weights per layer."""
        raise NotImplementedError

    def _weff(self, i: int) -> torch.Tensor:
        """Effective weight ``[M, N]`` of layer ``i`` as float64 (integers for golden layers)."""
        w = self.w[i]
        if self.weight_kind == "ternary":
            return w.to(torch.float64)
        return (w.to(torch.float64) * 2 - 1).sum(0)

    # -- Rule interface ----------------------------------------------------------------------
    def _lfsr(self) -> LFSR:
        c = self.spec.flip.lfsr
        return LFSR(LFSRConfig(width=c.width, seed=c.seed, draw_bits=c.draw_bits), self.meta["lfsr"])

    def _random_weights(self) -> list[torch.Tensor]:
        if self.weight_kind == "binary":
            return [t.to(self.device) for t in Model.random(self.model_config, self.spec.seed).weights]
        gen = torch.Generator().manual_seed(self.spec.seed)
        return [(torch.randint(0, 3, lay.weight_shape(), generator=gen) - 1).to(torch.int8).to(self.device)
                for lay in self.model_config.layers]

    def init_state(self, x_train: torch.Tensor) -> None:
        cfg = self.model_config
        self.w = self._random_weights()
        self.meta = {"lfsr": self.spec.flip.lfsr.seed, "step": 0}
        self.buf = {}
        self.invert = [torch.zeros(lay.n_out, dtype=torch.uint8, device=self.device) for lay in cfg.layers]
        self.theta = [torch.zeros(lay.n_out, dtype=torch.int32, device=self.device) for lay in cfg.layers]
        self._init_rule()
        if self.seed_mode:
            from .seednet import SeedNetwork

            self.seednet = SeedNetwork(self, self.seed_net_config())
        else:
            self._init_thresholds(x_train[:512].to(self.device))

    def _init_thresholds(self, x: torch.Tensor) -> None:
        """Hidden thresholds at the floor batch mean of ``z`` of the first samples, layer by layer."""
        cfg = self.model_config
        for i, lay in enumerate(cfg.layers[:-1]):
            r = surrogate(cfg, [self._weff(k) for k in range(len(cfg.layers))], self.theta, self.invert,
                          x, None, self.opts)
            z = torch.floor(r.zs[i]).to(torch.int64)
            self.theta[i] = torch.clamp(batch_mean(z), -lay.theta_bound, lay.theta_bound).to(torch.int32)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        self._batch = x.shape[0]
        if self.seed_mode:
            loss, _, grads = self.seednet.run(x, y, self._stats())
            flips = self._update(grads, [])
            self.meta["step"] += 1
            return StepResult(loss, flips)
        cfg = self.model_config
        r = surrogate(cfg, [self._weff(i) for i in range(len(cfg.layers))], self.theta, self.invert,
                      x, y, self.opts)
        flips = self._update(r.grads, r.zs)
        for i, lay in enumerate(cfg.layers):
            if not lay.output:
                self._homeostasis(i, torch.floor(r.zs[i]).to(torch.int64))
        self.meta["step"] += 1
        return StepResult(r.loss, flips)

    def _homeostasis(self, i: int, z: torch.Tensor) -> None:
        """Golden threshold homeostasis of hidden layer ``i`` from its integer pre-activations."""
        lay = self.model_config.layers[i]
        self.theta[i] = homeostasis_step(self.homeostasis, self.theta[i], z, lay.theta_bound)

    def _stats(self) -> dict | None:
        """Per-step instrumentation dict for the seed network (``None``: not recorded)."""
        return None

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        if self.seed_mode:
            return torch.cat([self.seednet.run(x[i : i + batch], None)[1].argmax(1) for i in range(0, len(x), batch)])
        if not self.own_forward:
            return super().predict(x, batch)
        cfg = self.model_config
        ws = [self._weff(i) for i in range(len(cfg.layers))]
        out = []
        for i in range(0, len(x), batch):
            s = surrogate(cfg, ws, self.theta, self.invert, x[i : i + batch], None, self.opts).zs[-1]
            out.append(s.argmax(1))  # first maximum: ties go to the lowest class, as golden
        return torch.cat(out)

    def export(self) -> Model | None:
        if self.own_forward:
            return None
        return Model(self.model_config, [t.cpu() for t in self.w], [t.cpu() for t in self.theta],
                     [t.cpu() for t in self.invert])

    def weight_bits(self) -> list[int]:
        if self.weight_kind == "ternary":
            return [lay.n_out * lay.n_in for lay in self.model_config.layers]
        return super().weight_bits()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for i in range(len(self.w)):
            out[f"w{i}"] = self.w[i].cpu().contiguous()
            out[f"theta{i}"] = self.theta[i].cpu().contiguous()
            out[f"invert{i}"] = self.invert[i].cpu().contiguous()
        for name, ts in self.buf.items():
            for i, t in enumerate(ts):
                out[f"{name}{i}"] = t.cpu().contiguous()
        return out

    def state_meta(self) -> dict:
        return dict(self.meta)

    def load_state(self, model, tensors, meta) -> None:
        self.init_state(torch.zeros((1, *self.spec.input_shape), dtype=torch.uint8, device=self.device))

        def need(name: str, like: torch.Tensor) -> torch.Tensor:
            if name not in tensors:
                raise ConfigError(f"checkpoint lacks rule tensor {name!r}")
            t = tensors[name]
            if t.shape != like.shape or t.dtype != like.dtype:
                raise ConfigError(f"checkpoint tensor {name!r} is {t.dtype} {list(t.shape)}, "
                                  f"expected {like.dtype} {list(like.shape)}")
            return t.to(self.device).clone()

        for i in range(len(self.w)):
            self.w[i] = need(f"w{i}", self.w[i])
            self.theta[i] = need(f"theta{i}", self.theta[i])
            self.invert[i] = need(f"invert{i}", self.invert[i])
        for name, ts in self.buf.items():
            self.buf[name] = [need(f"{name}{i}", t) for i, t in enumerate(ts)]
        self.meta.update(meta)

    # -- helpers for subclasses -----------------------------------------------------------------
    def _bit_values(self, i: int) -> torch.Tensor:
        """±1 values of layer ``i``'s planes, int64 ``[S, M, N]``."""
        return self.w[i].to(torch.int64) * 2 - 1

    def _gscale(self) -> int:
        """``B * 2**grad_bits`` on the golden network (``G`` to the seed's mean gradient), 1 on the
        seed network (its gradients are already in the seed's units)."""
        return 1 if self.seed_mode else self._batch * (1 << self.opts.grad_bits)

    def _wrong(self, i: int, g: torch.Tensor) -> torch.Tensor:
        """Golden votes ``sign(G) * v`` (``[S, M, N]`` int64): +1 wrong, -1 right, 0 no gradient."""
        return torch.sign(g).to(torch.int64).unsqueeze(0) * self._bit_values(i)

    def _flip(self, i: int, mask: torch.Tensor) -> int:
        self.w[i] = self.w[i] ^ mask.to(torch.uint8)
        return int(mask.sum())
