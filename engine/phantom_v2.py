"""Phantoms v2: the liver among neighbours that look like it (portal-phase CT, five-structure labels).

Version 1 (:mod:`engine.phantom`) taught the demo model that bright soft tissue in the upper abdomen is
liver: its spleen, kidneys and bowel were flat, few, and brighter or darker than every liver. Version 2
keeps v1's patient frame and its seeded liver, vessel and lesion generator and adds what a real abdomen
has at liver-like densities (portal venous phase, HU, each drawn per seed from the ranges below):

  spleen 100-140 (never darker than a normal liver by more than 10), stomach (wall 80-120, contents gas,
  water 0-20 with an air-fluid level, or food 25-60), kidneys (cortex 150-210, medulla 90-150, sinus fat),
  bowel loops (enhancing wall 80-130, fluid or gas contents, also in the left upper quadrant), pancreas
  80-120 along the splenic vein, heart (myocardium 90-130, blood pool 130-190) in its pericardium with
  pericardial fat above the diaphragm, gallbladder (wall, bile 0-25), aorta 130-200, ribs (cortex
  300-700) and spine, fat -120 to -80, muscle 40-70.

Livers of varied shape and size: a size factor 0.8-1.25 on v1's liver and a variant per seed: "normal",
"large_left_lobe" (a left lateral segment reaching around to the spleen), "riedel" (a long inferior
tongue of the right lobe), "atrophic_right" (the right liver shrunk, the left hypertrophied, as after
portal vein embolisation or resection); one liver in five is steatotic (30-75 HU, darker than the spleen).

Lesions with real appearances (``kind`` in the provenance): "hypodense", "rim" (hypodense with an
enhancing rim), "necrotic" (a fluid centre), "calcified" (dense foci), "confluent" (two overlapping
nodules), "subcapsular", "perivascular" (abutting a portal or hepatic vein branch, which stays intact).
The vessel trees branch down to 2 mm calibre.

The liver's surface gives way to its neighbours (no organ is cut by it) and the label map is still the
five structures: every neighbour is background. The same seed gives the same patient at any grid; v1's
seeds are untouched (this module only reads engine.phantom). :func:`make_phantom_v2` takes an optional
:class:`Appearance` (per-structure densities, noise, blur), which the training data builder draws from
wide ranges for domain randomisation (engine.training.randomise).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

from .case import Case, Provenance
from .geometry import Geometry
from .labels import Label
from .phantom import (DEFAULT_FOV_MM, LESION_DIAMETER_RANGE_MM, MAX_LESIONS, _Anatomy, _Ellipsoid,
                      check_phantom_args, tube_in_box, _FourierNoise, _Grid, _Lesion, _rotation, _seg_clearance, _Segment, _unit)

PHANTOM_VERSION = 2
#: Bumped whenever the anatomy a v2 seed produces changes (recorded in the provenance).
GENERATOR_VERSION_V2 = 1

LIVER_VARIANTS = ("normal", "large_left_lobe", "riedel", "atrophic_right")
LESION_KINDS = ("hypodense", "rim", "necrotic", "calcified", "confluent", "subcapsular", "perivascular")

#: The neighbours drawn (ids of the organ map that :func:`make_phantom_v2_with_organs` returns).
ORGANS = {1: "spleen", 2: "stomach", 3: "kidney_right", 4: "kidney_left", 5: "pancreas", 6: "gallbladder",
          7: "heart", 8: "aorta", 9: "bowel", 10: "bone"}
ORGAN_IDS = {v: k for k, v in ORGANS.items()}

#: Portal-venous-phase ranges (HU) that the default appearance draws from (see the module text).
PORTAL_RANGES: dict[str, tuple[float, float]] = {
    "liver": (95.0, 125.0), "steatotic_liver": (30.0, 75.0), "spleen": (100.0, 140.0),
    "kidney_cortex": (150.0, 210.0), "kidney_medulla": (90.0, 150.0), "pancreas": (80.0, 120.0),
    "bowel_wall": (80.0, 130.0), "stomach_wall": (80.0, 120.0), "myocardium": (90.0, 130.0),
    "blood_pool": (130.0, 190.0), "aorta": (130.0, 200.0), "portal_vein": (150.0, 200.0),
    "hepatic_veins": (135.0, 185.0), "ivc": (120.0, 170.0), "gallbladder": (0.0, 25.0),
    "fat": (-120.0, -80.0), "muscle": (40.0, 70.0), "bone_cortex": (300.0, 700.0),
}


@dataclass
class Appearance:
    """The densities (HU) and the acquisition of one phantom. Lesion values are relative to the liver."""

    liver: float = 110.0
    spleen: float = 120.0
    kidney_cortex: float = 180.0
    kidney_medulla: float = 120.0
    pancreas: float = 100.0
    bowel_wall: float = 105.0
    stomach_wall: float = 100.0
    myocardium: float = 110.0
    blood_pool: float = 160.0
    aorta: float = 165.0
    portal_vein: float = 175.0
    hepatic_veins: float = 160.0
    ivc: float = 145.0
    gallbladder: float = 10.0
    fat: float = -100.0
    muscle: float = 55.0
    bone_cortex: float = 550.0
    lesion_delta: float = -55.0            # lesion core minus liver
    rim_delta: float = 30.0                # an enhancing rim above the lesion core
    noise_sd: float = 12.0                 # image noise after the blur (HU)
    blur_mm: float = 1.5                   # Gaussian partial-volume blur (sigma, mm)
    phase: str = "portal venous"

    def to_dict(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def portal_appearance(seed: int, steatotic: bool) -> Appearance:
    """The seed's realistic portal-phase densities (the ranges of :data:`PORTAL_RANGES`)."""
    rng = np.random.default_rng([int(seed), 22])
    u = lambda key: float(rng.uniform(*PORTAL_RANGES[key]))  # noqa: E731
    a = Appearance(liver=u("liver"), spleen=u("spleen"), kidney_cortex=u("kidney_cortex"),
                   kidney_medulla=u("kidney_medulla"), pancreas=u("pancreas"), bowel_wall=u("bowel_wall"),
                   stomach_wall=u("stomach_wall"), myocardium=u("myocardium"), blood_pool=u("blood_pool"),
                   aorta=u("aorta"), portal_vein=u("portal_vein"), hepatic_veins=u("hepatic_veins"),
                   ivc=u("ivc"), gallbladder=u("gallbladder"), fat=u("fat"), muscle=u("muscle"),
                   bone_cortex=u("bone_cortex"), lesion_delta=float(rng.uniform(-70, -45)),
                   rim_delta=float(rng.uniform(20, 40)), noise_sd=float(rng.uniform(9, 16)),
                   blur_mm=float(rng.uniform(1.0, 1.8)))
    # The normal spleen is as bright as the liver or brighter (within 10 HU below) in the portal phase.
    a.spleen = max(a.spleen, a.liver - 10.0)
    if steatotic:
        a.liver = u("steatotic_liver")
        a.lesion_delta = float(rng.uniform(-30, -12))     # metastases in a fatty liver: less conspicuous
    a.kidney_medulla = min(a.kidney_medulla, a.kidney_cortex - 20.0)
    a.portal_vein = max(a.portal_vein, a.liver + 25.0)
    a.hepatic_veins = max(a.hepatic_veins, a.liver + 15.0)
    return a


