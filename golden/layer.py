"""XNOR-popcount dense layers, threshold activation, scores and argmax (SPEC.md §3, §4, §5, §7).

Two implementations of the same integer function live here:

- :func:`preact` — the fast path in torch tensor ops (CPU or CUDA): the ±1 / unsigned operands
  are multiplied as floating-point matrices, which is exact because every partial sum is an
  integer of magnitude at most :attr:`LayerConfig.z_bound` and the dtype is chosen so that
  bound is exactly representable (float32 below 2**24, float64 below 2**53);
- :func:`preact_packed` — the literal definition on packed uint64 words: XNOR-popcount per
  swarm plane, bit-plane decomposition of multi-bit inputs, (mask, sign) planes for ternary.

The tests assert both are equal to each other and to the mathematical definition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .bits import WORD_BITS, pack_bits, popcount
from .conv import ConvGeometry, conv_forward
from .errors import ConfigError

__all__ = [
    "SWARM_SIZES",
    "WEIGHT_KINDS",
    "LayerConfig",
    "signed_width",
    "effective_weights",
    "exact_matmul",
    "preact",
    "preact_packed",
    "threshold",
    "layer_forward",
    "argmax",
]

SWARM_SIZES = (1, 2, 4, 8, 16, 32)
WEIGHT_KINDS = ("binary", "ternary")
_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def signed_width(bound: int) -> int:
    """Bits of a two's-complement signal that holds every integer in ``[-bound, bound]``."""
    return max(1, int(bound).bit_length() + 1)


