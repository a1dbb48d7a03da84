"""QONNX import: a W1A1 Brevitas network (binary ``QuantLinear``, BatchNorm,
binary ``QuantIdentity``), trained briefly on digits and exported by Brevitas's own QONNX
exporter, imported with ``bitswarm import``: its classes equal Brevitas's forward on the whole
digits test set, and the imported model runs through ``verilog`` and ``sim --backend
verilator`` with 0 mismatches. Also SPEC §13's folding rule, exhaustively, and the errors."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("qonnx")

from bitswarm.golden.errors import ConfigError, ModelFileError  # noqa: E402
from bitswarm.golden.layer import argmax  # noqa: E402
from bitswarm.golden.model import load_model  # noqa: E402
from bitswarm.interop.qonnx_export import export_qonnx  # noqa: E402
from bitswarm.interop.qonnx_import import fold_threshold, import_qonnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from .models import CASES, digits, inputs_for, random_model  # noqa: E402

#: inverted BatchNorm channels of the first hidden layer (gamma < 0 -> invert bit 1)
FLIPPED = (0, 3, 5, 8, 13, 21)


def _bitswarm(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "bitswarm", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def _brevitas_net(binarized: bool = False):
    brevitas = pytest.importorskip("brevitas")
    pytest.importorskip("onnxoptimizer")
    import brevitas.nn as qnn
    from brevitas.quant.binary import (
        SignedBinaryActPerTensorConst,
        SignedBinaryWeightPerTensorConst,
    )
    from torch import nn

    class Weight1(SignedBinaryWeightPerTensorConst):  # ±1 weights (scale 1, not 0.1)
        scaling_const = 1.0

    class Act1(SignedBinaryActPerTensorConst):  # ±1 activations
        scaling_const = 1.0

    torch.manual_seed(0)

    def lin(a, b):
        return qnn.QuantLinear(a, b, bias=False, weight_quant=Weight1)

    class Centre(nn.Module):  # pixel - 128 >= 0 <=> pixel >= 128 (bitswarm's input_bits 1)
        def forward(self, x):
            return x - 128.0

    first = [Centre(), qnn.QuantIdentity(act_quant=Act1)] if binarized else []
    net = nn.Sequential(
        *first,
        lin(64, 64), nn.BatchNorm1d(64), qnn.QuantIdentity(act_quant=Act1),
        lin(64, 32), nn.BatchNorm1d(32), qnn.QuantIdentity(act_quant=Act1),
        lin(32, 10),
    )
    return brevitas, net


@pytest.fixture(scope="module")
def brevitas_export(tmp_path_factory):
    """Train 8 epochs on digits (raw 0..255 pixels in), flip a few BatchNorm channels' sign so
    that invert bits occur, and export with ``brevitas.export.export_qonnx``. Brevitas's and
    torch.onnx's own deprecation and export warnings are silenced here (third-party code)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _train_and_export(tmp_path_factory, binarized=False)


