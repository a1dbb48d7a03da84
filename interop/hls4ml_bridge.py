"""An exported bitswarm QONNX file through hls4ml's QONNX frontend, to its C simulation.

:func:`to_hls4ml` prepares the graph the way hls4ml's QONNX documentation asks
(``qonnx.util.cleanup`` with batch 1, ``ConvertToChannelsLastAndClean``, ``GemmToMatMul``,
cleanup again) plus two work-arounds for hls4ml 1.3.0, each exact:

- a ``BipolarQuant`` on a constant (the ±1 weights of a binary ``S = 1`` layer) is quantized
  twice by hls4ml 1.3.0 (±1 → 0/1 → all 1), so it is replaced by the equivalent
  ``Quant(2 bits, signed, narrow)``, which maps ±1 to ±1;
- hls4ml's ONNX parser looks the shape of every node input up in ``value_info``; the
  constants' shapes are added there.

The precisions: the input is ``fixed<16,16>`` (raw pixels 0..255 as integers) and every other
``auto`` type falls back to ``fixed<48,32>``, wide enough for every score of a model that
:mod:`.qonnx_export` accepts (``|z − θ| < 2^24``). ``compile()`` builds the C simulation with
g++ and the headers hls4ml ships; no vendor tool is used.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["INPUT_PRECISION", "DEFAULT_PRECISION", "prepare_for_hls4ml", "to_hls4ml"]

INPUT_PRECISION = "fixed<16,16>"
DEFAULT_PRECISION = "fixed<48,32>"
_DOMAIN = "qonnx.custom_op.general"


def prepare_for_hls4ml(path: str | os.PathLike):
    """The cleaned, hls4ml-ready ``qonnx`` ``ModelWrapper`` of a QONNX file (batch 1)."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    mw = cleanup_model(ModelWrapper(str(path)), override_inpsize=1)
    mw = mw.transform(ConvertToChannelsLastAndClean())
    mw = mw.transform(GemmToMatMul())
    mw = cleanup_model(mw)
    nodes = mw.graph.node
    for idx, n in enumerate(list(nodes)):
        if n.op_type == "BipolarQuant" and mw.get_initializer(n.input[0]) is not None:
            zero, bits = f"{n.name}_zeropt", f"{n.name}_bitwidth"
            mw.set_initializer(zero, np.float32(0))
            mw.set_initializer(bits, np.float32(2))
            q = helper.make_node("Quant", [n.input[0], n.input[1], zero, bits], list(n.output),
                                 name=n.name, domain=_DOMAIN, signed=1, narrow=1,
                                 rounding_mode="ROUND")
            nodes.remove(n)
            nodes.insert(idx, q)
    have = {v.name for v in mw.graph.value_info}
    for t in mw.graph.initializer:
        if t.name not in have:
            mw.graph.value_info.append(
                helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)))
    return mw


def to_hls4ml(path: str | os.PathLike, output_dir: str | os.PathLike, *, backend: str = "Vitis",
              compile: bool = True):
    """hls4ml's model of the QONNX file ``path``, written to ``output_dir`` and (by default)
    compiled to its C simulation; ``.predict(pixels_float32[batch, N])`` gives the scores."""
    import hls4ml

    mw = prepare_for_hls4ml(path)
    cfg = hls4ml.utils.config.config_from_onnx_model(
        mw, granularity="name", backend=backend, default_precision=DEFAULT_PRECISION)
    inp = mw.graph.input[0].name
    cfg["LayerName"][inp]["Precision"]["result"] = INPUT_PRECISION
    hm = hls4ml.converters.convert_from_onnx_model(
        mw, output_dir=str(output_dir), backend=backend, hls_config=cfg)
    if compile:
        hm.compile()
    return hm
