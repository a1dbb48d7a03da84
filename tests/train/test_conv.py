"""Convolutional networks in training: the golden rule's conv backward (rule_golden.py), the
reference rules on conv layers (rule_ref.py) and conv runs through the trainer and the CLI."""

import math

import pytest
import torch
import torch.nn.functional as F
from bitswarm.golden.conv import im2col, maxpool_bits
from bitswarm.golden.layer import effective_weights
from bitswarm.golden.model import quantize_input
from bitswarm.train import NetSpec, load_dataset
from bitswarm.train.rule_golden import GoldenRule
from bitswarm.train.trainer import DEFAULT_FLIP

ARCH = "1x8x8-c8k3p1-mp2-c8k3p1-mp2-10"


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits")
    return torch.from_numpy(d.x_train), torch.from_numpy(d.y_train)


def _autograd_reference(r, x, y):
    """The golden rule's conv surrogate gradients by float64 autograd from the definition:
    windows by golden ``im2col`` (autograd gives its adjoint), the hardtanh STE with the
    invert sign, the max-pool gradient routed by torch's ``max_pool2d`` indices of
    ``(1 - 2 inv) * (z - theta)`` (first maximum in raster order), the quantized softmax
    score gradient."""
    m, o = r.model, r.opts
    lays = m.cfg.layers
    enc = quantize_input(m.cfg, x).double()  # encoded values: pixels, then activation bits
    leaves = []
    for i, lay in enumerate(lays):
        geo = lay.conv
        cols = im2col(geo, enc) if geo is not None else enc
        xv = cols * 2 - 1 if lay.input_bits == 1 else cols
        w = effective_weights(lay, m.weights[i]).double().requires_grad_(True)
        leaves.append(w)
        zt = xv @ w.T - m.theta[i].double()
        if lay.output:
            break
        n = zt.shape[0]
        zi = zt.detach().long()
        var = torch.div(n * (zi * zi).sum(0) - zi.sum(0) ** 2, n * n, rounding_mode="floor")
        win = max(1, math.isqrt(int(var.sum()) // lay.n_out) * o.window_pct // 100)
        sgn = 1 - 2 * m.invert[i].double()
        ms = (zt.detach().abs() <= win).double() * sgn
        hard = ((zt.detach() >= 0) ^ m.invert[i].bool()).double()
        e = hard + (zt * ms - (zt * ms).detach()) / 2  # value: golden bits; d(2e - 1) = mask * sign
        if geo is not None:
            b, f = x.shape[0], lay.n_out
            shape = (b, geo.out_height, geo.out_width, f)
            _, idx = F.max_pool2d((zt.detach() * sgn).reshape(shape).permute(0, 3, 1, 2), geo.pool,
                                  return_indices=True)
            pooled = e.reshape(shape).permute(0, 3, 1, 2).flatten(2).gather(2, idx.flatten(2))
            e = pooled.reshape(idx.shape).permute(0, 2, 3, 1).reshape(b, -1)
            assert torch.equal(e.detach().to(torch.uint8), maxpool_bits(geo, hard.to(torch.uint8), f))
        enc = e
    logits = zt.detach() * (o.temperature / math.sqrt(lays[-1].n_in * lays[-1].swarm))
    g = torch.softmax(logits, 1) - F.one_hot(y, lays[-1].n_out).double()
    zt.backward(torch.round(g * (1 << o.grad_bits)))
    return [w.grad for w in leaves]


@pytest.mark.parametrize("arch, swarm, input_bits", [
    (ARCH, 1, 8), ("1x8x8-c6k3s2p1-mp2-12-10", 2, 1), ("1x8x8-c6k3-mp4-c5k2p1-10", 1, 4)])
def test_golden_conv_backward_equals_autograd(digits, arch, swarm, input_bits):
    x, y = digits
    r = GoldenRule(NetSpec(arch, (8, 8), swarm, input_bits, 3, DEFAULT_FLIP))
    r.init_state(x)
    gen = torch.Generator().manual_seed(5)
    for i in range(len(r.model.cfg.layers) - 1):
        r.model.invert[i] = torch.randint(0, 2, r.model.invert[i].shape, generator=gen, dtype=torch.uint8)
    xb, yb = x[:40], y[:40]
    loss, grads, _ = r.surrogate_gradients(xb, yb)
    ref = _autograd_reference(r, xb, yb)
    for g, gr in zip(grads, ref, strict=True):
        assert g.dtype == torch.int64 and torch.equal(gr, gr.round())
        assert torch.equal(g, gr.round().long())
    assert all(int(g.abs().sum()) > 0 for g in grads)
