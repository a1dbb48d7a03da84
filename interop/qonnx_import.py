"""A W1A1 QONNX network (e.g. exported by Brevitas) as a bitswarm model (SPEC §13).

:func:`import_qonnx` walks the graph (node names as in the file) from its one input to its
one output as a chain of layers. Each layer is

    [input quantizer] -> MatMul | Gemm (quantized constant weights) -> affine ops -> quantizer

where the affine ops are any sequence of ``Mul``/``Div``/``Add``/``Sub`` by constants and
``BatchNormalization``, and the quantizer is ``BipolarQuant``, a 1-bit signed ``Quant`` or a
one-step ``MultiThreshold`` (FINN's streamlined form; its ``out_scale``/``out_bias`` make the
next layer's input ``α·(±1) + β``, and ``β`` times the next weights' column sums joins ``b``). The pre-activation of layer ``i`` is then ``y = s ⊙ z + b`` (``z`` the
integer XNOR-popcount / unsigned dot product of SPEC §3–§5, ``s``, ``b`` real per neuron) and
SPEC §13's folding rule turns ``y ≥ 0`` (``BipolarQuant`` or a 1-bit signed ``Quant``) into an
integer threshold and an invert bit. The graph output must be the last layer's ``y`` with one
positive scale shared by all classes, so that the scores ``z − θ`` order the classes as ``y``
does.

First-layer inputs (the graph input is read as raw 8-bit pixels): ``MatMul`` straight on the
(affinely scaled) pixels is ``input_bits = 8``; ``[Add/Sub/Mul/Div] -> BipolarQuant`` that is
``+1`` exactly for pixels ``≥ 128`` is ``input_bits = 1``; ``[Mul 2^−(8−B)] -> Quant(unsigned,
B bits, FLOOR)`` is ``input_bits = B`` (bitswarm's own QONNX export).

Weights: ``W`` dequantized — if not all integers, divided per output neuron by its largest
magnitude — must be all ±1 (binary, swarm 1), in {−1, 0, +1} (ternary), or integers of one
parity with ``|w| ≤ S`` (swarm ``S``, planes rebuilt as ``(w + S) / 2`` ones per weight).

Anything else is one-line :class:`ConfigError` naming the first node that cannot be mapped;
an unreadable file is a :class:`ModelFileError`.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from bitswarm.golden.errors import BitswarmError, ConfigError, ModelFileError
from bitswarm.golden.layer import SWARM_SIZES, LayerConfig
from bitswarm.golden.model import PIXEL_BITS, Model, ModelConfig

__all__ = ["fold_threshold", "import_qonnx"]

_AFFINE = ("Mul", "Div", "Add", "Sub")
_PASS = ("Identity", "Dropout")
_SHAPE = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")


def fold_threshold(s: float, b: float, z_bound: int) -> tuple[int, int]:
    """SPEC §13: ``(θ, inv)`` with ``((z ≥ θ) XOR inv) == (s·z + b ≥ 0)`` for every integer
    ``|z| ≤ z_bound``, and ``|θ| ≤ z_bound``; exact in rational arithmetic on the floats
    ``s``, ``b`` (no rounding of ``−b/s``)."""
    if s == 0:
        return -z_bound, 0 if b >= 0 else 1
    t = Fraction(-b) / Fraction(s)  # exact: every float is a fraction
    if s > 0:  # z ≥ t  <=>  z ≥ ceil(t)
        theta, inv = math.ceil(t), 0
    else:  # z ≤ t  <=>  not (z ≥ floor(t) + 1)
        theta, inv = math.floor(t) + 1, 1
    if theta > z_bound:  # never z ≥ θ: a constant bit, written as "always fires" inverted
        return -z_bound, 1 - inv
    return max(theta, -z_bound), inv


class _Unmappable(Exception):
    def __init__(self, node, reason):
        super().__init__(f"node {node.name or '?'!r} ({node.op_type}) cannot be mapped to a "
                         f"bitswarm layer: {reason}")


def _weight_planes(node, w_int: np.ndarray, min_swarm: int = 1):
    """``(kind, swarm, weights tensor)`` of an integer weight matrix ``[M, N]``: the fewest
    planes (at least ``min_swarm``) that sum to it."""
    vals = np.unique(w_int)
    if min_swarm == 1 and set(vals.tolist()) <= {-1, 1}:
        return "binary", 1, torch.from_numpy(((w_int + 1) // 2).astype(np.uint8)[None])
    if min_swarm == 1 and set(vals.tolist()) <= {-1, 0, 1}:
        return "ternary", 1, torch.from_numpy(w_int.astype(np.int8))
    top = int(np.abs(w_int).max())
    for s in SWARM_SIZES:
        if s >= max(top, min_swarm) and np.all((w_int - s) % 2 == 0):
            ones = (w_int + s) // 2  # planes 0..ones-1 are 1
            planes = (np.arange(s)[:, None, None] < ones[None]).astype(np.uint8)
            return "binary", s, torch.from_numpy(planes)
    raise _Unmappable(node, f"weight levels {vals[:8].tolist()} are neither ±1, ternary nor the "
                      f"sum of {SWARM_SIZES[-1]} or fewer ±1 planes")


class _Walk:
    def __init__(self, mw):
        self.mw = mw
        g = mw.graph
        self.consts = {t.name: mw.get_initializer(t.name) for t in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}

    def const(self, name):
        """Value of a constant tensor (initializers and nodes whose inputs are all constant)."""
        if name in self.consts:
            return self.consts[name]
        n = self.producer.get(name)
        if n is None:
            return None
        ins = [self.const(i) if i else None for i in n.input]
        if any(v is None for v, i in zip(ins, n.input, strict=True) if i):
            return None
        v = self._eval(n, ins)
        self.consts[name] = v
        return v

    def _eval(self, n, ins):
        from qonnx.custom_op.general.bipolar_quant import binary_quant
        from qonnx.custom_op.general.intquant import int_quant
        from qonnx.util.basic import get_by_name

        def attr(key, default=None):
            a = get_by_name(n.attribute, key)
            if a is None:
                return default
            from onnx import helper

            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v

        op = n.op_type
        if op == "BipolarQuant":
            return binary_quant(ins[0], ins[1])
        if op in ("Quant", "IntQuant"):
            return int_quant(ins[0], ins[1], ins[2], ins[3], attr("signed", 1), attr("narrow", 0),
                             attr("rounding_mode", "ROUND"))
        if op == "Transpose":
            return np.transpose(ins[0], attr("perm"))
        if op in _PASS:
            return ins[0]
        if op in ("Mul", "Div", "Add", "Sub"):
            f = {"Mul": np.multiply, "Div": np.divide, "Add": np.add, "Sub": np.subtract}[op]
            return f(ins[0], ins[1])
        if op == "Neg":
            return -ins[0]
        if op == "Reshape":
            return ins[0].reshape(ins[1])
        raise _Unmappable(n, "a constant computed by this op type is not supported")


def _consumer(g, name):
    users = [n for n in g.node if name in n.input]
    if len(users) > 1:
        raise _Unmappable(users[1], f"tensor {name!r} feeds {len(users)} nodes; only a chain "
                          "of layers can be mapped")
    return users[0] if users else None


def _load(path):
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper

    try:
        proto = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError, ValueError, ... for a malformed file
        raise ModelFileError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None
    if not proto.graph.node:
        raise ModelFileError(f"{path}: the ONNX graph has no nodes")
    inits = {t.name for t in proto.graph.initializer}
    # initializers listed as graph inputs (Brevitas's exporter does so) are constants
    keep = [i for i in proto.graph.input if i.name not in inits]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    for k, n in enumerate(proto.graph.node):  # errors name nodes; give nameless ones a name
        if not n.name:
            n.name = f"{n.op_type}_{k}"
    return proto, ModelWrapper(proto)


def import_qonnx(path: str | os.PathLike, *, input_shape: tuple[int, ...] | None = None) -> Model:
    """The bitswarm model of the W1A1 QONNX file ``path`` (see the module docstring).

    ``input_shape``: shape of one raw sample; default the ``bitswarm.input_shape`` metadata of
    a bitswarm export, else the graph input's shape without its batch axis.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such ONNX file")
    proto, mw = _load(path)
    try:
        return _import(mw, proto, input_shape)
    except _Unmappable as e:
        raise ConfigError(f"{path}: {e}") from None
    except BitswarmError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as e:
        # a structurally broken graph (protobuf parses almost any bytes): one line, no traceback
        raise ModelFileError(f"{path}: malformed ONNX graph ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


def _import(mw, proto, input_shape):
    g = mw.graph
    if len(g.input) != 1 or len(g.output) != 1:
        raise ConfigError(f"the graph needs one input and one output, found {len(g.input)} and "
                          f"{len(g.output)}")
    walk = _Walk(mw)
    out_name = g.output[0].name
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim][1:]
    n_pix = math.prod(dims) if dims and all(dims) else None
    layers, ws, thetas, invs = [], [], [], []
    # phase "pix": value = pa * pixel + pc; "x": layer input ints (bits: ±1) times x_scale;
    # "acc": y = s * z + b of the current layer
    phase, pa, pc = "pix", 1.0, 0.0
    in_bits, x_scale, x_off = None, 1.0, 0.0  # layer input value = x_scale * x + x_off
    s = b = None
    cur_lay = None
    cur = g.input[0].name
    while True:
        if cur == out_name:
            break
        n = _consumer(g, cur)
        if n is None:
            raise ConfigError(f"tensor {cur!r} leads nowhere: the graph output is not reached")
        op = n.op_type
        others = [i for i in n.input if i and i != cur]
        vals = [walk.const(i) for i in others]
        if op in _PASS:
            pass
        elif op in _SHAPE:
            if phase == "acc":
                raise _Unmappable(n, "reshaping a pre-activation")
        elif op in _AFFINE:
            if any(v is None for v in vals) or len(vals) != 1:
                raise _Unmappable(n, "only a constant operand is supported")
            c = np.asarray(vals[0], dtype=np.float64)
            if op in ("Sub", "Div") and n.input[0] != cur:
                raise _Unmappable(n, "the constant must be the second operand")
            if phase == "pix":
                if c.size != 1:
                    raise _Unmappable(n, "pixels may only be scaled/offset by one scalar")
                c = float(c.reshape(()))
                if op == "Mul":
                    pa, pc = pa * c, pc * c
                elif op == "Div":
                    pa, pc = pa / c, pc / c
                elif op == "Add":
                    pc += c
                else:
                    pc -= c
            elif phase == "acc":
                c = np.broadcast_to(c.reshape(-1) if c.size > 1 else c.reshape(()), s.shape)
                if op == "Mul":
                    s, b = s * c, b * c
                elif op == "Div":
                    s, b = s / c, b / c
                elif op == "Add":
                    b = b + c
                else:
                    b = b - c
            else:
                raise _Unmappable(n, "scaling quantized activations between layers")
        elif op == "BatchNormalization":
            if phase != "acc":
                raise _Unmappable(n, "a BatchNormalization that does not follow a MatMul/Gemm")
            gam, bet, mean, var = (np.asarray(v, dtype=np.float64).reshape(-1) for v in vals)
            from qonnx.util.basic import get_by_name

            eps_a = get_by_name(n.attribute, "epsilon")
            eps = eps_a.f if eps_a is not None else 1e-5
            k = gam / np.sqrt(var + eps)
            s, b = s * k, (b - mean) * k + bet
        elif op in ("BipolarQuant", "Quant", "IntQuant"):
            if any(v is None for v in vals):
                raise _Unmappable(n, "quantizer parameters must be constants")
            if op == "BipolarQuant":
                scale, bits, signed = vals[0], 1, 1
            else:
                from qonnx.util.basic import get_by_name

                sa = get_by_name(n.attribute, "signed")
                scale, zp, bits = vals[0], vals[1], int(np.asarray(vals[2]).reshape(-1)[0])
                signed = sa.i if sa is not None else 1
                if np.any(np.asarray(zp) != 0):
                    raise _Unmappable(n, "a nonzero zero point")
            scale = np.asarray(scale, dtype=np.float64)
            if scale.size != 1 or float(scale.reshape(())) <= 0:
                raise _Unmappable(n, "activation quantizers need one positive scalar scale")
            scale = float(scale.reshape(()))
            if bits == 1 and signed:  # sign(v ≥ 0) -> ±scale
                if phase == "pix":
                    # pa * p + pc ≥ 0 must be p ≥ 128 for every integer pixel 0..255
                    p = np.arange(1 << PIXEL_BITS, dtype=np.float64)
                    if not np.array_equal(pa * p + pc >= 0, p >= 1 << (PIXEL_BITS - 1)):
                        raise _Unmappable(n, "a binary input quantizer must be +1 exactly for "
                                          "pixels ≥ 128 (bitswarm's input_bits = 1)")
                    in_bits, phase = 1, "x"
                elif phase == "acc":
                    _finish(cur_lay, s, b, thetas, invs)
                    phase = "x"
                else:
                    raise _Unmappable(n, "two quantizers in a row")
                x_scale, x_off = scale, 0.0
            elif phase == "pix" and not signed:
                ra = get_by_name_attr(n, "rounding_mode", "ROUND").upper()
                shift = PIXEL_BITS - bits
                ok = 2 <= bits <= PIXEL_BITS and pc == 0 and pa / scale == 2.0 ** -shift and (
                    ra == "FLOOR" or shift == 0)
                if not ok:
                    raise _Unmappable(n, "a multi-bit input quantizer must compute "
                                      "pixel >> (8 − B) (unsigned, zero point 0, power-of-two "
                                      "scale, FLOOR)")
                in_bits, phase, x_scale, x_off = bits, "x", scale, 0.0
            else:
                raise _Unmappable(n, f"{bits}-bit {'signed' if signed else 'unsigned'} "
                                  "activations: only binary (W1A1) hidden activations map")
        elif op == "MultiThreshold":
            if len(vals) != 1 or vals[0] is None:
                raise _Unmappable(n, "the thresholds must be a constant")
            thr = np.asarray(vals[0], dtype=np.float64)
            osc = float(get_by_name_attr(n, "out_scale", 1.0))
            obi = float(get_by_name_attr(n, "out_bias", 0.0))
            if thr.ndim != 2 or osc <= 0:
                raise _Unmappable(n, "thresholds must be [channels, steps] with out_scale > 0")
            if phase == "acc":
                if thr.shape[1] != 1:
                    raise _Unmappable(n, f"{thr.shape[1]} thresholds per channel: only binary "
                                      "(one threshold) hidden activations map")
                t = np.broadcast_to(thr[:, 0], s.shape)
                _finish(cur_lay, s, b - t, thetas, invs)  # bit = (y − T ≥ 0)
                # value = osc·bit + obi = (osc/2)·(±1) + (obi + osc/2)
                x_scale, x_off, phase = osc / 2, obi + osc / 2, "x"
            elif phase == "pix":
                if not np.all(thr == thr[:1]):
                    raise _Unmappable(n, "pixel thresholds must be the same for every pixel")
                steps = np.sort(thr[0])
                p = np.arange(1 << PIXEL_BITS, dtype=np.float64)
                cnt = ((pa * p + pc)[:, None] >= steps[None]).sum(axis=1)
                bits = int(len(steps) + 1).bit_length() - 1
                if len(steps) == 1 and np.array_equal(cnt, p >= 1 << (PIXEL_BITS - 1)):
                    in_bits, x_scale, x_off = 1, osc / 2, obi + osc / 2
                elif (1 << bits) == len(steps) + 1 and 2 <= bits <= PIXEL_BITS and np.array_equal(
                        cnt, p.astype(np.int64) >> (PIXEL_BITS - bits)):
                    in_bits, x_scale, x_off = bits, osc, obi
                else:
                    raise _Unmappable(n, "pixel thresholds must compute pixel ≥ 128 or "
                                      "pixel >> (8 − B)")
                phase = "x"
            else:
                raise _Unmappable(n, "two quantizers in a row")
        elif op in ("MatMul", "Gemm"):
            if phase == "acc":
                raise _Unmappable(n, "two MatMul/Gemm without a quantizer between them")
            from qonnx.util.basic import get_by_name

            def a(key, d, n=n):
                at = get_by_name(n.attribute, key)
                return d if at is None else (at.f if at.type == 1 else at.i)

            if n.input[0] != cur or len(vals) < 1 or vals[0] is None:
                raise _Unmappable(n, "the weights must be a constant second operand")
            w = np.asarray(vals[0], dtype=np.float64)
            extra = np.zeros(w.shape[0] if op == "Gemm" and a("transB", 0) else w.shape[-1])
            if op == "Gemm":
                if a("transA", 0):
                    raise _Unmappable(n, "transA")
                if a("transB", 0):
                    w = w.T
                w = w * a("alpha", 1.0)
                if len(vals) > 1 and vals[1] is not None:
                    extra = np.broadcast_to(np.asarray(vals[1], dtype=np.float64).reshape(-1)
                                            * a("beta", 1.0), (w.shape[1],)).copy()
                elif len(vals) > 1:
                    raise _Unmappable(n, "a non-constant bias")
            if w.ndim != 2:
                raise _Unmappable(n, f"weights of shape {list(w.shape)}")
            if np.array_equal(w, np.round(w)):  # integer weights: swarm sums, ternary, ±1
                col = np.ones(w.shape[1])
            else:  # per-neuron scale times ±1 / ternary
                col = np.abs(w).max(axis=0)
                col = np.where(col == 0, 1.0, col)
            w_int = np.round(w / col)
            if not np.allclose(w_int * col, w, rtol=1e-6, atol=0):
                raise _Unmappable(n, "the weights are not a per-neuron scale times integers")
            w_int = w_int.astype(np.int64).T  # [M, N]
            kind, swarm, wt = _weight_planes(n, w_int)
            if phase == "pix":  # MatMul on the pixels themselves: 8-bit inputs
                in_bits, x_scale, x_off = PIXEL_BITS, pa, pc
            extra = extra + x_off * w.sum(axis=0)  # an input offset: c · column sums
            bits_here = in_bits if not layers else 1
            if layers and in_bits is None:
                raise _Unmappable(n, "internal: no input quantizer")
            cur_lay = LayerConfig(n_in=w_int.shape[1], n_out=w_int.shape[0], swarm=swarm,
                                  input_bits=bits_here, weights=kind)
            layers.append(cur_lay)
            ws.append(wt)
            s, b = x_scale * col, extra.astype(np.float64)
            phase = "acc"
        else:
            raise _Unmappable(n, "this op type is not supported")
        cur = n.output[0]
    if phase != "acc":
        raise ConfigError("the graph output is not the scores of a MatMul/Gemm layer")
    if not layers:
        raise ConfigError("the graph has no MatMul/Gemm layer")
    th_out = _output_theta(s, b)
    need = int(np.abs(th_out).max(initial=0))
    while need > cur_lay.z_bound:  # scores z − θ are exact only with |θ| ≤ z_bound: more planes
        w_int = _effective(cur_lay, ws[-1])
        bigger = [v for v in SWARM_SIZES if v > cur_lay.swarm and np.all((w_int - v) % 2 == 0)]
        if not bigger or cur_lay.weights == "ternary":
            raise ConfigError(f"an output threshold {need} exceeds the last layer's bound "
                              f"{cur_lay.z_bound}")
        kind, swarm, wt = _weight_planes(None, w_int, bigger[0])
        cur_lay = LayerConfig(**{**cur_lay.to_dict(), "swarm": swarm, "weights": kind})
        layers[-1], ws[-1] = cur_lay, wt
    thetas.append(torch.tensor(th_out.astype(np.int64), dtype=torch.int32))
    invs.append(torch.zeros(cur_lay.n_out, dtype=torch.uint8))
    layers[-1] = LayerConfig(**{**layers[-1].to_dict(), "output": True})
    if input_shape is None:
        props = {p.key: p.value for p in proto.metadata_props}
        if "bitswarm.input_shape" in props:
            input_shape = tuple(int(v) for v in props["bitswarm.input_shape"].split(","))
        else:
            input_shape = (n_pix or layers[0].n_in,)
    cfg = ModelConfig(input_shape=tuple(input_shape), layers=tuple(layers),
                      meta={"imported_from": "qonnx"})
    return Model(cfg, ws, thetas, invs)


