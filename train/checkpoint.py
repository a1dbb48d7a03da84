"""Checkpoint files: safetensors tensors + one JSON header, no pickle (``bitswarm.train.checkpoint``).

Layout (format ``bitswarm-checkpoint``, version 1):

- tensor ``model_file`` (uint8): the bytes of a golden model file v1 (weights, thresholds,
  accumulators, LFSR state) — absent for rules that cannot be exported (``float``);
- tensors ``rule.<name>``: the rule's extra state (latent weights, optimizer moments, ...);
- metadata key ``bitswarm-checkpoint``: JSON with ``format``, ``version``, ``config`` (the
  :class:`~bitswarm.train.trainer.TrainConfig`), ``epoch`` (epochs completed), ``data_order``
  (how the next epoch's order is derived), ``rule_meta`` and ``metrics`` (one record per epoch).

Files are written with :func:`bitswarm.golden.atomic_write_bytes`: a reader sees the old or
the new checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from bitswarm.golden.errors import BitswarmError, ModelFileError
from bitswarm.golden.files import atomic_write_bytes, header_sealed, notice, seal_header
from bitswarm.golden.model import DIGEST_KEY, Model, model_from_bytes, model_to_bytes

__all__ = ["CKPT_FORMAT", "CKPT_VERSION", "CheckpointError", "Checkpoint", "save_checkpoint",
           "load_checkpoint"]

CKPT_FORMAT = "bitswarm-checkpoint"
CKPT_VERSION = 1


class CheckpointError(BitswarmError):
    """A checkpoint file is missing, malformed or does not fit the run."""


@dataclass
class Checkpoint:
    """Everything a run needs to continue bit for bit."""

    config: dict
    epoch: int
    model: Model | None
    tensors: dict[str, torch.Tensor]
    rule_meta: dict
    metrics: list[dict]
    data_order: dict


def save_checkpoint(path: str | os.PathLike, ck: Checkpoint) -> None:
    """Write a checkpoint atomically."""
    from safetensors.torch import save

    tensors = {f"rule.{k}": v.detach().cpu().contiguous() for k, v in ck.tensors.items()}
    if ck.model is not None:
        tensors["model_file"] = torch.from_numpy(
            np.frombuffer(model_to_bytes(ck.model), dtype=np.uint8).copy())
    header = {
        "format": CKPT_FORMAT, "version": CKPT_VERSION, "config": ck.config, "epoch": ck.epoch,
        "data_order": ck.data_order, "rule_meta": ck.rule_meta, "metrics": ck.metrics,
    }
    text = seal_header(CKPT_FORMAT, header, {k: v.numpy() for k, v in tensors.items()})
    atomic_write_bytes(path, save(tensors, metadata={CKPT_FORMAT: text}))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint; a folder means its ``last.ckpt``."""
    from safetensors import safe_open
    from safetensors.torch import load

    p = Path(path)
    if p.is_dir():
        p = p / "last.ckpt"
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    data = p.read_bytes()
    try:
        tensors = load(data)
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own types for every malformation
        raise CheckpointError(f"{p}: not a readable checkpoint ({e})") from None
    if CKPT_FORMAT not in meta and "bitswarm" in meta:
        raise CheckpointError(f"{p} is a model file, not a training checkpoint: --resume takes "
                              "a run folder or its last.ckpt")
    extra_keys = sorted(set(meta) - {CKPT_FORMAT})
    if CKPT_FORMAT in meta and extra_keys:
        raise CheckpointError(f"{p}: unexpected metadata key(s) {extra_keys}: the file is "
                              "corrupted or was not written by bitswarm")
    try:
        h = json.loads(meta[CKPT_FORMAT])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{p}: no {CKPT_FORMAT!r} header: not a bitswarm checkpoint") from None
    if isinstance(h, dict) and DIGEST_KEY in h:
        if not header_sealed(CKPT_FORMAT, meta[CKPT_FORMAT], h,
                             {k: v.numpy() for k, v in tensors.items()}):
            raise CheckpointError(f"{p}: integrity check failed (SHA-256 digest mismatch): the "
                                  "checkpoint is corrupted or was edited")
    if not isinstance(h, dict) or h.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{p}: header format must be {CKPT_FORMAT!r}")
    if h.get("version") != CKPT_VERSION:
        raise CheckpointError(f"{p}: unsupported checkpoint version {h.get('version')!r}")
    for key, typ in (("config", dict), ("epoch", int), ("data_order", dict), ("rule_meta", dict),
                     ("metrics", list)):
        if not isinstance(h.get(key), typ):
            raise CheckpointError(f"{p}: header field {key!r} is missing or not a {typ.__name__}")
    unknown = sorted(set(h) - {"format", "version", "config", "epoch", "data_order", "rule_meta",
                               "metrics", DIGEST_KEY})
    if unknown:
        raise CheckpointError(f"{p}: unknown header field(s) {unknown}: the checkpoint is corrupted "
                              "or was not written by bitswarm")
    if DIGEST_KEY not in h:  # after the checks: a damaged digest field is an error, not a notice
        notice(f"{p} has no integrity digest (written by an older bitswarm); it is loaded "
               "unchecked")
    model = None
    if "model_file" in tensors:
        try:
            model = model_from_bytes(tensors.pop("model_file").numpy().tobytes(), f"{p}: model_file",
                                     quiet=True)
        except ModelFileError as e:
            raise CheckpointError(str(e)) from None
    rule = {}
    for k, v in tensors.items():
        if not k.startswith("rule."):
            raise CheckpointError(f"{p}: unexpected tensor {k!r}")
        rule[k[5:]] = v
    return Checkpoint(h["config"], h["epoch"], model, rule, h["rule_meta"], h["metrics"], h["data_order"])
