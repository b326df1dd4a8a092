"""Speed (and accuracy) of the portal/hepatic vessel split (engine.vessel_split) on a 512 x 512 x 300 case.

The case is a phantom (engine.phantom, seed 0) sampled on 512 x 512 x 300 voxels of 0.8 x 0.8 x 1.0 mm,
turned into what a public model set gives (the portal and hepatic veins inside the liver merged into one
vessel mask; the extrahepatic portal trunk and the IVC as seeds: tests/engine/vessel_problems.py). Prints
the wall and CPU time of each split (the first run includes loading the compiled thinning; the phantom's
construction is not timed) and how many
vessel voxels came back in the right system.

    .venv/bin/python benchmarks/vessel_split_speed.py [--seed 0] [--repeat 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "engine"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="numeric library threads (default 2: a laptop's 2 cores)")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    from engine.phantom import make_phantom
    from engine.vessel_split import assign_vessel_tree
    from vessel_problems import accuracy, phantom_problem

    t0 = time.perf_counter()
    case = make_phantom(seed=args.seed, shape=(300, 512, 512), spacing=(1.0, 0.8, 0.8), n_lesions=2)
    labels, vessels, truth = phantom_problem(case.labels, case.geometry.spacing)
    print(f"phantom seed {args.seed}, {case.geometry.shape[::-1]} voxels (x, y, z), spacing (z, y, x) "
          f"{case.geometry.spacing} mm: built in {time.perf_counter() - t0:.1f} s; "
          f"{int(vessels.sum())} vessel voxels to assign")
    res = None
    for i in range(max(1, args.repeat)):
        t, c = time.perf_counter(), os.times()
        res = assign_vessel_tree(labels, vessels, case.geometry.spacing)
        c1 = os.times()
        print(f"split run {i + 1}: {time.perf_counter() - t:.2f} s wall, "
              f"{(c1.user - c.user) + (c1.system - c.system):.2f} s CPU (load average {os.getloadavg()[0]:.1f})")
    a = accuracy(res.labels, vessels, truth)
    print(f"right {a['right']:.1%}, wrong {a['wrong']:.1%}, unassigned {a['unassigned']:.1%}")
    for n in res.notes:
        print("  note:", n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
