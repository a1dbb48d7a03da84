"""conv.py / arch.py: binary convolution and max-pooling equal SPEC.md §14's plain definition."""

import json

import numpy as np
import pytest
import torch
from bitswarm.golden import (
    ConfigError,
    ConvGeometry,
    LayerConfig,
    Model,
    ModelConfig,
    ModelFileError,
    im2col,
    layer_forward,
    load_model,
    maxpool_bits,
    parse_arch,
    preact,
    preact_packed,
    save_model,
)
from bitswarm.golden.conv import conv_preact, conv_reference
from bitswarm.golden.layer import threshold
from bitswarm.golden.model import model_from_bytes, model_to_bytes
from hypothesis import given, settings
from hypothesis import strategies as st


def _layer(seed, geo, f, swarm, bits, kind):
    g = torch.Generator().manual_seed(seed)
    cfg = LayerConfig(n_in=geo.window, n_out=f, swarm=swarm, input_bits=bits, weights=kind, conv=geo)
    x = torch.randint(0, 1 << bits, (2, geo.in_size), generator=g, dtype=torch.uint8)
    if kind == "binary":
        w = torch.randint(0, 2, cfg.weight_shape(), generator=g, dtype=torch.uint8)
    else:
        w = torch.randint(-1, 2, cfg.weight_shape(), generator=g, dtype=torch.int8)
    b = max(1, cfg.z_bound // 3)
    th = torch.randint(-b, b + 1, (f,), generator=g, dtype=torch.int32)
    inv = torch.randint(0, 2, (f,), generator=g, dtype=torch.uint8)
    return cfg, x, w, th, inv


@st.composite
def geometries(draw):
    c = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    k = draw(st.integers(1, min(h, w) + 2))
    pad = draw(st.integers(max(0, (k - min(h, w) + 1) // 2), k - 1))
    stride = draw(st.integers(1, k))
    geo0 = ConvGeometry(c, h, w, k, stride, pad, 1)
    pool = draw(st.integers(1, min(geo0.out_height, geo0.out_width)))
    return ConvGeometry(c, h, w, k, stride, pad, pool)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(geo=geometries(), f=st.integers(1, 4), swarm=st.sampled_from([1, 2, 4]),
       bits=st.sampled_from([1, 3, 8]), ternary=st.booleans(), seed=st.integers(0, 1000))
def test_conv_equals_plain_definition(geo, f, swarm, bits, ternary, seed):
    kind = "ternary" if ternary else "binary"
    cfg, x, w, th, inv = _layer(seed, geo, f, 1 if ternary else swarm, bits, kind)
    got = layer_forward(cfg, x, w, th, inv)
    assert got.dtype == torch.uint8
    assert got.shape == (2, cfg.out_size)
    assert got.tolist() == conv_reference(cfg, x, w, th, inv)
    # the packed XNOR-popcount definition on the windows equals the fast path
    cols = im2col(geo, x)
    assert np.array_equal(preact(cfg, cols, w).numpy(), preact_packed(cfg, cols, w))


def test_padding_is_encoded_zero():
    """A 1x1 map, 3x3 kernel, pad 1: eight of the nine window inputs are padding. Bit inputs
    read it as -1, unsigned inputs as 0."""
    geo = ConvGeometry(1, 1, 1, 3, 1, 1, 1)
    for bits, want in ((1, -8 + 1), (8, 200)):
        cfg = LayerConfig(n_in=9, n_out=1, input_bits=bits, conv=geo)
        w = torch.ones((1, 1, 9), dtype=torch.uint8)  # all weights +1
        x = torch.tensor([[1 if bits == 1 else 200]], dtype=torch.uint8)
        assert int(conv_preact(cfg, x, w)[0, 0]) == want


def test_window_order_is_ky_kx_c():
    """Input k of a window is map element (y + ky, x + kx, c) with k = (ky*K + kx)*C + c."""
    geo = ConvGeometry(2, 3, 3, 2)
    x = torch.arange(18, dtype=torch.uint8).reshape(1, 18)  # HWC: value = (y*3 + x)*2 + c
    cols = im2col(geo, x)
    assert cols.shape == (4, 8)
    # output pixel (1, 0): rows y=1..2, cols x=0..1
    assert cols[2].tolist() == [6, 7, 8, 9, 12, 13, 14, 15]


def test_maxpool_is_or_and_drops_remainders():
    geo = ConvGeometry(1, 5, 5, 1, 1, 0, 2)  # 5x5 output pooled 2x2 -> 2x2, last row/col dropped
    bits = torch.zeros((25, 1), dtype=torch.uint8)
    bits[4 * 5 + 4] = 1  # dropped corner
    bits[1 * 5 + 3] = 1  # in pooled (0, 1)
    assert maxpool_bits(geo, bits, 1).tolist() == [[0, 1, 0, 0]]


def test_pool_vs_integer_max_and_invert():
    """OR on bits == threshold of max(z) for invert 0, of min(z) for invert 1 (SPEC.md §14)."""
    geo = ConvGeometry(2, 6, 6, 3, 1, 1, 2)
    cfg, x, w, th, _ = _layer(7, geo, 4, 1, 1, "binary")
    z = conv_preact(cfg, x, w).reshape(2, 6, 6, 4)
    zq = z.reshape(2, 3, 2, 3, 2, 4)
    for inv_bit, pooled in ((0, zq.amax(dim=(2, 4))), (1, zq.amin(dim=(2, 4)))):
        inv = torch.full((4,), inv_bit, dtype=torch.uint8)
        got = layer_forward(cfg, x, w, th, inv)
        want = threshold(pooled.reshape(-1, 4), th, inv).reshape(2, -1)
        assert torch.equal(got, want)


def test_geometry_errors_are_one_line():
    for kw, msg in (({"kernel": 9}, "does not fit"), ({"kernel": 3, "pad": 3}, "padding must be"),
                    ({"kernel": 3, "stride": 4}, "stride must be"), ({"kernel": 3, "pool": 7},
                                                                       "max-pool 7 does not fit")):
        with pytest.raises(ConfigError, match=msg) as e:
            ConvGeometry(1, 6, 6, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="window"):
        LayerConfig(n_in=8, n_out=2, conv=ConvGeometry(1, 4, 4, 3))
    with pytest.raises(ConfigError, match="output layer"):
        LayerConfig(n_in=9, n_out=2, output=True, conv=ConvGeometry(1, 4, 4, 3))


@pytest.mark.parametrize("text, canon, sizes", [
    ("1x8x8-c16k3p1-mp2-c32k3p1-mp2-10", None, [64, 256, 128, 10]),
    ("1x28x28-c32k3-mp2-c64k3-mp2-256-10", None, [784, 5408, 1600, 256, 10]),
    ("1x8x8-c4k3s1p0-c4k3s2-10", "1x8x8-c4k3-c4k3s2-10", [64, 144, 16, 10]),
    ("8x8-c2k2-mp3-10", "1x8x8-c2k2-mp3-10", [64, 8, 10]),
    ("64-128-10", None, [64, 128, 10]),
    ("1x8x8-32-10", None, [64, 32, 10]),
])
def test_arch_strings(text, canon, sizes):
    a = parse_arch(text)
    assert str(a) == (canon or text)
    cfg = ModelConfig.from_arch(text, input_shape=(8, 8) if a.is_mlp and a.n_inputs == 64 else None)
    assert cfg.arch == sizes
    assert parse_arch(cfg.arch_string) == a or a.is_mlp


@pytest.mark.parametrize("text, msg", [
    ("1x8x8-c16k3-mp2-mp2-10", "must follow a convolution"),
    ("64-c3k3-10", "need an input shape"),
    ("1x8x8-10-c3k3-10", "after a dense layer"),
    ("1x8x8-c16k9-10", "does not fit"),
    ("1x8x8-c16k3-q-10", "cannot read token 'q'"),
    ("1x8x8-c16k3", "at least an input and an output"),
    ("1x8x8-c0k3-10", ">= 1"),
    ("x-10", "first token"),
])
def test_arch_errors(text, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        parse_arch(text)
    assert "\n" not in str(e.value)


def test_model_forward_matches_layer_by_layer_reference():
    cfg = ModelConfig.from_arch("1x8x8-c4k3p1-mp2-c6k3s2-12-10", swarm=2, input_bits=8)
    m = Model.random(cfg, 3)
    g = torch.Generator().manual_seed(0)
    for i, lay in enumerate(cfg.layers[:-1]):
        b = lay.z_bound // 6
        m.theta[i] = torch.randint(-b, b + 1, (lay.n_out,), generator=g, dtype=torch.int32)
        m.invert[i] = torch.randint(0, 2, (lay.n_out,), generator=g, dtype=torch.uint8)
    x = torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8)
    trace = []
    m.forward(x, trace)
    h = (x.reshape(3, 64) >> 0).to(torch.uint8)
    for i, lay in enumerate(cfg.layers[:2]):
        ref = conv_reference(lay, h, m.weights[i], m.theta[i], m.invert[i])
        assert trace[i].tolist() == ref
        h = trace[i]
    # [B, 1, 8, 8] (NCHW) and flat samples give the same scores
    assert torch.equal(m.forward(x.reshape(3, 1, 8, 8)), m.forward(x.reshape(3, 64)))


def test_multichannel_input_is_permuted_to_hwc():
    cfg = ModelConfig.from_arch("3x4x4-c2k3p1-10", input_bits=8)
    m = Model.random(cfg, 0)
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(m.forward(x), m.forward(x.permute(0, 2, 3, 1).reshape(2, 48)))


def test_v2_file_round_trip_and_version_rules(tmp_path):
    cfg = ModelConfig.from_arch("1x8x8-c4k3p1-mp2-10", swarm=4)
    m = Model.random(cfg, 1)
    p = tmp_path / "c.bsm"
    save_model(m, p)
    back = load_model(p)
    assert back.equal(m)
    raw = p.read_bytes()
    header = json.loads(json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]["bitswarm"])
    assert header["version"] == 2
    assert header["config"]["layers"][0]["conv"]["pool"] == 2
    assert "conv" not in header["config"]["layers"][1]
    # an MLP is still written as version 1 with v1's layer objects
    mlp = Model.random(ModelConfig.mlp([64, 8, 10], input_shape=(8, 8)), 0)
    data = model_to_bytes(mlp)
    meta = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    h1 = json.loads(meta["bitswarm"])
    assert h1["version"] == 1 and all("conv" not in lay for lay in h1["config"]["layers"])
    assert model_from_bytes(data).equal(mlp)


def test_v1_file_with_conv_refused(tmp_path):
    from bitswarm.golden.files import seal_header
    from bitswarm.golden.model import FORMAT, _tensors_of
    from safetensors.numpy import save

    m = Model.random(ModelConfig.from_arch("1x8x8-c4k3p1-mp2-10"), 1)
    header = {"format": FORMAT, "version": 1, "config": m.cfg.to_dict(), "has_state": False,
              "lfsr_state": None}
    t = _tensors_of(m)
    p = tmp_path / "bad.bsm"
    p.write_bytes(save(t, metadata={"bitswarm": seal_header(FORMAT, header, t)}))
    with pytest.raises(ModelFileError, match="version-1 file must not have convolutional") as e:
        load_model(p)
    assert "\n" not in str(e.value)


def test_chain_errors():
    a = parse_arch("1x8x8-c4k3p1-mp2-10").layers()
    bad = LayerConfig(n_in=9 * 4, n_out=2, conv=ConvGeometry(4, 2, 8, 3, 1, 1))  # 4x2x8 = 64 values
    with pytest.raises(ConfigError, match="takes a 4x2x8 map but layer 0 gives 4x4x4"):
        ModelConfig(input_shape=(1, 8, 8), layers=(a[0], bad, a[1]))
    with pytest.raises(ConfigError, match="first convolution's input"):
        ModelConfig(input_shape=(64,), layers=a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_conv_cuda_equals_cpu():
    cfg = ModelConfig.from_arch("1x8x8-c8k3p1-mp2-c8k3p1-mp2-10", swarm=2)
    m = Model.random(cfg, 0)
    x = torch.randint(0, 256, (64, 8, 8), dtype=torch.uint8)
    cpu = m.forward(x)
    mc = Model(cfg, [t.cuda() for t in m.weights], [t.cuda() for t in m.theta],
               [t.cuda() for t in m.invert])
    assert torch.equal(mc.forward(x.cuda()).cpu(), cpu)
