"""sim/popcount.py and the compiled kernel sim/_popcount.c: every backend equals the definition."""

import importlib
import os
import sys
import time
import warnings

import numpy as np
import pytest
from bitswarm.golden import ConfigError, pack_bits, unpack_bits
from bitswarm.sim import popcount as pc
from bitswarm.sim.popcount import (
    BACKENDS,
    and_popcount,
    available_backends,
    use_backend,
    xnor_popcount,
)

BUILT = pc.cpu_info()["built"]


def _backend(name):
    if name not in available_backends():
        why = "extension not built" if not BUILT else "CPU lacks AVX-512F/AVX512_VPOPCNTDQ"
        pytest.skip(f"backend {name!r} unavailable: {why}")
    return name


@pytest.fixture(params=BACKENDS)
def backend(request):
    return _backend(request.param)


def _rows(rng, rows, n, dirty):
    """Random packed rows of n bits; with ``dirty`` the padding bits are random too."""
    bits = rng.integers(0, 2, (rows, n), dtype=np.uint8)
    words = pack_bits(bits)
    if dirty and n % 64:
        junk = rng.integers(0, 2**63, words.shape[0], dtype=np.uint64) << np.uint64(n % 64)
        words[:, -1] |= junk
    return bits, words


def _def_xnor(abits, wbits):
    """Definition: sum_k a±_k w±_k with plain integer arithmetic on unpacked bits."""
    return (2 * abits.astype(np.int64) - 1) @ (2 * wbits.astype(np.int64) - 1).T


def _def_and(abits, wbits):
    return abits.astype(np.int64) @ wbits.astype(np.int64).T


SHAPES = [  # (B, M, n): n < 64, n % 64 != 0, exact words, B = 1, M = 1, tile edges, large W
    (1, 1, 1),
    (1, 1, 64),
    (3, 5, 63),
    (4, 8, 64),
    (5, 9, 65),
    (7, 33, 127),
    (64, 32, 128),
    (65, 31, 200),
    (130, 100, 640),
    (66, 70, 1000),
    (2, 3, 65536),
    (9, 40, 4099),
]


@pytest.mark.parametrize("B,M,n", SHAPES)
@pytest.mark.parametrize("dirty", [False, True], ids=["clean", "dirty_padding"])
def test_xnor_equals_definition(backend, B, M, n, dirty):
    rng = np.random.default_rng(B * 1000003 + M * 101 + n)
    abits, a = _rows(rng, B, n, dirty)
    wbits, w = _rows(rng, M, n, dirty)
    got = xnor_popcount(a, w, n, backend=backend)
    assert got.dtype == np.int32 and got.shape == (B, M)
    np.testing.assert_array_equal(got, _def_xnor(abits, wbits))


@pytest.mark.parametrize("B,M,n", SHAPES)
@pytest.mark.parametrize("dirty", [False, True], ids=["clean", "dirty_padding"])
def test_and_equals_definition(backend, B, M, n, dirty):
    rng = np.random.default_rng(B * 7 + M * 1009 + n)
    abits, a = _rows(rng, B, n, dirty)
    wbits, w = _rows(rng, M, n, dirty)
    got = and_popcount(a, w, n, backend=backend)
    assert got.dtype == np.int32 and got.shape == (B, M)
    np.testing.assert_array_equal(got, _def_and(abits, wbits))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_agree(backend, threads):
    """Big enough (B*M*W >= 2**20 word pairs) that the compiled kernel runs in parallel."""
    rng = np.random.default_rng(threads)
    n = 2001
    _, a = _rows(rng, 203, n, True)
    _, w = _rows(rng, 301, n, True)
    assert a.shape[0] * w.shape[0] * a.shape[1] >= 1 << 20
    want = xnor_popcount(a, w, n, backend="numpy")
    np.testing.assert_array_equal(xnor_popcount(a, w, n, threads=threads, backend=backend), want)
    want = and_popcount(a, w, n, backend="numpy")
    np.testing.assert_array_equal(and_popcount(a, w, n, threads=threads, backend=backend), want)


@pytest.mark.parametrize("threads", [1, 2])
def test_new_weights_of_the_same_shape_each_call(backend, threads):
    """Calls with the same shapes and new weights each see their own weights (a thread keeps
    a tile's interleaved weights only within one call)."""
    rng = np.random.default_rng(9)
    abits, a = _rows(rng, 300, 700, False)
    for _ in range(4):
        wbits, w = _rows(rng, 70, 700, False)
        got = xnor_popcount(a, w, 700, threads=threads, backend=backend)
        np.testing.assert_array_equal(got, _def_xnor(abits, wbits))
        got = and_popcount(a, w, 700, threads=threads, backend=backend)
        np.testing.assert_array_equal(got, _def_and(abits, wbits))


