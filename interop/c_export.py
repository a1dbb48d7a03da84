"""Dependency-free C99 for microcontrollers: a model as const arrays and popcount loops.

:func:`export_c` writes three files into a folder:

- ``bitswarm_model.h`` — the API and the model's sizes::

      int bitswarm_predict(const uint8_t *pixels, int32_t *scores);

  ``pixels`` are ``BITSWARM_N_INPUTS`` raw uint8 values (one sample of ``input_shape`` in C
  order); ``scores`` receives ``BITSWARM_N_CLASSES`` integer scores ``z - theta`` (SPEC.md §7)
  or is ``NULL``; the return value is the class, the argmax with ties going to the lowest
  class index.
- ``bitswarm_model.c`` — the packed weights, thresholds and invert bits as ``static const``
  arrays, the XNOR/AND-popcount inner loops (SPEC.md §3–§5) and the threshold/score/argmax
  rules (§7), with only ``<stdint.h>`` (and ``<limits.h>`` for one compile-time check).
- ``bitswarm_model.json`` — the report that :func:`export_c` also returns (flash and RAM bytes).

**Words.** Bits are packed into ``uint32_t`` words (element ``k`` is bit ``k % 32`` of word
``k // 32``, padding bits 0): the natural word of 32-bit MCUs (Cortex-M, RISC-V), still correct
on 8- and 16-bit ones. This is the 64-bit format of SPEC.md §2 read as little-endian 32-bit
halves. Popcount is a portable SWAR routine; GCC and Clang use ``__builtin_popcountl`` unless
``BITSWARM_PORTABLE_POPCOUNT`` is defined (Cortex-M has no popcount instruction; both are exact).

**Widths.** Every accumulator is ``int32_t``. A layer's ``|z| <= z_bound = N·S·x_max``
(§4) and ``|z - theta| <= 2·z_bound``; the largest legal layer (N = 65536, S = 32, B = 8) has
``2·z_bound = 1,069,547,520 < 2^31 - 1``, so no sum overflows; every partial sum is bounded by
``z_bound`` as well. :func:`export_c` checks the bound per layer all the same.

**Memory.** Flash is the const data (weights ``S·M·ceil(N/32)`` words per binary layer, two
planes for ternary, ``int32_t`` thresholds, invert bits packed 32 to a word on hidden layers);
code adds a few hundred bytes (compiler-dependent, not counted). RAM is three static buffers in
``.bss``: the first layer's input bit planes (``B·ceil(N0/32)`` words), two hidden activation
buffers (ping-pong, ``ceil(M/32)`` words of the widest hidden layer each) and the scores
(``int32_t`` per class); ``bitswarm_predict`` itself uses a few dozen bytes of stack. Because of
the static buffers it is not reentrant. On Harvard-architecture parts (AVR) ``const`` data is
copied to RAM unless it is placed in program memory; ARM and RISC-V keep it in flash.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from bitswarm.golden.bits import pack_bits
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.files import atomic_write_bytes, check_outputs
from bitswarm.golden.model import PIXEL_BITS, Model, model_to_bytes

__all__ = ["WORD_BITS", "FILES", "INT32_MAX", "c_words", "generate_c", "export_c"]

#: Bits per packed word in the generated C.
WORD_BITS = 32
#: File names written into the output folder: header, source, report.
FILES = ("bitswarm_model.h", "bitswarm_model.c", "bitswarm_model.json")
INT32_MAX = (1 << 31) - 1
_PER_LINE = 8


def c_words(bits: np.ndarray) -> np.ndarray:
    """Pack the last axis of a 0/1 array into ``uint32`` words: ``[..., n] -> [..., ceil(n/32)]``.

    The 64-bit words of :func:`bitswarm.golden.bits.pack_bits` split into their little-endian
    halves, so element ``k`` is bit ``k % 32`` of word ``k // 32`` and the padding bits are 0.
    """
    bits = np.asarray(bits, dtype=np.uint8)
    n = bits.shape[-1]
    w64 = np.ascontiguousarray(pack_bits(bits).astype("<u8"))
    halves = w64.view("<u4").reshape(bits.shape[:-1] + (2 * w64.shape[-1],))
    return np.ascontiguousarray(halves[..., : (n + WORD_BITS - 1) // WORD_BITS]).astype(np.uint32)


def _nw(n: int) -> int:
    return (n + WORD_BITS - 1) // WORD_BITS


def _array(ctype: str, name: str, values, comment: str, hexa: bool) -> str:
    vals = np.asarray(values).reshape(-1)
    items = [f"0x{int(v):08x}u" if hexa else str(int(v)) for v in vals]
    lines = [", ".join(items[i : i + _PER_LINE]) for i in range(0, len(items), _PER_LINE)]
    body = ",\n    ".join(lines)
    return f"/* {comment} */\nstatic const {ctype} {name}[{len(items)}] = {{\n    {body}\n}};\n"


_POPCOUNT = """\
#if defined(__GNUC__) && !defined(BITSWARM_PORTABLE_POPCOUNT)
#define BSW_POPCOUNT(x) ((int32_t)__builtin_popcountl((unsigned long)(x)))
#else
/* Portable SWAR popcount of a 32-bit word (exact for every input). */
static int32_t bsw_popcount(uint32_t x)
{
    x = x - ((x >> 1) & UINT32_C(0x55555555));
    x = (x & UINT32_C(0x33333333)) + ((x >> 2) & UINT32_C(0x33333333));
    x = (x + (x >> 4)) & UINT32_C(0x0f0f0f0f);
    return (int32_t)((uint32_t)(x * UINT32_C(0x01010101)) >> 24);
}
#define BSW_POPCOUNT(x) bsw_popcount(x)
#endif
"""

_KERNELS = {
    "xnor": """\
