"""The model's uncertainty (engine.review.uncertainty): kept from a run of the bundled demo model, bounded, in
range, carried into the session, a confidence per lesion, hidden where edited, absent for a model set."""
from __future__ import annotations

import numpy as np
import pytest

from engine import edits
from engine.case_session import CaseSession
from engine.inference import SegmentOptions, segment
from engine.review.state import ReviewState
from engine.review.uncertainty import (UNCERTAINTY_KEY, UncertaintyState, max_prob_to_uint8, memory_bytes,
                                       uncertain_regions)


@pytest.fixture(scope="module")
def demo_model():
    from engine.models import bundled_demo_model

    m = bundled_demo_model()
    assert m is not None, "the bundled demo model (resources/models/demo) is part of the repository"
    return m


@pytest.fixture(scope="module")
def run(demo_model):
    from engine.phantom import make_phantom

    ct = make_phantom(seed=3, shape=(40, 72, 72), n_lesions=3)      # the demo model finds lesions in it
    return ct, segment(ct, demo_model, SegmentOptions(device="cpu", threads=1, uncertainty=True))


def test_uncertainty_map_kept_bounded_and_in_range(run):
    ct, res = run
    unc = res.extra_maps[UNCERTAINTY_KEY]
    assert unc.dtype == np.uint8 and unc.shape == ct.labels.shape
    assert unc.nbytes == memory_bytes(ct.labels.shape) == ct.labels.size          # 1 byte per voxel
    # u = 1 - max prob <= 1 - 1/C (C = 6 classes of the demo model): at most round(255 * 5/6) = 213
    assert int(unc.max()) <= 213
    assert "uncertainty" in res.provenance["extra_maps"]
    # the model is surer inside its structures than on their borders
    from scipy import ndimage as ndi
    liver = res.labels == 1
    inner = ndi.binary_erosion(liver, iterations=2)
    border = liver & ~ndi.binary_erosion(liver)
    assert inner.any() and border.any()
    assert unc[inner].mean() < unc[border].mean()
    assert unc.max() > 0


def test_uncertainty_off_and_model_set_say_none(run, demo_model):
    ct, _ = run
    off = segment(ct, demo_model, SegmentOptions(device="cpu", threads=1))
    assert UNCERTAINTY_KEY not in off.extra_maps                  # off unless asked
    assert "uncertainty" not in off.provenance
    two = segment(ct, [demo_model, demo_model], SegmentOptions(device="cpu", threads=1, uncertainty=True))
    assert UNCERTAINTY_KEY not in two.extra_maps
    assert two.provenance["uncertainty"].startswith("no uncertainty for this run")
    # in a session: the review says so, and nothing fails
    s = CaseSession(journal=False)
    s.open_case(ct.copy())
    review = ReviewState(s)
    s.apply_segmentation(two, [demo_model, demo_model])
    assert review.uncertainty is None
    assert review.uncertainty_note.startswith("No uncertainty for this run")
    assert review.uncertain_regions() == []
    s.derived.run_pending()
    cols = review.lesion_columns(s.report.lesions)
    assert all(conf == "—" for _, conf in cols.values())


def test_session_carries_map_confidence_edits_and_frees(run, demo_model):
    ct, res = run
    s = CaseSession(journal=False)
    s.open_case(ct.copy())
    review = ReviewState(s)
    s.apply_segmentation(res, demo_model)
    assert review.uncertainty is not None and review.uncertainty_note == ""
    assert review.uncertainty_bytes == ct.labels.size
    s.derived.run_pending()
    lesions = s.report.lesions
    assert lesions, "the demo model found no lesion in the phantom: the confidence would not be tested"
    for les in lesions:
        c = review.lesion_confidence(les)
        assert c is not None and 1.0 / 6.0 <= c <= 1.0
    exp = review.lesion_export_columns(lesions)
    assert set(exp) == {l.id for l in lesions}
    assert all(0.0 < d["model_confidence"] <= 1.0 for d in exp.values())
    assert all("status_vs_reference" in d for d in exp.values())     # the phantom's truth is the reference
    cols = review.lesion_columns(lesions)
    assert all(conf == f"{review.lesion_confidence(l):.2f}" for l, (_, conf) in zip(lesions, cols.values()))
    # an edit hides the map in its box; undoing back to the run's labels shows it whole again
    z = ct.labels.shape[0] // 2
    s.apply("brush", "Paint", _paint_box, (z, z + 2, 10, 20, 10, 20))
    assert review.uncertainty.edited == [(z, z + 2, 10, 20, 10, 20)]
    plane = review.uncertainty.plane(0, z)
    assert not plane[10:20, 10:20].any()
    assert np.array_equal(plane[30:, 30:], res.extra_maps[UNCERTAINTY_KEY][z, 30:, 30:])
    s.undo()
    assert review.uncertainty.edited == []
    # a new case frees it
    s.open_case(ct.copy())
    assert review.uncertainty is None and UNCERTAINTY_KEY not in s.extra_maps


def _paint_box(labels, box):
    region = edits.Region(box, labels[box[0]:box[1], box[2]:box[3], box[4]:box[5]].copy())
    labels[box[0]:box[1], box[2]:box[3], box[4]:box[5]] = 5
    return region


def test_uncertain_regions_largest_first_and_hidden_boxes():
    unc = np.zeros((20, 30, 30), np.uint8)
    unc[2:4, 2:5, 2:5] = max_prob_to_uint8(0.5)           # 18 voxels
    unc[10:14, 10:20, 10:20] = max_prob_to_uint8(0.45)    # 400 voxels
    unc[15, 25, 25] = max_prob_to_uint8(0.9)              # sure enough: not a region
    regions = uncertain_regions(unc)
    assert [r.voxels for r in regions] == [400, 18]
    assert regions[0].mean_max_prob == pytest.approx(0.45, abs=0.005)
    assert regions[0].box == (10, 14, 10, 20, 10, 20)
    state = UncertaintyState(unc, run_state=1)
    state.labels_changed((9, 15, 9, 21, 9, 21), state_id=2)
    assert [r.voxels for r in state.regions()] == [18]
