"""Cohort aggregation in the study's layout: metric rows × structure columns, mean ± SD over cases.

Each cell is a :class:`metrics.policy.Summary` (mean ± sample SD over finite values, n, and how many
values were undefined (NaN) or infinite). Extra rows count, per structure, the cases evaluated and how
many had an empty prediction or an empty reference, so a missed structure is always visible.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from . import policy
from .suite import METRIC_INFO, STUDY_METRICS

COUNT_ROWS = ("cases", "pred_empty", "ref_empty", "both_empty")
COUNT_TITLES = {"cases": "n (cases evaluated)", "pred_empty": "prediction empty (missed)",
                "ref_empty": "reference empty", "both_empty": "both empty"}


@dataclass
class Table:
    """Aggregated cohort table. ``cells[(metric, structure)]`` is a Summary; ``counts[(row, structure)]``
    an int; ``notes`` plain-language remarks printed under the table (policy, merged references ...)."""

    metrics: list[str]
    structures: list[str]
    cells: dict[tuple[str, str], policy.Summary]
    counts: dict[tuple[str, str], int]
    notes: list[str] = field(default_factory=list)
    digits: int = 3
    not_applicable: set = field(default_factory=set)   # (metric, structure) cells that do not apply

    def _title(self, m: str) -> str:
        if m.startswith("lesion_recall_ge") and m not in METRIC_INFO:
            return f"Lesion recall (>= {m[len('lesion_recall_ge'):-2]} mm)"
        name, units, _ = METRIC_INFO.get(m, (m, "", ""))
        return f"{name} ({units})" if units else name

    def rows(self) -> list[list[str]]:
        """Header + rows of text cells (the layout every writer uses)."""
        out = [["Metric"] + list(self.structures)]
        for m in self.metrics:
            out.append([self._title(m)] + ["n/a" if (m, s) in self.not_applicable
                                            else self.cells[(m, s)].cell(self.digits) for s in self.structures])
        for c in COUNT_ROWS:
            out.append([COUNT_TITLES[c]] + [str(self.counts.get((c, s), 0)) for s in self.structures])
        return out

    def to_markdown(self) -> str:
        rows = [[c.replace("|", "\\|") for c in r] for r in self.rows()]   # |Δb0| must not split a cell
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join(["---"] + [":---:"] * (len(rows[0]) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        text = "\n".join(lines) + "\n"
        if self.notes:
            text += "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"
        return text

    def to_text(self) -> str:
        """Aligned plain text for a terminal."""
        rows = self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        lines = [fmt(rows[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows[1:]]
        text = "\n".join(lines) + "\n"
        if self.notes:
            text += "\n" + "\n".join(f"* {n}" for n in self.notes) + "\n"
        return text

    def to_csv(self) -> str:
        """Long format: one line per (metric, structure) with mean, sd, n, n_nan, n_inf."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["metric", "structure", "mean", "sd", "n", "n_finite", "n_undefined", "n_inf", "inf_penalty",
                    "cell"])
        for m in self.metrics:
            for s in self.structures:
                c = self.cells[(m, s)]
                w.writerow([m, s, _num(c.mean), _num(c.sd), c.n, c.n_finite, c.n_nan, c.n_inf,
                            "" if c.inf_penalty is None else c.inf_penalty, c.cell(self.digits)])
        for cr in COUNT_ROWS:
            for s in self.structures:
                w.writerow([cr, s, self.counts.get((cr, s), 0), "", "", "", "", "", "", ""])
        return buf.getvalue()

    def to_json(self) -> str:
        d = {"layout": "metric rows x structure columns, mean ± SD (sample SD) over finite values",
             "metrics": {m: {"title": self._title(m), "description": METRIC_INFO.get(m, ("", "", ""))[2],
                             "structures": {s: self.cells[(m, s)].to_dict() for s in self.structures}}
                         for m in self.metrics},
             "counts": {c: {s: self.counts.get((c, s), 0) for s in self.structures} for c in COUNT_ROWS},
             "notes": self.notes}
        return json.dumps(d, indent=2, ensure_ascii=False)


def _num(x: float) -> str:
    return policy._json_num(x) if x == x and abs(x) != float("inf") else str(policy._json_num(x))


def _cohort_value(r, s: str, m: str) -> float:
    """A case's value as it enters a cohort cell. seg-metrics scores a distance to an empty mask 0 (its
    convention, kept in the per-case tables); averaged in, that would read as a perfect score, so in a
    cohort cell it counts like HD95's: inf for one empty mask, undefined for both."""
    v = r[s][m]
    if m == "hd95_segmetrics":
        st = getattr(r, "status", {}).get(s, policy.OK)
        if st in (policy.PRED_EMPTY, policy.REF_EMPTY):
            return float("inf")
        if st == policy.BOTH_EMPTY:
            return policy.NAN
    return v


def cohort_table(results: Iterable[Mapping], metrics: Optional[Sequence[str]] = None,
                 structures: Optional[Sequence[str]] = None, inf_penalty: Optional[float] = None,
                 notes: Sequence[str] = ()) -> Table:
    """Aggregate per-case results (:class:`metrics.suite.CaseResult` or plain {structure: {metric: v}}).

    metrics: rows (default the study's: Dice ... |ΔEuler|, plus lesion rows when present). structures:
    columns (default: every structure seen, in first-seen order). inf_penalty: value replacing inf before
    averaging (default None: infinite values are counted, not averaged). A structure with status
    ``not_in_reference`` in a case does not count toward that cell's n.
    """
    results = list(results)
    if structures is None:
        structures = []
        for r in results:
            for k in r:
                if k not in structures:
                    structures.append(k)
    if metrics is None:
        metrics = list(STUDY_METRICS)
        extra = [m for m in ("lesion_recall", "lesion_precision", "lesion_f1", "lesion_dice")
                 if any(m in r.get(s, {}) for r in results for s in structures)]
        extra += sorted({m for r in results for s in structures for m in r.get(s, {})
                         if m.startswith("lesion_recall_ge")})
        metrics = metrics + extra
    cells: dict = {}
    counts: dict = {}
    na: set = set()
    for s in structures:
        evaluated = []
        for r in results:
            st = getattr(r, "status", {}).get(s, policy.OK if s in r else policy.NOT_IN_REFERENCE)
            if st == policy.NOT_IN_REFERENCE or s not in r:
                continue
            evaluated.append(r)
            counts[(st, s)] = counts.get((st, s), 0) + 1
        counts[("cases", s)] = len(evaluated)
        for m in metrics:
            vals = [_cohort_value(r, s, m) for r in evaluated if m in r[s]]
            cells[(m, s)] = policy.summarize(vals, inf_penalty)
            if not vals and evaluated:
                na.add((m, s))
    all_notes = list(notes)
    all_notes.append("Cells: mean ± SD (sample SD, n − 1) over cases with a finite value; 'k inf' = distances "
                     "to a missing surface (prediction or reference empty), 'k undef' = undefined values (e.g. both "
                     "empty, empty "
                     "skeleton); neither enters the mean" + (f" unless inf is replaced by {inf_penalty}"
                                                            if inf_penalty is not None else "") + ".")
    if any(counts.get(("pred_empty", s), 0) for s in structures):
        all_notes.append("A missed structure (prediction empty) scores Dice/Jaccard/precision/recall/clDice 0 "
                         "and FNR 1 and is included in those means.")
    return Table(list(metrics), list(structures), cells, counts, all_notes, not_applicable=na)