/* +-1 inputs, binary swarm weights (SPEC 3): sum_s (2 popcount(XNOR(a, w_s)) - n);
 * the planes are `stride` words apart; `last` masks the padding bits of the last word. */
static int32_t bsw_dot_xnor(const uint32_t *a, const uint32_t *w, int32_t nw, int32_t swarm,
                            int32_t stride, uint32_t last, int32_t n)
{
    int32_t z = 0, s, k, pc;
    for (s = 0; s < swarm; ++s) {
        const uint32_t *ws = w + s * stride;
        pc = 0;
        for (k = 0; k < nw - 1; ++k)
            pc += BSW_POPCOUNT((uint32_t)~(a[k] ^ ws[k]));
        pc += BSW_POPCOUNT((uint32_t)~(a[nw - 1] ^ ws[nw - 1]) & last);
        z += 2 * pc - n;
    }
    return z;
}
""",
    "and": """\
/* unsigned B-bit inputs as bit planes x_b (nw words apart), binary swarm weights (SPEC 4):
 * sum_s sum_b 2^b (2 popcount(x_b AND w_s) - popcount(x_b)); px[b] = popcount(x_b). */
static int32_t bsw_dot_and(const uint32_t *x, const int32_t *px, int32_t bits,
                           const uint32_t *w, int32_t nw, int32_t swarm, int32_t stride)
{
    int32_t z = 0, s, b, k, pc;
    for (s = 0; s < swarm; ++s) {
        const uint32_t *ws = w + s * stride;
        for (b = 0; b < bits; ++b) {
            const uint32_t *xb = x + b * nw;
            pc = 0;
            for (k = 0; k < nw; ++k)
                pc += BSW_POPCOUNT(xb[k] & ws[k]);
            z += (2 * pc - px[b]) * ((int32_t)1 << b);
        }
    }
    return z;
}
""",
    "tern_xnor": """\
/* +-1 inputs, ternary (mask, sign) weights (SPEC 5): 2 popcount(m AND XNOR(a, sg)) - popcount(m);
 * the mask's padding bits are 0. */
static int32_t bsw_dot_tern_xnor(const uint32_t *a, const uint32_t *m, const uint32_t *sg,
                                 int32_t nw)
{
    int32_t pc = 0, pm = 0, k;
    for (k = 0; k < nw; ++k) {
        pc += BSW_POPCOUNT(m[k] & (uint32_t)~(a[k] ^ sg[k]));
        pm += BSW_POPCOUNT(m[k]);
    }
    return 2 * pc - pm;
}
""",
    "tern_and": """\
/* unsigned B-bit inputs, ternary weights (SPEC 5):
 * sum_b 2^b (2 popcount(x_b AND m AND sg) - popcount(x_b AND m)). */
