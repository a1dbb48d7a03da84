"""Packed-word popcount kernels of the virtual accelerator (golden/SPEC.md §2–§4, §14).

Two kernels on bit-packed ``uint64`` words (SPEC §2: element ``k`` is bit ``k % 64`` of word
``k // 64``), for a batch of input rows ``a[B, W]`` against weight rows ``w[M, W]``:

- :func:`xnor_popcount` — ``2 * popcount(XNOR(a_i, w_j)) - n``, the ±1 dot product (SPEC §3);
- :func:`and_popcount` — ``popcount(a_i AND w_j)``, for bit-plane inputs (SPEC §4).

Padding bits (positions ``n .. 64*W - 1``) are masked off, so results never depend on them.
Results are exact ``int32`` (``|result| <= n < 2**31``).

:func:`window_words` cuts the packed windows of a convolution (SPEC §14) out of row-packed
feature maps, so a convolutional layer is one call of the same kernels on its window rows.

Backends
--------
``"avx512"``
    Compiled AVX-512 VPOPCNTQ path of :mod:`bitswarm.sim._popcount` (needs AVX-512F and
    AVX512_VPOPCNTDQ, checked at run time).
``"portable"``
    Compiled plain-C path (``__builtin_popcountll``; the POPCNT instruction where the CPU has it).
``"numpy"``
    ``np.bitwise_count`` — used when the extension is not built.

The default is the fastest available one; force another with the ``backend=`` argument, with
:func:`use_backend`, or with the environment variable ``BITSWARM_POPCOUNT`` (read at import).
The compiled paths release the GIL and run on ``threads`` threads (default: all CPUs).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

from ..golden.bits import WORD_BITS, n_words
from ..golden.errors import ConfigError

try:
    from . import _popcount as _ext
except ImportError:  # the extension was not built: numpy only
    _ext = None

__all__ = [
    "BACKENDS",
    "available_backends",
    "default_backend",
    "get_backend",
    "set_backend",
    "use_backend",
    "cpu_info",
    "xnor_popcount",
    "and_popcount",
    "window_words",
]

#: Every backend name, fastest first.
BACKENDS = ("avx512", "portable", "numpy")
_PATH = {"portable": 1, "avx512": 2}
#: Rows of ``a`` per numpy chunk, so the ``[rows, M, W]`` temporary stays near 32 MiB.
_NUMPY_CHUNK_BYTES = 1 << 25


def cpu_info() -> dict:
    """What the compiled kernel found: ``avx512``, ``popcnt``, ``threading``, ``cpus``.

    Returns ``{"built": False}`` when the extension is not built.
    """
    if _ext is None:
        return {"built": False}
    return {"built": True, **_ext.cpu_info()}


def available_backends() -> tuple[str, ...]:
    """Backends usable on this machine, fastest first."""
    if _ext is None:
        return ("numpy",)
    if _ext.cpu_info()["avx512"]:
        return BACKENDS
    return ("portable", "numpy")


def default_backend() -> str:
    """The fastest available backend."""
    return available_backends()[0]


def _check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"popcount backend must be one of {BACKENDS}, not {name!r}")
    if name not in available_backends():
        why = (
            "the compiled extension bitswarm.sim._popcount is not built"
            if _ext is None
            else "this CPU lacks AVX-512F/AVX512_VPOPCNTDQ"
        )
        raise ConfigError(f"popcount backend {name!r} is not available: {why}")
    return name


_backend = _check_backend(os.environ.get("BITSWARM_POPCOUNT") or default_backend())


def get_backend() -> str:
    """The backend used when a call does not name one."""
    return _backend


def set_backend(name: str) -> None:
    """Make ``name`` the backend used when a call does not name one.

    Raises
    ------
    ConfigError
        If ``name`` is unknown or not available on this machine.
    """
    global _backend
    _backend = _check_backend(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Context manager: use backend ``name`` inside the ``with`` block, then restore."""
    old = get_backend()
    set_backend(name)
    try:
        yield name
    finally:
        set_backend(old)


