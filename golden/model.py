"""Whole models and the model file format (v1; v2 with convolutions) (SPEC.md §9, §10, §14).

A model file is a safetensors file (no pickle, no code) whose metadata holds one JSON header
under the key ``"bitswarm"``; see SPEC.md §10 for every field and tensor.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .bits import n_words, pack_bits, unpack_bits
from .conv import to_hwc
from .errors import ConfigError, ModelFileError
from .files import DIGEST_KEY, atomic_write_bytes, header_sealed, notice, seal_header
from .flip import FlipRuleConfig
from .layer import LayerConfig, argmax, layer_forward
from .lfsr import _is_int

__all__ = [
    "FORMAT",
    "VERSION",
    "VERSIONS",
    "DIGEST_KEY",
    "PIXEL_BITS",
    "ModelConfig",
    "Model",
    "quantize_input",
    "atomic_write_bytes",
    "save_model",
    "load_model",
]

FORMAT = "bitswarm-model"
#: The newest model file version this bitswarm reads and writes (SPEC.md §14: files without
#: convolutional layers are written as version 1, byte for byte as before).
VERSION = 2
VERSIONS = (1, 2)
PIXEL_BITS = 8
#: metadata key that marks a training checkpoint (bitswarm.train.checkpoint), not a model.
_CHECKPOINT_KEY = "bitswarm-checkpoint"


@dataclass(frozen=True)
class ModelConfig:
    """A whole network: input quantization, layers, and the flip rule it trains with.

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one raw sample (uint8 pixels), e.g. ``(8, 8)``; its product is ``layers[0].n_in``.
    layers : tuple of LayerConfig
        Chained: ``layers[i].n_out == layers[i+1].n_in``; only the last has ``output=True``; only
        the first may have ``input_bits > 1``. Raw 8-bit pixels enter the first layer as
        ``x >> (8 - layers[0].input_bits)``.
    flip : FlipRuleConfig
        The integrate-and-fire rule (recorded so hardware can be built for on-chip learning).
    meta : dict of str to str
        Free-form provenance (dataset, rule, seed, ...); not interpreted.
    """

    input_shape: tuple[int, ...]
    layers: tuple[LayerConfig, ...]
    flip: FlipRuleConfig = field(default_factory=FlipRuleConfig)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        shape = self.input_shape
        if isinstance(shape, list):
            shape = tuple(shape)
            object.__setattr__(self, "input_shape", shape)
        if (
            not isinstance(shape, tuple)
            or not shape
            or not all(_is_int(s) and s >= 1 for s in shape)
        ):
            raise ConfigError(f"input_shape must be a non-empty list of positive integers, not {shape!r}")
        layers = tuple(
            LayerConfig.from_dict(lay) if isinstance(lay, dict) else lay for lay in self.layers
        )
        object.__setattr__(self, "layers", layers)
        if not layers or not all(isinstance(lay, LayerConfig) for lay in layers):
            raise ConfigError("layers must be a non-empty list of layer configs")
        if isinstance(self.flip, dict):
            object.__setattr__(self, "flip", FlipRuleConfig.from_dict(self.flip))
        if not isinstance(self.flip, FlipRuleConfig):
            raise ConfigError("flip must be a flip-rule config")
        if not isinstance(self.meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.meta.items()
        ):
            raise ConfigError("meta must map strings to strings")
        if math.prod(shape) != layers[0].in_size:
            raise ConfigError(
                f"input_shape {list(shape)} has {math.prod(shape)} values but layer 0 takes "
                f"{layers[0].in_size}"
            )
        g0 = layers[0].conv
        if g0 is not None and shape != (g0.in_channels, g0.in_height, g0.in_width):
            raise ConfigError(f"input_shape {list(shape)} must be the first convolution's input "
                              f"[C, H, W] = {[g0.in_channels, g0.in_height, g0.in_width]}")
        for i, (a, b) in enumerate(zip(layers, layers[1:], strict=False)):
            if a.out_size != b.in_size:
                raise ConfigError(f"layer {i} gives {a.out_size} outputs but layer {i + 1} takes {b.in_size}")
            if b.conv is not None:
                g = a.conv
                if g is None:
                    raise ConfigError(f"layer {i + 1} is a convolution after a dense layer; "
                                      "convolutions come first")
                want = (a.n_out, g.pooled_height, g.pooled_width)
                have = (b.conv.in_channels, b.conv.in_height, b.conv.in_width)
                if have != want:
                    raise ConfigError(f"layer {i + 1} takes a {'x'.join(map(str, have))} map but "
                                      f"layer {i} gives {'x'.join(map(str, want))}")
        for i, lay in enumerate(layers):
            if lay.output != (i == len(layers) - 1):
                raise ConfigError("exactly the last layer must have output=true")
            if i > 0 and lay.input_bits != 1:
                raise ConfigError(f"layer {i} takes activation bits: input_bits must be 1")
        if layers[-1].n_out < 2:
            raise ConfigError("the output layer needs at least 2 classes")

    @property
    def n_classes(self) -> int:
        return self.layers[-1].n_out

    @property
    def arch(self) -> list[int]:
        """Activation sizes, input first: the MLP widths (``[64, 128, 10]``); for a network
        with convolutions the flat sizes of its maps (SPEC.md §14)."""
        return [self.layers[0].in_size] + [lay.out_size for lay in self.layers]

    @property
    def has_conv(self) -> bool:
        return any(lay.conv is not None for lay in self.layers)

    @property
    def arch_string(self) -> str:
        """The canonical architecture string (``64-128-10``, ``1x8x8-c16k3p1-mp2-10``)."""
        from .arch import arch_of_layers

        return str(arch_of_layers(self.input_shape, self.layers))

    def require_dense(self, what: str) -> None:
        """One-line ConfigError where ``what`` does not handle convolutional layers."""
        if self.has_conv:
            raise ConfigError(f"{what} does not support convolutional layers yet "
                              f"(model {self.arch_string}); use an MLP")

    @classmethod
    def from_arch(
        cls,
        arch,
        input_shape: tuple[int, ...] | None = None,
        swarm: int = 1,
        input_bits: int = 8,
        weights: str = "binary",
        flip: FlipRuleConfig | None = None,
        meta: dict | None = None,
    ) -> "ModelConfig":
        """A network from an architecture string (:func:`bitswarm.golden.arch.parse_arch`).
        ``input_shape`` (the data set's sample shape) is used for an MLP whose string starts
        with a width; with convolutions the string's ``CxHxW`` is the input shape."""
        from .arch import parse_arch

        a = parse_arch(arch)
        shape = a.input_shape
        if a.is_mlp and len(shape) == 1 and input_shape is not None:
            if math.prod(input_shape) != shape[0]:
                raise ConfigError(f"arch {a} takes {shape[0]} inputs but the samples have "
                                  f"{math.prod(input_shape)}")
            shape = tuple(input_shape)
        return cls(input_shape=tuple(shape), layers=a.layers(swarm, input_bits, weights),
                   flip=flip or FlipRuleConfig(), meta=dict(meta or {}))

    @classmethod
    def mlp(
        cls,
        arch: list[int],
        input_shape: tuple[int, ...] | None = None,
        swarm: int = 1,
        input_bits: int = 8,
        flip: FlipRuleConfig | None = None,
        meta: dict | None = None,
    ) -> "ModelConfig":
        """An MLP from widths, e.g. ``[64, 128, 10]``."""
        if not isinstance(arch, (list, tuple)) or len(arch) < 2:
            raise ConfigError(f"arch needs at least an input and an output width, not {arch!r}")
        layers = tuple(
            LayerConfig(
                n_in=arch[i],
                n_out=arch[i + 1],
                swarm=swarm,
                input_bits=input_bits if i == 0 else 1,
                output=i == len(arch) - 2,
            )
            for i in range(len(arch) - 1)
        )
        return cls(
            input_shape=tuple(input_shape) if input_shape else (arch[0],),
            layers=layers,
            flip=flip or FlipRuleConfig(),
            meta=dict(meta or {}),
        )

    def to_dict(self) -> dict:
        return {
            "input_shape": list(self.input_shape),
            "layers": [lay.to_dict() for lay in self.layers],
            "flip": self.flip.to_dict(),
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        from .lfsr import _from_dict

        return _from_dict(cls, d, "config")


def quantize_input(cfg: ModelConfig, x) -> torch.Tensor:
    """Raw uint8 samples ``[B, *input_shape]`` -> first-layer inputs ``[B, N]`` (uint8)."""
    x = torch.as_tensor(x)
    if x.dtype != torch.uint8:
        raise ConfigError(f"samples must be uint8 pixels, not {x.dtype}")
    shape, lay0 = tuple(x.shape[1:]), cfg.layers[0]
    ok = {cfg.input_shape, (lay0.in_size,)}
    if len(cfg.input_shape) == 3 and cfg.input_shape[0] == 1:
        ok.add(cfg.input_shape[1:])  # [B, H, W] for one channel
    if shape not in ok:
        raise ConfigError(
            f"samples must have shape [batch, {', '.join(map(str, cfg.input_shape))}], "
            f"found {list(x.shape)}"
        )
    if lay0.conv is not None:  # flat HWC (SPEC.md §14)
        x = to_hwc(x, cfg.input_shape)
    return (x.reshape(x.shape[0], -1) >> (PIXEL_BITS - lay0.input_bits)).contiguous()


class Model:
    """Integer state of a network: weights, thresholds, inverts, and optional training state.

    ``weights[i]``: uint8 bits ``[S, M, N]`` (binary) or int8 trits ``[M, N]`` (ternary);
    ``theta[i]``: int32 ``[M]``; ``invert[i]``: uint8 ``[M]`` (output layer: all 0);
    ``acc[i]``: int32 accumulators shaped like ``weights[i]`` or ``None``; ``lfsr_state``: int or
    ``None``.
    """

    def __init__(self, cfg: ModelConfig, weights, theta, invert, acc=None, lfsr_state=None):
        self.cfg = cfg
        self.weights = list(weights)
        self.theta = list(theta)
        self.invert = list(invert)
        self.acc = list(acc) if acc is not None else None
        self.lfsr_state = lfsr_state
        self.validate()

    @classmethod
    def random(cls, cfg: ModelConfig, seed: int = 0) -> "Model":
        g = torch.Generator().manual_seed(seed)
        ws, th, inv = [], [], []
        for lay in cfg.layers:
            if lay.weights == "binary":
                ws.append(torch.randint(0, 2, lay.weight_shape(), generator=g, dtype=torch.uint8))
            else:
                ws.append(torch.randint(-1, 2, lay.weight_shape(), generator=g, dtype=torch.int8))
            th.append(torch.zeros(lay.n_out, dtype=torch.int32))
            inv.append(torch.zeros(lay.n_out, dtype=torch.uint8))
        return cls(cfg, ws, th, inv)

    def validate(self) -> None:
        n = len(self.cfg.layers)
        for name in ("weights", "theta", "invert"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"{name}: expected {n} layers, found {len(getattr(self, name))}")
        for i, lay in enumerate(self.cfg.layers):
            w, t, v = self.weights[i], self.theta[i], self.invert[i]
            if tuple(w.shape) != lay.weight_shape():
                raise ConfigError(f"layer {i} weights: expected shape {lay.weight_shape()}, found {tuple(w.shape)}")
            if lay.weights == "binary":
                if w.dtype != torch.uint8 or (w.numel() and int(w.max()) > 1):
                    raise ConfigError(f"layer {i} weights must be uint8 bits 0/1")
            elif w.dtype != torch.int8 or (w.numel() and (int(w.min()) < -1 or int(w.max()) > 1)):
                raise ConfigError(f"layer {i} weights must be int8 trits -1/0/+1")
            if t.dtype != torch.int32 or tuple(t.shape) != (lay.n_out,):
                raise ConfigError(f"layer {i} theta must be int32 [{lay.n_out}]")
            if int(t.abs().max()) > lay.theta_bound:
                raise ConfigError(f"layer {i} theta must lie in -{lay.theta_bound}..{lay.theta_bound}")
            if v.dtype != torch.uint8 or tuple(v.shape) != (lay.n_out,) or int(v.max()) > 1:
                raise ConfigError(f"layer {i} invert must be uint8 0/1 [{lay.n_out}]")
            if lay.output and int(v.max()) != 0:
                raise ConfigError("the output layer has no invert: all must be 0")
        if self.acc is not None:
            f = self.cfg.flip
            if len(self.acc) != n:
                raise ConfigError(f"acc: expected {n} layers, found {len(self.acc)}")
            for i, a in enumerate(self.acc):
                if a.dtype != torch.int32 or a.shape != self.weights[i].shape:
                    raise ConfigError(f"layer {i} acc must be int32 shaped like its weights")
                if a.numel() and (int(a.min()) < f.acc_min or int(a.max()) > f.acc_max):
                    raise ConfigError(f"layer {i} acc must lie in {f.acc_min}..{f.acc_max}")
        if self.lfsr_state is not None:
            w = self.cfg.flip.lfsr.width
            if not _is_int(self.lfsr_state) or not 1 <= self.lfsr_state < (1 << w):
                raise ConfigError(f"lfsr_state must be in 1..{(1 << w) - 1}")

    # -- inference ------------------------------------------------------------------------
    def forward(self, x, trace: list | None = None) -> torch.Tensor:
        """Integer scores ``[B, classes]`` (int64) for raw uint8 samples.

        If ``trace`` is a list, each layer's output (bits, then scores) is appended to it.
        """
        h = quantize_input(self.cfg, x)
        for i, lay in enumerate(self.cfg.layers):
            h = layer_forward(lay, h, self.weights[i], self.theta[i], self.invert[i])
            if trace is not None:
                trace.append(h)
        return h

    def predict(self, x) -> torch.Tensor:
        return argmax(self.forward(x))

    def to_torch(self) -> "torch.nn.Module":
        """This model as an integer-exact torch ``nn.Module`` (for a user's torch code,
        ``torch.jit.trace`` and ``torch.onnx.export``): a
        :class:`bitswarm.interop.torch_module.GoldenModule` holding a copy of the integer state."""
        from bitswarm.interop.torch_module import GoldenModule

        return GoldenModule(self)

    def equal(self, other: "Model") -> bool:
        """Bit-for-bit equality of configuration and all integer state."""

        def same(a, b):
            return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))

        return (
            self.cfg.to_dict() == other.cfg.to_dict()
            and same(self.weights, other.weights)
            and same(self.theta, other.theta)
            and same(self.invert, other.invert)
            and ((self.acc is None and other.acc is None) or (
                self.acc is not None and other.acc is not None and same(self.acc, other.acc)))
            and self.lfsr_state == other.lfsr_state
        )


