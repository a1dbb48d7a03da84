"""Bit encoding, packed storage and ternary packings (SPEC.md §1, §2, §5).

Encoding: a bit 1 stands for +1, a bit 0 for -1.

Packed format: a bit vector of length ``n`` is stored as ``ceil(n / 64)`` little-endian
``uint64`` words; element ``k`` is bit ``k % 64`` (LSB first) of word ``k // 64``; the padding
bits of the last word are 0.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import ConfigError

__all__ = [
    "WORD_BITS",
    "n_words",
    "bits_to_pm1",
    "pm1_to_bits",
    "pack_bits",
    "unpack_bits",
    "popcount",
    "xnor_popcount_dot",
    "TRIT_LAYOUTS",
    "pack_trits_base3",
    "unpack_trits_base3",
    "pack_trits_u32",
    "unpack_trits_u32",
    "ternary_to_planes",
    "planes_to_ternary",
]

WORD_BITS = 64
_POW3_20 = 3**20  # 3,486,784,401 < 2**32


def n_words(n: int) -> int:
    """Number of uint64 words that hold ``n`` bits."""
    if n < 0:
        raise ConfigError(f"bit count must be >= 0, not {n!r}")
    return (n + WORD_BITS - 1) // WORD_BITS


def bits_to_pm1(bits: torch.Tensor) -> torch.Tensor:
    """Map bits {0, 1} to {-1, +1} (int8)."""
    return bits.to(torch.int8) * 2 - 1


def pm1_to_bits(values: torch.Tensor) -> torch.Tensor:
    """Map {-1, +1} (any sign-carrying tensor: > 0 is +1) to bits {0, 1} (uint8)."""
    return (values > 0).to(torch.uint8)


def _as_bits_np(bits) -> np.ndarray:
    a = bits.cpu().numpy() if isinstance(bits, torch.Tensor) else np.asarray(bits)
    if a.size and (a.min() < 0 or a.max() > 1):
        raise ConfigError("bit array must contain only 0 and 1")
    return a.astype(np.uint8, copy=False)


def pack_bits(bits) -> np.ndarray:
    """Pack the last axis of a 0/1 array into uint64 words (LSB-first, zero padding).

    ``[..., n] -> [..., ceil(n/64)]`` ``uint64``.
    """
    a = _as_bits_np(bits)
    n = a.shape[-1]
    w = n_words(n)
    padded = np.zeros(a.shape[:-1] + (w * WORD_BITS,), dtype=np.uint8)
    padded[..., :n] = a
    # np.packbits with bitorder="little" puts element 0 in bit 0 of byte 0; eight bytes in
    # little-endian order then form one uint64 with element 0 in bit 0.
    by = np.packbits(padded, axis=-1, bitorder="little")
    return np.ascontiguousarray(by).view("<u8").reshape(a.shape[:-1] + (w,)).astype(np.uint64)


def unpack_bits(words, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``[..., ceil(n/64)] uint64 -> [..., n] uint8``."""
    w = np.ascontiguousarray(np.asarray(words, dtype=np.uint64))
    if w.shape[-1] != n_words(n):
        raise ConfigError(f"expected {n_words(n)} words for {n} bits, found {w.shape[-1]}")
    by = w.astype("<u8").view(np.uint8).reshape(w.shape[:-1] + (w.shape[-1] * 8,))
    return np.unpackbits(by, axis=-1, bitorder="little")[..., :n].copy()


def popcount(words: np.ndarray) -> np.ndarray:
    """Population count of every uint64 word."""
    return np.bitwise_count(np.asarray(words, dtype=np.uint64))


