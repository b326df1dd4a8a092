"""Couinaud segments I-VIII and the two hemilivers, estimated from the segmented vessels.

Method: the radiological plane model of Couinaud's segments (Couinaud C., *Le foie: études anatomiques et
chirurgicales*, Masson 1957; Bismuth H., "Surgical anatomy and anatomical surgery of the liver",
World J Surg 1982;6:3-9), as automated from CT vessel segmentations by Soler L. et al., "Fully automatic
anatomical, pathological, and functional segmentation from CT scans for hepatic surgery", Comput Aided
Surg 2001;6:131-142:

* three vertical half-planes through the IVC's axis and the right, middle and left hepatic veins split the
  liver into four sectors: right posterior (VI/VII), right anterior (V/VIII), left medial (IV) and left
  lateral (II/III); the middle-vein plane (Cantlie's line) divides the right and left hemilivers;
* the transverse plane through the portal bifurcation splits the right sectors and IV into a superior
  (VII, VIII, IVa) and an inferior (VI, V, IVb) segment;
* the left lateral section is split into II and III along the left hepatic vein's course, as Bismuth
  divides them (segment II lies above and behind the left hepatic vein, III below and in front of it): the
  plane through the vein's stem (its voxels in the band where the veins are read, below) that contains the
  vein's own direction (their principal axis) and is as nearly perpendicular to the "up and back" direction
  as that allows; II is the side towards superior-posterior. Where the left vein's stem runs up and back
  itself (no such plane), the transverse plane of the bifurcation is used and the quality note says so;
* segment I (caudate) is the liver between the IVC and the plane of the hilum / ligamentum venosum (through
  the portal bifurcation and the IVC's front wall at the confluence's height), from the portal bifurcation
  up to the hepatic-vein confluence, from the IVC's right wall to 25 mm left of its left wall
  (:func:`caudate_region`, with its references).

Why planes rather than portal-territory assignment (Selle D. et al., IEEE TMI 2002;21:1344-1357): the
planes need only the three main hepatic-vein stems, the IVC and the portal bifurcation, which a model
segments reliably (study Dice 0.76-0.81), while territory assignment needs the portal tree labelled down
to its eight segmental branches, which a fragmented automatic portal tree rarely allows. The price is
accuracy near the boundaries: real portal territories deviate from planes by up to 1-2 cm (Fasel J.H.D.
et al., "Segmental anatomy of the liver: poor correlation with CT", Radiology 1998;206:151-156), so a
lesion within a few millimetres of a boundary is flagged, and the whole map is called an estimate.

Where the vessels do not allow the estimate (fewer than three hepatic veins, no IVC, no portal bifurcation),
the result says which part could not be estimated and why; it never guesses.

Coordinates: arrays are (z, y, x); "grid mm" = index x spacing in the canonical LPS grid (x to the
patient's left, y posterior, z superior). The angle psi of a point around the IVC axis is measured in the
axial plane from the patient's left (+x) through anterior (-y) to the patient's right (-x), in degrees in
[-90, 270): the left hepatic vein lies at small psi, the middle vein in between, the right vein near 180.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..labels import Label
from ..progress import CancelToken, ProgressCallback, check, no_progress

log = logging.getLogger(__name__)

#: Segment map values: 0 outside the liver, 1..8 = Couinaud segments I..VIII.
SEGMENT_NAMES: dict[int, str] = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII"}
#: Colours (RGB) of the segment layer: distinct hues, right hemiliver warm, left cool, caudate grey.
SEGMENT_COLOURS: dict[int, tuple[int, int, int]] = {
    1: (150, 150, 150), 2: (60, 120, 220), 3: (90, 200, 230), 4: (140, 90, 220), 5: (250, 200, 60),
    6: (240, 130, 50), 7: (220, 60, 60), 8: (250, 110, 170)}
RIGHT_SEGMENTS = (5, 6, 7, 8)
LEFT_SEGMENTS = (2, 3, 4)
#: Hemiliver map values.
HEMI_RIGHT, HEMI_LEFT = 1, 2
HEMI_NAMES = {HEMI_RIGHT: "right", HEMI_LEFT: "left"}

#: Hepatic-vein voxels closer than this to the IVC wall are set aside when finding the three veins (there
#: the middle and left veins often share a trunk and all three join the IVC); the veins' planes are read
#: in the band HV_BAND_MM beyond.
HV_CUT_MM = 10.0
#: Angular histogram of the band's hepatic-vein volume: bin and smoothing (degrees).
HV_BIN_DEG = 2.0
HV_SMOOTH_DEG = 6.0
#: Each of the three main veins holds at least this share of the largest one's volume in the band.
HV_MIN_SHARE = 0.3
#: The middle hepatic vein runs forward from the IVC: its plane lies within this range of psi (degrees).
MHV_PSI_RANGE = (50.0, 140.0)
#: Only the vein's course in this band beyond the cut decides its plane (the stem near the IVC; peripheral
#: branches curve into neighbouring sectors).
HV_BAND_MM = 50.0
#: A main vein has at least this volume (mL) in the band.
HV_MIN_ML = 0.15
#: Three veins closer than this (degrees) cannot define three sectors.
HV_MIN_GAP_DEG = 15.0
#: Segment I: how far it reaches to the left of the IVC's left wall (towards the ligamentum venosum's
#: fissure, which the vessels do not show), in mm.
CAUDATE_LEFT_MM = 25.0
#: The portal trunk and its first branches: voxels at least this share of the trunk's radius from the wall.
PORTAL_CORE_SHARE = 0.4
#: A segment with less than this share of the liver is called out in the quality note (adult segments
#: hold roughly 3-30 % each; a sliver means a plane runs along the liver's edge).
SMALL_SEGMENT_SHARE = 0.01
#: A lesion within this distance of a segment boundary is flagged (plane-model uncertainty, see above).
BOUNDARY_NOTE_MM = 5.0

METHOD_TEXT = ("Couinaud/Bismuth plane model (Soler et al., Comput Aided Surg 2001): half-planes through "
               "the IVC axis and the right, middle and left hepatic veins, the transverse plane through "
               "the portal bifurcation, and II/III split along the left hepatic vein (Bismuth 1982)")
CAVEAT_TEXT = ("An estimate: real portal territories deviate from these planes by up to 1-2 cm (Fasel et al., "
               "Radiology 1998); check boundaries that matter for an operation on the images.")


@dataclass
class VesselModel:
    """What the segment estimate found in the vessels (grid mm, see module docstring)."""

    ivc_axis_yx_mm: Optional[np.ndarray] = None     # (nz, 2) IVC axis (y, x) per slice, filled at the ends
    ivc_radius_mm: float = float("nan")
    ivc_source: str = ""                              # "IVC label" / "separated from the hepatic-vein label"
    vein_psi_deg: dict[str, float] = field(default_factory=dict)   # "right"/"middle"/"left" -> psi
    vein_ml: dict[str, float] = field(default_factory=dict)
    bifurcation_zyx_mm: Optional[np.ndarray] = None
    confluence_z_mm: float = float("nan")            # top of the hepatic veins' cut region (segment I limit)
    portal_trunk_radius_mm: float = float("nan")
    #: the II/III plane along the left hepatic vein (grid mm): a point on it and its unit normal (towards II)
    lhv_point_mm: Optional[np.ndarray] = None
    lhv_normal: Optional[np.ndarray] = None

    def to_dict(self) -> dict:
        return {"ivc_radius_mm": _f(self.ivc_radius_mm), "ivc_source": self.ivc_source,
                "hepatic_vein_plane_angles_deg": {k: _f(v) for k, v in self.vein_psi_deg.items()},
                "hepatic_vein_volumes_ml": {k: _f(v) for k, v in self.vein_ml.items()},
                "portal_bifurcation_grid_mm_zyx": None if self.bifurcation_zyx_mm is None
                else [_f(v) for v in self.bifurcation_zyx_mm],
                "hepatic_vein_confluence_z_mm": _f(self.confluence_z_mm),
                "portal_trunk_radius_mm": _f(self.portal_trunk_radius_mm),
                "left_hepatic_vein_plane": None if self.lhv_normal is None else {
                    "point_grid_mm_zyx": [_f(v) for v in self.lhv_point_mm],
                    "normal_zyx_towards_II": [_f(v) for v in self.lhv_normal]}}


def _f(v) -> Optional[float]:
    v = float(v)
    return round(v, 2) if np.isfinite(v) else None


@dataclass
class SegmentEstimate:
    """The segment and hemiliver maps of one label map, with what could and could not be estimated.

    segments: uint8 (z, y, x) 0..8 (0 outside the liver, or everywhere when segments could not be
    estimated); hemilivers: uint8 (z, y, x) 0 / 1 right / 2 left (zeros when not estimated).
    """

    segments: Optional[np.ndarray]
    hemilivers: Optional[np.ndarray]
    segments_ok: bool
    hemilivers_ok: bool
    source: str                          # "estimated from the vessels" / "file: ..." / "model: ..."
    quality: list[str] = field(default_factory=list)        # the notes that travel with the result
    reasons: list[str] = field(default_factory=list)        # why something could not be estimated
    vessels: VesselModel = field(default_factory=VesselModel)
    #: hepatic-vein voxels (flat indices) per named vein, for naming the nearest vessel
    vein_voxels: dict[str, np.ndarray] = field(default_factory=dict)
    ivc_voxels: Optional[np.ndarray] = None                 # flat indices of the (separated) IVC
    portal_trunk_voxels: Optional[np.ndarray] = None        # flat indices of the main portal vein

    @property
    def status_text(self) -> str:
        if self.segments_ok:
            return f"Couinaud segments {self.source}."
        if self.reasons:
            return "Couinaud segments cannot be estimated, because " + "; ".join(self.reasons) + "."
        return "Couinaud segments cannot be estimated."

    def to_dict(self) -> dict:
        return {"source": self.source, "segments_estimated": self.segments_ok,
                "hemilivers_estimated": self.hemilivers_ok, "status": self.status_text,
                "quality": list(self.quality), "reasons": list(self.reasons),
                "method": METHOD_TEXT if self.source.startswith("estimated") else self.source,
                "vessels": self.vessels.to_dict()}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def psi_deg(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Angle (degrees, [-90, 270)) of axial offsets (mm) from the IVC axis: 0 = patient's left (+x),
    90 = anterior (-y), 180 = patient's right (-x), -90 = posterior (+y)."""
    dy, dx = np.asarray(dy), np.asarray(dx)
    dt = np.float32 if dy.dtype == np.float32 and dx.dtype == np.float32 else np.float64
    a = np.atleast_1d(np.degrees(np.arctan2(-dy.astype(dt, copy=False), dx.astype(dt, copy=False))))
    a[a < -90.0] += 360.0                                                                 # (-180, 180] -> [-90, 270)
    return a if (dy.ndim or dx.ndim) else a[0]


