"""Issue 18 (part D) through the real window: the selection follows a lesion (deleting it clears the marks),
next/previous lesion keys, outline mode, the legend, the IVC colour, ruler and angle, the question before a
segmentation replaces edited labels, Help > Keyboard shortcuts and the first-run hint."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from guitools import SCRATCH, close_window, wait_idle

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def win(qapp, small_case):
    from gui.main_window import MainWindow

    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    w.set_case(small_case.copy())
    yield w
    close_window(w)


def _fresh(qtbot, w, small_case):
    w.set_case(small_case.copy())
    wait_idle(qtbot, w)


def _ids(w):
    return [l.id for l in w.report.lesions]


def test_deleting_the_selected_lesion_clears_row_boxes_and_sphere(qtbot, win, small_case):
    from engine import edits

    w = win
    _fresh(qtbot, w, small_case)
    assert _ids(w) == [1, 2, 3]
    t = w.measure_panel.lesions
    t.selectRow(1)                                         # lesion 2
    assert w.measure_ctl.selected_lesion_id == 2
    assert any(v.highlight.isVisible() for v in w.views)
    if w.view3d is not None:
        qtbot.waitUntil(lambda: "selected_lesion" in w.view3d.plotter.actors, timeout=5000)
    les = w.report.lesions[1]
    w.apply_edit("Delete lesion", edits.delete_component, [int(round(v)) for v in les.centroid_zyx],
                 kind="delete_component")
    wait_idle(qtbot, w)
    assert _ids(w) == [1, 3]                               # lesion 3 keeps its number
    assert t.selectedItems() == []                         # no row (no other lesion) selected
    assert w.measure_ctl.selected_lesion_id is None
    assert not any(v.highlight.isVisible() for v in w.views)
    if w.view3d is not None:
        assert "selected_lesion" not in w.view3d.plotter.actors
    # undo: lesion 2 is back with its number, and the selection follows a lesion, not a row
    w.undo()
    wait_idle(qtbot, w)
    assert _ids(w) == [1, 2, 3]
    t.selectRow(2)                                         # lesion 3
    w.apply_edit("Delete lesion", edits.delete_component,
                 [int(round(v)) for v in w.report.lesions[1].centroid_zyx], kind="delete_component")
    wait_idle(qtbot, w)
    assert _ids(w) == [1, 3]
    assert [it.row() for it in t.selectedItems()][:1] == [1] and t.item(1, 0).text() == "3"
    assert w.measure_ctl.selected_lesion_id == 3


def test_segmentation_asks_before_replacing_edited_labels(qtbot, win, small_case, tiny_model, monkeypatch):
    """Run segmentation on hand-edited labels: a question first ("Keep my labels" keeps them, "Don't ask
    again this session" is honoured); on a phantom's untouched labels, no question."""
    import gui.questions as q
    from gui.controllers import SegmentController

    w = win
    _fresh(qtbot, w, small_case)
    asked = []
    monkeypatch.setattr(q, "ask_replace_labels", lambda parent, text: asked.append(text) or (False, False))
    monkeypatch.setattr(SegmentController, "ask_before_replacing", True)
    w.segment_panel.device.setCurrentText("cpu")
    # untouched, saved labels: nothing to lose, no question (and the run is not started here)
    from engine.replace_guard import replace_question
    assert replace_question(w.session) is None
    # a hand edit: the question comes, and "Keep my labels" keeps them
    from engine import edits
    from engine.labels import Label
    z, y, x = [n // 2 for n in w.case.labels.shape]
    w.apply_edit("Brush", edits.brush, (z, y, x), 4.0, w.case.geometry.spacing, int(Label.CRLM), kind="brush")
    edited = w.case.labels.copy()
    w.run_segmentation(tiny_model)
    assert len(asked) == 1 and "edits by hand" in asked[0] and "Undo" in asked[0]
    assert not w.runner.running("segment")
    np.testing.assert_array_equal(w.case.labels, edited)
    assert "kept" in w.segment_panel.status.text()
    # "Run" with "Don't ask again this session": runs, and the next run does not ask
    monkeypatch.setattr(q, "ask_replace_labels", lambda parent, text: asked.append(text) or (True, True))
    w.run_segmentation(tiny_model)
    qtbot.waitUntil(lambda: not w.runner.running("segment"), timeout=180000)
    assert len(asked) == 2 and w.history.undo_description.startswith("Segmentation (")
    w.apply_edit("Brush", edits.brush, (z, y, x), 4.0, w.case.geometry.spacing, int(Label.CRLM), kind="brush")
    w.run_segmentation(tiny_model)
    qtbot.waitUntil(lambda: not w.runner.running("segment"), timeout=180000)
    assert len(asked) == 2
    wait_idle(qtbot, w)


def test_the_replace_question_offers_dont_ask_again(qtbot, win):
    from gui.questions import replace_labels_box

    box = replace_labels_box(win, "The labels shown carry edits by hand. Run it?")
    assert box.dont_ask.text() == "Don't ask again this session"
    assert [b.text() for b in box.buttons()] == ["Run and replace", "Keep my labels"]
    assert box.defaultButton().text() == "Keep my labels"
    box.deleteLater()


def test_outline_mode_legend_and_ivc_colour(qtbot, win, small_case):
    """O toggles outline mode: the lesion's inside shows the CT, its margin the lesion colour; the legends
    name the structures shown in their colours (2D and 3D), and follow what is hidden."""
    from engine.labels import BY_LABEL, Label

    w = win
    _fresh(qtbot, w, small_case)
    les = w.report.lesions[0]
    w.set_position([int(round(v)) for v in les.centroid_zyx])
    ax = w.views[0]
    filled = ax.label_item.image.copy()
    cz, cy, cx = [int(round(v)) for v in les.centroid_zyx]
    assert filled[cy, cx] == Label.CRLM
    w.display.actions["outline"].trigger()                 # View > Outline labels (key O)
    assert w.display.outline and all(v.outline for v in w.views)
    shown = ax.label_item.image
    assert shown[cy, cx] == 0                               # the lesion's inside: the CT shows
    assert np.count_nonzero(shown == Label.CRLM) < np.count_nonzero(filled == Label.CRLM)
    assert np.count_nonzero(shown == Label.CRLM) > 0        # its margin is drawn
    # the legend: the structures shown, in their colours
    lg = w.display.legends2d[0]
    assert lg.isVisible()
    names = [BY_LABEL[lab].name for lab in lg.labels]
    assert "CRLM lesions" in names and "Inferior vena cava" in names
    r, g, b = BY_LABEL[Label.IVC].color
    assert f"rgb({r},{g},{b})" in lg.text()
    if w.view3d is not None:
        wait_idle(qtbot, w)
        assert w.display.legend3d is not None and w.display.legend3d.isVisible()
        assert Label.IVC in w.display.legend3d.labels
    # hiding the IVC in 2D takes it off the 2D legends
    w.structures.visible2d_changed.emit(int(Label.IVC), False)
    assert Label.IVC not in lg.labels
    w.structures.visible2d_changed.emit(int(Label.IVC), True)
    assert Label.IVC in lg.labels
    if SCRATCH.is_dir():
        # the IVC on the axial slice through it, outlines and legend
        ivc_z = int(np.flatnonzero((w.case.labels == Label.IVC).any(axis=(1, 2))).mean())
        w.set_position([ivc_z, cy, cx])
        w.grab().save(str(SCRATCH / "display_outline_legend.png"))
        w.display.set_outline(False)
        w.grab().save(str(SCRATCH / "display_filled_ivc.png"))
    w.display.set_outline(False)
    assert ax.label_item.image[cy, cx] == Label.CRLM or w.pos[0] != cz


def test_next_and_previous_lesion_keys(qtbot, win, small_case):
    w = win
    _fresh(qtbot, w, small_case)
    t = w.measure_panel.lesions
    w.display.actions["next_lesion"].trigger()             # L
    assert w.measure_ctl.selected_lesion_id == 1
    les = {l.id: l for l in w.report.lesions}
    assert w.pos == [int(round(v)) for v in les[1].centroid_zyx]
    w.display.actions["next_lesion"].trigger()
    assert w.measure_ctl.selected_lesion_id == 2
    assert t.item(t.selectedItems()[0].row(), 0).text() == "2"
    assert w.pos == [int(round(v)) for v in les[2].centroid_zyx]
    w.display.actions["previous_lesion"].trigger()         # Shift+L
    w.display.actions["previous_lesion"].trigger()         # wraps round to the last
    assert w.measure_ctl.selected_lesion_id == 3
    w.display.actions["next_lesion"].trigger()
    assert w.measure_ctl.selected_lesion_id == 1
    assert w.display.actions["next_lesion"].shortcut().toString() == "L"


def test_ruler_and_angle_in_a_pane(qtbot, win, small_case):
    """Two clicks give a distance in mm, three an angle, drawn on the slice they were made on, removable."""
    from PySide6.QtCore import Qt as _Qt
    w = win
    _fresh(qtbot, w, small_case)
    ax = w.views[0]
    z = w.pos[0]
    g = w.case.geometry
    w.display.actions["ruler"].trigger()                   # Alt+R
    assert w.display.annotations.mode == "ruler"
    before = w.case.labels.copy()
    w.on_mouse("click", (z, 10, 10), 0, _Qt.NoModifier)
    w.on_mouse("click", (z, 10, 40), 0, _Qt.NoModifier)
    (kind, mm), = w.display.annotations.values()
    assert kind == "ruler" and mm == pytest.approx(30 * g.spacing[2], rel=1e-6)
    assert w.display.annotations.visible_texts(0) == [f"{mm:.1f} mm"]
    np.testing.assert_array_equal(w.case.labels, before)  # measuring never edits
    w.display.actions["angle"].trigger()                   # Alt+A
    assert w.display.annotations.mode == "angle" and not w.display.actions["ruler"].isChecked()
    for p in ((z, 10, 40), (z, 10, 10), (z, 40, 10)):
        w.on_mouse("click", p, 0, _Qt.NoModifier)
    assert w.display.annotations.values()[-1][0] == "angle"
    assert w.display.annotations.values()[-1][1] == pytest.approx(90.0, abs=1e-6)
    if SCRATCH.is_dir():
        w.grab().save(str(SCRATCH / "display_ruler_angle.png"))
    # another slice: not shown there; back: shown again
    w.set_position([z + 1, *w.pos[1:]])
    assert w.display.annotations.visible_texts(0) == []
    w.set_position([z, *w.pos[1:]])
    assert len(w.display.annotations.visible_texts(0)) == 2
    w.display.actions["remove_last"].trigger()
    assert [k for k, _ in w.display.annotations.values()] == ["ruler"]
    w.display.actions["remove_all"].trigger()
    assert w.display.annotations.values() == []
    w.display.set_measure_mode(None)
    w.on_mouse("click", (z, 20, 20), 0, _Qt.NoModifier)   # navigation again
    assert w.pos[1:] == [20, 20]


def test_keyboard_shortcuts_dialog_lists_every_action(qtbot, win):
    from PySide6.QtGui import QKeySequence

    from gui.help import show_shortcuts

    w = win
    dlg = show_shortcuts(w)
    t = dlg.table
    rows = [(t.item(r, 0).text(), t.item(r, 1).text()) for r in range(t.rowCount())]
    # every action with a shortcut anywhere in the menus is listed with its keys
    expected = []

    def walk(menu):
        for a in menu.actions():
            if a.menu() is not None:
                walk(a.menu())
            elif not a.shortcut().isEmpty():
                expected.append(a.shortcut().toString(QKeySequence.NativeText))
    for top in w.menuBar().actions():
        if top.menu() is not None:
            walk(top.menu())
    listed = " | ".join(k for k, _ in rows)
    for k in expected:
        assert k in listed, k
    # no key does two things (Qt would then do neither: "ambiguous shortcut")
    dup = sorted({k for k in expected if expected.count(k) > 1})
    assert not dup, f"shortcuts used twice: {dup}"
    whats = [d for _, d in rows]
    assert "Next lesion" in whats and "Brush tool" in whats and "Next slice" in whats and "Zoom" in whats
    if SCRATCH.is_dir():
        dlg.grab().save(str(SCRATCH / "display_shortcuts.png"))
    dlg.close()


def test_first_run_hint(qtbot, qapp, small_case, tmp_path, monkeypatch):
    """A first start (no flag in the data folder) shows what to do, beside the start-up demo case; opening a
    CT of one's own takes it away for good; Help > Getting started shows it again."""
    monkeypatch.setenv("LIVERPLAN_DATA_DIR", str(tmp_path / "fresh"))
    monkeypatch.delenv("LIVERPLAN_NO_DIALOGS")
    from gui.help import is_first_run
    from gui.main_window import MainWindow

    assert is_first_run()
    w = MainWindow(with_3d=False)
    w.resize(1400, 900)
    w.show()
    try:
        hint = w.first_run_hint
        assert hint.isVisible()
        text = hint.text.text()
        for step in ("Open a CT", "Segment", "Correct", "Measure", "Keyboard shortcuts"):
            assert step in text
        w.set_case(small_case.copy())                      # the start-up demo: a phantom
        assert hint.isVisible() and is_first_run()
        if SCRATCH.is_dir():
            w.grab().save(str(SCRATCH / "display_first_run.png"))
        own = small_case.copy()
        own.provenance.source_format, own.provenance.source = "nifti", str(tmp_path / "ct.nii.gz")
        w.set_case(own)
        assert not hint.isVisible() and not is_first_run()
        help_menu = next(a for a in w.menuBar().actions() if a.text() == "&Help").menu()
        next(a for a in help_menu.actions() if a.text() == "Getting started").trigger()
        assert hint.isVisible()
        hint.ok.click()                                    # "Got it"
        assert not hint.isVisible()
    finally:
        close_window(w)
    w2 = MainWindow(with_3d=False)
    try:
        assert not w2.first_run_hint.isVisible()
    finally:
        close_window(w2)
    # without dialogs (scripts, tests) no hint, even on a first start
    monkeypatch.setenv("LIVERPLAN_DATA_DIR", str(tmp_path / "fresh2"))
    monkeypatch.setenv("LIVERPLAN_NO_DIALOGS", "1")
    w3 = MainWindow(with_3d=False)
    try:
        assert is_first_run() and not w3.first_run_hint.isVisible()
    finally:
        close_window(w3)


def test_a_label_map_just_opened_closes_without_asking(qtbot, qapp, small_case, tmp_path, monkeypatch):
    """Open a label file onto the CT: the title has no "*" and closing asks nothing; an edit makes it ask."""
    from engine.io import write_label_map
    from gui.main_window import MainWindow

    case = small_case.copy()
    path = tmp_path / "labels.nii.gz"
    other = small_case.copy()
    other.labels[other.labels == 5] = 1                  # the file differs from the labels shown
    write_label_map(str(path), other)
    w = MainWindow(with_3d=False)
    w.show()
    asked = []
    monkeypatch.setattr(w, "ask_unsaved", lambda *when: asked.append(when) or "cancel")
    try:
        w.set_case(case)
        wait_idle(qtbot, w)
        w.open_labels(path)
        qtbot.waitUntil(lambda: w.history.undo_description is not None, timeout=30000)
        wait_idle(qtbot, w)
        assert not w.session.is_modified and "*" not in w.windowTitle()
        from engine import edits
        w.apply_edit("Brush", edits.brush, (20, 36, 36), 6.0, w.case.geometry.spacing, 2, kind="brush")
        w.close()
        assert asked and w.isVisible()            # an edit since: it asks (and Cancel keeps the window)
        w.undo()
        asked.clear()
        w.close()
        assert not asked and not w.isVisible()    # back to the file's labels: nothing to ask
    finally:
        close_window(w)


def test_save_proposes_a_folder_outside_the_cts_and_refuses_a_dicom_folder(qtbot, win, small_case, tmp_path,
                                                                          monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from gui.files import CaseFiles

    w = win
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.setattr(CaseFiles, "last_save_folder", None)
    case = small_case.copy()
    data = tmp_path / "3dircadb1.17"
    data.mkdir()
    case.provenance.source, case.provenance.source_format = str(data / "PATIENT_DICOM.nii.gz"), "nifti"
    w.set_case(case)
    wait_idle(qtbot, w)
    starts = []
    answers = [str(tmp_path / "out" / "mine.nii.gz")]
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda parent, title, start, filt: (starts.append(start) or answers.pop(0), "")))
    task = w.save_labels(ask=True, mark=False)
    qtbot.waitUntil(lambda: task.finished, timeout=30000)
    from pathlib import Path
    assert Path(starts[0]).parent == tmp_path / "home" / "LiverPlan"      # not the CT's folder
    assert (tmp_path / "out" / "mine.nii.gz").exists()
    # the next Save proposes the folder just used
    answers.append("")
    w.save_labels(ask=True, mark=False)
    assert Path(starts[1]).parent == tmp_path / "out"
    # a DICOM case: a file inside its series folder is refused, in words, and the dialog comes again
    dicom = tmp_path / "series"
    dicom.mkdir()
    case2 = small_case.copy()
    case2.provenance.source, case2.provenance.source_format = str(dicom), "dicom"
    w.set_case(case2)
    wait_idle(qtbot, w)
    answers[:] = [str(dicom / "labels.nii.gz"), ""]
    w.save_labels(ask=True, mark=False)
    assert len(starts) == 4 and "DICOM folder" in w.last_error
    assert not (dicom / "labels.nii.gz").exists()


def test_doubtful_lesions_stand_out_in_the_table(qtbot, win, small_case):
    """A "lesion" of fat: its row is amber with the reason in the tooltip, and the notes say it."""
    from engine.labels import Label

    w = win
    case = small_case.copy()
    m = case.labels == Label.CRLM
    import cc3d
    cc = cc3d.connected_components(m, connectivity=26)
    smallest = np.argmin(np.bincount(cc.reshape(-1))[1:]) + 1
    case.image[cc == smallest] = -75
    w.set_case(case)
    wait_idle(qtbot, w)
    t = w.measure_panel.lesions
    flagged = [l for l in w.report.lesions if l.flags]
    assert len(flagged) == 1 and "fat or air" in flagged[0].flags[0]
    r = w.measure_panel.lesion_row(flagged[0].id)
    assert "Check this lesion" in t.item(r, 0).toolTip() and "fat or air" in t.item(r, 1).toolTip()
    assert t.item(r, 0).background().color().red() == 255
    other = next(i for i in range(t.rowCount()) if i != r)
    assert "Check" not in (t.item(other, 0).toolTip() or "")
    assert f"lesion {flagged[0].id}: mean -75 HU: fat or air" in w.measure_panel.note.text()
    if SCRATCH.is_dir():
        w.tabs.setCurrentWidget(w.measure_panel)
        w.grab().save(str(SCRATCH / "display_doubtful_lesion.png"))
        w.tabs.setCurrentIndex(0)
