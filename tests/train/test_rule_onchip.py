"""Tests of train/rule_onchip.py and ``bitswarm train --votes integer``."""

import dataclasses
import json
import subprocess
import sys

import torch
from bitswarm.golden.model import Model, load_model
from bitswarm.golden.onchip import OnChipConfig, onchip_train
from bitswarm.train import TrainConfig, load_dataset, train
from bitswarm.train.rule_onchip import ONCHIP_FLIP, initial_onchip_model
from bitswarm.train.rules import get_rule
from bitswarm.train.trainer import epoch_order

FAST = dict(dataset="digits", arch=(64, 32, 10), batch_size=64, rule="onchip", flip=ONCHIP_FLIP)


def test_registered_and_hardware_trainable():
    cls = get_rule("onchip")
    assert cls.hardware_trainable and cls.exportable


def test_trainer_equals_golden_per_sample_steps(tmp_path):
    """One epoch of the trainer = golden onchip_step over the epoch's samples in order."""
    cfg = TrainConfig(epochs=1, **FAST)
    res = train(cfg, out=tmp_path / "a.bsm", quiet=True, plots=False)
    ds = load_dataset("digits")
    x = torch.from_numpy(ds.x_train)
    y = torch.from_numpy(ds.y_train)
    m0 = res.rule.model_config
    m, oc = initial_onchip_model(m0, x, 0)
    order = epoch_order(0, 0, len(y))[: (len(y) // 64) * 64]
    onchip_train(oc, m, x[order], y[order])
    got = load_model(tmp_path / "a.bsm")
    assert OnChipConfig.from_meta(got.cfg.meta) == oc
    assert all(torch.equal(a, b) for a, b in zip(got.weights, m.weights, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(got.acc, m.acc, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(got.theta, m.theta, strict=True))


def test_resume_is_bit_identical(tmp_path):
    cfg = TrainConfig(epochs=3, **FAST)
    train(cfg, out=tmp_path / "a.bsm", quiet=True, plots=False)
    train(dataclasses.replace(cfg, epochs=1), out=tmp_path / "b.bsm", quiet=True, plots=False)
    train(cfg, out=tmp_path / "b.bsm", resume=tmp_path / "b.run" / "last.ckpt", quiet=True, plots=False,
          overwrite=True)  # extending the run replaces its 1-epoch model
    assert (tmp_path / "a.bsm").read_bytes() == (tmp_path / "b.bsm").read_bytes()
    a = [json.loads(s)["test_accuracy"] for s in (tmp_path / "a.run" / "metrics.jsonl").read_text().splitlines()]
    assert a[-1] > 0.2  # chance is 0.1 (a 32-wide hidden layer after 3 epochs)


def test_cli_votes_integer(tmp_path):
    out = tmp_path / "m.bsm"
    r = subprocess.run([sys.executable, "-m", "bitswarm", "train", "--dataset", "digits", "--arch", "64-16-10",
                        "--votes", "integer", "--epochs", "1", "--out", str(out), "--quiet", "--no-plots"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    m = load_model(out)
    assert isinstance(m, Model) and m.cfg.meta["rule"] == "onchip" and m.cfg.meta["votes"] == "integer"
    assert m.cfg.flip.threshold == ONCHIP_FLIP.threshold
    r = subprocess.run([sys.executable, "-m", "bitswarm", "train", "--votes", "integer", "--rule", "bop",
                        "--epochs", "1", "--quiet"], capture_output=True, text=True, check=False)
    assert r.returncode != 0 and "--votes integer applies to the golden rule" in r.stderr
