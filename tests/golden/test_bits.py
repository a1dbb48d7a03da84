"""bits.py: encoding, packed words, popcount, ternary packings — against their definitions."""

import numpy as np
import pytest
import torch
from bitswarm.golden import ConfigError
from bitswarm.golden.bits import (
    bits_to_pm1,
    n_words,
    pack_bits,
    pack_trits_base3,
    pack_trits_u32,
    planes_to_ternary,
    pm1_to_bits,
    ternary_to_planes,
    unpack_bits,
    unpack_trits_base3,
    unpack_trits_u32,
    xnor_popcount_dot,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays


def test_encoding():
    b = torch.tensor([0, 1, 1, 0], dtype=torch.uint8)
    assert bits_to_pm1(b).tolist() == [-1, 1, 1, -1]
    assert pm1_to_bits(bits_to_pm1(b)).tolist() == b.tolist()


def test_pack_bit_order_documented():
    bits = np.zeros(70, dtype=np.uint8)
    bits[[0, 3, 63, 64, 69]] = 1
    w = pack_bits(bits)
    assert w.dtype == np.uint64 and w.shape == (2,)
    assert int(w[0]) == (1 << 0) | (1 << 3) | (1 << 63)
    assert int(w[1]) == (1 << 0) | (1 << 5)  # padding bits 6..63 are zero


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 300)), elements=st.integers(0, 1)))
def test_pack_round_trip(bits):
    w = pack_bits(bits)
    assert w.shape == bits.shape[:-1] + (n_words(bits.shape[-1]),)
    np.testing.assert_array_equal(unpack_bits(w, bits.shape[-1]), bits)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_xnor_popcount_equals_pm1_dot(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, (4, n), dtype=np.uint8)
    w = rng.integers(0, 2, (5, n), dtype=np.uint8)
    want = (2 * a.astype(np.int64) - 1) @ (2 * w.astype(np.int64) - 1).T
    np.testing.assert_array_equal(xnor_popcount_dot(pack_bits(a), pack_bits(w), n), want)


def test_pack_rejects_non_bits():
    with pytest.raises(ConfigError, match="only 0 and 1"):
        pack_bits(np.array([0, 2]))
    with pytest.raises(ConfigError, match="expected 2 words"):
        unpack_bits(np.zeros(1, dtype=np.uint64), 70)


trits = arrays(np.int8, st.tuples(st.integers(1, 3), st.integers(1, 120)), elements=st.integers(-1, 1))


@settings(max_examples=80, deadline=None)
@given(trits)
def test_base3_round_trip_and_definition(t):
    b = pack_trits_base3(t)
    assert b.dtype == np.uint8 and b.shape[-1] == (t.shape[-1] + 4) // 5
    np.testing.assert_array_equal(unpack_trits_base3(b, t.shape[-1]), t)
    # definition: byte = sum (t_i + 1) * 3**i over the group of 5 (padding trits are 0 -> digit 1)
    g0 = list(t[0, :5] + 1) + [1] * (5 - min(5, t.shape[-1]))
    assert int(b[0, 0]) == sum(int(d) * 3**i for i, d in enumerate(g0))


