"""The numba Lee thinning (metrics._lee) gives scikit-image's skeleton voxel for voxel, and clDice values
are unchanged by it: analytic shapes, random blobs and noise, phantom vessels, edge cases."""
import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from metrics import centerline as C
from shapes import ball, blob, hollow_sphere, torus, tube, vessel_tree_with_loops

pytest.importorskip("numba", reason="numba is not installed: clDice uses scikit-image's thinning")
from metrics import _lee  # noqa: E402


@pytest.fixture(scope="module")
def phantom_labels():
    from engine.phantom import make_phantom
    return make_phantom(seed=1, shape=(48, 64, 64)).labels


def _shapes():
    out = {
        "tree_with_loops": vessel_tree_with_loops(),
        "torus": torus(),
        "hollow_sphere": hollow_sphere(),
        "ball": ball((25, 25, 25), (12, 12, 12), 9.5),
        "oblique_tube": tube((30, 34, 38), (3, 4, 5), (26, 29, 33), 3.2),
        "thin_tube": tube((20, 24, 24), (2, 12, 3), (17, 12, 20), 1.0),
        "flat_ellipsoid": ball((20, 40, 40), (10, 20, 20), 12, spacing=(3.0, 1.0, 1.0)),     # anisotropic
        "needle": ball((40, 12, 12), (20, 6, 6), 18, spacing=(1.0, 4.0, 4.0)),
        "cube_fills_image": np.ones((7, 9, 8), bool),                                    # touches every side
        "single_voxel": np.pad(np.ones((1, 1, 1), bool), 2),
        "single_voxel_image": np.ones((1, 1, 1), bool),
        "two_by_two_rod": np.pad(np.ones((8, 2, 2), bool), 2),
        "plate_one_slice_image": ball((1, 30, 30), (0, 15, 15), 11),                     # scikit-image's 2D loop
        "blob_one_slice_image": blob((1, 40, 40), 3, sigma=2.0),
        "line_one_row": np.ones((1, 1, 9), bool),
    }
    for s in range(8):
        b = blob((18 + s, 22, 20), s, sigma=1.5 + 0.5 * (s % 3))
        b[0, :, :] |= b[1, :, :]                                                         # touch the border
        out[f"blob{s}"] = b
        out[f"noise{s}"] = np.random.default_rng(100 + s).random((10, 12, 11)) < 0.45 + 0.03 * s
    return out


SHAPES = _shapes()


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_thin_equals_skimage(name):
    m = SHAPES[name]
    assert np.array_equal(_lee.thin(m), skeletonize(m))


def test_phantom_structures_equal_skimage(phantom_labels):
    for lab in (1, 2, 3, 4, 5):
        m = phantom_labels == lab
        assert m.any()
        assert np.array_equal(C.skeleton(m, use_cache=False), skeletonize(m)), f"label {lab}"


def test_empty_mask():
    z = np.zeros((6, 7, 8), bool)
    assert not _lee.thin(z).any() and _lee.thin(z).shape == z.shape
    assert not C.skeleton(z).any()


def test_one_slice_object_in_a_thicker_image_keeps_the_3d_loop():
    """A crop to the object's box must not switch scikit-image's 3D loop to its one-slice (2D) loop."""
    m = np.zeros((5, 30, 30), bool)
    m[2] = ball((1, 30, 30), (0, 15, 15), 11)[0]
    sk = skeletonize(m)
    assert not np.array_equal(skeletonize(m[2:3]), sk[2:3])     # the trap is real
    C.clear_cache()
    assert np.array_equal(C.skeleton(m), sk)
    assert np.array_equal(_lee.thin(m[2:3], planar=False), sk[2:3])


def test_installed_scikit_image_variant_is_recognised():
    assert _lee.installed_variant() in _lee.VARIANTS
    assert C.backend() == "numba"


