"""QONNX export: qonnx loads the file, ``qonnx.util.cleanup`` runs, and
``qonnx.core.onnx_exec`` gives golden's integer scores and classes exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("qonnx")

from bitswarm.golden.errors import ConfigError  # noqa: E402
from bitswarm.golden.layer import argmax  # noqa: E402
from bitswarm.golden.model import save_model  # noqa: E402
from bitswarm.interop.qonnx_export import QONNX_DOMAIN, build_qonnx, export_qonnx  # noqa: E402
from qonnx.core.datatype import DataType  # noqa: E402
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.core.onnx_exec import execute_onnx  # noqa: E402
from qonnx.util.cleanup import cleanup, cleanup_model  # noqa: E402

from .models import (  # noqa: E402
    CASES,
    digits,
    inputs_for,
    random_model,
    tie_model,
    trained_digits,
    widest_model,  # noqa: E402
)


def qonnx_scores(path, x) -> np.ndarray:
    """Scores of the QONNX file ``path`` for uint8 samples ``x``, by qonnx's executor after
    cleanup (batch fixed to ``len(x)``, as qonnx needs static shapes)."""
    x = np.asarray(x).reshape(len(x), -1).astype(np.float32)
    mw = cleanup_model(ModelWrapper(str(path)), override_inpsize=len(x))
    out = execute_onnx(mw, {mw.graph.input[0].name: x})[mw.graph.output[0].name]
    assert out.dtype == np.float32 and out.shape[0] == len(x)
    assert np.array_equal(out, np.round(out)), "scores must be integers"
    return out.astype(np.int64)


def _check(model, x, path):
    export_qonnx(model, path, overwrite=True)
    got = qonnx_scores(path, x)
    ref = model.forward(torch.as_tensor(x)).numpy()
    np.testing.assert_array_equal(got, ref)
    assert torch.equal(argmax(torch.from_numpy(got)), argmax(torch.from_numpy(ref)))
    return got, ref


def test_digits_whole_test_set(tmp_path_factory, tmp_path):
    model = trained_digits(tmp_path_factory)
    ds = digits()
    got, ref = _check(model, ds.x_test, tmp_path / "m.onnx")
    assert got.shape == (len(ds.x_test), 10)
    # the model is a real one: most classes right (so a constant output cannot pass)
    assert (argmax(torch.from_numpy(got)).numpy() == ds.y_test).mean() > 0.7


def test_cli_export_then_cleanup(tmp_path_factory, tmp_path):
    """`bitswarm export --format qonnx`, then qonnx's own cleanup on the file, then exec."""
    model = trained_digits(tmp_path_factory)
    save_model(model, tmp_path / "m.bsm")
    out = tmp_path / "m.onnx"
    r = subprocess.run([sys.executable, "-m", "bitswarm", "export", str(tmp_path / "m.bsm"),
                        "--format", "qonnx", "-o", str(out), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["path"] == str(out) and rep["layers"] == 2 and rep["ops"]["MatMul"] == 2
    r = subprocess.run([sys.executable, "-m", "bitswarm", "export", str(tmp_path / "m.bsm"),
                        "--format", "qonnx", "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "exists; pass --overwrite" in r.stderr
    clean = tmp_path / "clean.onnx"
    cleanup(str(out), out_file=str(clean), override_inpsize=40)
    x = digits().x_test[:40]
    mw = ModelWrapper(str(clean))
    got = execute_onnx(mw, {mw.graph.input[0].name: x.reshape(40, -1).astype(np.float32)})
    np.testing.assert_array_equal(got[mw.graph.output[0].name],
                                  model.forward(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("thresholds", ["spread", "extreme", "boundary"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_random_models(name, thresholds, tmp_path):
    """Swarm 1..32, ternary, input bits 1/2/3/5/8, invert bits, thresholds at the bounds and
    exactly at z (ties of ``z − θ = 0``)."""
    m = random_model(name, seed=7, thresholds=thresholds)
    _check(m, inputs_for(m, 200, seed=3), tmp_path / "m.onnx")


def test_argmax_ties_lowest_index(tmp_path):
    m = tie_model()
    x = inputs_for(m, 50)
    got, _ = _check(m, x, tmp_path / "m.onnx")
    assert (argmax(torch.from_numpy(got)) == 3).all()


def test_mnist5k_test_set(tmp_path):
    """A trained 784-128-10 mnist5k model (3 epochs, ~5 s) on the whole mnist5k test split."""
    from bitswarm.golden.model import load_model
    from bitswarm.train import TrainConfig, load_dataset, train

    cfg = TrainConfig(dataset="mnist5k", arch=(784, 128, 10), epochs=3)
    train(cfg, out=tmp_path / "m.bsm", run_dir=tmp_path / "run", quiet=True, plots=False)
    _check(load_model(tmp_path / "m.bsm"), load_dataset("mnist5k").x_test, tmp_path / "m.onnx")


def test_mnist5k_subset(tmp_path):
    """A 784-input model with swarm 2 and 4-bit inputs on the first 300 mnist5k test images."""
    from bitswarm.golden.layer import LayerConfig
    from bitswarm.golden.model import Model, ModelConfig
    from bitswarm.train import load_dataset

    lays = (LayerConfig(784, 96, 2, 4), LayerConfig(96, 10, 2, 1, output=True))
    m = Model.random(ModelConfig(input_shape=(28, 28), layers=lays), seed=11)
    m.theta[0] = torch.randint(-200, 200, (96,), generator=torch.Generator().manual_seed(1),
                               dtype=torch.int32)
    m.invert[0] = (torch.arange(96) % 3 == 0).to(torch.uint8)
    m.validate()
    _check(m, load_dataset("mnist5k").x_test[:300], tmp_path / "m.onnx")


def test_graph_ops_domain_and_datatypes(tmp_path):
    m = random_model("bits8_n100_deep", seed=1)
    export_qonnx(m, tmp_path / "m.onnx")
    mw = ModelWrapper(str(tmp_path / "m.onnx"))
    ops = {n.op_type for n in mw.graph.node}
    assert ops == {"Quant", "BipolarQuant", "MatMul", "Add"}
    for n in mw.graph.node:
        assert (n.domain == QONNX_DOMAIN) == (n.op_type in ("Quant", "BipolarQuant"))
    assert mw.get_tensor_datatype("pixels") == DataType["UINT8"]
    assert mw.get_tensor_datatype("l0_in") == DataType["UINT8"]
    assert mw.get_tensor_datatype("l1_in") == DataType["BIPOLAR"]
    assert mw.get_tensor_datatype("l0_w") == DataType["INT3"]  # swarm 2: -2..2
    assert mw.get_tensor_datatype("scores") == DataType[f"INT{m.cfg.layers[-1].z_width}"]
    assert [d.dim_param or d.dim_value for d in mw.graph.input[0].type.tensor_type.shape.dim] \
        == ["batch", 100]
    b1 = random_model("bits1_ragged")
    g = build_qonnx(b1)
    assert [n.op_type for n in g.graph.node][:2] == ["Add", "BipolarQuant"]  # pixel >= 128


def test_broken_model_is_caught(tmp_path):
    """Mutation check: a file exported from a model with one weight bit flipped must differ."""
    m = random_model("s1_bits8_digits", seed=2)
    x = digits().x_test
    export_qonnx(m, tmp_path / "m.onnx")
    m.weights[0][0, 0, 36] ^= 1  # a centre pixel of the 8x8 digits
    ref = m.forward(torch.from_numpy(x)).numpy()
    assert not np.array_equal(qonnx_scores(tmp_path / "m.onnx", x), ref)


def test_refusals(tmp_path):
    m = random_model("bits1_ragged")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        export_qonnx(m, out)
    assert out.read_bytes() == b"keep"
    with pytest.raises(ConfigError, match=r"layer 0: \|z − θ\| can reach 1069547520, which "
                       "float32"):
        export_qonnx(widest_model(), tmp_path / "w.onnx")
    assert not (tmp_path / "w.onnx").exists()
