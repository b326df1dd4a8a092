"""The tumour-board report's section "Change since the baseline scan" (issue 22), read from the
``comparison.json`` that ``liverplan compare`` writes: the RECIST 1.1 and volumetric response lines, the lesion
change table, the vanished lesions at their former place, and for each resection scenario of the report whether
it leaves a vanished lesion's site (:func:`engine.compare.planning_hook.sites_left`).

The file is data from disk: only known keys are read, every value is checked, and a comparison made for a scan
of another grid is refused in words (:func:`engine.compare.planning_hook.read_vanished_sites`).

```python
cmp = read_comparison_for_report("cmp/comparison.json", case.geometry)
report = build_report(case, options, comparison=cmp)     # engine.board_report
```
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import InputError
from .comparison import KIND_WORDS
from .planning_hook import VanishedSite, read_vanished_sites, sites_left

SECTION_WORDS = {
    "change_title": {"en": "Change since the baseline scan", "fr": "Évolution depuis l'examen initial"},
    "change_intro": {"en": "From the comparison {name} (baseline {base}, follow-up {fu}: this scan). Lesion numbers "
                           "are the baseline's; a new lesion carries the follow-up's number.",
                     "fr": "D'après la comparaison {name} (examen initial {base}, examen de suivi {fu} : cet examen). "
                           "Numéros de lésion de l'examen initial ; une nouvelle lésion porte le numéro du suivi."},
    "withheld": {"en": "(name withheld: anonymised)", "fr": "(nom masqué : anonymisé)"},
    "change_table": {"en": "Lesion changes", "fr": "Évolution des lésions"},
    "track": {"en": "Lesion", "fr": "Lésion"},
    "kind": {"en": "Change", "fr": "Évolution"},
    "vol_b": {"en": "Baseline (mL)", "fr": "Initial (mL)"},
    "vol_f": {"en": "Follow-up (mL)", "fr": "Suivi (mL)"},
    "vol_pct": {"en": "Volume change", "fr": "Variation du volume"},
    "diam_b": {"en": "Baseline diameter (mm)", "fr": "Diamètre initial (mm)"},
    "diam_f": {"en": "Follow-up diameter (mm)", "fr": "Diamètre au suivi (mm)"},
    "diam_pct": {"en": "Diameter change", "fr": "Variation du diamètre"},
    "fu_no": {"en": "Follow-up no.", "fr": "N° au suivi"},
    "table_note": {"en": "Volumes and longest 3D diameters as measured on each scan; * a RECIST target lesion.",
                   "fr": "Volumes et plus grands diamètres 3D mesurés sur chaque examen ; * lésion cible RECIST."},
    "vanished_title": {"en": "Vanished lesions", "fr": "Lésions disparues"},
    "no_vanished": {"en": "No lesion vanished.", "fr": "Aucune lésion n'a disparu."},
    "vanished_line": {"en": "Lesion {lid} vanished: its former place on this scan is LPS ({x:.1f}, {y:.1f}, {z:.1f}) mm"
                            "{slice} ({d:.0f} mm at baseline). Most vanished metastases persist microscopically.",
                      "fr": "La lésion {lid} a disparu : son ancien emplacement sur cet examen est LPS ({x:.1f}, "
                            "{y:.1f}, {z:.1f}) mm{slice} ({d:.0f} mm à l'examen initial). La plupart des métastases "
                            "disparues persistent au niveau microscopique."},
    "slice": {"en": ", slice {n}", "fr": ", coupe {n}"},
    "sites_title": {"en": "Vanished lesions and the resection scenarios",
                    "fr": "Lésions disparues et scénarios de résection"},
    "no_scenario_sites": {"en": "No resection scenario in this report: none says whether it removes a vanished "
                                "lesion's site.",
                          "fr": "Aucun scénario de résection dans ce rapport : aucun ne dit s'il retire le site d'une "
                                "lésion disparue."},
    "no_recist": {"en": "RECIST 1.1: no measurable target lesion (>= 10 mm) at baseline.",
                  "fr": "RECIST 1.1 : aucune lésion cible mesurable (>= 10 mm) à l'examen initial."},
    "recist_line": {"en": "RECIST 1.1 (targets {targets}, {who}): sum of diameters {b:.1f} -> {f:.1f} mm ({pct:+.0f} %): "
                          "{cat} ({words}).",
                    "fr": "RECIST 1.1 (cibles {targets}, {who}) : somme des diamètres {b:.1f} -> {f:.1f} mm "
                          "({pct:+.0f} %) : {cat} ({words})."},
    "by_user": {"en": "chosen by the user", "fr": "choisies par l'utilisateur"},
    "by_default": {"en": "the two largest measurable", "fr": "les deux plus grandes mesurables"},
    "volumetric_line": {"en": "Volumetric response: total lesion volume {b:.1f} -> {f:.1f} mL ({pct:+.0f} %): "
                              "{cat} ({words}).",
                        "fr": "Réponse volumétrique : volume lésionnel total {b:.1f} -> {f:.1f} mL ({pct:+.0f} %) : "
                              "{cat} ({words})."},
    "key_change": {"en": "{rec}; volumetric {vol}; {nv} vanished{vids}, {nn} new", "fr": "{rec} ; volumétrique {vol} ; "
                   "{nv} disparue(s){vids}, {nn} nouvelle(s)"},
    "key_left": {"en": "the site of vanished lesion {lid} stays after: {names}",
                 "fr": "le site de la lésion disparue {lid} reste après : {names}"},
    "registration_line": {"en": "Registration: liver surfaces {m:.1f} mm apart on average, {p:.1f} mm at the 95th "
                                "percentile.",
                          "fr": "Recalage : surfaces hépatiques distantes de {m:.1f} mm en moyenne, {p:.1f} mm au "
                                "95e percentile."},
}
CATEGORY_WORDS_FR = {"CR": "réponse complète", "PR": "réponse partielle", "SD": "maladie stable",
                     "PD": "progression"}
KIND_WORDS_FR = {"matched": "appariée", "split": "divisée", "merged": "fusionnée (confluente)",
                 "complex": "divisée et fusionnée", "vanished": "disparue", "new": "nouvelle"}


@dataclass
class ChangeRowData:
    """One row of the comparison's lesion table as read from the file."""

    track: str
    kind: str
    followup_ids: list
    baseline_volume_ml: float
    followup_volume_ml: float
    volume_change_pct: Optional[float]
    baseline_diameter_mm: float
    followup_diameter_mm: float
    diameter_change_pct: Optional[float]
    followup_lps_mm: Optional[tuple]
    followup_zyx: Optional[tuple]
    target: bool
    baseline_ids: list


