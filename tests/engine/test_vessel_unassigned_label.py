"""Label 6 "vessel, unassigned" goes everywhere a label map goes: reading and writing, measurements (in the
total liver volume), meshes, exports and evaluation (scored as neither portal vein nor hepatic veins)."""
from __future__ import annotations

import nrrd
import numpy as np
import pytest

from engine.labels import ALL_STRUCTURES, BY_KEY, LABEL_VALUES, STRUCTURES, STUDY_LABEL_VALUES, Label


@pytest.fixture(scope="module")
def case6():
    """A phantom whose intrahepatic portal vein voxels in the upper half are 'vessel, unassigned'."""
    from engine.phantom import make_phantom
    case = make_phantom(seed=3, shape=(48, 64, 64), n_lesions=1)
    lab = case.labels.copy()
    half = np.zeros(lab.shape, bool)
    half[lab.shape[0] // 2:] = True
    lab[(lab == Label.PORTAL_VEIN) & half] = Label.VESSEL_UNASSIGNED
    assert np.count_nonzero(lab == Label.VESSEL_UNASSIGNED) > 20
    case.set_labels(lab)
    return case


def test_label_table_has_it_apart_from_the_study_structures():
    s = BY_KEY["vessel_unassigned"]
    assert s.label == Label.VESSEL_UNASSIGNED == 6 and s in ALL_STRUCTURES and s not in STRUCTURES
    assert 6 in LABEL_VALUES and 6 not in STUDY_LABEL_VALUES
    assert s.color not in {t.color for t in STRUCTURES}


def test_case_accepts_it_and_measure_counts_it_in_the_total_liver(case6):
    from engine.measure import measure
    assert case6.unknown_label_values() == []
    rep = measure(case6)
    n6 = int(np.count_nonzero(case6.labels == 6))
    assert rep.value("vessel_unassigned.voxels") == n6
    assert rep.value("vessel_unassigned.volume_ml") == pytest.approx(n6 * case6.geometry.voxel_volume_ml, abs=1e-3)
    # the same voxels labelled portal vein give the same total liver volume: unassigned vessels are liver too
    back = case6.copy()
    back.set_labels(np.where(back.labels == 6, np.uint8(Label.PORTAL_VEIN), back.labels))
    assert rep.value("liver.total_volume_ml") == pytest.approx(measure(back).value("liver.total_volume_ml"))
    assert "unassigned" in rep.definitions["total_liver_volume"]
    assert not any("not LiverPlan structures" in w for w in rep.warnings)


def test_files_round_trip_with_it(case6, tmp_path):
    from engine.io import read_label_map
    from engine.io.labelmaps import write_label_map
    for name in ("labels.nii.gz", "labels.nrrd", "labels.seg.nrrd"):
        out = write_label_map(tmp_path / name, case6)
        assert np.array_equal(read_label_map(out, case6), case6.labels), name
    _, h = nrrd.read(str(tmp_path / "labels.seg.nrrd"), index_order="C")
    names = [h[f"Segment{i}_Name"] for i in range(6)]
    assert names[-1] == "Vessel, unassigned" and h["Segment5_LabelValue"] == "6"


def test_meshes_include_it(case6, tmp_path):
    from engine.mesh import label_surfaces, write_meshes
    surfaces = label_surfaces(case6.labels, case6.geometry, smooth=False)
    assert 6 in surfaces and surfaces[6].n_points > 0
    written = write_meshes({6: surfaces[6]}, tmp_path)
    assert [p.name for p in written] == ["vessel_unassigned_LPS.stl"]


def test_evaluation_scores_it_as_neither_system_and_says_so(case6):
    from engine.evaluation import UNASSIGNED_POLICY, evaluate_pair
    ref = case6.labels.copy()
    ref[ref == 6] = Label.PORTAL_VEIN
    res = evaluate_pair(case6.labels, ref, case6.geometry, metrics_wanted=["dice"])
    assert "vessel_unassigned" not in res
    assert res["portal_vein"]["dice"] < 0.99                   # the unassigned part counts as missed
    assert res["liver"]["dice"] == pytest.approx(1.0)
    assert any(n.startswith(UNASSIGNED_POLICY) for n in res.table_notes)
    clean = evaluate_pair(ref, ref, case6.geometry, metrics_wanted=["dice"])
    assert not any(n.startswith(UNASSIGNED_POLICY) for n in clean.table_notes)


@pytest.mark.real
def test_dicom_seg_export_carries_it_and_reads_back(tmp_path):
    import pydicom
    from realdata import real_path

    from engine.io import load_case, read_label_map
    from engine.io.labelmaps import write_label_map
    c = load_case(real_path("dcmqi", "ct-3slice"))
    lab = np.zeros(c.geometry.shape, np.uint8)
    lab[:, 100:200, 100:200] = Label.PARENCHYMA
    lab[1, 150:160, 150:170] = Label.VESSEL_UNASSIGNED
    c.set_labels(lab)
    out = write_label_map(tmp_path / "seg.dcm", c)
    ds = pydicom.dcmread(out)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["Liver parenchyma", "Vessel, unassigned"]
    assert np.array_equal(read_label_map(out, c), lab)
