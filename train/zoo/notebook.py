"""Rules from the seed notebook (``shared/seeds/000``, versions v1..v21), one class each.

All of them train the zoo's shared network (:mod:`bitswarm.train.zoo.base`): golden binary
swarm layers, integer thresholds, golden homeostasis, the shared surrogate gradient ``G``
(``[M, N]``, equal for every plane of a weight) and the golden vote convention: for a plane
bit with value ``v = ±1``, ``sign(G) * v = +1`` means the bit is wrong. The seeds' float
constants become integers where the rule is integer (fixed point, LFSR comparators) and stay
float where the seed's state is float (latent weights, momentum); ``reason`` says which.

Conversions used throughout: the seed's mean gradient is ``g = G / (B * 2**grad_bits)``; a
probability ``p`` becomes a 16-bit comparison ``draw16 < round(p * 65536)`` against the golden
LFSR (draws in golden §6 order, one per plane bit, layer 0 first); a float decay ``d`` becomes
the 8-bit fixed-point leak ``acc * round(256 d) / 256`` (:func:`~bitswarm.train.zoo.base.q8_leak`);
accumulators are fixed point with 8 (bounded votes) or 16 (gradient pressure) fraction bits.

Every rule here also trains the network its seed version used (``--opt net=seed``, the
default): :class:`~bitswarm.train.zoo.seednet.SeedNetwork` configured by the rule's
:meth:`seed_net_config` (normalized inputs, the version's normalization, gains and activation,
its majority or analog swarm forward). The rule then receives the seed's own per-plane
gradient, so ``rate``, ``boost``, ``friction`` and every other absolute-magnitude constant means
what it meant in the seed. That network is float, is evaluated by its own forward pass and
cannot be exported; ``net=golden`` trains the shared golden network
(:mod:`bitswarm.train.zoo.base`), exportable. ``train/zoo/SEEDS.md`` maps each rule to its
seed network and constants.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from bitswarm.golden.errors import ConfigError

from ..rules import register_rule
from .base import SurrogateOptions, ZooRule, lfsr_uniform, q8_leak
from .seednet import SeedNetConfig

__all__ = [
    "NotebookOptions", "VotingV1", "SignSGDV3", "SignumV4", "SwarmV6", "BitLogicV8", "RankV9A",
    "AnalogSwarmV9B", "MomentumRankV10", "HomeostasisV11", "MeanMatchV12", "ScaleShiftV13",
    "KaimingV14", "IntegrateFireV15", "AdaptiveIFV16", "BoundedVoteV17", "FrictionV18",
    "CruiseV19", "LeakyIFV20", "OneBitVotingV21", "OneBitSignumV21", "BoundedOptions",
]

#: The scale/shift network of seed v15-v20 (v14's Kaiming gain, fixed homeostasis rate).
SCALE_SHIFT = SeedNetConfig(norm="scale-shift", gain="kaiming", norm_lr=0.1, act="leaky",
                            param_rule="sgd-clamp", param_lr=0.01)


@dataclass(frozen=True)
class NotebookOptions(SurrogateOptions):
    """Options of the seed notebook's rules: the shared ones, with the seed network by default."""

    net: str = "seed"


_SOFTMAX_REASON = "; the default vote source is the host's float softmax (error=softmax), so only --opt error=hinge makes the step integer"


def _p16(p: float) -> int:
    return int(round(p * 65536))


def _gscale(rule: ZooRule, batch: int) -> int:
    """``B * 2**grad_bits`` (golden network: turns ``G`` into the seed's mean gradient), 1 on the
    seed network."""
    return rule._gscale()


def _fixed(rule: ZooRule, g: torch.Tensor, k: int) -> torch.Tensor:
    """``trunc(g * k / gscale)`` as int64: a gradient in the seed's units, times the fixed-point
    constant ``k`` (integer division of the integer ``G`` on the golden network)."""
    if rule.seed_mode:
        return torch.trunc(g.to(torch.float64) * k).to(torch.int64)
    return torch.div(g.round().to(torch.int64) * k, rule._gscale(), rounding_mode="trunc")


def _sat(t: torch.Tensor, bits: int) -> torch.Tensor:
    lim = 1 << (bits - 1)
    return torch.clamp(t, -lim, lim - 1)


# ----------------------------------------------------------------------------------------------
@register_rule
class VotingV1(ZooRule):
    name = "v1-voting"
    source = "seed 000 v1"
    summary = "sign votes into a clamped accumulator; the bit is the accumulator's sign"
    integer_update = True
    reason = "integer accumulator in [-levels, levels]" + _SOFTMAX_REASON
    state_bits = 5

    @dataclass(frozen=True)
    class Options(NotebookOptions):
        levels: int = 10

        def check(self) -> None:
            super().check()
            if not 1 <= self.levels <= 127:
                raise ConfigError(f"levels must be in 1..127, not {self.levels}")

    def seed_net_config(self):
        # the seed's v1 convnet had no normalization: ReLU on raw sums
        return SeedNetConfig(norm="none", act="relu")

    def _init_rule(self) -> None:
        self.buf["acc"] = [self._bit_values(i).to(torch.int8) for i in range(len(self.w))]

    def _update(self, grads, zs):
        L = self.opts.levels
        flips = []
        for i, g in enumerate(grads):
            a = self.buf["acc"][i].to(torch.int64) - torch.sign(g).to(torch.int64).unsqueeze(0)
            a = torch.clamp(a, -L, L)
            self.buf["acc"][i] = a.to(torch.int8)
            new = torch.where(a > 0, 1, torch.where(a < 0, 0, self.w[i].to(torch.int64))).to(torch.uint8)
            flips.append(self._flip(i, new != self.w[i]))
        return flips


