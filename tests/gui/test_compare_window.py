"""The comparison window (issue 22) driven as a user does: two phantoms compared on a worker, a click on
a table row moves both viewers to the lesion; a refusal is said in the window."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PySide6.QtCore import Qt

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def pair():
    from engine.compare.synthetic import make_followup
    from engine.phantom import make_phantom

    base = make_phantom(seed=3, shape=(80, 112, 112), n_lesions=3, lesion_diameters_mm=(28, 22, 16))
    fu, truth = make_followup(base, {2: ("vanish",), 1: ("shrink", 0.5)}, new_lesions=(16,))
    return base, fu, truth


def test_compare_two_phantoms_click_row_both_views_jump(qtbot, pair, tmp_path):
    from gui.compare_window import CompareWindow

    base, fu, truth = pair
    w = CompareWindow(base, fu)
    qtbot.addWidget(w)
    w.show()
    w.start()
    qtbot.waitUntil(lambda: w.comparison is not None or w.error is not None, timeout=600_000)
    assert w.error is None
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=10_000)
    kinds = [w.table.item(i, 1).text() for i in range(w.table.rowCount())]
    assert sorted(kinds) == ["matched", "matched", "new", "vanished"]
    assert "RECIST 1.1" in w.summary.text() and "PD" in w.summary.text()      # a new lesion
    i = kinds.index("vanished")
    rect = w.table.visualRect(w.table.model().index(i, 0))
    qtbot.mouseClick(w.table.viewport(), Qt.LeftButton, pos=rect.center())
    want = [int(round(v)) for v in w.rows[i].baseline_zyx]
    assert list(w.base_view.pos_zyx) == want and list(w.fu_view.pos_zyx) == want
    assert w.base_view.highlight.isVisible() and w.fu_view.highlight.isVisible()
    # the vanished lesion is in the baseline viewer's labels at that place, not in the follow-up's
    z, y, x = want
    assert w.base_view.labels[z, y, x] == 5 and w.fu_view.labels[z, y, x] != 5
    # another row moves both again
    j = kinds.index("new")
    rect = w.table.visualRect(w.table.model().index(j, 0))
    qtbot.mouseClick(w.table.viewport(), Qt.LeftButton, pos=rect.center())
    want2 = [int(round(v)) for v in w.rows[j].baseline_zyx]
    assert want2 != want and list(w.base_view.pos_zyx) == want2 and list(w.fu_view.pos_zyx) == want2
    # targets: too many is said in words, a valid choice re-computes the summary
    w.targets_edit.setText("1,2,3")
    w.apply_targets()
    assert "at most 2 target lesions" in w.status.text()
    w.targets_edit.setText("1")
    w.apply_targets()
    assert "targets 1)" in w.summary.text()
    # re-pair by hand: unpair the matched lesion 3 (vanished + new), pair it back by typing
    k = next(i for i, r in enumerate(w.rows) if r.kind == "matched" and r.baseline_ids == [3])
    fid = w.rows[k].followup_ids[0]
    w.table.selectRow(k)
    w.unpair_selected()
    kinds = sorted(w.table.item(i, 1).text() for i in range(w.table.rowCount()))
    assert kinds == ["matched", "new", "new", "vanished", "vanished"]
    w.pair_edit.setText(f"3:{fid}")
    w.apply_pair()
    assert any(w.table.item(i, 1).text() == "matched (by hand)" for i in range(w.table.rowCount()))
    w.pair_edit.setText("3:99")
    w.apply_pair()
    assert "no lesion 99" in w.status.text()
    shot = os.environ.get("LIVERPLAN_SHOT_DIR", str(tmp_path))
    w.grab().save(os.path.join(shot, "compare_window.png"))
    w.close()


def test_refusal_said_in_the_window(qtbot, pair):
    from engine.labels import Label
    from gui.compare_window import CompareWindow

    base, fu, truth = pair
    empty = fu.copy()
    lab = empty.labels.copy()
    lab[(lab == Label.PARENCHYMA) | (lab == Label.CRLM)] = 0
    empty.set_labels(lab)
    w = CompareWindow(base, empty, with_3d=False)
    qtbot.addWidget(w)
    w.start()
    qtbot.waitUntil(lambda: w.error is not None, timeout=120_000)
    assert "no liver label" in w.status.text() and w.comparison is None
    assert w.table.rowCount() == 0
    w.close()


def test_file_menu_entry_opens_the_comparison(qtbot, pair, monkeypatch):
    """File > Compare with a follow-up…: asks for the follow-up's CT and labels, opens the window on a copy
    of the open case; without labels it says what is missing."""
    from PySide6.QtWidgets import QFileDialog

    from engine.io import write_image, write_label_map
    from gui import compare_window
    from gui.main_window import MainWindow
    from guitools import close_window, wait_idle

    base, fu, truth = pair
    w = MainWindow(with_3d=False)
    qtbot.addWidget(w)
    act = next(a for a in w.menuBar().actions()[0].menu().actions() if a.text() == "Compare with a follow-up…")
    w.set_case(base.copy())
    wait_idle(qtbot, w)
    import tempfile
    d = tempfile.mkdtemp()
    ct = str(write_image(os.path.join(d, "fu_ct.nii.gz"), fu))
    lab = str(write_label_map(os.path.join(d, "fu_labels.nii.gz"), fu))
    answers = iter([(ct, ""), (lab, "")])
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: next(answers)))
    opened = []
    monkeypatch.setattr(compare_window.CompareWindow, "start", lambda self: opened.append(self))
    act.trigger()
    assert len(opened) == 1
    cw = opened[0]
    assert cw.followup_paths == (ct, lab) and cw.baseline is not w.case and cw.baseline.name == base.name
    cw.close()
    close_window(w)
