"""The hardware/software contract: per-layer folding, the fold file, the cycle model.

This module needs no Amaranth. The gateware (:mod:`bitswarm.hw.accel`, built from it), the
virtual accelerator and the Verilator driver (:mod:`bitswarm.sim`) and the resource model and
fold optimizer (:mod:`bitswarm.hw.resources`) all take their folding and timing from here, and
the tests assert that the RTL's measured cycle counts equal it exactly. ``hw/`` never imports
``sim/``; ``sim/`` imports this module.

Folding
-------
One :class:`LayerFold` per layer: ``pe`` output neurons and ``simd`` input elements per cycle,
``pipeline`` register stages in each popcount adder tree, and ``mem``, the weight memory style
(``auto``: :func:`auto_mem_style` decides; ``bram``: block RAM; ``logic``: LUT logic, which lets
synthesis fold constant weights into the XNOR gates). Between
layers the activation bits of ``pe_{i-1}``-neuron groups are repacked into ``simd_i``-element
slices, so ``simd_i`` must be a multiple of ``pe_{i-1}`` (FINN's MVAU has the analogous rule
for its data-width converters).

Fold file (JSON, like FINN's folding config)::

    {"format": "bitswarm-fold", "version": 1, "arch": [64, 512, 10],
     "layers": [{"pe": 8, "simd": 16, "pipeline": 2, "mem": "auto"}, ...]}

Cycle model (exact; asserted against Verilator)
-----------------------------------------------
Layer ``i``'s MAC array takes ``cpv_i = ceil(M_i/PE_i) · B_i · ceil(N_i/SIMD_i)`` cycles per
vector. Its input buffer holds three vectors (one computing, two filling), so every stage runs
as soon as its input is complete and the streaming **initiation interval** of back-to-back
images is exactly the slowest stage::

    interval = max_i cpv_i

The **latency** of an isolated image, from its first input handshake to its output handshake::

    latency = (SF_0 - 1) + T_0 + sum_{i>0} (2 + T_i) + 2 + k

``T_i`` is layer ``i``'s tail, from its last input slice to its last output group: with an input
buffer (``NF·B > 1``) ``cpv_i + pipeline_i + 5`` (registered write, the bank's full flag, the
steps, then buffer read, slice register / ROM read, tree registers, accumulator, output
register); without
(``NF·B = 1``, each slice is one step) ``pipeline_i + 3``. Each threshold-and-repack stage adds
2 registers; after the last layer the threshold and the argmax add 2 and the serializer the
``k`` scores of the last group, one per cycle (the ``+ 2`` above is ``+ 2 + k``). The output
layer's PE is at most ``B·SF`` so that serializing never throttles it.

Convolutions (SPEC.md §14)
--------------------------
A convolutional layer is the same folded MAC array fed by a
:class:`~bitswarm.hw.sliding_window.SlidingWindow` (FINN's ConvolutionInputGenerator + MVAU):
its vectors are the windows (``N = K·K·C``, order ``(ky, kx, c)``), ``PE`` output channels and
``SIMD`` window elements per cycle; after the per-channel threshold a
:class:`~bitswarm.hw.pool.Pool` ORs ``Q x Q`` windows and the repack stage hands the pooled HWC
map on. The folding rules of a convolution, checked by :class:`AccelPlan`:

- ``SIMD`` divides ``C`` (a window slice is ``SIMD`` channels of one pixel), or
  ``SIMD = J·C`` with ``J`` dividing ``K`` (a slice is ``J`` neighbouring pixels of one kernel
  row, FINN's "SIMD a multiple of C that divides K·C"; the line buffer then has ``J`` banks),
  :func:`window_split`; either way ``SF = K·K·C / SIMD``, so ``K·K·C`` is always a multiple
  of ``SIMD`` (no partial slices);
- ``PE`` divides ``F`` (a pooled pixel is ``F / PE`` whole groups, so the pooled map streams
  as a gap-free HWC vector into the next stage);
- as for every layer, the width of the transfers into the layer is a multiple of the
  previous layer's ``PE``: ``SIMD``, or the window generator's input ``SIMD / J``
  (:meth:`LayerFold.in_lanes`); the first layer's input is the raw image in HWC order,
  ``ceil(C·H·W / SIMD_0)`` transfers of ``SIMD_0`` pixel values (with ``J > 1`` an
  :class:`~bitswarm.hw.accel.Unpack` hands them to the generator one pixel a cycle).

The rows and columns of the conv output that fill no pooling window are never computed
(:func:`conv_outputs`): a convolution's MAC array takes ``H_c·W_c`` vectors per image with
``H_c = H_q·Q``, ``W_c = W_q·Q`` (``H_o``, ``W_o`` without pooling). The line buffer holds
:func:`line_rows` rows.

Its **interval** is the busiest stage per image (:meth:`AccelPlan.stage_cycles`)::

    interval = max(ceil(C_0·H_0·W_0 / SIMD_0),           # the input, one transfer a cycle
                   max_conv H·W·C / (SIMD / J),         # each window generator's writer
                   max_i vectors_i · cpv_i)             # each MAC array

Its **latency** is not a sum of tails: the first window of each output row waits for its map
rows, a full line buffer holds back the stage before it, and stages downstream can stall it.
:func:`bitswarm.hw.timing.conv_front` steps the conv stages' control (counters, valid, ready
and the registers between them, no data) with each component's documented rules, from the first
input handshake (cycle 0) to the handshake ``t`` of the last slice into the first dense layer
``d``; the dense layers then add their closed form::

    latency = t + T_d + sum_{i>d} (2 + T_i) + 2 + k
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from bitswarm.golden.conv import ConvGeometry
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.layer import LayerConfig
from bitswarm.golden.model import PIXEL_BITS, ModelConfig

__all__ = ["MEM_STYLES", "MEM_ATTRS", "auto_mem_style", "line_mem_style", "FOLD_FORMAT", "LayerFold", "AccelPlan", "tree_depth", "tree_terms",
           "weight_planes", "class_width", "conv_outputs", "conv_rows", "line_rows", "window_split", "conv_simds", "load_fold", "BUFFER_BANKS", "add_fold_args",
           "plan_from_args", "TrainerCycles", "TrainerFold", "TRAINER_FOLD_FORMAT", "load_trainer_fold",
           "cycles_per_sample", "argmax_levels", "DEFAULT_IN_LANES", "SYNC",
           "REPLY"]

#: Weight memory styles a fold may request.
MEM_STYLES = ("auto", "bram", "logic")
#: yosys memory-mapping attributes per resolved style.
MEM_ATTRS = {"bram": {"ram_style": "block", "rom_style": "block"},
             "logic": {"ram_style": "logic", "rom_style": "logic"}}


def auto_mem_style(width: int, depth: int, *, writable: bool = False) -> str:
    """The style ``auto`` resolves to, for every memory of the accelerator (weight ROMs, input
    buffers, threshold tables), so that the resource model knows what synthesis builds:
    block RAM for a memory of at least 1,024 bits that is at least 32 words deep (a writable
    buffer: any depth), else logic (LUTs for a ROM, flip-flops for a buffer)."""
    if width * depth >= 1024 and (writable or depth >= 32):
        return "bram"
    return "logic"


def trainer_mem_attrs(width: int, depth: int) -> dict:
    """yosys attributes of an on-chip trainer word memory (read-modify-write every cycle):
    block RAM from 17 words deep and 1,024 bits (left to itself, yosys puts memories up to
    about 32 words in distributed RAM on ECP5 — a 64-64-10 trainer at fold 2x64,2x64 then took
    29.6k LUT4 and no block RAM); shallower ones are left to synthesis (ECP5 distributed RAM,
    iCE40 flip-flops or block RAM). :func:`bitswarm.hw.resources.estimate_trainer` prices the
    same rule."""
    return dict(MEM_ATTRS["bram"]) if depth > 16 and width * depth >= 1024 else {}


def line_mem_style(width: int, depth: int) -> str:
    """The style of a sliding-window line buffer: block RAM from 32 words deep (a ring of map
    rows, read once per window slice, is what block RAM is for, as in FINN's
    ConvolutionInputGenerator) or from 1,024 bits, else flip-flops."""
    return "bram" if depth >= 32 or width * depth >= 1024 else "logic"


FOLD_FORMAT = "bitswarm-fold"
#: Vectors each MAC array's input buffer holds (one computing, two filling).
BUFFER_BANKS = 3


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def tree_depth(n_bits: int) -> int:
    """Levels of a popcount tree over ``n_bits`` (one level of 4-input counts, then adders)."""
    leaves = -(-n_bits // 4)
    return 1 + (leaves - 1).bit_length()


def weight_planes(lay: LayerConfig) -> int:
    """Bit-planes stored per weight: S swarm planes (binary) or 2 (ternary: mask, sign)."""
    return lay.swarm if lay.weights == "binary" else 2


def tree_terms(lay: LayerConfig, simd: int) -> int:
    """Product bits per popcount tree: ``S · SIMD`` (binary) or ``SIMD`` (ternary)."""
    return (lay.swarm if lay.weights == "binary" else 1) * simd


def class_width(n_classes: int) -> int:
    """Width of a class index (at least 1 bit)."""
    return max(1, (n_classes - 1).bit_length())


# -- convolution stages: the sliding-window generator's row schedule ------------------------
def conv_outputs(g: ConvGeometry) -> tuple[int, int]:
    """Output rows and columns the hardware computes: ``(H_q·Q, W_q·Q)``. The rows and columns
    of the ``H_o x W_o`` output that fill no pooling window (SPEC.md §14 drops them) are never
    generated, so they cost no MAC cycles (without pooling, ``Q = 1``: all of them)."""
    return g.pooled_height * g.pool, g.pooled_width * g.pool


def conv_rows(g: ConvGeometry) -> list[tuple[int, int, int]]:
    """Per computed output row ``oy`` (:func:`conv_outputs`) of a convolution: ``(lo, need,
    release)`` of the sliding-window generator. ``lo = max(0, oy·s - P)`` is the first map row the row's windows read (the line
    buffer's oldest held row while it is emitted), ``need`` the rows from ``lo`` that must be
    completely written before its first window is emitted (those its windows read; for the
    last output row every remaining row of the image, so that the next image starts on a
    clean buffer) and ``release`` the rows freed once its last window has been emitted."""
    k, s, p, h = g.kernel, g.stride, g.pad, g.in_height
    out = []
    rows = conv_outputs(g)[0]
    for oy in range(rows):
        y0 = oy * s - p
        lo = max(0, y0)
        last = oy == rows - 1
        need = (h if last else min(h, y0 + k)) - lo
        release = (h - lo) if last else max(0, y0 + s) - lo
        out.append((lo, need, release))
    return out


def window_split(g: ConvGeometry, simd: int) -> tuple[int, int]:
    """How a window slice of ``simd`` elements covers the map: ``(CG, J)`` = (slices per pixel,
    pixels per slice). ``SIMD`` dividing ``C`` gives ``(C / SIMD, 1)`` (part of one pixel);
    ``SIMD = J·C`` with ``J`` dividing ``K`` gives ``(1, J)`` (``J`` neighbouring pixels of one
    kernel row). Anything else is a ConfigError."""
    c, k = g.in_channels, g.kernel
    if _is_int(simd) and 1 <= simd <= c and c % simd == 0:
        return c // simd, 1
    if _is_int(simd) and simd > c and simd % c == 0 and k % (simd // c) == 0:
        return 1, simd // c
    raise ConfigError(f"simd = {simd} must divide the convolution's input channels C = {c}, or "
                      f"be J·C with J dividing the kernel K = {k} (a window slice is part of one "
                      "pixel, or J whole pixels of one kernel row)")


def conv_simds(g: ConvGeometry) -> list[int]:
    """Every SIMD :func:`window_split` allows, ascending: the divisors of ``C``, then ``J·C``
    for the divisors ``J > 1`` of ``K``."""
    c, k = g.in_channels, g.kernel
    return [d for d in range(1, c + 1) if c % d == 0] + [j * c for j in range(2, k + 1) if k % j == 0]


def line_rows(g: ConvGeometry) -> int:
    """Rows ``R`` of the sliding-window generator's line buffer: the most rows held at once
    when the rows of the next output row (or, at the last output row, of the next image's
    first output row) are written while the current one is emitted:
    ``R = max(max_oy (lo(oy+1) + need(oy+1) - lo(oy)), need(last) + need(0))``. For a stride-1
    3x3 window with padding 1 that is ``K + 1 = 4`` rows; never more than ``H + need(0)``."""
    rows = conv_rows(g)
    r = rows[-1][1] + rows[0][1]
    for (lo, _, _), (lo2, need2, _) in zip(rows, rows[1:], strict=False):
        r = max(r, lo2 + need2 - lo)
    return r


@dataclass(frozen=True)
class LayerFold:
    """Folding of one layer: ``pe`` neurons and ``simd`` inputs per cycle, tree ``pipeline``
    register stages, weight memory style ``mem`` (one of :data:`MEM_STYLES`)."""

    pe: int
    simd: int
    pipeline: int
    mem: str = "auto"

    def check(self, lay: LayerConfig, i: int = 0) -> None:
        for name, v, hi in (("pe", self.pe, lay.n_out), ("simd", self.simd, lay.n_in)):
            if not _is_int(v) or not 1 <= v <= hi:
                raise ConfigError(f"layer {i}: {name} must be an integer in 1..{hi}, not {v!r}")
        depth = self.tree_depth(lay)
        if not _is_int(self.pipeline) or not 0 <= self.pipeline <= depth:
            raise ConfigError(f"layer {i}: pipeline must be in 0..{depth}, not {self.pipeline!r}")
        if self.mem not in MEM_STYLES:
            raise ConfigError(f"layer {i}: mem must be one of {', '.join(MEM_STYLES)}, "
                              f"not {self.mem!r}")
        if lay.conv is not None:
            try:
                window_split(lay.conv, self.simd)
            except ConfigError as e:
                raise ConfigError(f"layer {i}: {e}") from None
            if lay.n_out % self.pe:
                raise ConfigError(f"layer {i}: pe = {self.pe} must divide the convolution's "
                                  f"output channels F = {lay.n_out} (pooled pixels are whole "
                                  "groups)")

    # -- geometry, derived once --------------------------------------------------------------
    def sf(self, lay: LayerConfig) -> int:
        """Input slices per bit-plane, ``ceil(N / SIMD)``."""
        return -(-lay.n_in // self.simd)

    def nf(self, lay: LayerConfig) -> int:
        """Output groups per vector, ``ceil(M / PE)``."""
        return -(-lay.n_out // self.pe)

    def tree_depth(self, lay: LayerConfig) -> int:
        return tree_depth(tree_terms(lay, self.simd))

    def cycles_per_vector(self, lay: LayerConfig) -> int:
        return self.nf(lay) * lay.input_bits * self.sf(lay)

    def in_lanes(self, lay: LayerConfig) -> int:
        """Elements per transfer into the layer: ``SIMD``, or for a convolution the sliding-window
        generator's input, one chunk of a pixel (``SIMD / J``: ``SIMD`` or ``C``)."""
        if lay.conv is None:
            return self.simd
        return self.simd // window_split(lay.conv, self.simd)[1]

    def vectors(self, lay: LayerConfig) -> int:
        """Input vectors per image: a convolution's computed windows (:func:`conv_outputs`,
        ``H_o·W_o`` less the rows and columns pooling drops), else 1."""
        if lay.conv is None:
            return 1
        h, w = conv_outputs(lay.conv)
        return h * w

    def cycles_per_image(self, lay: LayerConfig) -> int:
        """The MAC array's cycles per image, ``vectors · cycles_per_vector``."""
        return self.vectors(lay) * self.cycles_per_vector(lay)

    def buffered(self, lay: LayerConfig) -> bool:
        """Whether the MAC array buffers its input (slices are reused: ``NF·B > 1``)."""
        return self.nf(lay) * lay.input_bits > 1

    def tail_cycles(self, lay: LayerConfig) -> int:
        """Cycles from the vector's last input handshake to its last output handshake."""
        if self.buffered(lay):  # registered write, full flag, the steps, read, slice register ..
            return self.cycles_per_vector(lay) + self.pipeline + 5
        return self.pipeline + 3

    def mac_latency(self) -> int:
        """Cycles from a group's last step being issued to its result on the output."""
        return self.pipeline + 3

    def weight_bits(self, lay: LayerConfig) -> int:
        """Weight ROM bits including fold padding: ``NF·SF`` words of ``PE·P·SIMD`` bits."""
        return self.nf(lay) * self.sf(lay) * self.rom_width(lay)

    def rom_width(self, lay: LayerConfig) -> int:
        return self.pe * weight_planes(lay) * self.simd

    def rom_depth(self, lay: LayerConfig) -> int:
        return self.nf(lay) * self.sf(lay)

    def rom_style(self, lay: LayerConfig) -> str:
        """The weight ROM's resolved style (``const``: one word, folded into the gates)."""
        if self.rom_depth(lay) == 1:
            return "const"
        if self.mem != "auto":
            return self.mem
        return auto_mem_style(self.rom_width(lay), self.rom_depth(lay))

    def buffer_shape(self, lay: LayerConfig) -> tuple[int, int] | None:
        """``(width, depth)`` of the input buffer, or ``None`` (no reuse, no buffer)."""
        if not self.buffered(lay):
            return None
        return lay.input_bits * self.simd, BUFFER_BANKS * self.sf(lay)

    def to_dict(self) -> dict:
        return {"pe": self.pe, "simd": self.simd, "pipeline": self.pipeline, "mem": self.mem}

    @classmethod
    def from_dict(cls, d, i: int = 0) -> "LayerFold":
        if isinstance(d, (list, tuple)) and len(d) in (3, 4):
            d = dict(zip(("pe", "simd", "pipeline", "mem"), d, strict=False))
        if not isinstance(d, dict):
            raise ConfigError(f"layer {i}: a fold entry is an object with pe, simd, pipeline, "
                              f"not {d!r}")
        extra = set(d) - {"pe", "simd", "pipeline", "mem"}
        if extra:
            raise ConfigError(f"layer {i}: unknown fold key(s) {', '.join(sorted(extra))}")
        missing = [k for k in ("pe", "simd", "pipeline") if k not in d]
        if missing:
            raise ConfigError(f"layer {i}: fold entry lacks {', '.join(missing)}")
        for k in ("pe", "simd", "pipeline"):
            if not _is_int(d[k]):
                raise ConfigError(f"layer {i}: {k} must be an integer, not {d[k]!r}")
        return cls(d["pe"], d["simd"], d["pipeline"], d.get("mem", "auto"))


