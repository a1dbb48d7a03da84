"""Rules from seeds 002 (TernaryScale), 003 (BitNet b1.58) and 004 (Zero-Float).

All train the zoo's shared network and surrogate (:mod:`bitswarm.train.zoo.base`).

``ternary-scale`` (seed 002, faithful)
    Trits ``T`` drawn as the seed does (``randn * 0.1`` ternarized at 0.05) and **never
    changed**, stored 5 per byte in the seed's layout (whole tensor flattened, padded with
    digit 0: :func:`~bitswarm.golden.bits.pack_trits_base3` ``layout="seed"``) in checkpoints;
    per group of ``group`` inputs an int8 log2 scale ``E`` and an int64 correlation
    accumulator ``corr -= sum_group sign(G) * T`` (never clipped, never reset); the weight is
    ``S * T`` with ``S = 2**(E + 4 * corr / (steps * group))``. Only ``S`` learns, as in the
    seed. The per-group scales are floats the golden model cannot hold: **evaluated by its own
    float forward**, not exportable.
``ternary-scale-trits`` (the zoo's extension of seed 002)
    The same scales plus trit moves: a per-trit int8 vote counter ``c -= sign(G)`` moves the
    trit one step (-1 -> 0 -> +1) toward ``-sign(G)`` when ``|c|`` reaches ``trit_threshold``,
    then resets.
``bitnet-absmean`` (seed 003)
    BitNet b1.58: latent float weights ``W``, ``T = round(clip(W / (mean|W| + eps), -1, 1))``,
    straight-through gradient to ``W``, Adam. The per-tensor scale ``mean|W|`` folds into the
    integer thresholds of hidden layers and does not change the output argmax, so the golden
    ternary model **is** the network: exported and evaluated by the golden forward pass.
``zero-float`` (seed 004, faithful)
    Each weight is a 16-bit grid index ``idx`` (0..65535) into ``lut = linspace(-1, 1,
    65536)`` times a per-row float scale: ``W = lut[idx] * scale_j``. Votes ``-sign(g)`` only
    where ``|g| > mean|g| + k * std|g|`` (per layer, ``k = sensitivity``) go into an int16 vote
    buffer; integer LFSR noise in ``[-jitter, jitter]`` is added every step; a nonzero buffer
    moves its index by ``grid_step`` (1: one grid step, as the seed) in its sign's direction
    with probability ``move_prob`` (LFSR comparator) and resets. The scales learn by Adam
    (``lr``, the seed's 1e-4) on ``dL/dscale_j = sum_k g_jk lut[idx_jk]``. The governor
    cools when the 16-bit moves exceed 0.05 % of the weights in a step: ``move_prob`` and the
    scale ``lr`` times 0.8, ``k += 0.02``. The seed network (``net=seed``) is normalized
    inputs, ReLU, no normalization layer. Float scales: own forward, not exportable.
``zero-float-1bit`` (the zoo's 1-bit variant of seed 004)
    Each plane bit has a 16-bit grid index (bit = ``index >= 2**15``) and an int16 vote
    buffer; votes above ``mean|G| + k * std|G|`` (integers, ``k`` in percent), LFSR noise,
    probabilistic moves of ``grid_step`` (4096) and the same governor on the *bit* flip rate
    (``move_prob *= 205/256``, ``k += 2``). Exported and evaluated by the golden forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from bitswarm.golden.bits import pack_trits_base3, unpack_trits_base3
from bitswarm.golden.errors import ConfigError

from ..rules import StepResult, register_rule
from .base import SurrogateOptions, ZooRule, lfsr_uniform
from .seednet import SeedNetConfig

__all__ = ["TernaryScale", "TernaryScaleTrits", "BitNetAbsmean", "ZeroFloat", "ZeroFloat1Bit"]

_SOFTMAX_REASON = "; the default vote source is the host's float softmax (error=softmax), so only --opt error=hinge makes the step integer"


@register_rule
class TernaryScale(ZooRule):
    name = "ternary-scale"
    source = "seed 002"
    summary = "fixed ternary trits; only the per-group scales 2^(E + 4 corr/(steps*group)) learn, from an int64 sign-correlation accumulator"
    integer_update = True
    reason = ("integer state (trits, int8 E, int64 corr) but the forward needs the "
              "float group scales 2^(E + 4 corr/(steps*group))")
    weight_kind = "ternary"
    own_forward = True
    state_bits = (8 + 64) // 32
    moves_trits = False

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

    def _random_weights(self) -> list[torch.Tensor]:
        """The seed's trits: ``randn * 0.1`` ternarized at 0.05."""
        gen = torch.Generator().manual_seed(self.spec.seed)
        out = []
        for lay in self.model_config.layers:
            x = torch.randn(lay.weight_shape(), generator=gen) * 0.1
            out.append((torch.sign(x) * (x.abs() > 0.05)).to(torch.int8).to(self.device))
        return out

    def _groups(self, i: int) -> int:
        return math.ceil(self.model_config.layers[i].n_in / self.opts.group)

    def _init_rule(self) -> None:
        cfg = self.model_config
        self.buf["E"], self.buf["corr"] = [], []
        if self.moves_trits:
            self.buf["cnt"] = []
        for i, lay in enumerate(cfg.layers):
            e0 = max(-8, min(0, int(round(math.log2(max(0.5 / math.sqrt(lay.n_in), 2 ** -8))))))
            self.buf["E"].append(torch.full((lay.n_out, self._groups(i)), e0, dtype=torch.int8, device=self.device))
            self.buf["corr"].append(torch.zeros((lay.n_out, self._groups(i)), dtype=torch.int64, device=self.device))
            if self.moves_trits:
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
            if not self.moves_trits:
                flips.append(0)
                continue
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
            out[f"T_packed{i}"] = torch.from_numpy(pack_trits_base3(self.w[i].cpu().numpy(), layout="seed"))
        return out

    def load_state(self, model, tensors, meta) -> None:
        tensors = dict(tensors)
        for i, lay in enumerate(self.model_config.layers):
            name = f"T_packed{i}"
            if name not in tensors:
                raise ConfigError(f"checkpoint lacks rule tensor {name!r}")
            t = unpack_trits_base3(tensors.pop(name).numpy(), lay.n_out * lay.n_in, layout="seed")
            tensors[f"w{i}"] = torch.from_numpy(t.reshape(lay.weight_shape()))
        super().load_state(model, tensors, meta)


