"""Where the repository and ../shared/data/real are; real_path skips a test with a reason when the real
data are absent (a fresh clone without the shared folder). A module of its own (not conftest) so that
tests in every sub-folder import the same thing, whatever conftest.py is nearest."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("LIVERPLAN_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


def real_path(*parts: str) -> Path:
    """Path inside ../shared/data/real, or skip the test saying why."""
    p = REAL_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} (needs ../shared/data/real beside the repository)")
    return p
