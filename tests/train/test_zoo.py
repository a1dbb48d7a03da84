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
SEED_NET = [n for n in ZOO if getattr(RULES[n].Options(), "net", "golden") == "seed"]
BOUNDED = ["v17-bounded", "v18-friction", "v19-cruise", "v20-lif"]

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
            if key == "acc" and name in BOUNDED:
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
def test_seed_net_is_the_default_and_golden_net_exports(name):
    rule = _run(name)
    assert rule.seed_mode and rule.own_forward and rule.export() is None and not rule.hardware_trainable
    if RULES[name].weight_kind == "binary" and name != "zero-float":
        golden = _run(name, {"net": "golden"})
        assert not golden.seed_mode and (golden.exportable or golden.own_forward)


@pytest.mark.parametrize("name", BOUNDED)
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
    assert not _run("v17-bounded", {"net": "golden"}).hardware_trainable
    assert _run("v17-bounded", {"net": "golden", "error": "hinge"}).hardware_trainable
    assert not _run("v17-bounded", {"error": "hinge"}).hardware_trainable  # seed network: float
    assert not _run("v4-signum", {"net": "golden", "error": "hinge"}).hardware_trainable


@pytest.mark.parametrize("name", ["ternary-scale", "ternary-scale-trits"])
def test_checkpoint_round_trip(name):
    rule = _run(name)
    other = get_rule(name)(rule.spec)
    other.load_state(None, rule.state_tensors(), rule.state_meta())
    assert all(torch.equal(a, b) for a, b in zip(rule.w, other.w, strict=True))


def test_ternary_scale_keeps_its_trits_and_learns_scales():
    cls = get_rule("ternary-scale")
    rule = cls(NetSpec((16, 12, 4), (16,), swarm=1, seed=3))
    x, y = _data()
    rule.init_state(x)
    w0, s0 = [t.clone() for t in rule.w], rule.scales(0).clone()
    for k in range(3):
        assert rule.train_step(x[k * 16 : (k + 1) * 16], y[k * 16 : (k + 1) * 16]).flips == [0, 0]
    assert all(torch.equal(a, b) for a, b in zip(w0, rule.w, strict=True))
    assert not torch.equal(s0, rule.scales(0))
    assert _run("ternary-scale-trits", steps=6).buf["cnt"]


def test_zero_float_moves_16_bit_indices_and_scales():
    rule = _run("zero-float", swarm=1)
    idx = rule.buf["index"][0]
    assert idx.dtype == torch.int32 and int(idx.min()) >= 0 and int(idx.max()) <= 65535
    again = _run("zero-float", swarm=1)
    assert torch.equal(again.buf["scale"][0], rule.buf["scale"][0]) and rule.meta == again.meta
    w = rule._weights(0)
    assert torch.allclose(w, (idx.float() * (2 / 65535) - 1) * rule.buf["scale"][0][:, None])


def test_v21_alpha_changes_the_forward():
    on, off = _run("v21-onebit-signum", {"net": "golden"}), _run("v21-onebit-signum", {"net": "golden", "scale": False})
    assert on.own_forward and not off.own_forward and off.exportable
    assert not torch.equal(on._weff(0), off._weff(0))
    a = on._alpha(0)
    assert torch.allclose(a, on.buf["shadow"][0].abs().mean(dim=(0, 2)))


def test_rank_flips_exactly_k_on_the_seed_network():
    rule = _run("v9a-rank")
    score = torch.tensor([[[-3.0, 1.0, 1.0, 0.5, -1.0]]])
    assert rule._top(score, 0.4).tolist() == [[[False, True, True, False, False]]]
    assert int(rule._top(-score.abs(), 0.4).sum()) == 2  # the seed's topk flips k even if none is wrong
    golden = _run("v9a-rank", {"net": "golden"})
    assert int(golden._top(-score.abs(), 0.4).sum()) == 0


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
    rows = run_zoo("digits", ["golden", "float", "v17-bounded", "ternary-scale"], epochs=1, arch=(64, 16, 10),
                   epoch_steps=2)
    assert [(r["rule"], r["swarm"]) for r in rows] == [("golden", 1), ("float", 1), ("v17-bounded", 32),
                                                       ("v17-bounded", 1), ("ternary-scale", 1)]
    for r in rows:
        assert set(CONTRACT_KEYS) <= set(r)
        assert 0 <= r["final_accuracy"] <= r["best_accuracy"] <= 1
    assert rows[0]["hardware_trainable"] is False and rows[4]["evaluated_by"] == "own float forward"
    assert rows[2]["net"] == "seed" and rows[2]["batch"] == 100 and rows[2]["steps_per_epoch"] == 2
    assert "v17, MNIST: best 92.4 % (ep 1)" in rows[2]["seed_reported"]
    assert rows[2]["verdict"].split(":")[0] in ("reproduced", "better", "worse")
    assert rows[4]["verdict"] == "no seed result"


