"""Tests of the rule interface (train/rules.py) and the rules (rule_golden.py, rule_ref.py)."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.layer import effective_weights, preact, threshold
from bitswarm.golden.model import quantize_input
from bitswarm.train import RULES, NetSpec, get_rule, load_dataset
from bitswarm.train.rule_golden import GoldenRule, vote_from_grad
from bitswarm.train.rule_ref import fold_batchnorm
from bitswarm.train.rules import parse_options
from bitswarm.train.trainer import DEFAULT_FLIP, default_flip


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits")
    return torch.from_numpy(d.x_train), torch.from_numpy(d.y_train)


def _spec(swarm=1, input_bits=8, seed=0, flip=DEFAULT_FLIP):
    return NetSpec((64, 32, 10), (8, 8), swarm, input_bits, seed, flip)


def test_registry():
    get_rule("golden")
    assert {"golden", "ste-adam", "bop", "float"} <= set(RULES)
    assert not RULES["float"].exportable and RULES["golden"].exportable
    with pytest.raises(ConfigError, match="unknown rule 'nope'"):
        get_rule("nope")


def test_parse_options():
    o = parse_options(GoldenRule.Options, {"vote_pct": "120", "temperature": 3})
    assert o.vote_pct == 120 and o.temperature == 3.0
    with pytest.raises(ConfigError, match=r"unknown rule option\(s\) \['lr'\]"):
        parse_options(GoldenRule.Options, {"lr": "1"})
    with pytest.raises(ConfigError, match="vote_pct must be a int"):
        parse_options(GoldenRule.Options, {"vote_pct": "1.5"})
    with pytest.raises(ConfigError, match="window_pct must be in"):
        parse_options(GoldenRule.Options, {"window_pct": "0"})


def test_vote_from_grad_semantics():
    # G > 0 means descent lowers the weight: a +1 bit is wrong (+1), a -1 bit is right (-1).
    g = torch.tensor([[10, -10, 1, 0]], dtype=torch.int64)
    bits = torch.tensor([[[1, 1, 1, 1]], [[0, 0, 0, 0]]], dtype=torch.uint8)
    v = vote_from_grad(g, bits, 50)  # thr = floor(0.5 * 21 / 4) = 2: |1| and 0 are insignificant
    assert v.tolist() == [[[1, -1, 0, 0]], [[-1, 1, 0, 0]]]
    assert vote_from_grad(g, bits, 0).tolist()[0] == [[1, -1, 1, 0]]
    with pytest.raises(ConfigError):
        vote_from_grad(g.to(torch.int32), bits, 50)


def test_routed_swarm_votes():
    """swarm_votes=routed: a weight's +1 ("wrong") vote goes to its wrong plane with the highest
    accumulator (ties: lowest plane), the other wrong planes get 0, "right" planes keep -1."""
    g = torch.tensor([[5, -5, 1, 0, 3]], dtype=torch.int64)
    bits = torch.tensor([[[1, 1, 1, 1, 0]], [[1, 0, 1, 0, 0]], [[0, 0, 1, 1, 0]]], dtype=torch.uint8)
    acc = torch.tensor([[[3, 1, 0, 0, -9]], [[7, 2, 0, 0, -9]], [[9, 2, 0, 0, -8]]], dtype=torch.int32)
    same = vote_from_grad(g, bits, 0)
    v = vote_from_grad(g, bits, 0, acc=acc)
    assert v[:, 0].T.tolist() == [[0, 1, -1], [-1, 1, 0], [1, 0, 0], [0, 0, 0], [-1, -1, -1]]
    assert ((v > 0).sum(0) <= 1).all() and torch.equal(v.clamp(max=0), same.clamp(max=0))
    one = bits[:1]  # one plane: routing changes nothing
    assert torch.equal(vote_from_grad(g, one, 0, acc=acc[:1]), vote_from_grad(g, one, 0))
    r = GoldenRule(NetSpec((64, 16, 10), (8, 8), swarm=4, flip=default_flip(4)))
    assert r.opts.swarm_votes == "routed"


def test_golden_step_is_golden(digits):
    """The surrogate's forward is golden's: after init, thresholds are the batch means, and a
    step changes weights only through flip_step (accumulators in range, bits 0/1)."""
    x, y = digits
    r = GoldenRule(_spec(swarm=2, flip=dataclasses.replace(DEFAULT_FLIP, threshold=3, noise="stochastic")))
    r.init_state(x)
    m = r.model
    h = quantize_input(m.cfg, x[:512])
    z0 = preact(m.cfg.layers[0], h, m.weights[0])
    assert torch.equal(m.theta[0], torch.div(z0.sum(0), 512, rounding_mode="floor").to(torch.int32))
    before = [w.clone() for w in m.weights]
    res = None
    for k in range(6):
        res = r.train_step(x[k * 64 : (k + 1) * 64], y[k * 64 : (k + 1) * 64])
    assert np.isfinite(res.loss) and len(res.flips) == 2
    m.validate()
    changed = sum(int((a != b).sum()) for a, b in zip(before, m.weights, strict=True))
    assert changed > 0
    assert m.lfsr_state != m.cfg.flip.lfsr.seed  # stochastic firing drew noise


def _autograd_reference(r, x, y):
    """The golden rule's surrogate gradients by float64 autograd from their definition
    (rule_golden.py steps 1-2): golden forward, hardtanh STE with the invert sign, softmax
    cross-entropy whose score gradient is quantized to integers and then back-propagated."""
    m, o = r.model, r.opts
    h = quantize_input(m.cfg, x)
    lays = m.cfg.layers
    xv = (h.double() * 2 - 1) if lays[0].input_bits == 1 else h.double()
    leaves = []
    for i, lay in enumerate(lays):
        w = effective_weights(lay, m.weights[i]).double().requires_grad_(True)
        leaves.append(w)
        zt = xv @ w.T - m.theta[i].double()
        if lay.output:
            break
        B = zt.shape[0]
        zi = zt.detach().long()
        var = torch.div(B * (zi * zi).sum(0) - zi.sum(0) ** 2, B * B, rounding_mode="floor")
        win = max(1, math.isqrt(int(var.sum()) // lay.n_out) * o.window_pct // 100)
        ms = (zt.detach().abs() <= win).double() * (1 - 2 * m.invert[i].double())
        hard = ((zt.detach() >= 0) ^ m.invert[i].bool()).double() * 2 - 1
        xv = hard + (zt * ms - (zt * ms).detach())  # value: golden bits; gradient: mask * sign
    logits = zt.detach() * (o.temperature / math.sqrt(lays[-1].n_in * lays[-1].swarm))
    g = torch.softmax(logits, 1) - torch.nn.functional.one_hot(y, lays[-1].n_out).double()
    zt.backward(torch.round(g * (1 << o.grad_bits)))
    return [w.grad for w in leaves]


@pytest.mark.parametrize("swarm, input_bits", [(1, 8), (2, 8), (1, 1)])
def test_golden_integer_backward_equals_autograd(digits, swarm, input_bits):
    """The rule's integer backward (no autograd) is the chain rule: the same weight gradients
    as float64 autograd through the definition, for two hidden layers with invert bits set."""
    x, y = digits
    spec = NetSpec((64, 24, 16, 10), (8, 8), swarm, input_bits, 3, DEFAULT_FLIP)
    r = GoldenRule(spec)
    r.init_state(x)
    gen = torch.Generator().manual_seed(5)
    for i in (0, 1):
        r.model.invert[i] = torch.randint(0, 2, r.model.invert[i].shape, generator=gen, dtype=torch.uint8)
    xb, yb = x[:48], y[:48]
    loss, grads, zs = r.surrogate_gradients(xb, yb)
    ref = _autograd_reference(r, xb, yb)
    assert np.isfinite(loss) and len(grads) == len(zs) == 3
    for g, gr in zip(grads, ref, strict=True):
        assert g.dtype == torch.int64
        assert torch.equal(g, gr.round().long()) and torch.equal(gr, gr.round())
    assert any(int(g.abs().sum()) > 0 for g in grads[:2])  # hidden layers get a signal


@pytest.mark.parametrize("name", ["golden", "ste-adam", "bop", "float"])
def test_rules_deterministic(digits, name):
    x, y = digits
    outs = []
    for _ in range(2):
        r = get_rule(name)(_spec(seed=3))
        r.init_state(x)
        losses = [r.train_step(x[k * 32 : (k + 1) * 32], y[k * 32 : (k + 1) * 32]).loss for k in range(5)]
        outs.append((losses, r.predict(x[:200]), r.state_tensors(), r.export()))
    (l1, p1, s1, m1), (l2, p2, s2, m2) = outs
    assert l1 == l2 and torch.equal(p1, p2)
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert (m1 is None and m2 is None) or m1.equal(m2)


@pytest.mark.parametrize("name", ["golden", "ste-adam", "bop"])
def test_predict_is_golden_forward(digits, name):
    x, y = digits
    r = get_rule(name)(_spec(swarm=2, input_bits=4))
    r.init_state(x)
    for k in range(4):
        r.train_step(x[k * 32 : (k + 1) * 32], y[k * 32 : (k + 1) * 32])
    m = r.export()
    assert torch.equal(r.predict(x[:300]), m.predict(x[:300]))


def test_seed_changes_result(digits):
    x, _ = digits
    a, b = GoldenRule(_spec(seed=0)), GoldenRule(_spec(seed=1))
    a.init_state(x)
    b.init_state(x)
    assert not torch.equal(a.model.weights[0], b.model.weights[0])


def test_fold_batchnorm_matches_float_sign():
    g = torch.Generator().manual_seed(0)
    M, bound = 200, 1000
    mu = torch.randn(M, generator=g) * 50
    var = torch.rand(M, generator=g) * 400 + 1
    gamma = torch.randn(M, generator=g)
    gamma[:5] = 0
    beta = torch.randn(M, generator=g)
    theta, inv = fold_batchnorm(mu, var, gamma, beta, bound)
    z = torch.arange(-300, 301, dtype=torch.int64)[:, None].expand(-1, M)
    want = ((gamma.double() * (z - mu.double()) / torch.sqrt(var.double() + 1e-5) + beta.double()) >= 0)
    got = threshold(z, theta, inv).bool()
    assert (got == want).double().mean() > 0.999  # equal except at float ties
    assert inv[gamma < 0].all() and not inv[gamma > 0].any()


@pytest.mark.parametrize("rule", ["golden", "float"])
def test_step_reports_the_batch_correct_before_its_step(digits, rule):
    """``StepResult.correct`` (the trainer's running train accuracy) counts the samples the
    network classifies correctly *before* the step changes it."""
    x, y = digits
    r = get_rule(rule)(_spec())
    r.init_state(x)
    for s in range(3):
        xb, yb = x[64 * s : 64 * (s + 1)], y[64 * s : 64 * (s + 1)]
        before = int((r.predict(xb) == yb).sum())
        assert r.train_step(xb, yb).correct == before
