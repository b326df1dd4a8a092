"""Helpers for the GUI tests (imported by name; conftest.py holds only fixtures)."""
from __future__ import annotations

from realdata import REPO

#: Screenshots the tests take are kept here for a person to look at, when the folder exists.
SCRATCH = REPO / "scratch"


def wait_idle(qtbot, win, timeout=60_000):
    """Wait until every background task of the window (measure, mesh, export...) has ended."""
    qtbot.waitUntil(lambda: not win.runner.running() and not win._refresh_timer.isActive()
                    and not win._pending_measure and not (win._pending_mesh and win.view3d is not None),
                    timeout=timeout)


def close_window(win):
    if win.history is not None:
        win.history.mark_saved()
    win.close()
