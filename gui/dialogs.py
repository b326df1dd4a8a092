"""Small dialogs of the main window."""
from __future__ import annotations

from typing import Optional

from PySide6.QtWidgets import QAbstractItemView, QDialog, QDialogButtonBox, QLabel, QTableWidget, QVBoxLayout

from .panels import table_item


class SeriesPicker(QDialog):
    """Choose one series of a DICOM folder (the portal-venous guess preselected)."""

    COLS = ("Modality", "Description", "Slices", "Spacing (mm, x × y × z)", "Phase guess", "Problem")

    def __init__(self, series, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose a CT series")
        self.series = list(series)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("This folder holds several series. Choose the portal-venous CT:"))
        self.table = QTableWidget(len(self.series), len(self.COLS))
        self.table.setHorizontalHeaderLabels(self.COLS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        pre = 0
        for r, s in enumerate(self.series):
            sp = "—" if not s.spacing else " × ".join(f"{v:.2f}" for v in s.spacing[::-1])
            vals = (s.modality, s.description, str(s.n_slices), sp, s.phase_guess, s.problem or "")
            for c, v in enumerate(vals):
                self.table.setItem(r, c, table_item(str(v)))
            if s.phase_guess == "portal" and s.usable:
                pre = r
        self.table.resizeColumnsToContents()
        if self.series:
            self.table.selectRow(pre)
        lay.addWidget(self.table)
        bb = QDialogButtonBox(QDialogButtonBox.Open | QDialogButtonBox.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)
        self.resize(820, 320)

    def chosen_key(self) -> Optional[str]:
        rows = {i.row() for i in self.table.selectedItems()}
        return self.series[min(rows)].key if rows else None
