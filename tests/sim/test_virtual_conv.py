"""sim/virtual.py on convolutional layers (SPEC.md §14): bit-exact with golden Model.forward.

Every layer's trace entry (pooled HWC bits, then scores) is compared whole, over geometries
with stride, padding, pooling that does not divide the map, odd sizes, windows of any width
(``K*K*C`` and ``K*C`` not multiples of 64, and multiples), multi-channel inputs, swarm planes,
multi-bit and ternary first layers, and every popcount backend. Thresholds are set to each
channel's median pre-activation on the samples (a trained network's activations are balanced
like this), so every layer's bits are about half ones. The mutation tests break the padding
value and the window order from here and check that the comparison fails.
"""

import numpy as np
import pytest
import torch
from bitswarm.golden import ConfigError, LayerConfig, Model, ModelConfig, pack_bits
from bitswarm.golden.conv import im2col
from bitswarm.golden.layer import layer_forward, preact
from bitswarm.golden.model import quantize_input
from bitswarm.sim import popcount as pc
from bitswarm.sim import virtual
from bitswarm.sim.virtual import VirtualAccelerator, layer_planes, pack_layer, pack_rows

BACKENDS = pc.available_backends()


def _ternary_first(cfg: ModelConfig) -> ModelConfig:
    l0 = cfg.layers[0]
    first = LayerConfig(l0.n_in, l0.n_out, 1, l0.input_bits, "ternary", l0.output, l0.conv)
    return ModelConfig(input_shape=cfg.input_shape, layers=(first,) + cfg.layers[1:])


def _balanced(m: Model, x: torch.Tensor, seed: int) -> Model:
    """Thresholds as training leaves them: every hidden channel's output bit is 1 on about half
    of ``x`` (before a ``Q x Q`` OR-pool each bit is 1 with ``p = 1 - 2**(-1/Q**2)``, so the
    pooled bit is balanced); random invert bits; the output layer's thresholds near 0. Layer
    by layer through golden."""
    g = torch.Generator().manual_seed(seed)
    h = quantize_input(m.cfg, x)
    for i, lay in enumerate(m.cfg.layers):
        rows = im2col(lay.conv, h) if lay.conv is not None else h
        z = preact(lay, rows, m.weights[i]).to(torch.float64)
        if lay.output:
            m.theta[i] = torch.randint(-3, 4, (lay.n_out,), generator=g, dtype=torch.int32)
        else:
            q = lay.conv.pool if lay.conv is not None else 1
            p = 1 - 0.5 ** (1 / q**2)
            inv = torch.randint(0, 2, (lay.n_out,), generator=g, dtype=torch.uint8)
            # bit = (z >= theta) XOR inv is 1 with probability p
            level = torch.where(inv.bool(), torch.tensor(p), torch.tensor(1 - p)).to(torch.float64)
            theta = torch.stack([z[:, f].quantile(level[f]) for f in range(lay.n_out)]).ceil()
            m.theta[i] = theta.clamp(-lay.theta_bound, lay.theta_bound).to(torch.int32)
            m.invert[i] = inv
        h = layer_forward(lay, h, m.weights[i], m.theta[i], m.invert[i])
    m.validate()
    return m


def _model(arch, swarm=1, input_bits=8, ternary=False, seed=0, batch=11):
    cfg = ModelConfig.from_arch(arch, swarm=swarm, input_bits=input_bits)
    if ternary:
        cfg = _ternary_first(cfg)
    m = Model.random(cfg, seed)
    x = torch.randint(0, 256, (batch, *cfg.input_shape),
                      generator=torch.Generator().manual_seed(seed + 7), dtype=torch.uint8)
    return _balanced(m, x, seed), x


def _assert_same(model, x, va):
    gtrace, vtrace = [], []
    want = model.forward(x, trace=gtrace)
    got = va.forward(x, trace=vtrace)
    assert len(vtrace) == len(gtrace)
    for i, (g, v) in enumerate(zip(gtrace, vtrace, strict=True)):
        assert v.dtype == g.numpy().dtype, f"layer {i} dtype"
        np.testing.assert_array_equal(v, g.numpy(), err_msg=f"layer {i} differs")
    np.testing.assert_array_equal(got, want.numpy())
    np.testing.assert_array_equal(va.predict(x), model.predict(x).numpy())
    return gtrace


#: stride, padding, pooling that drops rows/columns, odd and non-square maps, C > 1 inputs,
#: K*C below, above and at multiples of 64 (window groups of 1..4 words, shifted and aligned)
GEOMETRIES = [
    "1x8x8-c16k3p1-mp2-c32k3p1-mp2-10",
    "3x9x7-c5k3s2p1-c7k2-mp2-4",
    "2x11x10-c70k3p2-mp3-5",
    "64x6x5-c64k3p1-c9k1-3",
    "33x5x4-c65k2p1-mp2-c9k3p2-3",
    "1x13x11-c8k5s3p4-c3k2s2-mp2-6",
    "4x12x12-c6k4s4-2",
    "1x7x9-c130k7p3-mp3-17-3",
]
#: (swarm, input_bits): ±1 and multi-bit first layers, one and several swarm planes
MODES = [(1, 8), (2, 1), (4, 3)]


