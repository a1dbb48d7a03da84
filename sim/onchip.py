"""On-chip training on the virtual accelerator, and its cycle model (SPEC.md §12).

:class:`VirtualTrainer` holds the training state in the accelerator's packed representation —
weight bit-planes as ``uint64`` words ``[S, M, ceil(N/64)]`` (SPEC §2), accumulators as int32
``[S, M, N]``, thresholds, and the LFSR state — and runs the fully integer step of
:mod:`bitswarm.golden.onchip` on it, sample by sample, without calling golden's step:

- forward: the popcount kernels (:func:`bitswarm.sim.virtual.layer_preact`) on packed planes;
- output error: the top-rival margin rule on the integer scores (rival = best class other
  than the target, ties to the lowest index);
- backward: ``delta = sum_{s,j} e_j * (2 w[s, j] - 1)`` over the rows with ``e_j != 0`` (row
  order, as the RTL's row-serial transposed accumulation);
- votes and flips: numpy integer arithmetic row by row in layer order (leak, vote, LFSR noise,
  one saturation, fire, refractory), draws from the Galois LFSR in row-major order;
- thresholds: homeostasis shift and error step, clamped.

The tests assert that weights, accumulators, thresholds and LFSR state equal golden's after
whole runs.

Cycle model (:func:`cycles_per_sample`) of the RTL datapath
(:class:`bitswarm.hw.onchip.OnChipTrainer`, whose docstring has the schedule) under a
:class:`~bitswarm.hw.plan.TrainerFold` (per layer ``pe`` rows and ``simd`` lanes per cycle):
a pass over layer ``l`` issues ``T_l = S·M_l/pe_l · N_l/simd_l`` memory words, one per cycle,
and ``K_l`` (1 or 2) is the register stages of its forward popcount tree::

    load      ceil(N_0 / P)                        pixel transfers (P pixels per transfer)
    forward   sum_l T_l + sum_{l<L-1} (K_l + 1)    XNOR/AND-popcount of pe words, z summed over
              + K_{L-1} + 3                        words and planes; bubbles while a layer's
                                                   activations settle; the pipeline drain
    error     ceil(log2 C) + 1                     registered argmax / rival trees, margin rule
    backward  sum_{l >= 1} (T_l + 1)               delta[k] += e_j (2 w[s, j, k] - 1), pe rows
    update    sum_l T_l + 2                        votes + integrate-and-fire on pe·simd lanes
    report    1                                    o_stream (predicted class, error flag)

The Verilator tests check that the interval between two streamed samples equals the total,
for several folds. :class:`VirtualTrainer` computes the same state whatever the fold (the fold
changes the time, not the arithmetic); its ``cycles`` are the model's for its ``fold``.
"""

from __future__ import annotations

import numpy as np

from ..golden.bits import n_words, pack_bits, unpack_bits
from ..golden.errors import ConfigError
from ..golden.lfsr import LFSR
from ..golden.model import PIXEL_BITS, Model
from ..golden.onchip import OnChipConfig
from ..hw.plan import DEFAULT_IN_LANES, TrainerCycles, TrainerFold, cycles_per_sample
from .virtual import layer_preact, pack_layer

__all__ = ["VirtualTrainer", "TrainerCycles", "TrainerFold", "cycles_per_sample", "DEFAULT_IN_LANES"]

