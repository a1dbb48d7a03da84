"""Tests of golden/onchip.py: the fully integer training step (SPEC.md §12)."""

import dataclasses

import pytest
import torch
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.flip import FlipRuleConfig, flip_step
from bitswarm.golden.layer import preact
from bitswarm.golden.lfsr import LFSR, LFSRConfig
from bitswarm.golden.model import Model, ModelConfig, model_from_bytes, model_to_bytes
from bitswarm.golden.onchip import (
    OnChipConfig,
    input_signs,
    onchip_step,
    onchip_train,
    output_error,
    preact_int,
    rival,
)
from torch.overrides import TorchFunctionMode

FLIP = FlipRuleConfig(acc_width=6, threshold=3, noise="additive",
                      lfsr=LFSRConfig(width=16, seed=7, draw_bits=2))


def _model(arch=(64, 32, 10), swarm=4, flip=FLIP, seed=1):
    mc = ModelConfig.mlp(list(arch), swarm=swarm, flip=flip)
    m = Model.random(mc, seed)
    m.acc = [torch.zeros(lay.weight_shape(), dtype=torch.int32) for lay in mc.layers]
    m.lfsr_state = flip.lfsr.seed
    return m


def _data(n, n_in, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, n_in), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g))


class NoFloat(TorchFunctionMode):
    """Raise on any torch call that yields a floating-point tensor."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))

        def check(o):
            if isinstance(o, torch.Tensor) and o.dtype.is_floating_point:
                raise AssertionError(f"floating-point tensor from {func}")
            if isinstance(o, (list, tuple)):
                for t in o:
                    check(t)

        check(out)
        return out


def test_no_float_mode_catches_floats():
    with pytest.raises(AssertionError, match="floating-point"), NoFloat():
        torch.ones(3) * 2


def test_step_runs_without_any_float():
    m = _model()
    x, y = _data(20, 64)
    cfg = OnChipConfig(margin=4, windows=(40,), homeostasis_shift=3)
    with NoFloat():
        res = onchip_train(cfg, m, x, y)
    assert sum(sum(r.flips) for r in res) > 0
    for r in res:
        assert all(not e.dtype.is_floating_point for e in r.errors)


def test_preact_int_equals_preact():
    m = _model()
    x, _ = _data(5, 64)
    h = x
    for i, lay in enumerate(m.cfg.layers):
        ref = preact(lay, h, m.weights[i])
        for b in range(len(h)):
            assert torch.equal(preact_int(lay, h[b], m.weights[i]), ref[b])
        h = (ref >= 0).to(torch.uint8)


def test_output_error_top_rival_margin_rule():
    s = torch.tensor([5, 9, 7, 1])
    assert output_error(s, 1, 0).tolist() == [0, 0, 0, 0]
    assert output_error(s, 1, 2).tolist() == [0, 0, 0, 0]  # 7 + 2 > 9 is false
    assert output_error(s, 1, 3).tolist() == [0, 1, -1, 0]
    assert output_error(s, 1, 5).tolist() == [0, 1, -1, 0]  # 5 + 5 > 9 too, but only the rival 2
    assert output_error(s, 0, 0).tolist() == [1, -1, 0, 0]  # rival 1 (9), not 2 (7)
    assert output_error(s, 3, 0).tolist() == [0, -1, 0, 1]
    assert output_error(torch.tensor([3, 3]), 1, 0).tolist() == [0, 0]  # ties do not offend at margin 0
    assert output_error(torch.tensor([3, 3]), 1, 1).tolist() == [-1, 1]
    # ties between rivals go to the lowest index, the target excluded
    assert output_error(torch.tensor([4, 6, 6, 6]), 1, 1).tolist() == [0, 1, -1, 0]
    assert output_error(torch.tensor([4, 6, 6, 6]), 0, 0).tolist() == [1, -1, 0, 0]
    assert output_error(torch.tensor([6, 4, 6, 6]), 0, 1).tolist() == [1, 0, -1, 0]
    assert rival(torch.tensor([6, 4, 6, 6]), 0) == 2 and rival(torch.tensor([1, 9, 9]), 2) == 1


def test_output_error_equals_definition_on_random_scores():
    g = torch.Generator().manual_seed(3)
    for _ in range(300):
        c = int(torch.randint(2, 7, (1,), generator=g))
        s = torch.randint(-4, 5, (c,), generator=g)
        t, margin = int(torch.randint(0, c, (1,), generator=g)), int(torch.randint(0, 4, (1,), generator=g))
        r = min(k for k in range(c) if k != t and int(s[k]) == max(int(s[j]) for j in range(c) if j != t))
        want = [0] * c
        if int(s[r]) + margin > int(s[t]):
            want[r], want[t] = -1, 1
        assert output_error(s, t, margin).tolist() == want


def test_input_signs():
    lay8 = ModelConfig.mlp([4, 2], input_bits=8).layers[0]
    x = torch.tensor([0, 1, 127, 128], dtype=torch.uint8)
    assert input_signs(lay8, x, "msb").tolist() == [0, 0, 0, 1]
    assert input_signs(lay8, x, "nonzero").tolist() == [0, 1, 1, 1]
    lay1 = ModelConfig.mlp([4, 2], input_bits=1).layers[0]
    assert input_signs(lay1, torch.tensor([0, 1, 1, 0], dtype=torch.uint8), "msb").tolist() == [-1, 1, 1, -1]


def test_step_matches_its_definition():
    """One step written out by hand with explicit loops over the definition (§12)."""
    m = _model(arch=(6, 5, 3), swarm=2)
    m.theta[0] = torch.tensor([10, -20, 0, 50, -5], dtype=torch.int32)
    m.invert[0] = torch.tensor([0, 1, 0, 1, 0], dtype=torch.uint8)
    cfg = OnChipConfig(margin=3, windows=(400,), theta_step=2, out_theta_step=1, homeostasis_shift=2)
    x = torch.tensor([0, 200, 130, 17, 255, 128], dtype=torch.uint8)
    ref = Model(m.cfg, [w.clone() for w in m.weights], [t.clone() for t in m.theta],
                [v.clone() for v in m.invert], [a.clone() for a in m.acc], m.lfsr_state)
    label = 2
    res = onchip_step(cfg, m, x, label)
    W = [(w.to(torch.int64) * 2 - 1) for w in ref.weights]
    xi = [int(v) for v in x]
    z0 = [sum(xi[k] * int(W[0][s, j, k]) for s in range(2) for k in range(6)) for j in range(5)]
    a = [int((z0[j] - int(ref.theta[0][j]) >= 0) ^ int(ref.invert[0][j])) for j in range(5)]
    z1 = [sum((2 * a[k] - 1) * int(W[1][s, j, k]) for s in range(2) for k in range(5)) for j in range(3)]
    sc = [z1[c] - int(ref.theta[1][c]) for c in range(3)]
    others = [c for c in range(3) if c != label]
    r = min(c for c in others if sc[c] == max(sc[k] for k in others))
    e1 = [0, 0, 0]
    if sc[r] + 3 > sc[label]:
        e1[r], e1[label] = -1, 1
    e0 = []
    for k in range(5):
        d = sum(e1[j] * int(W[1][s, j, k]) for s in range(2) for j in range(3))
        sg = (d > 0) - (d < 0)
        gate = abs(z0[k] - int(ref.theta[0][k])) <= 400
        e0.append(sg * (1 - 2 * int(ref.invert[0][k])) if gate else 0)
    assert res.errors[1].tolist() == e1 and res.errors[0].tolist() == e0
    lfsr = LFSR(FLIP.lfsr, ref.lfsr_state)
    xs = [[(v >> 7) & 1 for v in xi], [2 * v - 1 for v in a]]
    for i, (e, n_in) in enumerate(((e0, 6), (e1, 5))):
        v = torch.tensor([[[-e[j] * xs[i][k] * int(W[i][s, j, k]) for k in range(n_in)]
                           for j in range(len(e))] for s in range(2)])
        w2, a2, _ = flip_step(FLIP, ref.weights[i], ref.acc[i], v, lfsr)
        assert torch.equal(m.weights[i], w2) and torch.equal(m.acc[i], a2)
    assert m.lfsr_state == lfsr.state
    th0 = [max(-m.cfg.layers[0].z_bound, min(m.cfg.layers[0].z_bound,
               int(ref.theta[0][j]) + ((z0[j] - int(ref.theta[0][j])) >> 2) - 2 * e0[j])) for j in range(5)]
    assert m.theta[0].tolist() == th0
    assert m.theta[1].tolist() == [int(ref.theta[1][c]) - e1[c] for c in range(3)]


def test_votes_say_wrong_bits():
    """A bit that opposes the error's direction gets +1 (flip_step: 'wrong')."""
    flip = FlipRuleConfig(acc_width=4, threshold=1, noise="none")
    m = _model(arch=(2, 2), swarm=1, flip=flip)
    m.weights[0] = torch.tensor([[[1, 0], [1, 1]]], dtype=torch.uint8)
    x = torch.tensor([255, 255], dtype=torch.uint8)  # both inputs vote (msb set), z = [0, 510]
    onchip_step(OnChipConfig(margin=0, windows=()), m, x, 0)  # class 1 offends; e = [+1, -1]
    # row 0 wants +1 weights: bit (0, 1) = 0 is wrong -> flips; row 1 wants -1: both bits flip
    assert m.weights[0].tolist() == [[[1, 1], [0, 0]]]


