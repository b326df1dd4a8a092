"""evaluate_case on label maps, the empty/NaN/inf policy end to end, and the study's table layout."""
import math

import numpy as np
import pytest

import metrics
from metrics import policy
from shapes import ball, cube, vessel_tree_with_loops

SP = (2.0, 0.8, 0.8)


@pytest.fixture(scope="module")
def label_pair():
    shape = (40, 48, 48)
    ref = np.zeros(shape, np.uint8)
    ref[ball(shape, (20, 24, 24), 18.0, SP)] = 1
    ref[vessel_tree_with_loops(shape) & (ref == 1)] = 2
    ref[cube(shape, (5, 5, 40), (30, 5, 5))] = 4
    ref[ball(shape, (20, 16, 16), 4.0, SP)] = 5
    pred = ref.copy()
    pred[ball(shape, (21, 24, 24), 18.5, SP) & (pred == 0)] = 1
    pred[pred == 5] = 1                      # CRLM missed entirely
    pred[cube(shape, (30, 30, 5), (3, 3, 3))] = 3   # hepatic veins invented
    return pred, ref


def test_labels_mirror_engine_table():
    from engine.labels import STRUCTURES
    assert metrics.DEFAULT_STRUCTURES == {s.key: s.label for s in STRUCTURES}


def test_evaluate_case_values_and_policy(label_pair):
    pred, ref = label_pair
    r = metrics.evaluate_case(pred, ref, SP)
    assert list(r) == ["liver", "portal_vein", "hepatic_veins", "ivc", "crlm"]
    assert r["ivc"]["dice"] == 1.0 and r["ivc"]["hd95"] == 0.0
    assert r.status["crlm"] == policy.PRED_EMPTY
    assert r["crlm"]["dice"] == 0 and r["crlm"]["hd95"] == math.inf and r["crlm"]["cldice"] == 0
    assert r["crlm"]["hd95_segmetrics"] == 0.0
    assert any("seg-metrics" in n for n in r.notes["crlm"])
    assert r["crlm"]["lesion_missed"] == 1 and r["crlm"]["lesion_recall"] == 0
    assert r.status["hepatic_veins"] == policy.REF_EMPTY and math.isnan(r["hepatic_veins"]["recall"])
    assert 0.8 < r["liver"]["dice"] < 1
    # the same numbers one metric at a time
    p, q = pred == 1, ref == 1
    assert r["liver"]["hd95"] == metrics.hd95(p, q, SP)
    assert r["liver"]["hd95_surface"] == metrics.hd95(p, q, SP, "surface")
    assert r["liver"]["cldice"] == metrics.cldice(p, q).cldice
    assert r["liver"]["betti1_error"] == abs(metrics.betti_numbers(p).b1 - metrics.betti_numbers(q).b1)


def test_single_thread_gives_identical_results(label_pair):
    pred, ref = label_pair
    a = metrics.evaluate_case(pred, ref, SP, workers=1)
    b = metrics.evaluate_case(pred, ref, SP, workers=2)
    for s in a:
        for m in a[s]:
            assert (a[s][m] == b[s][m]) or (math.isnan(a[s][m]) and math.isnan(b[s][m])), (s, m)


def test_groups_and_not_in_reference(label_pair):
    pred, ref = label_pair
    ref2 = ref.copy()
    ref2[ref2 == 4] = 3            # a reference that merges IVC into "venous system" = label 3
    r = metrics.evaluate_case(pred, ref2, SP, {"liver": 1, "hepatic_veins+ivc": ((3, 4), (3,)), "ivc": 4},
                              not_in_reference=["ivc"])
    assert r.status["ivc"] == policy.NOT_IN_REFERENCE and math.isnan(r["ivc"]["dice"])
    # union of predicted 3 and 4 against reference 3
    u = np.isin(pred, (3, 4))
    assert r["hepatic_veins+ivc"]["dice"] == pytest.approx(
        2 * np.sum(u & (ref2 == 3)) / (u.sum() + (ref2 == 3).sum()))


def test_summary_counts_never_drop_a_miss():
    s = policy.summarize([0.9, 0.0, float("nan"), 0.7])
    assert s.n == 4 and s.n_nan == 1 and s.mean == pytest.approx((0.9 + 0.0 + 0.7) / 3)
    h = policy.summarize([2.0, float("inf"), 4.0])
    assert h.n_inf == 1 and h.mean == 3.0 and "1 inf" in h.cell()
    hp = policy.summarize([2.0, float("inf"), 4.0], inf_penalty=100.0)
    assert hp.mean == pytest.approx(106 / 3)


def test_seg_metrics_zero_for_an_empty_mask_is_not_averaged_as_a_perfect_score():
    # seg-metrics scores HD95 0 when a mask is empty; per case that stays (flagged), but a cohort cell
    # counts it like HD95 does: inf for one empty mask, undefined for both
    ok_p, ok_r = np.zeros((10, 20, 20), np.uint8), np.zeros((10, 20, 20), np.uint8)
    ok_p[2:8, 5:15, 5:15] = 1
    ok_r[2:8, 5:15, 6:16] = 1
    empty_pred = np.zeros_like(ok_p)
    res = [metrics.evaluate_case(ok_p, ok_r, (1.0, 1.0, 1.0), labels={"s": 1}, metrics=["hd95", "hd95_segmetrics"]),
           metrics.evaluate_case(empty_pred, ok_r, (1.0, 1.0, 1.0), labels={"s": 1}, metrics=["hd95", "hd95_segmetrics"]),
           metrics.evaluate_case(empty_pred, empty_pred, (1.0, 1.0, 1.0), labels={"s": 1},
                                 metrics=["hd95", "hd95_segmetrics"])]
    assert res[1]["s"]["hd95_segmetrics"] == 0.0                       # seg-metrics' own convention, per case
    t = metrics.cohort_table(res, metrics=["hd95", "hd95_segmetrics"])
    seg, hd = t.cells[("hd95_segmetrics", "s")], t.cells[("hd95", "s")]
    assert (seg.n_finite, seg.n_inf, seg.n_nan) == (hd.n_finite, hd.n_inf, hd.n_nan) == (1, 1, 1)
    assert seg.mean == pytest.approx(res[0]["s"]["hd95_segmetrics"])


def test_cohort_table_layout(label_pair):
    pred, ref = label_pair
    res = [metrics.evaluate_case(pred, ref, SP), metrics.evaluate_case(ref, ref, SP)]
    t = metrics.cohort_table(res)
    rows = t.rows()
    assert rows[0] == ["Metric", "liver", "portal_vein", "hepatic_veins", "ivc", "crlm"]
    titles = [r[0] for r in rows]
    for name in ("Dice", "Jaccard", "Precision", "Recall", "FPR", "FNR", "HD95 (mm)", "clDice", "|Δb0|",
                 "|Δb1|", "|ΔEuler|", "prediction empty (missed)"):
        assert name in titles
    crlm_hd = rows[titles.index("HD95 (mm)")][5]
    assert "1 inf" in crlm_hd
    dice_crlm = t.cells[("dice", "crlm")]
    assert dice_crlm.n == 2 and dice_crlm.mean == 0.5       # the miss is averaged in as 0
    md = t.to_markdown()
    assert "| Dice |" in md and "±" in md
    import json
    j = json.loads(t.to_json())
    assert j["metrics"]["dice"]["structures"]["crlm"]["n"] == 2
    assert t.to_csv().splitlines()[0].startswith("metric,structure,mean,sd,n")
