"""The Plan tab: Couinaud segment map, lesion locations, virtual resection scenarios and their figures.

All computing is engine.planning's (a :class:`engine.planning.planner.Planner` on a copy of the case's
labels, kept up to date after each edit with only what the edit touched); this panel shows it and turns
clicks into plan steps. What is decided (scenarios, patient, the segment map and its hand corrections)
belongs to the open case: ``window.session.planning`` (engine.planning.state.PlanningState), changed only
through ``session.change_plan`` (undoable with Ctrl+Z, autosaved, saved beside the labels); this tab
mirrors it on the session's ``"planning"`` event. It talks to the window only through the window's public
attributes (case, session, runner, views, view3d, measure_panel, set_position, statusBar).
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QHeaderView, QInputDialog, QLayout,
                               QLabel, QListWidget, QListWidgetItem, QPushButton, QScrollArea,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from engine.errors import InputError
from engine.planning import couinaud as cn
from engine.planning import display
from engine.planning.planner import Planner
from engine.planning.resection import CONDITION_TEXT, Patient, Scenario, bsa_mosteller, figures_text
from engine.planning.state import VoxelStroke

log = logging.getLogger(__name__)

CLICK_MODES = (("navigate", "Click: move the crosshair"), ("segment", "Click: tick / untick the segment"),
               ("paint", "Drag: paint a region to resect"), ("unpaint", "Drag: erase painted region"),
               ("correct", "Drag: correct the segment map"))


def _swatch(rgb, size: int = 12) -> QLabel:
    pm = QPixmap(size, size)
    pm.fill(QColor(*rgb))
    lab = QLabel()
    lab.setPixmap(pm)
    return lab


def _compute(labels, geometry, segment_map, source, contact_mm, progress=None, cancel=None, lesion_ids=None) -> Planner:
    return Planner(labels, geometry, segment_map, source, contact_mm, lesion_ids=lesion_ids).run(progress=progress,
                                                                                               cancel=cancel)


def _update(planner: Planner, box) -> set:
    return planner.update(box)


class PlanPanel(QWidget):
    """The Plan tab (see the module docstring). ``figures_changed`` carries the current figures dict."""

    figures_changed = Signal(dict)
    planning_ready = Signal()

    def __init__(self, window, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.window = window
        self.planner: Optional[Planner] = None
        self.figures: Optional[dict] = None
        self._case = None
        self._map_version = -1             # the plan's segment map version the planner was made with
        self._pending_box = None
        self._has_pending = False
        self._painting = False
        self._building = False
        self._picking_3d = None            # the 3D view whose double clicks tick segments
        self._parts_pending = False         # the 3D remnant/resected surfaces are out of date
        self._stroke: Optional[VoxelStroke] = None   # the voxels of the paint / correction drag in progress
        self._map_pending = False          # the plan's segment map changed while the planner was busy
        self._select_name: Optional[str] = None      # the scenario to select at the next mirror

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        outer.addWidget(scroll)
        inner = QWidget()
        scroll.setWidget(inner)
        lay = QVBoxLayout(inner)
        # the content keeps its natural height and the tab scrolls (a short dock squeezed the rows together)
        lay.setSizeConstraint(QLayout.SetMinimumSize)

        # --- segments -------------------------------------------------------------------------
        box = QGroupBox("Liver segments (Couinaud)")
        bl = QVBoxLayout(box)
        row = QHBoxLayout()
        self.compute_btn = QPushButton("Compute planning")
        self.compute_btn.setToolTip("Estimate the segments from the vessels, locate every lesion and measure "
                                    "its distances to the vessels")
        self.compute_btn.clicked.connect(self.compute)
        self.load_btn = QPushButton("Load segment map…")
        self.load_btn.setToolTip("A Couinaud segment map (values 0-8, e.g. a Couinaud model's output; a 3D Slicer "
                                 "segmentation whose segment names say 'segment 2', 'Couinaud IV'...; other values "
                                 "through a segment mapping the tab asks for) replaces the estimate")
        self.load_btn.clicked.connect(self._load_dialog)
        row.addWidget(self.compute_btn)
        row.addWidget(self.load_btn)
        bl.addLayout(row)
        self.show_segments = QCheckBox("Show the segment map in the slices")
        self.show_segments.toggled.connect(self._show_layer)
        bl.addWidget(self.show_segments)
        legend = QGridLayout()
        for k, name in cn.SEGMENT_NAMES.items():
            r, c = divmod(k - 1, 4)
            h = QHBoxLayout()
            h.addWidget(_swatch(cn.SEGMENT_COLOURS[k]))
            h.addWidget(QLabel(name))
            h.addStretch(1)
            legend.addLayout(h, r, c)
        bl.addLayout(legend)
        self.status = QLabel("Press Compute planning.")
        self.status.setWordWrap(True)
        self.status.setObjectName("plan_status")
        bl.addWidget(self.status)
        lay.addWidget(box)

        # --- scenario -------------------------------------------------------------------------
        box = QGroupBox("Resection scenarios")
        bl = QVBoxLayout(box)
        self.scenario_list = QListWidget()
        self.scenario_list.setMaximumHeight(90)
        self.scenario_list.currentRowChanged.connect(self._scenario_selected)
        bl.addWidget(self.scenario_list)
        row = QHBoxLayout()
        self.new_btn = QPushButton("New")
        self.new_btn.clicked.connect(lambda: self.new_scenario())
        self.rename_btn = QPushButton("Rename…")
        self.rename_btn.clicked.connect(self._rename_dialog)
        self.delete_btn = QPushButton("Delete")
        self.delete_btn.clicked.connect(self.delete_scenario)
        for b in (self.new_btn, self.rename_btn, self.delete_btn):
            row.addWidget(b)
        bl.addLayout(row)
        bl.addWidget(QLabel("Resect segments:"))
        grid = QGridLayout()
        self.segment_checks: dict[int, QCheckBox] = {}
        for k, name in cn.SEGMENT_NAMES.items():
            cb = QCheckBox(name)
            cb.toggled.connect(self._controls_changed)
            self.segment_checks[k] = cb
            grid.addWidget(cb, (k - 1) // 4, (k - 1) % 4)
        bl.addLayout(grid)
        bl.addWidget(QLabel("Wedges around lesions (margin clipped to the liver):"))
        self.wedge_list = QListWidget()
        self.wedge_list.setMaximumHeight(80)
        self.wedge_list.itemChanged.connect(self._controls_changed)
        bl.addWidget(self.wedge_list)
        form = QFormLayout()
        self.margin = QDoubleSpinBox()
        self.margin.setRange(0.0, 50.0)
        self.margin.setValue(10.0)
        self.margin.setSuffix(" mm")
        self.margin.valueChanged.connect(self._controls_changed)
        form.addRow("Wedge margin", self.margin)
        self.click_mode = QComboBox()
        for key, text in CLICK_MODES:
            self.click_mode.addItem(text, key)
        form.addRow("In the slices", self.click_mode)
        self.paint_radius = QDoubleSpinBox()
        self.paint_radius.setRange(1.0, 50.0)
        self.paint_radius.setValue(8.0)
        self.paint_radius.setSuffix(" mm")
        form.addRow("Paint radius", self.paint_radius)
        self.correct_segment = QComboBox()
        for k, name in cn.SEGMENT_NAMES.items():
            self.correct_segment.addItem(f"segment {name}", k)
        self.correct_segment.setToolTip("The segment the 'correct the segment map' drag paints (liver voxels only)")
        form.addRow("Correct to", self.correct_segment)
        bl.addLayout(form)
        lay.addWidget(box)

        # --- patient --------------------------------------------------------------------------
        box = QGroupBox("Patient (for the standardised FLR)")
        form = QFormLayout(box)
        self.height = QDoubleSpinBox()
        self.height.setRange(0.0, 250.0)
        self.height.setSpecialValueText("not given")
        self.height.setSuffix(" cm")
        self.weight = QDoubleSpinBox()
        self.weight.setRange(0.0, 350.0)
        self.weight.setSpecialValueText("not given")
        self.weight.setSuffix(" kg")
        self.condition = QComboBox()
        for key, text in CONDITION_TEXT.items():
            self.condition.addItem(text, key)
        for w in (self.height, self.weight):
            w.valueChanged.connect(self._controls_changed)
        self.condition.currentIndexChanged.connect(self._controls_changed)
        form.addRow("Height", self.height)
        form.addRow("Weight", self.weight)
        form.addRow("Liver", self.condition)
        self.contact = QDoubleSpinBox()
        self.contact.setRange(0.0, 20.0)
        self.contact.setValue(1.0)
        self.contact.setSuffix(" mm")
        self.contact.setToolTip("A lesion this close to a vessel is in contact (applies at the next Compute)")
        form.addRow("Contact at or below", self.contact)
        self.line_range = QDoubleSpinBox()
        self.line_range.setRange(0.0, 100.0)
        self.line_range.setValue(10.0)
        self.line_range.setSuffix(" mm")
        self.line_range.valueChanged.connect(self._update_3d_lines)
        form.addRow("3D lines to vessels within", self.line_range)
        lay.addWidget(box)

        # --- figures --------------------------------------------------------------------------
        self.figures_text = QLabel("")
        self.figures_text.setObjectName("plan_figures")
        self.figures_text.setWordWrap(True)
        self.figures_text.setFont(QFont("Monospace", 8))
        self.figures_text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.figures_text)
        self.show3d = QCheckBox("Show remnant (green) and resected part (red) in 3D")
        self.show3d.toggled.connect(self._update_3d_parts)
        lay.addWidget(self.show3d)
        lay.addWidget(QLabel("Scenarios side by side:"))
        self.compare = QTableWidget(0, 6)
        self.compare.setHorizontalHeaderLabels(["Scenario", "Resected\n(mL)", "Remnant\n(mL)", "FLR\n(%)",
                                                "sFLR\n(%)", "Lesions\nleft"])
        self.compare.verticalHeader().setVisible(False)
        self.compare.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        self.compare.setSelectionMode(QAbstractItemView.NoSelection)
        self.compare.setMaximumHeight(130)
        lay.addWidget(self.compare)
        row = QHBoxLayout()
        self.export_btn = QPushButton("Export planning (CSV + JSON)…")
        self.export_btn.clicked.connect(self._export_dialog)
        self.import_btn = QPushButton("Import scenarios…")
        self.import_btn.setToolTip("The scenarios of a planning.json exported earlier for this case")
        self.import_btn.clicked.connect(self._import_dialog)
        row.addWidget(self.export_btn)
        row.addWidget(self.import_btn)
        lay.addLayout(row)
        self.vanished_btn = QPushButton("Vanished lesions from a comparison…")
        self.vanished_btn.setToolTip("The comparison.json of 'liverplan compare' (or the comparison window) whose "
                                     "follow-up is this scan: each scenario then says whether it leaves the site "
                                     "of a lesion that vanished")
        self.vanished_btn.clicked.connect(self._vanished_dialog)
        lay.addWidget(self.vanished_btn)
        self.vanished_status = QLabel("")
        self.vanished_status.setObjectName("plan_vanished")
        self.vanished_status.setWordWrap(True)
        lay.addWidget(self.vanished_status)
        lay.addStretch(1)
        self._set_enabled(False)
        window.session.listen(self._on_session)

    # --- state ----------------------------------------------------------------------------------
    def _set_enabled(self, on: bool) -> None:
        for w in (self.new_btn, self.rename_btn, self.delete_btn, self.margin, self.export_btn, self.import_btn,
                  self.vanished_btn, self.show3d,
                  self.show_segments, *self.segment_checks.values(), self.wedge_list):
            w.setEnabled(on)

    def set_case(self, case) -> None:
        """A new case: nothing planned yet (never the previous case's planning)."""
        self._case = case
        self.planner = None
        self.figures = None
        self._map_version = -1
        self._map_pending = False
        self.scenario_list.clear()
        self.wedge_list.clear()
        self.compare.setRowCount(0)
        self.figures_text.setText("")
        self.vanished_status.setText("")
        self.status.setText("Press Compute planning.")
        self.show_segments.setChecked(False)
        self.show3d.setChecked(False)
        self._set_enabled(False)

    def compute(self) -> None:
        """Start the planning of the case shown (in the background)."""
        w = self.window
        if w.case is None or w.runner.running("plan"):
            return
        self.status.setText("Computing the planning…")
        self.compute_btn.setEnabled(False)
        case = w.case
        st = w.session.planning
        seg_map, source = (st.segment_map, st.segment_source) if st is not None and st.segment_map is not None \
            else (None, "")
        self._map_version = st.map_version if st is not None else -1
        model_map = w.session.extra_maps.get("couinaud")
        if seg_map is None and model_map is not None and model_map.shape == case.labels.shape:
            # the Couinaud segments of the last model run (README "Model sets"): they replace the estimate
            seg_map, source = model_map.copy(), "from the segmentation model's Couinaud segments"
        from engine.lesion_ids import ids_like_report
        session = w.session
        t = w.runner.start("plan", _compute, case.labels.copy(), case.geometry, seg_map, source,
                           float(self.contact.value()),
                           # the lesions numbered as the Measure tab numbers them (kept through edits)
                           lesion_ids=lambda comps: ids_like_report(
                               comps, session.report.lesions if session.report is not None else []))
        t.succeeded.connect(lambda p, c=case: self._on_planner(p, c))
        t.failed.connect(lambda msg, exc: self._failed(msg))
        t.done.connect(lambda: self.compute_btn.setEnabled(True))

    def _failed(self, msg: str) -> None:
        self.status.setText(f"Planning failed: {msg}")

    def _on_planner(self, planner: Planner, case) -> None:
        if case is not self.window.case:
            return
        self.planner = planner
        self._map_pending = False                 # the planner was made with the plan's map of its start
        st = self.window.session.planning
        if st is not None and st.map_version != self._map_version:
            self._apply_plan_map(after=False)      # the plan's map changed while it was computed
        planner.scenarios = st.scenario_dict() if st is not None else {}
        self._mirror_list()
        self._after_planning()
        if not planner.scenarios:
            self.new_scenario(by_user=False)     # an empty first scenario: not an unsaved change
        if self._has_pending:
            self._run_update()
        self.planning_ready.emit()

    def _after_planning(self) -> None:
        p = self.planner
        est = p.estimate
        notes = [est.status_text] + list(est.quality)
        if not est.segments_ok:
            # say what can still be done: without segments the tick boxes below are greyed out
            notes.append("Segment resections are off until segments exist: load a segment map "
                         "(Load segment map…), or correct the hepatic veins (Correct tab) and press Compute "
                         "planning again. Wedges around lesions and painted resections work now.")
        vols = p.segment_volumes()
        if vols:
            notes.append("Volumes (mL): " + ", ".join(f"{k} {v:.0f}" for k, v in vols.items()))
        b = p.bilobar()
        notes.append("Bilobar disease: " + ("unknown" if b is None else ("yes" if b else "no")))
        self.status.setText("\n".join(notes))
        self._set_enabled(True)
        for k, cb in self.segment_checks.items():
            cb.setEnabled(est.segments_ok)
        self.show_segments.setEnabled(est.segments_ok)
        self._fill_wedges()
        self.window.measure_panel.set_planning(display.lesion_columns(p.lesions))
        self._show_layer(self.show_segments.isChecked())
        self._load_scenario_controls()
        self.refresh_figures()
        self._update_3d_lines()
        v3 = self.window.view3d
        if v3 is not None and self._picking_3d is not v3:
            v3.point_picked.connect(self.pick_3d)
            self._picking_3d = v3

    def pick_3d(self, xyz) -> None:
        """A double click on a 3D surface (LPS mm): in the segment mode, tick / untick the segment there."""
        w = self.window
        if self.planner is None or w.case is None or self.click_mode.currentData() != "segment":
            return
        zyx = [int(round(v)) for v in w.case.geometry.physical_to_index(xyz)]
        self.handle_mouse("click", zyx, 0)

    def _fill_wedges(self) -> None:
        sc = self.current_scenario()
        chosen = set(sc.wedges) if sc else set()
        self.wedge_list.blockSignals(True)
        self.wedge_list.clear()
        for loc in self.planner.lesions:
            it = QListWidgetItem(f"Lesion {loc.id}: {loc.volume_ml:.2f} mL, "
                                 f"{loc.segments_text or 'segment unknown'}")
            it.setData(Qt.UserRole, loc.id)
            it.setFlags(it.flags() | Qt.ItemIsUserCheckable)
            it.setCheckState(Qt.Checked if loc.id in chosen else Qt.Unchecked)
            self.wedge_list.addItem(it)
        self.wedge_list.blockSignals(False)

    # --- edits of the labels --------------------------------------------------------------------
    def labels_changed(self, box) -> None:
        """The window's labels changed inside ``box`` (z0, z1, y0, y1, x0, x1; None = anywhere): bring the
        planning up to date (only what the edit touched is recomputed, in the background)."""
        if self.planner is None:
            if self.window.runner.running("plan"):
                # a planning of the labels before this edit is under way: bring it up to date when it ends
                self._has_pending, self._pending_box = True, None
            return
        sl = None if box is None else (slice(box[0], box[1]), slice(box[2], box[3]), slice(box[4], box[5]))
        if self._has_pending:
            self._pending_box = None if (self._pending_box is None or sl is None) else tuple(
                slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(self._pending_box, sl))
        else:
            self._pending_box = sl
        self._has_pending = True
        if not self.window.runner.running("plan"):
            self._run_update()

    def _run_update(self) -> None:
        w = self.window
        if self.planner is None or w.case is None:
            return
        box, self._pending_box, self._has_pending = self._pending_box, None, False
        whole = (slice(None),) * 3
        # the planner works on its own copy: bring the edited box over, then let it see what changed
        self.planner.full_labels[box or whole] = w.case.labels[box or whole]
        t = w.runner.start("plan", _update, self.planner, box, progress=False)
        case = w.case
        t.succeeded.connect(lambda done, c=case: self._on_updated(done, c))
        t.failed.connect(lambda msg, exc: self._failed(msg))

    def _on_updated(self, done: set, case) -> None:
        if case is not self.window.case or self.planner is None:
            return
        if self._map_pending:
            self._apply_plan_map()
        elif done:
            self._after_planning()
        if self._has_pending:
            self._run_update()

    # --- the case's plan (engine.planning.state via the session) ----------------------------------
    def _on_session(self, kind: str, data) -> None:
        if kind == "planning" and data.how != "reset":
            self._mirror(data)

    def _mirror(self, change) -> None:
        """The case's plan changed (a step here, Ctrl+Z / Ctrl+Y anywhere, a plan read or restored):
        show it."""
        st = self.window.session.planning
        self._show_patient(st.patient)
        if self.planner is None:
            self._mirror_list()
            return
        self.planner.scenarios = st.scenario_dict()
        if change.map_changed:
            if self.window.runner.running("plan"):
                self._map_pending = True          # applied when the update under way ends
            else:
                self._apply_plan_map()
        self._mirror_list()
        self._load_scenario_controls()
        self.refresh_figures()

    def _apply_plan_map(self, after: bool = True) -> None:
        self._map_pending = False
        st = self.window.session.planning
        self._map_version = st.map_version
        try:
            if st.segment_map is None and self.window.session.extra_maps.get("couinaud") is not None \
                    and self.window.session.extra_maps["couinaud"].shape == self.window.case.labels.shape:
                self.planner.set_segment_map(self.window.session.extra_maps["couinaud"],
                                             "from the segmentation model's Couinaud segments")
            else:
                self.planner.set_segment_map(st.segment_map, st.segment_source)
        except InputError as exc:
            self.status.setText(str(exc))
            return
        if after:
            self._after_planning()

    def _mirror_list(self) -> None:
        """The scenario list as the plan has it; the selection stays on the same name where it can."""
        st = self.window.session.planning
        names = [sc.name for sc in st.scenarios] if st is not None else []
        cur = self.scenario_list.currentItem()
        want = self._select_name or (cur.text() if cur is not None else None)
        self._select_name = None
        shown = [self.scenario_list.item(i).text() for i in range(self.scenario_list.count())]
        self.scenario_list.blockSignals(True)
        try:
            if shown != names:
                row = self.scenario_list.currentRow()
                self.scenario_list.clear()
                self.scenario_list.addItems(names)
                if want in names:
                    self.scenario_list.setCurrentRow(names.index(want))
                elif names:
                    self.scenario_list.setCurrentRow(min(max(row, 0), len(names) - 1))
            elif want in names:
                self.scenario_list.setCurrentRow(names.index(want))
        finally:
            self.scenario_list.blockSignals(False)

    def _show_patient(self, patient: Patient) -> None:
        self._building = True
        try:
            for wdg, v in ((self.height, patient.height_cm), (self.weight, patient.weight_kg)):
                wdg.blockSignals(True)
                wdg.setValue(float(v or 0.0))
                wdg.blockSignals(False)
            self.condition.blockSignals(True)
            self.condition.setCurrentIndex(max(0, self.condition.findData(patient.condition)))
            self.condition.blockSignals(False)
        finally:
            self._building = False

    def _plan(self, method: str, *args, **kwargs):
        """One step of the case's plan (session.change_plan); a refusal is said under the segments."""
        try:
            return self.window.session.change_plan(method, *args, **kwargs)
        except InputError as exc:
            self.status.setText(str(exc))
            return None

    # --- scenarios ------------------------------------------------------------------------------
    def current_scenario(self) -> Optional[Scenario]:
        """The scenario selected in the list, as the case's plan holds it now."""
        it = self.scenario_list.currentItem()
        st = self.window.session.planning
        if it is None or self.planner is None or st is None:
            return None
        return st.scenario(it.text())

    def new_scenario(self, name: Optional[str] = None, by_user: bool = True) -> Optional[Scenario]:
        if self.planner is None:
            return None
        st = self.window.session.planning
        n_before = len(st.scenarios)
        step = self._plan("new_scenario", name or None, margin_mm=float(self.margin.value()),
                          counts_as_edit=by_user)
        if step is None or len(st.scenarios) == n_before:
            return None
        sc = st.scenarios[-1]
        self._select_name = sc.name
        self._mirror_list()
        self._load_scenario_controls()
        self.refresh_figures()
        return sc

    def rename_scenario(self, new: str) -> None:
        sc = self.current_scenario()
        new = new.strip()
        if sc is None or not new or new == sc.name:
            return
        self._select_name = new
        if self._plan("rename_scenario", sc.name, new) is None:
            self._select_name = None

    def _rename_dialog(self) -> None:
        sc = self.current_scenario()
        if sc is None:
            return
        text, ok = QInputDialog.getText(self, "Rename scenario", "Name:", text=sc.name)
        if ok:
            self.rename_scenario(text)

    def delete_scenario(self) -> None:
        sc = self.current_scenario()
        if sc is None:
            return
        self._plan("delete_scenario", sc.name)

    def _scenario_selected(self, _row: int) -> None:
        self._load_scenario_controls()
        self.refresh_figures()

    def _load_scenario_controls(self) -> None:
        sc = self.current_scenario()
        self._building = True
        try:
            for k, cb in self.segment_checks.items():
                cb.setChecked(bool(sc and k in sc.segments))
            for i in range(self.wedge_list.count()):
                it = self.wedge_list.item(i)
                it.setCheckState(Qt.Checked if sc and it.data(Qt.UserRole) in sc.wedges else Qt.Unchecked)
            if sc is not None:
                self.margin.setValue(sc.margin_mm)
        finally:
            self._building = False

    def _controls_changed(self, *_):
        if self._building:
            return
        st = self.window.session.planning
        if st is None:
            return
        h, w = float(self.height.value()), float(self.weight.value())
        patient = Patient(h or None, w or None, self.condition.currentData())
        if patient != st.patient:
            self._plan("set_patient", patient)
        if self.planner is None:
            return
        sc = self.current_scenario()
        if sc is not None:
            segments = [k for k, cb in self.segment_checks.items() if cb.isChecked()]
            wedges = sorted(self.wedge_list.item(i).data(Qt.UserRole) for i in range(self.wedge_list.count())
                            if self.wedge_list.item(i).checkState() == Qt.Checked)
            margin = float(self.margin.value())
            if segments != sorted(sc.segments) or wedges != sorted(sc.wedges):
                self._plan("set_scenario", sc.name, segments=segments, wedges=wedges, margin_mm=margin)
            elif margin != sc.margin_mm:
                self._plan("set_scenario", sc.name, margin_mm=margin)   # typed digit by digit: one step
        self.refresh_figures()

    def patient(self) -> Patient:
        """The patient's figures of the case's plan."""
        st = self.window.session.planning
        return st.patient if st is not None else Patient()

    def refresh_figures(self) -> None:
        """The current scenario's live figures and the comparison table."""
        if self.planner is None:
            return
        note = ""
        try:
            patient = self.patient()
            if patient.height_cm and patient.weight_kg:
                bsa_mosteller(float(patient.height_cm), float(patient.weight_kg))   # checks the ranges
        except InputError as exc:
            # an out-of-range height/weight (also on the way to a valid one: 1, 17, 178 cm): said, and the
            # figures and the comparison stay, without the standardised FLR
            patient, note = Patient(None, None, self.patient().condition), str(exc)
        self.planner.patient = patient
        sc = self.current_scenario()
        if sc is not None:
            try:
                self.figures = self.planner.figures(sc)
                st = self.window.session.planning
                vanished = "".join(f"\n{n}" for n in st.vanished_notes(self.planner, sc))
                if st.vanished_source and not st.vanished_sites:
                    vanished = f"\nNo lesion vanished in {st.vanished_source}."
                self.figures_text.setText(figures_text(self.figures) + vanished + (f"\n{note}" if note else ""))
                self.figures_changed.emit(self.figures)
            except Exception as exc:
                self.figures = None
                self.figures_text.setText(str(exc))
        else:
            # the last scenario deleted: its figures must not stay on screen as if it still existed
            self.figures = None
            self.figures_text.setText("No resection scenario: press New to make one, then tick segments or "
                                      "wedges.")
        self.compare.setRowCount(0)
        for fig in self.planner.compare():
            r = self.compare.rowCount()
            self.compare.insertRow(r)
            vals = [fig["scenario"], f"{fig['resected_ml']:.0f}", f"{fig['remnant_ml']:.0f}",
                    "—" if fig["flr_pct"] is None else f"{fig['flr_pct']:.1f}",
                    "—" if fig["sflr_pct"] is None else f"{fig['sflr_pct']:.1f}",
                    " ".join(str(d["lesion"]) for d in fig["lesions_left"]) or "none"]
            for c, v in enumerate(vals):
                it = QTableWidgetItem(v)
                it.setFlags(it.flags() & ~Qt.ItemIsEditable)
                self.compare.setItem(r, c, it)
        self._update_3d_parts()

    # --- the slices -------------------------------------------------------------------------------
    def _show_layer(self, on: bool) -> None:
        vol = self.planner.segments_full() if (on and self.planner is not None) else None
        lut = display.segment_lut() if vol is not None else None
        for v in self.window.views:
            v.set_layer(vol, lut)

    def handle_mouse(self, kind: str, zyx, axis: int) -> bool:
        """A mouse event in a slice pane; True when the Plan tab used it (segment ticking, painting)."""
        mode = self.click_mode.currentData()
        if mode == "navigate" or self.planner is None or not self.isVisible():
            return False
        sc = self.current_scenario()
        if sc is None:
            return False
        if mode == "segment":
            if kind == "click":
                seg = self.planner.segment_at(zyx)
                if seg:
                    cb = self.segment_checks[seg]
                    cb.setChecked(not cb.isChecked())
                else:
                    self.window.statusBar().showMessage("No liver segment there.", 4000)
            return True
        if mode == "correct":
            # the same path as the Correct tab's brush on the segment map: engine.edits.brush through the
            # session, one plan step per drag
            s = self.window.session
            if kind in ("press", "click"):
                base = self.segment_editing()
                if base is None:
                    return True
                try:
                    s.begin_segment_stroke(*base)
                except InputError as exc:
                    self.status.setText(str(exc))
                    return True
            if not s.stroke_active:
                return True
            seg = int(self.correct_segment.currentData())
            if kind in ("press", "move", "click"):
                s.dab(zyx, axis, float(self.paint_radius.value()), seg)
            if kind in ("release", "click"):
                step = s.end_stroke("brush", f"Correct the segment map (segment {cn.SEGMENT_NAMES[seg]})")
                if step is not None:
                    self.window.statusBar().showMessage(f"{step.description} (Ctrl+Z takes it back).", 5000)
            return True
        # a drag (paint, unpaint): its dabs collected, one step of the case's plan at the end
        if kind in ("press", "click") or self._stroke is None:
            self._stroke = VoxelStroke()
        if kind in ("press", "move", "click"):
            self._stroke.add(display.disk_voxels(zyx, axis, float(self.paint_radius.value()),
                                                 self.window.case.geometry))
        if kind not in ("release", "click"):
            return True
        voxels, self._stroke = self._stroke.voxels, None
        self._plan("paint", sc.name, voxels, erase=(mode == "unpaint"))
        return True

    def segment_editing(self):
        """(the segments shown, the planning liver, their source) for an edit of the case's segment map
        (the Correct tab's tools or this tab's correction drag), or None when there is nothing to edit yet
        (said in the status bar and under the segments)."""
        w = self.window
        if self.planner is None:
            text = "Press Compute planning in the Plan tab first: the segment map is made there."
        elif w.runner.running("plan"):
            # the planning is being brought up to date after an edit: which voxels are liver may change
            text = "The planning is being updated; correct the segment map again in a moment."
        elif self.planner.segments_full() is None:
            text = ("There is no segment map to correct: the segments could not be estimated. Load a segment "
                    "map from a file first.")
        else:
            if not self.show_segments.isChecked():
                self.show_segments.setChecked(True)      # what is painted is seen
            est = self.planner.estimate
            return (self.planner.segments_full(), self.planner.liver_full(),
                    est.source if est is not None else "estimated from the vessels")
        self.status.setText(text)
        w.message(text)
        return None

    # --- 3D ---------------------------------------------------------------------------------------
    def _update_3d_parts(self, *_):
        v3 = self.window.view3d
        if v3 is None:
            return
        sc = self.current_scenario()
        if not self.show3d.isChecked() or sc is None or self.planner is None or self.figures is None:
            v3.set_extra("remnant", None)
            v3.set_extra("resected", None)
            return
        if self.window.runner.running("plan3d"):
            # built again once the running one ends: a tick made meanwhile must not be dropped
            self._parts_pending = True
            return
        self._parts_pending = False
        masks = self.planner.masks(sc)
        t = self.window.runner.start("plan3d", display.scenario_surfaces, masks, self.window.case.geometry,
                                     progress=False)
        t.succeeded.connect(self._on_parts)
        t.done.connect(self._parts_done)

    def _parts_done(self) -> None:
        if self._parts_pending:
            self._update_3d_parts()

    def _on_parts(self, parts: dict) -> None:
        v3 = self.window.view3d
        if v3 is None or not self.show3d.isChecked():
            return
        v3.set_extra("remnant", parts.get("remnant"), color=(0.35, 0.75, 0.35), opacity=0.45)
        v3.set_extra("resected", parts.get("resected"), color=(0.9, 0.25, 0.2), opacity=0.6)

    def _update_3d_lines(self, *_):
        v3 = self.window.view3d
        if v3 is None or self.planner is None:
            return
        v3.set_extra("vessel_lines", display.distance_lines(self.planner.lesions, float(self.line_range.value())),
                     color=(1.0, 1.0, 0.2), line_width=3)

    # --- files ------------------------------------------------------------------------------------
    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a Couinaud segment map", "",
                                              "Label maps (*.nii.gz *.nii *.nrrd *.mha);;All files (*)")
        if path:
            self.load_segment_map(path)

    def load_segment_map(self, path: str, mapping=None) -> None:
        """Read a segment map (0..8, or through ``mapping``) onto the case's grid; it replaces the estimate."""
        from pathlib import Path

        import os

        from engine.planning.planner import SegmentMappingNeeded, read_segment_map

        w = self.window
        if w.case is None:
            return
        try:
            seg_map = read_segment_map(path, w.case.geometry, mapping)
        except SegmentMappingNeeded as exc:
            # a foreign map (values other than 0-8): read it through a segment mapping, as `plan
            # --segments-mapping` does
            self.status.setText(f"The segment map could not be used: {exc}")
            if mapping is None and not os.environ.get("LIVERPLAN_NO_DIALOGS"):
                m, _ = QFileDialog.getOpenFileName(self, f"A segment mapping for {Path(path).name} "
                                                   "(JSON: {\"I\": [11], \"II\": [12], …})", "",
                                                   "Segment mapping (*.json);;All files (*)")
                if m:
                    self.load_segment_map(path, m)
            return
        except Exception as exc:
            self.status.setText(f"The segment map could not be used: {exc}")
            return
        step = self._plan("set_segment_map", seg_map, f"from the file {Path(path).name}",
                          f"Load the segment map {Path(path).name}")
        if step is not None and self.planner is None:
            self.compute()

    def _export_dialog(self) -> None:
        if self.planner is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Export the planning into a folder")
        if folder:
            self.export(folder)

    def _import_dialog(self) -> None:
        if self.planner is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import scenarios", "", "Planning (planning.json);;JSON (*.json)")
        if path:
            self.import_scenarios(path)

    def _vanished_dialog(self) -> None:
        if self.planner is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Vanished lesions from a comparison", "",
                                              "Comparison (comparison.json);;JSON (*.json)")
        if path:
            self.load_vanished(path)

    def load_vanished(self, path: str) -> int:
        """Read the vanished lesions of a comparison.json made with this scan as its follow-up; the current
        scenario's figures then say whether it leaves their sites. Returns how many (-1: refused)."""
        from pathlib import Path

        try:
            n = self.window.session.planning.load_vanished(path, self.window.case.geometry)
        except InputError as exc:
            self.vanished_status.setText(f"The vanished lesions could not be read: {exc}")
            return -1
        self.vanished_status.setText(f"{n} vanished lesion(s) from {Path(path).name}: each scenario says "
                                     "whether it leaves their sites.")
        self.refresh_figures()
        return n

    def import_scenarios(self, path: str) -> int:
        """Add the scenarios of a planning.json (same case) to the list; returns how many."""
        from engine.planning.planner import read_scenarios

        try:
            got = read_scenarios(path, self.window.case.labels.shape)
        except Exception as exc:
            self.status.setText(f"The scenarios could not be imported: {exc}")
            return 0
        if got:
            self._select_name = got[-1].name
            self._plan("import_scenarios", got)
        return len(got)

    def export(self, folder: str) -> list:
        try:
            paths = self.planner.write(folder, overwrite=True)
        except Exception as exc:
            self.window.statusBar().showMessage(f"Export failed: {exc}", 8000)
            return []
        self.window.statusBar().showMessage("Wrote " + ", ".join(str(p) for p in paths), 8000)
        return paths
