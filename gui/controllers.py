"""One small controller per side-panel tab: it listens to the open case (engine.case_session.CaseSession)
and to its panel's signals, and talks to the panel only through the panel's own methods
(docs/architecture.md, "The window mirrors the session").

A controller reaches the window only through :class:`WindowServices` — the few things every tab needs
from it (the task runner, the status bar, progress in the status bar, a box for errors, the crosshair).
Adding a tab = a panel in gui/panels.py, a controller here, one line in gui.main_window.TABS.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol

import numpy as np
from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QApplication, QFileDialog

from engine import edits
from engine.case_session import CaseSession, run_model
from engine.labels import BY_LABEL
from engine.session import EtaEstimator

from .panels import format_value

if TYPE_CHECKING:  # pragma: no cover
    from .workers import TaskRunner

log = logging.getLogger(__name__)

LABEL_FILTER = ("Label maps (*.nii.gz *.nii *.nrrd *.seg.nrrd *.mha *.mhd);;DICOM SEG (*.dcm);;All files (*)")


class WindowServices(Protocol):
    """What a tab's controller may ask of the window."""

    runner: "TaskRunner"
    session: CaseSession

    def message(self, text: str, error: bool = False) -> None: ...
    def track_task(self, task, what: str, cancellable: bool = True) -> None: ...
    def show_error(self, title: str, msg: str) -> None: ...
    def set_position(self, zyx) -> None: ...
    def highlight(self, box, marker=None, focus: bool = True) -> None: ...
    def run_export(self, what: str, fn, *args, **kwargs): ...


def _find_models_and_devices():
    """(models, the one to preselect — the bundled demo model when present —, devices, the model folders
    that were skipped as [(folder, reason)])."""
    from engine.models import bundled_demo_model, discover_models

    skipped: list = []
    try:
        models = discover_models(skipped=skipped)
        demo = bundled_demo_model()
    except Exception as exc:  # a broken models folder must not stop the app
        log.warning("model discovery failed: %s", exc)
        models, demo = [], None
    pre = None
    if demo is not None:
        pre = next((m for m in models if Path(m.path) == Path(demo.path)), None)
        if pre is None:
            models.insert(0, demo)
            pre = demo
    try:
        from engine.inference.device import available_devices
        devices = available_devices()
    except Exception as exc:
        log.warning("device discovery failed: %s", exc)
        devices = ["cpu"]
    return models, pre, devices, skipped


# ------------------------------------------------------------------------------------------------
class TabController(QObject):
    """A tab's controller: hears the session's events (:meth:`on_session`) and its panel's signals
    (the pairs in :attr:`SIGNALS`)."""

    #: (panel signal, controller method) pairs connected when the controller is made.
    SIGNALS: tuple[tuple[str, str], ...] = ()

    def __init__(self, win: WindowServices, panel, parent=None) -> None:
        super().__init__(parent)
        self.win, self.panel = win, panel
        for signal, method in self.SIGNALS:
            getattr(panel, signal).connect(getattr(self, method))
        win.session.listen(self.on_session)

    def on_session(self, kind: str, data) -> None:
        """One event of the session (engine.case_session.EVENTS)."""


# ------------------------------------------------------------------------------------------------
class StructuresController(TabController):
    """The Structures tab: volumes that follow every step at once, the totals of the last report."""

    def __init__(self, win: WindowServices, panel, parent=None) -> None:
        super().__init__(win, panel, parent)
        self._totals_text = ""

    def on_session(self, kind: str, data) -> None:
        if kind == "case":
            self._totals_text = ""
            self.panel.set_volumes({}, "")
        elif kind == "volumes":
            self._show(data)
        elif kind == "measurements":
            total = []
            for key in ("liver.total_volume_ml", "crlm.tumour_burden_pct", "crlm.count"):
                try:
                    m = data.get(key)
                except KeyError:
                    continue
                # as the Measure tab shows it: 2 decimals, a dash where there is no value (no liver: no burden)
                total.append(f"{m.name}: {format_value(m.value, 2 if isinstance(m.value, float) else 0)} {m.units}")
            self._totals_text = "\n".join(total)
            self._show(self.win.session.derived.counts)

    def _show(self, counts: dict) -> None:
        case = self.win.session.case
        if case is None:
            return
        ml = case.geometry.voxel_volume_ml
        self.panel.set_volumes({lab: n * ml for lab, n in counts.items()}, self._totals_text)


