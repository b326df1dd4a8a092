"""The metric report: a cohort evaluation as the figures and pictures a research team reads.

Input: one evaluation folder written by ``evaluate --out`` (per_case.csv, lesions.csv, table.json and the
manifest evaluation.json, which says where each case's prediction and reference files are), optionally a
second one to compare with. Output: an :class:`engine.reporting.Document` (HTML + PDF via
:func:`engine.reporting.write_document`) holding

* the study's table (metric rows × structure columns, mean ± SD);
* box/strip plots of Dice, HD95, clDice and the Betti errors per structure (every case a dot, outliers named);
* predicted against reference volume per structure, and Bland–Altman (bias and 95 % limits of agreement, mL);
* lesion detection recall by lesion size, and per-lesion Dice against size;
* for the k worst cases per structure (lowest Dice), an axial and a coronal slice through the largest error
  (the largest 26-connected component of prediction XOR reference), prediction and reference outlined,
  false positives and false negatives filled and hatched, and the case's numbers;
* with a second evaluation: the same plots with both models, paired differences per case and a Wilcoxon
  signed-rank test per structure and metric with effect sizes (see :func:`paired_tests`);
* nnU-Net's training curves when a training folder is given (:mod:`engine.training.curves`);
* an appendix with the metric definitions, the empty-mask policy and the provenance.

Every plotted number is read from the evaluation's per-case CSV (the GUI's single-case report goes through
the same CSV text), so the report can never disagree with the tables. The numbers behind each figure are
returned in :class:`ReportData` (tests compare them with the CSV).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from metrics import policy
from metrics.suite import METRIC_INFO, STUDY_METRICS, CaseResult

from .errors import InputError
from .labels import BY_KEY
from .progress import CancelToken, ProgressCallback, check, no_progress
from .reporting.document import (DefinitionList, Document, Figure, Group, Heading, Image, PageBreak, Paragraph,
                                 Table)

log = logging.getLogger(__name__)

#: Metrics drawn as distributions (the issue's list: Dice, HD95, clDice and the Betti errors).
PLOT_METRICS: tuple[str, ...] = ("dice", "hd95", "cldice", "betti0_error", "betti1_error", "euler_error")
#: Metrics tested pairwise in a comparison; True = higher is better.
COMPARE_METRICS: dict[str, bool] = {"dice": True, "hd95": False, "cldice": True, "betti0_error": False,
                                    "betti1_error": False, "euler_error": False}
#: Lesion size bins (longest diameter, mm): [lo, hi).
LESION_BINS_MM: tuple[tuple[float, float], ...] = ((0, 5), (5, 10), (10, 20), (20, 30), (30, math.inf))
#: Structures in which a per-lesion analysis is made.
LESION_STRUCTURES = ("crlm",)
#: Above this many cases, the dots of a plot are drawn as one embedded 200-dpi image inside its SVG (axes,
#: boxes, lines and text stay vector): WeasyPrint draws each vector dot separately (~5 ms each), which made a
#: 100-case PDF take a minute; a small cohort's dots stay vector.
DENSE_CASES = 40


# ================================================================================================
# the evaluation as read back
# ================================================================================================
@dataclass
class CaseRow:
    """One (case, structure) line of per_case.csv."""

    case: str
    structure: str
    status: str
    values: dict[str, float]
    notes: str = ""


@dataclass
class LesionRow:
    """One reference lesion of lesions.csv (diameter in mm, volume in mL)."""

    case: str
    structure: str
    ref_lesion: int
    volume_ml: float
    diameter_mm: float
    pred_lesion: int
    detected: bool
    iou: float
    dice: float


ArraysLoader = Callable[[str], Optional[tuple[np.ndarray, np.ndarray, tuple[float, float, float], dict]]]


@dataclass
class Evaluation:
    """An evaluation as the report reads it: per-case rows, lesions, the manifest, and a way to re-read a
    case's label maps (for the worst-case pictures)."""

    label: str
    rows: list[CaseRow]
    lesions: list[LesionRow] = field(default_factory=list)
    false_lesions: dict[tuple[str, str], int] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    table_notes: list[str] = field(default_factory=list)
    folder: Optional[Path] = None
    #: case -> (pred (z, y, x), ref (z, y, x), spacing (z, y, x) mm, {structure: (pred labels, ref labels)})
    loader: Optional[ArraysLoader] = None

    # ---- queries --------------------------------------------------------------------------------
    def structures(self) -> list[str]:
        """Structures evaluated in at least one case (column order of the CSV)."""
        out: list[str] = []
        for r in self.rows:
            if r.status != policy.NOT_IN_REFERENCE and r.structure not in out:
                out.append(r.structure)
        return out

    def cases(self) -> list[str]:
        out: list[str] = []
        for r in self.rows:
            if r.case not in out:
                out.append(r.case)
        return out

    def values(self, structure: str, metric: str) -> list[tuple[str, float]]:
        """(case, value) of every evaluated case of ``structure`` that has ``metric`` (NaN and inf kept)."""
        return [(r.case, r.values[metric]) for r in self.rows
                if r.structure == structure and r.status != policy.NOT_IN_REFERENCE and metric in r.values]

    def row(self, case: str, structure: str) -> Optional[CaseRow]:
        for r in self.rows:
            if r.case == case and r.structure == structure:
                return r
        return None

    def case_results(self) -> list[CaseResult]:
        """The rows as metrics.suite.CaseResult objects (to rebuild the study's table)."""
        by_case: "OrderedDict[str, CaseResult]" = OrderedDict()
        for r in self.rows:
            cr = by_case.setdefault(r.case, CaseResult())
            cr[r.structure] = dict(r.values)
            cr.status[r.structure] = r.status
        return list(by_case.values())

    def table(self):
        """The study's table (metrics.cohort.Table) from the per-case rows, with the evaluation's notes."""
        from .evaluation import cohort_table

        results = self.case_results()
        rows = None if any("crlm" in r for r in results) else list(STUDY_METRICS)
        notes = list(self.table_notes)
        if self.failed:
            msg = (f"{len(self.failed)} case(s) could not be evaluated and are not in the table: "
                   + "; ".join(f"{n} ({e})" for n, e in self.failed))
            if msg not in notes:
                notes.append(msg)
        t = cohort_table(results, metrics_rows=rows, notes=notes)
        # table.json's notes already hold the table's own legend, which cohort_table adds again
        t.notes = list(dict.fromkeys(t.notes))
        return t

    def arrays(self, case: str):
        """(pred, ref, spacing, structure labels) of a case, or None when its files cannot be read."""
        if self.loader is None:
            return None
        try:
            return self.loader(case)
        except Exception as err:  # noqa: BLE001 - a moved or unreadable file costs the picture, not the report
            log.warning("case %s could not be re-read for its pictures: %s", case, err)
            return None


def _num(text: str) -> Optional[float]:
    t = (text or "").strip()
    if t == "":
        return None
    try:
        return float(t)
    except ValueError:
        return None


def parse_per_case_csv(text: str) -> tuple[list[CaseRow], list[tuple[str, str]]]:
    """per_case.csv (engine.evaluation.per_case_csv) -> rows, failed cases [(name, error)]."""
    rd = csv.reader(io.StringIO(text))
    header = next(rd, None)
    if not header or header[:3] != ["case", "structure", "status"]:
        raise InputError("per_case.csv does not start with the columns case, structure, status: it was not "
                         "written by LiverPlan's evaluate.")
    keys = header[3:-1]
    rows: list[CaseRow] = []
    failed: list[tuple[str, str]] = []
    for rec in rd:
        if not rec:
            continue
        if rec[2] == "error":
            failed.append((rec[0], rec[-1]))
            continue
        vals = {}
        for k, t in zip(keys, rec[3:-1]):
            v = _num(t)
            if v is not None:
                vals[k] = v
        rows.append(CaseRow(rec[0], rec[1], rec[2], vals, rec[-1] if len(rec) > len(keys) + 3 else ""))
    return rows, failed


