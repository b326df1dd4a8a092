"""Score a model (default: the bundled demo model) on the real IRCADb 1.17 case with the study's metrics.

The demo model never saw real anatomy; this shows how far synthetic training carries. IRCADb's
``venoussystem`` mask merges the hepatic veins and the IVC, so that column compares the reference with the
union of the predicted hepatic veins and IVC (engine.labelmap preset "ircadb"). Needs ../shared/data/real.

    .venv/bin/python benchmarks/evaluate_demo_model.py [--model DIR] [--out DIR] [--mode fast|accurate]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "resources" / "models" / "demo"))
    ap.add_argument("--case", default=str(REPO.parent / "shared" / "data" / "real" / "3dircadb1.17"))
    ap.add_argument("--out", default=str(REPO / "scratch" / "demo_eval_ircadb"))
    ap.add_argument("--mode", default="fast", choices=("fast", "accurate"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from engine.evaluation import CaseRecord, CohortResult, cohort_table, evaluate_pair, write_outputs
    from engine.inference import SegmentOptions, segment
    from engine.io import load_case, read_label_map, write_label_map
    from engine.labelmap import LabelMapping
    from engine.models import load_model

    case_dir = Path(args.case)
    if not (case_dir / "PATIENT_DICOM.nii.gz").is_file():
        print(f"IRCADb case not found at {case_dir}; nothing to evaluate.", file=sys.stderr)
        return 0
    model = load_model(args.model)
    mapping = LabelMapping.preset("ircadb")
    case = load_case(case_dir / "PATIENT_DICOM.nii.gz")
    ref = read_label_map(case_dir / "masks", case, mapping)
    t0 = time.perf_counter()
    seg = segment(case, model, SegmentOptions(device=args.device, mode=args.mode))
    seconds = time.perf_counter() - t0
    res = evaluate_pair(seg.labels, ref, case.geometry, mapping)
    out = Path(args.out)
    rec = CaseRecord("ircadb1.17", str(out / "prediction.nii.gz"), str(case_dir / "masks"), res,
                     spacing=tuple(case.geometry.spacing))
    cohort = CohortResult([rec], notes=list(mapping.notes))
    table = cohort_table(cohort, notes=[f"Model {model.name} on 3D-IRCADb-01 patient 17 (real CT, never seen in "
                                        f"training); inference mode '{args.mode}' on {seg.device_used}, "
                                        f"{seconds:.1f} s. One case: no SD."])
    write_outputs(cohort, table, out, overwrite=True)
    pred_case = case.copy()
    pred_case.set_labels(seg.labels, label_source=f"model: {model.name}")
    write_label_map(out / "prediction.nii.gz", pred_case, overwrite=True)
    print(table.to_markdown())
    print(f"(written to {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
