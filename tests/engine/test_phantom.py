"""Synthetic phantoms: the anatomy a user (or a training run) relies on."""
from __future__ import annotations

import cc3d
import numpy as np
import pytest

from engine.errors import InputError
from engine.labels import Label
from engine.measure import measure
from engine.phantom import DEMO_N_LESIONS, demo_case, make_phantom

SMALL = (48, 64, 64)          # 5 mm voxels over the default field of view: fast


@pytest.fixture(scope="module")
def ph():
    return make_phantom(seed=3, shape=(96, 128, 128), n_lesions=4)


@pytest.fixture(scope="module")
def demo():
    return demo_case()


def test_all_five_structures_present_in_lps_case(ph):
    assert ph.image.dtype == np.int16 and ph.labels.dtype == np.uint8
    assert ph.image.shape == ph.labels.shape == (96, 128, 128)
    assert set(np.unique(ph.labels)) == {0, 1, 2, 3, 4, 5}
    assert ph.geometry.orientation_code() == "LPS"
    assert ph.provenance.source_format == "phantom" and ph.provenance.label_source == "phantom"
    assert ph.provenance.extra["seed"] == 3
    assert len(ph.provenance.extra["lesions"]) == 4
    for les in ph.provenance.extra["lesions"]:
        assert len(les["centre_lps_mm"]) == 3 and 3 <= les["diameter_mm"] <= 40


def test_liver_in_right_upper_abdomen(ph):
    g = ph.geometry
    liver = np.argwhere(ph.labels == Label.PARENCHYMA).mean(axis=0)
    body = np.argwhere(ph.image > -500).mean(axis=0)
    liver_lps, body_lps = g.index_to_physical(liver), g.index_to_physical(body)
    assert liver_lps[0] < body_lps[0] - 20          # patient right = low x in LPS
    spine = np.argwhere(ph.image > 400).mean(axis=0)
    assert g.index_to_physical(spine)[1] > liver_lps[1] + 30     # spine is posterior (higher y)
    ivc = g.index_to_physical(np.argwhere(ph.labels == Label.IVC).mean(axis=0))
    assert ivc[1] > liver_lps[1]                   # IVC behind the liver's centre


def test_hounsfield_units_are_portal_phase_like(ph):
    img, lab = ph.image, ph.labels
    med = {l: float(np.median(img[lab == l])) for l in range(1, 6)}
    assert 95 <= med[Label.PARENCHYMA] <= 115
    assert 140 <= med[Label.PORTAL_VEIN] <= 190
    assert 135 <= med[Label.HEPATIC_VEINS] <= 180
    assert 120 <= med[Label.IVC] <= 160
    assert 30 <= med[Label.CRLM] <= 80 and med[Label.CRLM] < med[Label.PARENCHYMA] - 25
    assert np.median(img[:, :3, :3]) < -900        # air in the corners
    from scipy.ndimage import binary_erosion

    core = binary_erosion(lab == Label.PARENCHYMA, iterations=2)    # away from partial-volume borders
    sd = float(np.std(img[core]))
    assert 8 <= sd <= 20                            # noise plus texture, not a flat fill
    assert img.min() >= -1024 and img.max() > 400  # bone present


def test_requested_lesion_counts_are_separate_components():
    for seed, n in ((0, 0), (1, 3), (2, 8)):
        c = make_phantom(seed=seed, shape=SMALL, n_lesions=n)
        got = cc3d.connected_components(c.labels == Label.CRLM, connectivity=26, return_N=True)[1]
        assert got == n == c.provenance.extra["n_lesions"], (seed, n, got)


def test_lesions_lie_inside_the_liver(ph):
    from scipy.ndimage import binary_dilation

    les = ph.labels == Label.CRLM
    ring = binary_dilation(les, iterations=1) & ~les
    around = ph.labels[ring]
    # A lesion is surrounded by liver (parenchyma, and at most some small vessel voxels): never air/fat.
    assert np.mean(np.isin(around, (Label.PARENCHYMA, Label.PORTAL_VEIN, Label.HEPATIC_VEINS))) > 0.98


def test_vessel_trees_are_mostly_connected(ph):
    for lab in (Label.PORTAL_VEIN, Label.HEPATIC_VEINS):
        cc, n = cc3d.connected_components(ph.labels == lab, connectivity=26, return_N=True)
        sizes = np.bincount(cc.ravel())[1:]
        assert sizes.max() / sizes.sum() > 0.6, (lab, n, sizes)


def test_deterministic_per_seed():
    a = make_phantom(seed=11, shape=SMALL)
    b = make_phantom(seed=11, shape=SMALL)
    c = make_phantom(seed=12, shape=SMALL)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.provenance.extra == b.provenance.extra
    assert not np.array_equal(a.labels, c.labels)


