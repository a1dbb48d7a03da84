"""``bitswarm export MODEL --format FORMAT -o OUT``: a model file in another format.

Formats are a registry, :data:`FORMATS`, of ``"module:function"`` entries imported only when
used (so ``bitswarm --help`` needs neither torch extras nor onnx). Every exporter has the
signature ``export(model, out, *, overwrite=False) -> dict`` and returns a JSON-serialisable
report; ``--json`` prints it, otherwise its ``lines`` (a list of strings, when present) or its
scalar fields are printed. An exporter checks its outputs before any work and never replaces
an existing file without ``overwrite``.
"""

from __future__ import annotations

import argparse
import importlib
import json

__all__ = ["FORMATS", "OUT_KIND", "get_exporter", "register"]

#: Export format -> ``"module:function"`` of its exporter.
FORMATS = {
    "c": "bitswarm.interop.c_export:export_c",
    "qonnx": "bitswarm.interop.qonnx_export:export_qonnx",
}
#: What ``-o`` names for each format (for --help).
OUT_KIND = {"c": "a folder", "qonnx": "an .onnx file"}


def get_exporter(fmt: str):
    """The export function of ``fmt``; a one-line :class:`ConfigError` if it is unavailable."""
    from bitswarm.golden.errors import ConfigError

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {sorted(FORMATS)}, not {fmt!r}")
    mod_name, func = FORMATS[fmt].split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name == mod_name:
            raise ConfigError(f"--format {fmt} is not available in this bitswarm ({mod_name} is "
                              "not installed)") from None
        raise ConfigError(f"--format {fmt} needs the Python package {e.name!r}: "
                          f"pip install {(e.name or '').split('.')[0]}") from None
    return getattr(mod, func)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a model file: C99 for microcontrollers, QONNX",
        description="Write a model in another format. "
        + "; ".join(f"--format {k}: -o is {v}" for k, v in OUT_KIND.items()) + ".")
    p.add_argument("model", help="model file (.bsm)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="output format")
    p.add_argument("-o", "--out", required=True, help="output folder (c) or file (qonnx)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from bitswarm.golden.model import load_model

    export = get_exporter(args.format)
    model = load_model(args.model)
    report = export(model, args.out, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(report))
    elif isinstance(report.get("lines"), list):
        for line in report["lines"]:
            print(line)
    else:
        for k, v in report.items():
            if isinstance(v, (str, int, float, bool)):
                print(f"{k}: {v}")
    return 0
