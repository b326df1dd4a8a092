"""The study's full per-structure suite on one case: :func:`evaluate_case`.

Input: two label maps (integer (z, y, x) arrays on ONE grid) and the spacing (z, y, x) mm. Each structure is
compared as a binary mask: by default label 1 liver parenchyma, 2 portal vein, 3 hepatic veins, 4 IVC,
5 CRLM (LiverPlan's table, mirrored here because metrics/ must not import engine). A structure may stand
for a group of labels on either side: e.g. ``{"hepatic_veins+ivc": ((3, 4), (3,))}`` compares the UNION of
predicted labels 3 and 4 with reference label 3 (IRCADb's ``venoussystem``).

Every structure is cropped to the bounding box of prediction ∪ reference first; borders, neighbour codes
and skeletons are computed once per structure and shared by the metrics that need them. Structures run in
parallel threads (``workers``): most of the work (numpy, k-d tree queries, cc3d) releases the GIL.
"""
from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from scipy import ndimage as ndi

from .centerline import cldice as _cldice

from . import _grid, distance as _dist, lesions as _les, overlap as _ov, policy, topology as _topo

log = logging.getLogger(__name__)

#: LiverPlan's structures (engine.labels mirrors this; a test keeps them equal).
DEFAULT_STRUCTURES: dict[str, int] = {"liver": 1, "portal_vein": 2, "hepatic_veins": 3, "ivc": 4, "crlm": 5}
#: Structures whose components are lesions (lesion-wise detection is added for them).
LESION_STRUCTURES = frozenset({"crlm"})

#: metric key -> (display name, units, description). Order = the study's table order.
METRIC_INFO: dict[str, tuple[str, str, str]] = {
    "dice": ("Dice", "", "2TP/(2TP+FP+FN)"),
    "jaccard": ("Jaccard", "", "TP/(TP+FP+FN)"),
    "precision": ("Precision", "", "TP/(TP+FP)"),
    "recall": ("Recall", "", "TP/(TP+FN)"),
    "fpr": ("FPR", "", "FP/(FP+TN), whole image"),
    "fnr": ("FNR", "", "FN/(FN+TP)"),
    "hd95": ("HD95", "mm", "Metrics Reloaded: max of directed 95th percentiles, 6-conn. borders (= MONAI)"),
    "hd95_pooled": ("HD95 pooled", "mm", "95th percentile of both directions pooled (= MedPy hd95)"),
    "hd95_segmetrics": ("HD95 seg-metrics", "mm",
                        "pooled, 26-conn. contours (= seg-metrics; scores an empty mask 0, flagged)"),
    "hd95_surface": ("HD95 surface", "mm", "surface-element weighted (= DeepMind surface-distance)"),
    "hd": ("HD", "mm", "maximum of both directed distances"),
    "assd": ("ASSD", "mm", "mean of both directions' border distances pooled"),
    "cldice": ("clDice", "", "Shit et al. 2021, skimage Lee skeletons"),
    "betti0_error": ("|Δb0|", "", "|b0(P)-b0(R)|, 26/6 connectivity"),
    "betti1_error": ("|Δb1|", "", "|b1(P)-b1(R)|"),
    "betti2_error": ("|Δb2|", "", "|b2(P)-b2(R)|"),
    "euler_error": ("|ΔEuler|", "", "|χ(P)-χ(R)|"),
    "b0_pred": ("b0 pred", "", ""), "b0_ref": ("b0 ref", "", ""),
    "b1_pred": ("b1 pred", "", ""), "b1_ref": ("b1 ref", "", ""),
    "b2_pred": ("b2 pred", "", ""), "b2_ref": ("b2 ref", "", ""),
    "euler_pred": ("Euler pred", "", ""), "euler_ref": ("Euler ref", "", ""),
    "volume_pred_ml": ("Volume pred", "mL", ""), "volume_ref_ml": ("Volume ref", "mL", ""),
    "lesion_detected": ("Lesions detected", "", "matched reference lesions"),
    "lesion_missed": ("Lesions missed", "", "unmatched reference lesions"),
    "lesion_false": ("False lesions", "", "unmatched predicted lesions"),
    "lesion_recall": ("Lesion recall", "", "detected / reference lesions"),
    "lesion_precision": ("Lesion precision", "", "matched / predicted lesions"),
    "lesion_f1": ("Lesion F1", "", ""),
    "lesion_dice": ("Per-lesion Dice", "", "mean Dice of matched pairs"),
}

