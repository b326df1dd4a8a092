"""Correct tab: vessel trace (two clicks) and lesion from a click (one click and a sensitivity slider).

The engine does the work (engine.review.trace, engine.review.lesion_click) off the GUI thread through the
window's TaskRunner; the panes show the proposal (SliceView.set_preview) until Apply (one undoable step,
kinds ``vessel_trace`` / ``lesion_click``) or Cancel. A click the engine refuses (not on a vessel, outside the
liver, on air...) shows its sentence here and in the status bar, and nothing is painted.

CorrectController creates one :class:`ReviewClickTools` and hands it the clicks of the tools in
:attr:`ReviewClickTools.TOOLS`; no array math here.
"""
from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget

from engine.labels import BY_LABEL
from engine.review import lesion_click, trace

log = logging.getLogger(__name__)

PREVIEW_RGBA = (255, 230, 0, 140)       # yellow, the CT seen through it: not a structure's colour
HINTS = {
    "trace": ("Vessel trace: choose the vessel as the active structure, click a point on the missed branch, then "
              "a point on the vessel tree (or further along the vessel). The tube between them is proposed in "
              "yellow; it follows 'Paint only over' and never covers a lesion or another vessel."),
    "lesion": ("Lesion from a click: click inside a lesion in the liver. The lesion grown in 3D is proposed in "
               "yellow; move the sensitivity to move its edge (higher: closer to the liver's intensity)."),
}


class ReviewClickPanel(QGroupBox):
    """The two tools' controls: what to do next, the lesion sensitivity, Apply and Cancel."""

    apply_requested = Signal()
    cancel_requested = Signal()
    sensitivity_changed = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__("Vessel trace and lesion from a click", parent)
        self.setObjectName("review_click_tools")
        lay = QVBoxLayout(self)
        self.hint = QLabel("Choose Vessel trace (V) or Lesion from a click (K) above.")
        self.hint.setObjectName("review_hint")
        self.hint.setWordWrap(True)
        self.hint.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        # a wrapped label in a group box is given one line's height otherwise: room for five lines
        self.hint.setMinimumHeight(self.hint.fontMetrics().lineSpacing() * 5 + 4)
        lay.addWidget(self.hint)
        row = QHBoxLayout()
        row.addWidget(QLabel("Lesion sensitivity"))
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setObjectName("lesion_sensitivity")
        self.slider.setRange(0, 100)
        self.slider.setValue(int(round(lesion_click.DEFAULT_SENSITIVITY * 100)))
        self.slider.setToolTip("Where the lesion's edge lies between the lesion's and the liver's intensity "
                               "(0: half-way; 100: almost the liver's)")
        row.addWidget(self.slider, 1)
        self.value = QLabel("")
        row.addWidget(self.value)
        lay.addLayout(row)
        buttons = QHBoxLayout()
        self.apply = QPushButton("Apply")
        self.apply.setObjectName("review_apply")
        self.cancel = QPushButton("Cancel")
        self.cancel.setObjectName("review_cancel")
        buttons.addWidget(self.apply)
        buttons.addWidget(self.cancel)
        lay.addLayout(buttons)
        self.apply.clicked.connect(self.apply_requested)
        self.cancel.clicked.connect(self.cancel_requested)
        self.slider.valueChanged.connect(self._on_slider)
        self._on_slider(self.slider.value())
        self.set_can_apply(False)

    def _on_slider(self, v: int) -> None:
        self.value.setText(f"{v}")
        self.sensitivity_changed.emit()

    def sensitivity(self) -> float:
        """The lesion sensitivity, 0-1."""
        return self.slider.value() / 100.0

    def set_sensitivity(self, value: float) -> None:
        self.slider.setValue(int(round(value * 100)))

    def set_hint(self, text: str, error: bool = False) -> None:
        self.hint.setText(text)
        self.hint.setStyleSheet("color: #c0392b;" if error else "")

    def set_can_apply(self, can: bool, can_cancel: Optional[bool] = None) -> None:
        self.apply.setEnabled(bool(can))
        self.cancel.setEnabled(bool(can) if can_cancel is None else bool(can_cancel))


