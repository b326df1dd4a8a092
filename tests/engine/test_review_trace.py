"""Vessel trace (engine.review.trace): a branch deleted from a phantom's label map (the CT keeps it) comes
back from two clicks, as one undoable step; bad clicks get a sentence and change nothing."""
from __future__ import annotations

import numpy as np
import pytest

from review_phantoms import build, deleted_branch, dice

from engine.case_session import CaseSession
from engine.review.trace import TraceError, apply_trace, plan_trace


@pytest.fixture(scope="module")
def phantom():
    return build(seed=3)


@pytest.mark.parametrize("label", [3, 2], ids=["hepatic_vein", "portal_vein"])
def test_trace_restores_a_deleted_branch(phantom, label):
    case, truth = phantom
    labels, branch, tip, base = deleted_branch(case, truth, label)
    assert branch.sum() > 150
    plan = plan_trace(case.image, labels, case.geometry.spacing, tip, base, label, rule="liver")
    # the preview is a path from the first click to the second, inside a local box
    assert tuple(plan.path[0]) == tip and tuple(plan.path[-1]) == base
    box_vox = np.prod([plan.box[2 * a + 1] - plan.box[2 * a] for a in range(3)])
    assert box_vox < 0.05 * labels.size
    before = labels.copy()
    region = apply_trace(labels, plan, case.image)
    assert region is not None
    added = (labels == label) & (before != label)
    assert dice(added, branch) >= 0.8, dice(added, branch)
    # it paints parenchyma only: no lesion, no other vessel, nothing outside the liver
    assert set(np.unique(before[added])) == {1}


def test_trace_is_one_undoable_step(phantom):
    case, truth = phantom
    c = case.copy()
    c.labels[:], branch, tip, base = deleted_branch(case, truth, 3)
    s = CaseSession(journal=False)
    s.open_case(c)
    start = s.case.labels.copy()
    plan = plan_trace(s.case.image, s.case.labels, c.geometry.spacing, tip, base, 3)
    e = s.commit("vessel_trace", "Vessel trace (hepatic veins)", apply_trace(s.case.labels, plan, s.case.image))
    assert e is not None and e.kind == "vessel_trace" and s.history.undo_description == "Vessel trace (hepatic veins)"
    assert not np.array_equal(s.case.labels, start)
    s.undo()
    assert np.array_equal(s.case.labels, start)
    s.redo()
    assert (s.case.labels[branch] == 3).mean() > 0.7


def test_trace_refuses_bad_clicks_with_words(phantom):
    case, truth = phantom
    labels = case.labels
    sp = case.geometry.spacing
    liver = np.argwhere(labels == 1)
    # two points of plain liver, far from any vessel: nothing bright to follow
    from scipy import ndimage
    far = ndimage.distance_transform_edt(labels == 1, sampling=sp)
    pts = np.argwhere(far > 8)
    a = pts[len(pts) // 2]
    mm = np.linalg.norm((pts - a) * np.asarray(sp), axis=1)
    b = pts[int(np.argmin(np.abs(mm - 30.0)))]
    a, b = tuple(int(v) for v in a), tuple(int(v) for v in b)
    cases = [
        ((a, b, 3), "not brighter than the liver"),
        ((a, a, 3), "same place"),
        ((tuple(liver[0]), tuple(liver[1]), 1), "active structure is Liver"),
        (((0, 0, 0), (109, 259, 259), 3), "apart"),
        (((0, 0, 0), (200, 0, 0), 3), "outside the image"),
    ]
    for (p, q, value), words in cases:
        with pytest.raises(TraceError, match=words):
            plan_trace(case.image, labels, sp, p, q, value)


def test_trace_on_real_ircadb_portal_vein(real):
    """IRCADb 1.17: stretches of the expert's portal vein (25-35 mm along the vessel, deleted within 6 mm) are
    traced end to end from the CT: the path stays inside the expert's vessel and the tube restores most of
    it (benchmarks/review_trace_speed.py --real measures 8 stretches: Dice 0.56-0.80)."""
    import SimpleITK as sitk
    from scipy import ndimage
    from skimage.graph import MCP_Geometric

    folder = real("3dircadb1.17")
    img = sitk.ReadImage(str(folder / "PATIENT_DICOM.nii.gz"))
    ct = sitk.GetArrayFromImage(img)
    sp = np.array(img.GetSpacing()[::-1])
    m = {k: sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "masks" / f"{k}.nii.gz"))) > 0
         for k in ("liver", "portalvein", "venoussystem")}
    pv = m["portalvein"] & m["liver"]
    labels = np.zeros(ct.shape, np.uint8)
    labels[m["liver"]] = 1
    labels[pv] = 2
    labels[m["venoussystem"] & m["liver"]] = 3
    rng = np.random.default_rng(0)
    depth = ndimage.distance_transform_edt(pv, sampling=sp)
    cands = np.argwhere(depth >= 1.5)
    done = 0
    while done < 3:
        a = tuple(int(v) for v in cands[rng.integers(len(cands))])
        lo = [max(a[i] - int(45 / sp[i]), 0) for i in range(3)]
        hi = [min(a[i] + int(45 / sp[i]) + 1, ct.shape[i]) for i in range(3)]
        sl = tuple(slice(l, h) for l, h in zip(lo, hi))
        mcp = MCP_Geometric(np.where(pv[sl], 1.0, np.inf), sampling=tuple(sp))
        cum, _ = mcp.find_costs([tuple(a[i] - lo[i] for i in range(3))])
        ok = np.argwhere((cum > 25) & (cum < 35) & (depth[sl] >= 1.0))
        if not len(ok):
            continue
        lb = tuple(ok[rng.integers(len(ok))])
        b = tuple(int(lb[i] + lo[i]) for i in range(3))
        seg = np.zeros(pv[sl].shape, bool)
        seg[tuple(np.array(mcp.traceback(lb)).T)] = True
        deleted = np.zeros(ct.shape, bool)
        deleted[sl] = (ndimage.distance_transform_edt(~seg, sampling=sp) <= 6) & pv[sl]
        work = labels.copy()
        work[deleted] = 1
        plan = plan_trace(ct, work, sp, a, b, 2, rule="liver")
        assert pv[tuple(plan.path.T)].mean() >= 0.9
        apply_trace(work, plan, ct)
        added = (work == 2) & ((labels != 2) | deleted)          # what the trace painted
        spill = added & ~deleted
        assert spill.sum() <= 0.3 * deleted.sum()
        assert dice(added, deleted) >= 0.5
        done += 1
