"""The planning truth of a synthetic phantom, known by construction (engine.phantom).

The generator knows its IVC (a vertical tube), its three hepatic veins (which tube segment belongs to the
right, middle or left vein), its portal tree (main trunk, right and left branches, the bifurcation at the
hilum) and its lesions (ellipsoids). From these:

* **segments and hemilivers**: the Couinaud/Bismuth plane model (engine.planning.couinaud) applied to the
  phantom's own analytic vessels: each vein's plane angle is the volume-weighted mean angle of *its own*
  tube segments in the band where the estimate reads it, the II/III plane runs along the left vein's own
  stem in that band, the bifurcation is the hilum, the IVC axis is the tube's axis. The phantom has no other notion of a segment, so this is its truth; a test of the estimate
  against it checks the finding of the vessels on the voxels (which vein is which, where the IVC and the
  bifurcation are), not whether planes describe real portal territories (they only approximate them,
  see engine.planning.couinaud);
* **lesion-vessel distances**: surface to surface, from points sampled densely on each lesion's
  ellipsoid(s) (inside the liver) to the analytic tube surfaces, with the name of the nearest branch.

Coordinates: "grid mm" (z, y, x) = voxel index x spacing, as in engine.planning.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .geometry import Geometry
from .planning import couinaud as cn


def _sphere_points(n: int) -> np.ndarray:
    """n nearly uniform unit vectors (Fibonacci sphere), (n, 3)."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    th = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(th) * np.sin(phi), np.sin(th) * np.sin(phi), np.cos(phi)], axis=1)


