"""Where each lesion sits: Couinaud segment shares, hemiliver, and its distances to the vessels.

Lesions are the 26-connected components of label 5, numbered exactly as engine.measure numbers them
(largest first, ties by position), so these rows line up with the lesion table.

Distances are surface to surface: between the voxel boxes of the lesion's and the vessel's boundary
voxels, along the line joining the nearest pair of voxel centres (adjacent voxels: 0 mm). The nearest
pair is found with a k-d tree over boundary-voxel centres (scipy.spatial.cKDTree). The error against the
true surfaces is below one voxel diagonal (tested on analytic shapes and phantoms).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..geometry import Geometry
from ..labels import Label, LESION_CONNECTIVITY
from . import couinaud as cn

log = logging.getLogger(__name__)

#: Default abutment threshold (mm): a lesion this close to a vessel is "in contact".
DEFAULT_CONTACT_MM = 1.0
#: A lesion counts as lying in a hemiliver when at least this share of its volume lies there.
HEMI_SHARE_MIN = 0.10

STRUCTURE_NAMES = {"portal_vein": "portal vein", "hepatic_veins": "hepatic vein", "ivc": "IVC"}


@dataclass
class VesselDistance:
    """The shortest distance from one lesion to one vessel structure."""

    structure: str                                  # "portal_vein" / "hepatic_veins" / "ivc"
    distance_mm: Optional[float]                    # None: the structure is not labelled
    branch: str = ""                                # e.g. "right hepatic vein", "main portal vein"
    lesion_point_zyx: Optional[tuple[int, int, int]] = None
    vessel_point_zyx: Optional[tuple[int, int, int]] = None
    lesion_point_lps: Optional[tuple[float, float, float]] = None
    vessel_point_lps: Optional[tuple[float, float, float]] = None
    contact: bool = False

    def to_dict(self) -> dict:
        return {"structure": self.structure, "distance_mm": self.distance_mm, "branch": self.branch,
                "contact": self.contact,
                "lesion_point_zyx": None if self.lesion_point_zyx is None else list(self.lesion_point_zyx),
                "vessel_point_zyx": None if self.vessel_point_zyx is None else list(self.vessel_point_zyx),
                "lesion_point_lps_mm": None if self.lesion_point_lps is None else list(self.lesion_point_lps),
                "vessel_point_lps_mm": None if self.vessel_point_lps is None else list(self.vessel_point_lps)}


@dataclass
class LesionLocation:
    id: int
    voxel_count: int
    volume_ml: float
    centroid_zyx: tuple[float, float, float]
    segment_shares: dict[str, float] = field(default_factory=dict)     # "IV" -> share of the volume (0-1)
    hemiliver_shares: dict[str, float] = field(default_factory=dict)   # "right"/"left" -> share
    near_boundary: bool = False                     # within BOUNDARY_NOTE_MM of a segment boundary
    #: IVa / IVb shares of the lesion's volume (segment IV split by the portal plane), when known
    segment_iv_shares: dict[str, float] = field(default_factory=dict)
    distances: dict[str, VesselDistance] = field(default_factory=dict)

    @property
    def segments_text(self) -> str:
        """'IV 80 %, V 20 %' (largest first), or '' when no segment map."""
        items = sorted(self.segment_shares.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{k} {100 * v:.0f} %" for k, v in items if v >= 0.005)

    @property
    def main_segment(self) -> Optional[str]:
        if not self.segment_shares:
            return None
        return max(self.segment_shares.items(), key=lambda kv: kv[1])[0]

    @property
    def hemiliver(self) -> Optional[str]:
        """'right', 'left', 'both' (>= 10 % in each) or None when the hemilivers are unknown."""
        inside = [h for h, s in self.hemiliver_shares.items() if s >= HEMI_SHARE_MIN]
        if not self.hemiliver_shares or not inside:
            return None
        return inside[0] if len(inside) == 1 else "both"

    @property
    def nearest(self) -> Optional[VesselDistance]:
        ds = [d for d in self.distances.values() if d.distance_mm is not None]
        return min(ds, key=lambda d: d.distance_mm) if ds else None

    def to_row(self) -> dict:
        """One flat row for the CSV lesion table (units in the column names)."""
        row = {"lesion": self.id, "volume_ml": round(self.volume_ml, 3),
               "segments": self.segments_text, "main_segment": self.main_segment or "",
               "segment_iv": ", ".join(f"{k} {100 * v:.0f} %" for k, v in self.segment_iv_shares.items()
                                       if v >= 0.005),
               "hemiliver": self.hemiliver or "", "near_segment_boundary": self.near_boundary}
        for s in ("portal_vein", "hepatic_veins", "ivc"):
            d = self.distances.get(s)
            row[f"{s}_distance_mm"] = None if d is None or d.distance_mm is None else round(d.distance_mm, 2)
            row[f"{s}_branch"] = "" if d is None else d.branch
            row[f"{s}_contact"] = bool(d and d.contact)
        n = self.nearest
        row["nearest_vessel"] = n.branch if n else ""
        row["nearest_distance_mm"] = None if n is None else round(n.distance_mm, 2)
        return row

    def to_dict(self) -> dict:
        d = self.to_row()
        d["segment_shares"] = {k: round(v, 4) for k, v in self.segment_shares.items()}
        d["hemiliver_shares"] = {k: round(v, 4) for k, v in self.hemiliver_shares.items()}
        d["centroid_zyx"] = [round(float(v), 2) for v in self.centroid_zyx]
        d["distances"] = {k: v.to_dict() for k, v in self.distances.items()}
        return d


# ------------------------------------------------------------------------------------------------
def lesion_components(labels: np.ndarray) -> list[tuple[int, np.ndarray, tuple[float, float, float]]]:
    """The lesions as (id, flat voxel indices, centroid zyx), numbered as engine.measure numbers them."""
    import cc3d
    from scipy import ndimage as ndi

    les = labels == Label.CRLM
    objs = ndi.find_objects(les.astype(np.uint8))
    if not objs or objs[0] is None:
        return []
    sl = objs[0]
    lo = np.array([s.start for s in sl])
    cc, n = cc3d.connected_components(les[sl], connectivity=LESION_CONNECTIVITY, return_N=True)
    if n == 0:
        return []
    stats = cc3d.statistics(cc)
    raw = []
    flat_sub = cc.reshape(-1)
    order = np.argsort(flat_sub, kind="stable")
    counts = np.bincount(flat_sub, minlength=n + 1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for i in range(1, n + 1):
        local = order[starts[i]:starts[i + 1]]
        zyx = np.stack(np.unravel_index(local, cc.shape), 1) + lo
        flat = np.ravel_multi_index(zyx.T, labels.shape)
        c = np.asarray(stats["centroids"][i], float) + lo
        raw.append((int(counts[i]), c, np.sort(flat)))
    raw.sort(key=lambda r: (-r[0], r[1][0], r[1][1], r[1][2]))
    return [(k, r[2], tuple(float(v) for v in r[1])) for k, r in enumerate(raw, start=1)]


def boundary_voxels(flat: np.ndarray, shape) -> np.ndarray:
    """The flat indices (subset of ``flat``) with a 6-neighbour outside the set."""
    zyx = np.stack(np.unravel_index(flat, shape), 1)
    lo = zyx.min(0) - 1
    hi = zyx.max(0) + 2
    m = np.zeros(tuple(hi - lo), bool)
    rel = zyx - lo
    m[rel[:, 0], rel[:, 1], rel[:, 2]] = True
    inner = m.copy()
    inner[1:-1, 1:-1, 1:-1] = (m[1:-1, 1:-1, 1:-1] & m[:-2, 1:-1, 1:-1] & m[2:, 1:-1, 1:-1] & m[1:-1, :-2, 1:-1]
                               & m[1:-1, 2:, 1:-1] & m[1:-1, 1:-1, :-2] & m[1:-1, 1:-1, 2:])
    inner[0], inner[-1], inner[:, 0], inner[:, -1], inner[:, :, 0], inner[:, :, -1] = False, False, False, False, False, False
    keep = ~inner[rel[:, 0], rel[:, 1], rel[:, 2]]
    return flat[keep]


class VesselIndex:
    """Boundary voxels of one vessel structure in a k-d tree (grid mm), with a branch name per voxel."""

    def __init__(self, structure: str, flat: np.ndarray, shape, spacing, names: Optional[np.ndarray] = None):
        from scipy.spatial import cKDTree

        self.structure = structure
        self.shape = tuple(shape)
        self.spacing = np.asarray(spacing, float)
        self.flat = boundary_voxels(flat, shape) if flat.size else flat
        self.names = None
        if names is not None and flat.size:
            # names given for every voxel of ``flat``: keep those of the boundary voxels
            pos = np.searchsorted(flat, self.flat)
            self.names = names[pos]
        pts = np.stack(np.unravel_index(self.flat, shape), 1) * self.spacing if self.flat.size else np.zeros((0, 3))
        self.tree = cKDTree(pts) if len(pts) else None

    def nearest(self, lesion_flat: np.ndarray) -> Optional[tuple[float, int, int]]:
        """(surface gap mm, lesion flat index, vessel flat index) or None when the structure is empty."""
        if self.tree is None or lesion_flat.size == 0:
            return None
        pts = np.stack(np.unravel_index(lesion_flat, self.shape), 1) * self.spacing
        # an upper bound from every 16th point first: the full query then prunes all far branches
        d0, _ = self.tree.query(pts[::16], k=1)
        bound = float(d0.min()) + float(np.linalg.norm(self.spacing)) * 4 + 1e-6
        d, j = self.tree.query(pts, k=1, distance_upper_bound=bound)
        i = int(np.argmin(d))
        dc = float(d[i])
        if dc == 0:
            return 0.0, int(lesion_flat[i]), int(self.flat[j[i]])
        u = np.abs(self.tree.data[j[i]] - pts[i]) / dc
        with np.errstate(divide="ignore"):
            through = float(np.min(np.where(u > 1e-9, self.spacing / u, np.inf)))
        return max(0.0, dc - through), int(lesion_flat[i]), int(self.flat[j[i]])


def vessel_indices(labels: np.ndarray, spacing, est: Optional[cn.SegmentEstimate]) -> dict[str, VesselIndex]:
    """k-d trees of the portal vein, the hepatic veins (without an IVC separated from them) and the IVC,
    with branch names where the estimate found the branches."""
    shape = labels.shape
    out = {}
    pv = np.flatnonzero(labels == Label.PORTAL_VEIN)
    pv_names = None
    if pv.size and est is not None and est.portal_trunk_voxels is not None and est.portal_trunk_voxels.size:
        pv_names = _portal_names(pv, shape, spacing, est)
    out["portal_vein"] = VesselIndex("portal_vein", pv, shape, spacing, pv_names)
    hv = np.flatnonzero(labels == Label.HEPATIC_VEINS)
    ivc = np.flatnonzero(labels == Label.IVC)
    if est is not None and est.ivc_voxels is not None and est.ivc_voxels.size and not ivc.size:
        ivc = np.sort(est.ivc_voxels)
        hv = np.setdiff1d(hv, ivc, assume_unique=True)
    hv_names = None
    if hv.size and est is not None and est.vein_voxels:
        hv_names = np.full(hv.size, "hepatic vein", dtype=object)
        for vein, vox in est.vein_voxels.items():
            hv_names[np.isin(hv, vox)] = f"{vein} hepatic vein"
    out["hepatic_veins"] = VesselIndex("hepatic_veins", hv, shape, spacing, hv_names)
    out["ivc"] = VesselIndex("ivc", ivc, shape, spacing, None)
    return out


def _portal_names(pv: np.ndarray, shape, spacing, est: cn.SegmentEstimate) -> np.ndarray:
    """'main portal vein' near the trunk (within its radius + 2 mm of the trunk's core), else the right or
    left portal vein by the hemiliver the voxel lies in (the plane model's Cantlie line)."""
    from scipy.spatial import cKDTree

    sp = np.asarray(spacing, float)
    pts = np.stack(np.unravel_index(pv, shape), 1) * sp
    trunk = np.stack(np.unravel_index(est.portal_trunk_voxels, shape), 1) * sp
    d, _ = cKDTree(trunk).query(pts, k=1, distance_upper_bound=est.vessels.portal_trunk_radius_mm + 2.0)
    names = np.full(pv.size, "portal vein", dtype=object)
    if est.vessels.vein_psi_deg:
        _, hemi = cn.segments_from_model(pts, est.vessels, sp[0])
        names[hemi == cn.HEMI_RIGHT] = "right portal vein"
        names[hemi == cn.HEMI_LEFT] = "left portal vein"
    names[np.isfinite(d)] = "main portal vein"
    return names


def locate_lesion(lid: int, flat: np.ndarray, centroid, labels_shape, geometry: Geometry,
                  est: Optional[cn.SegmentEstimate], vessels: dict[str, VesselIndex],
                  contact_mm: float = DEFAULT_CONTACT_MM, offset=(0, 0, 0)) -> LesionLocation:
    """The location and vessel distances of one lesion (its flat voxel indices on the grid). Voxel indices in
    the result are shifted by ``offset`` (the grid is a crop of the case's, which starts there)."""
    vox_ml = geometry.voxel_volume_ml
    off = np.asarray(offset, float)
    loc = LesionLocation(id=lid, voxel_count=int(flat.size), volume_ml=flat.size * vox_ml,
                         centroid_zyx=tuple(float(v) for v in np.asarray(centroid, float) + off))
    if est is not None and est.segments_ok and est.segments is not None:
        seg = est.segments.reshape(-1)[flat]
        cnt = np.bincount(seg, minlength=9)
        tot = max(1, int(cnt[1:].sum()))
        loc.segment_shares = {cn.SEGMENT_NAMES[k]: cnt[k] / tot for k in range(1, 9) if cnt[k]}
        loc.near_boundary = len(loc.segment_shares) > 1 or _near_other_segment(flat, est.segments, geometry)
        upper = cn.segment_iv_upper(est, geometry.spacing)
        if upper is not None and cnt[4]:
            up = int(np.count_nonzero(upper.reshape(-1)[flat[seg == 4]]))
            loc.segment_iv_shares = {"IVa": up / tot, "IVb": (int(cnt[4]) - up) / tot}
    if est is not None and est.hemilivers_ok and est.hemilivers is not None:
        h = np.bincount(est.hemilivers.reshape(-1)[flat], minlength=3)
        tot = max(1, int(h[1:].sum()))
        loc.hemiliver_shares = {"right": h[1] / tot, "left": h[2] / tot}
    surf = boundary_voxels(flat, labels_shape)
    for s, idx in vessels.items():
        r = idx.nearest(surf)
        if r is None:
            loc.distances[s] = VesselDistance(s, None, STRUCTURE_NAMES[s])
            continue
        gap, lf, vf = r
        name = STRUCTURE_NAMES[s]
        if idx.names is not None:
            name = str(idx.names[np.searchsorted(idx.flat, vf)])
        lz = np.asarray(np.unravel_index(lf, labels_shape), float)
        vz = np.asarray(np.unravel_index(vf, labels_shape), float)
        loc.distances[s] = VesselDistance(
            s, round(gap, 2), name, tuple(int(v) for v in lz + off), tuple(int(v) for v in vz + off),
            tuple(round(float(v), 2) for v in geometry.index_to_physical(lz)),
            tuple(round(float(v), 2) for v in geometry.index_to_physical(vz)), gap <= contact_mm)
    return loc


def _near_other_segment(flat: np.ndarray, segments: np.ndarray, geometry: Geometry) -> bool:
    """Whether another segment lies within BOUNDARY_NOTE_MM of the lesion."""
    from scipy import ndimage as ndi

    sp = np.asarray(geometry.spacing, float)
    zyx = np.stack(np.unravel_index(flat, segments.shape), 1)
    m = np.ceil(cn.BOUNDARY_NOTE_MM / sp).astype(int) + 1
    lo = np.maximum(zyx.min(0) - m, 0)
    hi = np.minimum(zyx.max(0) + m + 1, segments.shape)
    sub = segments[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    les = np.zeros(sub.shape, bool)
    rel = zyx - lo
    les[rel[:, 0], rel[:, 1], rel[:, 2]] = True
    own = np.bincount(sub[les], minlength=9)[1:].argmax() + 1
    d = ndi.distance_transform_edt(~les, sampling=sp)
    ring = (d <= cn.BOUNDARY_NOTE_MM) & (sub > 0)
    return bool(np.any(sub[ring] != own))


def bilobar(locations: list[LesionLocation]) -> Optional[bool]:
    """True when lesions lie in both hemilivers (>= 10 % of a lesion's volume counts), None when the
    hemilivers are unknown."""
    if not locations:
        return False
    if any(not l.hemiliver_shares for l in locations):
        return None
    right = any(l.hemiliver_shares.get("right", 0) >= HEMI_SHARE_MIN for l in locations)
    left = any(l.hemiliver_shares.get("left", 0) >= HEMI_SHARE_MIN for l in locations)
    return right and left
