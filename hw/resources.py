"""Resource model and fold optimizer: LUT, FF and block RAM per stage, as formulas of the fold.

:func:`estimate` prices an :class:`~bitswarm.hw.plan.AccelPlan` stage by stage (each MAC array,
threshold, repack stage, the argmax and, for board builds, the UART link) for an FPGA family.
Flip-flops and block RAMs are counted from the structure the gateware builds (the same
geometry helpers of :mod:`bitswarm.hw.plan` the RTL uses; memory styles from
:func:`~bitswarm.hw.plan.auto_mem_style`); LUTs are a linear model of structural features,

    LUT = a · (product bits, weights from a ROM) + a_c · (product bits, constant weights)
          + b · (other datapath bits) [+ d · FF on iCE40, whose logic cells hold one FF each]
          + c,

with the coefficients of :data:`COEFFS` fitted by least squares to post-place-and-route counts
(``bench/calibrate_resources.py``, results in ``bench/results/resources.{json,md}``). The LUT
figure is the one the bitstream reports: iCE40 logic cells (``ICESTORM_LC``), ECP5 LUT4 slots
(``TRELLIS_COMB``).

:func:`optimize` is the fold optimizer (FINN's SetFolding idea): starting from the most folded
plan it repeatedly unfolds the slowest layer (the next PE or SIMD step that lowers its cycles
per vector), keeping every plan that fits the budget, until the target throughput is met or
nothing more fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bitswarm.golden.errors import ConfigError
from bitswarm.golden.layer import LayerConfig
from bitswarm.golden.model import PIXEL_BITS, ModelConfig

from .plan import (
    AccelPlan,
    LayerFold,
    auto_mem_style,
    class_width,
    conv_outputs,
    conv_simds,
    line_mem_style,
    line_rows,
    trainer_mem_attrs,
    tree_depth,
    tree_terms,
    window_split,
)

__all__ = ["FAMILIES", "PARTS", "COEFFS", "StageEstimate", "Estimate", "estimate", "optimize",
           "features", "bram_count", "board_fold", "FILL", "TRAINER_COEFFS",
           "trainer_features", "estimate_trainer", "optimize_trainer", "board_trainer_fold",
           "TRAINER_FILL"]

#: Fraction of a part's LUTs the optimizer plans for by default (room for routing and timing).
FILL = 0.75

FAMILIES = ("ice40", "ecp5")

#: Budgets of the supported boards' parts: LUT-metric cells and block RAMs.
PARTS = {
    "icebreaker": {"family": "ice40", "part": "iCE40 UP5K", "luts": 5280, "brams": 30},
    "ulx3s": {"family": "ecp5", "part": "ECP5-85F", "luts": 83640, "brams": 208},
    # Arty A7-35T: 20,800 LUT6 and 50 RAMB36 (100 RAMB18); priced with the ECP5 LUT4 model
    # (a LUT6 holds about two LUT4s), 18 kbit blocks like the DP16KD.
    "arty": {"family": "ecp5", "part": "XC7A35T (LUT4-equivalent)", "luts": 41600, "brams": 100},
}

#: LUT coefficients per family (a, a_c, b, d, c; see the module docstring), fitted by
#: ``bench/calibrate_resources.py --fit`` (non-negative least squares on relative error) to the
#: post-place-and-route counts of its calibration builds (``bench/results/resources.md``). On
#: iCE40 the fit puts everything on the flip-flop count: the logic cells track the registers
#: (every tree level and memory read is registered, each LC holds one LUT and one FF).
COEFFS = {
    "ice40": {"a": 0.0, "a_c": 0.0, "b": 0.0, "d": 1.503, "c": 265.2882},
    "ecp5": {"a": 2.1412, "a_c": 1.3277, "b": 1.4245, "d": 0.0, "c": 0.0},
}


def bram_count(width: int, depth: int, family: str) -> int:
    """Block RAMs for a ``width`` × ``depth`` memory: iCE40 SB_RAM40_4K (256×16 … 2048×2),
    ECP5 DP16KD (512×36 … 16384×1); the cheapest aspect ratio."""
    if family == "ice40":
        shapes = [(256, 16), (512, 8), (1024, 4), (2048, 2)]
    else:
        shapes = [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)]
    return min(-(-width // w) * -(-depth // d) for d, w in shapes)


@dataclass
class StageEstimate:
    """One stage's resources and the structural features its LUT count is modelled from."""

    name: str
    ffs: int = 0
    brams: int = 0
    prod_var: int = 0  # product bits whose weights come from a ROM
    prod_const: int = 0  # product bits with constant weights (folded into the gates)
    other: int = 0  # other datapath bits (adders, muxes, compares, logic memories)
    luts: int = 0

    def price(self, k: dict) -> None:
        self.luts = round(k["a"] * self.prod_var + k["a_c"] * self.prod_const
                          + k["b"] * self.other + k["d"] * self.ffs)


