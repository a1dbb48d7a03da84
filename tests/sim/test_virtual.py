"""sim/virtual.py: the virtual accelerator is bit-exact with golden Model.forward / predict."""

import numpy as np
import pytest
import torch
from bitswarm.golden import ConfigError, LayerConfig, Model, ModelConfig, save_model
from bitswarm.sim.popcount import available_backends, use_backend
from bitswarm.sim.virtual import VirtualAccelerator, layer_preact, pack_layer


def _model(arch, swarm, input_bits, ternary=False, seed=0, input_shape=None):
    """A random model with random thresholds (within z_bound / 4) and random invert bits."""
    cfg = ModelConfig.mlp(arch, input_shape=input_shape, swarm=swarm, input_bits=input_bits)
    if ternary:
        l0 = cfg.layers[0]
        first = LayerConfig(l0.n_in, l0.n_out, 1, l0.input_bits, "ternary", l0.output)
        cfg = ModelConfig(input_shape=cfg.input_shape, layers=(first,) + cfg.layers[1:])
    m = Model.random(cfg, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for i, lay in enumerate(cfg.layers):
        b = max(1, lay.z_bound // 4)
        m.theta[i] = torch.randint(-b, b + 1, (lay.n_out,), generator=g, dtype=torch.int32)
        if not lay.output:
            m.invert[i] = torch.randint(0, 2, (lay.n_out,), generator=g, dtype=torch.uint8)
    m.validate()
    return m


def _samples(model, batch, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, *model.cfg.input_shape), generator=g, dtype=torch.uint8)


def _assert_same(model, x, va):
    gtrace, vtrace = [], []
    want = model.forward(x, trace=gtrace)
    got = va.forward(x, trace=vtrace)
    assert got.dtype == np.int64 and got.shape == tuple(want.shape)
    assert len(vtrace) == len(gtrace)
    for i, (g, v) in enumerate(
        zip(gtrace, vtrace, strict=True)
    ):  # first mismatching layer is named
        np.testing.assert_array_equal(v, g.numpy(), err_msg=f"layer {i} differs")
    np.testing.assert_array_equal(got, want.numpy())
    np.testing.assert_array_equal(va.predict(x), model.predict(x).numpy())


ARCHS = [[64, 10], [100, 70, 3], [65, 128, 33, 2], [200, 64, 64, 10]]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: "-".join(map(str, a)))
@pytest.mark.parametrize("swarm", [1, 2, 4, 32])
@pytest.mark.parametrize("input_bits", [1, 8])
def test_forward_equals_golden(arch, swarm, input_bits):
    m = _model(arch, swarm, input_bits, seed=swarm * 10 + input_bits)
    _assert_same(m, _samples(m, 37, swarm), VirtualAccelerator(m))


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: "-".join(map(str, a)))
@pytest.mark.parametrize("input_bits", [1, 3, 8])
def test_ternary_first_layer_equals_golden(arch, input_bits):
    m = _model(arch, 1, input_bits, ternary=True, seed=input_bits)
    _assert_same(m, _samples(m, 29, input_bits), VirtualAccelerator(m))


@pytest.mark.parametrize("input_bits", [2, 5])
@pytest.mark.parametrize("swarm", [1, 8, 16])
def test_other_input_widths_and_swarms(input_bits, swarm):
    m = _model([90, 20, 4], swarm, input_bits, seed=input_bits + swarm)
    _assert_same(m, _samples(m, 11, 3), VirtualAccelerator(m))


@pytest.mark.parametrize("backend", ["avx512", "portable", "numpy"])
def test_every_backend(backend):
    if backend not in available_backends():
        pytest.skip(f"backend {backend!r} unavailable on this machine")
    for ternary in (False, True):
        m = _model([130, 40, 10], 1 if ternary else 4, 8, ternary=ternary, seed=7)
        x = _samples(m, 70, 7)
        with use_backend(backend):
            _assert_same(m, x, VirtualAccelerator(m))


def test_image_input_shape_and_batch_of_one():
    m = _model([64, 32, 10], 2, 8, input_shape=(8, 8), seed=3)
    x = _samples(m, 1, 4)
    assert x.shape == (1, 8, 8)
    _assert_same(m, x, VirtualAccelerator(m))
    _assert_same(m, x.numpy(), VirtualAccelerator(m))  # numpy samples too