@dataclass(frozen=True)
class LayerConfig:
    """One dense layer.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths (N, M), 1..65536.
    swarm : int
        Bits per logical weight, S in {1, 2, 4, 8, 16, 32}; a weight has 2S+1 levels.
    input_bits : int
        1: inputs are bits read as ±1 (XNOR-popcount). 2..8: inputs are unsigned integers of
        that many bits (first layer; exact bit-plane decomposition).
    weights : str
        ``"binary"`` (S bit-planes) or ``"ternary"`` ((mask, sign) planes; requires S = 1).
    output : bool
        True for the output layer: it yields integer scores ``z - theta`` instead of bits.
    conv : ConvGeometry or None
        Set for a convolutional layer (SPEC.md §14): ``n_in`` is then the window size
        ``K * K * C`` and ``n_out`` the output channels; ``None`` for a dense layer.
    """

    n_in: int
    n_out: int
    swarm: int = 1
    input_bits: int = 1
    weights: str = "binary"
    output: bool = False
    conv: ConvGeometry | None = None

    def __post_init__(self):
        for name in ("n_in", "n_out"):
            v = getattr(self, name)
            if not _is_int(v) or not 1 <= v <= 65536:
                raise ConfigError(f"layer.{name} must be an integer in 1..65536, not {v!r}")
        if not _is_int(self.swarm) or self.swarm not in SWARM_SIZES:
            raise ConfigError(f"layer.swarm must be one of {SWARM_SIZES}, not {self.swarm!r}")
        if not _is_int(self.input_bits) or not 1 <= self.input_bits <= 8:
            raise ConfigError(f"layer.input_bits must be an integer in 1..8, not {self.input_bits!r}")
        if self.weights not in WEIGHT_KINDS:
            raise ConfigError(f"layer.weights must be one of {WEIGHT_KINDS}, not {self.weights!r}")
        if self.weights == "ternary" and self.swarm != 1:
            raise ConfigError(f"ternary layers need swarm 1, not {self.swarm}")
        if not isinstance(self.output, bool):
            raise ConfigError(f"layer.output must be true or false, not {self.output!r}")
        if isinstance(self.conv, dict):
            object.__setattr__(self, "conv", ConvGeometry.from_dict(self.conv))
        if self.conv is not None:
            if not isinstance(self.conv, ConvGeometry):
                raise ConfigError("layer.conv must be a conv geometry object")
            if self.n_in != self.conv.window:
                raise ConfigError(f"a conv layer's n_in must be its window K*K*C = "
                                  f"{self.conv.window}, not {self.n_in}")
            if self.output:
                raise ConfigError("a convolutional layer cannot be the output layer")

    # -- activation sizes (SPEC.md §14): what chains from layer to layer ---------------------
    @property
    def in_size(self) -> int:
        """Flat input activation size: ``C * H * W`` (conv) or ``n_in`` (dense)."""
        return self.conv.in_size if self.conv is not None else self.n_in

    @property
    def out_size(self) -> int:
        """Flat output activation size: ``H_q * W_q * F`` (conv) or ``n_out`` (dense)."""
        return self.conv.out_size(self.n_out) if self.conv is not None else self.n_out

    @property
    def macs(self) -> int:
        """Binary multiply-accumulates per sample: ``H_o * W_o * F * N * S`` (or ``M * N * S``)."""
        rows = self.conv.positions if self.conv is not None else 1
        return rows * self.n_out * self.n_in * self.swarm

    # -- derived widths ----------------------------------------------------------------------
    @property
    def x_max(self) -> int:
        """Largest input magnitude: 1 for ±1 inputs, 2**B - 1 for unsigned B-bit inputs."""
        return 1 if self.input_bits == 1 else (1 << self.input_bits) - 1

    @property
    def z_bound(self) -> int:
        """``max |z_j|`` = N * S * x_max."""
        return self.n_in * self.swarm * self.x_max

    @property
    def z_width(self) -> int:
        """Signed width of ``z`` and of ``z - theta`` (theta is limited to ``|theta| <= z_bound``)."""
        return signed_width(2 * self.z_bound)

    @property
    def theta_bound(self) -> int:
        return self.z_bound

    @property
    def weight_bits(self) -> int:
        """Stored weight bits: S * M * N (binary) or 2 * M * N (ternary planes)."""
        planes = self.swarm if self.weights == "binary" else 2
        return planes * self.n_out * self.n_in

    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the unpacked weight tensor: [S, M, N] uint8 bits, or [M, N] int8 trits."""
        if self.weights == "binary":
            return (self.swarm, self.n_out, self.n_in)
        return (self.n_out, self.n_in)

    def to_dict(self) -> dict:
        """The layer object of a model file; ``conv`` only for convolutional layers (so a
        dense layer's object is exactly the v1 one)."""
        d = asdict(self)
        if self.conv is None:
            del d["conv"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LayerConfig":
        from .lfsr import _from_dict

        if isinstance(d, dict) and "conv" not in d:
            d = {**d, "conv": None}
        return _from_dict(cls, d, "layer")


def check_weights(cfg: LayerConfig, w: torch.Tensor) -> None:
    if tuple(w.shape) != cfg.weight_shape():
        raise ConfigError(f"weights must have shape {cfg.weight_shape()}, found {tuple(w.shape)}")


def effective_weights(cfg: LayerConfig, w: torch.Tensor) -> torch.Tensor:
    """Integer weight matrix ``[M, N]``: ``sum_s (2 w_s - 1)`` (2S+1 levels) or the trits."""
    check_weights(cfg, w)
    if cfg.weights == "binary":
        if cfg.swarm == 1:  # the same sum, without a pass over a size-1 axis
            return w[0].to(torch.int32) * 2 - 1
        return (w.to(torch.int32) * 2 - 1).sum(0)
    return w.to(torch.int32)


def exact_matmul(x: torch.Tensor, w: torch.Tensor, bound: int) -> torch.Tensor:
    """``x @ w.T`` for integer tensors whose every partial sum is bounded by ``bound``; int64.

    Uses float32 when ``bound < 2**24`` (and float32 matmuls run at full precision: no TF32 on
    CUDA, ``torch.get_float32_matmul_precision() == "highest"``), else float64 (``< 2**53``).
    """
    if bound >= _F64_EXACT:
        raise ConfigError(f"integer matmul bound {bound} exceeds 2**53; cannot be exact")
    full = torch.get_float32_matmul_precision() == "highest" and not (
        x.is_cuda and torch.backends.cuda.matmul.allow_tf32
    )
    dt = torch.float32 if bound < _F32_EXACT and full else torch.float64
    return torch.round(x.to(dt) @ w.to(dt).T).to(torch.int64)


def _input_values(cfg: LayerConfig, x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 2 or x.shape[1] != cfg.n_in:
        raise ConfigError(f"layer input must have shape [batch, {cfg.n_in}], found {tuple(x.shape)}")
    if x.dtype.is_floating_point or x.dtype == torch.bool:
        raise ConfigError(f"layer input must be an integer tensor, not {x.dtype}")
    if cfg.input_bits == 1:
        return x.to(torch.int32) * 2 - 1
    return x.to(torch.int32)


def preact(cfg: LayerConfig, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``z[b, j]``: ±1 inputs give ``sum_s (2*popcount(XNOR(a, w_sj)) - N)``; unsigned inputs
    give ``sum_s sum_k x_k * (2 w_sjk - 1)``; ternary weights give ``sum_k x_k * t_jk``. int64."""
    return exact_matmul(_input_values(cfg, x), effective_weights(cfg, w.to(x.device)), cfg.z_bound)


def _masked_popcount(words: np.ndarray, n: int) -> np.ndarray:
    mask = np.full(words.shape[-1], np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    if n % WORD_BITS:
        mask[-1] = np.uint64((1 << (n % WORD_BITS)) - 1)
    return popcount(words & mask).sum(-1, dtype=np.int64)


def preact_packed(cfg: LayerConfig, x, w) -> np.ndarray:
    """The literal bit-level definition on packed words (numpy); equal to :func:`preact`."""
    x = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x).astype(np.int64)
    w = np.asarray(w.cpu() if isinstance(w, torch.Tensor) else w)
    n = cfg.n_in
    if cfg.weights == "binary":
        planes = [pack_bits(w[s]) for s in range(cfg.swarm)]  # [M, W] each
    else:
        mask = pack_bits((w != 0).astype(np.uint8))
        sign = pack_bits((w > 0).astype(np.uint8))
    # Input bit-planes: ±1 input is one plane read with XNOR; unsigned B-bit input has B planes.
    if cfg.input_bits == 1:
        xp = [pack_bits(x)]
    else:
        xp = [pack_bits((x >> b) & 1) for b in range(cfg.input_bits)]
    z = np.zeros((x.shape[0], cfg.n_out), dtype=np.int64)
    for b, a in enumerate(xp):
        a3 = a[:, None, :]
        if cfg.weights == "binary":
            for p in planes:
                if cfg.input_bits == 1:  # 2 * popcount(XNOR(a, w)) - N
                    z += 2 * _masked_popcount(~(a3 ^ p[None]), n) - n
                else:  # plane b: 2 * popcount(x_b AND w) - popcount(x_b), weight 2**b
                    z += (2 * _masked_popcount(a3 & p[None], n) - _masked_popcount(a3, n)) << b
        else:
            m3 = mask[None]
            if cfg.input_bits == 1:  # 2 * popcount(m AND XNOR(a, s)) - popcount(m)
                z += 2 * _masked_popcount(m3 & ~(a3 ^ sign[None]), n) - _masked_popcount(m3, n)
            else:  # 2 * popcount(x_b AND m AND s) - popcount(x_b AND m)
                xm = a3 & m3
                z += (2 * _masked_popcount(xm & sign[None], n) - _masked_popcount(xm, n)) << b
    return z


def threshold(z: torch.Tensor, theta: torch.Tensor, invert: torch.Tensor) -> torch.Tensor:
    """Activation bits ``((z - theta) >= 0) XOR invert`` (uint8)."""
    fire = (z - theta.to(z.device, torch.int64)) >= 0
    return (fire ^ invert.to(z.device).bool()).to(torch.uint8)


def layer_forward(cfg, x, w, theta, invert) -> torch.Tensor:
    """Hidden layer: activation bits (uint8). Output layer: scores ``z - theta`` (int64).
    A convolutional layer (``cfg.conv``) yields its pooled HWC bits ``[B, H_q * W_q * F]``."""
    if cfg.conv is not None:
        return conv_forward(cfg, x, w, theta, invert)
    z = preact(cfg, x, w)
    if cfg.output:
        return z - theta.to(z.device, torch.int64)
    return threshold(z, theta, invert)


def argmax(scores: torch.Tensor) -> torch.Tensor:
    """Class per row; ties go to the lowest class index."""
    m = scores.max(dim=-1, keepdim=True).values
    idx = torch.arange(scores.shape[-1], device=scores.device).expand_as(scores)
    return torch.where(scores == m, idx, scores.shape[-1]).min(dim=-1).values
