"""`liverplan compare`, run as a user runs it (main.py in a subprocess), on a phantom and a synthetic
follow-up with a known answer."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(900)


def cli(*args, check=True):
    p = subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from engine.compare.synthetic import make_followup
    from engine.io import write_image, write_label_map
    from engine.labels import Label
    from engine.phantom import make_phantom

    out = tmp_path_factory.mktemp("cmp")
    base = make_phantom(seed=3, shape=(96, 128, 128), n_lesions=3, lesion_diameters_mm=(28, 22, 16))
    fu, truth = make_followup(base, {2: ("vanish",), 1: ("shrink", 0.4)})
    paths = {}
    for tag, c in (("b", base), ("f", fu)):
        paths[tag + "ct"] = write_image(out / f"{tag}_ct.nii.gz", c)
        paths[tag + "lab"] = write_label_map(out / f"{tag}_labels.nii.gz", c)
    noliver = fu.copy()
    lab = noliver.labels.copy()
    lab[(lab == Label.PARENCHYMA) | (lab == Label.CRLM)] = 0
    paths["noliver"] = write_label_map(out / "f_noliver.nii.gz", noliver, labels=lab)
    return paths, base, fu, truth


def test_compare_prints_and_writes(files, tmp_path):
    paths, base, fu, truth = files
    out = tmp_path / "out"
    p = cli("compare", paths["bct"], paths["blab"], paths["fct"], paths["flab"], "--out", out, "--targets", "1",
            "--pair", "3:2")
    assert "Registering" in p.stderr                       # the progress bar
    assert "vanished" in p.stdout and "its place on the follow-up" in p.stdout
    assert "RECIST 1.1 (targets chosen by the user: 1" in p.stdout
    assert "not for clinical use" in p.stdout
    d = json.loads((out / "comparison.json").read_text())
    kinds = {tuple(r["baseline_ids"]): r["kind"] for r in d["lesions"]}
    assert kinds == {(1,): "matched", (2,): "vanished", (3,): "matched"}
    by_hand = {tuple(r["baseline_ids"]): r["by_hand"] for r in d["lesions"]}
    assert by_hand == {(1,): False, (2,): False, (3,): True}         # --pair 3:2
    # target 1 shrank to 40 % of its volume: about -26 % in diameter -> SD (not yet -30 %) or PR
    assert d["recist"]["targets"] == [1] and d["recist"]["category"] in ("SD", "PR")
    assert d["recist"]["followup_sld_mm"] < d["recist"]["baseline_sld_mm"]
    rows = list(csv.reader(l for l in (out / "comparison_lesions.csv").read_text().splitlines()
                           if not l.startswith("#")))
    assert rows[0][:2] == ["track", "kind"] and len(rows) == 4
    import SimpleITK as sitk
    img = sitk.ReadImage(str(out / "followup_labels_on_baseline.nii.gz"))
    assert img.GetSize() == base.geometry.shape[::-1]
    assert np.count_nonzero(sitk.GetArrayFromImage(img) == 5) > 0


def test_compare_bad_input_in_words(files, tmp_path):
    paths, *_ = files
    p = cli("compare", paths["bct"], paths["blab"], paths["fct"], paths["flab"], "--out", tmp_path,
            "--targets", "1,2,3", check=False)
    assert p.returncode == 2 and "at most 2 target lesions per organ" in p.stderr
    p = cli("compare", paths["bct"], paths["blab"], paths["fct"], paths["noliver"], "--out", tmp_path,
            "--no-progress", check=False)
    assert p.returncode == 2 and "follow-up scan has no liver label" in p.stderr
    assert "Traceback" not in p.stderr
    p = cli("compare", paths["bct"], paths["blab"], tmp_path / "missing.nii.gz", paths["flab"], "--out", tmp_path,
            check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert not list(tmp_path.glob("comparison*"))