def circular_mean_deg(angles: np.ndarray, weights: Optional[np.ndarray] = None) -> float:
    """Weighted circular mean (degrees, [-90, 270))."""
    r = np.radians(np.asarray(angles, float))
    w = np.ones_like(r) if weights is None else np.asarray(weights, float)
    m = float(np.degrees(np.arctan2((w * np.sin(r)).sum(), (w * np.cos(r)).sum())))
    return m + 360.0 if m < -90.0 else m


def sectors_from_psi(psi: np.ndarray, left: float, middle: float, right: float) -> np.ndarray:
    """Sector of each angle: 1 right posterior, 2 right anterior, 3 left medial (IV), 4 left lateral.

    Between the right and the left vein, the back (behind the IVC) is split at the bisector of the arc
    that runs through posterior."""
    back = (right + left + 360.0) / 2.0
    back = back - 360.0 if back >= 270.0 else back
    p = np.asarray(psi)
    out = np.empty(p.shape, np.uint8)
    # unwrap so that the arc left -> middle -> right -> back(+360) is increasing
    q = np.where(p < left, p + 360.0, p)
    b = back + 360.0 if back < left else back
    b = b + 360.0 if b < right else b
    out[:] = 4
    out[(q >= left) & (q < middle)] = 3
    out[(q >= middle) & (q < right)] = 2
    out[(q >= right) & (q < b)] = 1
    return out


