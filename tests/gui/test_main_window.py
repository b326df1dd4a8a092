"""The real LiverPlan window, driven as a user would: open a case, look, click, paint, undo, measure,
export. Uses a small phantom for speed; the 3D pane renders under Xvfb."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from guitools import SCRATCH, close_window, wait_idle

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def win(qapp, small_case):
    from gui.main_window import MainWindow

    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    w.set_case(small_case.copy())
    yield w
    close_window(w)


def _ready(qtbot, win):
    wait_idle(qtbot, win)
    assert win.report is not None


def _click_voxel(qtbot, view, zyx):
    """A real left click on the pane at the centre of voxel ``zyx`` (in that pane's slice)."""
    scene = view.vb.mapViewToScene(view.index_to_view(zyx))
    pos = view.view.mapFromScene(scene)
    qtbot.mouseClick(view.view.viewport(), Qt.LeftButton, pos=pos)


def test_window_shows_three_linked_panes_with_orientation(qtbot, win):
    _ready(qtbot, win)
    ax, co, sa = win.views
    assert [l.text() for l in ax.letters] == ["R", "L", "A", "P"]
    assert [l.text() for l in co.letters] == ["R", "L", "S", "I"]
    assert [l.text() for l in sa.letters] == ["A", "P", "S", "I"]
    z = win.pos[0]
    target = (z, 20, 30)
    qtbot.waitExposed(ax)
    _click_voxel(qtbot, ax, target)
    qtbot.waitUntil(lambda: tuple(win.pos) == target, timeout=3000)
    # The other panes followed: the coronal pane shows row y=20, the sagittal pane column x=30.
    assert co.pos_zyx[1] == 20 and sa.pos_zyx[2] == 30
    assert "Coronal  21/" in co.caption.text() and "Sagittal  31/" in sa.caption.text()
    # Scrolling one pane moves through its slices.
    ax.step_slice(+1)
    assert win.pos[0] == z + 1 and co.pos_zyx[0] == z + 1
    # True aspect: the coronal image is as tall in mm as the volume (z slices x z spacing).
    rect = co.ct_item.mapRectToParent(co.ct_item.boundingRect())
    sz = win.case.geometry.spacing[0]
    assert rect.height() == pytest.approx(win.case.image.shape[0] * sz, rel=1e-3)


def test_measurements_and_lesion_table_match_the_engine(qtbot, win):
    _ready(qtbot, win)
    from engine.measure import measure
    rep = measure(win.case)
    assert win.measure_panel.lesions.rowCount() == len(rep.lesions) > 0
    vol_item = win.structures.table.item(0, 4).text()
    assert float(vol_item) == pytest.approx(rep.value("liver.volume_ml"), abs=0.05)
    from PySide6.QtGui import QGuiApplication

    from gui.panels import copy_table
    text = copy_table(win.measure_panel.lesions)
    assert QGuiApplication.clipboard().text() == text
    assert text.splitlines()[0].startswith("Lesion\tVolume (mL)") and len(text.splitlines()) == len(rep.lesions) + 1
    # (then the review's Status column: a phantom's own truth is the reference, gui.review_overlays)
    assert "\tMean HU" in text.splitlines()[0]
    # every lesion column fits in the dock (the last one, Mean HU, was cut off)
    win.tabs.setCurrentWidget(win.measure_panel)
    qtbot.wait(50)
    table = win.measure_panel.lesions
    assert table.horizontalHeader().length() <= table.viewport().width(), \
        (table.horizontalHeader().length(), table.viewport().width())
    win.tabs.setCurrentIndex(0)


def test_structure_totals_read_like_the_measure_tab_and_show_no_nan(qtbot, win):
    _ready(qtbot, win)
    burden = win.report.get("crlm.tumour_burden_pct").value
    assert f"Tumour burden: {burden:.2f} %" in win.structures.total.text()
    old = win.case
    empty = old.copy()
    empty.labels[:] = 0                                   # a CT without labels: no liver, no burden
    win.set_case(empty)
    _ready(qtbot, win)
    text = win.structures.total.text()
    assert "Tumour burden: — %" in text and "nan" not in text.lower(), text
    # a limit of the scan itself stays beside the measurements (the status bar moves on)
    slab = old.copy()
    slab.provenance.warnings.append("The series covers only 40 mm, so this is only a thin slab.")
    win.set_case(slab)
    _ready(qtbot, win)
    assert "About this scan: The series covers only 40 mm" in win.measure_panel.note.text()
    win.set_case(old)
    _ready(qtbot, win)


def test_click_on_lesion_centres_all_panes(qtbot, win):
    _ready(qtbot, win)
    les = win.report.lesions[-1]
    win.measure_panel.lesions.selectRow(len(win.report.lesions) - 1)
    want = [int(round(v)) for v in les.centroid_zyx]
    assert win.pos == want
    assert all(v.pos_zyx == want for v in win.views)
    assert all(v.highlight.isVisible() for v in win.views)
    assert win.view3d._marker is not None


def test_3d_pane_shows_surfaces(qtbot, win):
    _ready(qtbot, win)
    qtbot.waitUntil(lambda: len(win.view3d.meshes) >= 4, timeout=30000)
    img = win.view3d.screenshot()
    assert img.ndim == 3 and img.std() > 10, "3D pane is blank"
    # the orientation marker's letters (L, P, S) are drawn white on the black background: near-white
    # pixels in the pane's lower-left corner (the axes themselves are coloured)
    h, w = img.shape[:2]
    corner = img[-h // 4:, : w // 5, :3]
    assert (corner.min(axis=2) > 180).sum() > 5, "orientation letters not visible"
    # Structure colours are on screen: the liver's brown (177, 122, 101) has more red than blue.
    fg = img.reshape(-1, 3)[img.reshape(-1, 3).sum(axis=1) > 60]
    assert len(fg) > 0.02 * img.shape[0] * img.shape[1]
    # The liver shown is the block-wise display surface (pooled on sub-millimetre grids: fewer
    # triangles): closed (no holes at block seams) and on the exported surface within a voxel.
    from engine.mesh import display_pool, update_label_surface
    shown = win.view3d.meshes[1]
    export = update_label_surface(win.case.labels, win.case.geometry, 1)
    if display_pool(win.case.geometry, 1) == (1, 1, 1):
        assert shown.n_cells == export.n_cells
    else:
        assert shown.n_cells < 0.6 * export.n_cells
    assert shown.clean(tolerance=0.02, absolute=True).n_open_edges == 0
    d = np.abs(shown.compute_implicit_distance(export).point_data["implicit_distance"])
    assert np.percentile(d, 99) < 0.8
    if SCRATCH.is_dir():  # keep the pictures for a person to look at (the project's scratch folder)
        win.grab().save(str(SCRATCH / "gui_window_test.png"))
        win.export_screenshot("3d", SCRATCH / "gui_3d_test.png")


def test_paint_undo_redo_one_gesture_one_step(qtbot, win):
    _ready(qtbot, win)
    lab = win.case.labels
    before = lab.copy()
    win.tools.set_tool("brush")
    win.tools.set_active_label(4)
    win.tools.size.setValue(3.0)
    z = win.pos[0]
    for kind, x in (("press", 10), ("move", 20), ("move", 40), ("release", 40)):
        win.on_mouse(kind, (z, 12, x), 0, Qt.NoModifier)
    painted = lab.copy()
    assert np.count_nonzero(painted != before) > 20
    # The IVC volume in the structures panel follows at once (before the background report arrives).
    ivc_ml = np.count_nonzero(painted == 4) * win.case.geometry.voxel_volume_ml
    assert float(win.structures.table.item(3, 4).text()) == pytest.approx(ivc_ml, abs=0.06)
    assert np.all(painted[z, 12, 10:41] == 4), "a fast drag must leave no gap"
    assert win.history.undo_description == "Brush stroke (Inferior vena cava)"
    assert win.undo_action.text() == "Undo Brush stroke (Inferior vena cava)"
    assert "*" in win.windowTitle()
    win.undo()
    np.testing.assert_array_equal(lab, before)
    assert win.redo_action.text().startswith("Redo Brush stroke")
    win.redo()
    np.testing.assert_array_equal(lab, painted)
    wait_idle(qtbot, win)
    # The measurements followed the edit.
    assert win.report.value("ivc.voxels") == int(np.count_nonzero(painted == 4))
    win.undo()
    win.tools.set_tool("navigate")
    wait_idle(qtbot, win)


def test_delete_false_lesion_by_click_and_undo(qtbot, win):
    _ready(qtbot, win)
    n = len(win.report.lesions)
    les = win.report.lesions[0]
    # A voxel of that lesion.
    zz, yy, xx = np.nonzero(win.case.labels == 5)
    d = (zz - les.centroid_zyx[0]) ** 2 + (yy - les.centroid_zyx[1]) ** 2 + (xx - les.centroid_zyx[2]) ** 2
    k = int(np.argmin(d))
    seed = (int(zz[k]), int(yy[k]), int(xx[k]))
    lesion_cells = win.view3d.meshes[5].n_cells
    n5 = np.count_nonzero(win.case.labels == 5)
    steps = win.history.undo_count
    win.tools.set_tool("delete")
    win.on_mouse("click", seed, 0, Qt.NoModifier)
    assert win.case.labels[seed] != 5
    # The whole lesion went (found from the clicked voxel) and it is one undo step.
    removed = n5 - np.count_nonzero(win.case.labels == 5)
    assert removed == round(les.volume_ml / win.case.geometry.voxel_volume_ml)
    assert win.history.undo_count == steps + 1
    assert win.history.undo_description.startswith("Delete component")
    wait_idle(qtbot, win)
    assert len(win.report.lesions) == n - 1
    assert win.measure_panel.lesions.rowCount() == n - 1
    assert win.view3d.meshes[5].n_cells < lesion_cells      # the 3D pane followed
    win.undo()
    wait_idle(qtbot, win)
    assert len(win.report.lesions) == n
    win.tools.set_tool("navigate")


def test_fill_keep_largest_fill_holes_are_undoable(qtbot, win):
    _ready(qtbot, win)
    before = win.case.labels.copy()
    win.tools.set_active_label(1)
    win.keep_largest_component()
    win.fill_holes()
    while win.history.can_undo:
        win.undo()
    np.testing.assert_array_equal(win.case.labels, before)
    assert not win.history.is_modified
    wait_idle(qtbot, win)


def test_evaluate_against_reference_and_export_csv(qtbot, win, tmp_path):
    _ready(qtbot, win)
    assert win.session.reference is not None  # a phantom brings its own ground truth
    win.run_evaluation()
    qtbot.waitUntil(lambda: win.session.evaluation is not None, timeout=120000)
    t = win.evaluate_panel.table
    headers = [t.horizontalHeaderItem(c).text() for c in range(t.columnCount())]
    assert "Liver parenchyma" in headers
    dice_row = next(r for r in range(t.rowCount()) if t.item(r, 0).text() == "Dice")
    assert float(t.item(dice_row, headers.index("Liver parenchyma")).text()) == pytest.approx(1.0)
    # The study's suite by default: one HD95 (no pooled / seg-metrics / surface variants, no ASSD) ...
    names = [t.item(r, 0).text() for r in range(t.rowCount())]
    assert "HD95 (mm)" in names and "clDice" in names and "Lesion recall" in names
    assert not [n for n in names if n.startswith(("HD95 ", "ASSD", "HD (")) and n != "HD95 (mm)"], names
    # ... every metric on request, and back.
    win.evaluate_panel.all_metrics.setChecked(True)
    names_all = [t.item(r, 0).text() for r in range(t.rowCount())]
    assert {"HD95 pooled (mm)", "HD95 surface (mm)", "ASSD (mm)"} <= set(names_all)
    assert set(names) < set(names_all)
    win.evaluate_panel.all_metrics.setChecked(False)
    assert t.rowCount() == len(names)
    out = tmp_path / "eval.csv"
    win.export_evaluation(out)
    qtbot.waitUntil(out.exists, timeout=10000)
    text = out.read_text()
    assert text.startswith("metric,") and "HD95 pooled (mm)" in text     # the CSV keeps every metric
    status_row = next(r for r in range(t.rowCount()) if t.item(r, 0).text() == "Status")
    assert {t.item(status_row, c).text() for c in range(1, t.columnCount())} == {"ok"}   # words, not keys
    # an edit after the evaluation: the table no longer describes the labels shown, and says so; the
    # status bar's voxel readout follows the edit at the crosshair
    win.set_position([20, 36, 36])
    win.apply_edit("Brush test", __import__("engine.edits", fromlist=["brush"]).brush, (20, 36, 36), 3.0,
                   win.case.geometry.spacing, 5)
    assert "labels have changed since this evaluation" in win.evaluate_panel.status.text()
    assert win.cursor_text.text().endswith("CRLM lesions"), win.cursor_text.text()
    win.undo()
    wait_idle(qtbot, win)


def test_export_masks_measurements_meshes_and_reread(qtbot, win, tmp_path):
    _ready(qtbot, win)
    from engine.io import read_label_map
    for name in ("labels.nii.gz", "labels.seg.nrrd"):
        p = tmp_path / name
        win.save_labels(path=p, mark=False)
        qtbot.waitUntil(p.exists, timeout=20000)
        wait_idle(qtbot, win)
        back = read_label_map(p, win.case)
        np.testing.assert_array_equal(back, win.case.labels)
    csv = tmp_path / "m.csv"
    win.export_measurements(csv)
    qtbot.waitUntil(csv.exists, timeout=10000)
    assert "Total liver volume" in csv.read_text()
    js = tmp_path / "m.json"
    win.export_measurements(js)
    qtbot.waitUntil(js.exists, timeout=10000)
    shot = win.export_screenshot("axial", tmp_path / "axial.png")
    assert shot.stat().st_size > 1000
    win.export_meshes(tmp_path / "case.stl")
    wait_idle(qtbot, win)
    assert list(tmp_path.glob("*.stl")), win.last_error


def test_unsaved_edits_ask_before_closing_and_autosave_restores(qtbot, qapp, small_case, monkeypatch):
    from gui.main_window import MainWindow

    w = MainWindow(with_3d=False)
    w.show()
    w.set_case(small_case.copy())
    wait_idle(qtbot, w)
    w.tools.set_active_label(2)
    w.apply_edit("Brush test", __import__("engine.edits", fromlist=["brush"]).brush, (20, 36, 36), 6.0,
                 w.case.geometry.spacing, 2)
    edited = w.case.labels.copy()
    assert w.history.is_modified
    task = w.autosave()
    qtbot.waitUntil(lambda: task.finished, timeout=10000)
    monkeypatch.setattr(w, "ask_unsaved", lambda *when: "cancel")
    w.close()
    assert w.isVisible(), "closing with unsaved edits must ask (and Cancel keeps the window)"
    # "Crash": the next window opening the same case offers the autosave back.
    # with no one to ask (LIVERPLAN_NO_DIALOGS, as in these tests) the edits are kept for later, not lost
    # and not waited on
    w3 = MainWindow(with_3d=False)
    w3.set_case(small_case.copy())
    assert not w3.history.is_modified and "were found and kept" in w3.status_text.text()
    assert w3.session.autosave_store.find(w3.session.source_key, edited.shape) is not None
    close_window(w3)
    w2 = MainWindow(with_3d=False)
    monkeypatch.setattr(w2, "ask_restore", lambda entry: True)
    w2.set_case(small_case.copy())
    np.testing.assert_array_equal(w2.case.labels, edited)
    assert w2.history.is_modified and w2.history.undo_description == "Restore autosaved edits"
    monkeypatch.setattr(w, "ask_unsaved", lambda *when: "discard")
    w.close()
    assert not w.isVisible()
    assert w.session.autosave_store.find(w.session.source_key, edited.shape) is None
    close_window(w2)


def test_save_or_discard_before_opening_another_case_never_loses_edits(qtbot, qapp, small_case, monkeypatch,
                                                                       tmp_path):
    # "Save" with a cancelled dialog or a failed write opened the other case anyway (edits gone); "Discard"
    # followed by an open that failed deleted the autosave of the edits still on screen.
    from engine.io import write_image
    from gui.main_window import MainWindow

    good = tmp_path / "other.nii.gz"
    write_image(good, small_case)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a NIfTI file")
    w = MainWindow(with_3d=False)
    w.show()
    w.set_case(small_case.copy())
    wait_idle(qtbot, w)
    w.apply_edit("Brush test", __import__("engine.edits", fromlist=["brush"]).brush, (20, 36, 36), 6.0,
                 w.case.geometry.spacing, 2)
    edited = w.case.labels.copy()
    key = w.session.source_key
    task = w.autosave()
    qtbot.waitUntil(lambda: task.finished, timeout=10000)
    first = w.case
    monkeypatch.setattr(w, "ask_unsaved", lambda *when: "save")
    monkeypatch.setattr(w, "save_before", lambda *a, **k: False)             # the dialog cancelled, or the write failed
    w.open_path(good)
    wait_idle(qtbot, w)
    assert w.case is first and w.history.is_modified
    np.testing.assert_array_equal(w.case.labels, edited)
    monkeypatch.setattr(w, "ask_unsaved", lambda *when: "discard")
    w.open_path(broken)
    wait_idle(qtbot, w)
    assert w.case is first and w.history.is_modified
    assert w.session.autosave_store.find(key, edited.shape) is not None     # still protected
    w.open_path(good)                                                # discarded, and this time it opens
    qtbot.waitUntil(lambda: w.case is not first, timeout=30000)
    assert w.session.autosave_store.find(key, edited.shape) is None
    # a case that replaces another shows no numbers until its own are measured (the previous case's stood
    # there meanwhile, and "Copy measurements" copied them)
    wait_idle(qtbot, w)
    assert w.measure_panel.summary.rowCount() > 0
    w.set_case(small_case.copy())
    assert w.measure_panel.summary.rowCount() == 0 and w.measure_panel.lesions.rowCount() == 0
    wait_idle(qtbot, w)
    assert w.measure_panel.summary.rowCount() > 0
    close_window(w)


def test_open_label_map_onto_ct_checks_grid(qtbot, win, tmp_path):
    _ready(qtbot, win)
    import SimpleITK as sitk
    bad = tmp_path / "wrong_grid.nii.gz"
    sitk.WriteImage(sitk.Image(10, 10, 10, sitk.sitkUInt8), str(bad))
    before = win.case.labels.copy()
    win.open_labels(bad)
    wait_idle(qtbot, win)
    assert "grid" in win.last_error.lower() or "voxels" in win.last_error.lower()
    np.testing.assert_array_equal(win.case.labels, before)


def test_3d_controls_plane_views_and_visibility(qtbot, win):
    _ready(qtbot, win)
    qtbot.waitUntil(lambda: len(win.view3d.meshes) >= 4, timeout=30000)
    win.plane_action.setChecked(True)
    win.toggle_plane()
    assert win.view3d._plane_actor is not None
    for name in ("posterior", "left", "superior", "anterior"):
        win.view3d.set_view(name)
    win.structures.check3d[1].setChecked(False)
    assert not win.view3d.actors[1].GetVisibility()
    win.structures.check3d[1].setChecked(True)
    win.structures.opacity[2].setValue(50)
    assert win.view3d.actors[2].GetProperty().GetOpacity() == pytest.approx(0.5)
    # Hiding a structure in 2D removes it from the overlay's colour table.
    win.structures.check2d[5].setChecked(False)
    assert win.views[0]._lut[5][3] == 0
    win.structures.check2d[5].setChecked(True)
    assert win.views[0]._lut[5][3] == 255
    win.plane_action.setChecked(False)
    win.toggle_plane()
    assert win.view3d._plane_actor is None


def test_window_level_presets_and_mouse(qtbot, win):
    _ready(qtbot, win)
    win.set_window(80, 180)
    assert all(v.ct_item.levels is not None and tuple(v.ct_item.levels) == (-10, 170) for v in win.views)
    win.views[0].window_drag(10, 0)  # right-drag to the right widens the window
    assert win.window_width == pytest.approx(220)
    win.set_window(50, 400)


def test_double_click_on_3d_surface_moves_the_panes(qtbot, win):
    _ready(qtbot, win)
    qtbot.waitUntil(lambda: len(win.view3d.meshes) >= 4, timeout=30000)
    les = win.report.lesions[0]
    win.view3d.set_view("anterior")
    win.view3d.focus(les.centroid_lps_mm)   # the lesion is now in the middle of the 3D pane
    win.structures.check3d[1].setChecked(False)  # the liver would be picked first
    w, h = win.view3d.plotter.window_size
    got = []
    win.view3d.point_picked.connect(got.append)
    win.view3d._on_double_click((w / 2, h / 2))
    win.structures.check3d[1].setChecked(True)
    assert got, "nothing picked in the middle of the 3D pane"
    picked = np.array(got[-1])
    # Seen from the front, the picked point has the lesion's left-right and head-foot position (it lies
    # on its front surface) and the panes moved to it.
    c = np.array(les.centroid_lps_mm)
    assert np.linalg.norm(picked[[0, 2]] - c[[0, 2]]) < les.longest_diameter_mm / 2 + 2
    assert win.pos == [int(round(v)) for v in win.case.geometry.physical_to_index(picked)]


def test_a_failing_autosave_is_shown_retried_and_falls_back(qtbot, qapp, small_case, tmp_path):
    # The data folder on a full or read-only disk: the autosave failed in silence, was never tried again
    # (the state was marked autosaved before the write) and had nowhere else to go.
    from engine import edits
    from gui.main_window import MainWindow

    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder: nothing can be written below it")
    w = MainWindow(with_3d=False)
    w.show()
    w.set_case(small_case.copy())
    wait_idle(qtbot, w)
    w.session.autosave_store.root = blocked / "autosave"
    w.session.autosave_store.fallback_root = blocked / "fallback"
    boxes = []
    w.show_error = lambda title, msg: boxes.append(title)      # the box (dialogs are off in the tests)
    w.apply_edit("Brush test", edits.brush, (20, 36, 36), 6.0, w.case.geometry.spacing, 2)
    edited = w.case.labels.copy()
    task = w.autosave()
    if task is not None:
        qtbot.waitUntil(lambda: task.finished, timeout=10000)
    wait_idle(qtbot, w)
    # said at once, in the status bar (and in one box where dialogs are allowed)
    assert w.last_error and ("autosave" in w.last_error.lower()), w.last_error
    qtbot.wait(50)
    assert boxes == ["Your edits are not being saved"]   # one box for the journal and the autosave failing
    assert w.session.autosave_store.find(w.case.provenance.source or w.case.name, edited.shape) is None
    # another folder can be written: the next try writes there (the failed write was not counted as done)
    w.session.autosave_store.fallback_root = tmp_path / "fallback"
    task = w.autosave()
    assert task is not None, "a failed autosave must be tried again"
    qtbot.waitUntil(lambda: task.finished, timeout=10000)
    entry = w.session.autosave_store.find(w.case.provenance.source or w.case.name, edited.shape)
    assert entry is not None and str(entry.folder).startswith(str(tmp_path / "fallback"))
    np.testing.assert_array_equal(w.session.autosave_store.load(entry), edited)
    assert "*" in w.windowTitle()          # autosaved is not saved
    # a step after it is in the journal there at once
    w.apply_edit("Brush test 2", edits.brush, (10, 30, 30), 4.0, w.case.geometry.spacing, 5)
    np.testing.assert_array_equal(w.session.autosave_store.load(entry, base=small_case.labels), w.case.labels)
    close_window(w)