def test_extremes(backend):
    """All-equal rows give +n, complementary rows -n; and-counts reach n and 0."""
    n = 130
    ones = pack_bits(np.ones((3, n), dtype=np.uint8))
    zeros = pack_bits(np.zeros((2, n), dtype=np.uint8))
    np.testing.assert_array_equal(xnor_popcount(ones, ones, n, backend=backend), n)
    np.testing.assert_array_equal(xnor_popcount(ones, zeros, n, backend=backend), -n)
    np.testing.assert_array_equal(and_popcount(ones, ones, n, backend=backend), n)
    np.testing.assert_array_equal(and_popcount(ones, zeros, n, backend=backend), 0)


def test_and_default_n_counts_every_bit(backend):
    rng = np.random.default_rng(5)
    a = rng.integers(0, 2**63, (6, 3), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    w = rng.integers(0, 2**63, (4, 3), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    want = _def_and(unpack_bits(a, 192), unpack_bits(w, 192))
    np.testing.assert_array_equal(and_popcount(a, w, backend=backend), want)


def test_empty_operands(backend):
    a = np.zeros((0, 2), dtype=np.uint64)
    w = np.zeros((3, 2), dtype=np.uint64)
    assert xnor_popcount(a, w, 100, backend=backend).shape == (0, 3)
    assert xnor_popcount(w, a, 100, backend=backend).shape == (3, 0)
    z = np.zeros((2, 0), dtype=np.uint64)
    np.testing.assert_array_equal(xnor_popcount(z, z, 0, backend=backend), np.zeros((2, 2)))


def test_out_argument(backend):
    rng = np.random.default_rng(9)
    _, a = _rows(rng, 5, 70, False)
    _, w = _rows(rng, 6, 70, False)
    out = np.full((5, 6), 12345, dtype=np.int32)
    assert xnor_popcount(a, w, 70, out=out, backend=backend) is out
    np.testing.assert_array_equal(out, xnor_popcount(a, w, 70, backend="numpy"))


def test_use_backend_restores():
    before = pc.get_backend()
    with use_backend("numpy") as name:
        assert name == "numpy" and pc.get_backend() == "numpy"
    assert pc.get_backend() == before
    assert pc.default_backend() == available_backends()[0]


# -- errors -------------------------------------------------------------------------------------

_A = np.zeros((3, 2), dtype=np.uint64)
_W = np.zeros((4, 2), dtype=np.uint64)


@pytest.mark.parametrize(
    "a,w,n,match",
    [
        (_A.astype(np.int64), _W, 100, "a_words must have dtype uint64, found int64"),
        (_A, _W.astype(np.uint32), 100, "w_words must have dtype uint64, found uint32"),
        (_A.tolist(), _W, 100, "a_words must be a numpy uint64 array, not list"),
        (_A[0], _W, 100, "a_words must be 2-dimensional"),
        (np.zeros((3, 4), dtype=np.uint64)[:, ::2], _W, 100, "a_words must be C-contiguous"),
        (np.asfortranarray(np.zeros((3, 2), dtype=np.uint64)), _W, 100, "C-contiguous"),
        (_A, np.zeros((4, 3), dtype=np.uint64), 100, "same words per row, found 2 and 3"),
        (_A, _W, 64, "n = 64 bits need 1 words, but rows have 2"),
        (_A, _W, 129, "n = 129 bits need 3 words"),
        (_A, _W, -1, "n = -1 bits"),
        (_A, _W, 100.0, "n must be an integer"),
    ],
)
@pytest.mark.parametrize("fn", [xnor_popcount, and_popcount])
def test_wrong_inputs(fn, a, w, n, match):
    with pytest.raises(ConfigError, match=match):
        fn(a, w, n)


def test_wrong_out_threads_backend():
    with pytest.raises(
        ConfigError, match=r"out must be a writable C-contiguous int32 array of shape \(3, 4\)"
    ):
        xnor_popcount(_A, _W, 100, out=np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(ConfigError, match="out must be"):
        xnor_popcount(_A, _W, 100, out=np.zeros((4, 3), dtype=np.int32))
    with pytest.raises(ConfigError, match="threads must be an integer in 0..256"):
        xnor_popcount(_A, _W, 100, threads=-1)
    with pytest.raises(ConfigError, match="popcount backend must be one of"):
        xnor_popcount(_A, _W, 100, backend="cuda")
    with pytest.raises(ConfigError, match="popcount backend must be one of"):
        pc.set_backend("fast")


def test_unavailable_backend_named():
    missing = [b for b in BACKENDS if b not in available_backends()]
    if not missing:
        pytest.skip("every backend is available on this machine")
    with pytest.raises(ConfigError, match="is not available"):
        xnor_popcount(_A, _W, 100, backend=missing[0])


def test_env_forces_backend(monkeypatch):
    """BITSWARM_POPCOUNT is read at import: reload the module under the variable, then restore."""
    try:
        monkeypatch.setenv("BITSWARM_POPCOUNT", "numpy")
        importlib.reload(pc)
        assert pc.get_backend() == "numpy"
        monkeypatch.setenv("BITSWARM_POPCOUNT", "gpu")
        with pytest.raises(ConfigError, match="popcount backend must be one of"):
            importlib.reload(pc)
    finally:
        monkeypatch.delenv("BITSWARM_POPCOUNT")
        importlib.reload(pc)
    assert pc.get_backend() == pc.default_backend()


# -- the raw extension checks its own arguments (no segfaults without the wrapper) --------------


@pytest.fixture
def ext():
    if not BUILT:
        pytest.skip("extension bitswarm.sim._popcount not built")
    from bitswarm.sim import _popcount

    return _popcount


@pytest.mark.parametrize("fname", ["xnor_popcount", "and_popcount"])
def test_ext_validates(ext, fname):
    f = getattr(ext, fname)
    out = np.zeros((3, 4), dtype=np.int32)
    f(_A, _W, out, 100)  # accepted
    with pytest.raises(TypeError, match="a must have dtype uint64"):
        f(_A.view(np.int64), _W, out, 100)
    with pytest.raises(TypeError, match="w must be a C-contiguous uint64 array"):
        f(_A, np.zeros((4, 4), dtype=np.uint64)[:, ::2], out, 100)
    with pytest.raises(TypeError, match="out must be a C-contiguous, writable int32 array"):
        ro = out.copy()
        ro.flags.writeable = False
        f(_A, _W, ro, 100)
    with pytest.raises(TypeError, match="out must have dtype int32"):
        f(_A, _W, out.astype(np.int64), 100)
    with pytest.raises(ValueError, match="must be 2-dimensional, found 1"):
        f(_A[0], _W, out, 100)
    with pytest.raises(ValueError, match="same number of words per row"):
        f(_A, np.zeros((4, 3), dtype=np.uint64), out, 100)
    with pytest.raises(ValueError, match=r"out must have shape \(3, 4\), found \(4, 3\)"):
        f(_A, _W, np.zeros((4, 3), dtype=np.int32), 100)
    with pytest.raises(ValueError, match="n must be a bit count that needs exactly 2 words"):
        f(_A, _W, out, 200)
    with pytest.raises(ValueError, match="path must be 0"):
        f(_A, _W, out, 100, 7)
    with pytest.raises(ValueError, match="threads must be in 0..256"):
        f(_A, _W, out, 100, 0, 1000)
    with pytest.raises(TypeError, match="a must have dtype uint64, found buffer format 'B'"):
        f(b"\x00" * 48, _W, out, 100)
    with pytest.raises(TypeError, match="a must be a C-contiguous uint64 array, found list"):
        f([[0, 0]], _W, out, 100)


def test_ext_cpu_info(ext):
    info = ext.cpu_info()
    assert set(info) == {"avx512", "popcnt", "threading", "cpus"}
    assert info["threading"] in ("openmp", "pthreads") and info["cpus"] >= 1
    flags = ""
    if sys.platform == "linux":
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    if "avx512_vpopcntdq" in flags and "avx512f" in flags:
        assert info["avx512"], "the CPU reports AVX512_VPOPCNTDQ but the kernel did not detect it"


# -- threads: concurrent callers and fork safety of the compiled kernel's thread pool ------------


def test_concurrent_callers(backend):
    """Python threads call the kernel at once (the GIL is released); every result is right."""
    import threading

    rng = np.random.default_rng(11)
    cases = []
    for i in range(4):
        _, a = _rows(rng, 300 + i, 2000, True)
        _, w = _rows(rng, 120 + 3 * i, 2000, True)
        cases.append((a, w, xnor_popcount(a, w, 2000, backend="numpy")))
    errors = []

    def run(a, w, want):
        for _ in range(5):
            if not np.array_equal(xnor_popcount(a, w, 2000, threads=2, backend=backend), want):
                errors.append("mismatch")

    ts = [threading.Thread(target=run, args=c) for c in cases]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kernel_works_after_fork(backend):
    """The helper threads do not survive fork(); the child must still compute (not hang)."""
    rng = np.random.default_rng(12)
    _, a = _rows(rng, 200, 2000, False)
    _, w = _rows(rng, 300, 2000, False)
    want = xnor_popcount(a, w, 2000, threads=2, backend=backend)  # the pool is running now
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (python >= 3.12)
        pid = os.fork()
    if pid == 0:  # child: exit status says whether it computed the same result
        ok = np.array_equal(xnor_popcount(a, w, 2000, threads=2, backend=backend), want)
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung in the kernel")


def test_without_extension_numpy_only(monkeypatch):
    """Where the extension is not built, numpy is the only backend and others say why."""
    monkeypatch.setattr(pc, "_ext", None)
    assert pc.available_backends() == ("numpy",)
    assert pc.cpu_info() == {"built": False}
    with pytest.raises(ConfigError, match="bitswarm.sim._popcount is not built"):
        xnor_popcount(_A, _W, 100, backend="portable")
    np.testing.assert_array_equal(xnor_popcount(_A, _W, 100, backend="numpy"), 100)
