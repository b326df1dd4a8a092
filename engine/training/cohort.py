"""Cohort import for training: which CT goes with which reference, and is every pair usable?

A cohort is described in one of three ways (paths may be relative to the description's folder):

1. A CSV file with a header ``case_id,image,reference`` and optionally ``set`` (``train`` — the pool
   that is split 80/20 into training and held-out test — or ``external``)::

       case_id,image,reference,set
       p001,ct/p001.nii.gz,ref/p001.seg.nrrd,train
       x001,ext/x001_dicom/,ext/x001_masks/,external

2. A JSON file: ``{"cases": [{"case_id": ..., "image": ..., "reference": ..., "set": ...}, ...],
   "label_map": "labels.json" | {...} | "ircadb"}`` (or just the list of cases).

3. A folder::

       cohort/images/<id>.nii.gz | <id>.nrrd | <id>.mha | <id>/ (a DICOM folder)
       cohort/references/<id>.nii.gz | <id>.nrrd | <id>.seg.nrrd | <id>/ (a folder of binary masks)
       cohort/external/images/..., cohort/external/references/...   (optional external set)
       cohort/label_map.json                                          (optional)
       cohort/external/label_map.json      (optional: the external set's own map, e.g. "ircadb")

   (``labels/`` is accepted for ``references/``.)

The label-map file says which input label is which of the five structures (engine.labelmap
LabelMapping JSON, e.g. ``{"liver": [1], "portal_vein": [2], "hepatic_veins": [3], "ivc": [4],
"crlm": [5]}``, or a preset name such as ``ircadb``). Without one, references must use LiverPlan's
values 1-5 or structure names (Slicer segments, mask files).

:func:`check_cohort` reads every pair and lists every problem (unreadable file, CT and reference on
different grids, a structure missing, label values not mapped) before any training work starts.
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..case import Case
from ..errors import InputError, LiverPlanError
from ..labels import BY_LABEL, STUDY_LABEL_VALUES
from ..progress import CancelToken, ProgressCallback, check, no_progress

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm")
SETS = ("train", "external")


@dataclass
class CohortEntry:
    """One case of a cohort: a CT (file or DICOM folder) and its reference (file or mask folder)."""

    case_id: str
    image: Path
    reference: Path
    set: str = "train"
    series: Optional[str] = None


@dataclass
class Cohort:
    entries: list[CohortEntry]
    label_map: Optional[object] = None      # engine.labelmap.LabelMapping or None (LiverPlan values/names)
    source: str = ""

    def of_set(self, name: str) -> list[CohortEntry]:
        return [e for e in self.entries if e.set == name]


@dataclass
class CaseCheck:
    case_id: str
    set: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    voxels: Optional[tuple[int, int, int]] = None
    spacing: Optional[tuple[float, float, float]] = None
    structures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class CohortReport:
    checks: list[CaseCheck]
    problems: list[str] = field(default_factory=list)     # cohort-level problems

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.checks)

    def text(self) -> str:
        """A plain-language report: one line per case with its problems and warnings."""
        lines = []
        n_bad = sum(not c.ok for c in self.checks)
        lines.append(f"Cohort check: {len(self.checks)} case(s), {len(self.checks) - n_bad} usable, "
                     f"{n_bad} with problems.")
        for p in self.problems:
            lines.append(f"  PROBLEM (cohort): {p}")
        for c in self.checks:
            if c.ok and not c.warnings:
                continue
            for p in c.problems:
                lines.append(f"  PROBLEM {c.case_id}: {p}")
            for w in c.warnings:
                lines.append(f"  warning {c.case_id}: {w}")
        return "\n".join(lines)


def _strip_suffix(name: str) -> str:
    low = name.lower()
    for s in _IMAGE_SUFFIXES:
        if low.endswith(s):
            return name[: -len(s)]
    return name


def _resolve(base: Path, p: str) -> Path:
    q = Path(str(p).strip()).expanduser()
    return q if q.is_absolute() else (base / q)


def _load_mapping(spec, base: Path):
    from ..labelmap import LabelMapping

    if spec is None or spec == "":
        return None
    if isinstance(spec, dict):
        tmp = LabelMapping.load  # validate through the same code path as files
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(spec, f)
        try:
            return tmp(f.name)
        finally:
            Path(f.name).unlink(missing_ok=True)
    s = str(spec)
    path = _resolve(base, s)
    if path.is_file():
        return LabelMapping.load(path)
    if s.lower().endswith(".json") or "/" in s or "\\" in s:
        raise InputError(f"The label map file {path} does not exist.")
    return LabelMapping.preset(s)


def load_label_mapping(spec: Optional[str], base: Path = Path(".")):
    """A LabelMapping from a JSON file path or a preset name (None: no mapping)."""
    return _load_mapping(spec, base)


def _folder_entries(root: Path, set_name: str) -> list[CohortEntry]:
    img_dir = root / "images"
    ref_dir = next((root / n for n in ("references", "labels", "labelsTr") if (root / n).is_dir()), None)
    if not img_dir.is_dir() or ref_dir is None:
        return []
    images = {_strip_suffix(p.name): p for p in sorted(img_dir.iterdir()) if not p.name.startswith(".")}
    refs = {_strip_suffix(p.name): p for p in sorted(ref_dir.iterdir()) if not p.name.startswith(".")}
    entries = []
    for cid in sorted(set(images) | set(refs)):
        entries.append(CohortEntry(cid, images.get(cid, img_dir / f"{cid} (missing)"),
                                   refs.get(cid, ref_dir / f"{cid} (missing)"), set_name))
    return entries


def external_has_own_label_map(folder: str | Path) -> bool:
    """A cohort folder whose ``external/`` holds its own ``label_map.json`` (an external centre labelling
    differently, e.g. IRCADb masks): that subfolder is read as a separate cohort with its own map, as if
    given with --external."""
    return (Path(folder) / "external" / "label_map.json").is_file()


def load_cohort(path: str | Path, label_map: Optional[str] = None) -> Cohort:
    """Read a cohort description (CSV, JSON or folder; see the module docstring).

    label_map: a LabelMapping JSON file or preset name; overrides one named in the description.
    Raises InputError with a plain message when the description itself cannot be used.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"The cohort description {p} does not exist.")
    mapping_spec = None
    entries: list[CohortEntry] = []
    if p.is_dir():
        base = p
        entries = _folder_entries(p, "train")
        if not external_has_own_label_map(p):
            # (an external/ with its own label_map.json is a cohort of its own: see external_has_own_label_map)
            entries += _folder_entries(p / "external", "external")
        if not entries:
            raise InputError(f"{p} is not a cohort folder: it needs images/ and references/ (or labels/) "
                             "subfolders with matching case names.")
        if (p / "label_map.json").is_file():
            mapping_spec = str(p / "label_map.json")
    elif p.suffix.lower() == ".csv":
        base = p.parent
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = [c.strip().lower() for c in (reader.fieldnames or [])]
            need = {"case_id", "image", "reference"}
            if not need <= set(cols):
                raise InputError(f"The cohort file {p.name} needs the columns case_id, image and reference "
                                 f"(found: {', '.join(cols) or 'none'}).")
            for row in reader:
                row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
                if not any(row.values()):
                    continue
                entries.append(CohortEntry(row["case_id"], _resolve(base, row["image"]),
                                           _resolve(base, row["reference"]), (row.get("set") or "train").lower(),
                                           row.get("series") or None))
    elif p.suffix.lower() == ".json":
        base = p.parent
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"The cohort file {p.name} is not valid JSON ({exc}).") from exc
        cases = data.get("cases") if isinstance(data, dict) else data
        if isinstance(data, dict):
            mapping_spec = data.get("label_map")
        if not isinstance(cases, list):
            raise InputError(f"The cohort file {p.name} must hold a list of cases (or {{\"cases\": [...]}}).")
        for i, c in enumerate(cases):
            if not isinstance(c, dict) or not {"image", "reference"} <= set(c):
                raise InputError(f"Entry {i + 1} of {p.name} needs 'image' and 'reference'.")
            cid = str(c.get("case_id") or c.get("id") or _strip_suffix(Path(c["image"]).name))
            entries.append(CohortEntry(cid, _resolve(base, c["image"]), _resolve(base, c["reference"]),
                                       str(c.get("set", "train")).lower(), c.get("series")))
    else:
        raise InputError(f"{p.name} is not a cohort description: use a CSV or JSON file or a cohort folder.")
    if not entries:
        raise InputError(f"The cohort description {p.name} lists no cases.")
    bad_sets = sorted({e.set for e in entries if e.set not in SETS})
    if bad_sets:
        raise InputError(f"Unknown set name(s) {', '.join(bad_sets)} in {p.name}; use 'train' or 'external'.")
    mapping = _load_mapping(label_map, Path(".")) if label_map else _load_mapping(mapping_spec, base)
    return Cohort(entries, mapping, str(p))


