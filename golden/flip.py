"""Integrate-and-fire flip rule over whole layers (SPEC.md §8).

Every weight bit owns a signed saturating accumulator of ``acc_width`` bits. One step, for all
bits of a layer at once, in row-major order of the weight tensor::

    a1    = a - (a >> leak_shift)                 # leak (arithmetic shift; skipped if 0)
    n     = d - 2**(b-1)   if noise == "additive"  else 0   # d: one LFSR draw per bit
    a2    = clamp(a1 + vote + n, A_MIN, A_MAX)    # one saturation of the exact sum
    fire  = a2 >= threshold  [and d < fire_prob if noise == "stochastic"]
    w'    = w XOR fire
    a'    = refractory if fire else a2

Votes are -1, 0 or +1: +1 says "this bit is wrong", -1 "this bit is right".

Ternary weights (SPEC.md §8.1, :func:`trit_flip_step`) use the same constants with a *signed*
vote (the direction the trit should move), a leak toward zero, zero-mean additive noise and a
fire at ``+threshold`` or ``-threshold`` that steps the trit one level (saturating at ±1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import ConfigError
from .lfsr import LFSR, LFSRConfig, _from_dict, _is_int

__all__ = ["NOISE_MODES", "FlipRuleConfig", "flip_step", "trit_flip_step"]

NOISE_MODES = ("none", "additive", "stochastic")


@dataclass(frozen=True)
class FlipRuleConfig:
    """Integrate-and-fire parameters; every constant of the rule is here.

    Parameters
    ----------
    acc_width : int
        Signed accumulator width A, 2..32; range ``[-2**(A-1), 2**(A-1) - 1]``, saturating.
    leak_shift : int
        0 for no leak, else 1..A-1: ``a -= a >> leak_shift`` each step.
    threshold : int
        Fire when the accumulator reaches it; 1..2**(A-1) - 1.
    refractory : int
        Accumulator value after a flip; ``-2**(A-1)..threshold - 1``.
    noise : str
        ``"none"``, ``"additive"`` (add ``d - 2**(b-1)``, ``b = lfsr.draw_bits``) or
        ``"stochastic"`` (fire only if ``d < fire_prob``).
    fire_prob : int
        Stochastic firing probability in units of ``2**-b``, 1..2**b (ignored otherwise).
    lfsr : LFSRConfig
        The noise source; one draw per weight bit per step when noise is not ``"none"``.
    """

    acc_width: int = 8
    leak_shift: int = 0
    threshold: int = 4
    refractory: int = 0
    noise: str = "none"
    fire_prob: int = 1
    lfsr: LFSRConfig = field(default_factory=lambda: LFSRConfig(width=16, seed=0xACE1, draw_bits=2))

    def __post_init__(self):
        if isinstance(self.lfsr, dict):
            object.__setattr__(self, "lfsr", LFSRConfig.from_dict(self.lfsr))
        if not isinstance(self.lfsr, LFSRConfig):
            raise ConfigError(f"flip.lfsr must be an LFSRConfig, not {type(self.lfsr).__name__}")
        a = self.acc_width
        if not _is_int(a) or not 2 <= a <= 32:
            raise ConfigError(f"flip.acc_width must be an integer in 2..32, not {a!r}")
        if not _is_int(self.leak_shift) or not (self.leak_shift == 0 or 1 <= self.leak_shift < a):
            raise ConfigError(f"flip.leak_shift must be 0 or in 1..{a - 1}, not {self.leak_shift!r}")
        if not _is_int(self.threshold) or not 1 <= self.threshold <= self.acc_max:
            raise ConfigError(f"flip.threshold must be in 1..{self.acc_max}, not {self.threshold!r}")
        if not _is_int(self.refractory) or not self.acc_min <= self.refractory < self.threshold:
            raise ConfigError(
                f"flip.refractory must be in {self.acc_min}..{self.threshold - 1}, "
                f"not {self.refractory!r}"
            )
        if self.noise not in NOISE_MODES:
            raise ConfigError(f"flip.noise must be one of {NOISE_MODES}, not {self.noise!r}")
        top = 1 << self.lfsr.draw_bits
        if not _is_int(self.fire_prob) or not 1 <= self.fire_prob <= top:
            raise ConfigError(f"flip.fire_prob must be in 1..{top}, not {self.fire_prob!r}")

    @property
    def acc_min(self) -> int:
        return -(1 << (self.acc_width - 1))

    @property
    def acc_max(self) -> int:
        return (1 << (self.acc_width - 1)) - 1

    @property
    def uses_lfsr(self) -> bool:
        return self.noise != "none"

    def to_dict(self) -> dict:
        return {
            "acc_width": self.acc_width,
            "leak_shift": self.leak_shift,
            "threshold": self.threshold,
            "refractory": self.refractory,
            "noise": self.noise,
            "fire_prob": self.fire_prob,
            "lfsr": self.lfsr.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FlipRuleConfig":
        return _from_dict(cls, d, "flip")

    @classmethod
    def for_training(cls, swarm: int = 1, votes: str = "host") -> "FlipRuleConfig":
        """The integrate-and-fire constants ``bitswarm train`` uses unless given (the one home
        of those defaults; the field defaults above are the small constants of the spec's
        examples and the hardware tests).

        ``votes="host"`` (golden rule, one vote per minibatch): ``acc_width=8 leak_shift=6
        threshold=48 refractory=0``; positive accumulators below ``2**leak_shift`` do not leak,
        so a bit flips after 48 net "wrong" votes. ``votes="integer"`` (on-chip rule, one vote
        per sample): ``leak_shift=0 threshold=30``. Both: LFSR width 32, seed ``0xACE1``, 4 draw
        bits, ``fire_prob=8``; ``noise="stochastic"`` (fire with probability 8/16) when
        ``swarm > 1``, so that planes holding the same bit do not flip in lock-step, else
        ``"none"``.
        """
        if votes not in ("host", "integer"):
            raise ConfigError(f"votes must be 'host' or 'integer', not {votes!r}")
        if not _is_int(swarm) or swarm < 1:
            raise ConfigError(f"swarm must be a positive integer, not {swarm!r}")
        leak, thr = (6, 48) if votes == "host" else (0, 30)
        return cls(acc_width=8, leak_shift=leak, threshold=thr, refractory=0,
                   noise="stochastic" if swarm > 1 else "none", fire_prob=8,
                   lfsr=LFSRConfig(width=32, seed=0xACE1, draw_bits=4))


def _work_dtype(cfg: FlipRuleConfig) -> torch.dtype:
    """The narrowest integer dtype that holds every intermediate of one step exactly.

    Intermediates are bounded by ``2**(A-1) + 1 + 2**(b-1)`` in magnitude (accumulator, vote,
    additive noise); the result does not depend on the dtype chosen.
    """
    bound = (1 << (cfg.acc_width - 1)) + 1
    if cfg.noise == "additive":
        bound += 1 << (cfg.lfsr.draw_bits - 1)
    if bound < (1 << 15):
        return torch.int16
    if bound < (1 << 31):
        return torch.int32
    return torch.int64


def flip_step(
    cfg: FlipRuleConfig,
    w: torch.Tensor,
    acc: torch.Tensor,
    votes: torch.Tensor,
    lfsr: LFSR | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One integrate-and-fire step over a whole tensor of weight bits.

    Parameters
    ----------
    w : uint8 tensor of bits, any shape.
    acc : integer tensor of the same shape, every value within the accumulator range.
    votes : integer tensor of the same shape with values in {-1, 0, +1}.
    lfsr : the noise LFSR (required when ``cfg.noise != "none"``); it advances by one draw per
        element, in row-major order.

    Returns
    -------
    ``(w', acc', fired)``: uint8 bits, int32 accumulators, bool flip mask.
    """
    d = _check_step_args(cfg, w, acc, votes, lfsr)
    dt = _work_dtype(cfg)
    a = acc.to(dt)
    if cfg.leak_shift:
        a = a - (a >> cfg.leak_shift)
    a = a + votes.to(dt)
    if cfg.noise == "additive":
        a = a + (d - (1 << (cfg.lfsr.draw_bits - 1))).to(dt)
    a = torch.clamp(a, cfg.acc_min, cfg.acc_max)
    fire = a >= cfg.threshold
    if cfg.noise == "stochastic":
        fire &= d < cfg.fire_prob
    w_new = w ^ fire.to(w.dtype)
    a = a.masked_fill(fire, cfg.refractory)
    return w_new, a.to(torch.int32), fire


