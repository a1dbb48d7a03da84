"""Convolutional networks in training: the golden rule's conv backward (rule_golden.py), the
reference rules on conv layers (rule_ref.py) and conv runs through the trainer and the CLI."""

import dataclasses
import math
import re

import pytest
import torch
import torch.nn.functional as F
from bitswarm.cli import main
from bitswarm.golden.conv import ConvGeometry, im2col, maxpool_bits
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.layer import effective_weights
from bitswarm.golden.model import load_model, quantize_input
from bitswarm.train import (
    NetSpec,
    TrainConfig,
    evaluate,
    get_rule,
    load_checkpoint,
    load_dataset,
    train,
)
from bitswarm.train.data import DataError
from bitswarm.train.rule_golden import GoldenRule, col2im, pool_select, unpool
from bitswarm.train.trainer import DEFAULT_FLIP, parse_arch

ARCH = "1x8x8-c8k3p1-mp2-c8k3p1-mp2-10"


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits")
    return torch.from_numpy(d.x_train), torch.from_numpy(d.y_train)


def _autograd_reference(r, x, y):
    """The golden rule's conv surrogate gradients by float64 autograd from the definition:
    windows by golden ``im2col`` (autograd gives its adjoint), the hardtanh STE with the
    invert sign, the max-pool gradient routed by torch's ``max_pool2d`` indices of
    ``(1 - 2 inv) * (z - theta)`` (first maximum in raster order), the quantized softmax
    score gradient."""
    m, o = r.model, r.opts
    lays = m.cfg.layers
    enc = quantize_input(m.cfg, x).double()  # encoded values: pixels, then activation bits
    leaves = []
    for i, lay in enumerate(lays):
        geo = lay.conv
        cols = im2col(geo, enc) if geo is not None else enc
        xv = cols * 2 - 1 if lay.input_bits == 1 else cols
        w = effective_weights(lay, m.weights[i]).double().requires_grad_(True)
        leaves.append(w)
        zt = xv @ w.T - m.theta[i].double()
        if lay.output:
            break
        n = zt.shape[0]
        zi = zt.detach().long()
        var = torch.div(n * (zi * zi).sum(0) - zi.sum(0) ** 2, n * n, rounding_mode="floor")
        win = max(1, math.isqrt(int(var.sum()) // lay.n_out) * o.window_pct // 100)
        sgn = 1 - 2 * m.invert[i].double()
        ms = (zt.detach().abs() <= win).double() * sgn
        hard = ((zt.detach() >= 0) ^ m.invert[i].bool()).double()
        e = hard + (zt * ms - (zt * ms).detach()) / 2  # value: golden bits; d(2e - 1) = mask * sign
        if geo is not None:
            b, f = x.shape[0], lay.n_out
            shape = (b, geo.out_height, geo.out_width, f)
            _, idx = F.max_pool2d((zt.detach() * sgn).reshape(shape).permute(0, 3, 1, 2), geo.pool,
                                  return_indices=True)
            pooled = e.reshape(shape).permute(0, 3, 1, 2).flatten(2).gather(2, idx.flatten(2))
            e = pooled.reshape(idx.shape).permute(0, 2, 3, 1).reshape(b, -1)
            assert torch.equal(e.detach().to(torch.uint8), maxpool_bits(geo, hard.to(torch.uint8), f))
        enc = e
    logits = zt.detach() * (o.temperature / math.sqrt(lays[-1].n_in * lays[-1].swarm))
    g = torch.softmax(logits, 1) - F.one_hot(y, lays[-1].n_out).double()
    zt.backward(torch.round(g * (1 << o.grad_bits)))
    return [w.grad for w in leaves]


@pytest.mark.parametrize("arch, swarm, input_bits", [
    (ARCH, 1, 8), ("1x8x8-c6k3s2p1-mp2-12-10", 2, 1), ("1x8x8-c6k3-mp4-c5k2p1-10", 1, 4)])
def test_golden_conv_backward_equals_autograd(digits, arch, swarm, input_bits):
    x, y = digits
    r = GoldenRule(NetSpec(arch, (8, 8), swarm, input_bits, 3, DEFAULT_FLIP))
    r.init_state(x)
    gen = torch.Generator().manual_seed(5)
    for i in range(len(r.model.cfg.layers) - 1):
        r.model.invert[i] = torch.randint(0, 2, r.model.invert[i].shape, generator=gen, dtype=torch.uint8)
    xb, yb = x[:40], y[:40]
    loss, grads, _ = r.surrogate_gradients(xb, yb)
    ref = _autograd_reference(r, xb, yb)
    for g, gr in zip(grads, ref, strict=True):
        assert g.dtype == torch.int64 and torch.equal(gr, gr.round())
        assert torch.equal(g, gr.round().long())
    assert all(int(g.abs().sum()) > 0 for g in grads)


def test_conv_backward_mutations_are_caught(digits, monkeypatch):
    """A broken fold (col2im) or a broken pool routing makes the autograd comparison fail."""
    import bitswarm.train.rule_golden as rg

    x, y = digits
    r = GoldenRule(NetSpec(ARCH, (8, 8), 1, 8, 3, DEFAULT_FLIP))
    r.init_state(x)
    xb, yb = x[:40], y[:40]
    ref = _autograd_reference(r, xb, yb)

    def same() -> bool:
        return all(torch.equal(g, gr.round().long())
                   for g, gr in zip(r.surrogate_gradients(xb, yb)[1], ref, strict=True))

    assert same()
    good_fold, good_select = rg.col2im, rg.pool_select
    with monkeypatch.context() as mp:  # the fold forgets the stride offset of one kernel column
        mp.setattr(rg, "col2im", lambda g, cols: good_fold(g, torch.cat([cols[:, :-1], cols[:, :1]], 1)))
        assert not same()
    with monkeypatch.context() as mp:  # ties to the last position instead of the first
        def last(g, u, channels):
            m = rg._pool_windows(g, u, channels)
            return m.shape[-1] - 1 - m.flip(-1).argmax(-1)
        mp.setattr(rg, "pool_select", last)
        assert not same()
    with monkeypatch.context() as mp:  # the minimum instead of the maximum
        mp.setattr(rg, "pool_select", lambda g, u, channels: good_select(g, -u, channels))
        assert not same()


@pytest.mark.parametrize("geo", [
    ConvGeometry(3, 7, 6, 3, 1, 1, 2), ConvGeometry(2, 9, 9, 3, 2, 0, 3), ConvGeometry(1, 5, 5, 5, 1, 2, 1),
    ConvGeometry(4, 6, 5, 2, 2, 1, 1)])
def test_col2im_is_the_adjoint_of_im2col(geo):
    """``<im2col(x), y> == <x, col2im(y)>`` exactly, in integers, including padding positions."""
    gen = torch.Generator().manual_seed(geo.in_size)
    x = torch.randint(-50, 50, (3, geo.in_size), generator=gen, dtype=torch.int64)
    y = torch.randint(-50, 50, (3 * geo.positions, geo.window), generator=gen, dtype=torch.int64)
    back = col2im(geo, y)
    assert back.dtype == torch.int64 and back.shape == x.shape
    assert int((im2col(geo, x) * y).sum()) == int((x * back).sum())
    # column k of a window row lands on exactly the input it was read from (or is dropped)
    ones = col2im(geo, torch.ones_like(y))
    cover = im2col(geo, torch.arange(1, geo.in_size + 1).repeat(3, 1))  # pads read as 0
    counts = torch.zeros(3, geo.in_size + 1, dtype=torch.int64)
    counts.scatter_add_(1, cover.reshape(3, -1), torch.ones_like(cover.reshape(3, -1)))
    assert torch.equal(ones, counts[:, 1:])


def test_pool_routing_picks_the_first_maximum():
    geo = ConvGeometry(2, 5, 5, 1, 1, 0, 2)  # 5x5 output, 2x2 pools: last row and column dropped
    gen = torch.Generator().manual_seed(1)
    u = torch.randint(-3, 3, (2 * 25, 2), generator=gen, dtype=torch.int64)  # many ties
    sel = pool_select(geo, u, 2)
    assert sel.shape == (2, 2, 2, 2)
    m = u.reshape(2, 5, 5, 2)
    for b in range(2):
        for py in range(2):
            for px in range(2):
                for f in range(2):
                    win = [int(m[b, 2 * py + dy, 2 * px + dx, f]) for dy in range(2) for dx in range(2)]
                    assert int(sel[b, py, px, f]) == win.index(max(win))
    g = torch.arange(1, 2 * 2 * 2 * 2 + 1, dtype=torch.int64).reshape(2, 8)
    rows = unpool(geo, sel, g, 2).reshape(2, 5, 5, 2)
    assert int(rows[:, 4].abs().sum()) == 0 and int(rows[:, :, 4].abs().sum()) == 0  # dropped
    assert torch.equal(rows.sum((1, 2)), g.reshape(2, 4, 2).sum(1))  # each value lands once
    for b in range(2):
        for py in range(2):
            for px in range(2):
                for f in range(2):
                    k = int(sel[b, py, px, f])
                    assert int(rows[b, 2 * py + k // 2, 2 * px + k % 2, f]) == int(g[b, (py * 2 + px) * 2 + f])


# -- the trainer and the command line --------------------------------------------------------------
#: Quick flips (threshold 8, batch 16) so that two epochs of the 1,437 digits learn something.
QUICK_FLIP = dataclasses.replace(DEFAULT_FLIP, threshold=8)
FAST = dict(dataset="digits", arch=ARCH, batch_size=16, flip=QUICK_FLIP)


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("conv")
    res = train(TrainConfig(epochs=2, **FAST), out=d / "a.bsm", quiet=True, plots=False)
    return d, res


def test_golden_conv_run_learns(conv_run):
    d, res = conv_run
    assert res.metrics[-1]["test_accuracy"] > 0.4  # chance is 0.1
    assert all(f > 0 for f in res.metrics[-1]["flips"])  # every layer, both convolutions too
    m = load_model(d / "a.bsm")
    assert m.cfg.has_conv and m.cfg.arch_string == ARCH and m.cfg.meta["arch"] == ARCH
    ds = load_dataset("digits")
    assert evaluate(m, ds.x_test, ds.y_test)[0] == res.metrics[-1]["test_accuracy"]
    assert TrainConfig.from_dict(load_checkpoint(d / "a.run").config).arch == ARCH


def test_golden_conv_resume_is_bit_identical(conv_run, tmp_path):
    d, _ = conv_run
    cfg = TrainConfig(epochs=2, **FAST)
    train(dataclasses.replace(cfg, epochs=1), out=tmp_path / "b.bsm", quiet=True, plots=False)
    train(cfg, out=tmp_path / "b.bsm", resume=tmp_path / "b.run", quiet=True, plots=False, overwrite=True)
    assert (tmp_path / "b.bsm").read_bytes() == (d / "a.bsm").read_bytes()


def test_arch_strings_in_the_config():
    assert TrainConfig(arch="64-32-10").arch == (64, 32, 10)  # MLPs keep their widths
    assert TrainConfig(arch="1x8x8-c8k3s1p1-mp2-10").arch == "1x8x8-c8k3p1-mp2-10"  # canonical
    assert TrainConfig(arch=ARCH).to_dict()["arch"] == ARCH
    assert parse_arch(" 64-32-10 ") == (64, 32, 10)


@pytest.mark.parametrize("arch, message", [
    ("1x28x28-c8k3-mp2-10", "takes 784 inputs but digits samples have 64 (8x8); start the arch with 1x8x8"),
    ("4x4x4-c8k3-10", "takes 4x4x4 maps but digits samples are 8x8; start the arch with 1x8x8"),
    ("1x8x8-c8k3-mp2-7", "gives 7 outputs but digits has 10 classes"),
])
def test_conv_arch_must_fit_the_data(tmp_path, arch, message):
    with pytest.raises(DataError, match=re.escape(message)):
        train(TrainConfig(arch=arch, epochs=1), out=tmp_path / "m.bsm", quiet=True)


@pytest.mark.parametrize("rule", ["ste-adam", "bop"])
def test_reference_conv_export_is_its_binary_forward(digits, rule):
    """The export's golden forward computes, bit for bit, the reference network's own binary
    forward (running BatchNorm statistics): every pooled hidden map and the output ``z``."""
    x, y = digits
    r = get_rule(rule)(NetSpec("1x8x8-c6k3p1-mp2-c8k3s2p1-12-10", (8, 8), 2, 8, 0, DEFAULT_FLIP))
    r.init_state(x)
    for k in range(8):
        r.train_step(x[k * 64 : (k + 1) * 64], y[k * 64 : (k + 1) * 64])
    m = r.export()
    assert m.cfg.has_conv
    ref, gold = [], []
    z = r.binary_forward(x[:256], ref)
    scores = m.forward(x[:256], gold)
    assert len(ref) == 3 and all(torch.equal(a, b) for a, b in zip(ref, gold[:-1], strict=True))
    assert torch.equal(scores + m.theta[-1].to(torch.int64), z.to(torch.int64)) and torch.equal(z, z.round())
    assert torch.equal(r.predict(x[:256]), m.predict(x[:256]))


@pytest.mark.parametrize("rule", ["ste-adam", "bop", "float"])
def test_reference_rules_train_a_cnn(tmp_path, rule):
    opts = {"lr": 0.01} if rule == "float" else {}
    cfg = TrainConfig(rule=rule, epochs=1, dataset="digits", arch=ARCH, batch_size=32, options=opts)
    out = None if rule == "float" else tmp_path / "m.bsm"
    res = train(cfg, out=out, run_dir=tmp_path / "run", quiet=True, plots=False)
    assert res.metrics[-1]["test_accuracy"] > 0.2  # chance is 0.1
    if out is not None:
        m = load_model(out)
        ds = load_dataset("digits")
        assert m.cfg.arch_string == ARCH and evaluate(m, ds.x_test, ds.y_test)[0] == res.metrics[-1]["test_accuracy"]


def test_rules_without_conv_refuse_one_line():
    with pytest.raises(ConfigError, match=r"rule 'onchip' does not train convolutional layers \(arch "
                       + re.escape(ARCH) + r"\); use an MLP arch or one of: golden, "):
        get_rule("onchip")(NetSpec(ARCH, (8, 8)))


def test_cli_train_and_summary(tmp_path, capsys):
    arch = "1x8x8-c16k3p1-mp2-c32k3p1-mp2-10"
    out = tmp_path / "m.bsm"
    assert main(["train", "--dataset", "digits", "--arch", arch, "--epochs", "1", "--quiet",
                 "--no-plots", "--out", str(out)]) == 0
    assert "trained golden on digits: 1 epochs" in capsys.readouterr().out
    assert main(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"arch {arch}" in text
    assert "conv3x3/p1+mp2-binary |    8x8x1 |    4x4x16" in text  # one row per conv layer
    assert "conv3x3/p1+mp2-binary |   4x4x16 |    2x2x32" in text
    assert main(["eval", str(out), "--dataset", "digits", "--json"]) == 0


@pytest.mark.parametrize("arch, message", [
    ("1x8x8-c16q3-10", "cannot read token 'c16q3'"),
    ("64-c16k3-10", "convolutions need an input shape CxHxW"),
    ("1x8x8-c16k9-10", "does not fit"),
    ("1x8x8-mp2-10", "must follow a convolution"),
    ("1x8x8-c16k3-mp2", "needs at least an input and an output width"),
])
def test_cli_bad_arch_is_one_line(tmp_path, capsys, arch, message):
    rc = main(["train", "--dataset", "digits", "--arch", arch, "--epochs", "1", "--quiet",
               "--out", str(tmp_path / "m.bsm")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("bitswarm: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "m.run").exists()


def test_help_names_the_arch_grammar(capsys):
    from bitswarm.golden.arch import ARCH_HELP

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert " ".join(ARCH_HELP.split()) in " ".join(capsys.readouterr().out.split())
