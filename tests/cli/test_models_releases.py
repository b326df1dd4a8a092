"""`liverplan models install-folder / install --label-map / list` and `segment --model "<set>"` with stand-ins
of the public releases (their exact layouts, tiny random networks)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import main
from release_standins import build_standin, zip_release  # tests/engine, on sys.path through conftest.py
from tiny_model import small_phantom


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "userdata"
    monkeypatch.setenv("LIVERPLAN_DATA_DIR", str(d))
    return d


@pytest.fixture(scope="module")
def zip_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standins")
    d = tmp_path_factory.mktemp("carried_over")
    for i, k in enumerate(["ts_organs", "ts_cardiac", "ts_liver_vessels", "ts_liver_lesions", "ts_liver_segments"]):
        folder = build_standin(root, k, seed=i)
        zip_release(folder, d / f"{folder.parent.name}.zip")
    return d


def test_install_a_folder_of_zips_then_list_shows_licences_and_the_set(data_dir, zip_folder, capsys):
    assert main.main(["models", "install-folder", str(zip_folder)]) == 0
    out = capsys.readouterr().out
    assert out.count("installed:") == 5
    assert main.main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "TotalSegmentator organs (part 1)" in out and "TotalSegmentator cardiac (part 3)" in out
    assert "licence: Apache-2.0" in out
    assert 'model set: TotalSegmentator liver set' in out and "all parts installed" in out
    assert out.count("<- runs") == 6         # the five + the bundled demo: one configuration each


def test_ambiguous_model_is_refused_on_the_command_line(data_dir, zip_folder, tmp_path, capsys):
    main.main(["models", "install-folder", str(zip_folder)])
    from engine.io import write_image
    ct = tmp_path / "ct.nii.gz"
    write_image(ct, small_phantom(seed=6, shape=(20, 40, 40)))
    rc = main.main(["segment", str(ct), "--model", "TotalSegmentator", "--out", str(tmp_path / "o"),
                    "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0 and "could mean" in err and "--model Dataset291" in err


def test_install_with_a_label_map_for_unknown_labels(data_dir, tmp_path, capsys):
    folder = build_standin(tmp_path / "m", "msd_vessel", seed=9)
    ds = json.loads((folder / "dataset.json").read_text())
    ds["labels"] = {"background": 0, "hepatic_tree": 1, "mass": 2}
    (folder / "dataset.json").write_text(json.dumps(ds))
    z = zip_release(folder, tmp_path / "other_model.zip")
    assert main.main(["models", "install", str(z)]) != 0
    assert "hepatic_tree" in capsys.readouterr().err
    lm = tmp_path / "map.json"
    lm.write_text(json.dumps({"vessels": ["hepatic_tree"], "crlm": ["mass"]}))
    assert main.main(["models", "install", str(z), "--label-map", str(lm)]) == 0
    assert main.main(["models", "show", "other_model"]) == 0
    out = capsys.readouterr().out
    assert "'hepatic_tree' -> Vessel, unassigned" in out and "'mass' -> CRLM lesions" in out


def test_segment_with_the_set_in_one_command(data_dir, zip_folder, tmp_path, capsys):
    """One command runs every part, writes one label map, the Couinaud segment map beside it, and the
    provenance lists every part (real stand-in networks: what they label is noise, the plumbing is not)."""
    main.main(["models", "install-folder", str(zip_folder)])
    from engine.io import write_image
    ct = tmp_path / "ct.nii.gz"
    write_image(ct, small_phantom(seed=6, shape=(24, 48, 48)))
    out = tmp_path / "out"
    rc = main.main(["segment", str(ct), "--model", "TotalSegmentator liver set", "--out", str(out),
                    "--device", "cpu", "--threads", "1", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    prov = json.loads((out / "ct_segmentation.json").read_text())["provenance"]
    assert prov["model_set"]["name"] == "TotalSegmentator liver set"
    assert len(prov["models"]) == 5 and all(r["image_reader"] == "NibabelIOWithReorient" for r in prov["runs"])
    assert (out / "ct_seg.nii.gz").is_file() and (out / "ct_couinaud.nii.gz").is_file()
    import SimpleITK as sitk
    cou = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct_couinaud.nii.gz")))
    assert cou.max() <= 8 and cou.dtype == np.uint8
    err = capsys.readouterr().err
    assert "Apache-2.0" in err           # the licence is said with each model used
