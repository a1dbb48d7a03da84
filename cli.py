"""The ``bitswarm`` command: one entry point, one subcommand per job.

Each package contributes its subcommands through a ``register(subparsers)`` function in its
``cli`` module (listed in :data:`COMMAND_MODULES`); handlers import heavy libraries lazily so
``bitswarm --help`` stays fast. Every :class:`~bitswarm.golden.errors.BitswarmError` is printed
as one line (``bitswarm: error: ...``) with exit status 2, and so is any ``OSError``; an
unexpected exception (a bug) is one ``bitswarm: internal error:`` line with exit status 70
(``BITSWARM_DEBUG=1`` re-raises it with its traceback) — never a traceback by default.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from bitswarm import __version__

__all__ = ["COMMAND_MODULES", "INTERNAL_ERROR", "build_parser", "main"]

#: Exit status of an unexpected exception (a bug): not 2, so tests and scripts can tell it
#: from a user error (``EX_SOFTWARE`` of sysexits.h).
INTERNAL_ERROR = 70

#: Modules whose ``register(subparsers)`` adds subcommands, in ``--help`` order.
COMMAND_MODULES = [
    "bitswarm.golden.cli",
    "bitswarm.hw.cli",
    "bitswarm.hw.board_cli",
    "bitswarm.sim.demo",
    "bitswarm.sim.cli",
    "bitswarm.train.cli",
    "bitswarm.train.zoo.cli",
    "bitswarm.interop.cli",
    "bitswarm.interop.import_cli",
]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line pointing at ``--help`` (not argparse's usage block)."""

    def error(self, message: str):
        self.exit(2, f"bitswarm: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
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
    except OSError as e:  # disk full, read-only file system, permissions, a path through a file
        where = f": {e.filename}" if e.filename else ""
        print(f"bitswarm: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line, a distinct status, the traceback on request
        if os.environ.get("BITSWARM_DEBUG"):
            raise
        print(f"bitswarm: internal error: {type(e).__name__}: {e} (a bug in bitswarm, please "
              "report it; BITSWARM_DEBUG=1 shows the traceback)", file=sys.stderr)
        return INTERNAL_ERROR
