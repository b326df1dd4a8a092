"""`liverplan report`, run as a user runs it (main.py in a subprocess, no display): the PDF, HTML and DICOM files,
the figures of ``measure``, the scenarios asked for, and clear words for bad input."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args, check=True):
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}      # headless, as on a server
    env["PYTHONPATH"] = str(REPO)
    p = subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, timeout=600, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph")
    cli("phantom", "--out", out, "--seed", 0, "--lesions", 2, "--shape", 48, 80, 80)
    return out / "phantom_000_ct.nii.gz", out / "phantom_000_labels.nii.gz"


def test_report_writes_pdf_html_dcm_without_a_display(phantom, tmp_path):
    pypdf = pytest.importorskip("pypdf")
    import pydicom

    from engine.cli.measure import load_case_with_labels
    from engine.measure import measure

    ct, labels = phantom
    p = cli("report", ct, labels, "--format", "pdf,html,dcm", "--reviewed-by", "Dr Ōta 太田", "--resect",
            "right=5-8", "--height", 170, "--weight", 70, "--reference", labels, "--out", tmp_path)
    for f in ("pdf", "html", "dcm"):
        assert (tmp_path / f"board_report.{f}").stat().st_size > 10_000
    assert "Wrote" in p.stdout
    text = " ".join(" ".join((pg.extract_text() or "").split())
                    for pg in pypdf.PdfReader(str(tmp_path / "board_report.pdf")).pages)
    m = measure(load_case_with_labels(str(ct), str(labels)))
    assert f"{m.value('liver.total_volume_ml'):.1f} mL" in text
    assert "Dr Ōta 太田" in text and "FLR after right" in text and "sFLR" in text
    assert "Evaluation against the reference" in text and "1.000" in text      # labels against themselves
    assert "anterior" in text                                                 # the 3D views were drawn headless
    ds = pydicom.dcmread(tmp_path / "board_report.dcm")
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"


def test_report_refuses_bad_format_and_existing_files(phantom, tmp_path):
    ct, labels = phantom
    p = cli("report", ct, labels, "--window", "80", "--out", tmp_path, check=False)
    assert p.returncode != 0 and "LEVEL,WIDTH" in p.stderr and "Traceback" not in p.stderr
    p = cli("report", ct, labels, "--format", "pdf,docx", "--out", tmp_path, check=False)
    assert p.returncode != 0 and "docx" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "board_report.pdf").write_bytes(b"x")
    p = cli("report", ct, labels, "--format", "pdf", "--no-3d", "--out", tmp_path, check=False)
    assert p.returncode != 0 and "already exist" in p.stderr and (tmp_path / "board_report.pdf").read_bytes() == b"x"


def test_report_of_the_demo_models_output(phantom, tmp_path):
    """`segment` with the bundled demo model, then `report` on its label file: the report names the model,
    the device and mode (from the record `segment` wrote beside the labels) and says NOT FOR CLINICAL USE on
    every page."""
    pypdf = pytest.importorskip("pypdf")
    if not (REPO / "resources" / "models" / "demo").is_dir():
        pytest.skip("the bundled demo model is not in resources/models/demo")
    ct, _ = phantom
    cli("segment", ct, "--model", "demo", "--device", "cpu", "--out", tmp_path / "seg", "--no-progress")
    seg = next((tmp_path / "seg").glob("*_seg.nii.gz"))
    cli("report", ct, seg, "--format", "pdf", "--no-3d", "--out", tmp_path / "rep")
    pages = [" ".join((p.extract_text() or "").split())
             for p in pypdf.PdfReader(str(tmp_path / "rep" / "board_report.pdf")).pages]
    assert all("NOT FOR CLINICAL USE" in p for p in pages)
    assert "LiverPlan demo" in pages[0] and "cpu" in pages[0] and "fast" in pages[0]
    assert "NOT REVIEWED" in pages[0]
