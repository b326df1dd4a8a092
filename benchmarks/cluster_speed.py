"""Serial `segment` vs `segment --cluster local:N` (one torch thread per worker) on synthetic phantoms.

    .venv/bin/python benchmarks/cluster_speed.py --cases 8 --workers 2 --work /tmp/cluster_speed

Each run is the CLI in its own process, timed from process start to exit; per-case times come from the
time stamps of the lines each run prints as a case finishes (serial) and from the cluster summary
(cluster). Printed (and written to WORK/cluster_speed.json):
- cases per hour end to end (process start to exit: imports, model load, cluster start and stop included)
  and in steady state (cases after the first / time between the first and the last case's line);
- the cluster's start + stop cost (end-to-end wall minus the run's wall in its summary);
- the overhead per case of the cluster path: workers x run wall / cases (what one case costs a worker,
  dispatch, result transfer and resume record included) minus the mean time the case's task ran on its
  worker (dispatch overhead), and minus the serial steady per-case time at the same thread count (all of
  the cluster path's extra cost per case, contention between the workers included);
- identical label maps (serial vs cluster), as a check.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(cmd: list[str], env: dict) -> tuple[float, list[tuple[float, str]]]:
    """Wall seconds of the command and its stdout lines with their arrival time (s since start)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    lines = []
    for line in proc.stdout:
        lines.append((time.perf_counter() - t0, line.rstrip("\n")))
    rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc not in (0,):
        raise SystemExit(f"{' '.join(cmd)} exited with {rc}:\n" + "\n".join(t for _, t in lines[-20:]))
    return wall, lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker and for the serial run")
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 128, 128], metavar=("Z", "Y", "X"))
    ap.add_argument("--model", default="demo")
    ap.add_argument("--work", default="/tmp/cluster_speed")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    import numpy as np
    import SimpleITK as sitk

    from engine.io import write_image
    from engine.phantom import make_phantom

    work = Path(args.work)
    cts = work / "cts"
    cts.mkdir(parents=True, exist_ok=True)
    for s in range(args.cases):
        p = cts / f"phantom{s:02d}.nii.gz"
        if not p.exists():
            write_image(p, make_phantom(seed=100 + s, shape=tuple(args.shape)))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    py = sys.executable
    base = [py, "main.py", "segment", str(cts), "--model", args.model, "--device", "cpu", "--no-progress",
            "--threads", str(args.threads), "--overwrite"]
    load = os.getloadavg()
    # serial
    serial_out = work / "serial"
    s_wall, s_lines = timed_run(base + ["--out", str(serial_out)], env)
    s_times = [t for t, line in s_lines if line.startswith("phantom") and "_seg" in line]
    s_steady = (s_times[-1] - s_times[0]) / (len(s_times) - 1)
    # cluster
    cl_out = work / f"local{args.workers}"
    c_wall, c_lines = timed_run(base + ["--out", str(cl_out), "--cluster", f"local:{args.workers}",
                                        "--cluster-timeout", "120"], env)
    summary = json.loads((cl_out / "cluster_summary_segment.json").read_text())
    c_times = [t for t, line in c_lines if ": done on " in line]
    c_steady = (c_times[-1] - c_times[0]) / (len(c_times) - 1)
    busy = [c["seconds"] for c in summary["per_case"] if c["status"] == "done"]
    per_case_worker = args.workers * summary["wall_seconds"] / args.cases
    same = all(np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(serial_out / f.name))),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(cl_out / f.name))))
               for f in sorted(serial_out.glob("*_seg.nii.gz")))
    res = {
        "cases": args.cases, "shape_zyx": args.shape, "model": args.model, "threads": args.threads,
        "workers": args.workers, "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "serial": {"wall_s": round(s_wall, 1), "cases_per_hour_end_to_end": round(args.cases / s_wall * 3600),
                   "steady_s_per_case": round(s_steady, 2), "cases_per_hour_steady": round(3600 / s_steady)},
        "cluster": {"wall_s": round(c_wall, 1), "cases_per_hour_end_to_end": round(args.cases / c_wall * 3600),
                    "run_wall_s": summary["wall_seconds"], "start_and_stop_s": round(c_wall - summary["wall_seconds"], 1),
                    "cases_per_hour_run": summary["cases_per_hour"],
                    "cases_per_hour_per_worker": summary["cases_per_hour_per_worker"],
                    "steady_s_between_cases": round(c_steady, 2),
                    "worker_busy_s_per_case_median": round(statistics.median(busy), 2),
                    "worker_s_per_case": round(per_case_worker, 2),
                    "dispatch_overhead_s_per_case": round(per_case_worker - statistics.mean(busy), 2),
                    "overhead_s_per_case_vs_serial": round(per_case_worker - s_steady, 2)},
        "identical_label_maps": same,
    }
    (work / "cluster_speed.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
