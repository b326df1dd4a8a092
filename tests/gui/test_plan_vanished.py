"""The Plan tab reads the vanished lesions of a comparison (issue 22): the live figures of the current scenario
say whether it leaves a vanished lesion's site, and follow the scenario as segments are ticked; a comparison
made for another scan is refused in words and the sites already read stay."""
from __future__ import annotations

import json
import re

import pytest
from PySide6.QtCore import QPoint, Qt

from guitools import SCRATCH, close_window, wait_idle

pytestmark = pytest.mark.timeout(600)


def _share_left(text: str) -> float:
    m = re.search(r"Scenario 'Scenario 1' leaves the site of vanished lesion 2 \((\d+) % of", text)
    if m:
        return float(m.group(1))
    assert "Scenario 'Scenario 1' removes the site of vanished lesion 2" in text, text
    return 0.0


def test_plan_tab_says_whether_the_scenario_leaves_a_vanished_site(qtbot, qapp, tmp_path):
    from engine.compare import Comparison
    from engine.compare.synthetic import make_followup
    from engine.io.labelmaps import write_image, write_label_map
    from engine.phantom import make_phantom
    from gui.main_window import MainWindow

    base = make_phantom(seed=3, shape=(96, 128, 128), n_lesions=3, lesion_diameters_mm=(28, 22, 16))
    fu, _truth = make_followup(base, {2: ("vanish",)})
    Comparison(base, fu).run().write(tmp_path / "cmp")
    cj = tmp_path / "cmp" / "comparison.json"
    ct, lab = tmp_path / "fu_ct.nii.gz", tmp_path / "fu_labels.nii.gz"
    write_image(ct, fu)
    write_label_map(lab, fu)

    w = MainWindow()
    w.resize(1500, 950)
    w.show()
    try:
        w.open_path(str(ct), labels=str(lab))
        qtbot.waitUntil(lambda: w.case is not None and w.history.can_undo, timeout=120000)
        wait_idle(qtbot, w, timeout=120000)
        panel = w.plan_panel
        w.tabs.setCurrentWidget(panel)
        assert not panel.vanished_btn.isEnabled()          # nothing planned yet
        qtbot.mouseClick(panel.compute_btn, Qt.LeftButton)
        qtbot.waitUntil(lambda: panel.planner is not None and panel.figures is not None, timeout=120000)
        assert panel.vanished_btn.isEnabled()
        assert "vanished lesion" not in panel.figures_text.text()
        # a comparison made for another scan: refused in words, nothing read
        d = json.loads(cj.read_text())
        d["followup"]["geometry"]["shape_zyx"] = [10, 20, 30]
        (tmp_path / "other.json").write_text(json.dumps(d))
        assert panel.load_vanished(str(tmp_path / "other.json")) == -1
        assert "was made for a follow-up scan" in panel.vanished_status.text()
        assert "vanished lesion" not in panel.figures_text.text()
        # this scan's comparison: the empty scenario leaves the whole site
        assert panel.load_vanished(str(cj)) == 1
        assert "1 vanished lesion(s) from comparison.json" in panel.vanished_status.text()
        text = panel.figures_text.text()
        assert _share_left(text) == 100.0 and "persist microscopically" in text
        # tick the segment holding the site: the live figures follow (less of the site, or none, stays)
        site = w.session.planning.vanished_sites[0]
        zyx = [int(round(v)) for v in w.case.geometry.physical_to_index(site.centre_lps_mm)]
        seg = panel.planner.segment_at(zyx)
        assert seg in range(1, 9)
        box = panel.segment_checks[seg]
        qtbot.mouseClick(box, Qt.LeftButton, pos=QPoint(8, box.height() // 2))
        assert box.isChecked()
        qtbot.waitUntil(lambda: _share_left(panel.figures_text.text()) < 100.0, timeout=30000)
        # the other scan's refusal after a good read keeps the sites read
        assert panel.load_vanished(str(tmp_path / "other.json")) == -1
        assert w.session.planning.vanished_source == "comparison.json"
        panel.refresh_figures()
        assert "vanished lesion 2" in panel.figures_text.text()
        # the tumour-board report made from the window carries the comparison read in the Plan tab
        dlg = w.files.export_board_report_dialog()
        for f, cb in dlg.formats.items():
            cb.setChecked(f == "html")
        dlg.write(tmp_path / "rep")
        qtbot.waitUntil(lambda: "Written:" in dlg.status.text() or "could not" in dlg.status.text().lower(),
                        timeout=180000)
        assert "Written:" in dlg.status.text(), dlg.status.text()
        html = (tmp_path / "rep" / "board_report.html").read_text(encoding="utf-8")
        assert "Change since the baseline scan" in html
        assert re.search(r"Scenario (&#x27;|')Scenario 1(&#x27;|') (leaves|removes) the site of vanished lesion 2",
                         html), "the report lacks the Plan tab's scenario and the vanished site"
        dlg.close()
        from PySide6.QtWidgets import QScrollArea
        panel.findChild(QScrollArea).ensureWidgetVisible(panel.vanished_status)
        qapp.processEvents()
        SCRATCH.mkdir(parents=True, exist_ok=True)
        w.grab().save(str(SCRATCH / "plan_vanished.png"))
    finally:
        close_window(w)
