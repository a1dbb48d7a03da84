"""The virtual accelerator: a bitswarm model run in software on packed words (SPEC.md §2–§7, §14).

:class:`VirtualAccelerator` packs a :class:`bitswarm.golden.Model` once and runs inference with
the popcount kernels of :mod:`bitswarm.sim.popcount`. It is bit-exact with
:meth:`bitswarm.golden.Model.forward` (scores and every layer's trace entry) and
:meth:`~bitswarm.golden.Model.predict` (classes); the tests compare whole outputs.

Every layer is one kernel call on a *concatenated* operand, so swarm planes, input bit planes
and ternary planes cost no Python loops:

=====================  =========================================  ===================================
layer                  kernel operands (per row)                  pre-activation ``z``
=====================  =========================================  ===================================
binary, ±1 input       ``xnor``: ``[a]*S`` vs ``[w_0 .. w_S-1]``  ``r - (64·S·W - S·N)``
binary, B-bit input    ``and``: ``[x_b]*S`` vs ``[w_0 .. w_S-1]``  ``Σ_b 2^b (2 P_b - S·popcount(x_b))``
ternary, ±1 input      ``and``: ``[a, ¬a]`` vs ``[pos, neg]``     ``2 P - popcount(mask)``
ternary, B-bit input   ``and``: ``[x_b, x_b]`` vs ``[pos, ¬neg]``  ``Σ_b 2^b (P_b - popcount(x_b))``
=====================  =========================================  ===================================

with ``pos = mask AND sign``, ``neg = mask AND NOT sign`` (SPEC §5), ``W`` words per plane and
every complement restricted to the ``N`` valid bits. Padding bits are 0 in every plane, so they
add nothing to a concatenated count. The ternary ±1 row uses
``popcount(mask AND XNOR(a, sign)) = popcount(a AND pos) + popcount(NOT a AND neg)``; the ternary
B-bit row uses ``popcount(x AND neg) = popcount(x) - popcount(x AND NOT neg)``.

**Row layout.** A dense layer's row is its ``N`` inputs packed as SPEC §2 (``W = ceil(N/64)``).
A convolutional layer's rows are its windows (one per output pixel, raster order), each laid
out as ``K`` *groups*, one per window row ``ky``: the ``K·C`` inputs ``(kx, c)`` of that row
(SPEC §14 order, ``c`` fastest) packed into ``ceil(K·C/64)`` words, so ``W = K·ceil(K·C/64)``.
The weights are packed in the same groups. In an HWC map, the ``K·C`` inputs of one window row
are consecutive bits of one map row, so :func:`~bitswarm.sim.popcount.window_words` cuts every
group out of the row-packed map with one funnel shift per word. Padding (SPEC §14) is the
encoded value 0: zero bits in the padded map, i.e. −1 for ±1 inputs and 0 for every plane of
a B-bit input. After the threshold, max-pooling is an OR (a maximum of bits) over ``Q×Q``
pixels; the pooled HWC bits ``[B, H_q·W_q·F]`` go to the next layer.

Activations (SPEC §7): hidden bits ``((z - θ) >= 0) XOR inv`` are packed (SPEC §2) for the next
layer; the output layer gives ``z - θ`` (int64) and classes by argmax, ties to the lowest index.

The forward pass is kept apart from timing: a cycle model can walk :attr:`VirtualAccelerator.layers`
(each :class:`PackedLayer` holds its config and operands) without touching the arithmetic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..golden.bits import WORD_BITS, n_words, pack_bits
from ..golden.conv import ConvGeometry
from ..golden.errors import ConfigError
from ..golden.layer import LayerConfig
from ..golden.model import PIXEL_BITS, Model, ModelConfig, load_model, quantize_input
from .popcount import and_popcount, window_words, xnor_popcount

__all__ = [
    "PackedLayer",
    "VirtualAccelerator",
    "pack_layer",
    "pack_rows",
    "layer_planes",
    "layer_preact",
    "layer_output",
    "map_rows",
]


def _group_mask(n: int) -> np.ndarray:
    """``uint64 [ceil(n/64)]`` words with the first ``n`` bits set."""
    m = np.full(n_words(n), np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    if n % WORD_BITS:
        m[-1] = np.uint64((1 << (n % WORD_BITS)) - 1)
    return m


def _valid_mask(cfg: LayerConfig) -> np.ndarray:
    """The valid input bits of one row in the layer's row layout (``uint64 [W]``)."""
    g = cfg.conv
    if g is None:
        return _group_mask(cfg.n_in)
    return np.tile(_group_mask(g.kernel * g.in_channels), g.kernel)


