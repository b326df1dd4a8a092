"""Vessel-split problems with known answers, shared by the tests and benchmarks/vessel_split_speed.py.

A phantom (engine.phantom) is turned into what a public model set would give: the portal vein and
hepatic vein voxels inside the liver's filled outline merged into one "vessel" mask (and relabelled
liver), the extrahepatic portal trunk kept as portal vein (the cardiac model's portal_vein_and_splenic_vein)
and the IVC kept; hepatic-vein voxels outside the outline (none such model labels them) become background.
"""
from __future__ import annotations

import numpy as np

from engine.labels import Label
from engine.measure import filled_liver_outline


def liver_outline(labels: np.ndarray, spacing_zyx) -> np.ndarray:
    """The liver's filled outline (engine.measure's definition), full size, bool (z, y, x)."""
    filled, sl = filled_liver_outline(labels, tuple(spacing_zyx))
    out = np.zeros(labels.shape, bool)
    out[sl] = filled
    return out


def phantom_problem(truth_labels: np.ndarray, spacing_zyx,
                    hepatic_outside: int = Label.BACKGROUND) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input labels, vessel mask, true labels) from a label map with the split (a phantom's, or IRCADb's
    read with its preset, where 3 = 'venoussystem', the hepatic veins and the IVC together).

    Portal vein and hepatic vein voxels inside the liver's filled outline become the vessel mask (and
    liver in the input labels); portal vein outside stays the trunk; hepatic vein voxels outside become
    ``hepatic_outside`` (background for a phantom, whose IVC is labelled; IVC for IRCADb, whose IVC is in
    'venoussystem'). The true labels are the input map itself (2 or 3 on the vessel voxels).
    """
    inside = liver_outline(truth_labels, spacing_zyx)
    pv, hv = truth_labels == Label.PORTAL_VEIN, truth_labels == Label.HEPATIC_VEINS
    vessels = (pv | hv) & inside
    labels = truth_labels.copy()
    labels[vessels] = Label.PARENCHYMA
    labels[hv & ~inside] = hepatic_outside
    return labels, vessels, truth_labels


def accuracy(result_labels: np.ndarray, vessels: np.ndarray, truth_labels: np.ndarray) -> dict[str, float]:
    """Fractions of the vessel voxels assigned right, wrong (the other system) and left unassigned."""
    got, want = result_labels[vessels], truth_labels[vessels]
    n = max(int(vessels.sum()), 1)
    right = np.count_nonzero(got == want)
    unassigned = np.count_nonzero(got == Label.VESSEL_UNASSIGNED)
    return {"right": right / n, "wrong": (n - right - unassigned) / n, "unassigned": unassigned / n,
            "voxels": float(n)}


def with_gaps(vessels: np.ndarray, spacing_zyx, n: int = 40, seed: int = 0,
              gap_radius_mm: float = 3.0, max_radius_mm: float = 2.0) -> np.ndarray:
    """The vessel mask broken as model outputs break: ``n`` balls of ``gap_radius_mm`` cut out at random
    centre-line voxels of vessels at most ``max_radius_mm`` in radius (peripheral branches)."""
    from scipy import ndimage as ndi

    from metrics.centerline import skeleton

    sp = np.asarray(spacing_zyx, float)
    rng = np.random.default_rng(seed)
    edt = ndi.distance_transform_edt(vessels, sampling=sp)
    pts = np.argwhere(skeleton(vessels) & (edt > 0) & (edt <= max_radius_mm))
    out = vessels.copy()
    half = np.ceil(gap_radius_mm / sp).astype(int)
    for p in pts[rng.choice(len(pts), size=min(n, len(pts)), replace=False)]:
        lo, hi = np.maximum(p - half, 0), p + half + 1
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        zz, yy, xx = np.ogrid[sl]
        d2 = ((zz - p[0]) * sp[0]) ** 2 + ((yy - p[1]) * sp[1]) ** 2 + ((xx - p[2]) * sp[2]) ** 2
        out[sl] &= d2 > gap_radius_mm ** 2
    return out
