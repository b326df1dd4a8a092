"""One comparison: a baseline and a follow-up of one patient, registered, their lesions matched.

```python
from engine.compare import Comparison
comp = Comparison(baseline_case, followup_case)      # each a Case with its labels
comp.run(progress, cancel)                            # register + match (RegistrationRefused: in words)
comp.rows()                                           # the lesion change table
comp.pair([3], [5]); comp.unpair(baseline=[2])        # re-pair by hand
comp.set_targets([1, 3]); comp.recist(); comp.volumetric()
img, lab = comp.followup_on_baseline()                # the follow-up on the baseline grid
comp.write(out_dir)                                   # CSV + JSON + registered labels (NIfTI)
```
"""
from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..case import Case
from ..errors import InputError
from ..labels import Label
from ..measure import Lesion, measure
from ..progress import CancelToken, ProgressCallback, check, no_progress
from . import recist as _recist
from .match import Link, Matching, candidate_links, group_links, lesion_box, lesion_id_map
from .register import Registration, register

log = logging.getLogger(__name__)


def _lesions_in_box(case: Case) -> tuple[dict[int, Lesion], np.ndarray, np.ndarray]:
    """({id: Lesion with full-grid indices}, the lesion number map of the box, the box's lower corner)."""
    import dataclasses

    from ..geometry import Geometry

    box = lesion_box(case.labels)
    if box is None:
        return {}, np.zeros((0, 0, 0), np.uint16), np.zeros(3, int)
    lo, hi = box
    sub = case.labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    only = np.where(sub == Label.CRLM, np.uint8(Label.CRLM), np.uint8(0))
    g = case.geometry
    gb = Geometry(tuple(int(v) for v in only.shape), g.spacing,
                  tuple(float(v) for v in g.index_to_physical(lo.astype(float))), g.direction)
    lesions = {}
    for l in measure(None, only, gb).lesions:
        lesions[l.id] = dataclasses.replace(
            l, centroid_zyx=tuple(float(round(c + o, 2)) for c, o in zip(l.centroid_zyx, lo)),
            slice_range=(l.slice_range[0] + int(lo[0]), l.slice_range[1] + int(lo[0])),
            bbox=tuple((a + int(o), b + int(o)) for (a, b), o in zip(l.bbox, lo)))
    return lesions, lesion_id_map(only), lo


def load_study(ct: str, labels: str, mapping_spec=None) -> Case:
    """A CT file or DICOM folder with its label map (file or mask folder), as `liverplan measure` reads them."""
    from ..cli.measure import load_case_with_labels

    return load_case_with_labels(str(ct), str(labels), mapping_spec)

NOT_FOR_CLINICAL_USE = ("Research software: not for clinical use. The matches, measurements and response "
                        "categories are computed automatically and must be checked by a radiologist.")

#: The follow-up's lesions are brought onto the baseline grid at this sampling (mm) or the grid's own, whichever
#: is finer, to count overlaps.
OVERLAP_SAMPLING_MM = 1.5

KIND_WORDS = {"matched": "matched", "split": "split", "merged": "merged (confluent)", "complex": "split and merged",
              "vanished": "vanished", "new": "new"}


@dataclass
class ChangeRow:
    """One row of the lesion change table (one group of lesions that are the same disease)."""

    track: str
    kind: str
    baseline_ids: list[int]
    followup_ids: list[int]
    followup_names: list[str]
    baseline_volume_ml: float
    followup_volume_ml: float
    volume_change_ml: float
    volume_change_pct: Optional[float]
    baseline_diameter_mm: float
    followup_diameter_mm: float
    diameter_change_mm: float
    diameter_change_pct: Optional[float]
    baseline_lps_mm: Optional[tuple]          # baseline frame
    followup_lps_mm: Optional[tuple]          # follow-up frame (a vanished lesion: its baseline place mapped there)
    baseline_zyx: Optional[tuple]             # baseline grid index (where the row jumps in both viewers)
    followup_zyx: Optional[tuple]             # follow-up grid index
    confidence: float
    by_hand: bool
    target: bool
    baseline_box: Optional[tuple] = None      # (z0, z1, y0, y1, x0, x1) on the baseline grid (outline in the viewers)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d.pop("baseline_box", None)
        for k in ("baseline_lps_mm", "followup_lps_mm", "baseline_zyx", "followup_zyx"):
            if d[k] is not None:
                d[k] = [round(float(v), 2) for v in d[k]]
        return d


