"""Measurement reports as files: CSV (spreadsheets) and JSON (machines), written atomically.

CSV: ``<name>.csv`` holds the measurement table (one row per value: key, name, value, units,
description, so every number carries its definition) and ``<name>_lesions.csv`` the lesion table (one
row per lesion; column names carry the units; centroids in LPS mm and voxel indices z, y, x; ``check``: why a
lesion is doubtful). Both start with commented ``#`` lines (:func:`provenance_lines`: the case, what made the
labels, the model and its "not for clinical use", every warning) that spreadsheet and pandas readers skip
(``pandas.read_csv(path, comment="#")``; :func:`read_csv_rows` here).
JSON: one file with the measurements, the lesions, the definitions, the lesion connectivity, the grid
and the provenance of the case.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
from pathlib import Path
from typing import Optional, Sequence, Union

from .io.atomic import write_text_atomic
from .measure import MeasurementReport

PathLike = Union[str, Path]


def lesion_table_path(csv_path: PathLike) -> Path:
    """Where :func:`write_measurements_csv` puts the lesion table for a given measurements CSV."""
    p = Path(csv_path)
    stem = p.name[:-4] if p.name.lower().endswith(".csv") else p.name
    return p.with_name(f"{stem}_lesions.csv")


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    return v


def provenance_lines(report: MeasurementReport, what: str) -> list[str]:
    """The commented lines that open a measurement or lesion CSV: what the JSON carries as provenance and
    warnings, one fact a line (each starts with ``# ``; no line break inside)."""
    p = report.provenance or {}
    one = lambda t: " ".join(str(t).split())        # noqa: E731 - one line, whatever the text held
    # no time of writing here: the same case measured twice gives the same file (the JSON says when)
    out = [f"LiverPlan {what}"]
    if p.get("case_name"):
        out.append(f"Case: {one(p['case_name'])}")
    if p.get("source"):
        out.append(f"CT: {one(p['source'])}")
    labels = one(p.get("label_source") or "none")
    if (p.get("extra") or {}).get("edited"):
        labels += " (edited by hand)"
    out.append(f"Labels: {labels}")
    card = p.get("model_card")
    if isinstance(card, dict) and card:
        tags = []
        if card.get("demo"):
            tags.append("demo model, synthetic data")
        if card.get("demo") or card.get("not_for_clinical_use"):
            tags.append("NOT FOR CLINICAL USE")
        out.append(f"Model: {one(card.get('name', '?'))} {one(card.get('version', ''))}".rstrip()
                   + (f" ({'; '.join(tags)})" if tags else ""))
    for w in list(p.get("warnings") or []) + list(report.warnings):
        out.append(f"Warning: {one(w)}")
    out.append(f"Lesions: {report.connectivity}-connected components of label 5, numbered as in LiverPlan when "
               "the file was written. Lines starting with # are notes, not data.")
    return ["# " + line.replace("\r", " ") for line in out]


def read_csv_rows(path: PathLike) -> list[dict]:
    """The rows of a LiverPlan CSV (its ``#`` note lines skipped), as csv.DictReader gives them."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _csv_text(header: list[str], rows: list[dict], notes: Sequence[str] = ()) -> str:
    buf = io.StringIO()
    for line in notes:
        buf.write(line + "\n")
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in header})
    return buf.getvalue()


def _lesion_rows(report: MeasurementReport, lesion_extra: Optional[dict]) -> list[dict]:
    """The report's lesion rows with the columns of ``lesion_extra`` ({lesion id: {column: value}}) added."""
    rows = report.lesion_rows()
    if lesion_extra:
        for r in rows:
            r.update(lesion_extra.get(r["lesion"], {}))
    return rows


def _extra_columns(lesion_extra: Optional[dict]) -> list[str]:
    cols: list[str] = []
    for d in (lesion_extra or {}).values():
        cols += [k for k in d if k not in cols]
    return cols


def write_measurements_csv(path: PathLike, report: MeasurementReport, overwrite: bool = False,
                           lesion_extra: Optional[dict] = None) -> list[Path]:
    """Write the measurement table to ``path`` and the lesion table beside it; return both paths.

    The lesion table is written even when there are no lesions (header only), so a batch of cases
    always yields the same set of files. ``lesion_extra``: {lesion id: {column: value}} appended to the
    lesion table (the window's review: status against a reference, the model's confidence).
    """
    path = Path(path)
    les_path = lesion_table_path(path)
    if not overwrite:
        # Check both before writing either, so a refused export leaves nothing half-done.
        from .errors import ExportError

        for p in (path, les_path):
            if p.exists():
                raise ExportError(f"{p} already exists; choose another name or allow overwriting.")
    main = _csv_text(["key", "name", "value", "units", "description"], report.to_rows(),
                     provenance_lines(report, "measurements"))
    les_header = ["lesion", "volume_ml", "voxels", "longest_diameter_mm", "axial_diameter_mm",
                  "centroid_x_lps_mm", "centroid_y_lps_mm", "centroid_z_lps_mm", "centroid_z_index",
                  "centroid_y_index", "centroid_x_index", "first_slice_index", "last_slice_index",
                  "first_slice_number", "last_slice_number", "mean_hu", "liver_contact_pct", "check"
                  ] + _extra_columns(lesion_extra)
    les = _csv_text(les_header, _lesion_rows(report, lesion_extra), provenance_lines(report, "lesion table"))
    write_text_atomic(path, main, overwrite=overwrite)
    write_text_atomic(les_path, les, overwrite=overwrite)
    return [path, les_path]


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):       # numpy scalars
        return _json_safe(obj.item())
    return obj


