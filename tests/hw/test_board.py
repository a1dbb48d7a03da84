# amaranth: UnusedElaboratable=no
"""bitswarm.hw.board: constructor checks, PLL searches, the UART-linked accelerator (MLPs and
CNNs) on the Amaranth simulator and (cocotb + Verilator, a UART model bit by bit on the pins)
against golden replies encoded by bitswarm.sim.hostlink."""

import random

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator
from bitswarm.golden import ConfigError, Model, ModelConfig, load_model
from bitswarm.hw.board import (
    BOARDS,
    REPLY,
    SYNC,
    BoardTop,
    UARTAccelerator,
    ecp5_pll,
    ice40_pll,
)
from bitswarm.hw.plan import AccelPlan, LayerFold
from bitswarm.hw.uart import uart_decode, uart_line
from bitswarm.sim.driver import hw_order
from bitswarm.sim.hostlink import BoardBackend, HostLink, LinkFormat
from bitswarm.sim.verilator import run_cocotb

from .test_accel import _random_conv_model, _random_model


def _golden_replies(model, images):
    fmt = LinkFormat.for_model(model)
    scores = model.forward(torch.as_tensor(np.asarray(images))).numpy()  # [n, C, H, W] for a CNN
    cls = np.argmax(scores, axis=1)  # ties: lowest index
    return [fmt.reply_for(c, s) for c, s in zip(cls, scores, strict=True)]


def _unused(top):
    """A BoardTop only inspected here (it needs a platform to elaborate): no unused warning."""
    top._MustUse__silence = True
    return top


# -- constructors and parameter searches ------------------------------------------------------
def test_init():
    m = _random_model([12, 40, 3], 4)
    plan = AccelPlan(m.cfg, (LayerFold(4, 5, 1), LayerFold(2, 16, 1)))
    core = UARTAccelerator(m, plan, divisor=6)
    assert (core.divisor, core.plan, core.model) == (6, plan, m)
    top = _unused(BoardTop(m, "icebreaker", plan, baud=115200))
    assert top.pll["f_out"] == 36e6 and top.clock_hz == 36e6 and top.divisor == 312
    top = _unused(BoardTop(m, "icebreaker", plan, baud=115200, clock_hz=12e6))
    assert top.pll is None and top.clock_hz == 12e6 and top.divisor == 104
    top = _unused(BoardTop(m, "ulx3s", baud=1_000_000, clock_hz=50e6))
    assert top.pll["clkfb_div"] == 2 and top.divisor == 50
    top = _unused(BoardTop(m, "icebreaker", clock_hz=30e6))
    assert top.pll == {"divr": 0, "divf": 79, "divq": 5, "filter_range": 1, "f_out": 30e6}
    assert set(BOARDS) == {"icebreaker", "ulx3s", "arty"}


def test_init_wrong():
    m = _random_model([12, 8, 3], 1)
    with pytest.raises(TypeError, match=r"model must be a bitswarm.golden.Model, not 'm.bsm'"):
        UARTAccelerator("m.bsm", divisor=4)
    with pytest.raises(ConfigError, match=r"divisor must be an integer >= 4"):
        UARTAccelerator(m, divisor=2)
    with pytest.raises(ConfigError, match=r"board must be one of icebreaker, ulx3s, arty, not 'x'"):
        BoardTop(m, "x")
    with pytest.raises(ConfigError, match=r"the iCE40 PLL cannot make 1200 MHz from 12 MHz"):
        BoardTop(m, "icebreaker", clock_hz=1200e6)
    with pytest.raises(ConfigError, match=r"arty: only the 100 MHz board clock is supported"):
        BoardTop(m, "arty", clock_hz=50e6)
    with pytest.raises(ConfigError, match=r"12000000 baud needs at least 4 cycles per bit"):
        BoardTop(m, "icebreaker", baud=12_000_000)
    big = Model.random(ModelConfig.mlp([4, 300]))
    with pytest.raises(ConfigError, match=r"at most 256 classes, the model has 300"):
        UARTAccelerator(big, divisor=4)


def test_pll_search():
    # icepll / ecppll reference settings
    assert ice40_pll(12e6, 24e6) == {"divr": 0, "divf": 63, "divq": 5, "filter_range": 1,
                                     "f_out": 24e6}
    p = ecp5_pll(25e6, 100e6)
    assert (p["clki_div"], p["clkfb_div"], p["clkop_div"], p["vco"]) == (1, 4, 6, 600e6)
    for f in (16e6, 33e6, 48e6):
        p = ice40_pll(12e6, f)
        pfd = 12e6 / (p["divr"] + 1)
        vco = pfd * (p["divf"] + 1)
        assert 533e6 <= vco <= 1066e6 and 10e6 <= pfd <= 133e6
        assert p["f_out"] == vco / 2 ** p["divq"] and abs(p["f_out"] - f) <= 0.01 * f
    with pytest.raises(ConfigError, match="the ECP5 PLL cannot make 1000 MHz"):
        ecp5_pll(25e6, 1000e6)


