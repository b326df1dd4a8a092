"""Cohort evaluation: pair prediction and reference files, read them, run the study's metric suite
(:mod:`metrics`) per case and structure, and build the study's table (metric rows × structure columns,
mean ± SD).

Python API (used by the CLI, the GUI and the training pipeline):

* :func:`evaluate_pair` — one case from arrays: LiverPlan prediction labels vs reference labels on one grid.
* :func:`evaluate_files` — one case from files (prediction file; reference file, .seg.nrrd or mask folder).
* :func:`pair_cases` — match files of two folders by case name.
* :func:`evaluate_cohort` — all pairs, with progress/cancel; failures are recorded, not fatal.
* :func:`cohort_table` — the aggregated :class:`metrics.cohort.Table` (``to_markdown/to_csv/to_json``).
* :func:`per_case_csv` / :func:`lesions_csv` — long per-case outputs.

References with other label conventions go through :class:`engine.labelmap.LabelMapping`. A structure the
reference convention lacks is reported as "not in reference" (never as zeros). A merged reference group
(IRCADb's ``venoussystem`` = hepatic veins + IVC) is compared against the UNION of the predicted members and
reported as its own column, e.g. ``hepatic_veins+ivc``; its members are then not scored on their own.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

import metrics
from metrics import policy
from metrics.cohort import Table
from metrics.suite import ALL_METRICS, CaseResult

from .errors import GeometryMismatchError, InputError, LiverPlanError
from .geometry import Geometry
from .labelmap import LabelMapping, looks_like_ircadb
from .labels import BY_KEY, BY_LABEL, STRUCTURES, Label
from .progress import CancelToken, ProgressCallback, check

log = logging.getLogger(__name__)

#: File endings read as label maps (compound first).
LABEL_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Name endings stripped when matching case names (nnU-Net channel ids, common output suffixes).
CASE_SUFFIXES = ("_0000", "_ct", "_image", "_seg", "_segmentation", "_pred", "_prediction", "_labels", "_label", "_gt", "_ref",
                 "_reference", "_mask", "_masks", "-label", "-seg", ".seg")


# ------------------------------------------------------------------------------------------------
# structures under a reference convention
# ------------------------------------------------------------------------------------------------
@dataclass
class StructurePlan:
    """Which columns are evaluated for a reference convention.

    structures: {column key: (predicted labels, reference labels)} handed to metrics.evaluate_case.
    not_in_reference: column keys reported as not evaluable (with notes why).
    notes: plain-language remarks for the table.
    """

    structures: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
    not_in_reference: list[str]
    notes: list[str] = field(default_factory=list)


#: How "vessel, unassigned" (label 6) in a prediction is scored (said in the table's notes when present).
UNASSIGNED_POLICY = ("Vessel voxels the prediction left 'vessel, unassigned' count as neither portal vein nor "
                     "hepatic veins: where the reference has either, they are missed (false negatives)")


def structure_plan(ref_mapping: Optional[LabelMapping] = None) -> StructurePlan:
    """Columns to evaluate when the reference uses ``ref_mapping`` (None: LiverPlan's own five labels)."""
    if ref_mapping is None:
        return StructurePlan({s.key: ((s.label,), (s.label,)) for s in STRUCTURES}, [])
    missing = set(ref_mapping.missing_structures())
    structures: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    not_in_ref: list[str] = []
    notes = list(ref_mapping.notes)
    merged_members = {lab for group in ref_mapping.merged_groups.values() for lab in group}
    for s in STRUCTURES:
        if s.label in merged_members or s.key in missing:
            not_in_ref.append(s.key)
            continue
        structures[s.key] = ((s.label,), (s.label,))
    for written, group in ref_mapping.merged_groups.items():
        key = "+".join(BY_LABEL[g].key for g in group)
        structures[key] = (tuple(group), (int(written),))
        notes.append(f"Column '{key}': the reference merges {', '.join(BY_LABEL[g].name for g in group)} into "
                     f"one mask, so it is compared with the union of the predicted "
                     f"{' and '.join(BY_LABEL[g].name.lower() for g in group)}; these structures are not "
                     "scored on their own.")
    absent = [k for k in not_in_ref if k not in {BY_LABEL[g].key for g in merged_members}]
    if absent:
        notes.append("Not in the reference (not evaluated, not counted as zero): "
                     + ", ".join(BY_KEY[k].name for k in absent) + ".")
    # keep LiverPlan's column order, merged groups where their first member would be
    order = []
    for s in STRUCTURES:
        if s.key in structures:
            order.append(s.key)
        for key, (pl, _) in structures.items():
            if len(pl) > 1 and pl[0] == s.label and key not in order:
                order.append(key)
    return StructurePlan({k: structures[k] for k in order}, not_in_ref, notes)


# ------------------------------------------------------------------------------------------------
# one case
# ------------------------------------------------------------------------------------------------
def evaluate_pair(pred_labels: np.ndarray, ref_labels: np.ndarray, geometry: Geometry,
                  ref_mapping: Optional[LabelMapping] = None, *, metrics_wanted: Optional[Sequence[str]] = None,
                  lesion_size_thresholds_mm: Sequence[float] = (10.0,), lesion_min_iou: float = 0.1,
                  progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> CaseResult:
    """Evaluate a LiverPlan prediction label map against a reference label map on the same grid.

    pred_labels, ref_labels: uint8 (z, y, x) LiverPlan label maps (the reference already mapped to
    LiverPlan values, e.g. by engine.io.read_label_map). geometry: their grid (spacing (z, y, x) mm).
    ref_mapping: the reference's convention (decides merged groups and structures it lacks).
    Returns metrics.suite.CaseResult: {structure: {metric: value}} with ``status`` and ``notes``.
    Raises GeometryMismatchError when the arrays differ in shape.
    """
    pred = np.asarray(pred_labels)
    ref = np.asarray(ref_labels)
    if pred.shape != ref.shape or tuple(pred.shape) != tuple(geometry.shape):
        raise GeometryMismatchError(
            f"The prediction ({_xyz(pred.shape)} voxels) and the reference ({_xyz(ref.shape)} voxels) are not on "
            f"the same grid ({_xyz(geometry.shape)} expected); they cannot be compared voxel by voxel.")
    plan = structure_plan(ref_mapping)
    labels: dict[str, Any] = dict(plan.structures)
    for k in plan.not_in_reference:
        labels[k] = BY_KEY[k].label
    # LiverPlan's column order; a merged group right after its first member
    ordered: dict[str, Any] = {}
    for s in STRUCTURES:
        if s.key in labels:
            ordered[s.key] = labels[s.key]
        for k, (pl, _) in plan.structures.items():
            if len(pl) > 1 and pl[0] == s.label:
                ordered[k] = labels[k]
    for k, v in labels.items():
        ordered.setdefault(k, v)
    check(cancel)
    result = metrics.evaluate_case(pred, ref, geometry.spacing, ordered, metrics=metrics_wanted,
                                   not_in_reference=plan.not_in_reference,
                                   lesion_size_thresholds_mm=lesion_size_thresholds_mm,
                                   lesion_min_iou=lesion_min_iou, progress=progress, cancel=cancel)
    result.table_notes = list(plan.notes)
    n_unassigned = int(np.count_nonzero(pred == Label.VESSEL_UNASSIGNED))
    if n_unassigned:
        result.table_notes.append(UNASSIGNED_POLICY + f" ({n_unassigned * geometry.voxel_volume_ml:.1f} mL here).")
    return result


def _xyz(shape) -> str:
    return " x ".join(str(int(s)) for s in tuple(shape)[::-1])


def case_name(path: Union[str, Path]) -> str:
    """Case id from a file or folder name: extension and common suffixes (_0000, _seg, _pred ...) removed."""
    name = Path(path).name
    low = name.lower()
    for ext in LABEL_EXTENSIONS + (".dcm",):
        if low.endswith(ext):
            name = name[: -len(ext)]
            break
    changed = True
    while changed:
        changed = False
        for suf in CASE_SUFFIXES:
            if name.lower().endswith(suf) and len(name) > len(suf):
                name = name[: -len(suf)]
                changed = True
    return name


def _is_label_file(p: Path) -> bool:
    if p.name.startswith(".") or not p.is_file():
        return False
    low = p.name.lower()
    if low.endswith(LABEL_EXTENSIONS):
        return not low.endswith(".raw")
    if low.endswith(".dcm") or "." not in low:
        # a DICOM SEG (not a CT slice: those are images, never label maps)
        from .io.dicomseg import is_dicom_seg_file
        return is_dicom_seg_file(p)
    return False


def _mask_folder(p: Path) -> Optional[Path]:
    """The folder of binary masks a reference case folder stands for (itself or its 'masks' subfolder)."""
    if not p.is_dir():
        return None
    if any(_is_label_file(f) for f in p.iterdir()):
        return p
    for sub in p.iterdir():
        if sub.is_dir() and sub.name.lower() in ("masks", "mask", "labels", "segmentations") \
                and any(_is_label_file(f) for f in sub.iterdir()):
            return sub
    return None


#: Name endings of CT images written beside their label maps (LiverPlan's phantoms, nnU-Net's channel files).
IMAGE_SUFFIXES = ("_ct", "_image", "_0000")


def _looks_like_image_name(p: Path) -> bool:
    low = p.name.lower()
    for ext in LABEL_EXTENSIONS:
        if low.endswith(ext):
            low = low[: -len(ext)]
            break
    return low.endswith(IMAGE_SUFFIXES)


def _entries(folder: Path, allow_folders: bool) -> dict[str, Path]:
    out: dict[str, Path] = {}
    # Label maps first, so that a CT image stored beside its labels (case_ct.nii.gz + case_labels.nii.gz)
    # never stands in for the labels; a lone file named like an image is still taken.
    files = sorted(folder.iterdir(), key=lambda f: (_looks_like_image_name(f), f.name))
    for p in files:
        if p.name.startswith("."):
            continue
        if _is_label_file(p):
            out.setdefault(case_name(p), p)
        elif allow_folders and p.is_dir():
            m = _mask_folder(p)
            if m is not None:
                out.setdefault(case_name(p), m)
    return out


@dataclass
class Pairing:
    """Result of matching prediction and reference entries by case name."""

    pairs: list[tuple[str, Path, Path]]
    only_pred: list[str]
    only_ref: list[str]


def pair_cases(pred: Union[str, Path], ref: Union[str, Path]) -> Pairing:
    """Match predictions to references by case name (file name minus extension and suffixes such as _0000).

    pred: a label file or a folder of label files. ref: a label file / mask folder (one case) or a folder
    of them (NIfTI, NRRD, .seg.nrrd, MHA, DICOM SEG; a reference case may be a folder of binary masks,
    IRCADb style).
    """
    pp, rp = Path(pred).expanduser(), Path(ref).expanduser()
    if not pp.exists():
        raise InputError(f"The prediction path {pp} does not exist.")
    if not rp.exists():
        raise InputError(f"The reference path {rp} does not exist.")
    if pp.is_file():
        name = case_name(pp)
        if rp.is_file():
            return Pairing([(name, pp, rp)], [], [])
        entries = _entries(rp, True)
        # a folder of references holding this case, else the folder itself is the case's mask folder
        rcase = entries.get(name) or _mask_folder(rp)
        if rcase is None:
            raise InputError(f"No reference for {pp.name} in {rp} (looked for a file or mask folder named "
                             f"'{name}').")
        return Pairing([(name, pp, rcase)], [], [])
    if rp.is_file():
        raise InputError(f"The prediction {pp} is a folder but the reference {rp} is a single file; give a "
                         "reference folder too.")
    preds = _entries(pp, allow_folders=False)
    refs = _entries(rp, allow_folders=True)
    if not refs and _mask_folder(rp) is not None and len(preds) == 1:
        name = next(iter(preds))
        refs = {name: _mask_folder(rp)}
    if not preds:
        raise InputError(f"The prediction folder {pp} holds no label maps (.nii.gz, .nii, .nrrd, .seg.nrrd, .mha).")
    pairs = [(n, preds[n], refs[n]) for n in preds if n in refs]
    if not pairs:
        raise InputError(f"No prediction in {pp} has a reference with the same case name in {rp} "
                         f"(predictions: {', '.join(list(preds)[:5])}; references: {', '.join(list(refs)[:5])}).")
    return Pairing(pairs, sorted(set(preds) - set(refs)), sorted(set(refs) - set(preds)))


def _geometry_of(path: Path) -> Geometry:
    """Canonical (LPS) grid of a label file or of the first mask in a folder."""
    from .case import to_canonical
    from .io.images import read_image_file

    p = path
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if _is_label_file(f))
        if not files:
            raise InputError(f"The folder {p} holds no mask files.")
        p = files[0]
    from .io.dicomseg import is_dicom_seg_file
    if is_dicom_seg_file(p):
        raise InputError(f"{p.name} is a DICOM SEG: it can be the reference, but a prediction must be a label "
                         "map file (NIfTI, NRRD, .seg.nrrd, MHA) whose grid the SEG is placed on.")
    if p.name.lower().endswith(".seg.nrrd"):
        from .io.segnrrd import read_seg_nrrd
        layers, _, _ = read_seg_nrrd(p)
        return Geometry.from_sitk(to_canonical(layers[0]))
    img = read_image_file(p)
    if img.GetDimension() != 3:
        raise InputError(f"{p.name} is not a 3D label map ({img.GetDimension()}D).")
    return Geometry.from_sitk(to_canonical(img))


def _segments(path: Path) -> Optional[list[tuple[str, int]]]:
    """(name, value) of each segment of a 3D Slicer ``.seg.nrrd`` (its label value) or a DICOM SEG (its
    segment number), from the headers only; None for other files."""
    low = path.name.lower()
    try:
        if low.endswith(".nrrd"):
            import nrrd

            from .io.segnrrd import header_segments, is_seg_nrrd_header
            header = nrrd.read_header(str(path))
            if not is_seg_nrrd_header(header):
                return None
            return [(sg.name, sg.label_value) for sg in header_segments(header)]
        from .io.dicomseg import is_dicom_seg_file
        if is_dicom_seg_file(path):
            import pydicom
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            return [(str(sd.get("SegmentLabel", "")), int(sd.get("SegmentNumber", 0))) for sd in ds.SegmentSequence]
    except Exception:  # noqa: BLE001 - an unreadable header is reported when the file itself is read
        return None
    return None


def _without(mapping: LabelMapping, absent: list[str], note: str) -> LabelMapping:
    """``mapping`` without the structures ``absent`` (so they are "not in reference"), with ``note``."""
    merged = {w: g for w, g in mapping.merged_groups.items() if BY_LABEL[w].key not in absent}
    out = LabelMapping({k: v for k, v in mapping.sources.items() if k not in absent}, merged,
                       list(mapping.notes), name=mapping.name, ignore=list(mapping.ignore))
    out.notes.append(note)
    return out


def reference_mapping_for(ref_path: Path, mapping: Optional[LabelMapping]) -> Optional[LabelMapping]:
    """The mapping that will read ``ref_path``: the given one, or the IRCADb preset for an IRCADb folder.

    For a folder of masks, a structure the mapping names but for which the folder holds no mask file
    (e.g. an IRCADb case without ``portalvein.nii.gz``) is dropped from the mapping, so that it is reported
    "not in reference" instead of scored against an empty reference (and said in the notes)."""
    if ref_path.is_dir():
        names = [case_name(f) for f in ref_path.iterdir() if _is_label_file(f)]
        if mapping is None and looks_like_ircadb(names):
            mapping = LabelMapping.preset("ircadb")
        if mapping is not None and names:
            absent = [k for k in mapping.sources
                      if not any(mapping.structure_for_foreign_name(n) == BY_KEY[k].label for n in names)]
            if absent and len(absent) < len(mapping.sources):
                mapping = _without(mapping, absent, "The reference folder has no mask for: "
                                   + ", ".join(BY_KEY[k].name for k in absent) + " (not evaluated).")
    elif ref_path.is_file():
        # A segmentation file lists the structures it annotates (a liver-only .seg.nrrd or DICOM SEG): the ones
        # it has no segment for are "not in reference", not an empty reference scored as zeros. (A segment
        # that is there but empty, e.g. LiverPlan's own .seg.nrrd lists all five, is an annotation.)
        segs = _segments(ref_path)
        if segs:
            from .labels import structure_for_name
            if mapping is None:
                found: dict[str, list[str]] = {}
                for n, _v in segs:
                    st = structure_for_name(n)
                    if st is not None:
                        found.setdefault(st.key, []).append(n)
                absent = [k for k in BY_KEY if k not in found]
                if found and absent:
                    mapping = LabelMapping(found, name=f"segments of {ref_path.name}")
                    mapping.notes.append(f"{ref_path.name} has no segment for: "
                                         + ", ".join(BY_KEY[k].name for k in absent) + " (not evaluated).")
            else:
                # as the readers apply a mapping to segments: by name, else by value (label value / number)
                present = set()
                from .io.labelmaps import _value_lookup
                for n, v in segs:
                    lab = mapping.structure_for_foreign_name(n)
                    if lab is None:
                        lab = _value_lookup(mapping, v)
                    if lab is not None:
                        present.add(lab)
                absent = [k for k in mapping.sources if BY_KEY[k].label not in present]
                if present and absent:
                    mapping = _without(mapping, absent, f"{ref_path.name} has no segment for: "
                                       + ", ".join(BY_KEY[k].name for k in absent) + " (not evaluated).")
    return mapping


def read_reference(ref_path: Union[str, Path], target, mapping: Optional[LabelMapping] = None,
                   notes: Optional[list[str]] = None) -> tuple[np.ndarray, Optional[LabelMapping]]:
    """A reference label map on ``target`` (a Geometry or Case) and the mapping it was read with: the given
    one, or what :func:`reference_mapping_for` makes of the folder or file (structures it does not annotate
    are then "not in reference")."""
    from .io import read_label_map

    rmap = reference_mapping_for(Path(ref_path), mapping)
    return read_label_map(ref_path, target, rmap, notes=notes), rmap


def read_pair(pred_path: Union[str, Path], ref_path: Union[str, Path], pred_mapping: Optional[LabelMapping] = None,
              ref_mapping: Optional[LabelMapping] = None, pred_notes: Optional[list[str]] = None,
              ref_notes: Optional[list[str]] = None) -> tuple[np.ndarray, np.ndarray, Geometry, Optional[LabelMapping]]:
    """Read a prediction and its reference onto the prediction's canonical grid, as :func:`evaluate_files`
    compares them (also what a metric report re-reads to picture a case).

    Returns (prediction uint8 (z, y, x), reference uint8 (z, y, x), geometry, reference mapping used).
    Raises GeometryMismatchError when the reference lies on another grid.
    """
    from .io import read_label_map

    pp, rp = Path(pred_path), Path(ref_path)
    geometry = _geometry_of(pp)
    pred = read_label_map(pp, geometry, pred_mapping, notes=pred_notes)
    try:
        ref, rmap = read_reference(rp, geometry, ref_mapping, notes=ref_notes)
    except GeometryMismatchError as err:
        raise GeometryMismatchError(
            f"The reference {rp.name} and the prediction {pp.name} are not on the same voxel grid, so they "
            f"cannot be compared voxel by voxel (details: {err})") from None
    return pred, ref, geometry, rmap


def evaluate_files(pred_path: Union[str, Path], ref_path: Union[str, Path],
                   pred_mapping: Optional[LabelMapping] = None, ref_mapping: Optional[LabelMapping] = None,
                   **kwargs) -> tuple[CaseResult, Geometry, Optional[LabelMapping]]:
    """Read one prediction and one reference (file, .seg.nrrd or mask folder) and evaluate them.

    The prediction's grid is the reference grid: a reference on another grid raises GeometryMismatchError.
    Returns (result, geometry, the reference mapping used).
    """
    from .io.labelmaps import UNMAPPED_NOTE

    pp, rp = Path(pred_path), Path(ref_path)
    pred_notes: list[str] = []
    ref_notes: list[str] = []
    pred, ref, geometry, rmap = read_pair(pp, rp, pred_mapping, ref_mapping, pred_notes, ref_notes)
    result = evaluate_pair(pred, ref, geometry, rmap, **kwargs)
    # label values the mapping did not cover were read as background: said, not silently scored
    result.table_notes = list(getattr(result, "table_notes", [])) + [
        f"{path.name} ({what}): {n}"
        for what, path, ns in (("prediction", pp, pred_notes), ("reference", rp, ref_notes))
        for n in ns if n.startswith(UNMAPPED_NOTE)]
    return result, geometry, rmap


# ------------------------------------------------------------------------------------------------
# a cohort
# ------------------------------------------------------------------------------------------------
@dataclass
class CaseRecord:
    """One evaluated (or failed) case."""

    name: str
    pred_path: str
    ref_path: str
    result: Optional[CaseResult] = None
    error: str = ""
    seconds: float = 0.0
    spacing: Optional[tuple[float, float, float]] = None


@dataclass
class CohortResult:
    """All cases of a cohort run plus what could not be paired."""

    cases: list[CaseRecord]
    only_pred: list[str] = field(default_factory=list)
    only_ref: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def results(self) -> list[CaseResult]:
        return [c.result for c in self.cases if c.result is not None]

    @property
    def failed(self) -> list[CaseRecord]:
        return [c for c in self.cases if c.result is None]


def evaluate_cohort(pred: Union[str, Path], ref: Union[str, Path], pred_mapping: Optional[LabelMapping] = None,
                    ref_mapping: Optional[LabelMapping] = None, progress: Optional[ProgressCallback] = None,
                    cancel: Optional[CancelToken] = None, **kwargs) -> CohortResult:
    """Evaluate every paired case. A case that cannot be read or is on another grid is recorded with its
    error message and skipped; the rest go on."""
    pairing = pair_cases(pred, ref)
    records: list[CaseRecord] = []
    notes: list[str] = []
    n = len(pairing.pairs)
    for i, (name, pp, rp) in enumerate(pairing.pairs):
        check(cancel)
        if progress:
            progress("Evaluating cases", i, n)
        t0 = time.perf_counter()
        rec = CaseRecord(name, str(pp), str(rp))
        try:
            res, geom, rmap = evaluate_files(pp, rp, pred_mapping, ref_mapping, cancel=cancel, **kwargs)
            rec.result, rec.spacing = res, tuple(geom.spacing)
            for note in structure_plan(rmap).notes:
                if note not in notes:
                    notes.append(note)
        except LiverPlanError as err:
            rec.error = str(err)
            log.warning("case %s skipped: %s", name, err)
        except (ValueError, MemoryError, OSError) as err:  # unexpected data problems: report, go on
            rec.error = f"{type(err).__name__}: {err}"
            log.warning("case %s failed: %s", name, rec.error)
        rec.seconds = time.perf_counter() - t0
        records.append(rec)
    if progress:
        progress("Evaluating cases", n, n)
    return CohortResult(records, pairing.only_pred, pairing.only_ref, notes)


def cohort_table(results: Union[CohortResult, Iterable[Mapping]], metrics_rows: Optional[Sequence[str]] = None,
                 inf_penalty: Optional[float] = None, notes: Sequence[str] = ()) -> Table:
    """The study's table (metric rows × structure columns, mean ± SD) of per-case results.

    results: a CohortResult or per-case metrics.CaseResult / {structure: {metric: value}} mappings.
    inf_penalty: replace inf distances (missed structures) by this value before averaging.
    """
    all_notes = list(notes)
    if isinstance(results, CohortResult):
        all_notes = list(results.notes) + all_notes
        if results.failed:
            all_notes.append(f"{len(results.failed)} case(s) could not be evaluated and are not in the table: "
                             + "; ".join(f"{c.name} ({c.error})" for c in results.failed))
        results = results.results
    results = list(results)
    for r in results:   # how each reference convention was mapped (merged groups, missing structures)
        for note in getattr(r, "table_notes", []):
            if note not in all_notes:
                all_notes.append(note)
    structures: list[str] = []
    for r in results:
        for k in r:
            if k not in structures:
                structures.append(k)
    # columns that no case could evaluate are dropped (say so in the notes)
    evaluable = [s for s in structures
                 if any(getattr(r, "status", {}).get(s) != policy.NOT_IN_REFERENCE for r in results if s in r)]
    return metrics.cohort_table(results, metrics=metrics_rows, structures=evaluable, inf_penalty=inf_penalty,
                                notes=all_notes)


# ------------------------------------------------------------------------------------------------
# per-case outputs
# ------------------------------------------------------------------------------------------------
def per_case_csv(cohort: Union[CohortResult, Sequence[tuple[str, CaseResult]]],
                 metric_keys: Optional[Sequence[str]] = None) -> str:
    """One row per (case, structure): status, every metric, notes. Failed cases get one 'error' row."""
    if isinstance(cohort, CohortResult):
        items = [(c.name, c.result, c.error) for c in cohort.cases]
    else:
        items = [(n, r, "") for n, r in cohort]
    keys: list[str] = list(metric_keys) if metric_keys else []
    if not keys:
        seen: list[str] = []
        for _, r, _ in items:
            if r is None:
                continue
            for s in r:
                for m in r[s]:
                    if m not in seen:
                        seen.append(m)
        first = [m for m in ALL_METRICS if m in seen]
        keys = first + [m for m in seen if m not in first]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case", "structure", "status"] + keys + ["notes"])
    for name, r, err in items:
        if r is None:
            w.writerow([name, "", "error"] + [""] * len(keys) + [err])
            continue
        for s, vals in r.items():
            w.writerow([name, s, r.status.get(s, "")] + [_csv_num(vals.get(m)) for m in keys]
                       + [" ".join(r.notes.get(s, []))])
    return buf.getvalue()


def lesions_csv(cohort: CohortResult) -> str:
    """One row per reference lesion: case, lesion id, volume (mL), longest diameter (mm), matched
    predicted lesion id (0 = missed), IoU, Dice; plus one row per case with the false-lesion count."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case", "structure", "ref_lesion", "volume_ml", "diameter_mm", "pred_lesion", "detected", "iou",
                "dice"])
    for c in cohort.cases:
        if c.result is None:
            continue
        for s, det in c.result.lesions.items():
            for m in det.matches:
                w.writerow([c.name, s, m.ref_id, f"{m.ref_volume_ml:.4f}", f"{m.ref_diameter_mm:.2f}", m.pred_id,
                            int(m.pred_id > 0), f"{m.iou:.4f}", f"{m.dice:.4f}"])
            w.writerow([c.name, s, "false lesions", "", "", det.false, "", "", ""])
    return buf.getvalue()


def _csv_num(v) -> str:
    if v is None:
        return ""
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf"
    return repr(round(v, 6)) if not float(v).is_integer() else str(int(v))


OUTPUT_FILES = ("per_case.csv", "lesions.csv", "table.csv", "table.md", "table.json", "evaluation.json")
#: What ``evaluation.json`` holds (read back by engine.metric_report): format version of that file.
MANIFEST_VERSION = 1


def check_outputs(out_dir: Union[str, Path], overwrite: bool = False) -> None:
    """Refuse, before any metric is computed, an ``out_dir`` that already holds evaluation files (unless
    ``overwrite``) or that is a file."""
    from .errors import ExportError

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; --out must be a folder.")
    there = [n for n in OUTPUT_FILES if (out / n).exists()]
    if there and not overwrite:
        raise ExportError(f"{out} already holds an evaluation ({', '.join(there)}); use --overwrite to replace it "
                          "or choose another --out. Nothing was computed.")


def liverplan_version() -> str:
    """LiverPlan's version (engine.about's: the bundle's build_info.json, else the source tree's pyproject;
    the frozen bundle carries no 'liverplan' package metadata)."""
    from .about import liverplan_version as version

    return version()


def model_record(model_provenance: Mapping) -> dict:
    """A model's record for an evaluation manifest: its card's fields (name, version, training data ...)
    and where it came from, from ``ModelInfo.to_provenance()``."""
    out = dict(model_provenance.get("card") or {})
    out.update({k: model_provenance[k] for k in ("path", "configuration", "folds", "checkpoint", "label_mapping")
                if k in model_provenance})
    return out


def model_of_predictions(pred: Union[str, Path]) -> Optional[dict]:
    """The model that made the predictions, from LiverPlan's ``<case>_segmentation.json`` records written
    beside them by ``segment`` (None when there are none): the first record's model card, and the names
    of every model seen when they differ."""
    import json

    p = Path(pred).expanduser()
    folder = p if p.is_dir() else p.parent
    models: list[dict] = []
    for f in sorted(folder.glob("*_segmentation.json"))[:500]:
        try:
            prov = json.loads(f.read_text(encoding="utf-8")).get("provenance", {})
        except (OSError, ValueError, AttributeError):
            continue
        for m in prov.get("models", []) if isinstance(prov, dict) else []:
            if isinstance(m, dict) and m not in models:
                models.append(m)
    if not models:
        return None
    out = model_record(models[0])
    names = sorted({str((m.get("card") or {}).get("name", "")) for m in models if (m.get("card") or {}).get("name")})
    if len(names) > 1:
        out["note"] = "the predictions were made by several models: " + ", ".join(names)
    return out


def evaluation_manifest(cohort: CohortResult, provenance: Optional[Mapping] = None) -> dict:
    """What an evaluation folder needs to be reported later: where each case's files are (to picture it),
    its grid, the label mappings, the model that made the predictions, versions and date."""
    import datetime as _dt

    prov = dict(provenance or {})
    return {
        "liverplan_evaluation": MANIFEST_VERSION,
        "liverplan_version": liverplan_version(),
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        **prov,
        "cases": [{"name": c.name, "pred_path": str(Path(c.pred_path).resolve()) if c.pred_path else "",
                   "ref_path": str(Path(c.ref_path).resolve()) if c.ref_path else "",
                   "spacing_zyx_mm": list(c.spacing) if c.spacing else None, "error": c.error,
                   "seconds": round(c.seconds, 3)} for c in cohort.cases],
        "only_pred": list(cohort.only_pred), "only_ref": list(cohort.only_ref),
        "notes": list(cohort.notes),
    }


def write_outputs(cohort: CohortResult, table: Table, out_dir: Union[str, Path], overwrite: bool = False,
                  provenance: Optional[Mapping] = None) -> list[Path]:
    """Write per_case.csv, lesions.csv, table.csv, table.md, table.json and evaluation.json (the manifest
    a metric report reads: case files, mappings, model, versions; see :func:`evaluation_manifest`) into
    ``out_dir`` (atomic writes)."""
    import json

    from .io.atomic import write_text_atomic
    from .report import _json_safe

    out = Path(out_dir).expanduser()
    written = []
    manifest = json.dumps(_json_safe(evaluation_manifest(cohort, provenance)), indent=2, ensure_ascii=False)
    for name, text in (("per_case.csv", per_case_csv(cohort)), ("lesions.csv", lesions_csv(cohort)),
                       ("table.csv", table.to_csv()), ("table.md", table.to_markdown()),
                       ("table.json", table.to_json()), ("evaluation.json", manifest + "\n")):
        written.append(write_text_atomic(out / name, text, overwrite=overwrite))
    return written




def evaluation_table(result, study_only: bool = False) -> tuple[list[str], list[str], list[list[str]]]:
    """(metric names, structure names, formatted values) of a metrics.CaseResult: metric rows x structure
    columns, the study's layout, with the display names and units of metrics.METRIC_INFO and the status
    words of metrics.STATUS_WORDS. ``study_only``: the study's suite and lesion detection, without the
    other distance variants (pooled / seg-metrics / surface HD95, Hausdorff, ASSD) and Betti 2."""
    from metrics import ALL_METRICS, COUNT_METRICS, METRIC_INFO, STATUS_WORDS, STUDY_METRICS

    from .labels import BY_KEY

    structures = list(result.keys())
    present = {m for s in structures for m in result[s]}
    first = STUDY_METRICS if study_only else ALL_METRICS
    # Then lesion detection, then the counts and volumes behind the errors, in the metrics' own order.
    extra = [m for m in METRIC_INFO if m in present and m not in ALL_METRICS
             and not (study_only and m.startswith("b2_"))]
    extra.sort(key=lambda m: not m.startswith("lesion_"))
    order = [m for m in first if m in present] + extra
    rows, values = [], []
    for m in order:
        name, units, _ = METRIC_INFO.get(m, (m, "", ""))
        rows.append(f"{name} ({units})" if units else name)
        line = []
        for s in structures:
            v = result[s].get(m)
            if v is None or v != v:
                line.append("—")
            elif m in COUNT_METRICS and float(v).is_integer():
                line.append(str(int(v)))  # Betti numbers, Euler characteristic, lesion counts
            else:
                line.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        values.append(line)
    cols = [" + ".join(BY_KEY[k].name if k in BY_KEY else k for k in s.split("+")) for s in structures]
    status = getattr(result, "status", {})
    if status:
        rows.append("Status")
        values.append([STATUS_WORDS.get(str(status.get(s, "")), str(status.get(s, ""))) for s in structures])
    return rows, cols, values


def evaluation_csv(result) -> str:
    """The evaluation as CSV text: every metric (rows) x structure (columns), then the notes."""
    import csv
    import io

    rows, cols, values = evaluation_table(result)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["metric"] + cols)
    for r, v in zip(rows, values):
        w.writerow([r] + v)
    for s, ns in getattr(result, "notes", {}).items():
        for n in ns:
            w.writerow([f"note ({s})", n])
    return buf.getvalue()