@dataclass
class Estimate:
    family: str
    stages: list[StageEstimate] = field(default_factory=list)
    const: int = 0

    def totals(self) -> dict:
        return {"luts": self.const + sum(s.luts for s in self.stages),
                "ffs": sum(s.ffs for s in self.stages),
                "brams": sum(s.brams for s in self.stages)}

    def table(self) -> list[dict]:
        return [{"stage": s.name, "luts": s.luts, "ffs": s.ffs, "brams": s.brams}
                for s in self.stages]


def _tree_regs(n_bits: int, depth: int, pipeline: int) -> int:
    """Flip-flops in one popcount tree's pipeline registers (mirrors the gateware's tree)."""
    reg_after = {((i + 1) * depth) // pipeline for i in range(pipeline)} if pipeline else set()
    nodes = []
    for g in range(0, n_bits, 4):
        n = min(4, n_bits - g)
        nodes.append(n)
    total = sum(n.bit_length() for n in nodes) if 1 in reg_after else 0
    level = 1
    while level < depth:
        nxt = [nodes[j] + nodes[j + 1] for j in range(0, len(nodes) - 1, 2)]
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
        level += 1
        if level in reg_after:
            total += sum(n.bit_length() for n in nodes)
    return total


def _memory(width: int, depth: int, style: str, family: str, writable: bool) -> tuple[int, int, int]:
    """``(ffs, brams, other_luts)`` of a memory in its style."""
    if style == "bram":
        return 0, bram_count(width, depth, family), 0
    if writable:  # flip-flops, a read multiplexer and the read register
        return width * depth + width, 0, width * max(1, depth // 3)
    # a constant table in LUTs: each output bit is a function of the address
    return width, 0, width * max(1, -(-depth // 16))


def _mac(i: int, lay: LayerConfig, f: LayerFold, family: str) -> StageEstimate:
    st = StageEstimate(f"mac{i}")
    pe, simd, B = f.pe, f.simd, lay.input_bits
    terms = tree_terms(lay, simd)
    ternary = lay.weights == "ternary"
    n_u = (pe if ternary else (1 if B > 1 else 0))
    u_terms = simd
    depth = tree_depth(terms)
    prod = pe * terms + n_u * u_terms
    style = f.rom_style(lay)
    if style == "const":
        st.prod_const = prod
    else:
        st.prod_var = prod
        ffs, brams, other = _memory(f.rom_width(lay), f.rom_depth(lay), style, family, False)
        if style == "bram" and f.buffered(lay):
            ffs += f.rom_width(lay)  # the output register beside the block RAM
        st.ffs += ffs
        st.brams += brams
        st.other += other
    st.ffs += pe * _tree_regs(terms, depth, f.pipeline) + n_u * _tree_regs(u_terms, depth,
                                                                            f.pipeline)
    nf, sf = f.nf(lay), f.sf(lay)
    ctl = 5 + max(1, (B - 1).bit_length()) + max(1, (nf - 1).bit_length())
    st.ffs += ctl * (1 + len({((k + 1) * depth) // f.pipeline for k in range(f.pipeline)}))
    xmax = lay.x_max
    t_w = (lay.n_in * xmax * (1 if ternary else lay.swarm)).bit_length()
    u_w = (lay.n_in * xmax).bit_length()
    accs = pe * t_w + n_u * u_w
    accumulate = sf * B > 1
    st.ffs += accs * (2 if accumulate else 1)
    st.other += accs * (2 if accumulate else 0) + pe * lay.z_width  # add/mux, 2T - S·U
    gw = max(1, (nf - 1).bit_length())
    st.ffs += 2 * (pe * lay.z_width + gw + 1) + 4  # skid buffer, count, enable
    st.other += pe * lay.z_width + 3 * (nf * sf).bit_length() + 40  # head/tail mux, sequencer
    shape = f.buffer_shape(lay)
    if shape is not None:
        w, d = shape
        ffs, brams, other = _memory(w, d, auto_mem_style(w, d, writable=True), family, True)
        st.ffs += ffs + 2 * w + 2 * d.bit_length() + 8  # storage, write and read registers
        st.brams += brams
        st.other += other + 2 * d.bit_length() + 12
    else:
        st.ffs += B * simd  # the slice register
    if B > 1:
        st.other += simd * max(1, B // 4)  # bit-plane select
    return st


def _threshold(i: int, lay: LayerConfig, pe: int, family: str) -> StageEstimate:
    st = StageEstimate(f"thr{i}")
    folds = -(-lay.n_out // pe)
    tw = lay.z_width  # theta width (signed_width(z_bound)) ~ z_width - 1, plus invert
    st.ffs = (pe * lay.z_width if lay.output else pe) + 1 + 2 * max(1, (folds - 1).bit_length())
    st.other = pe * lay.z_width + 4
    if folds > 1:
        ffs, brams, other = _memory(pe * tw, folds, auto_mem_style(pe * tw, folds), family, False)
        st.ffs += ffs
        st.brams += brams
        st.other += other
    return st


def _repack(i: int, n: int, pe: int, simd: int) -> StageEstimate:
    st = StageEstimate(f"repack{i}")
    nf = -(-n // pe)
    st.ffs = 2 * simd + 1 + 2 * max(1, (nf - 1).bit_length())
    per = simd // pe
    tail = nf - (-(-n // simd) - 1) * per
    st.other = simd * (2 if tail != per else 1) + 8
    return st


def _window(i: int, lay: LayerConfig, f: LayerFold, family: str) -> StageEstimate:
    """The sliding-window generator: its line buffer (``J`` banks of ``R·ceil((W + P_J) / J)·CG``
    words of ``SIMD / J·B`` bits), the window walk's counters and the address arithmetic."""
    g = lay.conv
    st = StageEstimate(f"window{i}")
    R, (cg, j) = line_rows(g), window_split(g, f.simd)
    off = g.pad if j > 1 else 0
    width, depth = f.in_lanes(lay) * lay.input_bits, R * -(-(g.in_width + off) // j) * cg
    ffs, brams, other = _memory(width, depth, line_mem_style(width, depth), family, True)
    st.ffs, st.brams, st.other = j * ffs, j * brams, j * other  # J banks
    if j > 1:
        st.other += j * j * width  # the banks' rotation to the lanes
    ab = max(1, (depth - 1).bit_length())
    pos = (max(g.in_height, g.in_width) + g.kernel + g.stride + g.pad).bit_length() + 1
    hc, wc = conv_outputs(g)
    counters = sum(max(1, (n - 1).bit_length()) for n in (hc, wc, g.kernel, g.kernel, cg, R,
                                                           g.in_width, cg))
    st.ffs += counters + 2 * pos + ab + 2 * R.bit_length() + 3  # walk, origin, ring, flags
    st.other += 3 * ab + 8 * pos + width + 16  # address adders, bounds compares, pad mux
    return st


def _pool(i: int, lay: LayerConfig, pe: int) -> StageEstimate:
    """The pooling unit: a row buffer of ``W_q·F`` bits, an OR per lane, an output register."""
    g = lay.conv
    st = StageEstimate(f"pool{i}")
    nf = lay.n_out // pe
    depth = max(2, g.pooled_width * nf)
    hc, wc = conv_outputs(g)
    counters = sum(max(1, (n - 1).bit_length()) for n in (nf, wc, hc, g.pool, g.pool,
                                                           g.pooled_width))
    st.ffs = pe * depth + pe + 1 + counters
    st.other = pe * max(1, depth // 3) + 2 * pe + 2 * depth.bit_length() + 8
    return st


def _argmax(lay: LayerConfig, pe: int) -> StageEstimate:
    """The serializer (``pe`` lanes to one) and the one-lane argmax with all scores."""
    st = StageEstimate("argmax")
    c, w = lay.n_out, lay.z_width
    cw = class_width(c)
    st.ffs = pe * w + 8 + (2 * c - 1) * w + 2 * (w + cw) + 1 + 2 * max(1, (c - 1).bit_length())
    st.other = pe * w + 2 * w + c * w + c + 8
    return st


def _link(cfg: ModelConfig, simd0: int) -> StageEstimate:
    """The board's UART link: receiver, transmitter, frame parser, reply shift register."""
    st = StageEstimate("uart-link")
    last = cfg.layers[-1]
    reply = 2 + last.n_out * -(-last.z_width // 8)
    st.ffs = PIXEL_BITS * simd0 + 8 * reply + 90
    st.other = PIXEL_BITS * simd0 + 8 * reply + 120
    return st


def features(plan: AccelPlan, family: str, *, board: bool = False) -> list[StageEstimate]:
    """The unpriced stages (FF, BRAM and LUT features) of ``plan``."""
    if family not in FAMILIES:
        raise ConfigError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    lays, folds = plan.cfg.layers, plan.folds
    out = []
    for i, (lay, f) in enumerate(zip(lays, folds, strict=True)):
        if lay.conv is not None:
            out.append(_window(i, lay, f, family))
        out.append(_mac(i, lay, f, family))
        out.append(_threshold(i, lay, f.pe, family))
        if lay.conv is not None and lay.conv.pool > 1:
            out.append(_pool(i, lay, f.pe))
        if not lay.output:
            out.append(_repack(i, lay.out_size, f.pe, folds[i + 1].simd))
    out.append(_argmax(lays[-1], folds[-1].pe))
    if board:
        out.append(_link(plan.cfg, folds[0].simd))
    return out


def estimate(plan: AccelPlan, family: str, *, board: bool = False,
             coeffs: dict | None = None) -> Estimate:
    """Resources of ``plan`` on ``family`` (``board``: with the UART link of a board build)."""
    stages = features(plan, family, board=board)
    k = coeffs or COEFFS[family]
    est = Estimate(family, stages, const=round(k["c"]))
    for s in est.stages:
        s.price(k)
    return est


# -- the fold optimizer ---------------------------------------------------------------------------
def _divisor_steps(n: int) -> list[int]:
    """Candidate PE / SIMD values for a dimension of ``n``: every value whose fold count
    ``ceil(n / v)`` differs (the smallest v for each fold count), ascending."""
    vals = {}
    for v in range(1, n + 1):
        vals.setdefault(-(-n // v), v)
    return sorted(vals.values())


def _pipeline_for(lay: LayerConfig, simd: int, stages_per_level: float) -> int:
    """Tree registers: ``stages_per_level`` of the levels (1.0: every level), at least one."""
    d = tree_depth(tree_terms(lay, simd))
    return max(1, min(d, round(d * stages_per_level)))


def _candidates(lay: LayerConfig, prev: int, target: int):
    """(PE, SIMD) pairs of ``lay`` that take at most ``target`` cycles per image, SIMD a
    multiple of the previous layer's PE ``prev``: for a dense layer the smallest SIMD per PE;
    for a convolution every PE dividing F with the smallest SIMD (:func:`conv_simds`) whose MAC
    array and window writer both meet the target."""
    b = lay.input_bits
    if lay.conv is None:
        for p in _divisor_steps(lay.n_out):
            nf = -(-lay.n_out // p)
            if nf * b > target:
                continue
            need_sf = target // (nf * b)  # slices allowed
            if lay.output and p > b * need_sf:
                continue  # the serialized scores of a group must fit its cycles
            s = -(-lay.n_in // need_sf)
            s = -(-s // prev) * prev  # a multiple of the previous PE
            if s <= lay.n_in:
                yield p, s
        return
    simds = [d for d in conv_simds(lay.conv) if LayerFold(1, d, 0).in_lanes(lay) % prev == 0]
    for p in (d for d in range(1, lay.n_out + 1) if lay.n_out % d == 0):
        for s in simds:
            f = LayerFold(p, s, 0)
            if f.cycles_per_image(lay) <= target and lay.conv.in_size // f.in_lanes(lay) <= target:
                yield p, s
                break


def _fold_for(cfg: ModelConfig, target: int, spl: float, family: str = "ecp5",
              bram_weight: float = 0.0) -> AccelPlan | None:
    """The most folded plan whose every stage takes at most ``target`` cycles per image:
    per layer (in order, the repack rule ties SIMD to the previous PE) the (PE, SIMD) of the
    least cost — product bits plus ``bram_weight`` per weight-ROM block RAM (the part's LUTs per
    block RAM, so both resources weigh by their share of the chip) — then the fewest PE
    (SetFolding: SIMD before PE)."""
    folds: list[LayerFold] = []
    for lay in cfg.layers:
        prev = folds[-1].pe if folds else 1
        best = None
        for p, s in _candidates(lay, prev, target):
            cost = tree_terms(lay, s) * p
            if bram_weight:
                f = LayerFold(p, s, 0)
                if f.rom_style(lay) == "bram":
                    cost += bram_weight * bram_count(f.rom_width(lay), f.rom_depth(lay), family)
            key = (cost, p)
            if best is None or key < best[0]:
                best = (key, p, s)
        if best is None:
            return None
        _, p, s = best
        folds.append(LayerFold(p, s, _pipeline_for(lay, s, spl)))
    try:
        return AccelPlan(cfg, tuple(folds))
    except ConfigError:
        return None


def _check_budget(luts, brams) -> None:
    """One-line :class:`ConfigError` unless ``luts`` >= 1 and ``brams`` >= 0 are integers."""
    for name, v, lo in (("luts", luts, 1), ("brams", brams, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, not {v!r}")


def optimize(cfg: ModelConfig, *, luts: int, brams: int, family: str,
             target_interval: int | None = None, board: bool = True,
             stages_per_level: float = 1.0) -> AccelPlan:
    """The fold with the smallest streaming interval whose estimate fits ``luts`` / ``brams``
    on ``family`` — or, with ``target_interval``, the most folded plan (fewest resources) that
    meets it, if it fits.

    As FINN's SetFolding: for a target number of cycles per image every layer gets the most
    folded (PE, SIMD) that meets it (fewest product bits; a second search also weighs the weight
    ROMs' block RAMs by the budget's LUTs per block RAM, which wins where block RAM binds), SIMD
    widened before PE, so the layers come out balanced;
    a binary search over the achievable targets finds the fastest one that fits the budget.
    ``stages_per_level`` sets the adder-tree registers (default 1.0: every level, for Fmax; on
    iCE40 a register shares its logic cell with the LUT before it).

    Raises
    ------
    ConfigError
        A bad budget, or not even the most folded plan fits (the message gives its estimate).
    """
    _check_budget(luts, brams)
    if target_interval is not None and (not isinstance(target_interval, int)
                                        or target_interval < 1):
        raise ConfigError(f"target interval must be a positive integer, not {target_interval!r}")

    def key(plan):
        n = estimate(plan, family, board=board).totals()["luts"]
        return (n,) if target_interval is not None else (plan.interval_cycles(), n)

    plans = [_search(cfg, family, board, luts, brams, target_interval, stages_per_level, 0.0)]
    try:  # weighing block RAMs too: the better plan where block RAM binds
        plans.append(_search(cfg, family, board, luts, brams, target_interval, stages_per_level,
                             luts / max(1, brams)))
    except ConfigError:
        pass
    return min(plans, key=key)


def _search(cfg, family, board, luts, brams, target_interval, stages_per_level, bw):
    """:func:`optimize` for one cost weighting ``bw`` of block RAMs against product bits."""

    def fits(plan):
        t = estimate(plan, family, board=board).totals()
        return t["luts"] <= luts and t["brams"] <= brams

    def fold_for(target):
        return _fold_for(cfg, target, stages_per_level, family, bw)

    slowest = fold_for(1 << 62)
    if not fits(slowest):
        t = estimate(slowest, family, board=board).totals()
        raise ConfigError(f"even the most folded plan needs ~{t['luts']} LUTs and {t['brams']} "
                          f"BRAMs; the budget is {luts} LUTs and {brams} BRAMs")
    if target_interval is not None:
        plan = fold_for(target_interval)
        if plan is None:
            raise ConfigError(f"no fold reaches {target_interval} cycles per image")
        if not fits(plan):
            t = estimate(plan, family, board=board).totals()
            raise ConfigError(f"the most folded plan at {plan.interval_cycles()} cycles per image "
                              f"needs ~{t['luts']} LUTs and {t['brams']} BRAMs; the budget is "
                              f"{luts} LUTs and {brams} BRAMs")
        return plan
    targets = sorted({f.cycles_per_image(lay) for lay in cfg.layers
                      for f in (LayerFold(p, s, 0) for p in _divisor_steps(lay.n_out)
                                for s in _divisor_steps(lay.n_in))}
                     | {f.cycles_per_image(lay) for lay in cfg.layers if lay.conv is not None
                        for f in (LayerFold(p, s, 0) for p in _divisor_steps(lay.n_out)
                                  for s in conv_simds(lay.conv))}
                     | {lay.conv.in_size // LayerFold(1, s, 0).in_lanes(lay)
                        for lay in cfg.layers if lay.conv is not None
                        for s in conv_simds(lay.conv)})
    targets = [t for t in targets if t <= slowest.interval_cycles()]
    lo, hi, best = 0, len(targets) - 1, slowest
    while lo <= hi:  # smallest target (fastest plan) that fits
        mid = (lo + hi) // 2
        plan = fold_for(targets[mid])
        if plan is not None and fits(plan):
            best, hi = plan, mid - 1
        else:
            lo = mid + 1
    return best


def board_fold(cfg: ModelConfig, board: str, *, fill: float = FILL,
               target_interval: int | None = None) -> AccelPlan:
    """The optimizer's fold for ``board`` (a key of :data:`PARTS`), planning for ``fill`` of
    its LUTs and all of its block RAMs, UART link included."""
    if board not in PARTS:
        raise ConfigError(f"board must be one of {', '.join(PARTS)}, not {board!r}")
    if not 0 < fill <= 1:
        raise ConfigError(f"fill must be in (0, 1], not {fill!r}")
    p = PARTS[board]
    return optimize(cfg, luts=int(p["luts"] * fill), brams=p["brams"], family=p["family"],
                    target_interval=target_interval, board=True)


# -- the on-chip trainer (hw.onchip.OnChipTrainer) ----------------------------------------------
#: LUT coefficients of the trainer model per family: LUT = b · (datapath bits) + d · FF + c,
#: fitted by ``bench/calibrate_resources.py --trainer --fit`` to post-place-and-route counts of
#: trainer board builds (``bench/results/resources.md``, trainer section).
TRAINER_COEFFS = {
    "ice40": {"b": 2.0181, "d": 0.0, "c": 1365.9443},
    "ecp5": {"b": 0.3404, "d": 1.4297, "c": 0.0},
}


def _train_memory(width: int, depth: int, family: str) -> tuple[int, int, int]:
    """``(ffs, brams, other_luts)`` of a trainer memory (read-modify-write, one read and one
    write port): block RAM where :func:`~bitswarm.hw.plan.trainer_mem_attrs` asks for it;
    the shallow rest on ECP5 in distributed RAM (``TRELLIS_DPR16X4``: 16 words x 4 bits in two
    LUT4 slots), on iCE40 as synthesis maps it."""
    if trainer_mem_attrs(width, depth):
        return 0, bram_count(width, depth, family), 0
    if family == "ecp5":
        return 0, 0, 2 * -(-width // 4) * -(-depth // 16)
    return _memory(width, depth, auto_mem_style(width, depth, writable=True), family, True)


def _trainer_layer(i: int, cfg: ModelConfig, fold, family: str) -> list[StageEstimate]:
    """The stages of trainer layer ``i`` (mirrors :mod:`bitswarm.hw.onchip`'s structure): the
    ``pe`` banks of weight words with their accumulators, the forward popcount trees, the
    integrate-and-fire lanes of the update, the LFSR jump-ahead, the backward deltas and the
    threshold banks."""
    lay = cfg.layers[i]
    f = cfg.flip
    pe, simd = fold.pe(i), fold.simd(i)
    a, b, s_, m_, n_ = f.acc_width, lay.input_bits, lay.swarm, lay.n_out, lay.n_in
    lanes = pe * simd
    word = simd * (1 + a)
    depth = (s_ * m_ // pe) * (n_ // simd)
    mem = StageEstimate(f"train-mem{i}")
    ffs, brams, other = _train_memory(word, depth, family)
    mem.ffs, mem.brams, mem.other = pe * ffs, pe * brams, pe * other
    mem.ffs += 2 * pe * word  # the read-word register and the write-back register
    fwd = StageEstimate(f"train-fwd{i}")
    terms = simd * b
    fwd.other = pe * (terms + 2 * simd + 2 * lay.z_width)  # XNOR/AND, tree, z accumulate, compare
    k = fold.tree_stages(cfg, i)
    fwd.ffs = pe * (k * (simd * b).bit_length() * 2 + 2 * lay.z_width) + (n_ * b if i == 0 else 0)
    upd = StageEstimate(f"train-upd{i}")
    upd.other = lanes * (3 * a + 6)  # vote, add, saturate, fire compare, refractory mux
    upd.ffs = lanes * 2 + pe * 4  # registered errors / input signs per lane
    if f.uses_lfsr:
        db, w = f.lfsr.draw_bits, f.lfsr.width
        upd.other += lanes * db * max(1, w // 4)  # jump-ahead XOR networks
        upd.ffs += lanes * db + w
    out = [mem, fwd, upd]
    thr = StageEstimate(f"train-thr{i}")
    tdepth = max(2, m_ // pe)
    ffs, brams, other = _train_memory(lay.z_width, tdepth, family)
    thr.ffs, thr.brams = pe * ffs + (0 if lay.output else 2 * m_), pe * brams
    thr.other = pe * (other + 3 * lay.z_width) + (0 if lay.output else 2 * m_)
    out.append(thr)
    if i > 0:
        bwd = StageEstimate(f"train-bwd{i}")
        dw = (s_ * m_).bit_length() + 1
        bwd.ffs = n_ * dw + 2 * n_
        bwd.other = n_ * (dw + 4) + simd * dw * pe
        out.append(bwd)
    return out


def trainer_features(cfg: ModelConfig, fold=None, family: str = "ecp5", *,
                     board: bool = False) -> list[StageEstimate]:
    """The unpriced stages of the on-chip trainer for ``cfg`` at ``fold``
    (:class:`~bitswarm.hw.plan.TrainerFold`; default one whole row per cycle)."""
    from .plan import TrainerFold

    if family not in FAMILIES:
        raise ConfigError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    fold = TrainerFold.resolve(cfg, fold)
    out = []
    for i in range(len(cfg.layers)):
        out += _trainer_layer(i, cfg, fold, family)
    last = cfg.layers[-1]
    err = StageEstimate("train-err")
    err.ffs = 3 * last.n_out * last.z_width + 2 * last.n_out
    err.other = 3 * last.n_out * last.z_width
    out.append(err)
    if board:
        link = StageEstimate("uart-link")
        link.ffs = 2 * PIXEL_BITS * cfg.layers[0].n_in + 120
        link.other = PIXEL_BITS * cfg.layers[0].n_in + 200
        out.append(link)
    return out


def estimate_trainer(cfg: ModelConfig, fold=None, family: str = "ecp5", *, board: bool = False,
                     coeffs: dict | None = None) -> Estimate:
    """Resources of the on-chip trainer for ``cfg`` at ``fold`` on ``family``."""
    stages = trainer_features(cfg, fold, family, board=board)
    k = coeffs or TRAINER_COEFFS[family]
    est = Estimate(family, stages, const=round(k["c"]))
    for s in est.stages:
        s.luts = round(k["b"] * s.other + k["d"] * s.ffs)
    return est


def optimize_trainer(cfg: ModelConfig, *, luts: int, brams: int, family: str,
                     board: bool = True, in_lanes: int | None = None):
    """The trainer fold with the fewest cycles per sample whose estimate fits ``luts`` /
    ``brams``: from the most folded fold (``pe = 1``, the smallest ``simd``) the layer with the
    most issue cycles is unfolded one step at a time (``simd`` up to ``N`` first, then ``pe``),
    keeping the fastest fold that fits, until no step fits.

    Raises
    ------
    ConfigError
        A bad budget, or not even the most folded trainer fits (the message gives its estimate).
    """
    from .plan import TrainerFold, cycles_per_sample

    _check_budget(luts, brams)
    lays = cfg.layers
    divs = [([d for d in range(1, lay.n_out + 1) if lay.n_out % d == 0],
             [d for d in range(1, lay.n_in + 1) if lay.n_in % d == 0]) for lay in lays]

    def fits(fold):
        t = estimate_trainer(cfg, fold, family, board=board).totals()
        return t["luts"] <= luts and t["brams"] <= brams

    def cycles(fold):
        return cycles_per_sample(cfg, in_lanes, fold).total

    state = [[0, 0] for _ in lays]  # indices into (pe divisors, simd divisors)
    fold = TrainerFold(tuple((divs[i][0][0], divs[i][1][0]) for i in range(len(lays))))
    if not fits(fold):
        t = estimate_trainer(cfg, fold, family, board=board).totals()
        raise ConfigError(f"even the most folded trainer needs ~{t['luts']} LUTs and {t['brams']} "
                          f"BRAMs; the budget is {luts} LUTs and {brams} BRAMs")
    best = fold
    while True:
        order = sorted(range(len(lays)), key=lambda i: -fold.steps(cfg, i))
        moved = False
        for i in order:  # unfold the busiest layer that can take a step and still fits
            pi, si = state[i]
            if si + 1 < len(divs[i][1]):
                cand = (pi, si + 1)
            elif pi + 1 < len(divs[i][0]):
                cand = (pi + 1, si)
            else:
                continue
            trial = list(fold.layers)
            trial[i] = (divs[i][0][cand[0]], divs[i][1][cand[1]])
            tf = TrainerFold(tuple(trial))
            if fits(tf):
                state[i] = list(cand)
                fold, moved = tf, True
                if cycles(fold) < cycles(best):
                    best = fold
                break
        if not moved:
            return best


#: Fraction of a part's LUTs the trainer fitter plans for by default, per family: on iCE40 the
#: trainer's fixed part (input register, argmax, control, UART link: ~4.2k of the UP5K's 5,280
#: cells at the smallest folds, ``bench/results/resources.md``) leaves no room at 75 %; a
#: 64-24-10 trainer placed at 89 %.
TRAINER_FILL = {"ice40": 0.9, "ecp5": FILL}


def board_trainer_fold(cfg: ModelConfig, board: str, *, fill: float | None = None,
                       in_lanes: int | None = None):
    """The trainer fold :func:`optimize_trainer` chooses for ``board`` (a key of
    :data:`PARTS`): ``fill`` of its LUTs (default :data:`TRAINER_FILL` of its family), all of
    its block RAMs, the UART link included."""
    if board not in PARTS:
        raise ConfigError(f"board must be one of {', '.join(PARTS)}, not {board!r}")
    if fill is None:
        fill = TRAINER_FILL[PARTS[board]["family"]]
    if not 0 < fill <= 1:
        raise ConfigError(f"fill must be in (0, 1], not {fill!r}")
    p = PARTS[board]
    return optimize_trainer(cfg, luts=int(p["luts"] * fill), brams=p["brams"], family=p["family"],
                            board=True, in_lanes=in_lanes)
