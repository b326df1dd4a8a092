"""Volumetry, tumour burden and the lesion table of a CT + label map.

Every value is a :class:`Measurement` (name, value, units, description). Arrays are numpy (z, y, x);
the geometry (spacing z-y-x mm, origin and direction in LPS) travels with them in a Geometry.

Definitions (also written into every JSON report):
- Structure volume = voxel count x voxel volume (mL).
- Total liver volume: engine.labels.TOTAL_LIVER_DEFINITION. Implemented as parenchyma (1) + lesions (5)
  + portal/hepatic/unassigned vessel voxels (2, 3, 6) that lie inside the liver's *filled outline*: the parenchyma-and-
  lesion mask, closed in each axial slice with a square of half-width ``OUTLINE_CLOSING_MM`` (this seals the
  notches where vessels enter or leave the liver) and with its holes filled slice by slice. The IVC (4)
  is never counted, nor are vessel voxels outside that outline.
- Tumour burden = total lesion volume / total liver volume x 100 (%).
- Lesions = the 26-connected components of label 5, numbered 1..n by decreasing volume.
- Longest 3D diameter = the largest distance between the centres of two surface voxels of the lesion
  (mm, with the anisotropic spacing; found on the convex hull of the surface voxels).
- Longest axial diameter = the largest such in-plane distance within one axial slice, over all slices
  (the radiologist's RECIST-style measurement).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union

import numpy as np

from .case import Case, as_label_array
from .errors import GeometryMismatchError, InputError
from .geometry import Geometry
from .labels import (ALL_STRUCTURES, BY_LABEL, LESION_CONNECTIVITY, TOTAL_LIVER_DEFINITION, Label)

log = logging.getLogger(__name__)

#: In-plane closing radius (mm) used to build the liver's filled outline (see the module docstring).
OUTLINE_CLOSING_MM = 7.0

#: The vessel labels counted in the total liver volume where they lie inside the liver's filled outline.
VESSEL_LABELS = (Label.PORTAL_VEIN, Label.HEPATIC_VEINS, Label.VESSEL_UNASSIGNED)

#: Mean CT values (HU) a labelled structure can have on a CT (fatty liver, enhancing vessels, calcified
#: lesions included); outside it the label mostly covers air, fat, bone or metal and a warning is given.
HU_PLAUSIBLE = (-150, 400)

DEFINITIONS: dict[str, str] = {
    "volume": "Structure volume = number of voxels x voxel volume (product of the three voxel spacings), in millilitres.",
    "total_liver_volume": TOTAL_LIVER_DEFINITION + (
        f" Implementation: the liver's filled outline is the parenchyma + lesion mask closed in each axial "
        f"slice with a square of {OUTLINE_CLOSING_MM:g} mm half-width (sealing the notches where vessels "
        "enter), holes filled slice by slice; portal vein, hepatic vein and unassigned vessel voxels inside "
        "it are counted."),
    "tumour_burden": "Tumour burden = total CRLM lesion volume / total liver volume x 100 (%).",
    "lesion": (f"A lesion is one {LESION_CONNECTIVITY}-connected component of the CRLM label (touching by a "
               "face, an edge or a corner joins two regions); a label map measured afresh numbers its lesions "
               "1..n by decreasing volume; in the application the numbers then stay with the lesions through "
               "edits (engine.lesion_ids: a deleted lesion's number is not reused, a new lesion gets the next "
               "number, a split keeps the number on the bigger part, a merge keeps the lowest)."),
    "longest_diameter": ("Longest 3D diameter = largest distance between the centres of two surface voxels "
                         "of the lesion, in mm, with the image's voxel spacing."),
    "axial_diameter": ("Longest axial diameter = largest in-plane distance between the centres of two "
                       "voxels of the lesion in one axial slice, over all slices (RECIST-style)."),
    "centroid": "Centroid = mean position of the lesion's voxels: patient coordinates LPS (mm, x-y-z) and "
                "voxel indices (z, y, x) of the canonical grid.",
    "hu": "Mean and standard deviation of the CT values (Hounsfield units) of the structure's voxels.",
}


@dataclass(frozen=True)
class Measurement:
    """One measured value with its units and a plain-language description."""

    name: str
    value: float
    units: str
    description: str
    key: str = ""              # stable machine name, e.g. "liver.volume_ml"

    def to_dict(self) -> dict:
        v = self.value
        return {"key": self.key, "name": self.name,
                "value": None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v,
                "units": self.units, "description": self.description}


@dataclass
class Lesion:
    """One CRLM lesion (a 26-connected component of label 5)."""

    id: int
    voxel_count: int
    volume_ml: float
    longest_diameter_mm: float
    axial_diameter_mm: float
    centroid_lps_mm: tuple[float, float, float]        # patient x, y, z (LPS mm)
    centroid_zyx: tuple[float, float, float]           # voxel indices (z, y, x), canonical grid
    slice_range: tuple[int, int]                       # first and last axial slice index (inclusive)
    mean_hu: Optional[float]
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]   # (start, stop) per axis z, y, x
    #: share of the voxels bordering the lesion (26-neighbours) that are liver tissue (labels 1, 2, 3, 6)
    liver_contact: Optional[float] = None
    #: what makes this lesion doubtful (plain sentences: fat/air or water density, outside the liver)
    flags: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("centroid_lps_mm", "centroid_zyx", "slice_range"):
            d[k] = list(d[k])
        d["bbox"] = [list(b) for b in self.bbox]
        return d


@dataclass
class MeasurementReport:
    measurements: list[Measurement]
    lesions: list[Lesion]
    geometry: Geometry
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))
    connectivity: int = LESION_CONNECTIVITY
    provenance: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def get(self, key: str) -> Measurement:
        for m in self.measurements:
            if m.key == key:
                return m
        raise KeyError(key)

    def value(self, key: str) -> float:
        return self.get(key).value

    def to_rows(self) -> list[dict]:
        """The measurement table: one dict per value (name, value, units, description, key)."""
        return [m.to_dict() for m in self.measurements]

    def lesion_rows(self) -> list[dict]:
        """The lesion table: one flat dict per lesion (column names carry the units)."""
        rows = []
        for l in self.lesions:
            x, y, z = l.centroid_lps_mm
            cz, cy, cx = l.centroid_zyx
            rows.append({
                "lesion": l.id, "volume_ml": l.volume_ml, "voxels": l.voxel_count,
                "longest_diameter_mm": l.longest_diameter_mm, "axial_diameter_mm": l.axial_diameter_mm,
                "centroid_x_lps_mm": x, "centroid_y_lps_mm": y, "centroid_z_lps_mm": z,
                "centroid_z_index": cz, "centroid_y_index": cy, "centroid_x_index": cx,
                "first_slice_index": l.slice_range[0], "last_slice_index": l.slice_range[1],
                "first_slice_number": l.slice_range[0] + 1, "last_slice_number": l.slice_range[1] + 1,
                "mean_hu": l.mean_hu, "liver_contact_pct": None if l.liver_contact is None
                else _r(100.0 * l.liver_contact, 1), "check": "; ".join(l.flags)})
        return rows

    def to_json_dict(self) -> dict:
        return {"software": "LiverPlan", "kind": "measurements",
                "geometry": self.geometry.to_dict(), "coordinate_system": "LPS (mm)",
                "lesion_connectivity": self.connectivity, "definitions": dict(self.definitions),
                "measurements": self.to_rows(), "lesions": [l.to_dict() for l in self.lesions],
                "provenance": self.provenance, "warnings": list(self.warnings)}


# ------------------------------------------------------------------------------------------------
def _r(v: float, nd: int = 3) -> float:
    return float(round(float(v), nd))


def _max_pairwise(points: np.ndarray) -> float:
    """Largest distance between any two points (N, d), through their convex hull when many."""
    n = len(points)
    if n < 2:
        return 0.0
    if n > 64:
        from scipy.spatial import ConvexHull, QhullError

        try:
            points = points[ConvexHull(points).vertices]
        except (QhullError, ValueError):
            # Flat point sets (a lesion one slice thick, a straight line): joggle, keep the true points.
            try:
                points = points[ConvexHull(points, qhull_options="QJ").vertices]
            except (QhullError, ValueError):
                pass
    if len(points) > 4000:        # never expected after the hull; keep memory bounded anyway
        points = points[np.random.default_rng(0).choice(len(points), 4000, replace=False)]
    from scipy.spatial.distance import pdist

    return float(pdist(points).max()) if len(points) >= 2 else 0.0


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one face neighbour outside it."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def lesion_diameters(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float]:
    """(longest 3D diameter, longest axial diameter) in mm of one binary component (z, y, x)."""
    surf = _surface(mask)
    zyx = np.argwhere(surf)
    if len(zyx) == 0:
        return 0.0, 0.0
    sp = np.asarray(spacing, float)
    pts = zyx * sp
    d3 = _max_pairwise(pts)
    axial = 0.0
    # Per axial slice: in-plane points (y, x) only.
    order = np.argsort(zyx[:, 0], kind="stable")
    zs = zyx[order, 0]
    starts = np.flatnonzero(np.r_[True, zs[1:] != zs[:-1]])
    ends = np.r_[starts[1:], len(zs)]
    yx = pts[order][:, 1:]
    for a, b in zip(starts, ends):
        if b - a >= 2:
            axial = max(axial, _max_pairwise(yx[a:b]))
    return d3, axial


def filled_liver_outline(labels: np.ndarray, spacing: tuple[float, float, float],
                         closing_mm: float = OUTLINE_CLOSING_MM) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The liver's filled outline (see module docstring), cropped: (mask, slices into ``labels``).

    Per axial slice: the parenchyma + lesion mask is closed with a square of half-width ``closing_mm``
    (separable max/min filters: cost independent of the radius) and its holes are filled.
    """
    import cc3d
    from scipy.ndimage import find_objects, maximum_filter, minimum_filter

    liver = (labels == Label.PARENCHYMA) | (labels == Label.CRLM)
    objs = find_objects(liver.astype(np.uint8))
    if not objs or objs[0] is None:
        return np.zeros((0, 0, 0), bool), (slice(0, 0),) * 3
    bb = objs[0]
    ky = max(1, int(round(closing_mm / spacing[1])))
    kx = max(1, int(round(closing_mm / spacing[2])))
    sl = (bb[0],
          slice(max(0, bb[1].start - ky - 1), min(labels.shape[1], bb[1].stop + ky + 1)),
          slice(max(0, bb[2].start - kx - 1), min(labels.shape[2], bb[2].stop + kx + 1)))
    # Pad in-plane by the closing radius so the erosion does not eat into the crop's border.
    m = np.pad(liver[sl].view(np.uint8), ((0, 0), (ky + 1, ky + 1), (kx + 1, kx + 1)))
    size = (1, 2 * ky + 1, 2 * kx + 1)
    closed = minimum_filter(maximum_filter(m, size=size, mode="constant", cval=0), size=size,
                            mode="constant", cval=1).astype(bool)
    closed |= m.astype(bool)
    closed = closed[:, ky + 1:-(ky + 1), kx + 1:-(kx + 1)]
    # Fill holes slice by slice: background regions (4-connected in the slice) not touching the border.
    filled = closed.copy()
    for z in range(closed.shape[0]):
        bg = ~closed[z]
        if not bg.any():
            continue
        cc = cc3d.connected_components(bg, connectivity=4)
        edge = np.unique(np.concatenate([cc[0], cc[-1], cc[:, 0], cc[:, -1]]))
        inner = np.setdiff1d(np.unique(cc), np.append(edge, 0), assume_unique=False)
        if inner.size:
            filled[z] |= np.isin(cc, inner)
    return filled, sl


