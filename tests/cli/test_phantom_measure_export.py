"""The phantom, measure and export commands, run as a user runs them (main.py in a subprocess)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args, check=True):
    p = subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph")
    p = cli("phantom", "--out", out, "--n", 2, "--seed", 5, "--shape", 40, 48, 48, "--lesions", 2)
    assert "Wrote 2 phantom(s)" in p.stdout
    return out


def test_phantom_layout(phantoms):
    names = sorted(p.name for p in phantoms.iterdir())
    assert names == ["phantom_005_ct.nii.gz", "phantom_005_info.json", "phantom_005_labels.nii.gz",
                     "phantom_006_ct.nii.gz", "phantom_006_info.json", "phantom_006_labels.nii.gz"]
    info = json.loads((phantoms / "phantom_005_info.json").read_text())
    assert info["seed"] == 5 and len(info["provenance"]["extra"]["lesions"]) == 2
    again = cli("phantom", "--out", phantoms, "--n", 1, "--seed", 5, "--shape", 40, 48, 48, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_measure_prints_tables_and_writes_files(phantoms, tmp_path):
    ct, lab = phantoms / "phantom_005_ct.nii.gz", phantoms / "phantom_005_labels.nii.gz"
    p = cli("measure", ct, lab, "--csv", tmp_path / "m.csv", "--json", tmp_path / "m.json")
    assert "Total liver volume" in p.stdout and "Lesions (26-connected" in p.stdout
    rows = {r["key"]: r for r in csv.DictReader(open(tmp_path / "m.csv", newline=""))}
    assert float(rows["crlm.count"]["value"]) == 2
    assert (tmp_path / "m_lesions.csv").exists()
    d = json.loads((tmp_path / "m.json").read_text())
    assert d["provenance"]["source"].endswith("phantom_005_ct.nii.gz")


def test_measure_bad_input_is_a_sentence(tmp_path):
    p = cli("measure", tmp_path / "nope.nii.gz", tmp_path / "nope_labels.nii.gz", check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr


def test_export_masks_meshes_measurements(phantoms, tmp_path):
    ct, lab = phantoms / "phantom_006_ct.nii.gz", phantoms / "phantom_006_labels.nii.gz"
    out = tmp_path / "exp"
    cli("export", ct, lab, "--out", out, "--mask", "nii.gz,seg.nrrd", "--mesh", "stl,obj",
        "--measurements", "csv,json", "--name", "case")
    names = {p.name for p in out.iterdir()}
    assert {"case_labels.nii.gz", "case_labels.seg.nrrd", "case_liver_LPS.stl", "case_portal_vein_LPS.obj",
            "case_crlm_LPS.stl", "case_measurements.csv", "case_measurements_lesions.csv",
            "case_measurements.json"} <= names
    assert (out / "case_liver_LPS.stl").read_bytes()[:9] == b"SPACE=LPS"
    # The exported mask round-trips onto the CT.
    import numpy as np

    from engine.io import load_case, read_label_map
    case = load_case(ct)
    assert np.array_equal(read_label_map(out / "case_labels.nii.gz", case), read_label_map(lab, case))
    again = cli("export", ct, lab, "--out", out, "--mesh", "stl", "--name", "case", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    cli("export", ct, lab, "--out", out, "--mesh", "stl", "--name", "case", "--overwrite")


def test_demo_measurements_printed(capsys):
    from engine.cli.demo import print_demo_measurements

    assert print_demo_measurements() == 0
    out = capsys.readouterr().out
    assert "demo" in out.lower() and "Tumour burden" in out and "Lesions (26-connected" in out
