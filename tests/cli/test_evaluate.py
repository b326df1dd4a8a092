"""`liverplan evaluate` on phantom cohorts: pairing, the study's table, outputs, skipped cases, IRCADb-style
mask folders with a merged reference group."""
import csv
import json

import numpy as np
import pytest
from scipy import ndimage as ndi

import main

SHAPE = (40, 56, 56)


def _perturb(labels, seed):
    rng = np.random.default_rng(seed)
    out = labels.copy()
    liver = labels == 1
    grown = ndi.binary_dilation(liver) & (labels == 0) if seed % 2 else np.zeros_like(liver)
    shrunk = liver & ~ndi.binary_erosion(liver) if seed % 2 == 0 else np.zeros_like(liver)
    out[grown] = 1
    out[shrunk] = 0
    if seed == 2:
        out[out == 5] = 1                     # this "model" misses every lesion
    noise = (rng.random(labels.shape) < 0.002) & (labels == 1)
    out[noise] = 0
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from engine.io import write_label_map
    from engine.phantom import make_phantom
    root = tmp_path_factory.mktemp("cohort")
    (root / "pred").mkdir()
    (root / "ref").mkdir()
    cases = {}
    for seed in range(3):
        case = make_phantom(seed=seed, shape=SHAPE)
        write_label_map(root / "ref" / f"phantom{seed}.nii.gz", case)
        ref = case.labels.copy()
        case.set_labels(_perturb(ref, seed))
        write_label_map(root / "pred" / f"phantom{seed}_0000.nii.gz", case)
        cases[seed] = case
    # a prediction on another grid: reported and skipped, not fatal
    other = make_phantom(seed=9, shape=(30, 40, 40))
    write_label_map(root / "pred" / "phantom9.nii.gz", other)
    write_label_map(root / "ref" / "phantom9.nii.gz", make_phantom(seed=9, shape=SHAPE))
    return root, cases


def test_cohort_table_printed_and_written(cohort, capsys):
    root, _ = cohort
    out = root / "out"
    rc = main.main(["evaluate", "--pred", str(root / "pred"), "--ref", str(root / "ref"), "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "Evaluated 3 of 4 paired case(s)." in text
    assert "skipped phantom9" in text and "same" in text.lower()
    for row in ("Dice", "Jaccard", "Precision", "Recall", "FPR", "FNR", "HD95 (mm)", "clDice", "|Δb0|", "|Δb1|",
                "|ΔEuler|", "Lesion recall", "prediction empty (missed)"):
        assert row in text
    header = next(line for line in text.splitlines() if line.startswith("Metric"))
    assert header.split() == ["Metric", "liver", "portal_vein", "hepatic_veins", "ivc", "crlm"]
    assert "±" in text
    rows = list(csv.DictReader(open(out / "per_case.csv")))
    assert {r["case"] for r in rows} == {"phantom0", "phantom1", "phantom2", "phantom9"}
    assert [r for r in rows if r["case"] == "phantom9"][0]["status"] == "error"
    crlm2 = [r for r in rows if r["case"] == "phantom2" and r["structure"] == "crlm"][0]
    assert crlm2["status"] == "pred_empty" and crlm2["dice"] == "0" and crlm2["hd95"] == "inf"
    j = json.loads((out / "table.json").read_text())
    assert j["metrics"]["dice"]["structures"]["crlm"]["n"] == 3
    assert j["counts"]["pred_empty"]["crlm"] == 1
    assert (out / "table.md").read_text().startswith("| Metric |")
    assert "ref_lesion" in (out / "lesions.csv").read_text()


def test_existing_outputs_are_not_overwritten_silently(cohort, capsys):
    root, _ = cohort
    out = root / "out2"
    args = ["evaluate", "--pred", str(root / "pred" / "phantom0_0000.nii.gz"), "--ref", str(root / "ref"),
            "--out", str(out)]
    assert main.main(args) == 0
    capsys.readouterr()
    assert main.main(args) == 2                       # clear message instead of a traceback
    out_err = capsys.readouterr()
    assert "already holds an evaluation" in out_err.err and "--overwrite" in out_err.err
    assert "Evaluated" not in out_err.out             # said before the metrics are computed, not after
    assert main.main(args + ["--overwrite"]) == 0


def _ircadb_columns(pred, ref, capsys) -> tuple[list[str], str]:
    """Evaluate with the IRCADb convention; (the printed table's columns, the whole output)."""
    rc = main.main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--ref-labels", "ircadb",
                    "--format", "markdown"])
    text = capsys.readouterr().out
    assert rc == 0
    header = next(line for line in text.splitlines() if line.startswith("| Metric"))
    return [c.strip() for c in header.strip("|").split("|")], text


