"""hls4ml cross-check: the exported QONNX file through hls4ml's QONNX frontend,
compiled to its C simulation (g++ and hls4ml's bundled headers), predicts golden's scores."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("qonnx")
pytest.importorskip("hls4ml")
if shutil.which("g++") is None:  # pragma: no cover - the dev machines and CI have it
    pytest.skip("hls4ml's C simulation needs g++", allow_module_level=True)

from bitswarm.golden.layer import argmax  # noqa: E402
from bitswarm.interop.hls4ml_bridge import to_hls4ml  # noqa: E402
from bitswarm.interop.qonnx_export import export_qonnx  # noqa: E402

from .models import digits, inputs_for, random_model, tie_model, trained_digits  # noqa: E402


def hls4ml_scores(model, x, tmp_path) -> np.ndarray:
    export_qonnx(model, tmp_path / "m.onnx")
    hm = to_hls4ml(tmp_path / "m.onnx", tmp_path / "hls")
    x = np.ascontiguousarray(np.asarray(x).reshape(len(x), -1).astype(np.float32))
    y = np.asarray(hm.predict(x)).reshape(len(x), -1)
    assert np.array_equal(y, np.round(y))
    return y.astype(np.int64)


def test_digits_whole_test_set(tmp_path_factory, tmp_path):
    model = trained_digits(tmp_path_factory)
    ds = digits()
    got = hls4ml_scores(model, ds.x_test, tmp_path)
    ref = model.forward(torch.from_numpy(ds.x_test)).numpy()
    np.testing.assert_array_equal(argmax(torch.from_numpy(got)).numpy(),
                                  argmax(torch.from_numpy(ref)).numpy())
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("name", ["bits1_ragged", "s4_bits8_ragged", "ternary_bits8",
                                  "single_layer_bits5", "wide_words"])
def test_layer_kinds(name, tmp_path):
    """Swarm 1/2/4/8, ternary, input bits 1/2/5/8, random invert bits."""
    m = random_model(name, seed=4)
    x = inputs_for(m, 100, seed=1)
    np.testing.assert_array_equal(hls4ml_scores(m, x, tmp_path),
                                  m.forward(x).numpy())


def test_threshold_ties(tmp_path):
    """Hidden thresholds equal to the first sample's z: ``z − θ = 0`` must fire (≥, not >)."""
    m = random_model("s1_bits8_digits", seed=3, thresholds="boundary")
    x = inputs_for(m, 20, seed=3)
    np.testing.assert_array_equal(hls4ml_scores(m, x, tmp_path), m.forward(x).numpy())


def test_argmax_ties(tmp_path):
    m = tie_model()
    x = inputs_for(m, 20)
    got = hls4ml_scores(m, x, tmp_path)
    assert (argmax(torch.from_numpy(got)) == 3).all()


def test_broken_model_is_caught(tmp_path):
    """Mutation check: hls4ml built from a file of the original model must disagree with golden
    once one first-layer weight bit of golden's model is flipped."""
    m = random_model("bits1_ragged", seed=6)
    x = digits().x_test[:100]
    got = hls4ml_scores(m, x, tmp_path)
    np.testing.assert_array_equal(got, m.forward(torch.from_numpy(x)).numpy())
    m.weights[-1][0, 0, 0] ^= 1  # an output-layer bit: every image's class-0 score moves by 2
    assert not np.array_equal(got, m.forward(torch.from_numpy(x)).numpy())
