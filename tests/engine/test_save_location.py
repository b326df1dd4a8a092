"""Save labels proposes a folder the command line accepts as an output: never the CT's own source folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.case import Case
from engine.cli.paths import out_in_folder, source_folder
from engine.geometry import Geometry
from engine.save_location import label_save_problem, proposed_label_path


def _case(source: Path, fmt: str) -> Case:
    c = Case(image=np.zeros((4, 8, 8), np.int16), geometry=Geometry((4, 8, 8), (1.0, 1.0, 1.0)), name="PATIENT_DICOM")
    c.provenance.source, c.provenance.source_format = str(source), fmt
    return c


def test_the_proposal_is_not_the_cts_folder(tmp_path):
    data = tmp_path / "3dircadb1.17"
    data.mkdir()
    ct = data / "PATIENT_DICOM.nii.gz"
    ct.write_bytes(b"x")
    home = tmp_path / "home"
    home.mkdir()
    p = proposed_label_path(_case(ct, "nifti"), home=home)
    assert p.name == "PATIENT_DICOM_labels.nii.gz"
    assert data not in p.parents and p.parent.is_dir()
    # the command line accepts that folder as --out for this input (file or its folder)
    assert out_in_folder(p.parent, source_folder(data)) is None and out_in_folder(p.parent, source_folder(ct)) is None
    # the last folder saved to is proposed again, unless it is the source folder
    other = tmp_path / "results"
    other.mkdir()
    assert proposed_label_path(_case(ct, "nifti"), other, home=home) == other / "PATIENT_DICOM_labels.nii.gz"
    assert data not in proposed_label_path(_case(ct, "nifti"), data, home=home).parents


def test_a_dicom_folder_is_refused(tmp_path):
    dicom = tmp_path / "series"
    dicom.mkdir()
    case = _case(dicom, "dicom")
    why = label_save_problem(case, dicom / "labels.nii.gz")
    assert why and "DICOM folder" in why and "Choose another folder" in why
    assert label_save_problem(case, tmp_path / "labels.nii.gz") is None
    assert dicom not in proposed_label_path(case, home=tmp_path).parents
