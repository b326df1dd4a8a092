"""One LiverPlan version for every file that names it: evaluation.json / the metric report and the DICOM SEG
read engine.about's, which the frozen bundle answers from build_info.json (it has no 'liverplan' metadata)."""
from __future__ import annotations

import importlib.metadata as md
import json
import re
import sys
from pathlib import Path

from engine import about, evaluation

ROOT = Path(__file__).resolve().parents[2]


def _no_liverplan_metadata(monkeypatch) -> None:
    real = md.version

    def version(name: str) -> str:
        if name == "liverplan":
            raise md.PackageNotFoundError(name)
        return real(name)
    monkeypatch.setattr(md, "version", version)


def test_evaluation_names_the_bundles_version(monkeypatch, tmp_path):
    """In the installed app the evaluation manifest says which LiverPlan made it, not 'not installed'."""
    (tmp_path / "build_info.json").write_text(json.dumps({"version": "7.3.1", "build_date": "", "commit": ""}))
    _no_liverplan_metadata(monkeypatch)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert evaluation.liverplan_version() == "7.3.1"
    assert evaluation.liverplan_version() == about.liverplan_version()


def test_evaluation_from_source_names_pyproject_version(monkeypatch):
    _no_liverplan_metadata(monkeypatch)
    want = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert evaluation.liverplan_version() == want