#: Metrics that count things (Betti numbers, Euler characteristic, lesions): shown as whole numbers.
COUNT_METRICS = frozenset({"betti0_error", "betti1_error", "betti2_error", "euler_error", "b0_pred", "b0_ref",
                           "b1_pred", "b1_ref", "b2_pred", "b2_ref", "euler_pred", "euler_ref",
                           "lesion_detected", "lesion_missed", "lesion_false"})

#: The study's table rows (Chierici et al.): overlap, HD95, clDice, Betti errors.
STUDY_METRICS: tuple[str, ...] = ("dice", "jaccard", "precision", "recall", "fpr", "fnr", "hd95", "cldice",
                                  "betti0_error", "betti1_error", "euler_error")
#: Everything :func:`evaluate_case` computes by default.
ALL_METRICS: tuple[str, ...] = STUDY_METRICS + ("hd95_pooled", "hd95_segmetrics", "hd95_surface", "hd",
                                                "assd", "betti2_error")

StructureSpec = Union[int, Sequence[int], tuple[Sequence[int], Sequence[int]]]


@dataclass(frozen=True)
class Structure:
    """One compared structure: its column key and the label values forming it on each side."""

    key: str
    pred_labels: tuple[int, ...]
    ref_labels: tuple[int, ...]


def resolve_structures(labels: Union[None, Iterable[int], Mapping[str, StructureSpec]]) -> list[Structure]:
    """Normalise ``labels``: None (the five), label ints, or {key: label | labels | (pred, ref)}."""
    if labels is None:
        labels = DEFAULT_STRUCTURES
    if not isinstance(labels, Mapping):
        inv = {v: k for k, v in DEFAULT_STRUCTURES.items()}
        labels = {inv.get(int(v), f"label_{int(v)}"): int(v) for v in labels}
    out = []
    for key, spec in labels.items():
        if isinstance(spec, (int, np.integer)):
            out.append(Structure(key, (int(spec),), (int(spec),)))
        elif (isinstance(spec, tuple) and len(spec) == 2
              and all(isinstance(s, (tuple, list)) for s in spec)):
            out.append(Structure(key, tuple(int(v) for v in spec[0]), tuple(int(v) for v in spec[1])))
        else:
            vals = tuple(int(v) for v in spec)
            out.append(Structure(key, vals, vals))
    return out


