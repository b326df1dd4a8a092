"""The LiverPlan main window: linked axial/coronal/sagittal panes and a 3D pane, side panels for
structures, segmentation, measurements, hand correction and evaluation.

The window mirrors the open case, engine.case_session.CaseSession (docs/architecture.md): it keeps the
menus, the dock of tabs, the layout and the status bar, routes the session's events to the panes, and
runs the session's long work (derived refresh, saves, autosaves) through gui.workers, the one module
that owns threads. Each tab has a controller (gui.controllers) registered in :data:`TABS`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QGridLayout, QLabel, QMainWindow,
                               QMessageBox, QProgressBar, QPushButton, QTabWidget, QWidget)

from engine.case import Case
from engine.case_session import CaseSession
from engine.errors import ExportError
from engine.io.atomic import atomic_path
from engine.labels import ALL_STRUCTURES, BY_LABEL
from engine.session import EtaEstimator, RecentCases

from .controllers import (CorrectController, EvaluateController, MeasureController,
                          SegmentController, StructuresController)
from .dialogs import SeriesPicker
from .files import CaseFiles
from .menus import WINDOW_PRESETS, build_menus
from .panels import EvaluatePanel, MeasurePanel, SegmentPanel, StructuresPanel, ToolsPanel
from .slice_view import SliceView
from .workers import TaskRunner

log = logging.getLogger(__name__)

#: The side tabs, in order, in one place: (window attribute of the panel, tab title, panel class,
#: controller class or None, window attribute of the controller).
TABS = (("structures", "Structures", StructuresPanel, StructuresController, "structures_ctl"),
        ("segment_panel", "Segment", SegmentPanel, SegmentController, "segment_ctl"),
        ("measure_panel", "Measure", MeasurePanel, MeasureController, "measure_ctl"),
        ("tools", "Correct", ToolsPanel, CorrectController, "correct_ctl"),
        ("evaluate_panel", "Evaluate", EvaluatePanel, EvaluateController, "evaluate_ctl"))
#: Seconds before a failed autosave is tried again.
AUTOSAVE_RETRY_S = 5.0

__all__ = ["MainWindow", "SeriesPicker", "TABS", "WINDOW_PRESETS", "label_lut"]


def label_lut(visible: dict[int, bool]) -> np.ndarray:
    """256 x 4 RGBA table for the overlay: the study's colours, alpha 0 for background and hidden ones."""
    lut = np.zeros((256, 4), np.uint8)
    for s in ALL_STRUCTURES:
        if visible.get(s.label, True):
            lut[s.label] = (*s.color, 255)
    return lut