@dataclass
class _LesionV2:
    base: _Lesion
    kind: str
    calc: list = field(default_factory=list)       # (centre, radius) of calcified foci


def _variant_draws(seed: int) -> tuple[str, float, bool]:
    """(liver variant, size factor, steatotic) of a seed, from its own stream."""
    rng = np.random.default_rng([int(seed), 20])
    variant = str(rng.choice(LIVER_VARIANTS, p=[0.4, 0.22, 0.18, 0.2]))
    return variant, float(rng.uniform(0.82, 1.22)), bool(rng.uniform() < 0.2)


def liver_is_steatotic(seed: int) -> bool:
    """Whether the v2 phantom of this seed has a fatty liver (before any appearance is chosen)."""
    return _variant_draws(seed)[2]


class _AnatomyV2(_Anatomy):
    """v1's patient with v2's liver variants, neighbours and lesion kinds (extra draws on own streams)."""

    def __init__(self, seed: int, n_lesions: Optional[int], lesion_diameters: Optional[Sequence[float]] = None,
                 lesion_appearances: bool = True):
        self.lesion_appearances = bool(lesion_appearances)
        self.variant, self.size_factor, self.steatotic = _variant_draws(seed)
        self._v2 = np.random.default_rng([int(seed), 27])
        self._carve = False
        super().__init__(seed, n_lesions, lesion_diameters)

    # v1 grows the vessels right after drawing the liver and its neighbours: reshape the liver here.
    def _grow_portal(self) -> None:
        self._reshape_liver()
        self._neighbours()
        self._carve = True
        super()._grow_portal()

    def _tree(self, out, p, d, r, depth, style, r_min: float = 1.0):
        return super()._tree(out, p, d, r, depth, style, r_min)

    def _reshape_liver(self) -> None:
        rng = self._v2
        parts = self.liver_parts
        c0 = self.liver_centre.copy()
        s = self.size_factor
        for e in parts:
            e.centre = c0 + (e.centre - c0) * s
            e.radii = e.radii * s
        if self.variant == "large_left_lobe":
            parts[3].radii = parts[3].radii * np.array([1.3, 1.05, 1.05])
            parts[3].centre = parts[3].centre + np.array([14.0, 4.0, 4.0])
            tip = parts[3].centre + np.array([parts[3].radii[0] * 0.9, 26.0, 6.0]) + rng.uniform(-5, 5, 3)
            parts.append(_Ellipsoid(tip, np.array([30.0, 22.0, 20.0]) * rng.uniform(0.85, 1.15, 3),
                                    _rotation(rng, 15)))
        elif self.variant == "riedel":
            c = parts[1].centre + np.array([-4.0, 2.0, -42.0]) * s
            parts.append(_Ellipsoid(c, np.array([24.0, 28.0, 46.0]) * s * rng.uniform(0.9, 1.1, 3),
                                    _rotation(rng, 10)))
        elif self.variant == "atrophic_right":
            for i in (0, 1):
                parts[i].radii = parts[i].radii * rng.uniform(0.6, 0.75)
                parts[i].centre = parts[i].centre + np.array([22.0, 0.0, 8.0 if i == 1 else 0.0])
            for i in range(2, len(parts)):
                parts[i].radii = parts[i].radii * rng.uniform(1.15, 1.3)
            # the v1 inferior tongue / Riedel lobe of the old right liver goes with it
            del parts[4:]
            parts.append(_Ellipsoid(parts[3].centre + np.array([22.0, 6.0, -6.0]),
                                    np.array([36.0, 26.0, 28.0]), _rotation(rng, 15)))
        lo = np.min([e.bounds(8)[0] for e in parts], axis=0)
        hi = np.max([e.bounds(8)[1] for e in parts], axis=0)
        self.liver_lo, self.liver_hi = lo, hi
        self.liver_centre = (lo + hi) / 2
        self.dome_z = self.liver_hi[2] - 8
        self.heart.centre = self.heart.centre.copy()
        self.heart.centre[2] = self.dome_z + 50 + self._v2.uniform(-4, 4)

    def _neighbours(self) -> None:
        rng = self._v2
        c = self.liver_centre
        # spleen: lateral to the stomach, posterior, against the left lobe when that is large
        # (its long axis along the posterolateral wall: turned ~35 degrees about z, then a little at random)
        turn = np.array([[np.cos(0.6), -np.sin(0.6), 0.0], [np.sin(0.6), np.cos(0.6), 0.0], [0.0, 0.0, 1.0]])
        self.spleen = _Ellipsoid(np.array([74.0, 22.0, c[2] + 2.0]) + rng.uniform(-6, 6, 3),
                                 np.array([24.0, 50.0, 50.0]) * rng.uniform(0.8, 1.15, 3), turn @ _rotation(rng, 15))
        self.spleen_noise = _FourierNoise(rng, 8, (40, 100), 3.0)
        # stomach: fundus under the left dome, body running anteriorly-inferiorly
        self.stomach_parts = [
            _Ellipsoid(np.array([58.0, -10.0, c[2] + 18.0]) + rng.uniform(-8, 8, 3),
                       np.array([38.0, 36.0, 40.0]) * rng.uniform(0.8, 1.15, 3), _rotation(rng, 20)),
            _Ellipsoid(np.array([30.0, -55.0, c[2] - 25.0]) + rng.uniform(-8, 8, 3),
                       np.array([45.0, 24.0, 30.0]) * rng.uniform(0.8, 1.15, 3), _rotation(rng, 25)),
        ]
        self.stomach_content = str(rng.choice(["gas", "water", "food"], p=[0.3, 0.35, 0.35]))
        self.stomach_content_hu = {"gas": -950.0, "water": float(rng.uniform(0, 20)),
                                   "food": float(rng.uniform(25, 60))}[self.stomach_content]
        self.stomach_air = float(rng.uniform(0.1, 0.35)) if self.stomach_content != "gas" else 1.0
        self.stomach_wall_mm = float(rng.uniform(3.5, 6.0))
        # kidneys: v1's, moved a little forward and inward (inside the muscles of the back); the right one
        # pushes the liver away, as in v1
        self.kidney.centre = self.kidney.centre + np.array([6.0, -10.0, 0.0])
        self.kidney_l.centre = self.kidney_l.centre + np.array([-6.0, -12.0, 0.0])
        self.kidney_sinus_mm = float(rng.uniform(7, 12))
        # pancreas: a lobulated tube from the head (by the duodenum) along the splenic vein to the tail
        head = np.array([-12.0, -5.0, c[2] - 70.0]) + rng.uniform(-6, 6, 3)
        neck = np.array([10.0, -18.0, c[2] - 60.0]) + rng.uniform(-5, 5, 3)
        body = np.array([45.0, 0.0, c[2] - 45.0]) + rng.uniform(-6, 6, 3)
        tail = np.array([78.0, 25.0, c[2] - 30.0]) + rng.uniform(-6, 6, 3)
        rp = float(rng.uniform(9, 13))
        self.pancreas = [_Segment(head, neck, rp * 1.4, rp), _Segment(neck, body, rp, rp * 0.9),
                         _Segment(body, tail, rp * 0.9, rp * 0.75)]
        self.bowel_luq = float(rng.uniform(0.3, 1.0))     # how high loops reach into the left upper quadrant
        self.bowel_gas = float(rng.uniform(0.0, 0.25))    # fraction of loops with gas
        self.gb_wall_mm = float(rng.uniform(1.5, 3.0))

    def liver_field(self, x, y, z):
        f = super().liver_field(x, y, z)
        if not self._carve:
            return f
        # The liver gives way to its neighbours (2-3 mm of fat or diaphragm between).
        f = np.maximum(f, -(self.spleen.field(x, y, z) + self.spleen_noise(x, y, z) - 3.0))
        for e in self.stomach_parts:
            f = np.maximum(f, -(e.field(x, y, z) - 2.5))
        f = np.maximum(f, -(self.kidney_l.field(x, y, z) - 3.0))
        f = np.maximum(f, -(self.heart.field(x, y, z) - 6.0))
        f = np.maximum(f, (self.aorta_r + 3.0) - np.hypot(x - self.aorta_xy[0], y - self.aorta_xy[1]))
        # the spine (vertebral body and posterior elements) and the paraspinal muscles behind it
        sx, sy = self.spine_xy
        f = np.maximum(f, 23.0 - np.hypot(x - sx, y - sy))
        para = np.sqrt(((np.abs(x) - 35.0) / 28.0) ** 2 + ((y - (sy + 30.0)) / 24.0) ** 2)
        f = np.maximum(f, -((para - 1.0) * 24.0 - 3.0))
        # the pancreas (a tube: distance to its axis minus its radius), 2 mm of fat between
        f = np.maximum(f, -(_tube_distance(x, y, z, self.pancreas) - 2.0))
        return f

    # --- lesions: v1's placement, then kinds and vessel-abutting lesions on an own stream ---------------
    def _place_lesions(self, n: int, diameters: Optional[Sequence[float]] = None):
        base = super()._place_lesions(n, diameters)
        rng = np.random.default_rng([self.seed, 21])
        out: list[_LesionV2] = []
        for les in base:
            if not self.lesion_appearances:
                # plain (v1-like) lesions: hypodense, an enhancing rim from 12 mm (for ablations)
                kind = "confluent" if les.lobe is not None else "subcapsular" if les.subcapsular else (
                    "rim" if les.diameter >= 12 else "hypodense")
                out.append(_LesionV2(les, kind))
                continue
            if les.lobe is not None:
                kind = "confluent"
            elif les.subcapsular:
                kind = "subcapsular"
            elif les.diameter >= 20:
                kind = str(rng.choice(["rim", "necrotic", "calcified"], p=[0.4, 0.4, 0.2]))
            elif les.diameter >= 10:
                kind = str(rng.choice(["rim", "hypodense", "calcified"], p=[0.45, 0.4, 0.15]))
            else:
                kind = "hypodense" if rng.uniform() < 0.9 else "calcified"
            out.append(_LesionV2(les, kind, self._calcifications(rng, les) if kind == "calcified" else []))
        if diameters is None and len(out) < MAX_LESIONS and self.lesion_appearances:
            for _ in range(int(rng.choice([0, 1, 2], p=[0.4, 0.4, 0.2]))):
                les = self._perivascular(rng, [o.base for o in out])
                if les is not None:
                    out.append(_LesionV2(les, "perivascular"))
                if len(out) >= MAX_LESIONS:
                    break
        return out

    @staticmethod
    def _calcifications(rng, les: _Lesion) -> list:
        r = les.diameter / 2
        k = int(rng.integers(1, 5))
        return [(les.centre + _unit(rng.normal(size=3)) * r * rng.uniform(0, 0.5), float(rng.uniform(1.2, 2.5)))
                for _ in range(k)]

    def _perivascular(self, rng, others: list) -> Optional[_Lesion]:
        cand = [s for s in self.pv + self.hv if min(s.r0, s.r1) >= 2.0]
        if not cand:
            return None
        for _ in range(300):
            s = cand[int(rng.integers(len(cand)))]
            d = float(np.exp(rng.uniform(np.log(8.0), np.log(25.0))))
            r = d / 2
            t = rng.uniform(0.2, 0.8)
            axis = s.p1 - s.p0
            p = s.p0 + t * axis
            perp = _unit(np.cross(_unit(axis), rng.normal(size=3)))
            c = p + perp * ((s.r0 + t * (s.r1 - s.r0)) + r * 0.9)
            if self.liver_at(c) > -(r + 3.0):
                continue
            if any(np.linalg.norm(c - o.centre) < r + o.diameter / 2 + 6.0 for o in others):
                continue
            if np.linalg.norm(c[:2] - self.ivc_xy) < self.ivc_r + r + 4.0:
                continue
            ell = _Ellipsoid(c, np.full(3, r), np.eye(3))
            return _Lesion(c, d, ell, 0.0, d >= 12, None, False)
        return None


