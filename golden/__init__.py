"""bitswarm.golden — the one definition of every bit. The written spec is ``golden/SPEC.md``.

Everything else in bitswarm (trainer, gateware, virtual accelerator) calls these functions or is
tested against them.
"""

from .arch import Arch, ConvSpec, parse_arch
from .bits import (
    WORD_BITS,
    bits_to_pm1,
    n_words,
    pack_bits,
    pack_trits_base3,
    pack_trits_u32,
    planes_to_ternary,
    pm1_to_bits,
    popcount,
    ternary_to_planes,
    unpack_bits,
    unpack_trits_base3,
    unpack_trits_u32,
    xnor_popcount_dot,
)
from .conv import ConvGeometry, conv_forward, im2col, maxpool_bits
from .errors import BitswarmError, ConfigError, ModelFileError
from .files import atomic_write_bytes, check_outputs, tensor_digest
from .flip import NOISE_MODES, FlipRuleConfig, flip_step, trit_flip_step
from .layer import (
    SWARM_SIZES,
    LayerConfig,
    argmax,
    effective_weights,
    exact_matmul,
    layer_forward,
    preact,
    preact_packed,
    signed_width,
    threshold,
)
from .lfsr import LFSR, TAPS, LFSRConfig, taps_mask
from .model import (
    DIGEST_KEY,
    FORMAT,
    VERSION,
    Model,
    ModelConfig,
    load_model,
    model_from_bytes,
    model_to_bytes,
    quantize_input,
    save_model,
)

__all__ = [
    "WORD_BITS", "bits_to_pm1", "n_words", "pack_bits", "pack_trits_base3", "pack_trits_u32",
    "planes_to_ternary", "pm1_to_bits", "popcount", "ternary_to_planes", "unpack_bits",
    "unpack_trits_base3", "unpack_trits_u32", "xnor_popcount_dot",
    "Arch", "ConvSpec", "parse_arch", "ConvGeometry", "conv_forward", "im2col", "maxpool_bits",
    "BitswarmError", "ConfigError", "ModelFileError",
    "NOISE_MODES", "FlipRuleConfig", "flip_step", "trit_flip_step",
    "SWARM_SIZES", "LayerConfig", "argmax", "effective_weights", "exact_matmul", "layer_forward",
    "preact", "preact_packed", "signed_width", "threshold",
    "LFSR", "TAPS", "LFSRConfig", "taps_mask",
    "check_outputs", "tensor_digest", "DIGEST_KEY",
    "FORMAT", "VERSION", "Model", "ModelConfig", "atomic_write_bytes", "load_model",
    "model_from_bytes", "model_to_bytes", "quantize_input", "save_model",
]