def pack_rows(cfg: LayerConfig, bits) -> np.ndarray:
    """Pack ``[..., N]`` 0/1 inputs (or weight bits) of a layer into its row layout.

    Dense: SPEC §2 packing, ``[..., ceil(N/64)]``. Convolution: the ``K`` window rows
    ``(ky; kx, c)`` packed group by group, ``[..., K·ceil(K·C/64)]``.
    """
    a = np.asarray(bits)
    g = cfg.conv
    if g is None:
        return pack_bits(a)
    lead = a.shape[:-1]
    grouped = pack_bits(a.reshape(lead + (g.kernel, g.kernel * g.in_channels)))
    return np.ascontiguousarray(grouped.reshape(lead + (-1,)))


@dataclass(frozen=True)
class PackedLayer:
    """One layer's packed operands, ready for the kernel.

    Members
    -------
    cfg : LayerConfig
        The golden layer config.
    kernel : str
        ``"xnor"`` or ``"and"``.
    weights : numpy.ndarray
        ``uint64 [M, P·W]``: the concatenated weight planes (``P`` = S, or 2 for ternary), each
        in the layer's row layout (:attr:`words` words).
    mask_count : numpy.ndarray
        ``int64 [M]``: ``popcount(mask_j)`` for ternary layers, else zeros.
    theta : numpy.ndarray
        ``int64 [M]`` thresholds.
    invert : numpy.ndarray
        ``bool [M]`` invert bits.
    """

    cfg: LayerConfig
    kernel: str
    weights: np.ndarray
    mask_count: np.ndarray
    theta: np.ndarray
    invert: np.ndarray

    @property
    def theta32(self) -> np.ndarray:
        """``int32 [M]`` thresholds (exact: ``|θ| <= z_bound < 2**31``)."""
        return self.theta.astype(np.int32)

    @property
    def groups(self) -> int:
        """Word groups per row: ``K`` (convolution, one per window row), 1 (dense)."""
        return self.cfg.conv.kernel if self.cfg.conv is not None else 1

    @property
    def group_bits(self) -> int:
        """Inputs per group: ``K·C`` (convolution) or ``N`` (dense)."""
        g = self.cfg.conv
        return g.kernel * g.in_channels if g is not None else self.cfg.n_in

    @property
    def words(self) -> int:
        """Words per plane: ``K·ceil(K·C/64)`` (convolution) or ``ceil(N/64)`` (dense)."""
        return self.groups * n_words(self.group_bits)

    @property
    def valid(self) -> np.ndarray:
        """``uint64 [words]`` with the ``N`` input bits of a row set (padding bits clear)."""
        return _valid_mask(self.cfg)


