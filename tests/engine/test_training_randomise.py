"""Domain randomisation in the training data builder (engine.training.randomise, phantom_cohort):
it applies what it says, over a batch, reproducibly."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from engine.errors import InputError
from engine.labels import Label
from engine.training.phantoms import phantom_cohort
from engine.training.randomise import DESCRIPTION, randomised_phantom

SHAPE, SPACING = (40, 48, 48), (6.0, 6.67, 6.67)


@pytest.fixture(scope="module")
def batch():
    return [randomised_phantom(s, SHAPE, SPACING, rand_seed=0) for s in range(2000, 2016)]


def test_reproducible_from_seed_and_rand_seed(batch):
    again = randomised_phantom(2003, SHAPE, SPACING, rand_seed=0)
    assert np.array_equal(again.image, batch[3].image) and np.array_equal(again.labels, batch[3].labels)
    other = randomised_phantom(2003, SHAPE, SPACING, rand_seed=1)
    assert not np.array_equal(other.image[: min(len(other.image), len(again.image))],
                              again.image[: min(len(other.image), len(again.image))])


def test_densities_and_contrast_timing_vary_over_the_batch(batch):
    rnd = [c.provenance.extra["randomisation"] for c in batch]
    timing = [r["contrast_timing"] for r in rnd]
    assert min(timing) < 0.25 and max(timing) > 0.75
    liver = [np.median(c.image[ndi.binary_erosion(c.labels == Label.PARENCHYMA)]) for c in batch]
    assert np.ptp(liver) > 40, liver
    # late arterial: the hepatic veins are barely enhanced; portal venous: well above the liver
    hv_minus_liver = []
    for c in batch:
        hv = c.labels == Label.HEPATIC_VEINS
        if hv.sum() >= 3:
            hv_minus_liver.append((c.provenance.extra["randomisation"]["contrast_timing"],
                                   float(np.median(c.image[hv]) - np.median(c.image[c.labels == Label.PARENCHYMA]))))
    early = [d for t, d in hv_minus_liver if t < 0.35]
    late = [d for t, d in hv_minus_liver if t > 0.65]
    assert early and late and np.mean(late) > np.mean(early) + 15, hv_minus_liver


def test_noise_follows_the_drawn_dose(batch):
    drawn, measured = [], []
    for c in batch:
        # noise in the subcutaneous fat / muscle is hard to isolate; the liver interior after removing its
        # smooth part (a 3x3x3 median) is dominated by the image noise
        liver = ndi.binary_erosion(c.labels == Label.PARENCHYMA, iterations=1)
        if liver.sum() < 50:
            continue
        img = c.image.astype(np.float32)
        resid = img - ndi.median_filter(img, size=3)
        drawn.append(c.provenance.extra["randomisation"]["noise_sd_hu"])
        measured.append(float(np.std(resid[liver])))
    assert max(drawn) / min(drawn) > 3
    rho = np.corrcoef(np.argsort(np.argsort(drawn)), np.argsort(np.argsort(measured)))[0, 1]
    assert rho > 0.6, (drawn, measured)


def test_slice_thickness_and_fields_of_view(batch):
    rnd = [c.provenance.extra["randomisation"] for c in batch]
    thick = [r["slice_thickness_mm"] for r in rnd]
    assert all(0.6 <= t <= 5.0 for t in thick) and min(thick) < 1.2 and max(thick) > 3.0
    circles = [(c, r["partial_fov"]) for c, r in zip(batch, rnd) if "circle_diameter_mm" in r["partial_fov"]]
    ranges = [c for c, r in zip(batch, rnd) if "scan_range_slices" in r["partial_fov"]]
    assert 1 <= len(circles) <= 12 and 1 <= len(ranges) <= 12
    for c, fov in circles:
        g = c.geometry
        xs = g.origin[0] + g.spacing[2] * np.arange(g.shape[2])
        ys = g.origin[1] + g.spacing[1] * np.arange(g.shape[1])
        cx, cy = fov["circle_centre_xy_mm"]
        out = np.hypot(xs[None, :] - cx, ys[:, None] - cy) > fov["circle_diameter_mm"] / 2 + 0.1
        assert np.all(c.image[:, out] == -1024) and not np.any(c.labels[:, out])
    for c in ranges:
        assert c.image.shape[0] < SHAPE[0] and c.labels.shape == c.image.shape
    full = [c for c in batch if c.image.shape[0] == SHAPE[0]]
    assert full and all(c.image.shape[1:] == SHAPE[1:] for c in batch)


def test_cohort_builder_applies_it_and_refuses_it_on_v1(tmp_path):
    cohort = phantom_cohort(2, first_seed=2000, shape=SHAPE, spacing=SPACING, version=2, randomise=True)
    case = cohort[0][1]()
    assert "randomisation" in case.provenance.extra and case.provenance.extra["phantom_version"] == 2
    plain = phantom_cohort(1, first_seed=2000, shape=SHAPE, spacing=SPACING, version=2)[0][1]()
    assert "randomisation" not in plain.provenance.extra
    with pytest.raises(InputError, match="version 2"):
        phantom_cohort(2, version=1, randomise=True)


def test_dataset_description_states_the_randomisation(tmp_path):
    from engine.training.dataset import write_nnunet_dataset
    from engine.training.pipeline import TrainOptions, _dataset_description

    opts = TrainOptions(work_dir=tmp_path, phantoms=3, phantom_version=2, phantom_randomise=True,
                        training_data="3 phantoms")
    desc = _dataset_description(opts)
    assert desc.startswith("3 phantoms; ") and DESCRIPTION in desc
    info = write_nnunet_dataset(tmp_path / "raw", tmp_path / "pre", 977, "Rand",
                                phantom_cohort(3, 2000, SHAPE, SPACING, version=2, randomise=True),
                                description=desc)
    d = json.loads((info.raw_dir / "dataset.json").read_text())
    assert "slice thickness 0.6-5 mm" in d["description"] and "contrast timing" in d["description"]
    with pytest.raises(InputError, match="version 2"):
        TrainOptions(work_dir=tmp_path, phantoms=3, phantom_randomise=True).validate()