#: (sector, superior) -> Couinaud segment
_SECTOR_SEGMENT = {(1, True): 7, (1, False): 6, (2, True): 8, (2, False): 5, (3, True): 4, (3, False): 4,
                   (4, True): 2, (4, False): 3}


def segment_iv_upper(est: "SegmentEstimate", spacing) -> Optional[np.ndarray]:
    """Where segment IV is IVa: bool (z, y, x) on the estimate's grid, True above the transverse plane of
    the portal bifurcation (IVa, superior; below it IVb, Bismuth 1982), or None when the bifurcation is
    not known. The same plane splits VII/VI, VIII/V and II/III in the plane model."""
    vessels = getattr(est, "vessels", None)
    if est is None or est.segments is None or vessels is None or vessels.bifurcation_zyx_mm is None:
        return None
    bz = float(vessels.bifurcation_zyx_mm[0])
    nz = est.segments.shape[0]
    upper_z = (np.arange(nz) * float(spacing[0])) >= bz
    return np.broadcast_to(upper_z[:, None, None], est.segments.shape)


#: "Up and back" in grid mm (z superior, y posterior): segment II's side of the left hepatic vein.
_UP_BACK = np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0)
#: The left vein's stem must leave at least this much of "up and back" across it to define the plane.
LHV_MIN_NORMAL = 0.3
#: The stem: the left vein's voxels in the band within this angle (degrees) of its plane (its side
#: branches and neighbouring veins' branches drift further).
LHV_STEM_DEG = 12.0


def left_vein_plane(points_zyx_mm: np.ndarray, weights: Optional[np.ndarray] = None
                    ) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """The II/III plane along the left hepatic vein from points of its stem (grid mm, (N, 3)): (a point on
    it, its unit normal towards II), or (None, None) when the stem gives no such plane (too few points, or
    it runs up and back itself)."""
    p = np.asarray(points_zyx_mm, float)
    if len(p) < 5:
        return None, None
    w = np.ones(len(p)) if weights is None else np.asarray(weights, float)
    c = (p * w[:, None]).sum(0) / w.sum()
    q = (p - c) * np.sqrt(w)[:, None]
    _, _, vt = np.linalg.svd(q, full_matrices=False)
    d = vt[0]
    n = _UP_BACK - (_UP_BACK @ d) * d
    if np.linalg.norm(n) < LHV_MIN_NORMAL:
        return None, None
    return c, n / np.linalg.norm(n)


def segments_from_model(zyx_mm: np.ndarray, model: VesselModel, spacing_z: float) -> tuple[np.ndarray, np.ndarray]:
    """Segment (1..8) and hemiliver (1/2) of points (N, 3) in grid mm under the plane model."""
    zyx_mm = np.asarray(zyx_mm, np.float32)       # millions of voxels: float32 halves the memory traffic
    z, y, x = zyx_mm[:, 0], zyx_mm[:, 1], zyx_mm[:, 2]
    axis = np.asarray(model.ivc_axis_yx_mm, np.float32)
    zi = np.clip(np.rint(z / np.float32(spacing_z)).astype(np.int64), 0, len(axis) - 1)
    ay, ax = axis[zi, 0], axis[zi, 1]
    psi = psi_deg(y - ay, x - ax)
    v = model.vein_psi_deg
    sector = sectors_from_psi(psi, v["left"], v["middle"], v["right"])
    hemi = np.where(sector <= 2, HEMI_RIGHT, HEMI_LEFT).astype(np.uint8)
    if model.bifurcation_zyx_mm is None:
        return np.zeros(len(z), np.uint8), hemi
    bz, by, bx = model.bifurcation_zyx_mm
    sup = z >= bz
    seg = np.zeros(len(z), np.uint8)
    for (s, up), val in _SECTOR_SEGMENT.items():
        seg[(sector == s) & (sup == up)] = val
    if model.lhv_normal is not None:
        # II / III along the left hepatic vein (Bismuth), not the transverse plane
        lat = sector == 4
        c = np.asarray(model.lhv_point_mm, np.float32)
        n = np.asarray(model.lhv_normal, np.float32)
        side = (zyx_mm[lat] - c) @ n
        seg[lat] = np.where(side >= 0, 2, 3)
    seg[caudate_region(zyx_mm, model, spacing_z)] = 1
    return seg, hemi


