"""The planning kept with the case (engine.planning.state, CaseSession.change_plan): scenarios, patient and
segment-map corrections are undo steps in one Ctrl+Z order with the label edits, survive a crash through
the autosave folder, and are saved beside the labels and read back with them."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from engine.case_session import CaseSession
from engine.errors import InputError
from engine.phantom import make_phantom
from engine.planning.resection import Patient
from engine.planning.state import PlanningState, VoxelStroke, plan_paths
from engine.session import AutosaveStore

SHAPE = (24, 48, 48)


@pytest.fixture()
def store(tmp_path):
    return AutosaveStore(tmp_path / "data", fallback=tmp_path / "fallback")


def _case():
    return make_phantom(seed=5, shape=SHAPE, n_lesions=1)


def _brush(s: CaseSession, z: int, value: int = 1) -> None:
    s.begin_stroke()
    s.dab((z, 10, 10), 0, 2.0, value)
    s.end_stroke("brush", f"Brush {z}")


def _flat(*zyx):
    return np.ravel_multi_index(tuple(np.asarray(zyx).T), SHAPE)


def test_label_and_plan_steps_undo_in_one_order_without_corrupting_each_other(store):
    s = CaseSession(store)
    s.open_case(_case())
    labels0 = s.case.labels.copy()
    _brush(s, 5, 5)                                     # 1 label
    lab1 = s.case.labels.copy()
    s.change_plan("new_scenario", "Right hepatectomy")  # 2 plan
    s.change_plan("set_scenario", "Right hepatectomy", segments=[5, 6, 7, 8])   # 3 plan
    _brush(s, 15, 5)                                    # 4 label
    assert s.undo_description == "Brush 15"
    s.undo()                                            # takes 4 back: the plan stays
    assert np.array_equal(s.case.labels, lab1)
    assert s.planning.scenario("Right hepatectomy").segments == [5, 6, 7, 8]
    assert s.undo_description == "Change scenario 'Right hepatectomy'"
    s.undo()                                            # takes 3 back: the labels stay
    assert s.planning.scenario("Right hepatectomy").segments == []
    assert np.array_equal(s.case.labels, lab1)
    s.undo()                                            # 2
    assert s.planning.scenarios == []
    s.undo()                                            # 1
    assert np.array_equal(s.case.labels, labels0)
    assert s.undo() is None and s.undo_description is None
    for _ in range(3):
        s.redo()
    assert s.planning.scenario("Right hepatectomy").segments == [5, 6, 7, 8]
    assert np.array_equal(s.case.labels, lab1)
    assert s.redo_description == "Brush 15"
    # a new plan step ends what could be redone, in both histories
    s.change_plan("new_scenario")
    assert s.redo_description is None and not s.history.can_redo
    s.undo()
    _brush(s, 3, 1)                                     # a new label step ends the plan's redo
    assert s.redo_description is None and not s.planning.can_redo


def test_segment_map_corrections_undo_and_redo_exactly(store):
    s = CaseSession(store)
    s.open_case(_case())
    base = np.zeros(SHAPE, np.uint8)
    base[:, :, :24], base[:, :, 24:] = 5, 4
    heard = []
    s.listen(lambda k, d: heard.append(d) if k == "planning" else None)
    s.change_plan("correct_segments", _flat((5, 5, 5), (6, 5, 5)), 7, base_map=base)
    assert s.planning.segment_map[5, 5, 5] == 7 and s.planning.segment_map[5, 5, 30] == 4
    assert "corrected by hand" in s.planning.segment_source and heard[-1].map_changed
    first = s.planning.segment_map.copy()
    s.change_plan("correct_segments", _flat((10, 20, 30), (11, 21, 31)), 2)
    assert s.planning.segment_map[10, 20, 30] == 2
    s.undo()
    assert np.array_equal(s.planning.segment_map, first)
    s.undo()
    assert s.planning.segment_map is None and s.planning.segment_source == ""    # from the vessels again
    s.redo()
    s.redo()
    assert s.planning.segment_map[11, 21, 31] == 2 and s.planning.segment_map[5, 5, 5] == 7
    with pytest.raises(InputError):
        s.change_plan("correct_segments", _flat((1, 1, 1)), 9)
    assert s.change_plan("correct_segments", _flat((5, 5, 5)), 7) is None        # nothing changed


def test_typing_a_height_or_margin_is_one_step():
    st = PlanningState(SHAPE)
    st.new_scenario("A")
    for h in (1.0, 17.0, 178.0):
        st.set_patient(Patient(h, None, "normal"), merge=True)
    assert st.patient.height_cm == 178.0
    st.undo()
    assert st.patient == Patient() and st.undo_step.kind == "scenario_new"
    for m in (1.0, 12.0):
        st.set_scenario("A", margin_mm=m, merge=True)
    st.set_scenario("A", segments=[2, 3], merge=True)       # a tick is a step of its own
    st.undo()
    assert st.scenario("A").margin_mm == 12.0
    st.undo()
    assert st.scenario("A").margin_mm == 10.0


def test_painting_is_set_arithmetic_in_the_engine():
    st = PlanningState(SHAPE)
    st.new_scenario("W")
    stroke = VoxelStroke()
    stroke.add(np.array([5, 3, 9]))
    stroke.add(np.array([3, 4]))
    assert stroke.voxels.tolist() == [3, 4, 5, 9]
    st.paint("W", stroke.voxels)
    st.paint("W", np.array([4, 9]), erase=True)
    assert st.scenario("W").painted.tolist() == [3, 5]
    st.undo()
    assert st.scenario("W").painted.tolist() == [3, 4, 5, 9]
    with pytest.raises(InputError):
        st.paint("W", np.array([int(np.prod(SHAPE))]))


def test_plan_survives_a_crash_through_the_autosave(store):
    s = CaseSession(store)
    case = _case()
    s.open_case(case)
    base = np.where(case.labels > 0, 5, 0).astype(np.uint8)
    s.change_plan("new_scenario", "Wedge")
    s.change_plan("set_scenario", "Wedge", segments=[2, 3], wedges=[1], margin_mm=5.0)
    s.change_plan("paint", "Wedge", _flat((4, 4, 4), (4, 4, 5)))
    s.change_plan("set_patient", Patient(178.0, 80.0, "chemotherapy"))
    s.change_plan("correct_segments", _flat((12, 24, 24)), 8, base_map=base)
    want = s.planning.to_dict()
    want_map = s.planning.segment_map.copy()
    # the process dies here: a new session opens the same case and is offered the plan back
    s2 = CaseSession(store)
    s2.open_case(_case())
    entry = s2.find_autosave()
    assert entry is not None
    s2.restore_autosave(entry)
    assert s2.planning.to_dict() == want
    assert np.array_equal(s2.planning.segment_map, want_map)
    assert s2.is_modified and s2.undo_description == "Restore the autosaved plan"
    assert np.array_equal(s2.case.labels, _case().labels)          # no label edits were made


def test_plan_and_label_edits_restore_together(store):
    s = CaseSession(store)
    s.open_case(_case())
    _brush(s, 5, 5)
    s.change_plan("new_scenario", "Left lateral")
    labels = s.case.labels.copy()
    s.autosave()                                     # a snapshot; the plan file stays beside it
    _brush(s, 9, 3)
    labels = s.case.labels.copy()
    s2 = CaseSession(store)
    s2.open_case(_case())
    s2.restore_autosave(s2.find_autosave())
    assert np.array_equal(s2.case.labels, labels)
    assert [sc.name for sc in s2.planning.scenarios] == ["Left lateral"]


def test_saving_keeps_the_plan_beside_the_labels_and_opening_reads_it(store, tmp_path):
    from engine.io import read_label_map

    s = CaseSession(store)
    case = _case()
    s.open_case(case)
    s.change_plan("new_scenario", "Extended right")
    s.change_plan("set_scenario", "Extended right", segments=[4, 5, 6, 7, 8])
    s.change_plan("correct_segments", _flat((12, 24, 24)), 6, base_map=np.full(SHAPE, 4, np.uint8))
    assert s.is_modified
    path = tmp_path / "case_labels.nii.gz"
    assert s.save(path)
    js, seg = plan_paths(path)
    assert js.name == "case_labels.plan.json" and seg.name == "case_labels.segments.nii.gz"
    assert js.is_file() and seg.is_file()
    assert not s.is_modified and s.find_autosave() is None
    # another session: the labels opened again bring their plan
    s2 = CaseSession(store)
    s2.open_case(_case())
    s2.open_labels(read_label_map(str(path), s2.case), path)
    assert s2.planning.scenario("Extended right").segments == [4, 5, 6, 7, 8]
    assert np.array_equal(s2.planning.segment_map, s.planning.segment_map)
    assert "corrected by hand" in s2.planning.segment_source
    s2.undo()                                        # the plan read is a step of its own
    assert s2.planning.scenarios == [] and s2.planning.segment_map is None


def test_a_plan_for_another_grid_is_said_not_used(store, tmp_path):
    from engine.io import read_label_map

    s = CaseSession(store)
    s.open_case(_case())
    path = tmp_path / "l.nii.gz"
    s.save(path)
    plan_paths(path)[0].write_text('{"kind": "plan", "shape_zyx": [1, 2, 3], "scenarios": []}')
    heard = []
    s.listen(lambda k, d: heard.append(d) if k == "message" else None)
    s.open_labels(read_label_map(str(path), s.case), path)
    assert any("plan saved with these labels was not read" in str(m) for m in heard)
    assert s.planning.scenarios == []


def test_planner_reads_segment_maps_through_a_public_labelmaps_function():
    src = Path(__file__).resolve().parents[2] / "engine" / "planning" / "planner.py"
    for node in ast.walk(ast.parse(src.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert not any(a.name.startswith("_") for a in node.names), \
                f"planner imports a private name from {node.module}"


def test_correct_tab_brush_and_fill_on_the_segment_map_are_plan_steps(store):
    """The Correct tab's tools on the segment map: engine.edits' brush and slice fill, limited to the liver,
    each one plan step (undo/redo exact, autosaved), interleaved with label steps."""
    from engine import edits

    s = CaseSession(store)
    case = _case()
    s.open_case(case)
    liver = np.zeros(SHAPE, bool)
    liver[:, 8:40, 8:40] = True
    base = np.where(liver, 5, 0).astype(np.uint8)
    base[:, :, 24:][liver[:, :, 24:]] = 4
    s.begin_segment_stroke(base, liver)
    s.dab((12, 24, 10), 0, 4.0, 7)
    s.dab((12, 24, 4), 0, 4.0, 7)                    # partly outside the liver: only liver voxels change
    step = s.end_stroke("brush", "Brush stroke (segment VII)")
    m = s.planning.segment_map
    assert step is not None and step.kind == "segment_correction"
    assert m[12, 24, 10] == 7 and m[12, 24, 4] == 0 and m[12, 24, 8] == 7
    assert np.array_equal(m[~liver], base[~liver]) and m[13, 24, 10] == 5      # a disc in this slice only
    assert "corrected by hand" in s.planning.segment_source
    after_brush = m.copy()
    _brush(s, 2, 5)                                  # a label step between
    s.apply_to_segment_map("Fill in slice (segment II)", edits.flood_fill_slice, (20, 30, 30), 0, 2,
                           base_map=base, liver=liver)
    m = s.planning.segment_map
    assert (m[20][liver[20] & (base[20] == 4)] == 2).all() and (m[21][liver[21] & (base[21] == 4)] == 4).all()
    from engine.session import read_journal
    records = read_journal(s._folder / "plan-segments.bin")
    assert len(records) == 2 and records[1][0][:2] == (20, 21)     # the whole map once, then the fill's box
    assert s.undo_description == "Fill in slice (segment II)"
    s.undo()
    assert np.array_equal(s.planning.segment_map, after_brush)
    s.undo()                                         # the label step
    assert np.array_equal(s.case.labels, case.labels)
    s.undo()                                         # the brush stroke: no map of its own any more
    assert s.planning.segment_map is None
    s.redo()
    assert np.array_equal(s.planning.segment_map, after_brush)
    # the autosaved plan holds the corrected map
    s2 = CaseSession(store)
    s2.open_case(_case())
    s2.restore_autosave(s2.find_autosave())
    assert np.array_equal(s2.planning.segment_map, after_brush)
    with pytest.raises(InputError):
        PlanningState(SHAPE).edit_array(None)           # no map and no estimate: said, not painted


def test_segment_map_read_by_segment_names_and_a_foreign_map_asks_for_a_mapping(tmp_path):
    """A 3D Slicer segmentation whose segment names say the segment is read by name; a map with values
    other than 0-8 is refused with a request for a segment mapping, and read through one."""
    import nrrd
    import SimpleITK as sitk

    from engine.geometry import Geometry
    from engine.planning.planner import SegmentMappingNeeded, read_segment_map, segment_of_name

    assert [segment_of_name(n) for n in ("segment 2", "Couinaud IV", "liver_segment_5", "Segment IVa", "S7",
                                         "liver", "Portal vein", "segment 9")] == [2, 4, 5, 4, 7, None, None, None]
    shape = (6, 8, 10)
    g = Geometry(shape, (2.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    arr = np.zeros(shape, np.uint8)
    arr[:, :4], arr[:, 4:6], arr[:, 6:] = 1, 2, 3
    header = {"type": "unsigned char", "dimension": 3, "space": "left-posterior-superior",
              "space directions": np.diag([1.0, 1.0, 2.0]), "space origin": np.zeros(3),
              "kinds": ["domain"] * 3, "encoding": "gzip"}
    for i, (name, value) in enumerate((("Couinaud IV", 1), ("liver_segment_5", 2), ("Portal vein", 3))):
        header[f"Segment{i}_Name"], header[f"Segment{i}_LabelValue"], header[f"Segment{i}_Layer"] = name, str(value), "0"
    path = tmp_path / "segments.seg.nrrd"
    nrrd.write(str(path), arr, header, index_order="C")
    got = read_segment_map(path, g)
    assert (got[:, :4] == 4).all() and (got[:, 4:6] == 5).all() and (got[:, 6:] == 0).all()
    # a foreign map: values 11..18
    img = sitk.GetImageFromArray((arr + 10).astype(np.uint8))
    img.SetSpacing((1.0, 1.0, 2.0))
    foreign = tmp_path / "foreign.nii.gz"
    sitk.WriteImage(img, str(foreign))
    with pytest.raises(SegmentMappingNeeded, match="segment mapping"):
        read_segment_map(foreign, g)
    got = read_segment_map(foreign, g, {"II": [11], "III": 12, "liver_segment_8": [13]})
    assert (got[:, :4] == 2).all() and (got[:, 4:6] == 3).all() and (got[:, 6:] == 8).all()


def test_segment_iv_is_split_into_iva_and_ivb_by_the_portal_plane():
    """IVa above the transverse plane of the portal bifurcation, IVb below (Bismuth): in the segment volumes
    and in the lesion locations; I-VIII stay the main map."""
    from engine.planning import couinaud as cn
    from engine.planning.location import LesionLocation
    from engine.planning.planner import Planner

    case = make_phantom(seed=0, shape=(48, 96, 96), n_lesions=3)
    p = Planner(case.labels, case.geometry).run()
    v = p.segment_volumes()
    assert list(v)[:6] == ["I", "II", "III", "IV", "IVa", "IVb"]
    assert v["IVa"] > 0 and v["IVb"] > 0 and v["IVa"] + v["IVb"] == pytest.approx(v["IV"], abs=0.02)
    bz = p.estimate.vessels.bifurcation_zyx_mm[0]
    z_mm = np.arange(p.liver.shape[0]) * p.spacing[0]
    iv = (p.estimate.segments == 4) & p.liver
    above = iv & (z_mm >= bz)[:, None, None]
    assert v["IVa"] == pytest.approx(np.count_nonzero(above) * p.geometry.voxel_volume_ml, abs=0.01)
    for loc in p.lesions:
        if "IV" in loc.segment_shares:
            assert sum(loc.segment_iv_shares.values()) == pytest.approx(loc.segment_shares["IV"])
            assert loc.to_row()["segment_iv"]
        else:
            assert not loc.segment_iv_shares and loc.to_row()["segment_iv"] == ""
    p.estimate.vessels.bifurcation_zyx_mm = None          # no bifurcation: no IVa / IVb, said by absence
    assert cn.segment_iv_upper(p.estimate, p.spacing) is None and "IVa" not in p.segment_volumes()
    assert LesionLocation(1, 1, 0.1, (0, 0, 0)).to_row()["segment_iv"] == ""


def test_segment_i_lies_between_the_ivc_and_the_hilum_plane_from_the_bifurcation_to_the_confluence():
    """Segment I (caudate) is bounded by the portal bifurcation below and the hepatic-vein confluence above,
    the IVC's back wall behind and the plane of the hilum / ligamentum venosum in front (the box before
    reached 20 mm below the bifurcation, in front of that plane at the top)."""
    from engine.planning.planner import Planner

    case = make_phantom(seed=0, shape=(96, 128, 128), n_lesions=2)
    p = Planner(case.labels, case.geometry).run()
    m, sp = p.estimate.vessels, p.spacing
    zz, yy, xx = np.nonzero(p.estimate.segments == 1)
    assert zz.size > 0
    z, y = zz * sp[0], yy * sp[1]
    bz, by, _ = m.bifurcation_zyx_mm
    zc = m.confluence_z_mm
    assert z.min() >= bz - 1e-3 and z.max() < zc
    ay = np.asarray(m.ivc_axis_yx_mm)[zz, 0]
    assert (y < ay + m.ivc_radius_mm).all()
    jy = m.ivc_axis_yx_mm[int(round(zc / sp[0])), 0] - m.ivc_radius_mm
    assert (((y - by) * (zc - bz) - (z - bz) * (jy - by)) > 0).all()      # behind the hilum plane
    v = p.segment_volumes()
    total = sum(v[k] for k in ("I", "II", "III", "IV", "V", "VI", "VII", "VIII"))
    assert 0.01 * total < v["I"] < 0.08 * total
