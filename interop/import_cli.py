"""``bitswarm import M.onnx -o MODEL.bsm``: a W1A1 QONNX network as a bitswarm model file."""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="import a W1A1 QONNX network (e.g. from Brevitas) as a model file",
        description="Turn a QONNX graph of binary-weight MatMul/Gemm layers, BatchNorm/scales "
        "and binary activations into a bitswarm model file; BatchNorm and scales fold into "
        "integer thresholds and invert bits (SPEC.md §13). The graph input is read as raw "
        "8-bit pixels. An unsupported graph is one error line naming the first node that "
        "cannot be mapped.")
    p.add_argument("onnx", help="QONNX file (.onnx)")
    p.add_argument("-o", "--out", required=True, help="model file to write (.bsm)")
    p.add_argument("--input-shape", default=None,
                   help="shape of one raw sample, e.g. 8,8 (default: the export's metadata or "
                   "the graph input without its batch axis)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_import)


def _cmd_import(args) -> int:
    from bitswarm.golden.errors import ConfigError
    from bitswarm.golden.files import check_outputs
    from bitswarm.golden.model import save_model

    check_outputs([args.out], overwrite=args.overwrite)
    shape = None
    if args.input_shape is not None:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise ConfigError(f"--input-shape must be integers separated by commas, not "
                              f"{args.input_shape!r}") from None
    from bitswarm.interop.qonnx_import import import_qonnx

    model = import_qonnx(args.onnx, input_shape=shape)
    save_model(model, args.out)
    lays = model.cfg.layers
    report = {
        "path": args.out,
        "arch": model.cfg.arch,
        "input_shape": list(model.cfg.input_shape),
        "input_bits": lays[0].input_bits,
        "layers": [{"swarm": lay.swarm, "weights": lay.weights} for lay in lays],
        "inverted": [int(v.sum()) for v in model.invert],
    }
    if args.json:
        print(json.dumps(report))
    else:
        kinds = ", ".join(f"{lay.weights}" + (f" S={lay.swarm}" if lay.swarm > 1 else "")
                          for lay in lays)
        print(f"wrote {args.out}: arch {'-'.join(map(str, model.cfg.arch))}, input bits "
              f"{lays[0].input_bits}, layers {kinds}, {sum(report['inverted'])} invert bits")
    return 0
