"""The Plan tab plans with the Couinaud segments a segmentation model gave (the session's extra map), not
with the estimate from the vessels, as README "Model sets" says."""
from __future__ import annotations

import numpy as np
import pytest

from guitools import close_window, wait_idle

pytestmark = pytest.mark.timeout(300)


def test_plan_uses_the_models_couinaud_map(qtbot, qapp):
    from engine.labels import TOTAL_LIVER_LABELS
    from engine.phantom import make_phantom
    from gui.main_window import MainWindow

    case = make_phantom(seed=0, shape=(48, 64, 64), n_lesions=1)
    w = MainWindow(with_3d=False)
    qtbot.addWidget(w)
    try:
        w.set_case(case)
        wait_idle(qtbot, w, timeout=120000)
        # what a liver-segments model leaves beside its labels: segment II left of the middle, VII right
        liver = np.isin(case.labels, list(TOTAL_LIVER_LABELS))
        seg = np.zeros(case.labels.shape, np.uint8)
        xs = np.nonzero(liver)[2]
        mid = int(np.median(xs))
        seg[..., :mid][liver[..., :mid]] = 2
        seg[..., mid:][liver[..., mid:]] = 7
        w.session.extra_maps = {"couinaud": seg}
        panel = w.plan_panel
        panel.compute()
        qtbot.waitUntil(lambda: panel.planner is not None, timeout=120000)
        assert panel.planner.full_segment_map is not None, "the model's segment map was not used"
        assert np.array_equal(panel.planner.full_segment_map, seg)
        assert "Couinaud segments" in panel.status.text()
        assert "estimated from the vessels" not in panel.status.text()
    finally:
        close_window(w)
