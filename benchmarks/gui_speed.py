"""GUI speed on a 512 x 512 x 300 case: launch, slice scrolling, brush dab, refresh after an edit.

Run under a display (Xvfb is fine):
    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/gui_speed.py [--small]

Targets (issue): window shown < 3 s after launch; scrolling a 512 x 512 slice with overlay < 16 ms per
step; a brush dab visible < 30 ms; measurements + 3D refreshed < 500 ms after an edit. Side by side, the
same work done the naive way (no overlay LUT reuse is not applicable; we compare: full re-mesh vs the
local per-structure re-mesh the window uses, and scrolling without vs with the overlay) and the ratio.
The last line is the refresh's engine work alone on one liver edit: a full engine.measure.measure() vs
engine.measure.IncrementalMeasurer.update (and whether the reports are identical), and re-meshing the
liver with update_label_surface vs engine.mesh.BlockSurface.update. The 3D pane after the edits is saved
to scratch/refresh_after_edits.png.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def launch_time() -> tuple[float, float]:
    """Seconds from starting the interpreter to the window being shown (and to the demo case shown)."""
    code = (
        "import time, sys; t0=time.time(); sys.path.insert(0, %r)\n"
        "from gui.app import create_application, make_window\n"
        "app = create_application(); w = make_window()\n"
        "app.processEvents(); print('SHOWN', time.time()-t0, flush=True)\n"
        "from PySide6.QtCore import QTimer\n"
        "def poll():\n"
        "    if w.case is not None:\n"
        "        print('CASE', time.time()-t0, flush=True); w.history.mark_saved(); w.close(); app.quit()\n"
        "    else: QTimer.singleShot(20, poll)\n"
        "QTimer.singleShot(0, poll); app.exec()\n" % str(REPO))
    env = dict(os.environ, LIVERPLAN_DATA_DIR=tempfile.mkdtemp())
    t = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    wall = time.time() - t
    shown = case = float("nan")
    for line in out.stdout.splitlines():
        if line.startswith("SHOWN"):
            shown = float(line.split()[1])
        if line.startswith("CASE"):
            case = float(line.split()[1])
    if shown != shown:
        print(out.stderr[-2000:])
    print(f"  (process wall time incl. exit: {wall:.2f} s)")
    return shown, case


def engine_side_by_side(case, box) -> None:
    """The refresh's engine work alone, peer (full pass) vs incremental, on the same edit."""
    import numpy as np
    from engine import edits
    from engine.measure import IncrementalMeasurer, measure
    from engine.mesh import BlockSurface, update_label_surface

    inc = IncrementalMeasurer(case)
    surf = BlockSurface(case.labels, case.geometry, 1)
    surf.build()
    hist = edits.EditHistory(case.labels)
    z = box[0]
    inside = np.argwhere(case.labels[z] == 1)
    centre = (z, *[int(v) for v in inside[len(inside) // 3]])
    e = hist.commit("erase", edits.brush(case.labels, centre, 6.0, case.geometry.spacing, 1, erase=True))
    t0 = time.perf_counter()
    full = measure(case)
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep = inc.update(e.box)
    t_inc = time.perf_counter() - t0
    same = rep.to_json_dict() == full.to_json_dict()
    t0 = time.perf_counter()
    update_label_surface(case.labels, case.geometry, 1)
    t_mesh_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    surf.update(e.box)
    t_mesh_inc = time.perf_counter() - t0
    print(f"engine, liver edit: measure() {t_full * 1000:.0f} ms vs IncrementalMeasurer.update "
          f"{t_inc * 1000:.0f} ms (x{t_full / t_inc:.0f}; reports identical: {same}); liver re-mesh "
          f"update_label_surface {t_mesh_full * 1000:.0f} ms vs BlockSurface.update {t_mesh_inc * 1000:.0f} ms "
          f"(x{t_mesh_full / t_mesh_inc:.1f})")
    hist.undo()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true", help="a 128 x 128 x 96 case instead (quick check)")
    args = ap.parse_args()
    os.environ.setdefault("LIVERPLAN_DATA_DIR", tempfile.mkdtemp())
    os.environ["LIVERPLAN_AUTOSAVE_MS"] = "3600000"

    print("launch:")
    shown, case_t = launch_time()
    print(f"  window shown after {shown:.2f} s (target < 3 s); demo case on screen after {case_t:.2f} s")

    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication([])
    from engine import edits
    from engine.mesh import label_surfaces
    from engine.phantom import make_phantom
    from gui.main_window import MainWindow

    shape = (96, 128, 128) if args.small else (300, 512, 512)
    spacing = (2.5, 2.5, 2.5) if args.small else (1.0, 0.7, 0.7)
    t = time.perf_counter()
    case = make_phantom(seed=7, shape=shape, spacing=spacing)
    print(f"case {shape[::-1]} (x, y, z) built in {time.perf_counter() - t:.1f} s")
    win = MainWindow()
    win.resize(1500, 950)
    win.show()
    win.set_case(case)

    def wait_idle(timeout=300.0):
        t0 = time.perf_counter()
        while (win.runner.running() or win._refresh_timer.isActive() or win._pending_measure
               or win._pending_mesh) and time.perf_counter() - t0 < timeout:
            app.processEvents()
            time.sleep(0.002)
        return time.perf_counter() - t0

    t_first = wait_idle()
    draw_ms: list[float] = []
    if win.view3d is not None:
        # Time the 3D pane's update + render (software OpenGL under Xvfb) separately from the engine work.
        _set = win.view3d.set_surfaces

        def timed_set(*a, **k):
            t = time.perf_counter()
            _set(*a, **k)
            draw_ms.append((time.perf_counter() - t) * 1000)
        win.view3d.set_surfaces = timed_set
    print(f"first measurements + all surfaces after opening: {t_first:.2f} s")

    ax = win.views[0]

    def scroll_steps(n=60):
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            ax.step_slice(1 if (i // 20) % 2 == 0 else -1)
            ax.view.viewport().repaint()
            app.processEvents()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times), max(times)

    med_ov, max_ov = scroll_steps()
    win.structures.overlay.setValue(0)
    for lab in win.visible2d:
        win._on_visible2d(lab, False)
    med_no, max_no = scroll_steps()
    win.structures.overlay.setValue(45)
    for lab in win.visible2d:
        win._on_visible2d(lab, True)
    print(f"scroll axial 512 x 512 step (set slice + repaint): median {med_ov:.1f} ms (max {max_ov:.1f}) "
          f"with overlay; {med_no:.1f} ms without -> overlay costs x{med_ov / med_no:.2f} (target < 16 ms)")

    # Brush dab: one dab of 5 mm in the current axial slice, repainted.
    win.tools.set_tool("brush")
    win.tools.set_active_label(5)
    win.tools.size.setValue(5.0)
    z = win.pos[0]
    dabs = []
    win._stroke = edits.Stroke(case.labels)
    win._last_dab = None
    for i in range(30):
        t0 = time.perf_counter()
        win.dab((z, shape[1] // 2, shape[2] // 4 + i), 0)
        for v in win.views:
            v.view.viewport().repaint()
        app.processEvents()
        dabs.append((time.perf_counter() - t0) * 1000)
    s, win._stroke = win._stroke, None
    t0 = time.perf_counter()
    win._commit("Brush stroke (benchmark)", s.region())
    dt = wait_idle()
    refresh = time.perf_counter() - t0
    print(f"brush dab visible: median {statistics.median(dabs):.1f} ms (max {max(dabs):.1f}) (target < 30 ms)")
    print(f"after a brush stroke (CRLM): measurements + lesion table + CRLM surface refreshed in "
          f"{refresh * 1000:.0f} ms (target < 500 ms); of which 3D update + render {sum(draw_ms):.0f} ms")
    draw_ms.clear()
    # The same refresh for a liver edit (the biggest structure).
    import numpy as np
    inside = np.argwhere(case.labels[z] == 1)
    centre = (z, *[int(v) for v in inside[len(inside) // 2]])
    t0 = time.perf_counter()
    e = win.apply_edit("erase liver", edits.brush, centre, 5.0, case.geometry.spacing, 1, erase=True)
    assert e is not None
    wait_idle()
    liver_refresh = time.perf_counter() - t0
    print(f"after a liver edit: refreshed in {liver_refresh * 1000:.0f} ms; of which 3D update + render "
          f"{sum(draw_ms):.0f} ms")
    draw_ms.clear()
    shots = REPO / "scratch"
    if win.view3d is not None and shots.is_dir():
        win.export_screenshot("3d", shots / "refresh_after_edits.png")
    t0 = time.perf_counter()
    label_surfaces(case.labels, case.geometry)
    full = time.perf_counter() - t0
    print(f"peer (naive): re-meshing every structure after each edit: {full * 1000:.0f} ms -> local re-mesh "
          f"refresh is x{full / refresh:.1f} faster for a lesion edit")
    t0 = time.perf_counter()
    win.undo()
    wait_idle()
    print(f"undo of that edit, refreshed: {(time.perf_counter() - t0) * 1000:.0f} ms; of which 3D update + "
          f"render {sum(draw_ms):.0f} ms")
    engine_side_by_side(case, e.box)
    win.history.mark_saved()
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
