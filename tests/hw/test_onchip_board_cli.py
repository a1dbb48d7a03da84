# amaranth: UnusedElaboratable=no
"""Training over the link from the command line and the host driver's flow control.

- :class:`TrainerDevice`, a device double of the TRAIN / READ / INFO protocol (the virtual
  trainer behind it; a slow device: a command is processed only when the host waits for its
  reply), checks that :class:`bitswarm.sim.hostlink.TrainerLink` never has more unanswered bytes
  in flight than the FIFO holds, and that it does pipeline (two TRAIN frames in flight);
- ``bitswarm run MODEL --port PTY --train --out T.bsm`` over a real pseudo-terminal: the saved
  model equals golden ``onchip_train``; existing output refused before the port is opened;
  wrong INFO, a bad port, a CNN, a model without on-chip constants: one error line each;
- ``bitswarm bitstream MODEL --board B --train``: refusals in one line, nothing written;
- ``bitswarm sim MODEL --train --out T.bsm``: the trained model saved atomically.
"""

import copy
import json
import os
import threading

import numpy as np
import torch
from bitswarm.cli import main
from bitswarm.golden import Model, ModelConfig
from bitswarm.golden.model import load_model, save_model
from bitswarm.golden.onchip import onchip_train
from bitswarm.hw.onchip import DBG_LFSR, DBG_ROW, DBG_THETA
from bitswarm.hw.onchip_board import (
    CMD_INFO,
    CMD_READ,
    CMD_TRAIN,
    READ_ARGS,
    REPLY_INFO,
    REPLY_READ,
    REPLY_TRAIN,
    UARTTrainer,
)
from bitswarm.sim.hostlink import TrainerLink
from bitswarm.sim.onchip import VirtualTrainer

from .test_onchip_board import trainer_case


class TrainerDevice:
    """The device end of the trainer protocol as a transport double (VirtualTrainer inside).

    Commands are parsed as bytes arrive but processed only when the host reads (a slow device),
    so the bytes of unprocessed commands are exactly what a real device's FIFO would hold; a
    write that would exceed ``fifo_depth`` fails the test."""

    def __init__(self, model: Model, *, info_model: Model | None = None, corrupt_every: int = 0):
        core = UARTTrainer(info_model or model, divisor=4)
        self.info, self.fold, self.dw = core.info, core.fold, core.trainer.dbg_width
        self.virt = VirtualTrainer(model)
        self.cfg = model.cfg
        self.buf = bytearray()
        self.queue: list[bytes] = []  # complete, unprocessed commands
        self.out = bytearray()
        self.samples = 0
        self.max_inflight = 0
        self.corrupt_every = corrupt_every

    def _inflight(self) -> int:
        return sum(map(len, self.queue)) + len(self.buf)

    def write(self, data) -> int:
        for b in bytes(data):
            if not self.buf and b not in (CMD_TRAIN, CMD_READ, CMD_INFO):
                continue  # ignored between commands
            self.buf.append(b)
            need = {CMD_TRAIN: 2 + self.cfg.layers[0].n_in, CMD_READ: 1 + READ_ARGS, CMD_INFO: 1}[self.buf[0]]
            if len(self.buf) == need:
                self.queue.append(bytes(self.buf))
                self.buf.clear()
            self.max_inflight = max(self.max_inflight, self._inflight())
            assert self._inflight() <= self.info.fifo_depth, "the host overfilled the FIFO"
        return len(data)

    def _process(self) -> None:
        cmd = self.queue.pop(0)
        if cmd[0] == CMD_TRAIN:
            pred, err = self.virt.train(np.frombuffer(cmd[2:], dtype=np.uint8)[None], [cmd[1]])
            self.samples += 1
            if self.corrupt_every and self.samples % self.corrupt_every == 0:
                err = 1 - err
            self.out += bytes([REPLY_TRAIN, int(pred[0]), int(err[0])])
        elif cmd[0] == CMD_INFO:
            info = type(self.info).from_bytes(self.info.to_bytes()[:-4] + self.samples.to_bytes(4, "little"))
            self.out += bytes([REPLY_INFO]) + info.to_bytes()
        else:
            kind, layer = cmd[1], cmd[2]
            row, word = int.from_bytes(cmd[3:5], "little"), int.from_bytes(cmd[5:7], "little")
            self.out += bytes([REPLY_READ]) + self._dbg(kind, layer, row, word).to_bytes(
                self.info.dbg_bytes, "little")

    def _dbg(self, kind, layer, row, word) -> int:
        """``dbg_data`` of the trainer's debug port for one query (the RTL's documented layout)."""
        m = self.virt.export()
        lay = self.cfg.layers[layer]
        if kind == DBG_LFSR:
            return int(m.lfsr_state)
        if kind == DBG_THETA:
            return int(m.theta[layer][row]) & ((1 << lay.z_width) - 1)
        assert kind == DBG_ROW
        a, sd = self.cfg.flip.acc_width, self.fold.simd(layer)
        s, j = divmod(row, lay.n_out)
        w = m.weights[layer][s, j, word * sd:(word + 1) * sd].tolist()
        acc = m.acc[layer][s, j, word * sd:(word + 1) * sd].tolist()
        v = sum(int(b) << k for k, b in enumerate(w))
        return v | sum((int(x) & ((1 << a) - 1)) << (sd + k * a) for k, x in enumerate(acc))

    def read(self, n) -> bytes:
        while len(self.out) < n and self.queue:
            self._process()
        r = bytes(self.out[:n])
        del self.out[:n]
        return r

    def reset_input_buffer(self) -> None:
        self.out.clear()


