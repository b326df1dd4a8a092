"""The About box: version, build, library versions, compute device, data folders and licences.

The facts come from engine.about (shared with ``liverplan --version``); this file only lays them out and
shows THIRD-PARTY-NOTICES.txt (written into the frozen bundle at build time) on request.
"""
from __future__ import annotations

import html

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import Qt, qVersion
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout,
                               QWidget)

from engine.about import LABELS, QT_LICENCE_NOTE, about_info, notices_path

INTRO = ("<p><b>LiverPlan</b>: liver, vessel and CRLM segmentation and measurement from portal-venous CT.</p>"
         "<p>Segmentations are made by the model you choose; the bundled demo model is trained on synthetic "
         "data and is not for clinical use.</p>")


class AboutDialog(QDialog):
    """Modal About box; ``info`` is engine.about.about_info()'s dictionary. Without it the box opens at once
    with what needs no torch import, and ``runner`` (gui.workers.TaskRunner) fills in CUDA, cuDNN and the
    compute device from a worker (importing torch takes 1-2 s: not on the GUI thread)."""

    def __init__(self, parent: QWidget | None = None, info: dict | None = None, runner=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About LiverPlan")
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.probe = None
        if info is None and runner is not None:
            self.set_info(about_info(probe_device=False, load_torch=False))
            self.probe = runner.start("about", about_info, True, progress=False)
            self.probe.succeeded.connect(self.set_info)
        else:
            self.set_info(info if info is not None else about_info(probe_device=True))
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay = QVBoxLayout(self)
        lay.addWidget(self.text)
        self.licences_button = QPushButton("Third-party licences…")
        self.licences_button.setEnabled(notices_path() is not None)
        if notices_path() is None:
            self.licences_button.setToolTip("The licence file is generated when the installer is built.")
        self.licences_button.clicked.connect(self.show_licences)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.licences_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.setMinimumWidth(640)

    def set_info(self, info: dict) -> None:
        """Show ``info`` (engine.about.about_info()'s dictionary)."""
        self.info = dict(info)
        self.info["qt"] = f"{self.info.get('qt', pyside_version)} (Qt {qVersion()})"
        rows = "".join(f"<tr><td><b>{html.escape(label)}</b>&nbsp;&nbsp;</td><td>{html.escape(str(self.info[key]))}"
                       f"</td></tr>" for key, label in LABELS if key in self.info)
        self.text.setText(f"{INTRO}<table>{rows}</table><p>{html.escape(QT_LICENCE_NOTE)}</p>")

    def show_licences(self) -> QDialog:
        """A second window with the full THIRD-PARTY-NOTICES.txt (read-only)."""
        dlg = QDialog(self)
        dlg.setWindowTitle("Third-party licences")
        view = QPlainTextEdit(dlg)
        view.setReadOnly(True)
        view.setFont(QFont("Monospace"))
        path = notices_path()
        try:
            view.setPlainText(path.read_text(encoding="utf-8") if path else "Not available in this build.")
        except OSError as exc:
            view.setPlainText(f"The licence file {path} cannot be read: {exc}")
        QVBoxLayout(dlg).addWidget(view)
        dlg.resize(900, 700)
        dlg.show()
        return dlg


def show_about(parent: QWidget | None = None, runner=None) -> None:
    """Show the About box modally (at once; the device is filled in from ``runner``'s worker)."""
    AboutDialog(parent, runner=runner).exec()
