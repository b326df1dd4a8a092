"""Synthetic follow-up scans with a known answer (for tests and benchmarks).

``make_followup(baseline, ...)`` takes a case with labels (a phantom, or a real CT with expert masks),
changes its lesions by construction (shrunk, grown, split, vanished, new), and resamples it through a
known smooth deformation onto another field of view and grid. The deformation maps a follow-up point
to the baseline point of the same tissue: a small rotation, a shift and a divergence-free sinusoidal
field (its Jacobian determinant is 1 to within ~0.1 %, so lesion volumes survive it).

The truth (:class:`FollowupTruth`) says, for each baseline lesion (engine.measure numbering), what was
done and its volume afterwards, where the new lesions are, and lets a test map points exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..case import Case, Provenance
from ..errors import InputError
from ..geometry import Geometry
from ..labels import Label


@dataclass
class FollowupTruth:
    transform: object                          # SimpleITK: follow-up LPS point -> baseline LPS point
    fates: dict[int, str]                      # baseline lesion id -> "kept", "shrunk", "grown", "split", "vanished"
    volume_after_ml: dict[int, float]          # baseline lesion id -> its volume after the change (0 vanished)
    new_lesions_lps: list[tuple[float, float, float]] = field(default_factory=list)   # baseline frame
    new_volumes_ml: list[float] = field(default_factory=list)
    baseline_centroids_lps: dict[int, tuple[float, float, float]] = field(default_factory=dict)

    def to_followup(self, xyz, iterations: int = 50) -> np.ndarray:
        """Baseline points -> the true follow-up points (the inverse, by fixed-point iteration)."""
        pts = np.asarray(xyz, float).reshape(-1, 3)
        y = pts.copy()
        for _ in range(iterations):
            y = y - (self.to_baseline(y) - pts)
        return y.reshape(np.asarray(xyz, float).shape)

    def to_baseline(self, xyz) -> np.ndarray:
        pts = np.asarray(xyz, float).reshape(-1, 3)
        out = np.array([self.transform.TransformPoint(tuple(map(float, p))) for p in pts])
        return out.reshape(np.asarray(xyz, float).shape)


def known_deformation(centre_xyz: Sequence[float], shift_mm=(12.0, -8.0, 10.0), rotation_deg=(2.0, -3.0, 4.0),
                      amplitude_mm: float = 5.0, wavelength_mm: float = 160.0, grid_mm: float = 4.0,
                      extent_mm: float = 400.0):
    """The SimpleITK transform follow-up point -> baseline point described in the module docstring."""
    import SimpleITK as sitk

    c = np.asarray(centre_xyz, float)
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(tuple(c))
    rigid.SetRotation(*[float(np.deg2rad(a)) for a in rotation_deg])
    rigid.SetTranslation(tuple(float(v) for v in shift_mm))
    # divergence-free field: dx(z), dy(x), dz(y)
    n = int(extent_mm / grid_mm) + 1
    ax = (np.arange(n) - (n - 1) / 2.0) * grid_mm
    k = 2 * np.pi / wavelength_mm
    zz, yy, xx = np.meshgrid(ax, ax, ax, indexing="ij")
    field_ = np.zeros((n, n, n, 3), np.float64)
    field_[..., 0] = amplitude_mm * np.sin(k * zz)
    field_[..., 1] = amplitude_mm * np.sin(k * xx + 0.7)
    field_[..., 2] = amplitude_mm * np.sin(k * yy + 1.3)
    img = sitk.GetImageFromArray(field_, isVector=True)
    img.SetSpacing((grid_mm,) * 3)
    img.SetOrigin(tuple(c - (n - 1) / 2.0 * grid_mm))
    disp = sitk.DisplacementFieldTransform(img)
    comp = sitk.CompositeTransform(3)
    comp.AddTransform(rigid)       # applied last: x = R(y + d(y)) ...
    comp.AddTransform(disp)        # applied first
    return comp


def _lesion_components(labels: np.ndarray):
    """Component map with engine.measure's lesion numbers (largest first, ties by position)."""
    from .match import lesion_id_map

    return lesion_id_map(labels)


