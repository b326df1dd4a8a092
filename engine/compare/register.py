"""Register a follow-up scan onto the baseline inside the liver (SimpleITK's registration framework).

Fixed = baseline, moving = follow-up. The transform found maps a baseline point (LPS mm) to the same
tissue in the follow-up (ITK's convention: resampling the follow-up through it puts it on the baseline grid).

How (each step chosen for speed on a laptop CPU, with the liver masks to focus it):

1. each liver ("liver" = the filled outline of parenchyma + lesions, engine.measure.filled_liver_outline)
   is cropped with a margin of ``MARGIN_MM`` and resampled to isotropic ``spacing_mm`` voxels (3 mm);
2. the images registered are the livers' signed distance maps (Maurer, clipped to +/- ``CLIP_MM``): they
   do not depend on contrast timing, scanner or HU calibration, and a lesion that shrank or vanished
   does not pull on them;
3. translation from the liver centroids -> rigid (Euler 3D) -> affine (mean squares, multi-resolution,
   shrink 4-2-1 / 2-1) -> a dense deformation (symmetric-forces demons on the same distance maps, smoothed
   with a 6 mm Gaussian). A B-spline stage (LBFGSB) was tried first: > 2 minutes on the phantom crop here;
   demons take seconds;
4. the residual misalignment: distances between the two liver surfaces after registration (mean and 95th
   percentile, mm, both directions pooled) on a 1.5 mm grid;
5. refusals in words (:class:`RegistrationRefused`) when the result cannot be trusted.

Convention: ``progress(stage, done, total)`` and a cancel token (engine.progress).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..case import Case
from ..errors import InputError
from ..geometry import Geometry
from ..labels import Label
from ..progress import CancelToken, ProgressCallback, check, no_progress

log = logging.getLogger(__name__)

MARGIN_MM = 25.0
CLIP_MM = 30.0
#: The deformable stage: demons iterations and the Gaussian (mm) that keeps its field smooth.
DEMONS_ITERATIONS = 60
DEMONS_SIGMA_MM = 6.0
#: Then the same on the CT inside the liver (vessels line up), lesions masked.
INTERIOR_ITERATIONS = 40
INTERIOR_SIGMA_MM = 6.0
#: Below this a scan is taken to hold no liver label (a whole adult liver is ~1,000-2,500 mL).
MIN_LIVER_ML = 100.0
#: Liver volume ratio (follow-up / baseline) beyond which the change is more than chemotherapy explains:
#: chemotherapy-associated liver injury (steatosis, sinusoidal obstruction) and regeneration change the
#: volume by some 5-20 %; a major resection removes 30-75 %.
MIN_VOLUME_RATIO = 0.70
MAX_VOLUME_RATIO = 1.40
#: The residual (95th percentile of surface distances, mm) above which the registration is refused,
#: and the one above which it is accepted with a warning.
REFUSE_P95_MM = 10.0
WARN_P95_MM = 5.0
#: The correlation of the CT inside the (eroded) liver after registration below which the two scans are
#: taken to show different livers (vessels and lesions do not line up).
MIN_INTERIOR_CORRELATION = 0.35
#: The affine's volume change (determinant) or anisotropy (largest / smallest singular value) beyond which
#: the shapes differ more than one liver between two scans does.
MAX_AFFINE_ANISOTROPY = 1.35


class RegistrationRefused(InputError):
    """The two scans cannot be registered well enough to compare them; the message says why, in words.

    ``reason`` is a short key: "no_liver", "volume_change", "different_patient", "poor_fit"."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Registration:
    """The follow-up -> baseline registration and how good it is.

    transform: SimpleITK transform, baseline LPS point -> follow-up LPS point.
    residual_mean_mm / residual_p95_mm: distances between the two liver surfaces after registration.
    interior_correlation: Pearson correlation of the CT values inside the eroded baseline liver after
        registration (-1..1; same patient ~0.6-0.95).
    """

    transform: object
    baseline_geometry: Geometry
    followup_geometry: Geometry
    residual_mean_mm: float
    residual_p95_mm: float
    interior_correlation: float
    baseline_liver_ml: float
    followup_liver_ml: float
    affine_matrix: np.ndarray
    stages: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    # --- point mapping ----------------------------------------------------------------------------
    def to_followup(self, xyz) -> np.ndarray:
        """Baseline LPS points (..., 3) -> follow-up LPS points."""
        pts = np.asarray(xyz, float)
        flat = pts.reshape(-1, 3)
        out = np.array([self.transform.TransformPoint(tuple(map(float, p))) for p in flat])
        return out.reshape(pts.shape)

    def to_baseline(self, xyz, iterations: int = 30) -> np.ndarray:
        """Follow-up LPS points (..., 3) -> baseline LPS points (the inverse, by fixed-point iteration from
        the affine inverse; converges because the deformable part is small and smooth)."""
        pts = np.asarray(xyz, float)
        flat = pts.reshape(-1, 3)
        A = self.affine_matrix
        out = []
        for y in flat:
            # affine part only, for the start: y = A (x - c) + c + t  ->  solve for x
            x = np.linalg.solve(A[:3, :3], y - A[:3, 3])
            for _ in range(iterations):
                r = np.asarray(self.transform.TransformPoint(tuple(map(float, x)))) - y
                x = x - r
                if np.linalg.norm(r) < 1e-3:
                    break
            out.append(x)
        return np.asarray(out).reshape(pts.shape)

    def summary(self) -> dict:
        return {"method": "SimpleITK: liver distance maps, translation -> rigid -> affine -> demons displacement field",
                "residual_mean_mm": round(self.residual_mean_mm, 2),
                "residual_p95_mm": round(self.residual_p95_mm, 2),
                "interior_correlation": round(self.interior_correlation, 3),
                "baseline_liver_ml": round(self.baseline_liver_ml, 1),
                "followup_liver_ml": round(self.followup_liver_ml, 1),
                "stages": self.stages, "warnings": list(self.warnings), "seconds": round(self.seconds, 2)}


