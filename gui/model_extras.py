"""Segment tab: the controls the command line has beside --model — extra models combined with the chosen one
(--extra-model), a label map for the chosen model (--label-map, through the label-mapping dialog) — and the
model sets offered as one choice (--model "<set>"). Also the install helpers of the Models menu.

The window creates one :class:`ModelExtras` (``attach_to(segment_panel)``) and asks it what to run
(:meth:`ModelExtras.run_target`). No array math here; models are looked up through engine.models.
"""
from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton,
                               QVBoxLayout, QWidget)

log = logging.getLogger(__name__)


class ModelExtras(QGroupBox):
    """Extra models (checked ones are combined with the chosen model by the precedence rule) and label maps.

    label_map_requested: the person asked to map the chosen model's labels (the window opens the dialog).
    """

    label_map_requested = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__("More models and label maps", parent)
        self.setObjectName("model_extras")
        lay = QVBoxLayout(self)
        hint = QLabel("Combine with (lesions > vessels > parenchyma; the later model wins ties):")
        hint.setWordWrap(True)
        lay.addWidget(hint)
        self.extra = QListWidget()
        self.extra.setObjectName("extra_models")
        self.extra.setMaximumHeight(90)
        lay.addWidget(self.extra)
        row = QHBoxLayout()
        self.label_map_button = QPushButton("Label map…")
        self.label_map_button.setObjectName("label_map_button")
        self.label_map_button.setToolTip("Say which of the chosen model's labels is which structure")
        row.addWidget(self.label_map_button)
        self.summary = QLabel("")
        self.summary.setObjectName("label_map_summary")
        self.summary.setWordWrap(True)
        row.addWidget(self.summary, 1)
        lay.addLayout(row)
        self.label_map_button.clicked.connect(self.label_map_requested)
        self._models: list = []
        self._maps: dict[str, dict] = {}       # model folder -> label map chosen in the dialog

    # -- models ----------------------------------------------------------------------------------
    def set_models(self, models: list) -> None:
        """The single models that can be combined (checked state kept for those still there)."""
        checked = {str(m.path) for m in self.checked_models()}
        self._models = [m for m in models if hasattr(m, "path")]
        self.extra.clear()
        for m in self._models:
            item = QListWidgetItem(m.display_name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if str(m.path) in checked else Qt.Unchecked)
            item.setToolTip(f"{m.display_name}\n{m.path}\nstructures: {', '.join(m.structures())}")
            self.extra.addItem(item)

    def checked_models(self) -> list:
        return [m for i, m in enumerate(self._models) if self.extra.item(i) is not None
                and self.extra.item(i).checkState() == Qt.Checked]

    def set_checked(self, model, on: bool = True) -> None:
        for i, m in enumerate(self._models):
            if str(m.path) == str(model.path):
                self.extra.item(i).setCheckState(Qt.Checked if on else Qt.Unchecked)

    # -- label maps ------------------------------------------------------------------------------
    def set_label_map(self, model, label_map: Optional[dict]) -> None:
        """Use ``label_map`` (the --label-map format) for ``model`` from now on (None: back to its own)."""
        if label_map:
            self._maps[str(model.path)] = dict(label_map)
        else:
            self._maps.pop(str(model.path), None)
        self.show_model(model)

    def label_map_for(self, model) -> Optional[dict]:
        return self._maps.get(str(getattr(model, "path", "")))

    def show_model(self, model) -> None:
        """Say which label map the chosen model runs with."""
        is_single = hasattr(model, "path")
        self.label_map_button.setEnabled(is_single)
        if not is_single:
            self.summary.setText("A model set uses the built-in maps of its parts.")
            return
        lm = self.label_map_for(model)
        self.summary.setText(f"Label map: yours ({', '.join(f'{k}: {len(v)}' for k, v in lm.items())})" if lm
                             else f"Label map: {model.mapping_source}")

    # -- what to run -----------------------------------------------------------------------------
    def run_target(self, chosen):
        """(what segment() gets, the models whose structures it produces, a name to show) for the chosen entry
        plus the checked extra models, with the label maps chosen here. Raises ModelError in words."""
        from engine.inference import ModelSetChoice
        from engine.models import ModelSetEntry, load_model

        def resolved(m):
            lm = self.label_map_for(m)
            return load_model(m.path, label_map=lm) if lm else m

        if isinstance(chosen, ModelSetEntry):
            if not chosen.complete:
                from engine.errors import ModelError
                raise ModelError(f"The model set '{chosen.name}' needs {', '.join(chosen.missing)}: install the "
                                 "release zips (Models > Install a folder of model zips…).")
            parts = [resolved(m) for m in chosen.parts]
            extras = [resolved(m) for m in self.checked_models() if str(m.path) not in {str(p.path) for p in parts}]
            target = ModelSetChoice(chosen.name, parts + extras, list(chosen.notes))
            return target, parts + extras, chosen.name
        first = resolved(chosen)
        extras = [resolved(m) for m in self.checked_models() if str(m.path) != str(first.path)]
        if not extras:
            return first, [first], first.name
        return [first] + extras, [first] + extras, " + ".join(m.name for m in [first] + extras)


def attach_to(segment_panel) -> ModelExtras:
    """A ModelExtras placed in the Segment tab under the model card (the panel's own layout, public API)."""
    extras = ModelExtras(segment_panel)
    lay = segment_panel.layout()
    lay.insertWidget(2, extras)
    segment_panel.model.currentIndexChanged.connect(
        lambda _i: segment_panel.current_model() is not None and extras.show_model(segment_panel.current_model()))
    return extras


def unknown_labels_error(message: str) -> bool:
    """True for the install refusal a label map answers (no label of the model is a LiverPlan structure)."""
    return "corresponds to a LiverPlan structure" in message
