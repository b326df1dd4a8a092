"""Short soak of one window session (issue 13): 5 cases opened, edited, undone, redone and replaced.

Driven only through the window's public methods and actions (set_case, apply_edit, the Undo/Redo actions,
runner, view3d), as benchmarks/soak.py does for 30 cases of 512x512x300. Asserted: memory, threads and VTK
actors do not grow from case to case once the first case has loaded what a session loads once (torch for the
model list, the 3D pane's renderer).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from soak import window_soak  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def test_five_cases_in_one_window_session_leak_no_memory_threads_or_actors(qapp):
    r = window_soak(n_cases=5, shape=(32, 64, 64), strokes_per_case=4, log=lambda s: None)
    rows = r["per_case"]
    assert len(rows) == 5
    after_first = rows[1:]
    assert max(x["rss_mb"] for x in after_first) - after_first[0]["rss_mb"] < 80, rows
    assert max(x["threads"] for x in after_first) - min(x["threads"] for x in after_first) <= 2, rows
    # one surface per structure present (phantoms differ: 5 or 6 actors) plus the pane's own few; a leak would
    # add a case's worth of actors each time
    assert all(0 < x["vtk_actors"] <= 5 + 3 for x in rows), rows
