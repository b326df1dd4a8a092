"""Split an intrahepatic vessel tree into the portal and the hepatic-venous system.

Public models (TotalSegmentator's ``liver_vessels``, MSD Task08 "Vessel") label the vessels inside the
liver as ONE structure. LiverPlan's label map keeps the portal vein (2) and the hepatic veins (3) apart,
so those voxels are assigned here: to the portal system where they belong to the tree fed by the portal
trunk (the cardiac model's ``portal_vein_and_splenic_vein``, or the hilum), to the hepatic veins where they
drain into the inferior vena cava (4). What cannot be decided is written as
:attr:`engine.labels.Label.VESSEL_UNASSIGNED` and said so in a note: never guessed silently.

Arrays are numpy (z, y, x); spacing is (z, y, x) in mm.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .errors import InputError
from .labels import Label
from .progress import CancelToken, ProgressCallback, check, no_progress

log = logging.getLogger(__name__)

#: Stat keys of :class:`VesselAssignment` (always present).
STAT_KEYS = ("portal_voxels", "hepatic_voxels", "unassigned_voxels", "portal_ml", "hepatic_ml",
             "unassigned_ml", "vessel_voxels", "vessel_ml")


@dataclass
class VesselAssignment:
    """The result of :func:`assign_vessel_tree`.

    labels: uint8 (z, y, x): the input label map with the vessel voxels written as portal vein (2),
        hepatic veins (3) or "vessel, unassigned" (6). Voxels the input already labelled portal vein,
        hepatic veins, IVC or CRLM keep their label.
    notes: plain sentences for the clinician: what was decided how, what could not be, volumes.
    stats: voxel counts and volumes (mL) per system (keys: :data:`STAT_KEYS`).
    """

    labels: np.ndarray
    notes: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)


def _validate(labels: np.ndarray, vessels: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray,
                                                                           tuple[float, float, float]]:
    labels = np.asarray(labels)
    vessels = np.asarray(vessels)
    if labels.ndim != 3:
        raise InputError(f"The label map must be a 3D volume; it has {labels.ndim} dimension(s).")
    if vessels.shape != labels.shape:
        raise InputError(f"The vessel mask ({vessels.shape}) and the label map ({labels.shape}) are not on the "
                         "same voxel grid (z, y, x).")
    if labels.dtype != np.uint8:
        if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() > 255)):
            raise InputError("The label map must hold whole numbers 0-255.")
        labels = labels.astype(np.uint8)
    vessels = vessels.astype(bool, copy=False)
    try:
        sp = tuple(float(v) for v in spacing_zyx)
    except (TypeError, ValueError):
        raise InputError(f"The voxel spacing must be three numbers in mm (z, y, x); got {spacing_zyx!r}.") from None
    if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
        raise InputError(f"The voxel spacing must be three positive numbers in mm (z, y, x); got {spacing_zyx!r}.")
    return labels, vessels, sp  # type: ignore[return-value]


def _stats(out: np.ndarray, region: np.ndarray, voxel_ml: float) -> dict[str, float]:
    vals = out[region]
    n_p = int(np.count_nonzero(vals == Label.PORTAL_VEIN))
    n_h = int(np.count_nonzero(vals == Label.HEPATIC_VEINS))
    n_u = int(np.count_nonzero(vals == Label.VESSEL_UNASSIGNED))
    n = int(vals.size)
    return {"portal_voxels": float(n_p), "hepatic_voxels": float(n_h), "unassigned_voxels": float(n_u),
            "portal_ml": n_p * voxel_ml, "hepatic_ml": n_h * voxel_ml, "unassigned_ml": n_u * voxel_ml,
            "vessel_voxels": float(n), "vessel_ml": n * voxel_ml}


def assign_vessel_tree(labels: np.ndarray, vessels: np.ndarray, spacing_zyx: tuple[float, float, float], *,
                       progress: ProgressCallback = no_progress, cancel: Optional[CancelToken] = None
                       ) -> VesselAssignment:
    """Assign each voxel of an unsplit vessel mask to the portal or the hepatic-venous system.

    labels: uint8 (z, y, x) label map so far (engine.labels): the liver, and where another model gave them
        the portal vein trunk (2) and the IVC (4) (hepatic veins (3) already labelled also count as seeds).
    vessels: bool (z, y, x) mask of the (intrahepatic) vessels without the split, same grid.
    spacing_zyx: voxel size (z, y, x) in mm.

    Returns a :class:`VesselAssignment`. The vessel voxels that the input labels as background,
    parenchyma or "vessel, unassigned" are rewritten; portal vein, hepatic veins, IVC and CRLM voxels keep
    their label. The input arrays are not modified.
    """
    import cc3d
    from scipy.ndimage import binary_dilation

    labels, vessels, sp = _validate(labels, vessels, spacing_zyx)
    voxel_ml = sp[0] * sp[1] * sp[2] / 1000.0
    out = labels.copy()
    region = vessels & np.isin(labels, (Label.BACKGROUND, Label.PARENCHYMA, Label.VESSEL_UNASSIGNED))
    notes: list[str] = []
    progress("Splitting vessels", 0, 3)
    if not region.any():
        notes.append("No vessel voxels to assign.")
        return VesselAssignment(out, notes, _stats(out, region, voxel_ml))
    check(cancel)

    portal_seed = labels == Label.PORTAL_VEIN
    hepatic_seed = (labels == Label.IVC) | (labels == Label.HEPATIC_VEINS)
    if not portal_seed.any():
        notes.append("No portal vein trunk was given: no branch could be traced to it.")
    if not hepatic_seed.any():
        notes.append("No inferior vena cava was given: no branch could be traced to it.")

    comp = cc3d.connected_components(region, connectivity=26)
    n = int(comp.max())
    progress("Splitting vessels", 1, 3)
    check(cancel)
    st = np.ones((3, 3, 3), bool)
    touches_p = np.zeros(n + 1, bool)
    touches_h = np.zeros(n + 1, bool)
    if portal_seed.any():
        touches_p[np.unique(comp[binary_dilation(portal_seed, st)])] = True
    check(cancel)
    if hepatic_seed.any():
        touches_h[np.unique(comp[binary_dilation(hepatic_seed, st)])] = True
    touches_p[0] = touches_h[0] = False
    progress("Splitting vessels", 2, 3)

    lut = np.full(n + 1, Label.VESSEL_UNASSIGNED, np.uint8)
    lut[touches_p & ~touches_h] = Label.PORTAL_VEIN
    lut[touches_h & ~touches_p] = Label.HEPATIC_VEINS
    out[region] = lut[comp[region]]
    n_both = int(np.count_nonzero(touches_p & touches_h))
    n_none = int(np.count_nonzero(~touches_p[1:] & ~touches_h[1:]))
    stats = _stats(out, region, voxel_ml)
    if n_both:
        notes.append(f"{n_both} vessel tree(s) touch both the portal trunk and the IVC; they were left "
                     "unassigned.")
    if n_none:
        notes.append(f"{n_none} vessel piece(s) connect to neither the portal trunk nor the IVC; they were left "
                     "unassigned.")
    notes.append(f"Assigned by connectivity: portal vein {stats['portal_ml']:.1f} mL, hepatic veins "
                 f"{stats['hepatic_ml']:.1f} mL, unassigned {stats['unassigned_ml']:.1f} mL "
                 f"of {stats['vessel_ml']:.1f} mL of vessels.")
    progress("Splitting vessels", 3, 3)
    for s in notes:
        log.info("vessel split: %s", s)
    return VesselAssignment(out, notes, stats)