@register_rule
class TernaryScaleTrits(TernaryScale):
    name = "ternary-scale-trits"
    source = "seed 002 + zoo trit moves"
    summary = "seed 002's group scales plus trit moves by int8 vote counters (the zoo's extension)"
    reason = ("integer state (trits, int8 E, int64 corr, int8 trit counters) but the forward needs the "
              "float group scales 2^(E + 4 corr/(steps*group))")
    state_bits = 8 + (8 + 64) // 32
    moves_trits = True


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
class ZeroFloat1Bit(ZooRule):
    name = "zero-float-1bit"
    source = "seed 004 (Zero-Float v5.2), 1-bit variant"
    summary = "1-bit weights on a 16-bit index grid (step 4096): int16 votes above mean+k*std, LFSR noise, probabilistic moves, governor on bit flips"
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


@register_rule
class ZeroFloat(ZooRule):
    name = "zero-float"
    source = "seed 004 (Zero-Float v5.2)"
    summary = "16-bit grid weights x per-row scale: int16 votes above mean+k*std, LFSR integer noise, probabilistic 16-bit moves, governor on the moves"
    integer_update = False
    reason = "int16 buffers, 16-bit grid indices and LFSR noise, but float per-row scales learned by Adam"
    own_forward = True
    state_bits = 32

    @dataclass(frozen=True)
    class Options(SurrogateOptions):
        net: str = "seed"
        sensitivity: float = 0.15
        jitter: int = 2
        move_prob: float = 0.25
        grid_step: int = 1
        lr: float = 1e-4
        max_move_rate: float = 0.0005

        def check(self) -> None:
            super().check()
            if not (self.sensitivity >= 0 and 0 <= self.jitter <= 1000 and 0 < self.move_prob <= 1
                    and 1 <= self.grid_step <= 32768 and self.lr > 0 and 0 < self.max_move_rate < 1):
                raise ConfigError("zero-float needs sensitivity >= 0, jitter 0..1000, 0 < move_prob <= 1, "
                                  "grid_step 1..32768, lr > 0, 0 < max_move_rate < 1")

    def seed_net_config(self):
        return SeedNetConfig(norm="none", act="relu")

    LUT_STEP = 2.0 / 65535

    def _lut(self, idx: torch.Tensor) -> torch.Tensor:
        """``linspace(-1, 1, 65536)[idx]`` (float32)."""
        return idx.to(torch.float32) * self.LUT_STEP - 1.0

    def _init_rule(self) -> None:
        gen = torch.Generator().manual_seed(self.spec.seed + 11)
        self.buf["index"], self.buf["votes"], self.buf["scale"] = [], [], []
        self.buf["adam_m"], self.buf["adam_v"] = [], []
        for i, lay in enumerate(self.model_config.layers):
            idx = torch.randint(0, 65536, lay.weight_shape()[1:], generator=gen, dtype=torch.int64)
            self.buf["index"].append(idx.to(torch.int32).to(self.device))
            self.buf["votes"].append(torch.zeros(idx.shape, dtype=torch.int16, device=self.device))
            self.buf["scale"].append(torch.full((lay.n_out,), math.sqrt(3 / lay.n_in), device=self.device))
            self.buf["adam_m"].append(torch.zeros(lay.n_out, device=self.device))
            self.buf["adam_v"].append(torch.zeros(lay.n_out, device=self.device))
            self.w[i] = (idx >= 32768).to(torch.uint8).unsqueeze(0).expand(lay.weight_shape()).contiguous().to(self.device)
        self.meta.update(move_p16=int(round(self.opts.move_prob * 65536)), k=self.opts.sensitivity,
                         lr=self.opts.lr, adam_t=0)

    def _weights(self, i: int) -> torch.Tensor:
        return self._lut(self.buf["index"][i]) * self.buf["scale"][i].unsqueeze(1)

    def _weff(self, i: int) -> torch.Tensor:
        if not self.buf.get("index"):
            return super()._weff(i)
        return self._weights(i).to(torch.float64)

    def _seed_weight(self, i: int, train: bool):
        w = self._weights(i).requires_grad_(train)
        return w, w

    def _seed_grad(self, i: int, leaf: torch.Tensor) -> torch.Tensor:
        return leaf.grad

    def _update(self, grads, zs):
        o = self.opts
        lfsr = self._lfsr()
        self.meta["adam_t"] += 1
        t = self.meta["adam_t"]
        moved = []
        for i, g in enumerate(grads):
            g = (g / self._gscale()).to(torch.float32)
            a = g.abs()
            thr = a.mean() + self.meta["k"] * a.std()
            vote = (-torch.sign(g) * (a > thr)).to(torch.int64)
            shape = tuple(g.shape)
            noise = (lfsr_uniform(lfsr, shape, self.device) * (2 * o.jitter + 1) >> 16) - o.jitter
            b = torch.clamp(self.buf["votes"][i].to(torch.int64) + vote + noise, -32768, 32767)
            move = (lfsr_uniform(lfsr, shape, self.device) < self.meta["move_p16"]) & (b != 0)
            idx = self.buf["index"][i].to(torch.int64)
            gs = (g * self._lut(idx)).sum(1)  # dL/dscale_j
            m, v = self.buf["adam_m"][i], self.buf["adam_v"][i]
            m.mul_(0.9).add_(gs, alpha=0.1)
            v.mul_(0.999).addcmul_(gs, gs, value=0.001)
            self.buf["scale"][i] -= self.meta["lr"] * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
            idx = torch.clamp(idx + torch.sign(b) * move * o.grid_step, 0, 65535)
            self.buf["index"][i] = idx.to(torch.int32)
            self.buf["votes"][i] = torch.where(move, 0, b).to(torch.int16)
            self.w[i] = (idx >= 32768).to(torch.uint8).unsqueeze(0).expand_as(self.w[i]).contiguous()
            moved.append(int(move.sum()))
        self.meta["lfsr"] = lfsr.state
        if sum(moved) / sum(self.weight_bits()) > o.max_move_rate:
            self.meta["move_p16"] = max(1, self.meta["move_p16"] * 205 >> 8)
            self.meta["lr"] *= 0.8
            self.meta["k"] += 0.02
        return moved
