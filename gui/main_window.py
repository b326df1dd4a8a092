"""The LiverPlan main window: linked axial/coronal/sagittal panes and a 3D pane, side panels for
structures, segmentation, measurements, hand correction and evaluation.

The window is the conductor: it keeps the open case and its edit history, routes mouse gestures to the
engine's edit operations, and starts every long job through gui.workers. All numbers come from engine/.
"""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QDockWidget, QFileDialog,
                               QGridLayout, QLabel, QMainWindow, QMessageBox, QProgressBar, QPushButton,
                               QTabWidget, QTableWidget, QVBoxLayout, QWidget, QAbstractItemView)

from engine import edits
from engine.case import Case
from engine.errors import ExportError
from engine.io.atomic import atomic_path
from engine.labels import BY_KEY, BY_LABEL, STRUCTURES
from engine.session import AutosaveStore, EtaEstimator, RecentCases

from .panels import (EvaluatePanel, MeasurePanel, SegmentPanel, StructuresPanel, ToolsPanel, _fmt, _item)
from .slice_view import SliceView
from .workers import TaskRunner

log = logging.getLogger(__name__)

WINDOW_PRESETS = {  # name: (level, width) HU
    "abdomen": (50.0, 400.0),
    "liver": (80.0, 180.0),
    "vessels": (150.0, 500.0),
}
PANES = ("axial", "coronal", "sagittal", "3d")
_COUNT_METRICS = frozenset({"betti0_error", "betti1_error", "betti2_error", "euler_error", "b0_pred", "b0_ref",
                            "b1_pred", "b1_ref", "b2_pred", "b2_ref", "euler_pred", "euler_ref",
                            "lesion_detected", "lesion_missed", "lesion_false"})
LABEL_FILTER = ("Label maps (*.nii.gz *.nii *.nrrd *.seg.nrrd *.mha *.mhd);;DICOM SEG (*.dcm);;All files (*)")
IMAGE_FILTER = ("CT images (*.nii.gz *.nii *.nrrd *.mha *.mhd *.dcm);;All files (*)")


def label_lut(visible: dict[int, bool]) -> np.ndarray:
    """256 x 4 RGBA table for the overlay: the study's colours, alpha 0 for background and hidden ones."""
    lut = np.zeros((256, 4), np.uint8)
    for s in STRUCTURES:
        if visible.get(s.label, True):
            lut[s.label] = (*s.color, 255)
    return lut


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


def _surfaces_for(case, surfaces: dict, jobs: dict) -> tuple[dict, dict]:
    """Bring the 3D surfaces of ``case`` up to date (worker thread). ``surfaces``: label ->
    engine.mesh.BlockSurface kept between edits; ``jobs``: label -> changed box (z0, z1, y0, y1, x0, x1),
    or None to build that structure anew. Only the blocks an edit touched are re-meshed.
    Returns (the updated BlockSurface dict, label -> merged surface or None)."""
    from engine.mesh import BlockSurface, display_pool, structure_boxes

    surfaces = dict(surfaces)
    out = {}
    fresh = [lab for lab, box in jobs.items()
             if box is None or surfaces.get(lab) is None or surfaces[lab].labels is not case.labels]
    # One pass over the volume finds where every structure to build is (not one pass each).
    boxes = structure_boxes(case.labels, fresh) if fresh else {}
    for lab, box in sorted(jobs.items()):
        if lab in fresh:
            # The liver of a fine grid is meshed on a pooled display grid (fewer triangles to draw).
            bs = surfaces[lab] = BlockSurface(case.labels, case.geometry, lab,
                                              pool=display_pool(case.geometry, lab))
            out[lab] = bs.build(boxes.get(lab))
        else:
            out[lab] = surfaces[lab].update(box)
    return surfaces, out


def _measure_for(case, measurer, box):
    """Measurements of ``case`` (worker thread): a full pass that sets up an
    engine.measure.IncrementalMeasurer when there is none yet, else an update from the changed ``box``
    (None = anywhere). Returns (measurer, report); the report equals engine.measure.measure(case)."""
    from engine.measure import IncrementalMeasurer

    if measurer is None or measurer.live is not case.labels:
        measurer = IncrementalMeasurer(case)
        return measurer, measurer.report
    return measurer, measurer.update(box)


def _union(a, b):
    """Union of two boxes where None means "everywhere" (absorbs)."""
    if a is None or b is None:
        return None
    return edits.box_union(a, b)


def _write_case_meshes(out_dir, labels, geometry, fmt: str, prefix: str):
    from engine.mesh import label_surfaces, write_meshes

    return write_meshes(label_surfaces(labels, geometry), out_dir, formats=(fmt,), prefix=prefix,
                        overwrite=True)


