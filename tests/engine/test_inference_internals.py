"""Fail loudly when the nnunetv2 internals LiverPlan's predictor overrides move (nnunetv2 is pinned)."""
from __future__ import annotations

import importlib.metadata
import inspect

from engine.inference.predictor import NNUNET_INTERNALS, PINNED_NNUNET, predictor_class
from engine.progress import Cancelled


def test_nnunetv2_is_the_pinned_version():
    assert importlib.metadata.version("nnunetv2") == PINNED_NNUNET, (
        "nnunetv2 changed: re-check engine/inference/predictor.py against the new predictor, then update "
        "PINNED_NNUNET")


def test_overridden_methods_exist_with_the_same_signature():
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    for name, params in NNUNET_INTERNALS.items():
        fn = getattr(nnUNetPredictor, name, None)
        assert fn is not None, f"nnUNetPredictor.{name} is gone"
        got = tuple(inspect.signature(fn).parameters)
        assert got == params, f"nnUNetPredictor.{name}{got} changed (expected {params})"


def test_subclass_overrides_the_loop_and_tile_methods():
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    cls = predictor_class()
    assert issubclass(cls, nnUNetPredictor)
    for name in ("_internal_predict_sliding_window_return_logits", "_internal_maybe_mirror_and_predict"):
        assert getattr(cls, name) is not getattr(nnUNetPredictor, name)
        assert tuple(inspect.signature(getattr(cls, name)).parameters) == NNUNET_INTERNALS[name]


def test_nnunet_still_retries_only_runtime_errors_and_cancel_is_not_one():
    """nnU-Net's sliding window catches RuntimeError (and reruns on the CPU); Cancelled must pass through."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    src = inspect.getsource(nnUNetPredictor.predict_sliding_window_return_logits)
    assert "except RuntimeError" in src
    assert not issubclass(Cancelled, RuntimeError)


def test_batched_mirroring_equals_nnunets_one_by_one(tmp_path_factory):
    """Our CPU mirroring (flipped copies batched) gives nnU-Net's average of the 8 mirrored passes."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from engine.inference.pipeline import _load
    from engine.models import load_model
    from tiny_model import cached_tiny_model

    model = load_model(cached_tiny_model(tmp_path_factory))
    pred = _load(model, torch.device("cpu"), "accurate", lambda *a: None).predictor
    assert pred.use_mirroring and pred.allowed_mirroring_axes == (0, 1, 2)
    x = torch.randn((1, 1, 32, 32, 32), generator=torch.Generator().manual_seed(0))
    ours = pred._internal_maybe_mirror_and_predict(x)
    theirs = nnUNetPredictor._internal_maybe_mirror_and_predict(pred, x)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4)
