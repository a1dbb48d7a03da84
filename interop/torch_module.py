"""The golden model as a torch ``nn.Module``: integer-exact, traceable, exportable to ONNX.

``GoldenModule(model)`` (or ``model.to_torch()``) computes exactly
:meth:`bitswarm.golden.model.Model.forward`: raw uint8 pixels ``[B, *input_shape]`` or
``[B, N]`` in, int64 scores ``z - theta`` ``[B, classes]`` out (SPEC.md §3–§7, §14). Each layer is
one matrix product of the ±1 (or unsigned, first layer) inputs with the integer weight matrix
``W = sum_s (2 w_s - 1)`` (or the trits), done by :func:`bitswarm.golden.layer.exact_matmul`:
float32 below ``2**24``, float64 below ``2**53`` (SPEC.md §9), so it runs wherever float
matmuls run (CPU, CUDA, ONNX runtimes) and every result is an exact integer. A convolutional
layer is the same product on its windows (golden :func:`~bitswarm.golden.conv.im2col`, HWC,
encoded-zero padding) followed by the OR max-pool; such a module runs in eager torch and
``torch.jit.trace`` (the QONNX exporter, not ``torch.onnx``, is the interchange path, and it
takes MLPs only).

The weights, thresholds and invert bits are **buffers**, not parameters: the module is for
inference, ``parameters()`` is empty and ``state_dict()`` holds the integer state (``w0``
int8 ``[M, N]``, ``theta0`` int64 ``[M]``, ``invert0`` bool ``[M]``, ...). To train, use
:mod:`bitswarm.train`; export the result again.

Works with ``torch.jit.trace`` and ``torch.onnx.export(..., dynamo=False)``; with a dynamic
batch axis the exported graph is Cast -> (MatMul, Round, Cast, Sub, comparison) per layer.
The bound rule is decided when tracing: a module traced with float32 stays float32.
"""

from __future__ import annotations

import torch
from bitswarm.golden.conv import im2col, maxpool_bits, to_hwc
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.layer import argmax, effective_weights, exact_matmul
from bitswarm.golden.model import PIXEL_BITS, Model
from torch import nn

__all__ = ["GoldenModule"]


class GoldenModule(nn.Module):
    """``nn.Module`` whose forward pass equals ``Model.forward`` bit for bit.

    Parameters
    ----------
    model : Model
        The golden model; its integer state is copied into buffers (later changes to
        ``model`` do not reach the module).

    Members
    -------
    cfg : ModelConfig
        The model's configuration (read-only use).
    """

    def __init__(self, model: Model):
        if not isinstance(model, Model):
            raise TypeError(f"GoldenModule needs a bitswarm Model, not {type(model).__name__}")
        model.validate()
        super().__init__()
        self.cfg = model.cfg
        for i, lay in enumerate(model.cfg.layers):
            w = effective_weights(lay, model.weights[i].cpu())  # |W| <= S <= 32: int8
            self.register_buffer(f"w{i}", w.to(torch.int8))
            self.register_buffer(f"theta{i}", model.theta[i].cpu().to(torch.int64))
            self.register_buffer(f"invert{i}", model.invert[i].cpu().bool())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, classes]`` int64 of uint8 pixels ``[B, *input_shape]`` or ``[B, N]``."""
        cfg = self.cfg
        if pixels.dtype != torch.uint8:
            raise ConfigError(f"pixels must be uint8, not {pixels.dtype}")
        lay0 = cfg.layers[0]
        if not torch.jit.is_tracing():  # shapes are symbolic while tracing
            shape = tuple(pixels.shape[1:])
            ok = {tuple(cfg.input_shape), (lay0.in_size,)}
            if len(cfg.input_shape) == 3 and cfg.input_shape[0] == 1:
                ok.add(tuple(cfg.input_shape[1:]))
            if shape not in ok:
                want = ", ".join(map(str, cfg.input_shape))
                raise ConfigError(f"pixels must have shape [batch, {want}], found "
                                  f"{list(pixels.shape)}")
        # x = pixel >> (8 - B) (SPEC.md §4) as a floor division of int32: torch.onnx's dynamo
        # exporter translates a uint8 right shift through int8 and wraps pixels above 127.
        h = (to_hwc(pixels, cfg.input_shape) if lay0.conv is not None else pixels.flatten(1))
        h = h.to(torch.int32)
        shift = PIXEL_BITS - lay0.input_bits
        if shift:
            h = torch.div(h, 1 << shift, rounding_mode="floor")
        for i, lay in enumerate(cfg.layers):
            x = h.to(torch.int32) if lay.conv is None else im2col(lay.conv, h.to(torch.int32))
            if lay.input_bits == 1:
                x = x * 2 - 1  # bit 1 is +1, bit 0 is -1 (SPEC.md §1); padding bit 0 is -1
            z = exact_matmul(x, getattr(self, f"w{i}"), lay.z_bound) - getattr(self, f"theta{i}")
            if lay.output:
                return z
            h = ((z >= 0) ^ getattr(self, f"invert{i}")).to(torch.uint8)
            if lay.conv is not None:  # OR-pool to the flat HWC map (SPEC.md §14)
                h = maxpool_bits(lay.conv, h, lay.n_out)
        raise AssertionError("unreachable: the last layer is the output layer")

    def predict(self, pixels: torch.Tensor) -> torch.Tensor:
        """Classes ``[B]``: the argmax of the scores, ties going to the lowest class index."""
        return argmax(self.forward(pixels))

    def extra_repr(self) -> str:
        return f"arch={self.cfg.arch_string}, input_shape={list(self.cfg.input_shape)}"