def pack_layer(cfg: LayerConfig, weights, theta, invert) -> PackedLayer:
    """Pack one golden layer (``Model.weights[i]`` etc.) into kernel operands.

    Parameters
    ----------
    cfg : LayerConfig
        The layer's config.
    weights : torch.Tensor or numpy.ndarray
        uint8 bits ``[S, M, N]`` (binary) or int8 trits ``[M, N]`` (ternary).
    theta, invert : torch.Tensor or numpy.ndarray
        int32 ``[M]`` thresholds and uint8 ``[M]`` invert bits.

    Raises
    ------
    ConfigError
        If a shape does not match ``cfg``.
    """

    def _np(t) -> np.ndarray:
        return t.cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)

    w, th, inv = _np(weights), _np(theta), _np(invert)
    if tuple(w.shape) != cfg.weight_shape():
        raise ConfigError(f"weights must have shape {cfg.weight_shape()}, found {tuple(w.shape)}")
    for name, v in (("theta", th), ("invert", inv)):
        if v.shape != (cfg.n_out,):
            raise ConfigError(f"{name} must have shape ({cfg.n_out},), found {v.shape}")
    m = cfg.n_out
    if cfg.weights == "binary":
        planes = [pack_rows(cfg, w[s]) for s in range(cfg.swarm)]
        kernel = "xnor" if cfg.input_bits == 1 else "and"
        mask_count = np.zeros(m, dtype=np.int64)
    else:
        pos = pack_rows(cfg, (w > 0).astype(np.uint8))
        neg = pack_rows(cfg, (w < 0).astype(np.uint8))
        mask_count = (w != 0).sum(axis=1, dtype=np.int64)
        kernel = "and"
        if cfg.input_bits == 1:
            planes = [pos, neg]
        else:
            planes = [pos, ~neg & _valid_mask(cfg)]
    return PackedLayer(
        cfg=cfg,
        kernel=kernel,
        weights=np.ascontiguousarray(np.concatenate(planes, axis=1)),
        mask_count=mask_count,
        theta=th.astype(np.int64),
        invert=inv.astype(bool),
    )


def _quantize(cfg: ModelConfig, x) -> np.ndarray:
    """First-layer inputs ``[B, in_size]`` uint8 from raw samples: golden :func:`quantize_input`
    (flat HWC for a convolutional first layer, SPEC §14).

    Valid uint8 numpy arrays and CPU tensors take a numpy fast path of the same rule
    (``x >> (8 - input_bits)``, ``[B, C, H, W]`` permuted to HWC; torch's threaded uint8 shift
    is slow on a busy machine); anything else goes through golden, which also raises its errors.
    """
    if isinstance(x, torch.Tensor) and x.device.type == "cpu":
        x = x.numpy()
    lay0, shape = cfg.layers[0], cfg.input_shape
    shapes = {shape, (lay0.in_size,)}
    if len(shape) == 3 and shape[0] == 1:
        shapes.add(shape[1:])
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim >= 1 and x.shape[1:] in shapes:
        if lay0.conv is not None and x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        flat = np.ascontiguousarray(x.reshape(x.shape[0], -1))
        return flat >> np.uint8(PIXEL_BITS - lay0.input_bits)
    return quantize_input(cfg, x).cpu().numpy()


def map_rows(g: ConvGeometry, bits: np.ndarray) -> np.ndarray:
    """Row-packed padded maps ``uint64 [B, H + 2P, R]`` of flat HWC bits ``[B, H·W·C]``.

    Row ``y`` holds the ``(W + 2P)·C`` bits of padded map row ``y`` (pixel ``x``, channel ``c``
    at bit ``x·C + c``); padding pixels and every bit beyond the row are 0 (the encoded value 0
    of SPEC §14), and ``R = ceil((W + 2P)·C / 64) + 1`` leaves the spare word that
    :func:`~bitswarm.sim.popcount.window_words` reads past a row's last window.
    """
    b, p, c = bits.shape[0], g.pad, g.in_channels
    h, w = g.in_height, g.in_width
    r = n_words((w + 2 * p) * c) + 1
    buf = np.zeros((b, h + 2 * p, r * WORD_BITS), dtype=np.uint8)
    buf[:, p : p + h, p * c : (p + w) * c] = bits.reshape(b, h, w * c)
    return np.packbits(buf, axis=-1, bitorder="little").view("<u8").astype(np.uint64, copy=False)