def _as_arrays(case_or_image, labels, geometry):
    if isinstance(case_or_image, Case):
        case = case_or_image
        image = case.image
        labels = case.labels if labels is None else labels
        geometry = case.geometry if geometry is None else geometry
        prov = case.provenance.to_dict()
        prov["case_name"] = case.name
    else:
        image = case_or_image
        prov = {}
    if labels is None or geometry is None:
        raise InputError("Measuring needs a label map and its geometry (voxel spacing).")
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError("The label map must be a 3D volume.")
    if tuple(labels.shape) != tuple(geometry.shape):
        raise GeometryMismatchError(
            f"The label map has {labels.shape[::-1]} voxels (x, y, z) but its geometry says "
            f"{tuple(geometry.shape)[::-1]}; they do not describe the same image.")
    if image is not None:
        image = np.asarray(image)
        labels = as_label_array(labels, image.shape)
    elif labels.dtype != np.uint8:
        labels = as_label_array(labels, labels.shape)
    return image, labels, geometry, prov


def measure(case_or_image: Union[Case, np.ndarray, None], labels: Optional[np.ndarray] = None,
            geometry: Optional[Geometry] = None) -> MeasurementReport:
    """Measure a label map (z, y, x uint8, engine.labels values) and, when given, its CT (HU).

    ``case_or_image`` is a Case (its image/labels/geometry/provenance are used unless ``labels`` /
    ``geometry`` are given) or a CT array (z, y, x) or None (no HU statistics).
    """
    image, labels, geometry, prov = _as_arrays(case_or_image, labels, geometry)
    spacing = tuple(float(s) for s in geometry.spacing)

    # Foreground voxels only: a whole-volume bincount with float weights would cost GBs on a 512^2 CT.
    flat = labels.reshape(-1)
    idx = np.flatnonzero(flat)
    lab = flat[idx]
    counts = np.bincount(lab, minlength=256)
    sums = sq = None
    if image is not None:
        vals = image.reshape(-1)[idx].astype(np.float64)
        sums = np.bincount(lab, weights=vals, minlength=256)
        sq = np.bincount(lab, weights=vals * vals, minlength=256)
        del vals

    # --- total liver volume (definition in engine.labels) ---
    n_vessel_inside = 0
    if any(counts[v] for v in VESSEL_LABELS):
        outline, sl = filled_liver_outline(labels, spacing)
        if outline.size:
            sub = labels[sl]
            n_vessel_inside = int(np.count_nonzero(outline & np.isin(sub, VESSEL_LABELS)))

    raw = _lesion_raw(image, labels, idx, lab, geometry)
    return _build_report(counts, sums, sq, n_vessel_inside, raw, geometry, prov, image is not None)


