"""C export (``interop/c_export.py``): the generated C99 compiles warning-free and computes
every class and score of golden ``Model.forward``.

Each model is exported, compiled with ``gcc -std=c99 -pedantic -Wall -Wextra -Wconversion
-Werror -O2`` together with a driver that reads raw samples from a binary file and writes the
class and the scores of each, and compared with golden on the whole digits test set (trained
model) and on random models over every layer kind and bound edge case. Mutants (a flipped
weight word, a broken tie rule, an unmasked padding word) must make the comparison fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from bitswarm.cli import main
from bitswarm.golden.errors import ConfigError
from bitswarm.golden.model import save_model
from bitswarm.interop.c_export import FILES, c_words, export_c, generate_c

from tests.interop import models

CC = shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (gcc or cc) on PATH")

CFLAGS = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Wconversion", "-Wsign-conversion",
          "-Werror", "-O2"]

DRIVER = r"""
#include <stdio.h>
#include "bitswarm_model.h"

/* argv[1]: samples, BITSWARM_N_INPUTS bytes each; argv[2]: per sample the class and the
 * BITSWARM_N_CLASSES scores as int32. Also checks that scores == NULL gives the same class. */
int main(int argc, char **argv)
{
    static uint8_t px[BITSWARM_N_INPUTS];
    static int32_t rec[1 + BITSWARM_N_CLASSES];
    FILE *fi, *fo;
    if (argc != 3)
        return 2;
    fi = fopen(argv[1], "rb");
    fo = fopen(argv[2], "wb");
    if (!fi || !fo)
        return 3;
    while (fread(px, 1, BITSWARM_N_INPUTS, fi) == BITSWARM_N_INPUTS) {
        rec[0] = bitswarm_predict(px, rec + 1);
        if (bitswarm_predict(px, NULL) != rec[0])
            return 4;
        if (fwrite(rec, sizeof rec, 1, fo) != 1)
            return 5;
    }
    fclose(fi);
    return fclose(fo) ? 6 : 0;
}
"""


def _build(src_dir: Path, defines=()) -> Path:
    (src_dir / "driver.c").write_text(DRIVER)
    exe = src_dir / "driver"
    r = subprocess.run([CC, *CFLAGS, *(f"-D{d}" for d in defines), f"-I{src_dir}",
                        str(src_dir / "bitswarm_model.c"), str(src_dir / "driver.c"), "-o",
                        str(exe)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return exe


def _run(exe: Path, x: torch.Tensor, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    work = exe.parent
    np.ascontiguousarray(x.numpy(), dtype=np.uint8).tofile(work / "in.bin")
    subprocess.run([str(exe), str(work / "in.bin"), str(work / "out.bin")], check=True,
                   timeout=300)
    rec = np.fromfile(work / "out.bin", dtype="<i4").reshape(-1, 1 + n_classes)
    assert len(rec) == len(x)
    return rec[:, 0].astype(np.int64), rec[:, 1:].astype(np.int64)


def _mismatches(model, x, classes, scores) -> tuple[int, int]:
    """(images whose class differs, images with any differing score) against golden."""
    gold = model.forward(x).numpy()
    cls = model.predict(x).numpy()
    return int((classes != cls).sum()), int(np.any(scores != gold, axis=1).sum())


def _export_run(model, x, tmp: Path, defines=(), mutate=None):
    out = tmp / "c"
    export_c(model, out)
    if mutate is not None:
        src = out / "bitswarm_model.c"
        text = src.read_text()
        new = mutate(text)
        assert new != text, "the mutant changed nothing"
        src.write_text(new)
    return _run(_build(out, defines), x, model.cfg.n_classes)


def test_c_trained_digits_whole_test_set(tmp_path_factory, tmp_path):
    model = models.trained_digits(tmp_path_factory)
    ds = models.digits()
    x = torch.from_numpy(ds.x_test)
    assert len(x) == 360
    classes, scores = _export_run(model, x, tmp_path)
    assert _mismatches(model, x, classes, scores) == (0, 0)
    assert float(np.mean(classes == ds.y_test)) > 0.5  # trained: far above chance


@pytest.mark.parametrize("name", sorted(models.CASES))
def test_c_random_models(name, tmp_path):
    model = models.random_model(name, seed=len(name))
    x = models.inputs_for(model)
    assert _mismatches(model, x, *_export_run(model, x, tmp_path)) == (0, 0)


@pytest.mark.parametrize("thresholds", ["extreme", "boundary"])
@pytest.mark.parametrize("name", ["s4_bits8_ragged", "ternary_bits8", "bits1_ragged"])
def test_c_threshold_edges(name, thresholds, tmp_path):
    model = models.random_model(name, seed=3, thresholds=thresholds)
    x = models.inputs_for(model, 200)
    assert _mismatches(model, x, *_export_run(model, x, tmp_path)) == (0, 0)


def test_c_portable_popcount(tmp_path_factory, tmp_path):
    """The SWAR popcount (no compiler builtins) gives the same results."""
    model = models.random_model("s4_bits8_ragged", seed=1)
    x = models.inputs_for(model)
    got = _export_run(model, x, tmp_path, defines=["BITSWARM_PORTABLE_POPCOUNT"])
    assert _mismatches(model, x, *got) == (0, 0)
    assert "__builtin" not in subprocess.run(
        [CC, "-std=c99", "-E", "-DBITSWARM_PORTABLE_POPCOUNT", f"-I{tmp_path / 'c'}",
         str(tmp_path / "c" / "bitswarm_model.c")], capture_output=True, text=True,
        check=True).stdout


def test_c_widest_layer_int32_bound(tmp_path):
    """N = 65536, S = 32, B = 8: scores reach +-2 z_bound = +-1,069,547,520 in int32."""
    model = models.widest_model()
    x = models.edge_inputs(65536).reshape(-1, 256, 256)
    classes, scores = _export_run(model, x, tmp_path)
    assert _mismatches(model, x, classes, scores) == (0, 0)
    zb = model.cfg.layers[0].z_bound
    assert scores[1].tolist() == [2 * zb, -2 * zb] and 2 * zb == 1_069_547_520


def test_c_tie_rule(tmp_path):
    model = models.tie_model()
    x = models.inputs_for(model, 50)
    assert set(model.predict(x).tolist()) == {3}
    classes, scores = _export_run(model, x, tmp_path)
    assert set(classes.tolist()) == {3}
    assert _mismatches(model, x, classes, scores) == (0, 0)


# -- mutants: a broken export must fail the comparison ------------------------------------------


def test_c_mutant_weight_word(tmp_path_factory, tmp_path):
    """One flipped weight bit of the output layer changes class 0's score of every image."""
    model = models.trained_digits(tmp_path_factory)
    x = torch.from_numpy(models.digits().x_test)

    def flip(text):
        return re.sub(r"(bsw_l1_w\[\d+\] = \{\s*0x)([0-9a-f]{8})",
                      lambda m: m.group(1) + f"{int(m.group(2), 16) ^ 1:08x}", text, count=1)

    cls_bad, score_bad = _mismatches(model, x, *_export_run(model, x, tmp_path, mutate=flip))
    assert score_bad == len(x)


