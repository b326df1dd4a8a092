"""The open case as one Qt-free object: :class:`CaseSession` (docs/architecture.md, "The session").

It holds the case (CT, geometry, labels, provenance), the label history (each step with its kind and
its record of what the labels are: origin, model card, notes), the reference and the evaluation, the
derived measurements and surfaces (engine.derived.DerivedState), and the save state with the autosave
and its journal. Opening, segmenting (through engine.inference.apply_result, as the CLI), editing,
undo/redo, evaluating, saving and autosaving are its methods; it announces every change to its
listeners as ``listener(kind, data)`` with ``kind`` one of :data:`EVENTS`. The window mirrors it; a
script or a test drives it without Qt. It owns no thread: long work is handed out as plain functions
(``*_job`` methods) for whoever owns threads to run, with a ``*_finished`` method taking the result back
on the session's own thread; the plain methods (:meth:`save`, :meth:`autosave`, :meth:`evaluate`,
:meth:`segment`) do both inline.

Nothing is lost (docs/architecture.md, "Nothing is lost"): every committed step, undo and redo is
appended to a journal beside the autosave and flushed to disk before the method returns; the periodic
autosave writes a snapshot and starts a new journal (compaction). A write that fails is announced at
once (``"problem"``), the chain moves to a fallback folder with a fresh snapshot, and the next autosave
retries; the session counts as saved only after a write that succeeded.
"""
from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import edits
from .case import Case
from .derived import DerivedState
from .edits import REPLACING_KINDS
from .session import AutosaveEntry, AutosaveStore, case_key, encode_record, labels_crc

log = logging.getLogger(__name__)

#: What a listener may hear. ``data`` per kind:
#: case: the new Case; labels: a :class:`LabelChange`; provenance: the Provenance; reference: the
#: reference name or None; evaluation: the metrics.CaseResult or None; evaluation_stale: True;
#: measurements: a MeasurementReport; volumes: {label: voxels}; surfaces: {label: surface or None};
#: saved: the path written; save_failed: a sentence (the labels stay unsaved); autosaved: the folder
#: written; problem: a sentence for the user (an autosave or journal write that failed: the edits are not
#: safe until it works again); message: a sentence for the status bar; planning: a :class:`PlanChange`
#: (the case's scenarios, patient or segment map changed: a plan step, its undo or redo, a new case).
EVENTS = ("case", "labels", "provenance", "reference", "evaluation", "evaluation_stale", "measurements",
          "volumes", "surfaces", "saved", "save_failed", "autosaved", "problem", "message", "planning")

Listener = Callable[[str, Any], None]


@dataclass
class LabelChange:
    """What one step, undo or redo changed (the ``"labels"`` event)."""

    how: str                     # "commit", "undo" or "redo"
    step: Optional[edits.Edit]   # None: a replacing step whose result equals the labels shown
    touched: frozenset
    box: Optional[tuple]         # (z0, z1, y0, y1, x0, x1); None = anywhere
    delta: dict


@dataclass
class PlanChange:
    """What changed in the case's planning (the ``"planning"`` event)."""

    how: str                     # "commit", "undo", "redo" or "reset" (a new case: a new, empty plan)
    step: Optional[Any]          # the engine.planning.state.PlanStep (None for "reset")
    map_changed: bool            # the segment map changed (the planning's segments must follow)


@dataclass
class SaveJob:
    """Writing the labels as they were when the job was made (what the user saw when saving); call it on
    any thread, then give it to :meth:`CaseSession.save_finished`."""

    path: Path
    case: Case          # a copy
    state: int          # the history state written
    mark: bool          # Save (the case counts as saved after it) or Export (it does not)
    opened: int = 0     # which case of the session it belongs to
    #: the case's plan as it was when the job was made (Save writes it beside the labels: README
    #: "Planning"); None: not written (an export, or no plan and none beside the file before)
    plan: Optional[dict] = None
    plan_map: Optional[np.ndarray] = None
    plan_state: int = -1

    def __call__(self) -> Path:
        out = write_labels(self.path, self.case)
        if self.plan is not None:
            from .planning.state import write_plan_beside
            write_plan_beside(self.path, self.plan, self.plan_map, self.case)
        return out


@dataclass
class AutosaveJob:
    """Writing a snapshot of the labels as generation ``gen``: into the first of ``folders`` that takes
    it (this session's folder, then a new one in each autosave root). Returns the folder written; raises
    OSError when none could be. Call it on any thread, then give it to
    :meth:`CaseSession.autosave_finished`."""

    store: AutosaveStore
    folders: list
    gen: int
    state: int
    labels: np.ndarray
    source: str
    name: str
    description: str
    opened: int = 0     # which case of the session it belongs to

    def __call__(self) -> Path:
        errors = []
        for folder in self.folders:
            try:
                self.store.write_snapshot(folder, self.gen, self.source, self.name, self.labels, self.description)
                return folder
            except Exception as exc:  # noqa: BLE001 - a full or read-only disk: try the next folder
                errors.append(f"{folder.parent}: {exc}")
        raise OSError("no folder could be written (" + "; ".join(errors) + ")")


