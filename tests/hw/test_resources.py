"""bitswarm.hw.resources (resource model, fold optimizer) and the fold file of bitswarm.hw.plan."""

import json

import numpy as np
import pytest
import torch
from bitswarm.golden import ConfigError, ModelConfig
from bitswarm.hw.accel import Accelerator
from bitswarm.hw.plan import AccelPlan, LayerFold, auto_mem_style, load_fold, window_split
from bitswarm.hw.resources import (
    PARTS,
    board_fold,
    bram_count,
    estimate,
    features,
    optimize,
)

from tests.hw.test_accel import _random_model


# -- fold file ------------------------------------------------------------------------------
def test_fold_file_roundtrip(tmp_path):
    m = _random_model([20, 9, 4], 4)
    plan = AccelPlan(m.cfg, (LayerFold(2, 6, 1, "bram"), LayerFold(3, 4, 0)))
    path = plan.write(tmp_path / "f.json")
    d = json.loads(path.read_text())
    assert d == {"format": "bitswarm-fold", "version": 1, "arch": [20, 9, 4],
                 "layers": [{"pe": 2, "simd": 6, "pipeline": 1, "mem": "bram"},
                            {"pe": 3, "simd": 4, "pipeline": 0, "mem": "auto"}]}
    assert load_fold(path, m.cfg) == plan
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        plan.write(path)
    plan.write(path, overwrite=True)
    assert plan.report()["fold"] == d  # every report carries the fold


@pytest.mark.parametrize(("text", "msg"), [
    ("{", "is not valid JSON"),
    ("[]", "holds a JSON object"),
    ('{"format": "x", "version": 1, "layers": []}', "not a fold file"),
    ('{"format": "bitswarm-fold", "version": 9, "layers": []}', "unsupported fold file version 9"),
    ('{"format": "bitswarm-fold", "version": 1, "arch": [1, 2], "layers": []}',
     "is for architecture 1-2, the model is 20-9-4"),
    ('{"format": "bitswarm-fold", "version": 1, "layers": [{"pe": 1, "simd": 1, "pipeline": 0}]}',
     "has 1 layer entries, the model 2 layers"),
    ('{"format": "bitswarm-fold", "version": 1, "layers": [{"pe": 0, "simd": 1, "pipeline": 0},'
     ' {"pe": 1, "simd": 1, "pipeline": 0}]}', "layer 0: pe must be an integer in 1..9, not 0"),
    ('{"format": "bitswarm-fold", "version": 1, "layers": [{"pe": 1, "simd": 1, "pipeline": 0,'
     ' "x": 1}, {"pe": 1, "simd": 1, "pipeline": 0}]}', "unknown fold key"),
    ('{"format": "bitswarm-fold", "version": 1, "layers": [{"pe": 1, "simd": 1, "pipeline": 0,'
     ' "mem": "ssd"}, {"pe": 1, "simd": 1, "pipeline": 0}]}', "mem must be one of"),
    ('{"format": "bitswarm-fold", "version": 1, "layers": [{"pe": 2, "simd": 1, "pipeline": 0},'
     ' {"pe": 1, "simd": 3, "pipeline": 0}]}', "must be a multiple of layer 0's pe = 2"),
    ('{"format": "bitswarm-fold", "version": 1, "layers": [{"pe": "2", "simd": 1, "pipeline": 0},'
     ' {"pe": 1, "simd": 1, "pipeline": 0}]}', "pe must be an integer"),
])
def test_fold_file_malformed(tmp_path, text, msg):
    m = _random_model([20, 9, 4], 4)
    p = tmp_path / "f.json"
    p.write_text(text)
    with pytest.raises(ConfigError, match=msg):
        load_fold(p, m.cfg)


def test_fold_file_missing(tmp_path):
    m = _random_model([20, 9, 4], 4)
    with pytest.raises(ConfigError, match="does not exist"):
        load_fold(tmp_path / "nope.json", m.cfg)


