"""The Review tab in the real window: FP/FN overlays against the reference (counts = the metric module's),
"next error region" (key X) moves the crosshair to the largest region first, lesion status and confidence in
the lesion table, the uncertainty overlay after a run of the bundled demo model and "next uncertain region"."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from guitools import SCRATCH, close_window, wait_idle

pytestmark = pytest.mark.timeout(400)


def _perturb(labels):
    from metrics.lesions import label_lesions

    out = labels.copy()
    zs, ys, xs = np.nonzero(labels == 1)
    zc, yc, xc = int(np.median(zs)), int(np.median(ys)), int(np.median(xs))
    out[zc - 3:zc + 3, yc - 8:yc + 8, xc - 8:xc + 8] = 0          # a hole in the liver: FN, the largest
    lab, n = label_lesions(labels == 5)
    out[lab == 1] = 1                                                # a lesion missed
    # a false lesion inside the liver, away from the others
    for z, y, x in zip(zs[::53], ys[::53], xs[::53]):
        box = (slice(z - 1, z + 2), slice(y - 1, y + 2), slice(x - 1, x + 2))
        if (out[box] == 1).all() and abs(z - zc) > 4:
            out[box] = 5
            break
    return out


def _colour_pixels(img, rgb, tol=70):
    from PySide6.QtGui import QImage
    q = img.toImage().convertToFormat(QImage.Format_RGB888)
    w, h = q.width(), q.height()
    arr = np.frombuffer(q.constBits(), np.uint8, count=q.bytesPerLine() * h).reshape(h, q.bytesPerLine())
    arr = arr[:, :w * 3].reshape(h, w, 3).astype(int)
    return int((np.abs(arr - np.array(rgb)).max(axis=2) < tol).sum())


def test_error_overlays_counts_navigation_and_lesion_status(qtbot, qapp, small_case, tmp_path):
    from engine import edits
    from engine.evaluation import structure_plan
    from gui.main_window import MainWindow
    from gui.review_overlays import FN_COLOR, FP_COLOR
    from metrics.overlap import confusion

    w = MainWindow()
    w.resize(1500, 950)
    w.show()
    try:
        w.set_case(small_case.copy())           # a phantom: its own labels are the reference
        wait_idle(qtbot, w)
        qtbot.waitUntil(lambda: w.review.state.errors is not None, timeout=30000)
        s = w.session
        s.apply("edit", "Model-like errors", edits.replace_all, _perturb(s.case.labels))
        wait_idle(qtbot, w)
        panel = w.review.panel
        w.tabs.setCurrentWidget(panel)
        # the counts shown equal the metric module's confusion counts
        names = w.review._names()
        want = {}
        for key, (pl, rl) in structure_plan(s.reference_mapping).structures.items():
            c = confusion(np.isin(s.case.labels, pl), np.isin(s.reference, rl))
            want[names[key]] = (c.fp, c.fn)
        assert panel.counts_shown() == want
        assert want["Liver parenchyma"][1] > 0 and want["CRLM lesions"][0] > 0
        # next error region: the largest first, the crosshair goes there; again: the second
        regions = w.review.state.error_regions()
        assert [r.voxels for r in regions] == sorted((r.voxels for r in regions), reverse=True)
        w.activateWindow()
        qtbot.waitUntil(w.isActiveWindow, timeout=5000)
        w.views[0].setFocus()
        qtbot.keyClick(w.views[0], Qt.Key_X)
        assert w.pos == list(regions[0].center)
        assert all(v.pos_zyx == list(regions[0].center) for v in w.views)
        assert "Error region 1 of" in panel.error_text.text()
        qtbot.mouseClick(panel.next_error, Qt.LeftButton)
        assert w.pos == list(regions[1].center)
        # the FP and FN colours are on screen in the axial pane at the largest region (a liver FN hole)
        qtbot.keyClick(w.views[0], Qt.Key_X)       # wraps: region 3, then back to 1 with more presses
        while w.review.current_error != regions[0]:
            qtbot.keyClick(w.views[0], Qt.Key_X)
        qtbot.wait(100)
        pane = w.views[0].view.grab()
        assert _colour_pixels(pane, FN_COLOR) > 20
        fp_region = next(r for r in regions if r.kind == "FP")
        w.set_position(list(fp_region.center))
        qtbot.wait(100)
        assert _colour_pixels(w.views[0].view.grab(), FP_COLOR) > 3
        # per-structure on/off: hiding the liver hides its errors
        w.set_position(list(regions[0].center))
        panel._checks["liver"].setChecked(False)
        qtbot.wait(50)
        assert _colour_pixels(w.views[0].view.grab(), FN_COLOR) < _colour_pixels(pane, FN_COLOR)
        panel._checks["liver"].setChecked(True)
        # lesion status in the Measure tab's table, and the missed lesion in the Review tab
        t = w.measure_panel.lesions
        col = w.measure_panel.LESION_COLS.index("Status")
        # (the statuses come from a worker after the measurements: wait for them, not for the rows)
        qtbot.waitUntil(lambda: t.rowCount() > 0 and all(t.item(r, col) is not None and t.item(r, col).text() != "—"
                                                         for r in range(t.rowCount())), timeout=30000)
        statuses = sorted(t.item(r, col).text() for r in range(t.rowCount()))
        from metrics.lesions import detect_lesions
        det = detect_lesions(s.case.labels == 5, s.reference == 5, s.case.geometry.spacing)
        assert det.false == 1 and det.missed >= 1               # the blob; the lesion relabelled as liver
        assert statuses.count("false positive") == det.false and statuses.count("detected") == det.detected
        assert not t.isColumnHidden(col)
        assert (f"{det.detected} detected, {det.missed} missed, {det.false} false positive"
                in panel.lesion_text.text())
        # the exports: the lesion table's status column, and the evaluation's lesion status table
        import csv
        out = tmp_path / "m.csv"
        w.export_measurements(out)
        les_csv = tmp_path / "m_lesions.csv"
        qtbot.waitUntil(les_csv.exists, timeout=10000)
        from engine.report import read_csv_rows
        rows = read_csv_rows(les_csv)
        assert sorted(r["status_vs_reference"] for r in rows) == statuses
        w.run_evaluation()
        qtbot.waitUntil(lambda: s.evaluation is not None, timeout=120000)
        assert s.evaluation.lesions["crlm"].missed == det.missed
        ev = tmp_path / "eval.csv"
        w.export_evaluation(ev)
        side = tmp_path / "eval_lesion_status.csv"
        qtbot.waitUntil(side.exists, timeout=10000)
        rows = list(csv.DictReader(side.open()))
        assert [r["status"] for r in rows].count("missed") == det.missed
        assert [r["status"] for r in rows].count("false positive") == det.false
        assert [r["status"] for r in rows].count("detected") == det.detected
        wait_idle(qtbot, w)
        # 3D: the error surfaces
        if w.view3d is not None:
            panel.show_3d.setChecked(True)
            qtbot.waitUntil(lambda: "review_fn" in w.view3d.extras, timeout=60000)
        w.set_position(list(regions[0].center))
        qtbot.wait(200)
        if SCRATCH.is_dir():
            w.grab().save(str(SCRATCH / "gui_review_errors.png"))
    finally:
        close_window(w)


def test_uncertainty_overlay_confidence_and_next_uncertain(qtbot, qapp, small_case):
    from engine.models import bundled_demo_model
    from gui.main_window import MainWindow

    demo = bundled_demo_model()
    assert demo is not None
    w = MainWindow(with_3d=False)
    w.resize(1500, 950)
    w.show()
    try:
        w.set_case(small_case.copy())
        wait_idle(qtbot, w)
        panel = w.review.panel
        assert not panel.show_unc.isEnabled()
        w.session.segment(demo, device="cpu")
        wait_idle(qtbot, w)
        st = w.review.state
        assert st.uncertainty is not None
        assert "1 byte per voxel" in panel.unc_status.text()
        assert panel.show_unc.isEnabled()
        panel.show_unc.setChecked(True)
        t = w.measure_panel.lesions
        col = w.measure_panel.LESION_COLS.index("Conf.")
        qtbot.waitUntil(lambda: t.rowCount() > 0 and t.item(0, col) is not None and t.item(0, col).text() != "—",
                        timeout=30000)
        for r in range(t.rowCount()):
            assert 0.0 < float(t.item(r, col).text()) <= 1.0
        w.activateWindow()
        qtbot.waitUntil(w.isActiveWindow, timeout=5000)
        qtbot.keyClick(w.views[0], Qt.Key_U)
        qtbot.waitUntil(lambda: st.uncertainty.cached_regions() is not None, timeout=60000)
        regions = st.uncertain_regions()
        assert regions, "the demo model was sure everywhere: nothing to navigate"
        qtbot.waitUntil(lambda: w.pos == list(regions[0].center), timeout=10000)
        assert "Uncertain region 1 of" in panel.unc_text.text()
        assert [r.voxels for r in regions] == sorted((r.voxels for r in regions), reverse=True)
        w.tabs.setCurrentWidget(panel)
        qtbot.wait(100)
        if SCRATCH.is_dir():
            w.grab().save(str(SCRATCH / "gui_review_uncertainty.png"))
        # an edit hides the map there and says so
        z, y, x = w.pos
        w.session.begin_stroke()
        w.session.dab((z, y, x), 0, 4.0, 5)
        w.session.end_stroke("brush", "Brush stroke (CRLM lesions)")
        wait_idle(qtbot, w)
        assert st.uncertainty.edited
        assert "hidden in the edited boxes" in panel.unc_status.text()
        # the setting: a run without it keeps none, says so, and frees the map
        panel.keep_unc.setChecked(False)
        w.run_segmentation(demo)
        qtbot.waitUntil(lambda: st.uncertainty is None, timeout=120000)
        wait_idle(qtbot, w)
        assert panel.unc_status.text() == "No uncertainty for this run (it was not kept: turned off for the runs)."
        assert not panel.show_unc.isEnabled()
    finally:
        close_window(w)


def test_a_larger_case_after_one_with_errors_opens(qtbot, qapp, small_case):
    """The panes draw a new case before the review hears of it: the last case's maps (another grid) are not
    drawn, and the new case opens whole."""
    from engine import edits
    from engine.phantom import make_phantom
    from gui.main_window import MainWindow

    w = MainWindow(with_3d=False)
    w.show()
    try:
        w.set_case(small_case.copy())
        wait_idle(qtbot, w)
        qtbot.waitUntil(lambda: w.review.state.errors is not None, timeout=30000)
        w.session.apply("edit", "Errors", edits.replace_all, _perturb(w.session.case.labels))
        wait_idle(qtbot, w)
        w.history.mark_saved()
        big = make_phantom(seed=4, shape=(96, 128, 128), n_lesions=2)   # its centre is outside the last grid
        w.set_case(big)
        wait_idle(qtbot, w)
        assert w.case is big and w.pos == [n // 2 for n in big.image.shape]
        qtbot.waitUntil(lambda: w.review.state.errors is not None, timeout=30000)
        assert w.review.state.errors.fp.shape == big.labels.shape
        assert all(v == (0, 0) for v in w.review.state.errors.counts().values())
    finally:
        close_window(w)