#: Below this total liver volume a result is questioned (adult livers are about 1,000-2,500 mL; a small
#: remnant after resection is rarely under 400 mL).
SMALL_LIVER_ML = 300.0
#: Parenchyma whose mean CT value is below this is questioned (liver tissue: about 40-70 HU unenhanced,
#: 90-140 HU in the portal phase; a very fatty liver reads lower, water 0).
LOW_LIVER_HU = 20.0
#: A lesion whose mean CT value is within this of the parenchyma's has no contrast to it (checked from
#: LESION_CONTRAST_MIN_ML and LESION_CONTRAST_MIN_VOXELS up: smaller ones, or ones of a few coarse voxels,
#: blur into the liver on CT, real or not).
LESION_CONTRAST_HU = 10.0
LESION_CONTRAST_MIN_ML = 0.1
LESION_CONTRAST_MIN_VOXELS = 64
#: Above this total liver volume a result is questioned (an adult liver is about 1,000-2,500 mL; larger
#: "livers" are mostly a label spilled into the spleen, bowel, kidney or heart).
LARGE_LIVER_ML = 2500.0
#: A lesion whose mean CT value is below this is fat or air, not tissue (fat about -100 HU, air -1000).
LESION_FAT_AIR_HU = -30.0
#: A lesion whose mean CT value is below this (and above LESION_FAT_AIR_HU) has water density: a cyst,
#: fluid or bowel content rather than a metastasis (CRLM in the portal phase: about 40-80 HU).
LESION_WATER_HU = 15.0
#: A lesion with less than this share of its border on liver tissue (labels 1, 2, 3, 6) lies outside the
#: liver (bowel, stomach, kidney...): a metastasis at the liver's surface still borders it on a large part.
LESION_LIVER_CONTACT_MIN = 0.2
#: Labels that count as liver tissue around a lesion.
LIVER_TISSUE_LABELS = (Label.PARENCHYMA, Label.PORTAL_VEIN, Label.HEPATIC_VEINS, Label.VESSEL_UNASSIGNED)