def _check_step_args(cfg: FlipRuleConfig, w, acc, votes, lfsr):
    """Shared argument checks of both rules; the LFSR draws (one per element) or ``None``."""
    if w.shape != acc.shape or w.shape != votes.shape:
        raise ConfigError(
            f"weights, accumulators and votes must share a shape, found "
            f"{tuple(w.shape)}, {tuple(acc.shape)}, {tuple(votes.shape)}"
        )
    if acc.numel():
        lo, hi = torch.aminmax(acc)
        if int(lo) < cfg.acc_min or int(hi) > cfg.acc_max:
            raise ConfigError(f"accumulators must lie in {cfg.acc_min}..{cfg.acc_max}")
    if votes.numel():
        lo, hi = torch.aminmax(votes)
        if int(lo) < -1 or int(hi) > 1:
            raise ConfigError("votes must be -1, 0 or +1")
    if not cfg.uses_lfsr:
        return None
    if lfsr is None:
        raise ConfigError("this flip rule draws noise: pass the LFSR built from cfg.lfsr")
    if (lfsr.config.width, lfsr.config.draw_bits) != (cfg.lfsr.width, cfg.lfsr.draw_bits):
        raise ConfigError(
            f"the LFSR (width {lfsr.config.width}, {lfsr.config.draw_bits} draw bits) does not "
            f"match the flip rule's (width {cfg.lfsr.width}, {cfg.lfsr.draw_bits} draw bits)"
        )
    return torch.from_numpy(lfsr.draws(w.numel())).reshape(w.shape).to(w.device)


