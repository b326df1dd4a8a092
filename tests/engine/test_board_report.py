"""The tumour-board report (engine.board_report, ``main.py report``): its numbers equal ``measure``'s, every key
image shows the lesion it names, the DICOM wrapper validates and files with the CT's study, --anonymise leaves
no patient name/ID/birth date in any byte, and the hard cases (no lesion, no liver, 200 lesions, a non-Latin
name, the demo model) each give a correct report."""
from __future__ import annotations

import io
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from engine.board_report import BoardOptions, build_report, edit_summary, write_report
from engine.labels import Label
from engine.measure import measure
from engine.phantom import demo_case, make_phantom
from tests.realdata import real_path

pypdf = pytest.importorskip("pypdf")

NAME = "Müller^Łódź 肝臓"
PATIENT_ID = "PID-7731-XQ"
BIRTH = "19450317"


def _pdf_pages(path: Path) -> list[str]:
    """Each page's text, whitespace (line wraps in table cells) collapsed to single spaces."""
    return [" ".join((p.extract_text() or "").split()) for p in pypdf.PdfReader(str(path)).pages]


def _png_rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _all_streams_text(pdf_bytes: bytes) -> bytes:
    """The PDF's bytes with every Flate stream inflated (a name could hide in a compressed stream)."""
    out = [pdf_bytes]
    for m in __import__("re").finditer(rb"stream\r?\n", pdf_bytes):
        start = m.end()
        end = pdf_bytes.find(b"endstream", start)
        try:
            out.append(zlib.decompress(pdf_bytes[start:end]))
        except zlib.error:
            pass
    return b"\n".join(out)


# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    case = demo_case()
    # as the demo model's output: its card says demo / not for clinical use
    case.provenance.model_card = {"name": "LiverPlan demo", "version": "1.0", "demo": True,
                                  "not_for_clinical_use": True, "training_data": "synthetic phantoms"}
    case.provenance.label_source = "model: LiverPlan demo"
    case.provenance.extra["segmentation"] = {"device": "cpu", "mode": "fast"}
    rep = build_report(case, BoardOptions(reviewed_by="Dr Anna Kowalska"))
    out = tmp_path_factory.mktemp("demo")
    paths = write_report(rep, out, ("pdf", "html"))
    return case, rep, out, paths


def test_demo_pdf_holds_measure_numbers_and_demo_warning_on_every_page(demo_report):
    case, rep, out, _ = demo_report
    m = measure(case)
    pages = _pdf_pages(out / "board_report.pdf")
    text = "\n".join(pages)
    assert f"{m.value('liver.total_volume_ml'):.1f} mL" in pages[0]          # first page stands alone
    assert f"{m.value('crlm.tumour_burden_pct'):.2f} %" in pages[0]
    for l in m.lesions:
        assert f"{l.volume_ml:.2f}" in text and f"{l.longest_diameter_mm:.1f}" in text
        assert f"{l.slice_range[0] + 1}–{l.slice_range[1] + 1}" in text.replace("– ", "–")   # a cell may wrap
    for p in pages:
        assert "NOT FOR CLINICAL USE" in p
    assert "Dr Anna Kowalska" in pages[0]
    assert "FLR after right hepatectomy" in pages[0]
    assert "Lesion table" in text and "Key images" in text
    assert len(rep.key_images) == 2 * len(m.lesions)
    # three different 3D views and a remnant per scenario, none blank
    pics = [_png_rgb(p) for p in list(rep.views.values()) + list(rep.remnants.values())]
    assert set(rep.views) == {"anterior", "posterior", "above"} and len(rep.remnants) == 2
    assert all(p.std() > 10 for p in pics)
    for i in range(len(pics)):
        for j in range(i + 1, len(pics)):
            assert np.abs(pics[i].astype(int) - pics[j].astype(int)).mean() > 1.0, (i, j)