def test_link_pipelines_within_the_fifo():
    m, oc, xs, ys = trainer_case((16, 8, 4), 2, k=20)
    dev = TrainerDevice(m)
    link = TrainerLink(m, dev)
    link.identify()
    preds, errs = link.train(xs, ys)
    state = link.read_state()
    gm = copy.deepcopy(m)
    res = onchip_train(oc, gm, torch.from_numpy(xs), torch.from_numpy(ys))
    assert preds.tolist() == [r.pred for r in res] and state.equal(gm)
    assert errs.tolist() == [int(bool(r.errors[-1].any())) for r in res]
    frame = 2 + 16
    assert dev.max_inflight == 2 * frame == dev.info.fifo_depth  # two frames in flight, never more
    assert link.read_info().samples == 20


# -- bitswarm run --train over a pseudo-terminal ---------------------------------------------
class _PtyDevice(threading.Thread):
    """A :class:`TrainerDevice` on a pty master."""

    def __init__(self, fd, dev: TrainerDevice):
        super().__init__(daemon=True)
        self.fd, self.dev = fd, dev

    def run(self):
        try:
            while True:
                chunk = os.read(self.fd, 4096)
                if not chunk:
                    return
                self.dev.write(chunk)
                while self.dev.queue:
                    self.dev._process()
                if self.dev.out:
                    os.write(self.fd, bytes(self.dev.out))
                    self.dev.out.clear()
        except OSError:
            return


def _digits_model(seed=0):
    m, _, _, _ = trainer_case((64, 16, 10), 2, seed=seed)
    cfg = ModelConfig.mlp([64, 16, 10], input_shape=(8, 8), swarm=2, flip=m.cfg.flip, meta=m.cfg.meta)
    return Model(cfg, m.weights, m.theta, m.invert, m.acc, m.lfsr_state)


def _run_train(tmp_path, capsys, *argv, model=None, info_model=None, corrupt_every=0):
    import tty

    m = model or _digits_model()
    save_model(m, tmp_path / "m.bsm")
    master, slave = os.openpty()
    tty.setraw(slave)
    _PtyDevice(master, TrainerDevice(m, info_model=info_model, corrupt_every=corrupt_every)).start()
    try:
        rc = main(["run", str(tmp_path / "m.bsm"), "--port", os.ttyname(slave), "--train",
                   "--dataset", "digits", *argv])
    finally:
        os.close(slave)
        os.close(master)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err.strip().splitlines(), m


