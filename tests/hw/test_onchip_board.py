# amaranth: UnusedElaboratable=no
"""bitswarm.hw.onchip_board: the on-chip trainer behind the UART (TRAIN / READ / INFO).

- constructor checks (CNNs, models without accumulators or on-chip constants refused);
- INFO's byte layout round-trips; the host refuses a wrong bitstream in one line;
- the Amaranth simulator: INFO bytes, a TRAIN frame that stops half-way is dropped after the
  timeout (the trainer never sees it), then a whole one trains exactly one sample;
- cocotb + Verilator: a whole training run driven bit by bit on the pins by the real host code
  (:class:`bitswarm.sim.hostlink.TrainerLink`), the state read back through the protocol equal
  to golden ``onchip_train`` bit for bit, predictions and error flags too.
"""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator
from bitswarm.golden import ConfigError, Model, ModelConfig
from bitswarm.golden.model import save_model
from bitswarm.golden.onchip import onchip_train
from bitswarm.hw.onchip import dbg_queries
from bitswarm.hw.onchip_board import (
    CMD_INFO,
    CMD_READ,
    CMD_TRAIN,
    REPLY_INFO,
    REPLY_READ,
    REPLY_TRAIN,
    TrainerBoardTop,
    TrainerInfo,
    UARTTrainer,
    config_hash,
)
from bitswarm.hw.plan import TrainerFold
from bitswarm.hw.uart import uart_decode, uart_line
from bitswarm.sim.hostlink import LinkError, TrainerLink
from bitswarm.sim.verilator import run_cocotb

from .test_onchip import _random_case


def trainer_case(arch=(16, 8, 4), swarm=2, seed=0, k=24):
    """A random trainable model (:func:`tests.hw.test_onchip._random_case`: random accumulators,
    thresholds and hidden invert bits, stochastic noise) with its on-chip constants in its meta,
    ``k`` random samples and labels."""
    m, oc, xs, ys = _random_case(arch, swarm, "stochastic", input_bits=8, seed=seed, k=k, hs=2)
    cfg = dataclasses.replace(m.cfg, meta={**m.cfg.meta, **oc.to_meta()})
    return Model(cfg, m.weights, m.theta, m.invert, m.acc, m.lfsr_state), oc, xs.numpy(), ys.numpy()


def golden_run(m, oc, xs, ys):
    gm = copy.deepcopy(m)
    res = onchip_train(oc, gm, torch.from_numpy(xs), torch.from_numpy(ys))
    return gm, np.array([r.pred for r in res]), np.array([int(bool(r.errors[-1].any())) for r in res]), res


def state_bit_mismatches(a: Model, b: Model) -> int:
    """Differing bits of the integer training state: weight bits, accumulator and threshold bits
    (two's complement, 32 bits), LFSR bits."""
    n = bin(int(a.lfsr_state or 0) ^ int(b.lfsr_state or 0)).count("1")
    for name in ("weights", "acc", "theta"):
        for x, y in zip(getattr(a, name), getattr(b, name), strict=True):
            d = (x.to(torch.int64) ^ y.to(torch.int64)) & 0xFFFFFFFF
            n += sum(bin(int(v)).count("1") for v in d.reshape(-1).tolist() if v)
    return n