def test_ircadb_style_mask_folder_with_merged_venous_system(cohort, tmp_path, capsys):
    import SimpleITK as sitk
    root, cases = cohort
    case = cases[0]
    ref = case.labels
    folder = tmp_path / "ref" / "phantom0" / "masks"
    folder.mkdir(parents=True)
    masks = {"liver": np.isin(ref, (1, 2, 3, 5)), "portalvein": ref == 2, "venoussystem": np.isin(ref, (3, 4)),
             "livertumor1": ref == 5, "bone": np.zeros_like(ref, bool)}
    for name, m in masks.items():
        img = sitk.GetImageFromArray(m.astype(np.uint8) * 255)
        case.geometry.apply_to(img)
        sitk.WriteImage(img, str(folder / f"{name}.nii.gz"))
    cols, text = _ircadb_columns(root / "pred" / "phantom0_0000.nii.gz", tmp_path / "ref", capsys)
    assert cols == ["Metric", "liver", "portal_vein", "hepatic_veins+ivc", "crlm"]
    assert "union of the predicted" in text
    # a case folder without portalvein.nii.gz: the portal vein is "not in reference", not an empty reference
    # scored 0 / inf
    (folder / "portalvein.nii.gz").unlink()
    cols, text = _ircadb_columns(root / "pred" / "phantom0_0000.nii.gz", tmp_path / "ref", capsys)
    assert "portal_vein" not in cols and "hepatic_veins+ivc" in cols, cols
    assert "has no mask for: Portal vein (not evaluated)" in text


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    rc = main.main(["evaluate", "--pred", str(tmp_path / "nope"), "--ref", str(tmp_path)])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_totalsegmentator_reference_reports_missing_structures(cohort, tmp_path, capsys):
    from engine.io import write_label_map
    root, cases = cohort
    case = cases[1].copy()
    ts = np.zeros(case.labels.shape, np.uint8)
    ts[np.isin(case.labels, (1, 3, 5))] = 5          # TotalSegmentator: liver incl. hepatic veins and lesions
    ts[case.labels == 2] = 64
    ts[case.labels == 4] = 63
    (tmp_path / "ts").mkdir()
    import SimpleITK as sitk
    img = sitk.GetImageFromArray(ts)
    case.geometry.apply_to(img)
    sitk.WriteImage(img, str(tmp_path / "ts" / "phantom1.nii.gz"))
    out = tmp_path / "o"
    rc = main.main(["evaluate", "--pred", str(root / "pred"), "--ref", str(tmp_path / "ts"),
                    "--ref-labels", "totalsegmentator", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "Evaluated 1 of 1" in text
    header = next(line for line in text.splitlines() if line.startswith("Metric"))
    assert header.split() == ["Metric", "liver", "portal_vein", "ivc"]
    assert "Not in the reference" in text and "Hepatic veins" in text
    rows = list(csv.DictReader(open(out / "per_case.csv")))
    crlm = [r for r in rows if r["structure"] == "crlm"][0]
    assert crlm["status"] == "not_in_reference" and crlm["dice"] == "nan"


def test_phantom_folder_with_ct_beside_labels_pairs_the_labels(tmp_path, capsys):
    """`main.py phantom` writes <case>_ct + <case>_labels side by side and `segment` writes <case>_ct_seg:
    evaluating one against the other must score the labels, never the CT."""
    assert main.main(["phantom", "--out", str(tmp_path / "ph"), "--n", "1", "--shape", *map(str, SHAPE)]) == 0
    from engine.io import load_case, read_label_map, write_label_map
    ct = next((tmp_path / "ph").glob("*_ct.nii.gz"))
    case = load_case(ct)
    case.set_labels(read_label_map(next((tmp_path / "ph").glob("*_labels.nii.gz")), case))
    write_label_map(tmp_path / "pred" / ct.name.replace(".nii.gz", "_seg.nii.gz"), case)
    capsys.readouterr()
    rc = main.main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ph")])
    text = capsys.readouterr().out
    assert rc == 0
    assert "Evaluated 1 of 1 paired case(s)." in text
    dice_row = next(line for line in text.splitlines() if line.strip().startswith("Dice"))
    assert "1.000" in dice_row


@pytest.mark.real
def test_a_folder_of_dicom_seg_references_pairs_with_label_map_predictions(tmp_path, capsys):
    # dcmqi's DICOM SEG of the liver on its three-slice CT, as the reference of a cohort folder; a CT slice
    # (.dcm, not a SEG) beside it is not taken for a label map.
    import shutil

    from realdata import real_path

    from engine.io import load_case, read_label_map, write_label_map

    seg, ct = real_path("dcmqi", "liver.dcm"), real_path("dcmqi", "ct-3slice")
    case = load_case(ct)
    case.set_labels(read_label_map(seg, case))
    (tmp_path / "preds").mkdir()
    (tmp_path / "refs").mkdir()
    write_label_map(tmp_path / "preds" / "case1.nii.gz", case)
    shutil.copyfile(seg, tmp_path / "refs" / "case1.dcm")
    shutil.copyfile(next(ct.glob("*.dcm")), tmp_path / "refs" / "case2.dcm")     # a CT slice
    rc = main.main(["evaluate", "--pred", str(tmp_path / "preds"), "--ref", str(tmp_path / "refs"),
                    "--out", str(tmp_path / "out"), "--format", "markdown"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "Evaluated 1 of 1" in out.out + out.err
    rows = list(csv.DictReader(open(tmp_path / "out" / "per_case.csv")))
    liver = next(r for r in rows if r["structure"] == "liver")
    assert liver["case"] == "case1" and float(liver["dice"]) == pytest.approx(1.0)
    assert {r["case"] for r in rows} == {"case1"}
    # the SEG annotates the liver only: the other structures are not in the reference (they were scored
    # against an empty reference: Dice 0 for any predicted vessel)
    assert {r["status"] for r in rows if r["structure"] != "liver"} == {"not_in_reference"}, rows
    assert "liver.dcm has no segment for: Portal vein" not in out.out            # the file is case1.dcm
    assert "case1.dcm has no segment for: Portal vein, Hepatic veins" in out.out
    # the same with a label mapping given for both sides (values 1-5: the SEG's segment number 1 is the liver)
    rc = main.main(["evaluate", "--pred", str(tmp_path / "preds"), "--ref", str(tmp_path / "refs"),
                    "--labels", "identity"])
    out = capsys.readouterr()
    assert rc == 0 and "case1.dcm has no segment for: Portal vein, Hepatic veins" in out.out, out.out
    # a SEG as the prediction is refused in words (its grid is the CT's, which is not given)
    rc = main.main(["evaluate", "--pred", str(tmp_path / "refs" / "case1.dcm"), "--ref",
                    str(tmp_path / "preds" / "case1.nii.gz")])
    out = capsys.readouterr()
    assert rc != 0 and "is a DICOM SEG: it can be the reference" in out.out + out.err


@pytest.mark.real
def test_export_writes_a_dicom_seg_that_reads_back(tmp_path, capsys):
    from realdata import real_path

    from engine.io import load_case, read_label_map

    ct, seg = real_path("dcmqi", "ct-3slice"), real_path("dcmqi", "liver.dcm")
    assert main.main(["export", str(ct), str(seg), "--out", str(tmp_path), "--mask", "dcm", "--name", "c"]) == 0
    case = load_case(ct)
    assert (read_label_map(tmp_path / "c_labels.dcm", case) == read_label_map(seg, case)).all()
    assert "thin slab" in capsys.readouterr().out            # the scan's warning is printed with the export


@pytest.mark.real
def test_export_names_files_safely_and_never_writes_into_the_dicom_folder(tmp_path, capsys):
    # A series description is not a file name: 'ABD/PELVIS PV' made a sub-folder, '../src/PV' wrote the
    # label map and the DICOM SEG into the source DICOM folder itself.
    import shutil

    import pydicom
    from realdata import real_path

    from engine.io import load_case

    labels = tmp_path / "labels.nii.gz"
    for desc, folder in (("ABD/PELVIS PV 5.0", "slash"), ("../src/PV", "src")):
        src = tmp_path / folder
        shutil.copytree(real_path("dcmqi", "ct-3slice"), src)
        for f in src.iterdir():
            ds = pydicom.dcmread(f)
            ds.SeriesDescription = desc
            ds.save_as(f)
    from engine.io import write_label_map
    case = load_case(tmp_path / "slash")
    case.labels[:, 200:300, 200:300] = 1
    write_label_map(labels, case)
    before = sorted(p.name for p in (tmp_path / "src").iterdir())
    out = tmp_path / "out"
    assert main.main(["export", str(tmp_path / "slash"), str(labels), "--out", str(out), "--mask", "nii.gz"]) == 0
    assert main.main(["export", str(tmp_path / "src"), str(labels), "--out", str(out), "--mask", "nii.gz,dcm"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ABD_PELVIS_PV_5.0_labels.nii.gz", "src_PV_labels.dcm",
                                                    "src_PV_labels.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == before
    # --out inside the DICOM folder, or a --name that is a path, are refused before anything is written
    capsys.readouterr()
    assert main.main(["export", str(tmp_path / "src"), str(labels), "--out", str(tmp_path / "src" / "x")]) != 0
    assert "inside an input folder" in capsys.readouterr().err
    assert main.main(["export", str(tmp_path / "src"), str(labels), "--out", str(out), "--name", "../x"]) != 0
    assert "not a path" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == before
    assert main.main(["segment", str(tmp_path / "src"), "--out", str(tmp_path / "src" / "seg")]) != 0
    assert "inside the DICOM folder" in capsys.readouterr().err
    # one file of the series as the input opens the whole series: its folder is protected the same way
    one = sorted((tmp_path / "src").iterdir())[0]
    assert main.main(["export", str(one), str(labels), "--out", str(tmp_path / "src" / "x"), "--mask", "dcm"]) != 0
    assert "inside an input folder" in capsys.readouterr().err
    assert main.main(["segment", str(one), "--out", str(tmp_path / "src" / "seg")]) != 0
    assert "inside the DICOM folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == before


@pytest.mark.real
def test_label_values_a_mapping_leaves_out_are_named(tmp_path, capsys):
    # TotalSegmentator's 100+ labels read with a mapping of two of them: the rest were read as background
    # without a word (measure said so, evaluate did not)
    from realdata import real_path

    seg = real_path("totalsegmentator", "example_seg.nii.gz")
    (tmp_path / "m.json").write_text('{"liver": [5], "portal_vein": [64]}')
    rc = main.main(["evaluate", "--pred", str(seg), "--pred-labels", "totalsegmentator", "--ref", str(seg),
                    "--ref-labels", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "example_seg.nii.gz (reference): Label values not in the label map (m.json) were read as background" \
        in out
    assert "(prediction): Label values" not in out      # the preset lists the others under "ignore"
