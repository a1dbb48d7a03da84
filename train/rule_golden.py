"""The golden rule: integrate-and-fire bit flips from host-assisted votes (``--rule golden``).

No latent weights. The network *is* the golden :class:`~bitswarm.golden.Model`: weight bits
``[S, M, N]``, integer thresholds, one integrate-and-fire accumulator per weight bit and the
noise LFSR. One minibatch step:

1. **Forward** with golden :func:`~bitswarm.golden.layer.preact` and
   :func:`~bitswarm.golden.layer.threshold` (the same integers that define accuracy).
2. **Surrogate backward by torch autograd** (custom functions, float64 tensors holding
   integers): the output scores ``s = z - theta`` go through softmax cross-entropy on
   ``temperature * s / sqrt(N * S)``; the score gradient ``p - onehot`` is quantized to
   ``round((p - onehot) * 2**grad_bits)`` integers; hidden activations use the hardtanh
   straight-through estimator: the gradient passes where ``|z - theta| <= window`` with
   ``window = max(1, isqrt(mean_j var_b z[b, j]) * window_pct // 100)`` (an integer from the
   batch). The layer backward ``g @ W`` and ``g.T @ x`` are computed by
   :func:`~bitswarm.golden.layer.exact_matmul`, so every weight gradient ``G`` is an exact
   integer, identical on CPU and CUDA up to the float64 softmax.
3. **Votes** (significance rule): for layer ``l`` with gradient ``G`` (``[M, N]``, the same
   for all S planes since ``z`` depends on their sum), ``thr = floor(vote_pct * sum|G| /
   (100 * M * N))``; a plane bit with value ``v = 2 w - 1`` gets ``vote = sign(G) * v`` where
   ``|G| > thr``, else 0. So +1 means "gradient descent would push this bit the other way"
   (the bit is wrong), -1 means it is right. Annealing: in epoch ``e`` (0-based) the rule
   uses ``vote_pct * (anneal_epochs + e) // anneal_epochs`` (constant if ``anneal_epochs``
   is 0), so ever fewer, ever stronger votes arrive as training proceeds.
4. **Integrate-and-fire**: one golden :func:`~bitswarm.golden.flip.flip_step` over all
   layers' bits (flattened in layer order, so the LFSR draw order is layer 0 first). The
   accumulator plays the role of Bop's momentum: leak = decay, threshold = Bop's tau,
   refractory reset after a flip, stochastic LFSR firing de-synchronizes swarm planes.
5. **Threshold homeostasis** for hidden layers (golden
   :func:`~bitswarm.golden.homeostasis.homeostasis_step`): each theta moves ``2**-shift`` of
   the way to the batch mean of its pre-activation. Output thresholds stay 0 (no per-class
   bias; the scores are the output layer's plain ``z``).

Initial state: weight bits from ``Model.random(seed)``, accumulators 0, LFSR at its seed,
thresholds set to the floor mean pre-activation of the first 512 training samples, layer by
layer (homeostasis with shift 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.flip import flip_step
from bitswarm.golden.homeostasis import HomeostasisConfig, batch_mean, homeostasis_step
from bitswarm.golden.layer import effective_weights, exact_matmul, preact, threshold
from bitswarm.golden.lfsr import LFSR
from bitswarm.golden.model import Model, quantize_input

from .rules import Rule, StepResult, register_rule

__all__ = ["GoldenRule", "vote_from_grad"]


def vote_from_grad(grad: torch.Tensor, bits: torch.Tensor, vote_pct: int) -> torch.Tensor:
    """Votes for weight bits ``[S, M, N]`` from an integer gradient ``[M, N]`` (int64).

    ``thr = floor(vote_pct * sum|G| / (100 * numel))``; where ``|G| > thr`` the vote is
    ``sign(G) * (2 * bit - 1)``, elsewhere 0. Returns int8 ``[S, M, N]``.
    """
    if grad.dtype != torch.int64 or bits.shape[1:] != grad.shape:
        raise ConfigError("vote_from_grad needs an int64 gradient shaped like one bit-plane")
    mag = grad.abs()
    thr = int(mag.sum()) * vote_pct // (100 * grad.numel())
    sig = torch.where(mag > thr, torch.sign(grad), torch.zeros_like(grad)).to(torch.int8)
    return sig.unsqueeze(0) * (bits.to(torch.int8) * 2 - 1)


def _int_as_f64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64)


class _Preact(torch.autograd.Function):
    """Forward: golden ``preact`` (given as ``z``). Backward: exact integer ``g @ W``, ``g.T @ x``."""

    @staticmethod
    def forward(ctx, x_val, weff, z, wmax, xmax):
        ctx.save_for_backward(x_val, weff)
        ctx.bounds = (wmax, xmax)
        return z.clone()

    @staticmethod
    def backward(ctx, g):
        x_val, weff = ctx.saved_tensors
        wmax, xmax = ctx.bounds
        gmax = int(g.abs().max()) if g.numel() else 0
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = _int_as_f64(exact_matmul(g, weff.T, max(1, gmax * wmax * weff.shape[0])))
        if ctx.needs_input_grad[1]:
            gw = _int_as_f64(exact_matmul(g.T, x_val.T, max(1, gmax * xmax * g.shape[0])))
        return gx, gw, None, None, None


class _SteSign(torch.autograd.Function):
    """Forward: the golden activation as ±1. Backward: pass where ``|z - theta| <= window``."""

    @staticmethod
    def forward(ctx, zt, bits, window, sign):
        ctx.save_for_backward((zt.abs() <= window).to(zt.dtype) * sign)
        return bits.to(zt.dtype) * 2 - 1

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None, None, None


class _QuantGrad(torch.autograd.Function):
    """Identity forward; backward rescales ``dL/ds = scale * (p - y) / B`` to integers
    ``round((p - y) * 2**bits)``."""

    @staticmethod
    def forward(ctx, s, factor):
        ctx.factor = factor
        return s.view_as(s)

    @staticmethod
    def backward(ctx, g):
        return torch.round(g * ctx.factor), None


@register_rule
class GoldenRule(Rule):
    name = "golden"
    summary = "integrate-and-fire flips from host-assisted STE sign votes + threshold homeostasis"
    exportable = True
    hardware_trainable = False  # votes come from a float softmax on the host

    @dataclass(frozen=True)
    class Options:
        """Hyperparameters of the host-assisted vote source (see the module docstring)."""

        vote_pct: int = 50
        window_pct: int = 100
        grad_bits: int = 10
        temperature: float = 1.0
        homeostasis_shift: int = 3
        anneal_epochs: int = 10

        def check(self) -> None:
            if not 0 <= self.vote_pct <= 10000:
                raise ConfigError(f"vote_pct must be in 0..10000, not {self.vote_pct}")
            if not 1 <= self.window_pct <= 10000:
                raise ConfigError(f"window_pct must be in 1..10000, not {self.window_pct}")
            if not 1 <= self.grad_bits <= 20:
                raise ConfigError(f"grad_bits must be in 1..20, not {self.grad_bits}")
            if not (self.temperature > 0 and math.isfinite(self.temperature)):
                raise ConfigError(f"temperature must be a positive number, not {self.temperature}")
            HomeostasisConfig(self.homeostasis_shift)
            if not 0 <= self.anneal_epochs <= 100000:
                raise ConfigError(f"anneal_epochs must be in 0..100000, not {self.anneal_epochs}")

    def __init__(self, spec, options=None, device="cpu"):
        super().__init__(spec, options, device)
        self.homeostasis = HomeostasisConfig(self.opts.homeostasis_shift)
        self.model: Model | None = None
        self.vote_pct = self.opts.vote_pct

    def start_epoch(self, epoch: int) -> None:
        a = self.opts.anneal_epochs
        self.vote_pct = self.opts.vote_pct * (a + epoch) // a if a else self.opts.vote_pct

    # -- state ---------------------------------------------------------------------------------
    def init_state(self, x_train: torch.Tensor) -> None:
        cfg = self.model_config
        m = Model.random(cfg, self.spec.seed)
        w = [t.to(self.device) for t in m.weights]
        theta, invert = [], []
        h = quantize_input(cfg, x_train[:512].to(self.device))
        for i, lay in enumerate(cfg.layers):
            z = preact(lay, h, w[i])
            inv = torch.zeros(lay.n_out, dtype=torch.uint8, device=self.device)
            if lay.output:
                t = torch.zeros(lay.n_out, dtype=torch.int32, device=self.device)
            else:
                t = torch.clamp(batch_mean(z), -lay.theta_bound, lay.theta_bound).to(torch.int32)
                h = threshold(z, t, inv)
            theta.append(t)
            invert.append(inv)
        acc = [torch.zeros(lay.weight_shape(), dtype=torch.int32, device=self.device)
               for lay in cfg.layers]
        self.model = Model(cfg, w, theta, invert, acc, cfg.flip.lfsr.seed)

    def export(self) -> Model:
        m = self.model
        return Model(m.cfg, [t.cpu() for t in m.weights], [t.cpu() for t in m.theta],
                     [t.cpu() for t in m.invert], [t.cpu() for t in m.acc], m.lfsr_state)

    def load_state(self, model, tensors, meta) -> None:
        if model is None or model.acc is None or model.lfsr_state is None:
            raise ConfigError("golden-rule checkpoint lacks the model's accumulators or LFSR state")
        if model.cfg.to_dict() != self.model_config.to_dict():
            raise ConfigError("checkpoint model does not match the run's configuration")
        d = self.device
        self.model = Model(model.cfg, [t.to(d) for t in model.weights], [t.to(d) for t in model.theta],
                           [t.to(d) for t in model.invert], [t.to(d) for t in model.acc],
                           model.lfsr_state)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        return torch.cat([self.model.predict(x[i : i + batch]) for i in range(0, len(x), batch)])

    # -- one step ------------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        m, o = self.model, self.opts
        cfg = m.cfg
        B = x.shape[0]
        h_int = quantize_input(cfg, x)
        lay0 = cfg.layers[0]
        h_val = _int_as_f64(h_int.to(torch.int32) * 2 - 1 if lay0.input_bits == 1 else h_int)
        weffs, zs = [], []
        for i, lay in enumerate(cfg.layers):
            z_int = preact(lay, h_int, m.weights[i])
            zs.append(z_int)
            weff = _int_as_f64(effective_weights(lay, m.weights[i])).requires_grad_(True)
            weffs.append(weff)
            z = _Preact.apply(h_val, weff, _int_as_f64(z_int), lay.swarm, lay.x_max)
            zt_int = z_int - m.theta[i].to(torch.int64)
            zt = z - _int_as_f64(m.theta[i])
            if lay.output:
                scale = o.temperature / math.sqrt(lay.n_in * lay.swarm)
                factor = B * (1 << o.grad_bits) / scale
                logits = _QuantGrad.apply(zt, factor) * scale
                loss = F.cross_entropy(logits, y)
            else:
                s1 = zt_int.sum(0)
                var = torch.div(B * (zt_int * zt_int).sum(0) - s1 * s1, B * B, rounding_mode="floor")
                win = max(1, math.isqrt(int(var.sum()) // lay.n_out) * o.window_pct // 100)
                h_int = threshold(z_int, m.theta[i], m.invert[i])
                sign = 1.0 - 2.0 * m.invert[i].to(torch.float64)
                h_val = _SteSign.apply(zt, h_int, win, sign)
        loss.backward()
        # votes -> one integrate-and-fire step over every layer's bits, layer 0 first
        votes = [vote_from_grad(weff.grad.to(torch.int64), m.weights[i], self.vote_pct)
                 for i, weff in enumerate(weffs)]
        sizes = [v.numel() for v in votes]
        lfsr = LFSR(cfg.flip.lfsr, m.lfsr_state) if cfg.flip.uses_lfsr else None
        w_new, a_new, fired = flip_step(
            cfg.flip,
            torch.cat([w.reshape(-1) for w in m.weights]),
            torch.cat([a.reshape(-1) for a in m.acc]),
            torch.cat([v.reshape(-1) for v in votes]),
            lfsr,
        )
        if lfsr is not None:
            m.lfsr_state = lfsr.state
        flips, k = [], 0
        for i, n in enumerate(sizes):
            shape = m.weights[i].shape
            m.weights[i] = w_new[k : k + n].reshape(shape)
            m.acc[i] = a_new[k : k + n].reshape(shape)
            flips.append(int(fired[k : k + n].sum()))
            k += n
        for i, lay in enumerate(cfg.layers):
            if not lay.output:
                m.theta[i] = homeostasis_step(self.homeostasis, m.theta[i], zs[i], lay.theta_bound)
        return StepResult(float(loss.detach()), flips)
