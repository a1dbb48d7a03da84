"""Interop on convolutional models: the torch module is exact, the file exports refuse clearly."""

import pytest
import torch
from bitswarm.golden import ConfigError, Model, ModelConfig
from bitswarm.interop.c_export import export_c
from bitswarm.interop.qonnx_export import export_qonnx


def _model(seed=0, bits=8):
    cfg = ModelConfig.from_arch("1x8x8-c6k3p1-mp2-c8k3s2-12-10", swarm=2, input_bits=bits)
    m = Model.random(cfg, seed)
    g = torch.Generator().manual_seed(seed)
    for i, lay in enumerate(cfg.layers[:-1]):
        b = lay.z_bound // 5
        m.theta[i] = torch.randint(-b, b + 1, (lay.n_out,), generator=g, dtype=torch.int32)
        m.invert[i] = torch.randint(0, 2, (lay.n_out,), generator=g, dtype=torch.uint8)
    return m


@pytest.mark.parametrize("bits", [1, 8])
def test_torch_module_equals_golden_on_conv(bits):
    m = _model(1, bits)
    x = torch.randint(0, 256, (40, 8, 8), dtype=torch.uint8)
    mod = m.to_torch()
    assert torch.equal(mod(x), m.forward(x))
    traced = torch.jit.trace(mod, x[:2])
    assert torch.equal(traced(x), m.forward(x))
    assert "c6k3p1-mp2" in repr(mod)


def test_file_exports_refuse_conv_in_one_line(tmp_path):
    m = _model()
    for fn, what in ((lambda: export_c(m, tmp_path / "c"), "C export"),
                     (lambda: export_qonnx(m, tmp_path / "m.onnx"), "QONNX export")):
        with pytest.raises(ConfigError, match=f"{what} does not support convolutional") as e:
            fn()
        assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())
