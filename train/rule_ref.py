"""Reference rules measured in the same harness: ``float``, ``ste-adam`` and ``bop``.

``float``
    A float MLP or CNN of the same architecture (ReLU hidden layers with biases; a
    convolution is ``conv2d`` + ReLU + ``max_pool2d``; inputs scaled to 0..1 — or ±1 for
    ``input_bits=1`` — softmax cross-entropy, Adam). **Not exportable**: a float network is no
    bitswarm model, so ``--out`` is refused; the run writes metrics, plots and checkpoints.
``ste-adam``
    Binary weights with latent float weights (Courbariaux/Hubara et al.): each of the S bit
    planes is ``sign(W_s)`` of a latent ``W_s`` clipped to [-1, 1], straight-through gradient
    cancelled where ``|W| > 1``; BatchNorm after every hidden layer, sign activations with the
    hardtanh straight-through estimator; output ``alpha * z + b`` (``alpha = 1/sqrt(N*S)``);
    Adam on everything.
``bop``
    Binary Optimizer (Helwegen et al. 2019): no latent weights; per bit a float momentum
    ``m <- (1 - gamma) m + gamma g``; a bit flips where ``|m| > tau`` and
    ``sign(m) == sign(w)``. BatchNorm and output biases use Adam, as in the paper.

Convolutions (``ste-adam``, ``bop``): the weights of a convolutional layer are held in the
golden layout ``[S, F, K*K*C]`` (window order ``(ky, kx, c)``) and applied by ``conv2d`` on the
NCHW view of the flat HWC activations (kernel ``[F, C, K, K]`` read from that layout);
padding holds the encoded value 0 of golden (-1 for ±1 inputs, 0 for pixels); BatchNorm is
per channel over the batch and every output pixel; ``max_pool2d`` runs on the sign outputs
(golden's OR pooling of activation bits); the next layer takes the pooled map flat in HWC
order. So the golden layers, the export and the reference compute the same integers.

Export (``ste-adam``, ``bop``): weight bits ``w = [W >= 0]``; BatchNorm with running
statistics folds into an integer threshold: the neuron fires where
``gamma (z - mu) / sqrt(var + eps) + beta >= 0``, i.e. ``z >= t`` with
``t = mu - beta sqrt(var + eps) / gamma``: for ``gamma > 0`` ``theta = ceil(t)``, invert 0;
for ``gamma < 0`` the neuron fires where ``z <= t``, i.e. ``theta = floor(t) + 1`` with invert
1; ``gamma = 0`` gives a constant (``theta = -bound`` and invert ``beta < 0``). The output
bias becomes ``theta = -round(b / alpha)``. Reported accuracy is the golden forward pass of
that export, so it is what the hardware computes; :meth:`_BnBinaryNet.binary_forward` is
the network's own binary forward (running BatchNorm statistics, float64), which the tests
compare with the golden forward of the export.

Data order, weight init (a ``torch.Generator`` seeded with the run seed) and all arithmetic
are deterministic on CPU, and every float tensor is in the checkpoint, so resuming is bit for
bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.model import Model, quantize_input

from .rules import Rule, StepResult, register_rule

__all__ = ["Adam", "FloatRule", "SteAdamRule", "BopRule", "fold_batchnorm"]

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


class Adam:
    """A minimal Adam whose whole state is named tensors plus a step count (checkpointable)."""

    def __init__(self, params: dict[str, torch.Tensor], lr: float, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = {k: torch.zeros_like(p) for k, p in params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in params.items()}
        self.t = 0

    @torch.no_grad()
    def step(self, lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for k, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad
            self.m[k].mul_(b1).add_(g, alpha=1 - b1)
            self.v[k].mul_(b2).addcmul_(g, g, value=1 - b2)
            p.sub_(lr * (self.m[k] / c1) / ((self.v[k] / c2).sqrt() + self.eps))
            p.grad = None

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {}
        for k in self.params:
            out[f"{prefix}.m.{k}"] = self.m[k].detach().cpu().contiguous()
            out[f"{prefix}.v.{k}"] = self.v[k].detach().cpu().contiguous()
        return out

    def load(self, prefix: str, tensors: dict[str, torch.Tensor], t: int) -> None:
        for k, p in self.params.items():
            self.m[k] = _need(tensors, f"{prefix}.m.{k}", p)
            self.v[k] = _need(tensors, f"{prefix}.v.{k}", p)
        self.t = int(t)


def _need(tensors, name, like):
    if name not in tensors:
        raise ConfigError(f"checkpoint lacks rule tensor {name!r}")
    t = tensors[name]
    if t.shape != like.shape or t.dtype != like.dtype:
        raise ConfigError(f"checkpoint tensor {name!r} is {t.dtype} {list(t.shape)}, "
                          f"expected {like.dtype} {list(like.shape)}")
    return t.to(like.device).clone()


def _input_float(cfg, x: torch.Tensor, unit: bool) -> torch.Tensor:
    """First-layer input values: the golden integers (pixels >> shift, or ±1 for 1 bit);
    ``unit`` rescales multi-bit inputs to 0..1 (float MLP)."""
    h = quantize_input(cfg, x).to(torch.float32)
    lay = cfg.layers[0]
    if lay.input_bits == 1:
        return h * 2 - 1
    return h / lay.x_max if unit else h


def _conv_rows(geo, h: torch.Tensor, w: torch.Tensor, pad_value: float) -> torch.Tensor:
    """A convolution on flat HWC values ``h`` ``[B, H*W*C]`` with golden-layout weights ``w``
    ``[F, K*K*C]`` (order ``(ky, kx, c)``) by ``conv2d``; padding holds ``pad_value``. Returns
    rows ``[B * H_o * W_o, F]`` in raster order (golden's ``z`` layout)."""
    b, c, k, p = h.shape[0], geo.in_channels, geo.kernel, geo.pad
    m = h.reshape(b, geo.in_height, geo.in_width, c).permute(0, 3, 1, 2)
    if p:
        m = F.pad(m, (p, p, p, p), value=pad_value)
    kern = w.reshape(w.shape[0], k, k, c).permute(0, 3, 1, 2)
    z = F.conv2d(m, kern, stride=geo.stride)  # [B, F, H_o, W_o]
    return z.permute(0, 2, 3, 1).reshape(-1, w.shape[0])


def _pool_rows(geo, a: torch.Tensor, channels: int) -> torch.Tensor:
    """``max_pool2d`` of rows ``[B * H_o * W_o, F]`` -> flat HWC ``[B, H_q * W_q * F]``."""
    b = a.shape[0] // geo.positions
    m = a.reshape(b, geo.out_height, geo.out_width, channels)
    if geo.pool > 1:
        m = F.max_pool2d(m.permute(0, 3, 1, 2), geo.pool).permute(0, 2, 3, 1)
    return m.reshape(b, -1)


class _SignSte(torch.autograd.Function):
    """sign with ``sign(0) = +1``; gradient passes where ``|x| <= 1`` (hardtanh STE)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


def _init_uniform(gen, shape, bound, device):
    return ((torch.rand(shape, generator=gen) * 2 - 1) * bound).to(device)


def fold_batchnorm(mu, var, gamma, beta, bound: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer (theta int32, invert uint8) that reproduce ``sign(BN(z)) >= 0`` on integers z."""
    mu, var, gamma, beta = (t.detach().to(torch.float64).cpu() for t in (mu, var, gamma, beta))
    sd = torch.sqrt(var + BN_EPS)
    safe = torch.where(gamma == 0, torch.ones_like(gamma), gamma)
    t = mu - beta * sd / safe
    t = torch.nan_to_num(t, nan=0.0, posinf=bound + 1.0, neginf=-bound - 1.0).clamp(-bound - 1, bound + 1)
    theta = torch.where(gamma > 0, torch.ceil(t), torch.floor(t) + 1)
    invert = gamma < 0
    const = gamma == 0
    theta = torch.where(const, torch.full_like(theta, -bound), theta)
    invert = torch.where(const, beta < 0, invert)
    theta = theta.clamp(-bound, bound).to(torch.int32)
    return theta, invert.to(torch.uint8)


class _BnBinaryNet:
    """Shared forward of ``ste-adam`` and ``bop``: binary planes, BatchNorm, sign, output bias."""

    def _setup(self, gen) -> None:
        d = self.device
        cfg = self.model_config
        self.bn = []
        for lay in cfg.layers[:-1]:
            M = lay.n_out
            self.bn.append({
                "gamma": torch.ones(M, device=d), "beta": torch.zeros(M, device=d),
                "mean": torch.zeros(M, device=d), "var": torch.ones(M, device=d),
            })
        self.bias = torch.zeros(cfg.layers[-1].n_out, device=d)
        self.alpha = 1.0 / math.sqrt(cfg.layers[-1].n_in * cfg.layers[-1].swarm)

    def _float_params(self) -> dict[str, torch.Tensor]:
        p = {"out.bias": self.bias}
        for i, bn in enumerate(self.bn):
            p[f"bn{i}.gamma"] = bn["gamma"]
            p[f"bn{i}.beta"] = bn["beta"]
        return p

    def _planes(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _preact(lay, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``z`` of one layer: ``[B, M]`` (dense) or rows ``[B * H_o * W_o, F]`` (conv)."""
        if lay.conv is None:
            return h @ w.T
        return _conv_rows(lay.conv, h, w, -1.0 if lay.input_bits == 1 else 0.0)

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cfg = self.model_config
        h = _input_float(cfg, x, unit=False)
        for i, lay in enumerate(cfg.layers):
            z = self._preact(lay, h, self._planes(i).sum(0))
            if lay.output:
                logits = self.alpha * z + self.bias
                self.last_correct = int((logits.detach().argmax(1) == y).sum())
                return F.cross_entropy(logits, y)
            bn = self.bn[i]
            mu = z.mean(0)
            var = z.var(0, unbiased=False)
            with torch.no_grad():
                n = z.shape[0]
                bn["mean"].mul_(1 - BN_MOMENTUM).add_(mu.detach(), alpha=BN_MOMENTUM)
                bn["var"].mul_(1 - BN_MOMENTUM).add_(var.detach() * n / max(1, n - 1), alpha=BN_MOMENTUM)
            zn = (z - mu) / torch.sqrt(var + BN_EPS) * bn["gamma"] + bn["beta"]
            h = _SignSte.apply(zn)
            if lay.conv is not None:  # max of the signs = OR of the activation bits
                h = _pool_rows(lay.conv, h, lay.n_out)
        raise AssertionError("unreachable")

    @torch.no_grad()
    def binary_forward(self, x: torch.Tensor, trace: list | None = None) -> torch.Tensor:
        """The network's own binary forward in float64 with BatchNorm's running statistics:
        the output layer's integer ``z`` ``[B, classes]``; ``trace`` (a list) gets every hidden
        layer's pooled activations as bits (uint8, flat HWC), as golden ``Model.forward``'s."""
        cfg = self.model_config
        h = _input_float(cfg, x, unit=False).double()
        for i, lay in enumerate(cfg.layers):
            z = self._preact(lay, h, (self._planes(i).detach() >= 0).double().mul(2).sub(1).sum(0))
            if lay.output:
                return z
            bn = {k: v.detach().double() for k, v in self.bn[i].items()}
            fire = bn["gamma"] * (z - bn["mean"]) / torch.sqrt(bn["var"] + BN_EPS) + bn["beta"] >= 0
            h = fire.double() * 2 - 1
            if lay.conv is not None:
                h = _pool_rows(lay.conv, h, lay.n_out)
            if trace is not None:
                trace.append((h > 0).to(torch.uint8))
        raise AssertionError("unreachable")

    def _bits(self, i: int) -> torch.Tensor:
        return (self._planes(i).detach() >= 0).to(torch.uint8)

    def export(self) -> Model:
        cfg = self.model_config
        ws, th, inv = [], [], []
        for i, lay in enumerate(cfg.layers):
            ws.append(self._bits(i).cpu())
            if lay.output:
                t = torch.round(-self.bias.detach().double().cpu() / self.alpha)
                th.append(t.clamp(-lay.theta_bound, lay.theta_bound).to(torch.int32))
                inv.append(torch.zeros(lay.n_out, dtype=torch.uint8))
            else:
                bn = self.bn[i]
                t, v = fold_batchnorm(bn["mean"], bn["var"], bn["gamma"], bn["beta"], lay.theta_bound)
                th.append(t)
                inv.append(v)
        return Model(cfg, ws, th, inv)

    def _bn_state(self) -> dict[str, torch.Tensor]:
        out = {"out.bias": self.bias.detach().cpu().contiguous()}
        for i, bn in enumerate(self.bn):
            for k, v in bn.items():
                out[f"bn{i}.{k}"] = v.detach().cpu().contiguous()
        return out

    def _load_bn(self, tensors) -> None:
        self.bias.data.copy_(_need(tensors, "out.bias", self.bias))
        for i, bn in enumerate(self.bn):
            for k in bn:
                bn[k].data.copy_(_need(tensors, f"bn{i}.{k}", bn[k]))

    def _flip_count(self, before: list[torch.Tensor]) -> list[int]:
        return [int((self._bits(i) != b).sum()) for i, b in enumerate(before)]


@register_rule
class SteAdamRule(_BnBinaryNet, Rule):
    name = "ste-adam"
    summary = "latent float weights + Adam, straight-through sign, BatchNorm folded to thresholds"
    trains_conv = True

    @dataclass(frozen=True)
    class Options:
        lr: float = 0.01
        init: float = 0.1

        def check(self) -> None:
            if not self.lr > 0 or not self.init > 0:
                raise ConfigError("lr and init must be positive")

    def init_state(self, x_train: torch.Tensor) -> None:
        gen = torch.Generator().manual_seed(self.spec.seed)
        self.latent = [_init_uniform(gen, lay.weight_shape(), self.opts.init, self.device)
                       for lay in self.model_config.layers]
        self._setup(gen)
        self._make_opt()

    def _make_opt(self) -> None:
        params = {f"w{i}": w for i, w in enumerate(self.latent)} | self._float_params()
        for p in params.values():
            p.requires_grad_(True)
        self.opt = Adam(params, self.opts.lr)

    def _planes(self, i: int) -> torch.Tensor:
        return _SignSte.apply(self.latent[i])

    def train_step(self, x, y) -> StepResult:
        before = [self._bits(i) for i in range(len(self.latent))]
        loss = self._forward(x, y)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            for w in self.latent:
                w.clamp_(-1, 1)
        return StepResult(float(loss.detach()), self._flip_count(before), self.last_correct)

    def state_tensors(self):
        out = {f"latent{i}": w.detach().cpu().contiguous() for i, w in enumerate(self.latent)}
        return out | self._bn_state() | self.opt.state("adam")

    def state_meta(self):
        return {"adam_t": self.opt.t}

    def load_state(self, model, tensors, meta) -> None:
        self.init_state(torch.zeros((1, *self.spec.input_shape), dtype=torch.uint8, device=self.device))
        with torch.no_grad():
            for i, w in enumerate(self.latent):
                w.copy_(_need(tensors, f"latent{i}", w))
            self._load_bn(tensors)
        self.opt.load("adam", tensors, meta.get("adam_t", 0))


@register_rule
class BopRule(_BnBinaryNet, Rule):
    name = "bop"
    summary = "Bop (Helwegen et al. 2019): float momentum per bit, flip past tau; BN via Adam"
    trains_conv = True

    @dataclass(frozen=True)
    class Options:
        gamma: float = 1e-3
        tau: float = 1e-6
        lr: float = 0.01

        def check(self) -> None:
            if not 0 < self.gamma <= 1 or not self.tau >= 0 or not self.lr > 0:
                raise ConfigError("bop needs 0 < gamma <= 1, tau >= 0, lr > 0")

    def init_state(self, x_train: torch.Tensor) -> None:
        gen = torch.Generator().manual_seed(self.spec.seed)
        self.w = []
        for lay in self.model_config.layers:
            bits = torch.randint(0, 2, lay.weight_shape(), generator=gen)
            self.w.append((bits * 2.0 - 1).to(self.device).requires_grad_(True))
        self.mom = [torch.zeros_like(w) for w in self.w]
        self._setup(gen)
        self.opt = Adam(self._float_params(), self.opts.lr)
        for p in self.opt.params.values():
            p.requires_grad_(True)

    def _planes(self, i: int) -> torch.Tensor:
        return self.w[i]

    def train_step(self, x, y) -> StepResult:
        loss = self._forward(x, y)
        loss.backward()
        self.opt.step()
        g, t = self.opts.gamma, self.opts.tau
        flips = []
        with torch.no_grad():
            for w, m in zip(self.w, self.mom, strict=True):
                m.mul_(1 - g).add_(w.grad, alpha=g)
                flip = (m.abs() > t) & (torch.sign(m) == torch.sign(w))
                w[flip] *= -1
                w.grad = None
                flips.append(int(flip.sum()))
        return StepResult(float(loss.detach()), flips, self.last_correct)

    def state_tensors(self):
        out = {f"w{i}": w.detach().cpu().contiguous() for i, w in enumerate(self.w)}
        out |= {f"mom{i}": m.cpu().contiguous() for i, m in enumerate(self.mom)}
        return out | self._bn_state() | self.opt.state("adam")

    def state_meta(self):
        return {"adam_t": self.opt.t}

    def load_state(self, model, tensors, meta) -> None:
        self.init_state(torch.zeros((1, *self.spec.input_shape), dtype=torch.uint8, device=self.device))
        with torch.no_grad():
            for i in range(len(self.w)):
                self.w[i].copy_(_need(tensors, f"w{i}", self.w[i]))
                self.mom[i].copy_(_need(tensors, f"mom{i}", self.mom[i]))
            self._load_bn(tensors)
        self.opt.load("adam", tensors, meta.get("adam_t", 0))


@register_rule
class FloatRule(Rule):
    name = "float"
    summary = "float MLP/CNN (ReLU, max-pool, Adam) - reference only, not exportable"
    exportable = False
    trains_conv = True

    @dataclass(frozen=True)
    class Options:
        lr: float = 1e-3

        def check(self) -> None:
            if not self.lr > 0:
                raise ConfigError("lr must be positive")

    def init_state(self, x_train: torch.Tensor) -> None:
        gen = torch.Generator().manual_seed(self.spec.seed)
        self.params = {}
        for i, lay in enumerate(self.model_config.layers):  # conv: [F, K*K*C], order (ky, kx, c)
            b = 1.0 / math.sqrt(lay.n_in)
            self.params[f"w{i}"] = _init_uniform(gen, (lay.n_out, lay.n_in), b, self.device)
            self.params[f"b{i}"] = _init_uniform(gen, (lay.n_out,), b, self.device)
        for p in self.params.values():
            p.requires_grad_(True)
        self.opt = Adam(self.params, self.opts.lr)

    def _logits(self, x):
        cfg = self.model_config
        h = _input_float(cfg, x, unit=True)
        for i, lay in enumerate(cfg.layers):
            w, b = self.params[f"w{i}"], self.params[f"b{i}"]
            if lay.conv is None:
                h = h @ w.T + b
            else:  # zero padding, as a float CNN; ReLU, then max-pool
                h = _pool_rows(lay.conv, torch.relu(_conv_rows(lay.conv, h, w, 0.0) + b), lay.n_out)
                continue
            if not lay.output:
                h = torch.relu(h)
        return h

    def train_step(self, x, y) -> StepResult:
        logits = self._logits(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        self.opt.step()
        return StepResult(float(loss.detach()), [0] * len(self.model_config.layers),
                          int((logits.detach().argmax(1) == y).sum()))

    @torch.no_grad()
    def predict(self, x, batch: int = 4096):
        return torch.cat([self._logits(x[i : i + batch]).argmax(-1) for i in range(0, len(x), batch)])

    def export(self):
        return None

    def weight_bits(self):
        return [0] * len(self.model_config.layers)

    def state_tensors(self):
        return {k: p.detach().cpu().contiguous() for k, p in self.params.items()} | self.opt.state("adam")

    def state_meta(self):
        return {"adam_t": self.opt.t}

    def load_state(self, model, tensors, meta) -> None:
        self.init_state(torch.zeros((1, *self.spec.input_shape), dtype=torch.uint8, device=self.device))
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(_need(tensors, k, p))
        self.opt.load("adam", tensors, meta.get("adam_t", 0))