def parse_lesions_csv(text: str) -> tuple[list[LesionRow], dict[tuple[str, str], int]]:
    """lesions.csv -> reference lesions, {(case, structure): false lesion count}."""
    rd = csv.DictReader(io.StringIO(text))
    lesions: list[LesionRow] = []
    false: dict[tuple[str, str], int] = {}
    for r in rd:
        if r.get("ref_lesion") == "false lesions":
            false[(r["case"], r["structure"])] = int(float(r.get("pred_lesion") or 0))
            continue
        lesions.append(LesionRow(r["case"], r["structure"], int(r["ref_lesion"]), float(r["volume_ml"]),
                                 float(r["diameter_mm"]), int(r["pred_lesion"]), r["detected"] == "1",
                                 float(r["iou"]), float(r["dice"])))
    return lesions, false


def _mapping(d: Optional[dict]):
    from .labelmap import LabelMapping

    if not d:
        return None
    return LabelMapping.from_json_dict(d.get("json") or {}, name=d.get("name") or "custom") if d.get("json") else (
        LabelMapping.preset(d["name"]) if d.get("name") else None)


def files_loader(manifest: dict) -> ArraysLoader:
    """A loader re-reading a case's prediction and reference from the paths in an evaluation manifest,
    with the evaluation's label mappings (as evaluate compared them)."""
    by_name = {c["name"]: c for c in manifest.get("cases", [])}
    pred_map = _mapping(manifest.get("pred_mapping"))
    ref_map = _mapping(manifest.get("ref_mapping"))
    plan_map = _mapping(manifest.get("plan_mapping"))

    def load(case: str):
        from .evaluation import read_pair, structure_plan

        c = by_name.get(case)
        if not c or not c.get("pred_path") or not c.get("ref_path"):
            return None
        if not Path(c["pred_path"]).exists() or not Path(c["ref_path"]).exists():
            log.warning("case %s: its files are no longer at %s / %s", case, c["pred_path"], c["ref_path"])
            return None
        pred, ref, geom, rmap = read_pair(c["pred_path"], c["ref_path"], pred_map, ref_map)
        # the training pipeline's references are LiverPlan label files (read as they are) scored under the
        # external set's convention (merged / missing structures): its manifest names that separately
        plan = structure_plan(plan_map if plan_map is not None else rmap)
        return pred, ref, tuple(geom.spacing), dict(plan.structures)

    return load


def load_evaluation(folder: Union[str, Path], label: Optional[str] = None) -> Evaluation:
    """Read an evaluation folder written by ``evaluate --out`` (or the training pipeline)."""
    d = Path(folder).expanduser()
    if not d.is_dir():
        raise InputError(f"{d} is not a folder; give the --out folder of an earlier 'evaluate' run.")
    pc = d / "per_case.csv"
    if not pc.is_file():
        raise InputError(f"{d} holds no per_case.csv: it is not an evaluation folder written by 'evaluate --out'.")
    rows, failed = parse_per_case_csv(pc.read_text(encoding="utf-8"))
    lesions, false = ([], {})
    if (d / "lesions.csv").is_file():
        lesions, false = parse_lesions_csv((d / "lesions.csv").read_text(encoding="utf-8"))
    manifest: dict = {}
    if (d / "evaluation.json").is_file():
        try:
            manifest = json.loads((d / "evaluation.json").read_text(encoding="utf-8"))
        except ValueError as err:
            log.warning("%s: unreadable manifest (%s); the report has no pictures", d / "evaluation.json", err)
    notes: list[str] = []
    if (d / "table.json").is_file():
        try:
            notes = list(json.loads((d / "table.json").read_text(encoding="utf-8")).get("notes", []))
        except ValueError:
            pass
    name = label or manifest.get("label") or _model_name(manifest) or d.name
    return Evaluation(name, rows, lesions, false, manifest, failed, notes, d,
                      files_loader(manifest) if manifest.get("cases") else None)


def evaluation_from_results(label: str, cases: Sequence[tuple[str, CaseResult]], manifest: Optional[dict] = None,
                            arrays: Optional[dict] = None) -> Evaluation:
    """An Evaluation from in-memory results (the window's single-case evaluation): the results go through
    the same CSV text as ``evaluate --out`` writes. ``arrays``: {case: (pred, ref, spacing, structures)}."""
    from .evaluation import CaseRecord, CohortResult, lesions_csv, per_case_csv

    rows, failed = parse_per_case_csv(per_case_csv(list(cases)))
    cohort = CohortResult([CaseRecord(n, "", "", r) for n, r in cases])
    lesions, false = parse_lesions_csv(lesions_csv(cohort))
    notes: list[str] = []
    for _, r in cases:
        for n in getattr(r, "table_notes", []):
            if n not in notes:
                notes.append(n)
    arrays = dict(arrays or {})
    return Evaluation(label, rows, lesions, false, dict(manifest or {}), failed, notes, None,
                      (lambda c: arrays.get(c)) if arrays else None)


def _model_name(manifest: dict) -> str:
    m = manifest.get("model") or {}
    if isinstance(m, dict):
        return str(m.get("name") or "")
    return str(m)


# ================================================================================================
# numbers behind the figures
# ================================================================================================
@dataclass
class BlandAltman:
    """Agreement of predicted and reference volumes (mL) of one structure over the cohort."""

    structure: str
    cases: list[str]
    pred_ml: np.ndarray
    ref_ml: np.ndarray
    bias_ml: float           # mean of (pred - ref)
    sd_ml: float             # sample SD of (pred - ref)
    loa_low_ml: float        # bias - 1.96 SD
    loa_high_ml: float       # bias + 1.96 SD

    @property
    def n(self) -> int:
        return len(self.cases)


def bland_altman(ev: Evaluation, structure: str) -> Optional[BlandAltman]:
    """Bland–Altman of predicted vs reference volume. Cases where the structure is in neither mask (both
    empty) are left out: there is no volume to agree on. None when no case remains."""
    cases, p, r = [], [], []
    for row in ev.rows:
        if row.structure != structure or row.status in (policy.NOT_IN_REFERENCE, policy.BOTH_EMPTY):
            continue
        if "volume_pred_ml" in row.values and "volume_ref_ml" in row.values:
            cases.append(row.case)
            p.append(row.values["volume_pred_ml"])
            r.append(row.values["volume_ref_ml"])
    if not cases:
        return None
    pa, ra = np.asarray(p, float), np.asarray(r, float)
    d = pa - ra
    bias = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    return BlandAltman(structure, cases, pa, ra, bias, sd, bias - 1.96 * sd, bias + 1.96 * sd)


@dataclass
class SizeBin:
    lo_mm: float
    hi_mm: float
    n: int
    detected: int

    @property
    def recall(self) -> float:
        return self.detected / self.n if self.n else float("nan")

    @property
    def label(self) -> str:
        if math.isinf(self.hi_mm):
            return f"≥ {self.lo_mm:g} mm"
        if self.lo_mm == 0:
            return f"< {self.hi_mm:g} mm"
        return f"{self.lo_mm:g}–{self.hi_mm:g} mm"


def lesion_bins(ev: Evaluation, structure: str = "crlm",
                bins: Sequence[tuple[float, float]] = LESION_BINS_MM) -> list[SizeBin]:
    """Detection recall per size bin of the reference lesions (longest diameter, mm)."""
    les = [x for x in ev.lesions if x.structure == structure]
    out = []
    for lo, hi in bins:
        sel = [x for x in les if lo <= x.diameter_mm < hi]
        out.append(SizeBin(lo, hi, len(sel), sum(1 for x in sel if x.detected)))
    return out


@dataclass
class PairedTest:
    """Paired comparison of two evaluations for one structure and metric (B minus A, same cases)."""

    structure: str
    metric: str
    n_pairs: int                 # cases with a finite value in both
    n_excluded: int              # cases in both evaluations left out (NaN or inf in either)
    mean_diff: float
    median_diff: float
    statistic: float             # Wilcoxon's W (smaller of the signed-rank sums)
    p_value: float
    rank_biserial: float         # matched-pairs rank-biserial correlation, -1..1 (effect size)
    p_holm: float = float("nan")
    favours: str = ""            # which evaluation the median difference favours ("" = neither)
    note: str = ""
    diffs: Optional[np.ndarray] = None
    cases: list = field(default_factory=list)


