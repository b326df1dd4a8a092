"""Label maps: reading onto the CT's grid (files, .seg.nrrd, mask folders), exports, grid mismatch."""
from __future__ import annotations

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
from realdata import real_path

from engine.errors import GeometryMismatchError, InputError
from engine.io import load_case, read_label_map, write_label_map
from engine.labelmap import LabelMapping
from engine.labels import STRUCTURES


@pytest.fixture(scope="module")
def ircadb_case():
    # 29 MB CT: loaded once for the module.
    return load_case(real_path("3dircadb1.17", "PATIENT_DICOM.nii.gz"))


@pytest.fixture(scope="module")
def ts_dicom_case():
    return load_case(real_path("totalsegmentator", "example_ct_dicom"))


@pytest.fixture(scope="module")
def ct3_case():
    return load_case(real_path("dcmqi", "ct-3slice"))


def _mask(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0


def test_ircadb_mask_folder_with_precedence(ircadb_case):
    folder = real_path("3dircadb1.17", "masks")
    lab = read_label_map(folder, ircadb_case)
    counts = np.bincount(lab.ravel(), minlength=6)
    assert counts[2] == 53746          # portal vein, whole mask (also outside the liver)
    assert counts[3] == 124865         # venoussystem = hepatic veins + IVC, stored as 3
    assert counts[4] == 0              # no separate IVC in IRCADb
    assert counts[5] == 96961 + 89029  # both tumours
    # Label 1 is the liver mask minus every other labelled structure (the liver mask includes them).
    liver = _mask(folder / "liver.nii.gz")
    others = _mask(folder / "portalvein.nii.gz") | _mask(folder / "venoussystem.nii.gz") \
        | _mask(folder / "livertumor1.nii.gz") | _mask(folder / "livertumor2.nii.gz")
    assert counts[1] == int(np.count_nonzero(liver & ~others))
    assert np.all(lab[liver & ~others] == 1)
    # Explicit preset gives the same; the preset says what is merged.
    m = LabelMapping.preset("ircadb")
    assert np.array_equal(read_label_map(folder, ircadb_case, m), lab)
    assert "ivc" in m.missing_structures()
    # ... and so do the notes a reader gets: the merge, and the masks left out
    notes: list = []
    read_label_map(folder, ircadb_case, notes=notes)
    assert any("venoussystem" in n and "inferior vena cava" in n for n in notes), notes
    assert notes[-1] == "Masks that are none of the five structures were not used: artery, bone, skin."


def test_single_binary_mask_named_after_a_structure(ircadb_case):
    lab = read_label_map(real_path("3dircadb1.17", "masks", "portalvein.nii.gz"), ircadb_case)
    assert set(np.unique(lab)) == {0, 2} and np.count_nonzero(lab) == 53746


def test_las_label_map_on_lps_dicom_and_export_matches_dicom_geometry(ts_dicom_case, tmp_path):
    c = ts_dicom_case.copy()
    src = real_path("totalsegmentator", "example_seg_dicom.nii.gz")
    lab = read_label_map(src, c, LabelMapping.preset("totalsegmentator"))
    counts = np.bincount(lab.ravel(), minlength=6)
    assert (counts[1], counts[2], counts[4]) == (366708, 3015, 4772)
    # Against plain SimpleITK: the LAS file reoriented to LPS holds the same voxels.
    ref = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(src)), "LPS"))
    assert np.array_equal(lab == 1, ref == 5)
    c.set_labels(lab)
    out = write_label_map(tmp_path / "ts_labels.nii.gz", c)
    # The export's geometry equals the DICOM series' geometry as plain SimpleITK reads it.
    folder = str(real_path("totalsegmentator", "example_ct_dicom"))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, ""))
    dcm = reader.Execute()
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == dcm.GetSize()
    assert back.GetSpacing() == pytest.approx(dcm.GetSpacing(), abs=1e-6)
    assert back.GetOrigin() == pytest.approx(dcm.GetOrigin(), abs=1e-5)
    assert back.GetDirection() == pytest.approx(dcm.GetDirection(), abs=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(back), lab)


def test_totalsegmentator_ids_without_mapping_ask_for_one(ts_dicom_case):
    with pytest.raises(InputError) as e:
        read_label_map(real_path("totalsegmentator", "example_seg_dicom.nii.gz"), ts_dicom_case)
    assert "not LiverPlan's" in str(e.value) and "totalsegmentator" in str(e.value)