@pytest.mark.parametrize("arch", GEOMETRIES)
@pytest.mark.parametrize("swarm, input_bits", MODES, ids=lambda v: str(v))
def test_forward_equals_golden(arch, swarm, input_bits):
    m, x = _model(arch, swarm, input_bits, seed=swarm + input_bits)
    trace = _assert_same(m, x, VirtualAccelerator(m))
    for t in trace[:-1]:  # balanced thresholds: the comparison is not of constant maps
        assert 0.1 < float(t.float().mean()) < 0.9


@pytest.mark.parametrize("arch", [GEOMETRIES[1], GEOMETRIES[4]])
@pytest.mark.parametrize("input_bits", [1, 8])
def test_largest_swarm_equals_golden(arch, input_bits):
    m, x = _model(arch, 32, input_bits, seed=input_bits)
    _assert_same(m, x, VirtualAccelerator(m))


@pytest.mark.parametrize("arch", GEOMETRIES[:4])
@pytest.mark.parametrize("input_bits", [1, 8])
def test_ternary_first_layer_equals_golden(arch, input_bits):
    m, x = _model(arch, 1, input_bits, ternary=True, seed=input_bits)
    _assert_same(m, x, VirtualAccelerator(m))


@pytest.mark.parametrize("backend", ["avx512", "portable", "numpy"])
def test_every_backend(backend):
    if backend not in BACKENDS:
        pytest.skip(f"backend {backend} not available here")
    m, x = _model("33x5x4-c65k2p1-mp2-c9k3p2-3", 2, 3, seed=5)
    with pc.use_backend(backend):
        _assert_same(m, x, VirtualAccelerator(m, threads=2))


def test_sample_layouts_and_batch_of_one():
    """[B, C, H, W] samples are permuted to HWC; flat samples already are HWC (golden's rule)."""
    m, x = _model("3x6x5-c4k3p1-2", 1, 8, seed=2)
    va = VirtualAccelerator(m)
    _assert_same(m, x, va)
    flat = x.permute(0, 2, 3, 1).reshape(len(x), -1)
    np.testing.assert_array_equal(va.forward(flat), m.forward(x).numpy())
    np.testing.assert_array_equal(va.forward(flat.numpy()), m.forward(x).numpy())
    _assert_same(m, x[:1], va)
    m1, x1 = _model("1x8x8-c4k3p1-mp2-3", 1, 8, seed=3)  # one channel: [B, H, W] too
    np.testing.assert_array_equal(VirtualAccelerator(m1).forward(x1[:, 0]), m1.forward(x1).numpy())


def test_windows_equal_golden_im2col():
    """The packed windows are golden's im2col rows (padding = encoded 0, (ky, kx, c) order)
    in the layer's row layout, for ±1 bits and for every plane of a B-bit input."""
    for arch, bits in (("5x7x6-c3k3s2p2-2", 1), ("2x9x9-c3k4s1p3-2", 8), ("70x3x4-c2k2p1-2", 1)):
        m, x = _model(arch, 1, bits, seed=1)
        lay = m.cfg.layers[0]
        h = quantize_input(m.cfg, x)
        packed = pack_layer(lay, m.weights[0], m.theta[0], m.invert[0])
        got = layer_planes(packed, h.numpy())
        cols = im2col(lay.conv, h).numpy()
        for b, plane in enumerate(got):
            np.testing.assert_array_equal(plane, pack_rows(lay, (cols >> b) & 1), err_msg=arch)


def test_window_words_backends_and_spare_word():
    """The C loop equals the numpy path and a bit-level definition; the spare word at the end
    of each map row may hold anything."""
    rng = np.random.default_rng(0)
    for k, s, c, ho, wo in ((3, 1, 1, 4, 6), (3, 2, 21, 3, 3), (2, 2, 64, 2, 3), (5, 3, 13, 2, 2)):
        hp, row_bits = (ho - 1) * s + k, ((wo - 1) * s + k) * c
        r = (row_bits + 63) // 64 + 1
        bits = rng.integers(0, 2, (2, hp, (r - 1) * 64), dtype=np.uint8)
        bits[..., row_bits:] = 0
        maps = np.concatenate([pack_bits(bits), rng.integers(0, 2**63, (2, hp, 1), dtype=np.uint64)],
                              axis=-1)
        want = np.stack([
            np.concatenate([pack_bits(bits[b, oy * s + ky, ox * s * c:(ox * s + k) * c])
                            for ky in range(k)])
            for b in range(2) for oy in range(ho) for ox in range(wo)])
        for backend in BACKENDS:
            for threads in (1, 2):
                got = pc.window_words(maps, k, s, c, ho, wo, threads=threads, backend=backend)
                np.testing.assert_array_equal(got, want, err_msg=f"{backend} k={k} s={s} c={c}")
    # large enough for the thread pool: the two-thread result is the one-thread result
    maps = rng.integers(0, 2**63, (9, 40, 51), dtype=np.uint64)  # 32 pixels of 100 channels
    one = pc.window_words(maps, 3, 1, 100, 38, 30, threads=1)
    np.testing.assert_array_equal(pc.window_words(maps, 3, 1, 100, 38, 30, threads=2), one)
    np.testing.assert_array_equal(pc.window_words(maps, 3, 1, 100, 38, 30, backend="numpy"), one)