def test_run_train_over_pty(tmp_path, capsys):
    from bitswarm.train import load_dataset

    out = tmp_path / "t.bsm"
    rc, stdout, err, m = _run_train(tmp_path, capsys, "--limit", "12", "--out", str(out), "--json")
    rep = json.loads(stdout)
    assert rc == 0 and rep["samples"] == 12 and rep["mismatches"] == 0 and 0 <= rep["error_rate"] <= 1
    assert any("trained 12/12 samples" in ln for ln in err)  # progress on stderr
    ds = load_dataset("digits")
    gm = copy.deepcopy(m)
    oc = TrainerLink(m, None).config
    res = onchip_train(oc, gm, torch.from_numpy(ds.x_train[:12].reshape(12, -1)), torch.from_numpy(ds.y_train[:12]))
    assert load_model(out).equal(gm)
    assert rep["error_rate"] == round(np.mean([bool(r.errors[-1].any()) for r in res]), 4)
    # an existing output: refused in one line before the port is touched (a bogus port here)
    before = out.read_bytes()
    rc = main(["run", str(tmp_path / "m.bsm"), "--port", str(tmp_path / "nope"), "--train",
               "--out", str(out)])
    e = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(e) == 1 and "exists; pass --overwrite to replace it" in e[0]
    assert out.read_bytes() == before
    rc, stdout, err, _ = _run_train(tmp_path, capsys, "--limit", "5", "--out", str(out), "--overwrite",
                                    "--json")
    assert rc == 0 and json.loads(stdout)["samples"] == 5 and out.read_bytes() != before


def test_run_train_reports_mismatches(tmp_path, capsys):
    rc, stdout, _, _ = _run_train(tmp_path, capsys, "--limit", "8", "--out", str(tmp_path / "t.bsm"),
                                  "--json", corrupt_every=3)
    assert rc == 1 and json.loads(stdout)["mismatches"] == 2  # error flags of samples 3 and 6


def test_run_train_refusals(tmp_path, capsys):
    rc, _, err, _ = _run_train(tmp_path, capsys, "--limit", "4", "--out", str(tmp_path / "t.bsm"),
                               info_model=_digits_model(seed=9))
    assert rc == 2 and len(err) == 1 and "built from another model file" in err[0], err
    assert not (tmp_path / "t.bsm").exists()
    rc, _, err, _ = _run_train(tmp_path, capsys, "--limit", "4")
    assert rc == 2 and len(err) == 1 and "--train needs --out TRAINED.bsm" in err[0]
    save_model(_digits_model(), tmp_path / "m.bsm")
    cnn = Model.random(ModelConfig.from_arch("1x8x8-c4k3p1-mp2-10"), 0)
    save_model(cnn, tmp_path / "cnn.bsm")
    plain = Model.random(ModelConfig.mlp([64, 16, 10], input_shape=(8, 8)), 0)
    save_model(plain, tmp_path / "plain.bsm")
    np.savez(tmp_path / "ten.npz", x=np.zeros((4, 10), dtype=np.uint8), y=np.arange(4) % 2)
    for model, extra, msg in [
        ("m.bsm", ["--port", str(tmp_path / "nope")], f"cannot open {tmp_path}"),
        ("m.bsm", ["--port", "x", "--dataset", f"npz:{tmp_path / 'ten.npz'}"],
         "samples have 10 pixels but the model takes 64"),
        ("cnn.bsm", ["--port", "x"], "convolution"),
        ("plain.bsm", ["--port", "x"], "no 'onchip' entry"),
    ]:
        rc = main(["run", str(tmp_path / model), "--train", "--out", str(tmp_path / "t.bsm"), *extra])
        e = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(e) == 1 and msg in e[0], e
    rc = main(["run", str(tmp_path / "m.bsm"), "--port", "x", "--out", str(tmp_path / "t.bsm")])
    e = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(e) == 1 and "--out needs --train" in e[0]
    assert not (tmp_path / "t.bsm").exists()