# ----------------------------------------------------------------------------------------------
class _Latent(ZooRule):
    """Shared state of rules with a float shadow weight per plane bit (bit = shadow >= 0)."""

    integer_update = False

    def _init_rule(self) -> None:
        self.buf["shadow"] = [self._bit_values(i).to(torch.float32) * self.opts.init for i in range(len(self.w))]

    def _set_bits(self, i: int) -> int:
        new = (self.buf["shadow"][i] >= 0).to(torch.uint8)
        return self._flip(i, new != self.w[i])

    def _g(self, g: torch.Tensor, batch: int) -> torch.Tensor:
        """The seed's mean gradient ``G / (B * 2**grad_bits)`` as float32 ``[1, M, N]``."""
        return (g / _gscale(self, batch)).to(torch.float32).unsqueeze(0)


@register_rule
class SignSGDV3(_Latent):
    name = "v3-signsgd"
    source = "seed 000 v3"
    summary = "plain SignSGD voting: shadow -= lr * sign(g), unclipped; the bit is the shadow's sign"
    reason = "float shadow weights"
    state_bits = 32

    @dataclass(frozen=True)
    class Options(NotebookOptions):
        lr: float = 1e-3
        init: float = 0.01

        def check(self) -> None:
            super().check()
            if not (self.lr > 0 and self.init > 0):
                raise ConfigError("v3-signsgd needs lr > 0 and init > 0")

    def seed_net_config(self):
        return SeedNetConfig(norm="batchnorm", norm_output=False, act="relu", param_rule="sign",
                             param_lr=self.opts.lr)

    def _update(self, grads, zs):
        flips = []
        for i, g in enumerate(grads):
            self.buf["shadow"][i].add_(torch.sign(self._g(g, self._batch)), alpha=-self.opts.lr)
            flips.append(self._set_bits(i))
        return flips


@register_rule
class SignumV4(_Latent):
    name = "v4-signum"
    source = "seed 000 v4"
    summary = "momentum voting (Signum): shadow -= lr * sign(momentum), clamped to +-clip"
    reason = "float shadow weights and float momentum"
    state_bits = 64

    @dataclass(frozen=True)
    class Options(NotebookOptions):
        lr: float = 2e-3
        momentum: float = 0.9
        clip: float = 1.2
        init: float = 0.01

        def check(self) -> None:
            super().check()
            if not (self.lr > 0 and 0 <= self.momentum < 1 and self.clip > 0 and self.init > 0):
                raise ConfigError("v4-signum needs lr > 0, 0 <= momentum < 1, clip > 0, init > 0")

    def seed_net_config(self):
        o = self.opts
        return SeedNetConfig(norm="batchnorm", norm_output=False, act="relu", param_rule="signum",
                             param_lr=o.lr, momentum=o.momentum, clip=o.clip)

    def _init_rule(self) -> None:
        super()._init_rule()
        self.buf["mom"] = [torch.zeros_like(s) for s in self.buf["shadow"]]

    def _update(self, grads, zs):
        o = self.opts
        flips = []
        for i, g in enumerate(grads):
            m = self.buf["mom"][i]
            m.mul_(o.momentum).add_(self._g(g, self._batch).expand_as(m), alpha=1 - o.momentum)
            s = self.buf["shadow"][i]
            s.add_(torch.sign(m), alpha=-o.lr).clamp_(-o.clip, o.clip)
            flips.append(self._set_bits(i))
        return flips


