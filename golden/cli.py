"""Golden subcommands: ``selfcheck``, ``summary``."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "summary_table", "selfcheck"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("selfcheck", help="check the golden model's integer identities on random cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=_cmd_selfcheck)

    p = sub.add_parser("summary", help="print a model file's layer table (bits, ops, memory)")
    p.add_argument("model", help="model file (.bsm)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_summary)


def _shape(lay, side: str) -> str:
    """``HxWxC`` of a convolutional layer's input or (pooled) output map; the width if dense."""
    g = lay.conv
    if g is None:
        return str(lay.n_in if side == "in" else lay.n_out)
    if side == "in":
        return f"{g.in_height}x{g.in_width}x{g.in_channels}"
    return f"{g.pooled_height}x{g.pooled_width}x{lay.n_out}"


def summary_table(model) -> tuple[list[dict], dict]:
    """Per-layer rows and totals: output shape, weight bits, binary ops per inference, memory
    bytes. A convolutional layer's ``binary_macs`` counts every output pixel (SPEC.md §14)."""
    rows = []
    for i, lay in enumerate(model.cfg.layers):
        ops = lay.macs * lay.input_bits  # 1-bit MACs per inference
        thr_bits = 0 if lay.output else lay.n_out * (lay.z_width + 1)
        g = lay.conv
        kind = f"{lay.weights}{'-out' if lay.output else ''}"
        if g is not None:
            kind = (f"conv{g.kernel}x{g.kernel}" + (f"/s{g.stride}" if g.stride != 1 else "")
                    + (f"/p{g.pad}" if g.pad else "") + (f"+mp{g.pool}" if g.pool != 1 else "")
                    + f"-{lay.weights}")
        rows.append(
            {
                "layer": i,
                "kind": kind,
                "in_shape": _shape(lay, "in"),
                "out_shape": _shape(lay, "out"),
                "n_in": lay.n_in,
                "n_out": lay.n_out,
                "swarm": lay.swarm,
                "input_bits": lay.input_bits,
                "weight_bits": lay.weight_bits,
                "z_width": lay.z_width,
                "binary_macs": ops,
                "memory_bytes": (lay.weight_bits + thr_bits + 7) // 8,
            }
        )
    tot = {k: sum(r[k] for r in rows) for k in ("weight_bits", "binary_macs", "memory_bytes")}
    return rows, tot


def _cmd_summary(args) -> int:
    from .model import load_model

    m = load_model(args.model)
    rows, tot = summary_table(m)
    if args.json:
        print(json.dumps({"layers": rows, "total": tot, "config": m.cfg.to_dict()}))
        return 0
    cols = ["layer", "kind", "in_shape", "out_shape", "n_in", "n_out", "swarm", "input_bits", "weight_bits", "z_width",
            "binary_macs", "memory_bytes"]
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = "+" + "+".join("-" * (width[c] + 2) for c in cols) + "+"
    print(f"Model: {args.model}  arch {m.cfg.arch_string}  meta {m.cfg.meta}")
    print(line)
    print("| " + " | ".join(c.ljust(width[c]) for c in cols) + " |")
    print(line)
    for r in rows:
        print("| " + " | ".join(str(r[c]).rjust(width[c]) for c in cols) + " |")
    print(line)
    print(
        f"Total: {tot['weight_bits']:,} weight bits, {tot['binary_macs']:,} binary MACs per "
        f"inference, {tot['memory_bytes']:,} bytes of parameters"
        + (", with training state" if m.acc is not None else "")
    )
    return 0


