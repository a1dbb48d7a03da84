"""Integer threshold homeostasis: the seeds' replacement of BatchNorm (DESIGN.md, "Activation").

Each hidden neuron ``j`` keeps an integer threshold ``theta_j``. After a batch of ``B``
pre-activations ``z[b, j]`` (integers, as from :func:`~bitswarm.golden.layer.preact`), the
threshold moves a fixed fraction ``2**-shift`` of the way toward the batch mean of ``z_j``::

    m_j     = floor(sum_b z[b, j] / B)                        # integer batch mean (floor)
    d_j     = m_j - theta_j
    step_j  = (d_j + 2**(shift-1)) >> shift   if shift > 0 else d_j   # round half up
    theta_j = clamp(theta_j + step_j, -bound, bound)          # bound = LayerConfig.theta_bound

so ``z_j - theta_j`` stays centred and each neuron fires on about half of its inputs, the role
BatchNorm's mean subtraction plays in float networks. Everything is exact integer arithmetic
(int64); the result is the same on every device. ``shift = 0`` jumps to the batch mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .errors import ConfigError
from .lfsr import _from_dict, _is_int

__all__ = ["HomeostasisConfig", "batch_mean", "floor_mean", "homeostasis_step", "homeostasis_update"]


@dataclass(frozen=True)
class HomeostasisConfig:
    """Parameters of threshold homeostasis.

    Parameters
    ----------
    shift : int
        0..16; each step moves theta by ``2**-shift`` of its distance to the batch mean,
        rounded half up.
    """

    shift: int = 3

    def __post_init__(self):
        if not _is_int(self.shift) or not 0 <= self.shift <= 16:
            raise ConfigError(f"homeostasis.shift must be an integer in 0..16, not {self.shift!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HomeostasisConfig":
        return _from_dict(cls, d, "homeostasis")


def batch_mean(z: torch.Tensor) -> torch.Tensor:
    """Per-column floor mean of an integer ``[B, M]`` tensor: ``floor(sum_b z / B)`` (int64)."""
    if z.ndim != 2 or z.shape[0] < 1:
        raise ConfigError(f"pre-activations must have shape [batch >= 1, M], found {tuple(z.shape)}")
    if z.dtype.is_floating_point or z.dtype == torch.bool:
        raise ConfigError(f"pre-activations must be an integer tensor, not {z.dtype}")
    return floor_mean(z.to(torch.int64).sum(0), z.shape[0])


def floor_mean(total: torch.Tensor, count: int) -> torch.Tensor:
    """``floor(total / count)`` of an int64 column sum over ``count >= 1`` samples: the batch
    mean from sums, e.g. sums all-reduced over data-parallel ranks (``bitswarm.train.distributed``)."""
    if total.dtype != torch.int64:
        raise ConfigError(f"column sums must be int64, not {total.dtype}")
    if not _is_int(count) or count < 1:
        raise ConfigError(f"count must be a positive integer, not {count!r}")
    return torch.div(total, count, rounding_mode="floor")


def homeostasis_step(
    cfg: HomeostasisConfig, theta: torch.Tensor, z: torch.Tensor, bound: int
) -> torch.Tensor:
    """One homeostasis step for one layer.

    Parameters
    ----------
    cfg : HomeostasisConfig
    theta : int32 tensor ``[M]``, every value in ``-bound..bound``.
    z : integer tensor ``[B, M]``, the batch's pre-activations.
    bound : int
        The layer's ``theta_bound`` (``LayerConfig.theta_bound``), >= 0.

    Returns
    -------
    torch.Tensor
        The new thresholds, int32 ``[M]``, on ``theta``'s device.
    """
    if not _is_int(bound) or bound < 0:
        raise ConfigError(f"bound must be a non-negative integer, not {bound!r}")
    if theta.ndim != 1 or theta.dtype != torch.int32:
        raise ConfigError(f"theta must be an int32 vector, found {theta.dtype} {tuple(theta.shape)}")
    m = batch_mean(z)
    if m.shape[0] != theta.shape[0]:
        raise ConfigError(f"z has {m.shape[0]} columns but theta has {theta.shape[0]} entries")
    return homeostasis_update(cfg, theta, m, bound)


def homeostasis_update(
    cfg: HomeostasisConfig, theta: torch.Tensor, m: torch.Tensor, bound: int
) -> torch.Tensor:
    """:func:`homeostasis_step` from the batch mean ``m`` (int64 ``[M]``, :func:`batch_mean`
    or :func:`floor_mean` of summed columns) instead of the batch itself."""
    if not _is_int(bound) or bound < 0:
        raise ConfigError(f"bound must be a non-negative integer, not {bound!r}")
    if theta.ndim != 1 or theta.dtype != torch.int32:
        raise ConfigError(f"theta must be an int32 vector, found {theta.dtype} {tuple(theta.shape)}")
    if m.dtype != torch.int64 or m.shape != theta.shape:
        raise ConfigError(f"the batch mean must be int64 shaped like theta {tuple(theta.shape)}, "
                          f"found {m.dtype} {tuple(m.shape)}")
    t = theta.to(m.device, torch.int64)
    if t.numel() and int(t.abs().max()) > bound:
        raise ConfigError(f"theta must lie in -{bound}..{bound}")
    d = m - t
    step = (d + (1 << (cfg.shift - 1))) >> cfg.shift if cfg.shift else d
    return torch.clamp(t + step, -bound, bound).to(torch.int32).to(theta.device)
