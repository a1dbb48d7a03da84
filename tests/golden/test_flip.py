"""flip.py: the integrate-and-fire rule equals its scalar definition, stays in width, saturates."""

import pytest
import torch
from bitswarm.golden import ConfigError, FlipRuleConfig, LFSRConfig, flip_step
from hypothesis import given, settings
from hypothesis import strategies as st


def scalar_reference(cfg, w, a, v, draws):
    """Element by element, straight from SPEC.md §8 in python ints."""
    lo, hi = -(1 << (cfg.acc_width - 1)), (1 << (cfg.acc_width - 1)) - 1
    half = 1 << (cfg.lfsr.draw_bits - 1)
    w2, a2 = [], []
    for i in range(len(w)):
        x = a[i]
        if cfg.leak_shift:
            x = x - (x >> cfg.leak_shift)  # python >> is an arithmetic (floor) shift
        s = x + v[i] + (draws[i] - half if cfg.noise == "additive" else 0)
        s = min(max(s, lo), hi)
        fire = s >= cfg.threshold and (cfg.noise != "stochastic" or draws[i] < cfg.fire_prob)
        w2.append(w[i] ^ int(fire))
        a2.append(cfg.refractory if fire else s)
    return w2, a2


@st.composite
def flip_cases(draw):
    aw = draw(st.integers(2, 16))
    hi = (1 << (aw - 1)) - 1
    thr = draw(st.integers(1, hi))
    db = draw(st.integers(1, 8))
    cfg = FlipRuleConfig(
        acc_width=aw,
        leak_shift=draw(st.sampled_from([0] + list(range(1, aw)))),
        threshold=thr,
        refractory=draw(st.integers(-(hi + 1), thr - 1)),
        noise=draw(st.sampled_from(["none", "additive", "stochastic"])),
        fire_prob=draw(st.integers(1, 1 << db)),
        lfsr=LFSRConfig(width=draw(st.integers(8, 32)), seed=draw(st.integers(1, 255)), draw_bits=db),
    )
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**31))
    return cfg, n, seed


@settings(max_examples=120, deadline=None)
@given(flip_cases())
def test_flip_step_equals_scalar_definition_over_steps(case):
    cfg, n, seed = case
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, 2, (n,), generator=g, dtype=torch.uint8)
    a = torch.randint(cfg.acc_min, cfg.acc_max + 1, (n,), generator=g, dtype=torch.int32)
    lf, ref_lf = cfg.lfsr.create(), cfg.lfsr.create()
    rw, ra = w.tolist(), a.tolist()
    for _ in range(4):
        v = torch.randint(-1, 2, (n,), generator=g, dtype=torch.int8)
        draws = ref_lf.draws(n).tolist() if cfg.uses_lfsr else [0] * n
        w_old = w
        w, a, fired = flip_step(cfg, w, a, v, lf)
        assert torch.equal(fired, w != w_old)
        rw, ra = scalar_reference(cfg, rw, ra, v.tolist(), draws)
        assert w.tolist() == rw and a.tolist() == ra
        assert int(a.min()) >= cfg.acc_min and int(a.max()) <= cfg.acc_max  # never leaves width
    assert lf.state == ref_lf.state  # one draw per element per step, only when noise is used


def test_saturates_at_both_ends():
    cfg = FlipRuleConfig(acc_width=4, threshold=7, refractory=-8)  # range -8..7
    w = torch.zeros(2, dtype=torch.uint8)
    a = torch.tensor([-8, 6], dtype=torch.int32)
    w2, a2, f = flip_step(cfg, w, a, torch.tensor([-1, 1]))
    assert a2.tolist() == [-8, -8] and w2.tolist() == [0, 1] and f.tolist() == [False, True]
    cfg = FlipRuleConfig(acc_width=4, threshold=7, refractory=0, noise="additive",
                         lfsr=LFSRConfig(width=8, seed=255, draw_bits=4))
    a = torch.tensor([-8, -8, -8, -8], dtype=torch.int32)
    _, a3, _ = flip_step(cfg, torch.zeros(4, dtype=torch.uint8), a, -torch.ones(4), cfg.lfsr.create())
    assert int(a3.min()) >= -8  # vote -1 plus negative noise clamps, never wraps


