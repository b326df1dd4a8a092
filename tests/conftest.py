"""Shared fixtures. Real data lives in ../shared/data/real; tests that need it skip with a reason where
it is absent (a fresh clone without the shared folder)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep numeric libraries from fighting over the two CI cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("nnUNet_def_n_proc", "1")

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("LIVERPLAN_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


def real_path(*parts: str) -> Path:
    """Path inside ../shared/data/real, or skip the test saying why."""
    p = REAL_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} (needs ../shared/data/real beside the repository)")
    return p


@pytest.fixture
def real():
    return real_path