def test_totalsegmentator_mask_folder_by_file_names():
    c = load_case(real_path("totalsegmentator", "example_ct_sm.nii.gz"))
    lab = read_label_map(real_path("totalsegmentator", "example_seg_fast"), c)
    assert set(np.unique(lab)) == {0, 1, 2, 4}     # aorta ignored; no hepatic veins or lesions
    ref = read_label_map(real_path("totalsegmentator", "example_seg_fast.nii.gz"), c,
                         LabelMapping.preset("totalsegmentator"))
    assert np.array_equal(lab, ref)


def test_dcmqi_liver_nrrd_on_the_three_slice_dicom(ct3_case):
    lab = read_label_map(real_path("dcmqi", "liver_seg.nrrd"), ct3_case)
    assert np.count_nonzero(lab == 1) == 107098 and lab.max() == 1


def test_grid_mismatch_is_explained(ts_dicom_case, ct3_case, tmp_path):
    with pytest.raises(GeometryMismatchError) as e:
        read_label_map(real_path("dcmqi", "liver_seg.nrrd"), ts_dicom_case)
    msg = str(e.value)
    assert "does not lie on the CT's voxel grid" in msg and "512 x 512 x 3" in msg and "512 x 512 x 20" in msg
    # Same voxel count, shifted origin: still refused.
    img = sitk.ReadImage(str(real_path("dcmqi", "liver_seg.nrrd")))
    img.SetOrigin((img.GetOrigin()[0] + 5.0, img.GetOrigin()[1], img.GetOrigin()[2]))
    sitk.WriteImage(img, str(tmp_path / "shifted.nrrd"))
    with pytest.raises(GeometryMismatchError, match="origin"):
        read_label_map(tmp_path / "shifted.nrrd", ct3_case)


