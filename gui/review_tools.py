"""The Correct tab's semi-automatic tools (issue 18, part A): grow from seeds with a live preview, scissors,
split at a neck, interpolate between slices, margin. The work is engine.review's; this module holds the
widgets (:class:`ReviewToolsBox`), the mouse gestures and the background runs (:class:`ReviewTools`).

The Correct tab's controller creates one :class:`ReviewTools` (``attach_to(window, tools_panel)``) and hands
it every mouse gesture first (:meth:`ReviewTools.on_mouse`). Choosing one of these tools sets the tab's own
tool to Navigate, and choosing a tool of the tab turns these off, so one tool at a time owns the mouse.

Long work runs on the window's TaskRunner (gui/workers.py); a proposal that comes back is applied as one
undo step only if the labels did not change meanwhile (``history.version``), else the person is told to try
again. The grow preview is an overlay of each slice pane (SliceView.extra_layers) that follows new strokes: a
stroke starts a coarse run; strokes made while it runs start one more run when it ends; a result of older
strokes than the newest is dropped.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGraphicsPathItem, QGroupBox,
                               QHBoxLayout, QLabel, QPushButton, QStackedWidget, QVBoxLayout, QWidget)

from engine import edits
from engine.labels import ALL_STRUCTURES, BY_LABEL
from engine.review import apply_proposal
from engine.review.grow import (BACKGROUND_SEED, STROKE_OFFSET, TAKEN, SeedStrokes, grow_region, grow_values,
                                preview_changes, preview_slice)
from engine.review.interpolate import propose_interpolation
from engine.review.margin import propose_margin
from engine.review.scissors import ROW_COL_AXES, propose_cut
from engine.review.split import propose_split

from .panels import colour_icon

log = logging.getLogger(__name__)

MODES = (("off", "Off (use the tools above)"), ("grow", "Grow from seeds"), ("scissors", "Scissors (cut)"),
         ("split", "Split at neck (click the part to drop)"), ("slices", "Interpolate between slices"),
         ("margin", "Margin (grow / shrink)"))
PLANES = (("Axial", 0), ("Coronal", 1), ("Sagittal", 2))


def _name(lab: int) -> str:
    if lab == 0 or lab == BACKGROUND_SEED:
        return "background"
    return BY_LABEL[lab].name if lab in BY_LABEL else f"label {lab}"


class ReviewToolsBox(QGroupBox):
    """The widgets of the semi-automatic tools; they only show values and emit signals."""

    mode_changed = Signal(str)
    grow_apply = Signal()
    grow_cancel = Signal()
    grow_options = Signal()
    interpolate = Signal()
    margin = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__("Semi-automatic tools", parent)
        self.setObjectName("review_tools")
        lay = QVBoxLayout(self)
        self.mode = QComboBox()
        self.mode.setObjectName("review_mode")
        for key, text in MODES:
            self.mode.addItem(text, key)
        lay.addWidget(self.mode)
        self.stack = QStackedWidget()
        self.pages: dict[str, QWidget] = {}
        for key, _ in MODES:
            page = QWidget()
            self.pages[key] = page
            self.stack.addWidget(page)
        lay.addWidget(self.stack)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setObjectName("review_status")
        lay.addWidget(self.status)

        # --- grow from seeds
        g = QFormLayout(self.pages["grow"])
        self.seed_label = QComboBox()
        for s in ALL_STRUCTURES:
            self.seed_label.addItem(colour_icon(s.color), s.name, s.label)
        self.seed_label.addItem(colour_icon((40, 40, 40)), "Background (take away)", BACKGROUND_SEED)
        self.seed_label.setToolTip("The structure the next stroke seeds; paint strokes of at least two (for "
                                   "example the liver and, on the spill, the background).")
        g.addRow("Stroke of", self.seed_label)
        self.region = QComboBox()
        self.region.addItem("Around the strokes (+20 mm)", "seeds")
        self.region.addItem("Whole liver region", "liver")
        g.addRow("Grow in", self.region)
        row = QHBoxLayout()
        self.apply_btn = QPushButton("Apply")
        self.apply_btn.setObjectName("grow_apply")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setObjectName("grow_cancel")
        row.addWidget(self.apply_btn)
        row.addWidget(self.cancel_btn)
        g.addRow(row)
        self.apply_btn.clicked.connect(self.grow_apply)
        self.cancel_btn.clicked.connect(self.grow_cancel)
        self.region.currentIndexChanged.connect(self.grow_options)

        # --- scissors
        sc = QFormLayout(self.pages["scissors"])
        self.cut_side = QComboBox()
        self.cut_side.addItem("Inside the outline", True)
        self.cut_side.addItem("Outside the outline", False)
        sc.addRow("Remove", self.cut_side)
        self.slab = QDoubleSpinBox()
        self.slab.setRange(0.0, 500.0)
        self.slab.setValue(0.0)
        self.slab.setSuffix(" mm")
        self.slab.setSpecialValueText("all slices")
        self.slab.setToolTip("Thickness of the cut around the slice shown (0: through all slices)")
        sc.addRow("Through", self.slab)
        sc.addRow(QLabel("Drag an outline in a pane: the active structure is cut there."))

        # --- split
        sp = QFormLayout(self.pages["split"])
        self.split_to = QComboBox()
        self.split_to.addItem("Background", 0)
        for s in ALL_STRUCTURES:
            self.split_to.addItem(colour_icon(s.color), s.name, s.label)
        sp.addRow("Relabel the part to", self.split_to)

        # --- interpolate
        ip = QFormLayout(self.pages["slices"])
        self.plane = QComboBox()
        for text, ax in PLANES:
            self.plane.addItem(text, ax)
        ip.addRow("Drawn in", self.plane)
        self.interp_btn = QPushButton("Fill the slices between")
        self.interp_btn.setObjectName("interpolate")
        self.interp_btn.clicked.connect(self.interpolate)
        ip.addRow(self.interp_btn)

        # --- margin
        mg = QFormLayout(self.pages["margin"])
        self.margin_mm = QDoubleSpinBox()
        self.margin_mm.setRange(-50.0, 50.0)
        self.margin_mm.setValue(10.0)
        self.margin_mm.setSuffix(" mm")
        self.margin_mm.setToolTip("Positive: grow; negative: shrink")
        mg.addRow("Margin", self.margin_mm)
        self.smooth_mm = QDoubleSpinBox()
        self.smooth_mm.setRange(0.0, 10.0)
        self.smooth_mm.setValue(0.0)
        self.smooth_mm.setSuffix(" mm")
        mg.addRow("Smoothing", self.smooth_mm)
        self.one_lesion = QCheckBox("Only the part I click (one lesion)")
        mg.addRow(self.one_lesion)
        self.margin_btn = QPushButton("Apply margin to the whole structure")
        self.margin_btn.setObjectName("margin_apply")
        self.margin_btn.clicked.connect(self.margin)
        mg.addRow(self.margin_btn)

        self.mode.currentIndexChanged.connect(self._on_mode)
        self._on_mode()

    def _on_mode(self, *_):
        key = self.current_mode()
        self.stack.setCurrentWidget(self.pages[key])
        self.stack.setVisible(key != "off")
        self.mode_changed.emit(key)

    def current_mode(self) -> str:
        return str(self.mode.currentData())

    def set_mode(self, key: str) -> None:
        self.mode.setCurrentIndex(self.mode.findData(key))

    def set_status(self, text: str) -> None:
        self.status.setText(text)

    def seed_value(self) -> int:
        return int(self.seed_label.currentData())

    def set_seed_value(self, value: int) -> None:
        self.seed_label.setCurrentIndex(self.seed_label.findData(value))

    def grow_where(self) -> str:
        return str(self.region.currentData())

    def cut_inside(self) -> bool:
        return bool(self.cut_side.currentData())

    def slab_mm(self) -> float:
        return float(self.slab.value())

    def split_value(self) -> int:
        return int(self.split_to.currentData())

    def interpolation_axis(self) -> int:
        return int(self.plane.currentData())

    def margin_values(self) -> tuple[float, float, bool]:
        return float(self.margin_mm.value()), float(self.smooth_mm.value()), self.one_lesion.isChecked()


def _overlay_lut() -> np.ndarray:
    lut = np.zeros((256, 4), np.uint8)
    for s in ALL_STRUCTURES:
        lut[s.label] = (*s.color, 230)
        lut[STROKE_OFFSET + s.label] = (*(int(c + (255 - c) * 0.6) for c in s.color), 255)
    lut[TAKEN] = (20, 20, 20, 215)
    lut[BACKGROUND_SEED] = (255, 255, 255, 255)     # background strokes: white
    return lut


class ReviewTools(QObject):
    """Mouse gestures and background runs of the semi-automatic tools (one per window)."""

    def __init__(self, win, tools_panel, parent=None) -> None:
        super().__init__(parent)
        self.win, self.tools = win, tools_panel
        self.box = ReviewToolsBox()
        lay = tools_panel.layout()
        lay.insertWidget(min(3, lay.count()), self.box)    # below "Whole structure", above Undo/Redo
        self.seeds: Optional[SeedStrokes] = None
        self.preview = None                 # the latest GrowResult shown
        self._preview_serial = 0            # counts the results shown (keys the slices' cached changes)
        self.preview_task = None
        self._preview_version = -1          # the seeds' version the shown preview was grown from
        self.outline: list[tuple[float, float]] = []
        self._outline_axis = 0
        self.last_task = None
        self._lut = _overlay_lut()
        self._items: dict[int, tuple] = {}
        self._changes: dict[int, tuple] = {}      # per view: (key, the preview's changes on its slice)
        self.box.mode_changed.connect(self._mode_changed)
        self.box.grow_apply.connect(self.apply_grow)
        self.box.grow_cancel.connect(self.cancel_grow)
        self.box.grow_options.connect(self._seeds_changed)
        self.box.interpolate.connect(self.interpolate)
        self.box.margin.connect(lambda: self.apply_margin(None))
        tools_panel.tool_changed.connect(self._tool_changed)
        tools_panel.brush_changed.connect(self._show_brush)
        win.session.listen(self._on_session)
        for v in win.views:
            v.extra_layers.append(self._draw)

    # ------------------------------------------------------------------ state
    @property
    def mode(self) -> str:
        return self.box.current_mode()

    def _on_session(self, kind: str, data) -> None:
        if kind == "case":
            self.reset()

    def reset(self) -> None:
        """Forget the strokes, preview and outline (a new case, Cancel, after Apply)."""
        if self.preview_task is not None:
            self.preview_task.cancel()
        self.preview_task = None
        case = self.win.session.case
        self.seeds = SeedStrokes(case.labels.shape) if case is not None else None
        self.preview = None
        self._preview_serial += 1
        self._preview_version = -1
        self.outline = []
        self._redraw()

    def _mode_changed(self, key: str) -> None:
        # interpolation works on what the brush draws: it keeps the tab's tool; the others own the mouse
        if key not in ("off", "slices") and self.tools.tool() != "navigate":
            self.tools.set_tool("navigate")
        if key != "grow" and self.seeds is not None and self.seeds.labels:
            self.cancel_grow()
        hints = {"grow": "Paint strokes of two or more structures (e.g. the liver and, on the spill, the "
                         "background); the preview follows each stroke. Apply makes it one undo step.",
                 "scissors": "Drag an outline around what to cut off, in any pane.",
                 "split": "Click the part to drop (e.g. a spill joined to the liver by a narrow bridge).",
                 "slices": "Draw the structure on a few slices with the brush, then fill the slices between.",
                 "margin": "Grows or shrinks the active structure (or, ticked, the part you click) by the "
                           "margin, in millimetres."}
        self.box.set_status(hints.get(key, ""))
        self._show_brush()
        self._redraw()

    def _tool_changed(self, key: str) -> None:
        if key != "navigate" and self.mode not in ("off", "slices"):
            self.box.set_mode("off")

    def _show_brush(self, *_) -> None:
        """The brush circle in the panes: the strokes' in grow mode, else the tab's own brush's or none."""
        own = self.tools.tool() in ("brush", "eraser")
        r = self.tools.brush_radius() if self.mode == "grow" or own else 0.0
        for v in self.win.views:
            v.set_brush_radius(r)

    # ------------------------------------------------------------------ mouse
    def on_mouse(self, kind: str, zyx, axis: int, modifiers) -> bool:
        """A gesture in a pane; True when one of these tools used it."""
        mode = self.mode
        if mode in ("off", "slices") or modifiers & Qt.ShiftModifier or self.win.session.case is None:
            return False
        if mode == "margin":
            if not self.box.margin_values()[2]:
                return False
            if kind == "click":
                self.apply_margin(zyx)
            return True
        if mode == "grow":
            if kind in ("press", "move", "click"):
                self._seed_dab(zyx, axis)
            if kind in ("release", "click"):
                self._seeds_changed()
            return True
        if mode == "scissors":
            if kind == "press":
                self.outline, self._outline_axis = [], axis
            if kind in ("press", "move") and axis == self._outline_axis:
                r_ax, c_ax = ROW_COL_AXES[axis]
                pt = (zyx[r_ax] + 0.5, zyx[c_ax] + 0.5)
                if not self.outline or self.outline[-1] != pt:
                    self.outline.append(pt)
                self._redraw()
            if kind == "release":
                self.cut(zyx[axis] if zyx is not None else self.win.pos[axis], self._outline_axis)
            elif kind == "click":
                self.box.set_status("Drag an outline (hold the button down) around what to cut off.")
            return True
        if mode == "split":
            if kind == "click":
                self.split(zyx)
            return True
        return False

    # ------------------------------------------------------------------ grow from seeds
    def _seed_dab(self, zyx, axis: int) -> None:
        s = self.win.session
        if self.seeds is None or self.seeds.shape != s.case.labels.shape:
            self.seeds = SeedStrokes(s.case.labels.shape)
        box, mask = edits.brush_footprint(zyx, self.tools.brush_radius(), s.case.geometry.spacing,
                                          s.case.labels.shape, sphere=False, plane_axis=axis)
        if box is not None:
            self.seeds.add(self.box.seed_value(), box, np.ascontiguousarray(mask))
            self._redraw()

    def _seeds_changed(self, *_) -> None:
        """New strokes (or another region): grow the preview again, off the GUI thread."""
        if self.seeds is None or len(self.seeds.labels) < 1:
            return
        if self.preview_task is not None and not self.preview_task.finished:
            return                          # the run under way is followed by one more when it ends
        s = self.win.session
        version = self.seeds.version
        task = self.win.runner.start("grow_preview", grow_region, s.case.labels, s.case.image, self.seeds.copy(),
                                     s.case.geometry.spacing, progress=False, where=self.box.grow_where(),
                                     refine=False)
        self.preview_task = task
        self.box.set_status("Growing the preview…")

        def ok(result):
            if self.seeds is None or task is not self.preview_task:
                return
            self.preview, self._preview_version = result, version
            self._preview_serial += 1
            self._redraw()
            if result is not None:
                grown = {_name(v) for v in self.seeds.labels}
                self.box.set_status(f"Preview: {', '.join(sorted(grown))} grown in a "
                                    f"{' x '.join(str(result.box[2 * a + 1] - result.box[2 * a]) for a in range(3))}"
                                    f" voxel box. Apply or Cancel; more strokes refine it.")

        def failed(msg, exc):
            if task is self.preview_task:
                self.box.set_status(str(exc) if isinstance(exc, ValueError) else msg)

        def done():
            if task is self.preview_task and self.seeds is not None and self.seeds.version != version \
                    and self.mode == "grow":
                self.preview_task = None
                self._seeds_changed()       # strokes came in while it ran: grow them too

        task.succeeded.connect(ok)
        task.failed.connect(failed)
        task.done.connect(done)

    def apply_grow(self) -> None:
        """Grow at full resolution (refined) in the background, then apply as one undo step."""
        if self.seeds is None or not self.seeds.labels:
            self.box.set_status("Paint strokes first: at least two structures (e.g. liver and background).")
            return
        s = self.win.session
        seeds = self.seeds.copy()
        names = ", ".join(_name(v) for v in seeds.labels)

        def work(labels, image, spacing, where):
            res = grow_region(labels, image, seeds, spacing, where=where, refine=True)
            return None if res is None else grow_values(labels, res)

        self._run("grow", "grow_from_seeds", f"Grow from seeds ({names})", work, s.case.labels, s.case.image,
                  s.case.geometry.spacing, self.box.grow_where(), after=self.reset,
                  nothing="Growing the strokes changes nothing.")

    def cancel_grow(self) -> None:
        self.reset()
        self.box.set_status("Strokes and preview cleared; nothing was changed.")

    # ------------------------------------------------------------------ scissors, split, slices, margin
    def cut(self, slice_index: int, axis: int) -> None:
        pts, self.outline = list(self.outline), []
        self._redraw()
        if len(pts) < 3:
            self.box.set_status("The outline needs at least three points: drag around what to cut off.")
            return
        s = self.win.session
        lab = self.tools.active_label()
        side = "inside" if self.box.cut_inside() else "outside"
        slab = self.box.slab_mm()
        where = "all slices" if slab <= 0 else f"a {slab:g} mm slab"
        p = propose_cut(s.case.labels, lab, axis, int(slice_index), pts, s.case.geometry.spacing,
                        inside=self.box.cut_inside(), slab_mm=slab)
        if p is None:
            self.box.set_status(f"No {_name(lab)} {side} the outline: nothing was cut.")
            return
        e = s.apply("scissors", f"Scissors ({_name(lab)}, {side}, {where})", apply_proposal, p)
        if e is not None:
            self.box.set_status(f"Cut {p.changed_voxels * s.case.geometry.voxel_volume_ml:.2f} mL of {_name(lab)}.")

    def split(self, zyx) -> None:
        s = self.win.session
        hit = int(s.case.labels[tuple(zyx)])
        if hit == 0:
            self.box.set_status("Click on the part of a structure to drop.")
            return
        to = self.box.split_value()
        self._run("split", "split", f"Split at neck ({_name(hit)} to {_name(to)})", propose_split, s.case.labels,
                  tuple(int(v) for v in zyx), s.case.geometry.spacing, replace_with=to,
                  nothing=f"No narrow neck separates this part of the {_name(hit)} from the rest: nothing was "
                          "cut. The scissors cut anywhere.")

    def interpolate(self) -> None:
        s = self.win.session
        if s.case is None:
            return
        lab, axis = self.tools.active_label(), self.box.interpolation_axis()
        self._run("interpolate", "interpolate", f"Interpolate between slices ({_name(lab)})", propose_interpolation,
                  s.case.labels, lab, axis, s.case.geometry.spacing, rule=self.tools.paint_rule(),
                  image=s.case.image, hu_range=self.tools.hu_range(),
                  nothing=f"Nothing to fill: draw the {_name(lab)} on at least two {PLANES[axis][0].lower()} "
                          "slices with empty slices between.")

    def apply_margin(self, zyx=None) -> None:
        s = self.win.session
        if s.case is None:
            return
        mm, smooth, one = self.box.margin_values()
        lab = self.tools.active_label()
        seed = None
        if zyx is not None:
            hit = int(s.case.labels[tuple(zyx)])
            if hit != lab:
                self.box.set_status(f"Click on the {_name(lab)} (the active structure).")
                return
            seed = tuple(int(v) for v in zyx)
        what = f"{_name(lab)}{' (one part)' if seed else ''}"
        self._run("margin", "margin", f"Margin {mm:+g} mm ({what})", propose_margin, s.case.labels, lab, mm,
                  s.case.geometry.spacing, seed_zyx=seed, smooth_mm=smooth, rule=self.tools.paint_rule(),
                  image=s.case.image, hu_range=self.tools.hu_range(), nothing="The margin changes nothing.")

    def _run(self, name: str, kind: str, description: str, fn, *args, after=None, nothing: str = "", **kwargs):
        """Run ``fn(*args, **kwargs) -> Proposal | None`` in the background and apply it as one step."""
        s = self.win.session
        version = s.history.version
        task = self.win.runner.start(f"review_{name}", fn, *args, progress=False, **kwargs)
        self.last_task = task
        self.win.track_task(task, description, cancellable=True)
        self.box.set_status(f"{description}…")

        def ok(p):
            if p is None:
                self.box.set_status(nothing)
                self.win.message(nothing)
                return
            if s.history.version != version:
                self.box.set_status("The labels changed while this ran: nothing was applied; try again.")
                return
            e = s.apply(kind, description, apply_proposal, p)
            if e is not None:
                ml = p.changed_voxels * s.case.geometry.voxel_volume_ml
                extra = f" at a neck {p.info['neck_radius_mm']:.1f} mm in radius" if "neck_radius_mm" in p.info else ""
                self.box.set_status(f"{description}: {ml:.2f} mL changed{extra}. Undo takes it back.")
            if after is not None:
                after()

        task.succeeded.connect(ok)
        task.failed.connect(lambda msg, exc: (self.box.set_status(msg), self.win.message(msg, error=True)))
        return task

    # ------------------------------------------------------------------ overlays
    def _redraw(self) -> None:
        for v in self.win.views:
            self._draw(v)

    def _items_for(self, view):
        it = self._items.get(id(view))
        if it is None:
            img = pg.ImageItem()
            img.setZValue(20)
            path = QGraphicsPathItem()
            pen = QPen(QColor(255, 230, 0))
            pen.setCosmetic(True)
            pen.setWidth(2)
            path.setPen(pen)
            path.setZValue(21)
            view.vb.addItem(img)
            view.vb.addItem(path, ignoreBounds=True)
            it = (img, path)
            self._items[id(view)] = it
        return it

    def _draw(self, view) -> None:
        """The preview, the strokes and the scissors outline on ``view``'s slice."""
        if view.image is None:
            return
        img_item, path_item = self._items_for(view)
        ax = view.axis
        r_ax, c_ax = ROW_COL_AXES[ax]
        i = view.pos_zyx[ax]
        shape = view.image.shape
        plane = None
        if self.mode == "grow" and self.seeds is not None and view.labels is not None:
            # the preview's changes on this slice are kept until the result, the slice or the labels change:
            # a stroke being drawn redraws only the strokes over them
            key = (self._preview_serial, ax, i, self.win.session.history.version)
            cached = self._changes.get(id(view))
            if cached is None or cached[0] != key:
                cached = (key, preview_changes(view.labels, self.preview, ax, i))
                self._changes[id(view)] = cached
            plane = preview_slice(view.labels, self.seeds, self.preview, ax, i, changes=cached[1])
        if plane is None or not plane.any():
            img_item.setVisible(False)
        else:
            img_item.setImage(plane, autoLevels=False, levels=(0, 255), lut=self._lut)
            sp = view.spacing
            img_item.setRect(QRectF(0, 0, shape[c_ax] * sp[c_ax], shape[r_ax] * sp[r_ax]))
            img_item.setVisible(True)
        path = QPainterPath()
        if self.mode == "scissors" and self.outline and self._outline_axis == ax:
            sp = view.spacing
            pts = [QPointF(c * sp[c_ax], r * sp[r_ax]) for r, c in self.outline]
            path.moveTo(pts[0])
            for p in pts[1:]:
                path.lineTo(p)
            path.closeSubpath()
        path_item.setPath(path)


def attach_to(win, tools_panel) -> ReviewTools:
    """The semi-automatic tools for the window's Correct tab (called by gui.controllers.CorrectController)."""
    return ReviewTools(win, tools_panel, tools_panel)


__all__ = ["ReviewTools", "ReviewToolsBox", "attach_to", "MODES"]