def _scale_mask(mask: np.ndarray, spacing, factor_volume: float) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    s = factor_volume ** (1.0 / 3.0)
    zyx = np.argwhere(mask)
    c = zyx.mean(axis=0)
    pad = int(np.ceil(max(0.0, s - 1.0) * (zyx.max(axis=0) - zyx.min(axis=0)).max())) + 3
    lo = np.maximum(0, zyx.min(axis=0) - pad)
    hi = np.minimum(mask.shape, zyx.max(axis=0) + pad + 1)
    grid = np.mgrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(float)
    src = c[:, None, None, None] + (grid - c[:, None, None, None]) / s
    vals = map_coordinates(mask.astype(np.float32), src, order=1, mode="constant", cval=0.0)
    out = np.zeros_like(mask)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = vals >= 0.5
    return out


def make_followup(baseline: Case, changes: dict[int, tuple], new_lesions: Sequence[float] = (),
                  shift_mm=(12.0, -8.0, 10.0), rotation_deg=(2.0, -3.0, 4.0), amplitude_mm: float = 5.0,
                  spacing: Optional[Sequence[float]] = None, fov_shift_mm=(15.0, -10.0, 20.0),
                  fov_scale: float = 0.95, noise_hu: float = 8.0, seed: int = 0) -> tuple[Case, FollowupTruth]:
    """A follow-up of ``baseline`` (with labels) and its truth.

    changes: baseline lesion id -> ("shrink", volume factor) | ("grow", volume factor) | ("split",) |
        ("vanish",); lesions not named are kept.
    new_lesions: diameters (mm) of lesions that appear (placed deep in the parenchyma, far from others).
    spacing: the follow-up's voxel size (z, y, x) mm; default the baseline's with 1.25 x the slice spacing.
    fov_scale: the follow-up's field of view over the baseline's (a number, or one per axis z, y, x);
        where it reaches beyond the baseline's image the follow-up holds air (-1000 HU, no labels).
    """
    import SimpleITK as sitk
    from scipy.ndimage import distance_transform_edt

    from ..measure import measure

    rng = np.random.default_rng(seed)
    g = baseline.geometry
    labels = baseline.labels.copy()
    image = baseline.image.astype(np.float32).copy()
    ids = _lesion_components(labels)
    report = measure(None, labels, g)
    lesions = {l.id: l for l in report.lesions}
    for k in changes:
        if k not in lesions:
            raise InputError(f"The baseline has no lesion {k}.")
    paren = labels == Label.PARENCHYMA
    liver_hu = float(np.median(image[paren])) if paren.any() else 100.0
    les_hu = float(np.median(image[labels == Label.CRLM])) if (labels == Label.CRLM).any() else 45.0
    fates: dict[int, str] = {}
    vol_after: dict[int, float] = {}
    vox_ml = g.voxel_volume_ml
    liverish = (labels == Label.PARENCHYMA) | (labels == Label.CRLM)
    for lid, les in lesions.items():
        m = ids == lid
        change = changes.get(lid, ("keep",))
        kind = change[0]
        if kind == "keep":
            fates[lid] = "kept"
            vol_after[lid] = float(m.sum()) * vox_ml
            continue
        # remove the lesion first: parenchyma at its place
        labels[m] = Label.PARENCHYMA
        image[m] = liver_hu
        if kind == "vanish":
            fates[lid] = "vanished"
            vol_after[lid] = 0.0
            continue
        if kind in ("shrink", "grow"):
            new = _scale_mask(m, g.spacing, float(change[1])) & liverish
            fates[lid] = "shrunk" if kind == "shrink" else "grown"
        elif kind == "split":
            zyx = np.argwhere(m)
            c = zyx.mean(axis=0)
            pts = (zyx - c) * np.asarray(g.spacing)
            axis = np.linalg.svd(pts - pts.mean(axis=0), full_matrices=False)[2][0]
            along = pts @ axis
            new = m.copy()
            gap = np.abs(along) < max(2.5, 1.6 * max(g.spacing))
            new[tuple(zyx[gap].T)] = False
            fates[lid] = "split"
        else:
            raise InputError(f"Unknown change '{kind}' for lesion {lid}.")
        labels[new] = Label.CRLM
        image[new] = les_hu
        vol_after[lid] = float(new.sum()) * vox_ml
    # new lesions: deep in the parenchyma, far from the others and the vessels
    new_pts, new_vols = [], []
    for d in new_lesions:
        free = labels == Label.PARENCHYMA
        dist = distance_transform_edt(free, sampling=g.spacing)
        r = d / 2.0
        cand = np.argwhere(dist > r + 6.0)
        if not len(cand):
            raise InputError(f"No room in the liver for a new lesion of {d:g} mm.")
        best = cand[np.argmax(dist[tuple(cand.T)])] if len(cand) < 50 else cand[rng.integers(len(cand))]
        zz, yy, xx = np.ogrid[:labels.shape[0], :labels.shape[1], :labels.shape[2]]
        sp = g.spacing
        ball = (((zz - best[0]) * sp[0]) ** 2 + ((yy - best[1]) * sp[1]) ** 2 + ((xx - best[2]) * sp[2]) ** 2) <= r * r
        labels[ball] = Label.CRLM
        image[ball] = les_hu
        new_pts.append(tuple(float(v) for v in g.index_to_physical(best)))
        new_vols.append(float(ball.sum()) * vox_ml)
    image += rng.normal(0.0, noise_hu, image.shape).astype(np.float32)

    # the follow-up grid: another spacing, a shifted, slightly smaller field of view
    if spacing is None:
        spacing = (g.spacing[0] * 1.25, g.spacing[1], g.spacing[2])
    spacing = tuple(float(v) for v in spacing)
    fov = np.asarray(g.shape, float) * np.asarray(g.spacing) * np.asarray(fov_scale, float)   # z, y, x mm
    shape = tuple(int(v) for v in np.round(fov / np.asarray(spacing)))
    centre_b = g.index_to_physical((np.asarray(g.shape) - 1) / 2.0)
    centre_f = centre_b + np.asarray(fov_shift_mm, float)
    origin = centre_f - (np.asarray(shape[::-1]) - 1) / 2.0 * np.asarray(spacing[::-1])
    fg = Geometry(shape=shape, spacing=spacing, origin=tuple(float(v) for v in origin), direction=g.direction)
    liver_c = g.index_to_physical(np.argwhere(liverish[::2, ::2, ::2]).mean(axis=0) * 2.0)
    tx = known_deformation(liver_c, shift_mm, rotation_deg, amplitude_mm)
    ref = sitk.Image(list(shape[::-1]), sitk.sitkFloat32)
    fg.apply_to(ref)

    def to_img(a):
        im = sitk.GetImageFromArray(np.ascontiguousarray(a))
        g.apply_to(im)
        return im

    ct = sitk.GetArrayFromImage(sitk.Resample(to_img(image), ref, tx, sitk.sitkLinear, -1000.0, sitk.sitkFloat32))
    present = [int(v) for v in np.unique(labels) if v]
    best_p = np.zeros(shape, np.float32)
    out_lab = np.zeros(shape, np.uint8)
    for v in [0] + present:
        p = sitk.GetArrayFromImage(sitk.Resample(to_img((labels == v).astype(np.float32)), ref, tx, sitk.sitkLinear,
                                                 1.0 if v == 0 else 0.0, sitk.sitkFloat32))
        better = p > best_p
        out_lab[better] = v
        best_p[better] = p[better]
    prov = Provenance(source=f"synthetic follow-up of {baseline.name}", source_format="synthetic",
                      label_source="synthetic follow-up", extra={"note": "synthetic data, not a patient"})
    fu = Case(image=np.clip(np.rint(ct), -1024, 3071).astype(np.int16), geometry=fg, labels=out_lab,
              provenance=prov, name=f"{baseline.name}_followup")
    truth = FollowupTruth(transform=tx, fates=fates, volume_after_ml=vol_after, new_lesions_lps=new_pts,
                          new_volumes_ml=new_vols,
                          baseline_centroids_lps={l.id: tuple(l.centroid_lps_mm) for l in report.lesions})
    return fu, truth
