"""Side panels: structures, segmentation, measurements, correction tools, evaluation.

Panels only show values and emit signals; the main window decides what happens.
"""
from __future__ import annotations

from typing import Optional, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox,
                               QFormLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
                               QPushButton, QRadioButton, QSlider, QSpinBox, QTableWidget,
                               QTableWidgetItem, QTextBrowser, QVBoxLayout, QWidget)

from engine.labels import ALL_STRUCTURES

DEMO_WARNING = "demo — synthetic data — not for clinical use"


def colour_icon(rgb: Sequence[int], size: int = 14) -> QIcon:
    pm = QPixmap(size, size)
    pm.fill(QColor(*rgb))
    return QIcon(pm)


def _item(text: str, tooltip: str = "", align_right: bool = False) -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setFlags(it.flags() & ~Qt.ItemIsEditable)
    if tooltip:
        it.setToolTip(tooltip)
    if align_right:
        it.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
    return it


def table_to_text(table: QTableWidget) -> str:
    """Tab-separated text of a table (headers first): pastes into a spreadsheet or a report."""
    cols = [c for c in range(table.columnCount()) if not table.isColumnHidden(c)]   # what is shown
    # a header drawn on two lines (narrow columns) is one line in the text
    lines = ["\t".join(table.horizontalHeaderItem(c).text().replace("\n", " ") if table.horizontalHeaderItem(c)
                       else "" for c in cols)]
    for r in range(table.rowCount()):
        row = []
        for c in cols:
            it = table.item(r, c)
            row.append(it.text() if it is not None else "")
        lines.append("\t".join(row))
    return "\n".join(lines) + "\n"


def copy_table(table: QTableWidget) -> str:
    text = table_to_text(table)
    QGuiApplication.clipboard().setText(text)
    return text


def _fmt(v, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not (v == v and abs(v) != float("inf"))):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


#: The panels' read-only table cell and number format, for the other gui modules (the Structures tab's
#: controller writes its totals as the Measure tab shows them; the series picker fills its table).
table_item, format_value = _item, _fmt


# ------------------------------------------------------------------------------------------------
class StructuresPanel(QWidget):
    visible2d_changed = Signal(int, bool)
    visible3d_changed = Signal(int, bool)
    opacity3d_changed = Signal(int, float)
    overlay_opacity_changed = Signal(float)

    COLS = ("Structure", "2D", "3D", "3D opacity %", "Volume (mL)")

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        self.table = QTableWidget(len(ALL_STRUCTURES), len(self.COLS))
        self.table.setObjectName("structures_table")
        self.table.setHorizontalHeaderLabels(self.COLS)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        self.table.setSelectionMode(QAbstractItemView.NoSelection)
        self.check2d: dict[int, QCheckBox] = {}
        self.check3d: dict[int, QCheckBox] = {}
        self.opacity: dict[int, QSpinBox] = {}
        for row, s in enumerate(ALL_STRUCTURES):
            it = _item(s.name, s.description)
            it.setIcon(colour_icon(s.color))
            self.table.setItem(row, 0, it)
            c2, c3 = QCheckBox(), QCheckBox()
            c2.setChecked(True)
            c3.setChecked(True)
            c2.toggled.connect(lambda on, lab=s.label: self.visible2d_changed.emit(lab, on))
            c3.toggled.connect(lambda on, lab=s.label: self.visible3d_changed.emit(lab, on))
            sp = QSpinBox()
            sp.setRange(0, 100)
            sp.setValue(35 if s.label == 1 else 100)
            sp.valueChanged.connect(lambda v, lab=s.label: self.opacity3d_changed.emit(lab, v / 100.0))
            self.table.setCellWidget(row, 1, c2)
            self.table.setCellWidget(row, 2, c3)
            self.table.setCellWidget(row, 3, sp)
            self.table.setItem(row, 4, _item("—", align_right=True))
            self.check2d[s.label], self.check3d[s.label], self.opacity[s.label] = c2, c3, sp
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        # every row of the label table visible without scrolling (a sixth, 'Vessel, unassigned', included)
        self.table.setMinimumHeight(self.table.horizontalHeader().sizeHint().height()
                                    + self.table.verticalHeader().length() + 2 * self.table.frameWidth())
        lay.addWidget(self.table)
        row = QHBoxLayout()
        row.addWidget(QLabel("Overlay opacity"))
        self.overlay = QSlider(Qt.Horizontal)
        self.overlay.setRange(0, 100)
        self.overlay.setValue(45)
        self.overlay.valueChanged.connect(lambda v: self.overlay_opacity_changed.emit(v / 100.0))
        row.addWidget(self.overlay)
        lay.addLayout(row)
        self.total = QLabel("")
        self.total.setWordWrap(True)
        lay.addWidget(self.total)
        lay.addStretch(1)

    def visible3d(self) -> dict[int, bool]:
        """Structure label -> shown in the 3D pane."""
        return {lab: cb.isChecked() for lab, cb in self.check3d.items()}

    def opacities3d(self) -> dict[int, float]:
        """Structure label -> 3D opacity (0-1)."""
        return {lab: sp.value() / 100.0 for lab, sp in self.opacity.items()}

    def set_volumes(self, volumes_ml: dict[int, float], total_text: str = "") -> None:
        for row, s in enumerate(ALL_STRUCTURES):
            v = volumes_ml.get(s.label)
            self.table.item(row, 4).setText("—" if v is None else f"{v:.1f}")
        self.total.setText(total_text)


