"""The label-mapping dialog: which of a model's labels is which LiverPlan structure.

Shown for a model whose labels LiverPlan does not recognise (at install, or from the Segment tab's
"Label map…" button). It writes the same map a ``--label-map`` file holds (engine.models): structure key ->
the model's label names; "vessels" for vessels without the portal/hepatic split, "none" for labels not used.
No array math and no model loading here: the labels come in, a dict goes out.
"""
from __future__ import annotations

from typing import Optional

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QLabel, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from engine.labels import STRUCTURES, VESSEL_UNASSIGNED

#: (map key, what the person reads) in the order offered; "" = leave it to name matching
CHOICES: tuple[tuple[str, str], ...] = (
    ("", "(by name)"),
    ("none", "not used"),
    *((s.key, s.name) for s in STRUCTURES),
    ("vessels", VESSEL_UNASSIGNED.name.replace("unassigned", "portal/hepatic not split")),
)


class LabelMapDialog(QDialog):
    """One row per model label, a choice of structure for each.

    labels: the model's labels (name -> value, without background). current: a map already in force
    ({key: [names or values]}), shown as the starting choice.
    """

    def __init__(self, model_name: str, labels: dict[str, int], current: Optional[dict] = None,
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Label mapping — {model_name}")
        self.setObjectName("label_map_dialog")
        self._labels = dict(sorted(labels.items(), key=lambda kv: kv[1]))
        lay = QVBoxLayout(self)
        note = QLabel("Which LiverPlan structure is each of this model's labels? Labels left '(by name)' are "
                      "matched by their names; 'not used' drops a label. 'Vessel, portal/hepatic not split' is "
                      "for models that label the liver's vessels as one structure: LiverPlan then splits them "
                      "into portal vein and hepatic veins.")
        note.setWordWrap(True)
        lay.addWidget(note)
        self.table = QTableWidget(len(self._labels), 3)
        self.table.setObjectName("label_map_table")
        self.table.setHorizontalHeaderLabels(["Value", "Model label", "LiverPlan structure"])
        self.table.verticalHeader().setVisible(False)
        chosen = _choice_by_label(current or {}, self._labels)
        self.combos: dict[str, QComboBox] = {}
        for row, (name, value) in enumerate(self._labels.items()):
            self.table.setItem(row, 0, QTableWidgetItem(str(value)))
            self.table.setItem(row, 1, QTableWidgetItem(name))
            combo = QComboBox()
            for key, text in CHOICES:
                combo.addItem(text, key)
            idx = combo.findData(chosen.get(name, ""))
            combo.setCurrentIndex(max(0, idx))
            self.table.setCellWidget(row, 2, combo)
            self.combos[name] = combo
        self.table.resizeColumnsToContents()
        lay.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.resize(560, 120 + 32 * min(12, len(self._labels)))

    def set_choice(self, label_name: str, key: str) -> None:
        """Choose ``key`` (a structure key, "vessels", "none" or "" for by name) for one model label."""
        combo = self.combos[label_name]
        combo.setCurrentIndex(max(0, combo.findData(key)))

    def label_map(self) -> dict[str, list[str]]:
        """The map chosen, in the ``--label-map`` format (only the labels not left to name matching)."""
        out: dict[str, list[str]] = {}
        for name, combo in self.combos.items():
            key = combo.currentData()
            if key:
                out.setdefault(key, []).append(name)
        return out


def _choice_by_label(current: dict, labels: dict[str, int]) -> dict[str, str]:
    by_value = {v: n for n, v in labels.items()}
    out: dict[str, str] = {}
    for key, vals in current.items():
        if str(key).startswith("_"):
            continue
        for v in vals if isinstance(vals, (list, tuple)) else [vals]:
            name = by_value.get(int(v)) if isinstance(v, int) or str(v).isdigit() else (v if v in labels else None)
            if name:
                out[name] = key
    return out