def paired_tests(a: Evaluation, b: Evaluation, metrics_: Sequence[str] = tuple(COMPARE_METRICS)) -> list[PairedTest]:
    """Wilcoxon signed-rank test per structure and metric on the per-case paired differences (B − A).

    Why Wilcoxon signed-rank: the two evaluations score the SAME cases, so the test is paired; the
    per-case differences of Dice (bounded, skewed near 1), HD95 (heavy-tailed) and the Betti errors
    (small integers, many ties) are not normal, and cohorts are small, which rules out the paired t-test
    and leaves the signed-rank test (scipy.stats.wilcoxon, two-sided, zero differences dropped as in
    Wilcoxon's original method, exact p for small samples without ties, normal approximation otherwise).
    Effect sizes are reported beside p: the median and mean paired difference in the metric's units and
    the matched-pairs rank-biserial correlation r = (R+ − R−)/(R+ + R−) (−1..1; 0 = no tendency).
    A case with NaN or inf in either evaluation is excluded and counted. p-values are also given after
    Holm's correction over all the tests of the report.
    """
    from scipy import stats

    out: list[PairedTest] = []
    structures = [s for s in a.structures() if s in b.structures()]
    for s in structures:
        for m in metrics_:
            va, vb = dict(a.values(s, m)), dict(b.values(s, m))
            common = [c for c in va if c in vb]
            if not common:
                continue
            ok = [c for c in common if math.isfinite(va[c]) and math.isfinite(vb[c])]
            d = np.asarray([vb[c] - va[c] for c in ok], float)
            t = PairedTest(s, m, len(ok), len(common) - len(ok), float("nan"), float("nan"), float("nan"),
                           float("nan"), float("nan"), diffs=d, cases=ok)
            if not ok:
                t.note = "no case with a finite value in both"
                out.append(t)
                continue
            t.mean_diff, t.median_diff = float(d.mean()), float(np.median(d))
            nz = d[d != 0]
            if nz.size == 0:
                t.statistic, t.p_value, t.rank_biserial = 0.0, 1.0, 0.0
                t.note = "all paired differences are 0: no difference"
            else:
                ranks = stats.rankdata(np.abs(nz))
                rp, rm = float(ranks[nz > 0].sum()), float(ranks[nz < 0].sum())
                t.rank_biserial = (rp - rm) / (rp + rm)
                res = stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided")
                t.statistic, t.p_value = float(res.statistic), float(res.pvalue)
                if nz.size < 6:
                    t.note = f"only {nz.size} non-zero difference(s): the test cannot reach p < 0.05"
            if t.median_diff != 0 and math.isfinite(t.median_diff):
                higher_better = COMPARE_METRICS.get(m, True)
                t.favours = "B" if (t.median_diff > 0) == higher_better else "A"
            out.append(t)
    # Holm's step-down correction over every test with a p-value
    idx = sorted((i for i, t in enumerate(out) if math.isfinite(t.p_value)), key=lambda i: out[i].p_value)
    k = len(idx)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (k - rank) * out[i].p_value))
        out[i].p_holm = running
    return out


@dataclass
class WorstCase:
    """One worst case of a structure and the slices that picture its largest error.

    Slices are full-size boolean masks: ``axial_*`` at z index ``z`` (y, x), ``coronal_*`` at y index ``y``
    (z, x). fp = predicted but not in the reference, fn = in the reference but not predicted.
    ``box`` is the crop shown: (z0, z1, y0, y1, x0, x1) voxel indices.
    """

    evaluation: str
    structure: str
    case: str
    dice: float
    values: dict[str, float]
    status: str
    z: int = -1
    y: int = -1
    axial_fp: Optional[np.ndarray] = None
    axial_fn: Optional[np.ndarray] = None
    coronal_fp: Optional[np.ndarray] = None
    coronal_fn: Optional[np.ndarray] = None
    box: Optional[tuple[int, int, int, int, int, int]] = None
    error_voxels: int = 0
    picture: str = ""            # "" or why there is no picture


def worst_cases(ev: Evaluation, structure: str, k: int = 5) -> list[CaseRow]:
    """The k cases with the lowest Dice for ``structure`` (ties: larger HD95 first). Cases with an
    undefined Dice (both masks empty) or a perfect one are not failures and are not listed."""
    rows = [r for r in ev.rows if r.structure == structure and r.status != policy.NOT_IN_REFERENCE
            and math.isfinite(r.values.get("dice", float("nan"))) and r.values["dice"] < 1.0]

    def key(r: CaseRow):
        h = r.values.get("hd95", 0.0)
        return (r.values["dice"], -(h if math.isfinite(h) else 1e12) if not math.isnan(h) else 0.0, r.case)

    return sorted(rows, key=key)[: max(0, int(k))]


def label_boxes(labels: np.ndarray) -> dict[int, tuple[slice, slice, slice]]:
    """Bounding box (z, y, x slices) of every label value present in a label map, in one pass."""
    from scipy import ndimage as ndi

    a = np.asarray(labels)
    if a.dtype.kind not in "iu":
        a = a.astype(np.int32)
    return {i + 1: sl for i, sl in enumerate(ndi.find_objects(a)) if sl is not None}


