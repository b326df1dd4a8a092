"""The main window's menus, built in one place (docs/architecture.md, "The window mirrors the session").

Every entry calls a public method of the window, of its file work (gui.files) or of a tab's panel;
a new entry is one line here.
"""
from __future__ import annotations

from PySide6.QtGui import QAction, QActionGroup, QKeySequence

from engine.labels import ALL_STRUCTURES

from .panels import TOOLS

PANES = ("axial", "coronal", "sagittal", "3d")
WINDOW_PRESETS = {  # name: (level, width) HU
    "abdomen": (50.0, 400.0),
    "liver": (80.0, 180.0),
    "vessels": (150.0, 500.0),
}


def build_menus(win) -> None:
    """File, Edit, View, Models and Help of ``win`` (a gui.main_window.MainWindow). Sets the actions the
    window updates later: ``undo_action``, ``redo_action``, ``plane_action``, ``recent_menu``."""
    mb = win.menuBar()
    f = mb.addMenu("&File")
    _act(win, f, "&Open image…", win.files.open_dialog, QKeySequence.Open)
    _act(win, f, "Open &DICOM folder…", win.files.open_dicom_dialog, "Ctrl+Shift+O")
    _act(win, f, "Open &label map onto this CT…", win.files.open_labels_dialog, "Ctrl+L")
    _act(win, f, "Open demo case", win.open_demo)
    _act(win, f, "Compare with a follow-up…", lambda: _compare(win))
    win.recent_menu = f.addMenu("Recent cases")
    win.recent_menu.aboutToShow.connect(lambda: _fill_recent(win))
    f.addSeparator()
    _act(win, f, "&Save labels", win.save_labels, QKeySequence.Save)
    _act(win, f, "Save labels &as…", lambda: win.save_labels(ask=True), "Ctrl+Shift+S")
    ex = f.addMenu("&Export")
    _act(win, ex, "Label map (NIfTI, NRRD, .seg.nrrd)…", lambda: win.save_labels(ask=True, mark=False))
    _act(win, ex, "Meshes (STL, OBJ, VTP)…", win.files.export_meshes_dialog)
    _act(win, ex, "Measurements and lesion table (CSV, JSON)…", win.files.export_measurements_dialog)
    _act(win, ex, "Tumour-board report (PDF, HTML, DICOM)…", win.files.export_board_report_dialog)
    shots = ex.addMenu("Screenshot")
    for pane in PANES:
        _act(win, shots, f"{pane.capitalize() if pane != '3d' else '3D'} pane…",
             lambda p=pane: win.export_screenshot_dialog(p))
    _act(win, shots, "Whole window…", lambda: win.export_screenshot_dialog("window"))
    f.addSeparator()
    _act(win, f, "&Quit", win.close, QKeySequence.Quit)

    e = mb.addMenu("&Edit")
    win.undo_action = _act(win, e, "Undo", win.undo, QKeySequence.Undo)
    win.redo_action = _act(win, e, "Redo", win.redo, "Ctrl+Shift+Z")
    win.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
    e.addSeparator()
    for key, name, short in TOOLS:
        _act(win, e, f"{name} tool", lambda k=key: win.tools.set_tool(k), short)
    for s in ALL_STRUCTURES:
        _act(win, e, f"Active structure: {s.name}", lambda lab=s.label: win.tools.set_active_label(lab),
             str(s.label))
    _act(win, e, "Larger brush", lambda: win.tools.scale_brush(1.25), "]")
    _act(win, e, "Smaller brush", lambda: win.tools.scale_brush(1 / 1.25), "[")
    e.addSeparator()
    _act(win, e, "Keep largest component of the active structure", win.keep_largest_component)
    _act(win, e, "Fill holes in the active structure", win.fill_holes)

    v = mb.addMenu("&View")
    lay = v.addMenu("Layout")
    grp = QActionGroup(win)
    for key, text, short in (("grid", "Four panes", "F5"), ("axial", "Axial only", "F6"),
                             ("coronal", "Coronal only", "F7"), ("sagittal", "Sagittal only", "F8"),
                             ("3d", "3D only", "F9")):
        a = _act(win, lay, text, lambda k=key: win.set_layout(k), short)
        a.setCheckable(True)
        a.setChecked(key == "grid")
        grp.addAction(a)
    wl = v.addMenu("Window / level")
    for i, (name, (lv, wd)) in enumerate(WINDOW_PRESETS.items(), start=1):
        _act(win, wl, f"{name.capitalize()} (W {wd:.0f} / L {lv:.0f})",
             lambda l=lv, w=wd: win.set_window(l, w), f"Alt+{i}")
    _act(win, v, "Reset zoom", lambda: [x.reset_zoom() for x in win.views], "Ctrl+0")
    v.addSeparator()
    _act(win, v, "Reset 3D camera", lambda: win.view3d and win.view3d.reset_camera(), "R")
    std = v.addMenu("3D standard view")
    for name in ("anterior", "posterior", "left", "right", "superior", "inferior"):
        _act(win, std, name.capitalize(), lambda n=name: win.view3d and win.view3d.set_view(n))
    win.plane_action = _act(win, v, "Show the axial CT plane in 3D", win.toggle_plane)
    win.plane_action.setCheckable(True)
    from .display import add_menu_entries as display_entries   # outline, legend, lesions, ruler/angle
    display_entries(win, v)

    m = mb.addMenu("&Models")
    _act(win, m, "Install model package (.zip)…", win.install_model_dialog)
    _act(win, m, "Install a folder of model zips…", win.install_model_folder_dialog)
    _act(win, m, "Refresh the model list", win.refresh_models)

    h = mb.addMenu("&Help")
    from .help import add_menu_entries as help_entries   # Keyboard shortcuts, Getting started
    help_entries(win, h)
    _act(win, h, "About LiverPlan", lambda: _about(win))



def _compare(win) -> None:
    """Issue 22: the comparison window (gui/compare_window.py) keeps itself alive as a child of ``win``."""
    from .compare_window import open_compare_dialog
    open_compare_dialog(win)


def _act(win, menu, text, slot, shortcut=None) -> QAction:
    a = QAction(text, win)
    if shortcut is not None:
        a.setShortcut(QKeySequence(shortcut))
    a.triggered.connect(lambda checked=False: slot())
    menu.addAction(a)
    return a


def _fill_recent(win) -> None:
    win.recent_menu.clear()
    items = win.recent.load()
    if not items:
        a = win.recent_menu.addAction("(none)")
        a.setEnabled(False)
    for p in items:
        _act(win, win.recent_menu, p, lambda p=p: win.open_path(p))


def _about(win) -> None:
    from .about import show_about  # version, build, device, data folders, licences (README "Installing")
    show_about(win, win.runner)
