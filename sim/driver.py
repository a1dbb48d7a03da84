"""One driver API for every way of running the accelerator: virtual, Verilator, (later) a board.

::

    backend = make_backend("verilator", model, plan)
    result = backend.infer(images)          # classes, scores, cycles per inference
    report = evaluate(backend, model, images, labels)

Every backend returns the same :class:`InferenceResult`; :func:`evaluate` compares it with the
golden model image by image (``mismatches`` counts images whose class or any score differs) and
:func:`first_mismatch` names the first differing layer, image and neuron from per-layer traces.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.model import Model
from bitswarm.hw.plan import AccelPlan

__all__ = [
    "BACKENDS",
    "InferenceResult",
    "Backend",
    "VirtualBackend",
    "VerilatorBackend",
    "make_backend",
    "evaluate",
    "first_mismatch",
]

BACKENDS = ("virtual", "verilator")


@dataclass
class InferenceResult:
    """Classes ``[n]``, integer scores ``[n, C]``, and cycles per inference (isolated)."""

    classes: np.ndarray
    scores: np.ndarray
    cycles_per_inference: int
    interval_cycles: float | None = None
    seconds: float | None = None
    simulated_cycles: int | None = None


class Backend(ABC):
    """A way to run a model on the accelerator architecture described by ``plan``."""

    name = "abstract"

    def __init__(self, model: Model, plan: AccelPlan | None = None):
        if not isinstance(model, Model):
            raise ConfigError(f"a backend needs a bitswarm.golden.Model, not {type(model).__name__}")
        self.model = model
        self.plan = plan or AccelPlan.auto(model.cfg)
        if self.plan.cfg.to_dict() != model.cfg.to_dict():
            raise ConfigError("the plan was made for a different model configuration")

    @abstractmethod
    def infer(self, images: np.ndarray) -> InferenceResult:
        """Run raw uint8 images ``[n, *input_shape]``."""


class VirtualBackend(Backend):
    """The software virtual accelerator: packed popcount kernels + the plan's cycle model."""

    name = "virtual"

    def __init__(self, model: Model, plan: AccelPlan | None = None, threads: int | None = None):
        super().__init__(model, plan)
        from .virtual import VirtualAccelerator

        self.va = VirtualAccelerator(model, threads=threads)

    def infer(self, images) -> InferenceResult:
        import time

        t0 = time.perf_counter()
        scores = self.va.forward(images)
        secs = time.perf_counter() - t0
        classes = _argmax(scores)
        return InferenceResult(classes, scores, self.plan.latency_cycles(),
                               float(self.plan.interval_bound()), secs)

    def trace(self, images) -> list[np.ndarray]:
        t: list = []
        self.va.forward(images, trace=t)
        return t


class VerilatorBackend(Backend):
    """The generated RTL, cycle-accurate on Verilator (bulk C++ harness)."""

    name = "verilator"

    def __init__(self, model: Model, plan: AccelPlan | None = None, build_root=None):
        super().__init__(model, plan)
        from bitswarm.hw.accel import Accelerator

        from .bulk import VerilatorAccelerator

        self.accel = Accelerator(model, self.plan)
        self.sim = VerilatorAccelerator(self.accel, build_root=build_root)

    def infer(self, images, stream: bool = False) -> InferenceResult:
        r = self.sim.run(np.asarray(images), stream=stream)
        lat = np.unique(r.latencies)
        if not stream and len(lat) != 1:
            raise AssertionError(f"isolated inferences took different cycle counts: {lat.tolist()}")
        interval = float(np.mean(np.diff(r.out_cycle))) if len(r.out_cycle) > 1 else None
        return InferenceResult(r.classes, r.scores, int(lat[0]) if not stream else int(lat.max()),
                               interval, r.seconds, r.cycles)

    def trace(self, images) -> list[np.ndarray]:
        from .trace import rtl_trace

        return rtl_trace(self.accel, images)


def make_backend(name: str, model: Model, plan: AccelPlan | None = None, **kw) -> Backend:
    if name == "virtual":
        return VirtualBackend(model, plan, **kw)
    if name == "verilator":
        return VerilatorBackend(model, plan, **kw)
    raise ConfigError(f"backend must be one of {BACKENDS}, not {name!r}")


def _argmax(scores: np.ndarray) -> np.ndarray:
    """Ties to the lowest index (numpy's argmax returns the first maximum)."""
    return np.argmax(scores, axis=1).astype(np.int64)


def evaluate(backend: Backend, images, labels=None) -> dict:
    """Run ``images`` on ``backend`` and compare with golden: accuracy, mismatches, cycles."""
    import torch

    res = backend.infer(images)
    gold = backend.model.forward(torch.as_tensor(np.asarray(images))).numpy()
    gold_cls = _argmax(gold)
    bad = np.any(res.scores != gold, axis=1) | (res.classes != gold_cls)
    out = {
        "backend": backend.name,
        "n": int(len(images)),
        "mismatches": int(bad.sum()),
        "cycles_per_inference": int(res.cycles_per_inference),
    }
    if labels is not None:
        out["accuracy"] = float(np.mean(res.classes == np.asarray(labels)))
    if res.seconds:
        out["images_per_s_host"] = float(len(images) / res.seconds)
    if res.simulated_cycles and res.seconds:
        out["simulated_cycles_per_s"] = float(res.simulated_cycles / res.seconds)
    out["_bad_images"] = np.nonzero(bad)[0]
    return out


def first_mismatch(golden_trace: list, other_trace: list) -> str | None:
    """Describe the first (layer, image, neuron) where two per-layer traces differ, or None."""
    for li, (g, o) in enumerate(zip(golden_trace, other_trace, strict=False)):
        g = np.asarray(g)
        o = np.asarray(o)
        if g.shape != o.shape:
            return f"layer {li}: shape {list(o.shape)} differs from golden {list(g.shape)}"
        diff = np.argwhere(g != o)
        if len(diff):
            img, j = (int(v) for v in diff[0])
            kind = "score" if li == len(golden_trace) - 1 else "activation bit"
            return (f"layer {li}, image {img}, neuron {j}: {kind} is {int(o[img, j])}, "
                    f"golden {int(g[img, j])} ({len(diff)} differing values in this layer)")
    if len(golden_trace) != len(other_trace):
        return f"trace lengths differ: {len(other_trace)} vs golden {len(golden_trace)}"
    return None
