"""The ``bitswarm`` command: one entry point, one subcommand per job.

Each package contributes its subcommands through a ``register(subparsers)`` function in its
``cli`` module (listed in :data:`COMMAND_MODULES`); handlers import heavy libraries lazily so
``bitswarm --help`` stays fast. Every :class:`~bitswarm.golden.errors.BitswarmError` is printed
as one line (``bitswarm: error: ...``) with exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bitswarm import __version__

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: Modules whose ``register(subparsers)`` adds subcommands, in ``--help`` order.
COMMAND_MODULES = [
    "bitswarm.golden.cli",
    "bitswarm.hw.cli",
    "bitswarm.hw.board_cli",
    "bitswarm.sim.demo",
    "bitswarm.sim.cli",
    "bitswarm.train.cli",
    "bitswarm.train.zoo.cli",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bitswarm",
        description="Integer-only binary neural networks: golden model, training, gateware, "
        "cycle-accurate simulation.",
    )
    p.add_argument("--version", action="version", version=f"bitswarm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from bitswarm.golden.errors import BitswarmError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BitswarmError as e:
        print(f"bitswarm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bitswarm: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"bitswarm: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2
