"""The Correct tab's semi-automatic tools driven through the real window (issue 18, part A): split at a
neck with a real click, scissors and grow-from-seeds strokes with mouse gestures in a pane, interpolation
and margin from their buttons. Each is one undo step; one undo restores the labels exactly."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from guitools import SCRATCH, close_window, wait_idle

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def spill_case():
    from engine.phantom import make_phantom
    from engine.review.spill_phantom import add_neck_spill

    base = make_phantom(seed=3, shape=(64, 128, 128), n_lesions=2)
    case, ball = add_neck_spill(base)
    return base, case, ball


@pytest.fixture(scope="module")
def win(qapp, spill_case):
    from gui.main_window import MainWindow

    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    w.set_case(spill_case[1].copy())
    yield w
    close_window(w)


def _click_voxel(qtbot, view, zyx):
    scene = view.vb.mapViewToScene(view.index_to_view(zyx))
    pos = view.view.mapFromScene(scene)
    qtbot.mouseClick(view.view.viewport(), Qt.LeftButton, pos=pos)


def _spill_removed(before, after, ball, base):
    removed = (before != 0) & (after == 0) & (base.labels == 0)
    rod = (before != 0) & (base.labels == 0) & ~ball
    n = int(np.count_nonzero(removed & ~rod))
    assert abs(n - int(ball.sum())) <= 0.02 * ball.sum(), (n, int(ball.sum()))


def _start(qtbot, win, mode):
    wait_idle(qtbot, win)
    win.tabs.setCurrentWidget(win.tools)
    win.correct_ctl.review.box.set_mode(mode)
    assert win.tools.tool() == "navigate"


def _shot(win, name):
    if SCRATCH.is_dir():
        win.grab().save(str(SCRATCH / name))


def test_split_at_neck_with_a_click(qtbot, win, spill_case):
    from engine.review.spill_phantom import spill_centre

    base, case, ball = spill_case
    _start(qtbot, win, "split")
    c = spill_centre(case)
    win.set_position(c)
    qtbot.waitExposed(win.views[0])
    before = win.case.labels.copy()
    _click_voxel(qtbot, win.views[0], c)
    wait_idle(qtbot, win)
    assert win.history.undo_step.kind == "split"
    assert win.history.undo_description.startswith("Split at neck (Liver parenchyma to background)")
    _spill_removed(before, win.case.labels, ball, base)
    assert "mL changed at a neck" in win.correct_ctl.review.box.status.text()
    _shot(win, "review_split.png")
    win.undo()
    np.testing.assert_array_equal(win.case.labels, before)
    # a click on the background says what to do and changes nothing
    _click_voxel(qtbot, win.views[0], (c[0], 2, 2))
    wait_idle(qtbot, win)
    assert "Click on the part" in win.correct_ctl.review.box.status.text()
    np.testing.assert_array_equal(win.case.labels, before)


def test_scissors_drag_an_outline(qtbot, win, spill_case):
    from engine.review.spill_phantom import spill_centre

    base, case, ball = spill_case
    _start(qtbot, win, "scissors")
    box = win.correct_ctl.review.box
    box.slab.setValue(60.0)
    win.tools.set_active_label(1)
    cz, cy, cx = spill_centre(case)
    sp = case.geometry.spacing
    win.set_position((cz, cy, cx))
    x0, x1 = int(cx - 32 / sp[2]), int(cx + 30 / sp[2])
    y0, y1 = int(cy - 30 / sp[1]), int(cy + 30 / sp[1])
    before = win.case.labels.copy()
    path = [(y0, x0), (y0, x1), (y1, x1), (y1, x0)]
    win.on_mouse("press", (cz, *path[0]), 0, Qt.NoModifier)
    for y, x in path[1:]:
        win.on_mouse("move", (cz, y, x), 0, Qt.NoModifier)
    _shot(win, "review_scissors_outline.png")
    win.on_mouse("release", (cz, *path[-1]), 0, Qt.NoModifier)
    assert win.history.undo_step.kind == "scissors"
    _spill_removed(before, win.case.labels, ball, base)
    assert not np.any((before != 0) & (win.case.labels == 0) & (base.labels != 0))
    win.undo()
    np.testing.assert_array_equal(win.case.labels, before)


def test_grow_from_seeds_preview_apply_undo(qtbot, win, spill_case):
    from engine.review.grow import BACKGROUND_SEED
    from engine.review.spill_phantom import spill_centre

    base, case, ball = spill_case
    _start(qtbot, win, "grow")
    rt = win.correct_ctl.review
    cz, cy, cx = spill_centre(case)
    win.set_position((cz, cy, cx))
    win.tools.size.setValue(3.0)
    before = win.case.labels.copy()
    liver = np.argwhere(base.labels[cz] == 1)
    ly, lx = (int(v) for v in liver[len(liver) // 2])
    # the spill is labelled liver: grown over the whole liver region, the box's faces lie outside it
    rt.box.region.setCurrentIndex(rt.box.region.findData("liver"))
    rt.box.set_seed_value(1)
    for kind, x in (("press", lx - 3), ("move", lx + 3), ("release", lx + 3)):
        win.on_mouse(kind, (cz, ly, x), 0, Qt.NoModifier)
    rt.box.set_seed_value(BACKGROUND_SEED)
    for y in (cy, cy - 12, cy + 12):
        for kind, x in (("press", cx - 6), ("move", cx + 6), ("release", cx + 6)):
            win.on_mouse(kind, (cz, y, x), 0, Qt.NoModifier)
    np.testing.assert_array_equal(win.case.labels, before)       # strokes do not edit the labels
    qtbot.waitUntil(lambda: rt.preview is not None and rt._preview_version == rt.seeds.version, timeout=60000)
    wait_idle(qtbot, win)
    assert win.views[0].extra_layers and "Preview:" in rt.box.status.text()
    _shot(win, "review_grow_preview.png")
    qtbot.mouseClick(rt.box.apply_btn, Qt.LeftButton)
    wait_idle(qtbot, win)
    assert win.history.undo_step.kind == "grow_from_seeds"
    removed = (before != 0) & (win.case.labels == 0) & (base.labels == 0) & ball
    assert abs(int(removed.sum()) - int(ball.sum())) <= 0.02 * ball.sum()
    assert rt.preview is None and not rt.seeds.labels                  # Apply clears the strokes
    win.undo()
    np.testing.assert_array_equal(win.case.labels, before)
    # Cancel forgets strokes without touching the labels
    rt.box.set_seed_value(1)
    win.on_mouse("click", (cz, ly, lx), 0, Qt.NoModifier)
    qtbot.mouseClick(rt.box.cancel_btn, Qt.LeftButton)
    wait_idle(qtbot, win)
    assert not rt.seeds.labels and rt.preview is None
    np.testing.assert_array_equal(win.case.labels, before)


def test_interpolate_three_brushed_slices_of_a_sphere(qtbot, win):
    """Three discs painted with the brush (real gestures), then "Fill the slices between": Dice >= 0.9 to
    the sphere they were cut from."""
    wait_idle(qtbot, win)
    win.correct_ctl.review.box.set_mode("off")
    sp = win.case.geometry.spacing
    before = win.case.labels.copy()
    c = (32, 100, 20)                            # in the background, right of the body's edge? anywhere
    r = 18.0
    win.tools.set_tool("brush")
    win.tools.set_active_label(4)
    win.tools.shape.setCurrentIndex(0)           # 2D disc
    win.tools.rule.setCurrentIndex(0)            # anything
    win.correct_ctl.review.box.set_mode("slices")      # interpolation keeps the brush
    assert win.tools.tool() == "brush"
    zs = (c[0] - 4, c[0], c[0] + 4)
    for z in zs:
        rz = np.sqrt(max(r ** 2 - ((z - c[0]) * sp[0]) ** 2, 0.0))
        win.tools.size.setValue(rz)
        win.on_mouse("click", (z, c[1], c[2]), 0, Qt.NoModifier)
    qtbot.mouseClick(win.correct_ctl.review.box.interp_btn, Qt.LeftButton)
    wait_idle(qtbot, win)
    assert win.history.undo_step.kind == "interpolate"
    zz, yy, xx = np.ogrid[:before.shape[0], :before.shape[1], :before.shape[2]]
    sph = ((zz - c[0]) * sp[0]) ** 2 + ((yy - c[1]) * sp[1]) ** 2 + ((xx - c[2]) * sp[2]) ** 2 <= r ** 2
    sph[:zs[0]] = False
    sph[zs[-1] + 1:] = False
    m = (win.case.labels == 4) & (before != 4)
    dice = 2 * np.count_nonzero(m & sph) / (m.sum() + sph.sum())
    assert dice >= 0.9, dice
    win.set_position((c[0] + 2, c[1], c[2]))     # a filled slice, between two drawn ones
    wait_idle(qtbot, win)
    _shot(win, "review_interpolate.png")
    for _ in range(4):
        win.undo()
    np.testing.assert_array_equal(win.case.labels, before)


def test_margin_of_one_lesion_by_a_click(qtbot, win):
    wait_idle(qtbot, win)
    les = win.report.lesions[0]
    z, y, x = (int(round(v)) for v in les.centroid_zyx)
    assert win.case.labels[z, y, x] == 5
    _start(qtbot, win, "margin")
    rt = win.correct_ctl.review
    rt.box.margin_mm.setValue(5.0)
    rt.box.one_lesion.setChecked(True)
    win.tools.set_active_label(5)
    win.tools.rule.setCurrentIndex(2)            # inside the liver only
    before = win.case.labels.copy()
    win.set_position((z, y, x))
    _click_voxel(qtbot, win.views[0], (z, y, x))
    wait_idle(qtbot, win)
    assert win.history.undo_step.kind == "margin"
    grown = (win.case.labels == 5) & (before != 5)
    assert grown.sum() > 0 and np.all(np.isin(before[grown], (1, 2, 3, 5, 6)))
    _shot(win, "review_margin.png")
    win.undo()
    np.testing.assert_array_equal(win.case.labels, before)
    rt.box.set_mode("off")
    win.tools.rule.setCurrentIndex(0)


def test_a_result_computed_on_labels_changed_since_is_not_applied(qtbot, win, spill_case):
    """The split runs in the background; an edit made before its result arrives makes the result stale: it
    is dropped with a message, and the edit stays the last step."""
    from engine import edits
    from engine.review.spill_phantom import spill_centre

    _, case, _ = spill_case
    _start(qtbot, win, "split")
    c = spill_centre(case)
    win.set_position(c)
    before_steps = win.history.undo_count
    win.on_mouse("click", c, 0, Qt.NoModifier)               # the split starts on a worker
    win.session.apply("brush", "Brush stroke (Liver parenchyma)", edits.brush, (c[0], 5, 5), 3.0,
                      case.geometry.spacing, 1)               # an edit before its result is taken in
    wait_idle(qtbot, win)
    assert win.history.undo_count == before_steps + 1 and win.history.undo_step.kind == "brush"
    assert "changed while this ran" in win.correct_ctl.review.box.status.text()
    win.undo()
    win.correct_ctl.review.box.set_mode("off")
