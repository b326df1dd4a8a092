"""The About box: version, device, data folders, and the third-party licences of a frozen build."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)


def test_about_box_shows_versions_device_folders_and_licences(qtbot, tmp_path, monkeypatch):
    from engine import about as engine_about
    from gui.about import AboutDialog

    dlg = AboutDialog(info=engine_about.about_info(probe_device=True))
    qtbot.addWidget(dlg)
    dlg.show()
    text = dlg.text.text()
    assert "LiverPlan" in text and engine_about.about_info(False)["version"] in text
    assert "Compute device" in text and "Your data folder" in text and "Installed models" in text
    assert "(Qt 6." in text and "GNU LGPL version 3" in text
    assert not dlg.licences_button.isEnabled()  # from source: no generated notices
    dlg.grab().save(str(tmp_path / "about.png"))

    notices = tmp_path / "THIRD-PARTY-NOTICES.txt"
    notices.write_text("torch  2.14.1  BSD-3-Clause\n")
    monkeypatch.setattr(engine_about.sys, "frozen", True, raising=False)
    monkeypatch.setattr(engine_about.sys, "_MEIPASS", str(tmp_path), raising=False)
    frozen = AboutDialog(info=engine_about.about_info(probe_device=False))
    qtbot.addWidget(frozen)
    assert frozen.licences_button.isEnabled()
    shown = frozen.show_licences()
    qtbot.addWidget(shown)
    from PySide6.QtWidgets import QPlainTextEdit
    assert "torch  2.14.1  BSD-3-Clause" in shown.findChild(QPlainTextEdit).toPlainText()


def test_about_box_opens_before_torch_is_asked_and_fills_in_the_device(qtbot):
    """The box appears at once (no torch import on the GUI thread); a worker fills in the compute device."""
    from gui.about import AboutDialog
    from gui.workers import TaskRunner

    runner = TaskRunner()
    dlg = AboutDialog(runner=runner)
    qtbot.addWidget(dlg)
    assert "finding out" in dlg.text.text() and "Your data folder" in dlg.text.text()
    qtbot.waitUntil(lambda: "finding out" not in dlg.text.text(), timeout=60000)
    assert dlg.info["device"] and "finding out" not in dlg.info["device"]
    assert "Compute device" in dlg.text.text()
