"""The seed notebook's float networks (``--opt net=seed``), on a zoo rule's weight state.

Seed 000 trained every optimizer on a small PyTorch network whose inputs, gains and
normalization fix the *units* of the gradient each rule's constants were tuned against (a
flip probability ``|g| * 50``, a friction gate ``|g| > 1e-4``, an integrate-and-fire boost
``g * 1000``). :class:`SeedNetwork` rebuilds that network per version from a
:class:`SeedNetConfig`, so a rule's constants mean what they meant in the seed:

- inputs ``(x / x_max - 0.1307) / 0.3081`` (the seed's MNIST normalization);
- per layer ``z = h @ W.T`` with ``W`` read from the rule's bit planes: ``majority``
  (``sign(sum_s v_s)``, ties +1, straight-through to the proxy) or ``analog`` (``sum_s v_s / S``);
  the proxy is ``sum / S`` (``mean``) or the raw plane sum (``sum``, seed v6/v7), so the
  gradient of one plane is ``dL/dproxy / S`` or ``dL/dproxy``, as the seed's ``p.grad``;
  an optional per-row scale ``alpha_j`` (seed v21) multiplies ``W`` in the forward only;
- normalization after each weight layer (hidden only, or output too): ``batchnorm``
  (affine, running statistics at evaluation), ``activity`` (threshold counter pushed toward a
  50 % firing rate, seed v7/v8/v11), ``centering`` (a learned bias, v9A), ``mean-sign``
  (sign of a running mean, 9.B), ``mean-match`` (``theta += lr * mean_b(out)``, v12) and
  ``scale-shift`` (``out = (z - theta) * gain``, ``theta += lr * mean_b(out)``, v13-v20; gain
  ``1`` or ``1/sqrt(fan_in)``);
- activation ReLU, LeakyReLU(0.1) or none; cross-entropy on the raw output;
- convolutional layers (golden SPEC §14 geometry, weights ``[S, F, K*K*C]`` as a dense
  layer's): ``z`` over the :func:`~bitswarm.golden.conv.im2col` windows of the float HWC map
  (padding 0), normalization per channel over batch and positions (BatchNorm2d for
  ``batchnorm``), the activation, then float max-pooling over ``Q x Q`` — the seed v21's
  ``BitConv2d -> BatchNorm2d -> ReLU -> max_pool2d``.

The normalization parameters (thresholds, gains, BatchNorm affine) are updated after the
backward pass by the seed's rule for non-swarm tensors: ``sign`` (``p -= lr * sign(g)``),
``sgd``, ``sgd-clamp`` (``p -= lr * clamp(g, -1, 1)``), or the rule's own float optimizer
(``signum``: momentum sign step clamped to ``clip``; ``voting``: accumulator pushed toward its
sign), as the seed applied one optimizer to every parameter. Everything is float32; state lives
in the rule's ``buf`` (checkpointed with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from bitswarm.golden.conv import im2col
from bitswarm.golden.errors import ConfigError

__all__ = ["SeedNetConfig", "SeedNetwork", "NORMS", "FORWARDS"]

FORWARDS = ("majority", "analog")
NORMS = ("none", "batchnorm", "activity", "centering", "mean-sign", "mean-match", "scale-shift")
ACTS = ("relu", "leaky", "none")
PARAM_RULES = ("sign", "sgd", "sgd-clamp", "signum", "voting")


@dataclass(frozen=True)
class SeedNetConfig:
    """One seed version's network.

    Parameters
    ----------
    forward : str
        ``majority`` or ``analog`` (see the module docstring).
    proxy : str
        ``mean`` (gradient to ``sum / S``) or ``sum`` (to the plane sum).
    norm : str
        One of :data:`NORMS`.
    norm_output : bool
        Whether the output layer is normalized too.
    gain : str
        ``scale-shift`` gain at start: ``kaiming`` (``1/sqrt(fan_in)``) or ``one``.
    norm_lr : float
        Rate of the forward-pass homeostasis (``activity``, ``mean-match``, ``scale-shift``).
    act : str
        ``relu``, ``leaky`` (slope 0.1) or ``none``.
    param_rule, param_lr : str, float
        Update of the normalization parameters (one of :data:`PARAM_RULES`).
    momentum, clip, push : float
        ``signum`` / ``voting`` constants for ``param_rule``.
    activity_keep, activity_init, activity_clamp : float
        ``activity``: running-activity EMA keep factor, start value, and the clamp of the
        threshold step (0: no clamp).
    alpha : bool
        Per-row scale ``alpha_j`` from :meth:`ZooRule._alpha` in the forward (seed v21).
    """

    forward: str = "majority"
    proxy: str = "mean"
    norm: str = "scale-shift"
    norm_output: bool = True
    gain: str = "kaiming"
    norm_lr: float = 0.1
    act: str = "leaky"
    param_rule: str = "sgd-clamp"
    param_lr: float = 0.01
    momentum: float = 0.9
    clip: float = 1.2
    push: float = 0.3
    activity_keep: float = 0.9
    activity_init: float = 0.5
    activity_clamp: float = 0.0
    alpha: bool = False

    def __post_init__(self):
        for name, value, allowed in (("forward", self.forward, FORWARDS), ("proxy", self.proxy, ("mean", "sum")),
                                     ("norm", self.norm, NORMS), ("act", self.act, ACTS),
                                     ("gain", self.gain, ("kaiming", "one")),
                                     ("param_rule", self.param_rule, PARAM_RULES)):
            if value not in allowed:
                raise ConfigError(f"seed network {name} must be one of {', '.join(allowed)}, not {value!r}")


def _maxpool(g, h: torch.Tensor, channels: int) -> torch.Tensor:
    """Float max-pool of conv outputs ``[B * H_o * W_o, F]`` -> flat HWC ``[B, H_q * W_q * F]``."""
    q = g.pool
    m = h.reshape(-1, g.out_height, g.out_width, channels)
    if q > 1:
        hq, wq = g.pooled_height, g.pooled_width
        m = m[:, : hq * q, : wq * q].reshape(-1, hq, q, wq, q, channels).amax(dim=(2, 4))
    return m.reshape(m.shape[0], -1)


class SeedNetwork:
    """The seed's float network on ``rule``'s weights (see the module docstring).

    ``rule`` provides ``model_config``, ``buf``, ``device``, ``w`` (bit planes ``[S, M, N]``)
    and may override :meth:`ZooRule._seed_weight` (weights that are not bit planes) and
    :meth:`ZooRule._alpha` (per-row scales).
    """

    def __init__(self, rule, config: SeedNetConfig):
        self.rule = rule
        self.config = c = config
        cfg = rule.model_config
        dev = rule.device
        nl = len(cfg.layers)
        self.normed = [i < nl - 1 or c.norm_output for i in range(nl)]
        if c.norm == "none":
            self.normed = [False] * nl
        b = rule.buf
        gen = torch.Generator().manual_seed(rule.spec.seed + 7)
        b["sthr"], b["sgain"] = [], []
        for _i, lay in enumerate(cfg.layers):
            t0 = torch.randn(lay.n_out, generator=gen) * 0.01 if c.norm == "mean-sign" else torch.zeros(lay.n_out)
            b["sthr"].append(t0.to(dev))
            g0 = 1 / math.sqrt(lay.n_in) if (c.norm == "scale-shift" and c.gain == "kaiming") else 1.0
            b["sgain"].append(torch.full((lay.n_out,), g0, device=dev))
        if c.norm == "batchnorm":
            b["bn_mean"] = [torch.zeros(lay.n_out, device=dev) for lay in cfg.layers]
            b["bn_var"] = [torch.ones(lay.n_out, device=dev) for lay in cfg.layers]
        if c.norm in ("activity", "mean-sign"):
            init = c.activity_init if c.norm == "activity" else 0.0
            b["srun"] = [torch.full((lay.n_out,), init, device=dev) for lay in cfg.layers]
        if c.param_rule in ("signum", "voting"):
            b["smom"] = [torch.zeros(2, lay.n_out, device=dev) for lay in cfg.layers]

    # -- pieces --------------------------------------------------------------------------------
    def _x(self, x: torch.Tensor) -> torch.Tensor:
        from bitswarm.golden.model import quantize_input

        cfg = self.rule.model_config
        h = quantize_input(cfg, x.reshape(x.shape[0], -1)).to(torch.float32)
        if cfg.layers[0].input_bits == 1:
            return h * 2 - 1
        return (h / cfg.layers[0].x_max - 0.1307) / 0.3081

    def plane_weight(self, i: int, train: bool):
        """``(W_forward, leaf)`` of bit-plane layer ``i``; ``leaf.grad`` is the proxy gradient."""
        c = self.config
        w = self.rule.w[i]
        s_planes = w.shape[0]
        s = (w.to(torch.float32) * 2 - 1).sum(0)
        leaf = (s / s_planes if c.proxy == "mean" else s).requires_grad_(train)
        if c.forward == "majority":
            fwd = torch.where(s >= 0, 1.0, -1.0)
            wf = leaf + (fwd - leaf).detach()
        else:
            wf = leaf if c.proxy == "mean" else leaf / s_planes
        return wf, leaf

    def _norm(self, i: int, z: torch.Tensor, train: bool, params: list):
        c = self.config
        b = self.rule.buf
        thr = b["sthr"][i].clone().requires_grad_(train)
        gain = b["sgain"][i].clone().requires_grad_(train)
        params.append((thr, gain))
        if c.norm == "batchnorm":
            out = F.batch_norm(z, b["bn_mean"][i], b["bn_var"][i], gain, -thr, training=train, momentum=0.1)
            return out
        if c.norm == "scale-shift":
            out = (z - thr) * gain
        else:
            out = z - thr
        if train:
            with torch.no_grad():
                if c.norm == "activity":
                    cur = (out > 0).float().mean(0)
                    run = c.activity_keep * b["srun"][i] + (1 - c.activity_keep) * cur
                    b["srun"][i] = run
                    step = (run - 0.5) * c.norm_lr
                    if c.activity_clamp:
                        step = step.clamp(-c.activity_clamp, c.activity_clamp)
                    b["sthr"][i] += step
                elif c.norm == "mean-sign":
                    b["srun"][i] = 0.9 * b["srun"][i] + 0.1 * out.mean(0)
                    b["sthr"][i] += torch.sign(b["srun"][i]) * 0.005
                elif c.norm in ("mean-match", "scale-shift"):
                    b["sthr"][i] += out.mean(0) * c.norm_lr
        return out

    def _param_step(self, i: int, thr: torch.Tensor, gain: torch.Tensor) -> None:
        c = self.config
        b = self.rule.buf
        grads = [thr.grad, gain.grad]
        learn_gain = c.norm in ("batchnorm", "scale-shift")
        for k, (name, g) in enumerate((("sthr", grads[0]), ("sgain", grads[1]))):
            if g is None or (k == 1 and not learn_gain):
                continue
            p = b[name][i]
            if c.param_rule == "sign":
                p -= c.param_lr * torch.sign(g)
            elif c.param_rule == "sgd":
                p -= c.param_lr * g
            elif c.param_rule == "sgd-clamp":
                p -= c.param_lr * g.clamp(-1, 1)
            elif c.param_rule == "signum":
                m = b["smom"][i][k]
                m.mul_(c.momentum).add_(g, alpha=1 - c.momentum)
                p.add_(torch.sign(m), alpha=-c.param_lr).clamp_(-c.clip, c.clip)
            else:  # voting
                a = b["smom"][i][k]
                a.add_(-torch.sign(g), alpha=c.param_lr).clamp_(-1, 1)
                p.add_(c.push * (torch.sign(a) - p)).clamp_(-c.clip, c.clip)
        # BatchNorm's shift is stored negated in ``sthr``: ``out = gain * zhat - sthr``.

    # -- passes --------------------------------------------------------------------------------
    def run(self, x: torch.Tensor, y: torch.Tensor | None, stats: dict | None = None):
        """Forward; with labels ``y`` also backward and the parameter step.

        Returns ``(loss, logits, grads)``: ``grads[i]`` is the gradient ``[M, N]`` of layer
        ``i``'s weight element in the seed's units (one plane's ``p.grad`` for bit planes).
        """
        r = self.rule
        c = self.config
        cfg = r.model_config
        train = y is not None
        h = self._x(x)
        leaves, params = [], []
        for i, lay in enumerate(cfg.layers):
            wf, leaf = r._seed_weight(i, train)
            if c.alpha:
                wf = wf * r._alpha(i).unsqueeze(1)
            leaves.append(leaf)
            z = (h if lay.conv is None else im2col(lay.conv, h)) @ wf.T
            out = self._norm(i, z, train, params) if self.normed[i] else z
            if not self.normed[i]:
                params.append((None, None))
            if stats is not None and not lay.output:
                pos = (out > 0).float().mean(0)
                stats.setdefault("dead", []).append(float((pos == 0).float().mean()))
                stats.setdefault("saturated", []).append(float((pos == 1).float().mean()))
            if lay.output:
                h = out
            elif c.act == "relu":
                h = F.relu(out)
            elif c.act == "leaky":
                h = F.leaky_relu(out, 0.1)
            else:
                h = out
            if lay.conv is not None:
                h = _maxpool(lay.conv, h, lay.n_out)
        if not train:
            return 0.0, h.detach(), []
        loss = F.cross_entropy(h, y)
        loss.backward()
        with torch.no_grad():
            for i, (thr, gain) in enumerate(params):
                if thr is not None:
                    self._param_step(i, thr, gain)
        grads = [r._seed_grad(i, leaf) for i, leaf in enumerate(leaves)]
        return float(loss.detach()), h.detach(), grads
