"""The golden model as a torch module (``interop/torch_module.py``, ``Model.to_torch()``):
scores equal ``Model.forward`` on the whole digits test set, on random models of every layer
kind and on both matmul dtypes (SPEC.md §9), eager, through ``torch.export`` and through ONNX
(both ``torch.onnx`` exporters, run by onnxruntime)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from bitswarm.golden.errors import ConfigError
from bitswarm.interop.torch_module import GoldenModule

from tests.interop import models


def _check(model, x, module=None):
    module = module if module is not None else model.to_torch()
    got = module(x)
    assert got.dtype == torch.int64
    assert torch.equal(got, model.forward(x))
    if isinstance(module, GoldenModule):
        assert torch.equal(module.predict(x), model.predict(x))


def test_torch_trained_digits_whole_test_set(tmp_path_factory):
    model = models.trained_digits(tmp_path_factory)
    ds = models.digits()
    x = torch.from_numpy(ds.x_test)
    assert len(x) == 360
    _check(model, x)
    _check(model, x.reshape(len(x), -1))  # [B, N] as well as [B, *input_shape]


@pytest.mark.parametrize("thresholds", ["spread", "extreme", "boundary"])
@pytest.mark.parametrize("name", sorted(models.CASES))
def test_torch_random_models(name, thresholds):
    model = models.random_model(name, seed=len(name), thresholds=thresholds)
    _check(model, models.inputs_for(model))


def test_torch_float64_path_widest_layer():
    """z_bound = 534,773,760 >= 2**24: the float64 product; scores reach +-2 z_bound."""
    model = models.widest_model()
    x = models.edge_inputs(65536).reshape(-1, 256, 256)
    _check(model, x)
    assert model.to_torch()(x)[1].tolist() == [1_069_547_520, -1_069_547_520]


def test_torch_tie_rule():
    model = models.tie_model()
    x = models.inputs_for(model, 50)
    assert set(model.to_torch().predict(x).tolist()) == {3}


def test_torch_state_is_buffers():
    model = models.random_model("ternary_bits8")
    mod = model.to_torch()
    assert isinstance(mod, GoldenModule) and list(mod.parameters()) == []
    assert sorted(mod.state_dict()) == sorted(
        f"{k}{i}" for i in range(3) for k in ("w", "theta", "invert"))
    assert mod.w0.dtype == torch.int8 and mod.theta0.dtype == torch.int64
    x = models.inputs_for(model, 20)
    before = mod(x)
    model.theta[2] += 1  # the module holds a copy
    assert torch.equal(mod(x), before)


def test_torch_mutant_weight():
    """A changed weight in the module must show: the comparison is not vacuous."""
    model = models.random_model("s1_bits8_digits")
    mod = model.to_torch()
    mod.w1[0, 0] = -mod.w1[0, 0]
    x = models.inputs_for(model)
    assert not torch.equal(mod(x), model.forward(x))


def test_torch_rejects_wrong_inputs():
    mod = models.random_model("s1_bits8_digits").to_torch()
    with pytest.raises(ConfigError, match="must be uint8"):
        mod(torch.zeros(2, 8, 8))
    with pytest.raises(ConfigError, match=r"shape \[batch, 8, 8\]"):
        mod(torch.zeros(2, 7, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="needs a bitswarm Model"):
        GoldenModule("m.bsm")


def test_torch_export_dynamic_batch():
    model = models.random_model("s4_bits8_ragged")
    x = models.inputs_for(model)
    ep = torch.export.export(model.to_torch().eval(), (x[:2],),
                             dynamic_shapes=({0: torch.export.Dim("batch")},))
    _check(model, x, ep.module())


def _ort_scores(data: bytes, x: torch.Tensor) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixels": x.numpy()})[0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based exporter
@pytest.mark.parametrize("name", ["s1_bits8_digits", "bits1_ragged", "ternary_bits8",
                                  "single_layer_bits5"])
def test_torch_onnx_legacy_exporter(name):
    pytest.importorskip("onnx")
    model = models.random_model(name, seed=1)
    x = models.inputs_for(model)
    buf = io.BytesIO()
    torch.onnx.export(model.to_torch().eval(), (x[:2],), buf, dynamo=False,
                      input_names=["pixels"], output_names=["scores"],
                      dynamic_axes={"pixels": {0: "batch"}, "scores": {0: "batch"}})
    np.testing.assert_array_equal(_ort_scores(buf.getvalue(), x), model.forward(x).numpy())


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export's pytree internals
@pytest.mark.parametrize("name", ["s1_bits8_digits", "bits8_n100_deep"])
def test_torch_onnx_dynamo_exporter(name, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model = models.random_model(name, seed=1)
    x = models.inputs_for(model)
    prog = torch.onnx.export(model.to_torch().eval(), (x[:2],), dynamo=True, verbose=False,
                             input_names=["pixels"], output_names=["scores"],
                             dynamic_shapes=({0: torch.export.Dim("batch")},))
    prog.save(tmp_path / "m.onnx")
    got = _ort_scores((tmp_path / "m.onnx").read_bytes(), x)
    np.testing.assert_array_equal(got, model.forward(x).numpy())
