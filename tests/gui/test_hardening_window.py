"""Issue 13 through the window: a CT with NaN voxels opens with the count shown; a model package whose plans
name a command never runs it from the window's Run (the window calls engine.inference.segment in its worker).

Only public methods and widgets of the window are used (open_path, run_segmentation, runner, status_text,
segment_panel.status).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)


def _wait_runner(qtbot, win, timeout=120_000):
    qtbot.waitUntil(lambda: not win.runner.running(), timeout=timeout)


@pytest.fixture(scope="module")
def win(qapp):
    from gui.main_window import MainWindow

    w = MainWindow(with_3d=False)
    w.resize(1200, 800)
    w.show()
    yield w
    if w.history is not None:
        w.history.mark_saved()
    w.close()


def test_a_ct_with_nan_voxels_opens_in_the_window_with_their_count(qtbot, win, tmp_path):
    import SimpleITK as sitk

    a = np.full((24, 64, 64), -1000.0, np.float32)
    a[2:22, 8:56, 8:56] = 40.0
    a[10, 30, 30] = np.nan
    a[11, 31, 31] = np.inf
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((1.5, 1.5, 2.5))
    f = tmp_path / "nan_ct.nii.gz"
    sitk.WriteImage(img, str(f))
    win.open_path(f)
    qtbot.waitUntil(lambda: win.case is not None and win.case.name == "nan_ct", timeout=60_000)
    _wait_runner(qtbot, win)
    text = win.status_text.text()
    assert "2 voxels" in text and "treated as air (-1024 HU)" in text, text
    assert win.case.image.min() >= -1024


def test_the_windows_run_never_executes_a_command_from_plans(qtbot, win, tmp_path, tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from tiny_model import cached_tiny_model, small_phantom, tiny_plans

    from engine.models import load_model

    marker = tmp_path / "PWNED_window"
    plans = tiny_plans()
    kw = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    kw["nonlin"], kw["nonlin_kwargs"] = "os.system", {"command": f"touch {marker}"}
    good = load_model(cached_tiny_model(tmp_path_factory))
    evil = dataclasses.replace(good, plans=plans)
    win.set_case(small_phantom(shape=(24, 48, 48)))
    _wait_runner(qtbot, win)
    win.run_segmentation(model=evil)
    _wait_runner(qtbot, win)
    assert not marker.exists(), "the command in plans.json ran"
    msg = win.segment_panel.status.text()
    assert "arch_kwargs.nonlin" in msg and "unchanged" in msg, msg
