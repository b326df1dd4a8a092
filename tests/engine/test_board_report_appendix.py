"""The tumour-board report's appendices are lettered without gaps (gui_review finding: a report without
an evaluation or hand edits went A, B, C, F, G and a reader looked for D and E)."""
from __future__ import annotations

import re

from engine.board_report import BoardOptions, build_report, write_report
from engine.phantom import make_phantom


def test_appendix_letters_follow_on_when_sections_are_left_out(tmp_path):
    case = make_phantom(seed=3, shape=(48, 80, 80), n_lesions=2)
    rep = build_report(case, BoardOptions(views_3d=False))     # no evaluation, no edits, no 3D views
    write_report(rep, tmp_path, ("html",))
    html = (tmp_path / "board_report.html").read_text(encoding="utf-8")
    letters = re.findall(r"Appendix ([A-Z]) —", html)
    assert letters == ["A", "B", "C", "D"], letters        # volumes, lesions, scenarios, key images
    assert re.search(r"Appendix D — Key images", html, re.I), re.findall(r"Appendix D — [^<]*", html)