class Comparison:
    def __init__(self, baseline: Case, followup: Case) -> None:
        for which, c in (("baseline", baseline), ("follow-up", followup)):
            if c is None or c.labels is None or not np.any(c.labels):
                raise InputError(f"The {which} scan has no labels; segment it or open its label map first.")
        self.baseline = baseline
        self.followup = followup
        self.registration: Optional[Registration] = None
        self.matching: Optional[Matching] = None
        self.base_lesions: dict[int, Lesion] = {}
        self.fu_lesions: dict[int, Lesion] = {}
        self.base_ids: Optional[np.ndarray] = None        # lesion numbers in the baseline's lesion box
        self.base_lo = np.zeros(3, int)
        self.fu_ids: Optional[np.ndarray] = None          # the follow-up's, in its own lesion box
        self.fu_lo = np.zeros(3, int)
        self.fu_ids_on_base: Optional[np.ndarray] = None  # the follow-up's, on the baseline grid, in a box
        self.fu_on_base_lo = np.zeros(3, int)
        self._fu_boxes: dict[int, tuple] = {}
        self.fu_stride = 1
        self.fu_centroids_on_base: dict[int, np.ndarray] = {}
        self.targets: list[int] = []
        self.targets_chosen_by = "default"
        self._auto_links: list[Link] = []
        self._hand: list[Link] = []
        self._unpaired: set[tuple[str, int]] = set()
        self._image_on_base: Optional[np.ndarray] = None
        self._labels_on_base: Optional[np.ndarray] = None
        self.seconds: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------------
    def run(self, progress: ProgressCallback = no_progress, cancel: Optional[CancelToken] = None,
            spacing_mm: float = 3.0) -> "Comparison":
        import time

        t0 = time.perf_counter()
        self.registration = register(self.baseline, self.followup, progress, cancel, spacing_mm=spacing_mm)
        self.seconds["registration"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        progress("Matching lesions", 0, 3)
        self._measure()
        check(cancel)
        progress("Matching lesions", 1, 3)
        self._map_followup_lesions()
        check(cancel)
        progress("Matching lesions", 2, 3)
        self._auto_links = self._candidate_links()
        self._regroup()
        axial = {k: l.axial_diameter_mm for k, l in self.base_lesions.items()}
        self.targets = _recist.default_targets(axial)
        progress("Matching lesions", 3, 3)
        self.seconds["matching"] = time.perf_counter() - t1
        return self

    def _measure(self) -> None:
        """Each scan's lesions, measured and numbered as its lesion table does, inside the box that holds
        them (a full 512 x 512 x 300 grid would cost seconds per pass)."""
        self.base_lesions, self.base_ids, self.base_lo = _lesions_in_box(self.baseline)
        self.fu_lesions, self.fu_ids, self.fu_lo = _lesions_in_box(self.followup)

    def _map_followup_lesions(self) -> None:
        """The follow-up's lesion numbers on the baseline grid (nearest neighbour through the registration),
        within the box that holds the mapped follow-up lesions, and their centroids in the baseline frame."""
        import SimpleITK as sitk
        from scipy.ndimage import find_objects

        g = self.baseline.geometry
        reg = self.registration
        self.fu_ids_on_base = np.zeros((0, 0, 0), np.uint16)
        self.fu_on_base_lo = np.zeros(3, int)
        self.fu_centroids_on_base = {}
        self._fu_boxes = {}
        if not self.fu_lesions:
            return
        cents = np.array([self.fu_lesions[k].centroid_lps_mm for k in sorted(self.fu_lesions)])
        mapped = reg.to_baseline(cents)
        self.fu_centroids_on_base = {k: mapped[i] for i, k in enumerate(sorted(self.fu_lesions))}
        corners = []
        for l in self.fu_lesions.values():
            (z0, z1), (y0, y1), (x0, x1) = l.bbox
            corners += [(z, y, x) for z in (z0, z1) for y in (y0, y1) for x in (x0, x1)]
        pts = reg.to_baseline(self.followup.geometry.index_to_physical(np.array(corners, float)))
        idx = g.physical_to_index(pts)
        lo = np.clip(np.floor(idx.min(axis=0)).astype(int) - 3, 0, np.asarray(g.shape))
        hi = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 4, 0, np.asarray(g.shape))
        if not np.all(hi > lo):
            return
        # sampled every ``stride`` voxels (~1.5 mm or finer): a 0.6 mm grid need not be resampled voxel by voxel
        # to count overlaps (8x fewer voxels through the deformation at 0.625 mm)
        stride = max(1, int(OVERLAP_SAMPLING_MM // min(g.spacing)))
        self.fu_stride = stride
        size = np.maximum(1, -(-(hi - lo) // stride))
        ref = sitk.Image([int(v) for v in size[::-1]], sitk.sitkUInt16)
        ref.SetSpacing(tuple(float(v) * stride for v in g.spacing_xyz))
        ref.SetDirection(g.direction)
        ref.SetOrigin(tuple(float(v) for v in g.index_to_physical(lo.astype(float))))
        mov = sitk.GetImageFromArray(np.ascontiguousarray(self.fu_ids))
        self.followup.geometry.apply_to(mov)
        mov.SetOrigin(tuple(float(v) for v in self.followup.geometry.index_to_physical(self.fu_lo.astype(float))))
        out = sitk.Resample(mov, ref, reg.transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
        self.fu_ids_on_base = sitk.GetArrayFromImage(out)
        self.fu_on_base_lo = lo
        for k, sl in enumerate(find_objects(self.fu_ids_on_base), start=1):
            if sl is not None:
                self._fu_boxes[k] = tuple((int(s.start) * stride + int(o), min(int(s.stop) * stride + int(o), n))
                                          for s, o, n in zip(sl, lo, g.shape))

    def _candidate_links(self) -> list[Link]:
        g = self.baseline.geometry
        base_c = {k: np.asarray(l.centroid_lps_mm, float) for k, l in self.base_lesions.items()}
        # the overlap is counted where both boxes meet, on the follow-up map's samples (every ``stride`` voxels)
        st = self.fu_stride
        a_lo, a_hi = self.base_lo, self.base_lo + np.asarray(self.base_ids.shape)
        b_lo = self.fu_on_base_lo
        n_b = np.asarray(self.fu_ids_on_base.shape)
        i0 = np.clip(-((b_lo - a_lo) // st), 0, n_b)                 # first sample at or after a_lo
        i1 = np.clip((a_hi - 1 - b_lo) // st + 1, 0, n_b)            # one past the last sample before a_hi
        if np.all(i1 > i0):
            start = b_lo + i0 * st - a_lo
            a = self.base_ids[tuple(slice(int(s0), int(s0 + (e - b) * st), st) for s0, b, e in zip(start, i0, i1))]
            b = self.fu_ids_on_base[tuple(slice(int(b), int(e)) for b, e in zip(i0, i1))]
        else:
            a = b = np.zeros((0, 0, 0), np.uint16)
        return candidate_links(
            a, b, g.voxel_volume_ml * st ** 3, base_c, self.fu_centroids_on_base,
            {k: l.volume_ml for k, l in self.base_lesions.items()},
            {k: l.volume_ml for k, l in self.fu_lesions.items()},
            {k: l.longest_diameter_mm / 2.0 for k, l in self.base_lesions.items()})

    def _regroup(self) -> None:
        hand_b = {l.baseline for l in self._hand}
        hand_f = {l.followup for l in self._hand}
        links = [l for l in self._auto_links
                 if l.baseline not in hand_b and l.followup not in hand_f
                 and ("b", l.baseline) not in self._unpaired and ("f", l.followup) not in self._unpaired]
        self.matching = group_links(links + self._hand, sorted(self.base_lesions), sorted(self.fu_lesions))

    # --- hand re-pairing -------------------------------------------------------------------------
    def _require_run(self) -> None:
        if self.matching is None:
            raise InputError("The comparison has not been run yet.")

    def pair(self, baseline: list[int], followup: list[int]) -> None:
        """Say by hand that these baseline lesions became these follow-up lesions (replaces every automatic
        link of these lesions)."""
        self._require_run()
        baseline, followup = [int(b) for b in baseline], [int(f) for f in followup]
        if not baseline or not followup:
            raise InputError("Pairing needs at least one baseline and one follow-up lesion.")
        for b in baseline:
            if b not in self.base_lesions:
                raise InputError(f"The baseline has no lesion {b}.")
        for f in followup:
            if f not in self.fu_lesions:
                raise InputError(f"The follow-up has no lesion {f} (follow-up lesions are numbered 1 to "
                                 f"{len(self.fu_lesions)} in its own lesion table).")
        self._hand = [l for l in self._hand if l.baseline not in baseline and l.followup not in followup]
        self._unpaired -= {("b", b) for b in baseline} | {("f", f) for f in followup}
        for b in baseline:
            for f in followup:
                cb = np.asarray(self.base_lesions[b].centroid_lps_mm, float)
                d = float(np.linalg.norm(cb - self.fu_centroids_on_base[f]))
                self._hand.append(Link(b, f, 0.0, d, 1.0, by_hand=True))
        self._regroup()

    def unpair(self, baseline: list[int] = (), followup: list[int] = ()) -> None:
        """Cut every link of these lesions (a baseline lesion becomes vanished, a follow-up lesion new)."""
        self._require_run()
        for b in baseline:
            self._unpaired.add(("b", int(b)))
        for f in followup:
            self._unpaired.add(("f", int(f)))
        self._hand = [l for l in self._hand if ("b", l.baseline) not in self._unpaired
                      and ("f", l.followup) not in self._unpaired]
        self._regroup()

    def reset_pairs(self) -> None:
        self._require_run()
        self._hand, self._unpaired = [], set()
        self._regroup()

    # --- RECIST ---------------------------------------------------------------------------------------
    def set_targets(self, targets: list[int]) -> None:
        self._require_run()
        axial = {k: l.axial_diameter_mm for k, l in self.base_lesions.items()}
        self.targets = _recist.check_targets(list(targets), axial)
        self.targets_chosen_by = "user"

    @property
    def new_groups(self):
        return [g for g in self.matching.groups if g.kind == "new"]

    def recist(self) -> Optional[_recist.RecistResult]:
        self._require_run()
        if not self.targets:
            return None
        return _recist.recist(self.targets, {k: l.axial_diameter_mm for k, l in self.base_lesions.items()},
                              {k: l.axial_diameter_mm for k, l in self.fu_lesions.items()}, self.matching.groups,
                              sum(len(g.followup) for g in self.new_groups),
                              all(g.kind == "vanished" for g in self.matching.groups if g.baseline))

    def volumetric(self) -> _recist.VolumetricResult:
        self._require_run()
        return _recist.volumetric(sum(l.volume_ml for l in self.base_lesions.values()),
                                  sum(l.volume_ml for l in self.fu_lesions.values()),
                                  sum(len(g.followup) for g in self.new_groups))

    # --- the table ----------------------------------------------------------------------------------
    def rows(self) -> list[ChangeRow]:
        self._require_run()
        out = []
        names = self.matching.followup_names
        gb, gf = self.baseline.geometry, self.followup.geometry
        for g in self.matching.groups:
            bl = [self.base_lesions[b] for b in g.baseline]
            fl = [self.fu_lesions[f] for f in g.followup]
            vb = sum(l.volume_ml for l in bl)
            vf = sum(l.volume_ml for l in fl)
            db = max((l.longest_diameter_mm for l in bl), default=0.0)
            df = max((l.longest_diameter_mm for l in fl), default=0.0)
            if bl:
                w = np.array([l.volume_ml for l in bl])
                b_lps = tuple(np.average([l.centroid_lps_mm for l in bl], axis=0, weights=w))
            else:
                w = np.array([l.volume_ml for l in fl])
                b_lps = tuple(np.average([self.fu_centroids_on_base[f] for f in g.followup], axis=0, weights=w))
            if fl:
                w = np.array([l.volume_ml for l in fl])
                f_lps = tuple(np.average([l.centroid_lps_mm for l in fl], axis=0, weights=w))
            else:
                f_lps = tuple(self.registration.to_followup(np.asarray(b_lps)))
            track = "+".join(str(b) for b in g.baseline) if g.baseline else ", ".join(names[f] for f in g.followup)
            out.append(ChangeRow(
                track=track, kind=g.kind, baseline_ids=list(g.baseline), followup_ids=list(g.followup),
                followup_names=[names[f] for f in g.followup],
                baseline_volume_ml=round(vb, 3), followup_volume_ml=round(vf, 3), volume_change_ml=round(vf - vb, 3),
                volume_change_pct=round(100.0 * (vf - vb) / vb, 1) if vb else None,
                baseline_diameter_mm=round(db, 1), followup_diameter_mm=round(df, 1),
                diameter_change_mm=round(df - db, 1),
                diameter_change_pct=round(100.0 * (df - db) / db, 1) if db else None,
                baseline_lps_mm=b_lps, followup_lps_mm=f_lps,
                baseline_zyx=tuple(gb.physical_to_index(np.asarray(b_lps))),
                followup_zyx=tuple(gf.physical_to_index(np.asarray(f_lps))),
                confidence=g.confidence, by_hand=g.by_hand,
                target=any(b in self.targets for b in g.baseline), baseline_box=self._box(g)))
        return out

    def _box(self, g) -> Optional[tuple]:
        boxes = [self.base_lesions[b].bbox for b in g.baseline]
        if not boxes:
            boxes = [self._fu_boxes[f] for f in g.followup if f in self._fu_boxes]
        if not boxes:
            return None
        lo = np.min([[b[0] for b in bb] for bb in boxes], axis=0)
        hi = np.max([[b[1] for b in bb] for bb in boxes], axis=0)
        return (int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2]))

    def vanished(self) -> list[ChangeRow]:
        return [r for r in self.rows() if r.kind == "vanished"]

    def summary_text(self) -> str:
        reg = self.registration
        rows = self.rows()
        counts = {k: sum(1 for r in rows if r.kind == k) for k in KIND_WORDS}
        lines = [f"Registration: liver surfaces {reg.residual_mean_mm:.1f} mm apart on average, "
                 f"{reg.residual_p95_mm:.1f} mm at the 95th percentile; liver {reg.baseline_liver_ml:.0f} -> "
                 f"{reg.followup_liver_ml:.0f} mL."]
        lines += [f"Note: {w}" for w in reg.warnings]
        lines.append(f"Lesions: {len(self.base_lesions)} at baseline, {len(self.fu_lesions)} at follow-up; "
                     + ", ".join(f"{n} {KIND_WORDS[k]}" for k, n in counts.items() if n))
        lines.append("")
        lines.append(f"{'Lesion':<10} {'Change':<20} {'Volume mL':>20} {'Change':>9} {'Diameter mm':>15} "
                     f"{'Conf.':>6}  Follow-up lesion no.")
        for r in rows:
            pct = "" if r.volume_change_pct is None else f"{r.volume_change_pct:+.0f} %"
            name = r.track + (" *" if r.target else "")
            lines.append(f"{name:<10} {KIND_WORDS[r.kind] + (' (by hand)' if r.by_hand else ''):<20} "
                         f"{r.baseline_volume_ml:>9.2f} -> {r.followup_volume_ml:<7.2f} {pct:>9} "
                         f"{r.baseline_diameter_mm:>6.1f} -> {r.followup_diameter_mm:<6.1f} {r.confidence:>6.2f}  "
                         f"{', '.join(map(str, r.followup_ids)) or '-'}")
            if r.kind == "vanished":
                x, y, z = r.followup_lps_mm
                lines.append(f"{'':<10} its place on the follow-up: LPS ({x:.1f}, {y:.1f}, {z:.1f}) mm, slice "
                             f"{int(round(r.followup_zyx[0])) + 1}; most vanished metastases persist microscopically.")
        lines.append("")
        rec = self.recist()
        if rec is None:
            lines.append("RECIST 1.1: no measurable target lesion (>= 10 mm) at baseline.")
        else:
            lines.append(f"RECIST 1.1 ({'targets chosen by the user' if self.targets_chosen_by == 'user' else 'default targets: the two largest measurable'}"
                         f": {', '.join(map(str, rec.targets))}; * in the table): sum of diameters "
                         f"{rec.baseline_sld_mm:.1f} -> {rec.followup_sld_mm:.1f} mm ({rec.change_pct:+.0f} %): "
                         f"{rec.category} ({_recist.WORDS[rec.category]}).")
            lines += ["  " + r for r in rec.reasons]
        vol = self.volumetric()
        lines.append(f"Volumetric response: {vol.baseline_ml:.1f} -> {vol.followup_ml:.1f} mL ({vol.change_pct:+.0f} %): "
                     f"{vol.category} ({_recist.WORDS[vol.category]}).")
        lines.append(NOT_FOR_CLINICAL_USE)
        return "\n".join(lines)

    # --- the follow-up on the baseline grid ---------------------------------------------------------------
    def _resample_to_baseline(self, array: np.ndarray, nearest: bool, default: int, pixel) -> np.ndarray:
        import SimpleITK as sitk

        g = self.baseline.geometry
        ref = sitk.Image(list(g.shape[::-1]), pixel)
        g.apply_to(ref)
        mov = sitk.GetImageFromArray(np.ascontiguousarray(array))
        self.followup.geometry.apply_to(mov)
        interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
        return sitk.GetArrayFromImage(sitk.Resample(mov, ref, self.registration.transform, interp, default, pixel))

    def followup_labels_on_baseline(self) -> np.ndarray:
        """The follow-up's labels (uint8) on the baseline grid, nearest neighbour (computed once)."""
        import SimpleITK as sitk

        self._require_run()
        if self._labels_on_base is None:
            self._labels_on_base = self._resample_to_baseline(self.followup.labels, True, 0, sitk.sitkUInt8)
        return self._labels_on_base

    def followup_on_baseline(self) -> tuple[np.ndarray, np.ndarray]:
        """(CT HU int16, labels uint8) of the follow-up resampled onto the baseline grid (computed once)."""
        import SimpleITK as sitk

        self._require_run()
        if self._image_on_base is None:
            self._image_on_base = self._resample_to_baseline(self.followup.image, False, -1024, sitk.sitkInt16)
        return self._image_on_base, self.followup_labels_on_baseline()

    # --- output -------------------------------------------------------------------------------------------
    def to_json_dict(self) -> dict:
        self._require_run()
        rec = self.recist()
        return {"software": "LiverPlan", "kind": "comparison of two time points",
                "note": NOT_FOR_CLINICAL_USE,
                "created": _dt.datetime.now().isoformat(timespec="seconds"),
                "coordinate_system": "LPS (mm)", "lesion_connectivity": 26,
                "baseline": {"name": self.baseline.name, "provenance": self.baseline.provenance.to_dict(),
                             "geometry": self.baseline.geometry.to_dict()},
                "followup": {"name": self.followup.name, "provenance": self.followup.provenance.to_dict(),
                             "geometry": self.followup.geometry.to_dict()},
                "registration": self.registration.summary(),
                "matching": {"rules": "overlap on the baseline grid after registration; else centroid distance "
                                      "<= max(10 mm, the baseline lesion's radius)",
                             "links": [l.__dict__ for l in self.matching.links]},
                "lesions": [r.to_dict() for r in self.rows()],
                "recist": None if rec is None else rec.to_dict(),
                "targets_chosen_by": self.targets_chosen_by,
                "volumetric": self.volumetric().to_dict(),
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}

    def write(self, out_dir, overwrite: bool = False) -> list[Path]:
        """comparison.json, comparison_lesions.csv and followup_labels_on_baseline.nii.gz (atomic each)."""
        import csv
        import io
        import json

        from ..io import write_label_map
        from ..io.atomic import write_text_atomic

        out = Path(out_dir).expanduser()
        names = ["comparison.json", "comparison_lesions.csv", "followup_labels_on_baseline.nii.gz"]
        if not overwrite:
            for n in names:
                if (out / n).exists():
                    raise InputError(f"{out / n} already exists; nothing was written. Use --overwrite or another folder.")
        d = self.to_json_dict()
        buf = io.StringIO()
        cols = ["track", "kind", "baseline_ids", "followup_ids", "followup_names", "baseline_volume_ml",
                "followup_volume_ml", "volume_change_ml", "volume_change_pct", "baseline_diameter_mm",
                "followup_diameter_mm", "diameter_change_mm", "diameter_change_pct", "baseline_lps_mm",
                "followup_lps_mm", "confidence", "by_hand", "target"]
        buf.write(f"# {NOT_FOR_CLINICAL_USE}\n")
        buf.write(f"# LiverPlan comparison: baseline {self.baseline.name}, follow-up {self.followup.name}; "
                  f"{d['created']}; LPS mm; lesion ids as in each scan's lesion table\n")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in d["lesions"]:
            w.writerow([" ".join(map(str, r[c])) if isinstance(r[c], list) else ("" if r[c] is None else r[c])
                        for c in cols])
        written = [write_text_atomic(out / names[0], json.dumps(d, indent=1, default=float), overwrite=overwrite),
                   write_text_atomic(out / names[1], buf.getvalue(), overwrite=overwrite)]
        labs = self.followup_labels_on_baseline()
        written.append(write_label_map(out / names[2], self.baseline, labels=labs, overwrite=overwrite))
        return written