def _mask(a: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    return np.isin(a, labels) if len(labels) > 1 else (a == labels[0])


def error_slices(pred: np.ndarray, ref: np.ndarray, pred_labels: Sequence[int], ref_labels: Sequence[int],
                 boxes: Optional[tuple[dict, dict]] = None) -> dict:
    """Where a structure's largest error is: the largest 26-connected component of prediction XOR reference.

    pred, ref: label maps (z, y, x); boxes: their :func:`label_boxes` when already known (a case pictured
    for several structures). Only the structure's bounding box is looked at, so a CT-sized map costs little.
    Returns {"z", "y": slice indices through that component (the axial / coronal slice holding most of it),
    "error_voxels", "box": (z0, z1, y0, y1, x0, x1) crop around prediction ∪ reference with a margin, or None
    when neither has the structure}. A perfect case gets the structure's middle slices.
    """
    from metrics.lesions import label_lesions

    out: dict[str, Any] = {"z": -1, "y": -1, "error_voxels": 0, "box": None}
    if boxes is not None:
        bp, br = boxes
        bbs = [b for b in [bp.get(int(v)) for v in pred_labels] + [br.get(int(v)) for v in ref_labels]
               if b is not None]
        if not bbs:
            return out
        lo = [min(b[k].start for b in bbs) for k in range(3)]
        hi = [max(b[k].stop for b in bbs) for k in range(3)]
    else:
        # one structure of this case: its own masks' extent is cheaper than every label's boxes
        union = _mask(pred, pred_labels) | _mask(ref, ref_labels)
        ext = [np.flatnonzero(union.any(axis=ax)) for ax in ((1, 2), (0, 2), (0, 1))]
        if not ext[0].size:
            return out
        lo = [int(e[0]) for e in ext]
        hi = [int(e[-1]) + 1 for e in ext]
        del union
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    err = _mask(pred[sl], pred_labels) ^ _mask(ref[sl], ref_labels)
    out["error_voxels"] = int(err.sum())
    m = 6
    shape = pred.shape
    out["box"] = (max(0, lo[0] - m), min(shape[0], hi[0] + m), max(0, lo[1] - m), min(shape[1], hi[1] + m),
                  max(0, lo[2] - m), min(shape[2], hi[2] + m))
    if not err.any():
        out["z"], out["y"] = int((lo[0] + hi[0] - 1) // 2), int((lo[1] + hi[1] - 1) // 2)
        return out
    lab, n = label_lesions(err)
    counts = np.bincount(lab.ravel(), minlength=n + 1)
    counts[0] = 0
    big = lab == int(counts.argmax())
    out["z"] = int(lo[0] + big.sum(axis=(1, 2)).argmax())
    out["y"] = int(lo[1] + big.sum(axis=(0, 2)).argmax())
    return out


@dataclass
class ReportData:
    """The numbers behind every figure of a report (what tests compare with the per-case CSV)."""

    distributions: dict = field(default_factory=dict)   # {(evaluation, structure, metric): [(case, value)]}
    bland_altman: dict = field(default_factory=dict)    # {(evaluation, structure): BlandAltman}
    lesion_bins: dict = field(default_factory=dict)     # {(evaluation, structure): [SizeBin]}
    lesion_dice: dict = field(default_factory=dict)     # {(evaluation, structure): [(case, diameter, dice, detected)]}
    worst: list = field(default_factory=list)           # [WorstCase]
    paired: list = field(default_factory=list)          # [PairedTest]
    training: Any = None                                # TrainingCurves


# ================================================================================================
# figures
# ================================================================================================
def _sname(key: str) -> str:
    parts = key.split("+")
    if all(p in BY_KEY for p in parts):
        return " + ".join(BY_KEY[p].name for p in parts)
    return key


def _scolor(key: str):
    from .reporting.plots import rgb

    first = key.split("+")[0]
    return rgb(BY_KEY[first].color) if first in BY_KEY else (0.6, 0.6, 0.6)


def _mtitle(m: str) -> str:
    name, units, _ = METRIC_INFO.get(m, (m, "", ""))
    return f"{name} ({units})" if units else name


def _short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def distribution_figure(evals: Sequence[Evaluation], metric: str, structures: Sequence[str], data: ReportData):
    """Box + strip plot of one metric: structures along x, every case a dot, outliers named; models side
    by side (marker shape and hatch tell them apart in grey). inf (a missed structure for a distance) is
    drawn as a triangle above the axis, never dropped."""
    from .reporting.plots import HATCHES, MARKERS, new_figure, style

    rng = np.random.default_rng(0)
    nev = len(evals)
    dense = max(len(e.cases()) for e in evals) > DENSE_CASES
    with style():
        fig = new_figure(7.0, 2.9)
        ax = fig.add_subplot()
        width = 0.7 / nev
        finite_all: list[float] = []
        for e in evals:
            for s in structures:
                finite_all += [v for _, v in e.values(s, metric) if math.isfinite(v)]
        top = max(finite_all) if finite_all else 1.0
        bottom = min(finite_all + [0.0])
        inf_y = top + 0.08 * (top - bottom if top > bottom else 1.0)
        undefined_note = []
        for j, e in enumerate(evals):
            for i, s in enumerate(structures):
                vals = e.values(s, metric)
                data.distributions[(e.label, s, metric)] = vals
                x0 = i + (j - (nev - 1) / 2) * width
                fin = [(c, v) for c, v in vals if math.isfinite(v)]
                infs = [c for c, v in vals if math.isinf(v)]
                nans = [c for c, v in vals if math.isnan(v)]
                if nans:
                    undefined_note.append(f"{_sname(s)}{' (' + e.label + ')' if nev > 1 else ''}: {len(nans)}")
                if fin:
                    arr = np.asarray([v for _, v in fin])
                    bp = ax.boxplot(arr, positions=[x0], widths=width * 0.8, patch_artist=True, showfliers=False,
                                    manage_ticks=False, medianprops={"color": "black", "linewidth": 1.4},
                                    whiskerprops={"color": "#222"}, capprops={"color": "#222"})
                    for patch in bp["boxes"]:
                        patch.set_facecolor((*_scolor(s), 0.45))
                        patch.set_edgecolor("black")
                        patch.set_hatch(HATCHES[j % len(HATCHES)])
                    q1, q3 = np.percentile(arr, [25, 75])
                    iqr = q3 - q1
                    jit = rng.uniform(-width * 0.28, width * 0.28, size=arr.size)
                    ax.scatter(x0 + jit, arr, s=9, marker=MARKERS[j % len(MARKERS)], facecolor="white",
                               edgecolor="black", linewidth=0.6, zorder=3, rasterized=dense)
                    out_idx = [k for k, v in enumerate(arr) if v < q1 - 1.5 * iqr or v > q3 + 1.5 * iqr]
                    # the most extreme few are named; more names would cover the plot
                    out_idx = sorted(out_idx, key=lambda k: -abs(arr[k] - np.median(arr)))[:3]
                    for k in out_idx:
                        ax.annotate(_short(fin[k][0]), (x0 + jit[k], arr[k]), xytext=(3, 0),
                                    textcoords="offset points", fontsize=6, va="center")
                for k, c in enumerate(infs):
                    ax.scatter([x0 + (k - (len(infs) - 1) / 2) * 0.04], [inf_y], marker="^", s=18,
                               facecolor="black", edgecolor="black", zorder=3, clip_on=False)
                if infs:
                    ax.annotate(f"{len(infs)}× ∞", (x0, inf_y), xytext=(0, 5), textcoords="offset points",
                                ha="center", fontsize=6)
        ax.set_xticks(range(len(structures)))
        ax.set_xticklabels([_sname(s) for s in structures])
        ax.set_xlim(-0.6, len(structures) - 0.4)
        ax.set_ylabel(_mtitle(metric))
        if metric in ("dice", "cldice"):
            ax.set_ylim(min(bottom, 0.0) - 0.03, max(1.02, inf_y + 0.05))
        if nev > 1:
            from matplotlib.patches import Patch
            ax.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch=HATCHES[j % len(HATCHES)],
                                     label=f"{'AB'[j] if j < 2 else j}: {_short(e.label, 30)}")
                               for j, e in enumerate(evals)], loc="best")
    cap = (f"{_mtitle(metric)} per structure: box = quartiles and median, whiskers 1.5 × IQR, every case a dot; "
           "the most extreme outliers are named.")
    if any(math.isinf(v) for e in evals for s in structures for _, v in e.values(s, metric)):
        cap += " ▲ = infinite (a missed or invented structure: no surface to measure), counted, not averaged."
    if undefined_note:
        cap += " Undefined (not plotted; see the appendix's policy): " + "; ".join(undefined_note) + "."
    from .reporting.plots import figure_svg
    return Figure(figure_svg(fig), cap, alt=f"{_mtitle(metric)} box plot")


def volume_figure(evals: Sequence[Evaluation], structures: Sequence[str], data: ReportData):
    """Per structure: predicted vs reference volume (identity line) and Bland–Altman (bias, 95 % limits)."""
    from .reporting.plots import DASHES, MARKERS, figure_svg, new_figure, style

    rows = []
    for s in structures:
        per = [(e, bland_altman(e, s)) for e in evals]
        per = [(e, ba) for e, ba in per if ba is not None]
        if per:
            rows.append((s, per))
    if not rows:
        return None, []
    table_rows = []
    with style():
        fig = new_figure(7.0, 2.05 * len(rows) + 0.3)
        dense = max(len(e.cases()) for e in evals) > DENSE_CASES
        axes = fig.subplots(len(rows), 2, squeeze=False)
        for i, (s, per) in enumerate(rows):
            a1, a2 = axes[i]
            lim = 0.0
            for j, (e, ba) in enumerate(per):
                data.bland_altman[(e.label, s)] = ba
                mk = MARKERS[j % len(MARKERS)]
                a1.scatter(ba.ref_ml, ba.pred_ml, s=12, marker=mk, facecolor=(*_scolor(s), 0.7) if j == 0 else "white",
                           edgecolor="black", linewidth=0.6, label=e.label if len(per) > 1 else None, zorder=3,
                           rasterized=dense)
                lim = max(lim, float(ba.ref_ml.max(initial=0)), float(ba.pred_ml.max(initial=0)))
                mean = (ba.pred_ml + ba.ref_ml) / 2
                diff = ba.pred_ml - ba.ref_ml
                a2.scatter(mean, diff, s=12, marker=mk, facecolor=(*_scolor(s), 0.7) if j == 0 else "white",
                           edgecolor="black", linewidth=0.6, zorder=3, rasterized=dense)
                ls = DASHES[j % len(DASHES)]
                a2.axhline(ba.bias_ml, color="black", linestyle=ls, linewidth=1.1)
                if math.isfinite(ba.sd_ml):
                    for yv in (ba.loa_low_ml, ba.loa_high_ml):
                        a2.axhline(yv, color="#555", linestyle=ls, linewidth=0.7)
                tag = f"{'AB'[j]} " if len(per) > 1 else ""
                a2.annotate(f"{tag}bias {ba.bias_ml:+.1f} mL", (1.0, ba.bias_ml), xycoords=("axes fraction", "data"),
                            xytext=(-2, 2), textcoords="offset points", ha="right", fontsize=6.5)
                table_rows.append([_sname(s)] + ([e.label] if len(evals) > 1 else []) + [
                    str(ba.n), f"{ba.bias_ml:+.2f}", _f(ba.sd_ml, 2), _f(ba.loa_low_ml, 2), _f(ba.loa_high_ml, 2)])
            lim = lim * 1.05 if lim > 0 else 1.0
            a1.plot([0, lim], [0, lim], color="#444", linewidth=0.8, linestyle=":")
            a1.set_xlim(0, lim)
            a1.set_ylim(0, lim)
            a1.set_xlabel("reference volume (mL)")
            a1.set_ylabel("predicted (mL)")
            a1.set_title(_sname(s), loc="left")
            a2.axhline(0, color="#999", linewidth=0.6)
            a2.set_xlabel("mean of predicted and reference (mL)")
            a2.set_ylabel("predicted − reference (mL)")
            a2.set_title("Bland–Altman", loc="left")
            if len(per) > 1 and i == 0:
                a1.legend(loc="upper left")
    cap = ("Left: predicted against reference volume per case (dotted: identity). Right: Bland–Altman — the "
           "difference against the mean of the two; solid line: bias (mean difference), thin lines: 95 % limits "
           "of agreement (bias ± 1.96 SD), in mL. Cases without the structure in either mask are left out.")
    return Figure(figure_svg(fig), cap, alt="volume agreement"), table_rows