def layer_planes(layer: PackedLayer, x: np.ndarray, threads: int | None = None) -> list[np.ndarray]:
    """Packed input rows of a layer from its inputs ``x`` (uint8 ``[B, in_size]``: ±1 bits, or
    B-bit values): one plane of ±1 bits, or ``input_bits`` planes LSB first, each
    ``uint64 [rows, W]`` in the layer's row layout (``rows = B·H_o·W_o`` windows for a
    convolution, ``B`` for a dense layer). ``threads``: for cutting the windows (default all
    CPUs)."""
    cfg, g = layer.cfg, layer.cfg.conv
    bits = [x] if cfg.input_bits == 1 else [(x >> b) & 1 for b in range(cfg.input_bits)]
    if g is None:
        return [pack_bits(p) for p in bits]
    return [
        window_words(map_rows(g, p), g.kernel, g.stride, g.in_channels, g.out_height, g.out_width,
                     threads=threads)
        for p in bits
    ]


def layer_preact(
    layer: PackedLayer, planes: list[np.ndarray], threads: int | None = None
) -> np.ndarray:
    """Pre-activations ``z`` (int32 ``[B, M]``) of a packed layer, SPEC §3–§5.

    int32 is exact: every intermediate below is bounded by ``2 · z_bound``, and the largest
    legal layer has ``z_bound = 65536 · 32 · 255 < 2**30``.

    Parameters
    ----------
    layer : PackedLayer
        The packed layer.
    planes : list of numpy.ndarray
        Packed input planes ``uint64 [B, W]`` in the layer's row layout (:func:`layer_planes`;
        for a convolution ``B`` counts windows): one (±1 input) or ``input_bits`` (LSB first),
        with zero padding bits.
    threads : int, optional
        Kernel threads (default all CPUs).

    Raises
    ------
    ConfigError
        If the planes do not match the layer.
    """
    cfg = layer.cfg
    n, s, words = cfg.n_in, cfg.swarm, layer.words
    nb = len(planes)
    if nb != cfg.input_bits:
        raise ConfigError(f"layer takes {cfg.input_bits} input planes, found {nb}")
    batch = planes[0].shape[0]
    for p in planes:
        if p.dtype != np.uint64 or p.shape != (batch, words):
            raise ConfigError(
                f"input planes must be uint64 [{batch}, {words}], found {p.dtype} {p.shape}"
            )
    rows = planes[0][None] if nb == 1 else np.stack(planes)  # [nb, B, W]
    if cfg.weights == "binary":
        a = rows if s == 1 else np.tile(rows, (1, 1, s))
        a = np.ascontiguousarray(a.reshape(nb * batch, s * words))  # no copy for nb = s = 1
        if cfg.input_bits == 1:
            # r = 64·S·W - 2·popcount(a XOR w) over all planes; padding bits XOR to 0
            r = xnor_popcount(a, layer.weights, s * words * WORD_BITS, threads=threads)
            r -= s * words * WORD_BITS - s * n
            return r
        cnt = and_popcount(a, layer.weights, threads=threads).reshape(nb, batch, -1)
        # z = Σ_b 2^b (2 P_b - S·popcount(x_b)) = 2 Σ_b 2^b P_b - S·Σ_k x_k
        z = _weighted_planes(cnt)
        z <<= 1
        z -= (s * _plane_values(planes))[:, None]
        return z
    if cfg.input_bits == 1:  # ternary, ±1 input: rows [a, NOT a] against [pos, neg]
        a0 = planes[0]
        a = np.ascontiguousarray(np.concatenate([a0, ~a0 & layer.valid], axis=1))
        z = and_popcount(a, layer.weights, threads=threads)
        z <<= 1
        z -= layer.mask_count.astype(np.int32)[None, :]
        return z
    # ternary, B-bit input: rows [x_b, x_b] against [pos, NOT neg]; z = Σ_b 2^b P_b - Σ_k x_k
    a = np.ascontiguousarray(np.concatenate([rows, rows], axis=2).reshape(nb * batch, 2 * words))
    cnt = and_popcount(a, layer.weights, threads=threads).reshape(nb, batch, -1)
    z = _weighted_planes(cnt)
    z -= _plane_values(planes)[:, None]
    return z


def _weighted_planes(cnt: np.ndarray) -> np.ndarray:
    """``Σ_b 2^b cnt[b]`` (int32) by Horner's rule, in place on a copy of the top plane."""
    z = cnt[-1].copy()
    for b in range(cnt.shape[0] - 2, -1, -1):
        z <<= 1
        z += cnt[b]
    return z


