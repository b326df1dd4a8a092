"""The Plan tab, driven by clicks: a scenario built in the window gives the same figures as `liverplan plan`
on the command line; the lesion table gains segment, hemiliver, nearest vessel and distance."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PySide6.QtCore import Qt

from guitools import SCRATCH, close_window, wait_idle
from realdata import REPO

pytestmark = pytest.mark.timeout(400)


def cli(*args):
    p = subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr
    return p


def _click_voxel(qtbot, view, zyx):
    scene = view.vb.mapViewToScene(view.index_to_view(zyx))
    pos = view.view.mapFromScene(scene)
    qtbot.mouseClick(view.view.viewport(), Qt.LeftButton, pos=pos)


def _tick(qtbot, checkbox):
    """A real click on a check box's box (its left end: the widget may be wider than box + text)."""
    from PySide6.QtCore import QPoint
    qtbot.mouseClick(checkbox, Qt.LeftButton, pos=QPoint(8, checkbox.height() // 2))


def test_scenario_by_clicks_equals_the_command_line(qtbot, qapp, tmp_path):
    from gui.main_window import MainWindow

    cli("phantom", "--out", tmp_path, "--seed", 0, "--lesions", 3)
    ct, labels = tmp_path / "phantom_000_ct.nii.gz", tmp_path / "phantom_000_labels.nii.gz"
    w = MainWindow()
    w.resize(1500, 950)
    w.show()
    try:
        w.open_path(str(ct), labels=str(labels))
        qtbot.waitUntil(lambda: w.case is not None and w.history.can_undo, timeout=120000)
        wait_idle(qtbot, w, timeout=120000)
        panel = w.plan_panel
        w.tabs.setCurrentWidget(panel)
        qtbot.mouseClick(panel.compute_btn, Qt.LeftButton)
        qtbot.waitUntil(lambda: panel.planner is not None and panel.figures is not None, timeout=120000)
        est = panel.planner.estimate
        assert est.segments_ok and "estimated from the vessels" in panel.status.text()
        assert panel.scenario_list.count() == 1 and panel.current_scenario().name == "Scenario 1"
        # segments V, VII, VIII ticked in the list ...
        for k in (5, 7, 8):
            _tick(qtbot, panel.segment_checks[k])
            assert panel.segment_checks[k].isChecked()
        assert panel.current_scenario().segments == [5, 7, 8]
        # ... and VI by a click in the axial pane, on a voxel of segment VI
        six = np.argwhere(panel.planner.segments_full() == 6)
        zyx = [int(v) for v in six[len(six) // 2]]
        w.set_position(zyx)
        panel.click_mode.setCurrentIndex(panel.click_mode.findData("segment"))
        _click_voxel(qtbot, w.views[0], zyx)
        assert panel.segment_checks[6].isChecked()
        # a double click on a surface in the 3D view does the same (here: untick VI, tick it again)
        xyz = tuple(w.case.geometry.index_to_physical(zyx))
        w.view3d.point_picked.emit(xyz)
        assert not panel.segment_checks[6].isChecked()
        w.view3d.point_picked.emit(xyz)
        assert panel.segment_checks[6].isChecked()
        panel.click_mode.setCurrentIndex(panel.click_mode.findData("navigate"))
        # a wedge around lesion 1 (ticked in the wedge list), the patient's height and weight
        item = panel.wedge_list.item(0)
        assert item.data(Qt.UserRole) == 1
        item.setCheckState(Qt.Checked)
        panel.height.setValue(175)
        panel.weight.setValue(80)
        panel.condition.setCurrentIndex(panel.condition.findData("chemotherapy"))
        fig = panel.figures
        assert fig["description"] == "segments V, VI, VII, VIII + wedge(s) around lesion(s) 1 with a 10 mm margin"
        assert "standardised FLR" in panel.figures_text.text()
        # the same scenario on the command line
        out = tmp_path / "plan"
        cli("plan", ct, labels, "--scenario", "Scenario 1:segments=5,6,7,8;wedges=1;margin=10", "--height", 175,
            "--weight", 80, "--condition", "chemotherapy", "--out", out, "--no-progress")
        want = json.loads((out / "planning.json").read_text())["scenarios"][0]["figures"]
        for k in ("total_liver_ml", "tumour_ml", "resected_ml", "remnant_ml", "flr_ml", "flr_pct", "sflr_pct",
                  "etlv_ml", "bsa_m2"):
            assert fig[k] == pytest.approx(want[k], rel=1e-9), k
        assert fig["lesions_left"] == want["lesions_left"]
        assert panel.compare.rowCount() == 1 and panel.compare.item(0, 0).text() == "Scenario 1"
        # a second scenario, compared side by side
        panel.new_scenario("left lateral")
        for k in (2, 3):
            _tick(qtbot, panel.segment_checks[k])
        assert panel.compare.rowCount() == 2
        assert panel.compare.item(1, 0).text() == "left lateral"
        # the lesion table gains segment, hemiliver, nearest vessel and distance
        t = w.measure_panel.lesions
        heads = [t.horizontalHeaderItem(c).text().replace("\n", " ") for c in range(t.columnCount())]
        assert heads[6:10] == ["Seg", "Hemi", "Vessel", "Dist (mm)"]
        shown = [h for c, h in enumerate(heads) if not t.isColumnHidden(c)]
        assert shown == ["Lesion", "Volume (mL)", "Longest ⌀ (mm)", "Mean HU", "Seg", "Hemi", "Vessel", "Dist (mm)"]
        loc = {l.id: l for l in panel.planner.lesions}
        for r in range(t.rowCount()):
            lid = int(t.item(r, 0).text())
            assert t.item(r, 6).text().rstrip("+") == loc[lid].main_segment
            assert t.item(r, 7).text() == {"right": "R", "left": "L", "both": "R+L"}[loc[lid].hemiliver]
            assert t.item(r, 8).toolTip() == loc[lid].nearest.branch
            assert float(t.item(r, 9).text()) == pytest.approx(loc[lid].nearest.distance_mm, abs=0.05)
        w.tabs.setCurrentWidget(w.measure_panel)
        qtbot.wait(50)
        assert t.horizontalHeader().length() <= t.viewport().width(), (t.horizontalHeader().length(),
                                                                       t.viewport().width())
        if SCRATCH.exists():
            w.grab().save(str(SCRATCH / "gui_plan_lesion_table.png"))
        from gui.panels import copy_table
        assert copy_table(t).splitlines()[0].endswith("\tDist (mm)")
        w.tabs.setCurrentWidget(panel)
        # click-to-jump still works
        t.selectRow(0)
        assert w.measure_ctl.selected_lesion == 0
        # the segment layer and the remnant/resected parts in 3D
        panel.show_segments.setChecked(True)
        assert w.views[0].layer_item.isVisible()
        panel.show3d.setChecked(True)
        qtbot.waitUntil(lambda: "remnant" in w.view3d.extras and "resected" in w.view3d.extras, timeout=60000)
        assert "vessel_lines" in w.view3d.extras or all(
            l.nearest.distance_mm > panel.line_range.value() for l in panel.planner.lesions)
        wait_idle(qtbot, w, timeout=60000)
        if SCRATCH.exists():
            w.grab().save(str(SCRATCH / "gui_plan_tab.png"))
        # export, then import into a fresh list: the same scenarios come back
        exported = panel.export(str(tmp_path / "gui_plan"))
        assert len(exported) == 4
        n_before = panel.scenario_list.count()
        assert panel.import_scenarios(str(tmp_path / "gui_plan" / "planning.json")) == n_before
        assert panel.scenario_list.count() == n_before
        # painting a region to resect adds to the resection; erasing it takes it back
        sc = panel.current_scenario()
        base = panel.figures["resected_ml"]
        panel.click_mode.setCurrentIndex(panel.click_mode.findData("paint"))
        liver_vox = np.argwhere(panel.planner.liver_full())
        zyx = [int(v) for v in liver_vox[len(liver_vox) // 3]]
        w.set_position(zyx)
        for kind in ("press", "move", "release"):
            w.on_mouse(kind, tuple(zyx), 0, Qt.NoModifier)
        assert panel.current_scenario().painted is not None and panel.figures["resected_ml"] > base
        panel.click_mode.setCurrentIndex(panel.click_mode.findData("unpaint"))
        for kind in ("press", "release"):
            w.on_mouse(kind, tuple(zyx), 0, Qt.NoModifier)
        assert panel.figures["resected_ml"] == pytest.approx(base)
        # the segment map corrected by hand with a drag in a pane
        panel.click_mode.setCurrentIndex(panel.click_mode.findData("correct"))
        panel.correct_segment.setCurrentIndex(panel.correct_segment.findData(1))
        for kind in ("press", "move", "release"):
            w.on_mouse(kind, tuple(zyx), 0, Qt.NoModifier)
        assert panel.planner.segment_at(zyx) == 1
        assert "corrected by hand" in panel.status.text()
        panel.click_mode.setCurrentIndex(panel.click_mode.findData("navigate"))
        # an edit: delete the smallest lesion; the planning follows (only the lesions are redone)
        before = dict(panel.planner.recomputed)
        small = panel.planner.lesions[-1]
        z, y, x = (int(round(v)) for v in small.centroid_zyx)
        flat = [f for lid, f, _ in __import__("engine.planning.location", fromlist=["x"]).lesion_components(
            w.case.labels) if lid == small.id][0]
        zyx = tuple(int(v) for v in np.unravel_index(flat[0], w.case.labels.shape))
        from engine import edits
        w.apply_edit("Delete component", edits.delete_component, zyx)
        qtbot.waitUntil(lambda: len(panel.planner.lesions) == len(loc) - 1, timeout=60000)
        wait_idle(qtbot, w, timeout=60000)
        assert panel.planner.recomputed["segments"] == before["segments"]
        assert panel.planner.recomputed["vessel_index"] == before["vessel_index"]
    finally:
        close_window(w)