def test_verdict_and_collapse_logic():
    from bitswarm.train.zoo.record import curve_shape, verdict

    assert curve_shape([0.1, 0.5, 0.9]) == "learned"  # a warm-up is not a collapse
    assert curve_shape([0.9, 0.5]) == "collapsed" and curve_shape([0.1, 0.15]) == "never learned"
    v = verdict("v20-lif", [0.93, 0.92, 0.5, 0.1], "mnist5k")
    assert v["verdict"].startswith("reproduced") and v["collapse"].startswith("genuine")
    assert verdict("v20-lif", [0.93, 0.94], "mnist5k")["verdict"].startswith("better")
    assert verdict("v10-momentum-rank", [0.5, 0.8], "mnist5k")["verdict"].startswith("worse")
    assert verdict("v10-momentum-rank", [0.93, 0.5], "mnist5k")["collapse"].startswith("artifact")
    assert verdict("v19-cruise", [0.2, 0.3], "digits", flips=0)["verdict"].startswith("reproduced: froze")
    assert verdict("zero-float", [0.5], "digits")["verdict"] == "no seed result"


def test_cli_json_and_bad_name():
    cmd = [sys.executable, "-m", "bitswarm", "zoo", "--dataset", "digits", "--epochs", "1", "--epoch-steps", "2",
           "--arch", "64-16-10", "--rules", "golden,v20-lif", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert [(r["rule"], r["swarm"]) for r in rows] == [("golden", 1), ("v20-lif", 32), ("v20-lif", 1)]
    assert set(CONTRACT_KEYS) <= set(rows[1]) and rows[1]["seed_reported"] and rows[1]["verdict"]
    p = subprocess.run(cmd[:-3] + ["--rules", "golden,nope", "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "unknown rule 'nope'" in p.stderr


def test_cli_out_writes_json_table_and_plot(tmp_path):
    from bitswarm.train.zoo.report import write_report

    rows = run_zoo("digits", ["v3-signsgd"], epochs=2, arch=(64, 16, 10), epoch_steps=2)
    paths = write_report({"digits": rows}, tmp_path, {"argv": []})
    assert [p.name for p in paths] == ["zoo.json", "zoo.md", "zoo_digits.png"]
    data = json.loads(paths[0].read_text())
    assert data["results"]["digits"][0]["accuracy_per_epoch"] == rows[0]["accuracy_per_epoch"]
    assert "| seed reported | verdict |" in paths[1].read_text() and paths[2].stat().st_size > 1000


@pytest.mark.parametrize("name", ["v21-onebit-voting", "v21-onebit-signum"])
def test_bitconv2d_on_the_seed_network(name):
    cls = get_rule(name)
    spec = NetSpec("1x4x4-c3k3p1-mp2-5-4", (1, 4, 4), swarm=1, seed=3)
    runs = []
    for _ in range(2):
        rule = cls(spec)
        x, y = _data()
        rule.init_state(x)
        for k in range(2):
            assert len(rule.train_step(x[k * 16 : (k + 1) * 16], y[k * 16 : (k + 1) * 16]).flips) == 3
        assert rule.predict(x).shape == (48,)
        runs.append(rule.state_tensors())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert tuple(rule.w[0].shape) == (1, 3, 9) and rule._alpha(0).shape == (3,)
    with pytest.raises(ConfigError, match="convolutional layers on its seed network only"):
        cls(spec, {"net": "golden"})


def test_zoo_rows_of_a_conv_arch_name_it_and_its_classes():
    """A conv arch through the zoo's shared path (the golden rule beside a BitConv2d rule):
    the class count comes from the arch string and the row names its canonical spelling."""
    from bitswarm.train.zoo.run import run_zoo

    rows = run_zoo("digits", ["golden", "v21-onebit-signum"], epochs=1, arch="1x8x8-c4k3p1-mp2-10",
                   epoch_steps=2)
    assert [r["rule"] for r in rows] == ["golden", "v21-onebit-signum"]
    assert all(r["arch"] == "1x8x8-c4k3p1-mp2-10" for r in rows)
    assert all(0.0 <= r["final_accuracy"] <= 1.0 for r in rows)