def caudate_region(zyx_mm: np.ndarray, model: VesselModel, spacing_z: float) -> np.ndarray:
    """Segment I (caudate lobe) among points (N, 3) in grid mm: the liver between the IVC and the plane of
    the hilum / ligamentum venosum, from the portal bifurcation up to the hepatic-vein confluence.

    The caudate lobe lies behind the hilar plate and the fissure of the ligamentum venosum and in front of
    the IVC, with the hepatic veins' confluence above and the portal bifurcation below (Couinaud 1957;
    Kumon M., Acta Hepatol Jpn 1985;26:1193-1199; Abdalla E.K., Vauthey J.-N., Couinaud C., "The caudate
    lobe of the liver", Surg Oncol Clin N Am 2002;11:835-848). The ligamentum venosum runs from the left
    portal vein at the hilum up to the IVC where the left hepatic vein joins it, so its plane is estimated as
    the transverse-running plane through the portal bifurcation and the IVC's front wall at the confluence's
    height (not the coronal plane of the bifurcation of the earlier box); the region ends at the IVC's back
    wall, at its right wall (beyond it the caudate process merges with VI/VII and is not told apart), and
    CAUDATE_LEFT_MM left of its left wall (the fissure's left end, which the vessels do not show)."""
    z, y, x = zyx_mm[:, 0], zyx_mm[:, 1], zyx_mm[:, 2]
    out = np.zeros(len(z), bool)
    if model.bifurcation_zyx_mm is None or not np.isfinite(model.confluence_z_mm):
        return out
    axis = np.asarray(model.ivc_axis_yx_mm, np.float32)
    zi = np.clip(np.rint(z / np.float32(spacing_z)).astype(np.int64), 0, len(axis) - 1)
    ay, ax = axis[zi, 0], axis[zi, 1]
    r = np.float32(model.ivc_radius_mm)
    bz, by, _ = (float(v) for v in model.bifurcation_zyx_mm)
    zc = float(model.confluence_z_mm)
    if zc <= bz:
        return out
    jc = int(np.clip(round(zc / spacing_z), 0, len(axis) - 1))
    jy = float(axis[jc, 0]) - float(r)                 # the IVC's front wall at the confluence
    # the plane through (bz, by) and (zc, jy), running left-right: the caudate is on its back side
    dz, dy = zc - bz, jy - by
    behind = ((y - by) * dz - (z - bz) * dy) * (1.0 if dz > 0 else -1.0) > 0
    out = (behind & (y < ay + r) & (x > ax - r) & (x < ax + r + np.float32(CAUDATE_LEFT_MM))
           & (z >= bz) & (z < zc))
    return out


# ------------------------------------------------------------------------------------------------
# IVC
# ------------------------------------------------------------------------------------------------
def _ivc_axis_from_mask(ivc: np.ndarray, spacing) -> tuple[np.ndarray, float]:
    """Per-slice IVC centre (y, x mm) filled to every slice, and the IVC radius (mm)."""
    nz = ivc.shape[0]
    axis = np.full((nz, 2), np.nan)
    areas = []
    for z in range(nz):
        yy, xx = np.nonzero(ivc[z])
        if yy.size:
            axis[z] = (yy.mean() * spacing[1], xx.mean() * spacing[2])
            areas.append(yy.size * spacing[1] * spacing[2])
    ok = np.flatnonzero(np.isfinite(axis[:, 0]))
    if ok.size == 0:
        return axis, float("nan")
    for k in range(2):
        axis[:, k] = np.interp(np.arange(nz), ok, axis[ok, k])
    return axis, float(np.sqrt(np.median(areas) / np.pi))


