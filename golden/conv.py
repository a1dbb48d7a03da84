"""Binary 2-D convolution and max-pooling on activation bits (SPEC.md §14).

A convolutional layer is a :class:`~bitswarm.golden.layer.LayerConfig` whose ``conv`` field
holds a :class:`ConvGeometry`: its ``n_in`` inputs are one ``K x K x C`` window of the input
map (order ``(ky, kx, c)``, ``c`` fastest), so its weights, thresholds, invert bits,
accumulators and flip rule are a dense layer's. This module holds the geometry and the three
operations that make it a convolution:

- :func:`im2col`: the windows of an encoded HWC map (bits, or unsigned integers for a
  multi-bit first layer) as rows ``[B * H_o * W_o, K * K * C]``; padding positions hold the
  encoded value 0 (bit 0 = -1, or the integer 0);
- :func:`maxpool_bits`: OR of activation bits over ``Q x Q`` windows, step ``Q``;
- :func:`conv_forward`: im2col, the golden dense pre-activation and threshold, then pooling.

Everything is integer torch tensor ops (CPU or CUDA); :func:`conv_reference` is the plain
loop-level definition the tests compare against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .errors import ConfigError

__all__ = [
    "ConvGeometry",
    "im2col",
    "maxpool_bits",
    "conv_preact",
    "conv_forward",
    "conv_reference",
    "to_hwc",
]

_MAX_SIDE = 4096


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class ConvGeometry:
    """Geometry of one convolutional layer: ``C x H x W`` input, ``K x K`` window, stride,
    padding and the max-pool window applied after the threshold (``pool = 1``: none)."""

    in_channels: int
    in_height: int
    in_width: int
    kernel: int
    stride: int = 1
    pad: int = 0
    pool: int = 1

    def __post_init__(self):
        for name in ("in_channels", "in_height", "in_width"):
            v = getattr(self, name)
            if not _is_int(v) or not 1 <= v <= _MAX_SIDE:
                raise ConfigError(f"conv.{name} must be an integer in 1..{_MAX_SIDE}, not {v!r}")
        for name in ("kernel", "stride", "pad", "pool"):
            if not _is_int(getattr(self, name)):
                raise ConfigError(f"conv.{name} must be an integer, not {getattr(self, name)!r}")
        k, p = self.kernel, self.pad
        if not 1 <= k <= min(self.in_height, self.in_width) + 2 * p:
            raise ConfigError(f"conv kernel {k} does not fit the {self.in_height}x{self.in_width} "
                              f"input with padding {p}")
        if not 0 <= p <= k - 1:
            raise ConfigError(f"conv padding must be in 0..{k - 1} for kernel {k}, not {p}")
        if not 1 <= self.stride <= k:
            raise ConfigError(f"conv stride must be in 1..{k} for kernel {k}, not {self.stride}")
        if not 1 <= self.pool or self.pool > min(self.out_height, self.out_width):
            raise ConfigError(f"max-pool {self.pool} does not fit the {self.out_height}x"
                              f"{self.out_width} conv output")

    # -- derived sizes (SPEC.md §14) ---------------------------------------------------------
    @property
    def window(self) -> int:
        """Inputs per output pixel, ``N = K * K * C``."""
        return self.kernel * self.kernel * self.in_channels

    @property
    def out_height(self) -> int:
        return (self.in_height + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def out_width(self) -> int:
        return (self.in_width + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def pooled_height(self) -> int:
        return self.out_height // self.pool

    @property
    def pooled_width(self) -> int:
        return self.out_width // self.pool

    @property
    def in_size(self) -> int:
        return self.in_channels * self.in_height * self.in_width

    @property
    def positions(self) -> int:
        """Output pixels before pooling, ``H_o * W_o``."""
        return self.out_height * self.out_width

    def out_size(self, channels: int) -> int:
        """Flat activation size after pooling, ``H_q * W_q * F``."""
        return self.pooled_height * self.pooled_width * channels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ConvGeometry":
        from .lfsr import _from_dict

        return _from_dict(cls, d, "layer.conv")


def to_hwc(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Samples ``[B, C, H, W]`` (or flat HWC ``[B, C*H*W]``, or ``[B, H, W]`` for ``C = 1``)
    as flat HWC ``[B, C*H*W]`` (SPEC.md §14 layout)."""
    c, h, w = shape
    if x.ndim == 4 and tuple(x.shape[1:]) == (c, h, w):
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
    return x.reshape(x.shape[0], -1)


