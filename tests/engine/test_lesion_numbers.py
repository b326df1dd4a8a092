"""Lesion numbers survive edits (engine.lesion_ids through the session's measurements): a deleted lesion's
number is not reused, a new lesion gets the next number, a split keeps the number on the bigger part, a
merge keeps the lowest, undo/redo restore the numbers as they were; plus the lesion sanity flags."""
from __future__ import annotations

import numpy as np
import pytest

from engine import edits
from engine.case import Case
from engine.case_session import CaseSession
from engine.geometry import Geometry
from engine.labels import Label
from engine.lesion_ids import LesionNumbering
from engine.measure import measure
from engine.session import AutosaveStore

SHAPE = (30, 60, 60)
#: lesion boxes (z0, z1, y0, y1, x0, x1) inside the liver block, of decreasing size
BOXES = [(5, 15, 10, 22, 10, 22),      # 1: 1440 voxels
         (5, 13, 30, 40, 10, 20),      # 2: 800
         (18, 24, 10, 18, 35, 43),     # 3: 384
         (18, 22, 30, 35, 35, 40)]     # 4: 100


def _case() -> Case:
    img = np.full(SHAPE, -100, np.int16)
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:28, 5:55, 5:55] = Label.PARENCHYMA
    img[lab == Label.PARENCHYMA] = 100
    for b in BOXES:
        lab[b[0]:b[1], b[2]:b[3], b[4]:b[5]] = Label.CRLM
        img[b[0]:b[1], b[2]:b[3], b[4]:b[5]] = 50
    return Case(image=img, geometry=Geometry(SHAPE, (2.0, 1.0, 1.0)), labels=lab, name="numbers")


@pytest.fixture()
def session(tmp_path):
    s = CaseSession(AutosaveStore(tmp_path / "data", fallback=tmp_path / "fb"), journal=False)
    s.open_case(_case())
    s.derived.run_pending()
    return s


def _numbers(s: CaseSession) -> dict[int, int]:
    """lesion number -> voxel count, after the measurements caught up."""
    s.derived.run_pending()
    return {l.id: l.voxel_count for l in s.report.lesions}


