"""What the vanished lesions add to the Plan tab's live refresh (issue 22): Planner.figures(scenario) alone
vs figures + PlanningState.vanished_notes (engine.compare.planning_hook.sites_left, one Planner.masks per
refresh), on the real IRCADb 1.17 case (its first lesion's place taken as a vanished site) or a phantom.

    nice -n 5 .venv/bin/python benchmarks/vanished_sites_speed.py [--phantom] [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phantom", action="store_true", help="a 96 x 128 x 128 phantom instead of IRCADb 1.17")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    from engine.compare.planning_hook import VanishedSite
    from engine.measure import measure
    from engine.planning.planner import Planner
    from engine.planning.resection import Scenario
    from engine.planning.state import PlanningState

    if a.phantom:
        from engine.phantom import make_phantom
        case = make_phantom(seed=3, shape=(96, 128, 128), n_lesions=3)
    else:
        from engine.cli.measure import load_case_with_labels
        real = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "3dircadb1.17"
        case = load_case_with_labels(str(real / "PATIENT_DICOM.nii.gz"), str(real / "masks"), "ircadb")
    les = measure(case).lesions[0]
    st = PlanningState(case.labels.shape)
    st.vanished_sites = [VanishedSite(les.id, tuple(les.centroid_lps_mm), les.longest_diameter_mm / 2,
                                      les.longest_diameter_mm)]
    planner = Planner(case.labels, case.geometry).run()
    sc = Scenario("right hepatectomy", segments=[5, 6, 7, 8])
    planner.set_scenario(sc)
    planner.figures(sc)
    alone, with_notes = [], []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        planner.figures(sc)
        t1 = time.perf_counter()
        notes = st.vanished_notes(planner, sc)
        t2 = time.perf_counter()
        alone.append(t1 - t0)
        with_notes.append(t2 - t0)
    print(f"{case.name}: {case.geometry.describe()}")
    print(notes[0])
    ma, mw = statistics.median(alone), statistics.median(with_notes)
    print(f"refresh: figures {1000 * ma:.0f} ms; figures + vanished notes {1000 * mw:.0f} ms "
          f"(ratio {mw / ma:.2f}x; median of {a.repeat})")


if __name__ == "__main__":
    main()