# -- memory styles and block RAM counts ------------------------------------------------------------
def test_bram_count_and_styles():
    assert bram_count(16, 256, "ice40") == 1
    assert bram_count(17, 256, "ice40") == 2
    assert bram_count(1, 4096, "ice40") == 2  # 2048 x 2 aspect
    assert bram_count(36, 512, "ecp5") == 1
    assert bram_count(128, 12, "ecp5") == 4
    assert auto_mem_style(64, 24) == "logic"  # a shallow ROM: LUTs
    assert auto_mem_style(64, 32) == "bram"
    assert auto_mem_style(64, 24, writable=True) == "bram"
    assert auto_mem_style(8, 12, writable=True) == "logic"
    m = _random_model([64, 32, 10], 1, 8)
    plan = AccelPlan(m.cfg, (LayerFold(32, 64, 2), LayerFold(1, 32, 2)))
    assert plan.folds[0].rom_style(m.cfg.layers[0]) == "const"  # one word: folded into gates
    assert plan.folds[1].rom_style(m.cfg.layers[1]) == "logic"  # 10 words


def test_estimate_counts_structure():
    m = _random_model([64, 128, 10], 1, 8)
    plan = AccelPlan(m.cfg, (LayerFold(8, 16, 2), LayerFold(2, 32, 1)))
    st = {s.name: s for s in features(plan, "ecp5")}
    assert list(st) == ["mac0", "thr0", "repack0", "mac1", "thr1", "argmax"]
    # layer 0: 16 groups x 4 slices = 64 ROM words of 8 x 16 = 128 bits, and the input buffer
    # of 3 x 4 slices of 16 8-bit pixels: both block RAM
    assert st["mac0"].brams == bram_count(128, 64, "ecp5") + bram_count(128, 12, "ecp5")
    assert st["mac0"].prod_var == 8 * 16 + 16  # 8 trees of 16 products, the pixel count
    assert st["mac1"].prod_var == 2 * 32
    t = estimate(plan, "ecp5").totals()
    assert t["brams"] == sum(s.brams for s in st.values()) and t["luts"] > 0
    board = estimate(plan, "ecp5", board=True)
    assert board.table()[-1]["stage"] == "uart-link"
    assert board.totals()["luts"] > t["luts"]
    with pytest.raises(ConfigError, match="family must be one of"):
        estimate(plan, "gowin")


# -- the optimizer --------------------------------------------------------------------------------
def test_optimizer_fits_and_balances():
    cfg = ModelConfig.mlp([64, 512, 10], input_bits=8)
    small = optimize(cfg, luts=3000, brams=30, family="ice40")
    big = optimize(cfg, luts=20000, brams=100, family="ecp5")
    for plan, (luts, brams, fam) in ((small, (3000, 30, "ice40")), (big, (20000, 100, "ecp5"))):
        t = estimate(plan, fam, board=True).totals()
        assert t["luts"] <= luts and t["brams"] <= brams
    assert big.interval_cycles() < small.interval_cycles()
    # balanced: the faster plan's layers are within a factor of the slowest
    cyc = big.layer_cycles()
    assert max(cyc) == big.interval_cycles()
    # a target: the most folded plan that reaches it
    tgt = optimize(cfg, luts=20000, brams=100, family="ecp5", target_interval=2000)
    assert tgt.interval_cycles() <= 2000
    assert estimate(tgt, "ecp5", board=True).totals()["luts"] <= \
        estimate(big, "ecp5", board=True).totals()["luts"]
    with pytest.raises(ConfigError, match="even the most folded plan needs"):
        optimize(cfg, luts=100, brams=30, family="ice40")
    with pytest.raises(ConfigError, match="luts must be an integer"):
        optimize(cfg, luts=0, brams=3, family="ice40")


