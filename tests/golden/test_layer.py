"""layer.py: every integer formula equals its mathematical definition."""

import numpy as np
import pytest
import torch
from bitswarm.golden import ConfigError, LayerConfig, argmax, layer_forward, preact, preact_packed
from bitswarm.golden.layer import exact_matmul, signed_width, threshold
from hypothesis import given, settings
from hypothesis import strategies as st


def _case(seed, n, m, swarm, bits, kind):
    g = torch.Generator().manual_seed(seed)
    cfg = LayerConfig(n_in=n, n_out=m, swarm=swarm, input_bits=bits, weights=kind)
    x = torch.randint(0, 1 << bits, (3, n), generator=g, dtype=torch.uint8)
    if kind == "binary":
        w = torch.randint(0, 2, cfg.weight_shape(), generator=g, dtype=torch.uint8)
    else:
        w = torch.randint(-1, 2, cfg.weight_shape(), generator=g, dtype=torch.int8)
    return cfg, x, w


def _definition(cfg, x, w):
    """The mathematical definition, in plain python ints."""
    x = x.tolist()
    out = []
    for row in x:
        vals = [(2 * v - 1) if cfg.input_bits == 1 else v for v in row]
        zs = []
        for j in range(cfg.n_out):
            if cfg.weights == "binary":
                z = sum(
                    vals[k] * (2 * int(w[s, j, k]) - 1)
                    for s in range(cfg.swarm)
                    for k in range(cfg.n_in)
                )
            else:
                z = sum(vals[k] * int(w[j, k]) for k in range(cfg.n_in))
            zs.append(z)
        out.append(zs)
    return np.array(out, dtype=np.int64)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**31),
    st.integers(1, 90),
    st.integers(1, 6),
    st.sampled_from([1, 2, 4, 8, 16, 32]),
    st.sampled_from([1, 2, 5, 8]),
)
def test_binary_layer_equals_definition(seed, n, m, swarm, bits):
    cfg, x, w = _case(seed, n, m, swarm, bits, "binary")
    want = _definition(cfg, x, w)
    np.testing.assert_array_equal(preact(cfg, x, w).numpy(), want)
    np.testing.assert_array_equal(preact_packed(cfg, x, w), want)
    assert np.abs(want).max() <= cfg.z_bound


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 90), st.integers(1, 6), st.sampled_from([1, 3, 8]))
def test_ternary_layer_equals_definition(seed, n, m, bits):
    cfg, x, w = _case(seed, n, m, 1, bits, "ternary")
    want = _definition(cfg, x, w)
    np.testing.assert_array_equal(preact(cfg, x, w).numpy(), want)
    np.testing.assert_array_equal(preact_packed(cfg, x, w), want)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 200), st.sampled_from([2, 4, 8, 16, 32]))
def test_swarm_is_sum_of_binary_layers_and_2s_plus_1_levels(seed, n, swarm):
    cfg, x, w = _case(seed, n, 4, swarm, 1, "binary")
    one = LayerConfig(n_in=n, n_out=4)
    planes = sum(preact(one, x, w[s : s + 1]) for s in range(swarm))
    assert torch.equal(preact(cfg, x, w), planes)
    levels = (w.to(torch.int64) * 2 - 1).sum(0)  # integer weights with 2S+1 levels
    assert int(levels.abs().max()) <= swarm and int(levels.remainder(2).ne(swarm % 2).sum()) == 0
    assert torch.equal(preact(cfg, x, w), (2 * x.to(torch.int64) - 1) @ levels.T)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 200), st.integers(2, 8))
def test_bit_planes_equal_integer_mac(seed, n, bits):
    cfg, x, w = _case(seed, n, 3, 1, bits, "binary")
    mac = x.to(torch.int64) @ (2 * w[0].to(torch.int64) - 1).T
    assert torch.equal(preact(cfg, x, w), mac)
    np.testing.assert_array_equal(preact_packed(cfg, x, w), mac.numpy())


@pytest.mark.parametrize("swarm", [1, 32])
def test_exact_at_the_bound(swarm):
    # Largest layers: N = 65536 unsigned 8-bit inputs. swarm 1: bound 16,711,680 < 2**24 takes
    # the float32 path; swarm 32: bound 534,773,760 takes float64. All-max inputs and all-(+1)
    # weights reach +bound and -bound exactly; a random row checks partial sums near the bound.
    n = 65536
    cfg = LayerConfig(n_in=n, n_out=3, swarm=swarm, input_bits=8)
    w = torch.zeros(cfg.weight_shape(), dtype=torch.uint8)
    w[:, 0] = 1
    w[:, 2, ::3] = 1
    x = torch.full((2, n), 255, dtype=torch.uint8)
    x[1, ::7] = 254
    z = preact(cfg, x, w)
    assert int(z[0, 0]) == cfg.z_bound and int(z[0, 1]) == -cfg.z_bound
    want = x.to(torch.int64) @ (w.to(torch.int64) * 2 - 1).sum(0).T
    assert torch.equal(z, want)


