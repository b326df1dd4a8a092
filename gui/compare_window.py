"""The comparison window (File > Compare with a follow-up…): the baseline and the follow-up registered onto
it side by side with one linked crosshair, the lesion change table (click a row: both viewers jump to the
lesion), RECIST 1.1 targets, and a 3D view with the baseline lesions as outlines and the follow-up's as
surfaces. engine.compare does the work on a worker (gui.workers.TaskRunner); this window only shows it."""
from __future__ import annotations

import logging
import os
from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QMainWindow,
                               QMessageBox, QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from engine.compare.comparison import KIND_WORDS, NOT_FOR_CLINICAL_USE
from engine.compare.recist import WORDS
from engine.errors import LiverPlanError

from .slice_view import SliceView
from .workers import TaskRunner

log = logging.getLogger(__name__)

COLUMNS = ["Lesion", "Change", "Baseline mL", "Follow-up mL", "Volume change", "Baseline Ø mm", "Follow-up Ø mm",
           "Ø change", "Confidence", "Target"]

IMAGE_FILTER = "CT images (*.nii *.nii.gz *.nrrd *.mha *.mhd);;All files (*)"
LABEL_FILTER = "Label maps (*.nii *.nii.gz *.nrrd *.seg.nrrd *.mha);;All files (*)"


