"""Helpers for the GUI tests (imported by name; conftest.py holds only fixtures)."""
from __future__ import annotations

from realdata import REPO

#: Screenshots the tests take are kept here for a person to look at, when the folder exists.
SCRATCH = REPO / "scratch"


def wait_idle(qtbot, win, timeout=60_000):
    """Wait until every background task of the window (measure, mesh, export...) has ended."""
    qtbot.waitUntil(win.is_idle, timeout=timeout)


def close_window(win):
    if win.history is not None:
        win.history.mark_saved()
    if win.session.planning is not None:
        win.session.planning.mark_saved()       # the case's plan counts as unsaved changes too
    win.close()
