"""The accelerator top on Verilator (bulk C++ harness): every score and class equals golden,
and the cycle model equals the measured cycle counts exactly."""

import numpy as np
import pytest
import torch
from bitswarm.golden import ConfigError, LayerConfig, Model, ModelConfig
from bitswarm.hw.accel import Accelerator
from bitswarm.hw.plan import AccelPlan, LayerFold
from bitswarm.sim.bulk import VerilatorAccelerator


def _random_model(arch, swarm, input_bits=8, seed=0, shape=None, ternary_first=False):
    cfg = ModelConfig.mlp(arch, input_shape=shape, swarm=swarm, input_bits=input_bits)
    if ternary_first:
        lays = list(cfg.layers)
        lays[0] = LayerConfig(n_in=arch[0], n_out=arch[1], input_bits=input_bits, weights="ternary")
        cfg = ModelConfig(input_shape=cfg.input_shape, layers=tuple(lays), flip=cfg.flip)
    m = Model.random(cfg, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for i, lay in enumerate(cfg.layers):
        # thresholds spread around the middle of each neuron's range so activations vary
        spread = max(1, lay.z_bound // 8)
        m.theta[i] = torch.randint(-spread, spread + 1, (lay.n_out,), generator=g, dtype=torch.int32)
        if not lay.output:
            m.invert[i] = torch.randint(0, 2, (lay.n_out,), generator=g, dtype=torch.uint8)
    m.validate()
    return m


CASES = {
    # name: (arch, swarm, input_bits, folds (pe, simd, pipeline) per layer, ternary first layer)
    "s1_full_parallel": ([16, 12, 5], 1, 8, [(12, 16, 3), (1, 12, 2)], False),
    "s4_folded_ragged": ([20, 9, 4], 4, 8, [(2, 6, 1), (3, 4, 0)], False),
    "s1_binary_in_pe1": ([24, 10, 6, 3], 1, 1, [(1, 5, 0), (6, 10, 2), (1, 6, 1)], False),
    "s4_ternary_first": ([12, 8, 4], 4, 4, [(3, 5, 2), (2, 6, 1)], True),
}


@pytest.mark.verilator
@pytest.mark.parametrize("name", sorted(CASES))
def test_sim_accel_bit_exact_and_cycle_model(name, tmp_path_factory):
    arch, swarm, bits, folds, tern = CASES[name]
    m = _random_model(arch, swarm, bits, seed=len(name), ternary_first=tern)
    plan = AccelPlan(m.cfg, tuple(LayerFold(*f) for f in folds))
    va = VerilatorAccelerator(Accelerator(m, plan), build_root=tmp_path_factory.mktemp(name))
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, 256, (300, arch[0]), generator=g, dtype=torch.uint8)
    want = m.forward(x).numpy()
    want_cls = m.predict(x).numpy()
    # isolated inferences: every score and class, and the latency of every image
    r = va.run(x.numpy())
    np.testing.assert_array_equal(r.scores, want)
    np.testing.assert_array_equal(r.classes, want_cls)
    assert set(r.latencies.tolist()) == {plan.latency_cycles()}
    # streamed with random idle input cycles and random output backpressure: same outputs
    r2 = va.run(x.numpy(), stream=True, idle_pct=30, bp_pct=40, seed=3)
    np.testing.assert_array_equal(r2.scores, want)
    np.testing.assert_array_equal(r2.classes, want_cls)
    # streamed at full rate: the interval is exactly the slowest stage's cycles per vector
    r3 = va.run(x.numpy(), stream=True)
    np.testing.assert_array_equal(r3.scores, want)
    steady = np.diff(r3.out_cycle)[10:]
    assert set(steady.tolist()) == {plan.interval_cycles()}


@pytest.mark.verilator
def test_sim_accel_mutation_detected(tmp_path):
    """A broken model in the RTL (one flipped weight bit) must make the comparison fail."""
    m = _random_model([16, 12, 5], 1, 8, seed=3)
    plan = AccelPlan(m.cfg, (LayerFold(4, 8, 1), LayerFold(1, 12, 1)))
    broken = _random_model([16, 12, 5], 1, 8, seed=3)
    broken.weights[1] = broken.weights[1].clone()
    broken.weights[1][0, 2, 5] ^= 1
    va = VerilatorAccelerator(Accelerator(broken, plan), build_root=tmp_path)
    x = torch.randint(0, 256, (200, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    r = va.run(x.numpy())
    assert not np.array_equal(r.scores, m.forward(x).numpy())


def test_plan_validation():
    m = _random_model([16, 12, 5], 1, 8)
    with pytest.raises(ConfigError, match="need 2 layer folds"):
        AccelPlan(m.cfg, (LayerFold(1, 1, 0),))
    with pytest.raises(ConfigError, match="layer 0: pe must be an integer in 1..12"):
        AccelPlan(m.cfg, (LayerFold(13, 1, 0), LayerFold(1, 1, 0)))
    with pytest.raises(ConfigError, match="layer 1: simd must be an integer in 1..12"):
        AccelPlan(m.cfg, (LayerFold(1, 1, 0), LayerFold(1, 13, 0)))
    with pytest.raises(ConfigError, match="layer 0: pipeline must be in 0..3"):
        AccelPlan(m.cfg, (LayerFold(1, 16, 4), LayerFold(1, 1, 0)))
    with pytest.raises(TypeError, match="model must be a bitswarm.golden.Model"):
        Accelerator("model.bsm")


def test_plan_cycle_model_formula():
    m = _random_model([64, 128, 10], 4, 8, shape=(8, 8))
    plan = AccelPlan(m.cfg, (LayerFold(8, 16, 2), LayerFold(2, 32, 1)))
    # layer 0: ceil(128/8)=16 groups x 8 planes x ceil(64/16)=4 slices = 512 cycles, pipeline 2
    # layer 1: ceil(10/2)=5 groups x 1 plane x ceil(128/32)=4 slices = 20 cycles, pipeline 1
    assert plan.layer_cycles() == [512, 20]
    # 4 input slices fill layer 0's buffer; +3 per MAC array, +3 for the repack stage, +2 out
    # ... + 2 + the 2 scores of the last group, serialized
    assert plan.latency_cycles() == 3 + (512 + 2 + 5) + 2 + (20 + 1 + 5) + 2 + 2
    # a layer without reuse (NF·B = 1) streams its slices: tail = pipeline + 3
    flat = AccelPlan(m.cfg, (LayerFold(8, 16, 2), LayerFold(10, 8, 1)))
    assert flat.latency_cycles() == 3 + (512 + 2 + 5) + 2 + (1 + 3) + 2 + 10
    with pytest.raises(ConfigError, match="may be at most input_bits"):
        AccelPlan(m.cfg, (LayerFold(8, 16, 2), LayerFold(10, 32, 1)))
    assert plan.interval_cycles() == 512
    auto = AccelPlan.auto(m.cfg)
    assert AccelPlan.from_dict(m.cfg, auto.to_dict()) == auto


# -- convolutions (SPEC.md §14) ------------------------------------------------------------
def _random_conv_model(arch, swarm=1, input_bits=8, seed=0, weights="binary"):
    """A model from an architecture string with random weights, thresholds spread around the
    middle of each channel's range and random invert bits (so activations and pools vary)."""
    cfg = ModelConfig.from_arch(arch, swarm=swarm, input_bits=input_bits, weights=weights)
    m = Model.random(cfg, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for i, lay in enumerate(cfg.layers):
        spread = max(1, lay.z_bound // 8)
        m.theta[i] = torch.randint(-spread, spread + 1, (lay.n_out,), generator=g, dtype=torch.int32)
        if not lay.output:
            m.invert[i] = torch.randint(0, 2, (lay.n_out,), generator=g, dtype=torch.uint8)
    m.validate()
    return m


def _conv_images(m, n, seed=7):
    """``n`` random raw images as flat HWC rows (golden's flat layout for a conv model)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, m.cfg.layers[0].in_size), generator=g, dtype=torch.uint8)


def amaranth_infer(accel, x, max_cycles=200_000):
    """Isolated inferences of raw images ``x`` ``[n, N_0]`` on the Amaranth simulator: scores
    ``[n, C]`` and each image's latency (first input handshake to output handshake)."""
    from amaranth.sim import Simulator

    plan = accel.plan
    simd, sf = plan.folds[0].simd, plan.input_slices()
    x = np.asarray(x, dtype=np.int64)
    pad = np.zeros((len(x), sf * simd), dtype=np.int64)
    pad[:, : x.shape[1]] = x
    n_cls = accel.model.cfg.layers[-1].n_out
    scores, lat = np.zeros((len(x), n_cls), dtype=np.int64), []
    sim = Simulator(accel)
    sim.add_clock(1e-6)

    async def bench(ctx):
        cyc = 0
        for img in range(len(x)):
            sent, t0 = 0, None
            while True:
                ctx.set(accel.i_stream.valid, int(sent < sf))
                if sent < sf:
                    ctx.set(accel.i_stream.payload.x,
                            [int(v) for v in pad[img, sent * simd:(sent + 1) * simd]])
                ctx.set(accel.o_stream.ready, 1)
                if ctx.get(accel.i_stream.valid) and ctx.get(accel.i_stream.ready):
                    t0 = cyc if t0 is None else t0
                    sent += 1
                done = ctx.get(accel.o_stream.valid)
                if done:
                    scores[img] = [ctx.get(accel.o_stream.payload.scores[j]) for j in range(n_cls)]
                    lat.append(cyc - t0)
                await ctx.tick()
                cyc += 1
                assert cyc < max_cycles, "no output"
                if done:
                    break

    sim.add_testbench(bench)
    sim.run()
    return scores, lat


#: Small convolution models for the Amaranth simulator: (arch, swarm, input_bits, weights, folds)
SMALL_CONV = {
    "k3p1_mp2_8bit": ("1x5x5-c2k3p1-mp2-3", 1, 8, "binary", None),
    "k3s2_1bit": ("2x6x5-c4k3s2-4", 2, 1, "binary", [(2, 1, 1), (1, 4, 1)]),
    "k2p1_mp3_tern": ("1x6x6-c3k2p1-mp3-3", 1, 2, "ternary", [(3, 1, 0), (1, 6, 1)]),
    "two_convs": ("1x6x6-c2k3p1-c2k3s2-mp2-2", 1, 1, "binary", [(1, 1, 0), (2, 2, 1), (1, 2, 0)]),
    # slices of J pixels (SIMD = J·C): a hidden layer's, and a first layer's whose last input
    # transfer is partial (50 pixels values in transfers of 6)
    "rows_hidden": ("1x6x6-c2k3p1-c2k3s2-mp2-2", 1, 1, "binary", [(1, 3, 0), (2, 6, 1), (1, 2, 0)]),
    "rows_first_partial": ("2x5x5-c4k3p1-mp2-3", 2, 4, "binary", [(2, 6, 1), (1, 4, 1)]),
    "rows_ternary_1bit": ("1x7x6-c4k3s2p1-mp2-3", 1, 1, "ternary", [(4, 3, 1), (1, 4, 1)]),
}


@pytest.mark.parametrize("name", sorted(SMALL_CONV))
def test_sim_conv_amaranth_bit_exact_and_latency(name):
    """The cycle model (conv stages simulated at handshake level, dense stages in closed
    form) equals the RTL's latency of every image, on the Amaranth simulator."""
    arch, swarm, bits, weights, folds = SMALL_CONV[name]
    m = _random_conv_model(arch, swarm, bits, seed=len(name), weights=weights)
    plan = _conv_plan(m, folds)
    x = _conv_images(m, 3)
    scores, lat = amaranth_infer(Accelerator(m, plan), x.numpy())
    np.testing.assert_array_equal(scores, m.forward(x).numpy())
    assert set(lat) == {plan.latency_cycles()}


def _forward_pool_before_threshold(m, x):
    """A broken golden: max-pool of ``z`` before the threshold and invert (SPEC.md §14 pools
    the bits after the invert, which differs wherever ``invert = 1``)."""
    from bitswarm.golden.conv import conv_preact
    from bitswarm.golden.layer import layer_forward, threshold
    from bitswarm.golden.model import quantize_input

    h = quantize_input(m.cfg, x)
    for i, lay in enumerate(m.cfg.layers):
        if lay.conv is None:
            h = layer_forward(lay, h, m.weights[i], m.theta[i], m.invert[i])
            continue
        g, q, f = lay.conv, lay.conv.pool, lay.n_out
        z = conv_preact(lay, h, m.weights[i]).reshape(len(x), g.out_height, g.out_width, f)
        hq, wq = g.pooled_height, g.pooled_width
        z = z[:, : hq * q, : wq * q].reshape(len(x), hq, q, wq, q, f).amax(dim=(2, 4))
        h = threshold(z.reshape(-1, f), m.theta[i], m.invert[i]).reshape(len(x), -1)
    return h


@pytest.mark.parametrize("mutant", ["pad", "stride", "and_pool", "golden_pool_before_threshold"])
def test_sim_conv_mutants_fail(mutant, monkeypatch):
    """A wrong padding value, an off-by-one stride or an AND pool in the RTL, and a golden that
    pools before the threshold, must each make the comparison with golden fail."""
    import bitswarm.hw.accel as accel_mod

    from . import test_pool, test_sliding_window

    m = _random_conv_model("1x6x6-c4k3s2p1-mp2-3", 1, 8, seed=11)
    plan = AccelPlan(m.cfg, (LayerFold(4, 1, 1), LayerFold(1, 4, 1)))
    if mutant == "pad":
        monkeypatch.setattr(accel_mod, "SlidingWindow", test_sliding_window._PadPlusOne)
    elif mutant == "stride":
        monkeypatch.setattr(accel_mod, "SlidingWindow", test_sliding_window._StrideOffByOne)
    elif mutant == "and_pool":
        monkeypatch.setattr(accel_mod, "Pool", test_pool._AndPool)
    x = _conv_images(m, 12, seed=2)
    scores, _ = amaranth_infer(Accelerator(m, plan), x.numpy())
    if mutant.startswith("golden"):
        np.testing.assert_array_equal(scores, m.forward(x).numpy())
        assert bool(m.invert[0].any())
        assert not np.array_equal(scores, _forward_pool_before_threshold(m, x).numpy())
    else:
        assert not np.array_equal(scores, m.forward(x).numpy())


CONV_CASES = {
    # name: (arch, swarm, input_bits, weights, folds (pe, simd, pipeline) per layer or None)
    "k3p1_mp2_8bit": ("1x8x8-c4k3p1-mp2-10", 1, 8, "binary", [(2, 1, 1), (2, 8, 1)]),
    "k3s2p1_1bit_s2": ("1x8x8-c6k3s2p1-mp2-7", 2, 1, "binary", [(3, 1, 0), (1, 6, 1)]),
    "c2_k2s2p0_pool_drop": ("2x7x7-c4k2s2-mp2-9-5", 1, 4, "binary", [(4, 2, 1), (1, 4, 1), (3, 3, 0)]),
    "two_convs_ternary": ("3x6x6-c4k3p1-c8k3s2p1-mp3-4", 1, 2, "ternary",
                          [(2, 3, 1), (4, 2, 1), (2, 4, 1)]),
    "k1_nopool_k3p0_mp4": ("1x9x9-c2k1-c3k3-mp4-6", 1, 8, "binary", [(1, 1, 0), (3, 2, 1), (1, 3, 1)]),
    "rows_k5s2p2_c3": ("3x9x8-c4k5s2p2-c6k3p1-mp2-5", 1, 8, "binary",
                       [(4, 15, 2), (3, 12, 2), (4, 6, 1)]),
}


def _conv_plan(m, folds):
    return AccelPlan.auto(m.cfg) if folds is None else AccelPlan(
        m.cfg, tuple(LayerFold(*f) for f in folds))


#: Cases of the default suite; the others run with ``-m slow``.
CONV_DEFAULT = ("two_convs_ternary",)


@pytest.mark.verilator
@pytest.mark.parametrize("name", [n if n in CONV_DEFAULT else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(CONV_CASES)])
def test_sim_accel_conv_bit_exact_and_cycle_model(name, tmp_path_factory):
    arch, swarm, bits, weights, folds = CONV_CASES[name]
    m = _random_conv_model(arch, swarm, bits, seed=len(name), weights=weights)
    plan = _conv_plan(m, folds)
    va = VerilatorAccelerator(Accelerator(m, plan), build_root=tmp_path_factory.mktemp(name))
    x = _conv_images(m, 60)
    want = m.forward(x).numpy()
    want_cls = m.predict(x).numpy()
    r = va.run(x.numpy())
    np.testing.assert_array_equal(r.scores, want)
    np.testing.assert_array_equal(r.classes, want_cls)
    assert set(r.latencies.tolist()) == {plan.latency_cycles()}
    r2 = va.run(x.numpy(), stream=True, idle_pct=30, bp_pct=40, seed=3)
    np.testing.assert_array_equal(r2.scores, want)
    r3 = va.run(x.numpy(), stream=True)
    np.testing.assert_array_equal(r3.scores, want)
    steady = np.diff(r3.out_cycle)[5:]
    assert set(steady.tolist()) == {plan.interval_cycles()}


def test_conv_refused_where_unsupported():
    """The on-chip trainer refuses a CNN in one line; the accelerator, the board top (UART
    link), its plan, resources and fold optimizer take it."""
    from bitswarm.hw.board import UARTAccelerator
    from bitswarm.hw.onchip import OnChipTrainer
    from bitswarm.hw.resources import board_fold, estimate

    m = _random_conv_model("1x6x6-c4k3p1-mp2-3")
    msg = r"does not support convolutional layers yet \(model 1x6x6-c4k3p1-mp2-3\)"
    core = UARTAccelerator(m, divisor=4)
    core._MustUse__silence = True  # only inspected here
    assert core.plan.cfg == m.cfg
    with pytest.raises(ConfigError, match="the on-chip trainer " + r"\(OnChipTrainer\) " + msg):
        OnChipTrainer(m)
    plan = board_fold(m.cfg, "ulx3s")
    names = [s["stage"] for s in estimate(plan, "ecp5").table()]
    assert names[:5] == ["window0", "mac0", "thr0", "pool0", "repack0"]


@pytest.mark.slow
@pytest.mark.verilator
def test_sim_accel_fashion_cnn_subset(tmp_path):
    """A Fashion-MNIST CNN (random weights, thresholds and invert bits) on the first 300 test
    images: scores equal golden, the latency and streaming interval equal the cycle model.
    Needs the Debian package dataset-fashion-mnist (or an IDX folder); skipped without it."""
    from bitswarm.sim.driver import evaluate, hw_order, make_backend
    from bitswarm.train import load_dataset
    from bitswarm.train.data import DataError

    try:
        ds = load_dataset("fashion")
    except DataError as e:
        pytest.skip(str(e))
    m = _random_conv_model("1x28x28-c16k3p1-mp2-c32k3p1-mp2-10", 1, 8, seed=4)
    plan = AccelPlan.auto(m.cfg)
    x = ds.x_test[:300].reshape(-1, 1, 28, 28)
    backend = make_backend("verilator", m, plan, build_root=tmp_path)
    rep = evaluate(backend, x, ds.y_test[:300])
    assert rep["mismatches"] == 0, rep
    assert rep["cycles_per_inference"] == plan.latency_cycles()
    r = backend.sim.run(hw_order(m.cfg, x[:12]), stream=True)
    assert set(np.diff(r.out_cycle)[4:].tolist()) == {plan.interval_cycles()}


def test_conv_plan_rules_and_cycle_formulas():
    """The conv folding rules (SIMD | C or SIMD = J·C with J | K; PE | F; SIMD a multiple of
    the previous PE) with their messages, and the interval / stage formulas."""
    m = _random_conv_model("2x8x8-c6k3p1-mp2-c4k3s2-10")
    ok = AccelPlan(m.cfg, (LayerFold(3, 6, 1), LayerFold(2, 18, 1), LayerFold(1, 4, 1)))
    assert [ok.folds[i].in_lanes(lay) for i, lay in enumerate(m.cfg.layers)] == [2, 6, 4]
    # layer 0: 8x8 windows x ceil(6/3)=2 groups x 8 planes x 18/6=3 slices; the input 128/6
    # transfers; layer 1's generator writes 4x4 pixels of 6 channels one pixel a cycle
    assert ok.stage_cycles() == {"input": 22, "window0": 64, "mac0": 64 * 2 * 8 * 3,
                                 "window1": 16, "mac1": 1 * 2 * 1 * 3, "mac2": 10 * 1}
    assert ok.interval_cycles() == 3072 and ok.input_slices() == 22
    for folds, msg in [
        (((3, 4, 1), (2, 18, 1), (1, 4, 1)),
         r"layer 0: simd = 4 must divide the convolution's input channels C = 2, or be J·C with "
         r"J dividing the kernel K = 3"),
        (((4, 6, 1), (2, 18, 1), (1, 4, 1)),
         r"layer 0: pe = 4 must divide the convolution's output channels F = 6"),
        (((3, 6, 1), (2, 2, 1), (1, 4, 1)),
         r"layer 1: simd = 2 must be a multiple of layer 0's pe = 3"),
        (((3, 6, 1), (2, 18, 1), (1, 3, 1)),
         r"layer 2: simd = 3 must be a multiple of layer 1's pe = 2"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            AccelPlan(m.cfg, tuple(LayerFold(*f) for f in folds))


def _random_conv_plan(rng, convs: int):
    """A random CNN (``convs`` conv layers, then a 5-class output layer) and a random legal
    fold, or None when the draw is not a valid geometry."""
    from bitswarm.hw.plan import conv_simds

    toks = []
    for _ in range(convs):
        k = rng.randint(1, 3 if convs > 1 else 4)
        s, p, q = rng.randint(1, k), rng.randint(0, k - 1), rng.choice([1, 2, 3])
        toks.append(f"c{rng.choice([2, 3, 4, 6])}k{k}s{s}p{p}" + (f"-mp{q}" if q > 1 else ""))
    arch = f"{rng.choice([1, 2, 3])}x{rng.randint(3, 11)}x{rng.randint(3, 11)}-{'-'.join(toks)}-5"
    try:
        cfg = ModelConfig.from_arch(arch, input_bits=rng.choice([1, 2, 8]))
    except ConfigError:
        return None
    folds, prev = [], 1
    for lay in cfg.layers[:convs]:
        simds = [d for d in conv_simds(lay.conv) if LayerFold(1, d, 0).in_lanes(lay) % prev == 0]
        pe = rng.choice([d for d in range(1, lay.n_out + 1) if lay.n_out % d == 0])
        folds.append(LayerFold(pe, rng.choice(simds), rng.randint(0, 1)))
        prev = pe
    folds.append(LayerFold(1, prev, 0))
    return AccelPlan(cfg, tuple(folds))


@pytest.mark.parametrize("convs", [1, 2])
def test_conv_interval_formula_equals_handshake_model(convs):
    """Over random geometries and folds, the closed-form interval of the conv stages (the
    busiest of input, window writers and MAC arrays per image) equals the steady state of the
    handshake-level model streaming images back to back."""
    import random

    from bitswarm.hw.timing import conv_front

    rng, n = random.Random(convs), 0
    while n < 40:
        plan = _random_conv_plan(rng, convs)
        if plan is None:
            continue
        n += 1
        cycles = plan.stage_cycles()
        del cycles[f"mac{convs}"]  # the dense layer after the conv stages
        steady = set(np.diff(conv_front(plan, 7))[3:].tolist())
        assert steady == {max(cycles.values())}, (plan.cfg.arch_string, plan.folds)


@pytest.mark.slow
def test_sim_conv_amaranth_random_geometries():
    """Random CNNs and folds on the Amaranth simulator: scores equal golden, every image's
    latency equals the cycle model."""
    import random

    rng, n = random.Random(7), 0
    while n < 8:
        plan = _random_conv_plan(rng, 1 + n % 2)
        if plan is None or plan.interval_cycles() > 3000:
            continue
        n += 1
        m = _random_conv_model(plan.cfg.arch_string, 1, plan.cfg.layers[0].input_bits, seed=n)
        x = _conv_images(m, 2, seed=n)
        scores, lat = amaranth_infer(Accelerator(m, plan), x.numpy())
        np.testing.assert_array_equal(scores, m.forward(x).numpy())
        assert set(lat) == {plan.latency_cycles()}, (plan.cfg.arch_string, plan.folds)