def _f(v: float, d: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{d}f}"


def lesion_figure(evals: Sequence[Evaluation], structure: str, data: ReportData):
    """Detection recall per lesion-size bin (bars, n above) and per-lesion Dice against diameter."""
    from .reporting.plots import HATCHES, MARKERS, figure_svg, new_figure, style

    if not any(x.structure == structure for e in evals for x in e.lesions):
        return None, []
    table_rows = []
    with style():
        fig = new_figure(7.0, 2.6)
        dense = max(len(e.lesions) for e in evals) > DENSE_CASES
        a1, a2 = fig.subplots(1, 2)
        nev = len(evals)
        width = 0.8 / nev
        for j, e in enumerate(evals):
            bins = lesion_bins(e, structure)
            data.lesion_bins[(e.label, structure)] = bins
            xs = np.arange(len(bins)) + (j - (nev - 1) / 2) * width
            rec = [b.recall if b.n else 0.0 for b in bins]
            a1.bar(xs, rec, width=width * 0.9, color=(*_scolor(structure), 0.55 if j == 0 else 0.2),
                   edgecolor="black", hatch=HATCHES[j % len(HATCHES)], label=e.label if nev > 1 else None)
            for x, b in zip(xs, bins):
                a1.annotate(f"{b.detected}/{b.n}" if b.n else "none", (x, (b.recall if b.n else 0.0)),
                            xytext=(0, 2), textcoords="offset points", ha="center", fontsize=6)
                table_rows.append([b.label] + ([e.label] if nev > 1 else []) + [str(b.n), str(b.detected),
                                  _f(b.recall, 2)])
            les = [x for x in e.lesions if x.structure == structure]
            data.lesion_dice[(e.label, structure)] = [(x.case, x.diameter_mm, x.dice, x.detected) for x in les]
            det = [x for x in les if x.detected]
            mis = [x for x in les if not x.detected]
            mk = MARKERS[j % len(MARKERS)]
            a2.scatter([x.diameter_mm for x in det], [x.dice for x in det], s=12, marker=mk,
                       facecolor=(*_scolor(structure), 0.7) if j == 0 else "white", edgecolor="black",
                       linewidth=0.6, label=(f"{e.label}: detected" if nev > 1 else "detected"), zorder=3,
                       rasterized=dense)
            if mis:
                a2.scatter([x.diameter_mm for x in mis], [0.0] * len(mis), s=22, marker="x" if j == 0 else "+",
                           color="black", linewidth=1.0, label=(f"{e.label}: missed" if nev > 1 else "missed"),
                           zorder=3, rasterized=dense)
        a1.set_xticks(range(len(LESION_BINS_MM)))
        a1.set_xticklabels([SizeBin(lo, hi, 0, 0).label for lo, hi in LESION_BINS_MM], fontsize=7)
        a1.set_ylim(0, 1.12)
        a1.set_ylabel("detection recall")
        a1.set_xlabel("reference lesion longest diameter")
        a1.set_title("Lesions found, by size", loc="left")
        a2.set_xlabel("reference lesion longest diameter (mm)")
        a2.set_ylabel("per-lesion Dice")
        a2.set_ylim(-0.05, 1.05)
        a2.set_title("Per-lesion Dice against size", loc="left")
        a2.legend(loc="lower right")
        if nev > 1:
            a1.legend(loc="upper left")
    cap = ("Left: share of reference lesions detected per size bin (a predicted lesion matches a reference lesion "
           "at IoU ≥ the evaluation's threshold, one-to-one); detected/total above each bar. Right: Dice of each "
           "matched lesion pair against the reference lesion's longest diameter; × = missed lesion (Dice 0).")
    return Figure(figure_svg(fig), cap, alt="lesion detection by size"), table_rows


# ---- worst-case pictures ------------------------------------------------------------------------
_FP_COLOR = (0.98, 0.62, 0.10)    # light in grey print
_FN_COLOR = (0.75, 0.05, 0.25)    # dark in grey print


def _panel(ax, p2: np.ndarray, r2: np.ndarray, other2: np.ndarray, color, spacing_rc: tuple[float, float],
           crop: tuple[int, int, int, int], flip_rows: bool, letters: tuple[str, str, str, str]) -> None:
    """Draw one slice: context (other labelled structures, pale), TP in the structure's colour, FN and FP
    filled and hatched differently, reference outline solid, prediction outline dashed."""
    r0, r1, c0, c1 = crop
    p2, r2, other2 = p2[r0:r1, c0:c1], r2[r0:r1, c0:c1], other2[r0:r1, c0:c1]
    h, w = p2.shape
    img = np.ones((h, w, 3))
    img[other2] = 0.88
    tp = p2 & r2
    img[tp] = 0.55 + 0.45 * np.asarray(color)
    errors = ((r2 & ~p2, _FN_COLOR, "\\\\\\\\"), (p2 & ~r2, _FP_COLOR, "////"))
    for mask, col, _ in errors:
        img[mask] = col
    sr, sc = spacing_rc
    extent = (0, w * sc, 0, h * sr)           # mm; rows drawn bottom-up when flip_rows (superior at top)
    origin = "lower" if flip_rows else "upper"
    ax.imshow(img, extent=extent, origin=origin, interpolation="nearest")
    xs = (np.arange(w) + 0.5) * sc
    ys = (np.arange(h) + 0.5) * sr
    if not flip_rows:
        ys = ys[::-1]
    for mask, col, hatch in errors:          # the fill is in the picture; the hatch drawn over it
        if mask.any():
            ax.contourf(xs, ys, mask.astype(float), levels=[0.5, 1.5], colors="none", hatches=[hatch])
    for mask, ls in ((r2, "-"), (p2, "--")):
        if mask.any() and not mask.all():
            ax.contour(xs, ys, mask.astype(float), levels=[0.5], colors="black", linewidths=0.9, linestyles=ls)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    top, bottom, left, right = letters
    for txt, xy, ha, va in ((top, (0.5, 0.99), "center", "top"), (bottom, (0.5, 0.01), "center", "bottom"),
                            (left, (0.01, 0.5), "left", "center"), (right, (0.99, 0.5), "right", "center")):
        ax.text(*xy, txt, transform=ax.transAxes, ha=ha, va=va, fontsize=7, fontweight="bold")
    # 10 mm scale bar, bottom left
    ax.plot([0.04 * w * sc, 0.04 * w * sc + 10], [0.06 * h * sr] * 2, color="black", linewidth=2)
    ax.text(0.04 * w * sc + 5, 0.06 * h * sr, "10 mm", ha="center", va="bottom", fontsize=6)


