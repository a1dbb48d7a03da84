"""bitswarm.interop — the golden model in other people's formats: dependency-free C99 for
microcontrollers (:mod:`.c_export`), a torch ``nn.Module`` (:mod:`.torch_module`) and QONNX
(:mod:`.qonnx_export`). Every export is checked bit-exact against :mod:`bitswarm.golden`.

Submodules are imported lazily (torch, onnx are optional at import time of this package).
"""