def test_seg_nrrd_export_has_slicer_metadata_and_round_trips(ct3_case, tmp_path):
    c = ct3_case.copy()
    lab = np.zeros(c.geometry.shape, np.uint8)
    lab[:, 100:200, 100:200] = 1
    lab[1, 150:160, 150:170] = 2
    lab[:, 300:310, 300:305] = 4
    lab[2, 120:125, 120:130] = 5
    c.set_labels(lab)
    out = write_label_map(tmp_path / "case.seg.nrrd", c)
    data, h = nrrd.read(str(out), index_order="C")
    assert h["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert h["Segmentation_ContainedRepresentationNames"] == "Binary labelmap|"
    assert h["Segmentation_ReferenceImageExtentOffset"] == "0 0 0"
    assert h["space"] == "left-posterior-superior"
    for i, s in enumerate(STRUCTURES):
        assert h[f"Segment{i}_Name"] == s.name
        assert h[f"Segment{i}_ID"] == s.key
        assert h[f"Segment{i}_LabelValue"] == str(s.label)
        assert h[f"Segment{i}_Layer"] == "0"
        assert h[f"Segment{i}_NameAutoGenerated"] == "0" and h[f"Segment{i}_ColorAutoGenerated"] == "0"
        rgb = [float(v) for v in h[f"Segment{i}_Color"].split()]
        assert rgb == pytest.approx([v / 255 for v in s.color], abs=1e-5)
        assert "TerminologyEntry" in h[f"Segment{i}_Tags"]
    assert h["Segment0_Extent"] == "100 199 100 199 0 2"
    assert h["Segment2_Extent"] == "0 -1 0 -1 0 -1"     # hepatic veins: empty but present
    assert np.array_equal(data, lab)                    # source grid is LPS here: same voxels
    back = read_label_map(out, c)
    assert np.array_equal(back, lab)
    # Plain SimpleITK reads it on the DICOM grid.
    im = sitk.ReadImage(str(out))
    assert im.GetOrigin() == pytest.approx(c.source_geometry.origin, abs=1e-4)


def _write_seg(path, arr_czyx_or_zyx, segments, space="left-posterior-superior", origin=(0.0, 0.0, 0.0),
               spacing=(1.0, 1.0, 2.0)):
    d = np.diag(spacing).astype(float)
    if arr_czyx_or_zyx.ndim == 4:
        dirs = np.vstack([np.full(3, np.nan), d])
        kinds = ["list", "domain", "domain", "domain"]
        data = np.moveaxis(arr_czyx_or_zyx, 0, -1)       # (z, y, x, layer) in C order
    else:
        dirs, kinds, data = d, ["domain"] * 3, arr_czyx_or_zyx
    h = {"space": space, "space directions": dirs, "space origin": np.asarray(origin, float), "kinds": kinds}
    for i, (name, layer, value) in enumerate(segments):
        h[f"Segment{i}_Name"] = name
        h[f"Segment{i}_Layer"] = str(layer)
        h[f"Segment{i}_LabelValue"] = str(value)
        h[f"Segment{i}_ID"] = f"Segment_{i + 1}"
    nrrd.write(str(path), np.ascontiguousarray(data), h, index_order="C")


def _case(shape=(4, 10, 12), spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    from engine.case import Case
    from engine.geometry import Geometry
    return Case(image=np.zeros(shape, np.int16), geometry=Geometry(shape, spacing, origin))


def test_multi_layer_seg_nrrd_maps_names_with_precedence(tmp_path):
    c = _case()
    layers = np.zeros((2, 4, 10, 12), np.uint8)
    layers[0, :, 2:8, 2:10] = 1          # "Liver" (includes the tumour)
    layers[0, :, 8:10, 2:10] = 3         # "Spleen": ignored
    layers[0, 1, 2:4, 2:4] = 2           # "Portal Vein"
    layers[1, 2, 4:6, 4:6] = 1           # "Tumor" in a second layer, overlapping the liver
    p = tmp_path / "multi.seg.nrrd"
    _write_seg(p, layers, [("Liver", 0, 1), ("Portal Vein", 0, 2), ("Spleen", 0, 3), ("Tumor", 1, 1)])
    notes: list = []
    lab = read_label_map(p, c, notes=notes)
    assert lab[2, 4, 4] == 5 and lab[1, 2, 2] == 2 and lab[0, 5, 5] == 1 and lab[0, 9, 5] == 0
    assert np.count_nonzero(lab == 5) == 4
    assert notes == ["Segments that are none of the five structures were not used: Spleen."]


def test_seg_nrrd_in_ras_space_and_cropped_extent(tmp_path):
    c = _case(origin=(0.0, 0.0, 0.0))
    # A Slicer file cropped to its extent, stored in RAS: x/y axes point right/anterior.
    sub = np.zeros((2, 3, 4), np.uint8)
    sub[:] = 1
    # RAS origin of LPS voxel (z=1, y=5, x=6): (-6, -5, 2); axis vectors -x, -y in RAS for +LPS.
    p = tmp_path / "crop.seg.nrrd"
    header_dirs = np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 2.0]])
    nrrd.write(str(p), sub, {"space": "right-anterior-superior", "space directions": header_dirs,
                             "space origin": np.array([-6.0, -5.0, 2.0]), "kinds": ["domain"] * 3,
                             "Segment0_Name": "liver", "Segment0_LabelValue": "1", "Segment0_Layer": "0"},
               index_order="C")
    lab = read_label_map(p, c)
    assert np.count_nonzero(lab) == 24
    assert np.all(lab[1:3, 5:8, 6:10] == 1)


def test_seg_nrrd_with_no_known_segment(tmp_path):
    c = _case()
    p = tmp_path / "s.seg.nrrd"
    _write_seg(p, np.ones((4, 10, 12), np.uint8), [("Spleen", 0, 1)])
    with pytest.raises(InputError, match="None of the segments"):
        read_label_map(p, c)


def test_not_label_maps_are_refused(tmp_path):
    c = _case()
    prob = sitk.GetImageFromArray(np.full((4, 10, 12), 0.5, np.float32))
    prob.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(prob, str(tmp_path / "prob.nii.gz"))
    with pytest.raises(InputError, match="fractional values"):
        read_label_map(tmp_path / "prob.nii.gz", c)
    ct = sitk.GetImageFromArray(np.full((4, 10, 12), -1000, np.int16))
    ct.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    with pytest.raises(InputError, match="negative values"):
        read_label_map(tmp_path / "ct.nii.gz", c)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no mask files"):
        read_label_map(tmp_path / "empty", c)
    with pytest.raises(InputError, match="does not exist"):
        read_label_map(tmp_path / "none.nii.gz", c)