# -- bitswarm bitstream --train: refusals ------------------------------------------------------
def test_bitstream_train_refusals(tmp_path, capsys):
    cnn = Model.random(ModelConfig.from_arch("1x8x8-c4k3p1-mp2-10"), 0)
    save_model(cnn, tmp_path / "cnn.bsm")
    save_model(Model.random(ModelConfig.mlp([16, 8, 4]), 0), tmp_path / "plain.bsm")
    m, _, _, _ = trainer_case()
    save_model(m, tmp_path / "m.bsm")
    no_acc = copy.deepcopy(m)
    no_acc.acc = None
    save_model(no_acc, tmp_path / "noacc.bsm")
    for model, extra, msg in [
        ("cnn.bsm", [], "convolution"),
        ("plain.bsm", [], "no 'onchip' entry"),
        ("noacc.bsm", [], "needs a model with accumulators"),
        ("m.bsm", ["--pe", "2"], "--pe fold the accelerator; with --train give --trainer-fold"),
        ("m.bsm", ["--trainer-fold", "3x16,1x8"], "pe = 3 must divide the layer's 8 neurons"),
        ("m.bsm", ["--clock-mhz", "1200"], "the iCE40 PLL cannot make 1200 MHz"),
    ]:
        rc = main(["bitstream", str(tmp_path / model), "--board", "icebreaker", "--train",
                   "-o", str(tmp_path / "o"), *extra])
        e = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(e) == 1 and msg in e[0], e
    rc = main(["bitstream", str(tmp_path / "m.bsm"), "--board", "icebreaker", "--in-lanes", "4",
               "-o", str(tmp_path / "o")])
    e = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(e) == 1 and "--in-lanes needs --train" in e[0]
    assert not (tmp_path / "o").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bitstream_train_arty_sources(tmp_path, capsys):
    """Arty: the trainer's Verilog, XDC and Tcl (the same flow as the accelerator's)."""
    m, _, _, _ = trainer_case()
    save_model(m, tmp_path / "m.bsm")
    rc = main(["bitstream", str(tmp_path / "m.bsm"), "--board", "arty", "--train", "-o",
               str(tmp_path / "a"), "--json"])
    rec = json.loads(capsys.readouterr().out)
    assert rc == 0 and rec["bitstream"] is None and rec["cycles_per_sample"] > 0
    from bitswarm.hw.plan import TrainerFold
    from bitswarm.hw.resources import board_trainer_fold

    fold = TrainerFold.from_dict(rec["fold"], m.cfg)
    assert fold == board_trainer_fold(m.cfg, "arty")  # the fitter's fold by default
    assert rec["info"]["config_hash"] == f"0x{UARTTrainer(m, divisor=4, fold=fold).info.config_hash:08x}"
    v = (tmp_path / "a" / "bitswarm_trainer.v").read_text()
    assert "module bitswarm_trainer" in v and "trainer" in v


# -- bitswarm sim --train --out -----------------------------------------------------------------
def test_sim_train_out(tmp_path, capsys):
    from bitswarm.train import load_dataset

    m = _digits_model()
    save_model(m, tmp_path / "m.bsm")
    out = tmp_path / "t.bsm"
    argv = ["sim", str(tmp_path / "m.bsm"), "--train", "--limit", "10", "--out", str(out), "--json"]
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["mismatches"] == 0 and rep["out"] == str(out)
    ds = load_dataset("digits")
    gm = copy.deepcopy(m)
    onchip_train(TrainerLink(m, None).config, gm, torch.from_numpy(ds.x_train[:10].reshape(10, -1)),
                 torch.from_numpy(ds.y_train[:10]))
    assert load_model(out).equal(gm) and not load_model(out).equal(m)
    before = out.read_bytes()
    assert main(argv) == 2
    e = capsys.readouterr().err.strip().splitlines()
    assert len(e) == 1 and "exists; pass --overwrite to replace it" in e[0] and out.read_bytes() == before
    assert main([*argv, "--overwrite", "--limit", "3"]) == 0 and out.read_bytes() != before
    capsys.readouterr()
    assert main(["sim", str(tmp_path / "m.bsm"), "--out", str(tmp_path / "u.bsm")]) == 2
    e = capsys.readouterr().err.strip().splitlines()
    assert len(e) == 1 and "--out needs --train" in e[0] and not (tmp_path / "u.bsm").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
