"""The Plan tab mirrors the case's plan (CaseSession.planning): a tick, a segment-map correction and a label
edit are taken back in order by Ctrl+Z (the Edit menu names each), the tab shows the plan after every
undo and redo, and the title says the plan is unsaved."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from guitools import SCRATCH, close_window, wait_idle

pytestmark = pytest.mark.timeout(400)


def test_ctrl_z_takes_back_plan_steps_and_label_edits_in_order(qtbot, qapp, small_case):
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
        qtbot.waitUntil(lambda: panel.planner is not None and panel.figures is not None, timeout=120000)
        wait_idle(qtbot, w)
        # computing the planning (with its empty first scenario) is no change to save
        assert w.session.planning.scenario("Scenario 1") is not None
        assert not w.session.is_modified and not w.windowTitle().endswith("*")
        panel.segment_checks[2].click()
        panel.segment_checks[3].click()
        assert w.session.planning.scenario("Scenario 1").segments == [2, 3]
        assert w.windowTitle().endswith("*")                     # the plan is an unsaved change
        assert w.undo_action.text() == "Undo Change scenario 'Scenario 1'"
        # the segment map corrected by a drag in a pane (one step)
        liver = np.argwhere(panel.planner.liver_full())
        zyx = tuple(int(v) for v in liver[len(liver) // 2])
        was = panel.planner.segment_at(zyx)
        target = 8 if was != 8 else 1
        panel.click_mode.setCurrentIndex(panel.click_mode.findData("correct"))
        panel.correct_segment.setCurrentIndex(panel.correct_segment.findData(target))
        for kind in ("press", "move", "release"):
            w.on_mouse(kind, zyx, 0, Qt.NoModifier)
        panel.click_mode.setCurrentIndex(panel.click_mode.findData("navigate"))
        assert panel.planner.segment_at(zyx) == target and "corrected by hand" in panel.status.text()
        # a label edit after it (Correct tab's brush path)
        s = w.session
        s.begin_stroke()
        s.dab((2, 5, 5), 0, 2.0, 5)
        s.end_stroke("brush", "Brush stroke (CRLM lesions)")
        assert w.undo_action.text() == "Undo Brush stroke (CRLM lesions)"
        w.undo_action.trigger()                                   # the brush stroke
        assert w.case.labels[2, 5, 5] == small_case.labels[2, 5, 5]
        assert panel.planner.segment_at(zyx) == target            # the plan stays
        assert w.undo_action.text().startswith("Undo Correct the segment map")
        w.undo_action.trigger()                                   # the correction
        wait_idle(qtbot, w)
        assert panel.planner.segment_at(zyx) == was
        assert "corrected by hand" not in panel.status.text()
        assert panel.segment_checks[3].isChecked()
        w.undo_action.trigger()                                   # the tick of III
        assert not panel.segment_checks[3].isChecked() and panel.segment_checks[2].isChecked()
        assert "segments II" in panel.figures_text.text() and "III" not in panel.figures["description"]
        w.redo_action.trigger()
        w.redo_action.trigger()
        wait_idle(qtbot, w)
        assert panel.segment_checks[3].isChecked() and panel.planner.segment_at(zyx) == target
        # rename and delete are steps too
        panel.rename_scenario("Left lateral")
        assert panel.scenario_list.item(0).text() == "Left lateral"
        w.undo_action.trigger()
        assert panel.scenario_list.item(0).text() == "Scenario 1" and panel.current_scenario().segments == [2, 3]
        if SCRATCH.is_dir():
            w.grab().save(str(SCRATCH / "gui_plan_state_undo.png"))
    finally:
        close_window(w)


def test_patient_typed_before_compute_is_kept_with_the_case(qtbot, qapp, small_case):
    from gui.main_window import MainWindow

    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    try:
        w.set_case(small_case.copy())
        wait_idle(qtbot, w)
        panel = w.plan_panel
        panel.height.setValue(175)
        panel.weight.setValue(80)
        assert w.session.planning.patient.height_cm == 175 and w.session.planning.patient.weight_kg == 80
        w.undo_action.trigger()
        assert panel.weight.value() == 0 and panel.height.value() == 175     # the weight step went
    finally:
        close_window(w)


def test_correct_tab_tools_paint_the_segment_map(qtbot, qapp, small_case):
    """Paint on: Segment map — the Correct tab's brush and fill set a segment (liver voxels only), each an
    undo step; the Plan tab's figures follow."""
    from gui.main_window import MainWindow

    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    try:
        w.set_case(small_case.copy())
        wait_idle(qtbot, w)
        panel, tools = w.plan_panel, w.tools
        w.tabs.setCurrentWidget(tools)
        tools.set_tool("brush")
        tools.paint_on.setCurrentIndex(tools.paint_on.findData("segments"))
        assert tools.structure.itemText(0) == "Segment I" and tools.structure.count() == 8
        liver = np.argwhere(small_case.labels == 1)
        zyx = tuple(int(v) for v in liver[len(liver) // 2])
        w.on_mouse("press", zyx, 0, Qt.NoModifier)              # no planning yet: said, nothing painted
        w.on_mouse("release", zyx, 0, Qt.NoModifier)
        assert "Press Compute planning" in w.status_text.text()
        assert w.session.planning.segment_map is None
        w.tabs.setCurrentWidget(panel)
        qtbot.mouseClick(panel.compute_btn, Qt.LeftButton)
        qtbot.waitUntil(lambda: panel.planner is not None and panel.figures is not None, timeout=120000)
        wait_idle(qtbot, w)
        panel.segment_checks[8].click()
        resected = panel.figures["resected_ml"]
        w.tabs.setCurrentWidget(tools)
        was = panel.planner.segment_at(zyx)
        target = 8 if was != 8 else 2
        tools.set_active_label(target)
        labels_before = w.case.labels.copy()
        for kind in ("press", "move", "release"):
            w.on_mouse(kind, zyx, 0, Qt.NoModifier)
        wait_idle(qtbot, w)
        assert np.array_equal(w.case.labels, labels_before)      # the labels are not painted
        assert panel.planner.segment_at(zyx) == target
        assert panel.show_segments.isChecked() and w.views[0].layer_item.isVisible()
        assert w.undo_action.text().startswith("Undo Brush stroke on the segment map")
        assert panel.figures["resected_ml"] != resected           # segment VIII grew or shrank
        if SCRATCH.is_dir():
            w.grab().save(str(SCRATCH / "gui_plan_correct_segment_map.png"))
        w.undo_action.trigger()
        wait_idle(qtbot, w)
        assert panel.planner.segment_at(zyx) == was and panel.figures["resected_ml"] == pytest.approx(resected)
        # fill in the slice: the connected area of that segment takes the new one
        tools.set_tool("fill")
        w.on_mouse("click", zyx, 0, Qt.NoModifier)
        wait_idle(qtbot, w)
        assert panel.planner.segment_at(zyx) == target
        assert w.undo_action.text().startswith("Undo Fill in slice")
        tools.paint_on.setCurrentIndex(tools.paint_on.findData("labels"))
        assert tools.structure.itemText(0) != "Segment I"
    finally:
        close_window(w)


def test_load_segment_map_of_foreign_values_through_a_mapping(qtbot, qapp, small_case, tmp_path):
    from engine.io import write_label_map
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
        qtbot.waitUntil(lambda: panel.planner is not None and panel.figures is not None, timeout=120000)
        wait_idle(qtbot, w)
        estimate = panel.planner.segments_full()
        # a model's map with its own values: segment k is 20 + k, II and III swapped
        foreign = np.where(estimate > 0, estimate + 20, 0).astype(np.uint8)
        path = tmp_path / "couinaud_model.nii.gz"
        write_label_map(path, w.case, labels=foreign, overwrite=True)
        panel.load_segment_map(str(path))                  # no mapping (no dialogs in tests): said
        assert "segment mapping" in panel.status.text() and w.session.planning.segment_map is None
        mapping = {str(k): [20 + k] for k in range(1, 9)}
        mapping["2"], mapping["3"] = [23], [22]
        panel.load_segment_map(str(path), mapping)
        wait_idle(qtbot, w)
        got = panel.planner.segments_full()
        assert "from the file couinaud_model.nii.gz" in panel.status.text()
        assert np.array_equal(got == 2, estimate == 3) and np.array_equal(got == 5, estimate == 5)
        w.undo_action.trigger()                            # back to the estimate from the vessels
        wait_idle(qtbot, w)
        assert np.array_equal(panel.planner.segments_full(), estimate)
    finally:
        close_window(w)
