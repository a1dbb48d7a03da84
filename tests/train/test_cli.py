"""The command-line contract of ``bitswarm train`` / ``bitswarm eval``."""

import json
import os
import subprocess
import sys

import pytest
from bitswarm.cli import main

FAST = ["--dataset", "digits", "--arch", "64-32-10", "--batch-size", "64", "--quiet", "--no-plots"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    assert main(["train", *FAST, "--epochs", "2", "--out", str(d / "m.bsm")]) == 0
    return d / "m.bsm"


def test_eval_json(model, capsys):
    capsys.readouterr()
    assert main(["eval", str(model), "--dataset", "digits", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"accuracy", "n"} and out["n"] == 360 and 0.1 < out["accuracy"] <= 1


def test_eval_text_and_summary(model, capsys):
    assert main(["eval", str(model)]) == 0
    assert "on 360 test samples of digits" in capsys.readouterr().out
    assert main(["summary", str(model)]) == 0
    assert "with training state" in capsys.readouterr().out


def test_train_prints_result(tmp_path, capsys):
    assert main(["train", *FAST, "--epochs", "1", "--swarm", "2", "--input-bits", "4",
                 "--opt", "vote_pct=80", "--flip-threshold", "4", "--out", str(tmp_path / "s.bsm")]) == 0
    out = capsys.readouterr().out
    assert "trained golden on digits: 1 epochs" in out and "model written to" in out
    from bitswarm.golden.model import load_model

    m = load_model(tmp_path / "s.bsm")
    assert m.cfg.layers[0].swarm == 2 and m.cfg.layers[0].input_bits == 4
    assert m.cfg.flip.threshold == 4 and json.loads(m.cfg.meta["options"]) == {"vote_pct": "80"}


def test_list_rules(capsys):
    assert main(["train", "--list-rules"]) == 0
    out = capsys.readouterr().out
    for name in ("golden", "ste-adam", "bop", "float"):
        assert name in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--swarm", "3"], "swarm must be one of"),
        (["train", "--dataset", "cifar"], "unknown data set 'cifar'"),
        (["train", "--arch", "10-10"], "takes 10 inputs"),
        (["train", "--rule", "float"], "cannot be exported"),
        (["train", "--rule", "nope"], "unknown rule 'nope'"),
        (["train", "--opt", "bogus=1"], "unknown rule option"),
        (["train", "--flip-threshold", "0"], "flip.threshold must be"),
        (["train", "--dataset", "npz:/nonexistent.npz"], "no such npz file"),
        (["train", "--resume", "/nonexistent.ckpt"], "no such checkpoint"),
    ],
)
def test_errors_one_line_and_nothing_overwritten(tmp_path, capsys, argv, message):
    out = tmp_path / "keep.bsm"
    out.write_bytes(b"precious")
    # --overwrite: the error under test comes first and still nothing is replaced
    rc = main([*argv, "--epochs", "1", "--quiet", "--out", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("bitswarm: error: ") and err.count("\n") == 1 and message in err
    assert out.read_bytes() == b"precious"
    assert not (tmp_path / "keep.run").exists()


def _one_error(capsys, argv, message):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("bitswarm: error: ") and err.count("\n") == 1, err
    assert message in err, err


def test_existing_model_never_replaced_without_overwrite(tmp_path, capsys):
    out = tmp_path / "keep.bsm"
    out.write_bytes(b"precious")
    # no run folder, and a --checkpoint-dir elsewhere: both once replaced the model silently
    for extra in ([], ["--checkpoint-dir", str(tmp_path / "elsewhere")]):
        _one_error(capsys, ["train", "--epochs", "1", "--quiet", "--out", str(out), *extra],
                   "keep.bsm exists; pass --overwrite to replace it")
        assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.bsm"]


def test_train_bad_outputs_refused_before_work(tmp_path, capsys, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    _one_error(capsys, ["train", "--epochs", "1", "--quiet", "--out", str(f / "x.bsm")],
               "is a file, not a folder")
    _one_error(capsys, ["train", "--epochs", "0", "--quiet", "--out", str(tmp_path / "m.bsm")],
               "epochs must be an integer >= 1")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    real_access = os.access
    # root ignores permission bits; make the check see what a normal user would
    monkeypatch.setattr("bitswarm.golden.files.os.access",
                        lambda p, mode: False if str(p) == str(ro) else real_access(p, mode))
    import time

    t0 = time.perf_counter()
    _one_error(capsys, ["train", "--epochs", "3", "--quiet", "--out", str(ro / "m.bsm"),
                        "--checkpoint-dir", str(tmp_path / "run")], "is not writable")
    assert time.perf_counter() - t0 < 5  # refused before the run, not after it
    ro.chmod(0o755)
    assert not (tmp_path / "run").exists() and not (tmp_path / "m.run").exists()


def test_eval_errors(tmp_path, model, capsys):
    assert main(["eval", str(tmp_path / "missing.bsm"), "--json"]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["eval", str(model), "--dataset", "mnist5k", "--json"]) == 2
    assert "takes 64 inputs but mnist5k samples have 784" in capsys.readouterr().err


def test_subprocess_error_has_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bitswarm", "eval", str(tmp_path / "x.bsm"), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert "no such model file" in p.stderr
