"""Tests of the rule zoo (``train/zoo``): every rule steps, keeps its alphabet and widths, is
deterministic under a seed; the ``zoo`` CLI prints the contract keys; bad names fail in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from bitswarm.golden.errors import ConfigError
from bitswarm.train import RULES, NetSpec, get_rule
from bitswarm.train.zoo import ZooRule
from bitswarm.train.zoo.run import CONTRACT_KEYS, parse_rules, run_zoo

ZOO = [n for n, c in RULES.items() if issubclass(c, ZooRule)]
SEED_NET = ["v17-bounded", "v18-friction", "v19-cruise", "v20-lif"]

# Declared signed/unsigned widths of integer state buffers, by buffer name.
WIDTHS = {"acc": 32, "wrong": 32, "cnt": 8, "votes": 16, "E": 8, "corr": 64, "activity": 32}


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 16), generator=g, dtype=torch.uint8), torch.randint(0, 4, (n,), generator=g)


def _run(name, opts=None, steps=4, swarm=None):
    cls = get_rule(name)
    s = swarm or (1 if cls.weight_kind == "ternary" else 2)
    rule = cls(NetSpec((16, 12, 4), (16,), swarm=s, seed=3), opts)
    x, y = _data()
    rule.init_state(x)
    for e in range(2):
        rule.start_epoch(e)
        for k in range(steps // 2):
            r = rule.train_step(x[k * 16 : (k + 1) * 16], y[k * 16 : (k + 1) * 16])
            assert len(r.flips) == 2 and all(f >= 0 for f in r.flips)
    return rule


def test_zoo_covers_the_seeds():
    assert len(ZOO) >= 17
    for n in ZOO:
        c = RULES[n]
        assert c.source and c.reason and c.summary, n


@pytest.mark.parametrize("name", ZOO)
def test_rule_steps_keeps_alphabet_and_widths(name):
    rule = _run(name)
    for i, w in enumerate(rule.w):
        if rule.weight_kind == "ternary":
            assert w.dtype == torch.int8 and set(w.unique().tolist()) <= {-1, 0, 1}
        else:
            assert w.dtype == torch.uint8 and set(w.unique().tolist()) <= {0, 1}
            assert tuple(w.shape) == rule.model_config.layers[i].weight_shape()
        lay = rule.model_config.layers[i]
        assert int(rule.theta[i].abs().max()) <= lay.theta_bound
    for key, ts in rule.buf.items():
        for t in ts:
            assert torch.isfinite(t.double()).all(), key
            if key in WIDTHS:
                lim = 1 << (WIDTHS[key] - 1)
                assert int(t.min()) >= -lim and int(t.max()) < lim, key
            if key == "acc" and name in SEED_NET + ["v17-bounded"]:
                assert int(t.abs().max()) < 1 << 15
            if key == "index":
                assert int(t.min()) >= 0 and int(t.max()) <= 65535
    m = rule.export()
    if rule.own_forward:
        assert m is None and not rule.exportable
    else:
        m.validate()
        x, _ = _data()
        assert torch.equal(m.predict(x), rule.predict(x))


@pytest.mark.parametrize("name", ZOO)
def test_rule_is_deterministic(name):
    a, b = _run(name).state_tensors(), _run(name).state_tensors()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _run(name).state_meta() == _run(name).state_meta()


@pytest.mark.parametrize("name", SEED_NET)
def test_seed_net_variant(name):
    rule = _run(name, {"net": "seed"})
    assert rule.own_forward and rule.export() is None and not rule.hardware_trainable
    a, b = rule.state_tensors(), _run(name, {"net": "seed"}).state_tensors()
    assert all(torch.equal(a[k], b[k]) for k in a)
    defended = {"net": "seed", "fire_pct": 50, "gate_pct": 50, "seed_sgd": False}
    r1, r2 = _run(name, defended), _run(name, defended)
    assert r1.state_meta() == r2.state_meta() and r1.meta["lfsr"] != r1.spec.flip.lfsr.seed
    assert all(torch.equal(r1.w[i], r2.w[i]) for i in range(2))


def test_hardware_trainable_follows_the_vote_source():
    assert not _run("v17-bounded").hardware_trainable
    assert _run("v17-bounded", {"error": "hinge"}).hardware_trainable
    assert not _run("v4-signum", {"error": "hinge"}).hardware_trainable


def test_checkpoint_round_trip():
    rule = _run("ternary-scale")
    other = get_rule("ternary-scale")(rule.spec)
    other.load_state(None, rule.state_tensors(), rule.state_meta())
    assert all(torch.equal(a, b) for a, b in zip(rule.w, other.w, strict=True))


def test_bad_options_and_names():
    with pytest.raises(ConfigError, match="unknown rule 'nope'"):
        parse_rules("golden,nope")
    with pytest.raises(ConfigError, match="net must be golden or seed"):
        _run("v17-bounded", {"net": "x"})
    with pytest.raises(ConfigError, match="needs swarm 1"):
        _run("bitnet-absmean", swarm=2)
    with pytest.raises(ConfigError, match="error must be one of"):
        _run("v1-voting", {"error": "x"})


def test_run_zoo_contract():
    rows = run_zoo("digits", ["golden", "float", "v17-bounded", "ternary-scale"], epochs=1, arch=(64, 16, 10))
    assert [r["rule"] for r in rows] == ["golden", "float", "v17-bounded", "ternary-scale"]
    for r in rows:
        assert set(CONTRACT_KEYS) <= set(r)
        assert 0 <= r["final_accuracy"] <= r["best_accuracy"] <= 1
    assert rows[0]["hardware_trainable"] is False and rows[3]["evaluated_by"] == "own float forward"


def test_cli_json_and_bad_name():
    cmd = [sys.executable, "-m", "bitswarm", "zoo", "--dataset", "digits", "--epochs", "1",
           "--arch", "64-16-10", "--rules", "golden,v20-lif", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert [r["rule"] for r in rows] == ["golden", "v20-lif"]
    assert set(CONTRACT_KEYS) <= set(rows[1])
    p = subprocess.run(cmd[:-3] + ["--rules", "golden,nope", "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "unknown rule 'nope'" in p.stderr
