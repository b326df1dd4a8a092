"""File > Export > Tumour-board report: the options, a preview, and the same document as ``main.py report``.

The content is engine.board_report's (built off the GUI thread on a copy of the case); this dialog only
collects the options, shows the preview (Qt's rich-text viewer: tables, pictures; the PDF has the print
layout) and asks where to write.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtCore import QUrl
from PySide6.QtGui import QImage, QTextDocument
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QTextBrowser, QVBoxLayout, QWidget)


class BoardReportDialog(QDialog):
    """Options + preview of the tumour-board report of the window's open case.

    ``win`` is the main window (its session, runner and Plan tab are read through their public parts)."""

    def __init__(self, win, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent or win)
        self.win = win
        self.setWindowTitle("Export tumour-board report")
        self.resize(900, 800)
        self.report = None                 # the last engine.board_report.BoardReport built
        self._built_with: Optional[tuple] = None
        self.reviewed_by = QLineEdit()
        self.reviewed_by.setPlaceholderText("empty: the report says NOT REVIEWED")
        self.anonymise = QCheckBox("Anonymise (no name, ID, birth date, study date or file path)")
        self.language = QComboBox()
        self.language.addItem("English", "en")
        self.language.addItem("Français", "fr")
        self.window_choice = QComboBox()
        self.window_choice.addItem("Liver window (L 80 / W 180 HU)", "liver")
        self.window_choice.addItem(f"As on screen (L {win.level:g} / W {win.window_width:g} HU)", "screen")
        self.formats = {f: QCheckBox(text) for f, text in (("pdf", "PDF"), ("html", "HTML"),
                                                         ("dcm", "DICOM Encapsulated PDF"))}
        self.formats["pdf"].setChecked(True)
        self.formats["html"].setChecked(True)
        form = QFormLayout()
        form.addRow("Reviewed by", self.reviewed_by)
        form.addRow("", self.anonymise)
        form.addRow("Language", self.language)
        form.addRow("Window / level", self.window_choice)
        fl = QHBoxLayout()
        for cb in self.formats.values():
            fl.addWidget(cb)
        form.addRow("Formats", fl)
        self.preview_button = QPushButton("Preview")
        self.write_button = QPushButton("Write report…")
        self.status = QLabel("Press Preview to see the report.")
        self.status.setWordWrap(True)
        self.view = QTextBrowser()
        self.view.setOpenLinks(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.write_button)
        buttons.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        lay.addWidget(self.view, 1)
        self.preview_button.clicked.connect(self.preview)
        self.write_button.clicked.connect(self.write_dialog)

    # ------------------------------------------------------------------------------------------
    def options(self):
        from engine.board_report import LIVER_WINDOW, BoardOptions

        window = LIVER_WINDOW if self.window_choice.currentData() == "liver" else \
            (float(self.win.level), float(self.win.window_width))
        return BoardOptions(anonymise=self.anonymise.isChecked(), reviewed_by=self.reviewed_by.text(),
                            language=self.language.currentData(), window=window)

    def chosen_formats(self) -> list[str]:
        return [f for f, cb in self.formats.items() if cb.isChecked()]

    def _key(self) -> tuple:
        """What the report is built from: the options, the labels' state and the Plan tab's scenarios (a
        report kept after any of them changed would be written stale)."""
        o = self.options()
        planner = getattr(self.win.plan_panel, "planner", None)
        plan = None if planner is None else (id(planner), repr(planner.patient), tuple(
            (sc.name, tuple(sorted(sc.segments)), tuple(sorted(sc.wedges)), sc.margin_mm,
             None if sc.painted is None else hash(sc.painted.tobytes())) for sc in planner.scenarios.values()))
        return (o.anonymise, o.reviewed_by, o.language, o.window, self.win.session.history.state_id
                if self.win.session.history is not None else None, plan,
                id(getattr(self.win.session.planning, "comparison", None)))

    def _build_task(self):
        """Start building the report in the background; returns the task."""
        from engine.board_report import build_report, case_for_report, edit_summary

        s = self.win.session
        planner = getattr(self.win.plan_panel, "planner", None)
        scenarios = list(planner.scenarios.values()) if planner is not None else None
        patient = planner.patient if planner is not None else None
        task = self.win.runner.start("board_report", build_report, case_for_report(s.case), self.options(),
                                     # the hand edits are summed here, before more edits can be made
                                     edits=edit_summary(s.history, s.case.labels), evaluation=s.evaluation,
                                     # the lesions as numbered in the window (kept through edits), when current
                                     measurements=s.report if s.is_idle() else None,
                                     scenarios=scenarios,
                                     planning_patient=patient,
                                     # a comparison read in the Plan tab: "Change since the baseline scan"
                                     comparison=getattr(s.planning, "comparison", None))
        self.win.track_task(task, "Making the tumour-board report")
        key = self._key()
        self.status.setText("Making the report…")

        def ok(report):
            self.report, self._built_with = report, key
            self.show_preview()
        task.succeeded.connect(ok)
        task.failed.connect(lambda msg, exc: self.status.setText(msg))
        return task

    def preview(self):
        """Build the report with the options shown and show it; returns the task (None without a case)."""
        if self.win.session.case is None:
            self.status.setText("Open a case first.")
            return None
        return self._build_task()

    def show_preview(self) -> None:
        from engine.board_report import preview_html

        text, images = preview_html(self.report)
        doc = QTextDocument(self.view)
        for i, png in enumerate(images):
            doc.addResource(QTextDocument.ResourceType.ImageResource, QUrl(f"lp-img-{i}"), QImage.fromData(png))
        doc.setHtml(text)
        self.view.setDocument(doc)
        n = len(self.report.key_images)
        self.status.setText(f"Preview: {len(self.report.measurements.lesions)} lesion(s), {n} key image(s). "
                            "Write it with the \"Write report…\" button.")

    def write_dialog(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Folder for the tumour-board report")
        if p:
            self.write(p)

    def write(self, folder, overwrite: bool = True):
        """Write the report (rebuilt first when the options or the labels changed) into ``folder``;
        returns the task."""
        formats = self.chosen_formats()
        if not formats:
            self.status.setText("Choose at least one format.")
            return None
        if self.report is not None and self._built_with == self._key():
            return self._write_task(folder, formats, overwrite)
        t = self.preview()
        if t is not None:
            t.succeeded.connect(lambda *_: self._write_task(folder, formats, overwrite))
        return t

    def _write_task(self, folder, formats, overwrite):
        from engine.board_report import write_report

        task = self.win.runner.start("board_report_write", write_report, self.report, str(folder), formats,
                                     overwrite=overwrite, progress=False)
        self.win.track_task(task, "Writing the tumour-board report", cancellable=False)
        self.status.setText("Writing…")
        task.succeeded.connect(lambda paths: (self.status.setText(
            "Written: " + ", ".join(str(Path(x)) for x in paths)), self.win.message(
            "Tumour-board report written to " + str(folder) + ".")))
        task.failed.connect(lambda msg, exc: (self.status.setText(msg), self.win.message(msg, error=True)))
        self.last_write_task = task
        return task
