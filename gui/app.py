"""Start the desktop application.

``run_app()`` with no path opens the built-in demo case with the bundled demo model preselected (when
installed). The window is shown first; the case loads in the background, so the window appears fast
(torch is imported only when a segmentation runs).
"""
from __future__ import annotations

import logging
import sys
from typing import Optional

log = logging.getLogger(__name__)


def create_application():
    """The QApplication (reused when one exists, e.g. under pytest-qt)."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName("LiverPlan")
        app.setOrganizationName("LiverPlan")
    return app


def make_window(path: Optional[str] = None, labels: Optional[str] = None, show: bool = True):
    """Create the main window and start opening ``path`` (or the demo case)."""
    from PySide6.QtCore import QTimer

    from .main_window import MainWindow

    win = MainWindow(defer_3d=True)
    if show:
        win.show()
    if path:
        QTimer.singleShot(0, lambda: win.open_path(path, labels=labels))
    else:
        QTimer.singleShot(0, win.open_demo)
    return win


def run_app(path: Optional[str] = None, labels: Optional[str] = None) -> int:
    """Run the application until its window closes; returns the exit status."""
    app = create_application()
    win = make_window(path, labels)
    _install_error_hook(win)
    code = app.exec()
    del win
    return int(code)


def _install_error_hook(win) -> None:
    """An unexpected error in a slot is logged and shown as a message instead of vanishing on stderr;
    the user's edits stay in memory and in the autosave."""
    import traceback

    def hook(exc_type, exc, tb):
        log.error("unexpected error:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)))
        try:
            from PySide6.QtWidgets import QMessageBox
            win.autosave()
            QMessageBox.warning(win, "Unexpected error",
                                f"LiverPlan met an unexpected error ({exc_type.__name__}: {exc}). Your work is "
                                "kept; save it, and please report this error.")
        except Exception:  # noqa: BLE001 - never raise from the error hook itself
            pass

    sys.excepthook = hook


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_app(*(sys.argv[1:2] or [None])))
