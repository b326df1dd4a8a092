"""Fixtures shared by the CLI tests: the tiny nnU-Net model (built once per session, tests/engine/tiny_model.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from tiny_model import cached_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return cached_tiny_model(tmp_path_factory)
