"""Tests of train/data.py: loaders, fixed splits, npz and IDX validation."""

import gzip

import numpy as np
import pytest
from bitswarm.golden.errors import BitswarmError
from bitswarm.train.data import DataError, digits_to_uint8, load_dataset, read_idx


def test_digits_shapes_and_split():
    d = load_dataset("digits")
    assert d.x_train.shape == (1437, 8, 8) and d.x_test.shape == (360, 8, 8)
    assert d.x_train.dtype == np.uint8 and d.y_train.dtype == np.int64
    assert d.classes == 10 and d.input_shape == (8, 8) and d.n_inputs == 64
    assert d.x_train.max() == 255 and d.x_train.min() == 0
    d2 = load_dataset("digits")  # fixed split: the same every time
    assert np.array_equal(d.x_test, d2.x_test) and np.array_equal(d.y_train, d2.y_train)


def test_digits_split_is_a_partition():
    from sklearn.datasets import load_digits

    raw = digits_to_uint8(load_digits().images).reshape(1797, -1)
    d = load_dataset("digits")
    both = np.concatenate([d.x_train, d.x_test]).reshape(1797, -1)
    key = lambda a: sorted(map(bytes, a))  # noqa: E731
    assert key(both) == key(raw)


def test_digits_scaling_exact():
    v = np.arange(17)
    u = digits_to_uint8(v)
    assert u[0] == 0 and u[16] == 255 and u.dtype == np.uint8
    assert np.all(np.diff(u.astype(int)) > 0)  # 17 distinct levels
    assert list(u) == [(k * 255 + 8) // 16 for k in range(17)]
    with pytest.raises(DataError, match="0..16"):
        digits_to_uint8(np.array([17]))


def test_mnist5k_stratified_split():
    d = load_dataset("mnist5k")
    assert d.x_train.shape == (4000, 28, 28) and d.x_test.shape == (1000, 28, 28)
    assert d.x_train.dtype == np.uint8
    assert np.bincount(d.y_test).tolist() == [100] * 10
    assert np.bincount(d.y_train).tolist() == [400] * 10


def test_fashion_absent_message(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist.*--data-dir"):
        load_dataset("fashion", data_dir=tmp_path)


def _write_idx(path, arr, compress):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    data = head + arr.tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_from_data_dir(tmp_path, compress):
    rng = np.random.default_rng(1)
    sfx = ".gz" if compress else ""
    for part, n in (("train", 12), ("t10k", 5)):
        _write_idx(tmp_path / f"{part}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, 28, 28)), compress)
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte{sfx}", np.arange(n) % 10, compress)
    d = load_dataset("fashion", data_dir=tmp_path)
    assert d.x_train.shape == (12, 28, 28) and d.x_test.shape == (5, 28, 28)
    assert d.y_test.tolist() == [0, 1, 2, 3, 4] and d.classes == 10


def test_read_idx_errors(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0\0\0\0")
    with pytest.raises(DataError, match="0x08"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9]) + b"\0" * 4)
    with pytest.raises(DataError, match="found 4"):
        read_idx(p)


def test_npz_with_and_without_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 4, 4), dtype=np.uint8)
    y = np.arange(50) % 3
    np.savez(tmp_path / "a.npz", x=x, y=y)
    d = load_dataset(f"npz:{tmp_path / 'a.npz'}")
    assert len(d.y_train) == 40 and len(d.y_test) == 10 and d.classes == 3
    assert d.input_shape == (4, 4)
    np.savez(tmp_path / "b.npz", x=x, y=y, x_test=x[:7], y_test=y[:7])
    d = load_dataset(f"npz:{tmp_path / 'b.npz'}")
    assert len(d.y_train) == 50 and len(d.y_test) == 7


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((4, 3), np.uint8)}, "missing array 'y'"),
        ({"x": np.zeros((4, 3), np.float32), "y": np.zeros(4, int)}, "x must be uint8"),
        ({"x": np.zeros((4, 3), np.uint8), "y": np.zeros(5, int)}, "4 samples but y has 5"),
        ({"x": np.zeros((4,), np.uint8), "y": np.zeros(4, int)}, r"shape \[n, \.\.\.\]"),
        ({"x": np.zeros((4, 3), np.uint8), "y": np.zeros(4, float)}, "1-D integer"),
        ({"x": np.zeros((4, 3), np.uint8), "y": -np.ones(4, int)}, ">= 0"),
        ({"x": np.zeros((4, 3), np.uint8), "y": np.zeros(4, int)}, "at least 2 classes"),
        ({"x": np.zeros((4, 3), np.uint8), "y": np.arange(4) % 2, "x_test": np.zeros((2, 3), np.uint8)},
         "come together"),
        ({"x": np.zeros((4, 3), np.uint8), "y": np.arange(4) % 2, "x_test": np.zeros((2, 5), np.uint8),
          "y_test": np.zeros(2, int)}, "samples have shape"),
    ],
)
def test_npz_errors(tmp_path, arrays, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(f"npz:{p}")


def test_npz_refuses_pickle(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([object()], dtype=object), y=np.zeros(1, int))
    with pytest.raises(DataError, match="object arrays are refused"):
        load_dataset(f"npz:{p}")


def test_npz_missing_or_garbage(tmp_path):
    with pytest.raises(DataError, match="no such npz file"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    (tmp_path / "g.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a"):
        load_dataset(f"npz:{tmp_path / 'g.npz'}")


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown data set 'cifar'"):
        load_dataset("cifar")
    assert issubclass(DataError, BitswarmError)