@dataclass(frozen=True)
class AccelPlan:
    """Folding of every layer of a model, plus the cycle model."""

    cfg: ModelConfig
    folds: tuple[LayerFold, ...]

    def __post_init__(self):
        if not isinstance(self.cfg, ModelConfig):
            raise TypeError(f"cfg must be a ModelConfig, not {self.cfg!r}")
        folds = tuple(self.folds)
        object.__setattr__(self, "folds", folds)
        if len(folds) != len(self.cfg.layers):
            raise ConfigError(f"need {len(self.cfg.layers)} layer folds, found {len(folds)}")
        for i, (f, lay) in enumerate(zip(folds, self.cfg.layers, strict=True)):
            if not isinstance(f, LayerFold):
                raise TypeError(f"layer {i}: fold must be a LayerFold, not {f!r}")
            f.check(lay, i)
        last, fl = self.cfg.layers[-1], folds[-1]
        if fl.pe > last.input_bits * fl.sf(last):
            raise ConfigError(
                f"layer {len(folds) - 1}: pe = {fl.pe} may be at most input_bits * "
                f"ceil(n_in / simd) = {last.input_bits * fl.sf(last)} for the output layer (its "
                "scores are serialized to the argmax, one per cycle)")
        for i in range(1, len(folds)):
            # (a convolution's slices of J > 1 pixels take whole pixels, F_{i-1} = C_i bits,
            # always a multiple of PE_{i-1}; so this is a rule on SIMD)
            if folds[i].in_lanes(self.cfg.layers[i]) % folds[i - 1].pe:
                raise ConfigError(
                    f"layer {i}: simd = {folds[i].simd} must be a multiple of layer {i - 1}'s "
                    f"pe = {folds[i - 1].pe} (groups of pe activation bits are repacked into "
                    f"simd-wide slices)")

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def auto(
        cls,
        cfg: ModelConfig,
        pe: int | None = None,
        simd: int | None = None,
        pipeline: int | None = None,
        max_simd: int = 64,
        max_pe: int = 16,
    ) -> "AccelPlan":
        """A plan from uniform requests, each clipped to the layer (``None`` = automatic).

        Automatic folding balances the layers: SIMD is the input width up to ``max_simd``
        (rounded to a multiple of the previous layer's PE), PE is chosen so every layer's cycles
        per image is close to the first layer's (the slowest stage sets the interval).
        Automatic ``pipeline`` registers every other adder-tree level (at least one).
        A convolution takes the largest SIMD dividing its input channels (and a multiple of the
        previous PE) and PEs dividing its output channels; the first convolution the largest
        PE up to ``max_pe``. :func:`bitswarm.hw.resources.optimize` finds folds that fit a
        device instead.
        """
        folds: list[LayerFold] = []
        target = None
        for i, lay in enumerate(cfg.layers):
            prev = folds[-1].pe if i > 0 else 1
            want = min(lay.n_in, simd if simd is not None else max_simd)
            if lay.conv is not None:
                c = lay.conv.in_channels
                ok = [d for d in conv_simds(lay.conv)
                      if LayerFold(1, d, 0).in_lanes(lay) % prev == 0]
                if not ok:
                    raise ConfigError(
                        f"layer {i}: no simd of the input channels C = {c} is a multiple of "
                        f"layer {i - 1}'s pe = {prev}; choose a smaller pe")
                s = max([d for d in ok if d <= want] or [ok[0]])
                pes = _divisors(lay.n_out)
            else:
                s = want
                if i > 0:  # a multiple of the previous PE (repacking), at most N
                    s = max(prev, s - s % prev)
                    if s > lay.n_in:
                        raise ConfigError(
                            f"layer {i}: no simd <= {lay.n_in} is a multiple of layer {i - 1}'s "
                            f"pe = {prev}; choose a smaller pe")
                pes = None
            sf = -(-lay.n_in // s) * lay.input_bits
            rows = LayerFold(1, 1, 0).vectors(lay)
            if pe is not None:
                p = min(lay.n_out, pe)
                if lay.output:
                    p = min(p, lay.input_bits * -(-lay.n_in // s))
            elif pes is not None:  # a convolution: PE divides F
                if target is None:
                    p = max(d for d in pes if d <= max_pe)
                    target = -(-lay.n_out // p) * sf * rows
                else:
                    fit = [d for d in pes if d <= max_pe and -(-lay.n_out // d) * sf * rows <= target]
                    p = min(fit) if fit else max(d for d in pes if d <= max_pe)
            else:
                if target is None:
                    p = min(lay.n_out, max(1, max_pe // 4))
                    target = -(-lay.n_out // p) * sf
                else:
                    p = min(lay.n_out, max_pe, max(1, -(-lay.n_out * sf // target)))
                if lay.output:
                    p = min(p, sf)
            if pes is not None and pe is not None:
                p = max(d for d in pes if d <= p)
            d = tree_depth(tree_terms(lay, s))
            pl = min(d, pipeline) if pipeline is not None else max(1, d // 2)
            folds.append(LayerFold(pe=p, simd=s, pipeline=max(0, pl)))
        return cls(cfg, tuple(folds))

    @classmethod
    def from_dict(cls, cfg: ModelConfig, d) -> "AccelPlan":
        """A plan from a fold file's content (or the older ``{"folds": [[pe, simd, pipe]]}``)."""
        if not isinstance(d, dict):
            raise ConfigError("a fold file holds a JSON object")
        if "folds" in d and "layers" not in d:
            entries = d["folds"]
        else:
            if d.get("format") != FOLD_FORMAT:
                raise ConfigError(f"not a fold file: format must be {FOLD_FORMAT!r}, "
                                  f"found {d.get('format')!r}")
            if d.get("version") != 1:
                raise ConfigError(f"unsupported fold file version {d.get('version')!r} "
                                  "(this bitswarm reads version 1)")
            arch = d.get("arch")
            if arch is not None and list(arch) != list(cfg.arch):
                raise ConfigError(f"the fold file is for architecture {'-'.join(map(str, arch))}, "
                                  f"the model is {'-'.join(map(str, cfg.arch))}")
            name = d.get("arch_string")
            if name is not None and name != cfg.arch_string:
                raise ConfigError(f"the fold file is for architecture {name}, the model is "
                                  f"{cfg.arch_string}")
            entries = d.get("layers")
        if not isinstance(entries, list):
            raise ConfigError("a fold file needs a list of per-layer entries ('layers')")
        if len(entries) != len(cfg.layers):
            raise ConfigError(f"the fold file has {len(entries)} layer entries, the model "
                              f"{len(cfg.layers)} layers")
        folds = tuple(LayerFold.from_dict(e, i) for i, e in enumerate(entries))
        return cls(cfg, folds)

    def to_dict(self) -> dict:
        """The fold file's content (with convolutions also the architecture string, since
        the activation sizes of ``arch`` do not name the geometry)."""
        d = {"format": FOLD_FORMAT, "version": 1, "arch": list(self.cfg.arch)}
        if self.cfg.has_conv:
            d["arch_string"] = self.cfg.arch_string
        return d | {"layers": [f.to_dict() for f in self.folds]}

    def write(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the fold file atomically; refuses an existing file unless ``overwrite``."""
        from bitswarm.golden.model import atomic_write_bytes

        p = Path(path)
        if p.exists() and not overwrite:
            raise ConfigError(f"{p} exists; pass --overwrite to replace it")
        if p.parent and not p.parent.exists():
            raise ConfigError(f"folder {p.parent} does not exist")
        atomic_write_bytes(p, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return p

    # -- the cycle model -------------------------------------------------------------------
    def _pairs(self):
        return zip(self.folds, self.cfg.layers, strict=True)

    def layer_cycles(self) -> list[int]:
        """Each MAC array's cycles per input vector (a convolution's vector is one window)."""
        return [f.cycles_per_vector(lay) for f, lay in self._pairs()]

    def stage_cycles(self) -> dict[str, int]:
        """Busy cycles per image of every stage that can set the interval: the input
        (``input_slices``), each sliding-window generator's writer (``H·W·C / SIMD`` chunks,
        one per cycle) and each MAC array (``vectors · cycles_per_vector``)."""
        out = {"input": self.input_slices()}
        for i, (f, lay) in enumerate(self._pairs()):
            if lay.conv is not None:
                out[f"window{i}"] = lay.conv.in_size // f.in_lanes(lay)
            out[f"mac{i}"] = f.cycles_per_image(lay)
        return out

    def latency_cycles(self) -> int:
        """Cycles from an isolated image's first input handshake to its output handshake."""
        cached = self.__dict__.get("_latency")
        if cached is None:
            cached = self._latency()
            object.__setattr__(self, "_latency", cached)
        return cached

    def _latency(self) -> int:
        tails = [f.tail_cycles(lay) for f, lay in self._pairs()]
        last, fl = self.cfg.layers[-1], self.folds[-1]
        k = last.n_out - (fl.nf(last) - 1) * fl.pe  # scores in the last group
        n_conv = self.conv_layers()
        if not n_conv:
            return self.input_slices() - 1 + tails[0] + sum(2 + t for t in tails[1:]) + 2 + k
        from .timing import conv_front

        t_last = conv_front(self, 1, limit=64 * (self.interval_cycles() + 1000))[0]
        return t_last + tails[n_conv] + sum(2 + t for t in tails[n_conv + 1:]) + 2 + k

    def conv_layers(self) -> int:
        """How many layers (the first ones) are convolutions."""
        return sum(lay.conv is not None for lay in self.cfg.layers)

    def interval_cycles(self) -> int:
        """Streaming initiation interval of back-to-back images: the busiest stage
        (:meth:`stage_cycles`; for an MLP the slowest MAC array)."""
        return max(self.stage_cycles().values()) if self.conv_layers() else max(self.layer_cycles())

    interval_bound = interval_cycles  # the name the older reports used

    def images_per_s(self, clock_hz: float) -> float:
        return clock_hz / self.interval_cycles()

    def input_slices(self) -> int:
        """Input transfers per image: ``ceil(N_0 / SIMD_0)`` slices of ``SIMD_0`` pixels (a
        convolution: ``C·H·W / SIMD_0`` slices of the HWC map)."""
        lay = self.cfg.layers[0]
        if lay.conv is not None:
            return -(-lay.conv.in_size // self.folds[0].simd)
        return self.folds[0].sf(lay)

    def weight_memory_bits(self) -> int:
        """Bits of weight ROM including fold padding."""
        return sum(f.weight_bits(lay) for f, lay in self._pairs())

    def ports(self) -> dict:
        """The accelerator top's ports (the datasheet's table, also in every JSON report)."""
        lays = self.cfg.layers
        simd0, last = self.folds[0].simd, lays[-1]
        cw = class_width(last.n_out)
        return {
            "clk": {"dir": "in", "width": 1, "doc": "clock; everything is synchronous to its "
                    "rising edge"},
            "rst": {"dir": "in", "width": 1, "doc": "active-high synchronous reset; hold it for "
                    "at least 2 cycles (from time 0 in a SystemVerilog-mode simulator)"},
            "i_stream__valid": {"dir": "in", "width": 1, "doc": "input slice offered"},
            "i_stream__ready": {"dir": "out", "width": 1, "doc": "input slice accepted on a "
                                "rising edge with valid and ready both high"},
            "i_stream__payload": {
                "dir": "in", "width": PIXEL_BITS * simd0,
                "doc": f"{simd0} raw 8-bit pixels: pixel k of the slice at bits [8k+7:8k]; slice "
                       f"s carries flattened pixels s*{simd0}..s*{simd0}+{simd0 - 1}"
                       f"{' (channel-last HWC order)' if lays[0].conv is not None else ''}; "
                       f"{self.input_slices()} slices per image in order; lanes past the image "
                       "are ignored; raw 8-bit pixels even when the first layer uses fewer bits "
                       f"(it keeps the top {lays[0].input_bits})"},
            "o_stream__valid": {"dir": "out", "width": 1, "doc": "result offered; held with its "
                                "payload until accepted"},
            "o_stream__ready": {"dir": "in", "width": 1, "doc": "result accepted"},
            "o_stream__payload": {
                "dir": "out", "width": cw + last.z_width * last.n_out,
                "doc": f"bits [{cw - 1}:0] the class (argmax, ties to the lowest index); then "
                       f"score j = z_j - theta_j as {last.z_width}-bit two's complement at bits "
                       f"[{cw}+{last.z_width}j+{last.z_width - 1}:{cw}+{last.z_width}j], "
                       f"j = 0..{last.n_out - 1}"},
        }

    def report(self) -> dict:
        return {
            "arch": list(self.cfg.arch),
            "layers": [
                {
                    "layer": i,
                    "n_in": lay.n_in,
                    "n_out": lay.n_out,
                    "swarm": lay.swarm,
                    "input_bits": lay.input_bits,
                    "pe": f.pe,
                    "simd": f.simd,
                    "pipeline": f.pipeline,
                    "mem": f.mem,
                    "cycles_per_vector": f.cycles_per_vector(lay),
                    "vectors": f.vectors(lay),
                    "cycles_per_image": f.cycles_per_image(lay),
                    **({"conv": lay.conv.to_dict(), "line_rows": line_rows(lay.conv)}
                       if lay.conv is not None else {}),
                }
                for i, (f, lay) in enumerate(self._pairs())
            ],
            "arch_string": self.cfg.arch_string,
            "stage_cycles": self.stage_cycles(),
            "fold": self.to_dict(),
            "cycles_per_inference": self.latency_cycles(),
            "latency_cycles": self.latency_cycles(),
            "interval_cycles": self.interval_cycles(),
            "interval_bound_cycles": self.interval_cycles(),
            "weight_memory_bits": self.weight_memory_bits(),
            "input_slices": self.input_slices(),
            "cycle_model": {
                "latency_cycles": "cycles from an isolated image's first input handshake to its "
                                  "output handshake (inputs offered every cycle, output ready)",
                "interval_cycles": "initiation interval of back-to-back images: cycles between "
                                   "consecutive output handshakes when inputs are offered every "
                                   "cycle and the output is always ready (= the busiest stage's "
                                   "cycles per image, stage_cycles)",
            },
        }


# -- the on-chip trainer's cycle model (hw.onchip.OnChipTrainer; checked against Verilator) ---
#: Pixels per input transfer of the on-chip trainer (default).
DEFAULT_IN_LANES = 64


TRAINER_FOLD_FORMAT = "bitswarm-trainer-fold"


@dataclass(frozen=True)
class TrainerFold:
    """Folding of the on-chip trainer (:class:`bitswarm.hw.onchip.OnChipTrainer`): per layer
    ``(pe, simd)``.

    ``pe`` rows of the layer (row ``r = s·M + j``, golden's ``[S, M, N]`` order) are processed
    in parallel per cycle, row ``r`` living in bank ``r mod pe`` of the layer's weight,
    accumulator and threshold memories; ``simd`` lanes (inputs) of a row per cycle, a row being
    ``N / simd`` memory words processed over ``N / simd`` cycles. ``pe`` must divide ``M`` (so
    a row group is ``pe`` neurons of one swarm plane) and ``simd`` must divide ``N``; anything
    else is a one-line :class:`ConfigError`. The default (:meth:`default`) is ``pe = 1``,
    ``simd = N`` on every layer: one whole row per cycle.

    File form (JSON, :meth:`to_dict`)::

        {"format": "bitswarm-trainer-fold", "version": 1, "arch": [64, 256, 10],
         "layers": [{"pe": 8, "simd": 64}, {"pe": 5, "simd": 256}]}
    """

    layers: tuple[tuple[int, int], ...]

    def __post_init__(self):
        ls = self.layers
        if isinstance(ls, list):
            ls = tuple(ls)
        if not isinstance(ls, tuple) or not ls:
            raise ConfigError(f"a trainer fold needs one (pe, simd) pair per layer, not {self.layers!r}")
        out = []
        for i, e in enumerate(ls):
            if not isinstance(e, (tuple, list)) or len(e) != 2 or not all(_is_int(v) and v >= 1 for v in e):
                raise ConfigError(f"trainer fold layer {i}: (pe, simd) must be two positive integers, not {e!r}")
            out.append((int(e[0]), int(e[1])))
        object.__setattr__(self, "layers", tuple(out))

    @classmethod
    def default(cls, cfg: ModelConfig) -> "TrainerFold":
        """``pe = 1``, ``simd = N`` on every layer (one whole row per cycle)."""
        return cls(tuple((1, lay.n_in) for lay in cfg.layers))

    @classmethod
    def resolve(cls, cfg: ModelConfig, fold) -> "TrainerFold":
        """``fold`` (``None``: :meth:`default`; a dict: :meth:`from_dict`; a TrainerFold) checked
        against ``cfg``."""
        if fold is None:
            fold = cls.default(cfg)
        elif isinstance(fold, dict):
            fold = cls.from_dict(fold, cfg)
        elif not isinstance(fold, cls):
            raise TypeError(f"fold must be a TrainerFold, a dict or None, not {type(fold).__name__}")
        fold.check(cfg)
        return fold

    def check(self, cfg: ModelConfig) -> None:
        """Raise :class:`ConfigError` (one line) unless this fold fits ``cfg``."""
        lays = cfg.layers
        if len(self.layers) != len(lays):
            raise ConfigError(f"the trainer fold has {len(self.layers)} layer entries, the model "
                              f"{len(lays)} layers")
        for i, ((pe, simd), lay) in enumerate(zip(self.layers, lays, strict=True)):
            if lay.n_out % pe:
                raise ConfigError(f"trainer fold layer {i}: pe = {pe} must divide the layer's "
                                  f"{lay.n_out} neurons")
            if lay.n_in % simd:
                raise ConfigError(f"trainer fold layer {i}: simd = {simd} must divide the layer's "
                                  f"{lay.n_in} inputs")

    def pe(self, i: int) -> int:
        return self.layers[i][0]

    def simd(self, i: int) -> int:
        return self.layers[i][1]

    def words(self, cfg: ModelConfig, i: int) -> int:
        """Memory words per row of layer ``i``: ``N / simd``."""
        return cfg.layers[i].n_in // self.simd(i)

    def groups(self, cfg: ModelConfig, i: int) -> int:
        """Row groups of layer ``i`` (``pe`` rows each): ``S·M / pe``."""
        lay = cfg.layers[i]
        return lay.swarm * lay.n_out // self.pe(i)

    def steps(self, cfg: ModelConfig, i: int) -> int:
        """Cycles of one pass over layer ``i`` (every row group, every word): ``S·M/pe · N/simd``."""
        return self.groups(cfg, i) * self.words(cfg, i)

    def tree_stages(self, cfg: ModelConfig, i: int) -> int:
        """Register stages ``K`` of layer ``i``'s forward popcount/sum tree: 1 for words of at
        most 8 inputs, else 2 (the tree split in the middle: groups of ``2**ceil(log2(simd)/2)``
        terms, then their sum), so that a 64-input word has three adder levels per cycle (a
        one-stage 64-bit popcount held a 64-64-10 ECP5 trainer to 45 MHz)."""
        return 1 if self.simd(i) <= 8 else 2

    def to_dict(self, cfg: ModelConfig | None = None) -> dict:
        d = {"format": TRAINER_FOLD_FORMAT, "version": 1}
        if cfg is not None:
            d["arch"] = list(cfg.arch)
        return d | {"layers": [{"pe": pe, "simd": simd} for pe, simd in self.layers]}

    @classmethod
    def from_dict(cls, d, cfg: ModelConfig | None = None) -> "TrainerFold":
        """A fold from :meth:`to_dict`'s form (checked against ``cfg`` when given)."""
        if not isinstance(d, dict):
            raise ConfigError("a trainer fold file holds a JSON object")
        if d.get("format") != TRAINER_FOLD_FORMAT:
            raise ConfigError(f"not a trainer fold: format must be {TRAINER_FOLD_FORMAT!r}, "
                              f"found {d.get('format')!r}")
        if d.get("version") != 1:
            raise ConfigError(f"unsupported trainer fold version {d.get('version')!r} (this bitswarm "
                              "reads version 1)")
        arch = d.get("arch")
        if cfg is not None and arch is not None and list(arch) != list(cfg.arch):
            raise ConfigError(f"the trainer fold is for architecture {'-'.join(map(str, arch))}, "
                              f"the model is {'-'.join(map(str, cfg.arch))}")
        entries = d.get("layers")
        if not isinstance(entries, list):
            raise ConfigError("a trainer fold needs a list of per-layer entries ('layers')")
        pairs = []
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or set(e) != {"pe", "simd"}:
                raise ConfigError(f"trainer fold layer {i}: expected an object with keys pe and simd, "
                                  f"found {e!r}")
            pairs.append((e["pe"], e["simd"]))
        fold = cls(tuple(pairs))
        if cfg is not None:
            fold.check(cfg)
        return fold

    @classmethod
    def parse(cls, text: str, cfg: ModelConfig) -> "TrainerFold":
        """A fold from the command-line form ``"PExSIMD,PExSIMD,..."`` (one pair per layer, e.g.
        ``"8x64,5x256"``), or the path of a JSON fold file."""
        text = str(text).strip()
        if text.endswith(".json") or os.sep in text:
            return load_trainer_fold(text, cfg)
        pairs = []
        for part in text.split(","):
            pe, sep, simd = part.strip().partition("x")
            try:
                pairs.append((int(pe), int(simd)))
            except ValueError:
                raise ConfigError(f"trainer fold must look like 8x64,5x256 (PExSIMD per layer) or "
                                  f"name a .json fold file, not {text!r}") from None
            if not sep:
                raise ConfigError(f"trainer fold must look like 8x64,5x256, not {text!r}")
        fold = cls(tuple(pairs))
        fold.check(cfg)
        return fold


def load_trainer_fold(path: str | os.PathLike, cfg: ModelConfig) -> TrainerFold:
    """Read and validate a trainer fold file for ``cfg``; every problem is one ConfigError line."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"trainer fold file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read trainer fold file {p}: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"trainer fold file {p} is not valid JSON: {e}") from None
    try:
        return TrainerFold.from_dict(d, cfg)
    except ConfigError as e:
        raise ConfigError(f"trainer fold file {p}: {e}") from None


@dataclass(frozen=True)
class TrainerCycles:
    """Cycles of one training sample per phase of the trainer's datapath (module docstring)."""

    load: int
    forward: int
    error: int
    backward: int
    update: int
    report: int

    @property
    def total(self) -> int:
        return self.load + self.forward + self.error + self.backward + self.update + self.report


def argmax_levels(n_classes: int) -> int:
    """Register levels of the trainer's pipelined argmax over ``n_classes`` scores:
    ``ceil(log2 C)``."""
    return max(1, (n_classes - 1).bit_length())


def cycles_per_sample(cfg: ModelConfig, in_lanes: int | None = None, fold: TrainerFold | None = None) -> TrainerCycles:
    """The cycle model of one training sample (exact; :mod:`bitswarm.hw.onchip`'s schedule):
    ``in_lanes`` pixels per input transfer, ``fold`` the trainer fold (default
    :meth:`TrainerFold.default`). With ``T_l = S·M_l/pe_l · N_l/simd_l`` issue cycles per pass
    over layer ``l`` and ``K_l`` its forward tree stages (:meth:`TrainerFold.tree_stages`)::

        load     ceil(N_0 / P)
        forward  sum_l T_l + sum_{l < L-1} (K_l + 1) + K_{L-1} + 3
        error    ceil(log2 C) + 1
        backward sum_{l >= 1} (T_l + 1)
        update   sum_l T_l + 2
        report   1
    """
    p = min(cfg.layers[0].n_in, DEFAULT_IN_LANES) if in_lanes is None else in_lanes
    if not isinstance(p, int) or p < 1:
        raise ConfigError(f"in_lanes must be a positive integer, not {p!r}")
    fold = TrainerFold.resolve(cfg, fold)
    n_l = len(cfg.layers)
    t = [fold.steps(cfg, i) for i in range(n_l)]
    k = [fold.tree_stages(cfg, i) for i in range(n_l)]
    return TrainerCycles(load=math.ceil(cfg.layers[0].n_in / p),
                         forward=sum(t) + sum(k[i] + 1 for i in range(n_l - 1)) + k[-1] + 3,
                         error=argmax_levels(cfg.layers[-1].n_out) + 1,
                         backward=sum(v + 1 for v in t[1:]), update=sum(t) + 2, report=1)


# -- the host link's byte protocol (hw.board gateware, sim.hostlink host side) --------------
#: The host starts a frame with SYNC, then the image's N raw pixels.
SYNC = 0xA5
#: The device's reply starts with REPLY, then the class byte and the C scores.
REPLY = 0x5A


def load_fold(path: str | os.PathLike, cfg: ModelConfig) -> AccelPlan:
    """Read and validate a fold file for ``cfg``; every problem is one ConfigError line."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"fold file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read fold file {p}: {e}") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"fold file {p} is not valid JSON: {e}") from None
    try:
        return AccelPlan.from_dict(cfg, d)
    except ConfigError as e:
        raise ConfigError(f"fold file {p}: {e}") from None



# -- command-line fold arguments (bitswarm verilog / bitstream / sim) ------------------------
def add_fold_args(p) -> None:
    """``--fold FILE`` plus the uniform shorthands ``--pe/--simd/--pipeline``."""
    p.add_argument("--fold", metavar="FILE", default=None,
                   help="fold file (JSON, one entry per layer: pe, simd, pipeline, mem), e.g. "
                   "written by `bitswarm fold` or by any report; overrides the shorthands")
    p.add_argument("--pe", type=int, default=None,
                   help="output neurons per cycle in every layer (clipped to each layer; default auto)")
    p.add_argument("--simd", type=int, default=None,
                   help="input elements per cycle in every layer (clipped; default auto)")
    p.add_argument("--pipeline", type=int, default=None,
                   help="adder-tree register stages per layer (clipped; default auto)")


def plan_from_args(cfg: ModelConfig, args, default=None) -> AccelPlan:
    """The plan the fold arguments ask for; ``default(cfg)`` (e.g. the fold optimizer for a
    board) when none is given, else :meth:`AccelPlan.auto`."""
    fold = getattr(args, "fold", None)
    shorthand = [n for n in ("pe", "simd", "pipeline") if getattr(args, n, None) is not None]
    if fold is not None:
        if shorthand:
            raise ConfigError(f"give either --fold or --{'/--'.join(shorthand)}, not both")
        return load_fold(fold, cfg)
    for name in ("pe", "simd"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise ConfigError(f"--{name} must be >= 1, not {v}")
    if getattr(args, "pipeline", None) is not None and args.pipeline < 0:
        raise ConfigError(f"--pipeline must be >= 0, not {args.pipeline}")
    if not shorthand and default is not None:
        return default(cfg)
    return AccelPlan.auto(cfg, pe=args.pe, simd=args.simd, pipeline=args.pipeline)
