"""A bitswarm model as a QONNX graph: exact integer semantics with QONNX's own ops.

The graph reads the raw 8-bit pixels as a float32 tensor ``[batch, N]`` (what ``bitswarm eval``
reads) and gives the integer scores ``z − θ`` (SPEC.md §7) as float32 ``[batch, classes]``.
Every value on every edge is an integer that float32 holds exactly; the exporter refuses a
model whose bound ``2·z_bound`` reaches ``2**24``.

Graph per layer ``i`` (custom ops in the ``qonnx.custom_op.general`` domain):

- **first-layer input** (SPEC §4): ``B = 1``: ``BipolarQuant(pixels − 128, scale 1)``, i.e.
  ``+1`` iff ``pixel ≥ 128`` (``pixel >> 7 == 1``). ``B ≥ 2``: ``Mul 2^−(8−B)`` (omitted for
  ``B = 8``) then ``Quant(scale 1, zeropt 0, bitwidth B, unsigned, rounding FLOOR)``: exactly
  ``pixel >> (8 − B)``, since a power-of-two scale divides exactly in float32 and
  ``pixel / 2^(8−B) < 2^B`` never clamps;
- **weights** (SPEC §3, §5), one initializer ``[N, M]`` through a quantizer: binary ``S = 1``:
  ``BipolarQuant`` (±1); swarm ``S > 1``: the effective weight ``Σ_s w±_s`` (2S+1 levels) through
  ``Quant`` (signed, narrow, ``bitlength(S) + 1`` bits); ternary: ``Quant`` (2 bits, narrow);
- **pre-activation**: ``MatMul`` — for ±1 inputs this is the XNOR-popcount sum of §3;
- **hidden threshold** (§7): ``Add(−θ')`` then ``BipolarQuant`` (``+1`` iff ``≥ 0``). The invert
  bit is folded: a neuron with ``inv = 1`` gets its weight column negated and ``θ' = 1 − θ``,
  since ``(z ≥ θ) XOR 1 ⇔ z ≤ θ − 1 ⇔ −z − (1 − θ) ≥ 0`` for integer ``z``;
- **output**: ``Add(−θ)``: the scores.

Tensors carry QONNX datatype annotations (``UINT8`` pixels, ``BIPOLAR``/``UINT<B>`` layer inputs,
``BIPOLAR``/``INT<k>``/``TERNARY`` weights, ``INT<z_width>`` pre-activations and scores).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.files import atomic_write_bytes, check_outputs
from bitswarm.golden.layer import effective_weights
from bitswarm.golden.model import PIXEL_BITS, Model

__all__ = ["QONNX_DOMAIN", "OPSET", "F32_EXACT", "build_qonnx", "export_qonnx"]

QONNX_DOMAIN = "qonnx.custom_op.general"
OPSET = 13
#: float32 holds every integer of magnitude below 2**24 exactly.
F32_EXACT = 1 << 24


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def build_qonnx(model: Model):
    """The QONNX ``onnx.ModelProto`` of ``model`` (see the module docstring for the graph)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cfg = model.cfg
    cfg.require_dense("the QONNX export")
    for i, lay in enumerate(cfg.layers):
        if 2 * lay.z_bound + 1 >= F32_EXACT:
            raise ConfigError(
                f"layer {i}: |z − θ| can reach {2 * lay.z_bound}, which float32 (ONNX) cannot hold "
                f"exactly (limit {F32_EXACT - 1}); QONNX export needs a smaller layer"
            )
    nodes, inits, annotations = [], [], {}

    def const(name, value):
        inits.append(numpy_helper.from_array(_f32(value), name))
        return name

    def qnode(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, domain=QONNX_DOMAIN, **attrs))
        return out

    def node(op, ins, out):
        nodes.append(helper.make_node(op, ins, [out], name=out))
        return out

    n0 = cfg.layers[0].n_in
    x = "pixels"
    annotations[x] = "UINT8"
    b = cfg.layers[0].input_bits
    if b == 1:
        c = node("Add", [x, const("pixel_offset", np.float32(-(1 << (PIXEL_BITS - 1))))], "l0_centred")
        x = qnode("BipolarQuant", [c, const("one", np.float32(1))], "l0_in")
        annotations[x] = "BIPOLAR"
    else:
        s = 1 << (PIXEL_BITS - b)
        const("one", np.float32(1))
        if s != 1:  # pixel / 2^(8-B): exact in float32 (a power of two)
            x = node("Mul", [x, const("in_shift", np.float32(1.0 / s))], "l0_in_shifted")
        x = qnode(
            "Quant",
            [x, "one", const("zero", np.float32(0)), const("in_bits", np.float32(b))],
            "l0_in", signed=0, narrow=0, rounding_mode="FLOOR",
        )
        annotations[x] = f"UINT{b}"
    for i, lay in enumerate(cfg.layers):
        w = effective_weights(lay, model.weights[i]).numpy().astype(np.int64)  # [M, N]
        theta = model.theta[i].numpy().astype(np.int64)
        inv = model.invert[i].numpy().astype(bool)
        if not lay.output:  # fold the invert bits: negate the row, θ' = 1 − θ
            w = np.where(inv[:, None], -w, w)
            theta = np.where(inv, 1 - theta, theta)
        wt = const(f"l{i}_w_int", w.T)
        if lay.weights == "binary" and lay.swarm == 1:
            wq = qnode("BipolarQuant", [wt, "one"], f"l{i}_w")
            annotations[wq] = "BIPOLAR"
        else:
            bits = 2 if lay.weights == "ternary" else int(lay.swarm).bit_length() + 1
            wq = qnode(
                "Quant",
                [wt, "one", const(f"l{i}_w_zero", np.float32(0)),
                 const(f"l{i}_w_bits", np.float32(bits))],
                f"l{i}_w", signed=1, narrow=1, rounding_mode="ROUND",
            )
            annotations[wq] = "TERNARY" if lay.weights == "ternary" else f"INT{bits}"
        z = node("MatMul", [x, wq], f"l{i}_z")
        annotations[z] = f"INT{lay.z_width}"
        out = "scores" if lay.output else f"l{i}_zt"
        y = node("Add", [z, const(f"l{i}_neg_theta", -theta)], out)
        annotations[y] = f"INT{lay.z_width}"
        if not lay.output:
            x = qnode("BipolarQuant", [y, "one"], f"l{i + 1}_in")
            annotations[x] = "BIPOLAR"
    graph = helper.make_graph(
        nodes,
        "bitswarm",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", n0])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", cfg.n_classes])],
        initializer=inits,
        # shapes of the constants too: hls4ml's ONNX parser looks every node input up here
        value_info=[helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims))
                    for t in inits],
    )
    for name, dt in annotations.items():
        ann = onnx.TensorAnnotation(tensor_name=name)
        ann.quant_parameter_tensor_names.append(
            onnx.StringStringEntryProto(key="finn_datatype", value=dt)
        )
        graph.quantization_annotation.append(ann)
    m = helper.make_model(
        graph,
        producer_name="bitswarm",
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(QONNX_DOMAIN, 1)],
    )
    m.ir_version = 8
    helper.set_model_props(m, {
        "bitswarm.arch": "-".join(map(str, cfg.arch)),
        "bitswarm.input_shape": ",".join(map(str, cfg.input_shape)),
        "bitswarm.input_bits": str(b),
        "bitswarm.semantics": "input raw uint8 pixels as float32; output integer scores z - theta",
    })
    onnx.checker.check_model(m)
    return m


def export_qonnx(model: Model, out_path: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Write ``model`` as a QONNX file; refuses an existing ``out_path`` unless ``overwrite``.

    Returns a report dict: ``lines`` (for the CLI), ``path``, ``bytes``, ``nodes``, ``layers``, ``ops`` (op type counts).
    Raises one-line :class:`ConfigError` for an existing output or a model float32 cannot hold.
    """
    out_path = Path(out_path)
    check_outputs([out_path], overwrite=overwrite)
    m = build_qonnx(model)
    data = m.SerializeToString()
    atomic_write_bytes(out_path, data)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))
    return {
        "lines": [f"wrote {out_path} (QONNX, {len(data)} bytes, {len(m.graph.node)} nodes: "
                  f"{summary})"],
        "path": str(out_path),
        "format": "qonnx",
        "bytes": len(data),
        "nodes": len(m.graph.node),
        "layers": len(model.cfg.layers),
        "ops": ops,
    }
