"""Voxel-overlap metrics from the confusion counts (unitless, in [0, 1]).

TP = |P ∩ R|, FP = |P \\ R|, FN = |R \\ P|, TN = voxels in neither, counted over the WHOLE image grid
(FPR depends on the image size: the study's FPR is tiny for that reason). No connectivity is involved.
Empty masks follow :mod:`metrics.policy` (table there); the formulas:

* Dice       = 2 TP / (2 TP + FP + FN)
* Jaccard    = TP / (TP + FP + FN)
* precision  = TP / (TP + FP)
* recall     = TP / (TP + FN)       (sensitivity)
* FPR        = FP / (FP + TN)       (1 - specificity)
* FNR        = FN / (FN + TP)       (1 - recall)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import policy


@dataclass(frozen=True)
class Confusion:
    """Voxel counts of one binary comparison over the whole grid."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    @property
    def n_ref(self) -> int:
        return self.tp + self.fn

    @property
    def status(self) -> str:
        return policy.emptiness(self.n_pred, self.n_ref)


def confusion(pred: np.ndarray, ref: np.ndarray, total: int | None = None) -> Confusion:
    """Confusion counts of two boolean masks of equal shape.

    ``total``: number of voxels of the full image when ``pred``/``ref`` are crops that hold every
    foreground voxel of both (TN is then total - TP - FP - FN).
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    n_p = int(np.count_nonzero(pred))
    n_r = int(np.count_nonzero(ref))
    tp = int(np.count_nonzero(pred & ref)) if n_p and n_r else 0
    fp, fn = n_p - tp, n_r - tp
    tot = int(pred.size if total is None else total)
    return Confusion(tp, fp, fn, tot - tp - fp - fn)


def dice(c: Confusion) -> float:
    """Dice = 2TP/(2TP+FP+FN); 0 when exactly one mask is empty, NaN when both are (policy)."""
    return policy.ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def jaccard(c: Confusion) -> float:
    """Jaccard (IoU) = TP/(TP+FP+FN); 0 when exactly one mask is empty, NaN when both are."""
    return policy.ratio(c.tp, c.tp + c.fp + c.fn)


def precision(c: Confusion) -> float:
    """Precision = TP/(TP+FP). Empty prediction: 0 if the reference has the structure (a miss scores
    worst), NaN if neither has it."""
    return policy.ratio(c.tp, c.tp + c.fp, 0.0 if c.n_ref else policy.NAN)


def recall(c: Confusion) -> float:
    """Recall (sensitivity) = TP/(TP+FN); NaN when the reference is empty (nothing to recall)."""
    return policy.ratio(c.tp, c.tp + c.fn)


def fpr(c: Confusion) -> float:
    """False-positive rate = FP/(FP+TN) over the whole grid; NaN only if the grid is all reference."""
    return policy.ratio(c.fp, c.fp + c.tn)


def fnr(c: Confusion) -> float:
    """False-negative rate = FN/(FN+TP) = 1 - recall; NaN when the reference is empty."""
    return policy.ratio(c.fn, c.fn + c.tp)


def overlap_metrics(c: Confusion) -> dict[str, float]:
    """All six overlap metrics of one confusion, keyed dice/jaccard/precision/recall/fpr/fnr."""
    return {"dice": dice(c), "jaccard": jaccard(c), "precision": precision(c), "recall": recall(c),
            "fpr": fpr(c), "fnr": fnr(c)}