@settings(max_examples=80, deadline=None)
@given(trits)
def test_u32_round_trip_and_definition(t):
    w = pack_trits_u32(t)
    assert w.dtype == np.uint32 and w.shape[-1] == (t.shape[-1] + 19) // 20
    np.testing.assert_array_equal(unpack_trits_u32(w, t.shape[-1]), t)
    g0 = list(t[0, :20] + 1) + [1] * (20 - min(20, t.shape[-1]))
    v = 0
    for d in g0:  # trit 0 is the most significant base-3 digit
        v = v * 3 + int(d)
    assert int(w[0, 0]) == -((-v << 32) // 3**20)


def test_u32_extremes_exact():
    # every all-equal word and the largest/smallest values survive the ceiling scaling
    for val in (-1, 0, 1):
        t = np.full(20, val, dtype=np.int8)
        np.testing.assert_array_equal(unpack_trits_u32(pack_trits_u32(t), 20), t)
    assert int(pack_trits_u32(np.full(20, 1))[0]) == 2**32 - 1
    assert int(pack_trits_u32(np.full(20, -1))[0]) == 0
    # the top trit sits in the MSBs: a leading +1 makes the word >= 2/3 of 2**32
    t = np.zeros(20, dtype=np.int8)
    t[0] = 1
    assert int(pack_trits_u32(t)[0]) >= (2 * 2**32) // 3


def test_ternary_planes_round_trip():
    t = np.array([-1, 0, 1, 1, 0, -1], dtype=np.int8)
    m, s = ternary_to_planes(t)
    assert m.tolist() == [1, 0, 1, 1, 0, 1] and s.tolist() == [0, 0, 1, 1, 0, 0]
    np.testing.assert_array_equal(planes_to_ternary(m, s), t)


def test_trit_errors():
    with pytest.raises(ConfigError, match="trits must be"):
        pack_trits_base3(np.array([2]))
    with pytest.raises(ConfigError, match="<= 242"):
        unpack_trits_base3(np.array([243]), 5)
    with pytest.raises(ConfigError, match="hold at most"):
        unpack_trits_u32(np.zeros(1, dtype=np.uint32), 21)


def _seed_pack_ternary(w):
    """Seed 002's ``pack_ternary``, written out as the seed has it (torch)."""
    q = torch.empty_like(w, dtype=torch.uint8)
    q[w < 0] = 0
    q[w == 0] = 1
    q[w > 0] = 2
    flat = q.flatten()
    pad = (-len(flat)) % 5
    if pad:
        flat = torch.cat([flat, torch.zeros(pad, dtype=torch.uint8, device=flat.device)])
    flat = flat.view(-1, 5)
    packed = (flat[:, 0] + flat[:, 1] * 3 + flat[:, 2] * 9 + flat[:, 3] * 27 + flat[:, 4] * 81).to(torch.uint8)
    return packed.cpu(), w.shape, pad


def _seed_unpack_ternary(packed, shape, pad=0):
    """Seed 002's ``unpack_ternary``."""
    p = packed.to(torch.int16)
    t0 = p % 3; p //= 3; t1 = p % 3; p //= 3  # noqa: E702
    t2 = p % 3; p //= 3; t3 = p % 3; p //= 3; t4 = p % 3  # noqa: E702
    out = torch.stack([t0, t1, t2, t3, t4], dim=1).flatten()
    if pad:
        out = out[:-pad]
    out = out.view(shape).to(torch.int8)
    out[out == 0] = -1
    out[out == 1] = 0
    out[out == 2] = 1
    return out


@pytest.mark.parametrize("shape", [(3, 7), (4, 5), (1, 1), (2, 3, 4)])
def test_pack_trits_seed_layout_is_byte_compatible_with_seed_002(shape):
    from bitswarm.golden.bits import pack_trits_base3, unpack_trits_base3

    g = torch.Generator().manual_seed(sum(shape))
    t = torch.randint(-1, 2, shape, generator=g).to(torch.int8)
    seed_bytes, _, pad = _seed_pack_ternary(t.float())
    ours = pack_trits_base3(t.numpy(), layout="seed")
    assert ours.dtype == np.uint8 and ours.tobytes() == seed_bytes.numpy().tobytes()
    back = unpack_trits_base3(ours, t.numel(), layout="seed").reshape(shape)
    assert np.array_equal(back, t.numpy())
    assert torch.equal(_seed_unpack_ternary(torch.from_numpy(ours), shape, pad), t)
    if t.numel() % 5:  # padding is digit 0 (the seed's), not the rows layout's digit 1
        assert ours[-1] < 3 ** (t.numel() % 5)


def test_pack_trits_bad_layout():
    from bitswarm.golden.bits import pack_trits_base3, unpack_trits_base3

    with pytest.raises(ConfigError, match="trit layout must be one of rows, seed, not 'x'"):
        pack_trits_base3(np.zeros(3, dtype=np.int8), layout="x")
    with pytest.raises(ConfigError, match="trit layout must be one of"):
        unpack_trits_base3(np.zeros(3, dtype=np.uint8), 3, layout="x")
