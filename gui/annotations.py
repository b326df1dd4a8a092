"""Ruler and angle in the slice panes: a distance in mm (two clicks) and an angle in degrees (three
clicks), drawn in the pane they were made in, on that slice, until removed (View > Measure).

The numbers are the engine's (engine.overlay.distance_mm / angle_deg on the voxels' patient coordinates,
LPS mm, so they hold for any voxel spacing and orientation); the items only draw them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pyqtgraph as pg
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QColor

from engine.overlay import angle_deg, distance_mm

COLOR = QColor(255, 230, 40)


@dataclass
class Annotation:
    """One finished (or growing) ruler or angle: its pane, its slice and its voxels (z, y, x)."""

    kind: str                    # "ruler" or "angle"
    axis: int
    index: int                   # the slice it was drawn on
    points: list = field(default_factory=list)
    value: float = float("nan")  # mm or degrees
    items: list = field(default_factory=list)

    @property
    def needed(self) -> int:
        return 2 if self.kind == "ruler" else 3

    @property
    def done(self) -> bool:
        return len(self.points) >= self.needed

    def text(self) -> str:
        return f"{self.value:.1f} mm" if self.kind == "ruler" else f"{self.value:.1f}°"


class Annotations(QObject):
    """The rulers and angles of the open case (a new case clears them)."""

    changed = Signal()

    def __init__(self, win, parent=None) -> None:
        super().__init__(parent)
        self.win = win
        self.mode: Optional[str] = None          # None, "ruler" or "angle"
        self.items: list[Annotation] = []
        self._current: Optional[Annotation] = None
        for v in win.views:
            v.shown_slice_changed.connect(lambda _i, v=v: self._show_for(v))

    # --- mode ---------------------------------------------------------------------------------
    def set_mode(self, mode: Optional[str]) -> None:
        """Start measuring ("ruler", "angle") or stop (None); an unfinished one is dropped."""
        self._drop_current()
        self.mode = mode
        if mode == "ruler":
            self.win.message("Ruler: click two points in a pane (View > Measure > Remove rulers and angles).")
        elif mode == "angle":
            self.win.message("Angle: click three points in a pane, the vertex second.")

    def handle_mouse(self, kind: str, zyx, axis: int) -> bool:
        """A click in a pane while measuring places the next point; True when it was taken."""
        if self.mode is None or self.win.case is None:
            return False
        if kind != "click":
            return kind in ("press", "move", "release")      # no drag edits or panning while measuring
        cur = self._current
        if cur is not None and (cur.axis != axis or cur.index != int(zyx[axis])):
            self._drop_current()
            cur = None
        if cur is None:
            cur = self._current = Annotation(self.mode, axis, int(zyx[axis]))
        cur.points.append(tuple(int(v) for v in zyx))
        self._compute(cur)
        self._draw(cur)
        if cur.done:
            self.items.append(cur)
            self._current = None
            self.win.message(f"{'Distance' if cur.kind == 'ruler' else 'Angle'}: {cur.text()}.")
            self.changed.emit()
        return True

    def _compute(self, a: Annotation) -> None:
        g = self.win.case.geometry
        pts = [g.index_to_physical(p) for p in a.points]
        if a.kind == "ruler" and len(pts) == 2:
            a.value = distance_mm(pts[0], pts[1])
        elif a.kind == "angle" and len(pts) == 3:
            a.value = angle_deg(pts[0], pts[1], pts[2])

    # --- drawing ------------------------------------------------------------------------------
    def _draw(self, a: Annotation) -> None:
        view = self.win.views[a.axis]
        for it in a.items:
            view.vb.removeItem(it)
        a.items = []
        xy = [view.index_to_view(p) for p in a.points]
        pen = pg.mkPen(COLOR, width=2)
        line = pg.PlotDataItem([p.x() for p in xy], [p.y() for p in xy], pen=pen, symbol="o", symbolSize=6,
                               symbolBrush=COLOR, symbolPen=None)
        view.vb.addItem(line, ignoreBounds=True)
        a.items.append(line)
        if a.done:
            label = pg.TextItem(a.text(), color=COLOR, anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 160))
            at = xy[1] if a.kind == "angle" else xy[-1]
            label.setPos(at.x(), at.y())
            view.vb.addItem(label, ignoreBounds=True)
            a.items.append(label)
        self._show_for(view)

    def _show_for(self, view) -> None:
        i = view.pos_zyx[view.axis]
        for a in self.items + ([self._current] if self._current else []):
            if a.axis == view.axis:
                for it in a.items:
                    it.setVisible(a.index == i)

    def values(self) -> list[tuple[str, float]]:
        """(kind, value) of every finished ruler (mm) and angle (degrees)."""
        return [(a.kind, a.value) for a in self.items]

    def visible_texts(self, axis: int) -> list[str]:
        """The values shown in pane ``axis`` now (its slice)."""
        view = self.win.views[axis]
        return [a.text() for a in self.items if a.axis == axis and a.items and a.items[0].isVisible()
                and a.index == view.pos_zyx[axis]]

    # --- removing -----------------------------------------------------------------------------
    def _drop_current(self) -> None:
        if self._current is not None:
            self._remove_items(self._current)
            self._current = None

    def _remove_items(self, a: Annotation) -> None:
        view = self.win.views[a.axis]
        for it in a.items:
            view.vb.removeItem(it)
        a.items = []

    def remove_last(self) -> None:
        if self._current is not None:
            self._drop_current()
        elif self.items:
            self._remove_items(self.items.pop())
        self.changed.emit()

    def clear(self) -> None:
        self._drop_current()
        for a in self.items:
            self._remove_items(a)
        self.items = []
        self.changed.emit()