def _tube_distance(x, y, z, segs) -> np.ndarray:
    """Signed distance (mm, negative inside) to the union of tapered tubes, on broadcast coordinates."""
    out = None
    for sg in segs:
        v = (sg.p1 - sg.p0).astype(np.float32)
        vv = float(np.dot(v, v)) or 1e-6
        dx, dy, dz = x - sg.p0[0], y - sg.p0[1], z - sg.p0[2]
        proj = dx * v[0] + dy * v[1] + dz * v[2]
        t = np.clip(proj / vv, 0.0, 1.0)
        d2 = np.maximum(dx * dx + dy * dy + dz * dz - 2 * t * proj + t * t * vv, 0.0)
        d = np.sqrt(d2) - (sg.r0 + t * (sg.r1 - sg.r0))
        out = d if out is None else np.minimum(out, d)
    return out


def _ellipsoid_box(grid: _Grid, e: _Ellipsoid, margin: float = 1.0):
    return grid.box(*e.bounds(margin))


def _paint_tubes(labels, hu, grid: _Grid, segs, label: int, value: float, min_r_mm: float,
                 organ: Optional[np.ndarray] = None, organ_id: int = 0) -> None:
    """Tubes of the segments; radii below ``min_r_mm`` are drawn at that radius with their contrast
    scaled down by the partial volume (so a 2 mm branch on a 2.5 mm grid stays a connected, fainter line)."""
    for s in segs:
        tube = tube_in_box(grid, s, max(s.r0, s.r1, min_r_mm))
        if tube is None:
            continue
        sl, d2, rad = tube
        rad_draw = np.maximum(rad, min_r_mm)
        inside = d2 <= rad_draw * rad_draw
        if labels is not None and label:
            labels[sl][inside] = label
        if organ is not None:
            organ[sl][inside] = organ_id
        frac = np.clip((rad / rad_draw) ** 2, 0.35, 1.0)
        cur = hu[sl]
        cur[inside] = (cur + (value - cur) * frac)[inside]


