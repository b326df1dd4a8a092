"""The phantom, measure and export commands, run as a user runs them (main.py in a subprocess)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from engine.report import read_csv_rows

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
    rows = {r["key"]: r for r in read_csv_rows(tmp_path / "m.csv")}
    assert float(rows["crlm.count"]["value"]) == 2
    assert (tmp_path / "m_lesions.csv").exists()
    d = json.loads((tmp_path / "m.json").read_text())
    assert d["provenance"]["source"].endswith("phantom_005_ct.nii.gz")


def test_measure_says_what_the_label_file_leaves_out_and_refuses_before_writing(phantoms, tmp_path):
    import numpy as np
    import SimpleITK as sitk

    ct, lab = phantoms / "phantom_005_ct.nii.gz", phantoms / "phantom_005_labels.nii.gz"
    img = sitk.ReadImage(str(lab))
    arr = sitk.GetArrayFromImage(img)
    arr[0, :4, :4] = 9                                   # a value the identity mapping does not cover
    out = sitk.GetImageFromArray(arr.astype(np.uint8))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(tmp_path / "lab9.nii.gz"))
    p = cli("measure", ct, tmp_path / "lab9.nii.gz", "--labels-mapping", "identity", "--json", tmp_path / "m.json")
    assert "Warning: Label values not in the label map (identity) were read as background: 9" in p.stdout
    assert any("not in the label map" in w for w in json.loads((tmp_path / "m.json").read_text())["warnings"])
    # an existing JSON refuses the run before the CSVs are written
    again = cli("measure", ct, lab, "--csv", tmp_path / "n.csv", "--json", tmp_path / "m.json", check=False)
    assert again.returncode == 2 and "m.json already exists" in again.stderr
    assert not (tmp_path / "n.csv").exists() and not (tmp_path / "n_lesions.csv").exists()


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


def test_export_never_replaces_or_writes_into_its_own_inputs(phantoms, tmp_path):
    import hashlib
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    for f in ("phantom_005_ct.nii.gz", "phantom_005_labels.nii.gz"):
        shutil.copyfile(phantoms / f, src / f)
    ct, lab = src / "phantom_005_ct.nii.gz", src / "phantom_005_labels.nii.gz"
    before = hashlib.md5(lab.read_bytes()).hexdigest()
    # --name phantom_005 makes the mask target phantom_005_labels.nii.gz: the input itself
    p = cli("export", ct, lab, "--out", src, "--mask", "nii.gz", "--name", "phantom_005", "--overwrite",
            check=False)
    assert p.returncode == 2 and "is an input of this export" in p.stderr and "Traceback" not in p.stderr
    assert hashlib.md5(lab.read_bytes()).hexdigest() == before
    assert sorted(f.name for f in src.iterdir()) == ["phantom_005_ct.nii.gz", "phantom_005_labels.nii.gz"]


def test_a_failed_export_names_the_files_written_before_it(phantoms, tmp_path):
    # a full disk at the meshes: the label map written before is whole, and the message says it exists
    # (it used to say "nothing was changed")
    ct, lab = phantoms / "phantom_006_ct.nii.gz", phantoms / "phantom_006_labels.nii.gz"
    script = tmp_path / "run.py"
    script.write_text(
        "import shutil, sys\n"
        "from collections import namedtuple\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "U = namedtuple('U', 'total used free')\n"
        "shutil.disk_usage = lambda p: U(10**9, 10**9 - 3000, 3000)\n"
        "from main import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    p = subprocess.run([sys.executable, str(script), "export", str(ct), str(lab), "--out", str(tmp_path / "o"),
                        "--mask", "nii.gz", "--mesh", "vtp", "--name", "c"], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
    assert p.returncode == 2 and "The disk is full" in p.stderr, p.stderr
    assert "1 of" in p.stderr and "c_labels.nii.gz" in p.stderr and "Traceback" not in p.stderr
    assert sorted(f.name for f in (tmp_path / "o").iterdir()) == ["c_labels.nii.gz"]


def test_demo_measurements_printed(capsys):
    from engine.cli.demo import print_demo_measurements

    assert print_demo_measurements() == 0
    out = capsys.readouterr().out
    assert "demo" in out.lower() and "Tumour burden" in out and "Lesions (26-connected" in out
