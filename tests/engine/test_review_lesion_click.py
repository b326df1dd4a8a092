"""Lesion from a click (engine.review.lesion_click): phantom lesions (missed by the labels: set to
parenchyma) come back from one click at Dice >= 0.85; the sensitivity moves the edge; bad clicks get a
sentence and change nothing."""
from __future__ import annotations

import numpy as np
import pytest

from review_phantoms import build, dice, lesion_voxels

from engine.case_session import CaseSession
from engine.review.lesion_click import LesionClickError, apply_lesion, plan_lesion


@pytest.fixture(scope="module", params=[3, 5], ids=["seed3", "seed5"])
def phantom(request):
    return build(seed=request.param)[0]


def test_lesion_from_one_click(phantom):
    case = phantom
    missed = case.labels.copy()
    missed[missed == 5] = 1
    checked = 0
    for i, les in enumerate(case.provenance.extra["lesions"]):
        if les["diameter_mm"] < 8:
            continue     # 5-6 mm lesions: Dice 0.56-0.86 (README, "Vessel trace and lesion from a click")
        click, truth = lesion_voxels(case, i)
        labels = missed.copy()
        plan = plan_lesion(case.image, labels, case.geometry.spacing, click)
        assert apply_lesion(labels, plan) is not None
        got = labels == 5
        assert dice(got, truth) >= 0.85, (i, les, dice(got, truth))
        checked += 1
    assert checked >= 3


def test_sensitivity_moves_the_edge_and_reshapes_a_lesion(phantom):
    case = phantom
    i = max(range(len(case.provenance.extra["lesions"])),
            key=lambda k: case.provenance.extra["lesions"][k]["diameter_mm"])
    click, truth = lesion_voxels(case, i)
    sp = case.geometry.spacing
    low = plan_lesion(case.image, case.labels, sp, click, sensitivity=0.0)
    high = plan_lesion(case.image, case.labels, sp, click, sensitivity=0.9)
    assert low.voxels < high.voxels
    assert low.threshold_hu < high.threshold_hu
    # clicked on an existing lesion: the new shape replaces it (a smaller one gives parenchyma back)
    s = CaseSession(journal=False)
    s.open_case(case.copy())
    start = s.case.labels.copy()
    e = s.commit("lesion_click", "Lesion from a click", apply_lesion(s.case.labels, low))
    assert e is not None and e.kind == "lesion_click"
    assert (s.case.labels == 5).sum() <= (start == 5).sum()
    assert (s.case.labels[truth] == 1).any()
    s.undo()
    assert np.array_equal(s.case.labels, start)


def test_bad_clicks_give_words_and_paint_nothing(phantom):
    case = phantom
    sp = case.geometry.spacing
    labels = case.labels.copy()
    air = tuple(int(v) for v in np.argwhere((labels == 0) & (case.image < -900))[0])
    fat = tuple(int(v) for v in np.argwhere((labels == 0) & (case.image > -200) & (case.image < 0))[0])
    vessel = tuple(int(v) for v in np.argwhere(labels == 3)[len(np.argwhere(labels == 3)) // 2])
    from scipy import ndimage
    deep = ndimage.distance_transform_edt(labels == 1, sampling=sp)
    liver = tuple(int(v) for v in np.unravel_index(int(np.argmax(deep)), deep.shape))
    for click, words in ((air, "on air"), (fat, "outside the liver"), (vessel, "on a vessel"),
                         (liver, "looks like the liver"), ((500, 0, 0), "outside the image")):
        with pytest.raises(LesionClickError, match=words):
            plan_lesion(case.image, labels, sp, click)
    assert np.array_equal(labels, case.labels)


def test_real_ircadb_tumour_from_one_click(real):
    """IRCADb 1.17's first tumour (85.6 mL, heterogeneous: necrotic core ~25 HU, parts as bright as the liver),
    missed by the labels, from one click at its deepest point. Measured: Dice 0.65 at the default sensitivity
    (0.62 at 0.3; at 0.7 the region leaks and is refused) — the expert's mask holds parts a threshold cannot
    tell from the liver; the README reports it."""
    import SimpleITK as sitk
    from scipy import ndimage

    folder = real("3dircadb1.17")
    img = sitk.ReadImage(str(folder / "PATIENT_DICOM.nii.gz"))
    ct = sitk.GetArrayFromImage(img)
    sp = img.GetSpacing()[::-1]
    mask = {k: sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "masks" / f"{k}.nii.gz"))) > 0
            for k in ("liver", "livertumor1", "portalvein", "venoussystem")}
    labels = np.zeros(ct.shape, np.uint8)
    labels[mask["liver"]] = 1
    labels[mask["portalvein"] & mask["liver"]] = 2
    labels[mask["venoussystem"] & mask["liver"]] = 3
    tumour = mask["livertumor1"]
    sl = ndimage.find_objects(tumour.astype(np.uint8))[0]
    depth = ndimage.distance_transform_edt(tumour[sl], sampling=sp)
    click = tuple(int(v) + s.start for v, s in zip(np.unravel_index(np.argmax(depth), depth.shape), sl))
    plan = plan_lesion(ct, labels, sp, click)
    assert apply_lesion(labels, plan) is not None
    got = labels == 5
    assert not (got & ~mask["liver"]).any()
    assert dice(got, tumour) >= 0.6, dice(got, tumour)


def test_fast_opening_and_hole_filling_equal_scipys():
    """The shift-based opening and the cc3d hole filling (faster on a 10 M-voxel box) give scipy's result."""
    from scipy import ndimage

    from engine.review.lesion_click import _fill_holes, _open6

    rng = np.random.default_rng(0)
    cross = ndimage.generate_binary_structure(3, 1)
    for _ in range(20):
        m = ndimage.gaussian_filter(rng.random((23, 31, 17)), 1.5) > 0.5
        assert np.array_equal(_open6(m), ndimage.binary_opening(m, structure=cross))
        assert np.array_equal(_fill_holes(m), ndimage.binary_fill_holes(m))
