"""Help for a first start and for the keys: the first-run hint (open a CT, segment, correct, measure) and
Help > Keyboard shortcuts, a table built from the window's own actions and the panes' key table, so it
cannot go stale."""
from __future__ import annotations

import logging
import os

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFrame, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout)

from .slice_view import MOUSE_GESTURES, PANE_KEYS

log = logging.getLogger(__name__)

FIRST_RUN_FLAG = "first_run_done"

HINT = ("<b>Welcome to LiverPlan.</b> Four steps:<ol>"
        "<li><b>Open a CT</b>: File &gt; Open image (Ctrl+O) or Open DICOM folder, or drop a file on the window "
        "(File &gt; Open demo case shows a synthetic case).</li>"
        "<li><b>Segment</b>: the Segment tab, choose a model, Run.</li>"
        "<li><b>Correct</b>: the Correct tab — brush (B), eraser (E), fill (F), delete a component (D); "
        "Ctrl+Z undoes.</li>"
        "<li><b>Measure</b>: the Measure tab — liver volume, tumour burden, the lesion table; "
        "File &gt; Export writes them.</li></ol>"
        "Help &gt; Keyboard shortcuts lists every key.")


def shortcut_rows(win) -> list[tuple[str, str, str]]:
    """(where, what, keys) for every menu action with a shortcut, then the panes' keys and mouse gestures."""
    rows: list[tuple[str, str, str]] = []

    def walk(menu, path):
        for a in menu.actions():
            sub = a.menu()
            if sub is not None:
                walk(sub, path + [sub.title().replace("&", "")])
                continue
            keys = [k.toString(QKeySequence.NativeText) for k in a.shortcuts() if not k.isEmpty()]
            if keys and a.text():
                rows.append((" > ".join(path), a.text().replace("&", "").rstrip("…"), ", ".join(keys)))

    for top in win.menuBar().actions():
        if top.menu() is not None:
            walk(top.menu(), [top.text().replace("&", "")])
    for key, _step, what in PANE_KEYS:
        rows.append(("Slice pane (click it first)", what, QKeySequence(key).toString(QKeySequence.NativeText)))
    for gesture, what in MOUSE_GESTURES:
        rows.append(("Slice pane", what, gesture))
    return rows


class ShortcutsDialog(QDialog):
    """Help > Keyboard shortcuts."""

    def __init__(self, win) -> None:
        super().__init__(win)
        self.setWindowTitle("Keyboard shortcuts")
        self.resize(640, 560)
        lay = QVBoxLayout(self)
        rows = shortcut_rows(win)
        self.table = QTableWidget(len(rows), 3)
        self.table.setObjectName("shortcuts_table")
        self.table.setHorizontalHeaderLabels(["Keys", "Does", "Menu / place"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        for r, (where, what, keys) in enumerate(rows):
            for c, text in enumerate((keys, what, where)):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        self.table.resizeColumnToContents(0)
        lay.addWidget(self.table)
        bb = QDialogButtonBox(QDialogButtonBox.Close)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)


class FirstRunHint(QFrame):
    """What to do first, over the panes: shown on a first start (beside the start-up demo case), gone for good
    once "Got it" is pressed, a CT of the user's own is opened, or the window is closed."""

    def __init__(self, win, parent) -> None:
        super().__init__(parent)
        self.win = win
        self.setObjectName("first_run_hint")
        self.setStyleSheet("#first_run_hint { background: rgba(20, 24, 32, 235); border: 1px solid #667;"
                           " border-radius: 6px; } QLabel { color: #eeeeee; }")
        lay = QVBoxLayout(self)
        self.text = QLabel(HINT)
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.RichText)
        lay.addWidget(self.text)
        row = QHBoxLayout()
        self.demo = QPushButton("Open demo case")
        self.demo.clicked.connect(win.open_demo)
        self.ok = QPushButton("Got it")
        self.ok.clicked.connect(self.dismiss)
        row.addStretch(1)
        row.addWidget(self.demo)
        row.addWidget(self.ok)
        lay.addLayout(row)
        self.setFixedWidth(520)
        self.adjustSize()
        self.setVisible(False)
        parent.installEventFilter(self)

    def show_hint(self) -> None:
        self.place()
        self.setVisible(True)
        self.raise_()

    def place(self) -> None:
        p = self.parentWidget()
        self.move(max(0, (p.width() - self.width()) // 2), max(0, (p.height() - self.height()) // 3))

    def dismiss(self) -> None:
        self.setVisible(False)
        mark_first_run_done()

    def eventFilter(self, obj, ev):  # noqa: N802 - Qt naming
        from PySide6.QtCore import QEvent
        if obj is self.parentWidget() and ev.type() == QEvent.Resize:
            self.place()
        return False


def _flag_path():
    from engine.paths import user_data_dir
    return user_data_dir() / FIRST_RUN_FLAG


def is_first_run() -> bool:
    try:
        return not _flag_path().exists()
    except OSError:
        return False


def mark_first_run_done() -> None:
    try:
        _flag_path().write_text("LiverPlan has been started and a case opened or the hint dismissed.\n")
    except OSError as exc:       # a read-only data folder: the hint shows again next time, nothing worse
        log.info("first-run flag not written: %s", exc)


def install(win) -> FirstRunHint:
    """The first-run hint over the panes: shown on a first start, unless questions are switched off
    (LIVERPLAN_NO_DIALOGS: a scripted or tested run has no one to read it)."""
    win.first_run_hint = FirstRunHint(win, win.centralWidget())

    def on_session(kind, data):
        # the start-up demo (a phantom) keeps the hint; a CT of the user's own means they found the way in
        if kind == "case" and win.first_run_hint.isVisible() and data.provenance.source_format != "phantom":
            win.first_run_hint.dismiss()

    win.session.listen(on_session)
    if is_first_run() and not os.environ.get("LIVERPLAN_NO_DIALOGS"):
        win.first_run_hint.show_hint()
    return win.first_run_hint


def window_closing(win) -> None:
    """The window closes: a hint that was shown has been seen (it does not come back by itself)."""
    hint = getattr(win, "first_run_hint", None)
    if hint is not None and hint.isVisible():
        mark_first_run_done()


def show_shortcuts(win) -> ShortcutsDialog:
    dlg = ShortcutsDialog(win)
    win.shortcuts_dialog = dlg
    dlg.show()                   # not modal: it never blocks (nor a test without dialogs)
    return dlg


def add_menu_entries(win, help_menu) -> None:
    a = QAction("Keyboard shortcuts", win)
    a.setShortcut(QKeySequence(Qt.Key_F1))
    a.triggered.connect(lambda checked=False: show_shortcuts(win))
    help_menu.addAction(a)
    b = QAction("Getting started", win)
    b.triggered.connect(lambda checked=False: win.first_run_hint.show_hint())
    help_menu.addAction(b)