def _slow_lee(m, order, full_recheck):
    """A plain transcription of scikit-image's loop (independent tests: scipy labelling for the simple
    point, the octant table for Euler invariance), used to check the variant not installed here."""
    img = np.pad(m, 1).astype(np.uint8)

    def nb(p, r, c):
        return [int(img[p + dp, r + dr, c + dc]) for dp in (-1, 0, 1) for dc in (-1, 0, 1) for dr in (-1, 0, 1)]

    def simple(n):
        cube = np.array(n, bool).reshape(3, 3, 3)      # (p, c, r) order; connectivity does not care
        cube[1, 1, 1] = False
        return ndi.label(cube, np.ones((3, 3, 3)))[1] <= 1

    def euler_ok(n):
        total = 0
        for octant in _lee.OCTANTS:
            idx = 1
            for j, k in enumerate(octant):
                if n[k]:
                    idx |= 1 << (7 - j)
            total += _lee.EULER_LUT[idx]
        return total == 0

    def deletable(n):
        return sum(n) != 2 and euler_ok(n) and simple(n)

    step = {1: (0, 0, -1), 2: (0, 0, 1), 3: (0, 1, 0), 4: (0, -1, 0), 5: (1, 0, 0), 6: (-1, 0, 0)}
    dirs = [step[b] for b in order][: 4 if m.shape[0] == 1 else 6]
    unchanged = 0
    while unchanged < len(dirs):
        unchanged = 0
        for dp, dr, dc in dirs:
            cands = [(p, r, c) for p, r, c in np.argwhere(img)
                     if img[p + dp, r + dr, c + dc] == 0 and deletable(nb(p, r, c))]
            changed = False
            for p, r, c in cands:
                n = nb(p, r, c)
                if deletable(n) if full_recheck else simple(n):
                    img[p, r, c] = 0
                    changed = True
            if not changed:
                unchanged += 1
    return img[1:-1, 1:-1, 1:-1].astype(bool)


@pytest.mark.parametrize("variant", sorted(_lee.VARIANTS))
def test_every_variant_equals_a_plain_transcription(variant):
    order, full = _lee.VARIANTS[variant]
    cases = [np.array([[[1, 1], [1, 0]]], bool), np.ones((3, 4, 5), bool), blob((9, 10, 8), 2, sigma=1.5),
             np.random.default_rng(7).random((6, 7, 8)) < 0.55, tube((10, 12, 12), (2, 3, 3), (8, 9, 8), 1.6)]
    for m in cases:
        assert np.array_equal(_lee.thin(m, variant=variant), _slow_lee(m, order, full))


def test_cldice_values_unchanged_by_the_fast_thinning(phantom_labels, monkeypatch):
    ref = phantom_labels == 2
    pred = ndi.binary_dilation(ref) if ref.sum() < 5000 else ndi.binary_erosion(ref)
    pred = np.roll(pred, 1, axis=1) | (phantom_labels == 3)
    C.clear_cache()
    fast = C.cldice(pred, ref)
    monkeypatch.setattr(C, "USE_NUMBA", False)
    C.clear_cache()
    slow = C.cldice(pred, ref)
    assert C.backend() == "scikit-image"
    C.clear_cache()
    assert fast == slow and 0 < fast.cldice < 1 and not math.isnan(fast.cldice)


def test_threaded_skeletons_equal_skimage(monkeypatch):
    monkeypatch.setattr(C, "THREAD_MIN_VOXELS", 0)
    a, b = vessel_tree_with_loops(), torus((20, 48, 48))
    C.clear_cache()
    sa, sb, sa2 = C.skeletons([a, b, a])
    assert np.array_equal(sa, skeletonize(a)) and np.array_equal(sb, skeletonize(b))
    assert np.array_equal(sa2, sa)


def test_cache_is_keyed_by_box_content_and_translation_safe():
    m = np.zeros((30, 40, 40), bool)
    b3 = SHAPES["blob3"]
    m[3:3 + b3.shape[0], 5:5 + b3.shape[1], 4:4 + b3.shape[2]] = b3
    shifted = np.roll(m, (5, 7, 9), axis=(0, 1, 2))
    C.clear_cache()
    a = C.skeleton(m)
    b = C.skeleton(shifted)              # same box content: served from the cache, placed at the new box
    assert np.array_equal(a, skeletonize(m)) and np.array_equal(b, skeletonize(shifted))
    assert np.array_equal(np.roll(a, (5, 7, 9), axis=(0, 1, 2)), b)
    C.clear_cache()
