"""Fully integer on-chip training step (SPEC.md §12).

One step per ``(image, label)`` sample, integers only — no floating-point tensor is created:

1. **Forward**: integer pre-activations ``z`` of every layer (:func:`preact_int`, elementwise
   int64 products summed; equal to :func:`~bitswarm.golden.layer.preact`), golden
   :func:`~bitswarm.golden.layer.threshold` for hidden layers, scores ``s = z - theta`` at the
   output.
2. **Output error** (top-rival margin rule): with target ``t``, the *rival* ``r`` is the
   highest-scoring class ``c != t`` (ties to the lowest index). If ``s_r + margin > s_t``,
   ``e_t = +1`` and ``e_r = -1``; otherwise ``e = 0`` (at most two nonzero errors). ``e_j`` is
   the direction in which ``z_j`` should move.
3. **Backward** through the transposed XNOR-popcount layers, for layer ``l = L-1 .. 1``:
   ``delta_k = sum_j e_j * W_eff[j, k]`` (``W_eff = sum_s (2 w_s - 1)``), then
   ``e'_k = sign(delta_k) * (1 - 2 inv_k)`` where ``|z_k - theta_k| <= window`` of layer
   ``l - 1``, else 0 (integer straight-through window, sign flipped by the invert bit).
4. **Votes** for bit ``w[s, j, k]`` with value ``v = 2 w - 1``: ``vote = -e_j * x_k * v``,
   where ``x_k`` is the input *sign* of the layer: ±1 for bit inputs (``2 a - 1``), and for a
   multi-bit first layer ``1`` if the input's most significant bit is set (``"msb"``, pixel
   ``>= 128``) or if it is nonzero (``"nonzero"``), else 0. So +1 = "bit is wrong" exactly as
   in :mod:`~bitswarm.golden.flip`.
5. **Thresholds**: ``theta_j = clamp(theta_j + h_j - e_j * step, -z_bound, z_bound)`` with
   ``theta_step`` for hidden layers and ``out_theta_step`` for the output layer, and integer
   homeostasis ``h_j = (z_j - theta_j) >> homeostasis_shift`` on hidden layers (0 when the
   shift is 0 and on the output layer). Errors and votes use the thresholds from before.
6. **Flips**: golden :func:`~bitswarm.golden.flip.flip_step` on every layer, layer 0 first,
   with the model's :class:`~bitswarm.golden.flip.FlipRuleConfig` and one LFSR whose state is
   ``Model.lfsr_state`` (so the draw order is layer-major, row-major within a layer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from .errors import ConfigError
from .flip import flip_step
from .layer import LayerConfig, threshold
from .lfsr import LFSR, _is_int
from .model import PIXEL_BITS, Model, ModelConfig

__all__ = [
    "INPUT_SIGNS",
    "META_KEY",
    "OnChipConfig",
    "OnChipResult",
    "preact_int",
    "rival",
    "output_error",
    "input_signs",
    "onchip_step",
    "onchip_train",
]

INPUT_SIGNS = ("msb", "nonzero")
META_KEY = "onchip"


@dataclass(frozen=True)
class OnChipConfig:
    """Constants of the fully integer training step; all integers, recorded in model meta.

    Parameters
    ----------
    margin : int
        The target score must beat the best other score (the rival ``r``) by more than
        ``margin - 1``, i.e. there is an error when ``s_r + margin > s_t``; ``0..2**30``.
    windows : tuple of int
        Straight-through window per hidden layer (``|z - theta| <= window`` passes the error);
        one entry per hidden layer, each ``0..2**30``.
    theta_step : int
        Hidden-layer threshold step per sample (0 disables), ``0..2**16``.
    out_theta_step : int
        Output-layer threshold (bias) step per sample (0 disables), ``0..2**16``.
    input_sign : str
        Input sign of a multi-bit first layer for the votes: ``"msb"`` (the input's top bit) or
        ``"nonzero"``. Ignored when layer 0 takes bits.
    homeostasis_shift : int
        Hidden thresholds also move ``(z - theta) >> shift`` (arithmetic shift) toward the
        sample's pre-activation each step; 0 disables, else 1..30.
    """

    margin: int = 4
    windows: tuple[int, ...] = ()
    theta_step: int = 1
    out_theta_step: int = 1
    input_sign: str = "msb"
    homeostasis_shift: int = 0

    def __post_init__(self):
        w = self.windows
        if isinstance(w, list):
            w = tuple(w)
            object.__setattr__(self, "windows", w)
        if not _is_int(self.margin) or not 0 <= self.margin <= 1 << 30:
            raise ConfigError(f"onchip.margin must be an integer in 0..2**30, not {self.margin!r}")
        if not isinstance(w, tuple) or not all(_is_int(v) and 0 <= v <= 1 << 30 for v in w):
            raise ConfigError(f"onchip.windows must be a list of integers in 0..2**30, not {w!r}")
        for name in ("theta_step", "out_theta_step"):
            v = getattr(self, name)
            if not _is_int(v) or not 0 <= v <= 1 << 16:
                raise ConfigError(f"onchip.{name} must be an integer in 0..65536, not {v!r}")
        if not _is_int(self.homeostasis_shift) or not 0 <= self.homeostasis_shift <= 30:
            raise ConfigError(
                f"onchip.homeostasis_shift must be an integer in 0..30, not {self.homeostasis_shift!r}")
        if self.input_sign not in INPUT_SIGNS:
            raise ConfigError(f"onchip.input_sign must be one of {INPUT_SIGNS}, not {self.input_sign!r}")

    def check(self, cfg: ModelConfig) -> None:
        """Raise :class:`ConfigError` unless this config fits the model ``cfg``."""
        cfg.require_dense("the fully integer training step (SPEC.md §12)")
        hidden = len(cfg.layers) - 1
        if len(self.windows) != hidden:
            raise ConfigError(
                f"onchip.windows needs one window per hidden layer ({hidden}), found {len(self.windows)}")
        for i, lay in enumerate(cfg.layers):
            if lay.weights != "binary":
                raise ConfigError(f"on-chip training needs binary weights; layer {i} is {lay.weights}")

    def to_dict(self) -> dict:
        return {"margin": self.margin, "windows": list(self.windows), "theta_step": self.theta_step,
                "out_theta_step": self.out_theta_step, "input_sign": self.input_sign,
                "homeostasis_shift": self.homeostasis_shift}

    @classmethod
    def from_dict(cls, d: dict) -> "OnChipConfig":
        from .lfsr import _from_dict

        return _from_dict(cls, d, "onchip")

    def to_meta(self) -> dict[str, str]:
        """``{"onchip": JSON}`` for :attr:`ModelConfig.meta` (model file v1 is unchanged)."""
        return {META_KEY: json.dumps(self.to_dict(), sort_keys=True)}

    @classmethod
    def from_meta(cls, meta: dict) -> "OnChipConfig":
        """The config stored by :meth:`to_meta`; :class:`ConfigError` if absent or invalid."""
        if META_KEY not in meta:
            raise ConfigError(f"model meta has no {META_KEY!r} entry (no on-chip training config)")
        try:
            d = json.loads(meta[META_KEY])
        except json.JSONDecodeError as e:
            raise ConfigError(f"model meta {META_KEY!r} is not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"model meta {META_KEY!r} must be a JSON object")
        return cls.from_dict(d)


@dataclass
class OnChipResult:
    """What one step did: the prediction before the update, the errors per layer (int8, the
    output layer last), and the flips per layer."""

    pred: int
    errors: list[torch.Tensor]
    flips: list[int]


def preact_int(cfg: LayerConfig, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``z[j] = sum_s sum_k xv_k * (2 w[s, j, k] - 1)`` for one sample ``x`` ``[N]`` (int64).

    ``xv`` is ``2 x - 1`` for bit inputs and ``x`` for unsigned inputs; int64 products and sums
    only (no float), equal to :func:`~bitswarm.golden.layer.preact`.
    """
    if cfg.weights != "binary":
        raise ConfigError("preact_int needs a binary layer")
    xv = x.to(torch.int64)
    if cfg.input_bits == 1:
        xv = xv * 2 - 1
    weff = (w.to(torch.int64) * 2 - 1).sum(0)
    return (weff * xv.unsqueeze(0)).sum(1)


def rival(scores: torch.Tensor, label: int) -> int:
    """The highest-scoring class other than ``label`` (ties to the lowest index)."""
    others = torch.cat([scores[:label], scores[label + 1 :]])
    r = int(torch.argmax((others == others.max()).to(torch.int8)))  # lowest index of the max
    return r + int(r >= label)


def output_error(scores: torch.Tensor, label: int, margin: int) -> torch.Tensor:
    """Ternary output error (int8 ``[C]``) of the top-rival margin rule (module docstring,
    step 2): ``e_t = +1, e_r = -1`` when the rival ``r`` scores ``s_r + margin > s_t``."""
    c = scores.shape[0]
    e = torch.zeros(c, dtype=torch.int8, device=scores.device)
    r = rival(scores, label)
    if bool(scores[r] + margin > scores[label]):
        e[r] = -1
        e[label] = 1
    return e


def input_signs(lay: LayerConfig, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Input signs of a layer for the votes (int64 ``[N]``): ±1 for bits, else 0/1."""
    if lay.input_bits == 1:
        return x.to(torch.int64) * 2 - 1
    if mode == "msb":
        return (x.to(torch.int64) >> (lay.input_bits - 1)) & 1
    return (x != 0).to(torch.int64)


def onchip_step(cfg: OnChipConfig, model: Model, x: torch.Tensor, label: int) -> OnChipResult:
    """One fully integer training step on ``model`` (updated in place) for one sample.

    Parameters
    ----------
    cfg : the step's constants (validated against ``model.cfg``).
    model : a :class:`Model` with training state (``acc`` and, with noise, ``lfsr_state``).
    x : uint8 raw sample (``input_shape`` or flat ``[N]``).
    label : the target class.
    """
    mc = model.cfg
    cfg.check(mc)
    if model.acc is None:
        raise ConfigError("on-chip training needs a model with accumulators (training state)")
    if not _is_int(label) or not 0 <= label < mc.n_classes:
        raise ConfigError(f"label must be a class in 0..{mc.n_classes - 1}, not {label!r}")
    x = torch.as_tensor(x)
    if x.dtype != torch.uint8 or x.numel() != mc.layers[0].n_in:
        raise ConfigError(f"sample must be {mc.layers[0].n_in} uint8 pixels, found {x.dtype} {list(x.shape)}")
    h = (x.reshape(-1) >> (PIXEL_BITS - mc.layers[0].input_bits)).to(torch.uint8)
    layers = mc.layers
    ins, zs = [], []
    scores = None
    for i, lay in enumerate(layers):
        ins.append(h)
        z = preact_int(lay, h, model.weights[i])
        zs.append(z)
        if lay.output:
            scores = z - model.theta[i].to(torch.int64)
        else:
            h = threshold(z, model.theta[i], model.invert[i])
    pred = int(torch.argmax((scores == scores.max()).to(torch.int8)))  # lowest index of the max
    errs: list[torch.Tensor] = [None] * len(layers)  # type: ignore[list-item]
    errs[-1] = output_error(scores, label, cfg.margin)
    for i in range(len(layers) - 1, 0, -1):
        lay = layers[i]
        weff = (model.weights[i].to(torch.int64) * 2 - 1).sum(0)  # [M, N]
        delta = (errs[i].to(torch.int64).unsqueeze(1) * weff).sum(0)  # [N]
        prev = i - 1
        zt = zs[prev] - model.theta[prev].to(torch.int64)
        gate = zt.abs() <= cfg.windows[prev]
        flip_sign = 1 - 2 * model.invert[prev].to(torch.int64)
        errs[prev] = torch.where(gate, torch.sign(delta) * flip_sign, torch.zeros_like(delta)).to(torch.int8)
    lfsr = LFSR(mc.flip.lfsr, model.lfsr_state) if mc.flip.uses_lfsr else None
    flips = []
    for i, lay in enumerate(layers):
        e = errs[i].to(torch.int64)
        xs = input_signs(lay, ins[i], cfg.input_sign)
        v = model.weights[i].to(torch.int64) * 2 - 1  # [S, M, N]
        votes = (-(e.unsqueeze(1) * xs.unsqueeze(0))).unsqueeze(0) * v
        w_new, a_new, fired = flip_step(mc.flip, model.weights[i], model.acc[i], votes, lfsr)
        step = cfg.out_theta_step if lay.output else cfg.theta_step
        th = model.theta[i].to(torch.int64)
        if cfg.homeostasis_shift and not lay.output:
            th = th + ((zs[i] - th) >> cfg.homeostasis_shift)
        th = th - e * step
        model.theta[i] = torch.clamp(th, -lay.theta_bound, lay.theta_bound).to(torch.int32)
        model.weights[i] = w_new
        model.acc[i] = a_new
        flips.append(int(fired.sum()))
    if lfsr is not None:
        model.lfsr_state = lfsr.state
    elif model.lfsr_state is None:
        model.lfsr_state = mc.flip.lfsr.seed
    return OnChipResult(pred, errs, flips)


def onchip_train(cfg: OnChipConfig, model: Model, xs, ys) -> list[OnChipResult]:
    """:func:`onchip_step` over samples ``xs`` (uint8 ``[K, ...]``) and labels ``ys`` in order."""
    xs = torch.as_tensor(xs)
    ys = [int(v) for v in torch.as_tensor(ys).reshape(-1).tolist()]
    if len(xs) != len(ys):
        raise ConfigError(f"{len(xs)} samples but {len(ys)} labels")
    return [onchip_step(cfg, model, xs[k], ys[k]) for k in range(len(ys))]
