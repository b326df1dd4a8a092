"""Virtual resections and the future liver remnant (FLR).

A resection (a named scenario) is any union of: whole Couinaud segments, non-anatomical wedges around
chosen lesions (every liver voxel within the margin of the lesion, so the wedge is clipped to the liver),
and a painted region. Figures (all volumes in mL, counted on the planning liver voxels):

* total liver = parenchyma + lesions + intrahepatic portal/hepatic-vein voxels (engine.labels' volumetry
  definition; the IVC never counts);
* functional liver = total liver - tumour volume;
* FLR (mL) = non-tumour liver left in the remnant; FLR % = FLR / functional liver x 100;
* standardised FLR (sFLR, when height and weight are known) = FLR / eTLV x 100, with the estimated total
  liver volume eTLV = -794.41 + 1267.28 x BSA (Vauthey J.-N. et al., Liver Transpl 2002;8:233-240) and the
  body surface area BSA = sqrt(height cm x weight kg / 3600) (Mosteller R.D., N Engl J Med 1987;317:1098);
* the usual minimum FLR for the liver's condition (normal >= 20 %, after chemotherapy >= 30 %, cirrhosis
  >= 40 %) is shown beside it as reference text, not advice;
* lesions left (wholly or partly) in the remnant are listed.

Speed: everything is precomputed over the liver's voxel list once (segment per voxel, lesion per voxel,
each wedge as positions in that list), so a scenario's figures are a few vectorised passes over the liver
voxels (well under the 300 ms the GUI allows after a change; see benchmarks/planning_speed.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import InputError
from . import couinaud as cn

DEFAULT_MARGIN_MM = 10.0
#: Minimum FLR (% of the functional / standardised liver) by liver condition: reference values.
FLR_MINIMUM_PCT = {"normal": 20.0, "chemotherapy": 30.0, "cirrhosis": 40.0}
CONDITION_TEXT = {"normal": "normal liver", "chemotherapy": "after chemotherapy", "cirrhosis": "cirrhosis"}
REFERENCE_NOTE = ("Reference minimum FLR: normal liver >= 20 %, after extensive chemotherapy >= 30 %, cirrhosis "
                  ">= 40 % (Vauthey / Abdalla). Reference text, not advice.")


def bsa_mosteller(height_cm: float, weight_kg: float) -> float:
    """Body surface area (m^2) by Mosteller: sqrt(height cm x weight kg / 3600)."""
    if not (50.0 <= height_cm <= 250.0):
        raise InputError(f"A height of {height_cm:g} cm is outside 50-250 cm; enter the height in centimetres.")
    if not (20.0 <= weight_kg <= 350.0):
        raise InputError(f"A weight of {weight_kg:g} kg is outside 20-350 kg; enter the weight in kilograms.")
    return math.sqrt(height_cm * weight_kg / 3600.0)


def etlv_vauthey(bsa_m2: float) -> float:
    """Estimated total liver volume (mL) by Vauthey et al. 2002: -794.41 + 1267.28 x BSA."""
    return -794.41 + 1267.28 * bsa_m2


def segment_number(name) -> int:
    """1..8 from 'I'..'VIII', '1'..'8', 'IVa'/'IVb' (-> 4) or 'segment 5'."""
    s = str(name).strip().upper().replace("SEGMENT", "").replace("SEG", "").strip()
    if s in ("IVA", "IVB"):
        s = "IV"
    roman = {v: k for k, v in cn.SEGMENT_NAMES.items()}
    if s in roman:
        return roman[s]
    if s.isdigit() and 1 <= int(s) <= 8:
        return int(s)
    raise InputError(f"'{name}' is not a Couinaud segment; use I-VIII or 1-8 (e.g. 5,6,7,8).")


def parse_segments(text: str) -> list[int]:
    """'5,6,7,8' / 'V-VIII' / 'II,III' -> sorted segment numbers."""
    out: set[int] = set()
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = (segment_number(p) for p in part.split("-", 1))
            if a > b:
                a, b = b, a
            out.update(range(a, b + 1))
        else:
            out.add(segment_number(part))
    return sorted(out)


@dataclass
class Scenario:
    """A named virtual resection. painted: flat voxel indices (canonical grid) of a painted region."""

    name: str
    segments: list[int] = field(default_factory=list)
    wedges: list[int] = field(default_factory=list)              # lesion ids
    margin_mm: float = DEFAULT_MARGIN_MM
    painted: Optional[np.ndarray] = None

    def describe(self) -> str:
        parts = []
        if self.segments:
            parts.append("segments " + ", ".join(cn.SEGMENT_NAMES[s] for s in sorted(self.segments)))
        if self.wedges:
            parts.append(f"wedge(s) around lesion(s) {', '.join(str(w) for w in sorted(self.wedges))} "
                         f"with a {self.margin_mm:g} mm margin")
        if self.painted is not None and self.painted.size:
            parts.append("a painted region")
        return " + ".join(parts) if parts else "nothing resected"

    def to_dict(self, with_painted: bool = True) -> dict:
        d = {"name": self.name, "segments": [cn.SEGMENT_NAMES[s] for s in sorted(self.segments)],
             "wedge_lesions": sorted(int(w) for w in self.wedges), "margin_mm": self.margin_mm,
             "painted_voxels": 0 if self.painted is None else int(self.painted.size),
             "description": self.describe()}
        if with_painted and self.painted is not None and self.painted.size:
            # flat indices (z, y, x C order) on the case's grid: the scenario can be read back
            d["painted_flat_indices"] = [int(v) for v in np.unique(self.painted)]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Scenario":
        """A scenario as :meth:`to_dict` writes it (planning.json's "scenarios")."""
        try:
            painted = d.get("painted_flat_indices")
            return cls(str(d["name"]), [segment_number(s) for s in d.get("segments", [])],
                       [int(w) for w in d.get("wedge_lesions", [])], float(d.get("margin_mm", DEFAULT_MARGIN_MM)),
                       None if not painted else np.asarray(painted, np.int64))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"A scenario in the file could not be read ({exc}).") from None


