"""The golden rule: integrate-and-fire bit flips from host-assisted votes (``--rule golden``).

No latent weights. The network *is* the golden :class:`~bitswarm.golden.Model`: weight bits
``[S, M, N]``, integer thresholds, one integrate-and-fire accumulator per weight bit and the
noise LFSR. One minibatch step (``B`` samples):

1. **Forward** with golden integers: per layer ``z = x @ W_eff.T`` by
   :func:`~bitswarm.golden.layer.exact_matmul` with ``W_eff`` from
   :func:`~bitswarm.golden.layer.effective_weights` (this is golden
   :func:`~bitswarm.golden.layer.preact`), hidden bits by
   :func:`~bitswarm.golden.layer.threshold` -- the same integers that define accuracy.
2. **Surrogate backward, in integers** (no autograd): the output scores ``s = z - theta``
   enter softmax cross-entropy as ``temperature * s / sqrt(N * S)`` (float64, the only float
   of the step); the score gradient is quantized to ``g = round((p - onehot) * 2**grad_bits)``
   (int64). Going down, ``G_l = g.T @ x_l`` (the weight gradient, ``[M, N]``) and
   ``g_{l-1} = (g @ W_eff) * mask``, both exact integer products by ``exact_matmul``; the
   hardtanh straight-through ``mask`` is ``(1 - 2 * invert)`` where ``|z - theta| <= window``
   and 0 elsewhere, ``window = max(1, isqrt(mean_j var_b z[b, j]) * window_pct // 100)`` (an
   integer from the batch).
3. **Votes** (significance rule): for layer ``l`` with gradient ``G`` (the same for all S
   planes since ``z`` depends on their sum), ``thr = floor(vote_pct * sum|G| / (100 * M * N))``;
   a plane bit with value ``v = 2 w - 1`` gets ``vote = sign(G) * v`` where ``|G| > thr``, else
   0. So +1 means "gradient descent would push this bit the other way" (the bit is wrong), -1
   means it is right. **Swarms** (``swarm_votes=routed``, the default; no effect at S = 1): a
   logical weight's +1 goes to one plane only, its wrong plane with the highest accumulator
   (ties: the lowest index), the other wrong planes get 0 (:func:`vote_from_grad`), so a
   weight climbs one level (``W_eff`` +-2) per ``threshold`` net wrong votes instead of all
   its wrong planes firing together (``same``: every plane gets its vote; ``graded``:
   per-plane significance thresholds; train/RULES.md "Issue 17"). Optional annealing: in
   epoch ``e`` (0-based) the rule uses ``vote_pct * (anneal_epochs + e) // anneal_epochs``
   (constant if ``anneal_epochs`` is 0, the default).
4. **Integrate-and-fire**: golden :func:`~bitswarm.golden.flip.flip_step` on each layer in
   order, one LFSR shared by all layers (so the LFSR draw order is layer 0's bits first). With
   the default flip constants (``threshold < 2**leak_shift``) positive accumulators do not leak
   (``a >> leak_shift`` is 0 below ``2**leak_shift``) and negative ones rise by 1 per step, so
   an accumulator counts net "wrong" votes from a floor of -1 and the bit flips after
   ``threshold`` of them; stochastic LFSR firing de-synchronizes swarm planes. **Threshold
   ramp** (``threshold_start=8 threshold_ramp=8``): step ``t`` of the run (0-based, kept in the
   checkpoint's rule meta) uses ``threshold_t = min(threshold, threshold_start + t //
   threshold_ramp)`` (:meth:`GoldenRule.flip_config`), so that short runs flip bits from the
   first epoch; the model file keeps the final constants and every option under the meta key
   ``golden_options``. ``swarm_init=copies`` (off by default, train/RULES.md "Issue 17"):
   every plane starts as plane 0.
5. **Threshold homeostasis** for hidden layers (golden
   :func:`~bitswarm.golden.homeostasis.homeostasis_step`): each theta moves ``2**-shift`` of
   the way to the batch mean of its pre-activation. The default ``shift = 16`` (the slowest)
   in effect keeps the thresholds at their initial means: moving them to the current mean
   undoes what the flips learnt (train/RULES.md, "Issue 17: the final defaults"; shift 12
   cost 0.7 points on Fashion-MNIST); fast homeostasis (shift 3) makes every threshold
   jitter with the batch mean and cost 2-3 points on mnist5k. Output thresholds stay 0 (no
   per-class bias; the scores are the output layer's plain ``z``).

**Convolutional layers** (SPEC.md §14) are golden layers whose ``N`` inputs are one window;
the rule treats every output pixel of every sample as one row:

- forward: the windows ``X = im2col(x)`` (``[B * H_o * W_o, K*K*C]``) by golden
  :func:`~bitswarm.golden.conv.im2col`, ``z = X @ W_eff.T`` by ``exact_matmul``, the threshold,
  then golden :func:`~bitswarm.golden.conv.maxpool_bits` (OR over each ``Q x Q`` window);
- backward: ``G = g.T @ X`` sums over the batch and every output pixel; the input gradient is
  :func:`col2im` of ``g @ W_eff`` (the adjoint of im2col: each window row scatter-added back
  onto the positions it was read from, padding dropped); through the max-pool of the layer
  below, each pooled gradient goes to one position of its window, the first maximum in raster
  order of ``u = (1 - 2 inv) (z - theta)`` (:func:`pool_select` — the position whose bit the
  OR reads), zero elsewhere and in rows/columns that fill no window (:func:`unpool`); then
  that layer's STE mask;
- statistics per channel over every row (``B * H_o * W_o``): the window's variance; the
  homeostasis mean is over the pooled rows (``B * H_q * W_q``, the routed position's ``z``,
  ``conv_theta=pooled``, the default; ``pixels``: all rows), so that the OR of a window fires
  about half of the time rather than almost always; conv thresholds use
  ``conv_homeostasis_shift`` (default 6) and conv weights ``conv_vote_pct`` (default 100);
  initial conv thresholds are the same mean over the first 512 samples.

Dense layers (and so every MLP) never read the three ``conv_*`` options.

**Ternary weights** (``weights=ternary``, ``bitswarm train --weights ternary``; S = 1): every
layer holds trits ``[M, N]`` (golden SPEC.md §5), ``W_eff`` is the trits themselves, and steps 3
and 4 become SPEC.md §8.1: the vote is signed, the direction the trit should move,
``u = -sign(G)`` where ``|G| > thr`` (the same significance threshold), 0 elsewhere
(:func:`trit_vote_from_grad`), and golden :func:`~bitswarm.golden.flip.trit_flip_step` moves a
trit one level (-1 <-> 0 <-> +1) when its accumulator reaches ``+threshold`` or ``-threshold``.
The flip counts are then the trits that moved. Initial trits are ``Model.random``'s (uniform
over -1, 0, +1).

Data parallel (``torchrun``, ``bitswarm train --nproc N``; :mod:`bitswarm.train.distributed`):
every batch sum above (``G``, the window's variance sums, the homeostasis sums) is an int64
all-reduced over the ranks (a conv layer's routing and fold stay within each sample, so a
rank needs only its own rows), and the output scores are gathered the same way so that each rank
computes the whole minibatch's softmax; the step, and so the model file, is byte-identical to
one process for any number of ranks.

Initial state: weight bits from ``Model.random(seed)``, accumulators 0, LFSR at its seed,
thresholds set to the floor mean pre-activation of the first 512 training samples, layer by
layer (homeostasis with shift 0).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from bitswarm.golden.conv import ConvGeometry, conv_preact, im2col, maxpool_bits
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.flip import flip_step, trit_flip_step
from bitswarm.golden.homeostasis import (
    HomeostasisConfig,
    batch_mean,
    floor_mean,
    homeostasis_update,
)
from bitswarm.golden.layer import (
    WEIGHT_KINDS,
    argmax,
    effective_weights,
    exact_matmul,
    preact,
    threshold,
)
from bitswarm.golden.lfsr import LFSR
from bitswarm.golden.model import Model, quantize_input

from .rules import Rule, StepResult, register_rule

__all__ = ["GoldenRule", "vote_from_grad", "trit_vote_from_grad", "col2im", "pool_select", "pool_gather", "unpool"]


def col2im(g: ConvGeometry, cols: torch.Tensor) -> torch.Tensor:
    """The adjoint of golden :func:`~bitswarm.golden.conv.im2col`: window rows
    ``[B * H_o * W_o, K*K*C]`` (order ``(ky, kx, c)``) scatter-added back onto flat HWC maps
    ``[B, H*W*C]``; values at padding positions are dropped. Integer in, same dtype out, so
    ``<im2col(x), y> == <x, col2im(y)>`` exactly."""
    k, s, p = g.kernel, g.stride, g.pad
    ho, wo, c = g.out_height, g.out_width, g.in_channels
    if cols.ndim != 2 or cols.shape[1] != g.window or cols.shape[0] % g.positions:
        raise ConfigError(f"col2im needs rows [batch * {g.positions}, {g.window}], found {tuple(cols.shape)}")
    b = cols.shape[0] // g.positions
    w = cols.reshape(b, ho, wo, k, k, c)
    out = torch.zeros((b, g.in_height + 2 * p, g.in_width + 2 * p, c), dtype=cols.dtype, device=cols.device)
    for ky in range(k):
        for kx in range(k):
            out[:, ky : ky + s * (ho - 1) + 1 : s, kx : kx + s * (wo - 1) + 1 : s] += w[:, :, :, ky, kx]
    return out[:, p : p + g.in_height, p : p + g.in_width].reshape(b, -1)


def pool_select(g: ConvGeometry, u: torch.Tensor, channels: int) -> torch.Tensor:
    """Which position of each ``Q x Q`` pooling window the gradient goes to: the raster index
    ``dy * Q + dx`` of the maximum of ``u`` (rows ``[B * H_o * W_o, F]``, integer; ties to the
    first in raster order). Returns int64 ``[B, H_q, W_q, F]``."""
    m = _pool_windows(g, u, channels)
    top = m.max(dim=-1, keepdim=True).values
    idx = torch.arange(m.shape[-1], device=u.device).expand_as(m)
    return torch.where(m == top, idx, m.shape[-1]).min(dim=-1).values


def pool_gather(g: ConvGeometry, sel: torch.Tensor, z: torch.Tensor, channels: int) -> torch.Tensor:
    """The values of rows ``z`` ``[B * H_o * W_o, F]`` at the positions ``sel`` of
    :func:`pool_select`: one row per pooled pixel, ``[B * H_q * W_q, F]``."""
    return _pool_windows(g, z, channels).gather(-1, sel.unsqueeze(-1)).reshape(-1, channels)


def _pool_windows(g: ConvGeometry, t: torch.Tensor, channels: int) -> torch.Tensor:
    """Rows ``[B * H_o * W_o, F]`` as pooling windows ``[B, H_q, W_q, F, Q * Q]`` (raster order
    inside a window; rows and columns that fill no window dropped)."""
    q, hq, wq = g.pool, g.pooled_height, g.pooled_width
    b = t.shape[0] // g.positions
    m = t.reshape(b, g.out_height, g.out_width, channels)[:, : hq * q, : wq * q]
    return m.reshape(b, hq, q, wq, q, channels).permute(0, 1, 3, 5, 2, 4).reshape(b, hq, wq, channels, q * q)


def unpool(g: ConvGeometry, sel: torch.Tensor | None, grad: torch.Tensor, channels: int) -> torch.Tensor:
    """Gradient w.r.t. a conv layer's pooled HWC output ``[B, H_q * W_q * F]`` as rows of its
    output pixels ``[B * H_o * W_o, F]``: each pooled value goes to the one position
    :func:`pool_select` chose (``sel``; ``None`` without pooling), zero elsewhere and in the
    rows and columns that fill no pooling window."""
    b = grad.shape[0]
    if g.pool == 1:
        return grad.reshape(b * g.positions, channels)
    q, hq, wq = g.pool, g.pooled_height, g.pooled_width
    win = torch.zeros((b, hq, wq, channels, q * q), dtype=grad.dtype, device=grad.device)
    win.scatter_(4, sel.unsqueeze(-1), grad.reshape(b, hq, wq, channels, 1))
    win = win.reshape(b, hq, wq, channels, q, q).permute(0, 1, 4, 2, 5, 3).reshape(b, hq * q, wq * q, channels)
    full = torch.zeros((b, g.out_height, g.out_width, channels), dtype=grad.dtype, device=grad.device)
    full[:, : hq * q, : wq * q] = win
    return full.reshape(b * g.positions, channels)


def vote_from_grad(grad: torch.Tensor, bits: torch.Tensor, vote_pct: int,
                   graded: bool = False, acc: torch.Tensor | None = None) -> torch.Tensor:
    """Votes for weight bits ``[S, M, N]`` from an integer gradient ``[M, N]`` (int64).

    ``thr = floor(vote_pct * sum|G| / (100 * numel))``; where ``|G| > thr`` the vote is
    ``sign(G) * (2 * bit - 1)``, elsewhere 0. With ``graded`` (swarms), plane ``s`` of ``S``
    has its own threshold ``thr_s = floor(vote_pct * 2 (s + 1) * sum|G| / (100 * (S + 1) *
    numel))`` (multipliers ``2 (s + 1) / (S + 1)``, mean 1; ``S = 1`` is unchanged), so a
    stronger gradient moves more planes. With ``acc`` (the planes' accumulators ``[S, M, N]``,
    ``swarm_votes=routed``) a logical weight's "wrong" vote (+1) goes to one plane only, the
    wrong plane with the highest accumulator (ties: the lowest plane index), the other wrong
    planes get 0, and every "right" plane keeps its -1: a weight then climbs one level (one
    plane flip, ``W_eff`` +-2) per ``threshold`` net wrong votes instead of flipping all its
    wrong planes together. Returns int8 ``[S, M, N]``.
    """
    if grad.dtype != torch.int64 or bits.shape[1:] != grad.shape:
        raise ConfigError("vote_from_grad needs an int64 gradient shaped like one bit-plane")
    mag = grad.abs()
    sgn = bits.to(torch.int8) * 2 - 1
    if graded and bits.shape[0] > 1:
        S, tot = bits.shape[0], int(mag.sum())
        sig = torch.sign(grad).to(torch.int8)
        thr = [tot * vote_pct * 2 * (s + 1) // (100 * (S + 1) * grad.numel()) for s in range(S)]
        return torch.stack([sig.masked_fill(mag <= t, 0) for t in thr]) * sgn
    thr = int(mag.sum()) * vote_pct // (100 * grad.numel())
    sig = torch.sign(grad).to(torch.int8).masked_fill_(mag <= thr, 0).unsqueeze(0)
    votes = sig * sgn
    if acc is not None and bits.shape[0] > 1:
        wrong = votes > 0
        key = acc.to(torch.int64).masked_fill(~wrong, torch.iinfo(torch.int64).min)
        pick = torch.zeros_like(wrong).scatter_(0, key.argmax(0, keepdim=True), True)
        votes = votes.masked_fill(wrong & ~pick, 0)
    return votes


def trit_vote_from_grad(grad: torch.Tensor, vote_pct: int) -> torch.Tensor:
    """Signed votes for trits ``[M, N]`` from an integer gradient ``[M, N]`` (int64), SPEC.md
    §8.1: ``-sign(G)`` (the direction that lowers the loss) where ``|G| > thr``, else 0, with
    :func:`vote_from_grad`'s ``thr = floor(vote_pct * sum|G| / (100 * numel))``. int8."""
    if grad.dtype != torch.int64 or grad.ndim != 2:
        raise ConfigError("trit_vote_from_grad needs an int64 gradient [M, N]")
    mag = grad.abs()
    thr = int(mag.sum()) * vote_pct // (100 * grad.numel())
    return (-torch.sign(grad)).to(torch.int8).masked_fill_(mag <= thr, 0)


