"""Lesion-wise detection: matching rule, counts, size-restricted recall."""
import math

import numpy as np
import pytest

from metrics.lesions import detect_lesions
from shapes import ball

SHAPE, SP = (40, 80, 80), (2.0, 1.0, 1.0)


def _lesions():
    ref = np.zeros(SHAPE, bool)
    ref |= ball(SHAPE, (10, 20, 20), 12.0, SP)        # 24 mm
    ref |= ball(SHAPE, (20, 60, 20), 7.0, SP)         # 14 mm
    ref |= ball(SHAPE, (30, 20, 60), 3.0, SP)         # 6 mm, will be missed
    pred = np.zeros(SHAPE, bool)
    pred |= ball(SHAPE, (10, 21, 21), 11.0, SP)
    pred |= ball(SHAPE, (20, 60, 21), 7.0, SP)
    pred |= ball(SHAPE, (30, 60, 60), 4.0, SP)        # false lesion
    return pred, ref


def test_counts_and_rates():
    pred, ref = _lesions()
    d = detect_lesions(pred, ref, SP, size_thresholds_mm=(10.0,))
    assert (d.n_ref, d.n_pred, d.detected, d.missed, d.false) == (3, 3, 2, 1, 1)
    assert d.recall == pytest.approx(2 / 3) and d.precision == pytest.approx(2 / 3)
    assert d.f1 == pytest.approx(2 / 3)
    assert d.recall_by_size[10.0] == 1.0 and d.n_ref_by_size[10.0] == 2
    assert 0.7 < d.mean_lesion_dice < 1.0
    diam = sorted(m.ref_diameter_mm for m in d.matches)
    assert diam[0] == pytest.approx(6.0, abs=2.1) and diam[2] == pytest.approx(24.0, abs=2.1)


def test_sliver_below_min_iou_does_not_count_as_found():
    ref = ball(SHAPE, (20, 40, 40), 10.0, SP)
    pred = np.zeros(SHAPE, bool)
    pred[20, 40, 30:33] = True                          # touches the lesion's edge
    d = detect_lesions(pred, ref, SP)
    assert d.detected == 0 and d.missed == 1 and d.false == 1


def test_one_prediction_cannot_find_two_lesions():
    ref = ball(SHAPE, (20, 40, 30), 5.0, SP) | ball(SHAPE, (20, 40, 50), 5.0, SP)
    pred = ball(SHAPE, (20, 40, 40), 16.0, SP)
    d = detect_lesions(pred, ref, SP, min_iou=0.0)
    assert d.detected == 1 and d.missed == 1


def test_empty_policy():
    z = np.zeros(SHAPE, bool)
    pred, ref = _lesions()
    missed = detect_lesions(z, ref, SP)
    assert missed.recall == 0 and missed.f1 == 0 and missed.missed == 3
    none = detect_lesions(z, z, SP)
    assert math.isnan(none.recall) and math.isnan(none.f1)