def test_optimizer_conv_rules_and_balance():
    """Conv layers: PE divides F, SIMD divides C (and is a multiple of the previous PE), the
    per-image cycles of every stage meet the target; the window and pool stages are priced."""
    cfg = ModelConfig.from_arch("2x10x10-c8k3p1-mp2-c12k3s2-mp2-10", input_bits=4)
    base = optimize(cfg, luts=10**7, brams=10**4, family="ecp5", target_interval=10**9)
    least = estimate(base, "ecp5", board=True).totals()["luts"]
    for luts in (least + 100, 12000, 40000):
        plan = optimize(cfg, luts=luts, brams=100, family="ecp5")
        assert estimate(plan, "ecp5", board=True).totals()["luts"] <= luts
        for i, (lay, f) in enumerate(zip(cfg.layers, plan.folds, strict=True)):
            if lay.conv is not None:
                cg, j = window_split(lay.conv, f.simd)  # a divisor of C, or J·C with J | K
                assert lay.n_out % f.pe == 0 and cg * f.simd == lay.conv.in_channels * j
            if i:
                assert f.in_lanes(lay) % plan.folds[i - 1].pe == 0
        assert plan.interval_cycles() == max(plan.stage_cycles().values())
    fast = optimize(cfg, luts=40000, brams=100, family="ecp5")
    slow = optimize(cfg, luts=least + 100, brams=100, family="ecp5")
    assert fast.interval_cycles() < slow.interval_cycles()
    tgt = optimize(cfg, luts=40000, brams=100, family="ecp5", target_interval=5000)
    assert fast.interval_cycles() <= tgt.interval_cycles() <= 5000
    with pytest.raises(ConfigError, match="no fold reaches 100 cycles per image"):
        optimize(cfg, luts=40000, brams=100, family="ecp5", target_interval=100)
    assert fast.folds[0].simd == 6  # kernel rows of 3 pixels x 2 channels
    st = {s.name: s for s in features(fast, "ecp5")}
    assert {"window0", "pool0", "window1", "pool1"} <= set(st)
    assert st["window0"].ffs >= 4 * 10 * 2 * 4 // fast.folds[0].simd  # R rows x W x C x B


def test_board_fold_digits_cnn_fits_icebreaker_and_ulx3s():
    """The digits CNN: the iCEBreaker fold is the most folded that fits (line buffers in block
    RAM), the ULX3S fold the fastest the first layer allows (16 channels, 3-pixel slices)."""
    cfg = ModelConfig.from_arch("1x8x8-c16k3p1-mp2-c32k3p1-mp2-10")
    for board in ("icebreaker", "ulx3s"):
        plan = board_fold(cfg, board)
        part = PARTS[board]
        t = estimate(plan, part["family"], board=True).totals()
        assert t["luts"] <= 0.75 * part["luts"] and t["brams"] <= part["brams"]
    assert board_fold(cfg, "ulx3s").interval_cycles() == 64 * 8 * 3


def test_board_fold_default_digits_fits_icebreaker():
    cfg = ModelConfig.mlp([64, 512, 10], input_bits=8)
    plan = board_fold(cfg, "icebreaker")
    t = estimate(plan, "ice40", board=True).totals()
    assert t["luts"] <= PARTS["icebreaker"]["luts"] and t["brams"] <= PARTS["icebreaker"]["brams"]
    with pytest.raises(ConfigError, match="board must be one of"):
        board_fold(cfg, "de10")