def run_model(case: Case, models, *, device: str = "auto", mode: str = "fast", progress=None, cancel=None,
              uncertainty: Optional[bool] = None):
    """Segment ``case`` with one model or several (engine.inference.segment): the one place the session
    and the window call inference from, so a change of its options is made here only. Runs on a worker
    thread in the window. Returns an engine.inference.SegmentationResult. ``uncertainty``: keep the
    model's per-voxel uncertainty (1 byte per voxel; None: on unless LIVERPLAN_UNCERTAINTY=0)."""
    from .inference import SegmentOptions, segment

    if uncertainty is None:
        uncertainty = os.environ.get("LIVERPLAN_UNCERTAINTY", "1").strip() not in ("0", "off", "no", "false")
    return segment(case, models, SegmentOptions(device=device, mode=mode, uncertainty=bool(uncertainty)),
                   progress=progress, cancel=cancel)


def write_labels(path, case: Case) -> Path:
    """The one save routine (Save, Save As, Export, the unsaved-changes box): the label map in the CT's
    source geometry, format from the extension (engine.io.write_label_map), written atomically."""
    from .io import write_label_map

    return write_label_map(str(path), case, overwrite=True)


class CaseSession:
    """One open case with its history, reference, evaluation, derived state and save state."""

    def __init__(self, autosave_store: Optional[AutosaveStore] = None, journal: bool = True,
                 history_bytes: int = edits.DEFAULT_HISTORY_BYTES) -> None:
        self.case: Optional[Case] = None
        self.history: Optional[edits.EditHistory] = None
        self.history_bytes = int(history_bytes)
        self.reference: Optional[np.ndarray] = None
        self.reference_name = ""
        self.reference_mapping = None
        #: per-voxel maps from the last segmentation beside its labels (e.g. "couinaud": segment 1-8, uint8)
        self.extra_maps: dict[str, np.ndarray] = {}
        self.evaluation = None
        self.evaluated_labels: Optional[np.ndarray] = None
        self.evaluation_stale = False
        self._evaluated_version = -1
        self.derived = DerivedState(self._emit)
        self.autosave_store = autosave_store if autosave_store is not None else AutosaveStore()
        self.journal_enabled = bool(journal)
        self.last_save_path: Optional[Path] = None
        self.problem: Optional[str] = None         # the last save/autosave failure not yet overcome
        self._listeners: list[Listener] = []
        self._stroke: Optional[edits.Stroke] = None
        self._segment_edit = None               # (array, liver mask, source) of a segment-map stroke
        self._last_dab = None
        self._autosaved_state: Optional[int] = None
        self._autosave_running = False
        self._session_id = f"{int(time.time() * 1000):x}{os.getpid():x}"
        self._folder: Optional[Path] = None     # this session's autosave folder (journal + snapshots)
        self._gen = 0                           # journal generation appended to
        self._chain_ok = False                  # the folder's base + journal rebuild the labels shown
        self._base_crc: Optional[int] = None
        self._opened = 0                        # cases opened in this session (names their folders)
        # Journal records since the last snapshot began, kept in memory too: when the snapshot lands in
        # another folder (a failure moved it) they are appended there, so its chain stays whole.
        self._since_snapshot: list[bytes] = []
        #: the case's planning (engine.planning.state.PlanningState): scenarios, patient, segment map
        self.planning = None
        # One Ctrl+Z order over the two histories (docs/architecture.md, "The planning"): which history
        # each applied step / each undone step belongs to ("labels" or "plan").
        self._order: list[str] = []
        self._redo_order: list[str] = []
        self._plan_map_written = -1             # the segment map version in the autosave folder

    # ============================================================================ events
    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(kind, data)`` on every change; returns a function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, kind: str, data: Any = None) -> None:
        for fn in list(self._listeners):
            try:
                fn(kind, data)
            except Exception:  # noqa: BLE001 - one broken listener must not stop the others
                log.exception("session listener failed on %r", kind)

    # ============================================================================ state
    @property
    def source_key(self) -> str:
        """What names the case across runs (its source path, or its name for a built one)."""
        return (self.case.provenance.source or self.case.name) if self.case is not None else ""

    @property
    def is_modified(self) -> bool:
        """Unsaved label edits or plan changes."""
        return (self.history is not None and self.history.is_modified) or (
            self.planning is not None and self.planning.is_modified)

    @property
    def undo_description(self) -> Optional[str]:
        """What Ctrl+Z takes back now (a label step or a plan step), or None."""
        which = self._next("undo")
        if which == "plan":
            return self.planning.undo_step.description
        return self.history.undo_description if which == "labels" else None

    @property
    def redo_description(self) -> Optional[str]:
        which = self._next("redo")
        if which == "plan":
            return self.planning.redo_step.description
        return self.history.redo_description if which == "labels" else None

    @property
    def report(self):
        """The latest measurements (engine.measure.MeasurementReport), or None until measured."""
        return self.derived.report

    @property
    def label_notes(self) -> list[str]:
        """What the label map shown merges or leaves out, when it came from a file that said so."""
        return list(self.history.current_meta.get("notes", [])) if self.history is not None else []

    def is_idle(self) -> bool:
        """No derived work pending or running, and no autosave being written."""
        return self.derived.is_idle() and not self._autosave_running

    def _origin(self, notes: Optional[list[str]] = None) -> dict:
        p = self.case.provenance
        return {"label_source": p.label_source, "model_card": copy.deepcopy(p.model_card),
                "edited": bool(p.extra.get("edited")), "segmentation": copy.deepcopy(p.extra.get("segmentation")),
                "notes": list(notes or [])}

    def _restore_origin(self) -> None:
        meta = self.history.current_meta
        if not meta or self.case is None:
            return
        p = self.case.provenance
        p.label_source, p.model_card = meta["label_source"], copy.deepcopy(meta["model_card"])
        p.extra["edited"] = meta["edited"]
        if meta.get("segmentation") is not None:
            p.extra["segmentation"] = copy.deepcopy(meta["segmentation"])
        else:
            p.extra.pop("segmentation", None)
        self._emit("provenance", p)

    # ============================================================================ opening
    def open_case(self, case: Case) -> None:
        """Make ``case`` the open case: new history (not modified), nothing measured, no evaluation; a
        phantom's own labels become the reference. Its journal starts on its labels as opened."""
        self._stroke = None
        self._forget_unneeded_journal()
        self.case = case
        if self.history is None:
            self.history = edits.EditHistory(case.labels, max_bytes=self.history_bytes)
        self.history.reset(case.labels)
        self.history.base_meta = self._origin()
        from .planning.state import PlanningState
        self.planning = PlanningState(case.labels.shape)
        self._order, self._redo_order = [], []
        self._plan_map_written = -1
        self.evaluation, self.evaluation_stale = None, False
        self.extra_maps = {}
        self.last_save_path = None              # Save must not write this case over the last one's file
        self.derived.reset(case)
        self._autosaved_state = self.history.state_id
        self._folder = None
        self._gen = 0
        self._opened += 1
        self._since_snapshot = []
        self._chain_ok = True                   # the base is the case's own labels
        self._base_crc = labels_crc(case.labels) if self.journal_enabled else None
        self.problem = None
        self._emit("case", case)
        self._emit("planning", PlanChange("reset", None, True))
        if case.provenance.label_source == "phantom":
            # A phantom's own labels are its ground truth: offered as the evaluation reference.
            self.set_reference(case.labels.copy(), "the phantom's ground truth")
        else:
            self.set_reference(None, "")

    def open_demo(self) -> None:
        from .phantom import demo_case
        self.open_case(demo_case())

    def open_path(self, path, series: Optional[str] = None, progress=None, cancel=None) -> None:
        from .io import load_case
        self.open_case(load_case(str(path), series=series, progress=progress, cancel=cancel))

    # ============================================================================ edits
    def commit(self, kind: str, description: str, region: Optional[edits.Region],
               origin: Optional[dict] = None) -> Optional[edits.Edit]:
        """Record an operation already applied to the labels as one undo step of ``kind``.

        ``origin`` (replacing kinds: what the new labels are: label_source, model_card, edited,
        segmentation, notes) becomes the step's record and the case's provenance; an editing step keeps
        the record it was made on, marked edited by hand. The step is journaled before this returns."""
        if self.case is None:
            return None
        prev = dict(self.history.current_meta)
        if kind in REPLACING_KINDS:
            meta = dict(origin) if origin is not None else {**prev, "notes": []}
            if origin is None and meta.get("label_source", "none") != "none":
                meta["edited"] = True
        else:
            meta = {**prev, "edited": prev.get("label_source", "none") != "none" or prev.get("edited", False)}
        e = self.history.commit(description, region, kind=kind, meta=meta)
        if e is None:
            if origin is not None:
                # the labels did not change, but what they are did (a model's result equal to them)
                self.history.current_meta.update(meta)
                self._restore_origin()
            self._emit("message", f"{description}: nothing changed.")
            self._emit("labels", LabelChange("commit", None, frozenset(), None, {}))
            return None
        self._restore_origin()
        self._order.append("labels")
        self._redo_order.clear()
        if self.planning is not None:
            self.planning.drop_redo()        # one line of history: a new step ends what could be redone
        self._journal(e.box, e.after, kind, description)
        self._labels_changed("commit", e)
        self._emit("message", f"{description}.")
        return e

    def apply(self, kind: str, description: str, op, *args, **kwargs) -> Optional[edits.Edit]:
        """Run ``op(labels, *args, **kwargs) -> Region|None`` (an engine.edits operation) as one step."""
        if self.case is None:
            return None
        return self.commit(kind, description, op(self.case.labels, *args, **kwargs))

    def begin_stroke(self) -> None:
        """A brush or eraser drag starts: its dabs become one step at :meth:`end_stroke`."""
        if self.case is not None:
            self._stroke = edits.Stroke(self.case.labels)
            self._last_dab = None
            self._segment_edit = None

    def begin_segment_stroke(self, base_map: Optional[np.ndarray], liver: np.ndarray,
                             base_source: str = "estimated from the vessels") -> None:
        """A brush or eraser drag on the plan's segment map starts (the Correct tab's tools with the
        segment map as their target; the "structure" is a segment 1-8). The same engine.edits brush as
        the labels, limited to ``liver`` (bool/uint8, the planning liver); it ends as one plan step at
        :meth:`end_stroke`. ``base_map``: the segments shown when the plan has no map of its own yet.
        Raises InputError when there is no segment map to paint on."""
        if self.case is None or self.planning is None:
            return
        array = self.planning.edit_array(base_map)
        self._stroke = edits.Stroke(array)
        self._last_dab = None
        self._segment_edit = (array, np.asarray(liver, np.uint8), base_source)

    def apply_to_segment_map(self, description: str, op, *args, base_map: Optional[np.ndarray] = None,
                             liver: Optional[np.ndarray] = None, base_source: str = "estimated from the vessels",
                             **kwargs):
        """Run ``op(segment_map, *args, **kwargs) -> Region|None`` (an engine.edits operation such as
        flood_fill_slice) on the plan's segment map, limited to ``liver``, as one plan step."""
        if self.case is None or self.planning is None or self._stroke is not None:
            return None
        array = self.planning.edit_array(base_map)
        if liver is not None:
            kwargs.update(image=np.asarray(liver, np.uint8), hu_range=(1, 1))
        region = op(array, *args, **kwargs)
        return self._commit_plan_step(lambda: self.planning.commit_map_region(array, region, description, base_source))

    @property
    def stroke_active(self) -> bool:
        return self._stroke is not None

    def dab(self, zyx, axis: int, radius_mm: float, value: int, *, erase: bool = False, sphere: bool = False,
            rule: str = "all", hu_range=None) -> None:
        """One dab of the current stroke at voxel ``zyx`` (z, y, x) in the plane normal to ``axis``; a
        fast drag is filled in between the last dab and this one (no gaps)."""
        if self._stroke is None or self.case is None:
            return
        g = self.case.geometry
        centres = [zyx] if self._last_dab is None else edits.stroke_points(self._last_dab, zyx, g.spacing, radius_mm)
        self._last_dab = zyx
        target, image = self.case.labels, self.case.image
        if self._segment_edit is not None:
            # the segment map: liver voxels only (the liver mask as the "image", its value 1 as the range)
            target, image, rule, hu_range = self._segment_edit[0], self._segment_edit[1], "all", (1, 1)
        for c in centres:
            self._stroke.add(edits.brush(target, c, radius_mm, g.spacing, value, erase=erase,
                                         sphere=sphere, plane_axis=axis, rule=rule, image=image,
                                         hu_range=hu_range))

    def end_stroke(self, kind: str, description: str) -> Optional[edits.Edit]:
        """The drag ended: the whole stroke becomes one step (journaled at once)."""
        s, self._stroke = self._stroke, None
        if s is None:
            return None
        if self._segment_edit is not None:
            array, _, source = self._segment_edit
            self._segment_edit = None
            region = s.region()
            return self._commit_plan_step(lambda: self.planning.commit_map_region(array, region, description, source))
        return self.commit(kind, description, s.region())

    def open_labels(self, labels: np.ndarray, path, notes: Sequence[str] = ()) -> Optional[edits.Edit]:
        """A label map read from ``path`` (canonical grid, engine.io.read_label_map) as one step;
        ``notes``: what the file merges or leaves out (kept with these labels through edits on them)."""
        origin = {"label_source": f"file: {path}", "model_card": None, "edited": False, "segmentation": None,
                  "notes": list(notes)}
        e = self.commit("labels_opened", f"Open label map {Path(path).name}", edits.replace_all(
            self.case.labels, np.asarray(labels, np.uint8)), origin=origin)
        self._read_plan_beside(path)
        # the labels (and the plan) shown are those of the files: nothing to save (closing does not ask);
        # an edit or an undo away from them is unsaved again
        self.history.mark_saved()
        if self.planning is not None:
            self.planning.mark_saved()
        return e

    def apply_segmentation(self, result, models, shown_name: Optional[str] = None
                           ) -> tuple[Optional[edits.Edit], list[int]]:
        """A model's result (engine.inference.SegmentationResult) as one step, through
        engine.inference.apply_result as the CLI does (same labels, same provenance). A structure the
        model does not segment keeps the labels shown. Returns (the step or None if equal, kept labels)."""
        from .inference import ModelSetChoice, apply_result, keep_unsegmented_structures

        parts = models.parts if isinstance(models, ModelSetChoice) else models
        labels, kept = keep_unsegmented_structures(result.labels, self.case.labels, parts)
        # per-voxel maps beside the labels (e.g. "couinaud" from a liver-segments model, for planning)
        self.extra_maps = dict(getattr(result, "extra_maps", {}) or {})
        seg = apply_result(self.case, result)
        origin = {"label_source": seg.provenance.label_source, "model_card": seg.provenance.model_card,
                  # the model's own output (a DICOM SEG says AUTOMATIC); labels kept from before make it a mix
                  "edited": bool(kept), "segmentation": seg.provenance.extra.get("segmentation"), "notes": []}
        name = shown_name or seg.provenance.label_source.removeprefix("model: ")
        e = self.commit("segmentation", f"Segmentation ({name})", edits.replace_all(self.case.labels, labels),
                        origin=origin)
        return e, kept

    def segment(self, models, device: str = "auto", mode: str = "fast", progress=None, cancel=None):
        """Segment the open case and apply the result as one step (inline; the window runs
        :func:`run_model` on a worker, then :meth:`apply_segmentation`). Returns (result, step, kept)."""
        result = run_model(self.case, models, device=device, mode=mode, progress=progress, cancel=cancel)
        e, kept = self.apply_segmentation(result, models)
        return result, e, kept

    def undo(self) -> Optional[edits.Edit]:
        """Undo the last step (not while a stroke is being drawn); its record comes back with the labels."""
        return self._move("undo")

    def redo(self) -> Optional[edits.Edit]:
        return self._move("redo")

    def _next(self, how: str) -> Optional[str]:
        """Which history the next undo (redo) takes from: "labels", "plan" or None. A label step the
        history dropped (its byte limit) leaves its entry behind: skipped."""
        if self.history is None:
            return None
        src = self._order if how == "undo" else self._redo_order
        can = {"labels": self.history.can_undo if how == "undo" else self.history.can_redo,
               "plan": self.planning is not None and (self.planning.can_undo if how == "undo" else self.planning.can_redo)}
        for which in reversed(src):
            if can[which]:
                return which
        return None

    def _move(self, how: str):
        if self.history is None or self._stroke is not None:
            return None
        which = self._next(how)
        if which is None:
            return None
        src, dst = (self._order, self._redo_order) if how == "undo" else (self._redo_order, self._order)
        while src and src[-1] != which:
            src.pop()                           # entries of steps no longer held (see _next)
        src.pop()
        dst.append(which)
        if which == "plan":
            step = self.planning.undo() if how == "undo" else self.planning.redo()
            self._plan_changed(how, step)
            return step
        e = self.history.undo() if how == "undo" else self.history.redo()
        if e is not None:
            self._restore_origin()
            self._journal(e.box, e.before if how == "undo" else e.after, how, f"{how.capitalize()} {e.description}")
            self._labels_changed(how, e)
        return e

    def _labels_changed(self, how: str, e: edits.Edit) -> None:
        touched = frozenset(e.labels_touched) - {0}
        delta = e.delta(undo=(how == "undo"))
        self.derived.labels_changed(set(touched), e.box, delta)
        if self.evaluation is not None and not self.evaluation_stale:
            self.evaluation_stale = True
            self._emit("evaluation_stale", True)
        self._emit("labels", LabelChange(how, e, touched, e.box, delta))

    # ============================================================================ reference / evaluation
    def set_reference(self, ref: Optional[np.ndarray], name: str, mapping=None) -> None:
        """The reference label map (LiverPlan values, canonical grid) and its convention's mapping."""
        self.reference = None if ref is None else np.asarray(ref, np.uint8)
        self.reference_name, self.reference_mapping = (name, mapping) if ref is not None else ("", None)
        self._emit("reference", self.reference_name if ref is not None else None)

    # ============================================================================ planning
    def change_plan(self, method: str, *args, counts_as_edit: bool = True, **kwargs):
        """Change the case's planning by one step: ``method`` of engine.planning.state.PlanningState
        (new_scenario, rename_scenario, delete_scenario, set_scenario, paint, set_patient,
        set_segment_map, correct_segments, replace) with its arguments. The step joins the Ctrl+Z order
        (label redo ends), is written into the autosave folder at once and announced ("planning").
        A scenario margin or the patient's figures typed digit by digit merge into one step. Returns the
        PlanStep or None (nothing changed). Raises InputError for a change that cannot be made.
        ``counts_as_edit=False``: a step the program makes on its own (the first, empty scenario of a new
        plan) leaves a saved plan saved, so that closing a case that was only looked at asks nothing."""
        if self.planning is None or self._stroke is not None:
            return None
        fn = getattr(self.planning, method)
        if method in ("set_scenario", "set_patient"):
            kwargs["merge"] = bool(self._order) and self._order[-1] == "plan" and not self._redo_order
        return self._commit_plan_step(lambda: fn(*args, **kwargs),
                                      keep_saved=not counts_as_edit and not self.planning.is_modified)

    def _commit_plan_step(self, make, keep_saved: bool = False):
        top = self.planning.undo_step
        step = make()
        if step is None:
            return None
        if step is not top:                     # a new step (not merged into the last one)
            self._order.append("plan")
            self._redo_order.clear()
            self.history.drop_redo()
        if keep_saved:
            self.planning.mark_saved()
        self._plan_changed("commit", step)
        return step

    def _plan_changed(self, how: str, step) -> None:
        box = step.map_box if step is not None and step.map_box is not None else None
        self._write_plan_autosave(box)
        self._emit("planning", PlanChange(how, step, bool(step is not None and step.map_changed)))
        if how == "commit":
            self._emit("message", f"{step.description}.")

    def _write_plan_autosave(self, box=None) -> None:
        """The plan into this session's autosave folder (durable before the step's method returns)."""
        if not self.journal_enabled or self.case is None or self.planning is None:
            return
        from .planning.state import write_plan_autosave
        try:
            if self._folder is None:
                self._folder = self._new_folder(self.autosave_store.root)
                self.autosave_store.write_meta(self._folder, self.source_key, self.case.name, self.case.labels.shape,
                                               "plan", snapshot_gen=None,
                                               base_crc=self._base_crc if self._chain_ok else None)
            write_map = self._plan_map_written != self.planning.map_version
            # one box changed since the map was last written: append that box only
            incremental = box is not None and self._plan_map_written == self.planning.map_version - 1
            write_plan_autosave(self._folder, self.planning, write_map, box if incremental else None)
            self._plan_map_written = self.planning.map_version
        except Exception as exc:  # noqa: BLE001 - a full or read-only disk: said at once, never a crash
            self._report_problem(f"The plan could not be written to the autosave folder {self._folder} ({exc}); "
                                 "LiverPlan will keep trying, and Save writes it beside the labels.")

    def _read_plan_beside(self, path) -> None:
        """A plan saved beside this label file (README "Planning") becomes the case's plan (one step)."""
        from .errors import InputError
        from .planning.state import read_plan_beside
        try:
            st = read_plan_beside(path, self.case.geometry)
        except InputError as exc:
            self._emit("message", f"The plan saved with these labels was not read: {exc}")
            return
        if st is not None:
            self.change_plan("replace", st, f"Plan read with {Path(path).name}")

    def evaluation_job(self) -> Optional[tuple]:
        """(fn, args) that evaluates a copy of the labels shown against the reference (the user may keep
        editing while the metrics run), or None without a reference."""
        if self.case is None or self.reference is None:
            return None
        from .evaluation import evaluate_pair
        self._evaluated_version = self.history.version
        #: the labels the evaluation scores (a metric report pictures exactly these)
        self.evaluated_labels = self.case.labels.copy()
        return evaluate_pair, (self.evaluated_labels, self.reference, self.case.geometry, self.reference_mapping)

    def set_evaluation(self, result) -> None:
        """The evaluation of the labels copied by the last :meth:`evaluation_job` (stale at once when
        they changed while it ran)."""
        self.evaluation = result
        self.evaluation_stale = self.history is not None and self.history.version != self._evaluated_version
        self._emit("evaluation", result)
        if self.evaluation_stale:
            self._emit("evaluation_stale", True)

    def evaluate(self):
        job = self.evaluation_job()
        if job is None:
            return None
        fn, args = job
        self.set_evaluation(fn(*args))
        return self.evaluation

    # ============================================================================ saving
    def save_job(self, path, mark: bool = True) -> SaveJob:
        """The labels shown, to be written to ``path`` (a snapshot taken now: what is written is what the
        user saw); run it anywhere, then give it to :meth:`save_finished`."""
        job = SaveJob(Path(path), self.case.copy(), self.history.state_id, mark, self._opened)
        if mark and self.planning is not None:
            from .planning.state import plan_paths
            if not self.planning.is_empty or plan_paths(path)[0].exists():
                job.plan = self.planning.to_dict()
                job.plan_map = None if self.planning.segment_map is None else self.planning.segment_map.copy()
                job.plan_state = self.planning.state_id
        return job

    def save_finished(self, job, error: Optional[BaseException] = None) -> bool:
        """The outcome of a :meth:`save_job`: marked saved only when the write succeeded (and the labels
        are still those written); the autosave of the edits goes then, not before."""
        if error is not None:
            self._emit("save_failed", f"The labels were not saved: {error}")
            return False
        if job.opened != self._opened:
            return True         # written, but another case is open now: nothing of this one changes
        if job.mark:
            self.last_save_path = job.path
            if self.planning is not None and (job.plan is not None or self.planning.is_empty) \
                    and self.planning.state_id == (job.plan_state if job.plan is not None else self.planning.state_id):
                self.planning.mark_saved()
            if self.history.state_id == job.state:
                self.history.mark_saved()
                if not self.is_modified:
                    self.discard_autosave()
        self._emit("saved", job.path)
        return True

    def save(self, path=None, mark: bool = True) -> bool:
        """Write the labels (inline) to ``path`` or the last path saved to; True when written."""
        path = path or self.last_save_path
        if path is None or self.case is None:
            return False
        job = self.save_job(path, mark)
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - every failure is reported in words
            return self.save_finished(job, exc)
        return self.save_finished(job)

    # ============================================================================ autosave + journal
    def _new_folder(self, root: Path) -> Path:
        return root / f"{case_key(self.source_key, self.case.labels.shape)}-{self._session_id}{self._opened:x}"

    def _journal(self, box, values: np.ndarray, kind: str, description: str) -> None:
        """Append one change to the journal (fsync'd) so that a crash right after loses nothing."""
        if not self.journal_enabled or self.case is None:
            return
        record = encode_record(box, values, kind, description)
        self._since_snapshot.append(record)
        if not self._chain_ok:
            return   # the chain broke (a failed write) or has no base yet: the next snapshot starts one
        try:
            if self._folder is None:
                self._folder = self._new_folder(self.autosave_store.root)
                self.autosave_store.write_meta(self._folder, self.source_key, self.case.name, self.case.labels.shape,
                                               description, snapshot_gen=None, base_crc=self._base_crc)
            self.autosave_store.append(self._folder, self._gen, record)
        except Exception as exc:  # noqa: BLE001 - a full or read-only disk: said at once, never a crash
            self._chain_ok = False
            self._report_problem(f"The edits could not be written to the autosave journal in {self._folder} "
                                 f"({exc}); LiverPlan will keep trying, and use another folder.")

    def _report_problem(self, text: str) -> None:
        log.warning("%s", text)
        self.problem = text
        self._emit("problem", text)

    @property
    def journal_ok(self) -> bool:
        """Each step is durable at once (False after a failed write, or after a save until the next
        snapshot gives the journal a new base: the window then autosaves at once)."""
        return self._chain_ok or not self.journal_enabled

    @property
    def needs_autosave(self) -> bool:
        """Unsaved edits whose durability is not assured: not yet in a snapshot, or the journal broke."""
        if self.case is None or self.history is None or not self.history.is_modified:
            return False
        return self._autosaved_state != self.history.state_id or not self._chain_ok

    def autosave_job(self) -> Optional[AutosaveJob]:
        """A function writing a snapshot of the labels shown (tries this session's folder, then the
        fallback folder); a new journal generation starts now, so steps made while it writes are kept.
        None when there is nothing to write or a write is under way. Give its outcome to
        :meth:`autosave_finished`."""
        if not self.needs_autosave or self._autosave_running:
            return None
        self._gen += 1
        folders = [self._folder] if self._folder is not None else []
        folders += [f for f in (self._new_folder(root) for root in self.autosave_store.roots) if f not in folders]
        job = AutosaveJob(self.autosave_store, folders, self._gen, self.history.state_id, self.case.labels.copy(),
                          self.source_key, self.case.name, self.history.undo_description or "", self._opened)
        self._autosave_running = True
        self._since_snapshot = []               # the snapshot holds them
        return job

    def autosave_finished(self, job, folder: Optional[Path] = None, error: Optional[BaseException] = None) -> bool:
        """The outcome of an :meth:`autosave_job`. Success: the snapshot is the journal's new base (in the
        folder that took it, the fallback after a failure). Failure: said at once; retried next time
        (the state is not marked autosaved)."""
        self._autosave_running = False
        if job.opened != self._opened:
            return folder is not None   # a snapshot of the case open before: it stays there, for it
        if error is not None or folder is None:
            self._report_problem(f"Autosave failed: {error}. Your edits are only in memory; LiverPlan tries "
                                 "again, and Save writes them where you choose.")
            return False
        moved = folder != self._folder
        if moved and self._folder is not None:
            self.autosave_store.discard_folder(self._folder)   # the broken chain is replaced
        self._folder = folder
        if moved and self.planning is not None and self.planning.state_id:
            self._plan_map_written = -1
            self._write_plan_autosave()         # the plan goes with the labels' new folder
        self._autosaved_state = job.state
        self._chain_ok = True
        if moved and self._since_snapshot:
            # steps made while the snapshot was written went to the old folder (or nowhere): here too
            try:
                for record in self._since_snapshot:
                    self.autosave_store.append(folder, self._gen, record)
            except Exception as exc:  # noqa: BLE001
                self._chain_ok = False
                self._report_problem(f"The autosave journal could not be written in {folder} ({exc}).")
                return False
        if self.problem is not None:
            self.problem = None
            self._emit("message", f"Autosave works again: unsaved edits are kept in {folder}.")
        self._emit("autosaved", folder)
        return True

    def autosave(self) -> bool:
        """Write a snapshot now (inline). False when nothing needed writing or the write failed."""
        job = self.autosave_job()
        if job is None:
            return False
        try:
            folder = job()
        except Exception as exc:  # noqa: BLE001
            return self.autosave_finished(job, error=exc)
        return self.autosave_finished(job, folder)

    def find_autosave(self) -> Optional[AutosaveEntry]:
        """Unsaved edits of this case left by an earlier run (the newest), or None."""
        if self.case is None:
            return None
        return self.autosave_store.find(self.source_key, self.case.labels.shape)

    def restore_autosave(self, entry: AutosaveEntry) -> Optional[edits.Edit]:
        """Bring back the edits of an autosave (its snapshot with its journal replayed) as one step
        "Restore autosaved edits"; the case counts as modified. Raises ValueError/OSError if unreadable."""
        from .planning.state import read_plan_autosave
        plan = read_plan_autosave(entry.folder)
        e = None
        if self.autosave_store.has_labels(entry):
            labels = self.autosave_store.load(entry, base=self.history.labels if self.history.state_id == 0
                                              else None)
            e = self.commit("restore", "Restore autosaved edits", edits.replace_all(self.case.labels, labels))
            self.history.mark_modified()
        if plan is not None:
            if plan.shape != tuple(self.case.labels.shape):
                raise ValueError("the autosaved plan belongs to another grid")
            self.change_plan("replace", plan, "Restore the autosaved plan", kind="plan_restored")
        if self._chain_ok and entry.folder != self._folder:
            # the restored labels are in this session's journal now: the old folder is no longer needed
            self.autosave_store.discard_folder(entry.folder)
        return e

    def discard_autosave(self) -> None:
        """Forget every autosave of this case (after a save, or when the user discards the edits). A new
        journal then needs a new base: the next step asks for a snapshot (needs_autosave)."""
        if self.case is None:
            return
        self.autosave_store.discard(self.source_key, self.case.labels.shape)
        self._folder = None
        self._plan_map_written = -1
        # the journal's base is gone: a new chain begins with the next snapshot (needs_autosave)
        self._chain_ok = False
        self._since_snapshot = []
        self._autosaved_state = self.history.state_id if self.history is not None else None

    def _forget_unneeded_journal(self) -> None:
        """The case shown is being left with no unsaved edits (undone back to its saved state): its
        journal would only offer back edits that add up to nothing."""
        if self.case is not None and self._folder is not None and not self.is_modified:
            self.autosave_store.discard_folder(self._folder)
            self._folder = None

    def close(self) -> None:
        """The case is closed (the window closes): nothing is written any more; a journal of edits that
        were all undone or saved goes."""
        self._forget_unneeded_journal()
        self._listeners.clear()


__all__ = ["CaseSession", "LabelChange", "PlanChange", "SaveJob", "AutosaveJob", "EVENTS", "run_model", "write_labels"]
