"""The README's "From a notebook: train -> export -> sim" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- interop-example:"


def example_code() -> str:
    """The ```python block that follows the marker comment in README.md."""
    text = README.read_text()
    assert text.count(MARKER) == 1, "README.md must hold exactly one interop-example marker"
    m = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S)
    assert m, "no ```python block after the interop-example marker"
    return m.group(1)


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(example_code(), "README.md:interop-example", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "flash 896 bytes, RAM 120 bytes" in out
    assert "mismatches 0" in out
    assert (tmp_path / "digits_c" / "bitswarm_model.c").is_file()
    assert (tmp_path / "digits.bsm").is_file()
