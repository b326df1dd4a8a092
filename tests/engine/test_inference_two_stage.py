"""Two-stage accurate mode (liver crop) and the channels_last instance norms of the CPU path.

The two-stage logic is checked with the real predictor (tiny model) whose ``predict_logits`` is replaced by
a stand-in that records how it was called and returns designed logits: deterministic, and fast."""
from __future__ import annotations

import numpy as np
import pytest

from engine.inference import SegmentOptions, segment
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

    def __call__(self, data, run):
        import torch

        pred = self.pred
        shape = tuple(data.shape[1:])
        slicers = pred.sliding_window_slicers(shape, run.tile_step_size)
        kept = [sl for sl in slicers if run.tile_filter is None or run.tile_filter(sl)]
        self.calls.append({"mirroring": run.use_mirroring, "step": run.tile_step_size,
                           "folds": len(run.parameters), "kept": kept, "all": slicers,
                           "n_tiles": pred.count_tiles(data.shape, run)})
        logits = torch.zeros((6, *shape), dtype=torch.half)
        logits[0] = 1
        if not run.use_mirroring:
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
    logits, n, _run_used = _two_stage_logits(pred, data, None, list(pred.configuration_manager.patch_size),
                                             pred.configuration_manager, two_stage, no_progress, prov)
    assert (pred.use_mirroring, pred.tile_step_size, pred.list_of_parameters) == before, "the predictor was changed"
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


def test_defaults_accurate_uses_two_stages_fast_does_not(model):
    ct = small_phantom(seed=5, shape=(24, 48, 48))
    acc = segment(ct, model, SegmentOptions(device="cpu", mode="accurate", threads=1, postprocess=False))
    assert acc.provenance["liver_crop"] is True
    assert acc.provenance["liver_crop_requested"].startswith("default")
    run = acc.provenance["runs"][0]
    assert "liver_crop" in run and "two_stage" in run and run["two_stage"]["first_pass_tiles"] >= 1
    assert acc.labels.shape == ct.image.shape
    off = segment(ct, model, SegmentOptions(device="cpu", mode="accurate", threads=1, liver_crop=False, postprocess=False))
    assert off.provenance["liver_crop"] is False and "two_stage" not in off.provenance["runs"][0]
    fast = segment(ct, model, SegmentOptions(device="cpu", mode="fast", threads=1, liver_crop=True, postprocess=False))
    assert fast.provenance["liver_crop"] is False and "two_stage" not in fast.provenance["runs"][0]
    # the untrained tiny model's liver may or may not be found; either way the run says what it did
    assert any(w in run["liver_crop"] for w in ("liver found", "no liver", "every tile"))


def test_negative_margin_is_a_clear_error(model):
    from engine.errors import ModelError

    with pytest.raises(ModelError, match="margin"):
        segment(small_phantom(seed=5, shape=(24, 48, 48)), model, SegmentOptions(device="cpu", mode="accurate", liver_crop_margin_mm=-1))


def test_channels_last_instance_norm_equals_torchs_instance_norm(predictor):
    """The CPU network's instance norms (run as one-channel-per-group group norms in channels_last_3d)
    give torch's InstanceNorm3d numbers, for the float32 path the pipeline uses by default."""
    import torch

    norms = [m for m in predictor.network.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and all("forward" in m.__dict__ for m in norms), "norms not patched on the CPU"
    norm = norms[0]
    torch.manual_seed(0)
    c = norm.num_features
    x = (torch.randn(2, c, 12, 10, 14) * 3 + 1.5).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        got = norm(x)
        ref = torch.nn.functional.instance_norm(x.contiguous(), weight=norm.weight, bias=norm.bias, eps=norm.eps)
    assert got.is_contiguous(memory_format=torch.channels_last_3d)     # no layout round trip
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # a contiguous input takes the module's own path
    with torch.inference_mode():
        torch.testing.assert_close(norm(x.contiguous()), ref, rtol=1e-5, atol=1e-5)


def test_two_stage_equals_the_whole_ct_sweep_inside_the_region(predictor, monkeypatch):
    """With the real (tiny) network for the accurate sweep (the first pass is a stand-in that finds a small
    "liver"): inside the region the two-stage logits are the whole-CT sweep's, bit for bit (the same tiles,
    arithmetic and order), while fewer tiles ran."""
    import torch

    from engine.inference.pipeline import _two_stage_logits, base_run

    gen = torch.Generator().manual_seed(1)
    data = torch.nn.functional.avg_pool3d(torch.randn((1, 1, 32, 64, 112), generator=gen) * 3, 5, 1, 2)[0]
    patch = list(predictor.configuration_manager.patch_size)
    whole = predictor.predict_logits(data, base_run(predictor))
    real = predictor.predict_logits

    def first_pass_stand_in(d, run):
        if run.use_mirroring:
            return real(d, run)
        out = torch.zeros((6, *d.shape[1:]), dtype=torch.half)
        out[0] = 1
        out[1, 10:20, 5:15, 80:95] = 5
        return out

    monkeypatch.setattr(predictor, "predict_logits", first_pass_stand_in)
    prov: dict = {}
    two_stage = {"liver_values": [1], "roi_values": [1, 2, 3, 4, 5], "margin_mm": 0.0, "fast_fold": "0",
                 "fast_fold_index": 0, "fast_step": 0.75}
    logits, n, _run_used = _two_stage_logits(predictor, data, None, patch, predictor.configuration_manager,
                                             two_stage, no_progress, prov)
    rec = prov["two_stage"]
    assert rec["region_model_grid"] == [[10, 20], [5, 15], [80, 95]]
    assert n < rec["accurate_tiles_whole_ct"]                         # the region saved tiles
    box = (slice(None),) + tuple(slice(a, b) for a, b in rec["region_model_grid"])
    assert torch.equal(logits[box], whole[box])
    assert not torch.equal(logits, whole)                             # outside: the first pass


def test_several_tiles_per_call_give_each_tiles_own_result(predictor):
    """Tiles batched into one network call (with their mirrored passes) get the same result as tile by
    tile (the fast mode's and the first pass's batching)."""
    import torch

    from engine.inference.pipeline import base_run

    gen = torch.Generator().manual_seed(2)
    patch = list(predictor.configuration_manager.patch_size)
    x = torch.randn((3, 1, *patch), generator=gen)
    for mirroring in (True, False):
        run = base_run(predictor, cpu_batch=8, use_mirroring=mirroring)
        together = predictor.predict_tile(x, run)
        alone = torch.cat([predictor.predict_tile(x[i:i + 1], run) for i in range(3)])
        torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    assert predictor.tiles_per_call(base_run(predictor, cpu_batch=8, use_mirroring=True)) == 1   # 8 passes fill it