def get_by_name_attr(n, key, default):
    from onnx import helper
    from qonnx.util.basic import get_by_name

    a = get_by_name(n.attribute, key)
    if a is None:
        return default
    v = helper.get_attribute_value(a)
    return v.decode() if isinstance(v, bytes) else v


def _effective(lay, w) -> np.ndarray:
    from bitswarm.golden.layer import effective_weights

    return effective_weights(lay, w).numpy().astype(np.int64)


def _finish(lay, s, b, thetas, invs):
    zb = lay.z_bound
    th, iv = zip(*(fold_threshold(float(sj), float(bj), zb) for sj, bj in zip(s, b, strict=True)),
                 strict=True)
    thetas.append(torch.tensor(th, dtype=torch.int32))
    invs.append(torch.tensor(iv, dtype=torch.uint8))


def _output_theta(s, b) -> np.ndarray:
    """Integer output thresholds with ``argmax(s·z + b) == argmax(z − θ)`` (SPEC §13)."""
    s0 = float(s[0])
    if s0 <= 0 or not np.allclose(s, s0, rtol=1e-6, atol=0):
        raise ConfigError("the output scores need one positive scale shared by all classes "
                          f"(found {np.unique(s)[:4].tolist()}): argmax would not be integer")
    t = -np.asarray(b, dtype=np.float64) / s0
    frac = t - np.floor(t)
    if np.all(np.abs(t - np.round(t)) <= 1e-6):
        return np.round(t)
    if np.allclose(frac, frac[0], atol=1e-6):
        return np.floor(t)
    raise ConfigError("the output offsets −b/s are not integers (nor equal fractions): "
                      "the scores cannot be integers without changing the classes")
