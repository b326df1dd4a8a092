"""`make run`: the application opens the built-in demo case (demo model preselected when bundled)."""
from __future__ import annotations

import pytest

from guitools import close_window, wait_idle

pytestmark = pytest.mark.timeout(300)


def test_app_opens_demo_case_with_demo_model(qtbot, qapp):
    from engine.models import bundled_demo_model
    from gui.app import make_window

    w = make_window()
    try:
        qtbot.waitUntil(lambda: w.case is not None, timeout=60000)
        assert w.case.name == "demo_phantom"
        assert "demo_phantom" in w.windowTitle()
        qtbot.waitUntil(lambda: w.models_task is not None and w.models_task.finished, timeout=120000)
        demo = bundled_demo_model()
        current = w.segment_panel.current_model()
        if demo is not None:
            assert current is not None and current.is_demo
            assert "not for clinical use" in w.segment_panel.card.toPlainText()
            assert w.segment_panel.model.currentText().count("not for clinical use") == 1     # said once
        wait_idle(qtbot, w)
        assert w.report is not None and len(w.report.lesions) >= 1
        # One-big-pane layout and back.
        w.set_layout("axial")
        assert w.views[0].isVisible() and not w.views[1].isVisible()
        w.set_layout("grid")
        assert all(v.isVisible() for v in w.views)
    finally:
        close_window(w)
