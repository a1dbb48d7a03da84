"""Files bitswarm writes and reads: atomic writes, output checks, integrity digests.

Every command writes its outputs through :func:`atomic_write_bytes` (a reader sees the old or
the new file, never a torn one; files get the user's umask like any other program's) and
checks its outputs with :func:`check_outputs` before long work starts (nothing existing is
replaced without ``--overwrite``; an unwritable location is an error before, not after, the
work). :func:`tensor_digest` is the SHA-256 that model files and checkpoints carry (SPEC.md
§10): any flipped bit, edited header field or truncated tensor changes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .errors import ConfigError

__all__ = ["DIGEST_KEY", "atomic_write_bytes", "check_outputs", "file_mode", "header_sealed",
           "notice", "seal_header", "tensor_digest"]

#: Header field that holds the digest (model files and checkpoints, SPEC.md §10).
DIGEST_KEY = "sha256"


def file_mode() -> int:
    """The mode a new file gets from the user's umask (``0o666 & ~umask``, normally 0644)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    The file gets the mode of :func:`file_mode` (``mkstemp`` alone would make it 0600, unreadable
    for other users and containers). Parent folders are created.
    """
    path = Path(path)
    if path.exists() and path.is_dir():
        raise ConfigError(f"{path} is a directory")
    _check_parent(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _check_parent(path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder."""
    anc = path.parent
    while not anc.exists():
        if anc == anc.parent:
            break
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(f"cannot write {path}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {path}: folder {anc} is not writable")


def check_outputs(paths: Iterable[str | os.PathLike], *, overwrite: bool = False,
                  flag: str = "--overwrite", folders: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse, before any work, outputs that exist (unless ``overwrite``) or cannot be written.

    ``paths`` are files the command will write; ``folders`` are folders it will create or write
    into (an existing non-empty one counts as existing output). Raises one-line
    :class:`ConfigError` naming the first offending path and the flag that allows it.
    """
    for f in folders:
        f = Path(f)
        if f.exists() and not f.is_dir():
            raise ConfigError(f"{f} exists and is not a folder")
        if f.is_dir():
            if any(f.iterdir()) and not overwrite:
                raise ConfigError(f"{f} already holds files; pass {flag} to replace them, or "
                                  "choose another output folder")
            if not os.access(f, os.W_OK | os.X_OK):
                raise ConfigError(f"cannot write into {f}: the folder is not writable")
        else:
            _check_parent(f / "x")
    for p in paths:
        p = Path(p)
        if p.is_dir():
            raise ConfigError(f"{p} is a folder; give a file path")
        if p.exists() and not overwrite:
            raise ConfigError(f"{p} exists; pass {flag} to replace it")
        _check_parent(p)


def notice(msg: str) -> None:
    """One ``bitswarm: notice:`` line on stderr (information, not an error)."""
    print(f"bitswarm: notice: {msg}", file=sys.stderr, flush=True)


def tensor_digest(kind: str, header: str, tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) over ``kind``, the header text and every tensor (SPEC.md §10).

    Hashed in order: ``kind`` and ``header`` as UTF-8, each followed by a NUL byte; then per
    tensor, sorted by name: the name, the dtype string (``uint64``, ...) and the shape as
    ``d0,d1,...``, each followed by NUL, then the tensor's bytes in C order, little-endian.
    """
    h = hashlib.sha256()
    for s in (kind, header):
        h.update(s.encode("utf-8") + b"\0")
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        for s in (name, str(a.dtype), ",".join(map(str, a.shape))):
            h.update(s.encode("utf-8") + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


def seal_header(kind: str, header: dict, tensors: Mapping[str, np.ndarray]) -> str:
    """The header text with its digest: ``header`` plus ``"sha256"`` = :func:`tensor_digest`
    over ``kind``, the header's canonical JSON without the digest (``json.dumps(...,
    sort_keys=True)``) and ``tensors``; returned as canonical JSON."""
    if DIGEST_KEY in header:
        raise ValueError(f"header already has a {DIGEST_KEY!r} field")
    body = json.dumps(header, sort_keys=True)
    return json.dumps({**header, DIGEST_KEY: tensor_digest(kind, body, tensors)}, sort_keys=True)


def header_sealed(kind: str, text: str, header: dict, tensors: Mapping[str, np.ndarray]) -> bool:
    """True if ``text`` (parsed as ``header``) is exactly what :func:`seal_header` writes for
    these tensors: canonical JSON whose digest matches. Any edit -- a field, a byte of
    whitespace, a tensor bit -- makes it False."""
    digest = header.get(DIGEST_KEY)
    if not isinstance(digest, str):
        return False
    body = {k: v for k, v in header.items() if k != DIGEST_KEY}
    return (text == json.dumps(header, sort_keys=True)
            and digest == tensor_digest(kind, json.dumps(body, sort_keys=True), tensors))