def test_extreme_scores_at_z_bound():
    """All-ones pixels against all-ones weights reach z = z_bound exactly."""
    m = _model([300, 5], 32, 8, seed=1)
    m.weights[0] = torch.ones_like(m.weights[0])
    m.theta[0].zero_()
    x = torch.full((2, 300), 255, dtype=torch.uint8)
    got = VirtualAccelerator(m).forward(x)
    assert int(got.max()) == m.cfg.layers[0].z_bound == 300 * 32 * 255
    np.testing.assert_array_equal(got, m.forward(x).numpy())


def test_argmax_ties_go_to_lowest_index():
    m = _model([64, 16, 6], 1, 8, seed=2)
    w = m.weights[1]
    w[:, 4] = w[:, 1]  # classes 1 and 4 identical, 5 identical to 0
    w[:, 5] = w[:, 0]
    m.theta[1] = torch.tensor([0, 0, 16, 16, 0, 0], dtype=torch.int32)
    x = _samples(m, 50, 5)
    va = VirtualAccelerator(m)
    scores = va.forward(x)
    assert np.array_equal(scores[:, 1], scores[:, 4]) and np.array_equal(scores[:, 0], scores[:, 5])
    pred = va.predict(x)
    assert not np.isin(pred, [4, 5]).any()  # a tie never picks the higher index
    np.testing.assert_array_equal(pred, m.predict(x).numpy())


def test_from_file(tmp_path):
    m = _model([50, 12, 3], 4, 8, seed=4)
    save_model(m, tmp_path / "m.bsm")
    _assert_same(m, _samples(m, 9, 1), VirtualAccelerator.from_file(tmp_path / "m.bsm", threads=1))


def test_mutation_is_detected():
    """A broken accelerator (one weight bit flipped in the packed operand) must differ."""
    m = _model([64, 10], 1, 1, seed=6)
    x = _samples(m, 40, 6)
    va = VirtualAccelerator(m)
    np.testing.assert_array_equal(va.forward(x), m.forward(x).numpy())
    va.layers[0].weights[3, 0] ^= np.uint64(1 << 5)
    assert not np.array_equal(va.forward(x), m.forward(x).numpy())


def test_layer_preact_matches_golden_preact():
    from bitswarm.golden import pack_bits, preact

    cfg = LayerConfig(n_in=77, n_out=9, swarm=4, input_bits=1)
    g = torch.Generator().manual_seed(0)
    w = torch.randint(0, 2, cfg.weight_shape(), generator=g, dtype=torch.uint8)
    x = torch.randint(0, 2, (5, 77), generator=g, dtype=torch.uint8)
    layer = pack_layer(cfg, w, torch.zeros(9, dtype=torch.int32), torch.zeros(9, dtype=torch.uint8))
    np.testing.assert_array_equal(layer_preact(layer, [pack_bits(x)]), preact(cfg, x, w).numpy())


def test_wrong_inputs():
    m = _model([64, 10], 1, 8, seed=0)
    va = VirtualAccelerator(m)
    with pytest.raises(ConfigError, match="samples must be uint8"):
        va.forward(torch.zeros((2, 64), dtype=torch.float32))
    with pytest.raises(ConfigError, match="samples must have shape"):
        va.forward(torch.zeros((2, 63), dtype=torch.uint8))
    with pytest.raises(ConfigError, match="needs a bitswarm.golden.Model, not str"):
        VirtualAccelerator("model.bsm")
    cfg = m.cfg.layers[0]
    with pytest.raises(ConfigError, match=r"weights must have shape \(1, 10, 64\)"):
        pack_layer(cfg, torch.zeros((10, 64), dtype=torch.uint8), m.theta[0], m.invert[0])
    with pytest.raises(ConfigError, match=r"theta must have shape \(10,\)"):
        pack_layer(cfg, m.weights[0], torch.zeros(9, dtype=torch.int32), m.invert[0])
    layer = va.layers[0]
    with pytest.raises(ConfigError, match="layer takes 8 input planes, found 1"):
        layer_preact(layer, [np.zeros((2, 1), dtype=np.uint64)])
    with pytest.raises(ConfigError, match=r"input planes must be uint64 \[2, 1\]"):
        layer_preact(layer, [np.zeros((2, 1), dtype=np.uint64)] * 7 + [np.zeros((2, 2), np.uint64)])