def test_leak_is_arithmetic_shift():
    cfg = FlipRuleConfig(acc_width=8, leak_shift=2, threshold=127, refractory=0)
    a = torch.tensor([-128, -5, -1, 0, 1, 5, 100], dtype=torch.int32)
    _, a2, _ = flip_step(cfg, torch.zeros(7, dtype=torch.uint8), a, torch.zeros(7))
    assert a2.tolist() == [x - (x >> 2) for x in a.tolist()] == [-96, -3, 0, 0, 1, 4, 75]


def test_fire_flips_and_sets_refractory():
    cfg = FlipRuleConfig(acc_width=6, threshold=3, refractory=-2)
    w = torch.tensor([0, 1, 1], dtype=torch.uint8)
    a = torch.tensor([2, 2, 1], dtype=torch.int32)
    w2, a2, f = flip_step(cfg, w, a, torch.tensor([1, 1, 1]))
    assert w2.tolist() == [1, 0, 1] and a2.tolist() == [-2, -2, 2] and f.tolist() == [True, True, False]


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"acc_width": 1}, "acc_width must be an integer in 2..32"),
        ({"acc_width": 33}, "acc_width must be"),
        ({"acc_width": 8, "leak_shift": 8}, "leak_shift must be 0 or in 1..7"),
        ({"acc_width": 8, "leak_shift": -1}, "leak_shift must be"),
        ({"acc_width": 8, "threshold": 0}, "threshold must be in 1..127"),
        ({"acc_width": 8, "threshold": 128}, "threshold must be in 1..127"),
        ({"acc_width": 8, "threshold": 5, "refractory": 5}, "refractory must be in -128..4"),
        ({"acc_width": 8, "threshold": 5, "refractory": -129}, "refractory must be in"),
        ({"noise": "gauss"}, "noise must be one of"),
        ({"fire_prob": 0}, "fire_prob must be in 1..4"),
        ({"fire_prob": 5}, "fire_prob must be in 1..4"),
        ({"lfsr": 3}, "flip.lfsr must be an LFSRConfig"),
    ],
)
def test_init_wrong(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        FlipRuleConfig(**kwargs)


def test_wrong_arguments():
    cfg = FlipRuleConfig(acc_width=4, threshold=3)
    w = torch.zeros(3, dtype=torch.uint8)
    a = torch.zeros(3, dtype=torch.int32)
    with pytest.raises(ConfigError, match="share a shape"):
        flip_step(cfg, w, a, torch.zeros(4))
    with pytest.raises(ConfigError, match="votes must be -1, 0 or \\+1"):
        flip_step(cfg, w, a, torch.tensor([0, 2, 0]))
    with pytest.raises(ConfigError, match="accumulators must lie in -8..7"):
        flip_step(cfg, w, torch.tensor([0, 9, 0]), torch.zeros(3))
    noisy = FlipRuleConfig(acc_width=4, threshold=3, noise="additive")
    with pytest.raises(ConfigError, match="pass the LFSR"):
        flip_step(noisy, w, a, torch.zeros(3))
    other = LFSRConfig(width=noisy.lfsr.width + 1, seed=1, draw_bits=noisy.lfsr.draw_bits).create()
    with pytest.raises(ConfigError, match="does not match the flip rule's"):
        flip_step(noisy, w, a, torch.zeros(3), other)


def test_config_round_trip():
    cfg = FlipRuleConfig(acc_width=12, leak_shift=3, threshold=100, refractory=-50,
                         noise="stochastic", fire_prob=3, lfsr=LFSRConfig(24, 99, 2))
    assert FlipRuleConfig.from_dict(cfg.to_dict()) == cfg