def _centre(b):
    return ((b[0] + b[1]) // 2, (b[2] + b[3]) // 2, (b[4] + b[5]) // 2)


def _paint(s: CaseSession, box, value, kind="brush"):
    def op(labels):
        sl = tuple(slice(box[2 * a], box[2 * a + 1]) for a in range(3))
        before = labels[sl].copy()
        labels[sl] = value
        return edits.Region(tuple(box), before)
    return s.apply(kind, "paint", op)


def test_first_numbering_is_by_size(session):
    assert _numbers(session) == {1: 1440, 2: 800, 3: 384, 4: 100}
    # the table is still in size order
    assert [l.voxel_count for l in session.report.lesions] == [1440, 800, 384, 100]


def test_delete_undo_redo_and_new_lesion(session):
    s = session
    s.apply("delete_component", "Delete lesion 2", edits.delete_component, _centre(BOXES[1]))
    assert _numbers(s) == {1: 1440, 3: 384, 4: 100}            # 3 and 4 keep their numbers
    s.undo()
    assert _numbers(s) == {1: 1440, 2: 800, 3: 384, 4: 100}    # undo: lesion 2 is lesion 2 again
    s.redo()
    assert _numbers(s) == {1: 1440, 3: 384, 4: 100}
    # a new lesion drawn elsewhere: the next number, not the deleted lesion's 2
    _paint(s, (24, 27, 45, 50, 45, 50), Label.CRLM)
    assert _numbers(s) == {1: 1440, 3: 384, 4: 100, 5: 75}
    s.undo()
    s.undo()                                                   # back to the four lesions as opened
    assert _numbers(s) == {1: 1440, 2: 800, 3: 384, 4: 100}
    s.redo()
    s.redo()
    assert _numbers(s) == {1: 1440, 3: 384, 4: 100, 5: 75}


def test_split_keeps_the_number_on_the_bigger_part(session):
    s = session
    # cut lesion 1 (z 5-15) at z 12: 7 slices stay (1008 voxels), 2 slices go (288 voxels)
    b = BOXES[0]
    _paint(s, (12, 13, b[2], b[3], b[4], b[5]), Label.PARENCHYMA)
    got = _numbers(s)
    assert got[1] == 7 * 144 and got[5] == 2 * 144 and got[2] == 800 and got[3] == 384, got
    s.undo()
    assert _numbers(s) == {1: 1440, 2: 800, 3: 384, 4: 100}
    s.redo()
    assert _numbers(s) == got


def test_merge_keeps_the_lower_number(session):
    s = session
    # join lesion 3 (z 18-24, x 35-43) and lesion 4 (z 18-22, y 30-35, x 35-40) by a bridge of lesion
    _paint(s, (18, 20, 18, 30, 36, 39), Label.CRLM)
    got = _numbers(s)
    assert set(got) == {1, 2, 3}, got                         # 4 joined 3: the lower number stays
    assert got[3] == 384 + 100 + 2 * 12 * 3
    s.undo()
    assert _numbers(s) == {1: 1440, 2: 800, 3: 384, 4: 100}   # undo: 3 and 4 are themselves again
    # a later lesion still gets a number never given (5), not the merged-away 4
    s.redo()
    _paint(s, (24, 27, 45, 50, 45, 50), Label.CRLM)
    assert set(_numbers(s)) == {1, 2, 3, 5}


def test_merge_keeps_the_lower_number_even_when_it_was_the_smaller_lesion():
    n = LesionNumbering()
    big, small = np.arange(100, 200), np.arange(0, 10)
    assert n.assign([big, small]) == [1, 2]
    n.live = {1: small, 2: big}                                # lesion 1 the small one, 2 the big one
    n._by_key = {}
    assert n.assign([np.arange(0, 200)]) == [1]


def test_a_reopened_label_map_is_numbered_by_size(session):
    s = session
    s.apply("delete_component", "Delete lesion 1", edits.delete_component, _centre(BOXES[0]))
    assert set(_numbers(s)) == {2, 3, 4}
    # measured afresh (the CLI, a file opened again): 1..n by decreasing volume
    assert [l.id for l in measure(s.case).lesions] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------- flags
def test_implausible_lesions_and_liver_are_flagged():
    case = _case()
    img, lab = case.image, case.labels
    img[BOXES[1][0]:BOXES[1][1], BOXES[1][2]:BOXES[1][3], BOXES[1][4]:BOXES[1][5]] = -75   # lesion 2: fat
    img[BOXES[2][0]:BOXES[2][1], BOXES[2][2]:BOXES[2][3], BOXES[2][4]:BOXES[2][5]] = 5     # lesion 3: water
    # lesion 4 outside the liver: the liver around it erased (bowel)
    b = BOXES[3]
    lab[b[0] - 2:b[1] + 2, b[2] - 2:b[3] + 2, b[4] - 2:b[5] + 2][
        lab[b[0] - 2:b[1] + 2, b[2] - 2:b[3] + 2, b[4] - 2:b[5] + 2] == Label.PARENCHYMA] = 0
    rep = measure(case)
    flags = {l.id: l.flags for l in rep.lesions}
    assert flags[1] == []
    assert "fat or air" in flags[2][0] and "-75 HU" in flags[2][0]
    assert "water density" in flags[3][0] and "5 HU" in flags[3][0]
    assert any("outside the liver" in f for f in flags[4]), flags[4]
    text = " ".join(rep.warnings)
    assert "lesion 2:" in text and "lesion 3:" in text and "lesion 4:" in text
    rows = {r["lesion"]: r for r in rep.lesion_rows()}
    assert rows[1]["check"] == "" and "fat or air" in rows[2]["check"]
    # the incremental measurer (the window) flags the same after an edit near lesion 4
    from engine.measure import IncrementalMeasurer
    m = IncrementalMeasurer(_case())
    m.live[b[0] - 2:b[1] + 2, b[2] - 2:b[3] + 2, b[4] - 2:b[5] + 2][
        m.live[b[0] - 2:b[1] + 2, b[2] - 2:b[3] + 2, b[4] - 2:b[5] + 2] == Label.PARENCHYMA] = 0
    upd = m.update((b[0] - 2, b[1] + 2, b[2] - 2, b[3] + 2, b[4] - 2, b[5] + 2))
    assert any("outside the liver" in f for f in upd.lesions[3].flags)


def test_a_liver_of_2554_ml_is_flagged():
    shape = (40, 100, 100)
    lab = np.zeros(shape, np.uint8)
    lab[:, 5:95, 5:95] = Label.PARENCHYMA          # 40 x 90 x 90 voxels of 7.88 mm^3 = 2,554 mL
    case = Case(image=np.full(shape, 100, np.int16), geometry=Geometry(shape, (2.5, 1.776, 1.776)), labels=lab)
    rep = measure(case)
    assert 2550 < rep.value("liver.total_volume_ml") < 2560
    assert any("2,55" in w and "spilled" in w for w in rep.warnings), rep.warnings
    ok = measure(_case())
    assert not any("spilled" in w for w in ok.warnings)


# ---------------------------------------------------------------------------------------------- save state
def test_a_label_map_just_opened_is_not_unsaved(session, tmp_path):
    """Opening a label file shows the file's labels: closing must not ask to save them; an edit does."""
    s = session
    labels = s.case.labels.copy()
    labels[labels == Label.CRLM] = Label.PARENCHYMA
    s.open_labels(labels, tmp_path / "labels.nii.gz")
    assert not s.is_modified
    _paint(s, (24, 27, 45, 50, 45, 50), Label.CRLM)
    assert s.is_modified
    s.undo()
    assert not s.is_modified


# ---------------------------------------------------------------------------------------------- one numbering
def test_planning_and_board_report_use_the_sessions_numbers(session):
    """After lesion 1 is deleted, the planning and the tumour-board report call the others 2, 3, 4 (the
    Measure tab's numbers), not 1, 2, 3."""
    from engine.lesion_ids import ids_like_report
    from engine.planning.planner import Planner

    s = session
    s.apply("delete_component", "Delete lesion 1", edits.delete_component, _centre(BOXES[0]))
    s.derived.run_pending()
    shown = {l.id: l.voxel_count for l in s.report.lesions}
    assert shown == {2: 800, 3: 384, 4: 100}
    p = Planner(s.case.labels, s.case.geometry,
                lesion_ids=lambda comps: ids_like_report(comps, s.report.lesions)).run()
    assert {l.id: round(l.volume_ml / s.case.geometry.voxel_volume_ml) for l in p.lesions} == shown
    # a lesion the report does not know yet gets the next number after the report's
    assert ids_like_report([(5, (1.0, 1.0, 1.0)), (800, s.report.lesions[0].centroid_zyx)],
                           s.report.lesions) == [5, 2]


def test_the_board_report_from_the_window_keeps_its_numbers(session):
    """The tumour-board report made from the session's measurements names the lesions as the window does,
    and its planning locates the same lesions under the same numbers."""
    from engine.board_report import BoardOptions, build_report

    s = session
    s.apply("delete_component", "Delete lesion 1", edits.delete_component, _centre(BOXES[0]))
    s.derived.run_pending()
    rep = build_report(s.case.copy(), BoardOptions(views_3d=False), measurements=s.report)
    assert [l.id for l in rep.measurements.lesions] == [2, 3, 4]
    assert rep.planner is not None
    by_id = {l.id: l for l in rep.planner.lesions}
    assert set(by_id) == {2, 3, 4}
    for l in rep.measurements.lesions:
        assert round(by_id[l.id].volume_ml, 3) == pytest.approx(l.volume_ml, abs=1e-3)