# -- files ----------------------------------------------------------------------------------


def _tensors_of(model: Model) -> dict[str, np.ndarray]:
    t: dict[str, np.ndarray] = {}
    for i, lay in enumerate(model.cfg.layers):
        w = model.weights[i].cpu().numpy()
        if lay.weights == "binary":
            t[f"layers.{i}.weight"] = pack_bits(w)
        else:
            t[f"layers.{i}.mask"] = pack_bits((w != 0).astype(np.uint8))
            t[f"layers.{i}.sign"] = pack_bits((w > 0).astype(np.uint8))
        t[f"layers.{i}.theta"] = model.theta[i].cpu().numpy().astype(np.int32)
        t[f"layers.{i}.invert"] = model.invert[i].cpu().numpy().astype(np.uint8)
        if model.acc is not None:
            t[f"layers.{i}.acc"] = model.acc[i].cpu().numpy().astype(np.int32)
    return t


def model_to_bytes(model: Model) -> bytes:
    from safetensors.numpy import save

    model.validate()
    header = {
        "format": FORMAT,
        "version": 2 if model.cfg.has_conv else 1,
        "config": model.cfg.to_dict(),
        "has_state": model.acc is not None,
        "lfsr_state": model.lfsr_state,
    }
    tensors = _tensors_of(model)
    return save(tensors, metadata={"bitswarm": seal_header(FORMAT, header, tensors)})


