"""`liverplan plan`, run as a user runs it (main.py in a subprocess), against the engine's own figures."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args, check=True):
    p = subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph")
    cli("phantom", "--out", out, "--seed", 0, "--lesions", 3)
    return out / "phantom_000_ct.nii.gz", out / "phantom_000_labels.nii.gz"


def test_plan_prints_and_writes_the_engine_figures(phantom, tmp_path):
    from engine.cli.measure import load_case_with_labels
    from engine.planning.planner import Planner
    from engine.planning.resection import Patient, Scenario

    ct, labels = phantom
    out = tmp_path / "plan"
    p = cli("plan", ct, labels, "--resect", "right hepatectomy=5-8", "--wedge", "1,2", "--margin", 8,
            "--scenario", "mixed:segments=II,III;wedges=1;margin=5", "--height", 170, "--weight", 70,
            "--condition", "chemotherapy", "--out", out)
    assert "Couinaud segments estimated from the vessels." in p.stdout
    assert "right hepatectomy: segments V, VI, VII, VIII" in p.stdout
    assert "wedge 1,2: wedge(s) around lesion(s) 1, 2 with a 8 mm margin" in p.stdout
    assert "standardised FLR" in p.stdout and "reference text, not advice" in p.stdout
    assert "Bilobar disease:" in p.stdout
    assert "Lesion locations and distances" in p.stderr            # the progress bar
    data = json.loads((out / "planning.json").read_text())
    # the same figures as the engine gives for the same scenarios
    case = load_case_with_labels(str(ct), str(labels))
    planner = Planner(case.labels, case.geometry).run()
    planner.patient = Patient(170, 70, "chemotherapy")
    want = planner.figures(Scenario("right hepatectomy", [5, 6, 7, 8]))
    got = data["scenarios"][0]["figures"]
    for k in ("resected_ml", "remnant_ml", "flr_pct", "sflr_pct", "bsa_m2", "etlv_ml"):
        assert got[k] == pytest.approx(want[k], rel=1e-9), k
    assert [s["name"] for s in data["scenarios"]] == ["right hepatectomy", "wedge 1,2", "mixed"]
    assert data["scenarios"][2]["segments"] == ["II", "III"] and data["scenarios"][2]["margin_mm"] == 5.0
    with open(out / "planning_lesions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(planner.lesions) and all(r["main_segment"] for r in rows)
    assert float(rows[0]["portal_vein_distance_mm"]) == pytest.approx(
        planner.lesions[0].distances["portal_vein"].distance_mm, abs=0.01)
    with open(out / "planning_segments.csv") as f:
        seg = {r["region"]: float(r["volume_ml"]) for r in csv.DictReader(f)}
    assert set(seg) >= {"I", "VIII", "right hemiliver", "left hemiliver"}
    # the scenarios read back from planning.json give the same figures
    again = cli("plan", ct, labels, "--scenarios-from", out / "planning.json", "--no-progress")
    assert "right hepatectomy: segments V, VI, VII, VIII" in again.stdout and "mixed: segments II, III" in again.stdout
    # nothing is overwritten without --overwrite
    again = cli("plan", ct, labels, "--out", out, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_plan_with_a_segment_map_file(phantom, tmp_path):
    import SimpleITK as sitk

    ct, labels = phantom
    img = sitk.ReadImage(str(labels))
    arr = sitk.GetArrayFromImage(img)
    seg = np.zeros_like(arr)
    seg[arr > 0] = 4                                  # everything segment IV
    seg[(arr > 0) & (np.arange(arr.shape[2])[None, None, :] < arr.shape[2] // 2)] = 7
    out = sitk.GetImageFromArray(seg)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(tmp_path / "seg.nii.gz"))
    p = cli("plan", ct, labels, "--segments", tmp_path / "seg.nii.gz", "--resect", "IV", "--no-progress")
    assert "Couinaud segments from the file seg.nii.gz." in p.stdout
    assert "resect 4: segments IV" in p.stdout
    assert p.stderr == ""


def test_plan_bad_input_is_said_in_words(phantom):
    ct, labels = phantom
    p = cli("plan", ct, labels, "--resect", "9", check=False)
    assert p.returncode == 2 and "not a Couinaud segment" in p.stderr and "Traceback" not in p.stderr
    p = cli("plan", ct, labels, "--wedge", "12", "--no-progress", check=False)
    assert p.returncode == 2 and "no lesion 12" in p.stderr
    p = cli("plan", ct, labels, "--height", 170, check=False)
    assert p.returncode == 2 and "--weight" in p.stderr
