"""Measurements on analytic shapes, on a phantom and on IRCADb's expert masks."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from realdata import real_path
from engine.errors import GeometryMismatchError, InputError
from engine.geometry import Geometry
from engine.labels import TOTAL_LIVER_DEFINITION, Label
from engine.measure import Measurement, filled_liver_outline, lesion_diameters, measure


def ball(shape, spacing, centre_mm, radius_mm):
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return (((zz * spacing[0] - centre_mm[0]) ** 2 + (yy * spacing[1] - centre_mm[1]) ** 2
             + (xx * spacing[2] - centre_mm[2]) ** 2) <= radius_mm ** 2)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8)])
def test_sphere_volume_and_diameters_within_one_voxel(spacing):
    r = 12.0
    shape = tuple(int(math.ceil(40 / s)) for s in spacing)
    lab = ball(shape, spacing, (20.3, 19.7, 20.1), r).astype(np.uint8) * Label.CRLM
    g = Geometry(shape, spacing, origin=(-10.0, 5.0, 100.0))
    rep = measure(None, lab, g)
    assert len(rep.lesions) == 1
    les = rep.lesions[0]
    true_ml = 4 / 3 * math.pi * r ** 3 / 1000
    # Voxelisation error: at most the volume of a one-voxel shell.
    assert abs(les.volume_ml - true_ml) < 4 * math.pi * r ** 2 * max(spacing) / 1000 / 2
    assert les.volume_ml == pytest.approx(true_ml, rel=0.03)
    assert 2 * r - max(spacing) <= les.longest_diameter_mm <= 2 * r
    assert 2 * r - max(spacing[1:]) * 1.5 <= les.axial_diameter_mm <= 2 * r
    # Centroid in patient coordinates (identity direction): origin + index * spacing.
    x, y, z = les.centroid_lps_mm
    assert (x, y, z) == pytest.approx((-10.0 + 20.1, 5.0 + 19.7, 100.0 + 20.3), abs=0.3)
    assert les.slice_range[0] <= les.centroid_zyx[0] <= les.slice_range[1]


def test_cylinder_along_z_diameters():
    sp = (1.0, 0.5, 0.5)
    shape = (60, 40, 40)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    cyl = ((((yy - 20) * sp[1]) ** 2 + ((xx - 20) * sp[2]) ** 2) <= 5.0 ** 2) & (zz >= 10) & (zz < 50)
    rep = measure(None, cyl.astype(np.uint8) * 5, Geometry(shape, sp))
    les = rep.lesions[0]
    assert les.axial_diameter_mm == pytest.approx(10.0, abs=0.5)        # the circle's diameter
    # 3D: corner to corner, between surface voxel centres (length 39 mm between end slices).
    assert les.longest_diameter_mm == pytest.approx(math.hypot(39.0, 10.0), abs=0.6)
    assert les.slice_range == (10, 49)
    assert les.volume_ml == pytest.approx(math.pi * 25 * 40 / 1000, rel=0.03)


def test_cubes_touching_by_a_corner_are_one_lesion_and_separate_ones_are_ranked():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:5, 2:5, 2:5] = 5
    lab[5:8, 5:8, 5:8] = 5           # touches the first cube only at a corner: 26-connected
    lab[12:18, 12:18, 12:18] = 5     # a bigger, separate cube
    lab[12:14, 2:4, 2:4] = 5         # a small one
    rep = measure(None, lab, Geometry(lab.shape, (1.0, 1.0, 1.0)))
    assert rep.value("crlm.count") == 3
    assert [l.voxel_count for l in rep.lesions] == [216, 54, 8]
    assert [l.id for l in rep.lesions] == [1, 2, 3]
    assert rep.lesions[1].longest_diameter_mm == pytest.approx(math.sqrt(3) * 5, abs=0.01)
    assert rep.connectivity == 26


def test_total_liver_counts_intrahepatic_vessels_only():
    sp = (2.0, 1.0, 1.0)
    lab = np.zeros((30, 80, 80), np.uint8)
    lab[5:25, 10:60, 10:60] = Label.PARENCHYMA                 # 20 x 50 x 50 voxels = 100 mL
    lab[5:25, 30:34, 30:34] = Label.PORTAL_VEIN                # a vessel running through, top to bottom
    lab[10:14, 20:24, 10:40] = Label.HEPATIC_VEINS             # entering from the side (a notch)
    lab[0:30, 65:70, 65:70] = Label.PORTAL_VEIN                # extrahepatic vessel: not liver
    lab[0:30, 62:64, 20:30] = Label.IVC                        # IVC: never liver
    lab[15:18, 40:44, 40:44] = Label.CRLM
    g = Geometry(lab.shape, sp)
    rep = measure(None, lab, g)
    assert rep.value("liver.total_volume_ml") == pytest.approx(20 * 50 * 50 * 2.0 / 1000)
    lesion_ml = 3 * 4 * 4 * 2.0 / 1000
    assert rep.value("crlm.total_volume_ml") == pytest.approx(lesion_ml)
    assert rep.value("crlm.tumour_burden_pct") == pytest.approx(100 * lesion_ml / 100.0, abs=0.01)
    assert TOTAL_LIVER_DEFINITION in rep.get("liver.total_volume_ml").description
    outline, sl = filled_liver_outline(lab, sp)
    assert outline.sum() == 20 * 50 * 50


def test_structure_volumes_and_hu_statistics():
    rng = np.random.default_rng(0)
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[:5] = 1
    lab[5:, :5] = 2
    img = np.where(lab == 1, 100, 170).astype(np.int16)
    img[lab == 0] = -1000
    img = (img + rng.normal(0, 10, img.shape)).astype(np.float32)
    g = Geometry(lab.shape, (2.0, 1.0, 0.5))
    rep = measure(img, lab, g)
    assert rep.value("liver.voxels") == 500 and rep.value("liver.volume_ml") == pytest.approx(0.5)
    assert rep.value("portal_vein.volume_ml") == pytest.approx(0.25)
    assert rep.value("liver.mean_hu") == pytest.approx(float(img[lab == 1].mean()), abs=0.05)
    assert rep.value("liver.sd_hu") == pytest.approx(float(img[lab == 1].std()), abs=0.05)
    assert math.isnan(rep.value("ivc.mean_hu"))
    for m in rep.measurements:
        assert isinstance(m, Measurement) and m.name and m.units and m.description and m.key


def test_empty_label_map_is_measured_without_errors():
    lab = np.zeros((5, 6, 7), np.uint8)
    rep = measure(None, lab, Geometry(lab.shape, (1.0, 1.0, 1.0)))
    assert rep.lesions == [] and rep.value("liver.total_volume_ml") == 0
    assert math.isnan(rep.value("crlm.tumour_burden_pct"))
    json.dumps(rep.to_json_dict(), allow_nan=True)


def test_unknown_labels_are_reported_not_measured():
    lab = np.zeros((5, 6, 7), np.uint8)
    lab[1, 1, 1] = 9
    rep = measure(None, lab, Geometry(lab.shape, (1.0, 1.0, 1.0)))
    assert any("9" in w for w in rep.warnings)


def test_mismatched_inputs_are_refused_in_words():
    g = Geometry((5, 6, 7), (1.0, 1.0, 1.0))
    with pytest.raises(GeometryMismatchError, match="voxels"):
        measure(None, np.zeros((5, 6, 8), np.uint8), g)
    with pytest.raises(GeometryMismatchError, match="CT"):
        measure(np.zeros((5, 6, 6), np.int16), np.zeros((5, 6, 7), np.uint8), g)
    with pytest.raises(InputError):
        measure(None, None, g)


def test_single_voxel_and_flat_lesions():
    lab = np.zeros((5, 20, 20), np.uint8)
    lab[2, 3, 3] = 5
    lab[2, 10:15, 10:18] = 5                     # one slice thick: a flat lesion
    d3, dax = lesion_diameters(lab[:, 8:, 8:] == 5, (1.0, 1.0, 1.0))
    assert d3 == dax == pytest.approx(math.hypot(4, 7))
    rep = measure(None, lab, Geometry(lab.shape, (3.0, 1.0, 1.0)))
    assert rep.lesions[0].axial_diameter_mm == pytest.approx(math.hypot(4, 7), abs=0.01)
    assert rep.lesions[0].longest_diameter_mm == pytest.approx(math.hypot(4, 7), abs=0.01)
    assert rep.lesions[1].longest_diameter_mm == 0.0 and rep.lesions[1].voxel_count == 1


def test_report_rows_and_json_shape():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:8, 2:8, 2:8] = 1
    lab[4:6, 4:6, 4:6] = 5
    rep = measure(None, lab, Geometry(lab.shape, (1.0, 1.0, 1.0)))
    rows = rep.to_rows()
    assert {"name", "value", "units", "description", "key"} <= set(rows[0])
    d = rep.to_json_dict()
    assert d["lesion_connectivity"] == 26 and "total_liver_volume" in d["definitions"]
    assert d["lesions"][0]["id"] == 1 and len(d["lesions"][0]["centroid_lps_mm"]) == 3
    assert rep.lesion_rows()[0]["volume_ml"] == pytest.approx(0.008)


def test_ircadb_reference_masks_match_provenance():
    folder = real_path("3dircadb1.17")
    from engine.io import load_case, read_label_map
    from engine.labelmap import LabelMapping

    case = load_case(folder / "PATIENT_DICOM.nii.gz")
    lab = read_label_map(folder / "masks", case, LabelMapping.preset("ircadb"))
    rep = measure(None, lab, case.geometry)
    # PROVENANCE.md: liver mask 1860.6 mL including tumours; tumours 85.6 and 78.6 mL.
    # The engine counts the vessels inside the liver's filled outline; IRCADb's venoussystem label also
    # holds the IVC, part of which lies in the liver's groove: within 1 %.
    assert rep.value("liver.total_volume_ml") == pytest.approx(1860.6, rel=0.01)
    assert [round(l.volume_ml, 1) for l in rep.lesions] == [85.6, 78.6]
    assert rep.value("crlm.count") == 2
    burden = rep.value("crlm.tumour_burden_pct")
    assert burden == pytest.approx(100 * (85.6 + 78.6) / 1860.6, abs=0.1)
    for les in rep.lesions:
        assert 50 < les.longest_diameter_mm < 100 and les.axial_diameter_mm <= les.longest_diameter_mm


# ------------------------------------------------------------------------------------------------
# Incremental measurement (the GUI's refresh after an edit) must equal a full measure() exactly.
def _report_dict(rep):
    d = rep.to_json_dict()
    return json.dumps(d, sort_keys=True, default=str)


def test_incremental_measure_equals_full_measure_after_random_edits():
    from engine import edits
    from engine.measure import IncrementalMeasurer
    from engine.phantom import make_phantom

    case = make_phantom(seed=3, shape=(40, 64, 64), n_lesions=5)
    inc = IncrementalMeasurer(case)
    assert _report_dict(inc.report) == _report_dict(measure(case))
    hist = edits.EditHistory(case.labels)
    rng = np.random.default_rng(1)
    sp = case.geometry.spacing
    liver = np.argwhere(case.labels == Label.PARENCHYMA)
    les = np.argwhere(case.labels == Label.CRLM)
    n_lesions_seen = set()
    for step in range(24):
        kind = step % 6
        if kind in (0, 1):     # paint a lesion (often touching/merging existing ones) or a vessel
            c = les[rng.integers(len(les))] if kind == 0 else liver[rng.integers(len(liver))]
            lab = Label.CRLM if kind == 0 else int(rng.choice([Label.PORTAL_VEIN, Label.HEPATIC_VEINS]))
            e = hist.commit("paint", edits.brush(case.labels, tuple(int(v) for v in c), float(rng.uniform(3, 12)),
                                                 sp, lab, sphere=True))
        elif kind == 2:        # erase through the liver (splits a lesion, cuts the outline)
            c = liver[rng.integers(len(liver))]
            e = hist.commit("erase", edits.brush(case.labels, tuple(int(v) for v in c), 8.0, sp,
                                                 Label.PARENCHYMA, erase=True, sphere=True))
        elif kind == 3:        # delete a whole component
            nz = np.argwhere(case.labels == Label.CRLM)
            if len(nz) == 0:
                continue
            e = hist.commit("delete", edits.delete_component(case.labels, tuple(int(v) for v in nz[0])))
        elif kind == 4:
            e = hist.undo()
        else:
            e = hist.redo() or hist.undo()
        if e is None:
            continue
        if step == 5:
            case.provenance.extra["edited"] = True       # as the GUI marks an edited case
        box = e.box
        rep = inc.update((box[0], box[1], box[2], box[3], box[4], box[5]))
        full = measure(case)
        n_lesions_seen.add(len(full.lesions))
        assert _report_dict(rep) == _report_dict(full), f"step {step} ({kind})"
    assert len(n_lesions_seen) > 1          # the edits really changed the lesion table
    # A box larger than the change, and no box at all, give the same report.
    assert _report_dict(inc.update(None)) == _report_dict(measure(case))


def test_incremental_measure_from_an_empty_label_map():
    """A case opened without labels, then painted (the measurer starts from nothing)."""
    from engine.measure import IncrementalMeasurer

    shape, sp = (12, 20, 20), (2.0, 1.0, 1.0)
    g = Geometry(shape, sp)
    img = (np.arange(np.prod(shape)) % 200 - 50).reshape(shape).astype(np.int16)
    lab = np.zeros(shape, np.uint8)
    inc = IncrementalMeasurer(img, lab, g)
    assert _report_dict(inc.report) == _report_dict(measure(img, lab, g))
    lab[3:8, 4:15, 4:15] = Label.PARENCHYMA
    lab[5:7, 8:11, 8:11] = Label.CRLM
    assert _report_dict(inc.update((3, 8, 4, 15, 4, 15))) == _report_dict(measure(img, lab, g))
    lab[:] = 0
    assert _report_dict(inc.update(None)) == _report_dict(measure(img, lab, g))


def test_lesion_rows_give_slice_indices_and_the_slice_numbers_the_viewer_shows():
    lab = np.zeros((60, 40, 40), np.uint8)
    lab[5:55, 5:35, 5:35] = 1
    lab[10:50, 15:25, 15:25] = 5
    rep = measure(None, lab, Geometry(lab.shape, (1.0, 1.0, 1.0)))
    row = rep.lesion_rows()[0]
    assert (row["first_slice_index"], row["last_slice_index"]) == (10, 49)
    assert (row["first_slice_number"], row["last_slice_number"]) == (11, 50)     # "Axial 11/60" .. "50/60"
    from engine.measure import format_tables
    assert " 11-50 " in format_tables(rep)


def test_labels_on_air_and_lesions_cut_by_the_scan_edge_are_flagged():
    img = np.full((30, 40, 40), -1000, np.int16)
    img[:, 5:35, 5:35] = 100                            # the "liver", soft tissue
    lab = np.zeros(img.shape, np.uint8)
    lab[:, 5:35, 5:35] = 1
    lab[0:6, 10:16, 10:16] = 5                          # a lesion starting on the first slice
    lab[12:16, 20:24, 20:24] = 5                        # one well inside
    g = Geometry(img.shape, (2.0, 1.0, 1.0))
    rep = measure(img, lab, g)
    edge = [l.id for l in rep.lesions if l.slice_range[0] == 0]
    assert len(edge) == 1
    assert any(w.startswith(f"Lesion {edge[0]} reaches the edge of the scanned volume") for w in rep.warnings), \
        rep.warnings
    # cut by the side of the field of view (x = 0), not by a slice: flagged too (it was not)
    side = lab.copy()
    side[0:6, 10:16, 10:16] = 1
    side[12:16, 20:24, 20:24] = 1
    side[10:14, 18:22, 0:4] = 5
    rep_side = measure(img, side, g)
    assert any(w.startswith("Lesion 1 reaches the edge") for w in rep_side.warnings), rep_side.warnings
    side[10:14, 18:22, 0:4] = 1
    side[10:14, 18:22, 1:5] = 5                         # one voxel inside the edge: no warning
    assert not any("edge" in w for w in measure(img, side, g).warnings)
    assert not any("far from soft tissue" in w for w in rep.warnings)
    lab[10:20, 36:40, 36:40] = 3                        # "hepatic veins" drawn on air outside the body
    rep = measure(img, lab, g)
    assert any("far from soft tissue (Hepatic veins -1000 HU" in w for w in rep.warnings), rep.warnings
    # without an image there is nothing to judge
    assert not any("soft tissue" in w for w in measure(None, lab, g).warnings)


def test_results_that_cannot_be_a_liver_are_questioned():
    # a model run on a CT without a liver gave "liver 46 mL, tumour burden 72 %" or a "liver" of water with
    # "lesions" of water in it, without a word
    img = np.full((30, 60, 60), -1000, np.int16)
    img[:, 5:55, 5:55] = 0                              # a water cylinder, roughly
    lab = np.zeros(img.shape, np.uint8)
    lab[2:28, 10:50, 10:50] = 1
    lab[10:16, 20:26, 20:26] = 5
    g = Geometry(img.shape, (2.0, 2.0, 2.0))
    w = measure(img, lab, g).warnings
    assert any("mean CT value of 0 HU, below liver tissue" in x for x in w), w
    assert any(x.startswith("Lesion 1 has the same CT value as the liver tissue") for x in w), w
    assert not any("only" in x and "mL" in x for x in w), w                # 333 mL: not "small"
    small = np.zeros_like(lab)
    small[10:14, 20:30, 20:30] = 1                                         # 3.2 mL of "liver"
    assert any(x.startswith("The labelled liver is only 3 mL") for x in measure(None, small, g).warnings)
    # a plausible liver with a hypodense lesion: nothing to say
    img[:] = -1000
    img[:, 5:55, 5:55] = 100
    img[10:16, 20:26, 20:26] = 45
    assert measure(img, lab, g).warnings == []