def lesion_flags(mean_hu: Optional[float], liver_contact: Optional[float], has_liver: bool) -> list[str]:
    """Why a lesion is doubtful, in words (empty: nothing seen). ``has_liver``: the label map has a liver
    (without one, "outside the liver" says nothing)."""
    out = []
    if mean_hu is not None and np.isfinite(mean_hu):
        if mean_hu < LESION_FAT_AIR_HU:
            out.append(f"mean {mean_hu:.0f} HU: fat or air, not tissue")
        elif mean_hu < LESION_WATER_HU:
            out.append(f"mean {mean_hu:.0f} HU: water density (a cyst, fluid or bowel content?)")
    if has_liver and liver_contact is not None and liver_contact < LESION_LIVER_CONTACT_MIN:
        out.append(f"outside the liver (only {100 * liver_contact:.0f} % of its border is liver)")
    return out


def _plausibility_warnings(counts, sums, total_ml: float, lesions, has_image: bool) -> list[str]:
    """What makes a result doubtful at a glance: a liver far too small (a scan that misses the liver, a
    segmentation that found little of it), parenchyma at water or fat density, lesions with no contrast to
    the parenchyma (a model labelling uniform tissue). Said, never corrected."""
    out: list[str] = []
    if total_ml > LARGE_LIVER_ML:
        out.append(f"The labelled liver is {total_ml:,.0f} mL, more than an adult liver usually is (about "
                   "1,000-2,500 mL): the label may have spilled into a neighbouring organ (spleen, bowel, kidney, "
                   "heart). Check it before using the volumes and the tumour burden.")
    if 0 < total_ml < SMALL_LIVER_ML:
        out.append(f"The labelled liver is only {total_ml:.0f} mL (an adult liver is about 1,000-2,500 mL): the "
                   "scan may not cover the liver, or the segmentation found little of it. Check before using "
                   "the volumes and the tumour burden.")
    n_par = int(counts[Label.PARENCHYMA])
    if not has_image or sums is None or n_par == 0:
        return out
    liver_hu = float(sums[Label.PARENCHYMA]) / n_par
    if liver_hu < LOW_LIVER_HU:
        out.append(f"The labelled liver tissue has a mean CT value of {liver_hu:.0f} HU, below liver tissue (about "
                   "40-140 HU; a very fatty liver reads lower): check that the label covers the liver.")
    flat = [l.id for l in lesions if l.mean_hu is not None and np.isfinite(l.mean_hu)
            and l.volume_ml >= LESION_CONTRAST_MIN_ML and l.voxel_count >= LESION_CONTRAST_MIN_VOXELS
            and abs(float(l.mean_hu) - liver_hu) < LESION_CONTRAST_HU]
    if flat:
        out.append(f"Lesion{'s' if len(flat) > 1 else ''} {', '.join(map(str, flat))} "
                   f"{'have' if len(flat) > 1 else 'has'} the same CT value as the liver tissue (within "
                   f"{LESION_CONTRAST_HU:.0f} HU of its {liver_hu:.0f} HU): a metastasis usually differs; check "
                   f"{'them' if len(flat) > 1 else 'it'}.")
    return out


