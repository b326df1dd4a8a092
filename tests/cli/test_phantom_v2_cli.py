"""``main.py phantom --version 2`` and ``main.py train --phantom-version 2 --randomise``, as a user runs them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def cli(*args):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_phantom_version_2_writes_v2_cases(tmp_path):
    import SimpleITK as sitk

    p = cli("phantom", "--out", tmp_path, "--n", 1, "--seed", 7, "--shape", 40, 48, 48, "--version", 2)
    assert p.returncode == 0, p.stderr
    info = json.loads((tmp_path / "phantom_007_info.json").read_text())
    extra = info["provenance"]["extra"]
    assert extra["phantom_version"] == 2 and extra["liver_variant"] in ("normal", "large_left_lobe", "riedel",
                                                                        "atrophic_right")
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "phantom_007_labels.nii.gz")))
    assert set(np.unique(lab)) <= {0, 1, 2, 3, 4, 5} and (lab == 1).any()
    # version 1 stays the default and is another picture of the same seed
    p1 = cli("phantom", "--out", tmp_path / "v1", "--n", 1, "--seed", 7, "--shape", 40, 48, 48)
    assert p1.returncode == 0
    assert "phantom_version" not in json.loads((tmp_path / "v1" / "phantom_007_info.json").read_text())[
        "provenance"]["extra"]


def test_unknown_version_and_randomising_v1_are_refused_in_words(tmp_path):
    p = cli("phantom", "--out", tmp_path, "--version", 3)
    assert p.returncode != 0 and "invalid choice" in p.stderr
    p = cli("train", "--work-dir", tmp_path / "w", "--phantoms", 4, "--randomise", "--check-only", "--device", "cpu")
    assert p.returncode != 0 and "--phantom-version 2" in (p.stderr + p.stdout)
    assert not (tmp_path / "w").exists()
