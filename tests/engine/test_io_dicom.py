"""DICOM folders: series listing, phase guess, automatic choice, and every kind of bad input.

Bad-input series are made on the fly by editing copies of the real files with pydicom; the real files
are never touched (their hashes are checked at the end of the module).
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from realdata import real_path

from engine.errors import InputError
from engine.io import SeriesChoiceNeeded, list_series, load_case
from engine.io.dicom import guess_phase

TS_DICOM = ("totalsegmentator", "example_ct_dicom")
CT3 = ("dcmqi", "ct-3slice")


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ts_src():
    src = real_path(*TS_DICOM)
    before = _hashes(src)
    yield src
    assert _hashes(src) == before, "a source DICOM file was modified"


@pytest.fixture(scope="module")
def ts_case(ts_src):
    return load_case(ts_src)


def _sorted_copy(src: Path, dst: Path) -> list[Path]:
    """Copy a series; return the copies sorted by z position (inferior first)."""
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for p in sorted(src.iterdir()):
        q = dst / p.name
        shutil.copyfile(p, q)
        out.append(q)
    return sorted(out, key=lambda q: float(pydicom.dcmread(q, stop_before_pixels=True).ImagePositionPatient[2]))


def _edit(paths, fn) -> None:
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        fn(ds, i)
        ds.save_as(p)


# --- real series -----------------------------------------------------------------------------
def test_totalsegmentator_series_with_empty_uids(ts_src):
    series = list_series(ts_src)
    assert len(series) == 1
    s = series[0]
    assert s.usable and s.modality == "CT" and s.n_slices == 20
    assert s.key.startswith("noUID-")   # empty Study/Series UIDs: grouped by other fields
    assert s.description == "CT Body 3.0"
    assert np.allclose(s.spacing, (2.0, 0.9765625, 0.9765625))
    assert s.slice_thickness == 3.0
    assert s.acquisition_time == "14:03:52"
    assert s.phase_guess == "portal" and "96 s" in s.phase_reason
    assert any("40 mm" in w for w in s.warnings)        # thin slab warned


def test_totalsegmentator_series_loads_as_lps_volume(ts_case):
    c = ts_case
    assert c.geometry.shape == (20, 512, 512)
    assert np.allclose(c.geometry.spacing, (2.0, 0.9765625, 0.9765625))
    assert c.geometry.orientation_code() == "LPS"
    assert np.allclose(c.geometry.origin, (-249.51171875, -437.51171875, -804.5))
    assert c.image.dtype == np.int16 and c.image.min() == -1024 and c.image.max() == 1839
    assert c.provenance.source_format == "dicom"
    assert c.provenance.extra["phase_guess"] == "portal"


def test_three_slice_series_reads_with_tiny_coverage_warning():
    c = load_case(real_path(*CT3))
    assert c.geometry.shape == (3, 512, 512)
    assert np.allclose(c.geometry.spacing, (1.0, 0.810547, 0.810547), atol=1e-5)
    assert c.image.min() == -3024 and c.image.max() == 1381
    assert any("covers only 3 mm" in w for w in c.provenance.warnings)


def test_dicom_seg_is_not_a_ct():
    with pytest.raises(InputError) as e:
        load_case(real_path("dcmqi", "liver.dcm"))
    assert "not a CT" in str(e.value) and "segmentation object" in str(e.value)


def test_folder_with_ct_and_seg_opens_the_ct():
    c = load_case(real_path("dcmqi"))          # holds liver.dcm (SEG) and ct-3slice/ (CT)
    assert c.geometry.shape == (3, 512, 512)


def test_one_file_of_a_series_opens_the_series():
    c = load_case(real_path(*CT3) / "02.dcm")
    assert c.geometry.shape == (3, 512, 512)


# --- choosing among several series ----------------------------------------------------------
def _make_study(ts_src: Path, root: Path, descriptions: list[str]) -> list[Path]:
    folders = []
    for n, desc in enumerate(descriptions):
        files = _sorted_copy(ts_src, root / f"s{n}")
        uid = pydicom.uid.generate_uid()

        def fn(ds, i, desc=desc, uid=uid, n=n):
            ds.SeriesDescription = desc
            ds.SeriesInstanceUID = uid
            ds.SeriesNumber = n + 1
            ds.ContrastBolusAgent = ""
        _edit(files, fn)
        folders.append(root / f"s{n}")
    return folders


def test_portal_series_is_picked_among_phases(ts_src, tmp_path):
    _make_study(ts_src, tmp_path, ["Abdomen nativ 3.0", "Leber arteriell 3.0", "Abdomen PV 70s 3.0"])
    series = list_series(tmp_path)
    phases = {s.description: s.phase_guess for s in series}
    assert phases == {"Abdomen nativ 3.0": "native", "Leber arteriell 3.0": "arterial",
                      "Abdomen PV 70s 3.0": "portal"}
    c = load_case(tmp_path)
    assert c.provenance.series_description == "Abdomen PV 70s 3.0"


def test_mixed_series_without_clear_portal_asks_to_choose(ts_src, tmp_path):
    _make_study(ts_src, tmp_path, ["Body 3.0", "Body 1.5"])
    with pytest.raises(SeriesChoiceNeeded) as e:
        load_case(tmp_path)
    msg = str(e.value)
    assert "2 CT series" in msg and "Choose one" in msg and "Body 1.5" in msg
    keys = [s.key for s in e.value.series]
    c = load_case(tmp_path, series=keys[1])
    assert c.provenance.series_description == e.value.series[1].description
    c = load_case(tmp_path, series="1")      # by number in the listed order
    assert c.provenance.series_description == e.value.series[0].description
    with pytest.raises(InputError, match="no single series 'nonsense'"):
        load_case(tmp_path, series="nonsense")


@pytest.mark.parametrize("text,agent,start,acq,phase", [
    ("Portal venous 1mm", "", "", "", "portal"),
    ("ABD VENOUS", "", "", "", "portal"),
    ("Thorax-Abdomen 70s", "", "", "", "portal"),
    ("Arterial phase", "", "", "", "arterial"),
    ("non-contrast abdomen", "", "", "", "native"),
    ("plain", "", "", "", "native"),
    ("Body 3.0", "Omnipaque", "120000", "120115", "portal"),
    ("Body 3.0", "Omnipaque", "120000", "120030", "arterial"),
    ("Body 3.0", "Omnipaque", "120000", "120400", "delayed"),
    ("Body 3.0", "APPLIED", "", "", "contrast"),
    ("Body 3.0", "", "", "", "unknown"),
])
def test_phase_guess(text, agent, start, acq, phase):
    assert guess_phase(text, agent, start, acq)[0] == phase


# --- bad input --------------------------------------------------------------------------------
def test_mr_series_is_refused(ts_src, tmp_path):
    files = _sorted_copy(ts_src, tmp_path / "mr")
    _edit(files, lambda ds, i: setattr(ds, "Modality", "MR"))
    with pytest.raises(InputError) as e:
        load_case(tmp_path / "mr")
    assert "This is not a CT: it is an MR image" in str(e.value)


def test_structured_report_is_refused(tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "sr.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="structured report"):
        load_case(tmp_path)


def test_non_dicom_and_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is empty"):
        load_case(tmp_path / "empty")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="none is a DICOM image"):
        load_case(tmp_path / "docs")
    with pytest.raises(InputError, match="not a file LiverPlan can open"):
        load_case(tmp_path / "docs" / "notes.txt")
    with pytest.raises(InputError, match="does not exist"):
        load_case(tmp_path / "nowhere")


def test_single_slice_is_not_a_volume(ts_src, tmp_path):
    files = _sorted_copy(ts_src, tmp_path / "one")
    for f in files[1:]:
        f.unlink()
    with pytest.raises(InputError, match="single 2D slice"):
        load_case(tmp_path / "one")


def test_missing_middle_slice_is_an_error(ts_src, tmp_path):
    files = _sorted_copy(ts_src, tmp_path / "gap")
    files[10].unlink()
    with pytest.raises(InputError) as e:
        load_case(tmp_path / "gap")
    assert "Slices are missing" in str(e.value) and "4.00 mm" in str(e.value)


def test_duplicate_positions_are_an_error(ts_src, tmp_path):
    files = _sorted_copy(ts_src, tmp_path / "dup")
    pos = pydicom.dcmread(files[4], stop_before_pixels=True).ImagePositionPatient
    _edit([files[5]], lambda ds, i: setattr(ds, "ImagePositionPatient", pos))
    with pytest.raises(InputError, match="occur twice"):
        load_case(tmp_path / "dup")


def test_non_uniform_spacing_is_an_error(ts_src, tmp_path):
    files = _sorted_copy(ts_src, tmp_path / "nonuni")

    def fn(ds, i):   # spacing grows: 2.0, 2.3, 2.6 ... mm
        z0 = -804.5
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
                                   z0 + sum(2.0 + 0.3 * k for k in range(i))]
    _edit(files, fn)
    with pytest.raises(InputError, match="not uniform"):
        load_case(tmp_path / "nonuni")


def test_one_longer_step_is_uneven_spacing_not_a_missing_slice(ts_src, tmp_path):
    # one 2.5 mm step among 2.0 mm steps: no slice fits in the gap, so nothing is "missing"
    files = _sorted_copy(ts_src, tmp_path / "gap25")
    z0 = float(pydicom.dcmread(files[0], stop_before_pixels=True).ImagePositionPatient[2])

    def fn(ds, i):
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
                                   z0 + 2.0 * i + (0.5 if i > 10 else 0.0)]
    _edit(files, fn)
    with pytest.raises(InputError) as e:
        load_case(tmp_path / "gap25")
    assert "not uniform" in str(e.value) and "missing" not in str(e.value)


def test_missing_positions_are_an_error(ts_src, tmp_path):
    files = _sorted_copy(ts_src, tmp_path / "nopos")
    _edit([files[3]], lambda ds, i: delattr(ds, "ImagePositionPatient"))
    with pytest.raises(InputError, match="no position or orientation"):
        load_case(tmp_path / "nopos")


def test_gantry_tilt_is_warned(ts_src, tmp_path):
    files = _sorted_copy(ts_src, tmp_path / "tilt")

    def fn(ds, i):   # positions shift in y by 2 mm * tan(15 deg) per slice: a 15 degree gantry tilt
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + i * 2.0 * np.tan(np.radians(15)), z]
        ds.GantryDetectorTilt = 15
    _edit(files, fn)
    c = load_case(tmp_path / "tilt")
    assert any("gantry tilt of about 15.0 degrees" in w and "resamples them onto an untilted grid" in w
               for w in c.provenance.warnings)


def test_a_tilted_series_is_resampled_so_every_pixel_sits_where_its_file_says(ts_src, tmp_path):
    # ITK stacks tilted slices as if untilted (each slice then sits off by its shift: mm to cm); LiverPlan
    # shifts each slice onto an untilted grid. A shift of exactly one pixel row per slice keeps the check exact.
    from engine.io.dicomseg import dicom_seg_problem

    files = _sorted_copy(ts_src, tmp_path / "tilt")
    sy = float(pydicom.dcmread(files[0], stop_before_pixels=True).PixelSpacing[0])

    def fn(ds, i):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + i * sy, z]      # the column direction is +y (IOP 1 0 0 0 1 0)
    _edit(files, fn)
    c = load_case(tmp_path / "tilt")
    assert c.provenance.extra["gantry_tilt_resampled_deg"] > 20
    untilted = load_case(ts_src)
    assert c.image.shape == (untilted.image.shape[0], untilted.image.shape[1] + len(files) - 1,
                             untilted.image.shape[2])      # widened so that no pixel is lost
    rng = np.random.default_rng(0)
    for f in (files[0], files[7], files[-1]):
        ds = pydicom.dcmread(f)
        px = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        p0 = np.asarray([float(v) for v in ds.ImagePositionPatient])
        for r, col in rng.integers(0, 512, size=(20, 2)):
            world = p0 + col * float(ds.PixelSpacing[1]) * np.array([1.0, 0, 0]) + r * sy * np.array([0, 1.0, 0])
            idx = np.round(c.geometry.physical_to_index(world)).astype(int)
            assert c.image[tuple(idx)] == px[r, col]
    assert "gantry tilt" in dicom_seg_problem(c)                 # a SEG cannot lie on the resampled grid


def test_truncated_dicom_file_is_reported(ts_src, tmp_path):
    files = _sorted_copy(ts_src, tmp_path / "cut")
    data = files[7].read_bytes()
    files[7].write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        load_case(tmp_path / "cut")
    assert "incomplete (cut off)" in str(e.value) and files[7].name in str(e.value)


def test_truncated_uncompressed_dicom_is_reported(tmp_path):
    src = real_path(*CT3)
    files = _sorted_copy(src, tmp_path / "cut3")
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="incomplete"):
        load_case(tmp_path / "cut3")


def test_read_only_source_is_read_and_unchanged(ts_src, tmp_path):
    files = _sorted_copy(ts_src, tmp_path / "ro")
    before = _hashes(tmp_path / "ro")
    for f in files:
        f.chmod(0o444)
    c = load_case(tmp_path / "ro")
    assert c.geometry.shape == (20, 512, 512)
    assert _hashes(tmp_path / "ro") == before


def test_progress_and_cancel(ts_src):
    from engine.progress import CancelToken, Cancelled

    seen = []
    c = load_case(ts_src, progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert c.geometry.shape[0] == 20
    stages = {s for s, _, _ in seen}
    assert {"Reading DICOM headers", "Reading DICOM slices"} <= stages
    assert ("Reading DICOM slices", 20, 20) in seen
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        load_case(ts_src, cancel=token)
    # Cancel while the slices are being read.
    token2 = CancelToken()

    def cancel_midway(stage, done, total):
        if stage == "Reading DICOM slices":
            token2.cancel()
    with pytest.raises(Cancelled):
        load_case(ts_src, progress=cancel_midway, cancel=token2)


def test_files_without_preamble_are_read(tmp_path):
    src = real_path(*CT3)
    (tmp_path / "raw").mkdir()
    for f in src.iterdir():
        data = f.read_bytes()
        assert data[128:132] == b"DICM"
        ds = pydicom.dcmread(f)
        # Write the data set alone: no preamble, no file meta (old ACR-NEMA style export).
        from pydicom.filewriter import write_dataset
        from pydicom.filebase import DicomBytesIO
        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, True
        write_dataset(buf, ds)
        (tmp_path / "raw" / f.stem).write_bytes(buf.getvalue())
    (tmp_path / "raw" / "README").write_text("exported from PACS\n" * 20)
    series = list_series(tmp_path / "raw")
    assert len(series) == 1 and series[0].n_slices == 3 and series[0].usable
    c = load_case(tmp_path / "raw")
    assert c.geometry.shape == (3, 512, 512) and c.image.min() == -3024


def test_two_phases_under_one_series_are_split_and_portal_picked(ts_src, tmp_path):
    folder = tmp_path / "dyn"
    late = _sorted_copy(ts_src, folder / "a")
    early = _sorted_copy(ts_src, folder / "b")

    def arterial(ds, i):   # the same slices scanned 30 s after the bolus (the real ones are at 96 s)
        ds.AcquisitionTime = "140246.7"
        ds.AcquisitionNumber = 13
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
    _edit(early, arterial)
    series = list_series(folder)
    assert len(series) == 2 and all(s.n_slices == 20 for s in series)
    assert sorted(s.phase_guess for s in series) == ["arterial", "portal"]
    assert all("acquisition" in " ".join(s.warnings) for s in series)
    c = load_case(folder)
    assert c.provenance.extra["phase_guess"] == "portal"
    assert c.provenance.extra["acquisition_time"] == "14:03:52"
    assert late[0].exists()


def test_dicom_cut_inside_the_header(ts_src, tmp_path):
    files = _sorted_copy(ts_src, tmp_path / "cuthead")
    files[3].write_bytes(files[3].read_bytes()[:1500])
    with pytest.raises(InputError) as e:
        load_case(tmp_path / "cuthead")
    assert files[3].name in str(e.value) and "incomplete (cut off)" in str(e.value)


def test_dicom_seg_algorithm_says_what_made_the_labels():
    from engine.case import Case, Provenance
    from engine.geometry import Geometry
    from engine.io.dicomseg import _algorithm

    def alg(label_source, card=None, edited=False):
        c = Case(image=np.zeros((2, 2, 2), np.int16), geometry=Geometry((2, 2, 2), (1.0, 1.0, 1.0)),
                 provenance=Provenance(label_source=label_source, model_card=card))
        c.provenance.extra["edited"] = edited
        t, a = _algorithm(c, "9.9")
        return t, str(a[0].AlgorithmName), str(a[0].AlgorithmVersion)

    gui_card = {"card": {"name": "CRLM net", "version": "2.1"}, "path": "/m"}       # the GUI's model record
    assert alg("model: CRLM net", gui_card) == ("AUTOMATIC", "CRLM net", "2.1")
    assert alg("model: CRLM net", {"name": "CRLM net", "version": "2.1"}, edited=True) == \
        ("SEMIAUTOMATIC", "CRLM net", "2.1")
    combined = {"combined": [{"name": "Liver net", "version": "1"}, {"name": "Vessel net", "version": "3"}]}
    assert alg("model: Liver net + Vessel net", combined) == ("AUTOMATIC", "Liver net + Vessel net", "1 + 3")
    assert alg("phantom") == ("AUTOMATIC", "LiverPlan phantom generator", "9.9")
    assert alg("file: /x/labels.nii.gz") == ("SEMIAUTOMATIC", "LiverPlan", "9.9")      # never MANUAL


def test_an_oblique_tilted_series_widens_only_along_its_shift(ts_src, tmp_path):
    # axes rotated 10 degrees about z, slices shifted by 1.5 pixel rows each: 29 rows more, no extra column
    files = _sorted_copy(ts_src, tmp_path / "oblique")
    th = np.radians(10)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    row, col = rot @ [1.0, 0, 0], rot @ [0, 1.0, 0]

    def fn(ds, i):
        p = np.array([float(v) for v in ds.ImagePositionPatient])
        ds.ImagePositionPatient = [float(v) for v in rot @ p + 1.5 * i * float(ds.PixelSpacing[0]) * col]
        ds.ImageOrientationPatient = [float(v) for v in list(row) + list(col)]
    _edit(files, fn)
    c = load_case(tmp_path / "oblique")
    assert sorted(c.image.shape) == [20, 512, 541]