@dataclass
class ComparisonForReport:
    """What the report needs of a comparison.json."""

    name: str                                   # the file's name
    baseline_name: str
    followup_name: str
    rows: list[ChangeRowData]
    sites: list[VanishedSite]
    recist: Optional[dict]                      # RecistResult.to_dict() (None: no measurable target)
    volumetric: Optional[dict]                  # VolumetricResult.to_dict()
    targets_chosen_by: str = ""
    registration: dict = field(default_factory=dict)


def _num(v, what: str, name: str, allow_none: bool = False) -> Optional[float]:
    if v is None and allow_none:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    if not math.isfinite(x):
        raise InputError(f"{name}: the {what} of a lesion is not a number; write the comparison again.")
    return x


def _vec(v) -> Optional[tuple]:
    if v is None:
        return None
    try:
        t = tuple(float(a) for a in v)
    except (TypeError, ValueError):
        return None
    return t if len(t) == 3 and all(math.isfinite(a) for a in t) else None


def read_comparison_for_report(path, geometry=None) -> ComparisonForReport:
    """Read ``comparison.json`` for the report of the follow-up scan with ``geometry``: a comparison made for
    a scan of another grid, a file that is not a comparison, or one with a damaged lesion table is refused in
    words (InputError)."""
    p = Path(path).expanduser()
    sites = read_vanished_sites(p, geometry)          # checks the file's kind and the follow-up's grid
    data = json.loads(p.read_text(encoding="utf-8"))
    rows = []
    for r in data["lesions"]:
        if not isinstance(r, dict) or r.get("kind") not in KIND_WORDS:
            raise InputError(f"{p.name}: a lesion of the comparison has no known kind; write the comparison again.")
        try:
            bids = [int(v) for v in r.get("baseline_ids") or []]
            fids = [int(v) for v in r.get("followup_ids") or []]
        except (TypeError, ValueError):
            raise InputError(f"{p.name}: a lesion's numbers are damaged; write the comparison again.") from None
        rows.append(ChangeRowData(
            track=str(r.get("track", "")), kind=r["kind"], followup_ids=fids, baseline_ids=bids,
            baseline_volume_ml=_num(r.get("baseline_volume_ml"), "baseline volume", p.name),
            followup_volume_ml=_num(r.get("followup_volume_ml"), "follow-up volume", p.name),
            volume_change_pct=_num(r.get("volume_change_pct"), "volume change", p.name, True),
            baseline_diameter_mm=_num(r.get("baseline_diameter_mm"), "baseline diameter", p.name),
            followup_diameter_mm=_num(r.get("followup_diameter_mm"), "follow-up diameter", p.name),
            diameter_change_pct=_num(r.get("diameter_change_pct"), "diameter change", p.name, True),
            followup_lps_mm=_vec(r.get("followup_lps_mm")), followup_zyx=_vec(r.get("followup_zyx")),
            target=bool(r.get("target", False))))
    rec = data.get("recist")
    vol = data.get("volumetric")
    for what, d, keys in (("RECIST", rec, ("baseline_sld_mm", "followup_sld_mm", "change_pct")),
                          ("volumetric", vol, ("baseline_ml", "followup_ml", "change_pct"))):
        if d is None:
            continue
        if not isinstance(d, dict) or not isinstance(d.get("targets", []), list) or not all(isinstance(d.get(k), (int, float)) and math.isfinite(d[k])
                                              for k in keys) or not isinstance(d.get("category"), str):
            raise InputError(f"{p.name}: the {what} response is damaged; write the comparison again.")
    reg = data.get("registration") if isinstance(data.get("registration"), dict) else {}
    return ComparisonForReport(
        name=p.name, baseline_name=str((data.get("baseline") or {}).get("name", "?")),
        followup_name=str((data.get("followup") or {}).get("name", "?")), rows=rows, sites=sites,
        recist=rec, volumetric=vol, targets_chosen_by=str(data.get("targets_chosen_by") or ""), registration=reg)


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:+.0f} %"