def save_model(model: Model, path: str | os.PathLike) -> None:
    """Validate and write a model file atomically (version 1, or 2 with convolutions)."""
    atomic_write_bytes(path, model_to_bytes(model))


def _expect(tensors, name, dtype, shape, where):
    if name not in tensors:
        raise ModelFileError(f"{where}: missing tensor {name!r}")
    a = tensors[name]
    if a.dtype != np.dtype(dtype):
        raise ModelFileError(f"{where}: tensor {name!r} must be {np.dtype(dtype)}, found {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ModelFileError(f"{where}: tensor {name!r} must have shape {list(shape)}, found {list(a.shape)}")
    return a


def model_from_bytes(data: bytes, where: str = "model file", *, quiet: bool = False) -> Model:
    """Parse and fully validate model-file bytes; every defect is a one-line ModelFileError.

    The integrity digest (SPEC.md §10) is checked first; a file without one loads with one
    notice line on stderr (suppressed by ``quiet``).
    """
    from safetensors.numpy import load

    if len(data) < 8:
        raise ModelFileError(f"{where}: not a bitswarm model file (only {len(data)} bytes)")
    hlen = int.from_bytes(data[:8], "little")
    if hlen <= 0 or 8 + hlen > len(data):
        raise ModelFileError(f"{where}: not a bitswarm model file (bad or truncated header)")
    try:
        raw = json.loads(data[8 : 8 + hlen].decode("utf-8"))
        meta = raw.get("__metadata__") or {}
        tensors = load(data)
    except Exception as e:  # safetensors raises its own error types for every malformation
        raise ModelFileError(f"{where}: not a readable safetensors file ({e})") from None
    if _CHECKPOINT_KEY in meta:
        raise ModelFileError(f"{where} is a training checkpoint, not a model file: continue it "
                             "with `bitswarm train --resume`, or use the run's model file (--out)")
    if "bitswarm" not in meta:
        raise ModelFileError(f"{where}: no 'bitswarm' header: not a bitswarm model file")
    extra_keys = sorted(set(meta) - {"bitswarm"})
    if extra_keys:
        raise ModelFileError(f"{where}: unexpected metadata key(s) {extra_keys}: the file is "
                             "corrupted or was not written by bitswarm")
    try:
        header = json.loads(meta["bitswarm"])
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{where}: header is not valid JSON ({e})") from None
    if isinstance(header, dict) and DIGEST_KEY in header:
        if not header_sealed(FORMAT, meta["bitswarm"], header, tensors):
            raise ModelFileError(f"{where}: integrity check failed (SHA-256 digest mismatch): "
                                 "the file is corrupted or was edited")
        del header[DIGEST_KEY]
        unsealed = False
    else:
        unsealed = isinstance(header, dict)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{where}: header format must be {FORMAT!r}")
    if header.get("version") not in VERSIONS:
        raise ModelFileError(
            f"{where}: unsupported model file version {header.get('version')!r} (this bitswarm "
            f"reads {' and '.join(map(str, VERSIONS))})"
        )
    for key in ("config", "has_state", "lfsr_state"):
        if key not in header:
            raise ModelFileError(f"{where}: header field {key!r} is missing")
    unknown = sorted(set(header) - {"format", "version", "config", "has_state", "lfsr_state"})
    if unknown:
        raise ModelFileError(f"{where}: unknown header field(s) {unknown}: the file is corrupted "
                             "or was not written by bitswarm")
    if unsealed and not quiet:  # only now: a damaged digest field is an error, not a notice
        notice(f"{where} has no integrity digest (written by an older bitswarm); it is loaded "
               "unchecked — save it again to add one")
    try:
        cfg = ModelConfig.from_dict(header["config"])
    except (ConfigError, TypeError) as e:
        raise ModelFileError(f"{where}: invalid config: {e}") from None
    if cfg.has_conv != (header["version"] == 2):
        raise ModelFileError(f"{where}: a version-{header['version']} file must "
                             f"{'not ' if header['version'] == 1 else ''}have convolutional "
                             "layers (version 2 is written exactly when there are)")
    if not isinstance(header["has_state"], bool):
        raise ModelFileError(f"{where}: header field 'has_state' must be true or false")
    expected = set()
    weights, theta, invert, acc = [], [], [], []
    for i, lay in enumerate(cfg.layers):
        m, n = lay.n_out, lay.n_in
        wn = n_words(n)
        if lay.weights == "binary":
            names = [f"layers.{i}.weight"]
            pw = _expect(tensors, names[0], np.uint64, (lay.swarm, m, wn), where)
            w = unpack_bits(pw, n)
            if not np.array_equal(pack_bits(w), pw):
                raise ModelFileError(f"{where}: tensor {names[0]!r} has nonzero padding bits")
            weights.append(torch.from_numpy(w))
        else:
            names = [f"layers.{i}.mask", f"layers.{i}.sign"]
            pm = _expect(tensors, names[0], np.uint64, (m, wn), where)
            ps = _expect(tensors, names[1], np.uint64, (m, wn), where)
            mk, sg = unpack_bits(pm, n), unpack_bits(ps, n)
            if not (np.array_equal(pack_bits(mk), pm) and np.array_equal(pack_bits(sg), ps)):
                raise ModelFileError(f"{where}: ternary planes of layer {i} have nonzero padding bits")
            if np.any(sg & (1 - mk)):
                raise ModelFileError(f"{where}: layer {i} sign bit set where mask is 0")
            weights.append(torch.from_numpy(mk.astype(np.int8) * (2 * sg.astype(np.int8) - 1)))
        expected.update(names)
        for name, dt, dest in (("theta", np.int32, theta), ("invert", np.uint8, invert)):
            full = f"layers.{i}.{name}"
            expected.add(full)
            dest.append(torch.from_numpy(_expect(tensors, full, dt, (m,), where).copy()))
        if header["has_state"]:
            full = f"layers.{i}.acc"
            expected.add(full)
            acc.append(torch.from_numpy(_expect(tensors, full, np.int32, lay.weight_shape(), where).copy()))
    extra = set(tensors) - expected
    if extra:
        raise ModelFileError(f"{where}: unexpected tensor(s) {sorted(extra)}")
    try:
        return Model(cfg, weights, theta, invert, acc if header["has_state"] else None, header["lfsr_state"])
    except ConfigError as e:
        raise ModelFileError(f"{where}: {e}") from None


def load_model(path: str | os.PathLike) -> Model:
    """Read and fully validate a model file (v1 or v2); every defect is a one-line ModelFileError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    return model_from_bytes(path.read_bytes(), str(path))