def _render_v2(anat: _AnatomyV2, geometry: Geometry, seed: int, app: Appearance):
    grid = _Grid(geometry)
    X, Y, Z = grid.x[None, None, :], grid.y[None, :, None], grid.z[:, None, None]
    hu = np.full(geometry.shape, -1000.0, dtype=np.float32)
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    organ = np.zeros(geometry.shape, dtype=np.uint8)
    min_sp = float(min(geometry.spacing))
    f32 = np.float32

    # --- body wall and abdominal fat ---
    depth = anat.body_depth(X, Y, Z).astype(np.float32)
    body = depth > 0
    np.copyto(hu, f32(app.fat), where=body)
    wall = (depth > anat.fat_mm) & (depth <= anat.fat_mm + anat.muscle_mm)
    np.copyto(hu, f32(app.muscle), where=wall)
    del wall
    cavity = depth > anat.fat_mm + anat.muscle_mm

    # --- bowel loops: enhancing wall, fluid or gas inside; below the liver and up into the left upper quadrant
    rng_vis = np.random.default_rng([seed, 23])
    loops = _FourierNoise(rng_vis, 12, (22, 60), 1.0)
    gas_field = _FourierNoise(rng_vis, 6, (40, 90), 1.0)
    cz = np.flatnonzero(cavity.any(axis=(1, 2)))
    if cz.size:
        zs = slice(cz[0], cz[-1] + 1)
        zc = Z[zs]
        fld = loops(X, Y, zc)
        lower = np.clip((anat.liver_centre[2] + 20.0 - zc) / 30.0, 0.0, 1.0)
        # left upper quadrant: loops (jejunum, splenic flexure) under the spleen and beside the stomach
        luq = np.clip((X - 10.0) / 40.0, 0.0, 1.0) * np.clip((anat.liver_centre[2] + 40.0 * anat.bowel_luq - zc)
                                                              / 25.0, 0.0, 1.0)
        w = np.maximum(lower, luq).astype(np.float32)
        loop = (fld > 0.25) & (w > 0.5)
        lumen = fld > 0.55
        gas = gas_field(X, Y, zc) > (1.0 - 2.5 * anat.bowel_gas)
        val = np.where(lumen, np.where(gas, f32(-700.0), f32(15.0)), f32(app.bowel_wall)).astype(np.float32)
        m = loop & cavity[zs]
        np.copyto(hu[zs], val, where=m)
        organ[zs][m] = ORGAN_IDS["bowel"]
        del fld, loop, lumen, gas, val, m

    # --- spine, paraspinal muscles (v1's layout), bone values from the appearance ---
    x2, y2 = grid.x[None, :], grid.y[:, None]
    sx_, sy_ = anat.spine_xy
    para = (((np.abs(x2) - 35) / 28) ** 2 + ((y2 - (sy_ + 30)) / 24) ** 2) <= 1
    np.copyto(hu, f32(app.muscle), where=body & ~cavity & para[None])
    np.copyto(hu, f32(app.muscle), where=(depth > 3) & para[None])
    organ[(depth > 3) & para[None]] = 0
    r_body = np.hypot(x2 - sx_, y2 - sy_)
    disc = (np.mod(grid.z + 13.0, 34.0) < 7.0)[:, None, None]
    vb = (r_body <= 19)[None]
    np.copyto(hu, f32(0.45 * app.bone_cortex), where=vb & body)
    np.copyto(hu, f32(app.bone_cortex), where=((r_body > 16.5) & (r_body <= 19))[None] & ~disc)
    np.copyto(hu, f32(85.0), where=vb & disc)
    canal = np.hypot(x2 - sx_, y2 - (sy_ + 27)) <= 8.5
    arch = (np.hypot(x2 - sx_, y2 - (sy_ + 27)) <= 14) & ~canal
    spinous = (np.abs(x2 - sx_) <= 5) & (y2 > sy_ + 35) & (y2 < sy_ + 50)
    posterior = (arch | spinous)[None] & ~disc & (depth > 8)
    np.copyto(hu, f32(0.8 * app.bone_cortex), where=posterior)
    np.copyto(hu, f32(20.0), where=canal[None] & body)
    organ[(vb & body) | posterior] = ORGAN_IDS["bone"]

    def ell_mask(e: _Ellipsoid, where=None, noise=None):
        b = _ellipsoid_box(grid, e, 2.0)
        if b is None:
            return None
        sl, x, y, z = b
        f = e.field(x, y, z)
        if noise is not None:
            f = f + noise(x, y, z)
        inside = f <= 0
        if where is not None:
            inside &= where[sl]
        return sl, inside, f

    # --- stomach: wall, contents, an air-fluid level (gas rises anteriorly, supine) ---
    for e in anat.stomach_parts:
        b = _ellipsoid_box(grid, e, 2.0)
        if b is None:
            continue
        sl, x, y, z = b
        f = e.field(x, y, z)
        inside = (f <= 0) & cavity[sl]
        lumen = inside & (f < -anat.stomach_wall_mm)
        hu[sl][inside] = app.stomach_wall
        content = np.full(inside.shape, anat.stomach_content_hu, dtype=np.float32)
        if anat.stomach_content == "food":
            content += (_FourierNoise(np.random.default_rng([seed, 24]), 6, (6, 20), 12.0)(x, y, z)).astype(np.float32)
        if anat.stomach_content != "gas":
            lo_y = anat.stomach_parts[0].bounds()[0][1]
            hi_y = anat.stomach_parts[0].bounds()[1][1]
            level = lo_y + (hi_y - lo_y) * anat.stomach_air
            content = np.where(np.broadcast_to(y < level, content.shape), np.float32(-950.0), content)
        hu[sl][lumen] = content[lumen]
        organ[sl][inside] = ORGAN_IDS["stomach"]
    # --- spleen (a lobulated surface), kidneys (cortex, medulla, sinus fat), pancreas, aorta ---
    m = ell_mask(anat.spleen, cavity, anat.spleen_noise)
    if m is not None:
        sl, inside, _ = m
        hu[sl][inside] = app.spleen
        organ[sl][inside] = ORGAN_IDS["spleen"]
    for key, e in (("kidney_right", anat.kidney), ("kidney_left", anat.kidney_l)):
        m = ell_mask(e, cavity)
        if m is None:
            continue
        sl, inside, f = m
        val = np.where(f > -6.5, f32(app.kidney_cortex), f32(app.kidney_medulla))
        # renal sinus: fat and the collecting system in the medial hilum
        b = _ellipsoid_box(grid, e, 2.0)
        _, x, y, z = b
        medial = np.sign(-e.centre[0])
        hx = (x - e.centre[0]) * medial
        sinus = (f < -4.0) & (hx > 0) & (np.hypot(y - e.centre[1], (z - e.centre[2]) * 0.6) < anat.kidney_sinus_mm)
        val = np.where(sinus, f32(app.fat * 0.8), val)
        hu[sl][inside] = val[inside]
        organ[sl][inside] = ORGAN_IDS[key]
    tmp_org = np.zeros(geometry.shape, dtype=np.uint8)
    _paint_tubes(None, hu, grid, anat.pancreas, 0, app.pancreas, 0.0, tmp_org, 1)
    pm = (tmp_org == 1) & cavity
    organ[pm] = ORGAN_IDS["pancreas"]
    del tmp_org
    aorta = (np.hypot(x2 - anat.aorta_xy[0], y2 - anat.aorta_xy[1]) <= anat.aorta_r)[None] & cavity
    np.copyto(hu, f32(app.aorta), where=aorta)
    organ[aorta] = ORGAN_IDS["aorta"]

    # --- liver (its surface already gives way to the neighbours) ---
    b = grid.box(anat.liver_lo, anat.liver_hi)
    liver = np.zeros(geometry.shape, dtype=bool)
    if b is not None:
        sl, x, y, z = b
        f = anat.liver_field(x, y, z)
        inside = f <= 0
        liver[sl] = inside
        tex = app.liver + anat.liver_tex(x, y, z)
        near_gas = (f < 12.0) & (hu[sl] < -300.0) & cavity[sl]
        hu[sl] = np.where(inside, tex, np.where(near_gas, f32(app.fat), hu[sl]))
        labels[sl][inside] = Label.PARENCHYMA
        # bowel loops are pliable: the liver takes their place (every other neighbour was carved out of
        # the liver, so the organ map keeps them: a test can see any overlap)
        organ[sl][inside & (organ[sl] == ORGAN_IDS["bowel"])] = 0
    if anat.has_gallbladder:
        m = ell_mask(anat.gallbladder, cavity & ~liver)
        if m is not None:
            sl, inside, f = m
            val = np.where(f > -anat.gb_wall_mm, f32(app.stomach_wall * 0.8), f32(app.gallbladder))
            hu[sl][inside] = val[inside]
            organ[sl][inside] = ORGAN_IDS["gallbladder"]

    # --- heart in its pericardium on the diaphragm; lung bases; ribs ---
    lung_z = anat.dome_z - 20.0 + 0.0006 * (X - anat.liver_centre[0]) ** 2 - 0.35 * (Y - 20)
    above = cavity & (Z > lung_z) & ~liver
    heart = np.zeros(geometry.shape, dtype=bool)
    sac = np.zeros(geometry.shape, dtype=bool)
    hb = grid.box(*anat.heart.bounds(6))
    if hb is not None:
        sl, x, y, z = hb
        f = anat.heart.field(x, y, z)
        sac[sl] = (f <= 4.0) & above[sl] & ~liver[sl]
        heart[sl] = (f <= 0) & sac[sl]
        # pericardial fat (0-3 mm outside the myocardium), the pericardium (its outer 1.2 mm)
        hv = np.where(f > 2.8, f32(45.0), np.where(f > 0, f32(app.fat), np.where(
            f > -10.0, f32(app.myocardium), f32(app.blood_pool))))
        hu[sl] = np.where(sac[sl], hv, hu[sl])
        organ[sl][heart[sl]] = ORGAN_IDS["heart"]
    mediastinum = ((X - anat.spine_xy[0]) / 34.0) ** 2 + ((Y - anat.spine_xy[1] + 15.0) / 48.0) ** 2 <= 1.0
    # the lung bases curve over the spleen, the stomach's fundus and the kidneys (they stay whole)
    solid = np.isin(organ, [ORGAN_IDS[k] for k in ("spleen", "stomach", "kidney_right", "kidney_left")])
    lungs = above & ~sac & ~mediastinum & ~solid
    del solid
    np.copyto(hu, f32(-860.0), where=lungs)
    organ[lungs & (organ != ORGAN_IDS["bone"])] = 0
    angle_mm = np.arctan2(Y - anat.body_cy, X) * 100.0
    inner = anat.fat_mm + anat.muscle_mm
    wall_band = (depth > inner - 3) & (depth < inner + 5)
    rib_z = np.mod(Z + 0.6 * np.abs(angle_mm) + anat.rib_phase, anat.rib_period) < 10.0
    ribs = wall_band & rib_z & (Z > anat.liver_lo[2] + 25) & ((Y > -40) | (np.abs(X) > 70)) & ~liver
    np.copyto(hu, f32(0.7 * app.bone_cortex), where=ribs)
    organ[ribs] = ORGAN_IDS["bone"]
    del lungs, above, ribs, sac

    # --- vessels (down to 2 mm: drawn at >= 0.6 voxel radius with their partial-volume contrast) ---
    min_r = 0.6 * min_sp
    _paint_tubes(labels, hu, grid, anat.pv, Label.PORTAL_VEIN, app.portal_vein, min_r)
    _paint_tubes(labels, hu, grid, anat.hv, Label.HEPATIC_VEINS, app.hepatic_veins, min_r)
    organ[(labels == Label.PORTAL_VEIN) | (labels == Label.HEPATIC_VEINS)] = 0

    # --- lesions, by kind ---
    core_base = app.liver + app.lesion_delta
    lesion_info = []
    outside: list[int] = []
    les_rng = np.random.default_rng([seed, 25])
    for i, lv in enumerate(anat.lesions):
        les = lv.base
        core = float(max(core_base + les_rng.uniform(-8, 8), 5.0))
        b = grid.box(*les.bounds(1))
        n_vox = 0
        if b is not None:
            sl, x, y, z = b
            dist = les.field(x, y, z)
            inside = (dist <= 0) & liver[sl]
            if lv.kind == "perivascular":
                inside &= labels[sl] == Label.PARENCHYMA     # the vessel it abuts stays a vessel
            r = les.diameter / 2
            val = np.full(inside.shape, core, dtype=np.float32)
            if lv.kind in ("rim", "necrotic", "confluent", "subcapsular", "perivascular") and les.diameter >= 10:
                val = np.where(dist > -min(3.0, 0.25 * r), f32(core + app.rim_delta), val)
            if lv.kind == "necrotic":
                nec = _FourierNoise(les_rng, 5, (6, 18), 0.12 * r)
                val = np.where(dist + nec(x, y, z) < -0.45 * r, f32(les_rng.uniform(5, 25)), val)
            if lv.kind == "calcified":
                for cc, cr in lv.calc:
                    dd = np.sqrt((x - cc[0]) ** 2 + (y - cc[1]) ** 2 + (z - cc[2]) ** 2)
                    val = np.where(dd <= max(cr, 0.5 * min_sp), f32(les_rng.uniform(300, 800)), val)
            hu[sl][inside] = val[inside]
            labels[sl][inside] = Label.CRLM
            n_vox = int(inside.sum())
        if n_vox == 0:
            idx = np.round(geometry.physical_to_index(les.centre)).astype(int)
            if not (np.all(idx >= 0) and np.all(idx < np.array(geometry.shape))):
                outside.append(i)
            elif liver[tuple(idx)]:
                labels[tuple(idx)] = Label.CRLM
                hu[tuple(idx)] = core
        lesion_info.append({"centre_lps_mm": [round(float(v), 2) for v in les.centre],
                            "diameter_mm": round(les.diameter, 2), "kind": lv.kind,
                            "core_hu": round(core, 1), "rim": bool(les.rim),
                            "lobulated": les.lobe is not None, "subcapsular": les.subcapsular})

    ivc = np.hypot(x2 - anat.ivc_xy[0], y2 - anat.ivc_xy[1]) <= anat.ivc_r
    ivc3 = ivc[None] & (body & (depth > anat.fat_mm))
    np.copyto(hu, f32(app.ivc), where=ivc3)
    labels[ivc3] = Label.IVC
    organ[ivc3] = 0
    truth = {"total_liver_ml": round(float(np.count_nonzero(liver & ~ivc3)) * geometry.voxel_volume_ml, 3),
             "lesions_outside_view": outside}

    # --- acquisition: blur (sigma in mm) and noise of the given SD after the blur ---
    from scipy.ndimage import gaussian_filter

    rng_noise = np.random.default_rng([seed, 26])
    sigma_vox = [max(app.blur_mm / s, 0.05) for s in geometry.spacing]
    noise = rng_noise.standard_normal(geometry.shape, dtype=np.float32)
    gaussian_filter(noise, sigma_vox, output=noise, truncate=3.0)
    sd = float(noise.std()) or 1.0
    noise *= np.float32(app.noise_sd / sd)
    noise[~body] *= np.float32(0.3)
    gaussian_filter(hu, sigma_vox, output=hu, truncate=3.0)
    hu += noise
    del noise
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return image, labels, organ, lesion_info, truth


