"""Public nnU-Net v2 releases LiverPlan knows by name, their label maps, and model sets.

A model folder is recognised as a known release by its dataset (the ``DatasetNNN_...`` folder name or the
plans' ``dataset_name``) AND its labels: a user's own ``Dataset008`` with other labels is not taken for MSD's.
A known release needs no label-map file: its built-in map says which of its labels are which LiverPlan
structure, its licence and what its authors report are shown in the model card.

Facts from TotalSegmentator's own repository (README, ``totalsegmentator/map_tasks_config.py``; release zips
at ``https://github.com/wasserth/TotalSegmentator/releases/download/<version>/<Dataset...>.zip``), read for
this table; nothing is downloaded at run time.

Label-map keys a model's map may use beyond the five structures:

* ``vessels`` (also ``vessel_unassigned``): intrahepatic vessels without the portal/hepatic split
  (TotalSegmentator's ``liver_vessels``, MSD's ``Vessel``). They are written as "vessel, unassigned" (6) and
  split by :func:`engine.vessel_split.assign_vessel_tree` after all models ran (engine.inference).
* ``none`` (also ``ignore``): model labels that are deliberately not used.

A model label named ``liver_segment_N`` (N = 1..8, Couinaud) is liver parenchyma, and its segment number goes
to the result's Couinaud segment map (``SegmentationResult.extra_maps["couinaud"]``).

Model sets (:data:`MODEL_SETS`): a named combination of releases run in order as one model ("TotalSegmentator
liver set"); parts that only need the liver are run on the box of the liver the first part found.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from .labels import Label, normalise_name

#: Names of model labels that mean "intrahepatic vessels, portal and hepatic not told apart".
UNSPLIT_VESSEL_NAMES = ("liver_vessels", "liver_vessel", "vessel", "vessels", "hepatic_vessel", "hepatic_vessels",
                        "hepaticvessel", "intrahepatic_vessels")
#: Label-map keys (besides the five structures) and what they map to (None: not used).
EXTRA_MAP_KEYS: dict[str, Optional[int]] = {"vessels": int(Label.VESSEL_UNASSIGNED),
                                            "vessel_unassigned": int(Label.VESSEL_UNASSIGNED),
                                            "none": None, "ignore": None}
_SEGMENT_RE = re.compile(r"^liver_segment_?([1-8])$")

TS_LICENCE = "Apache-2.0 (TotalSegmentator README: openly available for any usage)"
TS_PAPER = "Wasserthal et al., Radiology: Artificial Intelligence 2023 (doi:10.1148/ryai.230024)"
TS_URL = "https://github.com/wasserth/TotalSegmentator/releases"


def couinaud_segment(name: str) -> Optional[int]:
    """1..8 for a label named ``liver_segment_N`` (Couinaud segment N), else None."""
    m = _SEGMENT_RE.match(normalise_name(name))
    return int(m.group(1)) if m else None


def is_unsplit_vessel_name(name: str) -> bool:
    return normalise_name(name) in UNSPLIT_VESSEL_NAMES


@dataclass(frozen=True)
class Release:
    """A public release LiverPlan recognises.

    key: short name (``--label-map`` preset, model-set parts). dataset_ids: nnU-Net dataset numbers it was
    published under. label_map: LiverPlan key -> the model's label names (the format of a label-map file).
    crop_to_liver: in a model set, run it on the liver's box (it was trained on, and only needs, the liver).
    """

    key: str
    title: str
    dataset_ids: tuple[int, ...]
    label_map: Mapping[str, tuple[str, ...]]
    licence: str
    segments: str
    reported: str
    source: str = TS_URL
    crop_to_liver: bool = False
    crop_margin_mm: float = 20.0

    def matches(self, dataset_id: Optional[int], label_names) -> bool:
        if dataset_id not in self.dataset_ids:
            return False
        names = {normalise_name(n) for n in label_names}
        wanted = {normalise_name(n) for ns in self.label_map.values() for n in ns}
        return bool(names & wanted)


SEGMENT_NAMES = tuple(f"liver_segment_{i}" for i in range(1, 9))

RELEASES: tuple[Release, ...] = (
    Release("ts_organs", "TotalSegmentator organs (part 1)", (291, 831), {"liver": ("liver",)}, TS_LICENCE,
            "24 abdominal/thoracic organs; LiverPlan uses the liver",
            "liver Dice 0.965 on TotalSegmentator's test set (v1 1.5 mm model, results_all_classes_v1.json); "
            + TS_PAPER),
    Release("ts_cardiac", "TotalSegmentator cardiac (part 3)", (293, 833),
            {"ivc": ("inferior_vena_cava",), "portal_vein": ("portal_vein_and_splenic_vein",)}, TS_LICENCE,
            "heart, great vessels; LiverPlan uses the inferior vena cava and the portal + splenic vein",
            "IVC Dice 0.935, portal and splenic vein 0.881 (v1 1.5 mm model, results_all_classes_v1.json); "
            + TS_PAPER),
    Release("ts_total_3mm", "TotalSegmentator total, 3 mm", (297, 836),
            {"liver": ("liver",), "ivc": ("inferior_vena_cava",),
             "portal_vein": ("portal_vein_and_splenic_vein",)}, TS_LICENCE,
            "all 117 classes at 3 mm (TotalSegmentator --fast); LiverPlan uses liver, IVC, portal + splenic vein",
            "lower resolution than the 1.5 mm parts; " + TS_PAPER),
    Release("ts_liver_vessels", "Hepatic vessels and tumours (MSD Task08 / TotalSegmentator liver_vessels)", (8,),
            {"vessels": ("liver_vessels", "vessel", "vessels"), "crlm": ("liver_tumor", "tumour", "tumor")},
            "TotalSegmentator's weights: Apache-2.0 per its README; trained on the Medical Segmentation Decathlon "
            "hepatic-vessel data (CC-BY-SA 4.0)",
            "intrahepatic vessels (portal and hepatic together) and liver tumours",
            "trained on MSD Task08 (Simpson et al., arXiv:1902.09063); TotalSegmentator marks it as trained on a "
            "small dataset: expect it to be less robust", crop_to_liver=True, crop_margin_mm=20.0),
    Release("ts_liver_segments", "TotalSegmentator liver segments (Couinaud)", (570,),
            {"liver": SEGMENT_NAMES}, "Apache-2.0 (TotalSegmentator README)",
            "the eight Couinaud segments (liver_segment_1..8): the liver and the planning segment map",
            "TotalSegmentator marks it as trained on a small dataset (cite doi:10.1007/978-3-030-32692-0_32)",
            crop_to_liver=True, crop_margin_mm=10.0),
    Release("ts_liver_lesions", "TotalSegmentator liver lesions", (591,), {"crlm": ("liver_lesions",)},
            "Apache-2.0 (TotalSegmentator README)", "liver lesions (configuration 3d_fullres_high)",
            "cite doi:10.1007/s10278-025-01716-y; TotalSegmentator marks it as trained on a small dataset",
            crop_to_liver=True, crop_margin_mm=10.0),
)
BY_RELEASE_KEY: dict[str, Release] = {r.key: r for r in RELEASES}


def dataset_id(folder: Path, plans: Optional[dict] = None) -> Optional[int]:
    """The nnU-Net dataset number of a model folder (``DatasetNNN_...`` or old ``TaskNNN_...`` above it, or
    the plans' dataset_name)."""
    candidates = [folder.parent.name, folder.name]
    if plans:
        candidates.append(str(plans.get("dataset_name", "")))
    for c in candidates:
        m = re.match(r"^(?:Dataset|Task)(\d{3})_", c)
        if m:
            return int(m.group(1))
    return None


def dataset_folder_name(folder: Path, plans: Optional[dict] = None) -> str:
    """``DatasetNNN_Name`` of a model folder ('' when it has none)."""
    for c in (folder.parent.name, str((plans or {}).get("dataset_name", ""))):
        if re.match(r"^(?:Dataset|Task)\d{3}_", c):
            return c
    return ""


def recognise(folder: Path, plans: dict, label_names) -> Optional[Release]:
    """The known release a model folder is, or None."""
    did = dataset_id(folder, plans)
    for r in RELEASES:
        if r.matches(did, label_names):
            return r
    return None


# ------------------------------------------------------------------------------------------------
# Label-map presets: a release's key (or "totalsegmentator", "msd") wherever a label map is accepted.
def preset_names() -> list[str]:
    return sorted(set(BY_RELEASE_KEY) | {"totalsegmentator", "msd"})


def preset_map(name: str) -> Optional[dict[str, list[str]]]:
    """The label map a preset name stands for (None when it is not one). Presets name labels of several
    models: entries a model does not have are skipped (not an error, as they are in a map file)."""
    key = normalise_name(str(name))
    if key in BY_RELEASE_KEY:
        return {k: list(v) for k, v in BY_RELEASE_KEY[key].label_map.items()}
    if key in ("totalsegmentator", "total_segmentator"):
        merged: dict[str, list[str]] = {}
        for r in RELEASES:
            for k, v in r.label_map.items():
                merged.setdefault(k, [])
                merged[k] += [n for n in v if n not in merged[k]]
        return merged
    if key == "msd":
        return {"vessels": ["vessel"], "crlm": ["tumour", "tumor", "cancer"], "liver": ["liver"]}
    return None


# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSet:
    """A named combination of releases chosen and run as one model.

    parts: release keys in run order (the first finds the liver for the others' crop); optional: parts used
    when installed, skipped (with a note) when not.
    """

    name: str
    parts: tuple[str, ...]
    optional: tuple[str, ...] = ()
    description: str = ""
    aliases: tuple[str, ...] = field(default=())

    def all_parts(self) -> tuple[str, ...]:
        return self.parts + self.optional


MODEL_SETS: tuple[ModelSet, ...] = (
    ModelSet("TotalSegmentator liver set", ("ts_organs", "ts_cardiac", "ts_liver_vessels", "ts_liver_lesions"),
             ("ts_liver_segments",),
             "liver (organs), IVC and portal trunk (cardiac), intrahepatic vessels split into portal and hepatic "
             "(liver_vessels), lesions (liver_lesions); with liver_segments installed also the Couinaud segment "
             "map for planning", aliases=("ts_liver_set", "totalsegmentator_liver_set")),
)


def find_model_set(name: str) -> Optional[ModelSet]:
    n = normalise_name(str(name))
    for s in MODEL_SETS:
        if n == normalise_name(s.name) or n in s.aliases:
            return s
    return None


def release_card_fields(release: Release) -> dict[str, Any]:
    """What a model card shows about a known release."""
    return {"release": release.key, "licence": release.licence, "segments": release.segments,
            "reported_performance": release.reported, "source": release.source}
