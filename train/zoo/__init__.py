"""The rule zoo (``bitswarm.train.zoo``): every training rule of the seed documents as a
selectable ``--rule NAME`` behind the trainer's rule interface, measured on the golden
network with the same data, budget and seed (``bitswarm zoo``).

- :mod:`.base` — the shared golden network, surrogate gradient and labels;
- :mod:`.seednet` — the seed notebook's own float networks (``net=seed``, seed gradient units);
- :mod:`.notebook` — seed 000, versions v1..v21 (v3, 9.B and v11-v14 included);
- :mod:`.seeds` — seeds 002 (TernaryScale), 003 (BitNet b1.58), 004 (Zero-Float);
- :mod:`.record` — the seeds' own reported results and the verdict of a run against them;
- :mod:`.run` — measuring rules side by side (the ``zoo`` subcommand's engine);
- :mod:`.report` — ``zoo.json``, ``zoo.md`` and the accuracy plot;
- ``SEEDS.md`` — each rule's seed network, constants and units;
- ``COLLAPSE.md`` — why v17/v20 rose to ~92 % and fell to 10 %, and what the golden rule does.
"""

from . import notebook, seeds  # noqa: F401  (registration side effects)
from .base import ERROR_SOURCES, SurrogateOptions, ZooRule, surrogate

__all__ = ["ERROR_SOURCES", "SurrogateOptions", "ZooRule", "surrogate", "notebook", "seeds"]
