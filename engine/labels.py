"""The one label table of LiverPlan.

Label map convention (uint8, one value per structure), after Chierici et al.:
0 background, 1 liver parenchyma, 2 portal vein, 3 hepatic veins, 4 inferior vena cava, 5 CRLM lesions.
Colours follow the study's figure: parenchyma brown, portal vein light blue, hepatic veins blue,
IVC dark blue (a violet blue light enough to be seen on black), CRLM green.

One more value is not a study structure: 6 "vessel, unassigned" (magenta), intrahepatic vessel voxels that
a public model gave without saying portal or hepatic and that engine.vessel_split could not assign. It is
shown, measured, meshed and exported like a structure, but no model is trained on it and no metric is
reported for it. ``STRUCTURES`` / ``STUDY_LABEL_VALUES`` are the study's five; ``ALL_STRUCTURES`` /
``LABEL_VALUES`` every value a label map may hold.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Label(IntEnum):
    BACKGROUND = 0
    PARENCHYMA = 1
    PORTAL_VEIN = 2
    HEPATIC_VEINS = 3
    IVC = 4
    CRLM = 5
    #: Vessel voxels a model gave without saying portal or hepatic, which the split
    #: (engine.vessel_split) could not assign: shown as such, never guessed. Not a study structure.
    VESSEL_UNASSIGNED = 6


@dataclass(frozen=True)
class Structure:
    label: int
    key: str            # machine name, used in files, CLI flags and label-map files
    name: str           # human name shown to clinicians
    color: tuple[int, int, int]   # RGB 0-255
    description: str


STRUCTURES: tuple[Structure, ...] = (
    Structure(1, "liver", "Liver parenchyma", (177, 122, 101),
              "Liver parenchyma without the labelled vessels and lesions"),
    Structure(2, "portal_vein", "Portal vein", (111, 184, 210),
              "Portal vein trunk and its intrahepatic branches"),
    Structure(3, "hepatic_veins", "Hepatic veins", (40, 90, 220),
              "Right, middle and left hepatic veins and their branches"),
    # the study's "dark blue", lightened to a violet blue that reads on a black CT background and in the
    # black 3D view (contrast to black 3.3:1; the former (16, 30, 120) was 1.4:1, all but invisible) and
    # stays apart from the hepatic veins' blue (tests/engine/test_display_engine.py)
    Structure(4, "ivc", "Inferior vena cava", (92, 64, 240),
              "Inferior vena cava (retrohepatic segment)"),
    Structure(5, "crlm", "CRLM lesions", (60, 190, 75),
              "Colorectal liver metastases (each 26-connected component is one lesion)"),
)

#: "Vessel, unassigned" (see Label.VESSEL_UNASSIGNED): not one of the study's five structures (no model is
#: trained on it, no metric is reported for it), but a value a label map may hold.
VESSEL_UNASSIGNED = Structure(6, "vessel_unassigned", "Vessel, unassigned", (230, 0, 200),
                              "Intrahepatic vessel voxels that could not be assigned to the portal or the "
                              "hepatic-venous system (check them and relabel by hand)")

#: The label table: every value a LiverPlan label map may hold (the study's five + "vessel, unassigned").
ALL_STRUCTURES: tuple[Structure, ...] = STRUCTURES + (VESSEL_UNASSIGNED,)

BY_LABEL: dict[int, Structure] = {s.label: s for s in ALL_STRUCTURES}
BY_KEY: dict[str, Structure] = {s.key: s for s in ALL_STRUCTURES}
#: Every valid non-zero label value (what reading, writing and measuring accept).
LABEL_VALUES: tuple[int, ...] = tuple(s.label for s in ALL_STRUCTURES)
#: The study's five structures' values (what models are trained on and evaluations score).
STUDY_LABEL_VALUES: tuple[int, ...] = tuple(s.label for s in STRUCTURES)

#: Labels that make up "total liver volume" in LiverPlan's volumetry: parenchyma + the intrahepatic
#: vessels as segmented inside the liver (assigned or not) + lesions. The IVC is not part of the liver.
TOTAL_LIVER_LABELS: tuple[int, ...] = (Label.PARENCHYMA, Label.PORTAL_VEIN, Label.HEPATIC_VEINS, Label.CRLM,
                                       Label.VESSEL_UNASSIGNED)
TOTAL_LIVER_DEFINITION = (
    "Total liver volume = liver parenchyma + CRLM lesions + portal vein, hepatic vein and unassigned vessel "
    "voxels lying inside the liver's filled outline; the IVC and extrahepatic vessel segments are excluded."
)

#: Lesion connectivity (stated in every report).
LESION_CONNECTIVITY = 26

# Synonyms used when mapping names from other conventions (model dataset.json, Slicer segments,
# IRCADb mask folders, TotalSegmentator) to the five structures. Lower-case, spaces -> underscores.
SYNONYMS: dict[str, str] = {
    "liver": "liver", "liver_parenchyma": "liver", "parenchyma": "liver", "hepatic_parenchyma": "liver",
    "portal_vein": "portal_vein", "portalvein": "portal_vein", "pv": "portal_vein",
    "portal_vein_and_splenic_vein": "portal_vein",
    "hepatic_veins": "hepatic_veins", "hepatic_vein": "hepatic_veins", "hepaticveins": "hepatic_veins",
    "hv": "hepatic_veins",
    "ivc": "ivc", "inferior_vena_cava": "ivc", "vena_cava": "ivc", "vena_cava_inferior": "ivc",
    "crlm": "crlm", "lesion": "crlm", "lesions": "crlm", "tumor": "crlm", "tumour": "crlm",
    "liver_tumor": "crlm", "liver_tumour": "crlm", "livertumor": "crlm", "metastasis": "crlm",
    "metastases": "crlm", "liver_lesion": "crlm", "liver_lesions": "crlm", "crlm_lesions": "crlm",
    "vessel_unassigned": "vessel_unassigned", "vessel,_unassigned": "vessel_unassigned",
}


def normalise_name(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def structure_for_name(name: str) -> Structure | None:
    """The LiverPlan structure a foreign label name stands for, or None.

    Numbered tumour masks such as IRCADb's ``livertumor1`` map to CRLM.
    """
    n = normalise_name(name)
    if n in SYNONYMS:
        return BY_KEY[SYNONYMS[n]]
    stripped = n.rstrip("0123456789").rstrip("_")
    if stripped in SYNONYMS and SYNONYMS[stripped] == "crlm":
        return BY_KEY["crlm"]
    return None