# ----------------------------------------------------------------------------------------------
@register_rule
class SwarmV6(ZooRule):
    name = "v6-swarm"
    source = "seed 000 v6"
    summary = "swarm recruitment: a plane bit that disagrees with -sign(G) flips with probability min(|g| * rate, cap)"
    integer_update = True
    reason = "LFSR 16-bit comparator against an integer probability" + _SOFTMAX_REASON
    state_bits = 0

    @dataclass(frozen=True)
    class Options(NotebookOptions):
        rate: float = 50.0
        cap: float = 0.5

        def check(self) -> None:
            super().check()
            if not (self.rate > 0 and 0 < self.cap <= 1):
                raise ConfigError("v6-swarm needs rate > 0 and 0 < cap <= 1")

    def seed_net_config(self):
        # BitSwarmLinear: majority forward, straight-through to the raw plane sum; BatchNorm on
        # the hidden layer, its affine parameters by SGD (bn_lr 0.01)
        return SeedNetConfig(forward="majority", proxy="sum", norm="batchnorm", norm_output=False, act="relu",
                             param_rule="sgd", param_lr=0.01)

    def _probabilities(self, g: torch.Tensor, rate: float, cap: float) -> torch.Tensor:
        """16-bit flip probabilities ``min(|g| * rate, cap)`` (int64 ``[M, N]``)."""
        return torch.clamp(_fixed(self, g.abs(), _p16(rate)), max=_p16(cap))

    def _update(self, grads, zs):
        lfsr = self._lfsr()
        flips = []
        for i, g in enumerate(grads):
            p = self._probabilities(g, self.opts.rate, self.opts.cap).unsqueeze(0)
            d = lfsr_uniform(lfsr, tuple(self.w[i].shape), self.device)
            flips.append(self._flip(i, (self._wrong(i, g) > 0) & (d < p)))
        self.meta["lfsr"] = lfsr.state
        return flips