def im2col(g: ConvGeometry, x: torch.Tensor) -> torch.Tensor:
    """Windows of encoded HWC maps ``[B, H*W*C]`` as rows ``[B * H_o * W_o, K*K*C]``.

    Rows are in (batch, y, x) raster order, columns in ``(ky, kx, c)`` order; padding holds the
    encoded value 0 (SPEC.md §14). Works for any integer dtype (bits or unsigned inputs).
    """
    if not torch.jit.is_tracing() and (x.ndim != 2 or x.shape[1] != g.in_size):
        raise ConfigError(f"conv input must have shape [batch, {g.in_size}] "
                          f"({g.in_height}x{g.in_width}x{g.in_channels} HWC), found {tuple(x.shape)}")
    k, s, p = g.kernel, g.stride, g.pad
    m = x.reshape(-1, g.in_height, g.in_width, g.in_channels)  # -1: traceable batch axis
    if p:
        m = torch.nn.functional.pad(m, (0, 0, p, p, p, p), value=0)
    win = m.unfold(1, k, s).unfold(2, k, s)  # [B, Ho, Wo, C, K(y), K(x)]
    win = win.permute(0, 1, 2, 4, 5, 3)  # [B, Ho, Wo, ky, kx, c]
    return win.reshape(-1, g.window).contiguous()


def maxpool_bits(g: ConvGeometry, bits: torch.Tensor, channels: int) -> torch.Tensor:
    """OR of activation bits ``[B * H_o * W_o, F]`` over ``Q x Q`` windows -> flat HWC
    ``[B, H_q * W_q * F]`` (uint8); rows/columns that fill no window are dropped."""
    q = g.pool
    m = bits.reshape(-1, g.out_height, g.out_width, channels)
    if q > 1:
        hq, wq = g.pooled_height, g.pooled_width
        m = m[:, : hq * q, : wq * q].reshape(-1, hq, q, wq, q, channels).amax(dim=(2, 4))
    return m.reshape(m.shape[0], -1).contiguous()


def conv_preact(cfg, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``z`` of a convolutional layer: int64 ``[B * H_o * W_o, F]`` (rows in raster order)."""
    from .layer import preact

    return preact(cfg, im2col(cfg.conv, x), w)


def conv_forward(cfg, x: torch.Tensor, w, theta, invert) -> torch.Tensor:
    """Activation bits of a convolutional layer after pooling: uint8 ``[B, H_q * W_q * F]``."""
    from .layer import threshold

    if cfg.output:
        raise ConfigError("a convolutional layer cannot be the output layer")
    return maxpool_bits(cfg.conv, threshold(conv_preact(cfg, x, w), theta, invert), cfg.n_out)


def conv_reference(cfg, x, w, theta, invert) -> list:
    """SPEC.md §14 written out as loops over pixels, channels and window positions (plain
    Python ints): pooled bits as a flat HWC list per sample. For tests on small shapes."""
    g = cfg.conv
    x = torch.as_tensor(x).tolist()
    weff = _weights_as_ints(cfg, w)
    th, inv = torch.as_tensor(theta).tolist(), torch.as_tensor(invert).tolist()
    c_in, f_out, k = g.in_channels, cfg.n_out, g.kernel
    out = []
    for sample in x:
        act = {}
        for oy in range(g.out_height):
            for ox in range(g.out_width):
                for f in range(f_out):
                    z = 0
                    for ky in range(k):
                        for kx in range(k):
                            yy, xx = oy * g.stride - g.pad + ky, ox * g.stride - g.pad + kx
                            for c in range(c_in):
                                inside = 0 <= yy < g.in_height and 0 <= xx < g.in_width
                                e = sample[(yy * g.in_width + xx) * c_in + c] if inside else 0
                                v = (2 * e - 1) if cfg.input_bits == 1 else e
                                z += v * weff[f][(ky * k + kx) * c_in + c]
                    act[oy, ox, f] = int((z - th[f] >= 0) != bool(inv[f]))
        q = g.pool
        flat = []
        for py in range(g.pooled_height):
            for px in range(g.pooled_width):
                for f in range(f_out):
                    flat.append(max(act[py * q + dy, px * q + dx, f] for dy in range(q) for dx in range(q)))
        out.append(flat)
    return out


def _weights_as_ints(cfg, w) -> list:
    w = torch.as_tensor(w)
    if cfg.weights == "ternary":
        return w.to(torch.int64).tolist()
    return (w.to(torch.int64) * 2 - 1).sum(0).tolist()