@register_rule
class GoldenRule(Rule):
    name = "golden"
    summary = "integrate-and-fire flips from host-assisted STE sign votes + threshold homeostasis"
    exportable = True
    hardware_trainable = False  # votes come from a float softmax on the host
    trains_conv = True
    data_parallel = True  # integer batch sums all-reduced over ranks (surrogate_gradients)

    @dataclass(frozen=True)
    class Options:
        """Hyperparameters of the host-assisted vote source (see the module docstring)."""

        vote_pct: int = 100
        window_pct: int = 50
        grad_bits: int = 10
        temperature: float = 1.0
        homeostasis_shift: int = 16
        anneal_epochs: int = 0
        conv_vote_pct: int = 100
        conv_homeostasis_shift: int = 6
        conv_theta: str = "pooled"
        weights: str = "binary"
        threshold_start: int = 8
        threshold_ramp: int = 8
        swarm_votes: str = "routed"
        swarm_init: str = "random"

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
            if not 0 <= self.conv_vote_pct <= 10000:
                raise ConfigError(f"conv_vote_pct must be in 0..10000, not {self.conv_vote_pct}")
            HomeostasisConfig(self.conv_homeostasis_shift)
            if self.conv_theta not in ("pooled", "pixels"):
                raise ConfigError(f"conv_theta must be 'pooled' or 'pixels', not {self.conv_theta!r}")
            if self.weights not in WEIGHT_KINDS:
                raise ConfigError(f"weights must be one of {', '.join(WEIGHT_KINDS)}, not {self.weights!r}")
            if self.swarm_init not in ("random", "copies"):
                raise ConfigError(f"swarm_init must be 'random' or 'copies', not {self.swarm_init!r}")
            if self.swarm_votes not in ("same", "graded", "routed"):
                raise ConfigError(f"swarm_votes must be 'same', 'graded' or 'routed', not {self.swarm_votes!r}")
            if not 1 <= self.threshold_start <= 1 << 20:
                raise ConfigError(f"threshold_start must be in 1..{1 << 20}, not {self.threshold_start}")
            if not 0 <= self.threshold_ramp <= 1 << 20:
                raise ConfigError(f"threshold_ramp must be in 0..{1 << 20}, not {self.threshold_ramp}")
            if not 0 <= self.anneal_epochs <= 100000:
                raise ConfigError(f"anneal_epochs must be in 0..100000, not {self.anneal_epochs}")

    def __init__(self, spec, options=None, device="cpu"):
        super().__init__(spec, options, device)
        if self.opts.weights == "ternary":  # every layer trits (SPEC.md §5, §8.1)
            if spec.swarm != 1:
                raise ConfigError(f"ternary weights need swarm 1, not {spec.swarm} (a trit is one "
                                  "weight of 3 levels; drop --swarm or use --weights binary)")
            f = spec.flip
            if f.refractory <= -f.threshold:
                raise ConfigError(f"ternary layers need flip.refractory in {1 - f.threshold}.."
                                  f"{f.threshold - 1} (threshold {f.threshold}), not {f.refractory}")
            lays = tuple(dataclasses.replace(lay, weights="ternary") for lay in self.model_config.layers)
            self.model_config = dataclasses.replace(self.model_config, layers=lays)
        self.homeostasis = HomeostasisConfig(self.opts.homeostasis_shift)
        self.conv_homeostasis = HomeostasisConfig(self.opts.conv_homeostasis_shift)
        self.model: Model | None = None
        self.vote_pct = self.opts.vote_pct
        self.conv_vote_pct = self.opts.conv_vote_pct
        self.step = 0  # minibatch steps taken (the threshold ramp's clock)

    def start_epoch(self, epoch: int) -> None:
        a = self.opts.anneal_epochs
        self.vote_pct = self.opts.vote_pct * (a + epoch) // a if a else self.opts.vote_pct
        self.conv_vote_pct = self.opts.conv_vote_pct * (a + epoch) // a if a else self.opts.conv_vote_pct

    # -- state ---------------------------------------------------------------------------------
    def init_state(self, x_train: torch.Tensor) -> None:
        cfg = self.model_config
        m = Model.random(cfg, self.spec.seed)
        w = [t.to(self.device) for t in m.weights]
        if self.opts.swarm_init == "copies":  # every plane starts as plane 0: W_eff = S * (2 w_0 - 1)
            w = [t[:1].expand_as(t).contiguous() if t.ndim == 3 else t for t in w]
        theta, invert = [], []
        h = quantize_input(cfg, x_train[:512].to(self.device))
        for i, lay in enumerate(cfg.layers):
            z = preact(lay, h, w[i]) if lay.conv is None else conv_preact(lay, h, w[i])
            inv = torch.zeros(lay.n_out, dtype=torch.uint8, device=self.device)
            if lay.output:
                t = torch.zeros(lay.n_out, dtype=torch.int32, device=self.device)
            else:  # a conv layer: per channel, over every sample's (pooled) output pixels
                zh = self._homeostasis_rows(lay, z, pool_select(lay.conv, z, lay.n_out)
                                            if lay.conv is not None and lay.conv.pool > 1 else None)
                t = torch.clamp(batch_mean(zh), -lay.theta_bound, lay.theta_bound).to(torch.int32)
                h = threshold(z, t, inv)
                if lay.conv is not None:
                    h = maxpool_bits(lay.conv, h, lay.n_out)
            theta.append(t)
            invert.append(inv)
        acc = [torch.zeros(lay.weight_shape(), dtype=torch.int32, device=self.device)
               for lay in cfg.layers]
        self.model = Model(cfg, w, theta, invert, acc, cfg.flip.lfsr.seed)
        self.step = 0

    def _homeostasis_rows(self, lay, z: torch.Tensor, sel: torch.Tensor | None) -> torch.Tensor:
        """The rows of ``z`` whose mean a hidden layer's threshold follows: all of them, or for
        a pooled conv layer with ``conv_theta=pooled`` the one routed position per window."""
        if sel is None or self.opts.conv_theta != "pooled":
            return z
        return pool_gather(lay.conv, sel, z, lay.n_out)

    def export(self) -> Model:
        m = self.model
        # every option of the rule (the threshold ramp included), so a run can be repeated
        cfg = dataclasses.replace(m.cfg, meta={**m.cfg.meta, "golden_options": json.dumps(
            dataclasses.asdict(self.opts), sort_keys=True)})
        return Model(cfg, [t.cpu() for t in m.weights], [t.cpu() for t in m.theta],
                     [t.cpu() for t in m.invert], [t.cpu() for t in m.acc], m.lfsr_state)

    def load_state(self, model, tensors, meta) -> None:
        if model is None or model.acc is None or model.lfsr_state is None:
            raise ConfigError("golden-rule checkpoint lacks the model's accumulators or LFSR state")
        saved = dataclasses.replace(model.cfg, meta={k: v for k, v in model.cfg.meta.items()
                                                     if k != "golden_options"})
        if saved.to_dict() != self.model_config.to_dict():
            raise ConfigError("checkpoint model does not match the run's configuration")
        d = self.device
        self.model = Model(self.model_config, [t.to(d) for t in model.weights], [t.to(d) for t in model.theta],
                           [t.to(d) for t in model.invert], [t.to(d) for t in model.acc],
                           model.lfsr_state)
        # checkpoints written before the ramp existed resume with it finished (as they ran)
        self.step = int(meta.get("step", 1 << 62)) if isinstance(meta, dict) else 1 << 62

    def state_meta(self) -> dict:
        return {"step": self.step}

    def flip_config(self, step: int):
        """The integrate-and-fire constants of step ``step`` (0-based): the model's, with the
        threshold ``min(threshold, threshold_start + step // threshold_ramp)`` while the ramp
        lasts (``threshold_ramp = 0``: no ramp). The refractory value is clamped into the
        ramped threshold's range: ``<= threshold - 1``, and for ternary weights (SPEC.md §8.1)
        also ``>= 1 - threshold``."""
        f, k = self.model.cfg.flip, self.opts.threshold_ramp
        t = self.opts.threshold_start + step // k if k else f.threshold
        if t >= f.threshold:
            return f
        r = min(f.refractory, t - 1)
        if self.opts.weights == "ternary":
            r = max(r, 1 - t)
        return dataclasses.replace(f, threshold=t, refractory=r)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        return torch.cat([self.model.predict(x[i : i + batch]) for i in range(0, len(x), batch)])

    # -- one step ------------------------------------------------------------------------------
    def surrogate_gradients(self, x: torch.Tensor, y: torch.Tensor):
        """Steps 1-2 of the module docstring for one minibatch, without changing any state.

        ``x``, ``y`` are the whole (global) minibatch of ``B`` samples. This rank computes the
        rows :meth:`Comm.shard` gives it (all of them in one process) and sums every batch
        statistic with ``comm.all_reduce_sum`` (int64, exact): per hidden layer the column
        sums of ``z`` and of ``z - theta`` and of ``(z - theta)**2`` (a convolutional layer's
        columns are its channels, its rows every sample's output pixels), the output scores
        (rows of the other ranks are 0 in the sum, so every rank holds all ``B`` rows and
        computes the float64 softmax of the whole minibatch exactly as one process does), then
        the weight gradients. Two collectives per step; the result does not depend on the
        number of ranks.

        Also sets ``self.last_correct``: how many of the ``B`` samples the scores classify
        correctly (golden argmax), for the trainer's running train accuracy.

        Returns ``(loss, grads, means)``: the float surrogate loss, the integer weight gradient
        ``G`` (int64 ``[M, N]``, summed over the minibatch and, for a convolutional layer, its
        output pixels) of every layer and every hidden layer's floor batch mean of ``z``
        (int64 ``[M]``, golden :func:`~bitswarm.golden.homeostasis.floor_mean`; ``None`` for
        the output layer).
        """
        m, o, comm = self.model, self.opts, self.comm
        cfg = m.cfg
        B = x.shape[0]
        rows = comm.shard(B)
        h_int = quantize_input(cfg, x[rows])
        # forward: golden integers; keep each layer's input values (conv: its windows),
        # weights, z - theta and (conv with pooling) the routing of each pooled bit
        xs, weffs, zts, sums, routes, counts = [], [], [], [], [], []
        for i, lay in enumerate(cfg.layers):
            geo = lay.conv
            if geo is None:
                xv = h_int.to(torch.int32)
                if lay.input_bits == 1:
                    xv = xv * 2 - 1
            else:  # windows as float32 (exact: |values| <= 255), the dtype exact_matmul uses
                xv = im2col(geo, h_int).to(torch.float32)
                if lay.input_bits == 1:
                    xv.mul_(2).sub_(1)
            weff = effective_weights(lay, m.weights[i])
            z_int = exact_matmul(xv, weff, lay.z_bound)  # == golden preact(lay, windows, w)
            xs.append(xv)
            weffs.append(weff)
            zt_int = z_int - m.theta[i].to(torch.int64)
            if lay.output:
                scores = zt_int
                continue
            zts.append(zt_int)
            bits = threshold(z_int, m.theta[i], m.invert[i])
            sel = None
            if geo is None:
                h_int = bits
            else:
                u = zt_int * (1 - 2 * m.invert[i].to(torch.int64))
                sel = pool_select(geo, u, lay.n_out) if geo.pool > 1 else None
                h_int = maxpool_bits(geo, bits, lay.n_out)
            routes.append(sel)
            zh = self._homeostasis_rows(lay, z_int, sel)
            counts.append(zh.shape[0] // max(1, h_int.shape[0]))  # rows per sample (B_r >= 1)
            sums.append(torch.stack([zh.sum(0), zt_int.sum(0), (zt_int * zt_int).sum(0)]))
        if comm.parallel:  # every rank gets all B score rows (exact: the others' rows are 0)
            full = torch.zeros((B, scores.shape[1]), dtype=torch.int64, device=scores.device)
            full[rows] = scores
            *sums, scores = comm.all_reduce_sum_many([*sums, full])
        # window (from the batch variance of z - theta) and hardtanh STE mask per hidden layer;
        # the statistics of a conv layer run over all B * H_o * W_o rows of each channel
        masks, means = [], []
        for i, lay in enumerate(cfg.layers[:-1]):
            n = B * (lay.conv.positions if lay.conv is not None else 1)
            zsum, s1, sq = (t.tolist() for t in sums[i])  # Python ints: n * sq cannot overflow
            var = sum((n * q - a * a) // (n * n) for a, q in zip(s1, sq, strict=True))
            win = max(1, math.isqrt(var // lay.n_out) * o.window_pct // 100)
            # hardtanh STE through the golden activation, with the invert bit's sign
            sgn = (1 - 2 * m.invert[i].to(torch.int64)).unsqueeze(0)
            masks.append((zts[i].abs() <= win).to(torch.int64) * sgn)
            means.append(floor_mean(sums[i][0], B * counts[i]))
        means.append(None)
        # surrogate loss on the output scores; its gradient quantized to integers. The float64
        # softmax runs on the CPU whatever the device (a [B, classes] tensor), so CUDA cannot
        # round one of its values differently and change a vote: the step stays bit-exact.
        out = cfg.layers[-1]
        self.last_correct = int((argmax(scores).cpu() == y.cpu()).sum())
        logits = scores.cpu().to(torch.float64) * (o.temperature / math.sqrt(out.n_in * out.swarm))
        y_cpu = y.cpu()
        loss = F.cross_entropy(logits, y_cpu)
        p = torch.softmax(logits, dim=1)
        p[torch.arange(B), y_cpu] -= 1.0
        g = torch.round(p * (1 << o.grad_bits)).to(torch.int64)[rows].to(scores.device)  # [B_r, M]
        # integer backward, last layer first. g holds the gradient w.r.t. layer i's z (conv:
        # one row per output pixel); G = g.T @ x, then the gradient of the input, g @ W (conv:
        # folded back onto the input map by col2im), routed through the layer below's max-pool
        # and multiplied by its STE mask.
        grads = [None] * len(cfg.layers)
        for i in range(len(cfg.layers) - 1, -1, -1):
            lay = cfg.layers[i]
            ga = g.abs()
            col = int(ga.sum(0).max()) if g.numel() else 0  # bounds every partial sum
            grads[i] = exact_matmul(g.T, xs[i].T, max(1, col * lay.x_max))
            if i:
                row = int(ga.sum(1).max()) if g.numel() else 0
                gw = exact_matmul(g, weffs[i].T, max(1, row * lay.swarm))
                if lay.conv is not None:
                    gw = col2im(lay.conv, gw)
                below = cfg.layers[i - 1]
                if below.conv is not None:
                    gw = unpool(below.conv, routes[i - 1], gw, below.n_out)
                g = gw * masks[i - 1]
        if comm.parallel and self.grad_reduce_dtype(B) == torch.int32:  # half the bytes, still exact
            grads = [t.to(torch.int64) for t in comm.all_reduce_sum_many([t.to(torch.int32) for t in grads])]
        else:
            grads = comm.all_reduce_sum_many(grads)
        return float(loss), grads, means

    def grad_reduce_dtype(self, batch: int) -> torch.dtype:
        """int32 when no layer's summed gradient can reach ``2**31`` for a minibatch of
        ``batch``, else int64: ``|g| <= 2**grad_bits`` at the output, times ``S * M`` per layer
        going down (STE mask in {-1, 0, 1}; a convolution's fold adds up to ``K * K`` window
        positions per input), times ``x_max * rows`` for ``G = g.T @ x`` (rows: ``batch``, times
        ``H_o * W_o`` for a convolution)."""
        g, worst = 1 << self.opts.grad_bits, 0
        for lay in reversed(self.model_config.layers):
            geo = lay.conv
            worst = max(worst, g * lay.x_max * batch * (geo.positions if geo is not None else 1))
            g *= lay.swarm * lay.n_out * (geo.kernel * geo.kernel if geo is not None else 1)
        return torch.int32 if worst < 1 << 31 else torch.int64

    def allreduce_bytes(self, batch: int) -> int:
        """Payload bytes :meth:`surrogate_gradients` all-reduces per step on more than one rank:
        ``3 M`` column sums per hidden layer and ``batch x classes`` scores (int64) in the first
        collective, every layer's ``M x N`` gradient (:meth:`grad_reduce_dtype`) in the second."""
        layers = self.model_config.layers
        first = sum(3 * lay.n_out for lay in layers[:-1]) + batch * layers[-1].n_out
        width = 4 if self.grad_reduce_dtype(batch) == torch.int32 else 8
        return 8 * first + width * sum(lay.n_out * lay.n_in for lay in layers)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        m, cfg = self.model, self.model.cfg
        loss, grads, means = self.surrogate_gradients(x, y)
        # votes -> integrate-and-fire, layer by layer (the LFSR draws layer 0's bits first)
        lfsr = LFSR(cfg.flip.lfsr, m.lfsr_state) if cfg.flip.uses_lfsr else None
        fcfg = self.flip_config(self.step)
        self.step += 1
        flips = []
        for i in range(len(cfg.layers)):
            pct = self.vote_pct if cfg.layers[i].conv is None else self.conv_vote_pct
            if cfg.layers[i].weights == "ternary":  # SPEC.md §8.1: signed votes, trits step
                v = trit_vote_from_grad(grads[i], pct)
                m.weights[i], m.acc[i], fired = trit_flip_step(fcfg, m.weights[i], m.acc[i], v, lfsr)
            else:
                v = vote_from_grad(grads[i], m.weights[i], pct, self.opts.swarm_votes == "graded",
                                   m.acc[i] if self.opts.swarm_votes == "routed" else None)
                m.weights[i], m.acc[i], fired = flip_step(fcfg, m.weights[i], m.acc[i], v, lfsr)
            flips.append(int(fired.sum()))
        if lfsr is not None:
            m.lfsr_state = lfsr.state
        for i, lay in enumerate(cfg.layers):
            if not lay.output:
                h = self.homeostasis if lay.conv is None else self.conv_homeostasis
                m.theta[i] = homeostasis_update(h, m.theta[i], means[i], lay.theta_bound)
        return StepResult(loss, flips, self.last_correct)
