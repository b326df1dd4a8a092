"""The one written policy for empty masks, NaN and inf (every metric in metrics/ follows it).

Vocabulary. For one structure of one case, P is the predicted mask and R the reference mask.

* ``ok``          both non-empty: every metric is computed from its formula.
* ``pred_empty``  R non-empty, P empty: the prediction MISSED the structure.
* ``ref_empty``   P non-empty, R empty: the prediction invents a structure the reference does not have.
* ``both_empty``  neither has the structure (a true negative for the whole structure).
* ``not_in_reference`` the reference convention cannot provide the structure at all (e.g. IRCADb has no
  separate IVC). Such a structure is NOT evaluated: every value is NaN and the table says so. It never
  counts as a zero.

Values per situation (``-`` = the formula applies unchanged):

================  ===========  ===========  ===========  ===========
metric            pred_empty   ref_empty    both_empty   why
================  ===========  ===========  ===========  ===========
Dice, Jaccard     0            0            NaN          formula gives 0; 0/0 when both empty
precision         0 (policy)   0            NaN          a miss must score worst, not drop out
recall            0            NaN          NaN          0/0: there is nothing to recall
FPR               0            -            0            FP = 0 (TN > 0)
FNR               1            NaN          NaN          0/0: there is nothing to miss
HD95/HD/ASSD      inf          inf          NaN          no surface to measure from/to
HD95 seg-metrics  0 (flagged)  0 (flagged)  0 (flagged)  what seg-metrics returns; flagged in notes
clDice            0            0            NaN          Tsens (or Tprec) is 0, harmonic mean is 0
b0, b1, Euler     -            -            -            all well defined (0 for an empty mask)
lesion recall     0            NaN          NaN          0 of n lesions found / 0 of 0
================  ===========  ===========  ===========  ===========

NaN always means "undefined here" and comes with a reason in the case's ``notes``. A clDice whose
skeleton is empty although the mask is not (Lee thinning deletes some even-thickness objects, e.g. a
2x2-voxel rod) is NaN with that reason, never 0 or 1.

Aggregation (:func:`summarize`): the mean and the sample SD (ddof = 1) are taken over the FINITE values;
the cell also reports n (cases evaluated), how many were NaN (undefined) and how many were inf
(a missed or invented structure for a distance). So a structure the prediction misses can never drop out
of an average silently: its Dice enters the mean as 0, its HD95 is counted in the "inf" column of that
cell. Callers who want one number including misses can pass ``inf_penalty`` (e.g. the image diagonal in
mm), which replaces each inf before averaging; the table states the replacement.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

OK = "ok"
PRED_EMPTY = "pred_empty"
REF_EMPTY = "ref_empty"
BOTH_EMPTY = "both_empty"
NOT_IN_REFERENCE = "not_in_reference"

NAN = float("nan")
INF = float("inf")

#: A structure's status in a table a person reads (the Evaluate tab, its CSV): short words.
STATUS_WORDS = {OK: "ok", PRED_EMPTY: "missed (prediction empty)", REF_EMPTY: "reference empty",
                BOTH_EMPTY: "both empty", NOT_IN_REFERENCE: "not in reference"}

STATUS_TEXT = {
    OK: "both masks present",
    PRED_EMPTY: "the prediction misses the structure entirely",
    REF_EMPTY: "the reference has no such structure but the prediction has",
    BOTH_EMPTY: "neither prediction nor reference has the structure",
    NOT_IN_REFERENCE: "the reference convention does not provide this structure; not evaluated",
}


def emptiness(n_pred: int, n_ref: int) -> str:
    """The status word for voxel counts of prediction and reference."""
    if n_pred and n_ref:
        return OK
    if n_ref:
        return PRED_EMPTY
    if n_pred:
        return REF_EMPTY
    return BOTH_EMPTY


def ratio(num: float, den: float, when_undefined: float = NAN) -> float:
    """num / den, or ``when_undefined`` when den == 0 (the policy decides which)."""
    return float(num) / float(den) if den else float(when_undefined)


@dataclass(frozen=True)
class Summary:
    """Aggregate of one metric for one structure over a cohort.

    mean and sd over the finite values (sd: sample SD, ddof = 1; NaN when fewer than 2 values);
    n: number of cases evaluated (the structure present in the reference convention);
    n_nan: values undefined (both empty, empty skeleton, ...); n_inf: infinite values (distance to a
    missing surface); inf_penalty: the value that replaced inf before averaging, or None.
    """

    mean: float
    sd: float
    n: int
    n_finite: int
    n_nan: int
    n_inf: int
    inf_penalty: Optional[float] = None

    def cell(self, digits: int = 3) -> str:
        """Text for a table cell: 'mean ± SD' plus counts of what was not averaged."""
        if self.n == 0:
            return "not evaluated"
        if self.n_finite == 0 and not (self.inf_penalty is not None and self.n_inf):
            core = "undefined" if self.n_inf == 0 else "inf"
        else:
            core = _fmt(self.mean, digits)
            if not math.isnan(self.sd):
                core += f" ± {_fmt(self.sd, digits)}"
        extras = []
        if self.n_inf:
            extras.append(f"{self.n_inf} inf" + (f"→{_fmt(self.inf_penalty, digits)}"
                                                  if self.inf_penalty is not None else ""))
        if self.n_nan:
            extras.append(f"{self.n_nan} undef")
        return core + (f" ({', '.join(extras)})" if extras else "")

    def to_dict(self) -> dict:
        return {"mean": _json_num(self.mean), "sd": _json_num(self.sd), "n": self.n,
                "n_finite": self.n_finite, "n_nan": self.n_nan, "n_inf": self.n_inf,
                "inf_penalty": self.inf_penalty}


def summarize(values: Iterable[float], inf_penalty: Optional[float] = None) -> Summary:
    """Mean ± SD of a metric's per-case values under this module's policy (see the module docstring)."""
    v = np.asarray([float(x) for x in values], dtype=float)
    n = int(v.size)
    is_nan = np.isnan(v)
    is_inf = np.isinf(v)
    vals = v[~is_nan & ~is_inf]
    if inf_penalty is not None and is_inf.any():
        vals = np.concatenate([vals, np.full(int(is_inf.sum()), float(inf_penalty))])
    mean = float(vals.mean()) if vals.size else NAN
    sd = float(vals.std(ddof=1)) if vals.size > 1 else NAN
    return Summary(mean, sd, n, int(vals.size), int(is_nan.sum()), int(is_inf.sum()),
                   float(inf_penalty) if inf_penalty is not None else None)


def _fmt(x: float, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def _json_num(x: float):
    """JSON has no NaN/inf: they are written as the strings 'nan' / 'inf'."""
    if x is None:
        return None
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)