def _plane_values(planes: list[np.ndarray]) -> np.ndarray:
    """``Σ_b 2^b popcount(x_b)`` per row = the sum of the unsigned inputs (int32 ``[B]``)."""
    v = np.zeros(planes[0].shape[0], dtype=np.int32)
    for b, p in enumerate(planes):
        v += np.bitwise_count(p).sum(axis=1, dtype=np.int32) << b
    return v


def layer_output(layer: PackedLayer, z: np.ndarray) -> np.ndarray:
    """SPEC §7: hidden layers give bits ``((z - θ) >= 0) XOR inv`` (uint8 ``[B, M]``), the
    output layer gives scores ``z - θ`` (int64). A convolution's bits (``z`` of its ``B·H_o·W_o``
    windows) are max-pooled, an OR over ``Q×Q`` pixels after the invert (SPEC §14), into flat
    HWC ``[B, H_q·W_q·F]``; rows and columns that fill no pooling window are dropped."""
    if layer.cfg.output:
        return z.astype(np.int64) - layer.theta[None, :]
    bits = ((z >= layer.theta32[None, :]) ^ layer.invert[None, :]).view(np.uint8)
    g = layer.cfg.conv
    if g is None:
        return bits
    f, q = layer.cfg.n_out, g.pool
    m = bits.reshape(-1, g.out_height, g.out_width, f)
    if q > 1:
        hq, wq = g.pooled_height, g.pooled_width
        m = m[:, : hq * q, : wq * q].reshape(-1, hq, q, wq, q, f).max(axis=(2, 4))
    return np.ascontiguousarray(m.reshape(m.shape[0], -1))


class VirtualAccelerator:
    """A bitswarm model on packed words: bit-exact inference with the popcount kernels.

    Parameters
    ----------
    model : bitswarm.golden.Model
        The model to run; its weights are packed once, here.
    threads : int, optional
        Kernel threads (default: all CPUs).

    Members
    -------
    cfg : ModelConfig
        The model's config.
    layers : list of PackedLayer
        Packed operands per layer.
    """

    def __init__(self, model: Model, threads: int | None = None):
        if not isinstance(model, Model):
            raise ConfigError(
                f"VirtualAccelerator needs a bitswarm.golden.Model, not {type(model).__name__}"
            )
        model.validate()
        self.cfg = model.cfg
        self.threads = threads
        self.layers = [
            pack_layer(lay, model.weights[i], model.theta[i], model.invert[i])
            for i, lay in enumerate(model.cfg.layers)
        ]

    @classmethod
    def from_file(cls, path: str | os.PathLike, threads: int | None = None) -> "VirtualAccelerator":
        """Load a model file (SPEC §10) and build its accelerator."""
        return cls(load_model(path), threads=threads)

    def forward(self, x, trace: list | None = None) -> np.ndarray:
        """Integer scores ``[B, classes]`` (int64) for raw uint8 samples ``[B, *input_shape]``.

        Parameters
        ----------
        x : numpy.ndarray or torch.Tensor
            uint8 samples, as for :meth:`bitswarm.golden.Model.forward`.
        trace : list, optional
            If given, each layer's output is appended: hidden layers' activation bits
            (uint8 ``[B, M]``; a convolution's pooled HWC map ``[B, H_q·W_q·F]``), then the
            scores — the same entries as the golden trace.

        Raises
        ------
        ConfigError
            If the samples have the wrong dtype or shape.
        """
        out = _quantize(self.cfg, x)
        for layer in self.layers:
            planes = layer_planes(layer, out, threads=self.threads)
            z = layer_preact(layer, planes, threads=self.threads)
            out = layer_output(layer, z)
            if trace is not None:
                trace.append(out)
        return out

    def predict(self, x) -> np.ndarray:
        """Classes ``[B]`` (int64): argmax of the scores, ties going to the lowest index."""
        return np.argmax(self.forward(x), axis=1).astype(np.int64)
