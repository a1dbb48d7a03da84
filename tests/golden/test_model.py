"""model.py: model file v1 round trips, and every malformed file gives one clear error."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from bitswarm.golden import (
    ConfigError,
    FlipRuleConfig,
    LayerConfig,
    LFSRConfig,
    Model,
    ModelConfig,
    ModelFileError,
    load_model,
    model_to_bytes,
    save_model,
)
from bitswarm.golden.files import seal_header
from bitswarm.golden.model import DIGEST_KEY, FORMAT, _tensors_of, model_from_bytes
from safetensors.numpy import save


def _model(swarm=4, state=False, ternary=False):
    cfg = ModelConfig.mlp([64, 24, 10], input_shape=(8, 8), swarm=swarm,
                          flip=FlipRuleConfig(acc_width=10, leak_shift=3, threshold=20,
                                              refractory=-5, noise="additive",
                                              lfsr=LFSRConfig(20, 12345, 3)),
                          meta={"dataset": "digits"})
    if ternary:
        lays = list(cfg.layers)
        lays[0] = LayerConfig(n_in=64, n_out=24, swarm=1, input_bits=8, weights="ternary")
        cfg = ModelConfig(input_shape=(8, 8), layers=tuple(lays), flip=cfg.flip)
    m = Model.random(cfg, 3)
    g = torch.Generator().manual_seed(4)
    m.theta = [torch.randint(-lay.theta_bound, lay.theta_bound + 1, (lay.n_out,), generator=g,
                             dtype=torch.int32) for lay in cfg.layers]
    m.invert[0] = torch.randint(0, 2, (cfg.layers[0].n_out,), generator=g, dtype=torch.uint8)
    if state:
        f = cfg.flip
        m.acc = [torch.randint(f.acc_min, f.acc_max + 1, tuple(w.shape), generator=g, dtype=torch.int32)
                 for w in m.weights]
        m.lfsr_state = 4242
    m.validate()
    return m


@pytest.mark.parametrize("swarm, state, ternary", [(1, False, False), (4, True, False), (32, False, False), (1, True, True)])
def test_round_trip_bit_identical(tmp_path, swarm, state, ternary):
    m = _model(swarm, state, ternary)
    p = tmp_path / "m.bsm"
    save_model(m, p)
    m2 = load_model(p)
    assert m.equal(m2)
    assert model_to_bytes(m2) == p.read_bytes()  # deterministic bytes
    x = torch.randint(0, 256, (20, 8, 8), dtype=torch.uint8)
    assert torch.equal(m.forward(x), m2.forward(x))


def test_forward_trace_and_quantization():
    m = _model()
    x = torch.randint(0, 256, (5, 8, 8), dtype=torch.uint8)
    trace = []
    s = m.forward(x, trace=trace)
    assert len(trace) == 2 and trace[0].dtype == torch.uint8 and torch.equal(trace[1], s)
    assert m.predict(x).tolist() == [row.index(max(row)) for row in s.tolist()]
    with pytest.raises(ConfigError, match="uint8 pixels"):
        m.forward(x.to(torch.int32))
    with pytest.raises(ConfigError, match="shape \\[batch, 8, 8\\]"):
        m.forward(torch.zeros(2, 9, 9, dtype=torch.uint8))


# -- malformed files --------------------------------------------------------------------------


def _write(tmp_path, tensors, header, name="bad.bsm"):
    p = tmp_path / name
    # dict headers are sealed (digest over header + tensors) so the loader reaches the
    # semantic checks these cases are about; a str header is written raw.
    meta = {"bitswarm": header if isinstance(header, str) else seal_header(FORMAT, header, tensors)}
    p.write_bytes(save(tensors, metadata=meta))
    return p


def _good_parts():
    m = _model(4, state=True)
    header = json.loads(json.loads(model_to_bytes(m)[8:8 + int.from_bytes(model_to_bytes(m)[:8], "little")])["__metadata__"]["bitswarm"])
    del header[DIGEST_KEY]
    return _tensors_of(m), header


def _mutations():
    out = {}
    t, h = _good_parts()
    out["wrong version"] = (t, {**h, "version": 3}, "unsupported model file version 3")
    out["v2 without conv"] = (t, {**h, "version": 2}, "a version-2 file must have convolutional")
    out["wrong format"] = (t, {**h, "format": "onnx"}, "format must be 'bitswarm-model'")
    h2 = json.loads(json.dumps(h))
    del h2["config"]["layers"][0]["swarm"]
    out["missing config field"] = (t, h2, "invalid config: layer: missing field\\(s\\) \\['swarm'\\]")
    h3 = {k: v for k, v in h.items() if k != "lfsr_state"}
    out["missing header field"] = (t, h3, "header field 'lfsr_state' is missing")
    h4 = json.loads(json.dumps(h))
    h4["config"]["flip"]["threshold"] = 10**6
    out["impossible parameter"] = (t, h4, "invalid config: flip.threshold must be in 1..511")
    h5 = json.loads(json.dumps(h))
    h5["config"]["layers"][1]["n_in"] = 25
    out["inconsistent arch"] = (t, h5, "layer 0 gives 24 outputs but layer 1 takes 25")
    t2 = dict(t)
    t2["layers.0.weight"] = t["layers.0.weight"][:, :, :1].copy()
    t2["layers.0.weight"] = np.zeros((4, 24, 2), dtype=np.uint64)
    out["wrong shape"] = (t2, h, "tensor 'layers.0.weight' must have shape \\[4, 24, 1\\], found \\[4, 24, 2\\]")
    t3 = dict(t)
    t3["layers.1.theta"] = t["layers.1.theta"].astype(np.int64)
    out["wrong dtype"] = (t3, h, "tensor 'layers.1.theta' must be int32, found int64")
    t4 = {k: v for k, v in t.items() if k != "layers.1.invert"}
    out["missing tensor"] = (t4, h, "missing tensor 'layers.1.invert'")
    t5 = {**t, "layers.9.weight": np.zeros(1, dtype=np.uint64)}
    out["extra tensor"] = (t5, h, "unexpected tensor\\(s\\) \\['layers.9.weight'\\]")
    t6 = dict(t)
    t6["layers.1.weight"] = t["layers.1.weight"] | np.uint64(1 << 40)  # N=24: bit 40 is padding
    out["padding bits"] = (t6, h, "nonzero padding bits")
    t7 = dict(t)
    t7["layers.0.acc"] = np.full_like(t["layers.0.acc"], 600)
    out["acc out of width"] = (t7, h, "layer 0 acc must lie in -512..511")
    t8 = dict(t)
    t8["layers.0.invert"] = np.full_like(t["layers.0.invert"], 2)
    out["invert not a bit"] = (t8, h, "layer 0 invert must be uint8 0/1")
    t9 = dict(t)
    t9["layers.0.theta"] = np.full_like(t["layers.0.theta"], 10**8)
    out["theta out of range"] = (t9, h, "layer 0 theta must lie in")
    out["lfsr state zero"] = (t, {**h, "lfsr_state": 0}, "lfsr_state must be in 1..1048575")
    out["header not json"] = (t, "{not json", "header is not valid JSON")
    out["has_state wrong type"] = (t, {**h, "has_state": "yes"}, "'has_state' must be true or false")
    return out


MUTATIONS = _mutations()


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_malformed_file_clear_error(tmp_path, name):
    tensors, header, msg = MUTATIONS[name]
    p = _write(tmp_path, tensors, header)
    with pytest.raises(ModelFileError, match=msg) as e:
        load_model(p)
    assert "\n" not in str(e.value)


def test_truncated_and_random_bytes(tmp_path):
    good = model_to_bytes(_model(4, state=True))
    rng = np.random.default_rng(0)
    cases = [good[:n] for n in (0, 5, 8, 20, 100, len(good) // 2, len(good) - 1)]
    cases += [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (1, 9, 64, 4096)]
    cases += [b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"{" * 16 + b"\x00" * 8]
    flipped = bytearray(good)
    flipped[12] ^= 0xFF
    cases.append(bytes(flipped))
    for i, data in enumerate(cases):
        p = tmp_path / f"c{i}.bsm"
        p.write_bytes(data)
        with pytest.raises(ModelFileError) as e:
            load_model(p)
        assert "\n" not in str(e.value)


# -- integrity (SPEC §10): every corruption is one error naming the file --------------------


def _tiny_file() -> bytes:
    cfg = ModelConfig.mlp([16, 8, 4], input_shape=(4, 4), swarm=2)
    m = Model.random(cfg, seed=3)
    m.theta[0] = torch.arange(8, dtype=torch.int32) - 4
    return model_to_bytes(m)


def test_every_single_bit_flip_rejected(tmp_path):
    """Every one of the file's bits flipped alone: the loader refuses it, naming the file."""
    good = _tiny_file()
    model_from_bytes(good)
    loaded = []
    for bit in range(len(good) * 8):
        c = bytearray(good)
        c[bit // 8] ^= 1 << (bit % 8)
        try:
            model_from_bytes(bytes(c), "f.bsm")
            loaded.append(bit)
        except ModelFileError as e:
            assert str(e).startswith("f.bsm") and "\n" not in str(e)
    assert loaded == []


def test_random_flips_of_a_trained_size_file_rejected(tmp_path):
    good = model_to_bytes(_model(4, state=True))
    rng = np.random.default_rng(7)
    for bit in rng.integers(0, len(good) * 8, 20):
        c = bytearray(good)
        c[bit // 8] ^= 1 << (bit % 8)
        p = tmp_path / "c.bsm"
        p.write_bytes(bytes(c))
        with pytest.raises(ModelFileError, match=str(p)):
            load_model(p)


def _header_and_tensors(data: bytes):
    from safetensors.numpy import load

    n = int.from_bytes(data[:8], "little")
    return json.loads(json.loads(data[8:8 + n])["__metadata__"]["bitswarm"]), load(data)


def test_edited_header_and_truncated_tensor_rejected(tmp_path):
    h, t = _header_and_tensors(model_to_bytes(_model(4, state=True)))
    edited = json.loads(json.dumps(h))
    edited["config"]["flip"]["threshold"] = 19  # a legal value, but not the one sealed
    p = _write(tmp_path, t, json.dumps(edited, sort_keys=True))
    with pytest.raises(ModelFileError, match="integrity check failed"):
        load_model(p)
    # the same content in a different (non-canonical) JSON spelling is refused too
    p = _write(tmp_path, t, json.dumps(h, indent=1))
    with pytest.raises(ModelFileError, match="integrity check failed"):
        load_model(p)
    short = {**t, "layers.1.theta": t["layers.1.theta"][:-1]}
    p = _write(tmp_path, short, json.dumps(h, sort_keys=True))
    with pytest.raises(ModelFileError, match="integrity check failed"):
        load_model(p)
    # a flipped field name ("sha256" -> "sha2w6") is an unknown field, not an old file
    bad = {("sha2w6" if k == DIGEST_KEY else k): v for k, v in h.items()}
    p = _write(tmp_path, t, json.dumps(bad, sort_keys=True))
    with pytest.raises(ModelFileError, match="unknown header field"):
        load_model(p)


def test_file_without_digest_loads_with_one_notice(tmp_path, capfd):
    m = _model(4, state=True)
    h, t = _header_and_tensors(model_to_bytes(m))
    del h[DIGEST_KEY]
    p = tmp_path / "old.bsm"
    p.write_bytes(save(t, metadata={"bitswarm": json.dumps(h, sort_keys=True)}))
    assert load_model(p).equal(m)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bitswarm: notice:") and str(p) in err[0]


def test_checkpoint_is_not_a_model(tmp_path):
    p = tmp_path / "last.ckpt"
    p.write_bytes(save({"x": np.zeros(1, dtype=np.uint8)},
                       metadata={"bitswarm-checkpoint": "{}"}))
    with pytest.raises(ModelFileError, match="is a training checkpoint, not a model file"):
        load_model(p)


def test_not_a_bitswarm_safetensors(tmp_path):
    p = tmp_path / "plain.safetensors"
    p.write_bytes(save({"x": np.zeros(3, dtype=np.float32)}))
    with pytest.raises(ModelFileError, match="no 'bitswarm' header"):
        load_model(p)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "nope.bsm")


def test_save_invalid_model_overwrites_nothing(tmp_path):
    p = tmp_path / "m.bsm"
    save_model(_model(), p)
    before = p.read_bytes()
    bad = _model()
    bad.theta[0] = bad.theta[0].to(torch.int64)
    with pytest.raises(ConfigError, match="theta must be int32"):
        save_model(bad, p)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.bsm"]  # no temp file left behind


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "m.bsm"
    save_model(_model(), p)
    before = p.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        save_model(_model(swarm=1), p)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.bsm"]


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"input_shape": (8, 8), "layers": ()}, "non-empty list of layer configs"),
        ({"input_shape": (7,), "layers": (LayerConfig(8, 2, output=True),)}, "has 7 values but layer 0 takes 8"),
        ({"input_shape": (), "layers": (LayerConfig(8, 2, output=True),)}, "input_shape must be"),
        ({"input_shape": (8,), "layers": (LayerConfig(8, 2),)}, "exactly the last layer"),
        ({"input_shape": (8,), "layers": (LayerConfig(8, 1, output=True),)}, "at least 2 classes"),
        ({"input_shape": (8,), "layers": (LayerConfig(8, 4), LayerConfig(4, 2, input_bits=8, output=True))},
         "layer 1 takes activation bits"),
        ({"input_shape": (8,), "layers": (LayerConfig(8, 2, output=True),), "meta": {"a": 1}}, "meta must map strings"),
    ],
)
def test_model_config_wrong(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        ModelConfig(**kwargs)


def test_model_config_round_trip():
    cfg = _model().cfg
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# -- the command line: one line, non-zero exit, no traceback ------------------------------


def _bitswarm(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bitswarm", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_cli_help_lists_subcommands():
    r = _bitswarm("--help")
    assert r.returncode == 0
    for cmd in ("selfcheck", "summary", "demo"):
        assert cmd in r.stdout


@pytest.mark.parametrize("name", ["wrong version", "wrong shape", "missing tensor", "header not json"])
def test_cli_malformed_model_one_line_error(tmp_path, name):
    tensors, header, msg = MUTATIONS[name]
    p = _write(tmp_path, tensors, header)
    r = _bitswarm("summary", str(p))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bitswarm: error: ")


def test_cli_random_bytes_and_missing_file(tmp_path):
    p = tmp_path / "junk.bsm"
    p.write_bytes(os.urandom(300))
    for target in (p, tmp_path / "missing.bsm"):
        r = _bitswarm("summary", str(target))
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_cli_summary_and_selfcheck(tmp_path):
    p = tmp_path / "m.bsm"
    save_model(_model(4, state=True), p)
    r = _bitswarm("summary", str(p), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["total"]["weight_bits"] == 4 * (64 * 24 + 24 * 10)
    r = _bitswarm("selfcheck", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True


def test_files_get_the_umask_mode(tmp_path):
    """mkstemp alone makes 0600; a model file must be readable like any other output."""
    old = os.umask(0o022)
    try:
        save_model(_model(), tmp_path / "m.bsm")
        os.umask(0o027)
        save_model(_model(), tmp_path / "g.bsm")
    finally:
        os.umask(old)
    assert (tmp_path / "m.bsm").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "g.bsm").stat().st_mode & 0o777 == 0o640