def _separate_ivc(venous: np.ndarray, spacing, liver_z: tuple[int, int]) -> tuple[Optional[np.ndarray], str]:
    """The IVC inside a venous mask that also holds the hepatic veins (IRCADb's 'venoussystem').

    The IVC is the one near-vertical wide tube: it is found where it runs alone (a single round
    cross-section below or above the hepatic veins) and followed slice by slice as a disk of its own
    radius, so hepatic-vein branches that join it are left out."""
    import cc3d

    nz = venous.shape[0]
    px = spacing[1] * spacing[2]
    # seed: the lowest slice (in the liver's z-range or below it) whose venous voxels form one round blob
    seed = None
    for z in range(nz):
        if not venous[z].any():
            continue
        cc, n = cc3d.connected_components(venous[z], connectivity=8, return_N=True)
        if n == 0:
            continue
        sizes = np.bincount(cc.ravel())[1:]
        k = int(np.argmax(sizes)) + 1
        area = sizes[k - 1] * px
        yy, xx = np.nonzero(cc == k)
        extent = max((yy.max() - yy.min() + 1) * spacing[1], (xx.max() - xx.min() + 1) * spacing[2])
        r = np.sqrt(area / np.pi)
        if 6.0 <= r <= 25.0 and extent <= 2.6 * r and (n == 1 or sizes[k - 1] > 0.8 * sizes.sum()):
            seed = (z, yy.mean(), xx.mean(), r)
            if z <= liver_z[1]:
                break
    if seed is None:
        return None, "no IVC label, and no round vena cava could be found in the hepatic-vein label"
    z0, cy, cx, r = seed
    rad_vox = (1.25 * r / spacing[1], 1.25 * r / spacing[2])
    ivc = np.zeros_like(venous)
    yy_all, xx_all = np.mgrid[0:venous.shape[1], 0:venous.shape[2]]

    def follow(zs):
        y, x = cy, cx
        misses = 0
        for z in zs:
            if misses > 6:
                break
            # a disk window around the current centre; mean shift twice
            ys, ye = int(max(0, y - 2 * rad_vox[0])), int(min(venous.shape[1], y + 2 * rad_vox[0] + 1))
            xs, xe = int(max(0, x - 2 * rad_vox[1])), int(min(venous.shape[2], x + 2 * rad_vox[1] + 1))
            win = venous[z, ys:ye, xs:xe]
            gy, gx = yy_all[ys:ye, xs:xe], xx_all[ys:ye, xs:xe]
            for _ in range(2):
                disk = ((gy - y) / rad_vox[0]) ** 2 + ((gx - x) / rad_vox[1]) ** 2 <= 1.0
                m = win & disk
                if m.sum() < 0.3 * np.pi * rad_vox[0] * rad_vox[1]:
                    break
                y, x = gy[m].mean(), gx[m].mean()
            disk = ((gy - y) / rad_vox[0]) ** 2 + ((gx - x) / rad_vox[1]) ** 2 <= 1.0
            m = win & disk
            if m.sum() < 0.3 * np.pi * rad_vox[0] * rad_vox[1]:
                misses += 1
                continue
            misses = 0
            ivc[z, ys:ye, xs:xe] |= m

    follow(range(z0, nz))
    follow(range(z0 - 1, -1, -1))
    if not ivc.any():
        return None, "no IVC label, and no vena cava could be followed in the hepatic-vein label"
    return ivc, ""


