"""The tumour-board report written from the dialog holds the Plan tab's scenarios as they are when Write is
pressed, not as they were at the last Preview."""
from __future__ import annotations

import pytest

from guitools import close_window, wait_idle

pytestmark = pytest.mark.timeout(300)


def test_write_after_a_new_scenario_rebuilds_the_report(qtbot, qapp, tmp_path):
    from engine.phantom import make_phantom
    from gui.main_window import MainWindow

    w = MainWindow(with_3d=False)
    qtbot.addWidget(w)
    try:
        w.set_case(make_phantom(seed=0, shape=(48, 64, 64), n_lesions=1))
        wait_idle(qtbot, w, timeout=120000)
        panel = w.plan_panel
        panel.compute()
        qtbot.waitUntil(lambda: panel.planner is not None and bool(panel.planner.scenarios), timeout=120000)
        dlg = w.files.export_board_report_dialog()
        for f, cb in dlg.formats.items():
            cb.setChecked(f == "html")
        dlg.preview()
        qtbot.waitUntil(lambda: dlg.report is not None, timeout=180000)
        panel.new_scenario("Zebra resection")          # after the preview
        dlg.write(tmp_path)
        qtbot.waitUntil(lambda: "Written:" in dlg.status.text() or "could not" in dlg.status.text().lower(),
                        timeout=180000)
        assert "Written:" in dlg.status.text(), dlg.status.text()
        html = (tmp_path / "board_report.html").read_text(encoding="utf-8")
        assert "Zebra resection" in html, "the report was written without the scenario made after the preview"
        dlg.close()
    finally:
        close_window(w)