def measurements_json_text(report: MeasurementReport, lesion_extra: Optional[dict] = None) -> str:
    d = report.to_json_dict()
    if lesion_extra:
        for les in d["lesions"]:
            les.update(lesion_extra.get(les["id"], {}))
    d["created"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return json.dumps(_json_safe(d), indent=2, allow_nan=False) + "\n"


def write_measurements_json(path: PathLike, report: MeasurementReport, overwrite: bool = False,
                            lesion_extra: Optional[dict] = None) -> Path:
    """Write the full report (measurements, lesions, definitions, connectivity, provenance) as JSON
    (``lesion_extra`` as in :func:`write_measurements_csv`)."""
    return write_text_atomic(path, measurements_json_text(report, lesion_extra), overwrite=overwrite)


def write_segmentation_outputs(case, result, targets: dict, source: str, overwrite: bool,
                               written: list) -> tuple[MeasurementReport, list[str]]:
    """The files of one segmented case, as `segment` writes them serially and on a cluster: the label map
    (``targets["seg"]``), the measurements (``"csv"`` + its lesion table, ``"json"``), the Couinaud map when the run
    gave one and ``targets`` names a ``"couinaud"`` path, and the provenance (``"prov"``: the case's source, every
    warning, the run's provenance). Each path is appended to ``written`` as soon as it exists, so a caller can remove
    a failed case's files. Returns (the measurements, the warnings: the scan's own, the model's, the measurements',
    each once)."""
    from .inference import apply_result
    from .io import write_label_map
    from .measure import measure

    seg_case = apply_result(case, result)
    report = measure(seg_case)
    warnings: list[str] = []
    for w in list(case.provenance.warnings) + list(result.warnings) + list(report.warnings):
        if w not in warnings:
            warnings.append(w)
    written.append(write_label_map(targets["seg"], seg_case, overwrite=overwrite))
    written += write_measurements_csv(targets["csv"], report, overwrite=overwrite)
    written.append(write_measurements_json(targets["json"], report, overwrite=overwrite))
    if targets.get("couinaud") is not None and "couinaud" in result.extra_maps:
        # the planning segment map (Couinaud 1-8, 0 outside the liver) in the CT's own geometry
        written.append(write_label_map(targets["couinaud"], seg_case, labels=result.extra_maps["couinaud"],
                                       overwrite=overwrite))
    if targets.get("uncertainty") is not None:
        if "uncertainty" in result.extra_maps:
            # the model's doubt, round(255 (1 - max probability)), uint8 (engine.review.uncertainty)
            written.append(write_label_map(targets["uncertainty"], seg_case, labels=result.extra_maps["uncertainty"],
                                           overwrite=overwrite))
        else:
            note = result.provenance.get("uncertainty", "no uncertainty for this run")
            if note not in warnings:
                warnings.append(note[0].upper() + note[1:] + "; no uncertainty map was written.")
    written.append(write_text_atomic(targets["prov"], json.dumps(
        {"case": source, "warnings": warnings, "provenance": result.provenance}, indent=2, default=str) + "\n",
        overwrite=overwrite))
    return report, warnings