# ------------------------------------------------------------------------------------------------
class SegmentPanel(QWidget):
    run_requested = Signal()
    cancel_requested = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.model = QComboBox()
        self.model.setObjectName("model_combo")
        self.device = QComboBox()
        self.mode = QComboBox()
        self.mode.addItems(["fast", "accurate"])
        self.mode.setToolTip("fast: no test-time mirroring; accurate: mirroring (several times slower)")
        form.addRow("Model", self.model)
        form.addRow("Device", self.device)
        form.addRow("Mode", self.mode)
        lay.addLayout(form)
        self.card = QTextBrowser()
        self.card.setObjectName("model_card")
        self.card.setMaximumHeight(170)
        lay.addWidget(self.card)
        row = QHBoxLayout()
        self.run = QPushButton("Run segmentation")
        self.run.setObjectName("run_segmentation")
        self.cancel = QPushButton("Cancel")
        self.cancel.setObjectName("cancel_segmentation")
        self.cancel.setEnabled(False)
        row.addWidget(self.run)
        row.addWidget(self.cancel)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        lay.addWidget(self.progress)
        self.status = QLabel("")
        self.standing_note = ""       # e.g. model folders that cannot be used; shown when nothing else is
        self.status.setObjectName("segment_status")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        lay.addStretch(1)
        self.run.clicked.connect(self.run_requested)
        self.cancel.clicked.connect(self.cancel_requested)
        self.model.currentIndexChanged.connect(self._show_card)
        self._models: list = []

    def set_models(self, models: list, preselect=None) -> None:
        self._models = list(models)
        self.model.blockSignals(True)
        self.model.clear()
        labels = []
        for m in self._models:
            label = m.card.headline() if hasattr(m, "card") else m.headline() if hasattr(m, "headline") else str(m)
            if getattr(m, "is_demo", False) and "not for clinical use" not in label:   # said once
                label += f" [{DEMO_WARNING}]"
            labels.append(label)
        for m, label in zip(self._models, labels):
            if labels.count(label) > 1 and hasattr(m, "path"):
                # two models with one card (a copy of the demo installed): tell them apart by their folder,
                # first (the end of a long entry is cut off in the list)
                from engine.models import installed_name
                label = f"{installed_name(m.path)}: {label}"
                if sum(getattr(o, "path", None) is not None and installed_name(o.path) == installed_name(m.path)
                       for o in self._models) > 1:
                    # several configurations of one installed model: say which (the default one runs for
                    # `--model NAME` on the command line)
                    from engine.models import runs_by_default
                    label += f" [{m.configuration}{', default' if runs_by_default(m, self._models_only()) else ''}]"
            self.model.addItem(label)
            self.model.setItemData(self.model.count() - 1, label + (f"\n{m.path}" if hasattr(m, "path") else ""),
                                   Qt.ToolTipRole)
        self.model.blockSignals(False)
        idx = self._models.index(preselect) if preselect in self._models else 0
        if self._models:
            self.model.setCurrentIndex(idx)
        self._show_card()
        self.run.setEnabled(bool(self._models))
        if not self._models:
            self.card.setHtml("<p>No segmentation model is installed. Use <b>Models &gt; Install model "
                              "package…</b> or train one with <code>liverplan train</code>.</p>")

    def _models_only(self) -> list:
        return [m for m in self._models if hasattr(m, "path")]

    def current_model(self):
        i = self.model.currentIndex()
        return self._models[i] if 0 <= i < len(self._models) else None

    def models(self) -> list:
        """The models offered, in list order."""
        return list(self._models)

    def device_name(self) -> str:
        return self.device.currentText() or "auto"

    def set_device_name(self, name: str) -> None:
        if name and self.device.findText(name) >= 0:
            self.device.setCurrentText(name)

    def mode_name(self) -> str:
        return self.mode.currentText()

    def set_searching(self) -> None:
        """Models and devices are being looked for: no Run until they are known."""
        self.card.setHtml("<p>Looking for segmentation models and compute devices…</p>")
        self.run.setEnabled(False)

    def set_cancelling(self) -> None:
        self.set_message("Cancelling…")
        self.cancel.setEnabled(False)

    def _show_card(self) -> None:
        m = self.current_model()
        if m is None:
            return
        if not hasattr(m, "card"):        # a model set (engine.models.ModelSetEntry): its parts and licences
            self.card.setHtml("<p>" + "<br>".join(m.describe().splitlines()) + "</p>")
            return
        c = m.card
        html = []
        if m.is_demo or c.not_for_clinical_use:
            html.append(f"<p style='color:#d04040'><b>{DEMO_WARNING if m.is_demo else 'not for clinical use'}"
                        "</b></p>")
        html.append(f"<p><b>{c.name}</b> {c.version}</p>")
        if getattr(m, "path", None) is not None:
            from engine.models import installed_name
            html.append(f"<p>Folder: {installed_name(m.path)}</p>")
        if c.description:
            html.append(f"<p>{c.description}</p>")
        html.append(f"<p>Training data: {c.training_data or 'not stated'}</p>")
        html.append(f"<p>Licence: {getattr(c, 'licence', '') or 'not stated'}</p>")
        html.append("<p>Structures: " + ", ".join(m.structures()) + "</p>")
        for w in m.warnings:
            html.append(f"<p style='color:#c08000'>{w}</p>")
        self.card.setHtml("".join(html))

    def set_devices(self, devices: list[str]) -> None:
        self.device.clear()
        self.device.addItem("auto")
        self.device.addItems([d for d in devices if d != "auto"])

    def set_running(self, running: bool) -> None:
        self.run.setEnabled(not running and bool(self._models))
        self.cancel.setEnabled(running)
        if running:
            self.progress.setValue(0)

    def set_progress(self, text: str, percent: int) -> None:
        self.progress.setValue(int(percent))
        if not text and self.standing_note:
            # cleared (a new case): what stays true whatever the case shows again (unusable model folders)
            self.set_message(self.standing_note, error=True)
            return
        self.status.setStyleSheet("")
        self.status.setText(text)

    def set_message(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #d04040;" if error else "")
        self.status.setText(text)


# ------------------------------------------------------------------------------------------------
class MeasurePanel(QWidget):
    lesion_selected = Signal(int)  # row in the lesion table

    LESION_COLS = ("Lesion", "Volume (mL)", "Longest ⌀ (mm)", "Axial ⌀ (mm)", "Slices", "Mean HU",
                   "Seg", "Hemi", "Vessel", "Dist (mm)", "Status", "Conf.")
    #: the review columns (gui.review_overlays: status against a reference, the model's confidence)
    REVIEW_COLS = ("Status", "Conf.")
    #: the columns the Plan tab fills (engine.planning.display.lesion_columns), "—" until it has, from "Seg"
    PLAN_COLS = 4
    # The values a tumour board asks for first; the per-structure values follow.
    FIRST = ("liver.total_volume_ml", "crlm.tumour_burden_pct", "crlm.count", "crlm.total_volume_ml",
             "crlm.max_diameter_mm")

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        self.summary = QTableWidget(0, 3)
        self.summary.setObjectName("measurements_table")
        self.summary.setHorizontalHeaderLabels(["Measurement", "Value", "Units"])
        self.summary.verticalHeader().setVisible(False)
        self.summary.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        lay.addWidget(QLabel("Measurements"))
        lay.addWidget(self.summary, 2)
        b1 = QPushButton("Copy measurements")
        b1.clicked.connect(lambda: copy_table(self.summary))
        lay.addWidget(b1)
        lay.addWidget(QLabel("Lesions (click one to go to it)"))
        self.lesions = QTableWidget(0, len(self.LESION_COLS))
        self.lesions.setObjectName("lesion_table")
        # two-line headers keep the columns narrow enough for the dock (Mean HU was cut off)
        self.lesions.setHorizontalHeaderLabels([c.replace(" (", "\n(").replace("Mean HU", "Mean\nHU")
                                                for c in self.LESION_COLS])
        for c, tip in zip(range(self.LESION_COLS.index("Seg"), self.LESION_COLS.index("Seg") + self.PLAN_COLS),
                          ("Couinaud segment (+: more than one; the tooltip gives the shares)", "Hemiliver",
                           "Nearest vessel (RHV/MHV/LHV hepatic veins, MPV/RPV/LPV portal vein, IVC)",
                           "Distance to the nearest vessel, surface to surface")):
            self.lesions.horizontalHeaderItem(c).setToolTip(tip)
        self.lesions.verticalHeader().setVisible(False)
        self.lesions.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.lesions.setSelectionMode(QAbstractItemView.SingleSelection)
        self.lesions.itemSelectionChanged.connect(self._selected)
        lay.addWidget(self.lesions, 3)
        b2 = QPushButton("Copy lesion table")
        b2.clicked.connect(lambda: copy_table(self.lesions))
        lay.addWidget(b2)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self._planning: dict[int, list] = {}
        self._review: dict[int, tuple] = {}
        self.lesions.horizontalHeaderItem(self.LESION_COLS.index("Status")).setToolTip(
            "Against the reference loaded in the Evaluate tab: detected, or false positive (no reference "
            "lesion matched, IoU >= 0.1 one-to-one as in the evaluation)")
        self.lesions.horizontalHeaderItem(self.LESION_COLS.index("Conf.")).setToolTip(
            "The model's confidence: mean max-probability inside the lesion (1 = sure); 'edited' where the "
            "lesion was edited since the run")
        self._fill_planning()
        self._fill_review()

    def set_planning(self, columns: dict[int, list]) -> None:
        """Lesion id -> [(text, tooltip)] for the segment, hemiliver, nearest vessel and distance columns
        (from the Plan tab); the columns show once there is a planning."""
        self._planning = dict(columns)
        self._fill_planning()

    def _fill_planning(self) -> None:
        n0 = self.LESION_COLS.index("Seg")
        for c in range(n0, n0 + self.PLAN_COLS):
            self.lesions.setColumnHidden(c, not self._planning)
        # with the planning columns the table would not fit the dock: the axial diameter and the slice
        # range step aside (they stay in the exports)
        for name in ("Axial ⌀ (mm)", "Slices"):
            self.lesions.setColumnHidden(self.LESION_COLS.index(name), bool(self._planning))
        none = [("—", "")] * self.PLAN_COLS
        for r in range(self.lesions.rowCount()):
            it = self.lesions.item(r, 0)
            vals = self._planning.get(int(it.text()), none) if it else none
            for c, (text, tip) in enumerate(vals):
                self.lesions.setItem(r, n0 + c, _item(str(text), tip, align_right=c == self.PLAN_COLS - 1))
        self.lesions.resizeColumnsToContents()

    def set_review(self, columns: dict) -> None:
        """Lesion id -> (status, confidence) texts (gui.review_overlays); the columns show once any is known."""
        self._review = dict(columns)
        self._fill_review()

    def _fill_review(self) -> None:
        c0 = self.LESION_COLS.index(self.REVIEW_COLS[0])
        shown = [any(v[c] != "—" for v in self._review.values()) for c in range(len(self.REVIEW_COLS))]
        for c in range(len(self.REVIEW_COLS)):
            self.lesions.setColumnHidden(c0 + c, not shown[c])
        for r in range(self.lesions.rowCount()):
            it = self.lesions.item(r, 0)
            vals = self._review.get(int(it.text()), ("—", "—")) if it else ("—", "—")
            for c, text in enumerate(vals):
                self.lesions.setItem(r, c0 + c, _item(str(text), align_right=c == 1))

    def set_note(self, text: str) -> None:
        self.note.setText(text)

    def _selected(self) -> None:
        rows = {i.row() for i in self.lesions.selectedItems()}
        if rows:
            self.lesion_selected.emit(min(rows))

    def clear(self) -> None:
        """No numbers (a new case before its first measurements: never the previous case's)."""
        self.summary.setRowCount(0)
        self.lesions.blockSignals(True)
        self.lesions.setRowCount(0)
        self.lesions.blockSignals(False)
        self.note.setText("")
        self._planning = {}
        self._fill_planning()
        self._review = {}
        self._fill_review()

    def set_report(self, report) -> None:
        self.summary.setRowCount(0)
        rank = {k: i for i, k in enumerate(self.FIRST)}
        ordered = sorted(report.measurements, key=lambda m: (rank.get(m.key, len(rank)),
                                                             m.key.endswith(".mean_hu")))
        for m in ordered:
            if m.key.endswith((".voxels", ".sd_hu")):  # kept in exports, too detailed for the panel
                continue
            r = self.summary.rowCount()
            self.summary.insertRow(r)
            self.summary.setItem(r, 0, _item(m.name, m.description))
            self.summary.setItem(r, 1, _item(_fmt(m.value, 2 if isinstance(m.value, float) else 0),
                                             m.description, True))
            self.summary.setItem(r, 2, _item(m.units or ""))
        selected = {i.row() for i in self.lesions.selectedItems()}
        self.lesions.blockSignals(True)
        self.lesions.setRowCount(0)
        for les in report.lesions:
            r = self.lesions.rowCount()
            self.lesions.insertRow(r)
            sr = les.slice_range
            vals = [str(les.id), _fmt(les.volume_ml, 2), _fmt(les.longest_diameter_mm),
                    _fmt(les.axial_diameter_mm), f"{sr[0] + 1}–{sr[1] + 1}" if sr else "—",
                    _fmt(les.mean_hu, 0)]
            for c, v in enumerate(vals):
                self.lesions.setItem(r, c, _item(v, align_right=c > 0))
            _flag_row(self.lesions, r, getattr(les, "flags", None))
        self._fill_planning()
        self._fill_review()
        if selected and min(selected) < self.lesions.rowCount():
            self.lesions.selectRow(min(selected))
        self.lesions.blockSignals(False)
        self.lesions.resizeColumnsToContents()

    def lesion_row(self, lesion_id: Optional[int]) -> Optional[int]:
        """The row showing lesion number ``lesion_id`` (None when it is not in the table)."""
        for r in range(self.lesions.rowCount()):
            it = self.lesions.item(r, 0)
            if it is not None and lesion_id is not None and it.text() == str(lesion_id):
                return r
        return None

    def select_lesion_id(self, lesion_id: Optional[int]) -> None:
        """Select the row of lesion ``lesion_id`` (None, or a lesion no longer there: no row), without
        announcing it (the selection follows the lesion, not the row)."""
        r = self.lesion_row(lesion_id)
        self.lesions.blockSignals(True)
        if r is None:
            self.lesions.clearSelection()
        else:
            self.lesions.selectRow(r)
        self.lesions.blockSignals(False)


def _flag_row(table, row: int, flags) -> None:
    """A doubtful lesion (engine.measure.lesion_flags) stands out in amber, its reasons on every cell."""
    if not flags:
        return
    tip = "Check this lesion: " + "; ".join(flags)
    for c in range(table.columnCount()):
        it = table.item(row, c)
        if it is not None:
            it.setBackground(QColor(255, 190, 60, 110))
            it.setToolTip(tip)


# ------------------------------------------------------------------------------------------------
TOOLS = (("navigate", "Navigate", "N"), ("brush", "Brush", "B"), ("eraser", "Eraser", "E"),
         ("fill", "Fill in slice", "F"), ("delete", "Delete component", "D"),
         ("trace", "Vessel trace", "V"), ("lesion", "Lesion from a click", "K"))
RULES = (("all", "anything"), ("background", "background only"), ("liver", "inside liver only"))


class ToolsPanel(QWidget):
    tool_changed = Signal(str)
    brush_changed = Signal()
    keep_largest = Signal()
    fill_holes = Signal()
    undo = Signal()
    redo = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        box = QGroupBox("Tool")
        bl = QVBoxLayout(box)
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QRadioButton] = {}
        for key, name, short in TOOLS:
            b = QRadioButton(f"{name}  ({short})")
            b.setObjectName(f"tool_{key}")
            self.group.addButton(b)
            self.buttons[key] = b
            bl.addWidget(b)
            b.toggled.connect(lambda on, k=key: on and self.tool_changed.emit(k))
        self.buttons["navigate"].setChecked(True)
        lay.addWidget(box)
        form = QFormLayout()
        # what the tools paint on: the labels, or the case's Couinaud segment map (README "Planning")
        self.paint_on = QComboBox()
        self.paint_on.setObjectName("paint_target")
        self.paint_on.addItem("Labels", "labels")
        self.paint_on.addItem("Segment map (Plan tab)", "segments")
        self.paint_on.setToolTip("Segment map: brush, eraser and fill correct the Plan tab's Couinaud segments "
                               "(liver voxels only); Undo takes each stroke back")
        form.addRow("Paint on", self.paint_on)
        self.structure = QComboBox()
        self.structure.setObjectName("active_structure")
        self._fill_structures()
        self.paint_on.currentIndexChanged.connect(self._fill_structures)
        form.addRow("Structure", self.structure)
        self.size = QDoubleSpinBox()
        self.size.setRange(0.5, 100.0)
        self.size.setValue(5.0)
        self.size.setSuffix(" mm")
        self.size.setToolTip("Brush radius in millimetres ([ and ] change it)")
        form.addRow("Brush radius", self.size)
        self.shape = QComboBox()
        self.shape.addItems(["2D disc (this slice)", "3D sphere"])
        form.addRow("Brush shape", self.shape)
        self.rule = QComboBox()
        for key, text in RULES:
            self.rule.addItem(text, key)
        form.addRow("Paint only over", self.rule)
        hu = QHBoxLayout()
        self.hu_on = QCheckBox("HU range")
        self.hu_lo = QSpinBox()
        self.hu_hi = QSpinBox()
        for w, v in ((self.hu_lo, 100), (self.hu_hi, 400)):
            w.setRange(-1024, 3071)
            w.setValue(v)
        hu.addWidget(self.hu_on)
        hu.addWidget(self.hu_lo)
        hu.addWidget(QLabel("to"))
        hu.addWidget(self.hu_hi)
        form.addRow("Limit", hu)
        lay.addLayout(form)
        for w in (self.size, ):
            w.valueChanged.connect(self.brush_changed)
        for w in (self.shape, self.rule, self.structure):
            w.currentIndexChanged.connect(self.brush_changed)
        self.hu_on.toggled.connect(self.brush_changed)
        ops = QGroupBox("Whole structure")
        ol = QVBoxLayout(ops)
        b = QPushButton("Keep largest component")
        b.clicked.connect(self.keep_largest)
        ol.addWidget(b)
        b = QPushButton("Fill holes")
        b.clicked.connect(self.fill_holes)
        ol.addWidget(b)
        lay.addWidget(ops)
        self._sections_at = lay.indexOf(ops) + 1
        row = QHBoxLayout()
        self.undo_btn = QPushButton("Undo")
        self.redo_btn = QPushButton("Redo")
        self.undo_btn.clicked.connect(self.undo)
        self.redo_btn.clicked.connect(self.redo)
        row.addWidget(self.undo_btn)
        row.addWidget(self.redo_btn)
        lay.addLayout(row)
        self.history = QLabel("")
        self.history.setWordWrap(True)
        lay.addWidget(self.history)
        lay.addStretch(1)

    def add_section(self, widget: QWidget) -> None:
        """A tool's own controls (e.g. gui/review_trace.py), below the whole-structure buttons."""
        self.layout().insertWidget(self._sections_at, widget)
        self._sections_at += 1

    def _fill_structures(self, *_) -> None:
        """The structures (labels 1-6) or, with the segment map as the target, the segments I-VIII."""
        from engine.planning.couinaud import SEGMENT_COLOURS, SEGMENT_NAMES

        self.structure.blockSignals(True)
        self.structure.clear()
        if self.target() == "segments":
            for k, name in SEGMENT_NAMES.items():
                self.structure.addItem(colour_icon(SEGMENT_COLOURS[k]), f"Segment {name}", k)
        else:
            for s in ALL_STRUCTURES:
                self.structure.addItem(colour_icon(s.color), s.name, s.label)
        self.structure.blockSignals(False)
        if hasattr(self, "rule"):
            # on the segment map the tools keep to the liver; these limits are the labels' only
            for w in (self.rule, self.hu_on, self.hu_lo, self.hu_hi):
                w.setEnabled(self.target() != "segments")
        self.brush_changed.emit()

    def target(self) -> str:
        """"labels" or "segments" (the plan's segment map)."""
        return str(self.paint_on.currentData() or "labels")

    def brush_radius(self) -> float:
        """Brush radius in millimetres."""
        return float(self.size.value())

    def scale_brush(self, factor: float) -> None:
        self.size.setValue(self.size.value() * factor)

    def set_history(self, undo: Optional[str], redo: Optional[str], nbytes: int, max_bytes: int) -> None:
        """What Undo and Redo would do (None: nothing) and the history's size."""
        self.undo_btn.setEnabled(bool(undo))
        self.redo_btn.setEnabled(bool(redo))
        self.undo_btn.setToolTip(f"Undo {undo}" if undo else "")
        self.redo_btn.setToolTip(f"Redo {redo}" if redo else "")
        self.history.setText(f"Undo history: {nbytes / 2**20:.1f} MB of {max_bytes / 2**20:.0f} MB")

    def tool(self) -> str:
        for key, b in self.buttons.items():
            if b.isChecked():
                return key
        return "navigate"

    def set_tool(self, key: str) -> None:
        self.buttons[key].setChecked(True)

    def active_label(self) -> int:
        return int(self.structure.currentData())

    def set_active_label(self, lab: int) -> None:
        self.structure.setCurrentIndex(self.structure.findData(lab))

    def sphere(self) -> bool:
        return self.shape.currentIndex() == 1

    def paint_rule(self) -> str:
        return str(self.rule.currentData())

    def hu_range(self):
        if not self.hu_on.isChecked():
            return None
        lo, hi = self.hu_lo.value(), self.hu_hi.value()
        return (min(lo, hi), max(lo, hi))


