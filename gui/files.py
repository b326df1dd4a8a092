"""Opening, saving, exporting and autosaving the open case from the window (the File menu's work and
the unsaved-changes questions), through engine.case_session.CaseSession and gui.workers.

The one save routine is :meth:`CaseFiles.save_labels` (Save, Save As, Export label map and the
unsaved-changes box): the session's save job written off the GUI thread; the case counts as saved only
once the write succeeded. Autosave: :meth:`CaseFiles.autosave` writes the session's snapshot off the
GUI thread; the journal of every step between snapshots is the session's (docs/architecture.md).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QDialog, QFileDialog, QMessageBox

from .controllers import LABEL_FILTER
from .dialogs import SeriesPicker

log = logging.getLogger(__name__)

IMAGE_FILTER = ("CT images (*.nii.gz *.nii *.nrrd *.mha *.mhd *.dcm);;All files (*)")


def _write_case_meshes(out_dir, labels, geometry, fmt: str, prefix: str):
    from engine.mesh import label_surfaces, write_meshes

    return write_meshes(label_surfaces(labels, geometry), out_dir, formats=(fmt,), prefix=prefix,
                        overwrite=True)


class CaseFiles(QObject):
    """The window's file work. ``win`` is the MainWindow (its services: runner, session, message,
    track_task, show_error, show_info, run_export, set_case, recent; and the questions ask_unsaved /
    ask_restore, which tests replace)."""

    def __init__(self, win, parent=None) -> None:
        super().__init__(parent)
        self.win = win
        self.pending_autosave_discard = None   # (key, shape) of edits discarded for a case not yet open

    # ---------------------------------------------------------------------------- opening
    def open_demo(self) -> None:
        def go():
            from engine.phantom import demo_case

            self.win.message("Building the demo case…")
            task = self.win.runner.start("load", demo_case, progress=False)
            self.win.track_task(task, "Demo case")
            task.succeeded.connect(lambda case: self.win.set_case(case))
            task.failed.connect(lambda msg, exc: self.win.message(msg, error=True))
        self.confirm_discard(go)

    def open_path(self, path, series: Optional[str] = None, labels: Optional[str] = None) -> None:
        """Load a CT file or DICOM folder off the GUI thread; ``labels`` is opened onto it afterwards."""
        self.confirm_discard(lambda: self._open_path(path, series, labels))

    def _open_path(self, path, series: Optional[str], labels: Optional[str]) -> None:
        from engine.io import load_case

        self.win.message(f"Opening {path}…")
        task = self.win.runner.start("load", load_case, str(path), series=series)
        self.win.track_task(task, "Opening")

        def ok(case):
            self.win.set_case(case)
            self.win.recent.add(path)
            if labels:
                self.open_labels(labels)

        def failed(msg, exc):
            from engine.io.dicom import SeriesChoiceNeeded
            if isinstance(exc, SeriesChoiceNeeded):
                dlg = SeriesPicker(exc.series, self.win)
                key = dlg.chosen_key() if dlg.exec() == QDialog.Accepted else None
                if key:
                    self._open_path(path, key, labels)
                return
            self.win.message(msg, error=True)
            self.win.show_error("Cannot open", msg)

        task.succeeded.connect(ok)
        task.failed.connect(failed)
        task.cancelled.connect(lambda: self.win.message("Opening cancelled; nothing was changed."))

    def open_dialog(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self.win, "Open CT image", "", IMAGE_FILTER)
        if p:
            self.open_path(p)

    def open_dicom_dialog(self) -> None:
        p = QFileDialog.getExistingDirectory(self.win, "Open DICOM folder")
        if p:
            self.open_path(p)

    def open_labels_dialog(self) -> None:
        if self.win.case is None:
            return
        p, _ = QFileDialog.getOpenFileName(self.win, "Open label map onto this CT", "", LABEL_FILTER)
        if p:
            self.open_labels(p)

    def open_labels(self, path) -> None:
        """Read a label map onto the open CT (grid checked by the engine) as one undoable step."""
        if self.win.case is None:
            return
        from engine.io import read_label_map

        case = self.win.case
        notes: list[str] = []
        task = self.win.runner.start("labels", read_label_map, str(path), case, notes=notes, progress=False)
        self.win.track_task(task, "Opening label map")

        def ok(labels):
            if case is not self.win.case:  # another case was opened meanwhile
                return
            self.win.session.open_labels(labels, path, notes)
            self.win.update_title()             # the labels of a file count as saved (no "*")
            self.win.message(f"Label map {Path(path).name} opened." + (" " + " ".join(notes) if notes else ""))
            if notes:
                # what the file merges or leaves out (IRCADb: hepatic veins + IVC in one mask) changes how
                # its volumes read: said once in a box, kept in the status bar
                self.win.show_info(f"Label map {Path(path).name}", "\n\n".join(notes))

        def failed(msg, exc):
            self.win.message(msg, error=True)
            self.win.show_error("Cannot open the label map", msg)

        task.succeeded.connect(ok)
        task.failed.connect(failed)

    def ask_drop_as_labels(self, path: str) -> bool:
        name = Path(path).name.lower()
        guess = any(w in name for w in ("label", "seg", "mask"))
        box = QMessageBox(self.win)
        box.setWindowTitle("Open dropped file")
        box.setText(f"Open {Path(path).name} as a label map onto this CT, or as a new CT?")
        lab = box.addButton("Label map", QMessageBox.AcceptRole)
        ct = box.addButton("New CT", QMessageBox.RejectRole)
        box.setDefaultButton(lab if guess else ct)
        box.exec()
        return box.clickedButton() is lab

    # ---------------------------------------------------------------------------- saving / export
    #: the folder the user last saved labels to in this run (proposed again unless it is a CT's source folder)
    last_save_folder: Optional[Path] = None

    def proposed_save_path(self) -> Path:
        """Where Save proposes the label map: never the CT's own source folder (engine.save_location)."""
        from engine.save_location import proposed_label_path
        return proposed_label_path(self.win.case, self.last_save_folder)

    def _ask_save_path(self) -> Optional[Path]:
        from engine.save_location import label_save_problem

        case = self.win.case
        start = str(self.proposed_save_path())
        while True:
            p, _ = QFileDialog.getSaveFileName(self.win, "Save label map", start,
                                               "NIfTI (*.nii.gz);;NRRD (*.nrrd);;3D Slicer segmentation "
                                               "(*.seg.nrrd);;MetaImage (*.mha)")
            if not p:
                return None
            problem = label_save_problem(case, p)
            if problem is None:
                CaseFiles.last_save_folder = Path(p).parent
                return Path(p)
            self.win.message(problem, error=True)
            self.win.show_error("Choose another folder", problem)
            start = str(self.proposed_save_path())

    def save_labels(self, ask: bool = False, mark: bool = True, path=None,
                    then: Optional[Callable[[], None]] = None):
        """Write the label map in the source geometry (NIfTI/NRRD/.seg.nrrd by extension) off the GUI
        thread: the one save routine of Save, Save As, Export and the unsaved-changes box. The case
        counts as saved only once the write succeeded; ``then`` runs after that."""
        if self.win.case is None:
            return None
        if path is None:
            path = self.win.session.last_save_path if (self.win.session.last_save_path and not ask) else None
        if path is None:
            path = self._ask_save_path()
            if path is None:
                return None
        job = self.win.session.save_job(path, mark=mark)
        task = self.win.run_export("Label map", job, where=path)
        task.failed.connect(lambda msg, exc: self.win.session.save_finished(job, exc))

        def ok(*_):
            self.win.session.save_finished(job)
            if then is not None:
                then()

        task.succeeded.connect(ok)
        return task

    def export_meshes_dialog(self) -> None:
        p, _ = QFileDialog.getSaveFileName(self.win, "Export meshes (one file per structure)",
                                           f"{self.win.case.file_stem if self.win.case else 'case'}.stl",
                                           "STL (*.stl);;OBJ (*.obj);;VTK PolyData (*.vtp)")
        if p:
            self.export_meshes(p)

    def export_meshes(self, path):
        """One surface file per structure (LPS mm) next to ``path``; the format from its extension."""
        if self.win.case is None:
            return None
        p = Path(path)
        fmt = p.suffix.lstrip(".").lower() or "stl"
        return self.win.run_export("Meshes", _write_case_meshes, p.parent, self.win.case.labels.copy(),
                               self.win.case.geometry, fmt, f"{p.stem}_")

    def export_measurements_dialog(self) -> None:
        stem = self.win.case.file_stem if self.win.case else "case"
        p, _ = QFileDialog.getSaveFileName(self.win, "Export measurements", f"{stem}"
                                           "_measurements.csv", "CSV (*.csv);;JSON (*.json)")
        if p:
            self.export_measurements(p)

    def export_measurements(self, path):
        if self.win.report is None:
            self.win.message("Measurements are not ready yet.", error=True)
            return None
        from engine import report as rep
        fn = rep.write_measurements_json if str(path).lower().endswith(".json") else rep.write_measurements_csv
        return self.win.run_export("Measurements", fn, str(path), self.win.report, overwrite=True,
                                   lesion_extra=self.win.review.lesion_export(self.win.report))

    def export_board_report_dialog(self):
        """File > Export > Tumour-board report: the options and a preview (gui.board_report_dialog); the
        document is engine.board_report's, the same as ``main.py report``. Returns the dialog."""
        if self.win.case is None:
            self.win.message("Open a case first: the report is made of its CT and labels.", error=True)
            return None
        from .board_report_dialog import BoardReportDialog

        self.board_report_dialog = BoardReportDialog(self.win)
        self.board_report_dialog.show()
        return self.board_report_dialog

    # ---------------------------------------------------------------------------- autosave
    def autosave(self):
        """Write a snapshot of unsaved edits (off the GUI thread; the journal keeps every step between
        snapshots). A failure is said at once and retried (engine.case_session)."""
        if self.win.runner.running("autosave"):
            return None
        job = self.win.session.autosave_job()
        if job is None:
            return None
        task = self.win.runner.start("autosave", job, progress=False)
        task.succeeded.connect(lambda folder: self.win.session.autosave_finished(job, folder))
        task.failed.connect(lambda msg, exc: self.win.session.autosave_finished(job, error=exc))
        return task

    def offer_autosave(self) -> None:
        entry = self.win.session.find_autosave()
        if entry is None:
            return
        choice = self.win.ask_restore(entry)
        if choice is None:
            # no one to ask (LIVERPLAN_NO_DIALOGS): neither restored nor thrown away
            self.win.message(f"Unsaved edits of {entry.case_name} from {entry.when()} were found and kept, not "
                          "restored (questions are switched off: LIVERPLAN_NO_DIALOGS).")
            return
        if choice:
            try:
                self.win.session.restore_autosave(entry)
            except (OSError, ValueError) as exc:
                self.win.message(f"The autosaved edits could not be read ({exc}).", error=True)
                return
            self.win.update_title()
        else:
            self.win.session.discard_autosave()

    def confirm_discard(self, proceed: Callable[[], None]) -> None:
        """Before replacing the open case: ask about unsaved edits (they stay in the autosave), then
        ``proceed`` — at once, or once the save succeeded (a cancelled dialog or a failed write keeps the
        case and its edits open)."""
        if not self.win.session.is_modified:
            proceed()
            return
        choice = self.win.ask_unsaved("opening another case")
        if choice == "cancel":
            return
        if choice == "save":
            self.win.save_before(then=proceed)
            return
        self.pending_autosave_discard = (self.win.session.source_key, self.win.case.labels.shape)
        proceed()
