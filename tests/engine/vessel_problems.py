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


def phantom_problem(truth_labels: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input labels, vessel mask, true labels of the vessel voxels: 2 or 3) from a phantom's label map."""
    inside = liver_outline(truth_labels, spacing_zyx)
    pv, hv = truth_labels == Label.PORTAL_VEIN, truth_labels == Label.HEPATIC_VEINS
    vessels = (pv | hv) & inside
    labels = truth_labels.copy()
    labels[vessels] = Label.PARENCHYMA
    labels[hv & ~inside] = Label.BACKGROUND
    return labels, vessels, truth_labels


def accuracy(result_labels: np.ndarray, vessels: np.ndarray, truth_labels: np.ndarray) -> dict[str, float]:
    """Fractions of the vessel voxels assigned right, wrong (the other system) and left unassigned."""
    got, want = result_labels[vessels], truth_labels[vessels]
    n = max(int(vessels.sum()), 1)
    right = np.count_nonzero(got == want)
    unassigned = np.count_nonzero(got == Label.VESSEL_UNASSIGNED)
    return {"right": right / n, "wrong": (n - right - unassigned) / n, "unassigned": unassigned / n,
            "voxels": float(n)}
