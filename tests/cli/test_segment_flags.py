"""`liverplan segment` flags for the engine's options: liver crop (two-stage accurate mode), preprocessing,
CPU bfloat16, all tiles. Checked through what the provenance JSON records (tiny model, CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiny_model import small_phantom  # tests/engine, on sys.path through conftest.py

import main


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    from engine.io import write_image

    path = tmp_path_factory.mktemp("ct") / "ct.nii.gz"
    write_image(path, small_phantom(seed=6, shape=(20, 40, 40)))
    return path


def _segment(tiny, ct, out, *flags) -> dict:
    rc = main.main(["segment", str(ct), "--model", str(tiny), "--out", str(out), "--device", "cpu",
                    "--threads", "1", "--no-progress", "--no-postprocess", *flags])
    assert rc == 0
    return json.loads((out / "ct_segmentation.json").read_text())["provenance"]


def test_accurate_mode_defaults_to_the_liver_crop(tiny, ct, tmp_path):
    prov = _segment(tiny, ct, tmp_path, "--mode", "accurate")
    assert prov["liver_crop"] is True and prov["liver_crop_margin_mm"] == 20.0
    run = prov["runs"][0]
    assert "two_stage" in run and run["network_precision"] == "float32"
    assert run["preprocessing"].startswith("torch") and prov["skip_empty_tiles"] is True


def test_no_liver_crop_nnunet_preprocessing_float32_all_tiles(tiny, ct, tmp_path):
    prov = _segment(tiny, ct, tmp_path, "--mode", "accurate", "--no-liver-crop", "--preprocessing", "nnunet",
                    "--no-cpu-bf16", "--all-tiles")
    run = prov["runs"][0]
    assert prov["liver_crop"] is False and "two_stage" not in run
    assert run["preprocessing"].startswith("nnU-Net") and run["network_precision"] == "float32"
    assert prov["skip_empty_tiles"] is False


def test_liver_crop_margin_and_cpu_bf16(tiny, ct, tmp_path):
    prov = _segment(tiny, ct, tmp_path, "--mode", "accurate", "--liver-crop", "--liver-crop-margin", "7.5",
                    "--cpu-bf16")
    assert prov["liver_crop"] is True and prov["liver_crop_requested"] is True
    assert prov["liver_crop_margin_mm"] == 7.5 and prov["runs"][0]["two_stage"]["margin_mm"] == 7.5
    assert prov["runs"][0]["network_precision"].startswith("bfloat16")


def test_conflicting_or_bad_flags_are_refused(tiny, ct, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main.main(["segment", str(ct), "--model", str(tiny), "--out", str(tmp_path), "--liver-crop",
                   "--no-liver-crop"])
    with pytest.raises(SystemExit):
        main.main(["segment", str(ct), "--model", str(tiny), "--out", str(tmp_path), "--preprocessing", "scipy"])
    rc = main.main(["segment", str(ct), "--model", str(tiny), "--out", str(tmp_path), "--device", "cpu",
                    "--mode", "accurate", "--liver-crop-margin", "-3", "--no-progress"])
    assert rc != 0
    assert "margin" in capsys.readouterr().err
