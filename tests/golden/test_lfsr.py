"""lfsr.py: maximal length for every taps entry, exact step/draw semantics, save/restore."""

import numpy as np
import pytest
from bitswarm.golden import LFSR, TAPS, ConfigError, LFSRConfig, taps_mask
from hypothesis import given, settings
from hypothesis import strategies as st


class BitListGalois:
    """A straightforward independent model: the register as a list of bits, taps as positions."""

    def __init__(self, width, taps, seed):
        self.w = width
        self.taps = set(taps)
        self.b = [(seed >> i) & 1 for i in range(width)]

    def step(self):
        out = self.b[0]
        nb = self.b[1:] + [0]
        if out:
            nb = [v ^ (1 if (i + 1) in self.taps else 0) for i, v in enumerate(nb)]
        self.b = nb
        return out

    @property
    def state(self):
        return sum(v << i for i, v in enumerate(self.b))


def _prime_factors(n):
    f, p = set(), 2
    while p * p <= n:
        while n % p == 0:
            f.add(p)
            n //= p
        p += 1
    if n > 1:
        f.add(n)
    return f


def _matpow_apply(width, taps, e, state):
    """A**e applied to state, with A the one-step matrix over GF(2) as a numpy 0/1 matrix."""
    a = np.zeros((width, width), dtype=np.int64)
    for j in range(width):  # column j = successor of basis state 1 << j
        m = BitListGalois(width, taps, 1 << j)
        m.step()
        for i in range(width):
            a[i, j] = (m.state >> i) & 1
    r = np.eye(width, dtype=np.int64)
    while e:
        if e & 1:
            r = (r @ a) & 1
        a = (a @ a) & 1
        e >>= 1
    v = np.array([(state >> i) & 1 for i in range(width)], dtype=np.int64)
    out = (r @ v) & 1
    return int(sum(int(b) << i for i, b in enumerate(out)))


def test_table_covers_8_to_32():
    assert sorted(TAPS) == list(range(8, 33))
    for w, taps in TAPS.items():
        assert max(taps) == w and taps_mask(w) >> (w - 1) == 1


@pytest.mark.parametrize("width", range(8, 21))
def test_period_exhaustive_up_to_20_bits(width):
    n = (1 << width) - 1
    seq = LFSRConfig(width=width, seed=1).create().states(n)
    assert len(np.unique(seq)) == n  # all nonzero states, each once
    assert seq[-1] == 1  # and back to the seed after exactly 2**w - 1 steps
    assert seq.min() >= 1 and seq.max() <= n


@pytest.mark.parametrize("width", range(8, 33))
def test_maximal_length_by_order_test(width):
    n = (1 << width) - 1
    assert _matpow_apply(width, TAPS[width], n, 1) == 1
    for q in _prime_factors(n):
        assert _matpow_apply(width, TAPS[width], n // q, 1) != 1


@pytest.mark.parametrize("width", [8, 13, 16, 24, 32])
def test_matches_independent_model(width):
    seed = (0x9E3779B9 % ((1 << width) - 1)) + 1
    ref = BitListGalois(width, TAPS[width], seed)
    lf = LFSRConfig(width=width, seed=seed).create()
    for _ in range(3000):
        assert lf.step() == ref.step()
        assert lf.state == ref.state


@settings(max_examples=40, deadline=None)
@given(st.integers(8, 32).flatmap(lambda w: st.tuples(
    st.just(w), st.integers(1, (1 << w) - 1), st.integers(1, w), st.integers(1, 700))))
def test_draw_semantics_and_vectorized_draws(args):
    w, seed, bits, n = args
    cfg = LFSRConfig(width=w, seed=seed, draw_bits=bits)
    a, b, ref = cfg.create(), cfg.create(), BitListGalois(w, TAPS[w], seed)
    scalar = []
    for _ in range(n):
        ref.step()
        d = a.draw()
        assert d == ref.state & ((1 << bits) - 1)  # one step, then the low bits of the new state
        scalar.append(d)
    np.testing.assert_array_equal(b.draws(n), scalar)
    assert a.state == b.state == ref.state


def test_save_restore_continues_identically():
    lf = LFSRConfig(width=20, seed=77, draw_bits=5).create()
    lf.draws(123)
    saved = lf.save()
    x = lf.draws(50)
    lf2 = LFSR.restore(saved)
    np.testing.assert_array_equal(lf2.draws(50), x)
    assert lf2.state == lf.state


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"width": 7}, "width must be an integer in 8..32"),
        ({"width": 33}, "width must be an integer in 8..32"),
        ({"width": 16.0}, "width must be"),
        ({"width": 8, "seed": 0}, "seed must be an integer in 1..255"),
        ({"width": 8, "seed": 256}, "seed must be an integer in 1..255"),
        ({"width": 8, "seed": 1, "draw_bits": 0}, "draw_bits must be an integer in 1..8"),
        ({"width": 8, "seed": 1, "draw_bits": 9}, "draw_bits must be an integer in 1..8"),
    ],
)
def test_init_wrong(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        LFSRConfig(**kwargs)


def test_illegal_states_rejected():
    lf = LFSRConfig(width=8, seed=1).create()
    with pytest.raises(ConfigError, match="LFSR state must be in 1..255"):
        lf.state = 0
    with pytest.raises(ConfigError, match="'config' and 'state'"):
        LFSR.restore({"state": 3})
    with pytest.raises(ConfigError, match="unknown field"):
        LFSRConfig.from_dict({"width": 8, "seed": 1, "draw_bits": 2, "poly": 3})