def response_lines(cmp: ComparisonForReport, language: str = "en") -> list[str]:
    """The registration, RECIST 1.1 and volumetric lines."""
    def w(key, **kw):
        e = SECTION_WORDS[key]
        return (e.get(language) or e["en"]).format(**kw)
    def cat_words(d: dict) -> str:
        if language == "fr" and d["category"] in CATEGORY_WORDS_FR:
            return CATEGORY_WORDS_FR[d["category"]]
        return str(d.get("category_words", ""))
    lines = []
    m, p95 = cmp.registration.get("residual_mean_mm"), cmp.registration.get("residual_p95_mm")
    if isinstance(m, (int, float)) and isinstance(p95, (int, float)):
        lines.append(w("registration_line", m=m, p=p95))
    rec = cmp.recist
    if rec is None:
        lines.append(w("no_recist"))
    else:
        targets = ", ".join(str(t) for t in rec.get("targets") or []) or "—"
        lines.append(w("recist_line", targets=targets, who=w("by_user" if cmp.targets_chosen_by == "user"
                                                                else "by_default"),
                       b=rec["baseline_sld_mm"], f=rec["followup_sld_mm"], pct=rec["change_pct"],
                       cat=rec["category"], words=cat_words(rec)))
    vol = cmp.volumetric
    if vol is not None:
        lines.append(w("volumetric_line", b=vol["baseline_ml"], f=vol["followup_ml"], pct=vol["change_pct"],
                       cat=vol["category"], words=cat_words(vol)))
    return lines


def scenario_sentences(cmp: ComparisonForReport, planner) -> tuple[list[dict], list[str]]:
    """For each scenario of ``planner`` (run on this scan), the :func:`sites_left` note of each vanished site
    ({"sentence", "left", ...}); and the warnings of scenarios that could not be computed."""
    out, warnings = [], []
    if planner is None or not cmp.sites:
        return out, warnings
    for sc in planner.scenarios.values():
        try:
            out += [dict(n, scenario=sc.name) for n in sites_left(planner, sc, cmp.sites)]
        except InputError as err:
            warnings.append(f"Scenario '{sc.name}' and the vanished lesions: {err}")
    return out, warnings