# ------------------------------------------------------------------------------------------------
CONVENTIONS = (("liverplan", "LiverPlan labels (1–5)"), ("ircadb", "3D-IRCADb masks"),
               ("totalsegmentator", "TotalSegmentator"), ("file", "Label mapping file…"))


class EvaluatePanel(QWidget):
    load_reference = Signal()
    run_requested = Signal()
    export_csv = Signal()
    export_report = Signal()
    view_changed = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.convention = QComboBox()
        for key, text in CONVENTIONS:
            self.convention.addItem(text, key)
        form.addRow("Reference labels", self.convention)
        lay.addLayout(form)
        self.load = QPushButton("Load reference label map…")
        self.load.clicked.connect(self.load_reference)
        lay.addWidget(self.load)
        self.reference = QLabel("No reference loaded.")
        self.reference.setWordWrap(True)
        lay.addWidget(self.reference)
        self.run = QPushButton("Evaluate current labels against the reference")
        self.run.setObjectName("run_evaluation")
        self.run.setEnabled(False)
        self.run.clicked.connect(self.run_requested)
        lay.addWidget(self.run)
        self.all_metrics = QCheckBox("Show all metrics (HD95 variants, Hausdorff, ASSD, Betti 2)")
        self.all_metrics.setObjectName("all_metrics")
        self.all_metrics.setToolTip("Off: the study's metric suite (Dice, Jaccard, precision, recall, FPR, FNR, "
                                    "HD95, clDice, Betti errors) and lesion detection. Export CSV always "
                                    "writes every metric.")
        self.all_metrics.toggled.connect(lambda _on: self.view_changed.emit())
        lay.addWidget(self.all_metrics)
        self.table = QTableWidget(0, 0)
        self.table.setObjectName("evaluation_table")
        self.table.verticalHeader().setVisible(True)
        lay.addWidget(self.table, 1)
        row = QHBoxLayout()
        b = QPushButton("Copy table")
        b.clicked.connect(lambda: copy_table(self.table))
        row.addWidget(b)
        self.export = QPushButton("Export CSV…")
        self.export.clicked.connect(self.export_csv)
        row.addWidget(self.export)
        self.export_report_button = QPushButton("Export report…")
        self.export_report_button.setObjectName("export_metric_report")
        self.export_report_button.setToolTip("The evaluation as a report (HTML + PDF): the study's table, plots, "
                                             "the slices through the largest error with FP/FN, definitions")
        self.export_report_button.clicked.connect(self.export_report)
        row.addWidget(self.export_report_button)
        lay.addLayout(row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)

    def convention_key(self) -> str:
        return str(self.convention.currentData())

    def set_reference_name(self, name: Optional[str]) -> None:
        """The reference loaded (None: none; Evaluate is then disabled)."""
        self.reference.setText(f"Reference: {name}" if name else "No reference loaded.")
        self.run.setEnabled(bool(name))

    def set_running(self, running: bool) -> None:
        self.run.setEnabled(not running)
        if running:
            self.set_status("Computing the metric suite…")

    def set_status(self, text: str) -> None:
        self.status.setText(text)

    def clear_results(self) -> None:
        self.table.setRowCount(0)
        self.status.setText("")

    def study_only(self) -> bool:
        """Show the study's metric suite only (the default), not every metric."""
        return not self.all_metrics.isChecked()

    def set_table(self, rows: list[str], cols: list[str], values: list[list[str]]) -> None:
        self.table.clear()
        self.table.setRowCount(len(rows))
        self.table.setColumnCount(len(cols) + 1)
        self.table.setHorizontalHeaderLabels(["Metric"] + list(cols))
        self.table.verticalHeader().setVisible(False)
        for r, name in enumerate(rows):
            self.table.setItem(r, 0, _item(name))
            for c, v in enumerate(values[r]):
                self.table.setItem(r, c + 1, _item(v, align_right=True))
        self.table.resizeColumnsToContents()