def test_exact_matmul_refuses_unrepresentable_bound():
    with pytest.raises(ConfigError, match="2\\*\\*53"):
        exact_matmul(torch.ones(1, 1, dtype=torch.int32), torch.ones(1, 1, dtype=torch.int32), 2**53)


def test_float32_precision_setting_is_respected():
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        cfg, x, w = _case(3, 64, 4, 4, 8, "binary")
        assert torch.equal(preact(cfg, x, w), torch.from_numpy(preact_packed(cfg, x, w)))
    finally:
        torch.set_float32_matmul_precision(old)


def test_threshold_and_invert():
    z = torch.tensor([[-3, 0, 2, 5]])
    theta = torch.tensor([-3, 1, 2, 6], dtype=torch.int32)
    inv = torch.tensor([0, 0, 1, 1], dtype=torch.uint8)
    # z - theta = [0, -1, 0, -1] -> fire [1, 0, 1, 0] -> xor invert -> [1, 0, 0, 1]
    assert threshold(z, theta, inv).tolist() == [[1, 0, 0, 1]]


def test_output_layer_scores_are_z_minus_theta():
    cfg, x, w = _case(1, 20, 5, 2, 1, "binary")
    out = LayerConfig(n_in=20, n_out=5, swarm=2, output=True)
    theta = torch.arange(5, dtype=torch.int32)
    s = layer_forward(out, x, w, theta, torch.zeros(5, dtype=torch.uint8))
    assert torch.equal(s, preact(cfg, x, w) - theta)


def test_argmax_ties_go_to_lowest_index():
    s = torch.tensor([[1, 5, 5, 0], [7, 7, 7, 7], [-2, -1, -1, -3], [0, 0, 0, 9]])
    assert argmax(s).tolist() == [1, 0, 1, 3]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=2, max_size=12))
def test_argmax_definition(row):
    assert int(argmax(torch.tensor([row]))[0]) == row.index(max(row))


def test_widths():
    cfg = LayerConfig(n_in=64, n_out=10, swarm=4, input_bits=8)
    assert cfg.z_bound == 64 * 4 * 255
    assert cfg.z_width == signed_width(2 * cfg.z_bound)
    lo, hi = -(1 << (cfg.z_width - 1)), (1 << (cfg.z_width - 1)) - 1
    assert lo <= -2 * cfg.z_bound and 2 * cfg.z_bound <= hi
    assert signed_width(1) == 2 and signed_width(127) == 8 and signed_width(128) == 9


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"n_in": 0, "n_out": 1}, "n_in must be an integer in 1..65536"),
        ({"n_in": 4, "n_out": 65537}, "n_out must be"),
        ({"n_in": 4.0, "n_out": 2}, "n_in must be"),
        ({"n_in": 4, "n_out": 2, "swarm": 3}, "swarm must be one of"),
        ({"n_in": 4, "n_out": 2, "swarm": True}, "swarm must be one of"),
        ({"n_in": 4, "n_out": 2, "input_bits": 9}, "input_bits must be"),
        ({"n_in": 4, "n_out": 2, "weights": "float"}, "weights must be one of"),
        ({"n_in": 4, "n_out": 2, "weights": "ternary", "swarm": 2}, "ternary layers need swarm 1"),
        ({"n_in": 4, "n_out": 2, "output": 1}, "output must be true or false"),
    ],
)
def test_init_wrong(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        LayerConfig(**kwargs)


def test_wrong_inputs():
    cfg = LayerConfig(n_in=4, n_out=2)
    w = torch.zeros(cfg.weight_shape(), dtype=torch.uint8)
    with pytest.raises(ConfigError, match="shape \\[batch, 4\\]"):
        preact(cfg, torch.zeros(2, 5, dtype=torch.uint8), w)
    with pytest.raises(ConfigError, match="integer tensor"):
        preact(cfg, torch.zeros(2, 4), w)
    with pytest.raises(ConfigError, match="weights must have shape"):
        preact(cfg, torch.zeros(2, 4, dtype=torch.uint8), torch.zeros(1, 2, 5, dtype=torch.uint8))


def test_config_round_trip():
    cfg = LayerConfig(n_in=7, n_out=3, swarm=8, input_bits=8)
    assert LayerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown field"):
        LayerConfig.from_dict({**cfg.to_dict(), "bias": 1})
    with pytest.raises(ConfigError, match="missing field"):
        LayerConfig.from_dict({"n_in": 3})
