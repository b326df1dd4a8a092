"""CT files (NIfTI, NRRD, MHA): loading into canonical LPS, writing back in the source geometry, bad files."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk
from realdata import real_path

from engine.errors import ExportError, InputError
from engine.io import load_case, read_label_map, write_image, write_label_map


def _synthetic_ct(shape_xyz=(40, 30, 20), spacing=(0.8, 0.9, 2.5), origin=(10.0, -20.0, 30.0),
                  direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    rng = np.random.default_rng(0)
    arr = rng.integers(-1024, 1500, size=shape_xyz[::-1]).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img, arr


RAS = (-1, 0, 0, 0, -1, 0, 0, 0, 1)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_each_format_loads_canonical_and_writes_back_exactly(tmp_path, ext):
    img, arr = _synthetic_ct(direction=RAS)
    src = tmp_path / f"ct{ext}"
    sitk.WriteImage(img, str(src))
    c = load_case(src)
    assert c.geometry.orientation_code() == "LPS"
    assert c.source_geometry.orientation_code() == "RAS"
    assert c.image.shape == (20, 30, 40)
    # RAS -> LPS flips x and y: the first canonical voxel is the source's last in x and y.
    assert c.image[0, 0, 0] == arr[0, -1, -1]
    out = write_image(tmp_path / f"back{ext}", c)
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == img.GetSize()
    assert np.allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-6)
    assert np.allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-5)
    assert np.allclose(back.GetDirection(), img.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(back), arr)


def test_real_ras_nifti_round_trip_of_labels(tmp_path):
    src = real_path("totalsegmentator", "example_ct.nii.gz")
    c = load_case(src)
    ref = sitk.ReadImage(str(src))
    assert c.source_geometry.orientation_code() == "RAS"
    assert c.geometry.shape == (112, 101, 122)
    labels = np.zeros(c.geometry.shape, np.uint8)
    labels[60:100, 20:60, 10:50] = 1
    labels[70:80, 30:40, 70:90] = 5
    c.set_labels(labels)
    for ext in (".nii.gz", ".nrrd", ".seg.nrrd", ".mha"):
        out = write_label_map(tmp_path / f"lab{ext}", c)
        back = sitk.ReadImage(str(out))
        assert back.GetSize() == ref.GetSize()
        assert back.GetSpacing() == pytest.approx(ref.GetSpacing(), abs=1e-6)
        assert back.GetOrigin() == pytest.approx(ref.GetOrigin(), abs=1e-5)
        assert back.GetDirection() == pytest.approx(ref.GetDirection(), abs=1e-6)
        # The same voxels, reoriented back: plain SimpleITK sees the labels where the CT is.
        canon = sitk.GetArrayFromImage(sitk.DICOMOrient(back, "LPS"))
        assert np.array_equal(canon, labels), ext
        # And LiverPlan reads its own export back onto the case's grid (a Case or its Geometry).
        assert np.array_equal(read_label_map(out, c), labels), ext
        assert np.array_equal(read_label_map(out, c.geometry), labels), ext


def test_ircadb_ct_geometry():
    c = load_case(real_path("3dircadb1.17", "PATIENT_DICOM.nii.gz"))
    assert c.geometry.shape == (119, 512, 512)
    assert np.allclose(c.geometry.spacing, (1.6, 0.742, 0.742), atol=2e-3)
    assert c.image.dtype == np.int16 and c.image.min() == -1024 and c.image.max() == 1023


@pytest.mark.parametrize("ext,compress", [(".nii.gz", True), (".nii", False), (".nrrd", True),
                                          (".nrrd", False), (".mha", True), (".mha", False)])
def test_truncated_file_is_reported(tmp_path, ext, compress):
    img, _ = _synthetic_ct()
    src = tmp_path / f"ct{ext}"
    sitk.WriteImage(img, str(src), useCompression=compress)
    data = src.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        load_case(cut)
    assert f"cut{ext} could not be read" in str(e.value) and "damaged or incomplete" in str(e.value)


def test_truncated_real_nifti_is_reported(tmp_path):
    data = real_path("totalsegmentator", "example_ct_sm.nii.gz").read_bytes()
    cut = tmp_path / "example_ct_sm.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged or incomplete"):
        load_case(cut)


def test_garbage_with_image_extension(tmp_path):
    p = tmp_path / "x.nii.gz"
    p.write_bytes(gzip.compress(b"hello world" * 10))
    with pytest.raises(InputError, match="could not be read"):
        load_case(p)
    q = tmp_path / "empty.nrrd"
    q.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_case(q)


def test_2d_and_4d_and_vector_images_are_refused(tmp_path):
    sitk.WriteImage(sitk.Image(64, 64, sitk.sitkInt16), str(tmp_path / "slice.nii.gz"))
    with pytest.raises(InputError, match="single 2D image"):
        load_case(tmp_path / "slice.nii.gz")
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkInt16), str(tmp_path / "t.nii.gz"))
    with pytest.raises(InputError, match="4 dimensions"):
        load_case(tmp_path / "t.nii.gz")
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorUInt8, 3), str(tmp_path / "rgb.mha"))
    with pytest.raises(InputError, match="values per voxel"):
        load_case(tmp_path / "rgb.mha")


def test_label_map_opened_as_ct_is_refused(tmp_path):
    with pytest.raises(InputError, match="looks like a label map"):
        load_case(real_path("3dircadb1.17", "masks", "portalvein.nii.gz"))
    seg = tmp_path / "s.seg.nrrd"
    seg.write_bytes(b"NRRD0004\n")
    with pytest.raises(InputError, match="3D Slicer segmentation"):
        load_case(seg)


def test_mr_like_intensities_are_warned(tmp_path):
    arr = np.random.default_rng(1).integers(0, 700, size=(10, 20, 20)).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    sitk.WriteImage(img, str(tmp_path / "mr.nii.gz"))
    c = load_case(tmp_path / "mr.nii.gz")
    assert any("do not look like CT Hounsfield units" in w for w in c.provenance.warnings)


def test_a_ct_with_a_field_of_view_fitted_to_the_liver_is_not_called_non_ct(tmp_path):
    # little air in the picture (1st percentile -405 HU): it was warned as "not CT Hounsfield units"
    from engine.io import write_image
    from engine.phantom import make_phantom

    ct = make_phantom(seed=11, shape=(64, 96, 96), spacing=(2.5, 1.8, 1.8))
    assert np.percentile(ct.image, 1) > -500
    write_image(tmp_path / "tight.nii.gz", ct)
    assert not any("Hounsfield" in w for w in load_case(tmp_path / "tight.nii.gz").provenance.warnings)
    # the same values shifted to start at 0 (no rescale) are still questioned
    arr = (ct.image.astype(np.int32) + 1024).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "shifted.nii.gz"))
    assert any("Hounsfield" in w for w in load_case(tmp_path / "shifted.nii.gz").provenance.warnings)


def test_exports_never_overwrite_unless_asked(tmp_path):
    img, _ = _synthetic_ct()
    sitk.WriteImage(img, str(tmp_path / "ct.nii.gz"))
    c = load_case(tmp_path / "ct.nii.gz")
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"precious")
    with pytest.raises(ExportError, match="already exists"):
        write_label_map(target, c)
    with pytest.raises(ExportError, match="already exists"):
        write_image(target, c)
    assert target.read_bytes() == b"precious"
    write_label_map(target, c, overwrite=True)
    assert sitk.ReadImage(str(target)).GetSize() == (40, 30, 20)
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]     # no temporary left behind
    with pytest.raises(ExportError, match="choose a label-map file type"):
        write_label_map(tmp_path / "x.png", c)
    with pytest.raises(ExportError, match="use .mha"):
        write_label_map(tmp_path / "x.mhd", c)
    with pytest.raises(ExportError, match="voxels"):
        write_label_map(tmp_path / "y.nii.gz", c, labels=np.zeros((2, 2, 2), np.uint8))


def test_oblique_permuted_image_round_trips_exactly(tmp_path):
    a = np.radians(10)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    # Index axes permuted and flipped as well (x <- -z, y <- x, z <- y): a sagittal-ish, oblique grid.
    perm = np.array([[0, 1, 0], [0, 0, 1], [-1, 0, 0]], float)
    direction = tuple((rot @ perm).ravel())
    img, arr = _synthetic_ct(direction=direction)
    src = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(img, str(src))
    ref = sitk.ReadImage(str(src))
    c = load_case(src)
    assert any("oblique" in w for w in c.provenance.warnings)
    labels = (c.image > 1000).astype(np.uint8)
    c.set_labels(labels)
    out = write_label_map(tmp_path / "lab.nii.gz", c)
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == ref.GetSize()
    assert back.GetDirection() == pytest.approx(ref.GetDirection(), abs=1e-6)
    assert back.GetOrigin() == pytest.approx(ref.GetOrigin(), abs=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(back), (arr > 1000).astype(np.uint8))


def test_a_many_structure_label_map_is_recognised_as_labels_not_a_ct():
    # TotalSegmentator's 117-label map opened as a CT: "looks like a label map", not "MR or processed?";
    # an 8-bit windowed CT export (nearly every value used) is not taken for one.
    from engine.io.images import looks_like_label_map

    rng = np.random.default_rng(0)
    ts = np.zeros((40, 64, 64), np.uint8)
    ts[5:35, 8:56, 8:56] = rng.integers(1, 118, size=(30, 48, 48))
    assert looks_like_label_map(ts)
    windowed = rng.integers(0, 256, size=(40, 64, 64)).astype(np.uint8)
    assert not looks_like_label_map(windowed)
    assert not looks_like_label_map(rng.normal(0, 300, (10, 10, 10)).astype(np.int16))


@pytest.mark.real
def test_totalsegmentator_label_map_opened_as_a_ct_is_refused_as_a_label_map():
    from realdata import real_path

    from engine.errors import InputError
    from engine.io import load_case

    with pytest.raises(InputError, match="looks like a label map"):
        load_case(real_path("totalsegmentator", "example_seg.nii.gz"))


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_a_nifti_ct_stored_with_a_scale_and_offset_opens(tmp_path, ext):
    # Common for CT: int16 on disk with scl_slope/scl_inter (HU = 0.5 * stored - 1024). It was refused as
    # "damaged" because its size was compared with the float32 image the reader returns.
    nib = pytest.importorskip("nibabel")
    stored = np.random.default_rng(0).integers(0, 3000, size=(40, 30, 20)).astype(np.int16)
    img = nib.Nifti1Image(stored, np.diag([0.8, 0.8, 2.5, 1.0]))
    img.header.set_slope_inter(0.5, -1024.0)
    p = tmp_path / f"ct{ext}"
    nib.save(img, str(p))
    case = load_case(p)
    assert float(case.image.min()) == pytest.approx(0.5 * stored.min() - 1024, abs=0.5)
    assert float(case.image.max()) == pytest.approx(0.5 * stored.max() - 1024, abs=0.5)
    # ... and a cut-off copy is still refused
    cut = tmp_path / f"cut{ext}"
    data = p.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged or incomplete|could not be read"):
        load_case(cut)


def test_voxels_without_a_value_are_air_with_a_warning_and_an_all_nan_image_is_refused(tmp_path):
    arr = np.full((20, 30, 30), 50.0, np.float32)
    arr[:, :, :5] = -1000.0
    arr[2:4, 10:12, 10:12] = np.nan
    img = sitk.GetImageFromArray(arr)
    sitk.WriteImage(img, str(tmp_path / "nan.nii.gz"))
    case = load_case(tmp_path / "nan.nii.gz")
    assert np.isfinite(case.image).all() and case.image.min() == -1024
    assert any("hold no value (NaN or infinite)" in w for w in case.provenance.warnings)
    sitk.WriteImage(sitk.GetImageFromArray(np.full((20, 30, 30), np.nan, np.float32)), str(tmp_path / "all.nii.gz"))
    with pytest.raises(InputError, match="holds no values"):
        load_case(tmp_path / "all.nii.gz")


def test_a_nifti_with_two_disagreeing_placements_is_warned_and_exported_with_both(tmp_path):
    # qform and sform 12 mm apart: ITK (LiverPlan) reads the qform, nibabel the sform; the exported mask had
    # the qform in both, so nibabel put it 12 mm from the CT
    import nibabel as nib

    from engine.io import read_label_map, write_label_map

    data = np.full((40, 30, 20), -1000, np.int16)
    data[5:35, 5:25, 3:17] = 60
    q = np.diag([1.5, 1.5, 2.5, 1.0])
    q[:3, 3] = (-30.0, -20.0, -25.0)
    s = q.copy()
    s[:3, 3] += (10.0, -7.0, 4.0)
    img = nib.Nifti1Image(data, None)
    img.set_qform(q, code=1)
    img.set_sform(s, code=2)
    nib.save(img, tmp_path / "ct.nii.gz")
    case = load_case(tmp_path / "ct.nii.gz")
    assert any("places its voxels twice" in w and "12.8 mm" in w and "uses the qform" in w
               for w in case.provenance.warnings), case.provenance.warnings
    case.labels[case.image > 0] = 1
    out = write_label_map(tmp_path / "labels.nii.gz", case)
    back = nib.load(out)
    assert np.allclose(back.get_sform(), s) and np.allclose(back.get_qform(), q)
    assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == (1, 2)
    a, b = sitk.ReadImage(str(out)), sitk.ReadImage(str(tmp_path / "ct.nii.gz"))
    assert np.allclose(a.GetOrigin(), b.GetOrigin()) and np.allclose(a.GetDirection(), b.GetDirection())
    assert (read_label_map(out, case) == case.labels).all()
    assert (np.asarray(back.dataobj) == (data > 0)).all()
    # codes 1 and 1 (as dcm2niix writes): ITK reads the sform here, and the warning says so
    img11 = nib.Nifti1Image(data, None)
    img11.set_qform(q, code=1)
    img11.set_sform(s, code=1)
    nib.save(img11, tmp_path / "ct11.nii")
    c11 = load_case(tmp_path / "ct11.nii")
    itk_origin = sitk.ReadImage(str(tmp_path / "ct11.nii")).GetOrigin()
    assert np.allclose(itk_origin, (-s[0, 3], -s[1, 3], s[2, 3]))                  # LPS of the sform
    assert any("uses the sform; tools that read the qform" in w for w in c11.provenance.warnings), \
        c11.provenance.warnings
    c11.labels[c11.image > 0] = 1
    out11 = write_label_map(tmp_path / "labels11.nii", c11)
    b11 = nib.load(out11)
    assert np.allclose(b11.get_sform(), s) and np.allclose(b11.get_qform(), q)
    # one placement (or two that agree): no warning, nothing rewritten
    img2 = nib.Nifti1Image(data, q)
    nib.save(img2, tmp_path / "plain.nii.gz")
    assert not any("twice" in w for w in load_case(tmp_path / "plain.nii.gz").provenance.warnings)
