"""Galois LFSR: taps table, step, draw and save/restore (SPEC.md §6).

The register is a right-shifting Galois LFSR of ``width`` bits::

    out   = state & 1
    state = (state >> 1) ^ (taps if out else 0)

``taps`` has bit ``t - 1`` set for every tap ``t`` of the maximal-length polynomial in
:data:`TAPS` (bit ``width - 1`` is always set). A *draw* of ``b`` bits is one step followed by
reading the low ``b`` bits of the new state. The all-zero state is illegal (it never leaves 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import ConfigError

__all__ = ["TAPS", "MIN_WIDTH", "MAX_WIDTH", "taps_mask", "LFSRConfig", "LFSR"]

MIN_WIDTH, MAX_WIDTH = 8, 32

#: Maximal-length tap positions per width (Xilinx XAPP052, Table 3). Each polynomial is
#: primitive over GF(2), so the register visits all 2**width - 1 nonzero states; the test suite
#: checks the period exhaustively up to 20 bits and by the primitive-polynomial order test for
#: every width.
TAPS: dict[int, tuple[int, ...]] = {
    8: (8, 6, 5, 4),
    9: (9, 5),
    10: (10, 7),
    11: (11, 9),
    12: (12, 6, 4, 1),
    13: (13, 4, 3, 1),
    14: (14, 5, 3, 1),
    15: (15, 14),
    16: (16, 15, 13, 4),
    17: (17, 14),
    18: (18, 11),
    19: (19, 6, 2, 1),
    20: (20, 17),
    21: (21, 19),
    22: (22, 21),
    23: (23, 18),
    24: (24, 23, 22, 17),
    25: (25, 22),
    26: (26, 6, 2, 1),
    27: (27, 5, 2, 1),
    28: (28, 25),
    29: (29, 27),
    30: (30, 6, 4, 1),
    31: (31, 28),
    32: (32, 22, 2, 1),
}


def taps_mask(width: int) -> int:
    """The Galois feedback mask for ``width`` (bit ``t-1`` set per tap ``t``)."""
    if width not in TAPS:
        raise ConfigError(f"LFSR width must be in {MIN_WIDTH}..{MAX_WIDTH}, not {width!r}")
    m = 0
    for t in TAPS[width]:
        m |= 1 << (t - 1)
    return m


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class LFSRConfig:
    """Parameters of one LFSR.

    Parameters
    ----------
    width : int
        Register width, 8..32.
    seed : int
        Initial state, 1..2**width - 1.
    draw_bits : int
        Bits per draw, 1..width.
    """

    width: int = 16
    seed: int = 0xACE1
    draw_bits: int = 8

    def __post_init__(self):
        if not _is_int(self.width) or self.width not in TAPS:
            raise ConfigError(
                f"lfsr.width must be an integer in {MIN_WIDTH}..{MAX_WIDTH}, not {self.width!r}"
            )
        if not _is_int(self.seed) or not 1 <= self.seed < (1 << self.width):
            raise ConfigError(
                f"lfsr.seed must be an integer in 1..{(1 << self.width) - 1} "
                f"for width {self.width}, not {self.seed!r}"
            )
        if not _is_int(self.draw_bits) or not 1 <= self.draw_bits <= self.width:
            raise ConfigError(
                f"lfsr.draw_bits must be an integer in 1..{self.width}, not {self.draw_bits!r}"
            )

    @property
    def taps(self) -> int:
        return taps_mask(self.width)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LFSRConfig":
        return _from_dict(cls, d, "lfsr")

    def create(self) -> "LFSR":
        """A software LFSR in this configuration's initial state."""
        return LFSR(self)


def _from_dict(cls, d, where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be an object, not {type(d).__name__}")
    names = set(cls.__dataclass_fields__)
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    missing = names - set(d)
    if missing:
        raise ConfigError(f"{where}: missing field(s) {sorted(missing)}")
    return cls(**d)


class LFSR:
    """Software model of the Galois LFSR. ``state`` is a plain int, savable and restorable."""

    def __init__(self, config: LFSRConfig, state: int | None = None):
        self.config = config
        self._mask = (1 << config.width) - 1
        self._taps = config.taps
        self.state = config.seed if state is None else state

    @property
    def state(self) -> int:
        return self._state

    @state.setter
    def state(self, value: int) -> None:
        if not _is_int(value) or not 1 <= value <= self._mask:
            raise ConfigError(
                f"LFSR state must be in 1..{self._mask} for width {self.config.width}, "
                f"not {value!r}"
            )
        self._state = value

    def step(self) -> int:
        """Advance one step; return the output bit (the old LSB)."""
        s = self._state
        out = s & 1
        s >>= 1
        if out:
            s ^= self._taps
        self._state = s
        return out

    def draw(self, bits: int | None = None) -> int:
        """One step, then the low ``bits`` (default ``draw_bits``) of the new state."""
        b = self.config.draw_bits if bits is None else bits
        self.step()
        return self._state & ((1 << b) - 1)

    def states(self, n: int) -> np.ndarray:
        """The next ``n`` states (after 1, 2, ..., n steps) as int64; advances the register.

        Vectorized by doubling with the GF(2) transition matrix: O(log n) numpy passes, so whole
        layers of draws are cheap. Equal, state for state, to calling :meth:`step` ``n`` times.
        """
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        w = self.config.width
        # cols[j] = A**m applied to the basis state 1 << j (A = one step, linear over GF(2)).
        cols = [1 << j for j in range(w)]
        seq = np.array([self._state], dtype=np.int64)  # states after 0 steps
        step_cols = []
        for c in cols:
            out = c & 1
            c >>= 1
            step_cols.append(c ^ self._taps if out else c)
        cols = step_cols  # A ** 1
        while len(seq) < n + 1:
            seq = np.concatenate([seq, _apply(cols, seq)])  # A**len(seq) maps seq to its sequel
            cols = [_apply_int(cols, c) for c in cols]  # A**(2m) = A**m . A**m
        seq = seq[1 : n + 1]
        self._state = int(seq[-1])
        return seq

    def draws(self, n: int, bits: int | None = None) -> np.ndarray:
        """``n`` consecutive draws (vectorized :meth:`draw`)."""
        b = self.config.draw_bits if bits is None else bits
        return self.states(n) & ((1 << b) - 1)

    def save(self) -> dict:
        return {"config": self.config.to_dict(), "state": self._state}

    @classmethod
    def restore(cls, d: dict) -> "LFSR":
        if not isinstance(d, dict) or set(d) != {"config", "state"}:
            raise ConfigError("LFSR save must be an object with 'config' and 'state'")
        return cls(LFSRConfig.from_dict(d["config"]), d["state"])


def _apply_int(cols: list[int], x: int) -> int:
    """Apply the GF(2) matrix given by its columns to one state."""
    r, j = 0, 0
    while x:
        if x & 1:
            r ^= cols[j]
        x >>= 1
        j += 1
    return r


def _apply(cols: list[int], x: np.ndarray) -> np.ndarray:
    """Apply the GF(2) matrix given by its columns to many states (byte lookup tables)."""
    r = np.zeros_like(x)
    for b in range(0, len(cols), 8):
        chunk = cols[b : b + 8]
        table = np.zeros(256, dtype=np.int64)
        for v in range(1, 256):
            low = (v & -v).bit_length() - 1
            table[v] = table[v & (v - 1)] ^ (chunk[low] if low < len(chunk) else 0)
        r ^= table[(x >> b) & 0xFF]
    return r
