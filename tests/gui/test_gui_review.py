"""Defects found walking a surgeon's workflow through the real window (gui_review): each test fails
without its fix."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from guitools import SCRATCH, close_window, wait_idle

pytestmark = pytest.mark.timeout(400)


def test_plan_without_segments_says_what_to_do(qtbot, qapp, small_case):
    """With the hepatic veins erased the segments cannot be estimated and the segment boxes are greyed out:
    the tab says how to get segments and what works without them, instead of leaving the surgeon stuck."""
    from engine.labels import Label
    from gui.main_window import MainWindow

    case = small_case.copy()
    case.labels[case.labels == Label.HEPATIC_VEINS] = Label.PARENCHYMA
    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    try:
        w.set_case(case)
        wait_idle(qtbot, w)
        panel = w.plan_panel
        w.tabs.setCurrentWidget(panel)
        qtbot.mouseClick(panel.compute_btn, Qt.LeftButton)
        qtbot.waitUntil(lambda: panel.planner is not None, timeout=120000)
        wait_idle(qtbot, w)
        assert not panel.planner.estimate.segments_ok
        assert not any(cb.isEnabled() for cb in panel.segment_checks.values())
        shown = panel.status.text()
        assert "Load segment map" in shown and "Wedges around lesions" in shown, shown
        if SCRATCH.is_dir():
            w.grab().save(str(SCRATCH / "gui_review_plan_no_segments.png"))
    finally:
        close_window(w)


def test_measure_notes_one_a_line(qtbot, qapp, small_case):
    """The notes under the lesion table (about the scan, the labels, the lesion definition) each start a
    line: run together, IRCADb's four label notes read as one block of text."""
    from gui.main_window import MainWindow

    case = small_case.copy()
    case.provenance.warnings = ["The series covers only part of the liver.", "Values are not CT-like."]
    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    try:
        w.set_case(case)
        wait_idle(qtbot, w)
        qtbot.waitUntil(lambda: "Lesions are" in w.measure_panel.note.text(), timeout=60000)
        lines = w.measure_panel.note.text().split("\n")
        assert lines[:2] == ["About this scan: The series covers only part of the liver.",
                             "About this scan: Values are not CT-like."], lines
        assert lines[-1].startswith("Lesions are 26-connected components"), lines
        if SCRATCH.is_dir():
            w.tabs.setCurrentWidget(w.measure_panel)
            w.grab().save(str(SCRATCH / "gui_review_measure_notes.png"))
    finally:
        close_window(w)


def test_3d_remnant_follows_quick_ticks(qtbot, qapp, small_case):
    """Ticking V, VI, VII, VIII in quick succession with the 3D remnant shown: the 3D pane ends on the
    four-segment scenario (the ticks made while the first surface was being built were dropped, and the 3D
    kept showing segment V alone resected)."""
    from engine.planning import display
    from gui.main_window import MainWindow

    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    try:
        w.set_case(small_case.copy())
        wait_idle(qtbot, w)
        panel = w.plan_panel
        w.tabs.setCurrentWidget(panel)
        qtbot.mouseClick(panel.compute_btn, Qt.LeftButton)
        qtbot.waitUntil(lambda: panel.planner is not None, timeout=120000)
        wait_idle(qtbot, w)
        assert panel.planner.estimate.segments_ok
        panel.show3d.setChecked(True)
        wait_idle(qtbot, w)
        for k in (5, 6, 7, 8):
            panel.segment_checks[k].click()
        qtbot.waitUntil(lambda: not w.runner.running("plan3d"), timeout=60000)
        wait_idle(qtbot, w)
        sc = panel.current_scenario()
        assert sc.segments == [5, 6, 7, 8]
        want = display.scenario_surfaces(panel.planner.masks(sc), w.case.geometry)["resected"]
        shown = w.view3d.extras["resected"].mapper.dataset
        assert shown.n_points == want.n_points and abs(shown.volume - want.volume) < 1e-6 * want.volume
        if SCRATCH.is_dir():
            w.grab().save(str(SCRATCH / "gui_review_plan_3d_ticks.png"))
    finally:
        close_window(w)


def test_typing_a_height_raises_nothing(qtbot, qapp, small_case):
    """Typing 178 into Height passes through 1 and 17 cm: the tab says the value is out of range, keeps the
    figures without the standardised FLR and the comparison table, and no exception escapes into Qt's
    event loop (it did, from the comparison table, at every keystroke)."""
    from gui.main_window import MainWindow

    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    try:
        w.set_case(small_case.copy())
        wait_idle(qtbot, w)
        panel = w.plan_panel
        w.tabs.setCurrentWidget(panel)
        qtbot.mouseClick(panel.compute_btn, Qt.LeftButton)
        qtbot.waitUntil(lambda: panel.planner is not None, timeout=120000)
        wait_idle(qtbot, w)
        panel.weight.setValue(82)
        panel.height.setFocus()
        panel.height.selectAll()
        qtbot.keyClick(panel.height, "1")
        qtbot.keyClick(panel.height, "7")
        wait_idle(qtbot, w)
        shown = panel.figures_text.text()
        assert "A height of 17 cm is outside 50-250 cm" in shown, shown
        assert "FLR" in shown and "standardised FLR" not in shown, shown     # the figures stay, without sFLR
        assert panel.compare.rowCount() == 1
        qtbot.keyClick(panel.height, "8")
        wait_idle(qtbot, w)
        assert panel.height.value() == 178
        shown = panel.figures_text.text()
        assert "standardised FLR" in shown and "outside" not in shown, shown
        if SCRATCH.is_dir():
            w.grab().save(str(SCRATCH / "gui_review_plan_height.png"))
    finally:
        close_window(w)


def test_deleting_the_last_scenario_clears_its_figures(qtbot, qapp, small_case):
    """Delete the only scenario: its figures left the screen (they stayed, as if it still existed, and ticks
    changed nothing) and the tab says how to make one."""
    from gui.main_window import MainWindow

    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    try:
        w.set_case(small_case.copy())
        wait_idle(qtbot, w)
        panel = w.plan_panel
        w.tabs.setCurrentWidget(panel)
        qtbot.mouseClick(panel.compute_btn, Qt.LeftButton)
        qtbot.waitUntil(lambda: panel.planner is not None, timeout=120000)
        wait_idle(qtbot, w)
        panel.segment_checks[2].click()
        assert "Scenario 1: segments II" in panel.figures_text.text()
        qtbot.mouseClick(panel.delete_btn, Qt.LeftButton)
        wait_idle(qtbot, w)
        assert panel.scenario_list.count() == 0 and panel.current_scenario() is None
        assert panel.figures is None and panel.compare.rowCount() == 0
        assert "Scenario 1" not in panel.figures_text.text()
        assert "No resection scenario: press New" in panel.figures_text.text()
        panel.segment_checks[3].click()                        # a tick with no scenario: still said
        assert "No resection scenario" in panel.figures_text.text()
        qtbot.mouseClick(panel.new_btn, Qt.LeftButton)
        panel.segment_checks[5].click()
        wait_idle(qtbot, w)
        assert panel.figures is not None and "segments V" in panel.figures_text.text()
    finally:
        close_window(w)
