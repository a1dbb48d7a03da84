"""Rules from seeds 002 (TernaryScale), 003 (BitNet b1.58) and 004 (Zero-Float).

All train the zoo's shared network and surrogate (:mod:`bitswarm.train.zoo.base`).

``ternary-scale`` (seed 002)
    Trits ``T`` stored 5 per byte (golden :func:`~bitswarm.golden.bits.pack_trits_base3`) in
    checkpoints; per group of ``group`` inputs an int8 log2 scale ``E`` and an int64
    correlation accumulator ``corr -= sum_group sign(G) * T`` (never clipped, never reset);
    the weight is ``S * T`` with ``S = 2**(E + 4 * corr / (steps * group))``. The seed's mini
    file learns only ``S``; the trit moves here are the zoo's addition, in the seed's integer
    spirit: a per-trit int8 vote counter ``c -= sign(G)`` moves the trit one step
    (-1 -> 0 -> +1) toward ``-sign(G)`` when ``|c|`` reaches ``trit_threshold``, then resets.
    The per-group scales are floats the golden model cannot hold: **evaluated by its own
    float forward**, not exportable.
``bitnet-absmean`` (seed 003)
    BitNet b1.58: latent float weights ``W``, ``T = round(clip(W / (mean|W| + eps), -1, 1))``,
    straight-through gradient to ``W``, Adam. The per-tensor scale ``mean|W|`` folds into the
    integer thresholds of hidden layers and does not change the output argmax, so the golden
    ternary model **is** the network: exported and evaluated by the golden forward pass.
``zero-float`` (seed 004)
    Each plane bit has a 16-bit grid index (bit = ``index >= 2**15``) and an int16 vote
    buffer. Votes ``-sign(G)`` only where ``|G| > mean|G| + k * std|G|`` (integers, ``k`` in
    percent); integer LFSR noise in ``[-jitter, jitter]`` is added to the buffers every step;
    a buffer that is nonzero moves its index one ``grid_step`` in its sign's direction with
    probability ``move_prob`` (LFSR comparator) and resets. The governor cools when the bit
    flip rate exceeds 0.05 % per step: ``move_prob *= 0.8`` (205/256), ``k += 2``.
    Exported and evaluated by the golden forward pass (the per-row float scale of the seed's
    16-bit weights is not used: the bits are the weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from bitswarm.golden.bits import pack_trits_base3, unpack_trits_base3
from bitswarm.golden.errors import ConfigError

from ..rules import StepResult, register_rule
from .base import SurrogateOptions, ZooRule, lfsr_uniform

__all__ = ["TernaryScale", "BitNetAbsmean", "ZeroFloat"]

_SOFTMAX_REASON = "; the default vote source is the host's float softmax (error=softmax), so only --opt error=hinge makes the step integer"


@register_rule
class TernaryScale(ZooRule):
    name = "ternary-scale"
    source = "seed 002"
    summary = "ternary trits + per-group 2^(E + 4 corr/(steps*group)) scales from an int64 sign-correlation accumulator"
    integer_update = True
    reason = ("integer state (trits, int8 E, int64 corr, int8 trit counters) but the forward needs the "
              "float group scales 2^(E + 4 corr/(steps*group))")
    weight_kind = "ternary"
    own_forward = True
    state_bits = 8 + (8 + 64) // 32

    @dataclass(frozen=True)
    class Options(SurrogateOptions):
        group: int = 32
        trit_threshold: int = 4

        def check(self) -> None:
            super().check()
            if not (1 <= self.group <= 4096 and 1 <= self.trit_threshold <= 127):
                raise ConfigError("ternary-scale needs 1 <= group <= 4096 and 1 <= trit_threshold <= 127")

    def __init__(self, spec, options=None, device="cpu"):
        super().__init__(spec, options, device)
        self.hardware_trainable = False

    def _groups(self, i: int) -> int:
        return math.ceil(self.model_config.layers[i].n_in / self.opts.group)

    def _init_rule(self) -> None:
        cfg = self.model_config
        self.buf["E"], self.buf["corr"], self.buf["cnt"] = [], [], []
        for i, lay in enumerate(cfg.layers):
            e0 = max(-8, min(0, int(round(math.log2(max(0.5 / math.sqrt(lay.n_in), 2 ** -8))))))
            self.buf["E"].append(torch.full((lay.n_out, self._groups(i)), e0, dtype=torch.int8, device=self.device))
            self.buf["corr"].append(torch.zeros((lay.n_out, self._groups(i)), dtype=torch.int64, device=self.device))
            self.buf["cnt"].append(torch.zeros(lay.weight_shape(), dtype=torch.int8, device=self.device))

    def scales(self, i: int) -> torch.Tensor:
        """Per-group scales ``S`` ``[M, groups]`` (float64)."""
        e = self.buf["E"][i].to(torch.float64)
        steps = self.meta["step"]
        if steps > 0:
            e = e + 4.0 * self.buf["corr"][i].to(torch.float64) / (steps * self.opts.group)
        return torch.exp2(e)

    def _weff(self, i: int) -> torch.Tensor:
        n = self.model_config.layers[i].n_in
        s = self.scales(i).repeat_interleave(self.opts.group, dim=1)[:, :n]
        return s * self.w[i].to(torch.float64)

    def _update(self, grads, zs):
        flips = []
        gsz = self.opts.group
        for i, g in enumerate(grads):
            sg = torch.sign(g).to(torch.int64)
            t = self.w[i].to(torch.int64)
            M, N = t.shape
            pad = self._groups(i) * gsz - N
            prod = torch.nn.functional.pad(sg * t, (0, pad)).reshape(M, -1, gsz).sum(2)
            self.buf["corr"][i] -= prod
            c = torch.clamp(self.buf["cnt"][i].to(torch.int64) - sg, -127, 127)
            up = c >= self.opts.trit_threshold
            down = c <= -self.opts.trit_threshold
            nt = torch.clamp(t + up.to(torch.int64) - down.to(torch.int64), -1, 1)
            self.buf["cnt"][i] = torch.where(up | down, 0, c).to(torch.int8)
            flips.append(int((nt != t).sum()))
            self.w[i] = nt.to(torch.int8)
        return flips

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = super().state_tensors()
        for i in range(len(self.w)):
            del out[f"w{i}"]
            out[f"T_packed{i}"] = torch.from_numpy(pack_trits_base3(self.w[i].cpu().numpy()))
        return out

    def load_state(self, model, tensors, meta) -> None:
        tensors = dict(tensors)
        for i, lay in enumerate(self.model_config.layers):
            name = f"T_packed{i}"
            if name not in tensors:
                raise ConfigError(f"checkpoint lacks rule tensor {name!r}")
            t = unpack_trits_base3(tensors.pop(name).numpy(), lay.n_in)
            tensors[f"w{i}"] = torch.from_numpy(t)
        super().load_state(model, tensors, meta)


@register_rule
class BitNetAbsmean(ZooRule):
    name = "bitnet-absmean"
    source = "seed 003 (BitNet b1.58)"
    summary = "BitNet b1.58 absmean ternary quantizer on latent float weights, straight-through, Adam"
    integer_update = False
    reason = "float latent weights and Adam moments"
    weight_kind = "ternary"
    state_bits = 96

    @dataclass(frozen=True)
    class Options(SurrogateOptions):
        lr: float = 2e-3
        init: float = 0.1

        def check(self) -> None:
            super().check()
            if not (self.lr > 0 and self.init > 0):
                raise ConfigError("bitnet-absmean needs lr > 0 and init > 0")

    def _init_rule(self) -> None:
        gen = torch.Generator().manual_seed(self.spec.seed + 1)
        self.buf["latent"], self.buf["m"], self.buf["v"] = [], [], []
        for lay in self.model_config.layers:
            w = ((torch.rand(lay.weight_shape(), generator=gen) * 2 - 1) * self.opts.init).to(self.device)
            self.buf["latent"].append(w)
            self.buf["m"].append(torch.zeros_like(w))
            self.buf["v"].append(torch.zeros_like(w))
        self.meta["adam_t"] = 0
        for i in range(len(self.w)):
            self.w[i] = self.quantize(self.buf["latent"][i])

    @staticmethod
    def quantize(w: torch.Tensor) -> torch.Tensor:
        """Absmean ternary quantizer: ``round(clip(w / (mean|w| + 1e-5), -1, 1))`` as int8."""
        return torch.round(torch.clamp(w / (w.abs().mean() + 1e-5), -1, 1)).to(torch.int8)

    def train_step(self, x, y) -> StepResult:
        self._batch = x.shape[0]
        return super().train_step(x, y)

    def _update(self, grads, zs):
        self.meta["adam_t"] += 1
        t = self.meta["adam_t"]
        b1, b2, lr = 0.9, 0.999, self.opts.lr
        flips = []
        for i, g in enumerate(grads):
            gf = (g / (self._batch * (1 << self.opts.grad_bits))).to(torch.float32)
            m, v, w = self.buf["m"][i], self.buf["v"][i], self.buf["latent"][i]
            m.mul_(b1).add_(gf, alpha=1 - b1)
            v.mul_(b2).addcmul_(gf, gf, value=1 - b2)
            w.sub_(lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + 1e-8))
            nt = self.quantize(w)
            flips.append(int((nt != self.w[i]).sum()))
            self.w[i] = nt
        return flips


@register_rule
class ZeroFloat(ZooRule):
    name = "zero-float"
    source = "seed 004 (Zero-Float v5.2)"
    summary = "int16 vote buffers (votes above mean+k*std), LFSR integer noise, probabilistic 16-bit grid moves, flip-rate governor"
    integer_update = True
    reason = "int16 buffers, 16-bit grid indices, LFSR noise and comparators, integer governor" + _SOFTMAX_REASON
    state_bits = 32

    @dataclass(frozen=True)
    class Options(SurrogateOptions):
        k_pct: int = 15
        jitter: int = 2
        move_prob: float = 0.25
        grid_step: int = 4096
        init_margin: int = 4
        max_flip_rate: float = 0.0005

        def check(self) -> None:
            super().check()
            if not (0 <= self.k_pct <= 10000 and 0 <= self.jitter <= 1000 and 0 < self.move_prob <= 1
                    and 1 <= self.grid_step <= 32768 and 1 <= self.init_margin
                    and self.init_margin * self.grid_step <= 32768 and 0 < self.max_flip_rate < 1):
                raise ConfigError("zero-float needs k_pct 0..10000, jitter 0..1000, 0 < move_prob <= 1, "
                                  "grid_step 1..32768, init_margin * grid_step <= 32768, 0 < max_flip_rate < 1")

    def _init_rule(self) -> None:
        o = self.opts
        off = o.init_margin * o.grid_step - o.grid_step // 2
        self.buf["index"] = [(32768 + self._bit_values(i) * off - (self.w[i] == 0).to(torch.int64)).to(torch.int32)
                             for i in range(len(self.w))]
        self.buf["votes"] = [torch.zeros(w.shape, dtype=torch.int16, device=self.device) for w in self.w]
        self.meta["move_p16"] = int(round(o.move_prob * 65536))
        self.meta["k_pct"] = o.k_pct

    def _update(self, grads, zs):
        o = self.opts
        lfsr = self._lfsr()
        flips = []
        for i, g in enumerate(grads):
            gi = g.round().to(torch.int64)
            a = gi.abs()
            n = a.numel()
            mean = int(a.sum()) // n
            var = max(0, int((a * a).sum()) // n - mean * mean)
            thr = mean + self.meta["k_pct"] * math.isqrt(var) // 100
            vote = (-torch.sign(gi) * (a > thr)).unsqueeze(0)
            shape = tuple(self.w[i].shape)
            noise = (lfsr_uniform(lfsr, shape, self.device) * (2 * o.jitter + 1) >> 16) - o.jitter
            b = torch.clamp(self.buf["votes"][i].to(torch.int64) + vote + noise, -32768, 32767)
            move = (lfsr_uniform(lfsr, shape, self.device) < self.meta["move_p16"]) & (b != 0)
            idx = torch.clamp(self.buf["index"][i].to(torch.int64) + torch.sign(b) * move * o.grid_step, 0, 65535)
            self.buf["index"][i] = idx.to(torch.int32)
            self.buf["votes"][i] = torch.where(move, 0, b).to(torch.int16)
            flips.append(self._flip(i, (idx >= 32768).to(torch.uint8) != self.w[i]))
        self.meta["lfsr"] = lfsr.state
        if sum(flips) / sum(self.weight_bits()) > o.max_flip_rate:
            self.meta["move_p16"] = max(1, self.meta["move_p16"] * 205 >> 8)
            self.meta["k_pct"] += 2
        return flips
