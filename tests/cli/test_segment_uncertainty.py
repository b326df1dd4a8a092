"""`liverplan segment --uncertainty` writes the model's per-voxel doubt beside the labels; without the flag
nothing more is written."""
from __future__ import annotations

import json

import numpy as np

from tiny_model import small_phantom  # tests/engine, on sys.path through conftest.py

import main


def test_segment_uncertainty_flag_writes_map_on_the_ct_grid(tiny, tmp_path):
    import SimpleITK as sitk

    from engine.io import write_image

    ct = tmp_path / "ct.nii.gz"
    write_image(ct, small_phantom(seed=1, shape=(24, 48, 48)))
    plain = tmp_path / "plain"
    assert main.main(["segment", str(ct), "--model", str(tiny), "--out", str(plain), "--device", "cpu",
                      "--threads", "1", "--no-progress"]) == 0
    assert not (plain / "ct_uncertainty.nii.gz").exists()
    out = tmp_path / "out"
    assert main.main(["segment", str(ct), "--model", str(tiny), "--out", str(out), "--device", "cpu",
                      "--threads", "1", "--no-progress", "--uncertainty"]) == 0
    unc = sitk.ReadImage(str(out / "ct_uncertainty.nii.gz"))
    ref = sitk.ReadImage(str(ct))
    assert unc.GetSize() == ref.GetSize()
    arr = sitk.GetArrayFromImage(unc)
    assert arr.dtype == np.uint8
    n_classes = 6                                  # the tiny model: background + five structures
    assert arr.max() <= round(255 * (1 - 1 / n_classes))
    assert arr.max() > 0                           # an untrained tiny model is not sure of anything
    prov = json.loads((out / "ct_segmentation.json").read_text())["provenance"]
    assert "uncertainty" in prov["extra_maps"]
    # the labels are the same with and without it
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(plain / "ct_seg.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct_seg.nii.gz")))
    assert np.array_equal(a, b)