@dataclass
class Patient:
    height_cm: Optional[float] = None
    weight_kg: Optional[float] = None
    condition: str = "normal"

    def __post_init__(self) -> None:
        if self.condition not in FLR_MINIMUM_PCT:
            raise InputError(f"The liver condition must be one of {', '.join(FLR_MINIMUM_PCT)}; got "
                             f"'{self.condition}'.")


class ResectionModel:
    """Precomputed liver voxels for fast scenario figures (see the module docstring).

    liver: bool (z, y, x); segments: uint8 0..8 or None; lesions: [(id, flat indices)].
    """

    def __init__(self, liver: np.ndarray, spacing, segments: Optional[np.ndarray],
                 lesions: list[tuple[int, np.ndarray]], full_shape=None, offset=(0, 0, 0)) -> None:
        self.shape = liver.shape
        # a scenario's painted voxels are flat indices on the case's full grid, of which this is a crop
        self.full_shape = tuple(full_shape) if full_shape is not None else tuple(liver.shape)
        self.offset = np.asarray(offset, np.int64)
        self.spacing = tuple(float(s) for s in spacing)
        self.vox_ml = float(np.prod(self.spacing)) / 1000.0
        self.liver_flat = np.flatnonzero(liver)
        self.liver = liver
        self.seg = segments.reshape(-1)[self.liver_flat] if segments is not None else None
        self.lesion_of = np.zeros(self.liver_flat.size, np.int32)
        self.lesion_pos: dict[int, np.ndarray] = {}
        for lid, flat in lesions:
            pos = np.minimum(np.searchsorted(self.liver_flat, flat), max(0, self.liver_flat.size - 1))
            pos = pos[self.liver_flat[pos] == flat] if self.liver_flat.size else pos[:0]
            self.lesion_of[pos] = lid
            self.lesion_pos[lid] = pos
        self.lesion_flat = {lid: flat for lid, flat in lesions}
        self.tumour = self.lesion_of > 0
        self._wedges: dict[tuple[int, float], np.ndarray] = {}
        self.wedge_computations = 0

    # --- parts --------------------------------------------------------------------------------
    def wedge_positions(self, lid: int, margin_mm: float) -> np.ndarray:
        """Positions (in the liver voxel list) of the wedge around lesion ``lid``: the liver within
        ``margin_mm`` of the lesion (Euclidean, anisotropic spacing), lesion included. Cached."""
        from scipy import ndimage as ndi

        key = (int(lid), round(float(margin_mm), 3))
        if key in self._wedges:
            return self._wedges[key]
        if lid not in self.lesion_flat:
            raise InputError(f"There is no lesion {lid} (lesions are numbered 1-{len(self.lesion_flat)}).")
        if not (0.0 <= margin_mm <= 50.0):
            raise InputError(f"A wedge margin of {margin_mm:g} mm is outside 0-50 mm.")
        self.wedge_computations += 1
        flat = self.lesion_flat[lid]
        zyx = np.stack(np.unravel_index(flat, self.shape), 1)
        sp = np.asarray(self.spacing)
        m = np.ceil(margin_mm / sp).astype(int) + 1
        lo = np.maximum(zyx.min(0) - m, 0)
        hi = np.minimum(zyx.max(0) + m + 1, self.shape)
        les = np.zeros(tuple(hi - lo), bool)
        rel = zyx - lo
        les[rel[:, 0], rel[:, 1], rel[:, 2]] = True
        d = ndi.distance_transform_edt(~les, sampling=sp)
        w = (d <= margin_mm) & self.liver[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        wz = np.stack(np.nonzero(w), 1) + lo
        wf = np.ravel_multi_index(wz.T, self.shape)
        pos = np.searchsorted(self.liver_flat, np.sort(wf))
        self._wedges[key] = pos
        return pos

    def resected(self, sc: Scenario) -> np.ndarray:
        """Bool over the liver voxel list: resected by the scenario."""
        out = np.zeros(self.liver_flat.size, bool)
        if sc.segments:
            if self.seg is None:
                raise InputError("Segments cannot be resected: there is no segment map (the estimate failed "
                                 "and none was loaded).")
            lut = np.zeros(9, bool)
            lut[[int(s) for s in sc.segments]] = True
            out |= lut[self.seg]
        for lid in sc.wedges:
            out[self.wedge_positions(int(lid), sc.margin_mm)] = True
        if sc.painted is not None and sc.painted.size:
            zyx = np.stack(np.unravel_index(np.unique(np.asarray(sc.painted, np.int64)), self.full_shape), 0) \
                - self.offset[:, None]
            inside = np.all((zyx >= 0) & (zyx < np.asarray(self.shape)[:, None]), axis=0)
            p = np.ravel_multi_index(tuple(zyx[:, inside]), self.shape)
            pos = np.searchsorted(self.liver_flat, p)
            ok = pos < self.liver_flat.size
            ok[ok] = self.liver_flat[pos[ok]] == p[ok]
            out[pos[ok]] = True
        return out

    # --- figures ------------------------------------------------------------------------------
    def figures(self, sc: Scenario, patient: Optional[Patient] = None) -> dict:
        """The scenario's figures (module docstring). Volumes in mL, shares in %."""
        patient = patient or Patient()
        res = self.resected(sc)
        v = self.vox_ml
        n_total = int(self.liver_flat.size)
        n_tumour = int(self.tumour.sum())
        n_res = int(res.sum())
        remnant = ~res
        n_flr = int(np.count_nonzero(remnant & ~self.tumour))
        total, tumour = n_total * v, n_tumour * v
        functional = total - tumour
        flr = n_flr * v
        # unrounded: the arithmetic is exact to floating point; text and tables round
        fig: dict = {
            "scenario": sc.name, "description": sc.describe(),
            "total_liver_ml": total, "tumour_ml": tumour, "functional_liver_ml": functional,
            "resected_ml": n_res * v, "remnant_ml": (n_total - n_res) * v, "flr_ml": flr,
            "flr_pct": 100.0 * n_flr / (n_total - n_tumour) if n_total > n_tumour else None,
            "condition": patient.condition, "minimum_flr_pct": FLR_MINIMUM_PCT[patient.condition],
            "bsa_m2": None, "etlv_ml": None, "sflr_pct": None,
        }
        if patient.height_cm and patient.weight_kg:
            bsa = bsa_mosteller(float(patient.height_cm), float(patient.weight_kg))
            etlv = etlv_vauthey(bsa)
            fig.update(bsa_m2=bsa, etlv_ml=etlv, sflr_pct=100.0 * flr / etlv)
        # lesions left in the remnant (share of each lesion's voxels not resected)
        left = []
        for lid, pos in sorted(self.lesion_pos.items()):
            if pos.size == 0:
                continue
            kept = float(np.count_nonzero(remnant[pos])) / pos.size
            if kept > 0:
                left.append({"lesion": int(lid), "share_left_pct": 100.0 * kept})
        fig["lesions_left"] = left
        fig["all_lesions_removed"] = not left
        ref = fig["sflr_pct"] if fig["sflr_pct"] is not None else fig["flr_pct"]
        fig["meets_reference_minimum"] = None if ref is None else bool(ref >= fig["minimum_flr_pct"])
        fig["reference_note"] = REFERENCE_NOTE
        return fig

    def masks(self, sc: Scenario) -> np.ndarray:
        """uint8 (z, y, x): 1 remnant, 2 resected, 0 outside the liver (for the 3D view and exports)."""
        out = np.zeros(self.shape, np.uint8)
        res = self.resected(sc)
        flat = out.reshape(-1)
        flat[self.liver_flat] = np.where(res, 2, 1).astype(np.uint8)
        return out


def figures_text(fig: dict) -> str:
    """Plain-text summary of one scenario's figures (CLI and GUI)."""
    lines = [f"{fig['scenario']}: {fig['description']}",
             f"  resected {fig['resected_ml']:.0f} mL, remnant {fig['remnant_ml']:.0f} mL of "
             f"{fig['total_liver_ml']:.0f} mL (tumour {fig['tumour_ml']:.1f} mL)"]
    if fig["flr_pct"] is not None:
        lines.append(f"  FLR {fig['flr_ml']:.0f} mL = {fig['flr_pct']:.1f} % of the functional liver "
                     f"({fig['functional_liver_ml']:.0f} mL)")
    if fig["sflr_pct"] is not None:
        lines.append(f"  standardised FLR {fig['sflr_pct']:.1f} % of eTLV {fig['etlv_ml']:.0f} mL "
                     f"(BSA {fig['bsa_m2']:.2f} m2, Mosteller; eTLV Vauthey)")
    lines.append(f"  reference minimum for {CONDITION_TEXT[fig['condition']]}: {fig['minimum_flr_pct']:.0f} % "
                 "(reference text, not advice)")
    if fig["lesions_left"]:
        lines.append("  lesions left in the remnant: " + ", ".join(
            f"{d['lesion']} ({d['share_left_pct']:.0f} % of it)" for d in fig["lesions_left"]))
    else:
        lines.append("  no lesion is left in the remnant")
    return "\n".join(lines)