# -- constructors and INFO --------------------------------------------------------------------
def test_init():
    m, oc, _, _ = trainer_case()
    core = UARTTrainer(m, divisor=4)
    assert core.config == oc and core.fifo_depth == 2 * (2 + 16) and core.divisor == 4
    info = core.info
    assert info.layers == ((16, 8, 2, 1, 16), (8, 4, 2, 1, 8)) and info.acc_width == 6
    assert info.queries == 2 * 8 + 8 + 2 * 4 + 4 + 1 and info.dbg_bytes == -(-core.trainer.dbg_width // 8)
    assert info.config_hash == config_hash(m, oc, core.trainer.in_lanes, TrainerFold.default(m.cfg))
    top = TrainerBoardTop(m, "icebreaker")  # the oscillator: no PLL
    assert top.clock_hz == 12e6 and top.pll is None and top.trainer_core.divisor == 104
    top = TrainerBoardTop(m, "ulx3s", clock_hz=50e6, baud=1_000_000)
    assert top.pll["f_out"] == 50e6 and top.trainer_core.divisor == 50


def test_init_wrong():
    m, oc, _, _ = trainer_case()
    with pytest.raises(TypeError, match="model must be a bitswarm.golden.Model"):
        UARTTrainer("m.bsm", divisor=4)
    with pytest.raises(ConfigError, match="divisor must be an integer >= 4"):
        UARTTrainer(m, divisor=3)
    with pytest.raises(ConfigError, match="timeout_bytes must be an integer in 1..65535, not 0"):
        UARTTrainer(m, divisor=4, timeout_bytes=0)
    bare = Model(ModelConfig.mlp([16, 8, 4], swarm=2, flip=m.cfg.flip), m.weights, m.theta, m.invert, m.acc, m.lfsr_state)
    with pytest.raises(ConfigError, match=r"no 'onchip' entry.*bitswarm train --votes integer"):
        UARTTrainer(bare, divisor=4)
    no_acc = copy.deepcopy(m)
    no_acc.acc = None
    with pytest.raises(ConfigError, match="needs a model with accumulators"):
        UARTTrainer(no_acc, divisor=4)
    cnn = Model.random(ModelConfig.from_arch("1x4x4-c2k3p1-mp2-3"), 0)
    with pytest.raises(ConfigError, match="convolution"):
        TrainerBoardTop(cnn, "icebreaker")
    with pytest.raises(ConfigError, match="board must be one of"):
        TrainerBoardTop(m, "nope")


def test_info_round_trip():
    m, oc, _, _ = trainer_case()
    info = UARTTrainer(m, divisor=4).info
    b = info.to_bytes()
    assert len(b) == TrainerInfo.length(2) and b[:4] == b"BST\x01"
    assert TrainerInfo.from_bytes(b) == info
    assert TrainerInfo.from_bytes(b[:-4] + (7).to_bytes(4, "little")).samples == 7
    with pytest.raises(ConfigError, match="not a bitswarm trainer"):
        TrainerInfo.from_bytes(b"XYZ" + b[3:])
    with pytest.raises(ConfigError, match="protocol version 9"):
        TrainerInfo.from_bytes(b[:3] + b"\x09" + b[4:])
    with pytest.raises(ConfigError, match="INFO for 2 layers has 44 bytes, received 43"):
        TrainerInfo.from_bytes(b[:-1])


# -- the Amaranth simulator: INFO, timeout, one sample ---------------------------------------
def _sim(core, line):
    tx = []

    async def bench(ctx):
        for lvl in line:
            ctx.set(core.rx, lvl)
            _, _, t = await ctx.tick().sample(core.tx)
            tx.append(t)

    sim = Simulator(core)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return uart_decode(tx, core.divisor)


def test_sim_info_timeout_train_read():
    """INFO = ``REPLY_INFO`` + :meth:`TrainerInfo.to_bytes`; a TRAIN frame cut short is dropped
    after ``timeout_bytes`` byte times (no reply, no training); a whole frame then trains one
    sample (reply = golden's) and INFO counts it; a READ of the LFSR returns golden's state."""
    m, oc, xs, ys = trainer_case((16, 8, 4), 1, k=1)
    d = 4
    core = UARTTrainer(m, divisor=d, in_lanes=5, timeout_bytes=6)
    gm, g_pred, g_err, _ = golden_run(m, oc, xs, ys)
    frame = bytes([CMD_TRAIN, int(ys[0])]) + xs[0].tobytes()
    wait = [1] * (10 * d * 80)
    line = ([1] * 4 + uart_line([CMD_INFO], d) + wait
            + uart_line(frame[:9], d) + [1] * (10 * d * 8)  # stops: dropped after 6 byte times
            + uart_line(frame, d) + wait
            + uart_line([CMD_INFO], d) + wait
            + uart_line(bytes([CMD_READ, 2, 0, 0, 0, 0, 0]), d) + wait)
    got = _sim(core, line)
    n_info = 1 + TrainerInfo.length(2)
    info0 = bytes([REPLY_INFO]) + core.info.to_bytes()
    assert got[:n_info] == info0
    assert got[n_info:n_info + 3] == bytes([REPLY_TRAIN, g_pred[0], g_err[0]])
    info1 = TrainerInfo.from_bytes(got[n_info + 4:2 * n_info + 3])
    assert info1.samples == 1 and info1.config_hash == core.info.config_hash
    rd = got[2 * n_info + 3:]
    assert rd[0] == REPLY_READ and len(rd) == 1 + core.info.dbg_bytes
    assert int.from_bytes(rd[1:], "little") == gm.lfsr_state != m.lfsr_state


# -- the host's identify() against INFO ---------------------------------------------------------
class _InfoDevice:
    """A transport double answering INFO with a fixed payload."""

    def __init__(self, payload: bytes):
        self.payload, self.out = payload, b""

    def write(self, data):
        if data == bytes([CMD_INFO]):
            self.out += bytes([REPLY_INFO]) + self.payload

    def read(self, n):
        r, self.out = self.out[:n], self.out[n:]
        return r

    def reset_input_buffer(self):
        self.out = b""


def test_identify_refuses_wrong_bitstreams():
    m, oc, _, _ = trainer_case()
    info = UARTTrainer(m, divisor=4).info
    assert TrainerLink(m, _InfoDevice(info.to_bytes())).identify() == info
    other, _, _, _ = trainer_case(seed=5)  # same architecture, other initial state
    with pytest.raises(ConfigError, match="built from another model file, on-chip constants or fold"):
        TrainerLink(other, _InfoDevice(info.to_bytes())).identify()
    small, _, _, _ = trainer_case((16, 6, 4))
    with pytest.raises(ConfigError, match=r"the board's trainer is 16-8-4 \(S=2,2\), the model 16-6-4"):
        TrainerLink(small, _InfoDevice(info.to_bytes())).identify()
    used = TrainerInfo.from_bytes(info.to_bytes()[:-4] + (3).to_bytes(4, "little"))
    with pytest.raises(ConfigError, match="has trained 3 samples since it was configured"):
        TrainerLink(m, _InfoDevice(used.to_bytes())).identify()
    assert TrainerLink(m, _InfoDevice(used.to_bytes())).identify(fresh=False).samples == 3
    with pytest.raises(LinkError, match="timed out waiting for the INFO reply"):
        TrainerLink(m, _InfoDevice(b"")).identify()  # the reply byte alone, no payload
    with pytest.raises(LinkError, match="not a bitswarm trainer"):
        TrainerLink(m, _InfoDevice(b"ABCDEFG" + bytes(60))).identify()


# -- cocotb + Verilator: a whole run over the pins ---------------------------------------------
def _cocotb_run(tmp_path, m, xs, ys, *, divisor=4, name="onchip_board", fold=None):
    save_model(m, tmp_path / "init.bsm")
    out = tmp_path / f"{name}.json"
    core = UARTTrainer(m, divisor=divisor, fold=fold)
    fl = core.train_frame_len
    run_cocotb(core, name=name, test_module="tests.hw.cocotb_onchip_board", build_root=tmp_path,
               params={"divisor": divisor, "model": str(tmp_path / "init.bsm"),
                       "xs": xs.tolist(), "ys": [int(v) for v in ys], "out": str(out),
                       "timeout_cycles": 10 * divisor * (4 * fl + 64) + 20000})
    from bitswarm.golden.model import load_model

    return json.loads(out.read_text()), load_model(str(out) + ".bsm"), core


@pytest.mark.verilator
@pytest.mark.parametrize("arch,k,fold", [
    ((16, 8, 4), 30, None),
    # ~100 s of Verilator build each: a bigger network; a folded trainer (banks, memory words)
    pytest.param((64, 16, 10), 40, None, marks=pytest.mark.slow),
    pytest.param((16, 8, 4), 30, ((2, 8), (2, 4)), marks=pytest.mark.slow),
], ids=["16-8-4", "64-16-10", "16-8-4-folded"])
def test_sim_trainer_uart_verilator(tmp_path, arch, k, fold):
    """S = 2, stochastic noise, random invert bits: ``k`` samples over the pins, then the whole
    state read back through READ (INFO tells the host the fold, hence the memory words): 0
    mismatching state bits against golden, predictions and error flags equal golden's, INFO
    counts the samples, the samples go back to back at the line rate. Mutation check: golden
    with another output threshold step does not match the read-back state."""
    m, oc, xs, ys = trainer_case(arch, 2, seed=3, k=k)
    fold = TrainerFold(fold) if fold is not None else None
    gm, g_pred, g_err, res = golden_run(m, oc, xs, ys)
    assert sum(sum(r.flips) for r in res) > 0 and 0 < g_err.sum() < len(ys)  # the run changes the state
    got, state, core = _cocotb_run(tmp_path, m, xs, ys, name=f"onchip_board_{arch[0]}", fold=fold)
    if fold is not None:
        assert core.info.fold() == fold and core.info.queries > len(dbg_queries(m.cfg))
    assert got["preds"] == g_pred.tolist() and got["errors"] == g_err.tolist()
    assert state_bit_mismatches(state, gm) == 0
    assert state.equal(gm) and all(a.equal(b) for a, b in zip(state.invert, m.invert, strict=True))
    assert state_bit_mismatches(state, m) > 0  # the read-back is the trained state, not the initial
    assert got["samples_before"] == 0 and got["samples_after"] == k
    # back to back: the frames follow each other on the line (the host sends the next one while
    # the board trains), so training takes the frames' line time plus one sample and its reply
    fl, bit = core.train_frame_len, 10 * 4
    assert got["train_cycles"] <= k * fl * bit + 3 * bit + 2000, got["train_cycles"]
    bad, _, _, _ = golden_run(m, dataclasses.replace(oc, out_theta_step=oc.out_theta_step + 1), xs, ys)
    assert state_bit_mismatches(state, bad) > 0
