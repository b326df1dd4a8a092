"""Small dialogs and file handling of the window: the DICOM series picker, opening files in the
background (with a readable message for a bad file), recent cases."""
from __future__ import annotations

from pathlib import Path

import pytest

from guitools import close_window, wait_idle

pytestmark = pytest.mark.timeout(120)


def _series(key, desc, phase, usable=True):
    from engine.io.dicom import SeriesInfo
    return SeriesInfo(key=key, modality="CT", description=desc, n_slices=120, spacing=(1.25, 0.7, 0.7),
                      slice_thickness=1.25, acquisition_time="101500", phase_guess=phase, files=[],
                      problem=None if usable else "not a volume")


def test_series_picker_preselects_the_portal_phase(qtbot):
    from gui.main_window import SeriesPicker
    series = [_series("1", "Native", "native"), _series("2", "Arterial", "arterial"),
              _series("3", "PV 70s", "portal"), _series("4", "Delayed", "delayed")]
    dlg = SeriesPicker(series)
    qtbot.addWidget(dlg)
    assert dlg.chosen_key() == "3"
    assert dlg.table.item(2, 4).text() == "portal"
    assert dlg.table.item(0, 3).text() == "0.70 × 0.70 × 1.25"


def test_open_file_in_background_and_bad_file_message(qtbot, qapp, small_case, tmp_path):
    from engine.io import write_image
    from engine.session import RecentCases
    from gui.main_window import MainWindow

    ct = tmp_path / "ct.nii.gz"
    write_image(ct, small_case)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image at all")
    w = MainWindow(with_3d=False)
    w.show()
    try:
        w.open_path(str(ct))
        qtbot.waitUntil(lambda: w.case is not None, timeout=30000)
        assert w.case.image.shape == small_case.image.shape
        assert str(ct.resolve()) == RecentCases().load()[0]
        wait_idle(qtbot, w)
        shown = w.case
        w.open_path(str(bad))
        wait_idle(qtbot, w)
        assert w.case is shown, "a bad file must leave the open case alone"
        assert "broken.nii.gz" in w.last_error and "Traceback" not in w.last_error
    finally:
        close_window(w)


def test_drop_ct_then_drop_slicer_segmentation(qtbot, qapp, small_case, tmp_path):
    import numpy as np
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    from engine.io import write_image, write_label_map
    from gui.main_window import MainWindow

    ct = tmp_path / "dropped_ct.nii.gz"
    write_image(ct, small_case)
    seg = tmp_path / "labels.seg.nrrd"
    write_label_map(seg, small_case)

    def drop(w, path):
        md = QMimeData()
        md.setUrls([QUrl.fromLocalFile(str(path))])
        ev = QDropEvent(QPointF(10, 10), Qt.CopyAction, md, Qt.LeftButton, Qt.NoModifier)
        w.dropEvent(ev)

    w = MainWindow(with_3d=False)
    w.show()
    try:
        drop(w, ct)
        qtbot.waitUntil(lambda: w.case is not None, timeout=30000)
        assert not w.case.labels.any(), "a plain CT file opens without labels"
        wait_idle(qtbot, w)
        drop(w, seg)  # a Slicer segmentation goes onto the open CT, as one undoable step
        qtbot.waitUntil(lambda: w.history.can_undo, timeout=30000)
        np.testing.assert_array_equal(w.case.labels, small_case.labels)
        assert w.history.undo_description == "Open label map labels.seg.nrrd"
        wait_idle(qtbot, w)
    finally:
        close_window(w)


def test_cancel_opening_leaves_nothing_open(qtbot, qapp, small_case, tmp_path):
    from engine.io import write_image
    from gui.main_window import MainWindow

    ct = tmp_path / "ct.nii.gz"
    write_image(ct, small_case)
    w = MainWindow(with_3d=False)
    w.show()
    try:
        w.open_path(str(ct))
        assert w.task_cancel.isVisible()
        w.cancel_background_work()
        qtbot.waitUntil(lambda: not w.runner.running("load"), timeout=30000)
        assert w.case is None
        assert w.status_text.text() == "Opening cancelled; nothing was changed."
        qtbot.waitUntil(lambda: not w.task_cancel.isVisible(), timeout=5000)
    finally:
        close_window(w)
