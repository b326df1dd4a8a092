"""What the panes show besides the CT and the labels: outline mode of the label overlay, the legends of the
2D and 3D panes, next/previous lesion, and the ruler and angle tools (gui.annotations). Installed on the
window by :func:`install`; its menu entries are added by :func:`add_menu_entries` (View menu).

No array math here: the outline is engine.overlay's, the structures' voxel counts the session's.
"""
from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QKeySequence

from engine.labels import ALL_STRUCTURES

from .annotations import Annotations
from .legend import Legend


class DisplayControls(QObject):
    def __init__(self, win, parent=None) -> None:
        super().__init__(parent)
        self.win = win
        self.outline = False
        self.legend_on = True
        self.legends2d = [Legend(v.view) for v in win.views]
        self.legend3d: Optional[Legend] = None
        self.annotations = Annotations(win, self)
        self.actions: dict[str, QAction] = {}
        win.session.listen(self.on_session)
        win.structures.visible2d_changed.connect(lambda *_: self.update_legends())
        win.structures.visible3d_changed.connect(lambda *_: self.update_legends())

    # --- session ------------------------------------------------------------------------------
    def on_session(self, kind: str, data) -> None:
        if kind == "case":
            self.annotations.clear()
            self.update_legends()
        elif kind in ("volumes", "measurements"):
            self.update_legends()

    # --- outline --------------------------------------------------------------------------------
    def set_outline(self, on: bool) -> None:
        """Outline mode (True) or filled labels (False) in every slice pane."""
        self.outline = bool(on)
        for v in self.win.views:
            v.set_outline(self.outline)
        a = self.actions.get("outline")
        if a is not None and a.isChecked() != self.outline:
            a.setChecked(self.outline)
        self.win.message("Labels drawn as outlines." if self.outline else "Labels drawn filled.")

    # --- legends ------------------------------------------------------------------------------
    def shown_structures(self, pane: str = "2d") -> list[int]:
        """The structures a pane shows now: labelled in the case and not hidden in that pane."""
        counts = self.win.session.derived.counts or {}
        if pane == "3d":
            vis = self.win.view3d.visible if self.win.view3d is not None else {}
        else:
            vis = self.win.visible2d
        return [s.label for s in ALL_STRUCTURES if counts.get(s.label, 0) > 0 and vis.get(s.label, True)]

    def update_legends(self) -> None:
        if self.win.case is None:
            for lg in self.legends2d:
                lg.set_structures([], False)
            return
        labels = self.shown_structures("2d")
        for lg in self.legends2d:
            lg.set_structures(labels, self.legend_on)
        if self.win.view3d is not None:
            if self.legend3d is None:
                self.legend3d = Legend(self.win.view3d.plotter.interactor)
            self.legend3d.set_structures(self.shown_structures("3d"), self.legend_on)

    def set_legend(self, on: bool) -> None:
        self.legend_on = bool(on)
        self.update_legends()

    # --- lesions ------------------------------------------------------------------------------
    def next_lesion(self, step: int = 1) -> Optional[int]:
        """Jump every pane to the next (+1) or previous (-1) lesion by number and select its row."""
        return self.win.measure_ctl.step_lesion(step)

    # --- ruler / angle ------------------------------------------------------------------------
    def set_measure_mode(self, mode: Optional[str]) -> None:
        self.annotations.set_mode(mode)
        for key in ("ruler", "angle"):
            a = self.actions.get(key)
            if a is not None:
                a.setChecked(mode == key)

    def toggle_measure_mode(self, mode: str) -> None:
        self.set_measure_mode(None if self.annotations.mode == mode else mode)


def install(win) -> DisplayControls:
    """Make the window's display controls (``win.display``)."""
    win.display = DisplayControls(win, win)
    return win.display


def _action(win, menu, text, slot, shortcut=None, checkable=False, checked=False) -> QAction:
    a = QAction(text, win)
    if shortcut:
        a.setShortcut(QKeySequence(shortcut))
    a.setCheckable(checkable)
    if checkable:
        a.setChecked(checked)
        a.triggered.connect(lambda on: slot(on))
    else:
        a.triggered.connect(lambda checked=False: slot())
    menu.addAction(a)
    return a


def add_menu_entries(win, view_menu) -> None:
    """The View menu's display entries (outline, legend, lesions, measure)."""
    d = win.display
    view_menu.addSeparator()
    d.actions["outline"] = _action(win, view_menu, "Outline labels (fill hides lesion margins)", d.set_outline,
                                   "O", checkable=True)
    d.actions["legend"] = _action(win, view_menu, "Legend in the panes", d.set_legend, checkable=True,
                                  checked=True)
    d.actions["next_lesion"] = _action(win, view_menu, "Next lesion", lambda: d.next_lesion(1), "L")
    d.actions["previous_lesion"] = _action(win, view_menu, "Previous lesion", lambda: d.next_lesion(-1), "Shift+L")
    m = view_menu.addMenu("Measure")
    d.actions["ruler"] = _action(win, m, "Ruler (distance in mm)", lambda on: d.set_measure_mode("ruler" if on else None),
                                 "Alt+R", checkable=True)
    d.actions["angle"] = _action(win, m, "Angle (degrees)", lambda on: d.set_measure_mode("angle" if on else None),
                                 "Alt+A", checkable=True)
    d.actions["remove_last"] = _action(win, m, "Remove the last ruler or angle", d.annotations.remove_last,
                                       "Alt+Backspace")
    d.actions["remove_all"] = _action(win, m, "Remove all rulers and angles", d.annotations.clear, "Alt+C")
