"""Soak: thousands of brush strokes with undo/redo, and many cases opened and closed in one window session.

    python benchmarks/soak.py                       # the full soak (issue 13): 2,000 strokes on 512x512x300,
                                                    # 30 cases in one window (needs a display: xvfb-run -a)
    python benchmarks/soak.py --strokes 200 --shape 40 96 96 --cases 5 --case-shape 32 64 64   # a quick one
    python benchmarks/soak.py --json soak.json      # also write the curves

Strokes drive the engine's edit history directly (:class:`engine.edits.EditHistory`, a brush drag of several
dabs per stroke as the window records it, then undo/redo: after every 10 strokes, 3 undos and 2 redos; after
every 100, undo back 20 and redo them all). The window is driven only through its public methods and actions
(``set_case``, the Undo/Redo actions, ``runner``, ``view3d``): each case is opened, edited (a few strokes on
its label map through ``apply_edit``), undone, redone, then replaced by the next. Reported: resident memory
(RSS) along the run, time per stroke per block of strokes, threads, VTK actors in the 3D pane, and the undo
history's bytes.

The test suite runs a short version (tests/engine/test_soak_edits.py and tests/gui/test_soak_window.py) with bounds on memory growth, threads and
actors; no timing is asserted there.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """Resident memory of this process (MB), from /proc (Linux) or psutil."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        import psutil
        return psutil.Process().memory_info().rss / 1e6


def os_threads() -> int:
    """Threads of this process as the OS sees them (Python threads and native pools)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


# ------------------------------------------------------------------------------------------------------------
def stroke_soak(shape=(300, 512, 512), n_strokes: int = 2000, seed: int = 0, sample_every: int = 100,
                history_bytes: Optional[int] = None, log: Callable[[str], None] = print) -> dict:
    """``n_strokes`` brush strokes with undo/redo on a phantom of ``shape`` (z, y, x) through EditHistory."""
    from engine import edits
    from engine.phantom import make_phantom

    case = make_phantom(seed=seed, shape=shape)
    rng = np.random.default_rng(seed)
    kw = {} if history_bytes is None else {"max_bytes": history_bytes}
    hist = edits.EditHistory(case.labels, **kw)
    spacing = case.geometry.spacing
    gc.collect()
    base = rss_mb()
    curve, times, threads = [], [], []
    t_all = time.perf_counter()
    for i in range(n_strokes):
        t0 = time.perf_counter()
        start = np.array([rng.uniform(0, n - 1) for n in shape])
        step = rng.normal(0, 3.0, 3) * np.array([0.3, 1.0, 1.0])
        stroke = edits.Stroke(case.labels)
        last = None
        for k in range(8):                                   # one drag: 8 mouse moves
            p = np.clip(start + k * step, 0, np.array(shape) - 1)
            centres = [p] if last is None else edits.stroke_points(last, p, spacing, 5.0)
            last = p
            for c in centres:
                stroke.add(edits.brush(case.labels, c, 5.0, spacing, int(rng.integers(1, 6)),
                                       erase=bool(rng.random() < 0.2), plane_axis=0))
        hist.commit("Paint", stroke.region())
        if (i + 1) % 10 == 0:
            for _ in range(3):
                hist.undo()
            for _ in range(2):
                hist.redo()
        if (i + 1) % 100 == 0:
            n = 0
            while n < 20 and hist.undo() is not None:
                n += 1
            while hist.redo() is not None:
                pass
        times.append(time.perf_counter() - t0)
        if (i + 1) % sample_every == 0 or i == 0:
            curve.append({"strokes": i + 1, "rss_mb": round(rss_mb(), 1), "history_mb": round(hist.nbytes / 1e6, 2),
                          "threads": os_threads()})
            threads.append(os_threads())
            log(f"  {i + 1:5d} strokes: RSS {curve[-1]['rss_mb']:.0f} MB, history {curve[-1]['history_mb']:.1f} MB, "
                f"{1000 * statistics.median(times[-sample_every:]):.1f} ms/stroke (median of the last block)")
    total = time.perf_counter() - t_all
    block = max(1, n_strokes // 10)
    per_block = [round(1000 * statistics.median(times[j:j + block]), 2) for j in range(0, n_strokes, block)]
    return {"shape": list(shape), "strokes": n_strokes, "seconds": round(total, 1), "rss_start_mb": round(base, 1),
            "rss_end_mb": round(rss_mb(), 1), "curve": curve, "ms_per_stroke_by_block": per_block,
            "history_mb_end": round(hist.nbytes / 1e6, 2), "history_limit_mb": round(hist.max_bytes / 1e6, 1),
            "threads_max": max(threads), "threads_min": min(threads)}


# ------------------------------------------------------------------------------------------------------------
def _process(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def _wait_quiet(app, win, timeout: float = 120.0) -> None:
    """Until the window's background tasks are done (``runner`` is public) and the event queue settles.
    The window offers no public 'idle' signal; a short extra wait covers its refresh timers."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        app.processEvents()
        if not win.runner.running():
            _process(app, 0.3)
            if not win.runner.running():
                return
        time.sleep(0.02)