# ------------------------------------------------------------------------------------------------
class MeasureController(TabController):
    """The Measure tab: the report of the labels shown, its notes, the lesion table and going to a lesion."""

    def __init__(self, win: WindowServices, panel, parent=None) -> None:
        super().__init__(win, panel, parent)
        self.selected_lesion: Optional[int] = None      # its row in the table
        #: the number of the selected lesion (engine.lesion_ids): the selection follows the lesion, not the row
        self.selected_lesion_id: Optional[int] = None

    SIGNALS = (("lesion_selected", "select_lesion"),)

    def on_session(self, kind: str, data) -> None:
        s = self.win.session
        if kind == "case":
            self.selected_lesion = self.selected_lesion_id = None
            self.panel.clear()              # no numbers until this case's are measured
        elif kind == "labels" and data.step is not None:
            self.panel.set_note("Updating the measurements…")
        elif kind == "measurements":
            report, case = data, s.case
            self.panel.set_report(report)
            # what the scan itself limits (a thin slab, not CT-like values) stays beside the numbers it limits;
            # one note a line: run together, four "About these labels: ..." on a real case read as one block
            notes = [f"About this scan: {w}" for w in case.provenance.warnings] \
                + [f"About these labels: {n}" for n in s.label_notes] + list(report.warnings) \
                + [f"Lesions are {report.connectivity}-connected components of label 5."]
            self.panel.set_note("Updating the measurements…" if s.derived.measure_pending else "\n".join(notes))
            self._follow_selected(report)

    def _follow_selected(self, report) -> None:
        """After new measurements: the selected lesion keeps its row selection and its marks where it went; a
        lesion that is gone (deleted) leaves nothing selected and nothing marked."""
        if self.selected_lesion_id is None:
            self.panel.select_lesion_id(None)
            return
        les = next((l for l in report.lesions if l.id == self.selected_lesion_id), None)
        if les is None:
            self.selected_lesion = self.selected_lesion_id = None
            self.panel.select_lesion_id(None)
            self.win.highlight(None, None)
            return
        self.selected_lesion = report.lesions.index(les)
        self.panel.select_lesion_id(les.id)
        self.win.highlight(self._box(les), self._marker(les), focus=False)

    @staticmethod
    def _box(les):
        b = getattr(les, "bbox", None)       # per-axis (start, stop) -> (z0, z1, y0, y1, x0, x1)
        return tuple(int(v) for pair in b for v in pair) if b is not None else None

    @staticmethod
    def _marker(les):
        return les.centroid_lps_mm, (les.longest_diameter_mm or 10.0) / 2.0 + 3.0

    def select_lesion_id(self, lesion_id: int) -> None:
        """Go to lesion number ``lesion_id`` (as :meth:`select_lesion` does for a row)."""
        report = self.win.session.report
        rows = [i for i, l in enumerate(report.lesions) if l.id == lesion_id] if report is not None else []
        if rows:
            self.panel.select_lesion_id(lesion_id)
            self.select_lesion(rows[0])

    def step_lesion(self, step: int) -> Optional[int]:
        """Next (+1) or previous (-1) lesion by number, from the selected one (wrapping round); returns its
        number (None without lesions)."""
        report = self.win.session.report
        if report is None or not report.lesions:
            self.win.message("No lesions to go to.")
            return None
        ids = sorted(l.id for l in report.lesions)
        cur = self.selected_lesion_id
        if cur is None:
            nxt = ids[0] if step > 0 else ids[-1]
        elif step > 0:
            nxt = next((i for i in ids if i > cur), ids[0])
        else:
            nxt = next((i for i in reversed(ids) if i < cur), ids[-1])
        self.select_lesion_id(nxt)
        return nxt

    def select_lesion(self, row: int) -> None:
        """Centre every pane and the 3D view on a lesion of the table and highlight it."""
        report = self.win.session.report
        if report is None or not (0 <= row < len(report.lesions)):
            return
        les = report.lesions[row]
        self.selected_lesion = row
        self.selected_lesion_id = les.id
        self.win.set_position([int(round(v)) for v in les.centroid_zyx])
        self.win.highlight(self._box(les), self._marker(les))
        self.win.message(f"Lesion {les.id}: {les.volume_ml:.2f} mL, longest diameter "
                         f"{les.longest_diameter_mm:.1f} mm.")