class VirtualTrainer:
    """Fully integer training on packed words, bit-exact with golden ``onchip_step``.

    Parameters
    ----------
    model : Model
        Initial state (with accumulators); copied, not modified.
    config : OnChipConfig, optional
        The step's constants (default: from ``model.cfg.meta``).
    fold : TrainerFold, optional
        The RTL fold whose cycle model :attr:`cycles` reports (default ``pe = 1``, ``simd = N``).
    in_lanes : int, optional
        Pixels per input transfer of that RTL (default ``min(N_0, 64)``).
    """

    def __init__(self, model: Model, config: OnChipConfig | None = None, *, fold: TrainerFold | None = None,
                 in_lanes: int | None = None):
        self.cfg = model.cfg
        self.fold = TrainerFold.resolve(model.cfg, fold)
        self.cycles = cycles_per_sample(model.cfg, in_lanes, self.fold)
        self.config = config or OnChipConfig.from_meta(model.cfg.meta)
        self.config.check(self.cfg)
        if model.acc is None:
            raise ConfigError("on-chip training needs a model with accumulators (training state)")
        self.w = [pack_bits(t.cpu().numpy()) for t in model.weights]  # [S, M, W] uint64
        self.acc = [t.cpu().numpy().astype(np.int64) for t in model.acc]
        self.theta = [t.cpu().numpy().astype(np.int64) for t in model.theta]
        self.invert = [t.cpu().numpy().astype(np.int64) for t in model.invert]
        f = self.cfg.flip
        self.lfsr = LFSR(f.lfsr, model.lfsr_state if model.lfsr_state is not None else f.lfsr.seed)
        self.samples = 0

    # -- state ---------------------------------------------------------------------------------
    def export(self) -> Model:
        """The current state as a golden :class:`Model`."""
        import torch

        ws = [torch.from_numpy(unpack_bits(w, lay.n_in)) for w, lay in zip(self.w, self.cfg.layers, strict=True)]
        return Model(self.cfg, ws, [torch.from_numpy(t.astype(np.int32)) for t in self.theta],
                     [torch.from_numpy(v.astype(np.uint8)) for v in self.invert],
                     [torch.from_numpy(a.astype(np.int32)) for a in self.acc], self.lfsr.state)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Classes of raw uint8 samples with the current weights."""
        from .virtual import VirtualAccelerator

        return VirtualAccelerator(self.export()).predict(x)

    # -- one step ------------------------------------------------------------------------------
    def _preact(self, i: int, h: np.ndarray) -> np.ndarray:
        lay = self.cfg.layers[i]
        pl = pack_layer(lay, unpack_bits(self.w[i], lay.n_in), self.theta[i].astype(np.int32),
                        self.invert[i].astype(np.uint8))
        if lay.input_bits == 1:
            planes = [pack_bits(h[None])]
        else:
            planes = [pack_bits(((h >> b) & 1)[None].astype(np.uint8)) for b in range(lay.input_bits)]
        return layer_preact(pl, planes, threads=1)[0].astype(np.int64)

    def step(self, x: np.ndarray, label: int) -> tuple[int, int]:
        """One sample; returns ``(predicted class before the update, error flag)``."""
        c, oc = self.cfg, self.config
        lays = c.layers
        h = (np.asarray(x, dtype=np.uint8).reshape(-1) >> (PIXEL_BITS - lays[0].input_bits)).astype(np.int64)
        ins, zs = [], []
        for i, lay in enumerate(lays):
            ins.append(h)
            z = self._preact(i, h)
            zs.append(z)
            if not lay.output:
                h = ((z - self.theta[i]) >= 0).astype(np.int64) ^ self.invert[i]
        sc = zs[-1] - self.theta[-1]
        pred = int(np.argmax(sc))  # numpy: first index of the maximum
        others = np.where(np.arange(len(sc)) == label, np.iinfo(np.int64).min, sc)
        rival = int(np.argmax(others))  # first index of the maximum among c != label
        offend = bool(sc[rival] + oc.margin > sc[label])
        errs: list[np.ndarray] = [None] * len(lays)  # type: ignore[list-item]
        e = np.zeros(len(sc), dtype=np.int64)
        if offend:
            e[rival] = -1
            e[label] = 1
        errs[-1] = e
        for i in range(len(lays) - 1, 0, -1):
            lay = lays[i]
            delta = np.zeros(lay.n_in, dtype=np.int64)
            for s in range(lay.swarm):
                for j in np.nonzero(errs[i])[0]:
                    row = unpack_bits(self.w[i][s, j], lay.n_in).astype(np.int64)
                    delta += errs[i][j] * (2 * row - 1)
            p = i - 1
            gate = np.abs(zs[p] - self.theta[p]) <= oc.windows[p]
            errs[p] = np.where(gate, np.sign(delta) * (1 - 2 * self.invert[p]), 0)
        f = c.flip
        b = f.lfsr.draw_bits
        for i, lay in enumerate(lays):
            if lay.input_bits == 1:
                xs = 2 * ins[i] - 1
            elif oc.input_sign == "msb":
                xs = (ins[i] >> (lay.input_bits - 1)) & 1
            else:
                xs = (ins[i] != 0).astype(np.int64)
            bits = unpack_bits(self.w[i], lay.n_in).astype(np.int64)  # [S, M, N]
            votes = -(errs[i][None, :, None] * xs[None, None, :]) * (2 * bits - 1)
            a = self.acc[i]
            if f.leak_shift:
                a = a - (a >> f.leak_shift)
            add = votes
            if f.uses_lfsr:
                d = self.lfsr.draws(bits.size).astype(np.int64).reshape(bits.shape)
                if f.noise == "additive":
                    add = add + d - (1 << (b - 1))
            a = np.clip(a + add, f.acc_min, f.acc_max)
            fire = a >= f.threshold
            if f.noise == "stochastic":
                fire &= d < f.fire_prob
            self.w[i] = pack_bits((bits ^ fire).astype(np.uint8))
            self.acc[i] = np.where(fire, f.refractory, a)
            th = self.theta[i]
            if oc.homeostasis_shift and not lay.output:
                th = th + ((zs[i] - th) >> oc.homeostasis_shift)
            th = th - errs[i] * (oc.out_theta_step if lay.output else oc.theta_step)
            self.theta[i] = np.clip(th, -lay.theta_bound, lay.theta_bound)
        self.samples += 1
        return pred, int(offend)

    def train(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Steps over samples in order; per-sample predicted classes and error flags."""
        xs = np.asarray(xs, dtype=np.uint8)
        ys = np.asarray(ys).reshape(-1)
        if len(xs) != len(ys):
            raise ConfigError(f"{len(xs)} samples but {len(ys)} labels")
        out = np.array([self.step(xs[k], int(ys[k])) for k in range(len(ys))], dtype=np.int64).reshape(-1, 2)
        return out[:, 0], out[:, 1]

    @property
    def words(self) -> list[int]:
        return [n_words(lay.n_in) for lay in self.cfg.layers]