def test_window_words_wrong_arguments():
    maps = np.zeros((1, 3, 2), dtype=np.uint64)
    with pytest.raises(ConfigError, match="too small"):
        pc.window_words(maps, 3, 1, 64, 1, 1)  # 192 bits need 3 words + a spare one
    with pytest.raises(ConfigError, match="too small"):
        pc.window_words(maps, 3, 1, 1, 2, 1)  # 2 output rows need 4 map rows
    with pytest.raises(ConfigError, match="uint64"):
        pc.window_words(maps.astype(np.int64), 3, 1, 1, 1, 1)
    with pytest.raises(ConfigError, match="C-contiguous"):
        pc.window_words(np.zeros((1, 3, 4), dtype=np.uint64)[:, :, ::2], 3, 1, 1, 1, 1)
    with pytest.raises(ConfigError, match="threads"):
        pc.window_words(np.zeros((1, 3, 4), dtype=np.uint64), 3, 1, 1, 1, 1, threads=-1)
    with pytest.raises(ConfigError, match="out must be"):
        pc.window_words(np.zeros((1, 3, 4), dtype=np.uint64), 3, 1, 1, 1, 1,
                        out=np.zeros((1, 2), dtype=np.uint64))


def test_digits_cnn_whole_test_set():
    """A digits CNN with trained-like thresholds (medians on the training split) on the whole
    test split: every layer equal to golden."""
    from bitswarm.train.data import load_dataset

    ds = load_dataset("digits")
    cfg = ModelConfig.from_arch("1x8x8-c16k3p1-mp2-c32k3p1-mp2-10", swarm=4, input_bits=8)
    m = _balanced(Model.random(cfg, 11), torch.from_numpy(ds.x_train[:300]), 11)
    x = torch.from_numpy(ds.x_test.reshape(len(ds.x_test), 1, 8, 8))
    _assert_same(m, x, VirtualAccelerator(m))


# -- mutations: a broken virtual convolution must fail the comparison ------------------------


def test_mutation_wrong_padding_value_is_detected(monkeypatch):
    m, x = _model("2x6x6-c8k3p1-mp2-3", 1, 1, seed=4)
    _assert_same(m, x, VirtualAccelerator(m))
    orig = virtual.map_rows

    def ones_padded(g, bits):  # pads with bit 1 (+1) instead of the encoded 0 (-1)
        maps = orig(g, bits)
        p, c, w = g.pad, g.in_channels, g.in_width
        full = np.unpackbits(maps.view(np.uint8), axis=-1, bitorder="little")
        full[:, :p] = full[:, -p:] = 1
        full[:, :, : p * c] = full[:, :, (p + w) * c : (2 * p + w) * c] = 1
        return np.packbits(full, axis=-1, bitorder="little").view(np.uint64)

    monkeypatch.setattr(virtual, "map_rows", ones_padded)
    with pytest.raises(AssertionError, match="layer 0 differs"):
        _assert_same(m, x, VirtualAccelerator(m))


def test_mutation_wrong_window_order_is_detected(monkeypatch):
    m, x = _model("3x6x6-c8k3p1-mp2-3", 1, 8, seed=5)
    _assert_same(m, x, VirtualAccelerator(m))
    orig = virtual.pack_rows

    def kx_ky_swapped(cfg, bits):  # weights in (kx, ky, c) order
        g = cfg.conv
        if g is None:
            return orig(cfg, bits)
        a = np.asarray(bits)
        k, c = g.kernel, g.in_channels
        a = a.reshape(a.shape[:-1] + (k, k, c)).swapaxes(-3, -2).reshape(a.shape)
        return orig(cfg, a)

    monkeypatch.setattr(virtual, "pack_rows", kx_ky_swapped)
    with pytest.raises(AssertionError, match="layer 0 differs"):
        _assert_same(m, x, VirtualAccelerator(m))


def test_mutation_flipped_packed_weight_is_detected():
    m, x = _model("2x6x6-c8k3p1-mp2-3", 2, 1, seed=6)
    va = VirtualAccelerator(m)
    _assert_same(m, x, va)
    va.layers[0].weights[3] ^= va.layers[0].valid.repeat(2)  # all of filter 3's bits, both planes
    with pytest.raises(AssertionError, match="layer 0 differs"):
        _assert_same(m, x, va)
