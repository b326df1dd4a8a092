"""Synthetic portal-phase abdominal CT phantoms with the five LiverPlan structures.

The anatomy is defined in patient coordinates (LPS, millimetres: x toward the patient's left, y toward
posterior, z toward superior) by a seeded random generator, and then *sampled* on the requested voxel
grid. The same seed therefore gives the same patient at any shape or spacing; only the sampling (and the
image noise) changes. The patient frame puts the body's axial centre at x = y = 0 and the liver's centre
near z = 0.

What is drawn (portal venous phase, HU):
  air outside the body (-1000); skin and subcutaneous fat (-100); the abdominal wall and paraspinal
  muscles (~50); a lumbar/thoracic vertebra with discs, spinal canal and posterior elements (bone
  250-700); retroperitoneal and mesenteric fat mixed with bowel; the right kidney, the spleen, the aorta,
  a gallbladder and the lung bases above the diaphragm; the liver (union of randomly deformed ellipsoids
  with a noise-perturbed surface, right upper abdomen, ~100-110 HU); the portal vein (trunk ~12-13 mm
  entering at the hilum, branching down to ~3 mm, ~160-180 HU); the right, middle and left hepatic veins
  converging on the IVC at the liver's top and back (~150-170 HU); the IVC (~22 mm tube running
  vertically behind the liver, ~140 HU); 0-8 hypodense lesions (3-40 mm, ~40-60 HU, larger ones with an
  enhancing rim and a darker centre), inside the liver and away from large vessels. The image gets
  slight partial-volume smoothing and Gaussian noise (~12 HU after smoothing).

Labels (engine.labels): 2/3/4 wherever a portal vein / hepatic vein / IVC tube is (inside or outside the
liver), 5 for lesions (inside the liver only), 1 for the remaining liver.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .case import Case, Provenance
from .errors import InputError
from .geometry import Geometry
from .labels import Label

log = logging.getLogger(__name__)

#: Bumped whenever the anatomy a seed produces changes (recorded in the provenance).
GENERATOR_VERSION = 2

#: Default field of view (mm, z-y-x) used when no spacing is given: the upper abdomen, body fully inside.
DEFAULT_FOV_MM = (240.0, 320.0, 320.0)

#: Demo case grid: looks like a routine portal-phase series, builds in a few seconds.
DEMO_SEED = 23
DEMO_SHAPE = (160, 256, 256)
DEMO_SPACING = (2.0, 1.25, 1.25)
DEMO_N_LESIONS = 4
DEMO_LESION_DIAMETERS_MM = (34.0, 19.0, 11.0, 6.0)

MAX_LESIONS = 8
LESION_DIAMETER_RANGE_MM = (3.0, 40.0)


# ------------------------------------------------------------------------------------------------
# Small geometric helpers (all in LPS mm)
# ------------------------------------------------------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random rotation matrix of at most ``max_deg`` degrees about a random axis."""
    axis = _unit(rng.normal(size=3))
    ang = np.deg2rad(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(ang) * k + (1 - math.cos(ang)) * (k @ k)


def _rotate_towards(d: np.ndarray, axis_hint: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotate unit vector ``d`` by ``angle_rad`` within the plane spanned by d and ``axis_hint``."""
    perp = axis_hint - np.dot(axis_hint, d) * d
    if np.linalg.norm(perp) < 1e-6:
        perp = np.cross(d, [0.0, 0.0, 1.0])
        if np.linalg.norm(perp) < 1e-6:
            perp = np.cross(d, [1.0, 0.0, 0.0])
    perp = _unit(perp)
    return _unit(math.cos(angle_rad) * d + math.sin(angle_rad) * perp)


@dataclass
class _Ellipsoid:
    centre: np.ndarray          # (3,) LPS mm
    radii: np.ndarray           # (3,) mm along the rotated axes
    rot: np.ndarray             # (3, 3) columns = the ellipsoid's axes in LPS

    def field(self, x, y, z) -> np.ndarray:
        """Approximate signed distance (mm, negative inside; exact in sign, conservative inside).

        x, y, z broadcast against each other (e.g. shapes (1,1,nx), (1,ny,1), (nz,1,1)).
        """
        dx, dy, dz = x - self.centre[0], y - self.centre[1], z - self.centre[2]
        r = self.rot
        u = (dx * r[0, 0] + dy * r[1, 0] + dz * r[2, 0]) / self.radii[0]
        v = (dx * r[0, 1] + dy * r[1, 1] + dz * r[2, 1]) / self.radii[1]
        w = (dx * r[0, 2] + dy * r[1, 2] + dz * r[2, 2]) / self.radii[2]
        return (np.sqrt(u * u + v * v + w * w) - 1.0) * float(self.radii.min())

    def bounds(self, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        ext = np.sqrt(((self.rot * self.radii[None, :]) ** 2).sum(axis=1)) + margin
        return self.centre - ext, self.centre + ext


class _FourierNoise:
    """Smooth random field: a sum of plane waves (wavelengths in mm). Grid-independent by design."""

    def __init__(self, rng: np.random.Generator, n: int, wavelength_mm: tuple[float, float], amplitude: float):
        dirs = rng.normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength_mm, size=n)
        self.k = dirs * (2 * np.pi / lam)[:, None]
        self.phase = rng.uniform(0, 2 * np.pi, size=n)
        self.amp = amplitude * np.sqrt(2.0 / n)       # so the field's SD is ~amplitude

    def __call__(self, x, y, z):
        x, y, z = np.asarray(x), np.asarray(y), np.asarray(z)
        if (x.ndim == 3 and y.ndim == 3 and z.ndim == 3 and x.shape[:2] == (1, 1)
                and y.shape[0] == 1 and y.shape[2] == 1 and z.shape[1:] == (1, 1)):
            return self._on_grid(x.ravel(), y.ravel(), z.ravel())
        out = 0.0
        for (kx, ky, kz), ph in zip(self.k, self.phase):
            out = out + np.sin(x * kx + y * ky + z * kz + ph)
        return out * self.amp

    def _on_grid(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The field on the grid z (x) y (x) x, as (nz, ny, nx) float32.

        sin(a + b) = Im(e^{ia} e^{ib}): the in-plane factor is a (K, ny*nx) matrix and the z factor a
        (nz, K) matrix, so the volume is one real matrix product instead of K full-volume sines.
        """
        ex = np.exp(1j * (np.outer(self.k[:, 0], x) + self.phase[:, None]))         # (K, nx)
        ey = np.exp(1j * np.outer(self.k[:, 1], y))                                   # (K, ny)
        plane = (ey[:, :, None] * ex[:, None, :]).reshape(len(self.k), -1)           # (K, ny*nx)
        ez = np.exp(1j * np.outer(z, self.k[:, 2])) * self.amp                        # (nz, K)
        # One (nz, 2K) x (2K, ny*nx) product through numpy's own einsum loop, not BLAS: BLAS results
        # change in the last bit with its thread count, and the same seed must give the same phantom.
        lhs = np.concatenate([ez.imag, ez.real], axis=1).astype(np.float32)
        rhs = np.concatenate([plane.real, plane.imag], axis=0).astype(np.float32)
        out = np.einsum("zk,kp->zp", lhs, rhs, optimize=False)
        return out.reshape(len(z), len(y), len(x))

    def at(self, pts: np.ndarray) -> np.ndarray:
        pts = np.atleast_2d(pts)
        return (np.sin(pts @ self.k.T + self.phase) * self.amp).sum(axis=1)


@dataclass
class _Segment:
    p0: np.ndarray
    p1: np.ndarray
    r0: float
    r1: float


def _seg_clearance(pts: np.ndarray, segs: Sequence[_Segment], min_r: float = 0.0) -> np.ndarray:
    """Distance (mm) from each point (M, 3) to the nearest tube surface among ``segs`` (radius >= min_r)."""
    pts = np.atleast_2d(np.asarray(pts, float))
    use = [s for s in segs if max(s.r0, s.r1) >= min_r]
    if not use:
        return np.full(len(pts), np.inf)
    p0 = np.array([s.p0 for s in use])                       # (N, 3)
    v = np.array([s.p1 - s.p0 for s in use])
    r0 = np.array([s.r0 for s in use])
    r1 = np.array([s.r1 for s in use])
    w = pts[:, None, :] - p0[None]                            # (M, N, 3)
    vv = np.maximum((v * v).sum(-1), 1e-9)
    t = np.clip((w * v[None]).sum(-1) / vv, 0.0, 1.0)         # (M, N)
    d = np.linalg.norm(w - t[..., None] * v[None], axis=-1) - (r0 + t * (r1 - r0))
    return d.min(axis=1)


@dataclass
class _Lesion:
    centre: np.ndarray
    diameter: float
    ellipsoid: _Ellipsoid
    core_hu: float
    rim: bool
    lobe: Optional[_Ellipsoid] = None      # a second, overlapping nodule (coalescent metastasis)
    subcapsular: bool = False              # reaches the liver's surface (clipped by it)

    def field(self, x, y, z):
        f = self.ellipsoid.field(x, y, z)
        return f if self.lobe is None else np.minimum(f, self.lobe.field(x, y, z))

    def bounds(self, margin: float = 0.0):
        lo, hi = self.ellipsoid.bounds(margin)
        if self.lobe is not None:
            lo2, hi2 = self.lobe.bounds(margin)
            lo, hi = np.minimum(lo, lo2), np.maximum(hi, hi2)
        return lo, hi


# ------------------------------------------------------------------------------------------------
# The grid: axis coordinates and bounding-box views
# ------------------------------------------------------------------------------------------------
class _Grid:
    def __init__(self, geometry: Geometry):
        self.g = geometry
        nz, ny, nx = geometry.shape
        sz, sy, sx = geometry.spacing
        ox, oy, oz = geometry.origin
        self.x = ox + sx * np.arange(nx, dtype=np.float32)
        self.y = oy + sy * np.arange(ny, dtype=np.float32)
        self.z = oz + sz * np.arange(nz, dtype=np.float32)

    def box(self, lo_xyz, hi_xyz):
        """Slices (z, y, x) covering the LPS box and the broadcastable coordinates in it, or None."""
        sl = []
        for axis_coords, lo, hi in ((self.z, lo_xyz[2], hi_xyz[2]), (self.y, lo_xyz[1], hi_xyz[1]),
                                    (self.x, lo_xyz[0], hi_xyz[0])):
            a = int(np.searchsorted(axis_coords, lo, side="left"))
            b = int(np.searchsorted(axis_coords, hi, side="right"))
            if b <= a:
                return None
            sl.append(slice(a, b))
        zs, ys, xs = sl
        return ((zs, ys, xs), self.x[xs][None, None, :], self.y[ys][None, :, None], self.z[zs][:, None, None])


# ------------------------------------------------------------------------------------------------
# The anatomy (patient description, no grid)
# ------------------------------------------------------------------------------------------------
class _Anatomy:
    def __init__(self, seed: int, n_lesions: Optional[int],
                 lesion_diameters: Optional[Sequence[float]] = None):
        self.seed = int(seed)
        rng = np.random.default_rng([int(seed), 1])
        self.rng = rng
        # --- body outline (axial superellipse, slowly varying with z) ---
        self.body_a = rng.uniform(132, 148)        # half width (x)
        self.body_b = rng.uniform(98, 112)         # half depth (y)
        self.body_p = rng.uniform(2.2, 2.6)
        self.body_cy = rng.uniform(-4, 4)
        self.fat_mm = rng.uniform(10, 28)
        self.muscle_mm = rng.uniform(8, 13)
        self.fat_hu = rng.uniform(-110, -90)
        self.muscle_hu = rng.uniform(45, 58)
        # --- liver ---
        s = rng.uniform(0.88, 1.1)                 # patient size factor of the liver
        off = rng.uniform(-6, 6, size=3) * np.array([1.0, 1.0, 1.5])
        base = [  # centre (x, y, z), radii — right lobe, its inferior tip, medial part/caudate, left lobe
            ((-58, 2, 2), (58, 68, 72)),
            ((-72, 12, -52), (40, 44, 34)),
            ((-12, 6, 12), (42, 44, 46)),
            ((22, -34, 22), (58, 30, 30)),
        ]
        self.liver_parts: list[_Ellipsoid] = []
        for c, r in base:
            c = (np.array(c, float) + rng.uniform(-6, 6, size=3)) * s + off
            r = np.array(r, float) * s * rng.uniform(0.88, 1.12, size=3)
            self.liver_parts.append(_Ellipsoid(c, r, _rotation(rng, 12)))
        if rng.uniform() < 0.35:                   # a Riedel lobe: long inferior tongue of the right lobe
            c = self.liver_parts[1].centre + np.array([-5, 0, -35]) * s
            self.liver_parts.append(_Ellipsoid(c, np.array([26, 30, 40]) * s, _rotation(rng, 10)))
        if rng.uniform() < 0.5:                    # a bigger lateral left segment
            c = self.liver_parts[3].centre + np.array([30, 8, -4]) * s
            self.liver_parts.append(_Ellipsoid(c, np.array([34, 22, 24]) * s, _rotation(rng, 15)))
        self.liver_noise = _FourierNoise(rng, 10, (45, 120), rng.uniform(3.0, 5.0))
        self.liver_hu = rng.uniform(98, 112)
        self.liver_tex = _FourierNoise(rng, 8, (15, 60), 3.0)
        lo = np.min([e.bounds(8)[0] for e in self.liver_parts], axis=0)
        hi = np.max([e.bounds(8)[1] for e in self.liver_parts], axis=0)
        self.liver_lo, self.liver_hi = lo, hi
        self.liver_centre = (lo + hi) / 2
        # --- neighbours: right kidney (carved out of the liver), spleen, gallbladder ---
        self.kidney = _Ellipsoid(np.array([-68, 58, -78]) * s + off * 0.5, np.array([27, 24, 52]),
                                 _rotation(rng, 15))
        self.kidney_l = _Ellipsoid(np.array([70, 60, -70]) + rng.uniform(-5, 5, 3), np.array([26, 23, 50]),
                                   _rotation(rng, 15))
        self.spleen = _Ellipsoid(np.array([95, 45, 25]) + rng.uniform(-8, 8, 3),
                                 np.array([30, 48, 55]) * rng.uniform(0.8, 1.1), _rotation(rng, 20))
        self.stomach = _Ellipsoid(np.array([55, -35, 15]) + rng.uniform(-8, 8, 3),
                                  np.array([45, 35, 45]) * rng.uniform(0.8, 1.1), _rotation(rng, 20))
        gb_c = np.array([-40, -45, -45]) * s + off + rng.uniform(-5, 5, 3)
        self.gallbladder = _Ellipsoid(gb_c, np.array([14, 16, 30]) * rng.uniform(0.8, 1.15, 3),
                                      _rotation(rng, 25))
        self.has_gallbladder = rng.uniform() < 0.8
        # --- great vessels ---
        self.ivc_xy = np.array([-22.0, 26.0]) + rng.uniform(-4, 4, size=2) + off[:2] * 0.5
        self.ivc_r = rng.uniform(10.0, 12.5)
        self.ivc_hu = rng.uniform(132, 148)
        self.aorta_xy = np.array([16.0, 34.0]) + rng.uniform(-3, 3, size=2)
        self.aorta_r = rng.uniform(10, 12.5)
        self.pv_hu = rng.uniform(162, 180)
        self.hv_hu = rng.uniform(150, 168)
        self.spine_xy = np.array([0.0, 62.0]) + np.array([rng.uniform(-3, 3), 0])
        self.dome_z = self.liver_hi[2] - 8        # diaphragm: the lungs start above the liver dome
        # Context organs come from their own random stream, so adding one never moves the liver.
        ctx = np.random.default_rng([int(seed), 4])
        self.heart = _Ellipsoid(np.array([18.0, -22.0, self.dome_z + 52]) + ctx.uniform(-6, 6, 3),
                                np.array([58, 46, 46]) * ctx.uniform(0.9, 1.1, 3), _rotation(ctx, 15))
        self.rib_period = ctx.uniform(27, 33)
        self.rib_phase = ctx.uniform(0, self.rib_period)
        self.stomach_air = ctx.uniform(0.15, 0.45)     # fraction of the stomach's depth filled with air
        # --- vessel trees and lesions (need the liver function) ---
        self.pv: list[_Segment] = []
        self.hv: list[_Segment] = []
        self._grow_portal()
        self._grow_hepatic()
        if n_lesions is None:
            n_lesions = int(rng.choice(np.arange(MAX_LESIONS + 1),
                                       p=np.array([6, 12, 14, 14, 12, 10, 8, 6, 4], float) / 86))
        self.lesions = self._place_lesions(int(n_lesions), lesion_diameters)

    # --- body outline ------------------------------------------------------------------------------
    def body_depth(self, x, y, z):
        """Approximate depth below the skin (mm; negative outside the body)."""
        p = self.body_p
        rho = (np.abs(x / self.body_a) ** p + np.abs((y - self.body_cy) / self.body_b) ** p) ** (1.0 / p)
        scale = 1.0 + 0.05 * np.tanh(-z / 120.0)       # a little wider lower down
        return (scale - rho) * min(self.body_a, self.body_b)

    # --- the liver's implicit function (mm, negative inside) -------------------------------------
    def liver_field(self, x, y, z):
        f = None
        for e in self.liver_parts:
            g = e.field(x, y, z)
            f = g if f is None else np.minimum(f, g)
        f = f + self.liver_noise(x, y, z)
        # The right kidney and the IVC's groove push the liver surface away.
        f = np.maximum(f, -(self.kidney.field(x, y, z) - 4.0))
        if self.has_gallbladder:
            f = np.maximum(f, -(self.gallbladder.field(x, y, z) - 1.5))
        # The liver stays inside the abdominal wall.
        f = np.maximum(f, (self.fat_mm + self.muscle_mm + 2.0) - self.body_depth(x, y, z))
        return f

    def liver_at(self, p: np.ndarray) -> float:
        p = np.asarray(p, float)
        return float(self.liver_field(np.array(p[0]), np.array(p[1]), np.array(p[2])))

    # --- vessel trees ----------------------------------------------------------------------------
    def _tree(self, out: list[_Segment], p: np.ndarray, d: np.ndarray, r: float, depth: int,
              style: str, r_min: float = 1.5) -> None:
        """Grow a branch from p along d with radius r, recursively (stays inside the liver)."""
        rng = self.rng
        if depth > 11 or r < r_min or len(out) > 600:
            return
        # Small branches are long for their calibre (they run out to the liver's periphery).
        length = float(np.clip((9.0 + 3.5 * r) * rng.uniform(0.8, 1.2), 8.0, 40.0))
        end = None
        d0 = d
        for attempt in range(12):
            if attempt:
                # Alternate: turn towards the liver's centre, then sideways, more each time.
                hint = _unit(self.liver_centre - p) if attempt % 2 else _unit(rng.normal(size=3))
                d = _rotate_towards(d0, hint, np.deg2rad(12 * ((attempt + 1) // 2)))
            for frac in (1.0, 0.6):
                e = p + d * length * frac
                mid = p + d * length * frac * 0.5
                if not (self.liver_at(e) < -(r + 2.0) and self.liver_at(mid) < -r):
                    continue
                if style == "hepatic" and self.pv:
                    # Hepatic veins interdigitate with the portal branches: keep a gap between them.
                    probe = np.array([p + d * length * frac * f for f in (0.35, 0.7, 1.0)])
                    if _seg_clearance(probe, self.pv).min() < r + 1.0:
                        continue
                end = e
                break
            if end is not None:
                break
        if end is None:
            return
        # A little curvature: bend the branch through a jittered midpoint.
        mid = (p + end) / 2 + rng.normal(scale=0.08 * np.linalg.norm(end - p), size=3)
        r_end = r * 0.97
        out.append(_Segment(p.copy(), mid, r, (r + r_end) / 2))
        out.append(_Segment(mid, end, (r + r_end) / 2, r_end))
        d_new = _unit(end - mid)
        if style == "portal":        # near-symmetric bifurcation
            ang1, ang2 = np.deg2rad(rng.uniform(20, 40)), -np.deg2rad(rng.uniform(20, 40))
            # Radii roughly after Murray's law (r^3 = r1^3 + r2^3), one child often clearly larger.
            q1 = rng.uniform(0.8, 0.93)
            q2 = float(np.clip((1 - q1 ** 3) ** (1 / 3) * rng.uniform(0.9, 1.05), 0.5, 0.85))
        else:                        # hepatic: a main stem continuing with a side tributary
            ang1, ang2 = np.deg2rad(rng.uniform(5, 15)), -np.deg2rad(rng.uniform(40, 65))
            q1, q2 = rng.uniform(0.84, 0.93), rng.uniform(0.45, 0.65)
        hint = _unit(rng.normal(size=3))
        self._tree(out, end, _rotate_towards(d_new, hint, ang1), r_end * q1, depth + 1, style, r_min)
        self._tree(out, end, _rotate_towards(d_new, hint, ang2), r_end * q2, depth + 1, style, r_min)

    def _grow_portal(self) -> None:
        rng = self.rng
        c = self.liver_centre
        # The hilum: on the liver's visceral (inferior-medial) side.
        hilum = np.array([c[0] + 18, c[1] + 4, c[2] - 18]) + rng.uniform(-4, 4, 3)
        # Push the hilum inside the liver if the random shape put it outside.
        for _ in range(30):
            if self.liver_at(hilum) < -8:
                break
            hilum = hilum + 0.1 * (c - hilum)
        self.hilum = hilum
        r_trunk = rng.uniform(6.0, 6.8)
        origin = np.array([8.0, 22.0, hilum[2] - 62]) + rng.uniform(-4, 4, 3)  # behind the pancreas neck
        mid = (origin + hilum) / 2 + np.array([-6, -4, 0])
        self.pv.append(_Segment(origin, mid, r_trunk, r_trunk))
        self.pv.append(_Segment(mid, hilum, r_trunk, r_trunk * 0.97))
        self.pv_branch = ["main", "main"]        # which branch each portal segment belongs to (no RNG used)
        # Right portal vein (anterior + posterior sectors) and left portal vein.
        right = _unit(np.array([-1.0, 0.1, 0.25]) + rng.normal(scale=0.1, size=3))
        left = _unit(np.array([0.9, -0.6, 0.3]) + rng.normal(scale=0.1, size=3))
        r_right, r_left = r_trunk * rng.uniform(0.78, 0.85), r_trunk * rng.uniform(0.68, 0.78)
        rp_end = hilum + right * rng.uniform(18, 26)
        lp_end = hilum + left * rng.uniform(25, 35)
        self.pv.append(_Segment(hilum, rp_end, r_right, r_right * 0.95))
        self.pv.append(_Segment(hilum, lp_end, r_left, r_left * 0.95))
        self.pv_branch += ["right", "left"]
        self._tree(self.pv, rp_end, _unit(right + np.array([0, -0.8, 0.4])), r_right * 0.8, 1, "portal")
        self._tree(self.pv, rp_end, _unit(right + np.array([0, 0.7, 0.2])), r_right * 0.8, 1, "portal")
        self.pv_branch += ["right"] * (len(self.pv) - len(self.pv_branch))
        self._tree(self.pv, lp_end, _unit(left + np.array([0.3, -0.2, 0.3])), r_left * 0.8, 1, "portal")
        self._tree(self.pv, lp_end, _unit(left + np.array([-0.1, 0.0, -0.6])), r_left * 0.7, 1, "portal")
        self.pv_branch += ["left"] * (len(self.pv) - len(self.pv_branch))

    def _grow_hepatic(self) -> None:
        rng = self.rng
        top = self.liver_hi[2] - 8 - rng.uniform(14, 24)
        # The confluence: where the IVC meets the liver's top/back.
        self.hv_confluence = np.array([self.ivc_xy[0], self.ivc_xy[1] - self.ivc_r * 0.5, top])
        dirs = {"right": np.array([-1.0, 0.05, -0.45]), "middle": np.array([-0.25, -1.0, -0.55]),
                "left": np.array([0.85, -0.75, -0.2])}
        radii = {"right": rng.uniform(5.0, 6.0), "middle": rng.uniform(4.5, 5.5), "left": rng.uniform(4.0, 5.0)}
        dirs = {k: _unit(v + rng.normal(scale=0.1, size=3)) for k, v in dirs.items()}
        # Most people have a common trunk of the middle and left veins before the IVC.
        common = rng.uniform() < 0.7
        trunk_end = None
        if common:
            dt = _unit(dirs["middle"] + dirs["left"])
            r_t = rng.uniform(5.5, 6.5)
            trunk_end = self.hv_confluence + dt * (self.ivc_r + rng.uniform(5, 9))
            self.hv.append(_Segment(self.hv_confluence.copy(), trunk_end, r_t, r_t * 0.95))
        self.hv_vein = ["common"] * len(self.hv)      # which vein each hepatic segment belongs to (no RNG)
        for name, d in dirs.items():
            r = radii[name]
            if common and name in ("middle", "left"):
                start = trunk_end
                stem_end = start + d * rng.uniform(6, 10)
            else:
                start = self.hv_confluence + np.array([0, 0, rng.uniform(-3, 3)])
                # Short stem from the IVC wall into the liver (may be partly extrahepatic).
                stem_end = start + d * (self.ivc_r + rng.uniform(6, 12))
            self.hv.append(_Segment(start, stem_end, r, r))
            self._tree(self.hv, stem_end, d, r * 0.95, 1, "hepatic")
            self.hv_vein += [name] * (len(self.hv) - len(self.hv_vein))

    # --- lesions -----------------------------------------------------------------------------------
    def _clearance(self, p: np.ndarray, segs: Sequence[_Segment], min_r: float) -> float:
        """Distance (mm) from p to the nearest surface of the given segments of radius >= min_r."""
        return float(_seg_clearance(p, segs, min_r)[0])

    def _place_lesions(self, n: int, diameters: Optional[Sequence[float]] = None) -> list[_Lesion]:
        rng = self.rng
        out: list[_Lesion] = []
        lo, hi = self.liver_lo, self.liver_hi
        lmin, lmax = LESION_DIAMETER_RANGE_MM
        for i in range(n):
            # Log-uniform sizes: many small lesions, a few big ones.
            diameter = float(np.exp(rng.uniform(np.log(lmin), np.log(lmax))))
            if diameters is not None and i < len(diameters):
                diameter = float(diameters[i])
            placed = False
            asked = diameters is not None and i < len(diameters)   # a size asked for is never changed
            # About one lesion in four lies under the liver capsule (cut flat by the liver's surface).
            subcapsular = diameter >= 8 and rng.uniform() < 0.25
            for attempt in range(4000):
                if attempt and attempt % 400 == 0 and not asked:
                    diameter = max(lmin, diameter * 0.8)
                    subcapsular = subcapsular and diameter >= 8
                r = diameter / 2
                c = rng.uniform(lo, hi)
                f = self.liver_at(c)
                if subcapsular:
                    if not -(r * 0.9 + 1.0) < f < -(r * 0.4):
                        continue
                elif f > -(r * 1.25 + 4.0):
                    continue
                if any(np.linalg.norm(c - o.centre) < r * 1.25 + o.diameter / 2 * 1.25 + 10.0 for o in out):
                    continue
                if self._clearance(c, self.pv, 2.0) < r * 1.25 + 2.0:
                    continue
                if self._clearance(c, self.hv, 2.0) < r * 1.25 + 2.0:
                    continue
                if np.linalg.norm(c[:2] - self.ivc_xy) < self.ivc_r + r * 1.25 + 4.0:
                    continue
                radii = r * rng.uniform(0.85, 1.15, size=3)
                radii *= r / np.cbrt(np.prod(radii))       # equal-volume sphere diameter = nominal
                ell = _Ellipsoid(c, radii, _rotation(rng, 90))
                lobe = None
                if diameter >= 15 and not subcapsular and rng.uniform() < 0.5:
                    # A second nodule overlapping the first (within the placement margin of 1.25 r).
                    lr = r * rng.uniform(0.4, 0.55)
                    lc = c + _unit(rng.normal(size=3)) * (r * 1.2 - lr)
                    lobe = _Ellipsoid(lc, np.full(3, lr) * rng.uniform(0.9, 1.1, 3), _rotation(rng, 90))
                out.append(_Lesion(c, diameter, ell, rng.uniform(40, 60), diameter >= 12, lobe, subcapsular))
                placed = True
                break
            if not placed:
                if asked:
                    raise InputError(
                        f"A {diameter:g} mm lesion does not fit in this phantom's liver (seed {self.seed}) with "
                        "its margins to the vessels, the IVC and the other lesions; ask for a smaller diameter "
                        "or another seed.")
                log.warning("phantom: could only place %d of %d lesions", len(out), n)
                break
        return out


# ------------------------------------------------------------------------------------------------
# Rendering on a grid
# ------------------------------------------------------------------------------------------------
def tube_in_box(grid: _Grid, s: _Segment, reach_mm: float):
    """The voxels around segment ``s`` out to ``reach_mm`` from its axis: (slices of the box, squared distance
    to the axis in mm², the tube's radius at the nearest axis point), or None when the box is off the grid."""
    b = grid.box(np.minimum(s.p0, s.p1) - reach_mm, np.maximum(s.p0, s.p1) + reach_mm)
    if b is None:
        return None
    sl, x, y, z = b
    v = (s.p1 - s.p0).astype(np.float32)
    vv = float(np.dot(v, v)) or 1e-6
    dx, dy, dz = x - s.p0[0], y - s.p0[1], z - s.p0[2]
    proj = dx * v[0] + dy * v[1] + dz * v[2]
    t = np.clip(proj / vv, 0.0, 1.0)
    d2 = dx * dx + dy * dy + dz * dz - 2 * t * proj + t * t * vv
    return sl, d2, s.r0 + t * (s.r1 - s.r0)


def _paint_segments(labels: np.ndarray, hu: np.ndarray, grid: _Grid, segs: Sequence[_Segment],
                    label: int, value: float, mask_out: Optional[np.ndarray] = None) -> None:
    for s in segs:
        tube = tube_in_box(grid, s, max(s.r0, s.r1))
        if tube is None:
            continue
        sl, d2, rad = tube
        inside = d2 <= rad * rad
        if mask_out is not None:
            inside &= ~mask_out[sl]
        labels[sl][inside] = label
        hu[sl][inside] = value


def _render(anat: _Anatomy, geometry: Geometry, seed: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    grid = _Grid(geometry)
    nz, ny, nx = geometry.shape
    X, Y, Z = grid.x[None, None, :], grid.y[None, :, None], grid.z[:, None, None]
    hu = np.full(geometry.shape, -1000.0, dtype=np.float32)
    labels = np.zeros(geometry.shape, dtype=np.uint8)

    # --- body: a superellipse in each axial slice, a little wider lower down ---
    x2, y2 = grid.x[None, :], grid.y[:, None]
    depth = anat.body_depth(X, Y, Z).astype(np.float32)                   # mm inside the skin (approx.)
    # (np.copyto with where= is several times faster than boolean-index assignment on big volumes.)
    body = depth > 0
    np.copyto(hu, np.float32(anat.fat_hu), where=body)
    wall = (depth > anat.fat_mm) & (depth <= anat.fat_mm + anat.muscle_mm)
    np.copyto(hu, np.float32(anat.muscle_hu), where=wall)
    del wall
    cavity = depth > anat.fat_mm + anat.muscle_mm
    # Abdominal contents: fat mixed with bowel loops (a smooth random field between fat and soft tissue).
    rng_vis = np.random.default_rng([seed, 3])
    bowel = _FourierNoise(rng_vis, 10, (25, 70), 1.0)
    cz = np.flatnonzero(cavity.any(axis=(1, 2)))
    if cz.size:
        zc = Z[cz[0]:cz[-1] + 1]
        field = bowel(X, Y, zc)
        # Bowel loops (soft tissue, some gas) below the liver's middle; mostly fat higher up.
        bowel_w = np.clip((anat.liver_centre[2] + 25.0 - zc) / 30.0, 0.0, 1.0).astype(np.float32)  # (nz,1,1)
        field *= bowel_w
        field += (bowel_w - np.float32(1.0)) * np.float32(0.6)
        vis = field * np.float32(40.0)                       # -85 + 40 (field + 0.35) between the extremes
        vis += np.float32(-85.0 + 40 * 0.35)
        np.copyto(vis, np.float32(35.0), where=field > 0.35)
        gas = field < -0.9
        np.copyto(vis, np.float32(-400.0), where=gas & (bowel_w >= 0.5))
        np.copyto(vis, np.float32(-95.0), where=gas & (bowel_w < 0.5))
        del field, gas
        np.copyto(hu[cz[0]:cz[-1] + 1], vis, where=cavity[cz[0]:cz[-1] + 1])
        del vis


    # --- spine and paraspinal muscles ---
    sx_, sy_ = anat.spine_xy
    para = (((np.abs(x2) - 35) / 28) ** 2 + ((y2 - (sy_ + 30)) / 24) ** 2) <= 1
    np.copyto(hu, np.float32(anat.muscle_hu), where=body & ~cavity & para[None])
    np.copyto(hu, np.float32(anat.muscle_hu), where=(depth > 3) & para[None])
    r_body = np.hypot(x2 - sx_, y2 - sy_)
    disc = (np.mod(grid.z + 13.0, 34.0) < 7.0)[:, None, None]
    vb = (r_body <= 19)[None]
    np.copyto(hu, np.float32(280.0), where=vb & body)
    np.copyto(hu, np.float32(650.0), where=((r_body > 16.5) & (r_body <= 19))[None] & ~disc)
    np.copyto(hu, np.float32(85.0), where=vb & disc)
    canal = np.hypot(x2 - sx_, y2 - (sy_ + 27)) <= 8.5
    arch = (np.hypot(x2 - sx_, y2 - (sy_ + 27)) <= 14) & ~canal
    spinous = (np.abs(x2 - sx_) <= 5) & (y2 > sy_ + 35) & (y2 < sy_ + 50)
    np.copyto(hu, np.float32(520.0), where=(arch | spinous)[None] & ~disc & (depth > 8))
    np.copyto(hu, np.float32(20.0), where=canal[None] & body)

    def paint_ellipsoid(e: _Ellipsoid, value: float, where: Optional[np.ndarray] = None, lab: int = 0):
        b = grid.box(*e.bounds(1))
        if b is None:
            return None
        sl, x, y, z = b
        inside = e.field(x, y, z) <= 0
        if where is not None:
            inside &= where[sl]
        hu[sl][inside] = value
        if lab:
            labels[sl][inside] = lab
        return sl, inside

    # --- neighbouring organs ---
    st = paint_ellipsoid(anat.stomach, 15.0, cavity)
    if st is not None:
        # Gas rises anteriorly in a supine patient: an air-fluid level in the coronal plane.
        sl, inside = st
        r_y = anat.stomach.bounds()[1][1] - anat.stomach.centre[1]
        level = anat.stomach.bounds()[0][1] + 2 * r_y * anat.stomach_air
        gas = inside & (grid.y[sl[1]][None, :, None] < level)
        hu[sl][gas] = -950.0
    paint_ellipsoid(anat.spleen, 118.0, cavity)
    paint_ellipsoid(anat.kidney, 175.0, cavity)
    paint_ellipsoid(anat.kidney_l, 175.0, cavity)
    aorta = np.hypot(x2 - anat.aorta_xy[0], y2 - anat.aorta_xy[1]) <= anat.aorta_r
    np.copyto(hu, np.float32(165.0), where=aorta[None] & cavity)

    # --- liver ---
    b = grid.box(anat.liver_lo, anat.liver_hi)
    liver = np.zeros(geometry.shape, dtype=bool)
    if b is not None:
        sl, x, y, z = b
        f = anat.liver_field(x, y, z)
        inside = f <= 0
        liver[sl] = inside
        tex = anat.liver_hu + anat.liver_tex(x, y, z)
        # No bowel gas right against the liver: a gas pocket in a surface notch reads as a liver lesion.
        near_gas = (f < 12.0) & (hu[sl] < -300.0) & cavity[sl]
        hu[sl] = np.where(inside, tex, np.where(near_gas, np.float32(-90.0), hu[sl]))
        labels[sl][inside] = Label.PARENCHYMA
    if anat.has_gallbladder:
        paint_ellipsoid(anat.gallbladder, 8.0, cavity & ~liver)
    # --- heart on the diaphragm, lung bases around the liver dome (posterior and lateral first) ---
    # The lungs' bases are lowest posteriorly and laterally (costophrenic recesses around the liver).
    lung_z = anat.dome_z - 20.0 + 0.0006 * (X - anat.liver_centre[0]) ** 2 - 0.35 * (Y - 20)
    above = cavity & (Z > lung_z) & ~liver
    heart = np.zeros(geometry.shape, dtype=bool)
    hb = grid.box(*anat.heart.bounds(1))
    if hb is not None:
        sl, x, y, z = hb
        heart[sl] = (anat.heart.field(x, y, z) <= 0) & above[sl]
        np.copyto(hu, np.float32(125.0), where=heart)
    # The posterior mediastinum (spine, aorta, oesophagus) stays between the lungs.
    mediastinum = ((X - anat.spine_xy[0]) / 34.0) ** 2 + ((Y - anat.spine_xy[1] + 15.0) / 48.0) ** 2 <= 1.0
    lungs = above & ~heart & ~mediastinum
    np.copyto(hu, np.float32(-860.0), where=lungs)
    # --- ribs: oblique bars in the inner body wall, descending anteriorly, around the lower chest ---
    angle_mm = np.arctan2(Y - anat.body_cy, X) * 100.0                      # position along the wall
    inner = anat.fat_mm + anat.muscle_mm
    wall_band = (depth > inner - 3) & (depth < inner + 5)            # ribs lie on the wall's inner side
    # Ribs run obliquely (down towards the front), so each axial slice cuts them as short arcs.
    rib_z = np.mod(Z + 0.6 * np.abs(angle_mm) + anat.rib_phase, anat.rib_period) < 10.0
    ribs = wall_band & rib_z & (Z > anat.liver_lo[2] + 25) & ((Y > -40) | (np.abs(X) > 70))
    np.copyto(hu, np.float32(380.0), where=ribs)

    # --- vessels: portal vein, hepatic veins (inside or outside the liver), then lesions, then IVC ---
    _paint_segments(labels, hu, grid, anat.pv, Label.PORTAL_VEIN, anat.pv_hu)
    _paint_segments(labels, hu, grid, anat.hv, Label.HEPATIC_VEINS, anat.hv_hu)

    lesion_info = []
    outside: list[int] = []             # lesions (0-based, as listed) that fall outside the field of view
    for i, les in enumerate(anat.lesions):
        b = grid.box(*les.bounds(1))
        n_vox = 0
        if b is not None:
            sl, x, y, z = b
            dist = les.field(x, y, z)                       # mm, negative inside
            inside = (dist <= 0) & liver[sl]
            r = les.diameter / 2
            val = np.full(inside.shape, les.core_hu, dtype=np.float32)
            if les.rim:
                val = np.where(dist > -min(2.5, 0.25 * r), les.core_hu + 25.0, val)
                if les.diameter >= 25:
                    val = np.where(dist < -0.55 * r, les.core_hu - 18.0, val)
            hu[sl][inside] = val[inside]
            labels[sl][inside] = Label.CRLM
            n_vox = int(inside.sum())
        if n_vox == 0:
            # Smaller than a voxel: still drawn as the voxel holding its centre (as a reader would mark it).
            idx = np.round(geometry.physical_to_index(les.centre)).astype(int)
            if not (np.all(idx >= 0) and np.all(idx < np.array(geometry.shape))):
                outside.append(i)
            elif liver[tuple(idx)]:
                labels[tuple(idx)] = Label.CRLM
                hu[tuple(idx)] = les.core_hu
        lesion_info.append({"centre_lps_mm": [round(float(v), 2) for v in les.centre],
                            "diameter_mm": round(les.diameter, 2),
                            "core_hu": round(les.core_hu, 1), "rim": bool(les.rim),
                            "lobulated": les.lobe is not None, "subcapsular": les.subcapsular})

    ivc = np.hypot(x2 - anat.ivc_xy[0], y2 - anat.ivc_xy[1]) <= anat.ivc_r
    ivc3 = ivc[None] & (body & (depth > anat.fat_mm))
    np.copyto(hu, np.float32(anat.ivc_hu), where=ivc3)
    labels[ivc3] = Label.IVC
    # The true "total liver" of this phantom: everything drawn inside the liver surface except the IVC.
    truth = {"total_liver_ml": round(float(np.count_nonzero(liver & ~ivc3)) * geometry.voxel_volume_ml, 3)}

    # --- acquisition: partial-volume smoothing + noise (smoothed together, so the noise is correlated) ---
    from scipy.ndimage import gaussian_filter, gaussian_filter1d

    rng_noise = np.random.default_rng([seed, 2])
    sigma_vox = 0.6
    delta = np.zeros(15, dtype=np.float64)
    delta[7] = 1.0
    w = gaussian_filter1d(delta, sigma_vox)
    # White noise keeps sum(w^2) of its variance per axis through the separable kernel: (sum w^2)^3 in 3D.
    sd_kept = float(np.sum(w ** 2)) ** 1.5
    noise_sd = 12.0 / sd_kept
    noise = rng_noise.standard_normal(geometry.shape, dtype=np.float32)
    noise *= np.float32(noise_sd)
    noise[~body] *= np.float32(0.3)                   # less noise in the air outside
    hu += noise
    del noise
    gaussian_filter(hu, sigma_vox, output=hu, truncate=3.0)
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    truth["lesions_outside_view"] = outside
    return image, labels, lesion_info, truth


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------
def make_phantom(seed: int = 0, shape: Sequence[int] = (96, 128, 128),
                 spacing: Optional[Sequence[float]] = None, n_lesions: Optional[int] = None,
                 lesion_diameters_mm: Optional[Sequence[float]] = None) -> Case:
    """A synthetic portal-phase CT with its five-structure label map.

    Parameters
    ----------
    seed: the patient: the same seed gives the same anatomy (in LPS mm) at any shape and spacing.
    shape: voxels (z, y, x).
    spacing: voxel size (z, y, x) in mm. None: fit the default field of view (240 x 320 x 320 mm,
        z-y-x) into ``shape`` (e.g. 96 x 128 x 128 -> 2.5 mm voxels). A field of view smaller than the
        body is centred on the liver (like a liver-targeted reconstruction).
    n_lesions: number of CRLM lesions (0-8); None draws it from the seed.
    lesion_diameters_mm: optional nominal (equal-volume sphere) diameters in mm, 3-40, of the first
        lesions; the rest are drawn from the seed. Sets n_lesions when that is None.

    Returns a Case (canonical LPS, identity direction) whose provenance has source_format "phantom",
    label_source "phantom" and ``extra`` = {"seed", "generator_version", "n_lesions", "lesions": [
    {"centre_lps_mm": [x, y, z], "diameter_mm", ...}]}.
    """
    return _build(seed, shape, spacing, n_lesions, lesion_diameters_mm)[0]


def make_phantom_with_truth(seed: int = 0, shape: Sequence[int] = (96, 128, 128),
                            spacing: Optional[Sequence[float]] = None, n_lesions: Optional[int] = None,
                            lesion_diameters_mm: Optional[Sequence[float]] = None):
    """:func:`make_phantom` (the same case, voxel for voxel) and its planning truth
    (:class:`engine.phantom_truth.PhantomTruth`: segments, hemilivers, named vessels, analytic distances)."""
    from .phantom_truth import PhantomTruth

    case, anat = _build(seed, shape, spacing, n_lesions, lesion_diameters_mm)
    return case, PhantomTruth(anat, case.geometry)


def check_phantom_args(shape, spacing, n_lesions, lesion_diameters_mm):
    """The arguments of make_phantom (and of engine.phantom_v2) checked and normalised: (shape, spacing,
    n_lesions, lesion_diameters_mm), or InputError in words."""
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or min(shape) < 2:
        raise InputError(f"A phantom needs three dimensions of at least 2 voxels (z, y, x); got {shape}.")
    if max(shape) > 1024 or int(np.prod(shape, dtype=np.int64)) > 200_000_000:
        raise InputError(f"A phantom of {shape[::-1]} voxels (x, y, z) is too large to build in memory.")
    if spacing is None:
        spacing = tuple(fov / n for fov, n in zip(DEFAULT_FOV_MM, shape))
    spacing = tuple(float(v) for v in spacing)
    if len(spacing) != 3 or min(spacing) <= 0 or not all(np.isfinite(spacing)):
        raise InputError(f"The voxel spacing must be three positive numbers in mm (z, y, x); got {spacing}.")
    if n_lesions is not None and not 0 <= int(n_lesions) <= MAX_LESIONS:
        raise InputError(f"A phantom can have 0 to {MAX_LESIONS} lesions; {n_lesions} were asked for.")
    if lesion_diameters_mm is not None:
        lesion_diameters_mm = [float(v) for v in lesion_diameters_mm]
        lmin, lmax = LESION_DIAMETER_RANGE_MM
        if any(not lmin <= v <= lmax for v in lesion_diameters_mm):
            raise InputError(f"Phantom lesion diameters must lie between {lmin:g} and {lmax:g} mm.")
        if n_lesions is None:
            n_lesions = len(lesion_diameters_mm)
    return shape, spacing, n_lesions, lesion_diameters_mm


def _build(seed, shape, spacing, n_lesions, lesion_diameters_mm):
    """The case and the anatomy it was sampled from (arguments checked as make_phantom documents)."""
    shape, spacing, n_lesions, lesion_diameters_mm = check_phantom_args(shape, spacing, n_lesions,
                                                                        lesion_diameters_mm)
    anat = _Anatomy(int(seed), None if n_lesions is None else int(n_lesions), lesion_diameters_mm)
    fov = np.array(shape, float) * np.array(spacing)            # z, y, x mm
    # Field-of-view centre (x, y, z): the body when it fits, else the liver.
    centre = np.array([0.0, anat.body_cy, anat.liver_centre[2] - 15.0])
    if fov[2] < 2 * anat.body_a + 10:
        centre[0] = anat.liver_centre[0] + 15.0
    if fov[1] < 2 * anat.body_b + 10:
        centre[1] = anat.liver_centre[1]
    if fov[0] < (anat.liver_hi[2] - anat.liver_lo[2]) + 40:
        centre[2] = anat.liver_centre[2]
    spacing_xyz = np.array(spacing[::-1])
    n_xyz = np.array(shape[::-1])
    origin = centre - (n_xyz - 1) / 2.0 * spacing_xyz
    geometry = Geometry(shape=shape, spacing=spacing, origin=tuple(float(v) for v in np.round(origin, 4)))
    image, labels, lesion_info, truth = _render(anat, geometry, int(seed))
    prov = Provenance(source=f"phantom seed {int(seed)}", source_format="phantom", modality="CT",
                      series_description="Synthetic portal-phase abdominal CT (LiverPlan phantom)",
                      label_source="phantom",
                      extra={"seed": int(seed), "generator_version": GENERATOR_VERSION,
                             "n_lesions": len(lesion_info), "lesions": lesion_info,
                             "true_total_liver_ml": truth["total_liver_ml"],
                             "lesions_outside_view": truth["lesions_outside_view"],
                             "note": "synthetic data, not a patient"})
    if truth["lesions_outside_view"]:
        prov.warnings.append(f"{len(truth['lesions_outside_view'])} of the {len(lesion_info)} lesions lie outside "
                             "this field of view and are not in the image.")
    if n_lesions is not None and len(lesion_info) < int(n_lesions):
        prov.warnings.append(f"Only {len(lesion_info)} of the {int(n_lesions)} requested lesions fitted "
                             "inside this phantom's liver.")
    return (Case(image=image, geometry=geometry, labels=labels, provenance=prov, name=f"phantom_{int(seed):03d}"),
            anat)


def demo_case() -> Case:
    """The built-in demo case: a fixed phantom that looks like a routine portal-phase series."""
    case = make_phantom(seed=DEMO_SEED, shape=DEMO_SHAPE, spacing=DEMO_SPACING, n_lesions=DEMO_N_LESIONS,
                        lesion_diameters_mm=DEMO_LESION_DIAMETERS_MM)
    case.name = "demo_phantom"
    case.provenance.series_description = "LiverPlan demo case (synthetic phantom, not a patient)"
    return case
