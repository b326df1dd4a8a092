"""Mapping foreign label maps (other label ids, other names) onto LiverPlan's five structures.

A reference or a model output from elsewhere rarely uses LiverPlan's table (engine.labels:
1 parenchyma, 2 portal vein, 3 hepatic veins, 4 IVC, 5 CRLM). A :class:`LabelMapping` says, per LiverPlan
structure, which foreign label *values* and/or label *names* (segment names, mask file names) stand for it.

Precedence when foreign structures overlap (e.g. IRCADb's liver mask also covers its tumours and vessels):
lesions > vessels > parenchyma, i.e. the label map is painted in the order
parenchyma (1), IVC (4), hepatic veins (3), portal vein (2), CRLM (5) and a later structure overwrites an
earlier one. So label 1 always means "liver minus the other labelled structures".

Merged references: some references cannot separate two LiverPlan structures (IRCADb's ``venoussystem`` is
hepatic veins + IVC in one mask). Such a mapping writes the merged structure under one label and lists it in
:attr:`LabelMapping.merged_groups` as ``{written_label: (labels, it, stands, for)}``, e.g. ``{3: (3, 4)}``.
Evaluation must then compare reference label 3 against the UNION of predicted labels 3 and 4
(:meth:`LabelMapping.merge_prediction` relabels a prediction accordingly) and must not score label 4 on its
own (it is listed by :meth:`LabelMapping.missing_structures`).
"""
from __future__ import annotations

import fnmatch
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

import numpy as np

from .errors import InputError
from .labels import BY_KEY, BY_LABEL, LABEL_VALUES, STRUCTURES, normalise_name, structure_for_name

log = logging.getLogger(__name__)

#: Painting order (later overwrites earlier): parenchyma, unassigned vessel, IVC, hepatic veins, portal vein,
#: lesions.
PAINT_ORDER: tuple[int, ...] = (1, 6, 4, 3, 2, 5)
PRECEDENCE_TEXT = ("Where reference structures overlap, lesions win over vessels and vessels over "
                   "parenchyma, so label 1 is the liver minus the labelled vessels and lesions.")

Source = Union[int, str]


