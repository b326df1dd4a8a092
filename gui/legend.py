"""The legend over each slice pane and the 3D pane: the structures shown there and their colours (the
colour table is engine.labels'; which structures are shown, the window says)."""
from __future__ import annotations

from typing import Iterable, Optional

from PySide6.QtWidgets import QLabel, QWidget

from engine.labels import BY_LABEL


def legend_html(labels: Iterable[int]) -> str:
    """Rich text: one line per structure, a swatch in its colour and its name (empty: no structure)."""
    rows = []
    for lab in labels:
        s = BY_LABEL.get(int(lab))
        if s is None:
            continue
        r, g, b = s.color
        rows.append(f'<span style="color: rgb({r},{g},{b}); font-size: 10pt;">&#9632;</span>&nbsp;{s.name}')
    return "<br>".join(rows)


class Legend(QLabel):
    """A small legend drawn over a pane (a child of the widget that shows the image), in its bottom-right
    corner; it follows the pane's size."""

    def __init__(self, host: QWidget, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent or host)
        self.host = host
        self.setObjectName("legend")
        self.setStyleSheet("color: white; background: rgba(0, 0, 0, 150); padding: 2px; border-radius: 3px;"
                           " font-size: 8pt;")
        self.labels: list[int] = []
        self.setVisible(False)
        host.installEventFilter(self)

    def set_structures(self, labels: Iterable[int], on: bool = True) -> None:
        self.labels = [int(v) for v in labels if int(v) in BY_LABEL]
        self.setText(legend_html(self.labels))
        self.adjustSize()
        self.setVisible(bool(on and self.labels))
        self.place()

    def place(self) -> None:
        w, h = self.host.width(), self.host.height()
        self.move(max(0, w - self.width() - 6), max(0, h - self.height() - 22))
        self.raise_()

    def eventFilter(self, obj, ev):  # noqa: N802 - Qt naming
        from PySide6.QtCore import QEvent
        if obj is self.host and ev.type() == QEvent.Resize:
            self.place()
        return False