def window_soak(n_cases: int = 30, shape=(120, 256, 256), strokes_per_case: int = 5, with_3d: bool = True,
                log: Callable[[str], None] = print) -> dict:
    """Open ``n_cases`` phantom cases one after the other in one window, edit each, undo/redo, and replace it by
    the next; returns memory, threads and VTK actors after each case."""
    from PySide6.QtWidgets import QApplication

    from engine import edits
    from engine.phantom import make_phantom
    from gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    win = MainWindow(with_3d=with_3d)
    win.resize(1400, 900)
    win.show()
    _process(app, 0.5)
    rows = []
    rng = np.random.default_rng(1)
    t_all = time.perf_counter()
    try:
        for k in range(n_cases):
            t0 = time.perf_counter()
            case = make_phantom(seed=k, shape=shape)
            win.set_case(case)
            _wait_quiet(app, win)
            for _ in range(strokes_per_case):
                c = [float(rng.uniform(n * 0.3, n * 0.7)) for n in shape]
                win.apply_edit("Paint", edits.brush, c, 6.0, case.geometry.spacing, 2, plane_axis=0)
            _wait_quiet(app, win)
            for _ in range(strokes_per_case):
                win.undo_action.trigger()
            for _ in range(strokes_per_case):
                win.redo_action.trigger()
            _wait_quiet(app, win)
            gc.collect()
            actors = (len(win.view3d.plotter.renderer.actors) if getattr(win, "view3d", None) is not None else 0)
            rows.append({"case": k + 1, "rss_mb": round(rss_mb(), 1), "threads": os_threads(),
                         "python_threads": threading.active_count(), "vtk_actors": actors,
                         "seconds": round(time.perf_counter() - t0, 2)})
            log(f"  case {k + 1:2d}: RSS {rows[-1]['rss_mb']:.0f} MB, {rows[-1]['threads']} threads, "
                f"{actors} VTK actors, {rows[-1]['seconds']:.1f} s")
    finally:
        if win.history is not None:
            win.history.mark_saved()            # nothing to ask about: the soak's edits are throw-away
        win.close()
        _process(app, 0.3)
    return {"cases": n_cases, "shape": list(shape), "seconds": round(time.perf_counter() - t_all, 1),
            "per_case": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strokes", type=int, default=2000)
    ap.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), metavar=("Z", "Y", "X"))
    ap.add_argument("--cases", type=int, default=30)
    ap.add_argument("--case-shape", type=int, nargs=3, default=(300, 512, 512), metavar=("Z", "Y", "X"))
    ap.add_argument("--history-mb", type=float, help="undo history limit (default: the application's, 512 MB)")
    ap.add_argument("--no-3d", action="store_true", help="the window without its 3D pane")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("LIVERPLAN_NO_DIALOGS", "1")
    if "LIVERPLAN_DATA_DIR" not in os.environ:
        import tempfile
        os.environ["LIVERPLAN_DATA_DIR"] = tempfile.mkdtemp(prefix="liverplan_soak_")
    out: dict = {}
    if args.strokes:
        print(f"strokes: {args.strokes} on {tuple(args.shape)} (z, y, x)")
        out["strokes"] = stroke_soak(tuple(args.shape), args.strokes,
                                     history_bytes=int(args.history_mb * 1e6) if args.history_mb else None)
        s = out["strokes"]
        print(f"  -> RSS {s['rss_start_mb']:.0f} -> {s['rss_end_mb']:.0f} MB; ms/stroke by block "
              f"{s['ms_per_stroke_by_block']}; threads {s['threads_min']}-{s['threads_max']}; {s['seconds']} s")
    if args.cases:
        print(f"window: {args.cases} cases of {tuple(args.case_shape)} (z, y, x) in one session")
        out["window"] = window_soak(args.cases, tuple(args.case_shape), with_3d=not args.no_3d)
        rows = out["window"]["per_case"]
        print(f"  -> RSS {rows[0]['rss_mb']:.0f} -> {rows[-1]['rss_mb']:.0f} MB (max {max(r['rss_mb'] for r in rows):.0f}); "
              f"threads {min(r['threads'] for r in rows)}-{max(r['threads'] for r in rows)}; VTK actors "
              f"{min(r['vtk_actors'] for r in rows)}-{max(r['vtk_actors'] for r in rows)}; {out['window']['seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