def worst_case_picture(ev: Evaluation, row: CaseRow, arrays, structure: str,
                       boxes: Optional[tuple[dict, dict]] = None) -> tuple[WorstCase, Optional[bytes]]:
    """The WorstCase record and its PNG picture (axial + coronal through the largest error).
    arrays: (pred, ref, spacing (z, y, x) mm, {structure: (pred labels, ref labels)}) or None."""
    from .reporting.plots import figure_png, new_figure, style

    wc = WorstCase(ev.label, structure, row.case, row.values.get("dice", float("nan")), dict(row.values), row.status)
    if arrays is None:
        wc.picture = "the case's label files could not be re-read (moved or deleted since the evaluation)"
        return wc, None
    pred, ref, spacing, structs = arrays
    if structure not in structs:
        wc.picture = "this structure is not compared in this case"
        return wc, None
    pl, rl = structs[structure]
    es = error_slices(pred, ref, pl, rl, boxes)
    if es["box"] is None:
        wc.picture = "neither prediction nor reference has this structure"
        return wc, None
    z, y = es["z"], es["y"]
    wc.z, wc.y, wc.box, wc.error_voxels = z, y, tuple(int(v) for v in es["box"]), es["error_voxels"]
    # the two slices only: full-size 2D masks (cheap even for a CT-sized map)
    pa, ra = _mask(pred[z], pl), _mask(ref[z], rl)
    pc, rc = _mask(pred[:, y], pl), _mask(ref[:, y], rl)
    wc.axial_fp, wc.axial_fn = pa & ~ra, ra & ~pa
    wc.coronal_fp, wc.coronal_fn = pc & ~rc, rc & ~pc
    z0, z1, y0, y1, x0, x1 = wc.box
    sz, sy, sx = spacing
    color = _scolor(structure)
    with style():
        ax_h = (y1 - y0) * sy
        co_h = (z1 - z0) * sz
        wmm = (x1 - x0) * sx
        ratio = max(ax_h, co_h) / max(wmm, 1e-6)
        fig = new_figure(6.6, min(4.2, max(2.2, 3.1 * ratio + 0.4)), layout=None)
        a1, a2 = fig.subplots(1, 2)
        fig.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.13, wspace=0.04)
        _panel(a1, pa, ra, (ref[z] > 0) & ~(pa | ra), color, (sy, sx), (y0, y1, x0, x1), False,
               ("A", "P", "R", "L"))
        a1.set_title(f"axial, slice z = {z}", loc="left", fontsize=8)
        _panel(a2, pc, rc, (ref[:, y] > 0) & ~(pc | rc), color, (sz, sx), (z0, z1, x0, x1), True,
               ("S", "I", "R", "L"))
        a2.set_title(f"coronal, row y = {y}", loc="left", fontsize=8)
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        fig.legend(handles=[Line2D([], [], color="black", linestyle="-", label="reference outline"),
                            Line2D([], [], color="black", linestyle="--", label="prediction outline"),
                            Patch(facecolor=_FN_COLOR, hatch="\\\\\\\\", edgecolor="black", label="missed (FN)"),
                            Patch(facecolor=_FP_COLOR, hatch="////", edgecolor="black", label="extra (FP)")],
                   loc="lower center", ncol=4, fontsize=6.5)
    return wc, figure_png(fig, dpi=110)


def _case_numbers(row: CaseRow, structure: str, ev: Evaluation) -> str:
    v = row.values
    parts = [f"Dice {_f(v.get('dice'))}", f"HD95 {_f(v.get('hd95'), 1)} mm", f"clDice {_f(v.get('cldice'))}",
             f"|Δb0| {_f(v.get('betti0_error'), 0)}", f"|Δb1| {_f(v.get('betti1_error'), 0)}",
             f"volume {_f(v.get('volume_pred_ml'), 1)} mL predicted / {_f(v.get('volume_ref_ml'), 1)} mL reference"]
    if structure in LESION_STRUCTURES and "lesion_recall" in v:
        parts.append(f"lesions found {int(v.get('lesion_detected', 0))}, missed {int(v.get('lesion_missed', 0))}, "
                     f"false {int(v.get('lesion_false', 0))}")
    if row.status != policy.OK:
        parts.append(policy.STATUS_TEXT.get(row.status, row.status))
    return "; ".join(parts) + "."


# ================================================================================================
# the document
# ================================================================================================
def _definitions(metrics_shown: Sequence[str]) -> list:
    items = []
    for m in metrics_shown:
        name, units, desc = METRIC_INFO.get(m, (m, "", ""))
        items.append((f"{name}{' (' + units + ')' if units else ''}", desc or name))
    items += [
        ("Volume (mL)", "voxel count × voxel volume of each mask; Bland–Altman bias = mean(predicted − reference), "
                        "limits of agreement = bias ± 1.96 × SD of the differences."),
        ("Lesion", "a 26-connected component of the CRLM mask; its size is its longest diameter (largest distance "
                   "between two voxel centres, mm)."),
        ("Lesion detection", "reference and predicted lesions are matched one-to-one in order of decreasing IoU; a "
                             "pair needs IoU ≥ the evaluation's threshold (default 0.1). Recall = detected / "
                             "reference lesions."),
        ("Worst cases", "the cases with the lowest Dice per structure; each is pictured through its largest error: "
                        "the largest 26-connected component of prediction XOR reference, on the axial and the "
                        "coronal slice holding most of it."),
    ]
    return items


def _policy_table() -> Table:
    """The empty-mask policy table of metrics.policy, as it is written there (one source)."""
    doc = policy.__doc__ or ""
    lines = doc.splitlines()
    rules = [i for i, ln in enumerate(lines) if ln.startswith("====")]
    rows = []
    if len(rules) >= 3:
        widths = [len(w) for w in lines[rules[0]].split()]
        starts = [0]
        for w in widths[:-1]:
            starts.append(starts[-1] + w + 2)

        def split(ln: str) -> list[str]:
            return [ln[s: (starts[k + 1] if k + 1 < len(starts) else None)].strip() for k, s in enumerate(starts)]

        header = split(lines[rules[0] + 1])
        for ln in lines[rules[1] + 1: rules[2]]:
            if ln.strip():
                rows.append(split(ln))
        return Table(header, rows, caption="Empty masks, NaN and inf (metrics.policy)", numeric=False, small=True)
    return Table(["policy"], [[doc]], numeric=False)


def _provenance_rows(ev: Evaluation) -> list[list[str]]:
    m = ev.manifest
    rows = [["Evaluation", ev.label]]
    if ev.folder:
        rows.append(["Folder", str(ev.folder)])
    for k, title in (("pred", "Predictions"), ("ref", "References"), ("command", "Command"),
                     ("created", "Evaluated on"), ("liverplan_version", "LiverPlan version (evaluation)")):
        if m.get(k):
            rows.append([title, str(m[k])])
    for k, title in (("pred_mapping", "Prediction label mapping"), ("ref_mapping", "Reference label mapping")):
        d = m.get(k)
        if d:
            rows.append([title, f"{d.get('name', 'custom')}: {json.dumps(d.get('json', {}), ensure_ascii=False)}"])
        elif m:
            rows.append([title, "LiverPlan's own labels (1 liver, 2 portal vein, 3 hepatic veins, 4 IVC, 5 CRLM)"])
    model = m.get("model")
    if isinstance(model, dict) and model:
        for k, v in model.items():
            if isinstance(v, (str, int, float)) and str(v):
                rows.append([f"Model: {k}", str(v)])
            elif isinstance(v, (dict, list)) and k not in ("evaluation",):
                rows.append([f"Model: {k}", json.dumps(v, ensure_ascii=False)[:600]])
    elif model:
        rows.append(["Model", str(model)])
    else:
        rows.append(["Model", "not recorded (the predictions' folder held no LiverPlan segmentation record)"])
    for k, title in (("lesion_min_iou", "Lesion match IoU threshold"), ("lesion_sizes_mm", "Lesion size thresholds (mm)")):
        if k in m:
            rows.append([title, str(m[k])])
    return rows


