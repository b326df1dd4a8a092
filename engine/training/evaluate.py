"""Evaluate a trained model on the held-out test split / external set and write the study's tables.

Predictions come from LiverPlan's own inference (engine.inference.segment, the code the application
runs), scores from engine.evaluation / metrics (the study's suite), the tables in the layout of the
study's Tables 3 and 4: metric rows x structure columns, mean ± SD over cases.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence

from ..errors import LiverPlanError
from ..progress import CancelToken, ProgressCallback, check, no_progress

log = logging.getLogger(__name__)


def dataset_case_paths(raw_dir: Path, set_name: str, case_id: str) -> tuple[Path, Path]:
    """(image, label) files of a case in a LiverPlan-written nnU-Net raw dataset."""
    sub = ("imagesTs", "labelsTs") if set_name == "external" else ("imagesTr", "labelsTr")
    return raw_dir / sub[0] / f"{case_id}_0000.nii.gz", raw_dir / sub[1] / f"{case_id}.nii.gz"


def evaluate_split(model_dir: Path, raw_dir: Path, set_name: str, case_ids: Sequence[str], out_root: Path,
                   device: str = "auto", mode: str = "fast", ref_mapping=None, save_predictions: bool = True,
                   progress: ProgressCallback = no_progress,
                   cancel: Optional[CancelToken] = None) -> tuple[dict[str, Path], str, dict]:
    """Segment each case with the model in ``model_dir``, score it against its reference, write tables.

    Writes ``out_root/<set_name>/``: table.md / table.csv / table.json (study layout), per_case.csv,
    lesions.csv and predictions/<id>.nii.gz. Returns ({"md", "csv", "cases", "dir"}: paths, markdown,
    headline summary {metric: {structure: mean}} for the model card).
    A case that fails is listed in the table's notes, not silently dropped.
    """
    from ..evaluation import CaseRecord, CohortResult, cohort_table, write_outputs
    from ..inference import SegmentOptions, segment
    from ..io import load_case, read_label_map, write_label_map
    from ..models import load_model

    model = load_model(model_dir)
    out = Path(out_root) / set_name
    records: list[CaseRecord] = []
    for i, cid in enumerate(case_ids):
        check(cancel)
        progress(f"Evaluating {set_name} set", i, len(case_ids))
        img, lab = dataset_case_paths(Path(raw_dir), set_name, cid)
        rec = CaseRecord(cid, str(out / "predictions" / f"{cid}.nii.gz"), str(lab))
        t0 = time.perf_counter()
        try:
            case = load_case(img)
            ref = read_label_map(lab, case)     # written by LiverPlan: its own labels (ref_mapping: merges)
            seg = segment(case, model, SegmentOptions(device=device, mode=mode), cancel=cancel)
            rec.result = evaluate_case_arrays(seg.labels, ref, case.geometry, ref_mapping)
            rec.spacing = tuple(case.geometry.spacing)
            if save_predictions:
                pred_case = case.copy()
                pred_case.set_labels(seg.labels, label_source=f"model: {model.name}")
                write_label_map(out / "predictions" / f"{cid}.nii.gz", pred_case, overwrite=True)
        except LiverPlanError as err:
            rec.error = str(err)
            log.warning("%s: %s", cid, err)
        rec.seconds = time.perf_counter() - t0
        records.append(rec)
    progress(f"Evaluating {set_name} set", len(case_ids), len(case_ids))
    cohort = CohortResult(records)
    table = cohort_table(cohort, notes=[f"{set_name} set of {Path(raw_dir).name}: {len(case_ids)} case(s); "
                                        f"model {model.name}; inference mode '{mode}'."])
    from ..evaluation import model_record
    write_outputs(cohort, table, out, overwrite=True, provenance={
        "label": ("Held-out test set" if set_name == "test" else f"{set_name.capitalize()} set"),
        "pred": str(out / "predictions"), "ref": str(Path(raw_dir)), "model": model_record(model.to_provenance()),
        "inference_mode": mode, "device": device,
        # the references are LiverPlan label files; the set's convention decides what is scored
        "plan_mapping": ({"name": getattr(ref_mapping, "name", "external"), "json": ref_mapping.to_json_dict()}
                         if ref_mapping is not None else None)})
    md = table.to_markdown()
    summary: dict = {"n_cases": len(cohort.results), "n_failed": len(cohort.failed)}
    for m in ("dice", "hd95", "lesion_recall", "lesion_recall_ge10mm"):
        if m in table.metrics:
            vals = {st: round(float(table.cells[(m, st)].mean), 4) for st in table.structures
                    if (m, st) not in table.not_applicable and table.cells[(m, st)].n_finite}
            if vals:
                summary[m] = vals
    return ({"md": out / "table.md", "csv": out / "table.csv", "cases": out / "per_case.csv", "dir": out}, md,
            summary)


def evaluate_case_arrays(pred, ref, geometry, ref_mapping=None):
    """Score one prediction against its reference (both LiverPlan uint8 maps on ``geometry``)."""
    from ..evaluation import evaluate_pair

    # evaluate_pair folds merged reference groups (IRCADb's hepatic veins + IVC) itself.
    return evaluate_pair(pred, ref, geometry, ref_mapping)
