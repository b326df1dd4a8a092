"""``liverplan --version``, ``liverplan --self-test`` and ``liverplan FILE`` (the desktop entry's "Open with")
from the source tree; the frozen bundle runs the same code in the installers' smoke test."""
from __future__ import annotations

import io
import json

import pytest

import main
from engine import about, selftest

pytestmark = pytest.mark.timeout(600)


def test_version_names_the_versions_device_and_folders(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LIVERPLAN_DATA_DIR", str(tmp_path / "data"))
    assert main.main(["--version"]) == 0
    out = capsys.readouterr().out
    import torch
    assert f"LiverPlan              {about.about_info(False)['version']}" in out
    assert f"PyTorch                {torch.__version__}" in out
    assert "nnU-Net                2.8.1" in out
    assert "running from the source tree" in out
    assert f"Your data folder       {tmp_path / 'data'}" in out
    # no GPU on these machines: the device line says the processor is used, in words
    assert "Compute device" in out and ("cpu: no usable NVIDIA GPU" in out or "cuda" in out or "mps" in out)
    assert "GNU LGPL version 3" in out
    assert not (tmp_path / "data").exists(), "--version must not create the data folder"


def test_frozen_build_info_is_read_from_the_bundle(tmp_path, monkeypatch):
    (tmp_path / "build_info.json").write_text(json.dumps({"version": "9.8.7", "build_date": "2026-12-06 20:00 UTC",
                                                          "commit": "abc1234"}))
    (tmp_path / "THIRD-PARTY-NOTICES.txt").write_text("torch 2.14.1 BSD-3-Clause\n")
    monkeypatch.setattr(about.sys, "frozen", True, raising=False)
    monkeypatch.setattr(about.sys, "_MEIPASS", str(tmp_path), raising=False)
    info = about.about_info(probe_device=False)
    assert info["version"] == "9.8.7"
    assert info["build"] == "built 2026-12-06 20:00 UTC, commit abc1234"
    assert info["notices"] == str(tmp_path / "THIRD-PARTY-NOTICES.txt")


def test_self_test_passes_and_prints_one_line_per_check(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVERPLAN_DATA_DIR", str(tmp_path / "data"))
    out = io.StringIO()
    assert selftest.main(out, device="cpu") == 0
    lines = out.getvalue().splitlines()
    checks = [ln for ln in lines if ln.startswith(("ok ", "FAIL"))]
    assert [ln.split()[1] for ln in checks] == ["demo", "phantom", "segment", "measure", "export", "read"]
    assert all(ln.startswith("ok ") for ln in checks), out.getvalue()
    assert lines[-1].startswith("self-test passed: 6 checks")


def test_self_test_fails_with_status_1_when_the_demo_model_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIVERPLAN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("engine.paths.resources_dir", lambda: tmp_path / "no_resources")
    assert main.main(["--self-test"]) == 1
    out = capsys.readouterr().out
    assert "FAIL demo model" in out
    assert "FAIL segment                not run: needs model" in out
    assert "self-test FAILED: demo model, segment, measure, export, read back" in out


def test_a_path_as_first_argument_opens_it_in_the_desktop_app(tmp_path, monkeypatch):
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"")
    opened = {}
    monkeypatch.setattr(main, "_run_gui", lambda path=None, labels=None: opened.setdefault("path", path) and 0)
    main.main([str(ct)])
    assert opened["path"] == str(ct)
    parser = main.build_parser()
    assert main._open_shortcut(["info", str(ct)], parser) == ["info", str(ct)]
    assert main._open_shortcut(["missing/folder"], parser) == ["gui", "missing/folder"]
    # a mistyped command stays a mistyped command (argparse names the choices), not a file to open
    assert main._open_shortcut(["segmnt"], parser) == ["segmnt"]