def metric_sections(evals: Sequence[Evaluation], data: ReportData, *, worst_k: int = 5, level: int = 1,
                    progress: ProgressCallback = no_progress, cancel: Optional[CancelToken] = None,
                    worst_of: Optional[Sequence[Evaluation]] = None) -> list:
    """The report's body for one evaluation (or two compared): table, distributions, volumes, lesions,
    paired tests, worst cases. Headings start at ``level``."""
    blocks: list = []
    h1, h2 = level, min(level + 1, 3)
    structures: list[str] = []
    for e in evals:
        for s in e.structures():
            if s not in structures:
                structures.append(s)
    if not structures:
        return [Paragraph("No case could be evaluated: there is nothing to plot.", "warning")]
    # 1 -- the study's table
    blocks.append(Heading("The study's table", h1))
    for e in evals:
        t = e.table()
        rows = t.rows()
        blocks.append(Table([rows[0][0]] + [_sname(s) for s in rows[0][1:]], rows[1:],
                            caption=(e.label if len(evals) > 1 else "Mean ± SD over cases"), notes=t.notes,
                            small=True))
    # 2 -- distributions
    check(cancel)
    blocks.append(Heading("Metric distributions per structure", h1))
    shown = [m for m in PLOT_METRICS if any(e.values(s, m) for e in evals for s in structures)]
    for i, m in enumerate(shown):
        progress("Plotting metric distributions", i, len(shown))
        blocks.append(distribution_figure(evals, m, structures, data))
    # 3 -- volumes
    check(cancel)
    fig, vrows = volume_figure(evals, structures, data)
    if fig is not None:
        blocks.append(Heading("Volumes: predicted against reference", h1))
        head = ["Structure"] + (["Evaluation"] if len(evals) > 1 else []) + [
            "n", "bias (mL)", "SD (mL)", "lower LoA (mL)", "upper LoA (mL)"]
        blocks.append(Group([fig, Table(head, vrows, caption="Bland–Altman (predicted − reference)", small=True)]))
    # 4 -- lesions
    for s in LESION_STRUCTURES:
        if s not in structures:
            continue
        fig, lrows = lesion_figure(evals, s, data)
        if fig is not None:
            blocks.append(Heading(f"{_sname(s)}: detection by lesion size", h1))
            head = ["Size bin"] + (["Evaluation"] if len(evals) > 1 else []) + ["lesions", "detected", "recall"]
            n_false = {e.label: sum(v for (c, st), v in e.false_lesions.items() if st == s) for e in evals}
            blocks.append(Group([fig, Table(head, lrows, caption="Reference lesions by longest diameter",
                                            notes=["False lesions (predicted, matching no reference lesion): "
                                                   + ", ".join(f"{k}: {v}" for k, v in n_false.items())],
                                            small=True)]))
    # 5 -- comparison
    if len(evals) == 2:
        check(cancel)
        blocks += comparison_blocks(evals[0], evals[1], data, h1)
    # 6 -- worst cases
    if worst_k > 0:
        blocks.append(Heading(f"The {worst_k} worst case{'s' if worst_k != 1 else ''} per structure (lowest Dice)",
                              h1))
        blocks.append(Paragraph("Each case is pictured through its largest error (the largest connected region where "
                                "prediction and reference disagree). Solid outline: reference; dashed: prediction; "
                                "dark fill with \\\\ hatching: missed by the prediction (false negative); light fill "
                                "with // hatching: predicted but not in the reference (false positive); pale grey: the "
                                "reference's other structures. Letters: patient orientation (R = right).", "note"))
        plan = [(e, s, worst_cases(e, s, worst_k)) for e in (worst_of or evals[:1]) for s in structures]
        # each case is read (and its label boxes found) once, for every structure it is a worst case of
        jobs: "OrderedDict[tuple[int, str], list]" = OrderedDict()
        for k, (e, s, rows) in enumerate(plan):
            for row in rows:
                jobs.setdefault((id(e), row.case), []).append((e, s, row))
        pictures: dict = {}
        todo = sum(len(v) for v in jobs.values())
        done = 0
        for (_, case), items in jobs.items():
            check(cancel)
            arrays = items[0][0].arrays(case)
            # all labels' boxes in one pass pay off when the case is pictured for several structures
            boxes = (label_boxes(arrays[0]), label_boxes(arrays[1])) if arrays is not None and len(items) > 1 \
                else None
            for e, s, row in items:
                progress("Picturing the worst cases", done, todo)
                pictures[(id(e), s, case)] = worst_case_picture(e, row, arrays, s, boxes)
                done += 1
            del arrays
        for e, s, rows in plan:
            if not rows:
                continue
            blocks.append(Heading(f"{_sname(s)}" + (f" — {e.label}" if len(evals) > 1 else ""), h2))
            for row in rows:
                wc, png = pictures[(id(e), s, row.case)]
                data.worst.append(wc)
                text = f"{row.case}: {_case_numbers(row, s, e)}"
                if png is None:
                    blocks.append(Paragraph(text + f" (No picture: {wc.picture}.)"))
                else:
                    blocks.append(Group([Image(png, text, width="78%", alt=f"{row.case} {_sname(s)} error slices")]))
        progress("Picturing the worst cases", todo, todo)
    return blocks


