"""sim/trace.py: locate_mismatch names the first differing value (layer/image/neuron, or for a
convolution layer/image/channel/pixel), and rtl_trace of a CNN on the Amaranth simulator equals
golden's trace; a broken filter is located at its channel."""

import numpy as np
import torch
from bitswarm.golden import Model, ModelConfig
from bitswarm.hw.accel import Accelerator
from bitswarm.sim.trace import locate_mismatch, rtl_trace

from tests.sim.test_virtual_conv import _balanced


def test_locate_mismatch_dense_and_conv():
    cfg = ModelConfig.from_arch("2x3x4-c5k3p1-mp2-4")  # layer 0: a 1x2x5 pooled map
    g = [np.zeros((3, 10), dtype=np.uint8), np.zeros((3, 4), dtype=np.int64)]
    o = [g[0].copy(), g[1].copy()]
    assert locate_mismatch(cfg, g, o) is None
    o[1][2, 3] = 7
    assert locate_mismatch(cfg, g, o, image_ids=[4, 5, 6]) == (
        "layer 1, image 6, neuron 3: score is 7, golden 0 (1 differing values in this layer)")
    o[0][1, 8] = 1  # flat HWC index 8 = (y*2 + x)*5 + c: y 0, x 1, c 3
    o[0][2, 0] = 1
    assert locate_mismatch(cfg, g, o, image_ids=[4, 5, 6]) == (
        "layer 0 (conv, 1x2x5 map), image 5, channel 3, pixel (y=0, x=1): activation bit is 1, "
        "golden 0 (2 differing values in this layer)")
    assert locate_mismatch(cfg, g, o[:1]).startswith("layer 0 (conv")
    assert locate_mismatch(cfg, g[:1], g) == "trace lengths differ: 2 vs golden 1"
    assert locate_mismatch(cfg, g, [o[0][:2], o[1]]) == "layer 0: shape [2, 10] differs from golden [3, 10]"


def _cnn():
    """A 2-channel CNN (stride, padding, a pool that drops a column, a second convolution)."""
    cfg = ModelConfig.from_arch("2x5x6-c4k3p1-mp2-c3k2-3", swarm=2, input_bits=3)
    x = torch.randint(0, 256, (6, 2, 5, 6), generator=torch.Generator().manual_seed(4),
                      dtype=torch.uint8)
    return _balanced(Model.random(cfg, 8), x, 8), x


def test_rtl_trace_of_a_cnn_equals_golden_trace():
    m, x = _cnn()
    gt: list = []
    m.forward(x, trace=gt)
    rt = rtl_trace(Accelerator(m), x.numpy())
    assert len(rt) == len(gt)
    for i, (g, r) in enumerate(zip(gt, rt, strict=True)):
        np.testing.assert_array_equal(r, g.numpy(), err_msg=f"layer {i}")
    assert locate_mismatch(m.cfg, [g.numpy() for g in gt], rt) is None


def test_rtl_trace_locates_a_broken_conv_filter():
    m, x = _cnn()
    gt: list = []
    m.forward(x, trace=gt)
    broken = Model(m.cfg, [w.clone() for w in m.weights], list(m.theta), list(m.invert))
    broken.weights[0][:, 2] ^= 1  # filter 2 of layer 0 computes -z
    msg = locate_mismatch(m.cfg, [g.numpy() for g in gt], rtl_trace(Accelerator(broken), x.numpy()))
    assert msg is not None and msg.startswith("layer 0 (conv, 2x3x4 map), image ")
    assert ", channel 2, pixel (y=" in msg, msg