def _check_words(x, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ConfigError(f"{name} must be a numpy uint64 array, not {type(x).__name__}")
    if x.dtype != np.uint64:
        raise ConfigError(f"{name} must have dtype uint64, found {x.dtype}")
    if x.ndim != 2:
        raise ConfigError(f"{name} must be 2-dimensional [rows, words], found shape {x.shape}")
    if not x.flags.c_contiguous:
        raise ConfigError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    return x


def _prepare(
    a, w, n, out, threads, backend
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, int, str]:
    a = _check_words(a, "a_words")
    w = _check_words(w, "w_words")
    if a.shape[1] != w.shape[1]:
        raise ConfigError(
            f"a_words and w_words must have the same words per row, found {a.shape[1]} and {w.shape[1]}"
        )
    words = a.shape[1]
    if n is None:
        n = words * WORD_BITS
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
        raise ConfigError(f"n must be an integer bit count, not {n!r}")
    n = int(n)
    if n < 0 or n_words(n) != words:
        raise ConfigError(f"n = {n} bits need {n_words(max(n, 0))} words, but rows have {words}")
    if n >= 1 << 31:
        raise ConfigError(f"n = {n} does not fit the int32 result")
    shape = (a.shape[0], w.shape[0])
    if out is None:
        out = np.empty(shape, dtype=np.int32)
    elif not (
        isinstance(out, np.ndarray)
        and out.dtype == np.int32
        and out.shape == shape
        and out.flags.c_contiguous
        and out.flags.writeable
    ):
        raise ConfigError(f"out must be a writable C-contiguous int32 array of shape {shape}")
    if threads is None:
        threads = 0
    if not isinstance(threads, int) or isinstance(threads, bool) or not 0 <= threads <= 256:
        raise ConfigError(f"threads must be an integer in 0..256 (0 = all CPUs), not {threads!r}")
    backend = get_backend() if backend is None else _check_backend(backend)
    return a, w, n, out, threads, backend


def _numpy_kernel(a: np.ndarray, w: np.ndarray, n: int, out: np.ndarray, xnor: bool) -> None:
    words = a.shape[1]
    if words == 0:
        out[...] = 0
        return
    mask = np.full(words, np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    if n % WORD_BITS:
        mask[-1] = np.uint64((1 << (n % WORD_BITS)) - 1)
    rows = max(1, _NUMPY_CHUNK_BYTES // max(1, 8 * w.shape[0] * words))
    for i in range(0, a.shape[0], rows):
        blk = a[i : i + rows, None, :]
        x = (blk ^ w[None]) if xnor else (blk & w[None])
        x &= mask
        cnt = np.bitwise_count(x).sum(axis=-1, dtype=np.int64)
        out[i : i + rows] = (n - 2 * cnt) if xnor else cnt


def xnor_popcount(
    a_words: np.ndarray,
    w_words: np.ndarray,
    n: int,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
    backend: str | None = None,
) -> np.ndarray:
    """±1 dot products of packed rows: ``2 * popcount(XNOR(a_i, w_j) AND valid) - n``.

    Parameters
    ----------
    a_words : numpy.ndarray
        ``uint64 [B, W]``, C-contiguous: ``B`` packed input rows of ``n`` bits.
    w_words : numpy.ndarray
        ``uint64 [M, W]``, C-contiguous: ``M`` packed weight rows.
    n : int
        Bits per row; ``W == ceil(n / 64)``. Bits ``n .. 64W-1`` are ignored.
    out : numpy.ndarray, optional
        ``int32 [B, M]`` C-contiguous array to write into.
    threads : int, optional
        Threads for the compiled backends (0 or None: all CPUs).
    backend : str, optional
        ``"avx512"``, ``"portable"`` or ``"numpy"``; default :func:`get_backend`.

    Returns
    -------
    numpy.ndarray
        ``int32 [B, M]``, values in ``[-n, n]`` with the parity of ``n``.

    Raises
    ------
    ConfigError
        On a wrong dtype, dimension, shape or contiguity, an ``n`` that does not match ``W``,
        or an unavailable backend.
    """
    a, w, n, out, threads, backend = _prepare(a_words, w_words, n, out, threads, backend)
    if backend == "numpy":
        _numpy_kernel(a, w, n, out, xnor=True)
    else:
        _ext.xnor_popcount(a, w, out, n, _PATH[backend], threads)
    return out


def and_popcount(
    a_words: np.ndarray,
    w_words: np.ndarray,
    n: int | None = None,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
    backend: str | None = None,
) -> np.ndarray:
    """Counts of common one bits of packed rows: ``popcount(a_i AND w_j AND valid)``.

    Parameters
    ----------
    a_words, w_words : numpy.ndarray
        ``uint64 [B, W]`` and ``uint64 [M, W]``, C-contiguous.
    n : int, optional
        Bits per row (``W == ceil(n / 64)``); bits ``n .. 64W-1`` are ignored. Default ``64 W``.
    out, threads, backend
        As for :func:`xnor_popcount`.

    Returns
    -------
    numpy.ndarray
        ``int32 [B, M]``, values in ``[0, n]``.

    Raises
    ------
    ConfigError
        As for :func:`xnor_popcount`.
    """
    a, w, n, out, threads, backend = _prepare(a_words, w_words, n, out, threads, backend)
    if backend == "numpy":
        _numpy_kernel(a, w, n, out, xnor=False)
    else:
        _ext.and_popcount(a, w, out, n, _PATH[backend], threads)
    return out


def window_words(
    maps: np.ndarray,
    kernel: int,
    stride: int,
    channels: int,
    out_h: int,
    out_w: int,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
    backend: str | None = None,
) -> np.ndarray:
    """Packed convolution windows of row-packed HWC maps (SPEC §2, §14).

    Row ``y`` of a (padded) map is its ``W_p * C`` bits, pixel ``x`` channel ``c`` at bit
    ``x * C + c``, packed into words. The window of output pixel ``(oy, ox)`` is, for each
    ``ky < kernel``, the ``kernel * C`` bits of map row ``oy * stride + ky`` that start at bit
    ``ox * stride * C`` (pixels ``ox * stride .. ox * stride + kernel - 1``, all channels):
    window input ``(ky, kx, c)`` is bit ``kx * C + c`` of word group ``ky``. Each group fills
    ``ceil(kernel * C / 64)`` words with zero padding bits.

    Parameters
    ----------
    maps : numpy.ndarray
        ``uint64 [B, H_p, R]``, C-contiguous: ``B`` maps of ``H_p`` rows, each row ending in
        at least one spare word beyond the last window's bits (any value; it is shifted out).
    kernel, stride, channels, out_h, out_w : int
        ``K``, ``s``, ``C`` and the output size; ``H_p >= (out_h - 1) * s + K``.
    out : numpy.ndarray, optional
        ``uint64`` C-contiguous array of the result's shape to write into.
    threads : int, optional
        Threads of the C loop (0 or None: all CPUs; small maps use one).
    backend : str, optional
        ``"numpy"`` for the numpy path; any compiled backend uses the C loop (default
        :func:`get_backend`).

    Returns
    -------
    numpy.ndarray
        ``uint64 [B * out_h * out_w, K * ceil(K * C / 64)]``, rows in ``(b, oy, ox)`` raster
        order.

    Raises
    ------
    ConfigError
        On a wrong dtype, dimension or contiguity, or maps too small for the windows.
    """
    if not isinstance(maps, np.ndarray) or maps.dtype != np.uint64 or maps.ndim != 3:
        raise ConfigError(f"maps must be a numpy uint64 array [B, rows, words], found "
                          f"{getattr(maps, 'dtype', type(maps).__name__)} "
                          f"{getattr(maps, 'shape', '')}")
    if not maps.flags.c_contiguous:
        raise ConfigError("maps must be C-contiguous (use np.ascontiguousarray)")
    k, s, c, ho, wo = (int(v) for v in (kernel, stride, channels, out_h, out_w))
    b, hp, r = maps.shape
    wr = n_words(k * c)
    need = ((wo - 1) * s * c) // WORD_BITS + wr + 1
    if min(k, s, c, ho, wo) < 1 or hp < (ho - 1) * s + k or r < need:
        raise ConfigError(f"maps [{b}, {hp}, {r}] are too small for {ho}x{wo} windows of kernel "
                          f"{k}, stride {s}, {c} channels: need >= {(ho - 1) * s + k} rows of "
                          f">= {need} words")
    shape = (b * ho * wo, k * wr)
    if out is None:
        out = np.empty(shape, dtype=np.uint64)
    elif not (isinstance(out, np.ndarray) and out.dtype == np.uint64 and out.shape == shape
              and out.flags.c_contiguous and out.flags.writeable):
        raise ConfigError(f"out must be a writable C-contiguous uint64 array of shape {shape}")
    threads = 0 if threads is None else threads
    if not isinstance(threads, int) or isinstance(threads, bool) or not 0 <= threads <= 256:
        raise ConfigError(f"threads must be an integer in 0..256 (0 = all CPUs), not {threads!r}")
    backend = get_backend() if backend is None else _check_backend(backend)
    if backend != "numpy":
        _ext.window_words(maps.reshape(b * hp, r), out, hp, k, s, c, ho, wo, threads)
        return out
    off = np.arange(wo) * (s * c)
    sh = (off % WORD_BITS).astype(np.uint64)[None, None, :, None, None]
    rows = np.arange(ho)[:, None] * s + np.arange(k)[None, :]  # [ho, k]
    cols = (off // WORD_BITS)[:, None] + np.arange(wr + 1)[None, :]  # [wo, wr + 1]
    g = maps[:, rows[:, None, :, None], cols[None, :, None, :]]  # [b, ho, wo, k, wr + 1]
    # funnel shift: bits sh.. of word i, then bits 0..sh-1 of word i+1 (two shifts: sh may be 0)
    w = (g[..., :wr] >> sh) | ((g[..., 1:] << np.uint64(1)) << (np.uint64(WORD_BITS - 1) - sh))
    if (k * c) % WORD_BITS:
        w[..., -1] &= np.uint64((1 << ((k * c) % WORD_BITS)) - 1)
    out[...] = w.reshape(shape)
    return out
