"""Segmentation from the window: time to Cancel, and the window's responsiveness while a model runs.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/gui_cancel.py

Uses the bundled demo model when installed, else the tiny test model (tests/engine/tiny_model.py), on a
phantom. Prints: seconds from pressing Cancel to the window reporting "cancelled" (target < 1 s), the
longest gap between GUI event-loop turns while the model runs (responsiveness; a frozen window shows
as a long gap), and the same for a full run.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "engine"))


def main() -> int:
    os.environ.setdefault("LIVERPLAN_DATA_DIR", tempfile.mkdtemp())
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication([])
    from engine.models import bundled_demo_model, load_model
    from engine.phantom import make_phantom
    from gui.main_window import MainWindow

    model = bundled_demo_model()
    if model is None:
        from tiny_model import build_tiny_model
        model = load_model(build_tiny_model(Path(tempfile.mkdtemp())))
    print(f"model: {model.card.headline()}")
    case = make_phantom(seed=5, shape=(96, 160, 160), spacing=(2.5, 1.6, 1.6))
    win = MainWindow(with_3d=False)
    win.show()
    win.set_case(case)

    def pump_until(cond, timeout=600.0):
        t0 = time.perf_counter()
        last = t0
        worst = 0.0
        while not cond() and time.perf_counter() - t0 < timeout:
            app.processEvents()
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now
            time.sleep(0.005)
        return time.perf_counter() - t0, worst

    pump_until(lambda: not win.runner.running())
    win.segment_panel.device.setCurrentText("cpu")
    win.run_segmentation(model)
    # Let it get into the sliding window before cancelling.
    pump_until(lambda: "sliding" in win.segment_panel.status.text().lower()
               or "predict" in win.segment_panel.status.text().lower(), timeout=120)
    time.sleep(0.3)
    win.cancel_segmentation()
    t_cancel, gap = pump_until(lambda: not win.runner.running("segment"))
    print(f"cancel -> window says '{win.segment_panel.status.text()}' after {t_cancel:.2f} s (target < 1 s)")
    win.run_segmentation(model)
    t_run, gap = pump_until(lambda: not win.runner.running("segment"))
    print(f"full run: {t_run:.1f} s; longest GUI event-loop gap while it ran: {gap * 1000:.0f} ms; "
          f"status: {win.segment_panel.status.text()[:120]}")
    win.history.mark_saved()
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