class CompareWindow(QMainWindow):
    """One comparison: ``baseline`` (a Case with labels) against ``followup`` (a Case) or the files
    ``followup_paths`` = (CT, labels) read on the worker."""

    def __init__(self, baseline, followup=None, followup_paths: Optional[tuple[str, str]] = None,
                 parent: Optional[QWidget] = None, with_3d: bool = True) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"LiverPlan — compare {baseline.name} with a follow-up")
        self.setObjectName("compare_window")
        self.resize(1500, 950)
        self.baseline = baseline
        self.followup = followup
        self.followup_paths = followup_paths
        self.comparison = None
        self.rows: list = []
        self.error: Optional[str] = None
        self.runner = TaskRunner(self)
        self.task = None

        self.base_view = SliceView(0)
        self.fu_view = SliceView(0)
        self.base_view.setObjectName("compare_baseline_view")
        self.fu_view.setObjectName("compare_followup_view")
        self.base_title = QLabel("Baseline")
        self.fu_title = QLabel("Follow-up (registered onto the baseline)")
        views = QWidget()
        vl = QHBoxLayout(views)
        vl.setContentsMargins(0, 0, 0, 0)
        for title, view in ((self.base_title, self.base_view), (self.fu_title, self.fu_view)):
            box = QWidget()
            bl = QVBoxLayout(box)
            bl.setContentsMargins(0, 0, 0, 0)
            bl.addWidget(title)
            bl.addWidget(view, 1)
            vl.addWidget(box, 1)
        self.view3d = None
        if with_3d:
            from .view3d import View3D
            self.view3d = View3D()
            self.view3d.setMinimumWidth(320)
            vl.addWidget(self.view3d, 1)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("compare_table")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.cellClicked.connect(lambda r, c: self.jump_to_row(r))

        self.status = QLabel("")
        self.status.setObjectName("compare_status")
        self.status.setWordWrap(True)
        self.summary = QLabel("")
        self.summary.setObjectName("compare_summary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.targets_edit = QLineEdit()
        self.targets_edit.setPlaceholderText("e.g. 1,3")
        self.targets_edit.setMaximumWidth(120)
        self.targets_button = QPushButton("Set RECIST targets")
        self.targets_button.clicked.connect(self.apply_targets)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        tools = QHBoxLayout()
        tools.addWidget(QLabel("RECIST 1.1 target lesions (baseline numbers, at most 2 in the liver):"))
        tools.addWidget(self.targets_edit)
        tools.addWidget(self.targets_button)
        tools.addStretch(1)
        self.pair_edit = QLineEdit()
        self.pair_edit.setPlaceholderText("baseline:follow-up, e.g. 3:5")
        self.pair_edit.setMaximumWidth(170)
        self.pair_button = QPushButton("Pair by hand")
        self.pair_button.clicked.connect(self.apply_pair)
        self.unpair_button = QPushButton("Unpair selected")
        self.unpair_button.clicked.connect(self.unpair_selected)
        self.reset_pairs_button = QPushButton("Automatic pairs")
        self.reset_pairs_button.clicked.connect(self.reset_pairs)
        for wdg in (self.pair_edit, self.pair_button, self.unpair_button, self.reset_pairs_button):
            tools.addWidget(wdg)
        tools.addWidget(self.cancel_button)

        lower = QWidget()
        ll = QVBoxLayout(lower)
        ll.setContentsMargins(4, 4, 4, 4)
        ll.addWidget(self.status)
        ll.addWidget(self.table, 1)
        ll.addLayout(tools)
        ll.addWidget(self.summary)
        note = QLabel(NOT_FOR_CLINICAL_USE)
        note.setStyleSheet("color: #a05000;")
        note.setWordWrap(True)
        ll.addWidget(note)
        split = QSplitter(Qt.Vertical)
        split.addWidget(views)
        split.addWidget(lower)
        split.setSizes([560, 390])
        self.setCentralWidget(split)

        from .main_window import label_lut
        for v in (self.base_view, self.fu_view):
            v.set_lut(label_lut({}))
            v.mouse_action.connect(self._on_mouse)
            v.slice_changed.connect(self._on_slice)
            v.window_changed.connect(self._on_window)

    # --- running --------------------------------------------------------------------------------
    def start(self) -> None:
        from engine.compare.meshes import run_comparison

        self.status.setText("Registering the follow-up onto the baseline inside the liver…")
        self.cancel_button.setEnabled(True)
        if self.followup is None:
            fn, args = _load_and_run, (self.baseline, *self.followup_paths)
        else:
            fn, args = run_comparison, (self.baseline, self.followup)
        self.task = self.runner.start("compare", fn, *args)
        self.task.progress.connect(self._on_progress)
        self.task.succeeded.connect(self._on_done)
        self.task.failed.connect(self._on_failed)
        self.task.cancelled.connect(lambda: self._finish_status("Cancelled; nothing was compared."))

    def is_busy(self) -> bool:
        return bool(self.runner.running())

    def cancel(self) -> None:
        self.runner.cancel_all()

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self.status.setText(f"{stage}… {done}/{total}" if total else f"{stage}…")

    def _finish_status(self, text: str) -> None:
        self.status.setText(text)
        self.cancel_button.setEnabled(False)

    def _on_failed(self, message: str, exc) -> None:
        self.error = message
        self._finish_status(f"Not compared: {message}")
        if not os.environ.get("LIVERPLAN_NO_DIALOGS"):
            QMessageBox.warning(self, "The scans cannot be compared", message)

    def _on_done(self, result) -> None:
        comp, meshes = result
        self.comparison = comp
        self.followup = comp.followup
        img, lab = comp.followup_on_baseline()
        g = comp.baseline.geometry
        centre = [s // 2 for s in g.shape]
        self.base_view.set_volume(comp.baseline.image, comp.baseline.labels, g, centre)
        self.fu_view.set_volume(img, lab, g, centre)
        reg = comp.registration
        self._finish_status(
            f"Registered in {reg.seconds:.0f} s: the liver surfaces lie {reg.residual_mean_mm:.1f} mm apart on average, "
            f"{reg.residual_p95_mm:.1f} mm at the 95th percentile." + "".join(" " + w for w in reg.warnings))
        self.base_title.setText(f"Baseline: {comp.baseline.name}")
        self.fu_title.setText(f"Follow-up: {comp.followup.name} (registered onto the baseline)")
        self.targets_edit.setText(",".join(str(t) for t in comp.targets))
        self.refresh_table()
        if self.view3d is not None:
            self.view3d.set_extra("liver", meshes.get("liver"), color=(0.6, 0.35, 0.2), opacity=0.12)
            self.view3d.set_extra("baseline_lesions", meshes.get("baseline_lesions_outline"), color=(1.0, 0.85, 0.1),
                                  line_width=1.0)
            self.view3d.set_extra("followup_lesions", meshes.get("followup_lesions"), color=(0.2, 0.8, 0.3))
            self.view3d.reset_camera()
        if self.rows:
            self.table.selectRow(0)
            self.jump_to_row(0)

    # --- table ----------------------------------------------------------------------------------
    def refresh_table(self) -> None:
        comp = self.comparison
        self.rows = comp.rows()
        self.table.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            fu = ", ".join(r.followup_names)
            name = r.track if not fu or fu == r.track else f"{r.track} → {fu}"
            vals = [name, KIND_WORDS[r.kind] + (" (by hand)" if r.by_hand else ""),
                    f"{r.baseline_volume_ml:.2f}", f"{r.followup_volume_ml:.2f}",
                    "" if r.volume_change_pct is None else f"{r.volume_change_pct:+.0f} %",
                    f"{r.baseline_diameter_mm:.1f}", f"{r.followup_diameter_mm:.1f}",
                    "" if r.diameter_change_pct is None else f"{r.diameter_change_pct:+.0f} %",
                    f"{r.confidence:.2f}", "target" if r.target else ""]
            for c, v in enumerate(vals):
                item = QTableWidgetItem(v)
                if r.kind == "vanished":
                    item.setToolTip("Vanished: its former place is shown on the follow-up; most vanished "
                                    "metastases persist microscopically and still need treatment.")
                self.table.setItem(i, c, item)
        self.table.resizeColumnsToContents()
        rec = comp.recist()
        vol = comp.volumetric()
        text = []
        if rec is None:
            text.append("RECIST 1.1: no measurable target lesion (≥ 10 mm) at baseline.")
        else:
            text.append(f"RECIST 1.1 (targets {', '.join(map(str, rec.targets))}): sum of diameters "
                        f"{rec.baseline_sld_mm:.1f} → {rec.followup_sld_mm:.1f} mm ({rec.change_pct:+.0f} %): "
                        f"<b>{rec.category}</b> ({WORDS[rec.category]}). {rec.reasons[0]}")
        text.append(f"Volumetric: {vol.baseline_ml:.1f} → {vol.followup_ml:.1f} mL ({vol.change_pct:+.0f} %): "
                    f"<b>{vol.category}</b> ({WORDS[vol.category]}).")
        self.summary.setText("<br>".join(text))

    def apply_targets(self) -> None:
        if self.comparison is None:
            return
        try:
            ids = [int(t) for t in self.targets_edit.text().replace(";", ",").split(",") if t.strip()]
            self.comparison.set_targets(ids)
        except ValueError:
            self.status.setText("Targets are lesion numbers separated by commas, e.g. 1,3.")
            return
        except LiverPlanError as exc:
            self.status.setText(str(exc))
            return
        self.status.setText(f"RECIST 1.1 targets: {', '.join(map(str, self.comparison.targets))}.")
        self.refresh_table()

    # --- re-pairing by hand (engine.compare.Comparison.pair / unpair) ------------------------------
    def apply_pair(self) -> None:
        """Pair the lesions typed as 'B:F' (several numbers with commas: '2,4:1')."""
        if self.comparison is None:
            return
        text = self.pair_edit.text().strip()
        try:
            b, f = text.split(":", 1)
            bs = [int(v) for v in b.split(",") if v.strip()]
            fs = [int(v) for v in f.split(",") if v.strip()]
            self.comparison.pair(bs, fs)
        except ValueError:
            self.status.setText("Type the pair as baseline:follow-up lesion numbers, e.g. 3:5 (follow-up numbers "
                                "as in the follow-up's own lesion table).")
            return
        except LiverPlanError as exc:
            self.status.setText(str(exc))
            return
        self.status.setText(f"Paired by hand: baseline {', '.join(map(str, bs))} -> follow-up {', '.join(map(str, fs))}.")
        self.refresh_table()

    def unpair_selected(self) -> None:
        i = self.table.currentRow()
        if self.comparison is None or not (0 <= i < len(self.rows)):
            return
        r = self.rows[i]
        self.comparison.unpair(baseline=r.baseline_ids, followup=r.followup_ids)
        self.status.setText(f"Unpaired row {r.track}: its lesions count as vanished / new until paired again.")
        self.refresh_table()

    def reset_pairs(self) -> None:
        if self.comparison is not None:
            self.comparison.reset_pairs()
            self.status.setText("Automatic pairs restored.")
            self.refresh_table()

    def jump_to_row(self, i: int) -> None:
        """Both viewers to the lesion of row ``i`` (its baseline place; a new lesion's place mapped there)."""
        if not (0 <= i < len(self.rows)):
            return
        r = self.rows[i]
        shape = self.comparison.baseline.geometry.shape
        pos = [min(max(int(round(v)), 0), n - 1) for v, n in zip(r.baseline_zyx, shape)]
        for v in (self.base_view, self.fu_view):
            v.set_position(pos)
            v.set_highlight(r.baseline_box)
        if self.view3d is not None:
            self.view3d.focus(r.baseline_lps_mm, radius_mm=40.0)
            self.view3d.set_marker(r.baseline_lps_mm, radius_mm=max(5.0, r.baseline_diameter_mm / 2 or 8.0))

    # --- linked crosshair -------------------------------------------------------------------------
    def _on_mouse(self, kind: str, zyx, axis: int, modifiers) -> None:
        if kind in ("press", "drag") and zyx is not None:
            for v in (self.base_view, self.fu_view):
                v.set_position(zyx)

    def _on_slice(self, axis: int, index: int) -> None:
        pos = list(self.base_view.pos_zyx)
        pos[axis] = index
        for v in (self.base_view, self.fu_view):
            v.set_position(pos)

    def _on_window(self, level: float, width: float) -> None:
        for v in (self.base_view, self.fu_view):
            v.set_window(level, width)

    def closeEvent(self, ev):  # noqa: N802 - Qt naming
        self.runner.shutdown()
        if self.view3d is not None:
            self.view3d.close_plotter()
        super().closeEvent(ev)


def _load_and_run(baseline, ct: str, labels: str, progress=None, cancel=None):
    from engine.compare.comparison import load_study
    from engine.compare.meshes import run_comparison

    if progress:
        progress("Reading the follow-up", 0, 1)
    followup = load_study(ct, labels)
    return run_comparison(baseline, followup, progress=progress, cancel=cancel)


def open_compare_dialog(win) -> Optional[CompareWindow]:
    """File > Compare with a follow-up…: ask for the follow-up's CT and label map, open the window."""
    case = win.case
    if case is None or not case.labels.any():
        text = ("Open the baseline scan with its labels (segment it or open its label map) first: the scans are "
                "registered inside the liver.")
        win.message(text)
        win.show_info("Compare with a follow-up", text)
        return None
    ct, _ = QFileDialog.getOpenFileName(win, "Follow-up CT", "", IMAGE_FILTER)
    if not ct:
        return None
    labels, _ = QFileDialog.getOpenFileName(win, "Follow-up label map", os.path.dirname(ct), LABEL_FILTER)
    if not labels:
        return None
    w = CompareWindow(case.copy(), followup_paths=(ct, labels), parent=win)
    w.setWindowFlag(Qt.Window, True)
    w.show()
    w.start()
    return w
