"""File > Export > Tumour-board report: the window's dialog previews the report of the open case (with the
hand edits made since the labels came) and writes the same document as ``main.py report``."""
from __future__ import annotations

import numpy as np
import pytest

from guitools import SCRATCH, close_window, wait_idle

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def win(qapp, small_case):
    from gui.main_window import MainWindow

    w = MainWindow(with_3d=True)       # the report renders its 3D views offscreen beside the window's 3D pane
    w.resize(1400, 900)
    w.show()
    w.set_case(small_case.copy())
    yield w
    close_window(w)


def test_export_board_report_preview_and_write(qtbot, win, tmp_path):
    pypdf = pytest.importorskip("pypdf")
    from engine import edits
    from engine.labels import Label

    wait_idle(qtbot, win)
    # a hand edit: paint a small ball of lesion into the liver
    liver = np.argwhere(win.case.labels == Label.PARENCHYMA)
    c = liver[len(liver) // 2]
    before = win.case.labels.copy()
    win.session.apply("brush", "Paint CRLM", edits.brush, c, 4.0, win.case.geometry.spacing, int(Label.CRLM))
    added = int(np.count_nonzero((win.case.labels == Label.CRLM) & (before != Label.CRLM)))
    assert added > 0
    wait_idle(qtbot, win)
    dlg = win.files.export_board_report_dialog()
    dlg.reviewed_by.setText("Dr Zoë Łukasik")
    dlg.formats["dcm"].setChecked(False)
    task = dlg.preview()
    assert task is not None
    qtbot.waitUntil(lambda: dlg.report is not None, timeout=180000)
    text = dlg.view.toPlainText()
    assert "Tumour-board report" in text and "Dr Zoë Łukasik" in text
    # the status names the button plainly (it read "Write report…." with a doubled full stop)
    assert dlg.status.text().endswith('Write it with the "Write report…" button.'), dlg.status.text()
    assert f"+{added} " in text                         # the hand edits since the labels came
    if SCRATCH.exists():
        dlg.grab().save(str(SCRATCH / "board_report_dialog.png"))
    dlg.write(tmp_path)
    qtbot.waitUntil(lambda: "Written:" in dlg.status.text() or "could not" in dlg.status.text().lower(),
                    timeout=180000)
    assert "Written:" in dlg.status.text(), dlg.status.text()
    pdf_text = " ".join(" ".join((p.extract_text() or "").split())
                        for p in pypdf.PdfReader(str(tmp_path / "board_report.pdf")).pages)
    assert "Dr Zoë Łukasik" in pdf_text and "Lesion table" in pdf_text
    assert (tmp_path / "board_report.html").exists() and not (tmp_path / "board_report.dcm").exists()
    # the anonymise checkbox: the preview is rebuilt without the case's name
    dlg.anonymise.setChecked(True)
    old = dlg.report
    dlg.preview()
    qtbot.waitUntil(lambda: dlg.report is not old, timeout=180000)
    text = dlg.view.toPlainText()
    assert "Patient: anonymised" in text and win.case.name not in text
    dlg.close()
    # the window's own 3D pane still draws after the report's offscreen rendering in a worker thread
    from PIL import Image
    shot = win.export_screenshot("3d", tmp_path / "pane3d.png")
    assert np.asarray(Image.open(shot).convert("L")).std() > 5
