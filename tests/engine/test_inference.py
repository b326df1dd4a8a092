"""End-to-end inference with a tiny nnU-Net model built on the fly (CPU, fast mode, small phantoms)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.case import Case
from engine.errors import ModelError
from engine.geometry import Geometry
from engine.inference import (SegmentOptions, PRECEDENCE_RULE, STAGES, apply_result, available_devices, combine_label_maps,
                              keep_unsegmented_structures, segment)
from engine.labels import Label
from engine.models import load_model
from engine.progress import CancelToken, Cancelled
from tiny_model import cached_tiny_model, small_phantom


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(cached_tiny_model(tmp_path_factory))


@pytest.fixture(scope="module")
def phantom():
    return small_phantom()


class Recorder:
    def __init__(self):
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, stage, done, total):
        self.calls.append((stage, done, total))

    def stages(self):
        return {c[0] for c in self.calls}

    def last(self, stage):
        return [c for c in self.calls if c[0] == stage][-1]


def test_devices_always_offer_cpu():
    devs = available_devices()
    assert devs[-1] == "cpu"


def test_segment_end_to_end(model, phantom):
    image_before = phantom.image.copy()
    labels_before = phantom.labels.copy()
    prog = Recorder()
    res = segment(phantom, model, SegmentOptions(device="cpu", mode="fast", threads=1), progress=prog)
    # every stage reported, and each finished
    assert set(STAGES) <= prog.stages()
    for stage in ("load model", "preprocess", "predict", "resample", "postprocess"):
        _, done, total = prog.last(stage)
        assert done == total > 0, stage
    # output on the case's grid, uint8, only LiverPlan labels
    assert res.labels.shape == phantom.image.shape
    assert res.labels.dtype == np.uint8
    assert set(np.unique(res.labels)) <= {0, 1, 2, 3, 4, 5}
    assert res.device_used == "cpu" and res.mode == "fast"
    # the case was not touched
    assert np.array_equal(phantom.image, image_before)
    assert np.array_equal(phantom.labels, labels_before)
    # provenance carries the model card and the mode
    prov = res.provenance
    assert prov["mode"] == "fast"
    assert prov["models"][0]["card"]["name"] == model.card.name
    assert prov["runs"][0]["mirroring"] is False and prov["runs"][0]["tile_step_size"] == 0.75
    assert prov["postprocessing"]["options"]["keep_largest_liver"] is True
    assert {"load model", "preprocess", "predict", "resample", "total"} <= set(res.timings)
    # applying the result gives a new case and leaves the old one alone
    seg_case = apply_result(phantom, res)
    assert seg_case is not phantom and np.array_equal(seg_case.labels, res.labels)
    assert seg_case.provenance.model_card["name"] == model.card.name
    assert np.array_equal(phantom.labels, labels_before)


def test_second_run_uses_cached_model(model, phantom):
    prog = Recorder()
    segment(phantom, model, SegmentOptions(device="cpu", mode="fast", threads=1), progress=prog)
    loads = [c for c in prog.calls if c[0] == "load model"]
    assert loads == [("load model", 1, 1)]


def test_cancel_from_another_thread_stops_before_all_tiles(model, phantom):
    token = CancelToken()
    first_tile = threading.Event()
    cancelled = threading.Event()
    tiles: list[tuple[int, int]] = []

    def prog(stage, done, total):
        if stage == "predict" and done > 0:
            tiles.append((done, total))
            if done == 1:
                first_tile.set()
                # stand in for a slow tile: give the other thread time to press cancel
                cancelled.wait(5.0)

    def canceller():
        first_tile.wait(60.0)
        token.cancel()
        cancelled.set()

    threads_before = set(threading.enumerate())
    t = threading.Thread(target=canceller)
    t.start()
    with pytest.raises(Cancelled):
        segment(phantom, model, SegmentOptions(device="cpu", mode="fast", threads=1), progress=prog, cancel=token)
    t.join(10.0)
    assert tiles, "prediction never started"
    done, total = tiles[-1]
    assert total > 1 and done < total, "cancel did not stop the sliding window"
    assert not isinstance(Cancelled("x"), RuntimeError)
    leftover = [th for th in threading.enumerate() if th not in threads_before and th.is_alive()]
    assert not leftover, f"threads left behind: {leftover}"


def test_cancel_before_start(model, phantom):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        segment(phantom, model, SegmentOptions(device="cpu", threads=1), progress=None, cancel=token)


def test_all_air_volume_warns_no_body(model):
    img = np.full((20, 40, 40), -1000, dtype=np.int16)
    case = Case(image=img, geometry=Geometry((20, 40, 40), (2.5, 1.6, 1.6)))
    res = segment(case, model, SegmentOptions(device="cpu", threads=1))
    assert not res.labels.any()
    assert any("No body found" in w for w in res.warnings)


def test_small_ct_is_padded_with_a_warning_and_accurate_mode(model):
    # 12 x 40 x 40 voxels at the model's 3 x 2.4 x 2.4 mm: shorter than the 32^3 patch head to foot only
    case = small_phantom(seed=5, shape=(12, 40, 40), spacing=(3.0, 2.4, 2.4))
    res = segment(case, model, SegmentOptions(device="cpu", mode="accurate", threads=1))
    assert res.labels.shape == case.image.shape
    # the warning names that axis alone
    pad = [w for w in res.warnings if "shorter than the model's patch" in w]
    assert len(pad) == 1 and "along head-foot (" in pad[0] and "left-right" not in pad[0], res.warnings
    assert res.provenance["mode"] == "accurate"
    assert res.provenance["runs"][0]["mirroring"] is True
    assert res.provenance["runs"][0]["tile_step_size"] == 0.5


def test_output_geometry_follows_source_through_export(model, tmp_path):
    """A CT stored in another orientation (RAS-flipped) comes back on its own grid after export."""
    import SimpleITK as sitk

    from engine.io import load_case, write_label_map

    src = small_phantom(seed=2, shape=(24, 48, 40))
    img = src.image_sitk()
    flipped = sitk.DICOMOrient(img, "RAS")
    path = tmp_path / "ct_ras.nii.gz"
    sitk.WriteImage(flipped, str(path))
    case = load_case(path)
    assert case.source_geometry.orientation_code() == "RAS"
    res = segment(case, model, SegmentOptions(device="cpu", threads=1))
    out = write_label_map(tmp_path / "seg.nii.gz", apply_result(case, res))
    back = sitk.ReadImage(str(out))
    ref = sitk.ReadImage(str(path))
    assert back.GetSize() == ref.GetSize()
    assert np.allclose(back.GetSpacing(), ref.GetSpacing())
    assert np.allclose(back.GetOrigin(), ref.GetOrigin(), atol=1e-3)
    assert np.allclose(back.GetDirection(), ref.GetDirection())
    # same voxels: the written map, reoriented to LPS, is the result
    assert np.array_equal(sitk.GetArrayFromImage(sitk.DICOMOrient(back, "LPS")), res.labels)


def test_oom_falls_back_to_smaller_footprint_then_cpu(model, phantom, monkeypatch):
    """On a GPU out-of-memory the engine retries with a smaller footprint, then on the CPU, and says so."""
    import torch

    from engine.inference import pipeline

    real = pipeline._predict_crop
    devices_tried = []

    def fake(sub, spacing, m, att, *a, **kw):
        devices_tried.append((att["device"].type, att["on_device"], att["half"]))
        if att["device"].type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(sub, spacing, m, att, *a, **kw)

    monkeypatch.setattr(pipeline, "_predict_crop", fake)
    monkeypatch.setattr("engine.inference.device.resolve_device", lambda d: torch.device("cuda", 0))
    res = segment(phantom, model, SegmentOptions(device="cuda", threads=1))
    assert devices_tried == [("cuda", True, False), ("cuda", False, True), ("cpu", False, False)]
    assert res.device_used == "cpu"
    assert any("ran out of memory" in w and "CPU" in w for w in res.warnings)


def test_a_path_instead_of_a_case_is_a_clear_error(model, tmp_path):
    from engine.errors import InputError

    with pytest.raises(InputError, match="takes a Case.*load_case"):
        segment(str(tmp_path / "ct.nii.gz"), model)


def test_unknown_mode_and_device_are_clear_errors(model, phantom):
    with pytest.raises(ModelError, match="mode"):
        segment(phantom, model, SegmentOptions(mode="turbo"))
    with pytest.raises(ModelError, match="'tpu' is not a device name: choose auto, cpu"):
        segment(phantom, model, SegmentOptions(device="tpu"))
    with pytest.raises(ModelError, match="not available here"):
        segment(phantom, model, SegmentOptions(device="cuda:7"))


def test_combine_precedence_rule():
    a = np.array([1, 1, 1, 0, 2, 0], dtype=np.uint8)      # organ model
    b = np.array([0, 5, 3, 4, 3, 0], dtype=np.uint8)      # vessel/lesion model
    c = np.array([0, 2, 0, 0, 0, 1], dtype=np.uint8)      # a later model
    out = combine_label_maps([a, b, c])
    # lesion beats vessel; vessel beats parenchyma; later model wins ties among vessels; background never wins
    assert out.tolist() == [1, 5, 3, 4, 3, 1]
    assert "lesions" in PRECEDENCE_RULE and "later model" in PRECEDENCE_RULE


def test_two_models_combined(model, tmp_path_factory, phantom):
    lesion_model = load_model(cached_tiny_model(tmp_path_factory, "lesion", labels={"background": 0, "tumor": 1},
                                                seed=7))
    assert lesion_model.label_to_structure == {1: Label.CRLM}
    res = segment(phantom, [model, lesion_model], SegmentOptions(device="cpu", threads=1, postprocess=False))
    assert res.provenance["combination_rule"] == PRECEDENCE_RULE
    assert len(res.provenance["models"]) == 2
    assert res.labels.shape == phantom.image.shape


def test_a_partial_model_keeps_the_structures_it_does_not_segment(model, tmp_path_factory):
    lesion_model = load_model(cached_tiny_model(tmp_path_factory, "lesion", labels={"background": 0, "tumor": 1},
                                                seed=7))
    current = np.array([0, 1, 2, 3, 4, 5, 1, 2, 0], dtype=np.uint8)
    new = np.array([0, 0, 0, 5, 0, 0, 5, 0, 5], dtype=np.uint8)     # the lesion model's result
    before = current.copy()
    out, kept = keep_unsegmented_structures(new, current, lesion_model)
    # the old lesion (not found again) goes; everything else stays; the new lesions win over a kept vein
    assert out.tolist() == [0, 1, 2, 5, 4, 0, 5, 2, 5]
    assert kept == [Label.PARENCHYMA, Label.PORTAL_VEIN, Label.HEPATIC_VEINS, Label.IVC]
    assert np.array_equal(current, before)
    # a model segmenting all five structures: its result as it is
    same, kept = keep_unsegmented_structures(new, current, model)
    assert same is new and kept == []
    # nothing of the missing structures in the current labels: nothing kept
    out, kept = keep_unsegmented_structures(new, np.array([0, 0, 0, 5, 0, 5, 0, 0, 0], np.uint8), lesion_model)
    assert out.tolist() == new.tolist() and kept == []


def test_two_stage_liver_crop_is_recorded(model, phantom):
    res = segment(phantom, model, SegmentOptions(device="cpu", mode="accurate", threads=1, liver_crop=True))
    assert res.labels.shape == phantom.image.shape
    run = res.provenance["runs"][0]
    assert "liver_crop" in run and res.provenance["liver_crop"] is True
    assert run["two_stage"]["accurate_tiles"] <= run["two_stage"]["accurate_tiles_whole_ct"]
    if "liver found" in run["liver_crop"]:
        # the accurate pass was restricted to the tiles reaching the liver region
        assert len(run["two_stage"]["region_model_grid"]) == 3


def test_skipping_air_tiles_keeps_nnunet_predictions_inside_the_body(model):
    """Without the body crop, skipping tiles that hold only air leaves every body voxel's prediction
    exactly as nnU-Net's full sweep makes it (the kept tiles sit where nnU-Net puts them)."""
    src = small_phantom(seed=4, shape=(20, 40, 40), spacing=(3.0, 2.4, 2.4))
    img = np.full((20, 40, 110), -1000, dtype=np.int16)          # 70 columns of air beside the body
    img[:, :, :40] = src.image
    case = Case(image=img, geometry=Geometry(img.shape, (3.0, 2.4, 2.4)))
    full = segment(case, model, SegmentOptions(device="cpu", threads=1, crop_to_body=False, skip_empty_tiles=False, postprocess=False))
    skip = segment(case, model, SegmentOptions(device="cpu", threads=1, crop_to_body=False, skip_empty_tiles=True, postprocess=False))
    assert skip.provenance["runs"][0]["tiles"] < full.provenance["runs"][0]["tiles"]
    body = img > -500
    assert np.array_equal(skip.labels[body], full.labels[body])
    assert not skip.labels[:, :, 80:].any()                     # far air: background
