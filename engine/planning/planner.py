"""The planning state of one case: segment map, lesion locations and distances, named resection scenarios.

One object serves the CLI (``liverplan plan``) and the window's Plan tab, so both give the same figures.
It caches what it computed and, after an edit of the label map, recomputes only what the edit touched
(:meth:`Planner.update`): a change of vessel voxels re-estimates the segments and rebuilds the vessel
indices; a change of lesion voxels re-locates only the lesions whose voxels changed; a change of liver
voxels rebuilds the liver voxel list. ``recomputed`` counts each kind of work, for tests and benchmarks.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import InputError
from ..geometry import Geometry
from ..labels import Label
from ..progress import CancelToken, ProgressCallback, check, no_progress
from . import couinaud as cn
from .location import (DEFAULT_CONTACT_MM, LesionLocation, bilobar, lesion_components, locate_lesion,
                       vessel_indices)
from .resection import Patient, ResectionModel, Scenario

log = logging.getLogger(__name__)

#: The planning crop reaches this far (mm) beyond the liver's parenchyma and lesions.
CROP_MARGIN_MM = 25.0
#: Structures whose change means the segment estimate / the vessel distances are stale.
VESSEL_LABELS = (Label.PORTAL_VEIN, Label.HEPATIC_VEINS, Label.IVC)


class Planner:
    """Planning for a label map (z, y, x uint8) on ``geometry``.

    segment_map: None (estimate from the vessels) or a uint8 0..8 map with its source text (e.g. a file
    or a Couinaud model's output), which then replaces the estimate.
    """

    def __init__(self, labels: np.ndarray, geometry: Geometry, segment_map: Optional[np.ndarray] = None,
                 segment_source: str = "", contact_mm: float = DEFAULT_CONTACT_MM, lesion_ids=None) -> None:
        if tuple(labels.shape) != tuple(geometry.shape):
            raise InputError("The label map and the CT do not have the same grid.")
        # The planner works in a crop around the liver (CROP_MARGIN_MM beyond the parenchyma and lesions):
        # a CT's field of view is mostly not liver, and every full-volume pass costs ~0.1 s on 512^2 x 300.
        # ``labels``/``geometry`` are the crop's (a view into ``full_labels``); results that leave the
        # planner (voxel indices, segment maps, masks) are on the full grid.
        self.full_labels = labels
        self.full_geometry = geometry
        self.offset = (0, 0, 0)
        self.crop: tuple[slice, slice, slice] = (slice(None),) * 3
        self.labels = labels
        self.geometry = geometry
        self.spacing = tuple(float(s) for s in geometry.spacing)
        self.contact_mm = float(contact_mm)
        self.full_segment_map = None if segment_map is None else np.asarray(segment_map, np.uint8)
        self.segment_map = self.full_segment_map
        self.segment_source = segment_source or "from a file"
        if self.segment_map is not None:
            if self.full_segment_map.shape != labels.shape:
                raise InputError("The segment map does not lie on the CT's grid.")
            if int(self.segment_map.max(initial=0)) > 8:
                raise InputError("A segment map holds the values 0-8 (Couinaud I-VIII); this one has "
                                 f"{int(self.segment_map.max())}. Give a label mapping for it.")
        self.scenarios: dict[str, Scenario] = {}
        self._naming: Optional[cn.SegmentEstimate] = None   # the vessel finding, when a map gives the segments
        self.patient = Patient()
        self.recomputed = {"segments": 0, "vessel_index": 0, "lesions": 0, "liver": 0}
        self._snapshot: Optional[np.ndarray] = None
        self.liver: Optional[np.ndarray] = None
        self.estimate: Optional[cn.SegmentEstimate] = None
        self.vessels = None
        self.lesions: list[LesionLocation] = []
        #: the case's lesion numbering (engine.lesion_ids.ids_like_report through a measurement report):
        #: ``lesion_ids([(voxels, centroid zyx of the whole grid)]) -> numbers``; None: 1..n by size
        self.lesion_ids = lesion_ids
        self._lesion_cache: dict[bytes, LesionLocation] = {}
        self._components: list = []
        self.model: Optional[ResectionModel] = None

    # --- computing ----------------------------------------------------------------------------
    def run(self, progress: ProgressCallback = no_progress, cancel: Optional[CancelToken] = None) -> "Planner":
        """Compute everything (segments, lesion locations and distances, the resection model)."""
        self._set_crop()
        self._snapshot = self.labels.copy()
        self._compute_liver()
        check(cancel)
        self._compute_segments(progress, cancel)
        check(cancel)
        self._compute_vessels()
        self._compute_lesions(progress, cancel)
        self._compute_model()
        return self

    def _set_crop(self) -> None:
        lab = self.full_labels
        # the liver's box from every 4th row and slice (1/16 of the memory traffic), widened by the step
        step = 4
        sub = lab[::step, ::step, :]
        m = sub == Label.PARENCHYMA
        m |= sub == Label.CRLM
        zs = np.flatnonzero(m.any(axis=(1, 2)))
        if zs.size == 0:
            lo, hi = np.zeros(3, int), np.asarray(lab.shape)
        else:
            ys = np.flatnonzero(m.any(axis=(0, 2)))
            xs = np.flatnonzero(m.any(axis=(0, 1)))
            pad = np.ceil(CROP_MARGIN_MM / np.asarray(self.full_geometry.spacing)).astype(int) + [step, step, 0]
            lo = np.maximum(np.array([zs[0] * step, ys[0] * step, xs[0]]) - pad, 0)
            hi = np.minimum(np.array([zs[-1] * step, ys[-1] * step, xs[-1]]) + 1 + pad, lab.shape)
        del m, sub
        self.offset = tuple(int(v) for v in lo)
        self.crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        self.labels = self.full_labels[self.crop]
        g = self.full_geometry
        self.geometry = Geometry(tuple(int(b - a) for a, b in zip(lo, hi)), g.spacing,
                                 tuple(float(v) for v in g.index_to_physical(np.asarray(lo, float))), g.direction)
        self.segment_map = None if self.full_segment_map is None else self.full_segment_map[self.crop]

    # --- the crop <-> the full grid ----------------------------------------------------------------
    def to_full_flat(self, flat: np.ndarray) -> np.ndarray:
        """Flat indices in the crop -> flat indices on the full grid."""
        zyx = np.stack(np.unravel_index(np.asarray(flat, np.int64), self.labels.shape), 0) \
            + np.asarray(self.offset)[:, None]
        return np.ravel_multi_index(tuple(zyx), self.full_labels.shape)

    def _full(self, arr: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if arr is None:
            return None
        out = np.zeros(self.full_labels.shape, arr.dtype)
        out[self.crop] = arr
        return out

    def liver_full(self) -> Optional[np.ndarray]:
        """The planning liver (bool) on the full grid."""
        return self._full(self.liver)

    def segments_full(self) -> Optional[np.ndarray]:
        """The segment map (uint8 0..8) on the full grid, or None when there is none."""
        est = self.estimate
        return self._full(est.segments) if est is not None and est.segments_ok else None

    def hemilivers_full(self) -> Optional[np.ndarray]:
        est = self.estimate
        return self._full(est.hemilivers) if est is not None and est.hemilivers_ok else None

    def segment_at(self, zyx) -> int:
        """The segment (1..8) at a voxel (z, y, x) of the full grid; 0 outside the liver or without a map."""
        est = self.estimate
        if est is None or not est.segments_ok or est.segments is None:
            return 0
        local = [int(v) - o for v, o in zip(zyx, self.offset)]
        if any(v < 0 or v >= n for v, n in zip(local, est.segments.shape)):
            return 0
        return int(est.segments[tuple(local)])

    def masks(self, sc: Scenario) -> np.ndarray:
        """uint8 on the full grid: 1 remnant, 2 resected (for the 3D view and exports)."""
        return self._full(self.model.masks(sc))

    def _compute_liver(self) -> None:
        self.recomputed["liver"] += 1
        self.liver = cn.liver_mask(self.labels, self.spacing)

    def _compute_segments(self, progress=no_progress, cancel=None) -> None:
        self.recomputed["segments"] += 1
        if self.segment_map is not None:
            seg = np.where(self.liver, self.segment_map, 0).astype(np.uint8)
            if self._naming is None:
                # the vessels are still found: they name the nearest branch, and an IVC inside the
                # hepatic-vein label must be told apart from the veins whatever the segments' source
                self._naming = cn.estimate_segments(self.labels, self.spacing, self.liver, progress, cancel)
            self.estimate = cn.estimate_from_map(seg, self.segment_source)
            n = self._naming
            self.estimate.vessels, self.estimate.vein_voxels = n.vessels, n.vein_voxels
            self.estimate.ivc_voxels, self.estimate.portal_trunk_voxels = n.ivc_voxels, n.portal_trunk_voxels
            outside = int(np.count_nonzero(self.segment_map[~self.liver]))
            if outside:
                self.estimate.quality.append(
                    f"{outside * self.geometry.voxel_volume_ml:.1f} mL of the segment map lie outside the labelled "
                    "liver and were not used.")
            uncovered = int(np.count_nonzero(self.liver & (self.segment_map == 0)))
            if uncovered:
                self.estimate.quality.append(
                    f"{uncovered * self.geometry.voxel_volume_ml:.1f} mL of the labelled liver have no segment in "
                    "the segment map.")
        else:
            self.estimate = cn.estimate_segments(self.labels, self.spacing, self.liver, progress, cancel)

    def _compute_vessels(self) -> None:
        self.recomputed["vessel_index"] += 1
        self.vessels = vessel_indices(self.labels, self.spacing, self.estimate)

    def _compute_lesions(self, progress=no_progress, cancel=None) -> None:
        comps = lesion_components(self.labels)
        if self.lesion_ids is not None and comps:
            off = np.asarray(self.offset, float)
            ids = self.lesion_ids([(int(flat.size), np.asarray(c, float) + off) for _lid, flat, c in comps])
            comps = [(int(k), flat, c) for k, (_lid, flat, c) in zip(ids, comps)]
        self._components = comps
        out = []
        cache = {}
        for k, (lid, flat, c) in enumerate(comps):
            check(cancel)
            progress("Lesion locations and distances", k, len(comps))
            key = flat.tobytes()
            loc = self._lesion_cache.get(key)
            if loc is None:
                self.recomputed["lesions"] += 1
                loc = locate_lesion(lid, flat, c, self.labels.shape, self.geometry, self.estimate, self.vessels,
                                    self.contact_mm, offset=self.offset)
            loc.id = lid
            cache[key] = loc
            out.append(loc)
        progress("Lesion locations and distances", len(comps), len(comps))
        self._lesion_cache = cache
        self.lesions = out

    def _compute_model(self) -> None:
        seg = self.estimate.segments if self.estimate is not None and self.estimate.segments_ok else None
        self.model = ResectionModel(self.liver, self.spacing, seg, [(lid, flat) for lid, flat, _ in self._components],
                                    full_shape=self.full_labels.shape, offset=self.offset)

    def update(self, box: Optional[tuple[slice, slice, slice]] = None) -> set[str]:
        """Bring the planning up to date after the label map changed (in ``box`` when given); returns what
        was recomputed: {"liver", "segments", "vessels", "lesions"} (subsets)."""
        everything = {"liver", "segments", "vessels", "lesions"}
        if self._snapshot is None:
            self.run()
            return everything
        if box is None:
            box = (slice(None),) * 3
            outside = True
        else:
            outside = any((s.start or 0) < c.start or (s.stop if s.stop is not None else n) > c.stop
                          for s, c, n in zip(box, self.crop, self.full_labels.shape))
        if outside:
            # beyond the crop: did the liver grow there? then plan again in a new crop
            full_box = tuple(slice(s.start or 0, s.stop if s.stop is not None else n)
                             for s, n in zip(box, self.full_labels.shape))
            region = self.full_labels[full_box].copy()
            inner = tuple(slice(max(c.start, b.start) - b.start, min(c.stop, b.stop) - b.start)
                          for c, b in zip(self.crop, full_box))
            if all(i.stop > i.start for i in inner):
                region[inner] = 0
            if np.isin(region, (Label.PARENCHYMA, Label.CRLM)).any():
                self.run()
                return everything
        box = tuple(slice(max((s.start or 0) - o, 0), max(min((s.stop if s.stop is not None else n) - o, m), 0))
                    for s, o, n, m in zip(box, self.offset, self.full_labels.shape, self.labels.shape))
        old, new = self._snapshot[box], self.labels[box]
        diff = old != new
        if not diff.any():
            return set()
        touched = set(np.unique(old[diff]).tolist()) | set(np.unique(new[diff]).tolist())
        self._snapshot[box] = new
        done: set[str] = set()
        # parenchyma <-> lesion keeps the liver as it is; anything else may change which voxels it holds
        if not touched <= {Label.PARENCHYMA, Label.CRLM}:
            previous = self.liver
            self._compute_liver()
            if previous is None or not np.array_equal(previous, self.liver):
                done.add("liver")
        if touched & set(VESSEL_LABELS):
            self._naming = None
            self._compute_segments()                     # with a segment map: only the vessel finding
            done.add("segments")
            self._lesion_cache.clear()                   # shares and branch names follow the new estimate
            self._compute_vessels()
            done.add("vessels")
            self._lesion_cache.clear()
        elif "liver" in done and self.estimate is not None:
            # the vessel model is unchanged: only the new liver voxels need their segment
            self._reassign_segments()
            done.add("segments")
        self._compute_lesions()
        done.add("lesions")
        self._compute_model()
        return done

    def correct_segments(self, flat_full: np.ndarray, segment: int) -> int:
        """Set the segment of these voxels (flat indices on the full grid; liver voxels only count) to
        ``segment`` (1..8): a hand correction of the map. The estimate becomes a segment map of its own
        ("corrected by hand"); lesion shares and scenario figures follow. Returns the voxels changed."""
        if not 1 <= int(segment) <= 8:
            raise InputError(f"Segment {segment} does not exist; Couinaud segments are I-VIII (1-8).")
        if self.model is None:
            self.run()
        if self.full_segment_map is None:
            full = self.segments_full()
            if full is None:
                raise InputError("There is no segment map to correct: the segments could not be estimated. "
                                 "Load a segment map from a file first.")
            self._naming = self.estimate
            self.full_segment_map = full
            self.segment_source = "estimated from the vessels, corrected by hand"
        elif "corrected by hand" not in self.segment_source:
            self.segment_source += ", corrected by hand"
        zyx = np.stack(np.unravel_index(np.unique(np.asarray(flat_full, np.int64)), self.full_labels.shape), 0)
        local = zyx - np.asarray(self.offset)[:, None]
        inside = np.all((local >= 0) & (local < np.asarray(self.labels.shape)[:, None]), axis=0)
        local, zyx = local[:, inside], zyx[:, inside]
        in_liver = self.liver[tuple(local)]
        target = tuple(zyx[:, in_liver])
        changed = int(np.count_nonzero(self.full_segment_map[target] != segment))
        self.full_segment_map[target] = segment
        self.segment_map = self.full_segment_map[self.crop]
        self._compute_segments()
        self._lesion_cache.clear()
        self._compute_lesions()
        self._compute_model()
        return changed

    def set_segment_map(self, full_map: Optional[np.ndarray], source: str = "") -> None:
        """Use this segment map (uint8 0..8 on the full grid; a file's, a model's or one corrected by hand:
        the case's engine.planning.state.PlanningState holds it), or None: the estimate from the vessels.
        Lesion shares and the resection model follow."""
        if self.model is None:
            self.run()
        if full_map is None:
            if self.full_segment_map is None:
                return
            self.full_segment_map = self.segment_map = None
            if self._naming is not None:
                self.estimate = self._naming          # the vessels' own estimate, kept while a map was used
            else:
                self._compute_segments()
        else:
            # a copy: the case's plan paints on its own map (engine.case_session), maybe while this planner
            # is brought up to date on a worker
            full_map = np.array(full_map, np.uint8, copy=True)
            if full_map.shape != self.full_labels.shape:
                raise InputError("The segment map does not lie on the CT's grid.")
            if self._naming is None and self.full_segment_map is None and self.estimate is not None:
                self._naming = self.estimate          # the vessel finding names branches; kept for undo
            self.full_segment_map = full_map
            self.segment_map = full_map[self.crop]
            self.segment_source = source or "from a file"
            self._compute_segments()
        self._lesion_cache.clear()
        self._compute_lesions()
        self._compute_model()

    def in_liver(self, flat_full: np.ndarray) -> np.ndarray:
        """Those of these voxels (flat indices on the full grid) that lie in the planning liver."""
        flat_full = np.unique(np.asarray(flat_full, np.int64))
        if self.liver is None or flat_full.size == 0:
            return flat_full[:0]
        zyx = np.stack(np.unravel_index(flat_full, self.full_labels.shape), 0)
        local = zyx - np.asarray(self.offset)[:, None]
        inside = np.all((local >= 0) & (local < np.asarray(self.labels.shape)[:, None]), axis=0)
        keep = np.zeros(flat_full.size, bool)
        keep[inside] = self.liver[tuple(local[:, inside])]
        return flat_full[keep]

    def _reassign_segments(self) -> None:
        est = self.estimate
        if self.segment_map is not None:
            self._compute_segments()
            self._lesion_cache.clear()
            return
        if not est.hemilivers_ok:
            return
        flat = np.flatnonzero(self.liver)
        zyx = np.stack(np.unravel_index(flat, self.liver.shape), 1) * np.asarray(self.spacing)
        seg, hemi = cn.segments_from_model(zyx, est.vessels, self.spacing[0])
        est.hemilivers = np.zeros(self.liver.shape, np.uint8)
        est.hemilivers.reshape(-1)[flat] = hemi
        if est.segments_ok:
            est.segments = np.zeros(self.liver.shape, np.uint8)
            est.segments.reshape(-1)[flat] = seg
        self._lesion_cache.clear()

    # --- scenarios ----------------------------------------------------------------------------
    def set_scenario(self, sc: Scenario) -> Scenario:
        if not sc.name.strip():
            raise InputError("A scenario needs a name.")
        self.scenarios[sc.name] = sc
        return sc

    def remove_scenario(self, name: str) -> None:
        self.scenarios.pop(name, None)

    def load_scenarios(self, path: Union[str, Path]) -> list[Scenario]:
        """Read the scenarios of a planning.json written for this case (same grid); they are added (a
        scenario of the same name is replaced)."""
        return [self.set_scenario(sc) for sc in read_scenarios(path, self.full_labels.shape)]

    def figures(self, sc: Union[Scenario, str]) -> dict:
        if self.model is None:
            self.run()
        if isinstance(sc, str):
            if sc not in self.scenarios:
                raise InputError(f"There is no scenario called '{sc}'.")
            sc = self.scenarios[sc]
        fig = self.model.figures(sc, self.patient)
        fig["segment_source"] = self.estimate.source if self.estimate else ""
        return fig

    def compare(self) -> list[dict]:
        """Every scenario's figures, in the order they were made."""
        return [self.figures(sc) for sc in self.scenarios.values()]

    # --- summaries ----------------------------------------------------------------------------
    def segment_volumes(self) -> dict[str, float]:
        """mL per segment (I..VIII) and per hemiliver ('right'/'left'); empty where not estimated."""
        out: dict[str, float] = {}
        v = self.geometry.voxel_volume_ml
        est = self.estimate
        if est is None:
            return out
        if est.segments_ok and est.segments is not None:
            cnt = np.bincount(est.segments[self.liver], minlength=9)
            out.update({cn.SEGMENT_NAMES[k]: round(float(cnt[k] * v), 2) for k in range(1, 9)})
            upper = cn.segment_iv_upper(est, self.spacing)
            if upper is not None:
                # IVa / IVb: the sub-division of IV by the portal plane (I-VIII stay the main map)
                iv = (est.segments == 4) & self.liver
                n_up = int(np.count_nonzero(iv & upper))
                out = {**{k: out[k] for k in ("I", "II", "III", "IV")},
                       "IVa": round(float(n_up * v), 2), "IVb": round(float((int(cnt[4]) - n_up) * v), 2),
                       **{k: out[k] for k in ("V", "VI", "VII", "VIII")}}
        if est.hemilivers_ok and est.hemilivers is not None:
            h = np.bincount(est.hemilivers[self.liver], minlength=3)
            out["right hemiliver"] = round(float(h[1] * v), 2)
            out["left hemiliver"] = round(float(h[2] * v), 2)
        return out

    def bilobar(self) -> Optional[bool]:
        return bilobar(self.lesions)

    def to_json_dict(self) -> dict:
        return {"software": "LiverPlan", "kind": "planning", "geometry": self.full_geometry.to_dict(),
                "coordinate_system": "LPS (mm); voxel indices (z, y, x)",
                "segments": self.estimate.to_dict() if self.estimate else None,
                "segment_volumes_ml": self.segment_volumes(),
                "contact_threshold_mm": self.contact_mm,
                "bilobar": self.bilobar(),
                "lesions": [l.to_dict() for l in self.lesions],
                "patient": {"height_cm": self.patient.height_cm, "weight_kg": self.patient.weight_kg,
                            "condition": self.patient.condition},
                "scenarios": [dict(sc.to_dict(), figures=self.figures(sc)) for sc in self.scenarios.values()],
                "definitions": {
                    "distance": "surface to surface between the lesion's and the vessel's voxels (mm)",
                    "contact": f"distance <= {self.contact_mm:g} mm",
                    "total_liver": "parenchyma + lesions + intrahepatic portal/hepatic vein voxels (no IVC)",
                    "functional_liver": "total liver - tumour volume",
                    "flr_pct": "non-tumour liver left in the remnant / functional liver x 100",
                    "sflr_pct": "FLR / eTLV x 100; eTLV = -794.41 + 1267.28 x BSA (Vauthey 2002), BSA Mosteller",
                    "bilobar": "lesions (>= 10 % of a lesion's volume) in both hemilivers"}}

    def lesion_rows(self) -> list[dict]:
        return [l.to_row() for l in self.lesions]

    def scenario_rows(self) -> list[dict]:
        rows = []
        for fig in self.compare():
            r = {k: v for k, v in fig.items() if k not in ("lesions_left", "reference_note")}
            r["lesions_left"] = " ".join(str(d["lesion"]) for d in fig["lesions_left"])
            rows.append(r)
        return rows

    def write(self, out_dir: Union[str, Path], overwrite: bool = False) -> list[Path]:
        """planning.json, planning_lesions.csv, planning_scenarios.csv, planning_segments.csv (atomic)."""
        from ..io.atomic import write_text_atomic

        out = Path(out_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        files = {"planning.json": json.dumps(self.to_json_dict(), indent=2, default=_json_default),
                 "planning_lesions.csv": _csv(self.lesion_rows()),
                 "planning_scenarios.csv": _csv(self.scenario_rows()),
                 "planning_segments.csv": _csv([{"region": k, "volume_ml": v}
                                                for k, v in self.segment_volumes().items()])}
        paths = [out / n for n in files]
        if not overwrite:
            for p in paths:
                if p.exists():
                    raise InputError(f"{p} already exists; nothing was written. Use --overwrite or another folder.")
        for p, text in zip(paths, files.values()):
            write_text_atomic(p, text, overwrite=True)
        return paths


def read_scenarios(path: Union[str, Path], shape_zyx) -> list[Scenario]:
    """The scenarios of a planning.json (``plan`` / the Plan tab's export) made for a case of this grid."""
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{p.name} could not be read as a planning file ({exc}).") from None
    if not isinstance(data, dict) or data.get("kind") not in ("planning", "plan"):
        raise InputError(f"{p.name} is not a LiverPlan planning file (planning.json).")
    shape = tuple(data.get("shape_zyx") or (data.get("geometry") or {}).get("shape_zyx", ()))
    if shape != tuple(shape_zyx):
        raise InputError(f"The scenarios in {p.name} were made for a grid of {shape[::-1]} voxels (x, y, z); "
                         f"this case has {tuple(shape_zyx)[::-1]}.")
    return [Scenario.from_dict(d) for d in data.get("scenarios", [])]


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(type(o))


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if not rows:
        return ""
    keys = list(rows[0].keys())
    for r in rows[1:]:
        keys += [k for k in r if k not in keys]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# segment maps from files
# ------------------------------------------------------------------------------------------------
def parse_segment_mapping(data: dict) -> dict[int, list[int]]:
    """{segment 1..8: [file values]} from a JSON object such as {"I": [11], "2": 12} or
    {"liver_segment_1": 1, ...} (TotalSegmentator's names)."""
    from .resection import segment_number

    out: dict[int, list[int]] = {}
    for key, vals in data.items():
        k = str(key).lower().replace("liver_segment_", "").replace("couinaud_", "").replace("segment_", "")
        seg = segment_number(k)
        vals = vals if isinstance(vals, list) else [vals]
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"The segment mapping gives '{v}' for segment {key}; use label numbers.")
        out.setdefault(seg, []).extend(int(v) for v in vals)
    return out


class SegmentMappingNeeded(InputError):
    """A segment map whose values are not 0-8: it can be read through a segment mapping."""


def segment_of_name(name: str) -> Optional[int]:
    """The Couinaud segment a segment's name says ("segment 2", "Couinaud IV", "liver_segment_5",
    "Segment IVa" -> 4, "S7"), or None when the name names none."""
    import re

    s = re.sub(r"[^a-z0-9]+", " ", str(name).lower())
    s = re.sub(r"\b(liver|hepatic|couinaud|segments?|seg|s)\b", " ", s)
    words = s.split()
    if len(words) == 1:
        w = words[0]
        # "s7" / "seg7" glued
        w = re.sub(r"^(s|seg|segment)(?=[0-9])", "", w)
        try:
            from .resection import segment_number
            return segment_number(w)
        except InputError:
            return None
    return None


def _read_named_segments(p: Path, geometry: Geometry) -> Optional[np.ndarray]:
    """A 3D Slicer segmentation whose segment names say the Couinaud segment (segment_of_name): read by
    name. None when the file lists no such segments (then its values are read as they are)."""
    from ..io.labelmaps import label_values_on_grid
    from ..io.segnrrd import read_seg_nrrd

    layers, segments, _ = read_seg_nrrd(p)
    named = [(seg, segment_of_name(seg.name)) for seg in segments]
    if not segments or not any(k for _, k in named):
        return None
    arrays = [label_values_on_grid(img, geometry, f"The segment map {p.name}", allow_crop=True) for img in layers]
    out = np.zeros(tuple(geometry.shape), np.uint8)
    unused = []
    for seg, k in named:
        if k is None:
            unused.append(seg.name)
            continue
        if not 0 <= seg.layer < len(arrays):
            raise InputError(f"{p.name}: segment '{seg.name}' refers to layer {seg.layer}, which the file lacks.")
        out[arrays[seg.layer] == seg.label_value] = k
    if unused:
        log.info("%s: segments that name no Couinaud segment were not used: %s", p.name, ", ".join(unused))
    return out


def read_segment_map(path: Union[str, Path], geometry: Geometry,
                     mapping: Optional[Union[str, Path, dict]] = None) -> np.ndarray:
    """A uint8 (z, y, x) segment map 0..8 on ``geometry`` from a label file (NIfTI/NRRD/MHA).

    Without ``mapping`` the file must hold 0..8 (0 background, 1..8 = Couinaud I..VIII), e.g. a Couinaud
    model's output. With a mapping (a JSON file or object, see :func:`parse_segment_mapping`) other values
    are read through it; unmapped values become 0 and are reported in the log."""
    from ..io.images import read_image_file
    from ..io.labelmaps import label_values_on_grid

    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"The segment map {p} does not exist.")
    if p.is_dir():
        raise InputError(f"The segment map {p} is a folder; give one label file (NIfTI/NRRD/MHA) with values 0-8.")
    if mapping is None and p.name.lower().endswith(".seg.nrrd"):
        by_name = _read_named_segments(p, geometry)
        if by_name is not None:
            return by_name
    img = read_image_file(p)
    if img.GetDimension() != 3:
        raise InputError(f"The segment map {p.name} is not a 3D volume.")
    arr = label_values_on_grid(img, geometry, f"The segment map {p.name}")
    if mapping is None:
        if int(arr.max(initial=0)) > 8:
            raise SegmentMappingNeeded(
                f"The segment map {p.name} holds values up to {int(arr.max())}; a segment map holds 0-8 "
                "(Couinaud I-VIII). Give a segment mapping (a JSON file such as {\"I\": [11], \"II\": [12]}; "
                "--segments-mapping on the command line) to read other values.")
        return arr.astype(np.uint8)
    if not isinstance(mapping, dict):
        mp = Path(mapping).expanduser()
        try:
            mapping = json.loads(mp.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"The segment mapping {mp} could not be read as JSON ({exc}).") from None
        if not isinstance(mapping, dict):
            raise InputError(f"The segment mapping {mp} must be a JSON object such as {{\"I\": [11], \"II\": [12]}}.")
    table = parse_segment_mapping(mapping)
    out = np.zeros(arr.shape, np.uint8)
    for seg, vals in table.items():
        out[np.isin(arr, vals)] = seg
    return out
