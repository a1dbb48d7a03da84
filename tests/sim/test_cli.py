"""``bitswarm sim`` for debugging: which test images mismatch, the first differing score, the
real image index in ``--trace``, waveforms (``--waves``), the build cache (``--build-dir``,
``$BITSWARM_BUILD_DIR``, ``bitswarm clean``) and the progress line of a Verilator build.

The broken backends are made here, in the test (a virtual accelerator built from a model with
flipped weights, or scores corrupted after the fact); nothing in ``sim/`` knows about them.
"""

import json
import re

import numpy as np
import pytest
import torch
from bitswarm.cli import main
from bitswarm.golden import Model, ModelConfig, save_model
from bitswarm.sim import driver
from bitswarm.sim.bulk import _has_lz4
from bitswarm.sim.driver import MAX_LISTED, VirtualBackend, first_difference
from bitswarm.sim.virtual import VirtualAccelerator

from tests.hw.test_accel import _random_model

ARCH = [16, 8, 4]


def _setup(tmp_path, n=40, seed=3):
    """A small model and an npz data set (its test split is used) of ``n`` 16-pixel images;
    the first image is one that :func:`_broken` gets right, so a position and an index differ."""
    m = _random_model(ARCH, 1, 8, seed=seed)
    save_model(m, tmp_path / "m.bsm")
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, ARCH[0]), dtype=np.uint8)
    ok = np.all(m.forward(torch.from_numpy(x)).numpy()
                == _broken(m).forward(torch.from_numpy(x)).numpy(), axis=1)
    first_ok = int(np.argmax(ok))
    x[[0, first_ok]] = x[[first_ok, 0]]
    y = rng.integers(0, ARCH[-1], n)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x, y_test=y)
    return m, x


