"""Architecture strings (SPEC.md §14): ``64-128-10`` or ``1x28x28-c32k3-mp2-c64k3-mp2-256-10``.

Tokens joined by ``-``:

- first, the input: a width (``64``, MLP only) or a shape ``CxHxW`` (required before
  convolutions; ``HxW`` means ``1xHxW``);
- ``cFkK[sS][pP]``: a binary convolution with ``F`` output channels, a ``K x K`` window,
  stride ``S`` (default 1) and padding ``P`` (default 0) on every side;
- ``mpQ``: a ``Q x Q`` max-pool (step ``Q``) after the convolution just before it (at most
  one per convolution);
- dense widths; the last one is the class count.

:func:`parse_arch` gives an :class:`Arch`; :meth:`Arch.layers` builds the golden
:class:`~bitswarm.golden.layer.LayerConfig` chain; ``str(arch)`` is the canonical spelling
(``s1`` and ``p0`` omitted).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .conv import ConvGeometry
from .errors import ConfigError

__all__ = ["ConvSpec", "Arch", "parse_arch", "arch_of_layers", "ARCH_HELP"]

#: One line for ``--help`` texts.
ARCH_HELP = ("layers joined by '-': an input width or shape CxHxW, then convolutions cFkK[sS][pP] "
             "each optionally followed by a max-pool mpQ, then dense widths ending in the class "
             "count, e.g. 64-256-10 or 1x8x8-c16k3p1-mp2-c32k3p1-mp2-10")

_SHAPE = re.compile(r"^(\d+)x(\d+)(?:x(\d+))?$")
_CONV = re.compile(r"^c(\d+)k(\d+)(?:s(\d+))?(?:p(\d+))?$")
_POOL = re.compile(r"^mp(\d+)$")
_WIDTH = re.compile(r"^\d+$")


@dataclass(frozen=True)
class ConvSpec:
    """One ``cFkK[sS][pP][-mpQ]`` group."""

    filters: int
    kernel: int
    stride: int = 1
    pad: int = 0
    pool: int = 1

    def __str__(self) -> str:
        t = f"c{self.filters}k{self.kernel}"
        t += f"s{self.stride}" if self.stride != 1 else ""
        t += f"p{self.pad}" if self.pad else ""
        return t + (f"-mp{self.pool}" if self.pool != 1 else "")


@dataclass(frozen=True)
class Arch:
    """A parsed architecture: input shape, convolutions, dense widths (classes last)."""

    input_shape: tuple[int, ...]
    convs: tuple[ConvSpec, ...]
    dense: tuple[int, ...]

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def classes(self) -> int:
        return self.dense[-1]

    @property
    def is_mlp(self) -> bool:
        return not self.convs

    @property
    def widths(self) -> tuple[int, ...]:
        """MLP widths, input first (``(64, 128, 10)``); only for MLPs."""
        if self.convs:
            raise ConfigError(f"arch {self} has convolutions: it is not a list of widths")
        return (self.n_inputs, *self.dense)

    def __str__(self) -> str:
        head = (str(self.input_shape[0]) if len(self.input_shape) == 1 and not self.convs
                else "x".join(map(str, self.input_shape)))
        return "-".join([head, *map(str, self.convs), *map(str, self.dense)])

    def layers(self, swarm: int = 1, input_bits: int = 8, weights: str = "binary") -> tuple:
        """The golden layer chain (every geometry checked; one-line ConfigError otherwise)."""
        from .layer import LayerConfig

        out = []
        shape = self.input_shape
        for i, c in enumerate(self.convs):
            ch, h, w = shape
            try:
                g = ConvGeometry(ch, h, w, c.kernel, c.stride, c.pad, c.pool)
            except ConfigError as e:
                raise ConfigError(f"arch {self}: convolution {i + 1} ({c}) on a {ch}x{h}x{w} "
                                  f"map: {e}") from None
            out.append(LayerConfig(n_in=g.window, n_out=c.filters, swarm=swarm,
                                   input_bits=input_bits if i == 0 else 1, weights=weights, conv=g))
            shape = (c.filters, g.pooled_height, g.pooled_width)
        n = math.prod(shape)
        for j, m in enumerate(self.dense):
            first = not out
            out.append(LayerConfig(n_in=n, n_out=m, swarm=swarm,
                                   input_bits=input_bits if first else 1, weights=weights,
                                   output=j == len(self.dense) - 1))
            n = m
        return tuple(out)


def parse_arch(text) -> Arch:
    """Parse an architecture string (or an iterable of MLP widths); one-line ConfigError on
    any malformed token, naming it."""
    if isinstance(text, Arch):
        return text
    if isinstance(text, (list, tuple)):
        text = "-".join(map(str, text))
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"arch must be a string such as 64-128-10, not {text!r}")
    toks = text.strip().split("-")
    m = _SHAPE.match(toks[0])
    if m:
        dims = tuple(int(v) for v in m.groups() if v is not None)
        shape = dims if len(dims) == 3 else (1, *dims)
    elif _WIDTH.match(toks[0]):
        shape = (int(toks[0]),)
    else:
        raise ConfigError(f"arch {text!r}: the first token must be the input width or shape "
                          f"CxHxW, not {toks[0]!r}")
    if any(d < 1 for d in shape):
        raise ConfigError(f"arch {text!r}: input dimensions must be >= 1")
    convs: list[ConvSpec] = []
    dense: list[int] = []
    for t in toks[1:]:
        if (c := _CONV.match(t)) is not None:
            if dense:
                raise ConfigError(f"arch {text!r}: convolution {t!r} after a dense layer; "
                                  "convolutions come first")
            if len(shape) != 3:
                raise ConfigError(f"arch {text!r}: convolutions need an input shape CxHxW "
                                  f"first (e.g. 1x8x8), not {toks[0]!r}")
            f, k, s, p = (int(v) if v is not None else None for v in c.groups())
            if f < 1 or k < 1 or (s is not None and s < 1):
                raise ConfigError(f"arch {text!r}: {t!r} needs channels, kernel and stride >= 1")
            convs.append(ConvSpec(f, k, 1 if s is None else s, p or 0))
        elif (q := _POOL.match(t)) is not None:
            if not convs or dense or convs[-1].pool != 1:
                raise ConfigError(f"arch {text!r}: {t!r} must follow a convolution (one max-pool "
                                  "per convolution)")
            if int(q.group(1)) < 1:
                raise ConfigError(f"arch {text!r}: {t!r} needs a pool size >= 1")
            last = convs[-1]
            convs[-1] = ConvSpec(last.filters, last.kernel, last.stride, last.pad, int(q.group(1)))
        elif _WIDTH.match(t):
            if int(t) < 1:
                raise ConfigError(f"arch {text!r}: widths must be >= 1, not {t}")
            dense.append(int(t))
        else:
            raise ConfigError(f"arch {text!r}: cannot read token {t!r} (widths, cFkK[sS][pP] or "
                              "mpQ, joined by '-')")
    if not dense:
        raise ConfigError(f"arch {text!r} needs at least an input and an output width "
                          "(the last token is the class count)")
    arch = Arch(shape, tuple(convs), tuple(dense))
    arch.layers()  # every geometry checked here
    return arch


def arch_of_layers(input_shape: tuple[int, ...], layers) -> Arch:
    """The :class:`Arch` of a golden layer chain (inverse of :meth:`Arch.layers`)."""
    convs = tuple(ConvSpec(lay.n_out, lay.conv.kernel, lay.conv.stride, lay.conv.pad,
                           lay.conv.pool) for lay in layers if lay.conv is not None)
    dense = tuple(lay.n_out for lay in layers if lay.conv is None)
    if convs:
        g = layers[0].conv
        shape = (g.in_channels, g.in_height, g.in_width)
    else:
        shape = (layers[0].n_in,)
    return Arch(shape, convs, dense)