def test_config_validation_and_meta():
    with pytest.raises(ConfigError, match="margin"):
        OnChipConfig(margin=-1)
    with pytest.raises(ConfigError, match="windows"):
        OnChipConfig(windows=(1, -2))
    with pytest.raises(ConfigError, match="theta_step"):
        OnChipConfig(theta_step=1 << 17)
    with pytest.raises(ConfigError, match="input_sign"):
        OnChipConfig(input_sign="sign")
    with pytest.raises(ConfigError, match="homeostasis_shift"):
        OnChipConfig(homeostasis_shift=31)
    m = _model()
    with pytest.raises(ConfigError, match="one window per hidden layer"):
        onchip_step(OnChipConfig(windows=()), m, torch.zeros(64, dtype=torch.uint8), 0)
    with pytest.raises(ConfigError, match="label"):
        onchip_step(OnChipConfig(windows=(1,)), m, torch.zeros(64, dtype=torch.uint8), 10)
    cfg = OnChipConfig(margin=7, windows=(3,), theta_step=0, input_sign="nonzero", homeostasis_shift=4)
    assert OnChipConfig.from_dict(cfg.to_dict()) == cfg
    mc = dataclasses.replace(m.cfg, meta={**m.cfg.meta, **cfg.to_meta()})
    m2 = model_from_bytes(model_to_bytes(Model(mc, m.weights, m.theta, m.invert, m.acc, m.lfsr_state)))
    assert OnChipConfig.from_meta(m2.cfg.meta) == cfg
    with pytest.raises(ConfigError, match="no 'onchip'"):
        OnChipConfig.from_meta({})


def test_run_is_deterministic_and_resumable():
    x, y = _data(30, 64, seed=3)
    cfg = OnChipConfig(margin=4, windows=(40,), homeostasis_shift=3)
    a, b = _model(), _model()
    onchip_train(cfg, a, x, y)
    onchip_train(cfg, b, x[:12], y[:12])
    b = model_from_bytes(model_to_bytes(b))
    onchip_train(cfg, b, x[12:], y[12:])
    assert a.equal(b)