class CaseResult(dict):
    """{structure key: {metric key: float}} plus, per structure, ``status`` (policy word), ``notes``
    (plain-language remarks: empty masks, undefined values, seg-metrics zeros) and ``lesions``
    (:class:`metrics.lesions.LesionDetection` for lesion structures). ``timings`` in seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.status: dict[str, str] = {}
        self.notes: dict[str, list[str]] = {}
        self.lesions: dict[str, _les.LesionDetection] = {}
        self.timings: dict[str, float] = {}
        self.spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
        #: remarks for a cohort table (e.g. how a reference convention was mapped); set by callers
        self.table_notes: list[str] = []


def _boxes(arr: np.ndarray) -> dict[int, tuple[slice, slice, slice]]:
    """Bounding box of every label value present in an integer label map (one pass)."""
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.view(np.uint8)
    if a.dtype.kind not in "iu" or (a.size and int(a.max()) > 4096):
        return {int(v): _grid.bbox(a == v) for v in np.unique(a) if v != 0}
    objs = ndi.find_objects(a.astype(np.int32, copy=False) if a.dtype.kind == "i" else a)
    return {i + 1: sl for i, sl in enumerate(objs) if sl is not None}


def _mask(arr: np.ndarray, box, labels: tuple[int, ...]) -> np.ndarray:
    sub = arr[box]
    if len(labels) == 1:
        return sub == labels[0]
    return np.isin(sub, labels)


def _evaluate_structure(s: Structure, pred: np.ndarray, ref: np.ndarray, bp: dict, br: dict,
                        spacing: tuple[float, float, float], metrics: set[str], lesion: bool,
                        lesion_kwargs: dict, processes: bool = False) -> tuple[dict[str, float], str, list[str], Any, dict]:
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    box = _grid.union_box(*(bp.get(v) for v in s.pred_labels), *(br.get(v) for v in s.ref_labels))
    notes: list[str] = []
    out: dict[str, float] = {}
    vox_ml = float(np.prod(spacing)) / 1000.0
    if box is None:
        p = r = np.zeros((1, 1, 1), bool)
        edge = ((False, False),) * 3
    else:
        p, r = _mask(pred, box, s.pred_labels), _mask(ref, box, s.ref_labels)
        edge = _grid.touches_edge(box, pred.shape)
    c = _ov.confusion(p, r, total=pred.size)
    status = c.status
    out.update(_ov.overlap_metrics(c))
    out["volume_pred_ml"] = c.n_pred * vox_ml
    out["volume_ref_ml"] = c.n_ref * vox_ml
    t["overlap"] = time.perf_counter() - t0
    if status != policy.OK:
        notes.append(policy.STATUS_TEXT[status] + ".")

    t0 = time.perf_counter()
    if metrics & {"hd95", "hd95_pooled", "hd", "assd"}:
        sd6 = _dist.voxel_border_distances(p, r, spacing, edge, 6)
        out["hd95"] = _dist.reduce_percentile(sd6, "metrics_reloaded")
        out["hd95_pooled"] = _dist.reduce_percentile(sd6, "pooled")
        out["hd"] = _dist.reduce_max(sd6)
        out["assd"] = _dist.reduce_mean(sd6)
    if "hd95_segmetrics" in metrics:
        sd26 = _dist.voxel_border_distances(p, r, spacing, edge, 26)
        out["hd95_segmetrics"] = _dist.reduce_percentile(sd26, "seg_metrics")
        if status != policy.OK:
            notes.append("HD95 seg-metrics is 0 here only because a mask is empty (seg-metrics' convention); "
                         "it is not a perfect score.")
    t["distance"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if "hd95_surface" in metrics:
        sds = _dist.surfel_distances(p, r, spacing)
        out["hd95_surface"] = _dist.reduce_percentile(sds, "surface")
    t["surface"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if metrics & {"betti0_error", "betti1_error", "betti2_error", "euler_error"}:
        bpred = _topo.betti_numbers(p)
        bref = _topo.betti_numbers(r)
        out.update(_topo.betti_errors(bpred, bref))
        for name, b in (("pred", bpred), ("ref", bref)):
            out[f"b0_{name}"], out[f"b1_{name}"] = float(b.b0), float(b.b1)
            out[f"b2_{name}"], out[f"euler_{name}"] = float(b.b2), float(b.euler)
    t["topology"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if "cldice" in metrics:
        # p and r are crops of the union box: whether the image is one slice thick decides the thinning
        cl = _cldice(p, r, processes=processes, planar=pred.shape[0] == 1)
        out["cldice"] = cl.cldice
        if cl.reason and math.isnan(cl.cldice) and status == policy.OK:
            notes.append("clDice undefined: " + cl.reason + ".")
    t["cldice"] = time.perf_counter() - t0

    det = None
    t0 = time.perf_counter()
    if lesion:
        det = _les.detect_lesions(p, r, spacing, **lesion_kwargs)
        out.update(det.as_metrics())
    t["lesions"] = time.perf_counter() - t0
    return out, status, notes, det, t


def evaluate_case(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float],
                  labels: Union[None, Iterable[int], Mapping[str, StructureSpec]] = None, *,
                  metrics: Optional[Iterable[str]] = None, not_in_reference: Iterable[str] = (),
                  lesion_structures: Iterable[str] = LESION_STRUCTURES,
                  lesion_size_thresholds_mm: Sequence[float] = (10.0,), lesion_min_iou: float = 0.1,
                  workers: Optional[int] = None, processes: Optional[bool] = None,
                  progress: Optional[Callable[[str, int, int], None]] = None, cancel: Any = None) -> CaseResult:
    """Evaluate every structure of a predicted label map against a reference label map.

    pred, ref: integer label maps (z, y, x) on the same grid (same shape; the caller checks geometry).
    spacing_zyx: voxel size (z, y, x) in mm. labels: which structures (see :func:`resolve_structures`);
    default the five LiverPlan labels. metrics: subset of :data:`ALL_METRICS` (default all).
    not_in_reference: structure keys the reference convention cannot provide: reported with status
    ``not_in_reference`` and NaN values, never as zeros. Lesion structures (default "crlm") also get
    lesion-wise detection (``lesion_*`` metrics). workers: threads across structures (default: up to 2).
    processes: thin large masks for clDice in worker processes (default False; values are identical
    either way). Worker processes start with 'forkserver'/'spawn', which re-imports the caller's
    ``__main__``: only use it from scripts guarded by ``if __name__ == "__main__":``.
    progress(stage, done, total) / cancel (an object with ``raise_if_cancelled()``) are optional.

    Returns a :class:`CaseResult`: {structure key: {metric: float}} with per-structure status and notes.
    Empty masks, NaN and inf follow :mod:`metrics.policy`.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape or pred.ndim != 3:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} must be 3D arrays of one shape")
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or any(not (s > 0) for s in spacing):
        raise ValueError(f"spacing must be three positive (z, y, x) mm values, got {spacing_zyx}")
    wanted = set(ALL_METRICS if metrics is None else metrics)
    unknown = wanted - set(METRIC_INFO) - {"lesions"}
    if unknown:
        raise ValueError(f"unknown metrics: {', '.join(sorted(unknown))}")
    structures = resolve_structures(labels)
    skip = set(not_in_reference)
    lesion_set = set(lesion_structures)
    result = CaseResult()
    result.spacing = spacing
    t0 = time.perf_counter()
    bp, br = _boxes(pred), _boxes(ref)
    result.timings["boxes"] = time.perf_counter() - t0
    todo = [s for s in structures if s.key not in skip]
    for s in structures:
        if s.key in skip:
            result[s.key] = {m: policy.NAN for m in wanted if m in METRIC_INFO}
            result.status[s.key] = policy.NOT_IN_REFERENCE
            result.notes[s.key] = [policy.STATUS_TEXT[policy.NOT_IN_REFERENCE] + "."]
    lesion_kwargs = {"min_iou": lesion_min_iou, "size_thresholds_mm": tuple(lesion_size_thresholds_mm)}

    def one(s: Structure):
        if cancel is not None:
            cancel.raise_if_cancelled()
        return s, _evaluate_structure(s, pred, ref, bp, br, spacing, wanted, s.key in lesion_set, lesion_kwargs,
                                      use_processes)

    n_workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    use_processes = bool(processes)
    done = 0
    if progress:
        progress("evaluating structures", 0, len(todo))
    # Largest structures first so the two threads finish together.
    order = sorted(todo, key=lambda s: -_box_volume(s, bp, br))
    if n_workers > 1 and len(order) > 1:
        with ThreadPoolExecutor(max_workers=n_workers) as ex:
            outs = [f for f in [ex.submit(one, s) for s in order]]
            results = []
            for f in outs:
                results.append(f.result())
                done += 1
                if progress:
                    progress("evaluating structures", done, len(todo))
    else:
        results = []
        for s in order:
            results.append(one(s))
            done += 1
            if progress:
                progress("evaluating structures", done, len(todo))
    by_key = {s.key: r for s, r in results}
    for s in structures:
        if s.key not in by_key:
            continue
        out, status, notes, det, t = by_key[s.key]
        result[s.key] = {m: v for m, v in out.items() if m in wanted or m.startswith(("lesion_", "b0_", "b1_",
                         "b2_", "euler_", "volume_"))}
        result.status[s.key] = status
        result.notes[s.key] = notes
        if det is not None:
            result.lesions[s.key] = det
        for k, v in t.items():
            result.timings[f"{s.key}.{k}"] = v
    # keep the caller's structure order
    ordered = CaseResult()
    ordered.status, ordered.notes, ordered.lesions = result.status, result.notes, result.lesions
    ordered.timings, ordered.spacing = result.timings, result.spacing
    for s in structures:
        ordered[s.key] = result[s.key]
    return ordered


def _box_volume(s: Structure, bp: dict, br: dict) -> int:
    box = _grid.union_box(*(bp.get(v) for v in s.pred_labels), *(br.get(v) for v in s.ref_labels))
    if box is None:
        return 0
    return int(np.prod([b.stop - b.start for b in box]))