class MainWindow(QMainWindow):
    def __init__(self, with_3d: bool = True, defer_3d: bool = False) -> None:
        super().__init__()
        self.setWindowTitle("LiverPlan")
        self.resize(1500, 950)
        self.setAcceptDrops(True)
        self.runner = TaskRunner(self)
        self.session = CaseSession()
        self.pos = [0, 0, 0]
        self.level, self.window_width = WINDOW_PRESETS["abdomen"]
        self.visible2d = {s.label: True for s in ALL_STRUCTURES}
        self.recent = RecentCases()
        self.layout_mode = "grid"
        self.last_error = ""
        self._closing = False
        self._models_after_refresh = False   # start the model search when the first refresh is done
        self._problem_shown = False             # one dialog per run of failures, the status bar always
        self._status_tasks: list = []
        self.files = CaseFiles(self, self)

        # --- panes ------------------------------------------------------------------------
        self.views = [SliceView(a) for a in range(3)]
        self.view3d = None
        central = QWidget()
        self.grid = QGridLayout(central)
        self.grid.setContentsMargins(2, 2, 2, 2)
        self.grid.setSpacing(2)
        self.grid.addWidget(self.views[0], 0, 0)
        self.grid.addWidget(self.views[2], 0, 1)
        self.grid.addWidget(self.views[1], 1, 0)
        self._3d_placeholder = QLabel("3D view loading…" if with_3d else "3D view disabled")
        self._3d_placeholder.setAlignment(Qt.AlignCenter)
        self._3d_placeholder.setStyleSheet("background: black; color: #888888;")
        self.grid.addWidget(self._3d_placeholder, 1, 1)
        self.setCentralWidget(central)
        for v in self.views:
            v.mouse_action.connect(self.on_mouse)
            v.slice_changed.connect(self._on_slice_changed)
            v.window_changed.connect(self.set_window)

        # --- the session first hears the window (views, title), then the tabs -----------------
        self.session.listen(self._on_session)
        self.tabs = QTabWidget()
        for attr, title, panel_cls, ctl_cls, ctl_attr in TABS:
            panel = panel_cls()
            setattr(self, attr, panel)
            self.tabs.addTab(panel, title)
            if ctl_cls is not None:
                setattr(self, ctl_attr, ctl_cls(self, panel, self))
        from .plan_panel import PlanPanel      # the Plan tab (README "Planning"): it reads the window's public parts
        self.plan_panel = PlanPanel(self)
        self.tabs.addTab(self.plan_panel, "Plan")
        from .review_overlays import ReviewOverlays   # the Review tab (README "Errors and uncertainty")
        self.review = ReviewOverlays(self)
        dock = QDockWidget("Case", self)
        dock.setObjectName("side_panel")
        dock.setWidget(self.tabs)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        dock.setMinimumWidth(430)
        dock.setMaximumWidth(520)
        self.addDockWidget(Qt.RightDockWidgetArea, dock)
        self.resizeDocks([dock], [450], Qt.Horizontal)

        self.structures.visible2d_changed.connect(self._on_visible2d)
        self.structures.visible3d_changed.connect(
            lambda lab, on: self.view3d and self.view3d.set_structure_visible(lab, on))
        self.structures.opacity3d_changed.connect(
            lambda lab, a: self.view3d and self.view3d.set_structure_opacity(lab, a))
        self.structures.overlay_opacity_changed.connect(
            lambda a: [v.set_overlay_opacity(a) for v in self.views])
        self.tools.tool_changed.connect(self._on_tool_changed)
        self.tools.brush_changed.connect(self._on_tool_changed)

        # --- status bar -------------------------------------------------------------------
        self.status_text = QLabel("")
        self.cursor_text = QLabel("")
        self.cursor_text.setMinimumWidth(330)
        self.task_progress = QProgressBar()
        self.task_progress.setMaximumWidth(220)
        self.task_progress.setVisible(False)
        self.statusBar().addWidget(self.status_text, 1)
        self.statusBar().addPermanentWidget(self.cursor_text)
        self.task_cancel = QPushButton("Cancel")
        self.task_cancel.setVisible(False)
        self.task_cancel.clicked.connect(self.cancel_background_work)
        self.statusBar().addPermanentWidget(self.task_progress)
        self.statusBar().addPermanentWidget(self.task_cancel)

        from . import display, help as first_help
        display.install(self)              # outline, legends, next/previous lesion, ruler/angle (self.display)
        build_menus(self)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.timeout.connect(self._start_refresh)
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setInterval(int(os.environ.get("LIVERPLAN_AUTOSAVE_MS", "20000")))
        self.autosave_timer.timeout.connect(self.autosave)
        self.autosave_timer.start()
        self._retry_timer = QTimer(self)
        self._retry_timer.setSingleShot(True)
        self._retry_timer.setInterval(int(AUTOSAVE_RETRY_S * 1000))
        self._retry_timer.timeout.connect(self.autosave)
        self.set_window(self.level, self.window_width)
        self._update_lut()
        if with_3d and not defer_3d:
            self._create_3d()
        elif with_3d:
            # pyvista/VTK take a second or two to import: the window is shown first, the 3D pane follows.
            QTimer.singleShot(250, self._create_3d)
        # After the first case is on screen (or 15 s at the latest): the search imports torch, which would
        # otherwise compete with start-up and with loading the case.
        QTimer.singleShot(15000, self._populate_models)
        first_help.install(self)           # the first-run hint (Help > Getting started shows it again)

    # ============================================================================ the session, mirrored
    @property
    def case(self) -> Optional[Case]:
        return self.session.case

    @property
    def history(self):
        return self.session.history

    @property
    def report(self):
        return self.session.report

    @property
    def models_task(self):
        return self.segment_ctl.models_task

    def is_idle(self) -> bool:
        """No background work running or due: the numbers and surfaces shown match the labels."""
        return not self.runner.running() and not self._refresh_timer.isActive() and self.session.is_idle()

    def _on_session(self, kind: str, data) -> None:
        if kind == "case":
            self._show_case(data)
        elif kind == "labels":
            for v in self.views:
                v.refresh_labels()
            self.plan_panel.labels_changed(data.box)   # the planning follows the edit (only what it touched)
            self._update_readout()          # the crosshair voxel may have changed structure
            self._update_undo_actions()
            self.update_title()
            if data.step is not None:
                # the refresh works on the edited box only: start it now; whatever is still running picks
                # up the rest when it ends
                self._refresh_timer.stop()
                self._start_refresh()
                if not self.session.journal_ok and self.session.needs_autosave:
                    self.autosave()         # the journal has no base (after a save, or a failure): now
        elif kind == "planning":
            self._update_undo_actions()     # a plan step is undone with Ctrl+Z like a label edit
            self.update_title()
        elif kind == "surfaces":
            if self.view3d is not None:
                self.view3d.set_surfaces(data)
        elif kind == "message":
            self.message(data)
        elif kind == "problem":
            self.message(data, error=True)
            if not self._problem_shown:
                self._problem_shown = True
                # after the step that met it has ended (a modal box inside it would run events mid-step)
                QTimer.singleShot(0, lambda: self.show_error("Your edits are not being saved", data))
            if not self._closing:
                self._retry_timer.start()
        elif kind == "autosaved":
            self._problem_shown = False
        elif kind == "saved":
            self.update_title()

    def _show_case(self, case: Case) -> None:
        self.plan_panel.set_case(case)              # the last case's planning is not this case's
        self.pos = [n // 2 for n in case.image.shape]
        for v in self.views:
            v.set_volume(case.image, case.labels, case.geometry, self.pos)
            v.set_window(self.level, self.window_width)
            v.set_highlight(None)
        if self.view3d is not None:
            self.view3d.clear()
        self._update_undo_actions()
        self._refresh_timer.stop()
        self._start_refresh()

    # ============================================================================ 3D pane, menus
    def _create_3d(self) -> None:
        if self.view3d is not None or self._closing:
            return
        from .view3d import View3D

        self.view3d = View3D()
        self.grid.replaceWidget(self._3d_placeholder, self.view3d)
        self._3d_placeholder.deleteLater()
        for lab, on in self.structures.visible3d().items():
            self.view3d.set_structure_visible(lab, on)
        for lab, a in self.structures.opacities3d().items():
            self.view3d.set_structure_opacity(lab, a)
        self.view3d.setVisible(self.layout_mode in ("grid", "3d"))
        self.view3d.point_picked.connect(self._on_3d_pick)
        self.session.derived.want_meshes(True)
        if self.case is not None:
            self._refresh_timer.start(0)

    # ============================================================================ layout / window
    def set_layout(self, mode: str) -> None:
        self.layout_mode = mode
        widgets = {"axial": self.views[0], "coronal": self.views[1], "sagittal": self.views[2],
                   "3d": self.view3d}
        for key, w in widgets.items():
            if w is not None:
                w.setVisible(mode == "grid" or mode == key)

    def set_window(self, level: float, width: float) -> None:
        """CT window level and width (HU) of every pane (and of the CT plane in 3D)."""
        self.level, self.window_width = float(level), max(float(width), 1.0)
        for v in self.views:
            v.set_window(self.level, self.window_width)
        if self.view3d is not None and self.view3d.show_plane and self.case is not None:
            self.view3d.set_plane(self.case.image, self.case.geometry, self.pos[0], self.level, self.window_width)

    def toggle_plane(self) -> None:
        """Show or hide the axial CT plane in the 3D pane, as the View menu's check says."""
        if self.view3d is None:
            return
        self.view3d.show_plane = self.plane_action.isChecked()
        self.view3d.set_plane(self.case.image if self.case else None,
                              self.case.geometry if self.case else None, self.pos[0], self.level,
                              self.window_width)

    def _update_lut(self) -> None:
        lut = label_lut(self.visible2d)
        for v in self.views:
            v.set_lut(lut)

    def _on_visible2d(self, lab: int, on: bool) -> None:
        self.visible2d[lab] = on
        self._update_lut()

    def message(self, text: str, error: bool = False) -> None:
        """A sentence in the status bar (red for a problem; the whole text on hover)."""
        self.status_text.setStyleSheet("color: #d04040;" if error else "")
        self.status_text.setText(text)
        self.status_text.setToolTip(text)       # a long message is cut at the window's edge: whole on hover
        if error:
            self.last_error = text
            log.warning("%s", text)


    def update_title(self) -> None:
        name = self.case.name if self.case else ""
        mod = " *" if self.session.is_modified else ""
        self.setWindowTitle(f"LiverPlan — {name}{mod}" if name else "LiverPlan")

    def _update_undo_actions(self) -> None:
        # one Ctrl+Z order over the label edits and the case's plan (engine.case_session)
        u = self.session.undo_description
        r = self.session.redo_description
        self.undo_action.setText(f"Undo {u}" if u else "Undo")
        self.redo_action.setText(f"Redo {r}" if r else "Redo")
        self.undo_action.setEnabled(bool(u))
        self.redo_action.setEnabled(bool(r))

    # ============================================================================ services for the tabs
    def track_task(self, task, what: str, cancellable: bool = True) -> None:
        """Show a task's progress (and, unless an export, a Cancel) in the status bar."""
        eta = EtaEstimator()
        self.task_progress.setVisible(True)
        self.task_progress.setValue(0)
        self._status_tasks = [t for t in self._status_tasks if not t.finished]
        if cancellable:  # an export is not: its file would be written anyway
            self._status_tasks.append(task)
            self.task_cancel.setVisible(True)

        def on_progress(stage, done, total):
            pct = int(100 * done / total) if total > 0 else 0
            self.task_progress.setValue(pct)
            self.message(f"{what}: {stage} {pct}% {EtaEstimator.format(eta.update(stage, done, total))}")

        def on_done():
            if any(not t.finished for t in self._status_tasks if t is not task):
                return
            self.task_progress.setVisible(False)
            self.task_cancel.setVisible(False)
            if self.status_text.text().startswith(f"{what}:"):
                self.message("")

        task.progress.connect(on_progress)
        task.done.connect(on_done)

    def cancel_background_work(self) -> None:
        """The status bar's Cancel: stops opening, reading, evaluating or exporting (not segmentation,
        which has its own Cancel)."""
        for t in self._status_tasks:
            t.cancel()
        self.message("Cancelling…")

    def show_error(self, title: str, msg: str) -> None:
        if os.environ.get("LIVERPLAN_NO_DIALOGS"):
            return
        QMessageBox.warning(self, title, msg)

    def show_info(self, title: str, msg: str) -> None:
        if os.environ.get("LIVERPLAN_NO_DIALOGS"):
            return
        QMessageBox.information(self, title, msg)

    def highlight(self, box, marker=None, focus: bool = True) -> None:
        """Outline ``box`` (z0, z1, y0, y1, x0, x1) in every pane; ``marker`` = (LPS mm centre, radius mm)
        marks (and with ``focus`` centres) the 3D view on it; no box and no marker: nothing is marked."""
        for v in self.views:
            v.set_highlight(box)
        if self.view3d is None:
            return
        if marker is not None:
            self.view3d.set_marker(marker[0], marker[1])
            if focus:
                self.view3d.focus(marker[0])
        elif box is None:
            self.view3d.set_marker(None)

    def dragEnterEvent(self, ev):  # noqa: N802
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev):  # noqa: N802
        urls = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if not urls:
            return
        p = urls[0]
        if self.case is not None and (p.lower().endswith(".seg.nrrd") or self.files.ask_drop_as_labels(p)):
            self.open_labels(p)
        else:
            self.open_path(p)

    # ============================================================================ the case
    def set_case(self, case: Case) -> None:
        if self.files.pending_autosave_discard is not None:
            # the edits the user chose to discard go now that another case has really replaced them (not
            # when asked: an open that then fails keeps them on screen, and in the autosave)
            self.session.autosave_store.discard(*self.files.pending_autosave_discard)
            self.files.pending_autosave_discard = None
        self.session.open_case(case)
        self.set_position(self.pos)                 # the status bar's voxel readout, for this case
        self.update_title()
        warn = " ".join(case.provenance.warnings)
        self.message(f"{case.name}: {case.geometry.describe()}." + (f" Warning: {warn}" if warn else ""))
        self.files.offer_autosave()
        # The model search imports torch (seconds of CPU and of the interpreter lock): it starts once the
        # case's first measurements and surfaces are done (see _refresh_if_pending), not beside them
        # (measured on 512 x 512 x 300: it slowed the first surfaces by ~1-3 s on 2 cores).
        self._models_after_refresh = True

    def set_position(self, zyx) -> None:
        if self.case is None:
            return
        zyx = [int(min(max(v, 0), n - 1)) for v, n in zip(zyx, self.case.image.shape)]
        z_changed = zyx[0] != self.pos[0]
        self.pos = zyx
        for v in self.views:
            v.set_position(self.pos)
        self._update_readout()
        if z_changed and self.view3d is not None and self.view3d.show_plane:
            self.view3d.set_plane(self.case.image, self.case.geometry, self.pos[0], self.level, self.window_width)

    def _on_3d_pick(self, xyz) -> None:
        """A double click on a 3D surface (LPS mm) moves every pane there."""
        if self.case is not None:
            self.set_position([int(round(v)) for v in self.case.geometry.physical_to_index(xyz)])

    def _on_slice_changed(self, axis: int, index: int) -> None:
        p = list(self.pos)
        p[axis] = index
        self.set_position(p)

    def _update_readout(self) -> None:
        """The status bar's voxel readout (position, HU, structure) for the crosshair voxel."""
        if self.case is None:
            return
        z, y, x = self.pos
        hu = self.case.image[tuple(self.pos)]
        lab = int(self.case.labels[tuple(self.pos)])
        name = BY_LABEL[lab].name if lab in BY_LABEL else ("background" if lab == 0 else f"label {lab}")
        self.cursor_text.setText(f"voxel (x {x}, y {y}, z {z})  {float(hu):.0f} HU  {name}")

    # ============================================================================ edits (Correct tab)
    def _on_tool_changed(self, *_):
        r = self.correct_ctl.brush_radius_shown()
        for v in self.views:
            v.set_brush_radius(r)

    def on_mouse(self, kind: str, zyx, axis: int, modifiers) -> None:
        if self.case is None:
            return
        if self.display.annotations.handle_mouse(kind, zyx, axis):
            return                                  # a ruler or angle point (View > Measure)
        if not modifiers & Qt.ShiftModifier and self.plan_panel.handle_mouse(kind, zyx, axis):
            return                                  # the Plan tab ticks segments / paints a resection
        if not self.correct_ctl.on_mouse(kind, zyx, axis, modifiers):
            if kind in ("click", "press", "move"):
                self.set_position(zyx)
        elif self.session.stroke_active:
            for v in self.views:
                v.refresh_labels()

    def dab(self, zyx, axis: int) -> None:
        """One brush/eraser dab at voxel ``zyx`` in pane ``axis`` (part of the current stroke)."""
        self.correct_ctl.dab(zyx, axis)
        for v in self.views:
            v.refresh_labels()

    def apply_edit(self, description: str, op, *args, kind: str = "edit", **kwargs):
        """Run an engine.edits operation on the labels as one undo step."""
        return self.session.apply(kind, description, op, *args, **kwargs)

    def undo(self) -> None:
        self.correct_ctl.undo()

    def redo(self) -> None:
        self.correct_ctl.redo()

    def keep_largest_component(self) -> None:
        self.correct_ctl.keep_largest_component()

    def fill_holes(self) -> None:
        self.correct_ctl.fill_holes()

    def select_lesion(self, row: int) -> None:
        self.measure_ctl.select_lesion(row)

    # ============================================================================ measurements + 3D
    def _start_refresh(self) -> None:
        """Start the session's pending derived work (measurements, surfaces) on workers."""
        if self.case is None or self._closing:
            return
        for job in self.session.derived.next_jobs():
            what = "Measurements" if job.name == "measure" else "3D surfaces"
            t = self.runner.start(job.name, job.fn, *job.args, progress=False)
            t.succeeded.connect(job.finish)
            t.failed.connect(lambda msg, exc, j=job, w=what: (j.fail(msg), self.message(f"{w} failed: {msg}",
                                                                                         error=True)))
            t.cancelled.connect(lambda j=job: j.fail("cancelled"))
            t.done.connect(self._refresh_if_pending)

    def _refresh_if_pending(self) -> None:
        if self.session.derived.pending and not self._refresh_timer.isActive():
            self._refresh_timer.start(0)
        elif (self._models_after_refresh and not self.runner.running("measure")
              and not self.runner.running("mesh")):
            self._models_after_refresh = False
            QTimer.singleShot(0, self._populate_models)

    # ============================================================================ segmentation / evaluation
    def _populate_models(self) -> None:
        self.segment_ctl.populate(self._closing)

    def refresh_models(self) -> None:
        self.segment_ctl.refresh()

    def install_model_dialog(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Install model package", "", "Model package (*.zip)")
        if p:
            self.install_model(p)

    def install_model(self, path, overwrite: bool = False, label_map=None):
        return self.segment_ctl.install(path, overwrite=overwrite, label_map=label_map)

    def install_model_folder_dialog(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Folder of model zips (e.g. TotalSegmentator's release zips)")
        if p:
            self.install_model_folder(p)

    def install_model_folder(self, folder):
        return self.segment_ctl.install_folder(folder)

    def run_segmentation(self, model=None) -> None:
        self.segment_ctl.run(model)

    def cancel_segmentation(self) -> None:
        self.segment_ctl.cancel()

    def load_reference(self, path, mapping=None) -> None:
        self.evaluate_ctl.load_reference(path, mapping)

    def run_evaluation(self) -> None:
        self.evaluate_ctl.run()

    def export_evaluation(self, path):
        return self.evaluate_ctl.export(path)

    def export_report(self, folder, overwrite: bool = False):
        """The evaluation's metric report (HTML + PDF) into ``folder``; returns the task."""
        return self.evaluate_ctl.export_report(folder, overwrite=overwrite)

    # ============================================================================ files (gui.files)
    def open_demo(self) -> None:
        self.files.open_demo()

    def open_path(self, path, series: Optional[str] = None, labels: Optional[str] = None) -> None:
        """Load a CT file or DICOM folder off the GUI thread; ``labels`` is opened onto it afterwards."""
        self.files.open_path(path, series, labels)

    def open_labels(self, path) -> None:
        """Read a label map onto the open CT as one undoable step."""
        self.files.open_labels(path)

    def save_labels(self, ask: bool = False, mark: bool = True, path=None, then=None):
        """The one save routine (gui.files.CaseFiles.save_labels); returns its task or None."""
        return self.files.save_labels(ask=ask, mark=mark, path=path, then=then)

    def save_before(self, then: Optional[Callable[[], None]] = None) -> bool:
        """Save before closing or opening another case; ``then`` continues once written. False when the
        file dialog was cancelled (nothing started)."""
        return self.save_labels(then=then) is not None

    def export_meshes(self, path):
        return self.files.export_meshes(path)

    def export_measurements(self, path):
        return self.files.export_measurements(path)

    def autosave(self):
        """Write a snapshot of unsaved edits off the GUI thread (gui.files); returns the task or None."""
        return self.files.autosave()

    def run_export(self, what: str, fn, *args, where=None, **kwargs):
        """Write a file off the GUI thread; the status bar says where (``where``, else the first argument),
        or why not (and a box)."""
        task = self.runner.start("export", fn, *args, progress=False, **kwargs)
        self.track_task(task, f"Exporting {what.lower()}", cancellable=False)
        where = where if where is not None else args[0]
        task.succeeded.connect(lambda *_: self.message(f"{what} written to {where}."))
        task.failed.connect(lambda msg, exc: (self.message(msg, error=True), self.show_error("Export failed", msg)))
        return task

    def export_screenshot_dialog(self, pane: str) -> None:
        p, _ = QFileDialog.getSaveFileName(self, "Save screenshot", f"liverplan_{pane}.png", "PNG (*.png)")
        if p:
            self.export_screenshot(pane, p)

    def export_screenshot(self, pane: str, path) -> Path:
        """PNG of one pane (or the whole window), written atomically."""
        try:
            with atomic_path(path, overwrite=True) as tmp:
                if pane == "3d" and self.view3d is not None:
                    self.view3d.screenshot(str(tmp))
                else:
                    w = {"axial": self.views[0], "coronal": self.views[1], "sagittal": self.views[2]}.get(pane, self)
                    if not w.grab().save(str(tmp), "PNG"):
                        raise ExportError(f"The screenshot could not be written to {path}.")
        except ExportError as exc:
            self.message(str(exc), error=True)
            raise
        self.message(f"Screenshot written to {path}.")
        return Path(path)

    # ============================================================================ questions / close
    def ask_restore(self, entry) -> Optional[bool]:
        """True: restore, False: discard, None: no dialogs allowed (LIVERPLAN_NO_DIALOGS), keep them."""
        if os.environ.get("LIVERPLAN_NO_DIALOGS"):
            return None
        r = QMessageBox.question(self, "Restore unsaved edits?",
                                 f"LiverPlan found edits of {entry.case_name} that were not saved "
                                 f"(autosaved {entry.when()}). Restore them?",
                                 QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
        return r == QMessageBox.Yes

    def ask_unsaved(self, closing: str = "closing this case") -> str:
        """'save', 'discard' or 'cancel'."""
        name = self.case.name if self.case is not None else "this case"
        r = QMessageBox.question(self, "Unsaved changes",
                                 f"The labels or the plan of {name} have changes that are not saved. Save them before "
                                 f"{closing}?",
                                 QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save)
        return {QMessageBox.Save: "save", QMessageBox.Discard: "discard"}.get(r, "cancel")


    def closeEvent(self, ev):  # noqa: N802
        if self.session.is_modified and not self._closing:
            choice = self.ask_unsaved()
            if choice == "cancel":
                ev.ignore()
                return
            if choice == "save":
                ev.ignore()         # closed again once the save (off the GUI thread) succeeded
                self.save_before(then=self.close)
                return
            if choice == "discard":
                self.session.discard_autosave()
        self._closing = True
        from .help import window_closing
        window_closing(self)                # a first-run hint shown is a hint seen
        self.autosave_timer.stop()
        self._retry_timer.stop()
        self._refresh_timer.stop()
        self.runner.shutdown(grace_s=2.0)
        self.session.close()
        if self.view3d is not None:
            self.view3d.close_plotter()
        super().closeEvent(ev)
