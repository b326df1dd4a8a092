"""Compare models side by side on the same cases: the 10 held-out phantoms of the demo model's split (v1, as
the model was trained, and the same seeds as phantoms v2) and the real IRCADb 1.17 case (fast mode; measuring
only, never used for training or tuning).

    .venv/bin/python benchmarks/evaluate_phantoms_v2.py --model bundled=resources/models/demo \
        --model candidate=/path/to/model [--sets v1 v2 ircadb] [--out DIR] [--device cpu]

Prints one table per set (Dice per structure, liver precision, lesion recall, false lesions) with the models
as rows, and writes them as JSON to --out. The held-out seeds are the 20 % test split (seed 0) of phantoms
1000-1049 that benchmarks/train_demo_model.sh trains on (the same split for the v2 training set).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STRUCTS = ("liver", "portal_vein", "hepatic_veins", "ivc", "crlm")


def held_out_seeds(first: int = 1000, n: int = 50, seed: int = 0) -> list[int]:
    from engine.training.dataset import seeded_split

    ids = [f"phantom{first + i:04d}" for i in range(n)]
    _, test = seeded_split(ids, 0.2, seed)
    return [int(t.replace("phantom", "")) for t in test]


def _scores(pred, ref, geometry, mapping=None) -> dict:
    from engine.evaluation import evaluate_pair

    res = evaluate_pair(pred, ref, geometry, mapping)
    out = {}
    for st, m in res.items():
        out[st] = {k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v)
                   for k, v in m.items() if isinstance(v, (int, float, np.floating, np.integer))}
    return out


def _precision(pred, ref, lab_pred, lab_ref) -> float:
    p = np.isin(pred, lab_pred)
    r = np.isin(ref, lab_ref)
    return float((p & r).sum() / max(p.sum(), 1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--sets", nargs="+", default=["v1", "v2", "ircadb"], choices=("v1", "v2", "ircadb"))
    ap.add_argument("--case", default=str(REPO.parent / "shared" / "data" / "real" / "3dircadb1.17"))
    ap.add_argument("--out", default=str(REPO / "scratch" / "eval_phantoms_v2"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=10, help="held-out phantoms per set (default all 10)")
    args = ap.parse_args()

    from engine.inference import SegmentOptions, segment
    from engine.models import load_model
    from engine.phantom import make_phantom
    from engine.phantom_v2 import make_phantom_v2

    models = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        models[name] = load_model(path)
    seeds = held_out_seeds()[: args.n]
    results: dict = {}
    for set_name in args.sets:
        rows = {}
        if set_name in ("v1", "v2"):
            make = make_phantom if set_name == "v1" else make_phantom_v2
            cases = [make(seed=s, shape=(96, 128, 128), spacing=(2.5, 2.5, 2.5)) for s in seeds]
            mapping = None
        else:
            from engine.io import load_case, read_label_map
            from engine.labelmap import LabelMapping

            case_dir = Path(args.case)
            if not (case_dir / "PATIENT_DICOM.nii.gz").is_file():
                print(f"IRCADb case not found at {case_dir}; skipped.")
                continue
            mapping = LabelMapping.preset("ircadb")
            c = load_case(case_dir / "PATIENT_DICOM.nii.gz")
            c.set_labels(read_label_map(case_dir / "masks", c, mapping))
            cases = [c]
        for name, model in models.items():
            per_case = []
            t0 = time.perf_counter()
            for case in cases:
                seg = segment(case, model, SegmentOptions(device=args.device, mode="fast"))
                sc = _scores(seg.labels, case.labels, case.geometry, mapping)
                sc["_liver_precision"] = _precision(seg.labels, case.labels, [1, 2, 3, 5], [1, 2, 3, 5])
                sc["_liver_ml"] = float(np.isin(seg.labels, [1, 2, 3, 5]).sum() * case.geometry.voxel_volume_ml)
                per_case.append(sc)
            keys = [k for k in per_case[0] if not k.startswith("_")]
            row = {}
            for st in keys:
                for metric in (("dice", "precision") if st == "liver" else
                               ("dice", "lesion_recall", "lesion_precision", "lesion_false") if st == "crlm" else
                               ("dice",)):
                    vals = [pc[st].get(metric) for pc in per_case if pc[st].get(metric) is not None]
                    vals = [v for v in vals if np.isfinite(v)]
                    if vals:
                        row[f"{st}.{metric}"] = round(float(np.mean(vals)), 4)
            row["liver.precision(whole liver incl. vessels, lesions)"] = round(
                float(np.mean([pc["_liver_precision"] for pc in per_case])), 4)
            row["predicted liver mL"] = round(float(np.mean([pc["_liver_ml"] for pc in per_case])), 1)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows[name] = row
            if set_name == "ircadb":
                row["_all_metrics"] = per_case[0]
        results[set_name] = rows
        print(f"\n== {set_name} ({'held-out seeds ' + str(seeds) if set_name != 'ircadb' else 'IRCADb 1.17, fast'})")
        cols = [k for k in next(iter(rows.values())) if not k.startswith("_")]
        print("| model | " + " | ".join(cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for name, row in rows.items():
            print(f"| {name} | " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"(written to {out / 'comparison.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
