"""Ternary weights trained by the golden rule (SPEC.md §8.1; ``bitswarm train --weights
ternary``): the run is the golden step, the exported model holds ternary layers, and the virtual
accelerator and the RTL (Verilator) give golden's scores on every digits test image."""

import json

import pytest
import torch
from bitswarm.cli import main
from bitswarm.golden import ConfigError, FlipRuleConfig, Model, load_model, trit_flip_step
from bitswarm.train import load_dataset
from bitswarm.train.rule_golden import GoldenRule, trit_vote_from_grad, vote_from_grad
from bitswarm.train.rules import NetSpec

ARCH = "64-16-10"


@pytest.fixture(scope="module")
def ternary_digits(tmp_path_factory):
    """``bitswarm train --weights ternary`` on digits, 6 epochs, a narrow 64-32-10 MLP."""
    d = tmp_path_factory.mktemp("ternary_digits")
    rc = main(["train", "--dataset", "digits", "--arch", ARCH, "--weights", "ternary", "--epochs", "6",
               "--out", str(d / "m.bsm"), "--quiet", "--no-plots"])
    assert rc == 0
    return d


def test_train_exports_ternary_layers(ternary_digits):
    m = load_model(ternary_digits / "m.bsm")
    assert [lay.weights for lay in m.cfg.layers] == ["ternary", "ternary"]
    assert [tuple(w.shape) for w in m.weights] == [(16, 64), (10, 16)]
    assert all(w.dtype == torch.int8 for w in m.weights)
    assert all(a.shape == w.shape for a, w in zip(m.acc, m.weights, strict=True))
    for w in m.weights:  # trained trits use all three levels
        assert {int(v) for v in w.unique()} == {-1, 0, 1}
    assert json.loads(m.cfg.meta["options"]) == {"weights": "ternary"}
    metrics = [json.loads(line) for line in (ternary_digits / "m.run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(sum(r["flips"]) for r in metrics) > 0  # trits moved
    ds = load_dataset("digits")
    acc = float((m.predict(torch.from_numpy(ds.x_test)) == torch.from_numpy(ds.y_test)).double().mean())
    assert acc == metrics[-1]["test_accuracy"] > 0.5  # trained: far above chance


@pytest.mark.parametrize("backend", ["virtual", pytest.param("verilator", marks=pytest.mark.verilator)])
def test_sim_trained_ternary_whole_test_set(backend, ternary_digits, tmp_path, capsys):
    extra = ["--build-dir", str(tmp_path / "build")] if backend == "verilator" else []
    rc = main(["sim", str(ternary_digits / "m.bsm"), "--dataset", "digits", "--backend", backend,
               "--json", *extra])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["backend"] == backend
    assert d["n"] == 360 and d["mismatches"] == 0, d
    assert d["accuracy"] > 0.5


def test_step_is_the_golden_ternary_rule():
    """One step of the rule = its surrogate gradient's signed votes through trit_flip_step (and
    not the binary vote, whose sign differs by the weight's)."""
    ds = load_dataset("digits")
    # threshold 1 (the least): every significant vote steps a trit, and no ramp can lower it
    spec = NetSpec((64, 16, 10), ds.input_shape, flip=FlipRuleConfig(acc_width=4, threshold=1))
    rule = GoldenRule(spec, {"weights": "ternary"})
    x, y = torch.from_numpy(ds.x_train[:64]), torch.from_numpy(ds.y_train[:64])
    rule.init_state(x)
    before = Model(rule.model.cfg, [w.clone() for w in rule.model.weights], rule.model.theta,
                   rule.model.invert, [a.clone() for a in rule.model.acc], rule.model.lfsr_state)
    _, grads, _ = rule.surrogate_gradients(x, y)
    res = rule.train_step(x, y)
    for i in range(2):
        v = trit_vote_from_grad(grads[i], rule.vote_pct)
        t, a, moved = trit_flip_step(spec.flip, before.weights[i], before.acc[i], v)
        assert torch.equal(rule.model.weights[i], t) and torch.equal(rule.model.acc[i], a)
        assert res.flips[i] == int(moved.sum()) > 0


def test_trit_votes_are_the_negative_gradient_sign():
    g = torch.tensor([[5, -5, 1, 0], [-1, 100, -3, 2]], dtype=torch.int64)
    thr = 117 * 100 // (100 * 8)  # floor(sum|G| / numel) = 14
    assert thr == 14
    assert trit_vote_from_grad(g, 100).tolist() == [[0, 0, 0, 0], [0, -1, 0, 0]]
    assert trit_vote_from_grad(g, 0).tolist() == [[-1, 1, -1, 0], [1, -1, 1, -1]]
    # the binary vote is sign(G) * w: it says "wrong", not "which way"
    bits = torch.ones((1, 2, 4), dtype=torch.uint8)
    assert vote_from_grad(g, bits, 0)[0].tolist() == (-trit_vote_from_grad(g, 0)).tolist()
    with pytest.raises(ConfigError, match="int64 gradient"):
        trit_vote_from_grad(g.to(torch.int32), 100)


@pytest.mark.parametrize("argv, msg", [
    (["--weights", "ternary", "--swarm", "2"], "ternary weights need swarm 1, not 2"),
    (["--weights", "ternary", "--rule", "bop"], "--weights ternary trains with the golden rule, not --rule bop"),
    (["--weights", "ternary", "--votes", "integer"], "--weights ternary trains with the golden rule, not --rule onchip"),
    (["--weights", "ternary", "--refractory", "-48"], r"ternary layers need flip.refractory in -47..47"),
    (["--opt", "weights=quinary"], "weights must be one of binary, ternary, not 'quinary'"),
])
def test_train_wrong_weights(argv, msg, tmp_path, capsys):
    rc = main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "m.bsm"),
               "--quiet", "--no-plots", *argv])
    err = capsys.readouterr().err
    assert rc != 0 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m.bsm").exists()