def test_link_format():
    fmt = LinkFormat(5, 3, 10)
    assert (fmt.score_bytes, fmt.frame_len, fmt.reply_len) == (2, 6, 8)
    img = np.array([0, 165, 255, 1, 2], dtype=np.uint8)
    assert fmt.encode(img) == bytes([SYNC, 0, 165, 255, 1, 2])
    r = fmt.reply_for(2, [-512, 511, -1])
    assert r == bytes([REPLY, 2, 0x00, 0xFE, 0xFF, 0x01, 0xFF, 0xFF])
    cls, s = fmt.decode(r)
    assert cls == 2 and s.tolist() == [-512, 511, -1]
    with pytest.raises(ConfigError, match="an image must have 5 pixels, not 4"):
        fmt.encode(img[:4])
    from bitswarm.sim.hostlink import LinkError

    with pytest.raises(LinkError, match="a reply starts with 0x5A, received 0x00"):
        fmt.decode(bytes(8))
    with pytest.raises(LinkError, match="class byte 3 is not below 3"):
        fmt.decode(bytes([REPLY, 3]) + bytes(6))


# -- Amaranth simulator -----------------------------------------------------------------------
def _sim_core(model, plan, images, divisor=4, noise=True):
    """Drive frames (with junk bytes between them) into rx; return the bytes seen on tx."""
    fmt = LinkFormat.for_model(model)
    core = UARTAccelerator(model, plan, divisor=divisor)
    rng = random.Random(1)
    line = [1] * 3
    for img in hw_order(model.cfg, images):
        junk = bytes(rng.choice([0, 0x5A, 0xFF]) for _ in range(rng.randrange(3))) if noise else b""
        line += uart_line(junk + fmt.encode(img), divisor)
        # wait for the reply before the next frame (one image outstanding)
        line += [1] * (10 * divisor * fmt.reply_len + plan.latency_cycles() + 20 * divisor)
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
    return uart_decode(tx, divisor), core


def test_sim_core_replies_equal_golden():
    # 12 pixels in slices of 5 (a zero-padded last slice), 2-byte scores, junk between frames
    m = _random_model([12, 40, 3], 4)
    plan = AccelPlan(m.cfg, (LayerFold(4, 5, 1), LayerFold(2, 16, 1)))
    assert LinkFormat.for_model(m).score_bytes == 2
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(4, 12), dtype=np.uint8)
    imgs[1, :] = SYNC  # pixels equal to the sync byte are pixels
    got, _ = _sim_core(m, plan, imgs)
    assert got == b"".join(_golden_replies(m, imgs))


def test_sim_core_mutation_detected():
    """A broken golden (one weight bit flipped) must not match the gateware's replies."""
    m = _random_model([12, 40, 3], 4)
    plan = AccelPlan(m.cfg, (LayerFold(4, 5, 1), LayerFold(2, 16, 1)))
    imgs = np.random.default_rng(1).integers(0, 256, size=(2, 12), dtype=np.uint8)
    got, _ = _sim_core(m, plan, imgs, noise=False)
    bad = _random_model([12, 40, 3], 4)
    bad.theta[1][0] += 2
    assert got != b"".join(_golden_replies(bad, imgs))
    assert got == b"".join(_golden_replies(m, imgs))


def test_sim_core_cnn_replies_equal_golden():
    """A two-channel CNN: the host sends HWC pixels, the replies equal golden's on ``[n, C, H, W]``
    images (a CHW frame would not), with the first layer's slices 2 pixels of a kernel row."""
    m = _random_conv_model("2x4x4-c4k3p1-mp2-6-3", 1, 8, seed=5)
    assert LinkFormat.for_model(m).n_pixels == 32
    plan = AccelPlan(m.cfg, (LayerFold(2, 2, 1), LayerFold(3, 4, 1), LayerFold(1, 6, 1)))
    imgs = np.random.default_rng(3).integers(0, 256, size=(3, 2, 4, 4), dtype=np.uint8)
    got, _ = _sim_core(m, plan, imgs)
    assert got == b"".join(_golden_replies(m, imgs))
    # CHW bytes on the link would be read as HWC: these images, whose replies differ
    misread = imgs.reshape(3, 4, 4, 2).transpose(0, 3, 1, 2)
    assert got != b"".join(_golden_replies(m, misread))


def test_board_backend_sends_hwc():
    """BoardBackend frames a CNN's ``[n, C, H, W]`` images in HWC order and decodes replies."""
    m = _random_conv_model("2x4x4-c4k3p1-mp2-6-3", 1, 8, seed=5)
    fmt = LinkFormat.for_model(m)
    imgs = np.random.default_rng(4).integers(0, 256, size=(2, 2, 4, 4), dtype=np.uint8)
    replies = _golden_replies(m, imgs)

    class Loop:  # a device double answering golden's replies in order
        def __init__(self):
            self.sent, self.out = [], list(replies)

        def write(self, data):
            self.sent.append(bytes(data))

        def read(self, n):
            return self.out.pop(0)

        def reset_input_buffer(self):
            pass

    t = Loop()
    res = BoardBackend(m, HostLink(fmt, t)).infer(imgs)
    assert t.sent == [fmt.encode(r) for r in hw_order(m.cfg, imgs)]
    gold = m.forward(torch.as_tensor(imgs)).numpy()
    assert res.scores.tolist() == gold.tolist()