def _sim(tmp_path, capsys, *extra):
    rc = main(["sim", str(tmp_path / "m.bsm"), "--dataset", f"npz:{tmp_path / 'd.npz'}", *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _broken(m):
    """A copy of ``m`` with output neuron 2's weights flipped on two inputs: its score changes
    on the images where those two hidden bits do not cancel out."""
    b = Model(m.cfg, [w.clone() for w in m.weights], list(m.theta), list(m.invert))
    b.weights[-1][:, 2, :2] ^= 1
    return b


@pytest.fixture
def broken_virtual(monkeypatch):
    """The virtual backend runs a broken model; golden stays the real one."""
    orig = VirtualBackend.__init__

    def init(self, model, plan=None, threads=None):
        orig(self, model, plan, threads)
        self.va = VirtualAccelerator(_broken(model), threads=threads)

    monkeypatch.setattr(VirtualBackend, "__init__", init)


def test_first_difference():
    g = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    s = g.copy()
    assert first_difference(g, s, [2, 2, 2], [2, 2, 2]) is None
    s[1, 2] = 0
    s[2, 0] = 0
    assert first_difference(g, s, [2, 2, 2], [2, 2, 2], image_ids=[10, 11, 12]) == {
        "image": 11, "kind": "score", "class": 2, "golden": 6, "backend": 0}
    assert first_difference(g, g, [2, 2, 2], [2, 1, 2]) == {
        "image": 1, "kind": "class", "golden": 2, "backend": 1}


def test_sim_json_lists_mismatching_images(tmp_path, capsys, broken_virtual):
    m, x = _setup(tmp_path)
    gold = m.forward(torch.from_numpy(x)).numpy()
    bad = _broken(m).forward(torch.from_numpy(x)).numpy()
    want = np.nonzero(np.any(gold != bad, axis=1))[0]
    assert 0 < len(want) < len(x) and want[0] > 0  # the case shows an index, not a position
    rc, out, _ = _sim(tmp_path, capsys, "--json")
    d = json.loads(out)
    assert rc == 1 and d["mismatches"] == len(want)
    assert d["mismatched_images"] == want[:MAX_LISTED].tolist()
    i = int(want[0])
    assert d["first_difference"] == {"image": i, "kind": "score", "class": 2,
                                     "golden": int(gold[i, 2]), "backend": int(bad[i, 2])}
    rc, out, _ = _sim(tmp_path, capsys)  # the text report names them too
    assert rc == 1 and f"mismatched test images: {i}, " in out
    assert f"first difference: image {i}, score of class 2 is {int(bad[i, 2])}" in out


def test_sim_json_caps_the_list_and_sees_class_only_errors(tmp_path, capsys, monkeypatch):
    _setup(tmp_path, n=30)
    orig = VirtualBackend.infer

    def infer(self, images):  # every predicted class wrong, scores untouched
        r = orig(self, images)
        r.classes = (r.classes + 1) % ARCH[-1]
        return r

    monkeypatch.setattr(VirtualBackend, "infer", infer)
    rc, out, _ = _sim(tmp_path, capsys, "--json")
    d = json.loads(out)
    assert rc == 1 and d["mismatches"] == 30
    assert d["mismatched_images"] == list(range(MAX_LISTED))
    assert d["first_difference"]["image"] == 0 and d["first_difference"]["kind"] == "class"


def test_sim_clean_run_reports_no_difference(tmp_path, capsys):
    _setup(tmp_path)
    rc, out, _ = _sim(tmp_path, capsys, "--json")
    d = json.loads(out)
    assert rc == 0 and d["mismatches"] == 0
    assert d["mismatched_images"] == [] and d["first_difference"] is None


def test_sim_trace_names_the_test_image_index(tmp_path, capsys, broken_virtual):
    m, x = _setup(tmp_path)
    gold = m.forward(torch.from_numpy(x)).numpy()
    bad = _broken(m).forward(torch.from_numpy(x)).numpy()
    first = int(np.nonzero(np.any(gold != bad, axis=1))[0][0])
    assert first > 0
    rc, out, _ = _sim(tmp_path, capsys, "--json", "--trace")
    d = json.loads(out)
    assert rc == 1
    assert d["first_mismatch"].startswith(f"layer 1, image {first}, neuron 2: score is "), d


def test_driver_first_mismatch_maps_rows_to_images():
    g = [np.zeros((2, 3), dtype=np.int64)]
    o = [np.array([[0, 0, 0], [0, 5, 0]])]
    assert driver.first_mismatch(g, o).startswith("layer 0, image 1, neuron 1")
    assert driver.first_mismatch(g, o, image_ids=[17, 42]).startswith("layer 0, image 42, neuron 1")


# -- convolutional models ---------------------------------------------------------------

CNN = "1x8x8-c16k3p1-mp2-c32k3p1-mp2-10"


def _digits_cnn(tmp_path):
    """A digits CNN with trained-like thresholds (tests/sim/test_virtual_conv.py), saved."""
    from bitswarm.train.data import load_dataset

    from tests.sim.test_virtual_conv import _balanced

    ds = load_dataset("digits")
    cfg = ModelConfig.from_arch(CNN, swarm=2, input_bits=8)
    m = _balanced(Model.random(cfg, 21), torch.from_numpy(ds.x_train[:400]), 21)
    save_model(m, tmp_path / "cnn.bsm")
    return m, ds


def _sim_digits(path, capsys, *extra):
    rc = main(["sim", str(path), "--dataset", "digits", *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_sim_digits_cnn_virtual_json(tmp_path, capsys):
    """A conv model on the whole digits test split: 0 mismatches, the JSON fields of an MLP."""
    m, ds = _digits_cnn(tmp_path)
    mlp = Model.random(ModelConfig.mlp([64, 16, 10], input_shape=(8, 8)), 0)
    save_model(mlp, tmp_path / "mlp.bsm")
    rc, out, _ = _sim_digits(tmp_path / "cnn.bsm", capsys, "--backend", "virtual", "--json")
    d = json.loads(out)
    assert rc == 0 and d["mismatches"] == 0 and d["n"] == len(ds.y_test)
    assert d["mismatched_images"] == [] and d["first_difference"] is None
    x = torch.from_numpy(ds.x_test.reshape(-1, 1, 8, 8))
    assert d["accuracy"] == float((m.predict(x).numpy() == ds.y_test).mean())
    rc, out, _ = _sim_digits(tmp_path / "mlp.bsm", capsys, "--json")
    assert rc == 0 and set(json.loads(out)) == set(d)


def test_sim_trace_names_conv_layer_channel_and_pixel(tmp_path, capsys, monkeypatch):
    """A corrupted virtual conv layer (every weight bit of filter 5 of the second convolution
    flipped in the packed operand): --trace names layer 1, the first traced image that differs
    there, channel 5 and the pixel of the first differing bit (flat HWC (y*W + x)*C + c)."""
    m, ds = _digits_cnn(tmp_path)
    orig = VirtualBackend.__init__

    def init(self, model, plan=None, threads=None):
        orig(self, model, plan, threads)
        lay = self.va.layers[1]
        lay.weights[5] ^= np.tile(lay.valid, lay.cfg.swarm)

    monkeypatch.setattr(VirtualBackend, "__init__", init)
    rc, out, _ = _sim_digits(tmp_path / "cnn.bsm", capsys, "--json", "--trace")
    d = json.loads(out)
    assert rc == 1 and d["mismatches"] > 0
    # where it must be, found here from the two traces of the images the CLI traces
    x = ds.x_test.reshape(-1, 1, 8, 8)
    backend = VirtualBackend(m)
    bad = np.nonzero(np.any(backend.infer(x).scores != m.forward(torch.from_numpy(x)).numpy(),
                            axis=1))[0][:8]
    gt: list = []
    m.forward(torch.from_numpy(x[bad]), trace=gt)
    vt = backend.trace(x[bad])
    np.testing.assert_array_equal(vt[0], gt[0].numpy())  # layer 0 is intact
    k, j = (int(v) for v in np.argwhere(vt[1] != gt[1].numpy())[0])
    geo = m.cfg.layers[1].conv
    f, wq = m.cfg.layers[1].n_out, geo.pooled_width
    y, xx, c = j // (wq * f), (j // f) % wq, j % f
    assert c == 5 and (y * wq + xx) * f + c == j
    assert d["first_mismatch"].startswith(
        f"layer 1 (conv, 2x2x32 map), image {int(bad[k])}, channel 5, pixel (y={y}, x={xx}): "
        f"activation bit is {int(vt[1][k, j])}, golden {int(gt[1][k, j])} ("), d["first_mismatch"]


@pytest.mark.verilator
def test_sim_digits_cnn_verilator_json(tmp_path, capsys):
    """The same conv model on Verilator through the CLI: 0 mismatches, the virtual run's fields
    (plus the simulator's speed)."""
    _digits_cnn(tmp_path)
    rc, out, _ = _sim_digits(tmp_path / "cnn.bsm", capsys, "--backend", "verilator", "--json",
                             "--limit", "40", "--build-dir", str(tmp_path / "b"))
    d = json.loads(out)
    assert rc == 0 and d["mismatches"] == 0 and d["n"] == 40 and d["backend"] == "verilator"
    rc, out, _ = _sim_digits(tmp_path / "cnn.bsm", capsys, "--json", "--limit", "40")
    assert set(json.loads(out)) <= set(d)


@pytest.mark.parametrize("args, msg", [
    (["--waves", "w.vcd"], "--waves needs --backend verilator"),
    (["--backend", "verilator", "--waves", "w.txt"], "--waves file must end in .vcd or .fst"),
    (["--backend", "verilator", "--waves", "nodir/w.vcd"], "--waves: no folder nodir"),
])
def test_sim_waves_errors(tmp_path, capsys, monkeypatch, args, msg):
    _setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    rc, out, err = _sim(tmp_path, capsys, *args)
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1 and lines[0].startswith("bitswarm: error: ")
    assert msg in lines[0]


@pytest.mark.verilator
def test_sim_waves_build_dir_progress_and_log(tmp_path, capsys):
    """One build: the progress line on stderr, build.log with the tools' output, the build in
    --build-dir (nothing in ./sim_build), a VCD of 2 images, and no overwrite without
    --overwrite."""
    _setup(tmp_path)
    wav, bd = tmp_path / "w.vcd", tmp_path / "bd"
    args = ["--backend", "verilator", "--limit", "2", "--build-dir", str(bd), "--waves", str(wav)]
    rc, out, err = _sim(tmp_path, capsys, *args, "--json")
    assert rc == 0, err
    assert re.search(r"bitswarm: building Verilator model with VCD tracing in \S+ "
                     r"\(once per design, ~15-60 s\)\.\.\. done in \d+\.\d s", err), err
    d = json.loads(out)
    assert d["n"] == 2 and d["mismatches"] == 0 and d["waves"] == str(wav)
    (build,) = [p for p in bd.iterdir()]
    assert build.name.startswith("bulk_") and (build / "Vtop").exists()
    assert "verilator" in (build / "build.log").read_text()
    assert not (build / "obj").exists()  # object files are dropped once linked
    text = wav.read_text()
    assert text.startswith("$version") and "o_stream__valid" in text and "#" in text
    size = wav.stat().st_size
    rc, out, err = _sim(tmp_path, capsys, *args)
    assert rc == 2 and err.strip() == f"bitswarm: error: {wav} exists; pass --overwrite to replace it"
    assert wav.stat().st_size == size
    rc, out, err = _sim(tmp_path, capsys, *args, "--overwrite", "--limit", "1")
    assert rc == 0 and "building" not in err  # the cached build
    assert 0 < wav.stat().st_size < size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".w.")]  # no temp file left


@pytest.mark.verilator
def test_sim_waves_fst(tmp_path, capsys):
    """FST where the LZ4 headers are installed, else one error line suggesting VCD."""
    _setup(tmp_path)
    wav = tmp_path / "w.fst"
    rc, out, err = _sim(tmp_path, capsys, "--backend", "verilator", "--limit", "2", "--build-dir",
                        str(tmp_path / "bd"), "--waves", str(wav))
    if _has_lz4():
        assert rc == 0, err
        data = wav.read_bytes()  # an FST header block: type 0, length 329 (big-endian)
        assert len(data) > 329 and data[0] == 0 and int.from_bytes(data[1:9], "big") == 329
    else:
        assert rc == 2 and "write a .vcd file instead" in err and len(err.strip().splitlines()) == 1
        assert not wav.exists()


def test_build_dir_must_be_a_folder(tmp_path, capsys, monkeypatch):
    _setup(tmp_path)
    (tmp_path / "f").write_text("")
    rc, _, err = _sim(tmp_path, capsys, "--backend", "verilator", "--build-dir", str(tmp_path / "f"))
    assert rc == 2 and err.strip() == f"bitswarm: error: --build-dir {tmp_path / 'f'} exists and is not a folder"
    monkeypatch.setenv("BITSWARM_BUILD_DIR", str(tmp_path / "f"))
    assert main(["clean"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"bitswarm: error: $BITSWARM_BUILD_DIR {tmp_path / 'f'} exists and is not a folder")


def test_clean_command(tmp_path, capsys):
    bd = tmp_path / "bd"
    for name in ("bulk_0123456789abcdef", "mac_array"):
        (bd / name).mkdir(parents=True)
        (bd / name / ".bitswarm-build").touch()
    (bd / "mine").mkdir()  # not made by bitswarm: kept
    assert main(["clean", "--build-dir", str(bd)]) == 0
    assert "removed 2 build folder(s)" in capsys.readouterr().err
    assert [p.name for p in bd.iterdir()] == ["mine"]
    (bd / "mine").rmdir()
    assert main(["clean", "--build-dir", str(bd)]) == 0
    assert not bd.exists()  # an empty cache folder goes too