def test_c_mutant_tie_rule(tmp_path):
    """Ties to the highest index instead of the lowest: every tied image's class differs."""
    model = models.tie_model()
    x = models.inputs_for(model, 50)

    def last_wins(text):
        return text.replace("if (out[j] > out[best])", "if (out[j] >= out[best])")

    classes, scores = _export_run(model, x, tmp_path, mutate=last_wins)
    assert _mismatches(model, x, classes, scores) == (len(x), 0)


def test_c_mutant_padding_mask(tmp_path):
    """Without the padding mask the ragged layer's z grows by 2 * 31: every score differs."""
    model = models.random_model("bits1_ragged", seed=2)
    x = models.inputs_for(model)

    def unmasked(text):
        return text.replace("0x00000001u, 33)", "0xffffffffu, 33)")

    assert _mismatches(model, x, *_export_run(model, x, tmp_path, mutate=unmasked))[1] == len(x)


# -- the report, the files, the command ---------------------------------------------------------


def _symbol_sizes(obj: Path) -> dict[str, int]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm on PATH")
    out = subprocess.run([nm, "-S", "--defined-only", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            sizes[parts[3]] = int(parts[1], 16)
    return sizes


@pytest.mark.parametrize("name", ["ternary_bits8", "bits8_n100_deep", "single_layer_bits5"])
def test_c_report_equals_object_sizes(name, tmp_path):
    """flash_bytes = the const arrays, ram_bytes = the static buffers, as the compiler laid
    them out (``nm -S``), and the header defines the same numbers."""
    model = models.random_model(name, seed=4)
    rep = export_c(model, tmp_path)
    for opt in ("-O0", "-O2"):  # -O2 may fold a one-word array into the code
        obj = tmp_path / "m.o"
        subprocess.run([CC, *CFLAGS, opt, "-c", str(tmp_path / "bitswarm_model.c"), "-o",
                        str(obj)], check=True, timeout=120)
        sizes = _symbol_sizes(obj)
        const = sum(v for k, v in sizes.items()
                    if re.fullmatch(r"bsw_l\d+_(w|m|s|theta|inv)", k))
        ram = sum(v for k, v in sizes.items() if k in ("bsw_x", "bsw_h", "bsw_scores"))
        assert ram == rep["ram_bytes"]
        if opt == "-O0":
            assert const == rep["flash_bytes"]
        else:
            assert rep["flash_bytes"] - 4 * len(model.cfg.layers) <= const <= rep["flash_bytes"]
    words = sum((lay.swarm if lay.weights == "binary" else 2) * lay.n_out * -(-lay.n_in // 32)
                for lay in model.cfg.layers)
    assert rep["flash"]["weights"] == 4 * words
    header = (tmp_path / "bitswarm_model.h").read_text()
    assert f"#define BITSWARM_FLASH_BYTES {rep['flash_bytes']}\n" in header
    assert f"#define BITSWARM_RAM_BYTES {rep['ram_bytes']}\n" in header
    assert json.loads((tmp_path / "bitswarm_model.json").read_text()) == rep


def test_c_words_are_golden_packing():
    bits = torch.randint(0, 2, (3, 5, 97), generator=torch.Generator().manual_seed(0),
                         dtype=torch.uint8).numpy()
    w = c_words(bits)
    assert w.shape == (3, 5, 4) and w.dtype == np.uint32
    for k in range(97):
        assert np.array_equal((w[..., k // 32] >> np.uint32(k % 32)) & 1, bits[..., k])
    assert not np.any(w[..., 3] >> np.uint32(1))  # padding bits 0


def test_export_c_deterministic_and_no_overwrite(tmp_path):
    model = models.random_model("bits1_ragged")
    export_c(model, tmp_path / "a")
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        export_c(model, tmp_path / "a")
    export_c(model, tmp_path / "a", overwrite=True)
    h, c, _ = generate_c(model)
    assert (tmp_path / "a" / FILES[0]).read_text() == h
    assert (tmp_path / "a" / FILES[1]).read_text() == c
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        export_c(model, tmp_path / "f")
    with pytest.raises(ConfigError, match="needs a bitswarm Model"):
        export_c("model.bsm", tmp_path / "b")


def test_cli_export_c(tmp_path, capsys):
    model = models.random_model("s1_bits8_digits")
    save_model(model, tmp_path / "m.bsm")
    out = tmp_path / "c"
    assert main(["export", str(tmp_path / "m.bsm"), "--format", "c", "-o", str(out),
                 "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["format"] == "c" and rep["flash_bytes"] > 0 and sorted(
        Path(f).name for f in rep["files"]) == sorted(FILES)
    assert main(["export", str(tmp_path / "m.bsm"), "--format", "c", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert main(["export", str(tmp_path / "m.bsm"), "--format", "c", "-o", str(out),
                 "--overwrite"]) == 0
    text = capsys.readouterr().out
    assert f"flash {rep['flash_bytes']} bytes" in text and f"RAM {rep['ram_bytes']} bytes" in text
    assert main(["export", str(tmp_path / "nope.bsm"), "--format", "c", "-o", str(out)]) == 2


def test_cli_export_missing_format_module(monkeypatch):
    from bitswarm.interop import cli

    monkeypatch.setitem(cli.FORMATS, "c", "bitswarm.interop.no_such_export:export_x")
    with pytest.raises(ConfigError, match="--format c is not available"):
        cli.get_exporter("c")


def test_cli_export_missing_dependency(monkeypatch, tmp_path):
    from bitswarm.interop import cli

    (tmp_path / "fake_export.py").write_text("import no_such_package_xyz  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.FORMATS, "c", "fake_export:export_x")
    with pytest.raises(ConfigError, match="needs the Python package 'no_such_package_xyz'"):
        cli.get_exporter("c")