class PhantomTruth:
    """Truth of one phantom on its grid (see the module docstring)."""

    def __init__(self, anat, geometry: Geometry) -> None:
        if not np.allclose(geometry.direction_matrix, np.eye(3)):
            raise ValueError("phantom truth needs the phantom's own (identity-direction) grid")
        self.anat = anat
        self.geometry = geometry
        self.origin = np.asarray(geometry.origin, float)           # LPS x, y, z of voxel 0

    # --- coordinates --------------------------------------------------------------------------
    def to_grid_mm(self, lps: np.ndarray) -> np.ndarray:
        """LPS mm (..., 3 x-y-z) -> grid mm (..., 3 z-y-x)."""
        return (np.asarray(lps, float) - self.origin)[..., ::-1]

    # --- the vessel model ---------------------------------------------------------------------
    def _tube_samples(self, segs, step_mm: float = 1.0):
        """Points (M, 3 LPS) along the tube axes, their radius, and the index of their segment."""
        pts, rad, idx = [], [], []
        for k, s in enumerate(segs):
            n = max(2, int(np.ceil(np.linalg.norm(s.p1 - s.p0) / step_mm)) + 1)
            t = np.linspace(0, 1, n)[:, None]
            pts.append(s.p0 + t * (s.p1 - s.p0))
            rad.append(s.r0 + t[:, 0] * (s.r1 - s.r0))
            idx.append(np.full(n, k))
        return np.concatenate(pts), np.concatenate(rad), np.concatenate(idx)

    def vessel_model(self) -> cn.VesselModel:
        """The plane model of the phantom's analytic vessels (grid mm)."""
        a = self.anat
        nz = self.geometry.shape[0]
        ivc_yx = self.to_grid_mm(np.array([a.ivc_xy[0], a.ivc_xy[1], 0.0]))[1:]
        m = cn.VesselModel()
        m.ivc_axis_yx_mm = np.tile(ivc_yx, (nz, 1))
        m.ivc_radius_mm = float(a.ivc_r)
        m.ivc_source = "phantom IVC"
        pts, rad, idx = self._tube_samples(a.hv)
        g = self.to_grid_mm(pts)
        dy, dx = g[:, 1] - ivc_yx[0], g[:, 2] - ivc_yx[1]
        rr = np.hypot(dy, dx)
        inside = a.liver_field(pts[:, 0], pts[:, 1], pts[:, 2]) <= 0
        band = inside & (rr > a.ivc_r + cn.HV_CUT_MM) & (rr <= a.ivc_r + cn.HV_CUT_MM + cn.HV_BAND_MM)
        psi = cn.psi_deg(dy, dx)
        names = np.array(a.hv_vein)[idx]
        for name in ("left", "middle", "right"):
            sel = band & (names == name)
            w = rad[sel] ** 2                           # volume per unit length
            m.vein_psi_deg[name] = cn.circular_mean_deg(psi[sel], w) if sel.any() else float("nan")
            m.vein_ml[name] = float(np.pi * w.sum() * 1.0 / 1000.0)
        # the II/III plane along the left vein's own stem, in the same band (engine.planning.couinaud)
        stem = band & (names == "left") & (np.abs(((psi - m.vein_psi_deg["left"] + 180.0) % 360.0) - 180.0)
                                           <= cn.LHV_STEM_DEG)
        m.lhv_point_mm, m.lhv_normal = cn.left_vein_plane(g[stem], rad[stem] ** 2)
        near = rr <= a.ivc_r + cn.HV_CUT_MM
        m.confluence_z_mm = float((g[near, 0] + rad[near]).max()) if near.any() else float(g[:, 0].max())
        m.bifurcation_zyx_mm = self.to_grid_mm(a.hilum)
        return m

    def segments(self, liver: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Truth segment map (0..8) and hemiliver map (1 right / 2 left) on the voxels of ``liver``."""
        model = self.vessel_model()
        flat = np.flatnonzero(liver)
        zyx = np.stack(np.unravel_index(flat, liver.shape), 1) * np.asarray(self.geometry.spacing)
        seg, hemi = cn.segments_from_model(zyx, model, self.geometry.spacing[0])
        s = np.zeros(liver.shape, np.uint8)
        h = np.zeros(liver.shape, np.uint8)
        s.reshape(-1)[flat] = seg
        h.reshape(-1)[flat] = hemi
        return s, h

    # --- lesions ------------------------------------------------------------------------------
    @property
    def n_lesions(self) -> int:
        return len(self.anat.lesions)

    def lesion_centre_grid_mm(self, i: int) -> np.ndarray:
        return self.to_grid_mm(self.anat.lesions[i].centre)

    def lesion_surface_lps(self, i: int, n: int = 6000) -> np.ndarray:
        """Points (M, 3 LPS mm) on lesion i's surface inside the liver (both nodules of a lobulated one)."""
        les = self.anat.lesions[i]
        parts = [les.ellipsoid] + ([les.lobe] if les.lobe is not None else [])
        u = _sphere_points(n)
        out = []
        for e in parts:
            p = e.centre + (u * e.radii) @ e.rot.T
            keep = np.ones(len(p), bool)
            for o in parts:
                if o is not e:
                    keep &= o.field(p[:, 0], p[:, 1], p[:, 2]) > 0
            out.append(p[keep])
        p = np.concatenate(out)
        return p[self.anat.liver_field(p[:, 0], p[:, 1], p[:, 2]) <= 0]

    def lesion_distance_mm(self, i: int, structure: str) -> tuple[float, Optional[str]]:
        """Analytic surface-to-surface distance (mm) from lesion i to 'portal_vein', 'hepatic_veins' or
        'ivc', and the branch nearest to it ('main'/'right'/'left' portal; 'right'/'middle'/'left'/'common'
        hepatic; None for the IVC)."""
        a = self.anat
        p = self.lesion_surface_lps(i)
        if structure == "ivc":
            d = np.hypot(p[:, 0] - a.ivc_xy[0], p[:, 1] - a.ivc_xy[1]) - a.ivc_r
            return float(max(0.0, d.min())), None
        segs, names = (a.pv, a.pv_branch) if structure == "portal_vein" else (a.hv, a.hv_vein)
        best, name = np.inf, None
        for k, s in enumerate(segs):
            d = _segment_clearance(p, s)
            if d < best:
                best, name = d, names[k]
        return float(max(0.0, best)), name


def _segment_clearance(pts: np.ndarray, s) -> float:
    v = s.p1 - s.p0
    vv = max(float(v @ v), 1e-9)
    w = pts - s.p0
    t = np.clip(w @ v / vv, 0.0, 1.0)
    d = np.linalg.norm(w - t[:, None] * v, axis=1) - (s.r0 + t * (s.r1 - s.r0))
    return float(d.min())