def key_figure(cmp: ComparisonForReport, notes: list[dict], language: str = "en") -> tuple[str, str]:
    """Page 1's row: the responses, how many lesions vanished or are new, and the scenarios that leave a
    vanished lesion's site (``notes``: :func:`scenario_sentences`' notes with their scenario)."""
    def w(key, **kw):
        e = SECTION_WORDS[key]
        return (e.get(language) or e["en"]).format(**kw)
    rec = "RECIST 1.1 " + (cmp.recist["category"] if cmp.recist is not None else "n/a")
    vol = cmp.volumetric["category"] if cmp.volumetric is not None else "n/a"
    van = [r for r in cmp.rows if r.kind == "vanished"]
    vids = f" ({', '.join(str(r.baseline_ids[0]) for r in van if r.baseline_ids)})" if van else ""
    text = w("key_change", rec=rec, vol=vol, nv=len(van), vids=vids, nn=sum(1 for r in cmp.rows if r.kind == "new"))
    by_site: dict = {}
    for n in notes:
        if n["left"] is not False:
            by_site.setdefault(n["lesion"], []).append(n["scenario"])
    for lid, names in by_site.items():
        text += "; " + w("key_left", lid=lid, names=", ".join(names))
    return w("change_title"), text


def change_blocks(cmp: ComparisonForReport, planner, language: str = "en",
                  anonymise: bool = False) -> tuple[list, list[str], tuple]:
    """The report's blocks (engine.reporting.document) of the section, warnings to add to the report's, and
    page 1's row (:func:`key_figure`). ``anonymise``: the comparison's file name and the two scans' names
    (file names may carry a patient's name) are withheld."""
    from ..reporting.document import Heading, Paragraph, Table

    def w(key, **kw):
        e = SECTION_WORDS[key]
        return (e.get(language) or e["en"]).format(**kw)
    kinds = KIND_WORDS_FR if language == "fr" else KIND_WORDS
    blocks: list = [Heading(w("change_title"), 1),
                    Paragraph(w("change_intro", name=w("withheld") if anonymise else cmp.name,
                                base=w("withheld") if anonymise else cmp.baseline_name,
                                fu=w("withheld") if anonymise else cmp.followup_name), "note")]
    blocks += [Paragraph(line) for line in response_lines(cmp, language)]
    rows = []
    for r in cmp.rows:
        rows.append([r.track + (" *" if r.target else ""), kinds.get(r.kind, r.kind),
                     f"{r.baseline_volume_ml:.2f}", f"{r.followup_volume_ml:.2f}", _pct(r.volume_change_pct),
                     f"{r.baseline_diameter_mm:.1f}", f"{r.followup_diameter_mm:.1f}", _pct(r.diameter_change_pct),
                     ", ".join(str(i) for i in r.followup_ids) or "—"])
    blocks.append(Heading(w("change_table"), 2))
    blocks.append(Table([w("track"), w("kind"), w("vol_b"), w("vol_f"), w("vol_pct"), w("diam_b"), w("diam_f"),
                         w("diam_pct"), w("fu_no")], rows, small=True, numeric=False, notes=[w("table_note")]))
    blocks.append(Heading(w("vanished_title"), 2))
    vanished = [r for r in cmp.rows if r.kind == "vanished"]
    if not vanished:
        blocks.append(Paragraph(w("no_vanished")))
    for r in vanished:
        lid = r.baseline_ids[0] if r.baseline_ids else r.track
        if r.followup_lps_mm is None:
            blocks.append(Paragraph(f"{w('vanished_title')}: {lid} — LPS n/a", "warning"))
            continue
        x, y, z = r.followup_lps_mm
        sl = w("slice", n=int(round(r.followup_zyx[0])) + 1) if r.followup_zyx is not None else ""
        blocks.append(Paragraph(w("vanished_line", lid=lid, x=x, y=y, z=z, slice=sl, d=r.baseline_diameter_mm)))
    warnings: list[str] = []
    sentences: list[dict] = []
    if cmp.sites:
        blocks.append(Heading(w("sites_title"), 2))
        sentences, warnings = scenario_sentences(cmp, planner)
        if planner is None or not planner.scenarios:
            blocks.append(Paragraph(w("no_scenario_sites")))
        for n in sentences:        # a site left in the remnant (or not in the planned liver) is boxed
            blocks.append(Paragraph(n["sentence"], "" if n["left"] is False else "warning"))
    return blocks, warnings, key_figure(cmp, sentences, language)