# ------------------------------------------------------------------------------------------------
# hepatic veins
# ------------------------------------------------------------------------------------------------
def _find_veins(hv: np.ndarray, liver: np.ndarray, axis: np.ndarray, r_ivc: float, spacing,
                z_range: tuple[int, int]
                ) -> tuple[dict[str, float], dict[str, float], dict[str, np.ndarray], float, list[str], list[str]]:
    """The right/middle/left hepatic veins: psi of their planes, volumes (mL in the band), voxel index
    arrays, the confluence height (mm), notes and reasons for failure.

    Only intrahepatic hepatic-vein voxels count (a venous label may also hold renal or adrenal veins that
    join the IVC). The veins are found as the peaks of the volume of hepatic-vein voxels by angle around
    the IVC axis, in a band from HV_CUT_MM to HV_CUT_MM + HV_BAND_MM beyond the IVC wall: near the IVC
    the veins join (the middle and left often by a common trunk), and far out their branches interleave;
    in the band the three stems dominate. Connected pieces would not do: thin branches of neighbouring
    veins touch on a coarse grid."""
    from scipy.ndimage import gaussian_filter1d

    zz, yy, xx = np.nonzero(hv)
    if zz.size == 0:
        return {}, {}, {}, float("nan"), [], ["no hepatic veins are labelled"]
    zmm = zz * spacing[0]
    dy, dx = yy * spacing[1] - axis[zz, 0], xx * spacing[2] - axis[zz, 1]
    rad = np.hypot(dy, dx)
    psi = psi_deg(dy, dx)
    inside = liver[zz, yy, xx] & (zz >= z_range[0]) & (zz <= z_range[1])
    near = rad <= r_ivc + HV_CUT_MM
    confluence = float(zmm[near].max()) if near.any() else float(zmm.max())
    band = inside & (rad > r_ivc + HV_CUT_MM) & (rad <= r_ivc + HV_CUT_MM + HV_BAND_MM)
    vox_ml = float(np.prod(spacing)) / 1000.0
    if band.sum() * vox_ml < HV_MIN_ML:
        return {}, {}, {}, confluence, [], ["no intrahepatic hepatic vein reaches beyond the IVC's surroundings"]
    nb = int(360 // HV_BIN_DEG)
    bins = ((psi[band] + 90.0) // HV_BIN_DEG).astype(int) % nb
    h = np.bincount(bins, minlength=nb) * vox_ml
    hs = gaussian_filter1d(h, HV_SMOOTH_DEG / HV_BIN_DEG, mode="wrap")
    peaks = [i for i in range(nb) if hs[i] >= hs[i - 1] and hs[i] > hs[(i + 1) % nb] and hs[i] > 0.02 * hs.max()]
    if not peaks:
        return {}, {}, {}, confluence, [], ["no hepatic vein could be told apart around the IVC"]
    # basins: each peak owns the bins up to the lowest point between it and its neighbours
    peaks.sort()
    bounds = []
    for k, pk in enumerate(peaks):
        nxt = peaks[(k + 1) % len(peaks)] + (nb if k + 1 == len(peaks) else 0)
        seg = [(pk + j) % nb for j in range(nxt - pk + 1)]
        bounds.append(seg[int(np.argmin(hs[seg]))] if len(peaks) > 1 else (pk + nb // 2) % nb)
    groups = []
    for k, pk in enumerate(peaks):
        lo_b = bounds[k - 1] if len(peaks) > 1 else (pk + nb // 2) % nb
        hi_b = bounds[k]
        span = (hi_b - lo_b) % nb or nb
        member = ((bins - lo_b) % nb) < span
        if len(peaks) == 1:
            member[:] = True
        ml = float(member.sum() * vox_ml)
        groups.append({"psi": circular_mean_deg(psi[band][member]) if member.any() else pk * HV_BIN_DEG - 90.0,
                       "ml": ml})
    big = max(g["ml"] for g in groups)
    main = [g for g in groups if g["ml"] >= HV_MIN_SHARE * big and g["ml"] >= HV_MIN_ML]
    extra = [g for g in groups if g not in main]
    notes: list[str] = []
    if len(main) > 3:
        main.sort(key=lambda g: -g["ml"])
        extra += main[3:]
        main = main[:3]
    if len(main) < 3:
        return {}, {}, {}, confluence, notes, [
            f"only {len(main)} of the three main hepatic veins (right, middle, left) could be told apart in the "
            "hepatic-vein label (a vein missing, not segmented, or running in the same plane as another); the "
            "planes between the sectors need all three"]
    main.sort(key=lambda g: g["psi"])
    left, middle, right = (g["psi"] for g in main)
    if not (MHV_PSI_RANGE[0] <= middle <= MHV_PSI_RANGE[1] and middle - left >= HV_MIN_GAP_DEG
            and right - middle >= HV_MIN_GAP_DEG and right - left <= 240.0):
        return {}, {}, {}, confluence, notes, [
            "the hepatic veins found do not fan out from the IVC as the right, middle and left veins do (plane "
            f"angles {left:.0f}, {middle:.0f}, {right:.0f} degrees; the middle vein runs forward, "
            f"{MHV_PSI_RANGE[0]:.0f}-{MHV_PSI_RANGE[1]:.0f}): a main vein is probably missing"]
    if extra:
        notes.append(f"{len(extra)} smaller hepatic-vein branch group(s) ("
                     + ", ".join("%.1f mL at %.0f degrees" % (g["ml"], g["psi"]) for g in extra)
                     + ") were not used as planes (accessory veins or branches).")
    names = ("left", "middle", "right")
    psis = {n: float(g["psi"]) for n, g in zip(names, main)}
    mls = {n: float(g["ml"]) for n, g in zip(names, main)}
    # every hepatic-vein voxel is named after the vein whose plane is nearest in angle
    flat = np.ravel_multi_index((zz, yy, xx), hv.shape)
    d = np.stack([np.abs(((psi - psis[n] + 180.0) % 360.0) - 180.0) for n in names])
    nearest = np.argmin(d, axis=0)
    vox = {n: flat[nearest == k] for k, n in enumerate(names)}
    return psis, mls, vox, confluence, notes, []


# ------------------------------------------------------------------------------------------------
# portal bifurcation
# ------------------------------------------------------------------------------------------------
def _portal_bifurcation(pv: np.ndarray, liver: np.ndarray, spacing
                        ) -> tuple[Optional[np.ndarray], float, Optional[np.ndarray], dict, str]:
    """The portal bifurcation (grid mm, z y x), the trunk radius (mm), the trunk's flat voxel indices,
    the mean x (mm) of the right and left branches, and a reason when it was not found.

    The thick part of the portal tree (the trunk and its first branches: distance-to-wall at least half
    the trunk's radius) is walked from its lowest point; the bifurcation is where the walked front first
    splits into two lasting branches near the liver."""
    import cc3d
    from scipy import ndimage as ndi
    from skimage.graph import MCP_Geometric

    if pv.sum() < 50:
        return None, float("nan"), None, {}, "no portal vein is labelled"
    bb = ndi.find_objects(pv.astype(np.uint8))[0]
    bb = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in bb)
    # sub-millimetre in-plane grids are pooled 2 x 2 (majority): the trunk is 10+ mm wide, and the
    # distance transform and the walk cost 4x less
    f = (1, 2, 2) if max(spacing[1], spacing[2]) < 1.0 else (1, 1, 1)
    sub = pv[bb]
    if f != (1, 1, 1):
        pad = [(0, (-n) % k) for n, k in zip(sub.shape, f)]
        sub = np.pad(sub, pad)
        sub = sub.reshape(sub.shape[0], sub.shape[1] // 2, 2, sub.shape[2] // 2, 2).sum(axis=(2, 4)) >= 2
    sp = tuple(float(s) * k for s, k in zip(spacing, f))
    cc = cc3d.largest_k(sub, k=1, connectivity=26) > 0
    edt = ndi.distance_transform_edt(cc, sampling=sp)
    r_trunk = float(np.percentile(edt[cc], 99.9))
    core = edt >= PORTAL_CORE_SHARE * r_trunk
    ccc = cc3d.connected_components(core, connectivity=26)
    peak = np.unravel_index(int(np.argmax(edt)), edt.shape)
    core = ccc == ccc[peak]
    zz, yy, xx = np.nonzero(core)
    root = int(np.argmin(zz * 1e6 - edt[zz, yy, xx]))
    costs = np.where(core, 1.0, -1.0)
    mcp = MCP_Geometric(costs, sampling=sp)
    dist, _ = mcp.find_costs([(int(zz[root]), int(yy[root]), int(xx[root]))])
    d = dist[zz, yy, xx]
    d[~np.isfinite(d)] = -1
    step = max(r_trunk, 2.0 * max(sp))
    n_bands = int(d.max() // step) + 1
    off_mm = np.array([s.start for s in bb]) * np.asarray(spacing)
    spa = np.asarray(sp)
    prev = None
    found = None
    for k in range(n_bands):
        sel = np.flatnonzero((d >= k * step) & (d < (k + 1) * step))
        if sel.size == 0:
            continue
        bz, by, bx = zz[sel], yy[sel], xx[sel]
        lo = (bz.min(), by.min(), bx.min())
        band = np.zeros((bz.max() - lo[0] + 1, by.max() - lo[1] + 1, bx.max() - lo[2] + 1), bool)
        band[bz - lo[0], by - lo[1], bx - lo[2]] = True
        lab = cc3d.connected_components(band, connectivity=26)[bz - lo[0], by - lo[1], bx - lo[2]]
        sizes = np.bincount(lab)[1:]
        big = np.flatnonzero(sizes >= max(5, 0.1 * sizes.max())) + 1
        if len(big) >= 2 and prev is not None:
            # near the liver: liver voxels within 15 mm of the point
            rad = [int(np.ceil(15.0 / s)) for s in spacing]
            gp = np.rint((prev + off_mm) / np.asarray(spacing)).astype(int)
            box = tuple(slice(max(0, g - r), g + r + 1) for g, r in zip(gp, rad))
            if liver[box].any():
                two = sorted(big, key=lambda b: -sizes[b - 1])[:2]
                xs = {int(b): float(bx[lab == b].mean() * sp[2] + off_mm[2]) for b in two}
                found = (prev, k, xs)
                break
        prev = np.array([bz.mean(), by.mean(), bx.mean()]) * spa
    if found is None:
        return (None, r_trunk, None, {}, "the portal vein's bifurcation into right and left branches was not found "
                "(the portal tree is fragmented, or its trunk is not labelled)")
    p, k_split, xs = found
    bif_abs = p + off_mm
    # the main portal vein: the thick core walked before the split (back on the full grid; a pooled voxel
    # stands for its 2 x 2 block)
    trunk_sel = (d >= 0) & (d < k_split * step)
    tz, ty, tx = zz[trunk_sel], yy[trunk_sel] * f[1], xx[trunk_sel] * f[2]
    if f != (1, 1, 1):
        tz = np.repeat(tz, 4)
        ty = (ty[:, None] + np.array([0, 0, 1, 1])).ravel()
        tx = (tx[:, None] + np.array([0, 1, 0, 1])).ravel()
    o = [s.start for s in bb]
    tz, ty, tx = tz + o[0], ty + o[1], tx + o[2]
    ok = (ty < pv.shape[1]) & (tx < pv.shape[2])
    trunk = np.ravel_multi_index((tz[ok], ty[ok], tx[ok]), pv.shape)
    trunk = trunk[pv.reshape(-1)[trunk]]
    branch_x = sorted(xs.values())
    return bif_abs, r_trunk, trunk, {"right_x_mm": branch_x[0], "left_x_mm": branch_x[-1]}, ""


# ------------------------------------------------------------------------------------------------
# the estimate
# ------------------------------------------------------------------------------------------------
def liver_mask(labels: np.ndarray, spacing) -> np.ndarray:
    """Planning liver (z, y, x bool): parenchyma + lesions + the portal/hepatic vein voxels inside the
    liver's filled outline (the volumetry definition of engine.labels); never the IVC."""
    from ..measure import filled_liver_outline

    liver = (labels == Label.PARENCHYMA) | (labels == Label.CRLM)
    outline, sl = filled_liver_outline(labels, tuple(float(s) for s in spacing))
    if outline.size:
        sub = labels[sl]
        liver[sl] |= outline & ((sub == Label.PORTAL_VEIN) | (sub == Label.HEPATIC_VEINS))
    return liver


def estimate_segments(labels: np.ndarray, spacing, liver: Optional[np.ndarray] = None,
                      progress: ProgressCallback = no_progress, cancel: Optional[CancelToken] = None
                      ) -> SegmentEstimate:
    """Estimate the Couinaud segments and hemilivers of a label map (z, y, x uint8; spacing z, y, x mm)."""
    spacing = tuple(float(s) for s in spacing)
    total = 5
    progress("Liver segments", 0, total)
    if liver is None:
        liver = liver_mask(labels, spacing)
    model = VesselModel()
    reasons: list[str] = []
    quality: list[str] = []
    est = SegmentEstimate(None, None, False, False, "estimated from the vessels", quality, reasons, model)
    if not liver.any():
        reasons.append("no liver is labelled")
        return est
    lz = np.flatnonzero(liver.any(axis=(1, 2)))
    z_range = (int(lz[0]), int(lz[-1]))
    # --- IVC ---
    ivc = labels == Label.IVC
    hv = labels == Label.HEPATIC_VEINS
    if ivc.sum() > 20:
        model.ivc_source = "IVC label"
    else:
        sep, why = _separate_ivc(hv, spacing, z_range)
        if sep is None:
            reasons.append(why)
            return est
        ivc = sep
        hv = hv & ~ivc
        model.ivc_source = "separated from the hepatic-vein label (near-vertical wide tube followed slice by slice)"
        quality.append("There is no IVC label: the IVC was separated from the hepatic-vein label as the wide "
                       "vertical tube it forms (as in 3D-IRCADb's 'venoussystem' mask).")
    est.ivc_voxels = np.flatnonzero(ivc)
    axis, r_ivc = _ivc_axis_from_mask(ivc, spacing)
    model.ivc_axis_yx_mm, model.ivc_radius_mm = axis, r_ivc
    check(cancel)
    progress("Liver segments", 1, total)
    # --- hepatic veins ---
    psis, mls, vox, confluence, notes, why = _find_veins(hv, liver, axis, r_ivc, spacing, z_range)
    quality.extend(notes)
    model.confluence_z_mm = confluence
    if why:
        reasons.extend(why)
        return est
    model.vein_psi_deg, model.vein_ml = psis, mls
    est.vein_voxels = vox
    # the left vein's stem (its voxels in the band where the veins are read) gives the II/III plane
    lz, ly, lx = np.unravel_index(vox["left"], hv.shape)
    lzyx = np.stack([lz * spacing[0], ly * spacing[1], lx * spacing[2]], 1)
    ldy, ldx = lzyx[:, 1] - axis[lz, 0], lzyx[:, 2] - axis[lz, 1]
    lr = np.hypot(ldy, ldx)
    stem = liver[lz, ly, lx] & (lr > r_ivc + HV_CUT_MM) & (lr <= r_ivc + HV_CUT_MM + HV_BAND_MM) \
        & (np.abs(((psi_deg(ldy, ldx) - psis["left"] + 180.0) % 360.0) - 180.0) <= LHV_STEM_DEG)
    model.lhv_point_mm, model.lhv_normal = left_vein_plane(lzyx[stem])
    if model.lhv_normal is None:
        quality.append("The left hepatic vein's stem runs up and back (or is too short) here: segments II and III "
                       "are split by the transverse plane of the portal bifurcation instead of along that vein.")
    check(cancel)
    progress("Liver segments", 2, total)
    # --- portal bifurcation ---
    bif, r_trunk, trunk, branch_x, why = _portal_bifurcation(labels == Label.PORTAL_VEIN, liver, spacing)
    model.portal_trunk_radius_mm = r_trunk
    if bif is not None and not (branch_x["right_x_mm"] < branch_x["left_x_mm"]):
        bif, why = None, "the portal branches do not split to the right and left"
    model.bifurcation_zyx_mm = bif
    est.portal_trunk_voxels = trunk
    check(cancel)
    progress("Liver segments", 3, total)
    # --- per-voxel assignment (liver voxels only) ---
    flat = np.flatnonzero(liver)
    zyx = np.stack(np.unravel_index(flat, liver.shape), axis=1).astype(np.float32) * np.asarray(spacing, np.float32)
    seg, hemi = segments_from_model(zyx, model, spacing[0])
    del zyx
    est.hemilivers = np.zeros(liver.shape, np.uint8)
    est.hemilivers.reshape(-1)[flat] = hemi
    est.hemilivers_ok = True
    if bif is None:
        reasons.append(why)
        quality.append("Hemilivers estimated from the middle hepatic vein's plane (Cantlie's line); the "
                       "segments need the portal bifurcation as well.")
    else:
        est.segments = np.zeros(liver.shape, np.uint8)
        est.segments.reshape(-1)[flat] = seg
        est.segments_ok = True
        counts = np.bincount(seg, minlength=9)
        empty = [SEGMENT_NAMES[k] for k in range(1, 9) if counts[k] == 0]
        if empty:
            quality.append(f"Segment(s) {', '.join(empty)} received no liver voxels: check the vessel labels.")
        vox_ml = float(np.prod(spacing)) / 1000.0
        tiny = [k for k in range(1, 9) if 0 < counts[k] < SMALL_SEGMENT_SHARE * counts[1:].sum()]
        if tiny:
            quality.append("Segment(s) " + ", ".join(f"{SEGMENT_NAMES[k]} ({counts[k] * vox_ml:.0f} mL)" for k in tiny)
                           + f" hold less than {100 * SMALL_SEGMENT_SHARE:.0f} % of the liver: a plane probably runs "
                           "along the liver's edge there (e.g. the transverse plane of the portal bifurcation "
                           "below most of the left lateral section); check that boundary on the images.")
    quality.append(METHOD_TEXT + ". " + CAVEAT_TEXT)
    progress("Liver segments", total, total)
    return est


def estimate_from_map(segments: np.ndarray, source: str) -> SegmentEstimate:
    """A SegmentEstimate from a given segment map (uint8 0..8, e.g. a Couinaud model's output): its
    hemilivers follow from the segments (V-VIII right, II-IV left; segment I is counted in neither)."""
    seg = np.asarray(segments, np.uint8)
    hemi = np.zeros(seg.shape, np.uint8)
    hemi[np.isin(seg, RIGHT_SEGMENTS)] = HEMI_RIGHT
    hemi[np.isin(seg, LEFT_SEGMENTS)] = HEMI_LEFT
    quality = [f"Segment map {source}; segment I (caudate) is counted in neither hemiliver."]
    present = np.bincount(seg.reshape(-1), minlength=9)
    missing = [SEGMENT_NAMES[k] for k in range(1, 9) if present[k] == 0]
    if missing:
        quality.append(f"The segment map has no voxels of segment(s) {', '.join(missing)}.")
    return SegmentEstimate(seg, hemi, True, True, source, quality, [])
