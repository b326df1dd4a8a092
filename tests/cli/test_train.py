"""``main.py train`` from the command line: help, cohort checks with clear reports, no tracebacks."""
from __future__ import annotations

import numpy as np
import pytest

from main import main


def _pair(folder, cid, lab_shape=(8, 12, 12), values=(1, 2, 3, 4, 5)):
    import SimpleITK as sitk

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "references").mkdir(parents=True, exist_ok=True)
    ct = np.random.default_rng(1).normal(40, 30, (8, 12, 12)).astype(np.int16)
    ct[:, :, :2] = -1000
    sitk.WriteImage(sitk.GetImageFromArray(ct), str(folder / "images" / f"{cid}.nii.gz"))
    lab = np.zeros(lab_shape, np.uint8)
    for i, v in enumerate(values):
        lab[1, 1 + i, 1] = v
    sitk.WriteImage(sitk.GetImageFromArray(lab), str(folder / "references" / f"{cid}.nii.gz"))


def test_help_lists_the_pipeline_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--cohort", "--label-map", "--work-dir", "--configuration", "--fold", "--device", "--continue",
                 "--export", "--zip", "--phantoms", "--time-limit"):
        assert flag in out


def test_check_only_good_cohort_writes_nothing(tmp_path, capsys):
    for cid in ("a", "b"):
        _pair(tmp_path / "cohort", cid)
    work = tmp_path / "work"
    assert main(["train", "--work-dir", str(work), "--cohort", str(tmp_path / "cohort"), "--check-only"]) == 0
    out = capsys.readouterr().out
    assert "2 usable, 0 with problems" in out
    assert not any((work / "nnUNet_raw").iterdir())


def test_bad_cohort_is_reported_not_crashed(tmp_path, capsys):
    _pair(tmp_path / "cohort", "good")
    _pair(tmp_path / "cohort", "shifted", lab_shape=(8, 12, 10))
    _pair(tmp_path / "cohort", "noivc", values=(1, 2, 3, 0, 5))
    rc = main(["train", "--work-dir", str(tmp_path / "work"), "--cohort", str(tmp_path / "cohort")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nothing was written" in err and "PROBLEM shifted" in err and "PROBLEM noivc" in err
    assert "inferior vena cava" in err.lower()
    assert "Traceback" not in err
    assert not (tmp_path / "work" / "nnUNet_raw" / "Dataset501_LiverPlan").exists()


def test_unknown_structure_name_in_label_map(tmp_path, capsys):
    for cid in ("a", "b"):
        _pair(tmp_path / "cohort", cid)
    (tmp_path / "map.json").write_text('{"liver": [1], "gallbladder": [2]}')
    rc = main(["train", "--work-dir", str(tmp_path / "w"), "--cohort", str(tmp_path / "cohort"),
               "--label-map", str(tmp_path / "map.json"), "--check-only"])
    assert rc == 2
    assert "gallbladder" in capsys.readouterr().err


def test_no_training_data_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--work-dir", str(tmp_path / "w")]) == 2
    assert "--phantoms" in capsys.readouterr().err
