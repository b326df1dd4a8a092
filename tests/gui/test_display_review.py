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
