"""Progress lines for long steps (Verilator builds, synthesis, place and route, packing).

::

    with step("building Verilator model", hint="once per design, ~15-60 s"):
        build()

prints ``bitswarm: building Verilator model (once per design, ~15-60 s)...`` to stderr when
the step starts and `` done in 43.1 s`` (or `` failed after 2.0 s``) on the same line when it
ends. Standard output stays free for ``--json``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["step"]


@contextmanager
def step(what: str, *, hint: str = "", file: TextIO | None = None) -> Iterator[None]:
    """Announce ``what`` on stderr (or ``file``) and report its elapsed time when it ends."""
    out = file if file is not None else sys.stderr
    print(f"bitswarm: {what}{f' ({hint})' if hint else ''}...", end="", file=out, flush=True)
    t0 = time.monotonic()
    try:
        yield
    except BaseException:
        print(f" failed after {time.monotonic() - t0:.1f} s", file=out, flush=True)
        raise
    print(f" done in {time.monotonic() - t0:.1f} s", file=out, flush=True)
