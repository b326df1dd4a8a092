"""Torch preprocessing (engine.inference.preprocess) against nnU-Net's own, and cancel inside it and inside
the network's forward pass."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ModelError
from engine.inference import SegmentOptions, segment
from engine.models import load_model
from engine.progress import CancelToken, Cancelled
from tiny_model import cached_tiny_model, small_phantom


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(cached_tiny_model(tmp_path_factory))


@pytest.fixture(scope="module")
def managers(model):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(model.plans)
    return pm, pm.get_configuration(model.configuration)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def test_torch_preprocessing_equals_nnunets_within_tolerance(managers):
    """Same geometry (transposition, non-zero crop box, target shape) and the same intensities (to float32
    rounding) as nnU-Net's run_case_npy."""
    from engine.inference.preprocess import preprocess_ct, torch_preprocessing_supported

    pm, cm = managers
    assert torch_preprocessing_supported(pm, cm) is None
    ct = small_phantom(seed=5, shape=(36, 72, 72), spacing=(2.0, 1.1, 1.1))
    img = ct.image.astype(np.int16).copy()
    img[:, :4, :] = 0            # a zero border: nnU-Net crops it away (crop_to_nonzero)
    img[:, :, -6:] = 0
    spacing = [float(s) for s in ct.geometry.spacing]
    ref, _, ref_props = cm.preprocessor_class(verbose=False).run_case_npy(img[None], None, {"spacing": spacing},
                                                                          pm, cm, {"labels": {"background": 0}})
    ours, props = preprocess_ct(img, spacing, pm, cm)
    ours = ours.numpy()
    assert ours.shape == ref.shape and ours.dtype == np.float32
    for key in ("shape_before_cropping", "shape_after_cropping_and_before_resampling"):
        assert tuple(props[key]) == tuple(ref_props[key]), key
    assert [list(map(int, b)) for b in props["bbox_used_for_cropping"]] == \
        [list(map(int, b)) for b in ref_props["bbox_used_for_cropping"]]
    # the same numbers: nnU-Net's spline resampling written as matrices, float32 rounding only
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-4)


def test_anisotropic_ct_follows_nnunets_separate_z_path(managers):
    """Thick slices (anisotropy > 3): nnU-Net resamples in-plane with splines and along z by nearest
    neighbour; the torch path reproduces that too."""
    from engine.inference.preprocess import preprocess_ct

    pm, cm = managers
    ct = small_phantom(seed=7, shape=(12, 96, 96), spacing=(6.0, 1.2, 1.2))
    spacing = [float(s) for s in ct.geometry.spacing]
    ref, _, _ = cm.preprocessor_class(verbose=False).run_case_npy(ct.image[None], None, {"spacing": spacing},
                                                                   pm, cm, {"labels": {"background": 0}})
    ours, _ = preprocess_ct(ct.image, spacing, pm, cm)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=2e-4)


def test_same_shape_needs_no_resampling_and_is_exact(managers):
    """At the model's own spacing the torch path is nnU-Net's normalisation exactly."""
    from engine.inference.preprocess import preprocess_ct

    pm, cm = managers
    ct = small_phantom(seed=6, shape=(24, 40, 40), spacing=tuple(float(s) for s in cm.spacing))
    spacing = [float(s) for s in cm.spacing]
    ref, _, _ = cm.preprocessor_class(verbose=False).run_case_npy(ct.image[None], None, {"spacing": spacing},
                                                                   pm, cm, {"labels": {"background": 0}})
    ours, _ = preprocess_ct(ct.image, spacing, pm, cm)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def demo_model():
    """The bundled demo model (trained on phantoms: it segments them, unlike the untrained tiny model,
    whose random output flips with any change of its input)."""
    from engine.models import bundled_demo_model

    m = bundled_demo_model()
    assert m is not None, "the bundled demo model (resources/models/demo) is part of the repository"
    return m