def _geometry_for(anat: _Anatomy, shape, spacing) -> Geometry:
    fov = np.array(shape, float) * np.array(spacing)
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
    return Geometry(shape=tuple(shape), spacing=tuple(spacing), origin=tuple(float(v) for v in np.round(origin, 4)))




def make_phantom_v2_with_organs(seed: int = 0, shape: Sequence[int] = (96, 128, 128),
                                spacing: Optional[Sequence[float]] = None, n_lesions: Optional[int] = None,
                                lesion_diameters_mm: Optional[Sequence[float]] = None,
                                appearance: Optional[Appearance] = None,
                                lesion_appearances: bool = True) -> tuple[Case, np.ndarray]:
    """:func:`make_phantom_v2` and the map of the neighbours it drew (uint8, ids of :data:`ORGANS`)."""
    shape, spacing, n_lesions, lesion_diameters_mm = check_phantom_args(shape, spacing, n_lesions,
                                                                        lesion_diameters_mm)
    anat = _AnatomyV2(int(seed), None if n_lesions is None else int(n_lesions), lesion_diameters_mm,
                      lesion_appearances)
    app = appearance if appearance is not None else portal_appearance(seed, anat.steatotic)
    geometry = _geometry_for(anat, shape, spacing)
    image, labels, organ, lesion_info, truth = _render_v2(anat, geometry, int(seed), app)
    prov = Provenance(source=f"phantom v2 seed {int(seed)}", source_format="phantom", modality="CT",
                      series_description="Synthetic portal-phase abdominal CT (LiverPlan phantom v2)",
                      label_source="phantom",
                      extra={"seed": int(seed), "phantom_version": PHANTOM_VERSION,
                             "generator_version": GENERATOR_VERSION_V2, "liver_variant": anat.variant,
                             "liver_size_factor": round(anat.size_factor, 3), "steatotic": anat.steatotic,
                             "stomach_content": anat.stomach_content, "appearance": app.to_dict(),
                             "lesion_appearances": anat.lesion_appearances,
                             "n_lesions": len(lesion_info), "lesions": lesion_info,
                             "true_total_liver_ml": truth["total_liver_ml"],
                             "lesions_outside_view": truth["lesions_outside_view"],
                             "note": "synthetic data, not a patient"})
    if truth["lesions_outside_view"]:
        prov.warnings.append(f"{len(truth['lesions_outside_view'])} of the {len(lesion_info)} lesions lie outside "
                             "this field of view and are not in the image.")
    case = Case(image=image, geometry=geometry, labels=labels, provenance=prov, name=f"phantom_v2_{int(seed):03d}")
    return case, organ


def make_phantom_v2(seed: int = 0, shape: Sequence[int] = (96, 128, 128), spacing: Optional[Sequence[float]] = None,
                    n_lesions: Optional[int] = None, lesion_diameters_mm: Optional[Sequence[float]] = None,
                    appearance: Optional[Appearance] = None, lesion_appearances: bool = True) -> Case:
    """A v2 phantom (see the module text); arguments as :func:`engine.phantom.make_phantom`, plus
    ``appearance`` (None: the seed's realistic portal-phase densities) and ``lesion_appearances`` (False:
    plain v1-like lesions, hypodense with a rim from 12 mm, no necrotic/calcified/perivascular kinds; for
    ablations)."""
    return make_phantom_v2_with_organs(seed, shape, spacing, n_lesions, lesion_diameters_mm, appearance,
                                       lesion_appearances)[0]
