"""``liverplan info``: series tables, geometry and label counts for each real case, and clear errors."""
from __future__ import annotations

import json
import shutil

import pydicom
import pytest
from realdata import real_path

from main import main


def _info(capsys, *args):
    rc = main(["info", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_ircadb_ct_geometry(capsys):
    rc, out, _ = _info(capsys, real_path("3dircadb1.17", "PATIENT_DICOM.nii.gz"))
    assert rc == 0
    assert "512 x 512 x 119 voxels" in out and "0.743 x 0.743 x 1.6 mm" in out
    assert "orientation: LPS" in out and "-1024 .. 1023" in out and "CT (Hounsfield units)" in out


def test_totalsegmentator_dicom_folder_with_empty_uids(capsys):
    rc, out, _ = _info(capsys, real_path("totalsegmentator", "example_ct_dicom"))
    assert rc == 0
    assert "1 series" in out
    row = next(line for line in out.splitlines() if "CT Body 3.0" in line)
    assert row.startswith("*")                     # the series that would be opened
    assert "512x512x20" in row and "0.977x0.977x2" in row and "14:03:52" in row and "portal venous" in row
    assert "key noUID-" in out and "covers only 40 mm" in out
    assert "would be opened (the only CT volume)" in out


def test_ras_nifti(capsys):
    rc, out, _ = _info(capsys, real_path("totalsegmentator", "example_ct.nii.gz"))
    assert rc == 0
    assert "122 x 101 x 112 voxels" in out and "3 x 3 x 3 mm" in out and "orientation: RAS" in out


def test_dcmqi_folder_three_slices_and_seg(capsys):
    rc, out, _ = _info(capsys, real_path("dcmqi"))
    assert rc == 0
    assert "2 series" in out and "512x512x3" in out and "covers only 3 mm" in out
    assert "cannot open: This is not a CT: it is a segmentation object (DICOM SEG) (segments: Liver)" in out
    assert "would be opened" in out


def test_dicom_seg_file_is_described_as_a_label_map(capsys):
    # it was listed as a one-series DICOM folder that "cannot open: This is not a CT"
    rc, out, _ = _info(capsys, real_path("dcmqi", "liver.dcm"))
    assert rc == 0
    assert out.startswith("DICOM SEG ") and "refers to CT series 1.2.392." in out
    line = next(l for l in out.splitlines() if " Liver " in l)
    assert line.split()[:3] == ["1", "Liver", "3"] and line.rstrip().endswith("Liver parenchyma")
    assert "-> a DICOM SEG (a label map on its CT's grid)" in out


def test_label_map_counts(capsys):
    rc, out, _ = _info(capsys, real_path("dcmqi", "liver_seg.nrrd"))
    assert rc == 0
    assert "label map" in out and "107098" in out and "Liver parenchyma" in out
    rc, out, _ = _info(capsys, real_path("totalsegmentator", "example_seg_dicom.nii.gz"))
    assert "orientation: LAS" in out and "366708" in out and "give a label mapping" in out


def test_ircadb_mask_folder(capsys):
    rc, out, _ = _info(capsys, real_path("3dircadb1.17", "masks"))
    assert rc == 0
    assert "mapping: ircadb" in out
    assert "Hepatic veins + Inferior vena cava (merged)" in out and "2106497" in out


def test_json_output(capsys):
    rc, out, _ = _info(capsys, real_path("totalsegmentator", "example_ct_dicom"), "--json")
    d = json.loads(out)
    assert d["kind"] == "dicom-folder" and d["series"][0]["n_slices"] == 20
    assert d["series"][0]["phase_guess"] == "portal" and d["picked"] == d["series"][0]["key"]


def test_several_series_need_a_choice(capsys, tmp_path):
    src = real_path("totalsegmentator", "example_ct_dicom")
    for n, desc in enumerate(["Body 3.0", "Body 1.5"]):
        uid = pydicom.uid.generate_uid()
        (tmp_path / f"s{n}").mkdir()
        for f in src.iterdir():
            ds = pydicom.dcmread(f)
            ds.SeriesInstanceUID, ds.SeriesDescription, ds.ContrastBolusAgent = uid, desc, ""
            ds.save_as(tmp_path / f"s{n}" / f.name)
    rc, out, _ = _info(capsys, tmp_path)
    assert rc == 0
    assert "2 CT series" in out and "Choose one with --series" in out
    assert not any(line.startswith("*") for line in out.splitlines())
    rc, out, _ = _info(capsys, tmp_path, "--series", "2")
    assert rc == 0 and "chosen by you" in out
    rc, out, _ = _info(capsys, tmp_path, "--series", "3")          # no such series: said, and exit 2
    assert rc == 2 and "There is no single series '3'" in out
    one = next((tmp_path / "s0").iterdir())                        # a file of the folder: the same (it was ignored)
    rc, out, _ = _info(capsys, one, "--series", "3")
    assert rc == 2 and "There is no single series '3'" in out


@pytest.mark.parametrize("make,words", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "e").mkdir() or p / "e", "is empty"),
    (lambda p: (p / "a.txt").write_text("x") and p / "a.txt", "neither a DICOM file nor an image format"),
])
def test_bad_paths_give_a_sentence_not_a_traceback(capsys, tmp_path, make, words):
    rc, out, err = _info(capsys, make(tmp_path))
    assert rc == 2 and words in err and "Traceback" not in err


def test_truncated_dicom_shows_problem(capsys, tmp_path):
    src = real_path("dcmqi", "ct-3slice")
    shutil.copytree(src, tmp_path / "ct")
    f = tmp_path / "ct" / "02.dcm"
    f.write_bytes(f.read_bytes()[:100000])
    rc, out, _ = _info(capsys, tmp_path / "ct")
    assert "incomplete (cut off)" in out


def test_label_map_with_a_mapping(capsys):
    rc, out, _ = _info(capsys, real_path("totalsegmentator", "example_seg_dicom.nii.gz"),
                       "--mapping", "totalsegmentator")
    assert rc == 0 and "mapping totalsegmentator" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()[:1].isdigit()}
    assert rows["5"].rstrip().endswith("Liver parenchyma") and "366708" in rows["5"]
    assert rows["63"].rstrip().endswith("Inferior vena cava")
    assert rows["64"].rstrip().endswith("Portal vein")
    assert rows["1"].rstrip().endswith("-")
    rc, out, err = _info(capsys, real_path("totalsegmentator", "example_seg_dicom.nii.gz"), "--mapping", "x")
    assert rc == 2 and "built-in presets" in err


def test_output_into_a_closed_pipe_is_not_a_traceback(tmp_path):
    # `python main.py models show demo | head -1`: the reader goes away early
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    code = ("import sys, os\n"
            f"sys.path.insert(0, {str(repo)!r})\n"
            "r, w = os.pipe(); os.close(r)\n"            # a pipe nobody reads
            "os.dup2(w, 1)\n"
            "from main import main\n"
            "rc = main(['models', 'show', 'demo'])\n"
            "sys.stderr.write(f'rc={rc}\\n')\n"
            "os._exit(rc)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=False, stderr=subprocess.PIPE, text=True,
                       cwd=repo, timeout=120)
    assert "Traceback" not in p.stderr and "rc=0" in p.stderr, p.stderr