@register_rule
class BitLogicV8(SwarmV6):
    name = "v8-bitlogic"
    source = "seed 000 v7/v8"
    summary = "bit-logic: LFSR comparator flips (|g| * sensitivity, cap 0.2) + random mutation + homeostatic activity threshold"
    reason = "LFSR comparators, integer running activity (Q16) and integer threshold steps" + _SOFTMAX_REASON
    state_bits = 0

    @dataclass(frozen=True)
    class Options(NotebookOptions):
        sensitivity: float = 500.0
        cap: float = 0.2
        mutation: float = 0.005

        def check(self) -> None:
            super().check()
            if not (self.sensitivity > 0 and 0 < self.cap <= 1 and 0 <= self.mutation < 1):
                raise ConfigError("v8-bitlogic needs sensitivity > 0, 0 < cap <= 1, 0 <= mutation < 1")

    def seed_net_config(self):
        # activity homeostasis on both layers (EMA 0.8/0.2 from 0.5, step clamp(err * 0.1, +-0.5)),
        # thresholds also by SGD 0.01
        return SeedNetConfig(norm="activity", activity_keep=0.8, activity_init=0.5, activity_clamp=0.5,
                             norm_lr=0.1, act="relu", param_rule="sgd", param_lr=0.01)

    def _init_rule(self) -> None:
        self.buf["activity"] = [torch.full((lay.n_out,), 1 << 15, dtype=torch.int32, device=self.device)
                                for lay in self.model_config.layers[:-1]]

    def _update(self, grads, zs):
        lfsr = self._lfsr()
        flips = []
        mut = _p16(self.opts.mutation)
        for i, g in enumerate(grads):
            p = self._probabilities(g, self.opts.sensitivity, self.opts.cap).unsqueeze(0)
            shape = tuple(self.w[i].shape)
            directed = (self._wrong(i, g) > 0) & (lfsr_uniform(lfsr, shape, self.device) < p)
            mutate = lfsr_uniform(lfsr, shape, self.device) < mut
            flips.append(self._flip(i, directed | mutate))
        self.meta["lfsr"] = lfsr.state
        return flips

    def _homeostasis(self, i: int, z: torch.Tensor) -> None:
        """Running firing fraction (Q16, alpha 1/5) pushed to one half by integer threshold steps."""
        zt = z - self.theta[i].to(torch.int64)
        b = z.shape[0]
        cur = (zt >= 0).to(torch.int64).sum(0) * 65536 // b
        ra = self.buf["activity"][i].to(torch.int64)
        ra = ra + torch.div(cur - ra, 5, rounding_mode="floor")
        self.buf["activity"][i] = ra.to(torch.int32)
        s1 = z.sum(0)
        var = torch.div(b * (z * z).sum(0) - s1 * s1, b * b, rounding_mode="floor")
        sd = max(1, math.isqrt(max(0, int(var.sum()) // z.shape[1])))
        step = torch.clamp(torch.div((ra - 32768) * sd, 10 * 32768, rounding_mode="floor"), -(sd // 2), sd // 2)
        lay = self.model_config.layers[i]
        self.theta[i] = torch.clamp(self.theta[i].to(torch.int64) + step, -lay.theta_bound, lay.theta_bound).to(torch.int32)


# ----------------------------------------------------------------------------------------------
@register_rule
class RankV9A(ZooRule):
    name = "v9a-rank"
    source = "seed 000 v9A"
    summary = "rank-based flips: per layer the top flip_rate of plane bits by wrongness G*v (> 0) flip"
    integer_update = True
    reason = "integer ranking (k-winner-take-all over G*v)" + _SOFTMAX_REASON
    state_bits = 0

    @dataclass(frozen=True)
    class Options(NotebookOptions):
        flip_rate: float = 0.02

        def check(self) -> None:
            super().check()
            if not 0 <= self.flip_rate <= 1:
                raise ConfigError(f"flip_rate must be in 0..1, not {self.flip_rate}")

    def seed_net_config(self):
        # SimpleCentering (a learned bias, SignSGD 0.01) on both layers, no activation
        return SeedNetConfig(norm="centering", act="none", param_rule="sign", param_lr=0.01)

    def _rate(self) -> float:
        return self.opts.flip_rate

    def _top(self, score: torch.Tensor, rate: float) -> torch.Tensor:
        """The ``int(numel * rate)`` highest scores (ties: lowest index first). On the golden
        network only positive (wrong) scores qualify; the seed's ``topk`` takes ``k`` always."""
        flat = score.reshape(-1)
        k = int(flat.numel() * rate)
        if not self.seed_mode:
            k = min(k, int((flat > 0).sum()))
        mask = torch.zeros_like(flat, dtype=torch.bool)
        if k <= 0:
            return mask.reshape(score.shape)
        v = torch.kthvalue(flat, flat.numel() - k + 1).values
        above = flat > v
        tie = (flat == v) & (torch.cumsum((flat == v).to(torch.int64), 0) <= k - int(above.sum()))
        return (above | tie).reshape(score.shape)

    def _score(self, i: int, g: torch.Tensor) -> torch.Tensor:
        """Wrongness ``g * v`` per plane bit ``[S, M, N]`` (int64 on the golden network)."""
        if self.seed_mode:
            return g.to(torch.float32).unsqueeze(0) * self._bit_values(i).to(torch.float32)
        return g.round().to(torch.int64).unsqueeze(0) * self._bit_values(i)

    def _update(self, grads, zs):
        flips = []
        for i, g in enumerate(grads):
            flips.append(self._flip(i, self._top(self._score(i, g), self._rate())))
        return flips


@register_rule
class AnalogSwarmV9B(SwarmV6):
    name = "v9b-analog"
    source = "seed 000 9.B"
    summary = "analog swarm (forward sum/S): a wrong plane bit flips with probability |g| / mean|g| * base_rate (layer-normalized)"
    reason = "LFSR 16-bit comparator against |G| * base / mean|G| (integer division)" + _SOFTMAX_REASON

    @dataclass(frozen=True)
    class Options(NotebookOptions):
        base_rate: float = 0.05

        def check(self) -> None:
            super().check()
            if not 0 < self.base_rate <= 1:
                raise ConfigError(f"base_rate must be in (0, 1], not {self.base_rate}")

    def seed_net_config(self):
        # analog forward; thresholds: running mean (0.9/0.1), theta += 0.005 * sign(mean), plus
        # SignSGD 0.01; ReLU
        return SeedNetConfig(forward="analog", norm="mean-sign", act="relu", param_rule="sign", param_lr=0.01)

    def _probabilities(self, g: torch.Tensor, rate: float, cap: float) -> torch.Tensor:
        if self.seed_mode:
            scale = g.abs().mean() + 1e-8
            return torch.clamp(torch.round(g.abs() / scale * _p16(self.opts.base_rate)), max=65536).to(torch.int64)
        a = g.abs().round().to(torch.int64)
        mean = max(1, int(a.sum()) // a.numel())
        return torch.clamp(a * _p16(self.opts.base_rate) // mean, max=65536)

    def _update(self, grads, zs):
        lfsr = self._lfsr()
        flips = []
        for i, g in enumerate(grads):
            p = self._probabilities(g, 0.0, 1.0).unsqueeze(0)
            d = lfsr_uniform(lfsr, tuple(self.w[i].shape), self.device)
            flips.append(self._flip(i, (self._wrong(i, g) > 0) & (d < p)))
        self.meta["lfsr"] = lfsr.state
        return flips


@register_rule
class MomentumRankV10(RankV9A):
    name = "v10-momentum-rank"
    source = "seed 000 v10"
    summary = "momentum-rank: leaky wrongness buffer (decay 0.9), top-k flips with exponential annealing 5% -> 0.1%"
    reason = "integer buffer with 8-bit fixed-point leak, integer ranking; the schedule is a per-epoch constant" + _SOFTMAX_REASON
    state_bits = 32

    @dataclass(frozen=True)
    class Options(NotebookOptions):
        start_rate: float = 0.05
        end_rate: float = 0.001
        decay: float = 0.9
        anneal_epochs: int = 10

        def check(self) -> None:
            super().check()
            if not (0 < self.end_rate <= self.start_rate <= 1 and 0 <= self.decay < 1 and self.anneal_epochs >= 1):
                raise ConfigError("v10 needs 0 < end_rate <= start_rate <= 1, 0 <= decay < 1, anneal_epochs >= 1")

    def seed_net_config(self):
        # BatchNorm on both layers (BN1d(128), BN1d(10)), ReLU, BN affine by SignSGD 0.005
        return SeedNetConfig(norm="batchnorm", norm_output=True, act="relu", param_rule="sign", param_lr=0.005)

    def _init_rule(self) -> None:
        dt = torch.float32 if self.seed_mode else torch.int32
        self.buf["wrong"] = [torch.zeros(w.shape, dtype=dt, device=self.device) for w in self.w]
        self.rate = self.opts.start_rate

    def _progress(self, epoch: int) -> float:
        return min(1.0, epoch / max(1, self.opts.anneal_epochs - 1))

    def start_epoch(self, epoch: int) -> None:
        o = self.opts
        self.rate = o.start_rate * (o.end_rate / o.start_rate) ** self._progress(epoch)

    def _rate(self) -> float:
        return self.rate

    def _update(self, grads, zs):
        d = self.opts.decay
        keep = int(round(d * 256))
        flips = []
        for i, g in enumerate(grads):
            score = self._score(i, g)
            if self.seed_mode:  # the seed's float EMA: buf = d * buf + (1 - d) * g * v
                b = self.buf["wrong"][i].mul_(d).add_(score, alpha=1 - d)
            else:
                b = _sat(q8_leak(self.buf["wrong"][i], keep) + score, 32)
            mask = self._top(b, self.rate)
            self.buf["wrong"][i] = torch.where(mask, 0, b).to(self.buf["wrong"][i].dtype)
            flips.append(self._flip(i, mask))
        return flips


@register_rule
class HomeostasisV11(MomentumRankV10):
    name = "v11-homeostasis"
    source = "seed 000 v11"
    summary = "v10's momentum-rank flips with BatchNorm replaced by a homeostatic threshold counter (target 50 % firing)"

    @dataclass(frozen=True)
    class Options(MomentumRankV10.Options):
        anneal_epochs: int = 5

    def seed_net_config(self):
        return SeedNetConfig(norm="activity", activity_keep=0.9, activity_init=0.5, norm_lr=0.1, act="relu",
                             param_rule="sign", param_lr=0.01)


@register_rule
class MeanMatchV12(MomentumRankV10):
    name = "v12-mean-match"
    source = "seed 000 v12"
    summary = "v10's momentum-rank flips on a mean-matching threshold (theta += 0.2 * batch mean) and LeakyReLU(0.1)"

    @dataclass(frozen=True)
    class Options(MomentumRankV10.Options):
        anneal_epochs: int = 5

    def seed_net_config(self):
        return SeedNetConfig(norm="mean-match", norm_lr=0.2, act="leaky", param_rule="sign", param_lr=0.01)


@register_rule
class ScaleShiftV13(MomentumRankV10):
    name = "v13-scale-shift"
    source = "seed 000 v13"
    summary = "momentum-rank (momentum 0.8, 5% -> 0.5% floor) on scale/shift homeostasis, threshold rate annealed with the flip rate (coupled)"

    @dataclass(frozen=True)
    class Options(MomentumRankV10.Options):
        end_rate: float = 0.005
        decay: float = 0.8
        anneal_epochs: int = 5
        start_norm_lr: float = 0.1
        end_norm_lr: float = 0.01

    gain = "one"

    def seed_net_config(self):
        return SeedNetConfig(norm="scale-shift", gain=self.gain, norm_lr=self.opts.start_norm_lr, act="leaky",
                             param_rule="sgd-clamp", param_lr=0.01)

    def start_epoch(self, epoch: int) -> None:
        super().start_epoch(epoch)
        if self.seednet is not None:  # coupled annealing of the homeostasis rate
            import dataclasses

            o = self.opts
            lr = o.start_norm_lr * (o.end_norm_lr / o.start_norm_lr) ** self._progress(epoch)
            self.seednet.config = dataclasses.replace(self.seednet.config, norm_lr=lr)


@register_rule
class KaimingV14(ScaleShiftV13):
    name = "v14-kaiming"
    source = "seed 000 v14"
    summary = "v13 with the gain initialized to 1/sqrt(fan_in) (Kaiming) over 20 epochs"
    gain = "kaiming"

    @dataclass(frozen=True)
    class Options(ScaleShiftV13.Options):
        anneal_epochs: int = 20


# ----------------------------------------------------------------------------------------------
@register_rule
class IntegrateFireV15(ZooRule):
    name = "v15-if"
    source = "seed 000 v15"
    summary = "integrate-and-fire on gradient pressure boost*g*v (decay 0.9), flip above threshold 5, reset 0"
    integer_update = True
    reason = "Q16 fixed-point accumulator (32-bit, saturating) with 8-bit leak" + _SOFTMAX_REASON
    state_bits = 32
    FRAC = 16

    @dataclass(frozen=True)
    class Options(NotebookOptions):
        boost: float = 100.0
        threshold: float = 5.0
        decay: float = 0.9

        def check(self) -> None:
            super().check()
            if not (self.boost > 0 and self.threshold > 0 and 0 <= self.decay < 1):
                raise ConfigError("v15 needs boost > 0, threshold > 0, 0 <= decay < 1")

    def seed_net_config(self):
        return SCALE_SHIFT

    def _init_rule(self) -> None:
        self.buf["acc"] = [torch.zeros(w.shape, dtype=torch.int32, device=self.device) for w in self.w]
        self.meta["thr_q"] = int(round(self.opts.threshold * (1 << self.FRAC)))

    def _fire(self, flips_so_far: list[int]) -> None:
        """Per-step threshold adaptation hook (v16)."""

    def _update(self, grads, zs):
        keep = int(round(self.opts.decay * 256))
        k = int(round(self.opts.boost * (1 << self.FRAC)))
        thr = self.meta["thr_q"]
        flips = []
        for i, g in enumerate(grads):
            p = _fixed(self, g, k)
            a = _sat(q8_leak(self.buf["acc"][i], keep) + p.unsqueeze(0) * self._bit_values(i), 32)
            fire = a > thr
            self.buf["acc"][i] = torch.where(fire, 0, a).to(torch.int32)
            flips.append(self._flip(i, fire))
        self._fire(flips)
        return flips


@register_rule
class AdaptiveIFV16(IntegrateFireV15):
    name = "v16-adaptive-if"
    source = "seed 000 v16"
    summary = "v15 with boost 1000 and a self-tuning threshold (x0.95 below target/2, x1.05 above 2*target)"
    reason = "Q16 accumulator; threshold scaled by 243/256 or 269/256 in integers" + _SOFTMAX_REASON

    @dataclass(frozen=True)
    class Options(NotebookOptions):
        boost: float = 1000.0
        threshold: float = 10.0
        decay: float = 0.9
        target_rate: float = 0.001

        def check(self) -> None:
            super().check()
            if not (self.boost > 0 and self.threshold > 0 and 0 <= self.decay < 1 and 0 < self.target_rate < 1):
                raise ConfigError("v16 needs boost > 0, threshold > 0, 0 <= decay < 1, 0 < target_rate < 1")

    def _fire(self, flips: list[int]) -> None:
        rate = sum(flips) / sum(self.weight_bits())
        t = self.meta["thr_q"]
        if rate < self.opts.target_rate / 2:
            t = max(_p16(0.001), t * 243 >> 8)
        elif rate > self.opts.target_rate * 2:
            t = min((1 << 31) - 1, max(t + 1, t * 269 >> 8))
        self.meta["thr_q"] = int(t)


# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoundedOptions(NotebookOptions):
    """Options shared by v17-v20 besides their constants.

    Parameters
    ----------
    seed_sgd : bool
        ``net=seed`` only: SGD on the float thresholds and gains, as the seed (``False`` freezes
        them; homeostasis still centres the thresholds).
    gate_pct : int
        Significance gate (the golden rule's ``vote_pct``): no vote where
        ``|G| <= gate_pct * mean|G| / 100`` over the layer; 0 (the seed) disables it.
    fire_pct : int
        Stochastic firing (the golden ``noise=stochastic`` defense against synchronized swarm
        planes): a bit above threshold fires only where its 16-bit LFSR draw is below
        ``fire_pct`` percent; 100 (the seed) fires always.
    """

    seed_sgd: bool = True
    gate_pct: int = 0
    fire_pct: int = 100

    def check(self) -> None:
        super().check()
        if not 0 <= self.gate_pct <= 10000:
            raise ConfigError(f"gate_pct must be in 0..10000, not {self.gate_pct}")
        if not 1 <= self.fire_pct <= 100:
            raise ConfigError(f"fire_pct must be in 1..100, not {self.fire_pct}")


class _BoundedVote(ZooRule):
    """Bounded sign votes ``sign(G) * v`` into a leaky Q8 accumulator (v17-v20).

    ``acc = acc * keep / 256 + 256 * vote`` (``keep = round(256 * decay)``); a bit fires where
    ``acc > threshold`` and its accumulator takes ``reset``. Votes are never 0 unless ``G = 0``
    (v18 adds a friction gate). ``net=seed`` trains the seed's scale/shift network
    (:data:`SCALE_SHIFT`; analog forward for v20), ``net=golden`` the zoo's.
    """

    integer_update = True
    reason = "Q8 fixed-point accumulator (16-bit) with 8-bit leak; net=seed adds float gain/threshold SGD" + _SOFTMAX_REASON
    state_bits = 16
    seed_forward = "majority"

    def __init__(self, spec, options: Any = None, device="cpu"):
        super().__init__(spec, options, device)
        self.record: list[dict] | None = None

    def seed_net_config(self):
        c = SCALE_SHIFT
        if self.seed_forward != "majority":
            c = dataclasses.replace(c, forward=self.seed_forward)
        if not self.opts.seed_sgd:
            c = dataclasses.replace(c, param_lr=0.0)
        return c

    def _init_rule(self) -> None:
        self.buf["acc"] = [torch.zeros(w.shape, dtype=torch.int32, device=self.device) for w in self.w]
        self.meta["thr_q"] = int(round(self.opts.threshold * 256))

    def _stats(self) -> dict | None:
        if self.record is None:
            return None
        self._pending = {}
        return self._pending

    def _votes(self, i: int, g: torch.Tensor) -> torch.Tensor:
        v = self._wrong(i, g)
        if self.opts.gate_pct:
            a = g.abs()
            v = v * (a * 100 > a.mean() * self.opts.gate_pct).unsqueeze(0)
        return v

    def _reset(self, thr: int) -> int:
        return -(thr // 2)

    def _adapt(self, flips: list[int]) -> None:
        """Threshold control after each step (v19)."""

    def _update(self, grads, zs):
        keep = int(round(self.opts.decay * 256))
        thr = self.meta["thr_q"]
        reset = self._reset(thr)
        flips, rec = [], {"sat": [], "mean_acc": [], "sync": []}
        lfsr = self._lfsr() if self.opts.fire_pct < 100 else None
        for i, g in enumerate(grads):
            a = _sat(q8_leak(self.buf["acc"][i], keep) + 256 * self._votes(i, g), 16)
            fire = a > thr
            if lfsr is not None:
                fire &= lfsr_uniform(lfsr, tuple(a.shape), self.device) < self.opts.fire_pct * 65536 // 100
            self.buf["acc"][i] = torch.where(fire, reset, a).to(torch.int32)
            flips.append(self._flip(i, fire))
            if self.record is not None:
                s = self.w[i].shape[0]
                rec["sat"].append(float((a > thr - 256).float().mean()))
                rec["mean_acc"].append(float(a.float().mean() / 256))
                rec["sync"].append(float(((self._bit_values(i).sum(0)).abs() == s).float().mean()))
        if lfsr is not None:
            self.meta["lfsr"] = lfsr.state
        self._adapt(flips)
        if self.record is not None:
            rec["flips"] = flips
            rec["thr"] = thr / 256
            if self.seednet is not None:
                rec.update(getattr(self, "_pending", {}))
                rec["gain_min"] = [float(t.min()) for t in self.buf["sgain"]]
                rec["gain_neg"] = [float((t < 0).float().mean()) for t in self.buf["sgain"]]
                rec["theta_absmax"] = [float(t.abs().max()) for t in self.buf["sthr"]]
            self.record.append(rec)
        return flips


@register_rule
class BoundedVoteV17(_BoundedVote):
    name = "v17-bounded"
    source = "seed 000 v17"
    summary = "bounded sign votes, decay 0.95, flip above 8, refractory reset to -4"

    @dataclass(frozen=True)
    class Options(BoundedOptions):
        threshold: float = 8.0
        decay: float = 0.95

        def check(self) -> None:
            super().check()
            if not (0 < self.threshold < 100 and 0 <= self.decay < 1):
                raise ConfigError("needs 0 < threshold < 100 and 0 <= decay < 1")


@register_rule
class FrictionV18(_BoundedVote):
    name = "v18-friction"
    source = "seed 000 v18"
    summary = "v17 with a friction gate (no vote where |g| <= friction), decay 0.9, threshold annealed 8 -> 20"

    @dataclass(frozen=True)
    class Options(BoundedOptions):
        threshold: float = 8.0
        end_threshold: float = 20.0
        anneal_epochs: int = 10
        decay: float = 0.9
        friction: float = 1e-4

        def check(self) -> None:
            super().check()
            if not (0 < self.threshold <= self.end_threshold < 100 and 0 <= self.decay < 1
                    and self.friction >= 0 and self.anneal_epochs >= 1):
                raise ConfigError("v18 needs 0 < threshold <= end_threshold < 100, 0 <= decay < 1, friction >= 0")

    def start_epoch(self, epoch: int) -> None:
        o = self.opts
        t = min(1.0, epoch / max(1, o.anneal_epochs - 1))
        self.meta["thr_q"] = int(round((o.threshold + (o.end_threshold - o.threshold) * t) * 256))

    def _votes(self, i, g):
        # on the seed network g is the seed's per-plane p.grad, the quantity its gate compared
        gate = g.abs() > self.opts.friction * _gscale(self, self._batch)
        return super()._votes(i, g) * gate.unsqueeze(0)


@register_rule
class CruiseV19(_BoundedVote):
    name = "v19-cruise"
    source = "seed 000 v19"
    summary = "bounded votes, decay 0.5, hard reset 0, cruise-control threshold (+0.5 above 2*target, -0.1 below target/5, 2..50)"

    @dataclass(frozen=True)
    class Options(BoundedOptions):
        threshold: float = 5.0
        decay: float = 0.5
        target_rate: float = 0.005

        def check(self) -> None:
            super().check()
            if not (2 <= self.threshold <= 50 and 0 <= self.decay < 1 and 0 < self.target_rate < 1):
                raise ConfigError("v19 needs 2 <= threshold <= 50, 0 <= decay < 1, 0 < target_rate < 1")

    def _reset(self, thr: int) -> int:
        return 0

    def _adapt(self, flips):
        rate = sum(flips) / sum(self.weight_bits())
        t = self.meta["thr_q"]
        if rate > 2 * self.opts.target_rate:
            t += 128
        elif rate < self.opts.target_rate / 5:
            t -= 26
        self.meta["thr_q"] = max(512, min(t, 50 * 256))


@register_rule
class LeakyIFV20(_BoundedVote):
    name = "v20-lif"
    source = "seed 000 v20"
    summary = "leaky integrate-and-fire: bounded votes, decay 0.9, flip above 6, refractory reset to -3"
    seed_forward = "analog"

    @dataclass(frozen=True)
    class Options(BoundedOptions):
        threshold: float = 6.0
        decay: float = 0.9

        def check(self) -> None:
            super().check()
            if not (0 < self.threshold < 100 and 0 <= self.decay < 1):
                raise ConfigError("needs 0 < threshold < 100 and 0 <= decay < 1")


# ----------------------------------------------------------------------------------------------
@register_rule
class OneBitVotingV21(_Latent):
    name = "v21-onebit-voting"
    source = "seed 000 v21 (voting)"
    summary = "OneBitOptimizer voting: accumulator A += lr*(-sign g) in [-1, 1], shadow pushed toward sign(A); per-row alpha = mean|shadow|"
    reason = "float accumulator and float shadow weights"
    state_bits = 64
    own_forward = True
    trains_conv = True  # BitConv2d: per-filter alpha, on the seed network

    @dataclass(frozen=True)
    class Options(NotebookOptions):
        lr: float = 0.05
        push_rate: float = 0.25
        clip: float = 1.0
        init: float = 0.01
        scale: bool = True

        def check(self) -> None:
            super().check()
            if not (self.lr > 0 and 0 < self.push_rate <= 1 and self.clip > 0 and self.init > 0):
                raise ConfigError("v21 needs lr > 0, 0 < push_rate <= 1, clip > 0, init > 0")

    def __init__(self, spec, options=None, device="cpu"):
        super().__init__(spec, options, device)
        if not self.opts.scale and not self.seed_mode:  # bits alone: the golden model holds them
            self.own_forward = False
            self.exportable = True

    def seed_net_config(self):
        o = self.opts
        return SeedNetConfig(norm="batchnorm", norm_output=False, act="relu", param_rule="voting",
                             param_lr=o.lr, push=o.push_rate, clip=o.clip, alpha=o.scale)

    def _alpha(self, i: int) -> torch.Tensor:
        """Per-row (per-filter) scale ``alpha_j = mean_k |shadow_jk|`` ``[M]`` (float32)."""
        return self.buf["shadow"][i].abs().mean(dim=(0, 2))

    def _weff(self, i: int) -> torch.Tensor:
        w = super()._weff(i)
        if self.opts.scale and self.buf.get("shadow"):
            w = w * self._alpha(i).to(torch.float64).unsqueeze(1)
        return w

    def _init_rule(self) -> None:
        super()._init_rule()
        self.buf["A"] = [torch.zeros_like(s) for s in self.buf["shadow"]]

    def _update(self, grads, zs):
        o = self.opts
        flips = []
        for i, g in enumerate(grads):
            A, s = self.buf["A"][i], self.buf["shadow"][i]
            A.add_(-torch.sign(self._g(g, self._batch)).expand_as(A), alpha=o.lr).clamp_(-1, 1)
            s.add_(o.push_rate * (torch.sign(A) - s)).clamp_(-o.clip, o.clip)
            flips.append(self._set_bits(i))
        return flips


@register_rule
class OneBitSignumV21(OneBitVotingV21):
    name = "v21-onebit-signum"
    source = "seed 000 v21 (signum)"
    summary = "OneBitOptimizer signum: momentum 0.9, shadow -= lr*sign(momentum), clip 1.2; per-row alpha = mean|shadow|"
    reason = "float momentum and float shadow weights"

    @dataclass(frozen=True)
    class Options(NotebookOptions):
        lr: float = 2e-3
        momentum: float = 0.9
        clip: float = 1.2
        init: float = 0.01
        scale: bool = True

        def check(self) -> None:
            super().check()
            if not (self.lr > 0 and 0 <= self.momentum < 1 and self.clip > 0 and self.init > 0):
                raise ConfigError("v21 signum needs lr > 0, 0 <= momentum < 1, clip > 0, init > 0")

    def seed_net_config(self):
        o = self.opts
        return SeedNetConfig(norm="batchnorm", norm_output=False, act="relu", param_rule="signum",
                             param_lr=o.lr, momentum=o.momentum, clip=o.clip, alpha=o.scale)

    def _init_rule(self) -> None:
        _Latent._init_rule(self)
        self.buf["mom"] = [torch.zeros_like(s) for s in self.buf["shadow"]]

    def _update(self, grads, zs):
        o = self.opts
        flips = []
        for i, g in enumerate(grads):
            m, s = self.buf["mom"][i], self.buf["shadow"][i]
            m.mul_(o.momentum).add_(self._g(g, self._batch).expand_as(m), alpha=1 - o.momentum)
            s.add_(torch.sign(m), alpha=-o.lr).clamp_(-o.clip, o.clip)
            flips.append(self._set_bits(i))
        return flips