def comparison_blocks(a: Evaluation, b: Evaluation, data: ReportData, level: int = 1) -> list:
    """Paired differences per case (B − A) and the Wilcoxon signed-rank tests with effect sizes."""
    from .reporting.plots import figure_svg, new_figure, style

    tests = paired_tests(a, b)
    data.paired = tests
    blocks: list = [Heading("Paired comparison (B − A, same cases)", level),
                    Paragraph(f"A = {a.label}; B = {b.label}. For every structure and metric, the cases scored in "
                              "both evaluations are paired and the difference B − A is taken per case."),
                    Paragraph("Test: Wilcoxon signed-rank (two-sided, zero differences dropped). Why: the two "
                              "evaluations score the same cases (paired), and per-case differences of Dice, HD95 and "
                              "the Betti errors are bounded, heavy-tailed or tied, so normality (the paired t-test's "
                              "assumption) cannot be assumed. Effect sizes are given beside p: the median and mean "
                              "difference in the metric's units and the matched-pairs rank-biserial correlation r "
                              "(−1…1; |r| ≈ 0.1 small, 0.3 medium, ≥ 0.5 large). p (Holm) corrects for the number of "
                              "tests. Cases with an undefined or infinite value in either evaluation are excluded "
                              "(column 'excl.').", "note")]
    if not tests:
        blocks.append(Paragraph(f"No case and structure was scored in both evaluations (A: {len(a.cases())} "
                                f"case(s), B: {len(b.cases())} case(s); cases are paired by name): nothing to "
                                "compare pairwise.", "warning"))
        return blocks
    rows = []
    for t in tests:
        rows.append([_sname(t.structure), _mtitle(t.metric), str(t.n_pairs), str(t.n_excluded), _f(t.median_diff),
                     _f(t.mean_diff), _f(t.rank_biserial, 2), _f(t.statistic, 1), _p(t.p_value), _p(t.p_holm),
                     {"A": "A", "B": "B"}.get(t.favours, "–")])
    notes: dict[str, list[str]] = {}
    for t in tests:
        if t.note:
            notes.setdefault(t.note, []).append(f"{_sname(t.structure)} {_mtitle(t.metric)}")
    blocks.append(Table(["Structure", "Metric", "pairs", "excl.", "median Δ", "mean Δ", "r (rank-biserial)", "W",
                         "p", "p (Holm)", "favours"], rows, caption="Wilcoxon signed-rank tests", small=True,
                        notes=[f"{k}: {', '.join(v)}." for k, v in notes.items()]))
    shown = [m for m in COMPARE_METRICS if any(t.metric == m and t.n_pairs for t in tests)]
    if shown:
        with style():
            fig = new_figure(7.0, 1.9 * ((len(shown) + 1) // 2) + 0.2)
            axes = fig.subplots((len(shown) + 1) // 2, 2, squeeze=False).ravel()
            rng = np.random.default_rng(1)
            dense = max(len(a.cases()), len(b.cases())) > DENSE_CASES
            for ax, m in zip(axes, shown):
                ts = [t for t in tests if t.metric == m]
                for i, t in enumerate(ts):
                    if t.diffs is None or not t.diffs.size:
                        continue
                    jit = rng.uniform(-0.18, 0.18, t.diffs.size)
                    ax.scatter(i + jit, t.diffs, s=9, facecolor=(*_scolor(t.structure), 0.8), edgecolor="black",
                               linewidth=0.5, zorder=3, rasterized=dense)
                    ax.plot([i - 0.3, i + 0.3], [t.median_diff] * 2, color="black", linewidth=1.5)
                ax.axhline(0, color="#666", linewidth=0.8, linestyle="--")
                ax.set_xticks(range(len(ts)))
                ax.set_xticklabels([_short(_sname(t.structure), 11) for t in ts], fontsize=6)
                ax.set_title(f"Δ {_mtitle(m)} (B − A)", loc="left", fontsize=8)
            for ax in axes[len(shown):]:
                ax.set_visible(False)
        blocks.append(Figure(figure_svg(fig), "Paired differences per case (B − A); bar: median; dashed: no "
                                              "difference.", alt="paired differences"))
    return blocks


def _p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def appendix_blocks(evals: Sequence[Evaluation], level: int = 1) -> list:
    """Metric definitions, the empty-mask policy and provenance."""
    shown = list(STUDY_METRICS) + ["lesion_recall", "lesion_precision", "lesion_f1", "lesion_dice"]
    blocks: list = [PageBreak(), Heading("Appendix: metric definitions and the empty-mask policy", level),
                    DefinitionList(_definitions(shown)),
                    Paragraph("A structure missing from one mask is never dropped from an average: its Dice enters "
                              "as 0, its HD95 is infinite and counted in the table cell's 'inf'; a structure the "
                              "reference convention cannot provide is 'not evaluated', never zero.", "note"),
                    _policy_table(), Heading("Appendix: provenance", level)]
    for e in evals:
        blocks.append(Table(["Item", "Value"], _provenance_rows(e), caption=e.label, numeric=False, small=True))
        if e.failed:
            blocks.append(Paragraph("Not evaluated: " + "; ".join(f"{n} ({err})" for n, err in e.failed), "warning"))
        m = e.manifest
        if m.get("only_pred") or m.get("only_ref"):
            blocks.append(Paragraph(
                "Unpaired files: " + "; ".join(x for x in (
                    ("predictions without reference: " + ", ".join(m.get("only_pred", []))) if m.get("only_pred") else "",
                    ("references without prediction: " + ", ".join(m.get("only_ref", []))) if m.get("only_ref") else "")
                    if x), "note"))
    return blocks


def _is_demo(evals: Sequence[Evaluation]) -> bool:
    for e in evals:
        model = e.manifest.get("model")
        if isinstance(model, dict) and (model.get("demo") or "not for clinical use" in json.dumps(model).lower()):
            return True
    return False


def build_metric_report(evaluation: Evaluation, compare: Optional[Evaluation] = None, *, worst_k: int = 5,
                        training=None, title: Optional[str] = None,
                        progress: ProgressCallback = no_progress,
                        cancel: Optional[CancelToken] = None) -> tuple[Document, ReportData]:
    """The metric report of one evaluation (with ``compare``: A = evaluation, B = compare).

    training: an :class:`engine.training.curves.TrainingCurves` to add nnU-Net's curves.
    Returns the Document (write it with engine.reporting.write_document) and the numbers behind it.
    """
    from .evaluation import liverplan_version

    evals = [evaluation] + ([compare] if compare is not None else [])
    if compare is not None and compare.label == evaluation.label:
        compare.label = compare.label + " (B)"
        evaluation.label = evaluation.label + " (A)"
    data = ReportData()
    doc = Document(title or ("Metric report" if compare is None else "Metric report: two evaluations compared"),
                   subtitle=" vs ".join(e.label for e in evals),
                   meta={"title": title or "LiverPlan metric report", "generator": "LiverPlan"})
    n = [f"{e.label}: {len(e.cases())} case(s) evaluated" + (f", {len(e.failed)} failed" if e.failed else "")
         for e in evals]
    doc.header_lines = n + [f"Report made {doc.created_text()} by LiverPlan {liverplan_version()}"]
    if _is_demo(evals):
        doc.footer = "Demo model — synthetic data — not for clinical use"
    if training is not None:
        from .training.curves import curves_blocks
        doc.add(*curves_blocks(training, data, level=1))
    doc.add(*metric_sections(evals, data, worst_k=worst_k, progress=progress, cancel=cancel))
    doc.add(*appendix_blocks(evals))
    return doc, data


def write_metric_report(eval_dir: Union[str, Path], out_dir: Optional[Union[str, Path]] = None,
                        compare_dir: Optional[Union[str, Path]] = None, *, worst_k: int = 5,
                        formats: Sequence[str] = ("html", "pdf"), overwrite: bool = False,
                        progress: ProgressCallback = no_progress,
                        cancel: Optional[CancelToken] = None) -> tuple[list[Path], ReportData]:
    """Read an evaluation folder (and another to compare), write ``report.html`` / ``report.pdf`` into
    ``out_dir`` (default: the evaluation folder). Returns the paths written and the report's numbers."""
    from .reporting import write_document

    ev = load_evaluation(eval_dir)
    other = load_evaluation(compare_dir) if compare_dir else None
    doc, data = build_metric_report(ev, other, worst_k=worst_k, progress=progress, cancel=cancel)
    paths = write_document(doc, out_dir or eval_dir, "report" if other is None else "comparison", formats,
                           overwrite=overwrite)
    return paths, data


def write_case_report(result: CaseResult, pred: np.ndarray, ref: np.ndarray, geometry, out_dir: Union[str, Path], *,
                      case_name: str = "case", ref_mapping=None, reference_name: str = "",
                      label_source: str = "", worst_k: int = 1, formats: Sequence[str] = ("html", "pdf"),
                      overwrite: bool = False, progress: ProgressCallback = no_progress,
                      cancel: Optional[CancelToken] = None) -> list[Path]:
    """The metric report of one evaluated case held in memory (the window's Evaluate tab > Export report).

    result: what :func:`engine.evaluation.evaluate_pair` returned for ``pred`` vs ``ref`` (uint8 (z, y, x)
    LiverPlan label maps on ``geometry``). Writes ``<case_name>_metric_report.html/.pdf`` into ``out_dir``.
    """
    from .evaluation import structure_plan
    from .reporting import write_document

    manifest = {"pred": label_source or "the labels on screen", "ref": reference_name or "reference",
                "model": {"name": label_source} if label_source else None}
    ev = evaluation_from_results(case_name, [(case_name, result)], manifest,
                                 {case_name: (pred, ref, tuple(geometry.spacing),
                                              dict(structure_plan(ref_mapping).structures))})
    doc, _ = build_metric_report(ev, worst_k=worst_k, title=f"Metric report: {case_name}", progress=progress,
                                 cancel=cancel)
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case_name) + "_metric_report"
    return write_document(doc, out_dir, stem, formats, overwrite=overwrite)


def write_training_report(sets: Sequence[tuple[str, Union[str, Path]]], out_dir: Union[str, Path], *,
                          fold_dir: Optional[Union[str, Path]] = None, title: str = "Training report",
                          worst_k: int = 5, formats: Sequence[str] = ("html", "pdf"), overwrite: bool = False,
                          progress: ProgressCallback = no_progress,
                          cancel: Optional[CancelToken] = None) -> list[Path]:
    """The training pipeline's final report (the study's Tables 3/4 and their figures): nnU-Net's training
    curves (from ``fold_dir``), then the metric report of each evaluated set (e.g. ("Held-out test set",
    dir), ("External set", dir)), then one appendix. Writes ``training_report.html/.pdf`` into ``out_dir``."""
    from .evaluation import liverplan_version
    from .reporting import write_document

    evals = [load_evaluation(d, label=t) for t, d in sets]
    data = ReportData()
    doc = Document(title, subtitle=" · ".join(f"{e.label}: {len(e.cases())} case(s)" for e in evals),
                   meta={"title": title, "generator": "LiverPlan"})
    doc.header_lines = [f"Report made {doc.created_text()} by LiverPlan {liverplan_version()}"]
    model = next((e.manifest.get("model") for e in evals if isinstance(e.manifest.get("model"), dict)), None)
    if model:
        doc.header_lines = [f"Model: {model.get('name', '')} {model.get('version', '')}".strip()] + list(doc.header_lines)
    if _is_demo(evals):
        doc.footer = "Demo model — synthetic data — not for clinical use"
    if fold_dir is not None:
        from .training.curves import curves_blocks, read_training_curves
        doc.add(*curves_blocks(read_training_curves(fold_dir), data, level=1))
    for e in evals:
        check(cancel)
        doc.add(Heading(e.label, 1))
        doc.add(*metric_sections([e], data, worst_k=worst_k, level=2, progress=progress, cancel=cancel))
    doc.add(*appendix_blocks(evals))
    return write_document(doc, out_dir, "training_report", formats, overwrite=overwrite)
