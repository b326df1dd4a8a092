"""clDice (Shit et al. 2021): formula, reference-implementation equality, the empty-skeleton rule."""
import math

import numpy as np
import pytest
from skimage.morphology import skeletonize

from metrics import centerline as C
from shapes import ball, tube, vessel_tree_with_loops


def reference_cldice(v_p, v_l):
    """jocpae/clDice cldice.py, 3D branch."""
    def cl_score(v, s):
        return np.sum(v * s) / np.sum(s)
    tprec = cl_score(v_p, skeletonize(v_l))
    tsens = cl_score(v_l, skeletonize(v_p))
    return 2 * tprec * tsens / (tprec + tsens)


def test_identical_masks_score_one():
    m = vessel_tree_with_loops()
    assert C.cldice(m, m).cldice == 1.0


def test_equals_reference_implementation():
    ref = vessel_tree_with_loops()
    pred = np.roll(vessel_tree_with_loops(n_loops=1), 1, axis=2)
    pred |= tube(ref.shape, (10, 5, 5), (10, 40, 5), 1.5)        # a false branch
    r = C.cldice(pred, ref)
    assert r.cldice == pytest.approx(reference_cldice(pred, ref), rel=1e-12)
    assert 0 < r.cldice < 1 and r.reason == ""


def test_a_structure_in_one_slice_of_a_volume_matches_the_reference_in_the_suite():
    # The suite crops to the structures' box; a box one slice thick must still be thinned as part of a
    # volume (skimage's 3D loop), not as a 2D image — lesions lying in one 5 mm slice are common.
    from metrics.suite import evaluate_case

    p = np.zeros((9, 30, 40), np.uint8)
    r = np.zeros_like(p)
    p[4, 10:15, 5:25] = 1
    p[4, 10:25, 5:10] = 1                 # an L
    r[4, 10:15, 6:26] = 1
    expected = reference_cldice(p.astype(bool), r.astype(bool))
    assert C.cldice(p.astype(bool), r.astype(bool)).cldice == pytest.approx(expected, rel=1e-12)
    got = evaluate_case(p, r, (5.0, 0.7, 0.7), labels={"s": 1}, metrics=["cldice"])["s"]["cldice"]
    assert got == pytest.approx(expected, rel=1e-12), (got, expected)


@pytest.mark.parametrize("use_numba", [True, False])
def test_component_wise_skeleton_equals_skimage(use_numba, monkeypatch):
    monkeypatch.setattr(C, "USE_NUMBA", use_numba)
    m = vessel_tree_with_loops() | ball((40, 48, 48), (8, 8, 40), 4) | ball((40, 48, 48), (34, 40, 8), 3)
    m[20, 5:9, 5:12] = True         # a one-slice component: the fallback's per-component crop keeps the 3D loop
    C.clear_cache()
    assert np.array_equal(C.skeleton(m), skeletonize(m))
    C.clear_cache()


def test_two_by_two_rod_is_undefined_not_zero_or_one():
    rod = np.zeros((12, 8, 8), bool)
    rod[2:10, 3:5, 3:5] = True
    assert not skeletonize(rod).any()            # Lee thinning deletes it entirely
    r = C.cldice(rod, rod)
    assert math.isnan(r.cldice)
    assert "skeleton is empty" in r.reason


def test_empty_masks():
    m = vessel_tree_with_loops()
    z = np.zeros_like(m)
    assert C.cldice(z, m).cldice == 0.0 and C.cldice(m, z).cldice == 0.0
    assert math.isnan(C.cldice(z, z).cldice)


def test_worker_process_skeletons_equal_in_process(monkeypatch):
    """The scikit-image fallback's worker processes (used when numba is unavailable)."""
    m = vessel_tree_with_loops()
    monkeypatch.setattr(C, "USE_NUMBA", False)
    monkeypatch.setattr(C, "PROCESS_MIN_VOXELS", 0)
    C.clear_cache()
    try:
        sk = C.skeletons([m, ~m & ball(m.shape, (20, 24, 24), 6.0)], processes=True)
    finally:
        C.shutdown_pool()
    assert np.array_equal(sk[0], skeletonize(m))
    assert np.array_equal(sk[1], skeletonize(~m & ball(m.shape, (20, 24, 24), 6.0)))


def test_cache_returns_equal_copies():
    m = vessel_tree_with_loops()
    C.clear_cache()
    a = C.skeleton(m)
    a[...] = False                      # a caller scribbling on its result must not corrupt the cache
    assert np.array_equal(C.skeleton(m), skeletonize(m))


def test_without_numba_clDice_falls_back_to_scikit_image():
    """A machine without numba still gets identical clDice values (scikit-image thinning)."""
    import subprocess
    import sys

    from realdata import REPO
    code = ("import sys; sys.modules['numba'] = None\n"
            "import numpy as np\n"
            "sys.path.insert(0, 'tests/metrics')\n"
            "from shapes import vessel_tree_with_loops\n"
            "from skimage.morphology import skeletonize\n"
            "import metrics._lee as L\n"
            "from metrics import centerline as C\n"
            "m = vessel_tree_with_loops()\n"
            "assert not L.HAVE_NUMBA and C.backend() == 'scikit-image'\n"
            "assert np.array_equal(C.skeleton(m), skeletonize(m))\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