# ------------------------------------------------------------------------------------------------
class CorrectController(TabController):
    """The Correct tab: mouse gestures in the panes become the session's edit steps."""

    SIGNALS = (("keep_largest", "keep_largest_component"), ("fill_holes", "fill_holes"), ("undo", "undo"),
               ("redo", "redo"))

    def __init__(self, win: WindowServices, panel, parent=None) -> None:
        super().__init__(win, panel, parent)
        from .review_trace import ReviewClickTools    # vessel trace, lesion from a click (README)
        self.click_tools = ReviewClickTools(win, panel, self)
        from .review_tools import attach_to     # grow from seeds, scissors, split, interpolate, margin
        self.review = attach_to(win, panel)

    def on_session(self, kind: str, data) -> None:
        if kind in ("labels", "case", "planning"):
            s = self.win.session
            h = s.history
            self.panel.set_history(s.undo_description, s.redo_description, h.nbytes, h.max_bytes)

    def brush_radius_shown(self) -> float:
        """The brush circle the panes draw (0: no brush tool)."""
        return self.panel.brush_radius() if self.panel.tool() in ("brush", "eraser") else 0.0

    def on_mouse(self, kind: str, zyx, axis: int, modifiers) -> bool:
        """A gesture in a pane; False when it is navigation (the window moves the crosshair)."""
        s = self.win.session
        if self.review.on_mouse(kind, zyx, axis, modifiers):
            return True
        tool = self.panel.tool()
        if tool == "navigate" or modifiers & Qt.ShiftModifier:
            return False
        if self.panel.target() == "segments":
            return self._on_segment_mouse(kind, zyx, axis, tool)
        if tool in self.click_tools.TOOLS:
            return self.click_tools.on_mouse(kind, zyx, axis, tool)
        if tool in ("brush", "eraser"):
            if kind in ("press", "click"):
                s.begin_stroke()
            if kind in ("press", "move", "click") and s.stroke_active:
                self.dab(zyx, axis)
            if kind in ("release", "click") and s.stroke_active:
                name = BY_LABEL[self.panel.active_label()].name
                if tool == "brush":
                    s.end_stroke("brush", f"Brush stroke ({name})")
                else:
                    s.end_stroke("erase", f"Erase ({name})")
            return True
        if kind != "click":
            return True
        lab = self.panel.active_label()
        if tool == "fill":
            s.apply("fill", f"Fill in slice ({BY_LABEL[lab].name})", edits.flood_fill_slice, zyx, axis, lab,
                    rule=self.panel.paint_rule(), image=s.case.image, hu_range=self.panel.hu_range())
        elif tool == "delete":
            hit = int(s.case.labels[tuple(zyx)])
            if hit == 0:
                self.win.message("There is no structure under the cursor to delete.")
                return True
            QApplication.setOverrideCursor(Qt.WaitCursor)
            try:
                s.apply("delete_component", f"Delete component ({BY_LABEL[hit].name if hit in BY_LABEL else hit})",
                        edits.delete_component, zyx)
            finally:
                QApplication.restoreOverrideCursor()
        return True

    def _on_segment_mouse(self, kind: str, zyx, axis: int, tool: str) -> bool:
        """The tools on the case's segment map (the Plan tab's layer): brush, eraser and fill go through
        the same engine.edits operations as on the labels, each stroke one plan step (Undo takes it back)."""
        from engine.errors import InputError
        from engine.planning.couinaud import SEGMENT_NAMES

        s = self.win.session
        seg = self.panel.active_label()
        name = f"segment {SEGMENT_NAMES.get(seg, seg)}"
        if tool in ("brush", "eraser") and kind in ("move", "release") and not s.stroke_active:
            return True
        if tool == "delete" or (tool not in ("brush", "eraser") and kind != "click"):
            if tool == "delete" and kind == "click":
                self.win.message("Delete component works on the labels; on the segment map use the brush, the "
                                 "eraser or fill.")
            return True
        if kind in ("press", "click"):
            base = self.win.plan_panel.segment_editing()
            if base is None:
                return True
            try:
                if tool == "fill":
                    s.apply_to_segment_map(f"Fill in slice ({name})", edits.flood_fill_slice, zyx, axis, seg,
                                           base_map=base[0], liver=base[1], base_source=base[2])
                    return True
                s.begin_segment_stroke(base[0], base[1], base[2])
            except InputError as exc:
                self.win.message(str(exc), error=True)
                return True
        if s.stroke_active:
            s.dab(zyx, axis, self.panel.brush_radius(), seg, erase=(tool == "eraser"), sphere=self.panel.sphere())
        if kind in ("release", "click") and s.stroke_active:
            s.end_stroke("brush", f"{'Erase' if tool == 'eraser' else 'Brush stroke'} on the segment map ({name})")
        return True

    def dab(self, zyx, axis: int) -> None:
        """One brush/eraser dab at voxel ``zyx`` in pane ``axis`` (part of the current stroke)."""
        p = self.panel
        self.win.session.dab(zyx, axis, p.brush_radius(), p.active_label(), erase=(p.tool() == "eraser"),
                             sphere=p.sphere(), rule=p.paint_rule(), hu_range=p.hu_range())

    def keep_largest_component(self) -> None:
        if self.panel.target() == "segments":
            self.win.message("Keep largest component works on the labels; choose Paint on: Labels.")
            return
        lab = self.panel.active_label()
        self.win.session.apply("keep_largest", f"Keep largest component ({BY_LABEL[lab].name})",
                               edits.keep_largest_component, lab)

    def fill_holes(self) -> None:
        if self.panel.target() == "segments":
            self.win.message("Fill holes works on the labels; choose Paint on: Labels.")
            return
        lab = self.panel.active_label()
        self.win.session.apply("fill_holes", f"Fill holes ({BY_LABEL[lab].name})", edits.fill_holes, lab)

    def undo(self) -> None:
        e = self.win.session.undo()
        if e is not None:
            self.win.message(f"Undone: {e.description}.")

    def redo(self) -> None:
        e = self.win.session.redo()
        if e is not None:
            self.win.message(f"Redone: {e.description}.")


