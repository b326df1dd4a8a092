"""Lesion-wise detection for CRLM: which reference lesions were found, which were missed, which are false.

Lesions are the 26-connected components of each mask (docs/architecture.md, "Conventions"). Matching rule (one-to-one):
every (reference lesion, predicted lesion) pair that shares at least one voxel is a candidate; candidates
are taken in order of decreasing IoU (ties: larger overlap first, then lower ids), and a pair is matched
when neither lesion is matched yet and its IoU >= ``min_iou`` (default 0.1, so a sliver touching a lesion
does not count as finding it). Unmatched reference lesions are MISSED, unmatched predicted lesions FALSE.

* lesion recall    = detected / reference lesions        (NaN when the reference has none)
* lesion precision = matched predicted / predicted lesions (when the prediction has none: 0 if the
                     reference has lesions — nothing found is no precision — and NaN if it has none either)
* lesion F1        = 2 · precision · recall / (precision + recall)  (0 if both are 0)
* per-lesion Dice  = Dice of each matched pair (unitless); the mean over the matched pairs is reported
                     (missed lesions show in the recall, not here), except that a case whose reference
                     lesions were all missed scores 0 (not undefined, so it still counts in a cohort's
                     mean), and a case without reference lesions NaN.

Size: each reference lesion's diameter in mm is its longest extent, the largest distance between two of
its voxel centres (mm, anisotropic spacing, exact: computed over the convex hull of its border voxels);
``size_thresholds_mm`` gives lesion recall restricted to reference lesions with diameter >= threshold
(e.g. 10 mm: "lesion-wise recall >= 0.9 for lesions >= 10 mm"). Empty masks follow :mod:`metrics.policy`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from . import _grid, policy

try:
    import cc3d  # type: ignore
except ImportError:  # pragma: no cover
    cc3d = None


def label_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components: (int32 label array, count). Labels 1..n in scan order."""
    m = np.asarray(mask, dtype=bool)
    if cc3d is not None:
        lab, n = cc3d.connected_components(m, connectivity=26, return_N=True)
        return lab.astype(np.int32, copy=False), int(n)
    lab, n = ndi.label(m, structure=np.ones((3, 3, 3), bool))
    return lab.astype(np.int32, copy=False), int(n)


def longest_diameter_mm(coords_zyx: np.ndarray, spacing: Sequence[float]) -> float:
    """Largest distance (mm) between two voxel centres of a lesion given as (n, 3) (z, y, x) indices."""
    pts = np.asarray(coords_zyx, dtype=float) * np.asarray(spacing, dtype=float)
    if len(pts) < 2:
        return 0.0
    if len(pts) > 64:
        try:
            from scipy.spatial import ConvexHull
            pts = pts[ConvexHull(pts).vertices]
        except Exception:  # flat (coplanar) lesions have no 3D hull; the brute force below is exact
            pass
    best = 0.0
    for i in range(0, len(pts), 256):
        d = np.sqrt(((pts[i:i + 256, None, :] - pts[None, :, :]) ** 2).sum(-1))
        best = max(best, float(d.max()))
    return best


@dataclass
class LesionMatch:
    """One reference lesion and its matched prediction (pred_id 0 when missed)."""

    ref_id: int
    pred_id: int
    ref_volume_ml: float
    ref_diameter_mm: float
    iou: float
    dice: float


@dataclass
class LesionDetection:
    """Lesion-wise detection summary of one case (module docstring for the rule)."""

    n_ref: int
    n_pred: int
    detected: int
    missed: int
    false: int
    recall: float
    precision: float
    f1: float
    mean_lesion_dice: float
    recall_by_size: dict[float, float] = field(default_factory=dict)
    n_ref_by_size: dict[float, int] = field(default_factory=dict)
    matches: list[LesionMatch] = field(default_factory=list)
    min_iou: float = 0.1

    def as_metrics(self) -> dict[str, float]:
        """Flat metric dict for tables (keys lesion_*)."""
        out = {"lesion_detected": float(self.detected), "lesion_missed": float(self.missed),
               "lesion_false": float(self.false), "lesion_recall": self.recall,
               "lesion_precision": self.precision, "lesion_f1": self.f1,
               "lesion_dice": self.mean_lesion_dice}
        for t, v in self.recall_by_size.items():
            out[f"lesion_recall_ge{_fmt_mm(t)}mm"] = v
        return out