def test_key_images_show_the_lesion_they_name(demo_report):
    case, rep, _, _ = demo_report
    cc, _ = ndimage.label(case.labels == Label.CRLM, structure=np.ones((3, 3, 3), bool))
    by_id = {l.id: l for l in rep.measurements.lesions}
    for ki in rep.key_images:
        rgb = _png_rgb(ki.png)
        assert rgb.std() > 20, f"key image of lesion {ki.lesion_id} ({ki.view}) is blank"
        # the pixel at the marker maps back to a voxel of that very lesion
        v = ki.px_to_voxel(*ki.marker_px)
        assert v == ki.marker_voxel
        assert case.labels[v] == Label.CRLM
        comp = cc[v]
        assert int((cc == comp).sum()) == by_id[ki.lesion_id].voxel_count
        # the ring is drawn there (yellow on its rim)
        c, r = ki.marker_px
        rim = rgb[r - 9:r + 10, c - 9:c + 10].reshape(-1, 3)
        assert np.any((rim[:, 0] > 200) & (rim[:, 1] > 180) & (rim[:, 2] < 80))
        # the lesion's green outline is in the picture
        assert np.any(np.all(rgb == (60, 190, 75), axis=-1))


def test_html_is_self_contained_and_opens_in_headless_chromium(demo_report):
    _, _, out, _ = demo_report
    html = (out / "board_report.html").read_text(encoding="utf-8")
    assert "http://" not in html.replace("http://www.w3.org", "") and "<script" not in html
    assert html.count("data:image/png;base64,") >= 8
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium is not installed (make apt-deps installs it)")
    res = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (out / "board_report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert "Tumour-board report" in res.stdout and "Lesion table" in res.stdout


# ------------------------------------------------------------------------------------------------
def _write_dicom_series(case, folder: Path, name=NAME, pid=PATIENT_ID, birth=BIRTH) -> str:
    """The case's CT as a DICOM CT series (one file per axial slice); returns the study UID."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    g = case.geometry
    for k in range(case.image.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, pid, birth, "F"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "S1", "ACC99"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 3, k + 1
        ds.SeriesDescription = "ABDOMEN PORTAL VENOUS"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(v) for v in g.index_to_physical((k, 0, 0))]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [float(g.spacing[1]), float(g.spacing[2])]
        ds.SliceThickness = float(g.spacing[0])
        ds.Rows, ds.Columns = case.image.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(case.image[k].astype(np.int16)).tobytes()
        pydicom.dcmwrite(folder / f"ct{k:04d}.dcm", ds, enforce_file_format=True)
    return study


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory):
    from engine.io import load_case

    ph = make_phantom(seed=5, shape=(48, 80, 80), n_lesions=2)
    root = tmp_path_factory.mktemp("dicom")
    study = _write_dicom_series(ph, root / "ct")
    case = load_case(root / "ct")
    case.set_labels(ph.labels, label_source="phantom")
    return case, study, root


def _dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian's dicom3tools) is not installed: make apt-deps installs it")
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]


def test_dicom_case_header_non_latin_name_and_encapsulated_pdf(dicom_case, tmp_path):
    import pydicom

    case, study, _ = dicom_case
    rep = build_report(case, BoardOptions(views_3d=False))
    paths = write_report(rep, tmp_path, ("pdf", "html", "dcm"))
    assert [p.suffix for p in paths] == [".pdf", ".html", ".dcm"]
    first = _pdf_pages(tmp_path / "board_report.pdf")[0]
    assert "Müller Łódź 肝臓" in first and PATIENT_ID in first and "1945-03-17" in first
    assert "2024-01-02" in first and "ABDOMEN PORTAL VENOUS" in first and "portal" in first.lower()
    assert "Müller Łódź 肝臓" in (tmp_path / "board_report.html").read_text(encoding="utf-8")
    assert _dciodvfy_errors(tmp_path / "board_report.dcm") == []
    ds = pydicom.dcmread(tmp_path / "board_report.dcm")
    assert ds.StudyInstanceUID == study
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1" and ds.Modality == "DOC"
    assert str(ds.PatientName) == NAME and ds.PatientID == PATIENT_ID
    assert ds.EncapsulatedDocument[:5] == b"%PDF-"
    assert ds.SourceInstanceSequence[0].ReferencedSOPInstanceUID in rep.patient.ct_instance_uids


def test_anonymise_leaves_no_name_id_or_birth_date_in_any_byte(dicom_case, tmp_path):
    import pydicom

    case, study, _ = dicom_case
    rep = build_report(case, BoardOptions(anonymise=True, views_3d=False))
    write_report(rep, tmp_path, ("pdf", "html", "dcm"))
    needles = [s.encode() for s in ("Müller", "Łódź", "肝臓", PATIENT_ID, BIRTH, "1945-03-17", "2024-01-02",
                                    "ABDOMEN PORTAL VENOUS", str(case.provenance.source))]
    needles += ["Müller".encode("utf-16-be"), "Łódź".encode("utf-16-be")]
    for f in ("board_report.pdf", "board_report.html", "board_report.dcm"):
        data = (tmp_path / f).read_bytes()
        hay = _all_streams_text(data) if f.endswith(".pdf") else data
        if f.endswith(".dcm"):
            hay += _all_streams_text(data)
        for n in needles:
            assert n not in hay, f"{n!r} found in {f}"
    text = "\n".join(_pdf_pages(tmp_path / "board_report.pdf"))
    assert "anonymised" in text
    for word in ("Müller", "Łódź", "肝臓", PATIENT_ID, "1945", "2024-01-02", "ABDOMEN PORTAL"):
        assert word not in text, f"{word} in the anonymised PDF's text"
    meta = pypdf.PdfReader(str(tmp_path / "board_report.pdf")).metadata
    assert all("Müller" not in str(v) for v in meta.values())
    ds = pydicom.dcmread(tmp_path / "board_report.dcm")
    assert str(ds.PatientName) == "" and ds.PatientID == "" and ds.PatientBirthDate == ""
    assert _dciodvfy_errors(tmp_path / "board_report.dcm") == []


# ------------------------------------------------------------------------------------------------
def test_case_without_lesions(tmp_path):
    case = make_phantom(seed=3, shape=(48, 80, 80), n_lesions=0)
    rep = build_report(case, BoardOptions(views_3d=False))
    write_report(rep, tmp_path, ("pdf",))
    text = "\n".join(_pdf_pages(tmp_path / "board_report.pdf"))
    assert "No lesion is labelled." in text and rep.key_images == []
    assert f"{measure(case).value('liver.total_volume_ml'):.1f} mL" in text


def test_case_without_liver(tmp_path):
    case = make_phantom(seed=3, shape=(48, 80, 80), n_lesions=1)
    case.labels[np.isin(case.labels, (Label.PARENCHYMA, Label.CRLM))] = 0
    rep = build_report(case, BoardOptions(views_3d=True))
    write_report(rep, tmp_path, ("pdf", "html"))
    first = _pdf_pages(tmp_path / "board_report.pdf")[0]
    assert "No liver is labelled" in first and "Lesions 0" in first and "Total liver volume n/a" in first
    assert rep.planner is None and rep.key_images == []


def test_french_words_from_the_table(tmp_path):
    case = make_phantom(seed=3, shape=(48, 80, 80), n_lesions=1)
    rep = build_report(case, BoardOptions(language="fr", views_3d=False))
    write_report(rep, tmp_path, ("pdf",))
    text = "\n".join(_pdf_pages(tmp_path / "board_report.pdf"))
    assert "Volume hépatique total" in text and "NON RELU" in text and "Tableau des lésions" in text


def test_two_hundred_lesions_paginate(tmp_path):
    from engine.case import Case
    from engine.geometry import Geometry

    shape = (40, 96, 96)
    g = Geometry(shape=shape, spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0))
    labels = np.zeros(shape, np.uint8)
    labels[4:36, 8:88, 8:88] = Label.PARENCHYMA
    n = 0
    for z in range(7, 34, 7):              # 4 x 7 x 7 = 196 + 4 more below
        for y in range(12, 86, 11):
            for x in range(12, 86, 11):
                labels[z:z + 2, y:y + 2, x:x + 2] = Label.CRLM
                n += 1
    for x in (14, 30, 46, 62):
        labels[33:35, 84:86, x:x + 2] = Label.CRLM
        n += 1
    assert n == 200
    image = np.where(labels == Label.CRLM, 40, np.where(labels > 0, 110, -100)).astype(np.int16)
    case = Case(image=image, geometry=g, labels=labels, name="grid200")
    rep = build_report(case, BoardOptions(views_3d=False))
    assert len(rep.measurements.lesions) == 200 and len(rep.key_images) == 400
    write_report(rep, tmp_path, ("pdf",))
    pages = _pdf_pages(tmp_path / "board_report.pdf")
    assert len(pages) > 20
    text = "\n".join(pages)
    assert "Lesion 200 — axial" in text and "Lesion 1 — coronal" in text


def test_hand_edit_summary_counts_net_change_since_the_model():
    from engine import edits

    case = make_phantom(seed=3, shape=(48, 80, 80), n_lesions=1)
    model_labels = case.labels.copy()
    case.labels[case.labels == Label.CRLM] = Label.PARENCHYMA       # what was shown before the model ran
    h = edits.EditHistory(case.labels)
    before = model_labels.copy()
    h.commit("Segmentation (demo)", edits.replace_all(case.labels, model_labels), kind="segmentation")
    liver = np.argwhere(case.labels == Label.PARENCHYMA)
    c = liver[len(liver) // 2]
    h.commit("brush", edits.brush(case.labels, c, 6.0, case.geometry.spacing, int(Label.CRLM)), kind="brush")
    h.commit("erase", edits.brush(case.labels, c + (0, 0, 3), 3.0, case.geometry.spacing, 0, erase=True),
             kind="erase")
    s = edit_summary(h, case.labels)
    changed = case.labels != before
    assert s.since == "Segmentation (demo)" and s.steps == 2
    assert s.added.get(Label.CRLM, 0) == int(np.count_nonzero(changed & (case.labels == Label.CRLM)))
    assert s.removed.get(Label.PARENCHYMA, 0) == int(np.count_nonzero(changed & (before == Label.PARENCHYMA)))
    assert sum(s.added.values()) > 0


def test_real_ircadb_case_pdf_holds_measure_numbers(tmp_path):
    from engine.cli.measure import load_case_with_labels, measure_with_warnings

    ct = real_path("3dircadb1.17", "PATIENT_DICOM.nii.gz")
    masks = real_path("3dircadb1.17", "masks")
    case = load_case_with_labels(str(ct), str(masks), "ircadb")
    m = measure_with_warnings(case)
    rep = build_report(case, BoardOptions(views_3d=False), measurements=m)
    write_report(rep, tmp_path, ("pdf",))
    text = "\n".join(_pdf_pages(tmp_path / "board_report.pdf"))
    assert f"{m.value('liver.total_volume_ml'):.1f} mL" in text
    for l in m.lesions:
        assert f"{l.volume_ml:.2f}" in text and f"{l.longest_diameter_mm:.1f}" in text
    assert "venoussystem" in text                     # the label file's own warnings are carried
    assert len(rep.key_images) == 2 * len(m.lesions)
    for ki in rep.key_images:                          # each key image marks a voxel of its lesion
        assert _png_rgb(ki.png).std() > 20
        assert case.labels[ki.px_to_voxel(*ki.marker_px)] == Label.CRLM


def test_anonymised_warnings_keep_no_path(tmp_path):
    case = make_phantom(seed=3, shape=(48, 80, 80), n_lesions=1)
    case.name = "Kowalski_Jan"
    case.provenance.source = "/data/Kowalski_Jan/ct.nii.gz"
    case.provenance.warnings.append("Something about /data/Kowalski_Jan/ct.nii.gz to check.")
    rep = build_report(case, BoardOptions(anonymise=True, views_3d=False))
    write_report(rep, tmp_path, ("pdf", "html"))
    text = "\n".join(_pdf_pages(tmp_path / "board_report.pdf"))
    assert "Something about" in text and "Kowalski" not in text
    assert b"Kowalski" not in (tmp_path / "board_report.html").read_bytes()