# -- fitted plans stream at the modeled interval (Verilator) ------------------------------------
@pytest.mark.verilator
@pytest.mark.parametrize("case", [
    ([64, 48, 10], 1, 8, 1.5, "ice40"),
    ([40, 24, 16, 6], 2, 1, 2.0, "ice40"),
    ([30, 20, 5], 1, 4, 4.0, "ecp5"),
])
def test_sim_fitted_plan_interval_equals_model(case, tmp_path):
    """Plans from the optimizer (budgets a multiple of the most folded plan's estimate)."""
    from bitswarm.sim.bulk import VerilatorAccelerator

    arch, swarm, bits, factor, fam = case
    m = _random_model(arch, swarm, bits, seed=len(arch))
    base = optimize(m.cfg, luts=10**7, brams=10**4, family=fam, board=False,
                    target_interval=10**9)
    luts = int(factor * estimate(base, fam).totals()["luts"])
    plan = optimize(m.cfg, luts=luts, brams=30, family=fam, board=False)
    assert plan.interval_cycles() < base.interval_cycles()
    va = VerilatorAccelerator(Accelerator(m, plan), build_root=tmp_path)
    x = torch.randint(0, 256, (60, arch[0]), generator=torch.Generator().manual_seed(3),
                      dtype=torch.uint8)
    r = va.run(x.numpy(), stream=True)
    np.testing.assert_array_equal(r.scores, m.forward(x).numpy())
    assert set(np.diff(r.out_cycle)[5:].tolist()) == {plan.interval_cycles()}
    iso = va.run(x[:5].numpy())
    assert set(iso.latencies.tolist()) == {plan.latency_cycles()}


# -- the on-chip trainer's resource model and fitter -----------------------------------------------
def _trainer_cfg(arch, swarm=1):
    from bitswarm.golden.flip import FlipRuleConfig

    return ModelConfig.mlp(arch, input_bits=8, swarm=swarm, flip=FlipRuleConfig(acc_width=8, threshold=30))


def test_trainer_estimate_tracks_the_fold():
    from bitswarm.hw.plan import TrainerFold
    from bitswarm.hw.resources import estimate_trainer

    cfg = _trainer_cfg([64, 32, 10])
    narrow = estimate_trainer(cfg, TrainerFold(((1, 8), (1, 4))), "ecp5").totals()
    wide = estimate_trainer(cfg, TrainerFold(((4, 64), (2, 32))), "ecp5").totals()
    assert wide["luts"] > 4 * narrow["luts"] and wide["ffs"] > narrow["ffs"]
    # memories: pe banks of simd·(1 + A)-bit words; a shallow ECP5 bank is distributed RAM
    mem = {s.name: s for s in estimate_trainer(cfg, TrainerFold(((1, 16), (1, 8))), "ice40").stages}
    assert mem["train-mem0"].brams == bram_count(16 * 9, 32 * 4, "ice40")
    deep = {s.name: s for s in estimate_trainer(cfg, TrainerFold(((2, 64), (1, 32))), "ecp5").stages}
    assert deep["train-mem1"].brams == 0 and deep["train-mem1"].other > 0  # 10 words: LUT RAM
    with pytest.raises(ConfigError, match="family"):
        estimate_trainer(cfg, None, "xilinx")


def test_trainer_fitter_fits_and_is_fastest_of_its_steps():
    from bitswarm.hw.plan import cycles_per_sample
    from bitswarm.hw.resources import board_trainer_fold, estimate_trainer, optimize_trainer

    cfg = _trainer_cfg([64, 24, 10])
    fold = board_trainer_fold(cfg, "icebreaker")
    t = estimate_trainer(cfg, fold, "ice40", board=True).totals()
    assert t["luts"] <= int(PARTS["icebreaker"]["luts"] * 0.9) and t["brams"] <= PARTS["icebreaker"]["brams"]
    big = board_trainer_fold(cfg, "ulx3s")
    assert cycles_per_sample(cfg, None, big).total < cycles_per_sample(cfg, None, fold).total
    with pytest.raises(ConfigError, match="even the most folded trainer"):
        optimize_trainer(_trainer_cfg([784, 256, 10]), luts=3000, brams=10, family="ice40")
    with pytest.raises(ConfigError, match="luts must be"):
        optimize_trainer(cfg, luts=0, brams=10, family="ice40")
    with pytest.raises(ConfigError, match="board must be"):
        board_trainer_fold(cfg, "de10")
