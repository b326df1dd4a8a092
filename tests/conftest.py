"""Shared fixtures. Real data lives in ../shared/data/real (see realdata.py)."""
from __future__ import annotations

import os

import pytest

# Keep numeric libraries from fighting over the two CI cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("nnUNet_def_n_proc", "1")

from realdata import real_path  # noqa: E402


@pytest.fixture
def real():
    return real_path
