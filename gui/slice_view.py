"""One 2D slice pane (axial, coronal or sagittal) of the canonical LPS volume.

Display conventions (arrays are (z, y, x); x runs patient right->left, y anterior->posterior,
z inferior->superior):
- axial (axis 0): rows y, columns x; anterior at the top; patient right on the screen's LEFT
  (radiological convention, as the patient is seen from the feet).
- coronal (axis 1): rows z, columns x; superior at the top; patient right on the screen's left.
- sagittal (axis 2): rows z, columns y; superior at the top; anterior on the left.
Scene coordinates are millimetres (each image is placed with its true pixel size), so aspect ratios
are true. Mouse: left = crosshair or the active tool, wheel = next/previous slice, Ctrl+wheel = zoom,
middle drag = pan, right drag = window/level.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsRectItem, QLabel, QVBoxLayout, QWidget

from engine.overlay import outline_plane

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

AXIS_NAMES = ("Axial", "Coronal", "Sagittal")
# (left, right, top, bottom) patient-direction letters for each pane.
ORIENTATION_LETTERS = {0: ("R", "L", "A", "P"), 1: ("R", "L", "S", "I"), 2: ("A", "P", "S", "I")}
# For each pane: which array axes are its (row, column).
ROW_COL_AXES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}
#: The keys of a pane that has the focus: (Qt key, slices to step, what it does) — Help > Keyboard
#: shortcuts lists this table.
PANE_KEYS = ((Qt.Key_Up, 1, "Next slice"), (Qt.Key_Down, -1, "Previous slice"),
             (Qt.Key_PageUp, 10, "10 slices on"), (Qt.Key_PageDown, -10, "10 slices back"))
#: The mouse in a pane (the module docstring's list), for Help > Keyboard shortcuts.
MOUSE_GESTURES = (("Left click / drag", "Move the crosshair, or use the active tool"),
                  ("Shift + left click", "Move the crosshair whatever the tool"),
                  ("Wheel", "Next / previous slice"), ("Ctrl + wheel", "Zoom"),
                  ("Middle drag", "Pan"), ("Right drag", "Window (left-right) and level (up-down)"))


class _SliceViewBox(pg.ViewBox):
    """ViewBox whose mouse gestures are routed to the owning SliceView."""

    def __init__(self, owner: "SliceView") -> None:
        super().__init__(lockAspect=True, enableMenu=False, invertY=(owner.axis == 0))
        self.owner = owner
        self._wl_start: Optional[tuple[float, float]] = None

    def wheelEvent(self, ev, axis=None):  # noqa: N802 - Qt naming
        if ev.modifiers() & Qt.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        delta = ev.delta() if hasattr(ev, "delta") else ev.angleDelta().y()
        self.owner.step_slice(1 if delta > 0 else -1)
        ev.accept()

    def mouseClickEvent(self, ev):  # noqa: N802
        if ev.button() == Qt.LeftButton:
            ev.accept()
            self.owner.mouse_at("click", self.mapSceneToView(ev.scenePos()), ev.modifiers())
        else:
            ev.ignore()

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802
        b = ev.button()
        if b == Qt.LeftButton:
            ev.accept()
            p = self.mapSceneToView(ev.scenePos())
            if ev.isStart():
                self.owner.mouse_at("press", self.mapSceneToView(ev.buttonDownScenePos()), ev.modifiers())
            self.owner.mouse_at("move", p, ev.modifiers())
            if ev.isFinish():
                self.owner.mouse_at("release", p, ev.modifiers())
        elif b == Qt.MiddleButton:
            # Pan: let ViewBox do it as if the left button were used in pan mode.
            ev.accept()
            dif = (ev.pos() - ev.lastPos()) * -1
            tr = self.childGroup.transform()
            tr = pg.functions.invertQTransform(tr)
            dif = tr.map(dif) - tr.map(pg.Point(0, 0))
            self._resetTarget()
            self.translateBy(x=dif.x(), y=dif.y())
            self.sigRangeChangedManually.emit(self.state["mouseEnabled"])
        elif b == Qt.RightButton:
            ev.accept()
            d = ev.pos() - ev.lastPos()
            self.owner.window_drag(float(d.x()), float(d.y()))
        else:
            ev.ignore()


class SliceView(QWidget):
    """A slice pane. Emits ``mouse_action(kind, (z, y, x), axis, modifiers)`` for the window's tools."""

    mouse_action = Signal(str, tuple, int, object)
    slice_changed = Signal(int, int)          # axis, new index
    shown_slice_changed = Signal(int)         # the slice shown changed (its index), after the refresh
    window_changed = Signal(float, float)     # level, width (by right-drag)

    def __init__(self, axis: int, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.axis = axis
        self.setObjectName(f"slice_view_{AXIS_NAMES[axis].lower()}")
        self.image: Optional[np.ndarray] = None
        self.labels: Optional[np.ndarray] = None
        self.spacing = (1.0, 1.0, 1.0)
        self.geometry = None
        self.pos_zyx = [0, 0, 0]
        self.level, self.width = 50.0, 400.0
        self._lut: Optional[np.ndarray] = None
        self._highlight_box = None  # (z0, z1, y0, y1, x0, x1) of the selected lesion
        self.outline = False        # outline mode of the label overlay (engine.overlay.outline_plane)

        self.view = pg.GraphicsView(background="k")
        # A native window of its own: otherwise, once the 3D pane (a QOpenGLWidget) is in the window, every
        # repaint of a slice is composed with the whole window through OpenGL, which with software
        # OpenGL made each scroll step 3-6x slower (measured: benchmarks/gui_speed.py).
        self.view.setAttribute(Qt.WA_NativeWindow)
        self.vb = _SliceViewBox(self)
        self.view.setCentralItem(self.vb)
        self.ct_item = pg.ImageItem()
        self.label_item = pg.ImageItem()
        self.label_item.setOpacity(0.45)
        # an optional second layer above the labels (the Plan tab's Couinaud segment map)
        self.layer_item = pg.ImageItem()
        self.layer_item.setOpacity(0.35)
        self.layer_item.setVisible(False)
        self._layer: Optional[np.ndarray] = None
        self._layer_lut: Optional[np.ndarray] = None
        #: callables ``fn(view)`` run after the labels are redrawn (a slice change, an edit): other layers
        #: draw their own items then (gui.review_overlays: errors, uncertainty; gui.review_tools: the grow
        #: preview, seeds and scissors outline)
        self.extra_layers: list = []
        self.vb.addItem(self.ct_item)
        self.vb.addItem(self.label_item)
        self.vb.addItem(self.layer_item)
        pen = pg.mkPen(QColor(255, 210, 0, 170), width=1)
        self.vline = pg.InfiniteLine(angle=90, movable=False, pen=pen)
        self.hline = pg.InfiniteLine(angle=0, movable=False, pen=pen)
        self.vb.addItem(self.vline, ignoreBounds=True)
        self.vb.addItem(self.hline, ignoreBounds=True)
        self.highlight = QGraphicsRectItem()
        hp = QPen(QColor(255, 255, 0))
        hp.setCosmetic(True)
        hp.setWidth(2)
        self.highlight.setPen(hp)
        self.highlight.setVisible(False)
        self.vb.addItem(self.highlight, ignoreBounds=True)
        self.brush_cursor = QGraphicsEllipseItem()
        bp = QPen(QColor(255, 255, 255, 200))
        bp.setCosmetic(True)
        self.brush_cursor.setPen(bp)
        self.brush_cursor.setVisible(False)
        self.vb.addItem(self.brush_cursor, ignoreBounds=True)
        # a tool's proposal before it is applied (Correct tab: vessel trace, lesion from a click) and its clicks
        self.preview_item = pg.ImageItem()
        self.preview_item.setVisible(False)
        self.vb.addItem(self.preview_item)
        self.preview_points = pg.ScatterPlotItem(size=9, pen=pg.mkPen("k"), brush=pg.mkBrush(255, 60, 200))
        self.vb.addItem(self.preview_points, ignoreBounds=True)
        self._preview = None
        self._preview_marks: list = []

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.view)
        self.setFocusPolicy(Qt.ClickFocus)  # arrow keys / Page Up / Page Down scroll the clicked pane
        # Orientation letters and the slice caption sit on top of the image (child labels).
        self.letters = []
        for _ in range(4):
            lab = QLabel(self.view)
            lab.setStyleSheet("color: #ffcc33; background: transparent; font-weight: bold;")
            self.letters.append(lab)
        for lab, text in zip(self.letters, ORIENTATION_LETTERS[axis]):
            lab.setText(text)
        self.caption = QLabel(self.view)
        self.caption.setStyleSheet("color: white; background: transparent;")
        self.caption.setFont(QFont("Sans", 9))
        self.wl_caption = QLabel(self.view)
        self.wl_caption.setStyleSheet("color: #bbbbbb; background: transparent;")
        self.wl_caption.setFont(QFont("Sans", 8))
        self.view.scene().sigMouseMoved.connect(self._hover)
        self.brush_radius_mm = 0.0

    # --- layout -----------------------------------------------------------------------------
    def resizeEvent(self, ev):  # noqa: N802
        super().resizeEvent(ev)
        w, h = self.view.width(), self.view.height()
        left, right, top, bottom = self.letters
        for lab in self.letters:
            lab.adjustSize()
        left.move(4, h // 2 - left.height() // 2)
        right.move(w - right.width() - 4, h // 2 - right.height() // 2)
        top.move(w // 2 - top.width() // 2, 18)  # below the caption line, which can be long
        bottom.move(w // 2 - bottom.width() // 2, h - bottom.height() - 2)
        self.caption.move(4, 2)
        self.wl_caption.move(4, h - 16)

    # --- data -------------------------------------------------------------------------------
    def set_volume(self, image: np.ndarray, labels: np.ndarray, geometry, pos_zyx) -> None:
        """Show a new case: ``image``/``labels`` (z, y, x) on ``geometry`` (engine Geometry), crosshair."""
        self.image, self.labels = image, labels
        self.geometry = geometry
        self.spacing = tuple(float(s) for s in geometry.spacing)
        self.pos_zyx = [int(v) for v in pos_zyx]
        self._highlight_box = None
        self.highlight.setVisible(False)
        self.refresh()
        self.reset_zoom()

    def set_labels_array(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.refresh_labels()

    def _plane(self, volume: np.ndarray) -> np.ndarray:
        i = self.pos_zyx[self.axis]
        if self.axis == 0:
            return volume[i]
        if self.axis == 1:
            return volume[:, i, :]
        return volume[:, :, i]

    def _rect(self) -> QRectF:
        r_ax, c_ax = ROW_COL_AXES[self.axis]
        n_r, n_c = self.image.shape[r_ax], self.image.shape[c_ax]
        return QRectF(0, 0, n_c * self.spacing[c_ax], n_r * self.spacing[r_ax])

    def refresh(self) -> None:
        if self.image is None:
            return
        self.ct_item.setImage(self._plane(self.image), autoLevels=False, levels=self._levels())
        self.ct_item.setRect(self._rect())
        self.refresh_labels()
        self._update_crosshair()
        self._update_caption()
        self._update_highlight()
        self._update_preview()

    def refresh_labels(self) -> None:
        if self.labels is None or self._lut is None:
            return
        plane = self._plane(self.labels)
        if self.outline:
            plane = outline_plane(plane)
        self.label_item.setImage(plane, autoLevels=False, levels=(0, 255), lut=self._lut)
        self.label_item.setRect(self._rect())
        if self._layer is not None and self._layer.shape == self.labels.shape:
            self.layer_item.setImage(self._plane(self._layer), autoLevels=False, levels=(0, 255), lut=self._layer_lut)
            self.layer_item.setRect(self._rect())
        for fn in self.extra_layers:
            fn(self)

    def plane_rect(self) -> QRectF:
        """The scene rectangle (mm) of this pane's slice: where an overlay's plane image goes."""
        return self._rect()

    def set_layer(self, volume: Optional[np.ndarray], lut: Optional[np.ndarray] = None) -> None:
        """Show a uint8 (z, y, x) map on the case's grid over the labels, coloured by ``lut`` (256 x 4
        RGBA); None hides it."""
        self._layer, self._layer_lut = volume, lut
        self.layer_item.setVisible(volume is not None and self.image is not None)
        self.refresh_labels()

    def set_lut(self, lut: np.ndarray) -> None:
        """RGBA lookup table (256 x 4 uint8) for the label overlay; hidden structures have alpha 0."""
        self._lut = lut
        self.refresh_labels()

    def set_outline(self, on: bool) -> None:
        """Draw the labels as outlines (True: a lesion's margin and the CT under it stay visible) or filled."""
        self.outline = bool(on)
        self.refresh_labels()

    def set_overlay_opacity(self, alpha: float) -> None:
        self.label_item.setOpacity(float(alpha))

    def reset_zoom(self) -> None:
        if self.image is not None:
            self.vb.setRange(self._rect(), padding=0.02)

    # --- window/level -----------------------------------------------------------------------
    def _levels(self) -> tuple[float, float]:
        return (self.level - self.width / 2.0, self.level + self.width / 2.0)

    def set_window(self, level: float, width: float) -> None:
        self.level, self.width = float(level), max(float(width), 1.0)
        if self.image is not None:
            self.ct_item.setLevels(self._levels())
        self.wl_caption.setText(f"W {self.width:.0f}  L {self.level:.0f}")
        self.wl_caption.adjustSize()

    def window_drag(self, dx: float, dy: float) -> None:
        # Right-drag: horizontal = width, vertical = level (the usual radiology-viewer gesture).
        self.window_changed.emit(self.level - dy * 2.0, max(self.width + dx * 4.0, 1.0))

    # --- position ---------------------------------------------------------------------------
    def set_position(self, zyx) -> None:
        old = self.pos_zyx[self.axis]
        self.pos_zyx = [int(v) for v in zyx]
        if self.image is None:
            return
        if self.pos_zyx[self.axis] != old:
            self.refresh()
            self.shown_slice_changed.emit(self.pos_zyx[self.axis])
        else:
            self._update_crosshair()
            self._update_caption()

    def step_slice(self, step: int) -> None:
        if self.image is None:
            return
        n = self.image.shape[self.axis]
        i = min(max(self.pos_zyx[self.axis] + step, 0), n - 1)
        if i != self.pos_zyx[self.axis]:
            self.slice_changed.emit(self.axis, i)

    def _update_crosshair(self) -> None:
        r_ax, c_ax = ROW_COL_AXES[self.axis]
        self.vline.setPos((self.pos_zyx[c_ax] + 0.5) * self.spacing[c_ax])
        self.hline.setPos((self.pos_zyx[r_ax] + 0.5) * self.spacing[r_ax])

    def _update_caption(self) -> None:
        n = self.image.shape[self.axis]
        i = self.pos_zyx[self.axis]
        # Position of the slice along its patient axis (LPS mm, from the engine's geometry).
        mm = float(self.geometry.index_to_physical(self.pos_zyx)[2 - self.axis]) if self.geometry else 0.0
        name = ("S", "P", "L")[self.axis]
        self.caption.setText(f"{AXIS_NAMES[self.axis]}  {i + 1}/{n}   {name} {mm:.1f} mm")
        self.caption.adjustSize()

    def set_highlight(self, box) -> None:
        """Outline a lesion's bounding box (z0, z1, y0, y1, x0, x1) where this slice crosses it."""
        self._highlight_box = box
        self._update_highlight()

    def _update_highlight(self) -> None:
        b = self._highlight_box
        if b is None or self.image is None:
            self.highlight.setVisible(False)
            return
        i = self.pos_zyx[self.axis]
        if not (b[2 * self.axis] <= i < b[2 * self.axis + 1]):
            self.highlight.setVisible(False)
            return
        r_ax, c_ax = ROW_COL_AXES[self.axis]
        sr, sc = self.spacing[r_ax], self.spacing[c_ax]
        pad = 2.0  # mm around the lesion so the outline does not hide its edge
        self.highlight.setRect(QRectF(b[2 * c_ax] * sc - pad, b[2 * r_ax] * sr - pad,
                                      (b[2 * c_ax + 1] - b[2 * c_ax]) * sc + 2 * pad,
                                      (b[2 * r_ax + 1] - b[2 * r_ax]) * sr + 2 * pad))
        self.highlight.setVisible(True)

    def set_preview(self, box=None, mask=None, rgba=(255, 230, 0, 170), points=()) -> None:
        """Show a tool's proposal: ``mask`` (bool, over ``box`` (z0, z1, y0, y1, x0, x1)) in colour ``rgba``
        where this slice crosses it, and the tool's clicks ``points`` (z, y, x) lying in this slice.
        No box: no proposal."""
        self._preview = None if box is None or mask is None else (tuple(int(v) for v in box), mask, rgba)
        self._preview_marks = [tuple(int(v) for v in p) for p in points]
        self._update_preview()

    def _update_preview(self) -> None:
        if self.image is None:
            return
        i = self.pos_zyx[self.axis]
        r_ax, c_ax = ROW_COL_AXES[self.axis]
        marks = [p for p in self._preview_marks if p[self.axis] == i]
        self.preview_points.setData([(p[c_ax] + 0.5) * self.spacing[c_ax] for p in marks],
                                    [(p[r_ax] + 0.5) * self.spacing[r_ax] for p in marks])
        if self._preview is None or not (self._preview[0][2 * self.axis] <= i < self._preview[0][2 * self.axis + 1]):
            self.preview_item.setVisible(False)
            return
        box, mask, rgba = self._preview
        plane = np.take(mask, i - box[2 * self.axis], axis=self.axis)
        rgba_img = np.zeros(plane.shape + (4,), dtype=np.uint8)
        rgba_img[plane] = rgba
        self.preview_item.setImage(rgba_img, autoLevels=False)
        sr, sc = self.spacing[r_ax], self.spacing[c_ax]
        self.preview_item.setRect(QRectF(box[2 * c_ax] * sc, box[2 * r_ax] * sr, plane.shape[1] * sc,
                                         plane.shape[0] * sr))
        self.preview_item.setVisible(True)

    # --- mouse ------------------------------------------------------------------------------
    def view_to_index(self, p: QPointF) -> Optional[tuple[int, int, int]]:
        """Voxel (z, y, x) under a view point (mm), or None outside the image."""
        if self.image is None:
            return None
        r_ax, c_ax = ROW_COL_AXES[self.axis]
        row = int(np.floor(p.y() / self.spacing[r_ax]))
        col = int(np.floor(p.x() / self.spacing[c_ax]))
        if not (0 <= row < self.image.shape[r_ax] and 0 <= col < self.image.shape[c_ax]):
            return None
        zyx = list(self.pos_zyx)
        zyx[r_ax], zyx[c_ax] = row, col
        return tuple(zyx)

    def index_to_view(self, zyx) -> QPointF:
        r_ax, c_ax = ROW_COL_AXES[self.axis]
        return QPointF((zyx[c_ax] + 0.5) * self.spacing[c_ax], (zyx[r_ax] + 0.5) * self.spacing[r_ax])

    def mouse_at(self, kind: str, p: QPointF, modifiers) -> None:
        zyx = self.view_to_index(p)
        if zyx is None and kind not in ("release",):
            return
        self.mouse_action.emit(kind, zyx or tuple(self.pos_zyx), self.axis, modifiers)

    def _hover(self, scene_pos) -> None:
        if self.brush_radius_mm <= 0 or self.image is None:
            self.brush_cursor.setVisible(False)
            return
        p = self.vb.mapSceneToView(scene_pos)
        r = self.brush_radius_mm
        self.brush_cursor.setRect(QRectF(p.x() - r, p.y() - r, 2 * r, 2 * r))
        self.brush_cursor.setVisible(True)

    def set_brush_radius(self, radius_mm: float) -> None:
        self.brush_radius_mm = float(radius_mm)
        if radius_mm <= 0:
            self.brush_cursor.setVisible(False)

    def keyPressEvent(self, ev):  # noqa: N802
        steps = {key: step for key, step, _what in PANE_KEYS}
        if ev.key() in steps:
            self.step_slice(steps[ev.key()])
            ev.accept()
        else:
            super().keyPressEvent(ev)

    def screenshot(self):
        return self.view.grab()