def test_dicom_seg_reads_onto_its_ct_and_equals_the_nrrd(ct3_case, ts_dicom_case):
    lab = read_label_map(real_path("dcmqi", "liver.dcm"), ct3_case)
    ref = read_label_map(real_path("dcmqi", "liver_seg.nrrd"), ct3_case)
    assert np.count_nonzero(lab == 1) == 107098 and np.array_equal(lab, ref)
    with pytest.raises(GeometryMismatchError, match="does not lie on the CT's voxel grid"):
        read_label_map(real_path("dcmqi", "liver.dcm"), ts_dicom_case)
    with pytest.raises(InputError, match="not a segmentation object"):
        read_label_map(next(real_path("dcmqi", "ct-3slice").iterdir()), ct3_case)


def test_ircadb_style_dicom_mask_subfolders(ct3_case, tmp_path):
    """MASKS_DICOM/<structure>/ folders of 0/255 DICOM slices, like the original IRCADb distribution."""
    import pydicom
    src = sorted(real_path("dcmqi", "ct-3slice").iterdir())
    root = tmp_path / "MASKS_DICOM"
    boxes = {"liver": (slice(100, 300), slice(100, 300)), "portalvein": (slice(150, 160), slice(150, 200)),
             "livertumor1": (slice(200, 220), slice(200, 220)), "bone": (slice(0, 10), slice(0, 10))}
    for name, (ys, xs) in boxes.items():
        (root / name).mkdir(parents=True)
        uid = pydicom.uid.generate_uid()
        for k, f in enumerate(src):
            ds = pydicom.dcmread(f)
            arr = np.zeros((ds.Rows, ds.Columns), np.uint16)
            arr[ys, xs] = 255
            ds.PixelData = arr.tobytes()
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.RescaleIntercept, ds.RescaleSlope = 0, 1
            ds.SeriesInstanceUID = uid
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(root / name / f"image_{k}")
    lab = read_label_map(root, ct3_case)
    counts = np.bincount(lab.ravel(), minlength=6)
    assert counts[2] == 3 * 10 * 50 and counts[5] == 3 * 20 * 20
    assert counts[1] == 3 * 200 * 200 - counts[2] - counts[5]      # liver minus vessels and tumour
    assert lab[0, 5, 5] == 0                                        # bone ignored


def test_dicom_seg_export_references_the_ct_and_round_trips(ct3_case, ts_dicom_case, tmp_path):
    import pydicom
    from engine.errors import ExportError

    c = ct3_case.copy()
    lab = read_label_map(real_path("dcmqi", "liver.dcm"), c)
    lab[1, 200:210, 200:210] = 5
    c.set_labels(lab)
    out = write_label_map(tmp_path / "liverplan_seg.dcm", c)
    ds = pydicom.dcmread(out)
    ct_uid = pydicom.dcmread(next(real_path("dcmqi", "ct-3slice").iterdir()), stop_before_pixels=True)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["Liver parenchyma", "CRLM lesions"]
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_uid.SeriesInstanceUID
    assert np.array_equal(read_label_map(out, c), lab)
    # Anonymised source (empty UIDs) and non-DICOM sources cannot be referenced: clear refusal.
    t = ts_dicom_case.copy()
    t.labels[0, 0, 0] = 1
    with pytest.raises(ExportError, match="empty UIDs"):
        write_label_map(tmp_path / "ts.dcm", t)
    n = _case()
    n.labels[0, 0, 0] = 1
    with pytest.raises(ExportError, match="not read from DICOM"):
        write_label_map(tmp_path / "n.dcm", n)
    assert not (tmp_path / "ts.dcm").exists() and not (tmp_path / "n.dcm").exists()


def test_totalsegmentator_preset_notes_what_it_lacks_not_its_other_organs(ts_dicom_case):
    # its ~110 other organs are background by design (no "values not in the label map" note), while what
    # the convention lacks (hepatic veins, lesions) is said
    notes: list = []
    read_label_map(real_path("totalsegmentator", "example_seg_dicom.nii.gz"), ts_dicom_case,
                   LabelMapping.preset("totalsegmentator"), notes=notes)
    assert not any("not in the label map" in n for n in notes)
    assert any("no hepatic-vein or liver-lesion label" in n for n in notes), notes