def xnor_popcount_dot(a_words: np.ndarray, w_words: np.ndarray, n: int) -> np.ndarray:
    """±1 dot products from packed bits: ``2 * popcount(XNOR(a, w)) - n``.

    ``a_words``: ``[B, W]``; ``w_words``: ``[M, W]``; returns ``[B, M]`` int64. Padding bits
    are 0 in both operands, so XNOR sets them to 1; they are masked off before counting.
    """
    a = np.asarray(a_words, dtype=np.uint64)
    w = np.asarray(w_words, dtype=np.uint64)
    mask = np.full(a.shape[-1], np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    if n % WORD_BITS:
        mask[-1] = np.uint64((1 << (n % WORD_BITS)) - 1)
    x = ~(a[:, None, :] ^ w[None, :, :]) & mask
    return 2 * popcount(x).sum(axis=-1, dtype=np.int64) - n


# --- ternary -------------------------------------------------------------------------------


def _check_trits(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t)
    if t.size and (t.min() < -1 or t.max() > 1):
        raise ConfigError("trits must be -1, 0 or +1")
    return t.astype(np.int64)


def ternary_to_planes(t) -> tuple[np.ndarray, np.ndarray]:
    """Ternary values -> (nonzero mask, sign) bit planes; sign is 1 for +1, 0 for -1 and 0."""
    t = _check_trits(t)
    return (t != 0).astype(np.uint8), (t > 0).astype(np.uint8)


def planes_to_ternary(mask, sign) -> np.ndarray:
    """(mask, sign) bit planes -> int8 ternary values ``mask * (2*sign - 1)``."""
    m = _as_bits_np(mask).astype(np.int8)
    s = _as_bits_np(sign).astype(np.int8)
    return m * (2 * s - 1)


TRIT_LAYOUTS = ("rows", "seed")


def _check_layout(layout: str) -> None:
    if layout not in TRIT_LAYOUTS:
        raise ConfigError(f"trit layout must be one of {', '.join(TRIT_LAYOUTS)}, not {layout!r}")


def pack_trits_base3(t, layout: str = "rows") -> np.ndarray:
    """5 trits per byte, base 3, trit 0 least significant: ``byte = sum (t_i + 1) * 3**i``.

    ``layout="rows"``: the last axis is padded with 0-trits (digit 1) to a multiple of 5 and
    packed row by row (shape ``[..., ceil(n / 5)]``). ``layout="seed"``: seed 002's
    ``pack_ternary`` — the whole tensor flattened in C order and padded with digit 0 (the
    digit of -1) to a multiple of 5, a 1-D array of ``ceil(size / 5)`` bytes. Returns
    ``uint8`` (values 0..242).
    """
    _check_layout(layout)
    t = _check_trits(t)
    if layout == "seed":
        d = t.reshape(-1) + 1
        d = np.concatenate([d, np.zeros((-d.size) % 5, dtype=np.int64)]).reshape(-1, 5)
        return (d * (3 ** np.arange(5))).sum(-1).astype(np.uint8)
    n = t.shape[-1]
    g = (n + 4) // 5
    d = np.ones(t.shape[:-1] + (g * 5,), dtype=np.int64)  # digit 1 == trit 0
    d[..., :n] = t + 1
    d = d.reshape(t.shape[:-1] + (g, 5))
    return (d * (3 ** np.arange(5))).sum(-1).astype(np.uint8)


def unpack_trits_base3(b, n: int, layout: str = "rows") -> np.ndarray:
    """Inverse of :func:`pack_trits_base3`; rejects bytes above 242.

    ``n`` is the trits per row (``rows``) or in the whole tensor (``seed``: a 1-D result the
    caller reshapes; the padding digits are dropped).
    """
    _check_layout(layout)
    b = np.asarray(b, dtype=np.int64)
    if layout == "seed":
        b = b.reshape(-1)
    if b.size and b.max() > 242:
        raise ConfigError(f"base-3 trit byte must be <= 242, found {int(b.max())}")
    if b.shape[-1] * 5 < n:
        raise ConfigError(f"{b.shape[-1]} bytes hold at most {b.shape[-1] * 5} trits, not {n}")
    d = (b[..., None] // (3 ** np.arange(5))) % 3
    return (d.reshape(b.shape[:-1] + (-1,))[..., :n] - 1).astype(np.int8)


def pack_trits_u32(t) -> np.ndarray:
    """20 trits per 32-bit word, MSB-first scaled base-3 encoding (seed 001, corrected).

    ``V = sum_i (t_i + 1) * 3**(19 - i)`` (trit 0 is the most significant digit) and
    ``word = ceil(V * 2**32 / 3**20)``. The word is then a 32-bit fraction whose base-3 digits,
    read MSB-first by multiply-by-3, are the trits in order (see :func:`unpack_trits_u32`).
    The last axis is padded with 0-trits to a multiple of 20; returns ``uint32``.
    """
    t = _check_trits(t)
    n = t.shape[-1]
    g = (n + 19) // 20
    d = np.ones(t.shape[:-1] + (g * 20,), dtype=np.int64)
    d[..., :n] = t + 1
    d = d.reshape(-1, 20)
    out = np.empty(d.shape[0], dtype=np.uint64)
    for r in range(d.shape[0]):  # python ints: V * 2**32 overflows int64
        v = 0
        for i in range(20):
            v = v * 3 + int(d[r, i])
        out[r] = -((-v << 32) // _POW3_20)  # ceiling division
    return out.astype(np.uint32).reshape(t.shape[:-1] + (g,))


def unpack_trits_u32(words, n: int) -> np.ndarray:
    """Inverse of :func:`pack_trits_u32`: per trit ``p = w*3; t = (p >> 32) - 1; w = p mod 2**32``."""
    w = np.asarray(words, dtype=np.uint64)
    if w.shape[-1] * 20 < n:
        raise ConfigError(f"{w.shape[-1]} words hold at most {w.shape[-1] * 20} trits, not {n}")
    out = np.empty(w.shape + (20,), dtype=np.int8)
    for i in range(20):
        p = w * np.uint64(3)
        out[..., i] = (p >> np.uint64(32)).astype(np.int8) - 1
        w = p & np.uint64(0xFFFFFFFF)
    return out.reshape(w.shape[:-1] + (-1,))[..., :n].copy()
