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
    assert not work.exists()                       # not even nnU-Net's empty folders


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


@pytest.mark.parametrize("flags, says", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--iterations", "0", "--val-iterations", "0"], "--val-iterations must be at least 1"),
    (["--patch", "0", "48", "48"], "--patch sizes must be positive"),
    (["--lr", "-0.1"], "--lr must be 0 or more"),
    (["--da-processes", "-1"], "--da-processes must be 0"),
    (["--features", "8", "16", "32", "64", "128", "256", "512"], "multiple of 64 and at least 128"),
    (["--phantom-shape", "8", "8", "8"], "--phantom-shape must be at least 16"),
    (["--oversample", "1.5"], "--oversample is a fraction"),
    (["--time-limit", "-1"], "--time-limit must be above 0"),
    (["--init-weights", "/no/such/checkpoint.pth"], "there is no such checkpoint file"),
    (["--init-weights", __file__, "--continue"], "choose one"),
    (["--init-weights", "/no/such/checkpoint.pth", "--check-only"], "there is no such checkpoint file"),
])
def test_impossible_training_settings_are_refused_in_words_before_any_work(tmp_path, capsys, flags, says):
    work = tmp_path / "work"
    rc = main(["train", "--work-dir", str(work), "--phantoms", "3"] + flags)
    err = capsys.readouterr().err
    assert rc == 2 and says in err and "Traceback" not in err, err
    assert not work.exists()


def test_a_gpu_that_is_not_there_is_said_before_any_work(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)     # a machine without one, anywhere
    work = tmp_path / "work"
    rc = main(["train", "--work-dir", str(work), "--phantoms", "3", "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and "no usable CUDA GPU" in err and "Traceback" not in err
    assert not work.exists()
    # --check-only says it (a cohort may be checked on a laptop for a GPU workstation) and writes nothing
    rc = main(["train", "--work-dir", str(work), "--phantoms", "3", "--device", "cuda", "--check-only"])
    out = capsys.readouterr().out
    assert rc == 0 and "Note: " in out and "no usable CUDA GPU" in out and not work.exists()