def _build_report(counts: np.ndarray, sums: Optional[np.ndarray], sq: Optional[np.ndarray],
                  n_vessel_inside: int, raw: list, geometry: Geometry, prov: dict,
                  has_image: bool, numbering=None) -> MeasurementReport:
    """The report from per-label voxel counts / HU sums / HU sums of squares (arrays of 256), the number
    of vessel voxels inside the filled outline and the raw lesion rows (see :func:`_lesion_raw`).

    Shared by :func:`measure` and :class:`IncrementalMeasurer`, so both give the same report.
    """
    vox_ml = geometry.voxel_volume_ml
    warnings: list[str] = []
    unknown = [int(v) for v in np.flatnonzero(counts) if v not in BY_LABEL and v != 0]
    if unknown:
        warnings.append(f"Label values {unknown} are not LiverPlan structures and were not measured.")

    ms: list[Measurement] = []
    implausible = []
    for s in ALL_STRUCTURES:
        n = int(counts[s.label])
        ms.append(Measurement(f"{s.name} voxels", n, "voxels", f"Number of voxels labelled {s.name}.",
                              f"{s.key}.voxels"))
        ms.append(Measurement(f"{s.name} volume", _r(n * vox_ml), "mL", f"Volume of {s.name}: "
                              + DEFINITIONS["volume"], f"{s.key}.volume_ml"))
        if has_image:
            mean = float(sums[s.label]) / n if n else float("nan")
            sd = np.sqrt(max(float(sq[s.label]) / n - mean * mean, 0.0)) if n else float("nan")
            ms.append(Measurement(f"{s.name} mean HU", _r(mean, 1) if n else float("nan"), "HU",
                                  f"Mean CT value of {s.name}.", f"{s.key}.mean_hu"))
            ms.append(Measurement(f"{s.name} HU SD", _r(sd, 1) if n else float("nan"), "HU",
                                  f"Standard deviation of the CT values of {s.name}.", f"{s.key}.sd_hu"))
            if n and not HU_PLAUSIBLE[0] <= mean <= HU_PLAUSIBLE[1]:
                implausible.append(f"{s.name} {mean:.0f} HU")
    if implausible:
        warnings.append(f"Mean CT value far from soft tissue ({', '.join(implausible)}; expected "
                        f"{HU_PLAUSIBLE[0]} to {HU_PLAUSIBLE[1]} HU): this label covers air, fat, bone or "
                        "metal, or the image is not a CT in Hounsfield units; check it before using its numbers.")

    n_total = int(counts[Label.PARENCHYMA] + counts[Label.CRLM]) + int(n_vessel_inside)
    total_ml = n_total * vox_ml
    lesion_ml = int(counts[Label.CRLM]) * vox_ml
    ms.append(Measurement("Intrahepatic vessel volume", _r(n_vessel_inside * vox_ml), "mL",
                          "Portal vein, hepatic vein and unassigned vessel voxels inside the liver's filled "
                          "outline.",
                          "liver.intrahepatic_vessels_ml"))
    ms.append(Measurement("Total liver volume", _r(total_ml), "mL", DEFINITIONS["total_liver_volume"],
                          "liver.total_volume_ml"))

    # --- lesions ---
    lesions = _lesions_from_raw(raw, geometry, numbering,
                                has_liver=bool(counts[Label.PARENCHYMA]), has_image=has_image)
    # cut by the scanned volume: its first or last slice, or the side of the field of view (a liver-targeted
    # reconstruction); an axis of one voxel cuts everything and says nothing
    cut = [a for a, n in enumerate(geometry.shape) if n > 1]
    at_edge = [l.id for l in lesions if any(l.bbox[a][0] == 0 or l.bbox[a][1] == geometry.shape[a] for a in cut)]
    if at_edge:
        warnings.append(f"Lesion{'s' if len(at_edge) > 1 else ''} {', '.join(map(str, at_edge))} reach"
                        f"{'' if len(at_edge) > 1 else 'es'} the edge of the scanned volume (the first or last slice, "
                        "or the side of the field of view) and may extend beyond it: volume and diameters are "
                        "lower bounds.")
    ms.append(Measurement("Lesion count", len(lesions), "lesions", DEFINITIONS["lesion"], "crlm.count"))
    ms.append(Measurement("Total lesion volume", _r(lesion_ml), "mL",
                          "Sum of the volumes of all CRLM lesions.", "crlm.total_volume_ml"))
    burden = 100.0 * lesion_ml / total_ml if total_ml > 0 else float("nan")
    if total_ml <= 0 and lesion_ml > 0:
        warnings.append("Lesions are labelled but there is no liver: the tumour burden is undefined.")
    warnings.extend(_plausibility_warnings(counts, sums, total_ml, lesions, has_image))
    flagged = [l for l in lesions if l.flags]
    if flagged:
        warnings.append("Doubtful lesion" + ("s" if len(flagged) > 1 else "") + ": "
                        + "; ".join(f"lesion {l.id}: {', '.join(l.flags)}" for l in flagged)
                        + ". Check " + ("them" if len(flagged) > 1 else "it") + " before counting "
                        + ("them" if len(flagged) > 1 else "it") + " as metastases.")
    ms.append(Measurement("Tumour burden", _r(burden, 2) if np.isfinite(burden) else burden, "%",
                          DEFINITIONS["tumour_burden"], "crlm.tumour_burden_pct"))
    if lesions:
        ms.append(Measurement("Largest lesion diameter", max(l.longest_diameter_mm for l in lesions), "mm",
                              "Longest 3D diameter of the largest-diameter lesion. "
                              + DEFINITIONS["longest_diameter"], "crlm.max_diameter_mm"))
    return MeasurementReport(measurements=ms, lesions=lesions, geometry=geometry, provenance=dict(prov),
                             warnings=warnings)


def _lesion_table(image: Optional[np.ndarray], labels: np.ndarray, idx: np.ndarray, lab: np.ndarray,
                  geometry: Geometry) -> list[Lesion]:
    return _lesions_from_raw(_lesion_raw(image, labels, idx, lab, geometry), geometry,
                             has_liver=bool(np.any(lab == Label.PARENCHYMA)), has_image=image is not None)


def _lesion_raw(image: Optional[np.ndarray], labels: np.ndarray, idx: np.ndarray, lab: np.ndarray,
                geometry: Geometry) -> list[tuple]:
    """Unnumbered lesion rows of the whole label map (``idx``/``lab``: flat indices and values of its
    foreground voxels)."""
    les_idx = idx[lab == Label.CRLM]
    if les_idx.size == 0:
        return []
    zyx = np.unravel_index(les_idx, labels.shape)
    lo = [int(a.min()) for a in zyx]
    hi = [int(a.max()) + 1 for a in zyx]
    return _components_raw(image, labels, tuple(slice(a, b) for a, b in zip(lo, hi)), geometry)


