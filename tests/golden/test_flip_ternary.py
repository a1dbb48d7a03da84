"""flip.py, ternary layers (SPEC.md §8.1): ``trit_flip_step`` equals its scalar definition over
every constant, at the accumulator's edges (2 and 32 bits), at the trit clamps, at the exact
thresholds, and with every noise mode."""

import pytest
import torch
from bitswarm.golden import ConfigError, FlipRuleConfig, LFSRConfig, trit_flip_step
from hypothesis import given, settings
from hypothesis import strategies as st


def scalar_reference(cfg, t, a, v, draws):
    """Element by element, straight from SPEC.md §8.1 in python ints."""
    lo, hi = -(1 << (cfg.acc_width - 1)), (1 << (cfg.acc_width - 1)) - 1
    t2, a2 = [], []
    for i in range(len(t)):
        x = a[i]
        if cfg.leak_shift:  # toward zero: the magnitude is shifted, the sign kept
            x = x - (abs(x) >> cfg.leak_shift) * (1 if x > 0 else -1)
        n = 2 * draws[i] + 1 - (1 << cfg.lfsr.draw_bits) if cfg.noise == "additive" else 0
        s = min(max(x + v[i] + n, lo), hi)
        step = 1 if s >= cfg.threshold else -1 if s <= -cfg.threshold else 0
        if cfg.noise == "stochastic" and draws[i] >= cfg.fire_prob:
            step = 0
        t2.append(min(1, max(-1, t[i] + step)))
        a2.append(-step * cfg.refractory if step else s)
    return t2, a2


@st.composite
def trit_cases(draw):
    aw = draw(st.sampled_from([2, 3, 4, 5, 8, 12, 16, 24, 31, 32]))
    hi = (1 << (aw - 1)) - 1
    thr = draw(st.one_of(st.integers(1, min(hi, 8)), st.integers(1, hi), st.just(hi)))
    db = draw(st.integers(1, 8))
    cfg = FlipRuleConfig(
        acc_width=aw,
        leak_shift=draw(st.sampled_from([0] + list(range(1, aw)))),
        threshold=thr,
        refractory=draw(st.integers(1 - thr, thr - 1)),
        noise=draw(st.sampled_from(["none", "additive", "stochastic"])),
        fire_prob=draw(st.integers(1, 1 << db)),
        lfsr=LFSRConfig(width=draw(st.integers(8, 32)), seed=draw(st.integers(1, 255)), draw_bits=db),
    )
    return cfg, draw(st.integers(1, 60)), draw(st.integers(0, 2**31))


def _acc(cfg, n, g):
    """Accumulators with the range's edges and the thresholds (both signs) well represented."""
    edges = torch.tensor([cfg.acc_min, cfg.acc_max, cfg.threshold - 1, cfg.threshold,
                          1 - cfg.threshold, -cfg.threshold, 0, -1, 1], dtype=torch.int64)
    edges = edges.clamp(cfg.acc_min, cfg.acc_max)
    rnd = torch.randint(cfg.acc_min, cfg.acc_max + 1, (n,), generator=g, dtype=torch.int64)
    pick = torch.randint(0, 2, (n,), generator=g).bool()
    return torch.where(pick, edges[torch.randint(0, len(edges), (n,), generator=g)], rnd).to(torch.int32)


@settings(max_examples=200, deadline=None)
@given(trit_cases())
def test_trit_flip_step_equals_scalar_definition_over_steps(case):
    cfg, n, seed = case
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(-1, 2, (n,), generator=g, dtype=torch.int8)
    a = _acc(cfg, n, g)
    lf, ref_lf = cfg.lfsr.create(), cfg.lfsr.create()
    rt, ra = t.tolist(), a.tolist()
    for _ in range(4):
        v = torch.randint(-1, 2, (n,), generator=g, dtype=torch.int8)
        draws = ref_lf.draws(n).tolist() if cfg.uses_lfsr else [0] * n
        t_old = t
        t, a, moved = trit_flip_step(cfg, t, a, v, lf)
        assert t.dtype == torch.int8 and a.dtype == torch.int32
        assert torch.equal(moved, t != t_old)
        rt, ra = scalar_reference(cfg, rt, ra, v.tolist(), draws)
        assert t.tolist() == rt and a.tolist() == ra
        assert int(a.min()) >= cfg.acc_min and int(a.max()) <= cfg.acc_max  # never leaves width
    assert lf.state == ref_lf.state  # one draw per trit per step, only when noise is used