static int32_t bsw_dot_tern_and(const uint32_t *x, int32_t bits, const uint32_t *m,
                                const uint32_t *sg, int32_t nw)
{
    int32_t z = 0, b, k, pc, pm;
    for (b = 0; b < bits; ++b) {
        const uint32_t *xb = x + b * nw;
        pc = 0;
        pm = 0;
        for (k = 0; k < nw; ++k) {
            uint32_t xm = xb[k] & m[k];
            pc += BSW_POPCOUNT(xm & sg[k]);
            pm += BSW_POPCOUNT(xm);
        }
        z += (2 * pc - pm) * ((int32_t)1 << b);
    }
    return z;
}
""",
}


def _kernel(lay) -> str:
    if lay.weights == "binary":
        return "xnor" if lay.input_bits == 1 else "and"
    return "tern_xnor" if lay.input_bits == 1 else "tern_and"


def _check(model: Model) -> None:
    if not isinstance(model, Model):
        raise ConfigError(f"export needs a bitswarm Model, not {type(model).__name__}")
    model.validate()
    model.cfg.require_dense("the C export")
    for i, lay in enumerate(model.cfg.layers):
        if 2 * lay.z_bound > INT32_MAX:  # cannot happen for legal layers (module docstring)
            raise ConfigError(f"layer {i}: |z - theta| can reach {2 * lay.z_bound}, beyond int32")
        planes = lay.swarm if lay.weights == "binary" else 1
        if planes * lay.n_out * _nw(lay.n_in) > INT32_MAX:
            raise ConfigError(f"layer {i}: {planes * lay.n_out * _nw(lay.n_in)} weight words do "
                              "not fit int32 indices")


def generate_c(model: Model) -> tuple[str, str, dict]:
    """The header text, the source text and the report of ``model`` (see the module docs).

    Raises
    ------
    ConfigError
        ``model`` is not a valid :class:`~bitswarm.golden.model.Model`.
    """
    _check(model)
    cfg = model.cfg
    layers = cfg.layers
    first = layers[0]
    n0, bits0, nw0 = first.n_in, first.input_bits, _nw(first.n_in)
    hidden = [lay for lay in layers if not lay.output]
    hw = max((_nw(lay.n_out) for lay in hidden), default=0)
    n_cls = cfg.n_classes
    digest = hashlib.sha256(model_to_bytes(model)).hexdigest()

    data, layer_rows = [], []
    flash = {"weights": 0, "thresholds": 0, "invert": 0}
    for i, lay in enumerate(layers):
        nw = _nw(lay.n_in)
        kind = f"{lay.weights}{' output' if lay.output else ''}"
        what = (f"layer {i}: {kind}, {lay.n_in} -> {lay.n_out}, swarm {lay.swarm}, input bits "
                f"{lay.input_bits}; {nw} words per row")
        w = model.weights[i].cpu().numpy()
        if lay.weights == "binary":
            words = c_words(w)  # [S, M, nw]
            data.append(_array("uint32_t", f"bsw_l{i}_w", words, f"{what}; weights [S][M][words]",
                               True))
            wbytes = words.size * 4
        else:
            mask, sign = c_words((w != 0).astype(np.uint8)), c_words((w > 0).astype(np.uint8))
            data.append(_array("uint32_t", f"bsw_l{i}_m", mask, f"{what}; ternary mask [M][words]",
                               True))
            data.append(_array("uint32_t", f"bsw_l{i}_s", sign, f"layer {i}: ternary sign "
                               "[M][words] (0 where the mask is 0)", True))
            wbytes = (mask.size + sign.size) * 4
        theta = model.theta[i].cpu().numpy().astype(np.int64)
        data.append(_array("int32_t", f"bsw_l{i}_theta", theta,
                           f"layer {i}: thresholds theta_j, |theta| <= {lay.z_bound}", False))
        ibytes = 0
        if not lay.output:
            inv = c_words(model.invert[i].cpu().numpy().astype(np.uint8))
            data.append(_array("uint32_t", f"bsw_l{i}_inv", inv,
                               f"layer {i}: invert bits, bit j % 32 of word j / 32", True))
            ibytes = inv.size * 4
        flash["weights"] += wbytes
        flash["thresholds"] += theta.size * 4
        flash["invert"] += ibytes
        layer_rows.append({"layer": i, "kind": lay.weights, "output": lay.output, "n_in": lay.n_in,
                           "n_out": lay.n_out, "swarm": lay.swarm, "input_bits": lay.input_bits,
                           "words_per_row": nw, "weight_bytes": wbytes,
                           "threshold_bytes": theta.size * 4, "invert_bytes": ibytes,
                           "max_abs_z": lay.z_bound, "max_abs_z_minus_theta": 2 * lay.z_bound})
    ram = {"input_planes": bits0 * nw0 * 4, "activations": 2 * hw * 4, "scores": n_cls * 4}
    report = {
        "format": "c",
        "word_bits": WORD_BITS,
        "accumulator": "int32_t",
        "model_sha256": digest,
        "arch": cfg.arch,
        "n_inputs": n0,
        "n_classes": n_cls,
        "flash_bytes": sum(flash.values()),
        "flash": flash,
        "ram_bytes": sum(ram.values()),
        "ram": ram,
        "layers": layer_rows,
    }

    kinds = []
    for lay in layers:
        if _kernel(lay) not in kinds:
            kinds.append(_kernel(lay))

    body = []
    body.append("    int32_t j, k, b, best;\n    int32_t *out = scores ? scores : bsw_scores;\n")
    if bits0 > 1:
        body.append(f"    int32_t px[{bits0}];\n")
    body.append(
        f"\n    /* input: x_k = pixel_k >> {PIXEL_BITS - bits0} as {bits0} bit plane(s) of "
        f"{nw0} words */\n"
        f"    for (k = 0; k < {bits0 * nw0}; ++k)\n        bsw_x[k] = 0;\n"
        f"    for (k = 0; k < {n0}; ++k) {{\n"
        f"        uint32_t v = (uint32_t)(pixels[k] >> {PIXEL_BITS - bits0});\n"
        f"        for (b = 0; b < {bits0}; ++b)\n"
        f"            bsw_x[b * {nw0} + k / 32] |= ((v >> b) & 1u) << (k % 32);\n"
        "    }\n")
    if bits0 > 1:
        body.append(
            f"    for (b = 0; b < {bits0}; ++b) {{\n        px[b] = 0;\n"
            f"        for (k = 0; k < {nw0}; ++k)\n"
            f"            px[b] += BSW_POPCOUNT(bsw_x[b * {nw0} + k]);\n    }}\n")
    for i, lay in enumerate(layers):
        nw, m, kern = _nw(lay.n_in), lay.n_out, _kernel(lay)
        src = "bsw_x" if i == 0 else f"bsw_h[{(i - 1) % 2}]"
        last = (1 << (lay.n_in % WORD_BITS)) - 1 if lay.n_in % WORD_BITS else (1 << 32) - 1
        if kern == "xnor":
            dot = (f"bsw_dot_xnor({src}, bsw_l{i}_w + j * {nw}, {nw}, {lay.swarm}, {m * nw}, "
                   f"0x{last:08x}u, {lay.n_in})")
        elif kern == "and":
            dot = f"bsw_dot_and({src}, px, {lay.input_bits}, bsw_l{i}_w + j * {nw}, {nw}, " \
                  f"{lay.swarm}, {m * nw})"
        elif kern == "tern_xnor":
            dot = f"bsw_dot_tern_xnor({src}, bsw_l{i}_m + j * {nw}, bsw_l{i}_s + j * {nw}, {nw})"
        else:
            dot = (f"bsw_dot_tern_and({src}, {lay.input_bits}, bsw_l{i}_m + j * {nw}, "
                   f"bsw_l{i}_s + j * {nw}, {nw})")
        body.append(f"\n    /* layer {i}: {lay.weights}, {lay.n_in} -> {m}, swarm {lay.swarm}, "
                    f"input bits {lay.input_bits} */\n")
        if lay.output:
            body.append(f"    for (j = 0; j < {m}; ++j)\n"
                        f"        out[j] = {dot} - bsw_l{i}_theta[j];\n")
        else:
            dst = f"bsw_h[{i % 2}]"
            body.append(
                f"    for (k = 0; k < {_nw(m)}; ++k)\n        {dst}[k] = 0;\n"
                f"    for (j = 0; j < {m}; ++j) {{\n"
                f"        int32_t z = {dot};\n"
                f"        uint32_t fire = (uint32_t)(z - bsw_l{i}_theta[j] >= 0);\n"
                f"        uint32_t inv = (bsw_l{i}_inv[j / 32] >> (j % 32)) & 1u;\n"
                f"        {dst}[j / 32] |= (fire ^ inv) << (j % 32);\n"
                "    }\n")
    body.append(f"\n    /* argmax, ties to the lowest class index */\n    best = 0;\n"
                f"    for (j = 1; j < {n_cls}; ++j)\n"
                f"        if (out[j] > out[best])\n            best = j;\n"
                "    return (int)best;\n")

    meta = ", ".join(f"{k}={v}" for k, v in sorted(cfg.meta.items()) if "\n" not in v
                     and "*/" not in v and len(v) < 60)
    head_comment = (
        f"/* Generated by bitswarm from a model of arch {'-'.join(map(str, cfg.arch))} "
        f"(input shape {'x'.join(map(str, cfg.input_shape))}).\n"
        f" * Model file SHA-256 {digest}.\n"
        + (f" * Meta: {meta}.\n" if meta else "")
        + f" * Flash {report['flash_bytes']} bytes of const data, RAM {report['ram_bytes']} "
        "bytes of static buffers. Do not edit. */\n")
    header = (
        head_comment
        + "#ifndef BITSWARM_MODEL_H\n#define BITSWARM_MODEL_H\n\n#include <stdint.h>\n\n"
        f"#define BITSWARM_N_INPUTS {n0}\n#define BITSWARM_N_CLASSES {n_cls}\n"
        f"#define BITSWARM_INPUT_BITS {bits0}\n"
        f"#define BITSWARM_FLASH_BYTES {report['flash_bytes']}\n"
        f"#define BITSWARM_RAM_BYTES {report['ram_bytes']}\n\n"
        "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
        "/* Classify one sample: BITSWARM_N_INPUTS raw uint8 pixels in C order. Writes the\n"
        " * BITSWARM_N_CLASSES integer scores z - theta to `scores` unless it is NULL and returns\n"
        " * the class with the highest score, ties going to the lowest class index. Not\n"
        " * reentrant (static buffers). */\n"
        "int bitswarm_predict(const uint8_t *pixels, int32_t *scores);\n\n"
        "#ifdef __cplusplus\n}\n#endif\n\n#endif /* BITSWARM_MODEL_H */\n")
    source = (
        head_comment
        + '#include <limits.h>\n#include <stdint.h>\n\n#include "bitswarm_model.h"\n\n'
        "#if BITSWARM_N_CLASSES - 1 > INT_MAX\n#error \"class indices do not fit int\"\n#endif\n\n"
        + _POPCOUNT + "\n"
        + "\n".join(_KERNELS[k] for k in kinds) + "\n"
        + "\n".join(data) + "\n"
        + f"/* first-layer input bit planes [{bits0}][{nw0}] */\n"
          f"static uint32_t bsw_x[{bits0 * nw0}];\n"
        + (f"/* hidden activation bits, ping-pong */\nstatic uint32_t bsw_h[2][{hw}];\n"
           if hw else "")
        + f"/* scores when the caller passes NULL */\nstatic int32_t bsw_scores[{n_cls}];\n\n"
        + "int bitswarm_predict(const uint8_t *pixels, int32_t *scores)\n{\n"
        + "".join(body) + "}\n")
    return header, source, report


def export_c(model: Model, out_dir: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Write ``bitswarm_model.{h,c,json}`` for ``model`` into ``out_dir``; return the report.

    The report (also written as ``bitswarm_model.json``) holds ``flash_bytes`` and
    ``ram_bytes`` with their parts, the per-layer words and bounds, and ``files``.

    Raises
    ------
    ConfigError
        One of the files exists and ``overwrite`` is false, ``out_dir`` is a file or not
        writable, or ``model`` is not a valid model.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; --format c writes a folder")
    paths = [out / f for f in FILES]
    check_outputs(paths, overwrite=overwrite)
    header, source, report = generate_c(model)
    report["files"] = [str(p) for p in paths]
    report["lines"] = [
        f"wrote {paths[0]} and {paths[1]} (C99, uint32_t words, int32_t accumulators)",
        f"flash {report['flash_bytes']} bytes: weights {report['flash']['weights']}, thresholds "
        f"{report['flash']['thresholds']}, invert bits {report['flash']['invert']} (const data; "
        "code not counted)",
        f"RAM {report['ram_bytes']} bytes: input planes {report['ram']['input_planes']}, "
        f"activations {report['ram']['activations']}, scores {report['ram']['scores']} "
        "(static buffers)",
    ]
    atomic_write_bytes(paths[0], header.encode())
    atomic_write_bytes(paths[1], source.encode())
    atomic_write_bytes(paths[2], (json.dumps(report, indent=2) + "\n").encode())
    return report
