"""The window on a real CT: 3D-IRCADb-01 patient 17 with its expert masks (skips where absent)."""
from __future__ import annotations

import pytest

from guitools import SCRATCH, close_window, wait_idle
from realdata import real_path

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]


def test_ircadb_ct_with_expert_masks(qtbot, qapp):
    from gui.main_window import MainWindow

    ct = real_path("3dircadb1.17", "PATIENT_DICOM.nii.gz")
    masks = real_path("3dircadb1.17", "masks")
    w = MainWindow()
    w.resize(1500, 950)
    w.show()
    try:
        w.open_path(str(ct), labels=str(masks))
        qtbot.waitUntil(lambda: w.case is not None and w.history.can_undo, timeout=120000)
        wait_idle(qtbot, w, timeout=120000)
        assert w.case.image.shape == (119, 512, 512)
        # the user is told that IRCADb's venous mask is hepatic veins + IVC, and which masks were not used
        shown = w.status_text.text()
        assert "venoussystem" in shown and "IVC" in shown and "artery, bone, skin" in shown, shown
        assert any("venoussystem" in n for n in w.session.label_notes)
        assert w.status_text.toolTip() == shown                   # the whole text, where the bar cuts it
        wait_idle(qtbot, w, timeout=120000)
        assert "About these labels: 3D-IRCADb's 'venoussystem' mask" in w.measure_panel.note.text()
        # the notes follow the labels through Undo / Redo: gone with the undone masks, back with them
        w.undo()
        wait_idle(qtbot, w, timeout=120000)
        assert w.session.label_notes == [] and "About these labels" not in w.measure_panel.note.text()
        w.redo()
        wait_idle(qtbot, w, timeout=120000)
        assert any("venoussystem" in n for n in w.session.label_notes)
        assert "About these labels" in w.measure_panel.note.text()
        liver_ml = w.report.value("liver.total_volume_ml")
        assert 800 < liver_ml < 3000, liver_ml
        assert len(w.report.lesions) >= 1
        w.measure_panel.lesions.selectRow(0)
        les = w.report.lesions[0]
        assert w.pos == [int(round(v)) for v in les.centroid_zyx]
        qtbot.waitUntil(lambda: len(w.view3d.meshes) >= 3, timeout=60000)
        assert w.view3d.screenshot().std() > 10
        # Sub-millimetre in-plane grid: the liver is drawn from the pooled display grid, with far fewer
        # triangles than the exported surface, closed, and within a voxel of it.
        import numpy as np

        from engine.mesh import display_pool, update_label_surface
        assert display_pool(w.case.geometry, 1)[1:] == (2, 2)
        shown = w.view3d.meshes[1]
        export = update_label_surface(w.case.labels, w.case.geometry, 1)
        assert shown.n_cells < 0.6 * export.n_cells
        # Seam points of neighbouring blocks agree to 5 micrometres: welded, no boundary edge is left.
        welded = shown.clean(tolerance=0.005, absolute=True)
        assert welded.extract_feature_edges(boundary_edges=True, feature_edges=False, manifold_edges=False,
                                            non_manifold_edges=False).n_cells == 0
        d = np.abs(shown.compute_implicit_distance(export).point_data["implicit_distance"])
        assert np.percentile(d, 99) < 1.0
        if SCRATCH.is_dir():
            w.grab().save(str(SCRATCH / "gui_ircadb_test.png"))
    finally:
        close_window(w)
