"""Distances in mm with anisotropic spacing: exact values on analytic shapes, equality with the peers."""
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial.distance import cdist

from metrics import distance as D
from shapes import ball, blob, cube

SP = (2.0, 0.7, 0.9)   # (z, y, x) mm, deliberately anisotropic


def brute_directed(a, b, spacing, structure=None, border_value=0):
    """Oracle: borders by scipy erosion, all pairwise distances."""
    st = structure if structure is not None else ndi.generate_binary_structure(3, 1)
    ba = a & ~ndi.binary_erosion(a, st, border_value=border_value)
    bb = b & ~ndi.binary_erosion(b, st, border_value=border_value)
    pa = np.argwhere(ba) * np.asarray(spacing)
    pb = np.argwhere(bb) * np.asarray(spacing)
    d = cdist(pa, pb)
    return d.min(1), d.min(0)


def test_offset_cubes_hausdorff_is_the_shift_in_mm():
    shape = (24, 24, 24)
    a = cube(shape, (4, 4, 4), (10, 10, 10))
    b = cube(shape, (7, 4, 4), (10, 10, 10))      # 3 slices along z at 2.0 mm
    assert D.hausdorff(a, b, SP) == pytest.approx(3 * 2.0, abs=1e-12)
    d_ab, d_ba = brute_directed(a, b, SP)
    assert D.hd95(a, b, SP) == pytest.approx(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)), abs=1e-12)
    assert D.hd95(a, b, SP, "pooled") == pytest.approx(np.percentile(np.r_[d_ab, d_ba], 95), abs=1e-12)
    assert D.assd(a, b, SP) == pytest.approx(np.r_[d_ab, d_ba].mean(), abs=1e-12)


def test_shift_along_x_uses_x_spacing():
    shape = (12, 12, 30)
    a = cube(shape, (2, 2, 2), (6, 6, 10))
    b = cube(shape, (2, 2, 6), (6, 6, 10))        # 4 voxels along x at 0.9 mm
    assert D.hausdorff(a, b, SP) == pytest.approx(4 * 0.9, abs=1e-12)


def test_concentric_spheres_hd_close_to_radius_difference():
    sp = (1.0, 1.0, 1.0)
    c = (20, 20, 20)
    a, b = ball((41, 41, 41), c, 15.0), ball((41, 41, 41), c, 10.0)
    assert abs(D.hausdorff(a, b, sp) - 5.0) <= 1.0
    assert abs(D.hd95(a, b, sp) - 5.0) <= 1.0


def test_identical_masks_are_zero():
    a = blob((20, 22, 24), 3)
    for v in D.HD95_VARIANTS:
        assert D.hd95(a, a, SP, v) == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_brute_force_on_random_blobs(seed):
    a = blob((18, 20, 22), seed)
    b = blob((18, 20, 22), seed + 10)
    d_ab, d_ba = brute_directed(a, b, SP)
    assert D.hd95(a, b, SP) == pytest.approx(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)), rel=1e-12)
    assert D.hausdorff(a, b, SP) == pytest.approx(max(d_ab.max(), d_ba.max()), rel=1e-12)


def test_empty_mask_policy():
    a = cube((10, 10, 10), (2, 2, 2), (3, 3, 3))
    z = np.zeros_like(a)
    for v in ("metrics_reloaded", "pooled", "surface"):
        assert D.hd95(z, a, SP, v) == math.inf
        assert D.hd95(a, z, SP, v) == math.inf
        assert math.isnan(D.hd95(z, z, SP, v))
    # seg-metrics scores an empty prediction 0 (flagged by evaluate_case, see test_suite)
    assert D.hd95(z, a, SP, "seg_metrics") == 0.0
    assert D.hausdorff(z, a, SP) == math.inf and math.isnan(D.assd(z, z, SP))


# ---------------------------------------------------------------- peers (installed in the dev venv)
@pytest.fixture(scope="module")
def pair():
    a = blob((26, 30, 28), 5)
    b = blob((26, 30, 28), 6)
    a[0, 5:15, 5:15] = True          # touches the image edge: edge conventions matter
    b[-1, 10:20, 3:9] = True
    return a, b


def test_default_equals_monai(pair):
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    a, b = pair
    ta, tb = torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m95 = compute_hausdorff_distance(ta, tb, include_background=True, percentile=95, spacing=list(SP)).item()
        mhd = compute_hausdorff_distance(ta, tb, include_background=True, spacing=list(SP)).item()
        mas = compute_average_surface_distance(ta, tb, include_background=True, symmetric=True,
                                               spacing=list(SP)).item()
    assert D.hd95(a, b, SP) == pytest.approx(m95, rel=1e-6)
    assert D.hausdorff(a, b, SP) == pytest.approx(mhd, rel=1e-6)
    assert D.assd(a, b, SP) == pytest.approx(mas, rel=1e-6)


def test_pooled_equals_medpy(pair):
    from medpy.metric.binary import hd95
    a, b = pair
    assert D.hd95(a, b, SP, "pooled") == pytest.approx(hd95(a, b, SP), rel=1e-12)


def test_surface_equals_deepmind(pair):
    import surface_distance as sd
    a, b = pair
    ref = sd.compute_robust_hausdorff(sd.compute_surface_distances(b, a, SP), 95)
    assert D.hd95(a, b, SP, "surface") == pytest.approx(ref, rel=1e-12)


def seg_metrics_hd95(lp, lt, spacing_zyx):
    """seg-metrics 1.2.8 computeQualityMeasures' HD95 lines (SimpleITK), for a package-free cross-check."""
    import SimpleITK as sitk
    sp = tuple(float(s) for s in spacing_zyx[::-1])
    P = sitk.GetImageFromArray(lp.astype(np.uint8)); P.SetSpacing(sp)
    T = sitk.GetImageFromArray(lt.astype(np.uint8)); T.SetSpacing(sp)
    rd = sitk.Abs(sitk.SignedMaurerDistanceMap(T > 0.5, squaredDistance=False, useImageSpacing=True))
    rs = sitk.LabelContour(T > 0.5, fullyConnected=True)
    pd = sitk.Abs(sitk.SignedMaurerDistanceMap(P > 0.5, squaredDistance=False, useImageSpacing=True))
    ps = sitk.LabelContour(P > 0.5, fullyConnected=True)
    s2r = sitk.GetArrayFromImage(sitk.Cast(rd, sitk.sitkFloat32) * sitk.Cast(ps, sitk.sitkFloat32))
    r2s = sitk.GetArrayFromImage(sitk.Cast(pd, sitk.sitkFloat32) * sitk.Cast(rs, sitk.sitkFloat32))
    nps = int(np.count_nonzero(sitk.GetArrayFromImage(ps)))
    nrs = int(np.count_nonzero(sitk.GetArrayFromImage(rs)))
    x = list(s2r[s2r != 0]) + [0.0] * (nps - int(np.count_nonzero(s2r)))
    y = list(r2s[r2s != 0]) + [0.0] * (nrs - int(np.count_nonzero(r2s)))
    return float(np.percentile(x + y, 95))


def test_seg_metrics_variant_equals_its_formula(pair):
    pytest.importorskip("SimpleITK")
    a, b = pair
    assert D.hd95(a, b, SP, "seg_metrics") == pytest.approx(seg_metrics_hd95(a, b, SP), rel=1e-5)


def test_variants_differ_on_the_same_case(pair):
    """The reason the variant is named in every table: they are not interchangeable."""
    a, b = pair
    vals = {v: D.hd95(a, b, SP, v) for v in D.HD95_VARIANTS}
    assert len({round(v, 6) for v in vals.values()}) >= 3
