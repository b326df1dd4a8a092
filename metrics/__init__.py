"""LiverPlan's evaluation library: the study's metric suite as pure functions over numpy arrays + spacing.

Arrays are (z, y, x); spacing is (z, y, x) mm. Depends only on numpy, scipy, scikit-image and cc3d.

* :func:`evaluate_case` — every metric for every structure of one case (metrics.suite).
* :mod:`metrics.overlap` — Dice, Jaccard, precision, recall, FPR, FNR.
* :mod:`metrics.distance` — HD95 (Metrics Reloaded/MONAI default; pooled/MedPy, seg-metrics, DeepMind
  surface variants), HD, ASSD in mm.
* :mod:`metrics.centerline` — clDice (Shit et al. 2021).
* :mod:`metrics.topology` — Betti numbers b0, b1, b2, Euler characteristic (26/6 connectivity).
* :mod:`metrics.lesions` — lesion-wise detection (CRLM).
* :mod:`metrics.policy` — the one policy for empty masks, NaN and inf; cohort summaries.
* :func:`cohort_table` — the study's table (metric rows × structure columns, mean ± SD).
"""
from .centerline import cldice, cldice_value, skeleton
from .cohort import Table, cohort_table
from .distance import HD95_VARIANTS, assd, hausdorff, hd95
from .lesions import detect_lesions
from .overlap import confusion, overlap_metrics
from .policy import STATUS_WORDS, Summary, summarize
from .suite import (ALL_METRICS, COUNT_METRICS, DEFAULT_STRUCTURES, METRIC_INFO, STUDY_METRICS, CaseResult, evaluate_case,
                    resolve_structures)
from .topology import Betti, betti_errors, betti_numbers, euler_characteristic

__all__ = ["evaluate_case", "cohort_table", "Table", "CaseResult", "hd95", "hausdorff", "assd", "cldice",
           "cldice_value", "skeleton", "betti_numbers", "betti_errors", "euler_characteristic", "Betti",
           "detect_lesions", "confusion", "overlap_metrics", "summarize", "Summary", "HD95_VARIANTS",
           "ALL_METRICS", "STUDY_METRICS", "COUNT_METRICS", "STATUS_WORDS", "DEFAULT_STRUCTURES", "METRIC_INFO", "resolve_structures"]