@dataclass
class LabelMapping:
    """Which foreign label values / names make each LiverPlan structure.

    sources: LiverPlan structure key ("liver", "portal_vein", "hepatic_veins", "ivc", "crlm") -> list of
        foreign label values (int) and/or names (str; matched after engine.labels.normalise_name, shell
        wildcards allowed, e.g. "livertumor*").
    merged_groups: written LiverPlan label -> tuple of LiverPlan labels the reference merges there.
    notes: plain-language remarks shown with evaluations (what the reference lacks or merges).
    name: where the mapping came from ("ircadb", "totalsegmentator", a file name, "identity", ...).
    """

    sources: dict[str, list[Source]] = field(default_factory=dict)
    merged_groups: dict[int, tuple[int, ...]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    name: str = "custom"
    ignore: list[Source] = field(default_factory=list)   # foreign labels deliberately read as background

    def __post_init__(self) -> None:
        for key in self.sources:
            if key not in BY_KEY:
                raise InputError(f"The label mapping names an unknown structure '{key}'; use one of "
                                 f"{', '.join(BY_KEY)}.")
        self.sources = {k: list(v) for k, v in self.sources.items()}

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def identity(cls) -> "LabelMapping":
        """LiverPlan's own convention: value 1..5 are the five structures."""
        return cls({s.key: [s.label] for s in BY_LABEL.values()}, name="identity")

    @classmethod
    def from_names(cls, names: Mapping[int, str], name: str = "by name") -> "LabelMapping":
        """Map foreign label values by their names ({value: name}) via engine.labels.structure_for_name.

        Names that stand for no LiverPlan structure (spleen, aorta, ...) are ignored and listed in notes.
        """
        sources: dict[str, list[Source]] = {}
        ignored = []
        for value, label_name in names.items():
            s = structure_for_name(str(label_name))
            if s is None:
                ignored.append(str(label_name))
                continue
            # Both the value (for label arrays) and the name (for segments / mask files) identify it.
            sources.setdefault(s.key, []).extend([int(value), str(label_name)])
        m = cls(sources, name=name)
        if ignored:
            m.notes.append("Ignored labels that are none of the five structures: " + ", ".join(ignored) + ".")
        return m

    @classmethod
    def load(cls, path: Union[str, Path]) -> "LabelMapping":
        """Read a JSON mapping: {"liver": [1], "portal_vein": [64], "ivc": ["inferior_vena_cava"], ...}.

        Optional keys: "merged_groups": {"3": [3, 4]}, "notes": ["..."], "ignore": [7, "gallbladder"]
        (labels the references hold that are none of the five structures and are read as background on
        purpose; other unmapped values are reported). A preset name ("ircadb", "totalsegmentator",
        "identity") is accepted in place of a path.
        """
        p = Path(path)
        if not p.exists() and str(path).lower() in PRESETS:
            return cls.preset(str(path))
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"The label mapping file {p} does not exist (built-in presets: "
                             f"{', '.join(sorted(PRESETS))}).") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"The label mapping file {p} is not valid JSON ({exc}).") from None
        if isinstance(data, str) and data.strip().lower() in PRESETS:
            return cls.preset(data)                 # a file holding just "ircadb": the preset
        if not isinstance(data, dict):
            raise InputError(f"The label mapping file {p} must hold a JSON object such as "
                             '{"liver": [1], "portal_vein": [2]}, or a preset name such as "ircadb".')
        return cls.from_json_dict(data, p.name, where=str(p))

    @classmethod
    def from_json_dict(cls, data: dict, name: str = "custom", where: str = "The label mapping") -> "LabelMapping":
        """The mapping a JSON object describes (the format of :meth:`load`; :meth:`to_json_dict` writes it)."""
        data = dict(data)
        p = where
        merged = {int(k): tuple(int(x) for x in v) for k, v in dict(data.pop("merged_groups", {})).items()}
        notes = [str(n) for n in data.pop("notes", [])]
        ignore = data.pop("ignore", [])
        ignore = list(ignore) if isinstance(ignore, list) else [ignore]
        sources: dict[str, list[Source]] = {}
        for key, vals in data.items():
            s = BY_KEY.get(key) or structure_for_name(key)
            if s is None:
                raise InputError(f"The label mapping file {p} names '{key}', which is none of the five "
                                 f"structures ({', '.join(BY_KEY)}).")
            if not isinstance(vals, list):
                vals = [vals]
            for v in vals:
                if isinstance(v, bool) or not isinstance(v, (int, str)):
                    raise InputError(f"In {p}, '{key}' must list label numbers or names, not {v!r}.")
            sources.setdefault(s.key, []).extend(vals)
        return cls(sources, merged, notes, name=name, ignore=ignore)

    def to_json_dict(self) -> dict:
        d: dict = {k: list(v) for k, v in self.sources.items()}
        if self.merged_groups:
            d["merged_groups"] = {str(k): list(v) for k, v in self.merged_groups.items()}
        if self.notes:
            d["notes"] = list(self.notes)
        if self.ignore:
            d["ignore"] = list(self.ignore)
        return d

    @classmethod
    def preset(cls, name: str) -> "LabelMapping":
        """Built-in mappings: "ircadb", "totalsegmentator", "identity" (LiverPlan's own labels)."""
        key = name.strip().lower()
        if key not in PRESETS:
            raise InputError(f"There is no label mapping preset called '{name}'; presets are "
                             f"{', '.join(sorted(PRESETS))}.")
        return PRESETS[key]()

    # --- queries ------------------------------------------------------------------------------
    def missing_structures(self) -> list[str]:
        """Keys of LiverPlan structures this reference cannot provide on their own.

        A structure merged into another label (IRCADb's IVC inside ``venoussystem``) counts as missing:
        it has no label of its own to be scored against.
        """
        merged_away = {lab for written, group in self.merged_groups.items() for lab in group if lab != written}
        out = []
        for s in STRUCTURES:            # the study's five ("vessel, unassigned" is never a reference structure)
            if not self.sources.get(s.key) or s.label in merged_away:
                out.append(s.key)
        return out

    def merge_prediction(self, pred: np.ndarray) -> np.ndarray:
        """A copy of a LiverPlan prediction with merged groups folded into their written label.

        For IRCADb ({3: (3, 4)}) predicted IVC voxels become label 3, so reference label 3
        (``venoussystem``) is compared against predicted hepatic veins ∪ IVC. Arrays are (z, y, x).
        """
        out = np.array(pred, dtype=np.uint8, copy=True)
        for written, group in self.merged_groups.items():
            for lab in group:
                if lab != written:
                    out[pred == lab] = written
        return out

    def _values_for(self, key: str) -> list[int]:
        return [int(v) for v in self.sources.get(key, []) if isinstance(v, (int, np.integer))]

    def _name_patterns_for(self, key: str) -> list[str]:
        return [normalise_name(v) for v in self.sources.get(key, []) if isinstance(v, str)]

    def structure_for_foreign_name(self, foreign_name: str) -> Optional[int]:
        """The LiverPlan label a foreign name maps to under this mapping (None: ignored)."""
        n = normalise_name(foreign_name)
        for key in self.sources:
            for pat in self._name_patterns_for(key):
                if n == pat or (any(c in pat for c in "*?") and fnmatch.fnmatchcase(n, pat)):
                    return BY_KEY[key].label
        return None

    # --- application --------------------------------------------------------------------------
    def apply(self, array: np.ndarray, names: Optional[Mapping[int, str]] = None,
              unmapped: Optional[list[int]] = None) -> np.ndarray:
        """Convert a foreign label array (any integer dtype, (z, y, x)) to a LiverPlan uint8 label map.

        ``names`` ({foreign value: name}) lets name-based sources match label values.
        Overlaps cannot occur in a single array; painting still follows :data:`PAINT_ORDER`.
        ``unmapped``: when a list is given, the non-zero values present that neither map to a structure nor
        are listed in ``ignore`` are appended to it (they become background).
        """
        arr = np.asarray(array)
        values_for: dict[int, set[int]] = {lab: set() for lab in LABEL_VALUES}
        for key in self.sources:
            values_for[BY_KEY[key].label].update(self._values_for(key))
        if names:
            for value, nm in names.items():
                lab = self.structure_for_foreign_name(nm)
                if lab is not None:
                    values_for[lab].add(int(value))
        out = np.zeros(arr.shape, dtype=np.uint8)
        present = set(int(v) for v in np.unique(arr))
        if unmapped is not None:
            known = set().union(*values_for.values()) | {int(v) for v in self.ignore if isinstance(v, int)}
            if names:
                known |= {int(v) for v, nm in names.items()
                          if normalise_name(nm) in {normalise_name(i) for i in self.ignore if isinstance(i, str)}}
            unmapped.extend(sorted(present - known - {0}))
        for lab in PAINT_ORDER:
            vals = sorted(values_for[lab] & present)
            if not vals:
                continue
            mask = np.isin(arr, vals) if len(vals) > 1 else (arr == vals[0])
            out[mask] = lab
        return out

    def apply_masks(self, masks: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
        """Combine named binary masks ({name: bool/0-255 array (z, y, x)}) into a LiverPlan label map.

        Returns (label map, names of masks that were ignored). Painting follows :data:`PAINT_ORDER`,
        which gives the written precedence lesions > vessels > parenchyma.
        """
        by_label: dict[int, list[np.ndarray]] = {}
        ignored = []
        shape = None
        for nm, m in masks.items():
            lab = self.structure_for_foreign_name(nm)
            if shape is None:
                shape = np.shape(m)
            if lab is None:
                ignored.append(nm)
                continue
            by_label.setdefault(lab, []).append(np.asarray(m) > 0)
        if shape is None:
            raise InputError("No masks were given.")
        out = np.zeros(shape, dtype=np.uint8)
        for lab in PAINT_ORDER:
            for m in by_label.get(lab, []):
                out[m] = lab
        return out, ignored


# --------------------------------------------------------------------------------------------
def _ircadb() -> LabelMapping:
    return LabelMapping(
        sources={"liver": ["liver"], "portal_vein": ["portalvein"], "hepatic_veins": ["venoussystem"],
                 "crlm": ["livertumor*", "livertumour*", "tumor*", "metastasis*"]},
        merged_groups={3: (3, 4)},
        notes=["3D-IRCADb's 'venoussystem' mask holds the hepatic veins AND the inferior vena cava in one "
               "label; LiverPlan stores it as label 3 (hepatic veins) and scores it against the union of "
               "predicted hepatic veins and IVC. The IVC has no separate reference.",
               "IRCADb's liver mask includes its tumours and vessels. " + PRECEDENCE_TEXT,
               "IRCADb tumours are 'hepatic tumours', not necessarily colorectal metastases."],
        name="ircadb")


def _totalsegmentator() -> LabelMapping:
    return LabelMapping(
        sources={"liver": [5, "liver"], "ivc": [63, "inferior_vena_cava"],
                 "portal_vein": [64, "portal_vein_and_splenic_vein"]},
        notes=["TotalSegmentator has no hepatic-vein or liver-lesion label; its portal vein label "
               "(64, portal_vein_and_splenic_vein) also contains the splenic vein."],
        name="totalsegmentator",
        ignore=list(range(1, 256)))     # its ~110 other organs are background here by design, not a mistake


PRESETS = {"ircadb": _ircadb, "3dircadb": _ircadb, "totalsegmentator": _totalsegmentator,
           "identity": LabelMapping.identity, "liverplan": LabelMapping.identity}


def looks_like_ircadb(names: Iterable[str]) -> bool:
    """True when a set of mask names is IRCADb-style (has 'venoussystem' or 'livertumorN')."""
    ns = {normalise_name(n) for n in names}
    return "venoussystem" in ns or any(fnmatch.fnmatchcase(n, "livertumor*") for n in ns)
