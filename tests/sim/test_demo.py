"""``bitswarm demo``: argument and output checks (the whole run is ``make demo``)."""

from bitswarm.cli import main


def _err(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("bitswarm: error: ") and err.count("\n") == 1, err
    return err


def test_demo_refuses_a_used_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "digits.bsm").write_bytes(b"a model the user kept")
    assert "already holds files; pass --overwrite" in _err(capsys, ["demo", "--out", str(out)])
    assert (out / "digits.bsm").read_bytes() == b"a model the user kept"
    assert sorted(p.name for p in out.iterdir()) == ["digits.bsm"]


def test_demo_bad_arguments(tmp_path, capsys):
    assert "--epochs must be >= 1" in _err(capsys, ["demo", "--out", str(tmp_path / "d"),
                                                    "--epochs", "0"])
    assert "--clock-mhz must be positive" in _err(capsys, ["demo", "--out", str(tmp_path / "d"),
                                                          "--clock-mhz", "inf"])
    f = tmp_path / "f"
    f.write_text("x")
    assert "exists and is not a folder" in _err(capsys, ["demo", "--out", str(f)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
