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


def summary_table(model) -> tuple[list[dict], dict]:
    """Per-layer rows and totals: weight bits, binary ops per inference, memory bytes."""
    rows = []
    for i, lay in enumerate(model.cfg.layers):
        ops = lay.n_in * lay.n_out * lay.swarm * lay.input_bits  # 1-bit MACs per inference
        thr_bits = 0 if lay.output else lay.n_out * (lay.z_width + 1)
        rows.append(
            {
                "layer": i,
                "kind": f"{lay.weights}{'-out' if lay.output else ''}",
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
    cols = ["layer", "kind", "n_in", "n_out", "swarm", "input_bits", "weight_bits", "z_width",
            "binary_macs", "memory_bytes"]
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = "+" + "+".join("-" * (width[c] + 2) for c in cols) + "+"
    print(f"Model: {args.model}  arch {'-'.join(map(str, m.cfg.arch))}  meta {m.cfg.meta}")
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
    checks = {"layer_cases": 0, "lfsr_periods": 0, "packings": 0, "model_round_trips": 0}
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
    return checks


def _cmd_selfcheck(args) -> int:
    checks = selfcheck(args.seed)
    if args.json:
        print(json.dumps({"ok": True, **checks}))
    else:
        print("golden selfcheck: ok  " + "  ".join(f"{k}={v}" for k, v in checks.items()))
    return 0
