"""'Vessel, unassigned' (label 6) in the window: its own row in the Structures tab with its volume, its
colour in the slice overlay, a choice of the paint tools."""
from __future__ import annotations

import numpy as np
import pytest

from guitools import SCRATCH, close_window, wait_idle

pytestmark = pytest.mark.timeout(300)


def test_unassigned_vessels_are_shown_measured_and_paintable(qtbot, qapp, small_case, tmp_path):
    from engine.labels import BY_KEY, Label
    from engine.measure import measure
    from gui.main_window import MainWindow, label_lut

    case = small_case.copy()
    lab = case.labels.copy()
    lab[(lab == Label.PORTAL_VEIN) & (np.arange(lab.shape[0]) >= lab.shape[0] // 2)[:, None, None]] = 6
    assert np.count_nonzero(lab == 6) > 0
    case.set_labels(lab)
    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    try:
        w.set_case(case)
        wait_idle(qtbot, w)
        table = w.structures.table
        names = [table.item(r, 0).text() for r in range(table.rowCount())]
        assert names[-1] == "Vessel, unassigned" and len(names) == 6
        rep = measure(w.case)
        assert float(table.item(5, 4).text()) == pytest.approx(rep.value("vessel_unassigned.volume_ml"), abs=0.05)
        assert tuple(label_lut({})[6][:3]) == BY_KEY["vessel_unassigned"].color
        combo = w.tools.structure
        assert [combo.itemData(i) for i in range(combo.count())][-1] == 6
        z = int(np.argwhere(lab == 6)[0][0])
        w.views[0].step_slice(z - w.pos[0])
        wait_idle(qtbot, w)
        shot = w.grab()
        shot.save(str(tmp_path / "vessel_unassigned.png"))
        if SCRATCH.is_dir():
            shot.save(str(SCRATCH / "vessel_unassigned.png"))
    finally:
        close_window(w)