def test_steps_one_level_and_clamps_at_both_ends():
    cfg = FlipRuleConfig(acc_width=6, threshold=3, refractory=0)
    t = torch.tensor([-1, 0, 1, -1, 0, 1, 0], dtype=torch.int8)
    a = torch.tensor([2, 2, 2, -2, -2, -2, 1], dtype=torch.int32)
    v = torch.tensor([1, 1, 1, -1, -1, -1, 1])
    t2, a2, moved = trit_flip_step(cfg, t, a, v)
    # up: -1 -> 0, 0 -> +1, +1 stays (fire at the clamp); down likewise; 2 < 3 does not fire
    assert t2.tolist() == [0, 1, 1, -1, -1, 0, 0]
    assert a2.tolist() == [0, 0, 0, 0, 0, 0, 2]  # every fire restarts at 0, clamped or not
    assert moved.tolist() == [True, True, False, False, True, True, False]


def test_exact_thresholds_fire_and_one_below_does_not():
    cfg = FlipRuleConfig(acc_width=8, threshold=5, refractory=0)
    t = torch.zeros(4, dtype=torch.int8)
    a = torch.tensor([4, 3, -4, -3], dtype=torch.int32)
    t2, a2, _ = trit_flip_step(cfg, t, a, torch.tensor([1, 1, -1, -1]))
    assert t2.tolist() == [1, 0, -1, 0] and a2.tolist() == [0, 4, 0, -4]


def test_refractory_is_evidence_against_undoing_the_step():
    cfg = FlipRuleConfig(acc_width=8, threshold=10, refractory=-4)  # hysteresis of 4 votes
    t = torch.tensor([0, 0, 1], dtype=torch.int8)
    a = torch.tensor([9, -9, 9], dtype=torch.int32)
    t2, a2, _ = trit_flip_step(cfg, t, a, torch.tensor([1, -1, 1]))
    assert t2.tolist() == [1, -1, 1] and a2.tolist() == [4, -4, 4]  # -dir * refractory


def test_saturates_at_both_ends_of_a_wide_accumulator():
    cfg = FlipRuleConfig(acc_width=32, threshold=(1 << 31) - 1, refractory=0, noise="additive",
                         lfsr=LFSRConfig(width=8, seed=255, draw_bits=8))
    lo, hi = cfg.acc_min, cfg.acc_max
    t = torch.tensor([0, 0, 1, -1], dtype=torch.int8)
    a = torch.tensor([lo, hi, lo + 1, hi - 1], dtype=torch.int32)
    lf = cfg.lfsr.create()
    draws = cfg.lfsr.create().draws(4).tolist()
    t2, a2, _ = trit_flip_step(cfg, t, a, torch.tensor([-1, 1, -1, 1]), lf)
    ref_t, ref_a = scalar_reference(cfg, t.tolist(), a.tolist(), [-1, 1, -1, 1], draws)
    assert t2.tolist() == ref_t and a2.tolist() == ref_a
    assert all(lo <= x <= hi for x in a2.tolist())  # clamps, never wraps


@pytest.mark.parametrize("width", [14, 15, 16, 17, 30, 31, 32])
@pytest.mark.parametrize("noise", ["none", "additive"])
@pytest.mark.parametrize("leak", [0, 1, 5])
def test_edges_at_the_work_dtype_boundaries(width, noise, leak):
    """Every vote on the range's ends and both thresholds, with the largest threshold and the
    smallest, at the widths where the implementation's work dtype changes."""
    hi = (1 << (width - 1)) - 1
    lo = -hi - 1
    for thr, rho in ((hi, 1 - hi), (hi, hi - 1), (1, 0)):
        cfg = FlipRuleConfig(acc_width=width, leak_shift=leak, threshold=thr, refractory=rho,
                             noise=noise, lfsr=LFSRConfig(width=16, seed=7, draw_bits=8))
        accs = [lo, lo + 1, -thr, 1 - thr, -1, 0, 1, thr - 1, thr, hi - 1, hi]
        cases = [(t, a, v) for t in (-1, 0, 1) for a in accs for v in (-1, 0, 1)]
        t = torch.tensor([c[0] for c in cases], dtype=torch.int8)
        a = torch.tensor([c[1] for c in cases], dtype=torch.int32)
        v = torch.tensor([c[2] for c in cases], dtype=torch.int8)
        draws = cfg.lfsr.create().draws(len(cases)).tolist() if cfg.uses_lfsr else [0] * len(cases)
        t2, a2, _ = trit_flip_step(cfg, t, a, v, cfg.lfsr.create() if cfg.uses_lfsr else None)
        ref_t, ref_a = scalar_reference(cfg, t.tolist(), a.tolist(), v.tolist(), draws)
        assert t2.tolist() == ref_t and a2.tolist() == ref_a


def test_two_bit_accumulator():
    cfg = FlipRuleConfig(acc_width=2, threshold=1, refractory=0)  # range -2..1
    t = torch.tensor([0, 0, 0, 1], dtype=torch.int8)
    a = torch.tensor([-2, 0, 1, 0], dtype=torch.int32)
    t2, a2, _ = trit_flip_step(cfg, t, a, torch.tensor([-1, 1, 0, -1]))
    assert t2.tolist() == [-1, 1, 1, 0] and a2.tolist() == [0, 0, 0, 0]


