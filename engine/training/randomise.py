"""Domain randomisation of v2 phantoms for training (in the spirit of SynthSeg).

A network trained on phantoms with one exact density per organ learns the density. Each randomised case
is a v2 phantom (engine.phantom_v2: the same seeded anatomy) drawn with

- contrast timing ``t`` from late arterial (0) to portal venous (1), which moves every enhancing
  structure together (aorta 280 -> 150 HU, portal vein 130 -> 180, hepatic veins 70 -> 160, IVC 80 -> 140,
  liver 75 -> 110, spleen 130 -> 115, kidney cortex 220 -> 170, medulla 90 -> 150, pancreas 120 -> 95),
  and around those means per-structure densities drawn from wide ranges (+-20 to +-40 HU; a steatotic
  liver 25-80 HU; lesion core 15-80 HU below the liver, rim 0-50 HU above its core);
- the scanner and dose: image noise SD 5-40 HU (log-uniform), Gaussian blur sigma 0.4-2.2 mm;
- slice thickness 0.6-5 mm (log-uniform): the phantom is rendered with slices of that thickness (the
  slice profile blurs along z) and resampled to the training grid (image linear, labels nearest), as a
  real series is before nnU-Net sees it;
- partial fields of view (probability 0.35 each): a reconstruction circle of 250-340 mm diameter that
  cuts the body (outside it -1024 HU, no labels), and a scan range that starts or ends inside the liver.

Everything is drawn from ``numpy.random.default_rng([seed, 90, rand_seed])``: the same (seed, rand_seed)
gives the same case; the draws are written into the case's provenance (``extra["randomisation"]``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..case import Case
from ..geometry import Geometry
from ..phantom_v2 import Appearance, liver_is_steatotic, make_phantom_v2

#: What the builder varies and over which ranges (written into the dataset description).
RANDOMISATION_RANGES = {
    "contrast_timing": "late arterial (0) to portal venous (1), uniform",
    "per_structure_hu": "timing-dependent means +-20 to +-40 HU; steatotic liver 25-80 HU (p 0.2)",
    "noise_sd_hu": (5.0, 40.0),
    "blur_sigma_mm": (0.4, 2.2),
    "slice_thickness_mm": (0.6, 5.0),
    "partial_fov_probability": 0.35,
    "fov_circle_diameter_mm": (250.0, 340.0),
    "scan_range_cut_probability": 0.35,
}

DESCRIPTION = ("Phantoms v2 (engine.phantom_v2) with domain randomisation (engine.training.randomise): contrast "
               "timing late arterial to portal venous, per-structure densities from wide ranges, noise SD 5-40 HU, "
               "blur 0.4-2.2 mm, slice thickness 0.6-5 mm resampled to the training grid, partial fields of view "
               "(p 0.35 circle cut, p 0.35 scan range inside the liver)")


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def draw_appearance(rng: np.random.Generator, steatotic: bool) -> tuple[Appearance, float]:
    """(appearance, contrast timing t) from the randomisation's ranges."""
    t = float(rng.uniform(0.0, 1.0))
    j = lambda mean, half: float(mean + rng.uniform(-half, half))  # noqa: E731
    app = Appearance(
        liver=j(_lerp(75, 110, t), 20), spleen=j(_lerp(130, 115, t), 25),
        kidney_cortex=j(_lerp(220, 170, t), 35), kidney_medulla=j(_lerp(90, 150, t), 25),
        pancreas=j(_lerp(120, 95, t), 20), bowel_wall=j(_lerp(110, 100, t), 30),
        stomach_wall=j(_lerp(105, 100, t), 25), myocardium=j(110, 30), aorta=j(_lerp(280, 150, t), 40),
        portal_vein=j(_lerp(130, 180, t), 25), hepatic_veins=j(_lerp(70, 160, t), 25), ivc=j(_lerp(80, 140, t), 30),
        gallbladder=j(15, 20), fat=j(-100, 30), muscle=j(52, 22), bone_cortex=j(575, 325),
        lesion_delta=-float(rng.uniform(15, 80)), rim_delta=float(rng.uniform(0, 50)),
        noise_sd=float(math.exp(rng.uniform(math.log(5.0), math.log(40.0)))), blur_mm=float(rng.uniform(0.4, 2.2)),
        phase=f"timing {t:.2f} (0 late arterial, 1 portal venous)")
    app.blood_pool = j(app.aorta, 30)
    if steatotic:
        app.liver = float(rng.uniform(25, 80))
    return app, t