def selfcheck(seed: int = 0) -> dict:
    """Check golden's fast paths against its literal bit-level definitions; returns counts."""
    import numpy as np
    import torch

    from .bits import (
        pack_bits,
        pack_trits_base3,
        pack_trits_u32,
        unpack_bits,
        unpack_trits_base3,
        unpack_trits_u32,
    )
    from .errors import BitswarmError
    from .layer import LayerConfig, preact, preact_packed
    from .lfsr import TAPS, LFSRConfig
    from .model import Model, ModelConfig, model_from_bytes, model_to_bytes

    g = torch.Generator().manual_seed(seed)
    checks = {"layer_cases": 0, "conv_cases": 0, "lfsr_periods": 0, "packings": 0,
              "model_round_trips": 0}
    for S in (1, 2, 4, 8, 16, 32):
        for bits in (1, 8):
            for kind in ("binary", "ternary") if S == 1 else ("binary",):
                n = int(torch.randint(1, 200, (1,), generator=g))
                c = LayerConfig(n_in=n, n_out=5, swarm=S, input_bits=bits, weights=kind)
                x = torch.randint(0, 1 << bits, (4, n), generator=g, dtype=torch.uint8)
                if kind == "binary":
                    w = torch.randint(0, 2, c.weight_shape(), generator=g, dtype=torch.uint8)
                else:
                    w = torch.randint(-1, 2, c.weight_shape(), generator=g, dtype=torch.int8)
                if not np.array_equal(preact(c, x, w).numpy(), preact_packed(c, x, w)):
                    raise BitswarmError(f"selfcheck: layer mismatch for {c}")
                checks["layer_cases"] += 1
    from .conv import ConvGeometry, conv_forward, conv_reference, im2col

    for k, stride, pad, pool, bits, kind in ((3, 1, 1, 2, 8, "binary"), (3, 2, 0, 1, 1, "binary"),
                                             (2, 1, 1, 3, 1, "ternary"), (1, 1, 0, 2, 4, "binary")):
        geo = ConvGeometry(3, 7, 6, k, stride, pad, pool)
        c = LayerConfig(n_in=geo.window, n_out=4, swarm=2 if kind == "binary" else 1,
                        input_bits=bits, weights=kind, conv=geo)
        x = torch.randint(0, 1 << bits, (2, geo.in_size), generator=g, dtype=torch.uint8)
        if kind == "binary":
            w = torch.randint(0, 2, c.weight_shape(), generator=g, dtype=torch.uint8)
        else:
            w = torch.randint(-1, 2, c.weight_shape(), generator=g, dtype=torch.int8)
        cols = im2col(geo, x)
        th = torch.randint(-c.z_bound // 4, c.z_bound // 4 + 1, (4,), generator=g, dtype=torch.int32)
        inv = torch.tensor([0, 1, 0, 1], dtype=torch.uint8)
        got = conv_forward(c, x, w, th, inv)
        if not (np.array_equal(preact(c, cols, w).numpy(), preact_packed(c, cols, w))
                and got.tolist() == conv_reference(c, x, w, th, inv)):
            raise BitswarmError(f"selfcheck: conv mismatch for {c}")
        checks["conv_cases"] += 1
    for width in (8, 9, 10, 11, 12):
        lf = LFSRConfig(width=width, seed=1).create()
        period = int(np.argmax(lf.states((1 << width) - 1) == 1)) + 1
        if period != (1 << width) - 1 or width not in TAPS:
            raise BitswarmError(f"selfcheck: LFSR width {width} period {period}")
        checks["lfsr_periods"] += 1
    t = torch.randint(-1, 2, (3, 47), generator=g).numpy()
    b = torch.randint(0, 2, (3, 131), generator=g, dtype=torch.uint8).numpy()
    if not (
        np.array_equal(unpack_trits_base3(pack_trits_base3(t), 47), t)
        and np.array_equal(unpack_trits_u32(pack_trits_u32(t), 47), t)
        and np.array_equal(unpack_bits(pack_bits(b), 131), b)
    ):
        raise BitswarmError("selfcheck: packing round trip failed")
    checks["packings"] += 3
    m = Model.random(ModelConfig.mlp([64, 32, 10], input_shape=(8, 8), swarm=4), seed)
    m2 = model_from_bytes(model_to_bytes(m))
    x = torch.randint(0, 256, (16, 8, 8), generator=g, dtype=torch.uint8)
    if not (m.equal(m2) and torch.equal(m.forward(x), m2.forward(x))):
        raise BitswarmError("selfcheck: model file round trip failed")
    checks["model_round_trips"] += 1
    mc = Model.random(ModelConfig.from_arch("1x8x8-c8k3p1-mp2-c8k3s2-16-10", swarm=2), seed)
    mc2 = model_from_bytes(model_to_bytes(mc))
    if not (mc.equal(mc2) and torch.equal(mc.forward(x), mc2.forward(x))):
        raise BitswarmError("selfcheck: conv model file round trip failed")
    checks["model_round_trips"] += 1
    return checks


def _cmd_selfcheck(args) -> int:
    checks = selfcheck(args.seed)
    if args.json:
        print(json.dumps({"ok": True, **checks}))
    else:
        print("golden selfcheck: ok  " + "  ".join(f"{k}={v}" for k, v in checks.items()))
    return 0
