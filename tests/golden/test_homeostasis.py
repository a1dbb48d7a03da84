"""Tests of golden/homeostasis.py: integer threshold homeostasis."""

import pytest
import torch
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.homeostasis import HomeostasisConfig, batch_mean, homeostasis_step


def _reference(shift, theta, z, bound):
    """Plain-Python statement of the rule, one neuron at a time."""
    out = []
    B = len(z)
    for j, t in enumerate(theta):
        m = sum(row[j] for row in z) // B
        d = m - t
        step = (d + (1 << (shift - 1))) >> shift if shift else d
        out.append(max(-bound, min(bound, t + step)))
    return out


def test_init():
    assert HomeostasisConfig().shift == 3
    assert HomeostasisConfig.from_dict({"shift": 0}).to_dict() == {"shift": 0}


@pytest.mark.parametrize("shift", [-1, 17, 1.5, True, "2"])
def test_init_wrong_shift(shift):
    with pytest.raises(ConfigError, match="homeostasis.shift must be an integer in 0..16"):
        HomeostasisConfig(shift=shift)


def test_from_dict_unknown_field():
    with pytest.raises(ConfigError, match="unknown field"):
        HomeostasisConfig.from_dict({"shift": 1, "gain": 2})


def test_batch_mean_is_floor():
    z = torch.tensor([[1, -1], [2, -2]], dtype=torch.int64)  # means 1.5 and -1.5
    assert batch_mean(z).tolist() == [1, -2]


@pytest.mark.parametrize("shift", [0, 1, 3, 8])
def test_step_matches_reference(shift):
    g = torch.Generator().manual_seed(shift)
    bound = 500
    for _ in range(20):
        z = torch.randint(-700, 700, (7, 9), generator=g)
        theta = torch.randint(-bound, bound + 1, (9,), generator=g, dtype=torch.int32)
        got = homeostasis_step(HomeostasisConfig(shift), theta, z, bound)
        assert got.dtype == torch.int32
        assert got.tolist() == _reference(shift, theta.tolist(), z.tolist(), bound)


def test_rounding_half_up_and_clamp():
    cfg = HomeostasisConfig(shift=1)
    theta = torch.tensor([0, 0, 9], dtype=torch.int32)
    z = torch.tensor([[1, -1, 100]])  # d = 1 -> +1 ; d = -1 -> 0 ; clamp at 10
    assert homeostasis_step(cfg, theta, z, 10).tolist() == [1, 0, 10]


def test_converges_to_mean():
    cfg = HomeostasisConfig(shift=2)
    theta = torch.zeros(3, dtype=torch.int32)
    z = torch.tensor([[40, -80, 7]] * 4)
    for _ in range(40):
        theta = homeostasis_step(cfg, theta, z, 1000)
    # steps round to 0 once |m - theta| < 2**(shift-1): it settles within that dead zone
    assert all(abs(t - m) <= 2 for t, m in zip(theta.tolist(), [40, -80, 7], strict=True))
    assert homeostasis_step(HomeostasisConfig(0), theta, z, 1000).tolist() == [40, -80, 7]


def test_wrong_arguments():
    cfg = HomeostasisConfig()
    t = torch.zeros(2, dtype=torch.int32)
    with pytest.raises(ConfigError, match="integer tensor"):
        homeostasis_step(cfg, t, torch.zeros(3, 2), 10)
    with pytest.raises(ConfigError, match="columns"):
        homeostasis_step(cfg, t, torch.zeros(3, 4, dtype=torch.int64), 10)
    with pytest.raises(ConfigError, match="int32 vector"):
        homeostasis_step(cfg, t.to(torch.int64), torch.zeros(3, 2, dtype=torch.int64), 10)
    with pytest.raises(ConfigError, match="theta must lie"):
        homeostasis_step(cfg, t + 11, torch.zeros(3, 2, dtype=torch.int64), 10)
    with pytest.raises(ConfigError, match="bound must be"):
        homeostasis_step(cfg, t, torch.zeros(3, 2, dtype=torch.int64), -1)
    with pytest.raises(ConfigError, match="batch >= 1"):
        homeostasis_step(cfg, t, torch.zeros(0, 2, dtype=torch.int64), 10)
