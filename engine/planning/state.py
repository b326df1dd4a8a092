"""The planning kept with the open case: :class:`PlanningState` (docs/architecture.md, "The planning").

What a user decides while planning belongs to the case, not to the Plan tab: the named resection scenarios
(segments, wedges with their margin, a painted region), the patient's height / weight / liver condition,
and the segment map when it does not come from the vessels (a file, a model, or hand corrections) with
its source. :class:`engine.case_session.CaseSession` owns one PlanningState per open case, records its
changes as undo steps of their own (:class:`PlanStep`) interleaved with the label steps in one Ctrl+Z
order, writes it into the autosave folder after every change, and saves it beside the labels
(:func:`plan_paths`). The Plan tab mirrors it.

Each change is a method returning a :class:`PlanStep` (None when nothing changed); a step holds the
small part (scenarios, patient, source) before and after as plain copies, and a segment-map change as
the changed box's values before and after (like engine.edits.Edit), so undo/redo restore exactly.
Painted regions and corrections are collected during a drag by :class:`VoxelStroke` (the set arithmetic
lives here, not in the GUI) and become one step when the drag ends.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from ..errors import InputError
from .resection import DEFAULT_MARGIN_MM, FLR_MINIMUM_PCT, Patient, Scenario

#: What a plan step is (decided by the code that makes it).
PLAN_KINDS = ("scenario_new", "scenario_rename", "scenario_delete", "scenario_change", "paint", "patient",
              "segment_map", "segment_correction", "plan_opened", "plan_restored")

Box = tuple[int, int, int, int, int, int]


def _box_of(mask: np.ndarray) -> Optional[Box]:
    if not mask.any():
        return None
    out = []
    for ax in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        out += [int(idx[0]), int(idx[-1]) + 1]
    return tuple(out)  # type: ignore[return-value]


def _sl(box: Box) -> tuple[slice, slice, slice]:
    return slice(box[0], box[1]), slice(box[2], box[3]), slice(box[4], box[5])


@dataclass
class _Plain:
    """The small part of the planning: scenarios (in order), patient, segment map source."""

    scenarios: list
    patient: Patient
    segment_source: str

    def copy(self) -> "_Plain":
        # painted arrays are never changed in place (a new array each time): sharing them is safe
        return _Plain([Scenario(s.name, list(s.segments), list(s.wedges), float(s.margin_mm), s.painted)
                       for s in self.scenarios], copy.copy(self.patient), self.segment_source)

    def same(self, other: "_Plain") -> bool:
        if self.segment_source != other.segment_source or self.patient != other.patient:
            return False
        if len(self.scenarios) != len(other.scenarios):
            return False
        for a, b in zip(self.scenarios, other.scenarios):
            if (a.name, sorted(a.segments), sorted(a.wedges), a.margin_mm) != \
                    (b.name, sorted(b.segments), sorted(b.wedges), b.margin_mm):
                return False
            pa = np.zeros(0, np.int64) if a.painted is None else a.painted
            pb = np.zeros(0, np.int64) if b.painted is None else b.painted
            if pa is not pb and not np.array_equal(pa, pb):
                return False
        return True


@dataclass
class PlanStep:
    """One undoable change of the planning."""

    kind: str
    description: str
    before: _Plain
    after: _Plain
    #: the segment map: changed box with its values before/after; or the whole map replaced
    map_box: Optional[Box] = None
    map_before: Optional[np.ndarray] = None
    map_after: Optional[np.ndarray] = None
    map_replaced: Optional[tuple] = None       # (old map or None, new map or None)
    merge_key: Optional[tuple] = None          # consecutive steps with the same key become one
    id: int = 0

    @property
    def map_changed(self) -> bool:
        return self.map_box is not None or self.map_replaced is not None


class VoxelStroke:
    """The voxels of one drag (flat indices on the case's grid): dabs added or taken away; the set
    arithmetic of painting and correcting, for the Plan tab."""

    def __init__(self, start: Optional[np.ndarray] = None) -> None:
        self.voxels = np.zeros(0, np.int64) if start is None else np.unique(np.asarray(start, np.int64))

    def add(self, dab: np.ndarray) -> None:
        self.voxels = np.union1d(self.voxels, np.asarray(dab, np.int64))

    def remove(self, dab: np.ndarray) -> None:
        self.voxels = np.setdiff1d(self.voxels, np.asarray(dab, np.int64))


class PlanningState:
    """The planning of one case (see the module docstring). ``shape``: the case's grid (z, y, x)."""

    def __init__(self, shape) -> None:
        self.shape = tuple(int(v) for v in shape)
        self._plain = _Plain([], Patient(), "")
        self.segment_map: Optional[np.ndarray] = None   # uint8 0..8 on the full grid; None: from the vessels
        self._undo: list[PlanStep] = []
        self._redo: list[PlanStep] = []
        self._next_id = 1
        self._saved_id = 0
        self.version = 0          # bumps on every change
        self.map_version = 0      # bumps when the segment map changes
        # vanished lesions read from a comparison.json (issue 22): not part of the saved plan, not an undo step
        self.vanished_sites: list = []
        self.vanished_source = ""
        self.comparison = None    # its engine.compare.report_section.ComparisonForReport (the report's section)

    def load_vanished(self, path, geometry) -> int:
        """The vanished lesions of a ``comparison.json`` whose follow-up is this case (``geometry``: its
        grid; a comparison of another scan is refused in words, InputError). Returns how many."""
        from ..compare.report_section import read_comparison_for_report

        cmp = read_comparison_for_report(path, geometry)      # read_vanished_sites(path, geometry) + the table
        self.vanished_sites, self.vanished_source, self.comparison = cmp.sites, Path(path).name, cmp
        return len(cmp.sites)

    def vanished_notes(self, planner, scenario) -> list[str]:
        """For each vanished site, whether ``scenario`` (of ``planner``, run on this case) leaves it: the
        sentences of engine.compare.planning_hook.sites_left."""
        if not self.vanished_sites:
            return []
        from ..compare.planning_hook import sites_left

        return [n["sentence"] for n in sites_left(planner, scenario, self.vanished_sites)]

    # --- reading --------------------------------------------------------------------------------
    @property
    def scenarios(self) -> list[Scenario]:
        return self._plain.scenarios

    @property
    def patient(self) -> Patient:
        return self._plain.patient

    @property
    def segment_source(self) -> str:
        return self._plain.segment_source

    def scenario(self, name: str) -> Optional[Scenario]:
        return next((s for s in self.scenarios if s.name == name), None)

    def scenario_dict(self) -> dict[str, Scenario]:
        """{name: scenario} in order (what engine.planning.planner.Planner.scenarios holds)."""
        return {s.name: s for s in self.scenarios}

    @property
    def is_empty(self) -> bool:
        return not self.scenarios and self.segment_map is None and self.patient == Patient()

    @property
    def state_id(self) -> int:
        return self._undo[-1].id if self._undo else 0

    @property
    def is_modified(self) -> bool:
        return self.state_id != self._saved_id

    def mark_saved(self) -> None:
        self._saved_id = self.state_id

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def undo_step(self) -> Optional[PlanStep]:
        return self._undo[-1] if self._undo else None

    @property
    def redo_step(self) -> Optional[PlanStep]:
        return self._redo[-1] if self._redo else None

    def drop_redo(self) -> None:
        """A label step was made: the planning's redo goes too (one line of history)."""
        self._redo.clear()

    def drop_oldest(self, n: int = 1) -> None:
        del self._undo[:n]

    # --- changing ---------------------------------------------------------------------------------
    def _change(self, kind: str, description: str, fn: Callable[[_Plain], None], merge_key=None,
                merge: bool = False) -> Optional[PlanStep]:
        before = self._plain.copy()
        after = self._plain.copy()
        fn(after)
        if after.same(before):
            return None
        return self._push(PlanStep(kind, description, before, after, merge_key=merge_key), merge)

    def _push(self, step: PlanStep, merge: bool) -> PlanStep:
        top = self._undo[-1] if self._undo else None
        if merge and top is not None and step.merge_key is not None and top.merge_key == step.merge_key \
                and not step.map_changed and not top.map_changed:
            # e.g. typing 1, 17, 178 cm: one step from the first value to the last
            top.after = step.after
            self._apply(step, forward=True)
            self.version += 1
            return top
        step.id = self._next_id
        self._next_id += 1
        self._undo.append(step)
        self._redo.clear()
        self._apply(step, forward=True)
        self.version += 1
        return step

    def _unique_name(self, base: str) -> str:
        names = {s.name for s in self.scenarios}
        if base not in names:
            return base
        k = 2
        while f"{base} ({k})" in names:
            k += 1
        return f"{base} ({k})"

    def new_scenario(self, name: Optional[str] = None, margin_mm: float = DEFAULT_MARGIN_MM) -> Optional[PlanStep]:
        """A new empty scenario at the end (default name 'Scenario N'; a name in use gets ' (2)')."""
        if name is None:
            k = len(self.scenarios) + 1
            while self.scenario(f"Scenario {k}") is not None:
                k += 1
            name = f"Scenario {k}"
        name = str(name).strip()
        if not name:
            raise InputError("A scenario needs a name.")
        name = self._unique_name(name)
        return self._change("scenario_new", f"New scenario '{name}'",
                            lambda p: p.scenarios.append(Scenario(name, margin_mm=float(margin_mm))))

    def rename_scenario(self, old: str, new: str) -> Optional[PlanStep]:
        new = str(new).strip()
        if self.scenario(old) is None:
            raise InputError(f"There is no scenario called '{old}'.")
        if not new:
            raise InputError("A scenario needs a name.")
        if new != old and self.scenario(new) is not None:
            raise InputError(f"There is already a scenario called '{new}'.")

        def fn(p: _Plain) -> None:
            next(s for s in p.scenarios if s.name == old).name = new
        return self._change("scenario_rename", f"Rename scenario '{old}' to '{new}'", fn)

    def delete_scenario(self, name: str) -> Optional[PlanStep]:
        if self.scenario(name) is None:
            return None
        return self._change("scenario_delete", f"Delete scenario '{name}'",
                            lambda p: p.scenarios.__setitem__(slice(None), [s for s in p.scenarios if s.name != name]))

    def set_scenario(self, name: str, *, segments=None, wedges=None, margin_mm=None, merge: bool = False
                     ) -> Optional[PlanStep]:
        """Change what scenario ``name`` resects (only the parts given)."""
        if self.scenario(name) is None:
            raise InputError(f"There is no scenario called '{name}'.")
        for s in segments or ():
            if not 1 <= int(s) <= 8:
                raise InputError(f"Segment {s} does not exist; Couinaud segments are I-VIII (1-8).")
        if margin_mm is not None and not (0.0 <= float(margin_mm) <= 100.0):
            raise InputError(f"A wedge margin of {margin_mm} mm is outside 0-100 mm.")

        def fn(p: _Plain) -> None:
            s = next(s for s in p.scenarios if s.name == name)
            if segments is not None:
                s.segments = sorted(int(v) for v in segments)
            if wedges is not None:
                s.wedges = sorted(int(v) for v in wedges)
            if margin_mm is not None:
                s.margin_mm = float(margin_mm)
        # only a margin typed digit by digit merges; ticks are a step each
        key = ("margin", name) if margin_mm is not None and segments is None and wedges is None else None
        return self._change("scenario_change", f"Change scenario '{name}'", fn, merge_key=key, merge=merge)

    def paint(self, name: str, voxels: np.ndarray, erase: bool = False) -> Optional[PlanStep]:
        """Add (or take away, ``erase``) voxels (flat indices on the case's grid) to the region painted in
        scenario ``name``: one step for a whole drag."""
        sc = self.scenario(name)
        if sc is None:
            raise InputError(f"There is no scenario called '{name}'.")
        voxels = np.asarray(voxels, np.int64)
        if voxels.size and (int(voxels.min()) < 0 or int(voxels.max()) >= int(np.prod(self.shape))):
            raise InputError("The painted region lies outside the case's grid.")
        stroke = VoxelStroke(sc.painted)
        (stroke.remove if erase else stroke.add)(voxels)
        new = stroke.voxels if stroke.voxels.size else None

        def fn(p: _Plain) -> None:
            next(s for s in p.scenarios if s.name == name).painted = new
        return self._change("paint", f"{'Erase painted region' if erase else 'Paint region'} ({name})", fn)

    def import_scenarios(self, scenarios: list) -> Optional[PlanStep]:
        """Scenarios read from a planning file: added at the end; one of the same name is replaced."""
        got = [Scenario(sc.name, list(sc.segments), list(sc.wedges), float(sc.margin_mm), sc.painted)
               for sc in scenarios]

        def fn(p: _Plain) -> None:
            for sc in got:
                i = next((k for k, s in enumerate(p.scenarios) if s.name == sc.name), None)
                if i is None:
                    p.scenarios.append(sc)
                else:
                    p.scenarios[i] = sc
        return self._change("scenario_change", f"Import {len(got)} scenario(s)", fn)

    def set_patient(self, patient: Patient, merge: bool = False) -> Optional[PlanStep]:
        if patient.condition not in FLR_MINIMUM_PCT:
            raise InputError(f"Unknown liver condition '{patient.condition}'.")
        changed = [f for f in ("height_cm", "weight_kg", "condition")
                   if getattr(patient, f) != getattr(self.patient, f)]
        words = {"height_cm": "height", "weight_kg": "weight", "condition": "liver condition"}
        # typing one figure digit by digit is one step; another figure starts a new one
        key = ("patient", changed[0]) if len(changed) == 1 and changed[0] != "condition" else None
        what = " / ".join(words[f] for f in changed) or "figures"
        return self._change("patient", f"Change the patient's {what}",
                            lambda p: setattr(p, "patient", copy.copy(patient)), merge_key=key, merge=merge)

    def set_segment_map(self, seg_map: Optional[np.ndarray], source: str, description: str = "",
                        kind: str = "segment_map") -> Optional[PlanStep]:
        """The segment map from a file or a model (uint8 0..8 on the case's grid), or None: estimate the
        segments from the vessels again."""
        if seg_map is not None:
            seg_map = np.asarray(seg_map)
            if tuple(seg_map.shape) != self.shape:
                raise InputError("The segment map does not lie on the CT's grid.")
            if seg_map.size and int(seg_map.max()) > 8:
                raise InputError(f"A segment map holds the values 0-8 (Couinaud I-VIII); this one has "
                                 f"{int(seg_map.max())}. Give a label mapping for it.")
            seg_map = np.array(seg_map, np.uint8, copy=True)
        before, after = self._plain.copy(), self._plain.copy()
        after.segment_source = source if seg_map is not None else ""
        old = self.segment_map
        if old is None and seg_map is None and after.same(before):
            return None
        step = PlanStep(kind, description or ("Use the segment map " + source if seg_map is not None
                                              else "Estimate the segments from the vessels"),
                        before, after, map_replaced=(old, seg_map))
        return self._push(step, merge=False)

    def correct_segments(self, voxels: np.ndarray, segment: int, base_map: Optional[np.ndarray] = None,
                         base_source: str = "estimated from the vessels") -> Optional[PlanStep]:
        """Set ``voxels`` (flat indices on the case's grid; the caller keeps them to the liver) to
        ``segment`` (1..8): a hand correction. Without a segment map of its own the state starts from
        ``base_map`` (the estimate shown); the source then says "corrected by hand"."""
        segment = int(segment)
        if not 1 <= segment <= 8:
            raise InputError(f"Segment {segment} does not exist; Couinaud segments are I-VIII (1-8).")
        voxels = np.unique(np.asarray(voxels, np.int64))
        if voxels.size == 0:
            return None
        if int(voxels.min()) < 0 or int(voxels.max()) >= int(np.prod(self.shape)):
            raise InputError("The corrected voxels lie outside the case's grid.")
        start = self.segment_map
        if start is None:
            if base_map is None:
                raise InputError("There is no segment map to correct: the segments could not be estimated. "
                                 "Load a segment map from a file first.")
            start = np.asarray(base_map, np.uint8)
            if tuple(start.shape) != self.shape:
                raise InputError("The segment map does not lie on the CT's grid.")
        zyx = np.unravel_index(voxels, self.shape)
        changed = start[zyx] != segment
        if not changed.any():
            return None
        before, after = self._plain.copy(), self._plain.copy()
        src = self.segment_source or base_source
        after.segment_source = src if "corrected by hand" in src else f"{src}, corrected by hand"
        desc = f"Correct the segment map ({int(changed.sum())} voxels to segment {segment})"
        if self.segment_map is None:
            new = start.copy()
            new[zyx] = segment
            step = PlanStep("segment_correction", desc, before, after, map_replaced=(None, new))
            return self._push(step, merge=False)
        sel = tuple(a[changed] for a in zyx)
        mask_box = (int(sel[0].min()), int(sel[0].max()) + 1, int(sel[1].min()), int(sel[1].max()) + 1,
                    int(sel[2].min()), int(sel[2].max()) + 1)
        old_block = self.segment_map[_sl(mask_box)].copy()
        new_block = old_block.copy()
        new_block[tuple(a - o for a, o in zip(sel, mask_box[::2]))] = segment
        step = PlanStep("segment_correction", desc, before, after, map_box=mask_box, map_before=old_block,
                        map_after=new_block)
        return self._push(step, merge=False)

    def edit_array(self, base_map: Optional[np.ndarray]) -> np.ndarray:
        """The array a segment-map edit (engine.edits brush / fill, through CaseSession) paints on: the
        plan's own map (changed in place, recorded by :meth:`commit_map_region`), or a copy of
        ``base_map`` (the estimate shown) when the plan has none yet."""
        if self.segment_map is not None:
            return self.segment_map
        if base_map is None:
            raise InputError("There is no segment map to correct: the segments could not be estimated. "
                             "Load a segment map from a file first.")
        base_map = np.asarray(base_map)
        if tuple(base_map.shape) != self.shape:
            raise InputError("The segment map does not lie on the CT's grid.")
        return np.array(base_map, np.uint8, copy=True)

    def commit_map_region(self, array: np.ndarray, region, description: str,
                          base_source: str = "estimated from the vessels") -> Optional[PlanStep]:
        """An engine.edits operation (brush stroke, fill) already applied to ``array`` (from
        :meth:`edit_array`) with its Region (box + values before) as one plan step."""
        if region is None:
            return None
        box = tuple(int(v) for v in region.box)
        after_block = array[_sl(box)]
        changed = after_block != region.before
        tight = _box_of(changed)
        if tight is None:
            return None
        inner = _sl(tight)
        abs_box = tuple(box[2 * (a // 2)] + tight[a] for a in range(6))
        before_block = np.array(region.before[inner], copy=True)
        after_block = np.array(after_block[inner], copy=True)
        before, after = self._plain.copy(), self._plain.copy()
        src = self.segment_source or base_source
        after.segment_source = src if "corrected by hand" in src else f"{src}, corrected by hand"
        if self.segment_map is None or array is not self.segment_map:
            new = np.array(array, np.uint8, copy=True)
            step = PlanStep("segment_correction", description, before, after, map_replaced=(self.segment_map, new))
        else:
            step = PlanStep("segment_correction", description, before, after, map_box=abs_box,
                            map_before=before_block, map_after=after_block)
        return self._push(step, merge=False)

    def replace(self, other: "PlanningState", description: str, kind: str = "plan_opened") -> Optional[PlanStep]:
        """Everything of ``other`` (a plan read from a file or an autosave) as one step."""
        before, after = self._plain.copy(), other._plain.copy()
        same_map = (self.segment_map is None and other.segment_map is None) or (
            self.segment_map is not None and other.segment_map is not None
            and np.array_equal(self.segment_map, other.segment_map))
        if after.same(before) and same_map:
            return None
        step = PlanStep(kind, description, before, after,
                        map_replaced=None if same_map else (self.segment_map, other.segment_map))
        return self._push(step, merge=False)

    # --- undo / redo ------------------------------------------------------------------------------
    def _apply(self, step: PlanStep, forward: bool) -> None:
        self._plain = (step.after if forward else step.before).copy()
        if step.map_replaced is not None:
            self.segment_map = step.map_replaced[1 if forward else 0]
            self.map_version += 1
        elif step.map_box is not None:
            self.segment_map[_sl(step.map_box)] = step.map_after if forward else step.map_before
            self.map_version += 1

    def undo(self) -> Optional[PlanStep]:
        if not self._undo:
            return None
        step = self._undo.pop()
        self._apply(step, forward=False)
        self._redo.append(step)
        self.version += 1
        return step

    def redo(self) -> Optional[PlanStep]:
        if not self._redo:
            return None
        step = self._redo.pop()
        self._apply(step, forward=True)
        self._undo.append(step)
        self.version += 1
        return step

    # --- files ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The plan as JSON (without the segment map's voxels, which travel as their own file)."""
        p = self.patient
        return {"software": "LiverPlan", "kind": "plan", "shape_zyx": list(self.shape),
                "scenarios": [s.to_dict() for s in self.scenarios],
                "patient": {"height_cm": p.height_cm, "weight_kg": p.weight_kg, "condition": p.condition},
                "segment_map": {"present": self.segment_map is not None, "source": self.segment_source}}

    @classmethod
    def from_dict(cls, data: dict, segment_map: Optional[np.ndarray] = None, what: str = "The plan") -> "PlanningState":
        if not isinstance(data, dict) or data.get("kind") not in ("plan", "planning"):
            raise InputError(f"{what} is not a LiverPlan plan.")
        shape = tuple(int(v) for v in (data.get("shape_zyx") or (data.get("geometry") or {}).get("shape_zyx", ())))
        st = cls(shape)
        try:
            pat = data.get("patient") or {}
            patient = Patient(pat.get("height_cm"), pat.get("weight_kg"), pat.get("condition") or "normal")
        except (TypeError, ValueError) as exc:
            raise InputError(f"{what}: the patient's figures could not be read ({exc}).") from None
        scenarios = [Scenario.from_dict(d) for d in data.get("scenarios", [])]
        names = [s.name for s in scenarios]
        if len(set(names)) != len(names):
            raise InputError(f"{what} names a scenario twice.")
        sm = data.get("segment_map") or {}
        if sm.get("present") and segment_map is None:
            raise InputError(f"{what} says it has a segment map, but its file is missing.")
        if segment_map is not None:
            if tuple(segment_map.shape) != shape:
                raise InputError(f"{what}: its segment map does not lie on the case's grid.")
            st.segment_map = np.asarray(segment_map, np.uint8).copy()
        st._plain = _Plain(scenarios, patient, str(sm.get("source", "")) if segment_map is not None else "")
        return st


# ------------------------------------------------------------------------------------------------
# the plan beside a label file
# ------------------------------------------------------------------------------------------------
_LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm")


def plan_paths(labels_path: Union[str, Path]) -> tuple[Path, Path]:
    """(plan JSON, segment map NIfTI) beside a label file: ``case_labels.nii.gz`` ->
    ``case_labels.plan.json`` and ``case_labels.segments.nii.gz``."""
    p = Path(labels_path)
    name = p.name
    for suf in _LABEL_SUFFIXES:
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    return p.with_name(f"{name}.plan.json"), p.with_name(f"{name}.segments.nii.gz")


def write_plan_beside(labels_path: Union[str, Path], state_dict: dict, segment_map: Optional[np.ndarray],
                      case) -> list[Path]:
    """Write the plan (``state_dict`` = PlanningState.to_dict()) beside the labels, atomically; the segment
    map (when the plan has one) as a label file in the CT's source geometry, readable by Load segment map.
    Without a segment map an older segment file of that name is removed (it would be read back)."""
    from ..io.atomic import write_text_atomic
    from ..io.labelmaps import write_label_map

    js, seg = plan_paths(labels_path)
    out = []
    if segment_map is not None:
        out.append(write_label_map(seg, case, labels=np.asarray(segment_map, np.uint8), overwrite=True))
    elif seg.exists():
        seg.unlink()
    write_text_atomic(js, json.dumps(state_dict, indent=1), overwrite=True)
    out.insert(0, js)
    return out


def read_plan_beside(labels_path: Union[str, Path], geometry) -> Optional[PlanningState]:
    """The plan saved beside a label file, or None when there is none. Raises InputError when it is
    there but cannot be used (damaged, another grid)."""
    js, seg = plan_paths(labels_path)
    if not js.is_file():
        return None
    try:
        data = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"The plan {js.name} could not be read ({exc}).") from None
    seg_map = None
    if (data.get("segment_map") or {}).get("present"):
        from .planner import read_segment_map
        if not seg.is_file():
            raise InputError(f"The plan {js.name} has a segment map, but {seg.name} is missing beside it.")
        seg_map = read_segment_map(seg, geometry)
    st = PlanningState.from_dict(data, seg_map, what=f"The plan {js.name}")
    if st.shape != tuple(geometry.shape):
        raise InputError(f"The plan {js.name} was made for a grid of {st.shape[::-1]} voxels (x, y, z); this case "
                         f"has {tuple(geometry.shape)[::-1]}.")
    return st


# ------------------------------------------------------------------------------------------------
# the plan in the autosave folder
# ------------------------------------------------------------------------------------------------
AUTOSAVE_PLAN = "plan.json"
AUTOSAVE_SEGMENTS = "plan-segments.bin"


def write_plan_autosave(folder: Path, state: PlanningState, write_map: bool, box: Optional[Box] = None) -> None:
    """The plan into an autosave folder (atomic, durable): plan.json always; the segment map when
    ``write_map`` (it changed since the last write) as records of engine.session's journal format (a box
    and its values, run-length + zlib, CRC): the whole map's non-zero box as the file's first record, then
    each correction inside ``box`` appended (fsync'd) — a stroke costs its box, not the whole map."""
    import os

    from ..io.atomic import write_bytes_atomic, write_text_atomic
    from ..session import encode_record

    folder.mkdir(parents=True, exist_ok=True)
    seg_path = folder / AUTOSAVE_SEGMENTS
    if write_map:
        if state.segment_map is None:
            if seg_path.exists():
                seg_path.unlink()
        elif box is not None and seg_path.exists():
            with open(seg_path, "ab") as fh:
                fh.write(encode_record(box, state.segment_map[_sl(box)], "plan_map", ""))
                fh.flush()
                os.fsync(fh.fileno())
        else:
            whole = _box_of(state.segment_map > 0) or (0, 0, 0, 0, 0, 0)
            write_bytes_atomic(seg_path, encode_record(whole, state.segment_map[_sl(whole)], "plan_map", ""),
                               overwrite=True)
    data = state.to_dict()
    data["undo_description"] = state.undo_step.description if state.undo_step else ""
    write_text_atomic(folder / AUTOSAVE_PLAN, json.dumps(data, indent=1), overwrite=True)


def read_plan_autosave(folder: Path) -> Optional[PlanningState]:
    """The plan an autosave folder holds, or None. Raises ValueError when it is damaged."""
    js = folder / AUTOSAVE_PLAN
    if not js.is_file():
        return None
    try:
        data = json.loads(js.read_text(encoding="utf-8"))
        seg_map = None
        if (data.get("segment_map") or {}).get("present"):
            from ..session import read_journal
            records = read_journal(folder / AUTOSAVE_SEGMENTS)
            if not records:
                raise ValueError("its segment map is missing")
            seg_map = np.zeros(tuple(data["shape_zyx"]), np.uint8)
            for box, values, _ in records:
                if box[1] > seg_map.shape[0] or box[3] > seg_map.shape[1] or box[5] > seg_map.shape[2]:
                    raise ValueError("a segment-map record lies outside the case")
                seg_map[_sl(box)] = values
        return PlanningState.from_dict(data, seg_map, what="The autosaved plan")
    except (OSError, ValueError, KeyError, InputError) as exc:
        raise ValueError(f"the autosaved plan is damaged ({exc})") from None


__all__ = ["PlanningState", "PlanStep", "VoxelStroke", "PLAN_KINDS", "plan_paths", "write_plan_beside",
           "read_plan_beside", "write_plan_autosave", "read_plan_autosave"]
