"""Tests of train/trainer.py and train/checkpoint.py: runs, metrics, checkpoints, resume."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from bitswarm.golden.errors import BitswarmError, ConfigError
from bitswarm.golden.model import load_model
from bitswarm.train import TrainConfig, evaluate, load_checkpoint, load_dataset, train
from bitswarm.train.checkpoint import CheckpointError
from bitswarm.train.data import DataError
from bitswarm.train.trainer import epoch_order, parse_arch

FAST = dict(dataset="digits", arch=(64, 48, 10), batch_size=64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    res = train(TrainConfig(epochs=3, **FAST), out=d / "m.bsm", quiet=True)
    return d, res


def test_tiny_run_beats_chance(trained):
    _, res = trained
    assert res.metrics[-1]["test_accuracy"] > 0.6  # chance is 0.1
    assert res.metrics[-1]["train_loss"] < res.metrics[0]["train_loss"]


def test_model_file_evaluates_identically(trained):
    d, res = trained
    m = load_model(d / "m.bsm")
    ds = load_dataset("digits")
    acc, n = evaluate(m, ds.x_test, ds.y_test)
    assert n == 360 and acc == res.metrics[-1]["test_accuracy"]
    scores = m.forward(torch.from_numpy(ds.x_test))  # golden Model.forward defines accuracy
    assert float((scores.argmax(-1) == torch.from_numpy(ds.y_test)).double().mean()) == acc
    assert m.acc is not None and m.lfsr_state is not None  # training state travels along
    assert m.cfg.meta["rule"] == "golden" and m.cfg.meta["epochs"] == "3"
    assert all(int(t) == 0 for t in m.theta[-1])


def test_run_folder_contents(trained):
    d, res = trained
    run = d / "m.run"
    assert res.run_dir == run
    lines = (run / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(s) for s in lines]
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    for r in recs:
        assert {"epoch", "train_loss", "test_accuracy", "flip_rate", "seconds"} <= set(r)
        assert len(r["flip_rate"]) == 2
    for png in ("accuracy.png", "loss.png", "flip_rate.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ck = load_checkpoint(run / "last.ckpt")
    assert ck.epoch == 3 and ck.metrics == recs and ck.model is not None
    assert ck.data_order["next_epoch"] == 3 and ck.data_order["seed"] == 0
    assert TrainConfig.from_dict(ck.config).arch == (64, 48, 10)


@pytest.mark.parametrize("rule", ["golden", "ste-adam", "bop"])
def test_resume_is_bit_identical(tmp_path, rule):
    cfg = TrainConfig(epochs=4, rule=rule, **FAST)
    train(cfg, out=tmp_path / "a.bsm", quiet=True, plots=False)
    train(dataclasses.replace(cfg, epochs=2), out=tmp_path / "b.bsm", quiet=True, plots=False)
    with pytest.raises(ConfigError, match="b.bsm exists; pass --overwrite"):
        train(cfg, out=tmp_path / "b.bsm", resume=tmp_path / "b.run" / "last.ckpt", quiet=True)
    res = train(cfg, out=tmp_path / "b.bsm", resume=tmp_path / "b.run" / "last.ckpt", quiet=True,
                plots=False, overwrite=True)
    assert (tmp_path / "a.bsm").read_bytes() == (tmp_path / "b.bsm").read_bytes()
    assert [r["epoch"] for r in res.metrics] == [1, 2, 3, 4]
    a = [json.loads(s)["test_accuracy"] for s in (tmp_path / "a.run" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(s)["test_accuracy"] for s in (tmp_path / "b.run" / "metrics.jsonl").read_text().splitlines()]
    assert a == b


def test_float_rule_metrics_only(tmp_path):
    cfg = TrainConfig(epochs=1, rule="float", **FAST)
    with pytest.raises(ConfigError, match="cannot be exported"):
        train(cfg, out=tmp_path / "f.bsm", quiet=True)
    assert not (tmp_path / "f.bsm").exists()
    res = train(cfg, run_dir=tmp_path / "f.run", quiet=True, plots=False)
    assert res.model is None and res.metrics[0]["test_accuracy"] > 0.3
    assert load_checkpoint(tmp_path / "f.run").model is None


def test_refuses_to_clobber_a_run(tmp_path, trained):
    d, _ = trained
    before = (d / "m.bsm").read_bytes()
    with pytest.raises(ConfigError, match="m.bsm exists; pass --overwrite"):
        train(TrainConfig(epochs=1, **FAST), out=d / "m.bsm", quiet=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(TrainConfig(epochs=1, **FAST), out=tmp_path / "new.bsm", run_dir=d / "m.run",
              quiet=True)
    assert (d / "m.bsm").read_bytes() == before and not (tmp_path / "new.bsm").exists()


def test_resume_config_must_match(tmp_path, trained):
    d, _ = trained
    with pytest.raises(ConfigError, match="swarm differs"):
        train(TrainConfig(epochs=4, swarm=2, **FAST), out=tmp_path / "x.bsm",
              resume=d / "m.run" / "last.ckpt", quiet=True)
    with pytest.raises(ConfigError, match="fewer"):
        train(TrainConfig(epochs=2, **FAST), out=tmp_path / "x.bsm", resume=d / "m.run", quiet=True)
    assert not (tmp_path / "x.bsm").exists()


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "none.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "other.ckpt"))
    with pytest.raises(CheckpointError, match="not a bitswarm checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")


def test_arch_and_config_validation(tmp_path):
    with pytest.raises(DataError, match="takes 60 inputs but digits samples have 64"):
        train(TrainConfig(arch=(60, 10), epochs=1), out=tmp_path / "m.bsm", quiet=True)
    with pytest.raises(DataError, match="gives 5 outputs"):
        train(TrainConfig(arch=(64, 5), epochs=1), out=tmp_path / "m.bsm", quiet=True)
    with pytest.raises(ConfigError, match="swarm must be one of"):
        TrainConfig(swarm=3)
    with pytest.raises(ConfigError, match="batch_size must be"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="cannot read token 'x'"):
        parse_arch("64-x-10")
    with pytest.raises(ConfigError, match="no CUDA|cpu"):
        train(TrainConfig(epochs=1, **FAST), out=tmp_path / "m.bsm", device="tpu", quiet=True)
    assert not (tmp_path / "m.bsm").exists() and not (tmp_path / "m.run").exists()
    assert issubclass(DataError, BitswarmError)


def test_epoch_order_fixed():
    a = epoch_order(0, 1, 100)
    assert sorted(a.tolist()) == list(range(100))
    assert a.tolist() == epoch_order(0, 1, 100).tolist()
    assert a.tolist() != epoch_order(0, 2, 100).tolist()


def test_checkpoint_integrity(tmp_path, trained):
    """A flipped bit anywhere in a checkpoint, or a model file given as one, is one error."""
    d, _ = trained
    good = (d / "m.run" / "last.ckpt").read_bytes()
    rng = np.random.default_rng(3)
    for bit in rng.integers(0, len(good) * 8, 20):
        c = bytearray(good)
        c[bit // 8] ^= 1 << (bit % 8)
        p = tmp_path / "c.ckpt"
        p.write_bytes(bytes(c))
        with pytest.raises(CheckpointError, match=str(p)):
            load_checkpoint(p)
    with pytest.raises(CheckpointError, match="is a model file, not a training checkpoint"):
        load_checkpoint(d / "m.bsm")


def test_short_digits_run_learns(tmp_path):
    """Issue 17: with every default (64-512-10, batch 128, 11 steps per epoch) a 3-epoch digits
    run is far above chance: the threshold ramp lets bits flip in the first epoch."""
    res = train(TrainConfig(dataset="digits", epochs=3), out=tmp_path / "m.bsm", quiet=True, plots=False)
    assert res.metrics[-1]["test_accuracy"] >= 0.90
    assert res.metrics[0]["flips"][0] > 0
    opts = json.loads(load_model(tmp_path / "m.bsm").cfg.meta["golden_options"])
    assert (opts["threshold_start"], opts["threshold_ramp"]) == (8, 8)


def test_flip_defaults_live_in_golden():
    from bitswarm.golden.flip import NOISE_MODES, FlipRuleConfig
    from bitswarm.train import cli
    from bitswarm.train.trainer import DEFAULT_FLIP, default_flip

    assert DEFAULT_FLIP == FlipRuleConfig.for_training() == TrainConfig().flip
    assert TrainConfig(swarm=4).flip == FlipRuleConfig.for_training(4) == default_flip(4)
    assert TrainConfig(swarm=4).flip.noise == "stochastic"
    assert TrainConfig(rule="onchip").flip == FlipRuleConfig.for_training(votes="integer")
    assert cli.NOISE_MODES == NOISE_MODES
    keys = {k for _, k, _, _ in cli.FLIP_FLAGS}
    flat = {f"lfsr.{k}" if k2 == "lfsr" else k2 for k2, v in DEFAULT_FLIP.to_dict().items()
            for k in (v if isinstance(v, dict) else [k2])}
    assert keys == flat and len(cli.FLIP_FLAGS) == 9


def test_threshold_ramp():
    from bitswarm.train.rule_golden import GoldenRule
    from bitswarm.train.rules import NetSpec

    r = GoldenRule(NetSpec((64, 16, 10), (8, 8), flip=TrainConfig().flip))
    r.init_state(torch.from_numpy(load_dataset("digits").x_train))
    assert [r.flip_config(s).threshold for s in (0, 7, 8, 200, 319, 320, 10**6)] == [8, 8, 9, 33, 47, 48, 48]
    assert r.flip_config(320) is r.model.cfg.flip
    r2 = GoldenRule(r.spec, {"threshold_ramp": "0"})
    r2.init_state(torch.from_numpy(load_dataset("digits").x_train))
    assert r2.flip_config(0).threshold == 48


def test_swarm_vote_and_init_options():
    from bitswarm.train.rule_golden import GoldenRule, vote_from_grad
    from bitswarm.train.rules import NetSpec

    g = torch.Generator().manual_seed(1)
    grad = torch.randint(-50, 51, (6, 9), generator=g, dtype=torch.int64)
    bits = torch.randint(0, 2, (4, 6, 9), generator=g, dtype=torch.uint8)
    assert torch.equal(vote_from_grad(grad, bits[:1], 100, graded=True), vote_from_grad(grad, bits[:1], 100))
    v = vote_from_grad(grad, bits, 100, graded=True).abs()
    assert all(bool((v[s + 1] <= v[s]).all()) for s in range(3))  # higher planes vote less often
    assert v[0].sum() > vote_from_grad(grad, bits, 100)[0].abs().sum() > v[3].sum()
    x = torch.from_numpy(load_dataset("digits").x_train)
    r = GoldenRule(NetSpec((64, 16, 10), (8, 8), swarm=4, flip=TrainConfig(swarm=4).flip), {"swarm_init": "copies"})
    r.init_state(x)
    assert all(bool((w == w[:1]).all()) for w in r.model.weights)


def test_default_recipe_follows_the_input_size(tmp_path):
    """Issue 17: MNIST-sized inputs get 784-2048-10 and batch 256, digits 64-512-10 and 128;
    the resolved values are what the run records (config, model meta), an explicit value wins."""
    from bitswarm.train import default_arch, default_batch, default_epochs

    digits, mnist = load_dataset("digits"), load_dataset("mnist5k")
    assert (default_arch(digits), default_batch(digits)) == ((64, 512, 10), 128)
    assert (default_arch(mnist), default_batch(mnist)) == ((784, 2048, 10), 256)
    assert (default_epochs(digits), default_epochs(mnist)) == (30, 60)
    assert TrainConfig().batch_size is None and TrainConfig().epochs is None
    res = train(TrainConfig(dataset="digits", epochs=1), out=tmp_path / "m.bsm", quiet=True, plots=False)
    assert (res.config.arch, res.config.batch_size) == ((64, 512, 10), 128)
    assert res.metrics[0]["steps"] == len(digits.y_train) // 128
    assert json.loads((tmp_path / "m.run" / "config.json").read_text())["batch_size"] == 128
    more = train(TrainConfig(dataset="digits", epochs=2), out=tmp_path / "m2.bsm", quiet=True, plots=False,
                 resume=tmp_path / "m.run" / "last.ckpt")  # the default batch resumes as recorded
    assert more.config.batch_size == 128 and len(more.metrics) == 2
    again = train(TrainConfig(dataset="digits"), out=tmp_path / "m3.bsm", quiet=True, plots=False,
                  resume=tmp_path / "m.run" / "last.ckpt")  # no epochs given: the checkpoint's total
    assert again.config.epochs == 2 and len(again.metrics) == 2
    res = train(TrainConfig(dataset="digits", epochs=1, batch_size=100), out=tmp_path / "n.bsm",
                quiet=True, plots=False)
    assert res.config.batch_size == 100 and res.metrics[0]["steps"] == len(digits.y_train) // 100
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)