class SeriesPicker(QDialog):
    """Choose one series of a DICOM folder (the portal-venous guess preselected)."""

    COLS = ("Modality", "Description", "Slices", "Spacing (mm, x × y × z)", "Phase guess", "Problem")

    def __init__(self, series, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose a CT series")
        self.series = list(series)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("This folder holds several series. Choose the portal-venous CT:"))
        self.table = QTableWidget(len(self.series), len(self.COLS))
        self.table.setHorizontalHeaderLabels(self.COLS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        pre = 0
        for r, s in enumerate(self.series):
            sp = "—" if not s.spacing else " × ".join(f"{v:.2f}" for v in s.spacing[::-1])
            vals = (s.modality, s.description, str(s.n_slices), sp, s.phase_guess, s.problem or "")
            for c, v in enumerate(vals):
                self.table.setItem(r, c, _item(str(v)))
            if s.phase_guess == "portal" and s.usable:
                pre = r
        self.table.resizeColumnsToContents()
        if self.series:
            self.table.selectRow(pre)
        lay.addWidget(self.table)
        bb = QDialogButtonBox(QDialogButtonBox.Open | QDialogButtonBox.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)
        self.resize(820, 320)

    def chosen_key(self) -> Optional[str]:
        rows = {i.row() for i in self.table.selectedItems()}
        return self.series[min(rows)].key if rows else None


class MainWindow(QMainWindow):
    def __init__(self, with_3d: bool = True, defer_3d: bool = False) -> None:
        super().__init__()
        self.setWindowTitle("LiverPlan")
        self.resize(1500, 950)
        self.setAcceptDrops(True)
        self.runner = TaskRunner(self)
        self.case: Optional[Case] = None
        self.history: Optional[edits.EditHistory] = None
        self.report = None
        self.reference: Optional[np.ndarray] = None
        self.reference_name = ""
        self.reference_mapping = None
        self.evaluation: Optional[dict] = None
        self.pos = [0, 0, 0]
        self.level, self.width = WINDOW_PRESETS["abdomen"]
        self.visible2d = {s.label: True for s in STRUCTURES}
        self.selected_lesion: Optional[int] = None
        self._stroke: Optional[edits.Stroke] = None
        self._last_dab = None
        self._pending_mesh: set[int] = set()
        self._mesh_boxes: dict[int, Optional[tuple]] = {}   # label -> changed box since last mesh (None: all)
        self._block_surfaces: dict = {}                     # label -> engine.mesh.BlockSurface of self.case
        self._measurer = None                               # engine.measure.IncrementalMeasurer of self.case
        self._measure_box: Optional[tuple] = None            # changed box since the last measurement
        self._counts: dict[int, int] = {}
        self._totals_text = ""
        self._pending_measure = False
        self._models_after_refresh = False   # start the model search when the first refresh is done
        self._autosaved_state = None
        self._pending_autosave_discard = None   # (key, shape) of edits the user discarded for a case not yet open
        self.autosave_store = AutosaveStore()
        self.recent = RecentCases()
        self.last_save_path: Optional[Path] = None
        self.layout_mode = "grid"
        self._closing = False
        self.segment_task = None
        self.models_task = None
        self.last_error = ""
        # Per state of the undo history, so that it follows the labels through Undo and Redo: what an opened
        # label map merges or leaves out ("notes": kept through edits on top of it, ended where the labels are
        # replaced) and what made the labels ("origin": source, model card, edited by hand).
        self._state_info: dict[int, dict] = {}
        self._incoming_notes: Optional[list[str]] = None

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
            v.mouse_action.connect(self._on_mouse)
            v.slice_changed.connect(self._on_slice_changed)
            v.window_changed.connect(self.set_window)

        # --- panels -----------------------------------------------------------------------
        self.structures = StructuresPanel()
        self.segment_panel = SegmentPanel()
        self.measure_panel = MeasurePanel()
        self.tools = ToolsPanel()
        self.evaluate_panel = EvaluatePanel()
        self.tabs = QTabWidget()
        for w, name in ((self.structures, "Structures"), (self.segment_panel, "Segment"),
                        (self.measure_panel, "Measure"), (self.tools, "Correct"),
                        (self.evaluate_panel, "Evaluate")):
            self.tabs.addTab(w, name)
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
        self.segment_panel.run_requested.connect(self.run_segmentation)
        self.segment_panel.cancel_requested.connect(self.cancel_segmentation)
        self.measure_panel.lesion_selected.connect(self.select_lesion)
        self.tools.tool_changed.connect(self._on_tool_changed)
        self.tools.brush_changed.connect(self._on_tool_changed)
        self.tools.keep_largest.connect(self.keep_largest_component)
        self.tools.fill_holes.connect(self.fill_holes)
        self.tools.undo.connect(self.undo)
        self.tools.redo.connect(self.redo)
        self.evaluate_panel.load_reference.connect(self._load_reference_dialog)
        self.evaluate_panel.run_requested.connect(self.run_evaluation)
        self.evaluate_panel.export_csv.connect(self._export_evaluation_dialog)
        self.evaluate_panel.view_changed.connect(self._show_evaluation)

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

        self._build_menus()
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.timeout.connect(self._start_refresh)
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setInterval(int(os.environ.get("LIVERPLAN_AUTOSAVE_MS", "20000")))
        self.autosave_timer.timeout.connect(self.autosave)
        self.autosave_timer.start()
        self.set_window(self.level, self.width)
        self._update_lut()
        if with_3d and not defer_3d:
            self._create_3d()
        elif with_3d:
            # pyvista/VTK take a second or two to import: the window is shown first, the 3D pane follows.
            QTimer.singleShot(250, self._create_3d)
        # After the first case is on screen (or 15 s at the latest): the search imports torch, which would
        # otherwise compete with start-up and with loading the case.
        QTimer.singleShot(15000, self._populate_models)

    def _create_3d(self) -> None:
        if self.view3d is not None or self._closing:
            return
        from .view3d import View3D

        self.view3d = View3D()
        self.grid.replaceWidget(self._3d_placeholder, self.view3d)
        self._3d_placeholder.deleteLater()
        for lab, cb in self.structures.check3d.items():
            self.view3d.set_structure_visible(lab, cb.isChecked())
        for lab, sp in self.structures.opacity.items():
            self.view3d.set_structure_opacity(lab, sp.value() / 100.0)
        self.view3d.setVisible(self.layout_mode in ("grid", "3d"))
        self.view3d.point_picked.connect(self._on_3d_pick)
        if self.case is not None:
            self._pending_mesh |= set(BY_LABEL)
            self._mesh_boxes.update({lab: None for lab in BY_LABEL})
            self._refresh_timer.start(0)

    # ============================================================================ menus
    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._act(f, "&Open image…", self._open_dialog, QKeySequence.Open)
        self._act(f, "Open &DICOM folder…", self._open_dicom_dialog, "Ctrl+Shift+O")
        self._act(f, "Open &label map onto this CT…", self._open_labels_dialog, "Ctrl+L")
        self._act(f, "Open demo case", self.open_demo)
        self.recent_menu = f.addMenu("Recent cases")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        f.addSeparator()
        self._act(f, "&Save labels", self.save_labels, QKeySequence.Save)
        self._act(f, "Save labels &as…", lambda: self.save_labels(ask=True), "Ctrl+Shift+S")
        ex = f.addMenu("&Export")
        self._act(ex, "Label map (NIfTI, NRRD, .seg.nrrd)…", lambda: self.save_labels(ask=True, mark=False))
        self._act(ex, "Meshes (STL, OBJ, VTP)…", self._export_meshes_dialog)
        self._act(ex, "Measurements and lesion table (CSV, JSON)…", self._export_measurements_dialog)
        shots = ex.addMenu("Screenshot")
        for pane in PANES:
            self._act(shots, f"{pane.capitalize() if pane != '3d' else '3D'} pane…",
                      lambda p=pane: self._export_screenshot_dialog(p))
        self._act(shots, "Whole window…", lambda: self._export_screenshot_dialog("window"))
        f.addSeparator()
        self._act(f, "&Quit", self.close, QKeySequence.Quit)

        e = mb.addMenu("&Edit")
        self.undo_action = self._act(e, "Undo", self.undo, QKeySequence.Undo)
        self.redo_action = self._act(e, "Redo", self.redo, "Ctrl+Shift+Z")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        e.addSeparator()
        for key, name, short in (("navigate", "Navigate", "N"), ("brush", "Brush", "B"),
                                 ("eraser", "Eraser", "E"), ("fill", "Fill in slice", "F"),
                                 ("delete", "Delete component", "D")):
            self._act(e, f"{name} tool", lambda k=key: self.tools.set_tool(k), short)
        for s in STRUCTURES:
            self._act(e, f"Active structure: {s.name}", lambda lab=s.label: self.tools.set_active_label(lab),
                      str(s.label))
        self._act(e, "Larger brush", lambda: self.tools.size.setValue(self.tools.size.value() * 1.25), "]")
        self._act(e, "Smaller brush", lambda: self.tools.size.setValue(self.tools.size.value() / 1.25), "[")
        e.addSeparator()
        self._act(e, "Keep largest component of the active structure", self.keep_largest_component)
        self._act(e, "Fill holes in the active structure", self.fill_holes)

        v = mb.addMenu("&View")
        lay = v.addMenu("Layout")
        grp = QActionGroup(self)
        for key, text, short in (("grid", "Four panes", "F5"), ("axial", "Axial only", "F6"),
                                 ("coronal", "Coronal only", "F7"), ("sagittal", "Sagittal only", "F8"),
                                 ("3d", "3D only", "F9")):
            a = self._act(lay, text, lambda k=key: self.set_layout(k), short)
            a.setCheckable(True)
            a.setChecked(key == "grid")
            grp.addAction(a)
        wl = v.addMenu("Window / level")
        for i, (name, (lv, wd)) in enumerate(WINDOW_PRESETS.items(), start=1):
            self._act(wl, f"{name.capitalize()} (W {wd:.0f} / L {lv:.0f})",
                      lambda l=lv, w=wd: self.set_window(l, w), f"Alt+{i}")
        self._act(v, "Reset zoom", lambda: [x.reset_zoom() for x in self.views], "Ctrl+0")
        v.addSeparator()
        self._act(v, "Reset 3D camera", lambda: self.view3d and self.view3d.reset_camera(), "R")
        std = v.addMenu("3D standard view")
        for name in ("anterior", "posterior", "left", "right", "superior", "inferior"):
            self._act(std, name.capitalize(), lambda n=name: self.view3d and self.view3d.set_view(n))
        self.plane_action = self._act(v, "Show the axial CT plane in 3D", self._toggle_plane)
        self.plane_action.setCheckable(True)

        m = mb.addMenu("&Models")
        self._act(m, "Install model package (.zip)…", self._install_model_dialog)
        self._act(m, "Refresh the model list", self.refresh_models)

        h = mb.addMenu("&Help")
        self._act(h, "About LiverPlan", self._about)

    def _act(self, menu, text, slot, shortcut=None) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.triggered.connect(lambda checked=False: slot())
        menu.addAction(a)
        return a

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        items = self.recent.load()
        if not items:
            a = self.recent_menu.addAction("(none)")
            a.setEnabled(False)
        for p in items:
            self._act(self.recent_menu, p, lambda p=p: self.open_path(p))

    def _about(self) -> None:
        from .about import show_about  # issue 15: version, device, data folders, licences
        show_about(self)

    # ============================================================================ layout / window
    def set_layout(self, mode: str) -> None:
        self.layout_mode = mode
        widgets = {"axial": self.views[0], "coronal": self.views[1], "sagittal": self.views[2],
                   "3d": self.view3d}
        for key, w in widgets.items():
            if w is not None:
                w.setVisible(mode == "grid" or mode == key)

    def set_window(self, level: float, width: float) -> None:
        self.level, self.width = float(level), max(float(width), 1.0)
        for v in self.views:
            v.set_window(self.level, self.width)
        if self.view3d is not None and self.view3d.show_plane and self.case is not None:
            self.view3d.set_plane(self.case.image, self.case.geometry, self.pos[0], self.level, self.width)

    def _toggle_plane(self) -> None:
        if self.view3d is None:
            return
        self.view3d.show_plane = self.plane_action.isChecked()
        self.view3d.set_plane(self.case.image if self.case else None,
                              self.case.geometry if self.case else None, self.pos[0], self.level, self.width)

    def _update_lut(self) -> None:
        lut = label_lut(self.visible2d)
        for v in self.views:
            v.set_lut(lut)

    def _on_visible2d(self, lab: int, on: bool) -> None:
        self.visible2d[lab] = on
        self._update_lut()

    def _message(self, text: str, error: bool = False) -> None:
        self.status_text.setStyleSheet("color: #d04040;" if error else "")
        self.status_text.setText(text)
        self.status_text.setToolTip(text)       # a long message is cut at the window's edge: whole on hover
        if error:
            self.last_error = text
            log.warning("%s", text)

    def _update_title(self) -> None:
        name = self.case.name if self.case else ""
        mod = " *" if self.history is not None and self.history.is_modified else ""
        self.setWindowTitle(f"LiverPlan — {name}{mod}" if name else "LiverPlan")

    # ============================================================================ opening
    def _task_progress(self, task, what: str, cancellable: bool = True) -> None:
        eta = EtaEstimator()
        self.task_progress.setVisible(True)
        self.task_progress.setValue(0)
        self._status_tasks = [t for t in getattr(self, "_status_tasks", []) if not t.finished]
        if cancellable:  # an export is not: its file would be written anyway
            self._status_tasks.append(task)
            self.task_cancel.setVisible(True)

        def on_progress(stage, done, total):
            pct = int(100 * done / total) if total > 0 else 0
            self.task_progress.setValue(pct)
            self._message(f"{what}: {stage} {pct}% {EtaEstimator.format(eta.update(stage, done, total))}")

        def on_done():
            if any(not t.finished for t in self._status_tasks if t is not task):
                return
            self.task_progress.setVisible(False)
            self.task_cancel.setVisible(False)
            if self.status_text.text().startswith(f"{what}:"):
                self._message("")

        task.progress.connect(on_progress)
        task.done.connect(on_done)

    def cancel_background_work(self) -> None:
        """The status bar's Cancel: stops opening, reading, evaluating or exporting (not segmentation,
        which has its own Cancel)."""
        for t in getattr(self, "_status_tasks", []):
            t.cancel()
        self._message("Cancelling…")

    def open_demo(self) -> None:
        if not self._confirm_discard():
            return
        from engine.phantom import demo_case

        self._message("Building the demo case…")
        task = self.runner.start("load", demo_case, progress=False)
        self._task_progress(task, "Demo case")
        task.succeeded.connect(lambda case: self.set_case(case))
        task.failed.connect(lambda msg, exc: self._message(msg, error=True))

    def open_path(self, path, series: Optional[str] = None, labels: Optional[str] = None) -> None:
        """Load a CT file or DICOM folder off the GUI thread; ``labels`` is opened onto it afterwards."""
        if not self._confirm_discard():
            return
        from engine.io import load_case

        self._message(f"Opening {path}…")
        task = self.runner.start("load", load_case, str(path), series=series)
        self._task_progress(task, "Opening")

        def ok(case):
            self.set_case(case)
            self.recent.add(path)
            if labels:
                self.open_labels(labels)

        def failed(msg, exc):
            from engine.io.dicom import SeriesChoiceNeeded
            if isinstance(exc, SeriesChoiceNeeded):
                key = self._choose_series(exc.series)
                if key:
                    self.open_path(path, series=key, labels=labels)
                return
            self._message(msg, error=True)
            self._show_error("Cannot open", msg)

        task.succeeded.connect(ok)
        task.failed.connect(failed)
        task.cancelled.connect(lambda: self._message("Opening cancelled; nothing was changed."))

    def _choose_series(self, series) -> Optional[str]:
        dlg = SeriesPicker(series, self)
        return dlg.chosen_key() if dlg.exec() == QDialog.Accepted else None

    def _show_error(self, title: str, msg: str) -> None:
        if os.environ.get("LIVERPLAN_NO_DIALOGS"):
            return
        QMessageBox.warning(self, title, msg)

    def _show_info(self, title: str, msg: str) -> None:
        if os.environ.get("LIVERPLAN_NO_DIALOGS"):
            return
        QMessageBox.information(self, title, msg)

    def _open_dialog(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Open CT image", "", IMAGE_FILTER)
        if p:
            self.open_path(p)

    def _open_dicom_dialog(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Open DICOM folder")
        if p:
            self.open_path(p)

    def _open_labels_dialog(self) -> None:
        if self.case is None:
            return
        p, _ = QFileDialog.getOpenFileName(self, "Open label map onto this CT", "", LABEL_FILTER)
        if p:
            self.open_labels(p)

    def open_labels(self, path) -> None:
        """Read a label map onto the open CT (grid checked by the engine) as one undoable step."""
        if self.case is None:
            return
        from engine.io import read_label_map

        case = self.case
        notes: list[str] = []
        task = self.runner.start("labels", read_label_map, str(path), case, notes=notes, progress=False)
        self._task_progress(task, "Opening label map")

        def ok(labels):
            if case is not self.case:  # another case was opened meanwhile
                return
            self._incoming_notes = list(notes)
            self.apply_edit(f"Open label map {Path(path).name}", edits.replace_all, np.asarray(labels, np.uint8))
            self.case.provenance.label_source = f"file: {path}"
            self.case.provenance.model_card = None            # no model made these labels
            self.case.provenance.extra["edited"] = False
            self._record_origin()
            self._message(f"Label map {Path(path).name} opened." + (" " + " ".join(notes) if notes else ""))
            if notes:
                # what the file merges or leaves out (IRCADb: hepatic veins + IVC in one mask) changes how
                # its volumes read: said once in a box, kept in the status bar
                self._show_info(f"Label map {Path(path).name}", "\n\n".join(notes))

        def failed(msg, exc):
            self._message(msg, error=True)
            self._show_error("Cannot open the label map", msg)

        task.succeeded.connect(ok)
        task.failed.connect(failed)

    def dragEnterEvent(self, ev):  # noqa: N802
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev):  # noqa: N802
        urls = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if not urls:
            return
        p = urls[0]
        if self.case is not None and (p.lower().endswith(".seg.nrrd") or self._ask_drop_as_labels(p)):
            self.open_labels(p)
        else:
            self.open_path(p)

    def _ask_drop_as_labels(self, path: str) -> bool:
        name = Path(path).name.lower()
        guess = any(w in name for w in ("label", "seg", "mask"))
        box = QMessageBox(self)
        box.setWindowTitle("Open dropped file")
        box.setText(f"Open {Path(path).name} as a label map onto this CT, or as a new CT?")
        lab = box.addButton("Label map", QMessageBox.AcceptRole)
        ct = box.addButton("New CT", QMessageBox.RejectRole)
        box.setDefaultButton(lab if guess else ct)
        box.exec()
        return box.clickedButton() is lab

    # ============================================================================ the case
    def set_case(self, case: Case) -> None:
        if self._pending_autosave_discard is not None:
            # the edits the user chose to discard go now that another case has really replaced them (not
            # when asked: an open that then fails keeps them on screen, and in the autosave)
            self.autosave_store.discard(*self._pending_autosave_discard)
            self._pending_autosave_discard = None
        self.case = case
        if self.history is None:
            self.history = edits.EditHistory(case.labels)
        else:
            self.history.reset(case.labels)
        self.report = None
        self._counts = {}
        self._measurer = None
        self._block_surfaces = {}
        self._mesh_boxes = {lab: None for lab in BY_LABEL}
        self.selected_lesion = None
        self.evaluation = None
        self._state_info = {}
        self.evaluate_panel.table.setRowCount(0)
        self.evaluate_panel.status.setText("")
        self.segment_panel.set_progress("", 0)      # the last case's result message is not this case's
        self.measure_panel.clear()                  # nor its numbers, until this case's are measured
        self.structures.set_volumes({}, "")
        self.pos = [n // 2 for n in case.image.shape]
        for v in self.views:
            v.set_volume(case.image, case.labels, case.geometry, self.pos)
            v.set_window(self.level, self.width)
        if self.view3d is not None:
            self.view3d.clear()
        if case.provenance.label_source == "phantom":
            # A phantom's own labels are its ground truth: offer them as the evaluation reference.
            self.set_reference(case.labels.copy(), "the phantom's ground truth")
        else:
            self.reference = None
            self.evaluate_panel.run.setEnabled(False)
            self.evaluate_panel.reference.setText("No reference loaded.")
        self._autosaved_state = self.history.state_id
        self._record_origin()
        self._after_change(set(BY_LABEL))
        self.set_position(self.pos)                 # the status bar's voxel readout, for this case
        self._update_title()
        warn = " ".join(case.provenance.warnings)
        self._message(f"{case.name}: {case.geometry.describe()}." + (f" Warning: {warn}" if warn else ""))
        self._offer_autosave()
        # The model search imports torch (seconds of CPU and of the interpreter lock): it starts once the
        # case's first measurements and surfaces are done (see _refresh_if_pending), not beside them
        # (measured on 512 x 512 x 300: it slowed the first surfaces by ~1-3 s on 2 cores).
        self._models_after_refresh = True

    def _source_key(self) -> str:
        return self.case.provenance.source or self.case.name

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
            self.view3d.set_plane(self.case.image, self.case.geometry, self.pos[0], self.level, self.width)

    def _on_3d_pick(self, xyz) -> None:
        """A double click on a 3D surface (LPS mm) moves every pane there."""
        if self.case is not None:
            self.set_position([int(round(v)) for v in self.case.geometry.physical_to_index(xyz)])

    def _on_slice_changed(self, axis: int, index: int) -> None:
        p = list(self.pos)
        p[axis] = index
        self.set_position(p)

    # ============================================================================ tools
    def _on_tool_changed(self, *_):
        tool = self.tools.tool()
        r = self.tools.size.value() if tool in ("brush", "eraser") else 0.0
        for v in self.views:
            v.set_brush_radius(r)

    def _on_mouse(self, kind: str, zyx, axis: int, modifiers) -> None:
        if self.case is None:
            return
        tool = self.tools.tool()
        if tool == "navigate" or modifiers & Qt.ShiftModifier:
            if kind in ("click", "press", "move"):
                self.set_position(zyx)
            return
        if tool in ("brush", "eraser"):
            if kind in ("press", "click"):
                self._stroke = edits.Stroke(self.case.labels)
                self._last_dab = None
            if kind in ("press", "move", "click") and self._stroke is not None:
                self.dab(zyx, axis)
            if kind in ("release", "click") and self._stroke is not None:
                s, self._stroke = self._stroke, None
                name = BY_LABEL[self.tools.active_label()].name
                what = "Brush stroke" if tool == "brush" else "Erase"
                self._commit(f"{what} ({name})", s.region())
            return
        if kind != "click":
            return
        lab = self.tools.active_label()
        if tool == "fill":
            self.apply_edit(f"Fill in slice ({BY_LABEL[lab].name})", edits.flood_fill_slice, zyx, axis, lab,
                            rule=self.tools.paint_rule(), image=self.case.image, hu_range=self.tools.hu_range())
        elif tool == "delete":
            hit = int(self.case.labels[tuple(zyx)])
            if hit == 0:
                self._message("There is no structure under the cursor to delete.")
                return
            QApplication.setOverrideCursor(Qt.WaitCursor)
            try:
                self.apply_edit(f"Delete component ({BY_LABEL.get(hit).name if hit in BY_LABEL else hit})",
                                edits.delete_component, zyx)
            finally:
                QApplication.restoreOverrideCursor()

    def dab(self, zyx, axis: int) -> None:
        """One brush/eraser dab at voxel ``zyx`` in pane ``axis`` (part of the current stroke)."""
        tool = self.tools.tool()
        centres = [zyx] if self._last_dab is None else edits.stroke_points(
            self._last_dab, zyx, self.case.geometry.spacing, self.tools.size.value())
        self._last_dab = zyx
        for c in centres:
            self._stroke.add(edits.brush(
                self.case.labels, c, self.tools.size.value(), self.case.geometry.spacing,
                self.tools.active_label(), erase=(tool == "eraser"), sphere=self.tools.sphere(),
                plane_axis=axis, rule=self.tools.paint_rule(), image=self.case.image,
                hu_range=self.tools.hu_range()))
        for v in self.views:
            v.refresh_labels()

    def apply_edit(self, description: str, op, *args, **kwargs):
        if self.case is None:
            return None
        return self._commit(description, op(self.case.labels, *args, **kwargs))

    @property
    def label_notes(self) -> list[str]:
        """What the label map on screen merges or leaves out, when it came from a file that said so."""
        if self.history is None:
            return []
        return list(self._state_info.get(self.history.state_id, {}).get("notes", []))

    def _commit(self, description: str, region) -> Optional[edits.Edit]:
        before = self.history.state_id
        incoming, self._incoming_notes = self._incoming_notes, None
        e = self.history.commit(description, region)
        if e is not None:
            # a new label map brings its own notes (a model's result none); an edit keeps those it was made on
            replaced = description.startswith(("Segmentation", "Open label map", "Restore autosaved"))
            self._state_info.setdefault(self.history.state_id, {})["notes"] = (incoming or []) if replaced \
                else self._state_info.get(before, {}).get("notes", [])
        if e is None:
            self._message(f"{description}: nothing changed.")
            for v in self.views:
                v.refresh_labels()
            return None
        if self.case.provenance.label_source not in ("none",) and not description.startswith(
                ("Segmentation", "Open label map")):
            self.case.provenance.extra["edited"] = True
        self._record_origin()
        self._after_change(set(e.labels_touched) - {0}, e.delta(), e.box)
        self._message(f"{description}.")
        return e

    def _record_origin(self) -> None:
        """Remember what made the labels of the current history state (model or file, the model's card,
        edited by hand or not): Undo and Redo bring it back with the labels (a DICOM SEG says it)."""
        if self.case is None or self.history is None:
            return
        p = self.case.provenance
        self._state_info.setdefault(self.history.state_id, {})["origin"] = (
            p.label_source, copy.deepcopy(p.model_card), bool(p.extra.get("edited")))

    def _restore_origin(self) -> None:
        t = self._state_info.get(self.history.state_id, {}).get("origin") if self.history is not None else None
        if t is not None and self.case is not None:
            p = self.case.provenance
            p.label_source, p.model_card, p.extra["edited"] = t[0], copy.deepcopy(t[1]), t[2]

    def undo(self) -> None:
        if self.history is None or self._stroke is not None:
            return
        e = self.history.undo()
        if e is not None:
            self._restore_origin()
            self._after_change(set(e.labels_touched) - {0}, e.delta(undo=True), e.box)
            self._message(f"Undone: {e.description}.")
            if e.description.startswith("Segmentation"):
                # the Segment tab's "Segmented with ..." no longer describes the labels shown
                self.segment_panel.set_progress(f"Undone: {e.description}; the labels before it are back.", 0)

    def redo(self) -> None:
        if self.history is None or self._stroke is not None:
            return
        e = self.history.redo()
        if e is not None:
            self._restore_origin()
            self._after_change(set(e.labels_touched) - {0}, e.delta(), e.box)
            self._message(f"Redone: {e.description}.")
            if e.description.startswith("Segmentation"):
                self.segment_panel.set_progress(f"Redone: {e.description}; its labels are back.", 100)

    def keep_largest_component(self) -> None:
        lab = self.tools.active_label()
        self.apply_edit(f"Keep largest component ({BY_LABEL[lab].name})", edits.keep_largest_component, lab)

    def fill_holes(self) -> None:
        lab = self.tools.active_label()
        self.apply_edit(f"Fill holes ({BY_LABEL[lab].name})", edits.fill_holes, lab)

    def _update_readout(self) -> None:
        """The status bar's voxel readout (position, HU, structure) for the crosshair voxel."""
        z, y, x = self.pos
        hu = self.case.image[tuple(self.pos)]
        lab = int(self.case.labels[tuple(self.pos)])
        name = BY_LABEL[lab].name if lab in BY_LABEL else ("background" if lab == 0 else f"label {lab}")
        self.cursor_text.setText(f"voxel (x {x}, y {y}, z {z})  {float(hu):.0f} HU  {name}")

    def _after_change(self, labels_touched: set[int], delta: Optional[dict] = None,
                      box: Optional[tuple] = None) -> None:
        """Labels changed (inside ``box``, z0 z1 y0 y1 x0 x1; None = anywhere): repaint, then refresh the
        measurements and the touched structures' surfaces from that box only (in the background)."""
        for v in self.views:
            v.refresh_labels()
        self._update_readout()                  # the crosshair voxel may have changed structure
        if self.evaluation is not None:
            self.evaluate_panel.status.setText("The labels have changed since this evaluation; press Evaluate "
                                               "again to score the labels shown.")
        if delta and self._counts:
            # Volumes follow at once from the step's own voxel counts; the full report follows.
            for lab, d in delta.items():
                if lab in self._counts:
                    self._counts[lab] += d
            self._show_volumes()
        self._update_undo_actions()
        self._update_title()
        for lab in labels_touched:
            self._mesh_boxes[lab] = _union(self._mesh_boxes[lab], box) if lab in self._mesh_boxes else box
        self._pending_mesh |= set(labels_touched)
        self._measure_box = _union(self._measure_box, box) if self._pending_measure else box
        self._pending_measure = True
        # Start the background refresh now (it works on the edited box only, so there is nothing to gain by
        # waiting for more edits); whatever is still running picks up the rest when it ends.
        self._refresh_timer.stop()
        self._start_refresh()

    def _update_undo_actions(self) -> None:
        h = self.history
        u = h.undo_description if h else None
        r = h.redo_description if h else None
        self.undo_action.setText(f"Undo {u}" if u else "Undo")
        self.redo_action.setText(f"Redo {r}" if r else "Redo")
        self.undo_action.setEnabled(bool(u))
        self.redo_action.setEnabled(bool(r))
        self.tools.undo_btn.setEnabled(bool(u))
        self.tools.redo_btn.setEnabled(bool(r))
        self.tools.undo_btn.setToolTip(f"Undo {u}" if u else "")
        self.tools.redo_btn.setToolTip(f"Redo {r}" if r else "")
        if h is not None:
            self.tools.history.setText(f"Undo history: {h.nbytes / 2**20:.1f} MB of {h.max_bytes / 2**20:.0f} MB")

    # ============================================================================ measurements + 3D
    def _start_refresh(self) -> None:
        if self.case is None or self._closing:
            return
        case = self.case
        if self._pending_measure and not self.runner.running("measure"):
            self._pending_measure = False
            box, self._measure_box = self._measure_box, None
            self.measure_panel.note.setText("Updating the measurements…")
            t = self.runner.start("measure", _measure_for, case, self._measurer, box, progress=False)
            t.succeeded.connect(lambda res, c=case: self._on_measured(res, c))
            t.failed.connect(lambda msg, exc: self._message(f"Measurements failed: {msg}", error=True))
            t.done.connect(self._refresh_if_pending)
        if self._pending_mesh and self.view3d is not None and not self.runner.running("mesh"):
            wanted, self._pending_mesh = set(self._pending_mesh) & set(BY_LABEL), set()
            jobs = {lab: self._mesh_boxes.pop(lab, None) for lab in wanted}
            t = self.runner.start("mesh", _surfaces_for, case, self._block_surfaces, jobs, progress=False)
            t.succeeded.connect(lambda res, c=case, w=wanted: self._on_surfaces(res, c, w))
            t.failed.connect(lambda msg, exc: self._message(f"3D surfaces failed: {msg}", error=True))
            t.done.connect(self._refresh_if_pending)

    def _refresh_if_pending(self) -> None:
        if (self._pending_measure or self._pending_mesh) and not self._refresh_timer.isActive():
            self._refresh_timer.start(0)
        elif (self._models_after_refresh and not self.runner.running("measure")
              and not self.runner.running("mesh")):
            self._models_after_refresh = False
            QTimer.singleShot(0, self._populate_models)

    def _on_measured(self, result, case) -> None:
        if case is not self.case:
            return
        self._measurer, report = result
        self._on_report(report, case)

    def _on_report(self, report, case) -> None:
        if case is not self.case:
            return
        self.report = report
        self.measure_panel.set_report(report)
        # what the scan itself limits (a thin slab, not CT-like values) stays beside the numbers it limits
        notes = [f"About this scan: {w}" for w in case.provenance.warnings] \
            + [f"About these labels: {n}" for n in self.label_notes] + list(report.warnings) \
            + [f"Lesions are {report.connectivity}-connected components of label 5."]
        self.measure_panel.note.setText(" ".join(notes) if not self._pending_measure else "Updating the measurements…")
        self._counts = {}
        for st in STRUCTURES:
            try:
                self._counts[st.label] = int(report.value(f"{st.key}.voxels"))
            except KeyError:
                pass
        total = []
        for key in ("liver.total_volume_ml", "crlm.tumour_burden_pct", "crlm.count"):
            try:
                m = report.get(key)
            except KeyError:
                continue
            # as the Measure tab shows it: 2 decimals, and a dash where there is no value (no liver: no burden)
            total.append(f"{m.name}: {_fmt(m.value, 2 if isinstance(m.value, float) else 0)} {m.units}")
        self._totals_text = "\n".join(total)
        self._show_volumes()
        if self.selected_lesion is not None and self.selected_lesion >= len(report.lesions):
            self.selected_lesion = None
            for v in self.views:
                v.set_highlight(None)

    def _show_volumes(self) -> None:
        ml = self.case.geometry.voxel_volume_ml
        self.structures.set_volumes({lab: n * ml for lab, n in self._counts.items()}, self._totals_text)

    def _on_surfaces(self, result, case, wanted: set[int]) -> None:
        if case is not self.case or self.view3d is None:
            return
        self._block_surfaces, surfaces = result
        full = {lab: surfaces.get(lab) for lab in wanted}
        self.view3d.set_surfaces(full)

    def select_lesion(self, row: int) -> None:
        """Centre every pane and the 3D view on a lesion of the table and highlight it."""
        if self.report is None or not (0 <= row < len(self.report.lesions)):
            return
        les = self.report.lesions[row]
        self.selected_lesion = row
        self.set_position([int(round(v)) for v in les.centroid_zyx])
        box = self._lesion_box(les)
        for v in self.views:
            v.set_highlight(box)
        if self.view3d is not None:
            r = (les.longest_diameter_mm or 10.0) / 2.0 + 3.0
            self.view3d.set_marker(les.centroid_lps_mm, r)
            self.view3d.focus(les.centroid_lps_mm)
        self._message(f"Lesion {les.id}: {les.volume_ml:.2f} mL, longest diameter "
                      f"{les.longest_diameter_mm:.1f} mm.")

    @staticmethod
    def _lesion_box(les):
        """(z0, z1, y0, y1, x0, x1) from the engine's per-axis (start, stop) bounding box."""
        b = getattr(les, "bbox", None)
        if b is None:
            return None
        return tuple(int(v) for pair in b for v in pair)

    # ============================================================================ segmentation
    def _populate_models(self) -> None:
        """Find models and devices in the background: both import torch (seconds), and the window must
        appear at once. Runs once."""
        if self.models_task is not None or self._closing:
            return
        self.segment_panel.card.setHtml("<p>Looking for segmentation models and compute devices…</p>")
        self.segment_panel.run.setEnabled(False)
        task = self.runner.start("models", _find_models_and_devices, progress=False)
        task.succeeded.connect(self._on_models)
        task.failed.connect(lambda msg, exc: self.segment_panel.set_message(msg, error=True))
        self.models_task = task

    def refresh_models(self) -> None:
        if self.models_task is not None and not self.models_task.finished:
            return
        self.models_task = None
        self._populate_models()

    def _install_model_dialog(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Install model package", "", "Model package (*.zip)")
        if p:
            self.install_model(p)

    def install_model(self, path):
        """Validate and install an nnU-Net model zip (engine.models) in the background, then list it."""
        from engine.models import install_model_zip

        task = self.runner.start("install", install_model_zip, str(path), progress=False)
        self._task_progress(task, "Installing model")
        task.succeeded.connect(lambda model: (self._message(f"Model {model.card.headline()} installed."),
                                              self.refresh_models()))
        task.failed.connect(lambda msg, exc: (self._message(msg, error=True),
                                              self._show_error("Model not installed", msg)))
        return task

    def _on_models(self, found) -> None:
        models, pre, devices, skipped = found
        # a refresh (a model installed, a folder copied in) keeps the user's choice of model and device
        chosen = self.segment_panel.current_model()
        device = self.segment_panel.device.currentText()
        if chosen is not None:
            pre = next((m for m in models if Path(m.path) == Path(chosen.path)), pre)
        self.segment_panel.set_models(models, preselect=pre)
        self.segment_panel.set_devices(devices)
        if device and self.segment_panel.device.findText(device) >= 0:
            self.segment_panel.device.setCurrentText(device)
        # a model the user installed by copying a folder and that is not offered: say why (and keep saying it
        # when another case opens)
        lines = [f"{folder}: {reason}" for folder, reason in skipped]
        self.segment_panel.standing_note = (
            f"{len(skipped)} model folder{'s' if len(skipped) > 1 else ''} could not be used:\n" + "\n".join(lines)
            if skipped else "")
        if skipped:
            self.segment_panel.set_message(self.segment_panel.standing_note, error=True)

    def run_segmentation(self, model=None) -> None:
        if self.case is None or self.runner.running("segment"):
            return
        model = model or self.segment_panel.current_model()
        if model is None:
            self.segment_panel.set_message("Choose a model first.", error=True)
            return
        from engine.inference import keep_unsegmented_structures, segment

        device = self.segment_panel.device.currentText() or "auto"
        mode = self.segment_panel.mode.currentText()
        case = self.case
        eta = EtaEstimator()
        self.segment_panel.set_running(True)
        self.segment_panel.set_progress(f"Starting {model.name} on {device}…", 0)
        task = self.runner.start("segment", segment, case, model, device=device, mode=mode)
        self.segment_task = task

        def on_progress(stage, done, total):
            pct = int(100 * done / total) if total > 0 else 0
            left = EtaEstimator.format(eta.update(stage, done, total))
            self.segment_panel.set_progress(f"{stage}: {pct}%" + (f" — {left}" if left else ""), pct)

        def ok(result):
            self.segment_panel.set_running(False)
            if case is not self.case:
                return
            # a model that does not segment every structure leaves the others as they were
            labels, kept = keep_unsegmented_structures(result.labels, self.case.labels, model)
            shown = model.name
            if sum(getattr(m, "name", None) == model.name for m in self.segment_panel._models) > 1:
                from engine.models import installed_name
                shown = f"{model.name}, {installed_name(model.path)}"    # two models with one card name
            e = self.apply_edit(f"Segmentation ({shown})", edits.replace_all, labels)
            self.case.provenance.label_source = f"model: {model.name}"
            self.case.provenance.model_card = model.to_provenance() if hasattr(model, "to_provenance") else None
            # the model's own output (a DICOM SEG says AUTOMATIC); labels kept from before make it a mix
            self.case.provenance.extra["edited"] = bool(kept)
            self._record_origin()
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
            self.segment_panel.set_progress(msg, 100)

        def failed(msg, exc):
            self.segment_panel.set_running(False)
            self.segment_panel.set_message(msg + " The case is unchanged.", error=True)

        def cancelled():
            self.segment_panel.set_running(False)
            self.segment_panel.set_message("Segmentation cancelled; the case is unchanged.")

        task.progress.connect(on_progress)
        task.succeeded.connect(ok)
        task.failed.connect(failed)
        task.cancelled.connect(cancelled)

    def cancel_segmentation(self) -> None:
        for t in self.runner.running("segment"):
            t.cancel()
        self.segment_panel.set_message("Cancelling…")
        self.segment_panel.cancel.setEnabled(False)

    # ============================================================================ evaluation
    def _reference_mapping(self):
        key = self.evaluate_panel.convention_key()
        if key == "liverplan":
            return None
        from engine.labelmap import LabelMapping
        if key == "file":
            p, _ = QFileDialog.getOpenFileName(self, "Label mapping file", "", "JSON (*.json)")
            return LabelMapping.load(p) if p else None
        return LabelMapping.preset(key)

    def _load_reference_dialog(self) -> None:
        if self.case is None:
            return
        p = QFileDialog.getExistingDirectory(self, "Reference: folder of masks (Cancel to pick a file)") \
            if self.evaluate_panel.convention_key() == "ircadb" else None
        if not p:
            p, _ = QFileDialog.getOpenFileName(self, "Reference label map", "", LABEL_FILTER)
        if p:
            self.load_reference(p, self._reference_mapping())

    def load_reference(self, path, mapping=None) -> None:
        from engine.evaluation import read_reference

        # structures a mask folder or a segmentation file does not annotate are "not in reference" (the
        # mapping that says so comes back with the labels, read in the background)
        task = self.runner.start("reference", read_reference, str(path), self.case, mapping, progress=False)
        self._task_progress(task, "Reading reference")
        task.succeeded.connect(lambda res: self.set_reference(np.asarray(res[0], np.uint8), Path(path).name, res[1]))
        task.failed.connect(lambda msg, exc: (self.evaluate_panel.status.setText(msg),
                                              self._message(msg, error=True)))

    def set_reference(self, ref: np.ndarray, name: str, mapping=None) -> None:
        """The reference label map (LiverPlan values, canonical grid) and its convention's mapping."""
        self.reference, self.reference_name, self.reference_mapping = ref, name, mapping
        self.evaluate_panel.reference.setText(f"Reference: {name}")
        self.evaluate_panel.run.setEnabled(True)

    def run_evaluation(self) -> None:
        if self.case is None or self.reference is None:
            return
        from engine.evaluation import evaluate_pair

        self.evaluate_panel.status.setText("Computing the metric suite…")
        self.evaluate_panel.run.setEnabled(False)
        pred = self.case.labels.copy()  # the user may keep editing while metrics run
        task = self.runner.start("evaluate", evaluate_pair, pred, self.reference, self.case.geometry,
                                 self.reference_mapping)
        self._task_progress(task, "Evaluating")

        def ok(result):
            self.evaluate_panel.run.setEnabled(True)
            self.evaluation = result
            self._show_evaluation()
            self.evaluate_panel.status.setText(f"Evaluated against {self.reference_name}.")

        def failed(msg, exc):
            self.evaluate_panel.run.setEnabled(True)
            self.evaluate_panel.status.setText(msg)

        task.succeeded.connect(ok)
        task.failed.connect(failed)
        task.cancelled.connect(lambda: self.evaluate_panel.run.setEnabled(True))

    def _show_evaluation(self) -> None:
        """The evaluation table as the panel asks: the study's metrics (default) or every metric."""
        if self.evaluation is None:
            return
        rows, cols, values = self._evaluation_table(
            self.evaluation, study_only=not self.evaluate_panel.all_metrics.isChecked())
        self.evaluate_panel.set_table(rows, cols, values)

    @staticmethod
    def _evaluation_table(result, study_only: bool = False):
        """(metric names, structure names, formatted values) of a metrics.CaseResult (metric rows x
        structure columns, the study's layout). study_only: the study's suite and lesion detection, without
        the other distance variants (pooled / seg-metrics / surface HD95, Hausdorff, ASSD) and Betti 2."""
        from metrics import ALL_METRICS, METRIC_INFO, STUDY_METRICS

        structures = list(result.keys())
        present = {m for s in structures for m in result[s]}
        first = STUDY_METRICS if study_only else ALL_METRICS
        # Then lesion detection, then the counts and volumes behind the errors, in the metrics' own order.
        extra = [m for m in METRIC_INFO if m in present and m not in ALL_METRICS
                 and not (study_only and m.startswith("b2_"))]
        extra.sort(key=lambda m: not m.startswith("lesion_"))
        order = [m for m in first if m in present] + extra
        rows, values = [], []
        for m in order:
            name, units, _ = METRIC_INFO.get(m, (m, "", ""))
            rows.append(f"{name} ({units})" if units else name)
            line = []
            for s in structures:
                v = result[s].get(m)
                if v is None or v != v:
                    line.append("—")
                elif m in _COUNT_METRICS and float(v).is_integer():
                    line.append(str(int(v)))  # Betti numbers, Euler characteristic, lesion counts
                else:
                    line.append(f"{v:.3f}" if isinstance(v, float) else str(v))
            values.append(line)
        cols = [" + ".join(BY_KEY[k].name if k in BY_KEY else k for k in s.split("+")) for s in structures]
        status = getattr(result, "status", {})
        if status:
            rows.append("Status")
            words = {"ok": "ok", "pred_empty": "missed (prediction empty)", "ref_empty": "reference empty",
                     "both_empty": "both empty", "not_in_reference": "not in reference"}
            values.append([words.get(str(status.get(s, "")), str(status.get(s, ""))) for s in structures])
        return rows, cols, values

    def _export_evaluation_dialog(self) -> None:
        if self.evaluation is None:
            return
        p, _ = QFileDialog.getSaveFileName(self, "Export evaluation", "evaluation.csv", "CSV (*.csv)")
        if p:
            self.export_evaluation(p)

    def export_evaluation(self, path):
        """The evaluation table as CSV (metric rows x structure columns), written atomically."""
        import csv
        import io

        from engine.io.atomic import write_text_atomic
        rows, cols, values = self._evaluation_table(self.evaluation)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["metric"] + cols)
        for r, v in zip(rows, values):
            w.writerow([r] + v)
        notes = getattr(self.evaluation, "notes", {})
        for s, ns in notes.items():
            for n in ns:
                w.writerow([f"note ({s})", n])
        return self._run_export("Evaluation", write_text_atomic, str(path), buf.getvalue(), overwrite=True)

    # ============================================================================ saving / export
    def _run_export(self, what: str, fn, *args, **kwargs):
        task = self.runner.start("export", fn, *args, progress=False, **kwargs)
        self._task_progress(task, f"Exporting {what.lower()}", cancellable=False)
        task.succeeded.connect(lambda *_: self._message(f"{what} written to {args[0]}."))
        task.failed.connect(lambda msg, exc: (self._message(msg, error=True),
                                              self._show_error("Export failed", msg)))
        return task

    def save_labels(self, ask: bool = False, mark: bool = True, path=None):
        """Write the label map in the source geometry (NIfTI/NRRD/.seg.nrrd by extension)."""
        if self.case is None:
            return None
        if path is None:
            path = self.last_save_path if (self.last_save_path and not ask) else None
        if path is None:
            start = str(Path(self.case.provenance.source or ".").with_name(f"{self.case.file_stem}_labels.nii.gz")) \
                if self.case.provenance.source_format not in ("phantom", "") else f"{self.case.file_stem}_labels.nii.gz"
            p, _ = QFileDialog.getSaveFileName(self, "Save label map", start,
                                               "NIfTI (*.nii.gz);;NRRD (*.nrrd);;3D Slicer segmentation "
                                               "(*.seg.nrrd);;MetaImage (*.mha)")
            if not p:
                return None
            path = p
        from engine.io import write_label_map

        snapshot = self.case.copy()  # what is written is what the user saw when saving
        state = self.history.state_id
        task = self._run_export("Label map", write_label_map, str(path), snapshot, overwrite=True)

        def ok(*_):
            if mark:
                self.last_save_path = Path(path)
                if self.history.state_id == state:
                    self.history.mark_saved()
                    self.autosave_store.discard(self._source_key(), self.case.labels.shape)
                self._update_title()

        task.succeeded.connect(ok)
        return task

    def _export_meshes_dialog(self) -> None:
        p, _ = QFileDialog.getSaveFileName(self, "Export meshes (one file per structure)",
                                           f"{self.case.file_stem if self.case else 'case'}.stl",
                                           "STL (*.stl);;OBJ (*.obj);;VTK PolyData (*.vtp)")
        if p:
            self.export_meshes(p)

    def export_meshes(self, path):
        """One surface file per structure (LPS mm) next to ``path``; the format from its extension."""
        if self.case is None:
            return None
        p = Path(path)
        fmt = p.suffix.lstrip(".").lower() or "stl"
        return self._run_export("Meshes", _write_case_meshes, p.parent, self.case.labels.copy(),
                                self.case.geometry, fmt, f"{p.stem}_")

    def _export_measurements_dialog(self) -> None:
        stem = self.case.file_stem if self.case else "case"
        p, _ = QFileDialog.getSaveFileName(self, "Export measurements", f"{stem}"
                                           "_measurements.csv", "CSV (*.csv);;JSON (*.json)")
        if p:
            self.export_measurements(p)

    def export_measurements(self, path):
        if self.report is None:
            self._message("Measurements are not ready yet.", error=True)
            return None
        from engine import report as rep
        fn = rep.write_measurements_json if str(path).lower().endswith(".json") else rep.write_measurements_csv
        return self._run_export("Measurements", fn, str(path), self.report, overwrite=True)

    def _export_screenshot_dialog(self, pane: str) -> None:
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
            self._message(str(exc), error=True)
            raise
        self._message(f"Screenshot written to {path}.")
        return Path(path)

    # ============================================================================ autosave / close
    def autosave(self):
        """Write unsaved edits to the user's data folder (off the GUI thread)."""
        if self.case is None or self.history is None or not self.history.is_modified:
            return None
        if self._autosaved_state == self.history.state_id or self.runner.running("autosave"):
            return None
        self._autosaved_state = self.history.state_id
        labels = self.case.labels.copy()
        return self.runner.start("autosave", self.autosave_store.save, self._source_key(), self.case.name,
                                 labels, self.history.undo_description or "", progress=False)

    def _offer_autosave(self) -> None:
        entry = self.autosave_store.find(self._source_key(), self.case.labels.shape)
        if entry is None:
            return
        choice = self._ask_restore(entry)
        if choice is None:
            # no one to ask (LIVERPLAN_NO_DIALOGS): neither restored nor thrown away
            self._message(f"Unsaved edits of {entry.case_name} from {entry.when()} were found and kept, not "
                          "restored (questions are switched off: LIVERPLAN_NO_DIALOGS).")
            return
        if choice:
            try:
                labels = self.autosave_store.load(entry)
            except (OSError, ValueError) as exc:
                self._message(f"The autosaved edits could not be read ({exc}).", error=True)
                return
            self.apply_edit("Restore autosaved edits", edits.replace_all, labels)
            self.history.mark_modified()
            self._update_title()
        else:
            self.autosave_store.discard(self._source_key(), self.case.labels.shape)

    def _ask_restore(self, entry) -> Optional[bool]:
        """True: restore, False: discard, None: no dialogs allowed (LIVERPLAN_NO_DIALOGS), keep them."""
        if os.environ.get("LIVERPLAN_NO_DIALOGS"):
            return None
        r = QMessageBox.question(self, "Restore unsaved edits?",
                                 f"LiverPlan found edits of {entry.case_name} that were not saved "
                                 f"(autosaved {entry.when()}). Restore them?",
                                 QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
        return r == QMessageBox.Yes

    def _ask_unsaved(self, closing: str = "closing this case") -> str:
        """'save', 'discard' or 'cancel'."""
        name = self.case.name if self.case is not None else "this case"
        r = QMessageBox.question(self, "Unsaved changes",
                                 f"The labels of {name} have changes that are not saved. Save them before "
                                 f"{closing}?",
                                 QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save)
        return {QMessageBox.Save: "save", QMessageBox.Discard: "discard"}.get(r, "cancel")

    def _confirm_discard(self) -> bool:
        """Before replacing the open case: ask about unsaved edits (they stay in the autosave)."""
        if self.case is None or self.history is None or not self.history.is_modified:
            return True
        choice = self._ask_unsaved("opening another case")
        if choice == "cancel":
            return False
        if choice == "save":
            # a cancelled file dialog or a failed write keeps the case and its edits open
            return self._save_now()
        self._pending_autosave_discard = (self._source_key(), self.case.labels.shape)
        return True

    def _save_now(self) -> bool:
        from engine.io import write_label_map
        path = self.last_save_path
        if path is None:
            p, _ = QFileDialog.getSaveFileName(self, "Save label map", f"{self.case.file_stem}_labels.nii.gz",
                                               "NIfTI (*.nii.gz);;NRRD (*.nrrd);;3D Slicer segmentation (*.seg.nrrd)")
            if not p:
                return False
            path = Path(p)
        try:
            write_label_map(str(path), self.case, overwrite=True)
        except Exception as exc:
            self._show_error("Save failed", str(exc))
            return False
        self.history.mark_saved()
        self.autosave_store.discard(self._source_key(), self.case.labels.shape)
        return True

    def closeEvent(self, ev):  # noqa: N802
        if self.history is not None and self.history.is_modified and not self._closing:
            choice = self._ask_unsaved()
            if choice == "cancel" or (choice == "save" and not self._save_now()):
                ev.ignore()
                return
            if choice == "discard":
                self.autosave_store.discard(self._source_key(), self.case.labels.shape)
        self._closing = True
        self.autosave_timer.stop()
        self._refresh_timer.stop()
        self.runner.shutdown(grace_s=2.0)
        if self.view3d is not None:
            self.view3d.close_plotter()
        super().closeEvent(ev)
