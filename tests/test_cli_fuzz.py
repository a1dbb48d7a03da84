"""No tracebacks, ever: generated argument lists and malformed files for every subcommand.

For each subcommand, hypothesis builds argument lists from the subcommand's own options
(introspected from the parser, so a new option is fuzzed without editing this file), with
values drawn from edge-case pools: bad numbers, malformed and corrupted files, a checkpoint
where a model belongs, folders, missing paths, existing outputs. Each run happens in a fresh
folder holding those files. The property: exit status 0 or 2 (never 70, the internal-error
status, never an escaping exception), no traceback, and on status 2 at most a few stderr lines
and the folder exactly as it was (no partial output).

Long work is cut short where it would start (a board build's tool run, a Verilator build, a
serial port, the demo's training) by raising a ``BitswarmError`` there, so the run ends as a
clean status 2 after every check before the work has passed; data sets are cut to a few
hundred samples so the training that does run is short.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from bitswarm.cli import build_parser, main
from bitswarm.golden.errors import BitswarmError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


class _Stop(BitswarmError):
    """Raised where long work would start."""


def _stop(*a, **k):
    raise _Stop("long work is not run in the fuzz test")


# -- the files every run sees ------------------------------------------------------------


def _make_files(root: Path) -> None:
    import torch
    from bitswarm.golden import Model, ModelConfig, model_to_bytes, save_model
    from bitswarm.train.checkpoint import Checkpoint, save_checkpoint

    m = Model.random(ModelConfig.mlp([64, 8, 10], input_shape=(8, 8)), seed=0)
    save_model(m, root / "m.bsm")
    good = model_to_bytes(m)
    flipped = bytearray(good)
    flipped[len(good) - 3] ^= 0x10
    (root / "flip.bsm").write_bytes(bytes(flipped))
    (root / "trunc.bsm").write_bytes(good[: len(good) // 2])
    (root / "empty.bsm").write_bytes(b"")
    (root / "junk.bsm").write_bytes(np.random.default_rng(0).bytes(300))
    save_model(Model.random(ModelConfig.mlp([16, 4, 3]), seed=1), root / "small16.bsm")
    save_checkpoint(root / "last.ckpt", Checkpoint(
        config={}, epoch=1, model=m, tensors={"x": torch.zeros(2)}, rule_meta={}, metrics=[],
        data_order={}))
    (root / "fold.json").write_text('{"format": "bitswarm-fold", "version": 1, "layers": [}')
    (root / "fold2.json").write_text('{"format": "bitswarm-fold", "version": 1, "arch": [64, 8, '
                                     '10], "layers": [{"pe": 2, "simd": 8}, {"pe": 1, "simd": 2}]}')
    (root / "dir").mkdir()
    (root / "dir" / "keep.txt").write_text("user data")
    (root / "afile").write_text("not a folder")
    (root / "x.npz").write_bytes(b"PK\x03\x04 not really a zip")


PATHS = ["m.bsm", "flip.bsm", "trunc.bsm", "empty.bsm", "junk.bsm", "small16.bsm", "last.ckpt",
         "fold.json", "fold2.json", "dir", "afile", "afile/x", "missing.bsm", "new", "new/o.bsm",
         "/dev/null", ""]
STRINGS = ["digits", "mnist5k", "fashion", "npz:x.npz", "npz:missing.npz", "bogus", "", "-",
           "64-8-10", "64-10", "64-0-10", "a-b", "64--10", "golden", "ste-adam", "onchip",
           "golden,bop", "nope", "vote_pct=50", "bogus=1", "a=b=c", "=", "n_in=8", "pe=0",
           "width=5", "n_in=-1", "lfsr", "mac-array", "threshold", "x" * 300, "0", "-1", "1e9",
           "cpu", "cuda", "loop://", "é"]
# (values argparse accepts, values it refuses): mostly the first, so runs get past the parser
INTS = (["-1", "0", "1", "2", "3", "8", "32", "1099511627776"], ["x", "", "1.5"])
FLOATS = (["-1", "0", "1e-9", "36", "75", "nan", "inf", "1e400"], ["x", ""])
# options whose generic range could start long or huge work: bounded pools
BOUNDED = {
    "--epochs": (["-1", "0", "1", "2"], ["x"]),
    "--limit": (["-1", "0", "1", "3"], ["x"]),
    "--batch-size": (["0", "1", "64", "1099511627776"], ["x"]),
    "--swarm": (["0", "1", "2", "3", "32", "64"], ["x"]),
    "--timeout": (["-1", "0", "0.001"], ["x"]),
}
GOOD_MODELS = ["m.bsm", "small16.bsm"]


def _options(sub: argparse.ArgumentParser):
    """(flag or None for a positional, required, (good, bad) value pools or None) per action."""
    out = []
    for a in sub._actions:
        if isinstance(a, argparse._HelpAction | argparse._VersionAction):
            continue
        flag = a.option_strings[-1] if a.option_strings else None
        if a.nargs == 0:
            pools = None
        elif a.choices:
            pools = ([str(c) for c in a.choices], ["bogus"])
        elif flag in BOUNDED:
            pools = BOUNDED[flag]
        elif a.type is int:
            pools = INTS
        elif a.type is float:
            pools = FLOATS
        else:
            pools = (PATHS + STRINGS, [])
        out.append((flag, bool(a.required) or flag is None, pools))
    return out


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


SUBS = _subparsers()


@st.composite
def _argv(draw, cmd: str):
    opts = _options(SUBS[cmd])
    argv = [cmd]

    def value(pools):
        good, bad = pools
        if bad and draw(st.integers(0, 7)) == 0:
            return draw(st.sampled_from(bad))
        return draw(st.sampled_from(good))

    for flag, required, pools in opts:
        if flag is None:  # a positional (a model file): usually a good one
            if draw(st.integers(0, 9)) > 0:
                argv.append(draw(st.sampled_from(GOOD_MODELS)) if draw(st.booleans())
                            else draw(st.sampled_from(PATHS)))
        elif required and draw(st.integers(0, 9)) > 0:
            argv += [flag, value(pools)]
    optional = [o for o in opts if o[0] is not None and not o[1]]
    if optional:
        for flag, _, pools in draw(st.lists(st.sampled_from(optional), max_size=4,
                                            unique_by=lambda o: o[0])):
            argv.append(flag)
            if pools is not None:
                argv.append(value(pools))
    if draw(st.integers(0, 9)) == 0:  # now and then an unknown option or a stray argument
        argv.insert(draw(st.integers(1, len(argv))), draw(st.sampled_from(["--bogus", "x", "-o"])))
    return argv


@pytest.fixture(scope="module")
def patched():
    """Cut long work short and data sets small for the whole module."""
    mp = pytest.MonkeyPatch()
    import bitswarm.train as train_pkg
    import bitswarm.train.data as data
    import bitswarm.train.trainer as trainer

    real = data.load_dataset

    def small(name, data_dir=None, *a, **k):
        ds = real(name, data_dir, *a, **k)
        return data.Dataset(ds.name, ds.x_train[:256], ds.y_train[:256], ds.x_test[:64],
                            ds.y_test[:64], ds.classes)

    for mod in (data, trainer, train_pkg):
        mp.setattr(mod, "load_dataset", small, raising=False)
    mp.setattr("bitswarm.hw.bitstream.build_bitstream", _stop)
    mp.setattr("bitswarm.train.train", _stop)  # bitswarm demo's training step
    mp.setattr("bitswarm.train.distributed.launch", _stop, raising=False)  # train --nproc
    import dataclasses

    import bitswarm.train.zoo.run as zoo_run

    real_rules, real_train = zoo_run.parse_rules, zoo_run.train
    # the zoo: at most two rules, one epoch each (its checks run before any training)
    mp.setattr(zoo_run, "parse_rules", lambda text: real_rules(text)[:2])
    mp.setattr(zoo_run, "train", lambda cfg, **k: real_train(
        dataclasses.replace(cfg, epochs=min(cfg.epochs, 1)), **k))
    real_seed_row = zoo_run.run_seed_row  # seed-scale rows: one epoch of at most 2 steps
    mp.setattr(zoo_run, "run_seed_row", lambda name, dataset, swarm, epochs, batch, epoch_steps=None,
               *a, **k: real_seed_row(name, dataset, swarm, 1, batch, 2, *a, **k))
    import bitswarm.sim.driver as driver

    real_backend = driver.make_backend

    def backend(name, *a, **k):
        if name != "virtual":
            _stop()
        return real_backend(name, *a, **k)

    mp.setattr(driver, "make_backend", backend)
    mp.setattr("bitswarm.sim.bulk.VerilatorTrainer", _stop, raising=False)
    mp.setattr("bitswarm.sim.hostlink.SerialTransport", _stop, raising=False)
    yield
    mp.undo()


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0,
                                       p.read_bytes() if p.is_file() and p.stat().st_size < 4096
                                       else None)
            for p in sorted(root.rglob("*"))}


def _check(argv: list[str]) -> tuple[int, str]:
    with tempfile.TemporaryDirectory(prefix="bitswarm-fuzz-") as td:
        root = Path(td)
        _make_files(root)
        before = _snapshot(root)
        err, out = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(root)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                try:
                    rc = main(argv)
                except SystemExit as e:  # argparse: --help (0) or a usage error (2)
                    rc = e.code
        finally:
            os.chdir(cwd)
        text = err.getvalue()
        assert rc in (0, 2), f"{argv}: exit {rc}: {text[-2000:]}"
        assert "Traceback" not in text, f"{argv}: {text[-2000:]}"
        if rc == 2:
            lines = [ln for ln in text.splitlines() if ln.strip()]
            assert 1 <= len(lines) <= 3, f"{argv}: {lines}"
            assert lines[-1].startswith("bitswarm: error: "), f"{argv}: {lines}"
            after = _snapshot(root)
            assert after == before, f"{argv}: partial output {set(after) ^ set(before)}"
        return rc, text


# A fast subcommand gets more examples than one whose valid runs train or build.
BUDGET = {"selfcheck": 10, "summary": 40, "verilog": 40, "fold": 40, "bitstream": 40,
          "demo": 25, "sim": 40, "clean": 10, "run": 30, "train": 40, "eval": 30, "zoo": 15}


@pytest.mark.parametrize("cmd", sorted(SUBS))
def test_no_traceback_from_any_arguments(cmd, patched):
    n = BUDGET.get(cmd, 20)

    @settings(max_examples=n, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_argv(cmd))
    def run(argv):
        _check(argv)

    run()


@pytest.mark.parametrize("argv, message", [
    (["verilog", "m.bsm", "-o", "afile"], "afile is a file, not a folder"),  # once a traceback
    (["train", "--out", "afile/x.bsm", "--epochs", "1", "--quiet"], "afile is a file"),
    (["zoo", "--epochs", "0"], "epochs must be an integer >= 1"),
    (["train", "--epochs", "0", "--out", "n.bsm"], "epochs must be an integer >= 1"),
    (["summary", "last.ckpt"], "is a training checkpoint, not a model file"),
    (["train", "--resume", "m.bsm", "--out", "n.bsm"], "is a model file, not a training checkpoint"),
    (["summary", "flip.bsm"], "integrity check failed"),
    (["eval", "trunc.bsm"], "trunc.bsm"),
    (["train", "--epochs", "x"], "argument --epochs: invalid int value"),
])
def test_known_cases(argv, message, patched):
    rc, text = _check(argv)
    assert rc == 2 and message in text, text