def test_segmentations_agree_with_nnunet_preprocessing_and_float32(demo_model):
    """Torch preprocessing and the CPU's bfloat16 network each keep Dice >= 0.99 against nnU-Net's own
    preprocessing with a float32 network, and match the phantom's truth as well."""
    ct = small_phantom(seed=3, shape=(48, 96, 96), spacing=(2.5, 2.0, 2.0))
    runs = {(pre, bf): segment(ct, demo_model, SegmentOptions(device="cpu", threads=1, preprocessing=pre, cpu_bf16=bf, postprocess=False))
            for pre, bf in (("nnunet", False), ("torch", False), ("torch", True))}
    ref = runs["nnunet", False]
    assert ref.provenance["runs"][0]["preprocessing"].startswith("nnU-Net")
    assert ref.provenance["runs"][0]["network_precision"] == "float32"
    assert runs["torch", True].provenance["runs"][0]["preprocessing"].startswith("torch")
    assert runs["torch", True].provenance["runs"][0]["network_precision"].startswith("bfloat16")
    truth = ct.labels == 1
    assert (ref.labels == 1).sum() > 1000, "the demo model found no liver in the phantom"
    for key, res in runs.items():
        assert _dice(res.labels == 1, ref.labels == 1) >= 0.99, key
        assert _dice(res.labels == 1, truth) >= _dice(ref.labels == 1, truth) - 0.01, key


def test_cancel_at_first_preprocessing_slab_stops_before_prediction(model, monkeypatch):
    """A cancel pressed while preprocessing is honoured at the next slab: the stage does not finish and the
    later stages never start."""
    import engine.inference.preprocess as pre

    monkeypatch.setattr(pre, "PRE_SLAB_BYTES", 64 * 1024)    # several slabs on a small CT
    token = CancelToken()
    calls: list[tuple[str, int, int]] = []

    def prog(stage, done, total):
        calls.append((stage, done, total))
        if stage == "preprocess" and done == 1:
            token.cancel()

    with pytest.raises(Cancelled):
        segment(small_phantom(seed=3), model, SegmentOptions(device="cpu", threads=1), progress=prog, cancel=token)
    pre_calls = [c for c in calls if c[0] == "preprocess"]
    assert pre_calls and pre_calls[-1][2] > 2, "expected several preprocessing slabs"
    assert pre_calls[-1][1] < pre_calls[-1][2], "preprocessing ran to its end"
    assert not {"predict", "resample", "postprocess"} & {c[0] for c in calls}


def test_cancel_inside_a_forward_pass(model):
    """The network checks the token before each convolution, so a cancel does not wait for a whole
    forward pass."""
    import torch

    from engine.inference.pipeline import _load

    pred = _load(model, torch.device("cpu"), "fast", lambda *a: None).predictor
    convs = [m for m in pred.network.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    seen: list[int] = []
    token = CancelToken()

    def count(_m, _i, _o):
        seen.append(1)
        if len(seen) == 2:
            token.cancel()          # pressed during the second convolution of the pass

    handles = [c.register_forward_hook(count) for c in convs]
    pred.cancel_token = token
    try:
        with pytest.raises(Cancelled):
            pred.network(torch.zeros((1, 1, *pred.configuration_manager.patch_size)))
        assert len(seen) == 2 < len(convs)       # stopped at the third convolution
        pred.cancel_token = CancelToken()
        out = pred.network(torch.zeros((1, 1, *pred.configuration_manager.patch_size)))
        assert out.shape[0] == 1
    finally:
        pred.cancel_token = None
        for h in handles:
            h.remove()


def test_unknown_preprocessing_is_a_clear_error(model):
    with pytest.raises(ModelError, match="preprocessing"):
        segment(small_phantom(seed=3), model, SegmentOptions(device="cpu", threads=1, preprocessing="scipy"))


def test_other_normalisation_falls_back_to_nnunets_preprocessor(model, managers):
    import copy

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from engine.inference.preprocess import torch_preprocessing_supported

    plans = copy.deepcopy(model.plans)
    plans["configurations"][model.configuration]["normalization_schemes"] = ["ZScoreNormalization"]
    pm = PlansManager(plans)
    assert "CTNormalization" in torch_preprocessing_supported(pm, pm.get_configuration(model.configuration))