def test_same_anatomy_at_any_spacing(ph):
    coarse = make_phantom(seed=3, shape=SMALL, n_lesions=4)
    aniso = make_phantom(seed=3, shape=(96, 200, 200), spacing=(2.5, 1.6, 1.6), n_lesions=4)
    assert coarse.provenance.extra["lesions"] == ph.provenance.extra["lesions"] \
        == aniso.provenance.extra["lesions"]
    ref = measure(None, ph.labels, ph.geometry).value("liver.total_volume_ml")
    for other in (coarse, aniso):
        vol = measure(None, other.labels, other.geometry).value("liver.total_volume_ml")
        assert vol == pytest.approx(ref, rel=0.04)
    # Same patient coordinates: the liver's centre of mass agrees within a voxel or so.
    cm = [c.geometry.index_to_physical(np.argwhere(c.labels == Label.PARENCHYMA).mean(axis=0))
          for c in (ph, coarse, aniso)]
    assert np.abs(cm[0] - cm[1]).max() < 4 and np.abs(cm[0] - cm[2]).max() < 3


def test_small_field_of_view_is_centred_on_the_liver():
    c = make_phantom(seed=1, shape=(48, 96, 96), spacing=(2.5, 0.8, 0.8), n_lesions=1)
    assert c.geometry.spacing == (2.5, 0.8, 0.8)
    assert np.mean(c.labels == Label.PARENCHYMA) > 0.2
    # A thin slab cannot show every lesion: the case says which are missing, and the rest are there.
    slab = make_phantom(seed=1, shape=(4, 64, 64), spacing=(5.0, 0.7, 0.7), n_lesions=6)
    outside = slab.provenance.extra["lesions_outside_view"]
    assert outside and any("outside this field of view" in w for w in slab.provenance.warnings)
    seen = cc3d.connected_components(slab.labels == Label.CRLM, connectivity=26, return_N=True)[1]
    assert seen == 6 - len(outside)


def test_measured_total_liver_matches_the_drawn_liver(ph):
    r = measure(ph)
    assert r.value("liver.total_volume_ml") == pytest.approx(ph.provenance.extra["true_total_liver_ml"],
                                                             rel=0.01)
    assert r.value("crlm.count") == 4


def test_bad_requests_are_refused_in_words():
    with pytest.raises(InputError, match="lesions"):
        make_phantom(n_lesions=20, shape=SMALL)
    with pytest.raises(InputError, match="spacing"):
        make_phantom(shape=SMALL, spacing=(0, 1, 1))
    with pytest.raises(InputError, match="dimensions"):
        make_phantom(shape=(10, 10))


def test_demo_case_looks_like_a_ct_series(demo):
    assert demo.geometry.shape == (160, 256, 256)
    assert demo.provenance.extra["n_lesions"] == DEMO_N_LESIONS
    r = measure(demo)
    assert r.value("crlm.count") == DEMO_N_LESIONS
    vols = [l.volume_ml for l in r.lesions]
    assert vols[0] > 10 * vols[-1]                   # lesions of clearly different sizes
    assert 1000 < r.value("liver.total_volume_ml") < 2200
    again = demo_case()
    assert np.array_equal(again.labels, demo.labels) and np.array_equal(again.image, demo.image)


def test_same_phantom_whatever_the_thread_count():
    """Training data must be reproducible: BLAS/OpenMP thread counts must not change a single voxel."""
    import hashlib
    import os
    import subprocess
    import sys

    from realdata import REPO

    code = ("import hashlib, sys\nsys.path.insert(0, '.')\nfrom engine.phantom import make_phantom\n"
            "c = make_phantom(seed=5, shape=(48, 64, 64))\n"
            "print(hashlib.sha256(c.image.tobytes() + c.labels.tobytes()).hexdigest())\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    c = make_phantom(seed=5, shape=(48, 64, 64))
    assert out == hashlib.sha256(c.image.tobytes() + c.labels.tobytes()).hexdigest()


def test_lesion_sizes_asked_for_are_drawn_as_asked_or_refused():
    # a 25 mm lesion that did not fit was silently drawn at 16 mm: ground truth with a 9 mm error
    from engine.errors import InputError

    c = make_phantom(seed=21, shape=(48, 64, 64), lesion_diameters_mm=[25, 15, 10, 6])
    assert [l["diameter_mm"] for l in c.provenance.extra["lesions"]] == [25.0, 15.0, 10.0, 6.0]
    with pytest.raises(InputError, match="40 mm lesion does not fit"):
        make_phantom(seed=21, shape=(48, 64, 64), lesion_diameters_mm=[40] * 6)
