"""RECIST 1.1 and a volumetric response over two time points (baseline, one follow-up).

RECIST 1.1 (Eisenhauer et al., Eur J Cancer 2009;45:228-247), as applied here:

- target lesions: at most 5 in all and at most 2 per organ. Every lesion LiverPlan measures lies in the
  liver, so at most **2** target lesions; the user picks them (default: the two largest measurable ones);
- measurable: longest axial diameter >= 10 mm (CT, slices <= 5 mm);
- the sum of the longest axial diameters (SLD) of the targets. A target that vanished counts 0 mm; one that
  split counts the sum of its fragments' longest diameters; targets that merged count the merged lesion's
  longest diameter once (on the first of them) and 0 for the others;
- CR: every target gone (and every other lesion gone: otherwise the overall response is PR, RECIST table 4);
  PR: SLD down by >= 30 %; PD: SLD up by >= 20 % AND >= 5 mm (over the nadir: with two time points the
  nadir is the baseline), or any new lesion; SD otherwise;
- non-target lesions are followed (vanished, new) but their "unequivocal progression" is a reader's
  judgement and is not decided here.

The volumetric response uses the sphere equivalents of RECIST's thresholds on the total lesion volume:
-30 % in diameter = -65.7 % in volume, +20 % = +72.8 %.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InputError

MAX_TARGETS_PER_ORGAN = 2
MEASURABLE_MM = 10.0
PR_FRACTION = -0.30
PD_FRACTION = 0.20
PD_ABSOLUTE_MM = 5.0
VOLUME_PR = (1 + PR_FRACTION) ** 3 - 1          # -0.657
VOLUME_PD = (1 + PD_FRACTION) ** 3 - 1          # +0.728

WORDS = {"CR": "complete response", "PR": "partial response", "SD": "stable disease", "PD": "progressive disease"}


@dataclass
class RecistResult:
    targets: list[int]
    baseline_sld_mm: float
    followup_sld_mm: float
    change_mm: float
    change_pct: float
    category: str
    reasons: list[str] = field(default_factory=list)
    per_target: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"criteria": "RECIST 1.1 (targets: max 2, all lesions in the liver; nadir = baseline)",
                "targets": self.targets, "baseline_sld_mm": round(self.baseline_sld_mm, 1),
                "followup_sld_mm": round(self.followup_sld_mm, 1), "change_mm": round(self.change_mm, 1),
                "change_pct": round(self.change_pct, 1), "category": self.category,
                "category_words": WORDS.get(self.category, ""), "reasons": list(self.reasons),
                "per_target": self.per_target}


@dataclass
class VolumetricResult:
    baseline_ml: float
    followup_ml: float
    change_pct: float
    category: str
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"criteria": "total lesion volume; sphere equivalents of RECIST's thresholds "
                            f"(PR <= {100 * VOLUME_PR:.1f} %, PD >= +{100 * VOLUME_PD:.1f} % or new lesions)",
                "baseline_ml": round(self.baseline_ml, 2), "followup_ml": round(self.followup_ml, 2),
                "change_pct": round(self.change_pct, 1), "category": self.category,
                "category_words": WORDS.get(self.category, ""), "reasons": list(self.reasons)}


def check_targets(targets: list[int], axial_mm: dict[int, float]) -> list[int]:
    """The targets, checked (InputError in words when RECIST does not allow them)."""
    targets = list(dict.fromkeys(int(t) for t in targets))
    if len(targets) > MAX_TARGETS_PER_ORGAN:
        raise InputError(f"RECIST 1.1 allows at most {MAX_TARGETS_PER_ORGAN} target lesions per organ, and all these "
                         f"lesions lie in the liver; {len(targets)} were chosen ({', '.join(map(str, targets))}).")
    for t in targets:
        if t not in axial_mm:
            raise InputError(f"The baseline has no lesion {t}; its lesions are numbered 1 to {len(axial_mm)}.")
        if axial_mm[t] < MEASURABLE_MM:
            raise InputError(f"Lesion {t} measures {axial_mm[t]:.1f} mm across in the axial plane: RECIST 1.1 target "
                             f"lesions must measure at least {MEASURABLE_MM:g} mm; pick another.")
    return targets


def default_targets(axial_mm: dict[int, float]) -> list[int]:
    """The two largest measurable lesions (RECIST: the largest that can be measured reproducibly)."""
    ok = sorted((d, -k, k) for k, d in axial_mm.items() if d >= MEASURABLE_MM)
    return sorted(k for _, _, k in ok[::-1][:MAX_TARGETS_PER_ORGAN])


def recist(targets: list[int], base_axial: dict[int, float], fu_axial: dict[int, float], groups,
           n_new: int, all_baseline_gone: bool) -> RecistResult:
    """RECIST 1.1 over ``targets`` (baseline ids); ``groups``: engine.compare.match.Group list."""
    per = []
    counted_groups: set[int] = set()
    sld_b = sld_f = 0.0
    for t in targets:
        g = next(g for g in groups if t in g.baseline)
        db = base_axial[t]
        if g.kind == "vanished":
            df, how = 0.0, "vanished (0 mm)"
        elif id(g) in counted_groups:
            df, how = 0.0, "merged into an earlier target (counted there)"
        else:
            counted_groups.add(id(g))
            parts = [fu_axial[f] for f in g.followup]
            if len(g.baseline) > 1:
                df, how = max(parts), "merged: the merged lesion's longest diameter"
            elif len(parts) > 1:
                df, how = sum(parts), "split: the sum of its fragments' longest diameters"
            else:
                df, how = parts[0], "matched"
        per.append({"lesion": t, "baseline_mm": round(db, 1), "followup_mm": round(df, 1), "how": how})
        sld_b += db
        sld_f += df
    change = sld_f - sld_b
    pct = 100.0 * change / sld_b if sld_b else 0.0
    reasons = []
    if n_new:
        cat = "PD"
        reasons.append(f"{n_new} new lesion{'s' if n_new > 1 else ''}: progressive disease whatever the targets do.")
    elif sld_f == 0:
        if all_baseline_gone:
            cat = "CR"
            reasons.append("Every lesion has disappeared.")
        else:
            cat = "PR"
            reasons.append("The target lesions have disappeared but other lesions remain (RECIST 1.1: PR).")
    elif change >= PD_FRACTION * sld_b and change >= PD_ABSOLUTE_MM:
        cat = "PD"
        reasons.append(f"The sum of diameters grew by {pct:.0f} % and {change:.1f} mm (>= 20 % and >= 5 mm).")
    elif change <= PR_FRACTION * sld_b:
        cat = "PR"
        reasons.append(f"The sum of diameters fell by {-pct:.0f} % (>= 30 %).")
    else:
        cat = "SD"
        reasons.append(f"The sum of diameters changed by {pct:+.0f} % ({change:+.1f} mm): neither PR nor PD.")
    reasons.append("Two time points: the nadir is the baseline. Non-target progression is a reader's judgement "
                   "and is not assessed here.")
    return RecistResult(list(targets), sld_b, sld_f, change, pct, cat, reasons, per)


def volumetric(base_total_ml: float, fu_total_ml: float, n_new: int) -> VolumetricResult:
    pct = 100.0 * (fu_total_ml - base_total_ml) / base_total_ml if base_total_ml else 0.0
    if n_new:
        return VolumetricResult(base_total_ml, fu_total_ml, pct, "PD", ["New lesions."])
    if base_total_ml and fu_total_ml == 0:
        return VolumetricResult(base_total_ml, fu_total_ml, pct, "CR", ["Every lesion has disappeared."])
    if pct / 100.0 >= VOLUME_PD:
        cat = "PD"
    elif pct / 100.0 <= VOLUME_PR:
        cat = "PR"
    else:
        cat = "SD"
    return VolumetricResult(base_total_ml, fu_total_ml, pct, cat,
                            [f"Total lesion volume {base_total_ml:.1f} -> {fu_total_ml:.1f} mL ({pct:+.0f} %)."])