def test_sim_core_resync():
    """N zero bytes finish a half-sent frame; the next frame is answered correctly."""
    m = _random_model([12, 8, 3], 1)
    plan = AccelPlan.auto(m.cfg, simd=5)
    fmt = LinkFormat.for_model(m)
    img = np.arange(12, dtype=np.uint8) * 20
    d = 4
    core = UARTAccelerator(m, plan, divisor=d)
    wait = [1] * (10 * d * fmt.reply_len + plan.latency_cycles() + 20 * d)
    line = ([1] * 3 + uart_line(fmt.encode(img)[:7], d) + uart_line(bytes(fmt.n_pixels), d)
            + wait + uart_line(fmt.encode(img), d) + wait)
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
    got = uart_decode(tx, d)
    assert len(got) == 2 * fmt.reply_len  # the garbage frame's reply, then the real one
    assert got[fmt.reply_len:] == _golden_replies(m, img[None])[0]


# -- cocotb + Verilator: the UART model on the pins, a trained digits model -------------------
@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    from bitswarm.train import TrainConfig, train

    d = tmp_path_factory.mktemp("board_digits")
    train(TrainConfig(dataset="digits", arch=(64, 128, 10), epochs=2), out=d / "m.bsm",
          run_dir=d / "run", quiet=True, plots=False)
    return load_model(d / "m.bsm")


def _cocotb_params(model, plan, images, expected, divisor):
    fmt = LinkFormat.for_model(model)
    return {"divisor": divisor, "n_pixels": fmt.n_pixels, "classes": fmt.classes,
            "score_width": fmt.score_width, "compute_cycles": plan.latency_cycles(),
            "images": [list(map(int, i.reshape(-1))) for i in images],
            "expected": [list(r) for r in expected]}


@pytest.mark.verilator
def test_sim_board_uart_verilator(digits_model, tmp_path):
    from bitswarm.train import load_dataset

    m = digits_model
    # SIMD 24 over 64 pixels: a zero-padded last slice; 10-bit scores: 2 bytes each
    plan = AccelPlan(m.cfg, (LayerFold(4, 24, 2), LayerFold(2, 64, 2)))
    assert LinkFormat.for_model(m).score_bytes == 2
    ds = load_dataset("digits")
    x = ds.x_test[:32].reshape((-1,) + tuple(m.cfg.input_shape))
    exp = _golden_replies(m, x)
    run_cocotb(UARTAccelerator(m, plan, divisor=4), name="board_uart",
               test_module="tests.hw.cocotb_board", build_root=tmp_path,
               params=_cocotb_params(m, plan, x, exp, 4))
    # mutation check: a wrong expected score byte in one image must fail the bench
    bad = [bytearray(r) for r in exp[:2]]
    bad[1][3] ^= 1
    with pytest.raises(AssertionError, match="cocotb"):
        run_cocotb(UARTAccelerator(m, plan, divisor=4), name="board_uart",
                   test_module="tests.hw.cocotb_board", build_root=tmp_path,
                   params=_cocotb_params(m, plan, x[:2], bad, 4))


@pytest.fixture(scope="module")
def digits_cnn_model(tmp_path_factory):
    from bitswarm.train import TrainConfig, train

    d = tmp_path_factory.mktemp("board_digits_cnn")
    train(TrainConfig(dataset="digits", arch="1x8x8-c8k3p1-mp2-10", rule="ste-adam", epochs=1),
          out=d / "m.bsm", run_dir=d / "run", quiet=True, plots=False)
    return load_model(d / "m.bsm")


@pytest.mark.verilator
def test_sim_board_uart_cnn_verilator(digits_cnn_model, tmp_path):
    """A trained digits CNN behind the UART, folded by the optimizer for the iCEBreaker: the
    replies to digits test images (row-major pixels, one channel) equal golden's."""
    from bitswarm.hw.resources import board_fold
    from bitswarm.train import load_dataset

    m = digits_cnn_model
    plan = board_fold(m.cfg, "icebreaker")
    ds = load_dataset("digits")
    x = ds.x_test[:8].reshape((-1,) + tuple(m.cfg.input_shape))
    exp = _golden_replies(m, x)
    assert len({r[1] for r in exp}) > 1  # the images are told apart
    run_cocotb(UARTAccelerator(m, plan, divisor=4), name="board_uart_cnn",
               test_module="tests.hw.cocotb_board", build_root=tmp_path,
               params=_cocotb_params(m, plan, hw_order(m.cfg, x), exp, 4))
