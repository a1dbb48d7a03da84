"""bitswarm.train — train golden models (integer-only binary MLPs and CNNs) and reference networks.

The public API::

    from bitswarm.train import TrainConfig, train, load_dataset, evaluate
    result = train(TrainConfig(dataset="digits", swarm=1, epochs=30), out="digits.bsm")
    cnn = train(TrainConfig(dataset="digits", arch="1x8x8-c32k3p1-512-10", batch_size=64),
                out="digits-cnn.bsm")

See :mod:`bitswarm.train.rule_golden` for the golden rule, :mod:`bitswarm.train.rule_ref` for
the references, :mod:`bitswarm.train.data` for data sets and splits, and ``train/RULES.md``.
"""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .data import DATASETS, DataError, Dataset, load_dataset
from .rules import RULES, NetSpec, Rule, StepResult, get_rule, register_rule
from .trainer import (
    DEFAULT_FLIP,
    TrainConfig,
    TrainResult,
    arch_text,
    default_arch,
    default_batch,
    default_epochs,
    default_flip,
    epoch_order,
    evaluate,
    parse_arch,
    train,
)

get_rule("golden")  # import every built-in rule so RULES is complete

__all__ = [
    "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint",
    "DATASETS", "DataError", "Dataset", "load_dataset",
    "RULES", "NetSpec", "Rule", "StepResult", "get_rule", "register_rule",
    "DEFAULT_FLIP", "TrainConfig", "TrainResult", "default_arch", "default_batch", "default_epochs", "default_flip", "epoch_order", "evaluate",
    "parse_arch", "arch_text", "train",
]
