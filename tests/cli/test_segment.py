"""`liverplan segment` and `liverplan models` end to end with a tiny model (CPU, fast mode)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tiny_model import small_phantom  # tests/engine, on sys.path through conftest.py

import main


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    from engine.io import write_image

    d = tmp_path_factory.mktemp("cases")
    for seed in (1, 2):
        write_image(d / f"ct{seed}.nii.gz", small_phantom(seed=seed, shape=(24, 48, 48)))
    return d


def _model_with_labels(tiny: Path, folder: Path, labels: dict) -> None:
    """A copy of the tiny model in ``folder`` whose dataset.json names its labels ``labels``."""
    import shutil

    shutil.copytree(tiny, folder)
    ds = json.loads((folder / "dataset.json").read_text())
    ds["labels"] = labels
    (folder / "dataset.json").write_text(json.dumps(ds))


def test_segment_one_file_writes_labels_measurements_and_provenance(tiny, cases, tmp_path, capsys):
    import SimpleITK as sitk

    out = tmp_path / "out"
    rc = main.main(["segment", str(cases / "ct1.nii.gz"), "--model", str(tiny), "--out", str(out),
                    "--device", "cpu", "--mode", "fast", "--threads", "1"])
    assert rc == 0
    seg = out / "ct1_seg.nii.gz"
    assert seg.is_file()
    a, b = sitk.ReadImage(str(seg)), sitk.ReadImage(str(cases / "ct1.nii.gz"))
    assert a.GetSize() == b.GetSize() and a.GetSpacing() == pytest.approx(b.GetSpacing())
    assert a.GetOrigin() == pytest.approx(b.GetOrigin(), abs=1e-3)
    text = (out / "ct1_measurements.csv").read_text()
    assert text.startswith("# LiverPlan measurements")        # the provenance notes first (README "Exports")
    assert [l for l in text.splitlines() if not l.startswith("#")][0].startswith("key,name,value")
    assert (out / "ct1_measurements.json").is_file()
    prov = json.loads((out / "ct1_segmentation.json").read_text())["provenance"]
    assert prov["mode"] == "fast" and prov["models"][0]["card"]["name"] == "TinyLiver"
    captured = capsys.readouterr()
    assert "ct1_seg.nii.gz" in captured.out
    assert "predict" in captured.err          # the progress bar
    # a second run refuses to overwrite, with a clear message and exit code 2
    rc = main.main(["segment", str(cases / "ct1.nii.gz"), "--model", str(tiny), "--out", str(out),
                    "--device", "cpu", "--no-progress"])
    assert rc == 2
    assert "--overwrite" in capsys.readouterr().err


def test_segment_batch_folder(tiny, cases, tmp_path, capsys):
    out = tmp_path / "batch"
    rc = main.main(["segment", str(cases), "--model", str(tiny), "--out", str(out), "--device", "cpu",
                    "--threads", "1", "--no-progress", "--format", ".nrrd"])
    assert rc == 0
    assert sorted(p.name for p in out.glob("*_seg.nrrd")) == ["ct1_seg.nrrd", "ct2_seg.nrrd"]


def test_segment_with_a_broken_model_is_a_clear_error(cases, tmp_path, capsys):
    rc = main.main(["segment", str(cases / "ct1.nii.gz"), "--model", str(tmp_path), "--out",
                    str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no nnU-Net v2 model" in err and "Traceback" not in err


def test_models_install_list_show(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIVERPLAN_DATA_DIR", str(tmp_path / "data"))
    z = tmp_path / "pkg.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in tiny.rglob("*"):
            if f.is_file():
                zf.write(f, f"{tiny.parent.name}/{tiny.name}/{f.relative_to(tiny).as_posix()}")
    assert main.main(["models", "install", str(z), "--name", "tiny"]) == 0
    assert "installed" in capsys.readouterr().out
    assert main.main(["models", "list"]) == 0
    assert "TinyLiver" in capsys.readouterr().out
    assert main.main(["models", "show", "tiny"]) == 0
    assert "Portal vein" in capsys.readouterr().out
    assert main.main(["models", "install", str(z), "--name", "tiny"]) == 2
    assert "already installed" in capsys.readouterr().err


def test_segment_prints_and_records_the_scan_warnings(tiny, tmp_path, capsys):
    # an image whose values are not CT Hounsfield units: the result stands, and the user is told so on the
    # console and in the record (it was only inside _measurements.json)
    import SimpleITK as sitk

    from engine.io import write_image

    ph = small_phantom(seed=3, shape=(24, 48, 48))
    ct = tmp_path / "ct.nii.gz"
    write_image(ct, ph)
    img = sitk.ReadImage(str(ct), sitk.sitkFloat32)
    mr = sitk.RescaleIntensity(img, 0.0, 1000.0)
    sitk.WriteImage(mr, str(tmp_path / "mrlike.nii.gz"))
    out = tmp_path / "out"
    rc = main.main(["segment", str(tmp_path / "mrlike.nii.gz"), "--model", str(tiny), "--out", str(out),
                    "--device", "cpu", "--threads", "1", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "warning: The intensities of mrlike.nii.gz do not look like CT Hounsfield units" in printed
    rec = json.loads((out / "mrlike_segmentation.json").read_text())
    assert any("Hounsfield" in w for w in rec["warnings"])


def test_segment_refuses_bad_settings_and_unwritable_output_before_running(tiny, cases, tmp_path, capsys):
    base = ["segment", str(cases / "ct1.nii.gz"), "--model", str(tiny), "--device", "cpu", "--no-progress"]
    assert main.main(base + ["--out", str(tmp_path / "o"), "--threads", "0"]) == 2
    assert "--threads must be 1 or more" in capsys.readouterr().err
    assert main.main(base + ["--out", str(tmp_path / "o"), "--liver-crop-margin", "nan"]) == 2
    assert "--liver-crop-margin must be a number" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main.main(base + ["--out", str(tmp_path / "afile")]) == 2
    assert "is a file; it must be a folder" in capsys.readouterr().err
    # the input folder itself as --out: refused (it used to write into, then choke on, its own outputs)
    assert main.main(["segment", str(cases), "--model", str(tiny), "--out", str(cases), "--device", "cpu"]) == 2
    assert "is the input folder" in capsys.readouterr().err
    # an existing lesion table alone is found before the model runs
    out = tmp_path / "o2"
    out.mkdir()
    (out / "ct1_measurements_lesions.csv").write_text("x")
    assert main.main(base + ["--out", str(out)]) == 2
    assert "ct1_measurements_lesions.csv already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["ct1_measurements_lesions.csv"]


def test_two_inputs_with_one_name_do_not_overwrite_each_other(tiny, cases, tmp_path, capsys):
    import shutil

    from engine.io import load_case, write_image

    batch = tmp_path / "batch"
    batch.mkdir()
    shutil.copyfile(cases / "ct1.nii.gz", batch / "a.nii.gz")
    write_image(batch / "a.nrrd", load_case(cases / "ct2.nii.gz"))
    out = tmp_path / "out"
    rc = main.main(["segment", str(batch), "--model", str(tiny), "--out", str(out), "--device", "cpu",
                    "--threads", "1", "--no-progress", "--overwrite"])
    assert rc == 0
    names = sorted(p.name for p in out.glob("*_seg.nii.gz"))
    assert names == ["a_2_seg.nii.gz", "a_seg.nii.gz"], names
    assert "is taken by" in capsys.readouterr().err


def test_models_list_shows_the_name_to_type(capsys):
    assert main.main(["models", "list"]) == 0
    assert "--model demo" in capsys.readouterr().out
    assert main.main(["segment", "x.nii.gz", "--model", "nosuch", "--out", "o"]) == 2
    assert "'demo' is the bundled demo model" in capsys.readouterr().err


def test_an_unusable_extra_model_is_named(tiny, cases, tmp_path, capsys):
    other = tmp_path / "abdomen"
    _model_with_labels(tiny, other, {"background": 0, "spleen": 1, "kidney_left": 2, "stomach": 3, "pancreas": 4,
                                     "aorta": 5})
    rc = main.main(["segment", str(cases / "ct1.nii.gz"), "--model", str(tiny), "--extra-model", str(other),
                    "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and f"Extra model {other}:" in err and "liverplan_label_map.json" in err


def test_an_extra_model_takes_its_own_label_map(tiny, cases, tmp_path, capsys):
    """A model with other label names is usable as --extra-model once --extra-label-map names its labels."""

    import SimpleITK as sitk

    other = tmp_path / "renamed"
    _model_with_labels(tiny, other, {"background": 0, "organ_a": 1, "tube_b": 2, "tube_c": 3, "tube_d": 4,
                                     "spot_e": 5})
    lm = tmp_path / "renamed_map.json"
    lm.write_text(json.dumps({"liver": [1], "portal_vein": [2], "hepatic_veins": [3], "ivc": [4], "crlm": [5]}))
    ct = str(cases / "ct1.nii.gz")
    common = ["--device", "cpu", "--threads", "1", "--no-progress"]
    assert main.main(["segment", ct, "--model", str(tiny), "--out", str(tmp_path / "one")] + common) == 0
    # 'none' keeps the positions: the first extra model (the tiny one itself) needs no map, the second does.
    rc = main.main(["segment", ct, "--model", str(tiny), "--extra-model", str(tiny), "--extra-model", str(other),
                    "--extra-label-map", "none", "--extra-label-map", str(lm),
                    "--out", str(tmp_path / "three")] + common)
    assert rc == 0, capsys.readouterr().err
    prov = json.loads((tmp_path / "three" / "ct1_segmentation.json").read_text())["provenance"]
    assert len(prov["models"]) == 3
    one = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "one" / "ct1_seg.nii.gz")))
    three = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "three" / "ct1_seg.nii.gz")))
    assert one.any() and (one == three).all()     # the same network three times: the same labels
    # More maps than extra models is refused before anything runs.
    rc = main.main(["segment", ct, "--model", str(tiny), "--extra-model", str(other), "--extra-label-map", str(lm),
                    "--extra-label-map", str(lm), "--out", str(tmp_path / "x")] + common)
    assert rc == 2 and "each label map goes with the --extra-model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_dicom_seg_that_cannot_be_written_is_refused_before_the_model_runs(tiny, cases, tmp_path, capsys,
                                                                              monkeypatch):
    import engine.inference

    def no_model(*a, **k):
        raise AssertionError("the model ran although the DICOM SEG could not be written")
    monkeypatch.setattr(engine.inference, "segment", no_model)
    rc = main.main(["segment", str(cases / "ct1.nii.gz"), "--model", str(tiny), "--out", str(tmp_path / "o"),
                    "--format", ".dcm", "--no-progress"])
    assert rc != 0 and "this CT was not read from DICOM" in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("*"))
    # export: refused before the NIfTI is written, not after it
    labels = tmp_path / "l.nii.gz"
    from engine.io import load_case, write_label_map
    c = load_case(cases / "ct1.nii.gz")
    c.labels[2:4, 10:20, 10:20] = 1
    write_label_map(labels, c)
    rc = main.main(["export", str(cases / "ct1.nii.gz"), str(labels), "--out", str(tmp_path / "e"),
                    "--mask", "nii.gz,dcm"])
    assert rc != 0 and "Nothing was written" in capsys.readouterr().err
    assert not (tmp_path / "e").exists() or not list((tmp_path / "e").iterdir())


@pytest.mark.real
def test_dicom_seg_says_how_its_segments_were_made(tiny, tmp_path, capsys):
    # a model's unedited output is AUTOMATIC and names the model (it said SEMIAUTOMATIC 'LiverPlan')
    import pydicom
    from realdata import real_path

    ct = real_path("dcmqi", "ct-3slice")
    assert main.main(["segment", str(ct), "--model", str(tiny), "--out", str(tmp_path / "s"), "--format", ".dcm",
                      "--device", "cpu", "--no-progress"]) == 0
    seg = next((tmp_path / "s").glob("*_seg.dcm"))
    ds = pydicom.dcmread(seg)
    assert {s.SegmentAlgorithmType for s in ds.SegmentSequence} == {"AUTOMATIC"}
    assert ds.SegmentSequence[0].SegmentAlgorithmName == "TinyLiver"
    assert main.main(["export", str(ct), str(seg), "--out", str(tmp_path / "e"), "--mask", "dcm",
                      "--name", "again"]) == 0
    ds = pydicom.dcmread(tmp_path / "e" / "again_labels.dcm")
    # read from a file: of unknown origin; not MANUAL, which would claim that a person drew them
    assert {s.SegmentAlgorithmType for s in ds.SegmentSequence} == {"SEMIAUTOMATIC"}
    assert ds.SegmentSequence[0].SegmentAlgorithmName == "LiverPlan"


def test_an_installed_model_with_other_labels_is_found_by_name_with_a_label_map(tiny, tmp_path, monkeypatch,
                                                                               capsys):
    # `models list` named the folder as not usable, and `models show NAME --label-map` then said there was no
    # model called NAME

    from engine.paths import user_models_dir

    monkeypatch.setenv("LIVERPLAN_DATA_DIR", str(tmp_path / "data"))
    weird = user_models_dir() / "weird"
    _model_with_labels(tiny, weird, {"background": 0, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    lm = tmp_path / "lm.json"
    lm.write_text(json.dumps({"liver": [1], "portal_vein": [2], "hepatic_veins": [3], "ivc": [4], "crlm": [5]}))
    assert main.main(["models", "list"]) == 0
    assert "not usable" in capsys.readouterr().out
    assert main.main(["models", "show", "weird", "--label-map", str(lm)]) == 0
    assert "Portal vein" in capsys.readouterr().out
    assert main.main(["models", "show", "weird"]) == 2
    err = capsys.readouterr().err
    assert "The installed model 'weird' cannot be used" in err and "no model called" not in err