def load_entry(entry: CohortEntry, mapping=None, notes: Optional[list[str]] = None) -> Case:
    """The CT of ``entry`` with its reference mapped to LiverPlan's labels (canonical grid); remarks of
    the reference reader (engine.io.read_label_map) go to ``notes`` when a list is given."""
    from ..io import load_case, read_label_map

    case = load_case(entry.image, series=entry.series)
    labels = read_label_map(entry.reference, case, mapping, notes=notes)
    case.set_labels(labels, label_source=f"reference: {entry.reference}")
    case.name = entry.case_id
    return case


def check_cohort(cohort: Cohort, require: tuple[int, ...] = STUDY_LABEL_VALUES, min_train: int = 2,
                 progress: ProgressCallback = no_progress, cancel: Optional[CancelToken] = None,
                 allow_non_hu: bool = False, for_training: bool = True) -> CohortReport:
    """Read every pair and list the problems (nothing is written).

    An image whose values do not look like CT Hounsfield units (an MR, a normalised or processed image)
    is a problem — nnU-Net's CT normalisation would train a model on the wrong scale — unless
    ``allow_non_hu`` (e.g. CTs cropped so tightly that they hold no air), which makes it a warning.
    Reference values the label map does not cover (and does not list under "ignore") are a problem.
    for_training=False (an external validation set, only evaluated): structures the label map merges or
    lacks are fine — the evaluation scores merged groups together and skips absent ones — so only the
    structures the map provides are required.

    require: labels every reference must contain. CRLM (5) may be absent from a case (a patient whose
    lesions were all treated); that is a warning, the other structures are problems. Structures the
    label map itself cannot provide (e.g. IRCADb's IVC merged with the hepatic veins) are a cohort-level
    problem: nnU-Net needs every label in the training data.
    """
    from ..labelmap import LabelMapping

    checks: list[CaseCheck] = []
    problems: list[str] = []
    ids = [e.case_id for e in cohort.entries]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        problems.append(f"case id(s) used more than once: {', '.join(dup)}")
    if isinstance(cohort.label_map, LabelMapping):
        missing = cohort.label_map.missing_structures()
        if missing and for_training:
            problems.append("the label map gives no separate label for: " + ", ".join(missing) +
                            " (a model must learn all five structures from the references)")
        elif missing:
            from ..labels import BY_KEY
            merged = {g for grp in cohort.label_map.merged_groups.values() for g in grp}
            absent = {BY_KEY[k].label for k in missing} | (merged - set(cohort.label_map.merged_groups))
            require = tuple(v for v in require if v not in absent)
    n_train = len(cohort.of_set("train"))
    if n_train < min_train:
        problems.append(f"only {n_train} training case(s); at least {min_train} are needed for a train/test split")
    for i, e in enumerate(cohort.entries):
        check(cancel)
        progress("Checking cohort", i, len(cohort.entries))
        cc = CaseCheck(e.case_id, e.set)
        checks.append(cc)
        if not e.image.exists():
            cc.problems.append(f"the CT {e.image} does not exist")
        if not e.reference.exists():
            cc.problems.append(f"the reference {e.reference} does not exist")
        if cc.problems:
            continue
        notes: list[str] = []
        try:
            case = load_entry(e, cohort.label_map, notes)
        except LiverPlanError as err:
            cc.problems.append(str(err))
            continue
        except (OSError, RuntimeError, ValueError) as err:  # unreadable files from the libraries below
            cc.problems.append(f"could not be read ({err})")
            continue
        cc.voxels = tuple(int(v) for v in case.geometry.shape[::-1])
        cc.spacing = tuple(float(v) for v in case.geometry.spacing[::-1])
        present = set(int(v) for v in np.unique(case.labels)) - {0}
        cc.structures = [BY_LABEL[v].key for v in sorted(present) if v in BY_LABEL]
        for lab in require:
            if lab not in present:
                msg = f"the reference has no {BY_LABEL[lab].name.lower()} (label {lab}) voxels"
                (cc.warnings if lab == 5 else cc.problems).append(msg)
        from ..io.images import modality_guess
        from ..io.labelmaps import UNMAPPED_NOTE
        cc.problems.extend(n for n in notes if n.startswith(UNMAPPED_NOTE))
        guess = modality_guess(case.image)
        hu_warnings = [w for w in case.provenance.warnings if "Hounsfield" in w]
        if guess.startswith("not CT-like") and not allow_non_hu:
            cc.problems.append(f"the image does not look like a CT in Hounsfield units ({guess}); a CT model "
                               "cannot be trained on it (if it is a CT cropped so tightly that it holds no air, "
                               "use --allow-non-hu)")
            cc.warnings.extend(w for w in case.provenance.warnings if w not in hu_warnings)
        else:
            cc.warnings.extend(case.provenance.warnings)
        del case
    progress("Checking cohort", len(cohort.entries), len(cohort.entries))
    return CohortReport(checks, problems)


def entry_loader(entry: CohortEntry, mapping=None) -> Callable[[], Case]:
    return lambda: load_entry(entry, mapping)
