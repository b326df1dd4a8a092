"""Fixtures for driving the real LiverPlan window under Xvfb (pytest-xvfb, --xvfb-backend xvfb).

One window is shared per test module (the 3D pane costs about a second to create); tests reset what
they change. The user's data folder points into a temporary folder so autosaves/recent lists of a test
never touch the real home.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

@pytest.fixture(scope="session", autouse=True)
def _gui_env(tmp_path_factory):
    data = tmp_path_factory.mktemp("liverplan_data")
    old = {k: os.environ.get(k) for k in ("LIVERPLAN_DATA_DIR", "LIVERPLAN_NO_DIALOGS", "LIVERPLAN_AUTOSAVE_MS")}
    os.environ["LIVERPLAN_DATA_DIR"] = str(data)
    os.environ["LIVERPLAN_NO_DIALOGS"] = "1"
    os.environ["LIVERPLAN_AUTOSAVE_MS"] = "3600000"  # tests call autosave() themselves
    yield data
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def small_case():
    from engine.phantom import make_phantom
    return make_phantom(seed=3, shape=(40, 72, 72), n_lesions=3)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny nnU-Net model folder (the inference area's test factory), loaded as a ModelInfo."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from tiny_model import build_tiny_model

    from engine.models import load_model
    folder = build_tiny_model(tmp_path_factory.mktemp("tiny_model"))
    return load_model(folder)

