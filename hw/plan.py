"""Accelerator plan: per-layer folding and the cycle model (no Amaranth needed).

One :class:`AccelPlan` describes how a golden model maps onto the accelerator: for each layer
the MAC array's ``pe`` (output neurons per cycle), ``simd`` (input elements per cycle) and adder
tree ``pipeline`` stages. The gateware (:mod:`bitswarm.hw.accel`), the virtual accelerator
(:mod:`bitswarm.sim.virtual`) and the Verilator driver all take their timing from here, and the
tests assert that the RTL's measured cycle counts equal it exactly.

Cycle model (one inference in isolation: input slices offered whenever asked for, output always
ready). Layer ``i``'s MAC array takes ``cpv_i = ceil(M_i/PE_i) · B_i · ceil(N_i/SIMD_i)``
cycles per vector and has ``lat_i = pipeline_i + 3`` cycles of latency; each glue stage
(threshold-and-pack between layers, scores-and-argmax after the last) adds one register::

    latency = sum_i (cpv_i + lat_i)

cycles from the first input handshake to the output handshake. Streaming images back to back,
the accelerator is a dataflow pipeline whose initiation interval is bounded below by the
slowest stage, ``max_i cpv_i``; the measured interval is reported by the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitswarm.golden.errors import ConfigError
from bitswarm.golden.layer import LayerConfig
from bitswarm.golden.model import ModelConfig

__all__ = ["LayerFold", "AccelPlan", "tree_depth"]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def tree_depth(n_bits: int) -> int:
    """Levels of a popcount tree over ``n_bits`` (one level of 4-input counts, then adders)."""
    leaves = -(-n_bits // 4)
    return 1 + (leaves - 1).bit_length()


@dataclass(frozen=True)
class LayerFold:
    """Folding of one layer: ``pe`` neurons and ``simd`` inputs per cycle, tree ``pipeline``."""

    pe: int
    simd: int
    pipeline: int

    def check(self, lay: LayerConfig, i: int) -> None:
        for name, v, hi in (("pe", self.pe, lay.n_out), ("simd", self.simd, lay.n_in)):
            if not _is_int(v) or not 1 <= v <= hi:
                raise ConfigError(f"layer {i}: {name} must be an integer in 1..{hi}, not {v!r}")
        terms = (lay.swarm if lay.weights == "binary" else 1) * self.simd
        depth = tree_depth(terms)
        if not _is_int(self.pipeline) or not 0 <= self.pipeline <= depth:
            raise ConfigError(f"layer {i}: pipeline must be in 0..{depth}, not {self.pipeline!r}")

    def sf(self, lay: LayerConfig) -> int:
        return -(-lay.n_in // self.simd)

    def nf(self, lay: LayerConfig) -> int:
        return -(-lay.n_out // self.pe)

    def cycles_per_vector(self, lay: LayerConfig) -> int:
        return self.nf(lay) * lay.input_bits * self.sf(lay)

    @property
    def latency(self) -> int:
        return self.pipeline + 3


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
            f.check(lay, i)

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

        Automatic folding balances the layers: SIMD is the largest divisor-friendly width up to
        ``max_simd`` that covers the input, PE is chosen so every layer's cycles per vector is
        close to the first layer's (the dataflow pipeline's slowest stage sets throughput).
        Automatic ``pipeline`` registers every other adder-tree level (at least one).
        """
        folds = []
        target = None
        for lay in cfg.layers:
            s = min(lay.n_in, simd if simd is not None else max_simd)
            if pe is not None:
                p = min(lay.n_out, pe)
            else:
                sf = -(-lay.n_in // s) * lay.input_bits
                if target is None:
                    p = min(lay.n_out, max(1, max_pe // 4))
                    target = -(-lay.n_out // p) * sf
                else:
                    p = min(lay.n_out, max_pe, max(1, -(-lay.n_out * sf // target)))
            terms = (lay.swarm if lay.weights == "binary" else 1) * s
            d = tree_depth(terms)
            pl = min(d, pipeline) if pipeline is not None else max(1, d // 2)
            folds.append(LayerFold(pe=p, simd=s, pipeline=max(0, pl)))
        return cls(cfg, tuple(folds))

    # -- the cycle model -------------------------------------------------------------------
    def layer_cycles(self) -> list[int]:
        return [f.cycles_per_vector(lay) for f, lay in zip(self.folds, self.cfg.layers, strict=True)]

    def latency_cycles(self) -> int:
        """Cycles from an isolated inference's first input handshake to its output handshake."""
        return sum(
            f.cycles_per_vector(lay) + f.latency
            for f, lay in zip(self.folds, self.cfg.layers, strict=True)
        )

    def interval_bound(self) -> int:
        """Lower bound of the streaming initiation interval: the slowest MAC array."""
        return max(self.layer_cycles())

    def input_slices(self) -> int:
        """Input transfers per image: ``ceil(N_0 / SIMD_0)`` slices of ``SIMD_0`` pixels."""
        return self.folds[0].sf(self.cfg.layers[0])

    def weight_memory_bits(self) -> int:
        """Bits of weight ROM including fold padding."""
        total = 0
        for f, lay in zip(self.folds, self.cfg.layers, strict=True):
            planes = lay.swarm if lay.weights == "binary" else 2
            total += f.nf(lay) * f.sf(lay) * f.pe * planes * f.simd
        return total

    def report(self) -> dict:
        return {
            "arch": self.cfg.arch,
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
                    "cycles_per_vector": f.cycles_per_vector(lay),
                    "latency": f.latency,
                }
                for i, (f, lay) in enumerate(zip(self.folds, self.cfg.layers, strict=True))
            ],
            "cycles_per_inference": self.latency_cycles(),
            "interval_bound_cycles": self.interval_bound(),
            "weight_memory_bits": self.weight_memory_bits(),
            "input_slices": self.input_slices(),
        }

    def to_dict(self) -> dict:
        return {"folds": [[f.pe, f.simd, f.pipeline] for f in self.folds]}

    @classmethod
    def from_dict(cls, cfg: ModelConfig, d: dict) -> "AccelPlan":
        try:
            return cls(cfg, tuple(LayerFold(*map(int, x)) for x in d["folds"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"invalid accelerator plan: {e}") from None