def trit_flip_step(
    cfg: FlipRuleConfig,
    t: torch.Tensor,
    acc: torch.Tensor,
    votes: torch.Tensor,
    lfsr: LFSR | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One integrate-and-fire step over a whole tensor of ternary weights (SPEC.md §8.1)::

        a1    = a - sgn(a) * (|a| >> leak_shift)      # leak toward 0 (skipped if 0)
        n     = 2*d + 1 - 2**b   if noise == "additive"  else 0   # zero mean, odd values
        a2    = clamp(a1 + vote + n, A_MIN, A_MAX)
        dir   = +1 if a2 >= threshold, -1 if a2 <= -threshold, else 0
                [and 0 unless d < fire_prob if noise == "stochastic"]
        t'    = clamp(t + dir, -1, +1)                # a fire at a clamp leaves t as it is
        a'    = -dir * refractory   if dir != 0  else a2

    Parameters
    ----------
    cfg : FlipRuleConfig
        The same constants as binary layers; ternary layers also need
        ``refractory > -threshold`` (so that ``-refractory`` cannot fire at once).
    t : int8 tensor of trits -1/0/+1, any shape.
    acc : integer tensor of the same shape, every value within the accumulator range.
    votes : integer tensor of the same shape, values in {-1, 0, +1}: the direction the trit
        should move (+1 up, toward +1; -1 down), 0 for no significant signal.
    lfsr : the noise LFSR (required when ``cfg.noise != "none"``); one draw per trit, row-major.

    Returns
    -------
    ``(t', acc', moved)``: int8 trits, int32 accumulators, bool mask of the trits that changed
    (a fire at a clamp resets the accumulator but moves nothing).

    Raises
    ------
    ConfigError
        Shapes, trits, votes or accumulators out of range, a missing or mismatched LFSR, or
        ``refractory <= -threshold``.
    """
    if cfg.refractory <= -cfg.threshold:
        raise ConfigError(
            f"ternary layers need flip.refractory in {1 - cfg.threshold}..{cfg.threshold - 1} "
            f"(threshold {cfg.threshold}), not {cfg.refractory}"
        )
    d = _check_step_args(cfg, t, acc, votes, lfsr)
    if t.dtype != torch.int8 or (t.numel() and (int(t.min()) < -1 or int(t.max()) > 1)):
        raise ConfigError("ternary weights must be int8 trits -1, 0 or +1")
    # Integer masks instead of boolean tensors (2-3x faster on CPU): for a signed value x of the
    # work dtype's `bits` bits, `x >> (bits - 1)` is -1 where x < 0, else 0. The dtype holds the
    # exact sum (|.| <= 2**(A-1) + 1 + 2**b) and the differences below (< 2**A).
    bound = max(1 << cfg.acc_width, (1 << (cfg.acc_width - 1)) + 2 + (1 << cfg.lfsr.draw_bits))
    dt, bits = ((torch.int16, 16) if bound < (1 << 15) else
                (torch.int32, 32) if bound < (1 << 31) else (torch.int64, 64))
    top = bits - 1
    a = acc.to(dt)
    if cfg.leak_shift:  # a - trunc(a / 2**leak_shift): the magnitude leaks, the sign is kept
        s = cfg.leak_shift
        a = a - ((a + ((a >> top) & ((1 << s) - 1))) >> s)
    a = a + votes.to(dt)
    if cfg.noise == "additive":
        a = a + (2 * d.to(dt) + (1 - (1 << cfg.lfsr.draw_bits)))
    a = torch.clamp(a, cfg.acc_min, cfg.acc_max)
    up = ((cfg.threshold - 1) - a) >> top  # -1 where a >= threshold
    down = (a + (cfg.threshold - 1)) >> top  # -1 where a <= -threshold
    if cfg.noise == "stochastic":
        gate = (d.to(dt) - cfg.fire_prob) >> top  # -1 where d < fire_prob
        up &= gate
        down &= gate
    direction = down - up  # +1 up, -1 down, 0
    fired = up | down
    t_new = torch.clamp(t + direction.to(torch.int8), -1, 1)
    a = (a & ~fired) | ((-cfg.refractory * direction) & fired)
    return t_new, a.to(torch.int32), t_new != t