# ------------------------------------------------------------------------------------------------
def liver_mask(labels: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The liver as a clinician outlines it (parenchyma + lesions + the vessels inside), full grid, bool."""
    from ..measure import filled_liver_outline

    out = np.zeros(labels.shape, bool)
    filled, sl = filled_liver_outline(labels, tuple(float(s) for s in geometry.spacing))
    if filled.size:
        out[sl] = filled
    return out


def _sitk_from(array: np.ndarray, geometry: Geometry):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    geometry.apply_to(img)
    return img


def _crop_grid(mask: np.ndarray, geometry: Geometry, spacing_mm: float, margin_mm: float):
    """An isotropic reference image (SimpleITK) covering the mask's bounding box + margin, axis-aligned
    with ``geometry``."""
    import SimpleITK as sitk

    idx = np.argwhere(mask.any(axis=(1, 2)))[[0, -1], 0], np.argwhere(mask.any(axis=(0, 2)))[[0, -1], 0], \
        np.argwhere(mask.any(axis=(0, 1)))[[0, -1], 0]
    lo_zyx = np.array([a[0] for a in idx], float)
    hi_zyx = np.array([a[1] for a in idx], float)
    sp_xyz = np.asarray(geometry.spacing_xyz)
    lo_ijk = lo_zyx[::-1] * sp_xyz - margin_mm
    hi_ijk = hi_zyx[::-1] * sp_xyz + margin_mm
    size = np.maximum(2, np.ceil((hi_ijk - lo_ijk) / spacing_mm).astype(int) + 1)
    D = geometry.direction_matrix
    origin = np.asarray(geometry.origin) + D @ lo_ijk
    ref = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    ref.SetSpacing((spacing_mm,) * 3)
    ref.SetOrigin(tuple(float(v) for v in origin))
    ref.SetDirection(geometry.direction)
    return ref


def _resample(img, ref, transform=None, interp=None, default=0.0):
    import SimpleITK as sitk

    tx = transform if transform is not None else sitk.Transform()
    return sitk.Resample(img, ref, tx, interp if interp is not None else sitk.sitkLinear, default,
                         sitk.sitkFloat32)


def _distance_map(mask_img_float):
    import SimpleITK as sitk

    m = sitk.BinaryThreshold(mask_img_float, 0.5, 1e9, 1, 0)
    d = sitk.SignedMaurerDistanceMap(m, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return sitk.Clamp(sitk.Cast(d, sitk.sitkFloat32), sitk.sitkFloat32, -CLIP_MM, CLIP_MM)


def _centroid(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    zyx = np.argwhere(mask[::2, ::2, ::2]).mean(axis=0) * 2.0
    return geometry.index_to_physical(zyx)


def _run_stage(name, fixed, moving, transform, moving_initial, iterations, optimizer, progress, cancel,
               stage_no, n_stages, shrink=(2, 1), smooth=(1.0, 0.0)):
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    if optimizer == "lbfgsb":
        reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations,
                                 maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=4 * iterations)
    else:
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=0.01,
                                                     numberOfIterations=iterations, relaxationFactor=0.6,
                                                     gradientMagnitudeTolerance=1e-6)
        reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel(list(smooth))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    if moving_initial is not None:
        reg.SetMovingInitialTransform(moving_initial)
    reg.SetInitialTransform(transform, inPlace=True)
    total = iterations * len(shrink)
    count = [0]

    def tick():
        count[0] += 1
        if cancel is not None and cancel.cancelled:
            reg.StopRegistration()
        progress(f"Registering ({name})", min(count[0], total), total)

    reg.AddCommand(sitk.sitkIterationEvent, tick)
    reg.Execute(fixed, moving)
    check(cancel)
    return {"stage": name, "metric": float(reg.GetMetricValue()),
            "iterations": int(count[0]), "stop": reg.GetOptimizerStopConditionDescription()[:120]}


def _demons(fixed, moving, affine, field, stage: str, default: float, sigma_mm: float, iterations: int,
            progress, cancel):
    """Symmetric-forces demons between ``fixed`` and ``moving`` (the latter through ``affine`` first),
    starting from ``field`` (None: zero); a dense displacement field on the fixed crop, smoothed with a
    Gaussian of ``sigma_mm``. Returns (field, mean squared difference before, after)."""
    import SimpleITK as sitk

    warped = sitk.Resample(moving, fixed, affine, sitk.sitkLinear, default, sitk.sitkFloat32)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(1)
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(sigma_mm / fixed.GetSpacing()[0])
    demons.SetMaximumUpdateStepLength(2.0)
    if field is None:
        field = sitk.Image(fixed.GetSize(), sitk.sitkVectorFloat64)
        field.CopyInformation(fixed)

    def msd(f):
        img = sitk.Resample(warped, fixed, sitk.DisplacementFieldTransform(sitk.Image(f)), sitk.sitkLinear,
                            default, sitk.sitkFloat32)
        return float(np.mean(np.square(sitk.GetArrayViewFromImage(fixed) - sitk.GetArrayViewFromImage(img))))

    before = msd(field)
    for i in range(iterations):
        # one iteration per call so that cancel and progress are seen (the field carries the state)
        field = demons.Execute(fixed, warped, field)
        progress(f"Registering ({stage})", i + 1, iterations)
        check(cancel)
    return field, before, msd(field)


def _liver_ct(case: Case, mask: np.ndarray, ref):
    """The CT inside the liver on the crop grid, for the interior stage: HU clipped to -50..250, lesions
    painted with the parenchyma's median (a lesion that shrank or vanished must not pull the tissue
    around it), everything outside the liver -50."""
    import SimpleITK as sitk

    ct = sitk.GetArrayFromImage(_resample(_sitk_from(case.image.astype(np.float32), case.geometry), ref,
                                          default=-1000.0))
    inside = sitk.GetArrayFromImage(_resample(_sitk_from(mask.view(np.uint8), case.geometry), ref)) > 0.5
    lesion = sitk.GetArrayFromImage(_resample(_sitk_from((case.labels == Label.CRLM).view(np.uint8), case.geometry),
                                              ref)) > 0.2
    paren = case.image[case.labels == Label.PARENCHYMA]
    med = float(np.median(paren[::max(1, paren.size // 200_000)])) if paren.size else 100.0
    feat = np.where(inside, np.clip(ct, -50.0, 250.0), -50.0).astype(np.float32)
    feat[lesion & inside] = med
    img = sitk.GetImageFromArray(feat)
    img.CopyInformation(ref)
    return img


def register(baseline: Case, followup: Case, progress: ProgressCallback = no_progress,
             cancel: Optional[CancelToken] = None, spacing_mm: float = 3.0,
             deformable: bool = True) -> Registration:
    """Register ``followup`` onto ``baseline`` inside the liver; raise RegistrationRefused (in words) when
    the result cannot be trusted. Both cases need their label maps (engine.labels values)."""
    import time

    import SimpleITK as sitk

    t0 = time.perf_counter()
    progress("Preparing the livers", 0, 4)
    mb = liver_mask(baseline.labels, baseline.geometry)
    check(cancel)
    mf = liver_mask(followup.labels, followup.geometry)
    vb = float(mb.sum()) * baseline.geometry.voxel_volume_ml
    vf = float(mf.sum()) * followup.geometry.voxel_volume_ml
    for which, v in (("baseline", vb), ("follow-up", vf)):
        if v < MIN_LIVER_ML:
            raise RegistrationRefused(
                f"The {which} scan has {'no liver label' if v == 0 else f'only {v:.0f} mL of liver labelled'}: "
                "LiverPlan registers the two scans inside the liver, so it needs the liver segmented in both "
                f"(segment the {which} scan, or open its label map, first).", "no_liver")
    cut = [which for which, m in (("baseline", mb), ("follow-up", mf)) if m[0].any() or m[-1].any()]
    ratio = vf / vb
    if ratio < MIN_VOLUME_RATIO:
        raise RegistrationRefused(
            f"The liver is {100 * (1 - ratio):.0f} % smaller at follow-up ({vb:.0f} mL -> {vf:.0f} mL): more than "
            "chemotherapy explains (it changes the liver by some 5-20 %). Part of the liver was probably resected "
            "between the scans (or the follow-up segmentation misses part of it); the scans are not compared.",
            "volume_change")
    if ratio > MAX_VOLUME_RATIO:
        raise RegistrationRefused(
            f"The liver is {100 * (ratio - 1):.0f} % larger at follow-up ({vb:.0f} mL -> {vf:.0f} mL): more than "
            "chemotherapy or regeneration explains. These may be two different patients, or the baseline "
            "segmentation misses part of the liver; the scans are not compared.", "volume_change")
    progress("Preparing the livers", 1, 4)

    ref_b = _crop_grid(mb, baseline.geometry, spacing_mm, MARGIN_MM)
    ref_f = _crop_grid(mf, followup.geometry, spacing_mm, MARGIN_MM)
    mask_b = _resample(_sitk_from(mb.view(np.uint8), baseline.geometry), ref_b)
    mask_f = _resample(_sitk_from(mf.view(np.uint8), followup.geometry), ref_f)
    fixed = _distance_map(mask_b)
    moving = _distance_map(mask_f)
    progress("Preparing the livers", 2, 4)
    check(cancel)
    cb = _centroid(mb, baseline.geometry)
    cf = _centroid(mf, followup.geometry)
    progress("Preparing the livers", 4, 4)

    stages: list[dict] = []
    n_stages = 3 if deformable else 2
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(tuple(float(v) for v in cb))
    rigid.SetTranslation(tuple(float(v) for v in cf - cb))
    stages.append(_run_stage("rigid", fixed, moving, rigid, None, 80, "rsgd", progress, cancel, 1, n_stages,
                             shrink=(4, 2, 1), smooth=(2.0, 1.0, 0.0)))
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    stages.append(_run_stage("affine", fixed, moving, affine, None, 80, "rsgd", progress, cancel, 2, n_stages))
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(affine)
    if deformable:
        field, before, after = _demons(fixed, moving, affine, None, "deformable, surface", CLIP_MM, DEMONS_SIGMA_MM,
                                       DEMONS_ITERATIONS, progress, cancel)
        stages.append({"stage": "deformable: liver surface (demons on distance maps)", "metric_before": before,
                       "metric": after, "iterations": DEMONS_ITERATIONS})
        fixed_ct = _liver_ct(baseline, mb, ref_b)
        moving_ct = _liver_ct(followup, mf, ref_f)
        check(cancel)
        field, before, after = _demons(fixed_ct, moving_ct, affine, field, "deformable, inside", -50.0,
                                       INTERIOR_SIGMA_MM, INTERIOR_ITERATIONS, progress, cancel)
        stages.append({"stage": "deformable: inside the liver (demons on the CT, lesions masked)",
                       "metric_before": before, "metric": after, "iterations": INTERIOR_ITERATIONS})
        composite.AddTransform(sitk.DisplacementFieldTransform(field))

    # affine as a 4x4 (x' = M x + t with M, t in world coordinates)
    M = np.asarray(affine.GetMatrix(), float).reshape(3, 3)
    c = np.asarray(affine.GetCenter(), float)
    t = np.asarray(affine.GetTranslation(), float)
    A = np.eye(4)
    A[:3, :3] = M
    A[:3, 3] = t + c - M @ c

    progress("Checking the registration", 0, 2)
    mean_mm, p95_mm, corr = _quality(baseline, followup, ref_b, mb, mf, composite, cancel)
    del mb, mf
    progress("Checking the registration", 2, 2)
    reg = Registration(transform=composite, baseline_geometry=baseline.geometry,
                       followup_geometry=followup.geometry, residual_mean_mm=mean_mm, residual_p95_mm=p95_mm,
                       interior_correlation=corr, baseline_liver_ml=vb, followup_liver_ml=vf, affine_matrix=A,
                       stages=stages, seconds=time.perf_counter() - t0)
    _judge(reg, M)
    for which in cut:
        reg.warnings.append(f"The liver reaches the first or last slice of the {which} scan: part of it may lie "
                            "outside that scan, and its volume and the registration near that edge are uncertain.")
    return reg


def _quality(baseline: Case, followup: Case, ref_b, mb: np.ndarray, mf: np.ndarray, transform, cancel):
    """(mean, p95) surface distance in mm after registration, on a 1.5 mm grid, and the interior CT
    correlation."""
    import SimpleITK as sitk

    fine = 1.5
    size = [int(np.ceil(s * ref_b.GetSpacing()[0] / fine)) for s in ref_b.GetSize()]
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing((fine,) * 3)
    ref.SetOrigin(ref_b.GetOrigin())
    ref.SetDirection(ref_b.GetDirection())
    fb = _resample(_sitk_from(mb.view(np.uint8), baseline.geometry), ref)
    check(cancel)
    ff = _resample(_sitk_from(mf.view(np.uint8), followup.geometry), ref, transform)
    check(cancel)
    a = sitk.GetArrayFromImage(fb) > 0.5
    b = sitk.GetArrayFromImage(ff) > 0.5
    from scipy.ndimage import binary_erosion, distance_transform_edt

    sa = a & ~binary_erosion(a)
    sb = b & ~binary_erosion(b)
    if not sa.any() or not sb.any():
        return float("inf"), float("inf"), 0.0
    da = distance_transform_edt(~sa, sampling=fine)
    db = distance_transform_edt(~sb, sampling=fine)
    d = np.concatenate([db[sa], da[sb]])
    mean_mm, p95_mm = float(d.mean()), float(np.percentile(d, 95))
    # interior CT correlation (vessels and lesions line up only in the same liver)
    inner = binary_erosion(a, iterations=4)
    if inner.sum() < 100:
        inner = a
    cb = sitk.GetArrayFromImage(_resample(_sitk_from(baseline.image.astype(np.float32), baseline.geometry), ref,
                                          default=-1000.0))[inner]
    cf = sitk.GetArrayFromImage(_resample(_sitk_from(followup.image.astype(np.float32), followup.geometry), ref,
                                          transform, default=-1000.0))[inner]
    cb = np.clip(cb, -200, 400)
    cf = np.clip(cf, -200, 400)
    corr = float(np.corrcoef(cb, cf)[0, 1]) if cb.std() > 0 and cf.std() > 0 else 0.0
    return mean_mm, p95_mm, corr


def _judge(reg: Registration, M: np.ndarray) -> None:
    """Refuse (RegistrationRefused) or warn, in words."""
    s = np.linalg.svd(M, compute_uv=False)
    aniso = float(s.max() / s.min())
    if reg.residual_p95_mm > REFUSE_P95_MM:
        raise RegistrationRefused(
            f"The two livers could not be brought into line: after registration their surfaces still lie "
            f"{reg.residual_mean_mm:.1f} mm apart on average and {reg.residual_p95_mm:.1f} mm at the 95th percentile "
            f"(LiverPlan needs under {REFUSE_P95_MM:g} mm). The scans may show different patients, or one liver "
            "segmentation is wrong; the lesions are not compared.", "poor_fit")
    if aniso > MAX_AFFINE_ANISOTROPY or reg.interior_correlation < MIN_INTERIOR_CORRELATION:
        why = []
        if reg.interior_correlation < MIN_INTERIOR_CORRELATION:
            why.append(f"the vessels and tissue inside the liver do not line up (correlation "
                       f"{reg.interior_correlation:.2f}; the same patient gives over {MIN_INTERIOR_CORRELATION:g})")
        if aniso > MAX_AFFINE_ANISOTROPY:
            why.append(f"the livers' shapes differ by a stretch of {100 * (aniso - 1):.0f} % along one axis")
        raise RegistrationRefused(
            "These two scans probably show different patients: " + " and ".join(why) + ". The lesions are not "
            "compared; check that the follow-up belongs to this patient.", "different_patient")
    if reg.residual_p95_mm > WARN_P95_MM:
        reg.warnings.append(
            f"The registration is approximate: the liver surfaces lie {reg.residual_mean_mm:.1f} mm apart on average "
            f"and {reg.residual_p95_mm:.1f} mm at the 95th percentile after registration; check the matches by eye.")
