"""Fail loudly when the nnunetv2 internals LiverPlan's predictor overrides move (nnunetv2 is pinned)."""
from __future__ import annotations

import importlib.metadata
import inspect

import pytest

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


def test_a_replaced_model_is_freed_at_once_without_the_garbage_collector(tmp_path_factory):
    """The cache keeps one predictor per model; the one a mode switch replaces must be freed when it is
    dropped, not when Python's cycle collector next runs: on a GPU its weights otherwise stay allocated
    (seen on an H100: each mode switch left a copy of a 31 M-parameter network behind after a cancel).
    The cancel hooks and the CPU norm patch must not tie the network and the predictor into a cycle."""
    import gc
    import weakref

    import torch

    from engine.inference.pipeline import _load, clear_model_cache
    from engine.models import load_model
    from tiny_model import cached_tiny_model

    model = load_model(cached_tiny_model(tmp_path_factory))
    clear_model_cache()
    gc.collect()
    pred = _load(model, torch.device("cpu"), "fast", lambda *a: None).predictor
    assert pred.install_cancel_hooks() == 0        # installed at load (a second call adds none)
    refs = [weakref.ref(pred), weakref.ref(pred.network)]
    refs += [weakref.ref(m) for m in pred.network.modules()
             if isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) and "forward" in m.__dict__]
    assert len(refs) > 2                            # the CPU norm patch was installed
    del pred
    gc.disable()
    try:
        _load(model, torch.device("cpu"), "accurate", lambda *a: None)   # replaces the "fast" entry
        alive = [r for r in refs if r() is not None]
    finally:
        gc.enable()
    clear_model_cache()
    assert not alive, f"{len(alive)} objects of the replaced model still alive (reference cycle)"


def test_cancel_hooks_still_cancel_after_the_weak_reference_change(tmp_path_factory):
    import torch

    from engine.inference.pipeline import _load, clear_model_cache
    from engine.models import load_model
    from engine.progress import CancelToken
    from tiny_model import cached_tiny_model

    model = load_model(cached_tiny_model(tmp_path_factory))
    pred = _load(model, torch.device("cpu"), "fast", lambda *a: None).predictor
    token = CancelToken()
    token.cancel()
    pred.cancel_token = token
    x = torch.zeros((1, 1, 32, 32, 32))
    try:
        with pytest.raises(Cancelled):
            pred.network(x)        # the first convolution's hook raises
    finally:
        pred.cancel_token = None
        clear_model_cache()


def test_clearing_the_model_cache_drops_nnunets_cached_gaussians(tmp_path_factory):
    # nnU-Net's compute_gaussian is an lru_cache holding tile weights on the device they were made for
    # (4 MB on a GPU for a 128^3 patch); "clear the cache" should leave none of ours behind.
    import torch
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    from engine.inference.pipeline import clear_model_cache
    compute_gaussian((16, 16, 16), 1. / 8, 10, device=torch.device("cpu"))
    assert compute_gaussian.cache_info().currsize > 0
    clear_model_cache()
    assert compute_gaussian.cache_info().currsize == 0