def _components_raw(image: Optional[np.ndarray], labels: np.ndarray, crop_sl: tuple[slice, slice, slice],
                    geometry: Geometry) -> list[tuple]:
    """Rows (voxel count, centroid zyx, 3D diameter, axial diameter, mean HU, bbox, sorted flat voxel
    indices of the whole grid, liver contact) of the lesions
    (26-connected components of label 5) found in ``labels[crop_sl]``; indices are of the whole grid.
    Components cut by the crop's faces are reported as cut: the caller chooses a crop that holds them."""
    import cc3d

    lo = [int(s.start) for s in crop_sl]
    crop = labels[crop_sl] == Label.CRLM
    cc, n = cc3d.connected_components(crop, connectivity=LESION_CONNECTIVITY, return_N=True)
    if n == 0:
        return []
    stats = cc3d.statistics(cc)
    spacing = tuple(float(s) for s in geometry.spacing)
    img_crop = image[crop_sl] if image is not None else None
    raw = []
    for i in range(1, n + 1):
        bb = stats["bounding_boxes"][i]
        sub = cc[bb] == i
        count = int(stats["voxel_counts"][i])
        d3, dax = lesion_diameters(sub, spacing)
        c_local = np.asarray(stats["centroids"][i], float)
        c_zyx = c_local + np.asarray(lo, float)
        mean_hu = float(img_crop[bb][sub].mean()) if img_crop is not None else None
        bbox = tuple((int(s.start) + o, int(s.stop) + o) for s, o in zip(bb, lo))
        nz = np.nonzero(sub)
        flat = np.ravel_multi_index(tuple(a + b[0] for a, b in zip(nz, bbox)), labels.shape).astype(np.int64)
        raw.append((count, c_zyx, d3, dax, mean_hu, bbox, flat, _liver_contact(labels, bbox, flat)))
    return raw


def _liver_contact(labels: np.ndarray, bbox, flat: np.ndarray) -> Optional[float]:
    """Share of the voxels bordering a lesion (its 26-neighbours that are not the lesion) that are liver
    tissue (:data:`LIVER_TISSUE_LABELS`); None when it has no border inside the image."""
    from scipy import ndimage as ndi

    lo = [max(0, b[0] - 1) for b in bbox]
    hi = [min(n, b[1] + 1) for b, n in zip(bbox, labels.shape)]
    sub = labels[tuple(slice(a, b) for a, b in zip(lo, hi))]
    mask = np.zeros(sub.shape, bool)
    zyx = np.unravel_index(flat, labels.shape)
    mask[tuple(a - o for a, o in zip(zyx, lo))] = True
    # the 26-neighbour dilation as a 3 x 3 x 3 maximum filter (several times faster than binary_dilation)
    shell = ndi.maximum_filter(mask.view(np.uint8), size=3, mode="constant").view(bool) & ~mask
    vals = sub[shell]
    if vals.size == 0:
        return None
    return float(np.count_nonzero(np.isin(vals, LIVER_TISSUE_LABELS))) / float(vals.size)


def _lesions_from_raw(raw: list[tuple], geometry: Geometry, numbering=None, has_liver: bool = True,
                      has_image: bool = True) -> list[Lesion]:
    """The lesions, largest first (ties broken by position so the order is reproducible), numbered 1..n in
    that order, or by ``numbering`` (an engine.lesion_ids.LesionNumbering: the numbers kept through edits)."""
    vox_ml = geometry.voxel_volume_ml
    raw = sorted(raw, key=lambda r: (-r[0], r[1][0], r[1][1], r[1][2]))
    ids = numbering.assign([r[6] for r in raw]) if numbering is not None else range(1, len(raw) + 1)
    out = []
    for k, (count, c_zyx, d3, dax, mean_hu, bbox, _flat, contact) in zip(ids, raw):
        lps = geometry.index_to_physical(c_zyx)
        out.append(Lesion(
            id=k, voxel_count=count, volume_ml=_r(count * vox_ml, 4),
            longest_diameter_mm=_r(d3, 2), axial_diameter_mm=_r(dax, 2),
            centroid_lps_mm=tuple(_r(v, 2) for v in lps), centroid_zyx=tuple(_r(v, 2) for v in c_zyx),
            slice_range=(bbox[0][0], bbox[0][1] - 1), mean_hu=None if mean_hu is None else _r(mean_hu, 1),
            bbox=bbox, liver_contact=None if contact is None else _r(contact, 3),
            flags=lesion_flags(mean_hu if has_image else None, contact, has_liver)))
    return out