def test_leak_is_symmetric_toward_zero():
    cfg = FlipRuleConfig(acc_width=8, leak_shift=2, threshold=127, refractory=0)
    a = torch.tensor([-128, -100, -5, -1, 0, 1, 5, 100, 127], dtype=torch.int32)
    _, a2, _ = trit_flip_step(cfg, torch.zeros(9, dtype=torch.int8), a, torch.zeros(9))
    assert a2.tolist() == [-96, -75, -4, -1, 0, 1, 4, 75, 96]  # |a| - (|a| >> 2), sign kept


def test_additive_noise_has_zero_mean_and_odd_values():
    cfg = FlipRuleConfig(acc_width=16, threshold=1000, refractory=0, noise="additive",
                         lfsr=LFSRConfig(width=16, seed=1, draw_bits=3))
    n = (1 << 16) - 1  # one full period of the LFSR: every nonzero state once
    _, a2, _ = trit_flip_step(cfg, torch.zeros(n, dtype=torch.int8), torch.zeros(n, dtype=torch.int32),
                              torch.zeros(n), cfg.lfsr.create())
    assert set(a2.tolist()) == {-7, -5, -3, -1, 1, 3, 5, 7}
    assert abs(int(a2.sum())) <= 7  # one period: each 3-bit value ~equally often


def test_stochastic_gates_both_directions():
    cfg = FlipRuleConfig(acc_width=8, threshold=2, refractory=0, noise="stochastic", fire_prob=1,
                         lfsr=LFSRConfig(width=8, seed=1, draw_bits=1))
    draws = cfg.lfsr.create().draws(8).tolist()
    assert 0 < draws.count(0) < 8  # the case holds gated and passed fires
    t = torch.zeros(8, dtype=torch.int8)
    a = torch.tensor([1, -1] * 4, dtype=torch.int32)
    t2, a2, _ = trit_flip_step(cfg, t, a, torch.tensor([1, -1] * 4), cfg.lfsr.create())
    want = [(1 - 2 * (i % 2)) * (d == 0) for i, d in enumerate(draws)]  # fire iff d < 1
    assert t2.tolist() == want
    assert a2.tolist() == [0 if w else 2 - 4 * (i % 2) for i, w in enumerate(want)]


def test_zero_votes_and_no_noise_change_nothing_without_leak():
    cfg = FlipRuleConfig(acc_width=8, threshold=48, refractory=0)
    g = torch.Generator().manual_seed(0)
    t = torch.randint(-1, 2, (100,), generator=g, dtype=torch.int8)
    a = torch.randint(-47, 48, (100,), generator=g, dtype=torch.int32)
    t2, a2, moved = trit_flip_step(cfg, t, a, torch.zeros(100))
    assert torch.equal(t2, t) and torch.equal(a2, a) and not moved.any()


def test_wrong_arguments():
    cfg = FlipRuleConfig(acc_width=4, threshold=3)
    t = torch.zeros(3, dtype=torch.int8)
    a = torch.zeros(3, dtype=torch.int32)
    with pytest.raises(ConfigError, match="share a shape"):
        trit_flip_step(cfg, t, a, torch.zeros(4))
    with pytest.raises(ConfigError, match="votes must be -1, 0 or \\+1"):
        trit_flip_step(cfg, t, a, torch.tensor([0, -2, 0]))
    with pytest.raises(ConfigError, match="accumulators must lie in -8..7"):
        trit_flip_step(cfg, t, torch.tensor([0, -9, 0]), torch.zeros(3))
    with pytest.raises(ConfigError, match="int8 trits"):
        trit_flip_step(cfg, torch.tensor([0, 2, 0], dtype=torch.int8), a, torch.zeros(3))
    with pytest.raises(ConfigError, match="int8 trits"):
        trit_flip_step(cfg, torch.zeros(3, dtype=torch.uint8), a, torch.zeros(3))
    with pytest.raises(ConfigError, match=r"ternary layers need flip.refractory in -2..2 \(threshold 3\), not -3"):
        trit_flip_step(FlipRuleConfig(acc_width=4, threshold=3, refractory=-3), t, a, torch.zeros(3))
    noisy = FlipRuleConfig(acc_width=4, threshold=3, noise="stochastic")
    with pytest.raises(ConfigError, match="pass the LFSR"):
        trit_flip_step(noisy, t, a, torch.zeros(3))
    other = LFSRConfig(width=noisy.lfsr.width + 1, seed=1, draw_bits=noisy.lfsr.draw_bits).create()
    with pytest.raises(ConfigError, match="does not match the flip rule's"):
        trit_flip_step(noisy, t, a, torch.zeros(3), other)
