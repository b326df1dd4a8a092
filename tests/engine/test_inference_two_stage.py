"""Two-stage accurate mode (liver crop) and the channels_last instance norms of the CPU path.

The two-stage logic is checked with the real predictor (tiny model) whose ``predict_logits`` is replaced by
a stand-in that records how it was called and returns designed logits: deterministic, and fast."""
from __future__ import annotations

import numpy as np
import pytest

from engine.inference import segment
from engine.models import load_model
from engine.progress import no_progress
from tiny_model import cached_tiny_model, small_phantom


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(cached_tiny_model(tmp_path_factory))


@pytest.fixture(scope="module")
def predictor(model):
    import torch

    from engine.inference.pipeline import _load

    return _load(model, torch.device("cpu"), "accurate", no_progress).predictor


class StandIn:
    """predict_logits stand-in: first pass (fast: no mirroring) -> liver (class 1) in ``liver_box``,
    background elsewhere; accurate sweep -> class 2 on every voxel a kept tile covers, background elsewhere."""

    def __init__(self, pred, liver_box):
        self.pred, self.liver_box, self.calls = pred, liver_box, []

    def __call__(self, data, n_tiles):
        import torch

        pred = self.pred
        shape = tuple(data.shape[1:])
        slicers = pred._internal_get_sliding_window_slicers(shape)
        kept = [sl for sl in slicers if pred.tile_filter is None or pred.tile_filter(sl)]
        self.calls.append({"mirroring": pred.use_mirroring, "step": pred.tile_step_size,
                           "folds": len(pred.list_of_parameters), "kept": kept, "all": slicers,
                           "n_tiles": n_tiles})
        logits = torch.zeros((6, *shape), dtype=torch.half)
        logits[0] = 1
        if not pred.use_mirroring:
            if self.liver_box is not None:
                logits[(1, *self.liver_box)] = 5
        else:
            for sl in kept:
                logits[(2, *sl[1:])] = 5
        return logits


def _run(pred, monkeypatch, liver_box, shape=(40, 96, 128), margin_mm=5.0):
    import torch

    from engine.inference.pipeline import _two_stage_logits

    stand_in = StandIn(pred, liver_box)
    monkeypatch.setattr(pred, "predict_logits", stand_in)
    data = torch.zeros((1, *shape))
    prov: dict = {}
    before = (pred.use_mirroring, pred.tile_step_size, pred.list_of_parameters)
    two_stage = {"liver_values": [1], "roi_values": [1, 2, 3, 4, 5], "margin_mm": margin_mm, "fast_fold": "0",
                 "fast_fold_index": 0,
                 "fast_step": 0.75}
    logits, n = _two_stage_logits(pred, data, None, list(pred.configuration_manager.patch_size),
                                  pred.configuration_manager, two_stage, no_progress, prov)
    assert (pred.use_mirroring, pred.tile_step_size, pred.list_of_parameters) == before, "settings not restored"
    return logits.argmax(0).numpy(), n, prov, stand_in.calls


def test_accurate_pass_runs_only_tiles_reaching_the_liver_and_covers_its_box_fully(predictor, monkeypatch):
    liver = (slice(10, 20), slice(10, 30), slice(8, 28))
    labels, n, prov, calls = _run(predictor, monkeypatch, liver)
    first, accurate = calls
    # the first pass is the fast mode: one fold, no mirroring, tile step 0.75, every tile
    assert first["mirroring"] is False and first["step"] == 0.75 and first["folds"] == 1
    assert len(first["kept"]) == len(first["all"])
    # the accurate sweep: the model's mirroring and tile step, on nnU-Net's own tile grid for the whole CT
    assert accurate["mirroring"] is True and accurate["step"] == 0.5
    rec = prov["two_stage"]
    assert n == rec["accurate_tiles"] == len(accurate["kept"]) < rec["accurate_tiles_whole_ct"] == len(accurate["all"])
    box = tuple(slice(a, b) for a, b in rec["region_model_grid"])
    # margin 5 mm on the tiny model's grid (3.0 x 2.4 x 2.4 mm): 2, 3, 3 voxels around the liver
    assert rec["region_model_grid"] == [[8, 22], [7, 33], [5, 31]]
    # every tile touching the box was run (so each box voxel has nnU-Net's full set of tiles) ...
    def touches(sl):
        return all(s.start < b.stop and b.start < s.stop for s, b in zip(sl[1:], box))
    assert [sl for sl in accurate["all"] if touches(sl)] == accurate["kept"]
    # ... the accurate result fills the box, and the first pass stands outside it
    assert (labels[box] == 2).all()
    outside = np.ones(labels.shape, bool)
    outside[box] = False
    assert not (labels[outside] == 2).any()
    assert "liver found" in prov["liver_crop"]


def test_no_liver_in_the_first_pass_means_the_whole_ct_in_accurate_mode(predictor, monkeypatch):
    labels, n, prov, calls = _run(predictor, monkeypatch, None)
    assert len(calls) == 2 and len(calls[1]["kept"]) == len(calls[1]["all"]) == n
    assert (labels == 2).all()
    assert "no liver" in prov["liver_crop"] and "region_model_grid" not in prov["two_stage"]


def test_a_liver_reaching_every_tile_runs_the_plain_sweep(predictor, monkeypatch):
    labels, n, prov, calls = _run(predictor, monkeypatch, (slice(0, 40), slice(0, 96), slice(0, 128)))
    assert n == prov["two_stage"]["accurate_tiles_whole_ct"] and (labels == 2).all()
    assert "every tile" in prov["liver_crop"]


def test_region_box_margin_and_edges():
    import numpy as np

    from engine.inference.crop import mask_bbox

    m = np.zeros((100, 3, 3), bool)
    m[10:20, 1, 1] = True
    assert mask_bbox(m, [3, 0, 0])[0] == slice(7, 23)
    m[:] = False
    m[0:5, 1, 1] = True
    assert mask_bbox(m, [3, 0, 0])[0] == slice(0, 8)          # clipped at the edge