@pytest.fixture(scope="module")
def brevitas_export_b1(tmp_path_factory):
    """The same with binarized pixels: ``x - 128`` then a binary ``QuantIdentity``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _train_and_export(tmp_path_factory, binarized=True)


def _train_and_export(tmp_path_factory, binarized):
    _, net = _brevitas_net(binarized)
    k = 2 if binarized else 0  # index of the first QuantLinear
    from brevitas.export import export_qonnx as brevitas_export_qonnx

    ds = digits()
    xtr = torch.tensor(ds.x_train.reshape(len(ds.x_train), -1), dtype=torch.float32)
    ytr = torch.tensor(ds.y_train)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(net(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        bn = net[k + 1]
        for c in FLIPPED:  # y -> -y and the next layer's column negated: the same network
            bn.weight[c] = -bn.weight[c]
            bn.bias[c] = -bn.bias[c]
            net[k + 3].weight[:, c] = -net[k + 3].weight[:, c]
    d = tmp_path_factory.mktemp("brevitas")
    path = d / "w1a1.onnx"
    brevitas_export_qonnx(net, torch.zeros(1, 64), str(path))
    xte = torch.tensor(ds.x_test.reshape(len(ds.x_test), -1), dtype=torch.float32)
    with torch.no_grad():
        out = net(xte).numpy()
    neg = [np.flatnonzero(net[k + j].weight.detach().numpy() < 0).tolist() for j in (1, 4)]
    return path, out, neg


@pytest.mark.parametrize("fixture, bits", [("brevitas_export", 8), ("brevitas_export_b1", 1)])
def test_import_equals_brevitas_forward(fixture, bits, request):
    path, out, neg = request.getfixturevalue(fixture)
    m = import_qonnx(path, input_shape=(8, 8))
    assert m.cfg.arch == [64, 64, 32, 10] and m.cfg.layers[0].input_bits == bits
    # gamma < 0 is exactly where the invert bit is set (SPEC §13)
    assert [np.flatnonzero(v.numpy()).tolist() for v in m.invert[:2]] == neg
    assert len(neg[0]) > 0
    ds = digits()
    scores = m.forward(torch.from_numpy(ds.x_test)).numpy()
    # ±1 weights and activations, scale 1: Brevitas's float scores are these integers
    np.testing.assert_array_equal(scores, out)
    got = argmax(torch.from_numpy(scores)).numpy()
    np.testing.assert_array_equal(got, out.argmax(1))  # torch/numpy argmax: first maximum
    assert (got == ds.y_test).mean() > (0.8 if bits == 8 else 0.6)


@pytest.mark.verilator
def test_cli_import_verilog_verilator(brevitas_export, tmp_path):
    path, out, neg = brevitas_export
    bsm = tmp_path / "m.bsm"
    r = _bitswarm("import", path, "-o", bsm, "--input-shape", "8,8", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["arch"] == [64, 64, 32, 10] and rep["inverted"][:2] == [len(v) for v in neg]
    r = _bitswarm("import", path, "-o", bsm)
    assert r.returncode == 2 and "exists; pass --overwrite" in r.stderr
    m = load_model(bsm)
    assert np.array_equal(argmax(m.forward(torch.from_numpy(digits().x_test))).numpy(),
                          out.argmax(1))
    r = _bitswarm("verilog", bsm, "-o", tmp_path / "rtl", "--json")
    assert r.returncode == 0, r.stderr
    assert any((tmp_path / "rtl").glob("*.v"))
    r = _bitswarm("sim", bsm, "--backend", "verilator", "--dataset", "digits", "--json",
                  "--build-dir", tmp_path / "build", timeout=900)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["n"] == len(digits().x_test) and rep["mismatches"] == 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_own_export(name, tmp_path):
    """bitswarm -> QONNX -> bitswarm: the same scores (invert bits come back as negated rows;
    a swarm layer may come back with fewer planes when its sums allow)."""
    m = random_model(name, seed=9, thresholds="extreme")
    export_qonnx(m, tmp_path / "m.onnx")
    m2 = import_qonnx(tmp_path / "m.onnx")
    assert m2.cfg.input_shape == m.cfg.input_shape and m2.cfg.arch == m.cfg.arch
    assert [lay.input_bits for lay in m2.cfg.layers] == [lay.input_bits for lay in m.cfg.layers]
    x = inputs_for(m, 200, seed=2)
    assert torch.equal(m2.forward(x), m.forward(x))


@pytest.mark.parametrize("zb", [1, 2, 7, 40])
def test_fold_threshold_exhaustive(zb):
    """((z ≥ θ) XOR inv) == (s·z + b ≥ 0) for every integer |z| ≤ z_bound, over scales of both
    signs and zero and offsets on, next to and between the integers."""
    z = np.arange(-zb, zb + 1)
    for s in (3.0, 1.0, 0.25, 1e-3, 0.0, -0.5, -1.0, -7.0):
        for t in np.concatenate([np.arange(-zb - 3, zb + 4) * 1.0, np.linspace(-zb - 2, zb + 2, 37)]):
            b = -s * t if s else t
            theta, inv = fold_threshold(s, b, zb)
            assert -zb <= theta <= zb and inv in (0, 1)
            exact = [Fraction(s) * int(v) + Fraction(b) >= 0 for v in z]  # no float rounding
            np.testing.assert_array_equal((z >= theta) ^ bool(inv), exact,
                                          err_msg=f"s={s} b={b}")


def _graph(nodes, inits, n_in=4, n_out=3, out="y"):
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, n_out])],
        initializer=[numpy_helper.from_array(np.asarray(v, dtype=np.float32), k)
                     for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _save(tmp_path, proto):
    import onnx

    p = tmp_path / "g.onnx"
    onnx.save(proto, str(p))
    return p


W = np.array([[1, -1, 1], [-1, -1, 1], [1, 1, -1], [-1, 1, 1]], dtype=np.float32)


def test_plain_binary_matmul(tmp_path):
    m = import_qonnx(_save(tmp_path, _graph([helper.make_node("MatMul", ["x", "w"], ["y"])],
                                            {"w": W})))
    x = torch.tensor([[0, 255, 7, 128]], dtype=torch.uint8)
    assert m.forward(x).tolist() == [(x.float() @ torch.from_numpy(W)).long().tolist()[0]]


def test_unsupported_node_named(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"], name="fc1"),
             helper.make_node("Relu", ["z"], ["r"], name="relu1"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    p = _save(tmp_path, _graph(nodes, {"w": W, "w2": np.ones((3, 3))}))
    with pytest.raises(ConfigError, match=r"node 'relu1' \(Relu\) cannot be mapped to a bitswarm "
                       "layer: this op type is not supported$"):
        import_qonnx(p)
    r = _bitswarm("import", p, "-o", tmp_path / "m.bsm")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "'relu1' (Relu)" in r.stderr
    assert not (tmp_path / "m.bsm").exists()


def test_multibit_activation_named(tmp_path):
    q = helper.make_node("Quant", ["z", "one", "zero", "two"], ["a"], name="act2bit",
                         domain="qonnx.custom_op.general", signed=1, narrow=0,
                         rounding_mode="ROUND")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"], name="fc1"), q,
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    p = _save(tmp_path, _graph(nodes, {"w": W, "w2": np.ones((3, 3)), "one": 1.0, "zero": 0.0,
                                       "two": 2.0}))
    with pytest.raises(ConfigError, match=r"'act2bit' \(Quant\) .*2-bit signed activations"):
        import_qonnx(p)


def test_real_weights_named(tmp_path):
    p = _save(tmp_path, _graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
                               {"w": W * np.float32(0.3) + np.float32(0.01)}))
    with pytest.raises(ConfigError, match=r"'fc' \(MatMul\).*not a per-neuron scale"):
        import_qonnx(p)


def test_unreadable_file(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x00garbage")
    with pytest.raises(ModelFileError, match="not a readable ONNX file"):
        import_qonnx(p)
    with pytest.raises(ModelFileError, match="no such ONNX file"):
        import_qonnx(tmp_path / "missing.onnx")


def test_multithreshold_graph_equals_qonnx_exec(tmp_path):
    """A FINN-style graph: MultiThreshold input quantizer (pixel >> 4), a bipolar and a 0/1
    MultiThreshold between layers; the import's classes equal qonnx's execution of the file on
    the whole digits test set, its scores equal the graph's output divided by the output scale."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    rng = np.random.default_rng(3)
    dom = "qonnx.custom_op.general"

    def pm1(*shape):
        return rng.choice([-1.0, 1.0], size=shape)

    inits = {"t0": (np.arange(1, 16) * 16.0)[None], "w0": pm1(64, 32),
             "t1": rng.uniform(-60, 60, (32, 1)).round(1), "w1": pm1(32, 16),
             "t2": rng.integers(-6, 7, (16, 1)) * 1.0, "w2": pm1(16, 10)}
    nodes = [
        helper.make_node("MultiThreshold", ["x", "t0"], ["q0"], domain=dom, name="in_q",
                         out_dtype="UINT4"),
        helper.make_node("MatMul", ["q0", "w0"], ["z0"], name="fc0"),
        helper.make_node("MultiThreshold", ["z0", "t1"], ["a0"], domain=dom, name="act0",
                         out_dtype="BIPOLAR", out_scale=2.0, out_bias=-1.0),
        helper.make_node("MatMul", ["a0", "w1"], ["z1"], name="fc1"),
        helper.make_node("MultiThreshold", ["z1", "t2"], ["a1"], domain=dom, name="act1",
                         out_dtype="BINARY"),
        helper.make_node("MatMul", ["a1", "w2"], ["y"], name="fc2"),
    ]
    path = _save(tmp_path, _graph(nodes, inits, n_in=64, n_out=10))
    m = import_qonnx(path, input_shape=(8, 8))
    assert [lay.input_bits for lay in m.cfg.layers] == [4, 1, 1]
    x = digits().x_test
    mw = cleanup_model(ModelWrapper(str(path)), override_inpsize=len(x))
    y = execute_onnx(mw, {mw.graph.input[0].name: x.reshape(len(x), -1).astype(np.float32)})
    y = y[mw.graph.output[0].name]
    scores = m.forward(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(scores * 0.5, y)  # 0/1 inputs: y = (z± + column sums) / 2
    np.testing.assert_array_equal(argmax(torch.from_numpy(scores)).numpy(), y.argmax(1))