def format_tables(report: MeasurementReport) -> str:
    """Plain-text measurement and lesion tables (for the CLI and logs)."""
    lines = []
    w = max(len(m.name) for m in report.measurements)
    lines.append(f"{'Measurement':<{w}}  {'Value':>12}  Units")
    for m in report.measurements:
        v = m.value
        if isinstance(v, (int, np.integer)):
            txt = f"{v:d}"
        elif v is None or not np.isfinite(v):
            txt = "n/a"
        else:
            txt = f"{v:.2f}" if m.units in ("mL", "%", "mm") else f"{v:.1f}"
        lines.append(f"{m.name:<{w}}  {txt:>12}  {m.units}")
    lines.append("")
    lines.append(f"Lesions ({report.connectivity}-connected components of the CRLM label, largest first): "
                 f"{len(report.lesions)}")
    if report.lesions:
        lines.append(f"{'id':>3} {'volume mL':>10} {'3D diam mm':>10} {'axial mm':>9} "
                     f"{'centroid LPS mm (x, y, z)':>28} {'slices':>9} {'mean HU':>8}")
        for l in report.lesions:
            c = "(" + ", ".join(f"{v:.1f}" for v in l.centroid_lps_mm) + ")"
            hu = "n/a" if l.mean_hu is None else f"{l.mean_hu:.1f}"
            lines.append(f"{l.id:>3} {l.volume_ml:>10.3f} {l.longest_diameter_mm:>10.1f} "
                         f"{l.axial_diameter_mm:>9.1f} {c:>28} {l.slice_range[0] + 1:>4}-{l.slice_range[1] + 1:<4} "
                         f"{hu:>8}")
    for wmsg in report.warnings:
        lines.append(f"Warning: {wmsg}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Incremental measurement after an edit
# ------------------------------------------------------------------------------------------------
#: (z0, z1, y0, y1, x0, x1) half-open voxel index ranges, as in engine.edits.Box.
BoxZYX = tuple[int, int, int, int, int, int]


def _vessels_inside_per_slice(labels: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Vessel (2, 3, 6) voxels inside the filled liver outline, per axial slice of ``labels`` (int64).

    The outline is a per-slice operation whose result does not depend on the in-plane crop (the crop
    always keeps the closing radius + 1 voxel of background around the liver), so counting it on a run
    of slices gives the same numbers as on the whole volume.
    """
    out = np.zeros(labels.shape[0], np.int64)
    outline, sl = filled_liver_outline(labels, spacing)
    if outline.size:
        sub = labels[sl]
        inside = outline & np.isin(sub, VESSEL_LABELS)
        out[sl[0]] = np.count_nonzero(inside, axis=(1, 2))
    return out


class IncrementalMeasurer:
    """Keeps a case's measurements up to date after edits at the cost of the edited region only.

    ``IncrementalMeasurer(case)`` measures once in full; after the label map (``case.labels``, edited in
    place) changed inside a box, ``update(box)`` returns a :class:`MeasurementReport` identical to
    ``measure(case)``: per-label voxel counts and HU sums / sums of squares are corrected from the box
    alone (exact for integer CTs, whose float64 sums are exact; for a float CT the HU mean/SD
    agree with measure() to their rounding), the filled liver outline is recomputed only for the
    axial slices the box spans, and the lesion table only when label 5 changed, by re-labelling only the
    lesions that touch the box (the others are reused).

    The measurer keeps its own copy of the label map as it last measured it: it compares that copy
    with the live labels inside the box, so the box may be larger than the change (``None`` = anywhere)
    and labels edited again while an update runs (another thread) never leave it inconsistent — the next
    update with that edit's box catches up. Memory: one byte per voxel.
    """

    def __init__(self, case_or_image: Union[Case, np.ndarray, None], labels: Optional[np.ndarray] = None,
                 geometry: Optional[Geometry] = None, numbering=None) -> None:
        image, live, geometry, prov = _as_arrays(case_or_image, labels, geometry)
        #: engine.lesion_ids.LesionNumbering: lesion numbers kept through edits (None: 1..n by size)
        self.numbering = numbering
        if isinstance(case_or_image, Case) and labels is None:
            live = case_or_image.labels
        self.live = live                       # edited in place by the caller
        self.case = case_or_image if isinstance(case_or_image, Case) else None
        self.image = image
        self.geometry = geometry
        self.provenance = prov
        self.spacing = tuple(float(s) for s in geometry.spacing)
        self.labels = np.array(live, dtype=np.uint8, copy=True)   # state of the last report
        # float64 sums of integer HU values are exact (far below 2**53), as in measure(): corrections
        # from a box then give exactly the full recount for integer CTs.
        flat = self.labels.reshape(-1)
        idx = np.flatnonzero(flat)
        lab = flat[idx]
        self.counts = np.bincount(lab, minlength=256).astype(np.int64)
        self.sums = self.sq = None
        if image is not None:
            vals = image.reshape(-1)[idx].astype(np.float64)
            # (astype: bincount of an empty label map returns integers)
            self.sums = np.bincount(lab, weights=vals, minlength=256).astype(np.float64)
            self.sq = np.bincount(lab, weights=vals * vals, minlength=256).astype(np.float64)
            del vals
        self.vessels_per_slice = _vessels_inside_per_slice(self.labels, self.spacing)
        self.raw = _lesion_raw(image, self.labels, idx, lab, geometry)
        self.report = self._report()

    def _report(self) -> MeasurementReport:
        if self.case is not None:
            # The case's provenance changes with the edits (e.g. "edited"): read it as measure() would.
            self.provenance = self.case.provenance.to_dict()
            self.provenance["case_name"] = self.case.name
        return _build_report(self.counts, self.sums, self.sq, int(self.vessels_per_slice.sum()), self.raw,
                             self.geometry, self.provenance, self.image is not None, self.numbering)

    def update(self, box: Optional[BoxZYX] = None) -> MeasurementReport:
        """Bring the report up to date with the live labels; ``box`` bounds where they may have changed
        since the last update (None: anywhere — the whole volume is compared, ~50 ms on 512^2 x 300)."""
        shape = self.labels.shape
        if box is None:
            box = (0, shape[0], 0, shape[1], 0, shape[2])
        b = [max(0, int(box[0])), min(shape[0], int(box[1])), max(0, int(box[2])), min(shape[1], int(box[3])),
             max(0, int(box[4])), min(shape[2], int(box[5]))]
        if b[0] >= b[1] or b[2] >= b[3] or b[4] >= b[5]:
            self.report = self._report()
            return self.report
        sl = (slice(b[0], b[1]), slice(b[2], b[3]), slice(b[4], b[5]))
        new = np.array(self.live[sl], dtype=np.uint8, copy=True)   # one read: the live map may move on
        old = self.labels[sl]
        changed = new != old
        if not changed.any():
            self.report = self._report()
            return self.report
        # Shrink to the changed voxels' own box.
        cb = [0] * 6
        for ax in range(3):
            nz = np.flatnonzero(changed.any(axis=tuple(a for a in range(3) if a != ax)))
            cb[2 * ax], cb[2 * ax + 1] = b[2 * ax] + int(nz[0]), b[2 * ax] + int(nz[-1]) + 1
        loc = tuple(slice(cb[2 * a] - b[2 * a], cb[2 * a + 1] - b[2 * a]) for a in range(3))
        new, old, changed = new[loc], old[loc], changed[loc]
        sl = tuple(slice(cb[2 * a], cb[2 * a + 1]) for a in range(3))

        o, n = old[changed], new[changed]
        self.counts -= np.bincount(o, minlength=256)
        self.counts += np.bincount(n, minlength=256)
        if self.image is not None:
            v = self.image[sl][changed].astype(np.float64)
            self.sums += np.bincount(n, weights=v, minlength=256) - np.bincount(o, weights=v, minlength=256)
            self.sq += (np.bincount(n, weights=v * v, minlength=256)
                        - np.bincount(o, weights=v * v, minlength=256))
        crlm_changed = bool(np.any((o == Label.CRLM) | (n == Label.CRLM)))
        self.labels[sl] = new

        # The filled outline is per axial slice: only the slices the change spans can differ.
        z0, z1 = cb[0], cb[1]
        self.vessels_per_slice[z0:z1] = _vessels_inside_per_slice(self.labels[z0:z1], self.spacing)

        if crlm_changed:
            self.raw = self._update_lesions(cb)
        else:
            self.raw = self._update_contacts(cb)
        self.report = self._report()
        return self.report

    def _update_lesions(self, cb: list[int]) -> list[tuple]:
        """Re-label only the lesions that can have changed: those whose box meets the changed box grown
        by one voxel (26-connectivity), growing the region until no old lesion straddles its border, so
        every component found in it is whole and every lesion outside it is untouched."""
        shape = self.labels.shape
        reg = [max(0, cb[0] - 1), min(shape[0], cb[1] + 1), max(0, cb[2] - 1), min(shape[1], cb[3] + 1),
               max(0, cb[4] - 1), min(shape[2], cb[5] + 1)]
        keep = list(self.raw)
        touched: list[tuple] = []
        grew = True
        while grew:
            grew = False
            rest = []
            for r in keep:
                bb = r[5]
                if all(bb[a][0] < reg[2 * a + 1] and reg[2 * a] < bb[a][1] for a in range(3)):
                    touched.append(r)
                    for a in range(3):
                        reg[2 * a] = min(reg[2 * a], bb[a][0])
                        reg[2 * a + 1] = max(reg[2 * a + 1], bb[a][1])
                    grew = True
                else:
                    rest.append(r)
            keep = rest
        crop_sl = tuple(slice(reg[2 * a], reg[2 * a + 1]) for a in range(3))
        return self._update_contacts(cb, keep) + _components_raw(self.image, self.labels, crop_sl, self.geometry)

    def _update_contacts(self, cb: list[int], rows: Optional[list] = None) -> list[tuple]:
        """The lesions' liver contact where the change (box ``cb``) met their border (the labels around a
        lesion changed, the lesion did not)."""
        out = []
        for r in (self.raw if rows is None else rows):
            bb = r[5]
            if all(bb[a][0] - 1 < cb[2 * a + 1] and cb[2 * a] < bb[a][1] + 1 for a in range(3)):
                r = r[:7] + (_liver_contact(self.labels, bb, r[6]),)
            out.append(r)
        return out



def update_measurements(case: Case, measurer: Optional["IncrementalMeasurer"], box, numbering=None) -> tuple:
    """Measurements of ``case`` after an edit (runs on a worker thread): a full pass that sets up an
    :class:`IncrementalMeasurer` when there is none for these labels yet, else an update from the
    changed ``box`` (z0, z1, y0, y1, x0, x1; None = anywhere). Returns (measurer, report); the report
    equals :func:`measure` of the case."""
    if measurer is None or measurer.live is not case.labels:
        measurer = IncrementalMeasurer(case, numbering=numbering)
        return measurer, measurer.report
    return measurer, measurer.update(box)
