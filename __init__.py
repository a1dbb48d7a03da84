"""bitswarm — hardware/software co-design of integer-only binary (swarm/vote) neural networks.

Sub-packages (one per top-level folder of the repository):

- :mod:`bitswarm.golden` — the one definition of every bit (``golden/SPEC.md``);
- :mod:`bitswarm.train`  — training golden models;
- :mod:`bitswarm.hw`     — Amaranth gateware;
- :mod:`bitswarm.sim`    — virtual accelerator and cocotb/Verilator harnesses.
- :mod:`bitswarm.interop` — the model in other formats (C99, torch ``nn.Module``, QONNX).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
