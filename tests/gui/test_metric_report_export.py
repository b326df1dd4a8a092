"""Evaluate tab > Export report: the window writes the metric report of its evaluation (HTML + PDF) in the
background, and the report pictures the labels that were evaluated."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from guitools import SCRATCH, close_window, wait_idle

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def win(qapp, small_case):
    from gui.main_window import MainWindow

    w = MainWindow(with_3d=False)       # the report needs no 3D pane
    w.resize(1400, 900)
    w.show()
    w.set_case(small_case.copy())
    yield w
    close_window(w)


def test_export_report_of_the_evaluation(qtbot, win, tmp_path):
    pypdf = pytest.importorskip("pypdf")
    wait_idle(qtbot, win)
    assert win.session.reference is not None          # a phantom brings its own ground truth
    assert win.session.evaluation is None
    win.evaluate_panel.export_report_button.click()   # nothing evaluated yet: said, no dialog
    assert "Evaluate first" in win.evaluate_panel.status.text()
    # the liver shrunk by one voxel layer: a known error to picture
    labels = win.case.labels.copy()
    liver = labels == 1
    labels[liver & ~ndi.binary_erosion(liver)] = 0
    from engine import edits
    win.session.commit("restore", "liver shrunk by one layer", edits.replace_all(win.case.labels, labels))
    win.run_evaluation()
    qtbot.waitUntil(lambda: win.session.evaluation is not None, timeout=120000)
    wait_idle(qtbot, win)
    assert win.evaluate_panel.export_report_button.isEnabled()
    task = win.export_report(tmp_path)
    qtbot.waitUntil(lambda: "Report written" in win.evaluate_panel.status.text()
                    or "could not" in win.evaluate_panel.status.text().lower(), timeout=180000)
    status = win.evaluate_panel.status.text()
    assert "Report written" in status, status
    name = win.case.name
    html = (tmp_path / f"{name}_metric_report.html").read_text(encoding="utf-8")
    assert "<svg" in html and "data:image/png;base64," in html
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(str(tmp_path / f"{name}_metric_report.pdf")).pages)
    assert "Metric report" in text and "Liver parenchyma" in text
    # the liver's worst-case picture is there: it lists the case's Dice, below 1
    assert f"{name}: Dice 0." in text.replace("\n", " ")
    from PySide6.QtWidgets import QTabWidget
    tabs = win.evaluate_panel.parentWidget()
    while tabs is not None and not isinstance(tabs, QTabWidget):
        tabs = tabs.parentWidget()
    if tabs is not None:
        tabs.setCurrentWidget(win.evaluate_panel)
    SCRATCH.mkdir(exist_ok=True)
    win.grab().save(str(SCRATCH / "metric_report_export.png"))
    del task