# ------------------------------------------------------------------------------------------------
class SegmentController(TabController):
    """The Segment tab: finding models and devices, running a model off the GUI thread, cancelling."""

    def __init__(self, win: WindowServices, panel, parent=None) -> None:
        super().__init__(win, panel, parent)
        self.models_task = None
        self.segment_task = None
        self.label_map_dialog = None           # the last label-mapping dialog (tests drive it)
        from .model_extras import attach_to    # extra models, label maps, model sets (README "Getting real models")
        self.extras = attach_to(panel)
        self.extras.label_map_requested.connect(self.label_map_for_chosen_model)

    SIGNALS = (("run_requested", "run"), ("cancel_requested", "cancel"))

    def on_session(self, kind: str, data) -> None:
        if kind == "case":
            self.panel.set_progress("", 0)      # the last case's result message is not this case's
        elif kind == "labels" and data.step is not None and data.step.kind == "segmentation":
            # the Segment tab's "Segmented with ..." no longer describes the labels shown
            if data.how == "undo":
                self.panel.set_progress(f"Undone: {data.step.description}; the labels before it are back.", 0)
            elif data.how == "redo":
                self.panel.set_progress(f"Redone: {data.step.description}; its labels are back.", 100)

    def populate(self, closing: bool = False) -> None:
        """Find models and devices in the background: both import torch (seconds). Runs once."""
        if self.models_task is not None or closing:
            return
        self.panel.set_searching()
        task = self.win.runner.start("models", _find_models_and_devices, progress=False)
        task.succeeded.connect(self._on_models)
        task.failed.connect(lambda msg, exc: self.panel.set_message(msg, error=True))
        self.models_task = task

    def refresh(self) -> None:
        if self.models_task is not None and not self.models_task.finished:
            return
        self.models_task = None
        self.populate()

    def install(self, path, overwrite: bool = False, label_map=None):
        """Validate and install an nnU-Net model zip (engine.models) in the background, then list it. A zip
        refused because its name is taken offers to replace it; one refused because none of its labels is
        known offers the label-mapping dialog."""
        from engine.models import install_model_zip

        task = self.win.runner.start("install", install_model_zip, str(path), progress=False, overwrite=overwrite,
                                     label_map=label_map)
        self.win.track_task(task, "Installing model")
        task.succeeded.connect(lambda model: (self.win.message(f"Model {model.headline()} installed."),
                                              self.refresh()))
        task.failed.connect(lambda msg, exc: self._install_failed(path, msg, overwrite, label_map))
        return task

    def _install_failed(self, path, msg: str, overwrite: bool, label_map) -> None:
        from .model_extras import unknown_labels_error

        if not overwrite and "already installed" in msg and self.ask_yes_no("Replace the installed model?", msg):
            self.install(path, overwrite=True, label_map=label_map)
            return
        if unknown_labels_error(msg):
            from engine.models import zip_model_labels

            lm = self.ask_label_map(str(path), zip_model_labels(path), label_map)
            if lm:
                self.install(path, overwrite=overwrite, label_map=lm)
                return
        self.win.message(msg, error=True)
        self.win.show_error("Model not installed", msg)

    def install_folder(self, folder):
        """Install every model zip in a folder in the background, then list them and say what failed."""
        from engine.models import install_model_folder

        task = self.win.runner.start("install", install_model_folder, str(folder), progress=False)
        self.win.track_task(task, "Installing models")

        def done(result):
            ok, failed = result
            msg = f"{len(ok)} model(s) installed from {folder}."
            if failed:
                msg += " Not installed: " + "; ".join(f"{z.name}: {why}" for z, why in failed)
            self.win.message(msg, error=bool(failed))
            self.refresh()

        task.succeeded.connect(done)
        task.failed.connect(lambda msg, exc: (self.win.message(msg, error=True),
                                              self.win.show_error("Models not installed", msg)))
        return task

    def ask_yes_no(self, title: str, text: str) -> bool:
        import os

        from PySide6.QtWidgets import QMessageBox
        if os.environ.get("LIVERPLAN_NO_DIALOGS"):
            return False
        return QMessageBox.question(self.panel.window(), title, text) == QMessageBox.Yes

    def ask_label_map(self, model_name: str, labels: dict, current=None):
        """The label-mapping dialog (gui/label_map_dialog.py); the map chosen, or None when cancelled."""
        import os

        from .label_map_dialog import LabelMapDialog

        dlg = LabelMapDialog(model_name, labels, current, self.panel.window())
        self.label_map_dialog = dlg
        if os.environ.get("LIVERPLAN_NO_DIALOGS"):
            return None
        return dlg.label_map() if dlg.exec() else None

    def label_map_for_chosen_model(self) -> None:
        m = self.panel.current_model()
        if m is None or not hasattr(m, "card"):
            return
        lm = self.ask_label_map(m.display_name, dict(m.card.labels), self.extras.label_map_for(m))
        if lm is not None:
            self.extras.set_label_map(m, lm)

    def _on_models(self, found) -> None:
        models, pre, devices, skipped = found
        # a refresh (a model installed, a folder copied in) keeps the user's choice of model and device
        chosen = self.panel.current_model()
        device = self.panel.device_name()
        from engine.models import available_model_sets
        sets = available_model_sets(models)
        if chosen is not None and hasattr(chosen, "path"):
            pre = next((m for m in models if Path(m.path) == Path(chosen.path)), pre)
        elif chosen is not None:         # a model set: the same set again
            pre = next((e for e in sets if e.name == chosen.name), pre)
        self.panel.set_models(models + sets, preselect=pre)
        self.extras.set_models(models)
        self.panel.set_devices(devices)
        self.panel.set_device_name(device)
        # a model the user installed by copying a folder and that is not offered: say why (and keep saying it
        # when another case opens)
        lines = [f"{folder}: {reason}" for folder, reason in skipped]
        self.panel.standing_note = (
            f"{len(skipped)} model folder{'s' if len(skipped) > 1 else ''} could not be used:\n" + "\n".join(lines)
            if skipped else "")
        if skipped:
            self.panel.set_message(self.panel.standing_note, error=True)

    #: False once the user ticked "Don't ask again this session" in the question before a run
    ask_before_replacing = True

    def confirm_replace(self) -> bool:
        """Ask before a run replaces edited or unsaved labels (engine.replace_guard); True: go on."""
        from engine.replace_guard import replace_question

        from .questions import ask_replace_labels
        text = replace_question(self.win.session)
        if text is None or not SegmentController.ask_before_replacing:
            return True
        go, dont_ask = ask_replace_labels(self.win, text)
        if go and dont_ask:
            SegmentController.ask_before_replacing = False
        if not go:
            self.panel.set_message("Segmentation not run: the labels shown are kept.")
        return go

    def run(self, model=None) -> None:
        s = self.win.session
        if s.case is None or self.win.runner.running("segment"):
            return
        model = model or self.panel.current_model()
        if model is None:
            self.panel.set_message("Choose a model first.", error=True)
            return
        from engine.errors import LiverPlanError
        try:
            target, parts, shown_name = self.extras.run_target(model)   # extras, label maps, sets
        except LiverPlanError as err:
            self.panel.set_message(str(err), error=True)
            return
        if not self.confirm_replace():
            return
        device, mode = self.panel.device_name(), self.panel.mode_name()
        case = s.case
        eta = EtaEstimator()
        self.panel.set_running(True)
        self.panel.set_progress(f"Starting {shown_name} on {device}…", 0)
        review = getattr(self.win, "review", None)      # the Review tab's "keep the uncertainty" (None: default)
        task = self.win.runner.start("segment", run_model, case, target, device=device, mode=mode,
                                     uncertainty=review.keep_uncertainty if review is not None else None)
        self.segment_task = task

        def on_progress(stage, done, total):
            pct = int(100 * done / total) if total > 0 else 0
            left = EtaEstimator.format(eta.update(stage, done, total))
            self.panel.set_progress(f"{stage}: {pct}%" + (f" — {left}" if left else ""), pct)

        def ok(result):
            self.panel.set_running(False)
            if case is not s.case:
                return
            shown = shown_name
            if hasattr(model, "path") and sum(getattr(m, "name", None) == model.name for m in self.panel.models()) > 1:
                from engine.models import installed_name
                shown = f"{model.name}, {installed_name(model.path)}"    # two models with one card name
            e, kept = s.apply_segmentation(result, parts, shown_name=shown)
            secs = (getattr(result, "timings", None) or {}).get("total", 0.0)
            msg = f"Segmented with {shown} on {getattr(result, 'device_used', device)}"
            msg += f" in {secs:.1f} s." if secs else "."
            if e is None:
                msg += " The result equals the current labels."
            if kept:
                names = ", ".join(BY_LABEL[lab].name for lab in kept)
                msg += (f" This model does not segment {names}: the labels you had for "
                        f"{'it' if len(kept) == 1 else 'them'} were kept (Undo restores the state before).")
            warns = list(getattr(result, "warnings", []) or [])
            if warns:
                msg += " " + " ".join(warns)
            self.panel.set_progress(msg, 100)

        def failed(msg, exc):
            self.panel.set_running(False)
            self.panel.set_message(msg + " The case is unchanged.", error=True)

        def cancelled():
            self.panel.set_running(False)
            self.panel.set_message("Segmentation cancelled; the case is unchanged.")

        task.progress.connect(on_progress)
        task.succeeded.connect(ok)
        task.failed.connect(failed)
        task.cancelled.connect(cancelled)

    def cancel(self) -> None:
        for t in self.win.runner.running("segment"):
            t.cancel()
        self.panel.set_cancelling()