class ReviewClickTools(QObject):
    """Clicks -> a proposal computed off the GUI thread -> preview -> Apply (one step) or Cancel."""

    TOOLS = ("trace", "lesion")

    def __init__(self, win, tools_panel, parent=None) -> None:
        super().__init__(parent)
        self.win, self.tools = win, tools_panel
        self.panel = ReviewClickPanel()
        tools_panel.add_section(self.panel)
        self.points: list[tuple[int, int, int]] = []
        self.plan = None                  # the proposal shown (engine TracePlan / LesionPlan), None: none
        self.tool: Optional[str] = None   # the tool that made the clicks
        self._generation = 0              # a result of an older request is dropped
        self._replan = QTimer(self)
        self._replan.setSingleShot(True)
        self._replan.setInterval(150)     # a slider drag asks once it pauses
        self._replan.timeout.connect(self._start_lesion)
        self.panel.apply_requested.connect(self.apply)
        self.panel.cancel_requested.connect(self.cancel)
        self.panel.sensitivity_changed.connect(self._on_sensitivity)
        tools_panel.tool_changed.connect(self._on_tool)
        win.session.listen(self._on_session)

    # --- state ------------------------------------------------------------------------------------
    def _show(self) -> None:
        plan = self.plan
        for v in self.win.views:
            if plan is None:
                v.set_preview(points=self.points)
            else:
                v.set_preview(plan.box, plan.mask, PREVIEW_RGBA, self.points)

    def _reset(self) -> None:
        self._generation += 1
        self._replan.stop()
        self.points, self.plan, self.tool = [], None, None
        self.panel.set_can_apply(False)
        self._show()

    def _on_tool(self, key: str) -> None:
        if self.tool is not None and key != self.tool:
            self._reset()
        if key in HINTS:
            self.panel.set_hint(HINTS[key])

    def _on_session(self, kind: str, data) -> None:
        if kind == "case":
            self._reset()
            self.panel.set_hint("Choose Vessel trace (V) or Lesion from a click (K) above.")

    # --- clicks -----------------------------------------------------------------------------------
    def on_mouse(self, kind: str, zyx, axis: int, tool: str) -> bool:
        """A gesture in a pane while one of :attr:`TOOLS` is chosen (always consumed: no crosshair move)."""
        if kind != "click" or self.win.session.case is None:
            return True
        zyx = tuple(int(v) for v in zyx)
        if tool == "trace":
            if self.tool == "trace" and len(self.points) == 1:
                self.points.append(zyx)
                self._start_trace()
            else:
                self._reset()
                self.tool, self.points = "trace", [zyx]
                self._show()
                self.panel.set_can_apply(False, can_cancel=True)
                self.panel.set_hint("First point set. Click the second point: on the vessel tree, or further along "
                                    "the vessel (change slice first if it lies in another one).")
        else:
            self._reset()
            self.tool, self.points = "lesion", [zyx]
            self._start_lesion()
        return True

    def _start(self, fn, *args, **kwargs) -> None:
        self._generation += 1
        gen = self._generation
        self.panel.set_can_apply(False, can_cancel=True)
        task = self.win.runner.start("review", fn, *args, progress=False, **kwargs)
        task.succeeded.connect(lambda plan, g=gen: self._got(g, plan))
        task.failed.connect(lambda msg, exc, g=gen: self._failed(g, msg))

    def _start_trace(self) -> None:
        s = self.win.session
        case = s.case
        self.panel.set_hint("Tracing the vessel between the two points…")
        self._start(trace.plan_trace, case.image, case.labels, case.geometry.spacing, self.points[0], self.points[1],
                    self.tools.active_label(), rule=self.tools.paint_rule(), hu_range=self.tools.hu_range())

    def _start_lesion(self) -> None:
        if self.tool != "lesion" or not self.points or self.win.session.case is None:
            return
        case = self.win.session.case
        self.panel.set_hint("Growing the lesion from the click…")
        self._start(lesion_click.plan_lesion, case.image, case.labels, case.geometry.spacing, self.points[0],
                    self.panel.sensitivity())

    def _on_sensitivity(self) -> None:
        if self.tool == "lesion" and self.points:
            self._replan.start()

    def _got(self, gen: int, plan) -> None:
        if gen != self._generation:
            return
        self.plan = plan
        self._show()
        ml = self.win.session.case.geometry.voxel_volume_ml
        if plan.voxels == 0:
            self.panel.set_hint("Nothing to add: what lies between the points is labelled already, or 'Paint only "
                                "over' forbids it.")
            self.panel.set_can_apply(False, can_cancel=True)
            return
        notes = " ".join(getattr(plan, "notes", []) or [])
        self.panel.set_hint(f"{plan.describe(ml)} {notes} Apply keeps it; Cancel drops it.".replace("  ", " "))
        self.panel.set_can_apply(True)

    def _failed(self, gen: int, msg: str) -> None:
        if gen != self._generation:
            return
        self._reset()
        self.panel.set_hint(msg, error=True)
        self.win.message(msg, error=True)

    # --- apply / cancel ---------------------------------------------------------------------------
    def apply(self) -> None:
        plan, s = self.plan, self.win.session
        if plan is None or s.case is None:
            return
        if self.tool == "trace":
            name = BY_LABEL[plan.value].name if plan.value in BY_LABEL else f"label {plan.value}"
            e = s.commit("vessel_trace", f"Vessel trace ({name})", trace.apply_trace(s.case.labels, plan, s.case.image))
        else:
            e = s.commit("lesion_click", "Lesion from a click", lesion_click.apply_lesion(s.case.labels, plan))
        self._reset()
        self.panel.set_hint("Applied (Undo takes it back)." if e is not None else "Nothing changed.")

    def cancel(self) -> None:
        self._reset()
        self.panel.set_hint("Cancelled: nothing was painted.")
