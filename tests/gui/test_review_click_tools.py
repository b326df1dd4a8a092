"""Vessel trace and lesion from a click driven through the real window (Correct tab): real clicks in the
axial pane, the proposal shown in the panes, Apply = one step that one Undo takes back exactly, bad clicks
answered in words with nothing painted."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from guitools import SCRATCH, close_window, wait_idle
from review_phantoms import build, deleted_branch, dice, lesion_voxels

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def phantom():
    return build(seed=3)


@pytest.fixture(scope="module")
def win(qapp, phantom):
    from gui.main_window import MainWindow

    w = MainWindow()
    w.resize(1500, 950)
    w.show()
    yield w
    close_window(w)


def _click_voxel(qtbot, win, zyx):
    """Show the axial slice through ``zyx`` and click the voxel there with the mouse."""
    win.set_position(zyx)
    view = win.views[0]
    scene = view.vb.mapViewToScene(view.index_to_view(zyx))
    qtbot.mouseClick(view.view.viewport(), Qt.LeftButton, pos=view.view.mapFromScene(scene))


def _open(qtbot, win, case):
    win.set_case(case)
    wait_idle(qtbot, win, 180_000)
    win.tabs.setCurrentWidget(win.tools)


def test_vessel_trace_in_the_window(qtbot, win, phantom):
    case, truth = phantom
    c = case.copy()
    c.labels[:], branch, tip, base = deleted_branch(case, truth, 3)
    _open(qtbot, win, c)
    review = win.correct_ctl.click_tools
    start = win.case.labels.copy()
    win.tools.set_tool("trace")
    win.tools.set_active_label(3)
    _click_voxel(qtbot, win, tip)
    assert "First point set" in review.panel.hint.text()
    assert win.pos == list(tip)                        # the click did not move the crosshair elsewhere
    _click_voxel(qtbot, win, base)
    qtbot.waitUntil(lambda: review.plan is not None, timeout=60_000)
    assert review.panel.apply.isEnabled()
    assert "adds" in review.panel.hint.text() and "Hepatic veins" in review.panel.hint.text()
    mid = tuple(int(v) for v in review.plan.path[len(review.plan.path) // 2])
    win.set_position(mid)
    assert win.views[0].preview_item.isVisible()
    assert np.array_equal(win.case.labels, start)     # a proposal only: nothing painted yet
    if SCRATCH.is_dir():
        win.grab().save(str(SCRATCH / "review_trace_preview.png"))
    qtbot.mouseClick(review.panel.apply, Qt.LeftButton)
    added = (win.case.labels == 3) & (start != 3)
    assert dice(added, branch) >= 0.8
    assert win.history.undo_description == "Vessel trace (Hepatic veins)"
    assert not win.views[0].preview_item.isVisible()
    wait_idle(qtbot, win, 120_000)
    if SCRATCH.is_dir():
        win.grab().save(str(SCRATCH / "review_trace_applied.png"))
    win.undo()
    assert np.array_equal(win.case.labels, start)

    # two points of plain liver: refused in words, nothing painted
    from scipy import ndimage
    far = ndimage.distance_transform_edt(start == 1, sampling=c.geometry.spacing)
    z = base[0]
    pts = np.argwhere(far[z] > 8)
    a = (z, *pts[0])
    b = (z, *pts[len(pts) // 3])
    _click_voxel(qtbot, win, a)
    _click_voxel(qtbot, win, b)
    qtbot.waitUntil(lambda: "not brighter than the liver" in review.panel.hint.text(), timeout=60_000)
    assert review.plan is None and not review.panel.apply.isEnabled()
    assert "not brighter" in win.status_text.text()
    assert np.array_equal(win.case.labels, start)


def test_lesion_from_a_click_in_the_window(qtbot, win, phantom):
    case, _ = phantom
    c = case.copy()
    c.labels[c.labels == 5] = 1                        # the model missed every lesion
    _open(qtbot, win, c)
    review = win.correct_ctl.click_tools
    start = win.case.labels.copy()
    i = max(range(len(case.provenance.extra["lesions"])),
            key=lambda k: case.provenance.extra["lesions"][k]["diameter_mm"])
    click, lesion = lesion_voxels(case, i)
    win.tools.set_tool("lesion")
    _click_voxel(qtbot, win, click)
    qtbot.waitUntil(lambda: review.plan is not None, timeout=60_000)
    normal = review.plan.voxels
    # the slider moves the edge: a new proposal follows it
    review.panel.set_sensitivity(0.0)
    qtbot.waitUntil(lambda: review.plan is not None and review.plan.sensitivity == 0.0, timeout=60_000)
    assert review.plan.voxels < normal
    review.panel.set_sensitivity(0.5)
    qtbot.waitUntil(lambda: review.plan is not None and review.plan.sensitivity == 0.5, timeout=60_000)
    assert review.plan.voxels == normal
    assert win.views[0].preview_item.isVisible()
    assert np.array_equal(win.case.labels, start)
    if SCRATCH.is_dir():
        win.grab().save(str(SCRATCH / "review_lesion_preview.png"))
    qtbot.mouseClick(review.panel.apply, Qt.LeftButton)
    assert dice(win.case.labels == 5, lesion) >= 0.85
    assert win.history.undo_description == "Lesion from a click"
    wait_idle(qtbot, win, 120_000)
    assert win.report is not None and len(win.report.lesions) == 1
    if SCRATCH.is_dir():
        win.grab().save(str(SCRATCH / "review_lesion_applied.png"))
    win.undo()
    assert np.array_equal(win.case.labels, start)

    # clicks in bad places: words, nothing painted
    z = click[0]
    air = (z, *np.argwhere((start[z] == 0) & (c.image[z] < -900))[0])
    vessel_pts = np.argwhere(start == 2)
    vessel = tuple(int(v) for v in vessel_pts[len(vessel_pts) // 2])
    for where, words in ((air, "on air"), (vessel, "on a vessel")):
        _click_voxel(qtbot, win, where)
        qtbot.waitUntil(lambda: words in review.panel.hint.text(), timeout=60_000)
        assert review.plan is None and not review.panel.apply.isEnabled()
    if SCRATCH.is_dir():
        win.grab().save(str(SCRATCH / "review_lesion_refused.png"))
    assert np.array_equal(win.case.labels, start)
    # Cancel drops a proposal
    _click_voxel(qtbot, win, click)
    qtbot.waitUntil(lambda: review.plan is not None, timeout=60_000)
    qtbot.mouseClick(review.panel.cancel, Qt.LeftButton)
    assert review.plan is None and not win.views[0].preview_item.isVisible()
    assert np.array_equal(win.case.labels, start)
