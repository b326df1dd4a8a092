"""``liverplan --self-test``: the whole chain on a small phantom, one line per check.

Loads the bundled demo model, segments a small synthetic phantom (2.5 mm voxels, the demo model's own
spacing), measures the result, exports the label map (NIfTI and 3D Slicer .seg.nrrd) and a liver surface
(STL), and reads the exports back. Used by the installers' smoke test and by a clinician's IT department to
check an installation; it writes only into a temporary folder that it removes. Nothing here imports Qt.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TextIO

import numpy as np

log = logging.getLogger(__name__)

SELFTEST_SEED = 7
SELFTEST_SHAPE = (64, 96, 96)          # z, y, x voxels
SELFTEST_SPACING = (2.5, 2.5, 2.5)     # z, y, x mm: the demo model's spacing (no resampling to do)
MIN_LIVER_DICE = 0.5                   # the demo model finds the liver (held-out Dice ~0.74), little else


@dataclass
class Check:
    """One self-test check: its name, whether it held, and what was seen."""

    name: str
    ok: bool
    detail: str
    seconds: float

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name:22s} {self.detail} ({self.seconds:.1f} s)"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def run_self_test(device: str = "auto", out: Optional[TextIO] = None) -> list[Check]:
    """Run every check (a failed step marks the checks that need it as failed too) and print one line per
    check to ``out`` as it completes. Returns the checks."""

    checks: list[Check] = []
    state: dict = {}

    def step(name: str, fn: Callable[[], str], needs: tuple[str, ...] = ()) -> None:
        t0 = time.perf_counter()
        missing = [n for n in needs if n not in state]
        if missing:
            c = Check(name, False, f"not run: needs {', '.join(missing)}", 0.0)
        else:
            try:
                c = Check(name, True, fn(), time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - a self-test reports every failure as a FAIL line
                log.debug("self-test step %s failed", name, exc_info=True)
                c = Check(name, False, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
        checks.append(c)
        if out is not None:
            print(c.line(), file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="liverplan-selftest-") as tmp:
        tmpdir = Path(tmp)

        def load_model() -> str:
            from engine.models import find_model

            model = find_model("demo")
            state["model"] = model
            return f"{model.card.headline()} from {model.path}"

        def phantom() -> str:
            from engine.phantom import make_phantom

            case = make_phantom(seed=SELFTEST_SEED, shape=SELFTEST_SHAPE, spacing=SELFTEST_SPACING, n_lesions=1)
            state["case"] = case
            return f"{case.geometry.describe()}"

        def segment() -> str:
            from engine.inference import SegmentOptions
            from engine.inference import segment as run_segment
            from engine.labels import TOTAL_LIVER_LABELS

            case = state["case"]
            result = run_segment(case, state["model"], SegmentOptions(device=device, mode="fast"))
            liver = list(TOTAL_LIVER_LABELS)
            dice = _dice(np.isin(case.labels, liver), np.isin(result.labels, liver))
            assert dice >= MIN_LIVER_DICE, f"liver Dice {dice:.2f} against the phantom's truth (< {MIN_LIVER_DICE})"
            state["labels"] = result.labels
            return f"device {result.device_used}, liver Dice {dice:.2f} against the phantom's truth"

        def measure() -> str:
            from dataclasses import replace

            from engine.measure import measure as run_measure

            case = replace(state["case"], labels=state["labels"])
            report = run_measure(case)
            ml = report.value("liver.total_volume_ml")
            assert ml > 100.0, f"total liver volume {ml:.0f} mL (a liver is > 100 mL)"
            state["measured_case"] = case
            state["report"] = report
            return f"total liver volume {ml:.0f} mL, {len(report.lesions)} lesion(s)"

        def export() -> str:
            from engine.io import write_label_map
            from engine.mesh import label_surfaces, write_meshes
            from engine.report import write_measurements_csv

            case = state["measured_case"]
            paths = [write_label_map(tmpdir / "selftest_seg.nii.gz", case, state["labels"]),
                     write_label_map(tmpdir / "selftest.seg.nrrd", case, state["labels"])]
            paths += write_measurements_csv(tmpdir / "selftest_measurements.csv", state["report"])
            surfaces = label_surfaces(state["labels"], case.geometry, labels_wanted=[1], smooth=True)
            paths += write_meshes(surfaces, tmpdir, formats=("stl",))
            state["exports"] = paths
            sizes = ", ".join(f"{p.name} {p.stat().st_size / 1024:.0f} kB" for p in paths)
            return sizes

        def read_back() -> str:
            import pyvista

            from engine.io import read_label_map

            case = state["measured_case"]
            done = []
            for p in state["exports"]:
                if p.name.endswith((".nii.gz", ".seg.nrrd")):
                    back = read_label_map(p, case)
                    assert np.array_equal(back, state["labels"]), f"{p.name} reads back different labels"
                    done.append(p.name)
                elif p.suffix == ".stl":
                    mesh = pyvista.read(str(p))
                    assert mesh.n_cells > 100, f"{p.name} holds {mesh.n_cells} triangles"
                    done.append(f"{p.name} ({mesh.n_cells} triangles)")
            return "identical labels / surface from " + ", ".join(done)

        step("demo model", load_model)
        step("phantom", phantom)
        step("segment", segment, needs=("model", "case"))
        step("measure", measure, needs=("labels",))
        step("export", export, needs=("measured_case", "report"))
        step("read back", read_back, needs=("exports",))
    return checks


def main(out: TextIO, device: str = "auto") -> int:
    """Run the self-test, print a summary line; 0 only when every check held."""
    from engine.about import about_info

    info = about_info(probe_device=False)
    print(f"LiverPlan {info['version']} self-test ({info['build']})", file=out, flush=True)
    t0 = time.perf_counter()
    checks = run_self_test(device=device, out=out)
    failed = [c.name for c in checks if not c.ok]
    total = time.perf_counter() - t0
    if failed:
        print(f"self-test FAILED: {', '.join(failed)} ({total:.1f} s)", file=out, flush=True)
        return 1
    print(f"self-test passed: {len(checks)} checks ({total:.1f} s)", file=out, flush=True)
    return 0