def test_resume_keeps_the_weight_kind(tmp_path, capsys):
    base = ["train", "--dataset", "digits", "--arch", "64-16-10", "--quiet", "--no-plots"]
    assert main([*base, "--weights", "ternary", "--epochs", "1", "--out", str(tmp_path / "m.bsm")]) == 0
    ck = str(tmp_path / "m.run" / "last.ckpt")
    rc = main([*base, "--weights", "binary", "--epochs", "2", "--resume", ck])
    assert rc != 0 and "--weights binary differs from the checkpoint's (ternary)" in capsys.readouterr().err
    assert main([*base, "--weights", "ternary", "--epochs", "2", "--resume", ck,
                 "--out", str(tmp_path / "m2.bsm")]) == 0
    assert load_model(tmp_path / "m2.bsm").cfg.layers[0].weights == "ternary"
    assert json.loads((tmp_path / "m.run" / "config.json").read_text())["options"] == {"weights": "ternary"}


def test_ternary_cnn_trains_and_runs_on_the_virtual_accelerator(tmp_path, capsys):
    """Convolutional layers take trits too (golden conv, SPEC.md §14): a small digits CNN."""
    out = tmp_path / "cnn.bsm"
    assert main(["train", "--dataset", "digits", "--arch", "1x8x8-c4k3p1-mp2-10", "--weights",
                 "ternary", "--epochs", "3", "--out", str(out), "--quiet", "--no-plots"]) == 0
    capsys.readouterr()
    m = load_model(out)
    assert [lay.weights for lay in m.cfg.layers] == ["ternary", "ternary"] and m.cfg.has_conv
    assert main(["sim", str(out), "--dataset", "digits", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["n"] == 360 and d["mismatches"] == 0
    metrics = [json.loads(line) for line in (tmp_path / "cnn.run" / "metrics.jsonl").read_text().splitlines()]
    assert all(sum(r["flips"][i] for r in metrics) > 0 for i in range(2))  # both layers' trits moved


def test_threshold_ramp_keeps_a_negative_refractory_legal_for_trits(tmp_path):
    """The golden rule's threshold ramp lowers the threshold early on; a ternary run with
    hysteresis (refractory -40 of threshold 48) must get a refractory within ±(threshold - 1)."""
    ds = load_dataset("digits")
    spec = NetSpec((64, 16, 10), ds.input_shape,
                   flip=FlipRuleConfig(acc_width=8, leak_shift=6, threshold=48, refractory=-40))
    rule = GoldenRule(spec, {"weights": "ternary"})
    rule.init_state(torch.from_numpy(ds.x_train[:512]))
    for step in (0, 100, 320, 10**6):
        f = rule.flip_config(step)
        assert 1 - f.threshold <= f.refractory <= f.threshold - 1
    assert rule.flip_config(0).refractory == -7 and rule.flip_config(10**6).refractory == -40
    x, y = torch.from_numpy(ds.x_train[:128]), torch.from_numpy(ds.y_train[:128])
    for _ in range(3):
        rule.train_step(x, y)  # no ConfigError from trit_flip_step