def _fmt_mm(t: float) -> str:
    return str(int(t)) if float(t).is_integer() else str(t)


def detect_lesions(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], min_iou: float = 0.1,
                   size_thresholds_mm: Sequence[float] = (10.0,)) -> LesionDetection:
    """Match predicted to reference lesions (boolean (z, y, x) masks; spacing (z, y, x) mm)."""
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    if p.shape != r.shape:
        raise ValueError(f"prediction {p.shape} and reference {r.shape} differ in shape")
    box = _grid.union_box(_grid.bbox(p), _grid.bbox(r))
    if box is None:
        nan = policy.NAN
        return LesionDetection(0, 0, 0, 0, 0, nan, nan, nan, nan, {t: nan for t in size_thresholds_mm},
                               {t: 0 for t in size_thresholds_mm}, [], min_iou)
    p, r = p[box], r[box]
    lp, n_p = label_lesions(p)
    lr, n_r = label_lesions(r)
    vox_ml = float(np.prod(spacing)) / 1000.0
    size_p = np.bincount(lp.ravel(), minlength=n_p + 1)
    size_r = np.bincount(lr.ravel(), minlength=n_r + 1)
    both = (lp > 0) & (lr > 0)
    pairs: list[tuple[float, int, int, int]] = []
    if both.any():
        key = lr[both].astype(np.int64) * (n_p + 1) + lp[both]
        uk, cnt = np.unique(key, return_counts=True)
        for k, c in zip(uk.tolist(), cnt.tolist()):
            ri, pi = divmod(k, n_p + 1)
            iou = c / (size_r[ri] + size_p[pi] - c)
            pairs.append((iou, c, ri, pi))
    pairs.sort(key=lambda t: (-t[0], -t[1], t[2], t[3]))
    match_r: dict[int, tuple[int, float, float]] = {}
    used_p: set[int] = set()
    for iou, c, ri, pi in pairs:
        if iou < min_iou or ri in match_r or pi in used_p:
            continue
        match_r[ri] = (pi, iou, 2.0 * c / (size_r[ri] + size_p[pi]))
        used_p.add(pi)
    diam = {}
    if n_r:
        for i, sl in enumerate(ndi.find_objects(lr), start=1):
            if sl is None:
                continue
            comp = lr[sl] == i
            # only border voxels can realise the longest distance
            b = comp & ~ndi.binary_erosion(comp, border_value=0)
            coords = np.argwhere(b) + np.array([s.start for s in sl])
            diam[i] = longest_diameter_mm(coords, spacing)
    matches = []
    for i in range(1, n_r + 1):
        pi, iou, d = match_r.get(i, (0, 0.0, 0.0))
        matches.append(LesionMatch(i, pi, float(size_r[i]) * vox_ml, diam.get(i, 0.0), float(iou), float(d)))
    detected = len(match_r)
    missed = n_r - detected
    false = n_p - len(used_p)
    recall = policy.ratio(detected, n_r)
    precision = policy.ratio(len(used_p), n_p, 0.0 if n_r else policy.NAN)
    if math.isnan(recall) or math.isnan(precision):
        f1 = policy.NAN if n_r == 0 and n_p == 0 else 0.0
    else:
        f1 = 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)
    mean_dice = float(np.mean([m.dice for m in matches if m.pred_id])) if detected else (
        0.0 if n_r else policy.NAN)
    rbs, nbs = {}, {}
    for t in size_thresholds_mm:
        big = [m for m in matches if m.ref_diameter_mm >= t]
        nbs[float(t)] = len(big)
        rbs[float(t)] = policy.ratio(sum(1 for m in big if m.pred_id), len(big))
    return LesionDetection(n_r, n_p, detected, missed, false, recall, precision, f1, mean_dice, rbs, nbs,
                           matches, min_iou)