# ------------------------------------------------------------------------------------------------
class EvaluateController(TabController):
    """The Evaluate tab: the reference, the metric suite off the GUI thread, the table and its CSV."""

    SIGNALS = (("load_reference", "load_reference_dialog"), ("run_requested", "run"), ("export_csv", "export_dialog"),
               ("view_changed", "show"), ("export_report", "export_report_dialog"))

    def on_session(self, kind: str, data) -> None:
        if kind == "case":
            self.panel.clear_results()
        elif kind == "reference":
            self.panel.set_reference_name(data)
        elif kind == "evaluation_stale":
            self.panel.set_status("The labels have changed since this evaluation; press Evaluate again to "
                                  "score the labels shown.")

    def _mapping(self):
        key = self.panel.convention_key()
        if key == "liverplan":
            return None
        from engine.labelmap import LabelMapping
        if key == "file":
            p, _ = QFileDialog.getOpenFileName(self.win, "Label mapping file", "", "JSON (*.json)")
            return LabelMapping.load(p) if p else None
        return LabelMapping.preset(key)

    def load_reference_dialog(self) -> None:
        if self.win.session.case is None:
            return
        p = QFileDialog.getExistingDirectory(self.win, "Reference: folder of masks (Cancel to pick a file)") \
            if self.panel.convention_key() == "ircadb" else None
        if not p:
            p, _ = QFileDialog.getOpenFileName(self.win, "Reference label map", "", LABEL_FILTER)
        if p:
            self.load_reference(p, self._mapping())

    def load_reference(self, path, mapping=None) -> None:
        from engine.evaluation import read_reference

        s = self.win.session
        # structures a mask folder or a segmentation file does not annotate are "not in reference" (the
        # mapping that says so comes back with the labels, read in the background)
        task = self.win.runner.start("reference", read_reference, str(path), s.case, mapping, progress=False)
        self.win.track_task(task, "Reading reference")
        task.succeeded.connect(lambda res: s.set_reference(np.asarray(res[0], np.uint8), Path(path).name, res[1]))
        task.failed.connect(lambda msg, exc: (self.panel.set_status(msg), self.win.message(msg, error=True)))

    def run(self) -> None:
        s = self.win.session
        job = s.evaluation_job()
        if job is None:
            return
        fn, args = job
        self.panel.set_running(True)
        task = self.win.runner.start("evaluate", fn, *args)
        self.win.track_task(task, "Evaluating")
        name = s.reference_name

        def ok(result):
            self.panel.set_running(False)
            s.set_evaluation(result)
            self.show()
            if not s.evaluation_stale:      # else it says the labels changed while it ran
                self.panel.set_status(f"Evaluated against {name}.")

        def failed(msg, exc):
            self.panel.set_running(False)
            self.panel.set_status(msg)

        task.succeeded.connect(ok)
        task.failed.connect(failed)
        task.cancelled.connect(lambda: self.panel.set_running(False))

    def show(self) -> None:
        """The evaluation table as the panel asks: the study's metrics (default) or every metric."""
        from engine.evaluation import evaluation_table

        ev = self.win.session.evaluation
        if ev is None:
            return
        self.panel.set_table(*evaluation_table(ev, study_only=self.panel.study_only()))

    def export_dialog(self) -> None:
        if self.win.session.evaluation is None:
            return
        p, _ = QFileDialog.getSaveFileName(self.win, "Export evaluation", "evaluation.csv", "CSV (*.csv)")
        if p:
            self.export(p)

    def export(self, path):
        """The evaluation table as CSV (metric rows x structure columns), and beside it each lesion's status
        (engine.review.errors.write_evaluation_exports), written atomically."""
        from engine.evaluation import evaluation_csv
        from engine.review.errors import write_evaluation_exports

        s = self.win.session
        labels = s.evaluated_labels if s.evaluated_labels is not None else s.case.labels.copy()
        return self.win.run_export("Evaluation", write_evaluation_exports, str(path), evaluation_csv(s.evaluation),
                                   labels, s.reference, s.case.geometry, s.reference_mapping, overwrite=True)


    def export_report_dialog(self) -> None:
        if self.win.session.evaluation is None:
            self.panel.set_status("Evaluate first: the report shows an evaluation.")
            return
        p = QFileDialog.getExistingDirectory(self.win, "Folder for the metric report (HTML + PDF)")
        if p:
            self.export_report(p)

    def export_report(self, folder, overwrite: bool = False):
        """Write the evaluation's metric report (engine.metric_report) into ``folder`` in the background;
        returns the task."""
        from engine.metric_report import write_case_report

        s = self.win.session
        name = s.case.name if getattr(s.case, "name", "") else "case"
        pred = s.evaluated_labels if s.evaluated_labels is not None else s.case.labels.copy()
        task = self.win.runner.start("report", write_case_report, s.evaluation, pred, s.reference,
                                     s.case.geometry, str(folder), case_name=name,
                                     ref_mapping=s.reference_mapping, reference_name=s.reference_name or "",
                                     label_source=str(s.case.provenance.label_source or ""), overwrite=overwrite)
        self.win.track_task(task, "Writing the metric report")
        self.panel.set_status("Writing the metric report…")
        task.succeeded.connect(lambda paths: self.panel.set_status(
            "Report written: " + ", ".join(str(x) for x in paths)))
        task.failed.connect(lambda msg, exc: (self.panel.set_status(msg), self.win.message(msg, error=True)))
        return task


__all__ = ["TabController", "StructuresController", "MeasureController", "CorrectController", "SegmentController",
           "EvaluateController", "WindowServices"]