def randomised_phantom(seed: int, shape: Sequence[int] = (96, 128, 128),
                       spacing: Sequence[float] = (2.5, 2.5, 2.5), rand_seed: int = 0,
                       lesion_appearances: bool = True) -> Case:
    """The v2 phantom of ``seed`` on the grid (shape, spacing), drawn with randomised appearance and
    acquisition (see the module text)."""
    import SimpleITK as sitk

    shape = tuple(int(v) for v in shape)
    spacing = tuple(float(v) for v in spacing)
    rng = np.random.default_rng([int(seed), 90, int(rand_seed)])
    steatotic = liver_is_steatotic(seed)
    app, timing = draw_appearance(rng, steatotic)
    slice_mm = float(math.exp(rng.uniform(math.log(0.6), math.log(5.0))))
    nz_native = int(math.ceil(shape[0] * spacing[0] / slice_mm)) + 2
    native_spacing = (slice_mm, spacing[1], spacing[2])
    native = make_phantom_v2(seed, (nz_native, shape[1], shape[2]), native_spacing, appearance=app,
                             lesion_appearances=lesion_appearances)
    img = native.image.astype(np.float32)
    # the slice profile: a thick slice integrates ~its thickness along z (FWHM -> sigma)
    if slice_mm > app.blur_mm * 2.355:
        from scipy.ndimage import gaussian_filter1d
        extra = math.sqrt(max((slice_mm / 2.355) ** 2 - app.blur_mm ** 2, 0.0)) / slice_mm
        img = gaussian_filter1d(img, extra, axis=0, truncate=3.0)
    # resample to the training grid, centred where the native grid is
    g = native.geometry
    centre = np.array(g.origin) + (np.array(g.shape[::-1]) - 1) / 2.0 * np.array(g.spacing[::-1])
    origin = centre - (np.array(shape[::-1]) - 1) / 2.0 * np.array(spacing[::-1])
    anat_geo = Geometry(shape=shape, spacing=spacing, origin=tuple(float(v) for v in np.round(origin, 4)))
    src = sitk.GetImageFromArray(img)
    native.geometry.apply_to(src)
    lab = sitk.GetImageFromArray(native.labels)
    native.geometry.apply_to(lab)
    ref = sitk.Image(shape[2], shape[1], shape[0], sitk.sitkFloat32)
    anat_geo.apply_to(ref)
    img_t = sitk.GetArrayFromImage(sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, -1024.0))
    lab_t = sitk.GetArrayFromImage(sitk.Resample(lab, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0,
                                                 sitk.sitkUInt8))
    geo = anat_geo
    fov: dict = {}
    if rng.uniform() < RANDOMISATION_RANGES["partial_fov_probability"]:
        d = float(rng.uniform(*RANDOMISATION_RANGES["fov_circle_diameter_mm"]))
        cx, cy = float(rng.uniform(-25, 25)), float(rng.uniform(-15, 15))
        xs = geo.origin[0] + geo.spacing[2] * np.arange(shape[2])
        ys = geo.origin[1] + geo.spacing[1] * np.arange(shape[1])
        out = np.hypot(xs[None, :] - cx, ys[:, None] - cy) > d / 2
        img_t[:, out] = -1024.0
        lab_t[:, out] = 0
        fov["circle_diameter_mm"] = round(d, 1)
        fov["circle_centre_xy_mm"] = [round(cx, 1), round(cy, 1)]
    if rng.uniform() < RANDOMISATION_RANGES["scan_range_cut_probability"]:
        zl = np.flatnonzero((lab_t > 0).any(axis=(1, 2)))
        if zl.size > 8:
            keep = max(int(0.6 * shape[0]), 16)
            cut = int(rng.uniform(0.2, 0.7) * (zl[-1] - zl[0])) + int(zl[0])
            if rng.uniform() < 0.5:      # the scan ends inside the liver (its dome is missing)
                b = max(cut, min(keep, shape[0]))
                a = max(b - keep, 0)
            else:                         # the scan starts inside the liver
                a = min(cut, max(shape[0] - keep, 0))
                b = min(a + keep, shape[0])
            if b - a >= 16:
                img_t, lab_t = img_t[a:b], lab_t[a:b]
                o = list(geo.origin)
                o[2] += a * geo.spacing[0]
                geo = Geometry(shape=(b - a, shape[1], shape[2]), spacing=geo.spacing, origin=tuple(o))
                fov["scan_range_slices"] = [a, b]
    image = np.clip(np.rint(img_t), -1024, 3071).astype(np.int16)
    prov = native.provenance
    prov.extra["randomisation"] = {"rand_seed": int(rand_seed), "contrast_timing": round(timing, 3),
                                   "slice_thickness_mm": round(slice_mm, 3), "noise_sd_hu": round(app.noise_sd, 2),
                                   "blur_mm": round(app.blur_mm, 3), "partial_fov": fov}
    prov.series_description = "Synthetic CT (LiverPlan phantom v2, domain-randomised)"
    return Case(image=image, geometry=geo, labels=lab_t.astype(np.uint8), provenance=prov,
                name=f"phantom_v2r_{int(seed):03d}")
