"""A trained digits model: every test image's scores and class equal golden on both backends,
and the cycle model equals Verilator's cycle count exactly, over foldings and swarm sizes."""

import numpy as np
import pytest
from bitswarm.golden import load_model
from bitswarm.hw.plan import AccelPlan, LayerFold
from bitswarm.sim.driver import evaluate, make_backend
from bitswarm.train import TrainConfig, load_dataset, train

FOLDS = {
    "auto": None,
    "narrow": ((2, 8, 1), (1, 16, 0)),
    "wide": ((16, 64, 4), (10, 32, 3)),
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trained(tmp_path_factory, swarm):
    d = tmp_path_factory.mktemp(f"digits_s{swarm}")
    train(TrainConfig(dataset="digits", arch=(64, 32, 10), swarm=swarm, epochs=10), out=d / "m.bsm",
          run_dir=d / "run", quiet=True, plots=False)
    return load_model(d / "m.bsm")


def _check(model, plan, ds, tmp_path):
    x = ds.x_test.reshape((-1,) + tuple(model.cfg.input_shape))
    accs = {}
    for name in ("virtual", "verilator"):
        kw = {"build_root": tmp_path} if name == "verilator" else {}
        rep = evaluate(make_backend(name, model, plan, **kw), x, ds.y_test)
        assert rep["n"] == len(ds.y_test) == 360
        assert rep["mismatches"] == 0, f"{name}: {rep}"
        assert rep["cycles_per_inference"] == plan.latency_cycles()
        accs[name] = rep["accuracy"]
    assert accs["virtual"] == accs["verilator"] > 0.5  # trained: far above chance


@pytest.mark.verilator
@pytest.mark.parametrize("swarm, fold", [(1, "auto"), (4, "narrow")])
def test_sim_trained_digits(swarm, fold, digits, tmp_path_factory, tmp_path):
    model = _trained(tmp_path_factory, swarm)
    f = FOLDS[fold]
    plan = AccelPlan.auto(model.cfg) if f is None else AccelPlan(
        model.cfg, tuple(LayerFold(*x) for x in f))
    _check(model, plan, digits, tmp_path)


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.parametrize("swarm", [1, 4])
@pytest.mark.parametrize("fold", sorted(FOLDS))
def test_sim_trained_digits_all_foldings(swarm, fold, digits, tmp_path_factory, tmp_path):
    model = _trained(tmp_path_factory, swarm)
    f = FOLDS[fold]
    plan = AccelPlan.auto(model.cfg) if f is None else AccelPlan(
        model.cfg, tuple(LayerFold(*x) for x in f))
    _check(model, plan, digits, tmp_path)


def test_virtual_whole_test_set_trained(digits, tmp_path_factory):
    model = _trained(tmp_path_factory, 2)
    x = digits.x_test.reshape(-1, 8, 8)
    b = make_backend("virtual", model)
    r = b.infer(x)
    np.testing.assert_array_equal(r.scores, model.forward(x).numpy())


# -- a digits CNN (SPEC.md §14) on the whole test set -----------------------------------------
CNN = "1x8x8-c16k3p1-mp2-c32k3p1-mp2-10"


def _check_cnn(model, plan, ds, tmp_path):
    """Every test image's scores and class equal golden on both backends, the isolated latency
    and the streaming interval equal the cycle model; returns the accuracy."""
    from bitswarm.sim.driver import hw_order

    x = ds.x_test.reshape((-1,) + tuple(model.cfg.input_shape))
    accs = {}
    for name in ("virtual", "verilator"):
        kw = {"build_root": tmp_path} if name == "verilator" else {}
        backend = make_backend(name, model, plan, **kw)
        rep = evaluate(backend, x, ds.y_test)
        assert rep["n"] == len(ds.y_test) == 360
        assert rep["mismatches"] == 0, f"{name}: {rep}"
        assert rep["cycles_per_inference"] == plan.latency_cycles()
        accs[name] = rep["accuracy"]
    r = backend.sim.run(hw_order(model.cfg, x[:40]), stream=True)
    assert set(np.diff(r.out_cycle)[4:].tolist()) == {plan.interval_cycles()}
    assert accs["virtual"] == accs["verilator"]
    return accs["verilator"]


@pytest.mark.verilator
def test_sim_trained_digits_cnn(digits, tmp_path_factory, tmp_path):
    """``bitswarm train --arch 1x8x8-c16k3p1-mp2-c32k3p1-mp2-10 --epochs 2`` (rule ste-adam),
    then the whole digits test set on the RTL folded by the optimizer for the ULX3S."""
    from bitswarm.hw.resources import board_fold

    d = tmp_path_factory.mktemp("digits_cnn")
    train(TrainConfig(dataset="digits", arch=CNN, rule="ste-adam", epochs=2), out=d / "m.bsm",
          run_dir=d / "run", quiet=True, plots=False)
    model = load_model(d / "m.bsm")
    plan = board_fold(model.cfg, "ulx3s")
    assert plan.interval_cycles() == 64 * 8 * 3  # layer 0: all 16 channels, kernel rows of 3
    assert _check_cnn(model, plan, digits, tmp_path) > 0.4


@pytest.mark.verilator
def test_sim_random_digits_cnn(digits, tmp_path):
    """Random weights, thresholds around the middle of each channel's range and random invert
    bits, folded narrow (PE 4 and 2, SIMD 1 and 4): the whole digits test set."""
    from tests.hw.test_accel import _random_conv_model

    model = _random_conv_model(CNN, 1, 8, seed=3)
    plan = AccelPlan(model.cfg, (LayerFold(4, 1, 1), LayerFold(2, 4, 1), LayerFold(2, 32, 2)))
    assert plan.interval_cycles() == 64 * 4 * 8 * 9
    _check_cnn(model, plan, digits, tmp_path)
