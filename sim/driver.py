"""One driver API for every way of running the accelerator: virtual, Verilator, (later) a board.

::

    backend = make_backend("verilator", model, plan)
    result = backend.infer(images)          # classes, scores, cycles per inference
    report = evaluate(backend, images, labels)

Every backend returns the same :class:`InferenceResult`; :func:`evaluate` compares it with the
golden model image by image (``mismatches`` counts images whose class or any score differs,
``mismatched_images`` lists the first :data:`MAX_LISTED` of them and ``first_difference`` the
first differing score of the first one) and :func:`first_mismatch` names the first differing
layer, image and neuron from per-layer traces.
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
    "hw_order",
    "evaluate",
    "first_difference",
    "first_mismatch",
    "MAX_LISTED",
]

BACKENDS = ("virtual", "verilator")
#: How many mismatching image indices :func:`evaluate` lists.
MAX_LISTED = 20


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
    """The generated RTL, cycle-accurate on Verilator (bulk C++ harness).

    ``build_root``: folder of the build cache. ``waves``: a ``.vcd`` or ``.fst`` path; every
    :meth:`infer` then writes the waveform of its images there (a tracing build).
    """

    name = "verilator"

    def __init__(self, model: Model, plan: AccelPlan | None = None, build_root=None, waves=None):
        super().__init__(model, plan)
        from pathlib import Path

        from bitswarm.hw.accel import Accelerator

        from .bulk import WAVE_FORMATS, VerilatorAccelerator

        kind = None
        if waves is not None:
            waves = Path(waves)
            kind = waves.suffix.lower().lstrip(".")
            if kind not in WAVE_FORMATS:
                raise ConfigError(f"waveform file must end in .fst or .vcd, not {waves.name!r}")
        self.waves = waves
        self.accel = Accelerator(model, self.plan)
        self.sim = VerilatorAccelerator(self.accel, build_root=build_root, waves=kind)

    def infer(self, images, stream: bool = False) -> InferenceResult:
        r = self.sim.run(hw_order(self.model.cfg, images), stream=stream, waves_file=self.waves)
        lat = np.unique(r.latencies)
        if not stream and len(lat) != 1:
            raise AssertionError(f"isolated inferences took different cycle counts: {lat.tolist()}")
        interval = float(np.mean(np.diff(r.out_cycle))) if len(r.out_cycle) > 1 else None
        return InferenceResult(r.classes, r.scores, int(lat[0]) if not stream else int(lat.max()),
                               interval, r.seconds, r.cycles)

    def trace(self, images) -> list[np.ndarray]:
        from .trace import rtl_trace

        return rtl_trace(self.accel, images)


def hw_order(cfg, images) -> np.ndarray:
    """Raw images as the accelerator streams them: flat rows ``[n, N_0]``, channel-last (HWC,
    SPEC.md §14) for a convolutional model given ``[n, C, H, W]``."""
    x = np.asarray(images)
    if cfg.layers[0].conv is not None and x.ndim > 2:
        import torch
        from bitswarm.golden.conv import to_hwc

        return to_hwc(torch.as_tensor(x), tuple(cfg.input_shape)).numpy()
    return x.reshape(len(x), -1)


def make_backend(name: str, model: Model, plan: AccelPlan | None = None, **kw) -> Backend:
    if name == "virtual":
        return VirtualBackend(model, plan, **kw)
    if name == "verilator":
        return VerilatorBackend(model, plan, **kw)
    raise ConfigError(f"backend must be one of {BACKENDS}, not {name!r}")


def _argmax(scores: np.ndarray) -> np.ndarray:
    """Ties to the lowest index (numpy's argmax returns the first maximum)."""
    return np.argmax(scores, axis=1).astype(np.int64)


def first_difference(gold_scores, scores, gold_classes, classes, image_ids=None) -> dict | None:
    """The first image whose scores or class differ from golden, and what differs there.

    Returns ``{"image", "kind": "score", "class", "golden", "backend"}`` for the first differing
    score (``class`` is the score's index), ``{"image", "kind": "class", "golden", "backend"}``
    when every score agrees but the predicted class does not, or None. ``image`` is
    ``image_ids[k]`` (default ``k``) for the ``k``-th row.
    """
    gold_scores, scores = np.asarray(gold_scores), np.asarray(scores)
    gold_classes, classes = np.asarray(gold_classes), np.asarray(classes)
    bad = np.any(scores != gold_scores, axis=1) | (classes != gold_classes)
    if not bad.any():
        return None
    k = int(np.argmax(bad))
    img = int(image_ids[k]) if image_ids is not None else k
    cols = np.nonzero(scores[k] != gold_scores[k])[0]
    if len(cols):
        j = int(cols[0])
        return {"image": img, "kind": "score", "class": j, "golden": int(gold_scores[k, j]),
                "backend": int(scores[k, j])}
    return {"image": img, "kind": "class", "golden": int(gold_classes[k]), "backend": int(classes[k])}


def evaluate(backend: Backend, images, labels=None, image_ids=None) -> dict:
    """Run ``images`` on ``backend`` and compare with golden: accuracy, mismatches, cycles.

    ``mismatched_images`` lists the first :data:`MAX_LISTED` mismatching images and
    ``first_difference`` describes the first one (:func:`first_difference`), both by
    ``image_ids`` (default: the position in ``images``)."""
    import torch

    res = backend.infer(images)
    gold = backend.model.forward(torch.as_tensor(np.asarray(images))).numpy()
    gold_cls = _argmax(gold)
    bad = np.any(res.scores != gold, axis=1) | (res.classes != gold_cls)
    ids = np.arange(len(images)) if image_ids is None else np.asarray(image_ids)
    out = {
        "backend": backend.name,
        "n": int(len(images)),
        "mismatches": int(bad.sum()),
        "mismatched_images": [int(i) for i in ids[bad][:MAX_LISTED]],
        "first_difference": first_difference(gold, res.scores, gold_cls, res.classes, ids),
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


def first_mismatch(golden_trace: list, other_trace: list, image_ids=None) -> str | None:
    """Describe the first (layer, image, neuron) where two per-layer traces differ, or None.
    The image is named by ``image_ids[k]`` for the traces' ``k``-th row (default ``k``): pass
    the test-set indices of the traced images."""
    for li, (g, o) in enumerate(zip(golden_trace, other_trace, strict=False)):
        g = np.asarray(g)
        o = np.asarray(o)
        if g.shape != o.shape:
            return f"layer {li}: shape {list(o.shape)} differs from golden {list(g.shape)}"
        diff = np.argwhere(g != o)
        if len(diff):
            k, j = (int(v) for v in diff[0])
            img = int(image_ids[k]) if image_ids is not None else k
            kind = "score" if li == len(golden_trace) - 1 else "activation bit"
            return (f"layer {li}, image {img}, neuron {j}: {kind} is {int(o[k, j])}, "
                    f"golden {int(g[k, j])} ({len(diff)} differing values in this layer)")
    if len(golden_trace) != len(other_trace):
        return f"trace lengths differ: {len(other_trace)} vs golden {len(golden_trace)}"
    return None
