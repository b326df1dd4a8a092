"""Questions the window asks before a step a person might not expect (Qt dialogs only; the engine says
whether to ask and in which words: engine.replace_guard)."""
from __future__ import annotations

import os

from PySide6.QtWidgets import QCheckBox, QMessageBox


def replace_labels_box(parent, text: str) -> QMessageBox:
    """The question before a segmentation replaces edited or unsaved labels, with "Don't ask again this
    session"."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Question)
    box.setWindowTitle("Replace the labels shown?")
    box.setText(text)
    box.addButton("Run and replace", QMessageBox.AcceptRole)
    keep = box.addButton("Keep my labels", QMessageBox.RejectRole)
    box.setDefaultButton(keep)
    # kept as an attribute too: PySide does not keep the check box alive through setCheckBox alone
    # (box.checkBox() then crashed)
    box.dont_ask = QCheckBox("Don't ask again this session", box)
    box.setCheckBox(box.dont_ask)
    return box


def ask_replace_labels(parent, text: str) -> tuple[bool, bool]:
    """(run, don't ask again). Without dialogs (LIVERPLAN_NO_DIALOGS) the run goes on, as before."""
    if os.environ.get("LIVERPLAN_NO_DIALOGS"):
        return True, False
    box = replace_labels_box(parent, text)
    box.exec()
    go = box.buttonRole(box.clickedButton()) == QMessageBox.AcceptRole
    return go, bool(box.dont_ask.isChecked())
