"""The tumour-board report: one document with the case, its figures, the key images and where they came from.

Content (an :class:`engine.reporting.Document`, written as HTML + PDF by :mod:`engine.reporting`, and wrapped as
a DICOM Encapsulated PDF by :func:`dicom_encapsulated_pdf`):

* page 1 stands alone: the patient and study (from the DICOM tags, or "anonymised"), the key figures (total
  liver volume, tumour burden, lesion count and the largest lesion, bilobar disease, each scenario's FLR), one
  3D view, what made the labels (model card, device, hand edits, "reviewed by"), and every warning;
* the appendix: volumes with their definitions, the lesion table (with segment, hemiliver and nearest vessel
  from :mod:`engine.planning`), the resection scenarios, the evaluation against a reference when one was given,
  the hand-edit summary per structure, the 3D views (anterior, posterior, from above) and each scenario's
  remnant, and for every lesion an axial and a coronal slice through its centre (structures outlined, the
  lesion marked with its number, a scale bar and orientation letters, liver window).

Every number is taken from :func:`engine.measure.measure` and :class:`engine.planning.planner.Planner`, the
same code as the ``measure`` and ``plan`` commands, so the report cannot disagree with them. The words come
from one table (:data:`WORDS`, English and French). Nothing here imports Qt: slice pictures are drawn with
Pillow, 3D views with VTK offscreen (EGL or OSMesa when there is no display; see :func:`offscreen_ready`).
Arrays are (z, y, x) in the canonical LPS grid (x: patient right -> left, y: anterior -> posterior, z:
inferior -> superior).
"""
from __future__ import annotations

import datetime as _dt
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .case import Case
from .errors import ExportError, InputError
from .labels import BY_LABEL, Label
from .reporting.document import Document, Group, Heading, Image, PageBreak, Paragraph, Table

log = logging.getLogger(__name__)

#: The liver window (level, width) in HU, as the window's "liver" preset (gui.menus.WINDOW_PRESETS).
LIVER_WINDOW = (80.0, 180.0)
#: Width in pixels of a key image and of a 3D view.
KEY_IMAGE_PX = 340
VIEW_3D_PX = (520, 420)
#: Margin (mm) around the liver in a key image.
CROP_MARGIN_MM = 12.0
#: Colour of the lesion marker (yellow: stands out on grey CT and on the green lesion outline).
MARKER_RGB = (255, 230, 0)

# ------------------------------------------------------------------------------------------------
# The words: one table, one column per language
# ------------------------------------------------------------------------------------------------
WORDS: dict[str, dict[str, str]] = {
    "title": {"en": "Tumour-board report", "fr": "Rapport de RCP (réunion de concertation pluridisciplinaire)"},
    "subtitle": {"en": "Liver CT: volumes, colorectal liver metastases, resection planning",
                 "fr": "Scanner hépatique : volumes, métastases hépatiques colorectales, planification de résection"},
    "patient": {"en": "Patient", "fr": "Patient"},
    "patient_id": {"en": "Patient ID", "fr": "Identifiant patient"},
    "birth_date": {"en": "Birth date", "fr": "Date de naissance"},
    "study_date": {"en": "Study date", "fr": "Date de l'examen"},
    "series": {"en": "Series", "fr": "Série"},
    "phase": {"en": "Phase", "fr": "Phase"},
    "anonymised": {"en": "anonymised", "fr": "anonymisé"},
    "not_dicom": {"en": "not given (the CT was not read from DICOM)", "fr": "non renseigné (scanner hors DICOM)"},
    "case": {"en": "Case", "fr": "Cas"},
    "made": {"en": "Report made", "fr": "Rapport établi le"},
    "version": {"en": "LiverPlan version", "fr": "Version de LiverPlan"},
    "key_figures": {"en": "Key figures", "fr": "Chiffres clés"},
    "figure": {"en": "Figure", "fr": "Indicateur"},
    "right_hepatectomy": {"en": "right hepatectomy", "fr": "hépatectomie droite"},
    "left_hepatectomy": {"en": "left hepatectomy", "fr": "hépatectomie gauche"},
    "value": {"en": "Value", "fr": "Valeur"},
    "total_liver": {"en": "Total liver volume", "fr": "Volume hépatique total"},
    "tumour_burden": {"en": "Tumour burden", "fr": "Charge tumorale"},
    "lesions": {"en": "Lesions", "fr": "Lésions"},
    "largest_lesion": {"en": "Largest lesion (longest diameter)", "fr": "Plus grande lésion (plus grand diamètre)"},
    "bilobar": {"en": "Bilobar disease", "fr": "Atteinte bilobaire"},
    "yes": {"en": "yes", "fr": "oui"},
    "no": {"en": "no", "fr": "non"},
    "unknown": {"en": "unknown", "fr": "inconnu"},
    "none": {"en": "none", "fr": "aucune"},
    "flr_of": {"en": "FLR after", "fr": "FLR après"},
    "origin": {"en": "What made the labels", "fr": "Origine de la segmentation"},
    "labels_from": {"en": "Labels", "fr": "Segmentation"},
    "model": {"en": "Model", "fr": "Modèle"},
    "device": {"en": "Device and mode", "fr": "Matériel et mode"},
    "hand_edits": {"en": "Hand edits since the model ran", "fr": "Corrections manuelles depuis le modèle"},
    "no_edits": {"en": "none recorded", "fr": "aucune enregistrée"},
    "reviewed_by": {"en": "Reviewed by", "fr": "Relu par"},
    "not_reviewed": {"en": "NOT REVIEWED", "fr": "NON RELU"},
    "warnings": {"en": "Warnings", "fr": "Avertissements"},
    "no_warnings": {"en": "No warning.", "fr": "Aucun avertissement."},
    "view_anterior": {"en": "3D view from the front (anterior)", "fr": "Vue 3D de face (antérieure)"},
    "view_posterior": {"en": "3D view from the back (posterior)", "fr": "Vue 3D de dos (postérieure)"},
    "view_above": {"en": "3D view from above (superior)", "fr": "Vue 3D du dessus (supérieure)"},
    "view_note": {"en": "Liver transparent, vessels and numbered lesions.",
                  "fr": "Foie transparent, vaisseaux et lésions numérotées."},
    "appendix": {"en": "Appendix", "fr": "Annexe"},
    "volumes": {"en": "Volumes", "fr": "Volumes"},
    "structure": {"en": "Structure", "fr": "Structure"},
    "volume_ml": {"en": "Volume (mL)", "fr": "Volume (mL)"},
    "mean_hu": {"en": "Mean HU", "fr": "Densité moyenne (UH)"},
    "lesion_table": {"en": "Lesion table", "fr": "Tableau des lésions"},
    "lesion": {"en": "Lesion", "fr": "Lésion"},
    "diam3d": {"en": "3D diameter (mm)", "fr": "Diamètre 3D (mm)"},
    "diamax": {"en": "Axial diameter (mm)", "fr": "Diamètre axial (mm)"},
    "slices": {"en": "Slices", "fr": "Coupes"},
    "segments": {"en": "Segments", "fr": "Segments"},
    "hemiliver": {"en": "Hemiliver", "fr": "Hémifoie"},
    "nearest_vessel": {"en": "Nearest vessel (mm)", "fr": "Vaisseau le plus proche (mm)"},
    "scenarios": {"en": "Resection scenarios", "fr": "Scénarios de résection"},
    "scenario": {"en": "Scenario", "fr": "Scénario"},
    "resected": {"en": "Resected (mL)", "fr": "Réséqué (mL)"},
    "flr_ml": {"en": "FLR (mL)", "fr": "FLR (mL)"},
    "flr_pct": {"en": "FLR (%)", "fr": "FLR (%)"},
    "sflr_pct": {"en": "Standardised FLR (%)", "fr": "FLR standardisé (%)"},
    "lesions_left": {"en": "Lesions left", "fr": "Lésions restantes"},
    "no_scenarios": {"en": "No resection scenario (the segments could not be estimated).",
                     "fr": "Aucun scénario de résection (les segments n'ont pas pu être estimés)."},
    "no_lesions": {"en": "No lesion is labelled.", "fr": "Aucune lésion n'est segmentée."},
    "no_liver": {"en": "No liver is labelled: no liver volume, burden or resection can be given.",
                 "fr": "Aucun foie n'est segmenté : ni volume hépatique, ni charge tumorale, ni résection."},
    "remnant": {"en": "Remnant after", "fr": "Foie restant après"},
    "remnant_note": {"en": "Remnant brown, resected part red (transparent).",
                     "fr": "Foie restant en brun, partie réséquée en rouge (transparente)."},
    "key_images": {"en": "Key images", "fr": "Images clés"},
    "key_note": {"en": "Axial and coronal slices through each lesion's centre, liver window (L {l:g} / W {w:g} HU); "
                       "outlines: liver brown, portal vein light blue, hepatic veins blue, IVC dark blue, lesions "
                       "green; the yellow ring marks the lesion named.",
                 "fr": "Coupes axiale et coronale par le centre de chaque lésion, fenêtre hépatique "
                       "(N {l:g} / L {w:g} UH) ; contours : foie brun, veine porte bleu clair, veines sus-hépatiques "
                       "bleu, VCI bleu foncé, lésions vert ; l'anneau jaune marque la lésion nommée."},
    "axial": {"en": "axial", "fr": "axiale"},
    "coronal": {"en": "coronal", "fr": "coronale"},
    "slice": {"en": "slice", "fr": "coupe"},
    "evaluation": {"en": "Evaluation against the reference", "fr": "Évaluation par rapport à la référence"},
    "definitions": {"en": "Definitions", "fr": "Définitions"},
    "edits_table": {"en": "Hand edits per structure", "fr": "Corrections manuelles par structure"},
    "added": {"en": "Added", "fr": "Ajouté"},
    "removed": {"en": "Removed", "fr": "Retiré"},
    "voxels": {"en": "voxels", "fr": "voxels"},
    "provenance": {"en": "Provenance", "fr": "Provenance"},
    "not_clinical": {"en": "Made with the DEMO model (synthetic training data): NOT FOR CLINICAL USE",
                     "fr": "Réalisé avec le modèle de DÉMONSTRATION (données synthétiques) : NE PAS UTILISER EN CLINIQUE"},
    "footer": {"en": "LiverPlan tumour-board report", "fr": "Rapport de RCP LiverPlan"},
    "figures_note": {"en": "Numbers as given by LiverPlan's measure and plan commands.",
                     "fr": "Valeurs calculées par les commandes measure et plan de LiverPlan."},
    "model_warning": {"en": "Model", "fr": "Modèle"},
}
LANGUAGES = ("en", "fr")


def words(language: str):
    """A function key -> text in ``language`` (falls back to English for a missing entry)."""
    if language not in LANGUAGES:
        raise InputError(f"The report is written in English (en) or French (fr), not '{language}'.")

    def t(key: str, **kw) -> str:
        entry = WORDS[key]
        text = entry.get(language) or entry["en"]
        return text.format(**kw) if kw else text
    return t


# ------------------------------------------------------------------------------------------------
# Patient and study
# ------------------------------------------------------------------------------------------------
@dataclass
class PatientInfo:
    """The patient and study as the CT's DICOM tags give them (empty strings when absent)."""

    name: str = ""
    patient_id: str = ""
    birth_date: str = ""          # YYYYMMDD as in DICOM
    sex: str = ""
    study_date: str = ""
    study_time: str = ""
    study_uid: str = ""
    study_id: str = ""
    accession: str = ""
    series_uid: str = ""
    series_description: str = ""
    referring_physician: str = ""
    ct_sop_class: str = ""
    ct_instance_uids: list = field(default_factory=list)
    from_dicom: bool = False


def _dicom_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source] + sorted(p for p in source.parent.iterdir() if p.is_file() and p != source)
    return sorted(p for p in source.rglob("*") if p.is_file())


def patient_from_case(case: Case) -> PatientInfo:
    """Read the patient/study tags of the case's DICOM series (the case records the folder and series UID)."""
    info = PatientInfo(series_description=case.provenance.series_description,
                       series_uid=case.provenance.series_uid)
    if case.provenance.source_format != "dicom" or not case.provenance.source:
        return info
    import pydicom

    for p in _dicom_files(Path(case.provenance.source)):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, force=False)
        except Exception:  # noqa: BLE001 - any file that is not DICOM is skipped
            continue
        if case.provenance.series_uid and str(ds.get("SeriesInstanceUID", "")) != case.provenance.series_uid:
            continue
        if not info.from_dicom:
            info.from_dicom = True
            info.name = str(ds.get("PatientName", "") or "")
            info.patient_id = str(ds.get("PatientID", "") or "")
            info.birth_date = str(ds.get("PatientBirthDate", "") or "")
            info.sex = str(ds.get("PatientSex", "") or "")
            info.study_date = str(ds.get("StudyDate", "") or "")
            info.study_time = str(ds.get("StudyTime", "") or "")
            info.study_uid = str(ds.get("StudyInstanceUID", "") or "")
            info.study_id = str(ds.get("StudyID", "") or "")
            info.accession = str(ds.get("AccessionNumber", "") or "")
            info.series_uid = str(ds.get("SeriesInstanceUID", "") or info.series_uid)
            info.series_description = str(ds.get("SeriesDescription", "") or info.series_description)
            info.referring_physician = str(ds.get("ReferringPhysicianName", "") or "")
            info.ct_sop_class = str(ds.get("SOPClassUID", "") or "")
        uid = str(ds.get("SOPInstanceUID", "") or "")
        if uid:
            info.ct_instance_uids.append(uid)
    return info


def segmentation_record_for(labels_path) -> Optional[Path]:
    """The ``<case>_segmentation.json`` that ``segment`` writes beside ``<case>_seg.<ext>`` (None if absent)."""
    p = Path(labels_path).expanduser()
    name = p.name
    for ext in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".dcm"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    if not name.endswith("_seg"):
        return None
    rec = p.with_name(name[: -len("_seg")] + "_segmentation.json")
    return rec if rec.is_file() else None


def apply_segmentation_record(case: Case, record_path) -> bool:
    """Take the model card, device, mode and warnings of a ``segment`` record into ``case``'s provenance
    (so a report of a model's output file names the model and carries the demo model's warning).
    Returns False when the record is unreadable or names no model (the file is data: only known keys are used)."""
    import json

    try:
        data = json.loads(Path(record_path).read_text(encoding="utf-8"))
        prov = data.get("provenance") or {}
        models = [m for m in prov.get("models", []) if isinstance(m, dict)]
    except (OSError, ValueError, AttributeError):
        log.warning("the segmentation record %s cannot be read", record_path)
        return False
    if not models:
        return False
    cards = [m.get("card") or {} for m in models]
    case.provenance.model_card = cards[0] if len(cards) == 1 else {"combined": cards}
    case.provenance.extra["segmentation"] = {k: prov.get(k) for k in ("device", "mode") if k in prov}
    for w in data.get("warnings", []) or []:
        if isinstance(w, str) and w not in case.provenance.warnings:
            case.provenance.warnings.append(w)
    return True


def _dicom_date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


# ------------------------------------------------------------------------------------------------
# Hand edits since the model ran
# ------------------------------------------------------------------------------------------------
@dataclass
class EditSummary:
    """Voxels added to and removed from each structure by hand since the last replacing step (a model's
    result, a label file opened, an autosave restored). ``since``: that step's description."""

    since: str
    added: dict[int, int]
    removed: dict[int, int]
    steps: int

    def rows(self, voxel_ml: float) -> list[tuple[int, int, float, int, float]]:
        labels = sorted(set(self.added) | set(self.removed))
        return [(k, self.added.get(k, 0), self.added.get(k, 0) * voxel_ml, self.removed.get(k, 0),
                 self.removed.get(k, 0) * voxel_ml) for k in labels]


def edit_summary(history, labels: np.ndarray) -> Optional[EditSummary]:
    """Net hand edits per structure between the labels after the last replacing step and ``labels`` now.

    The labels at that step are rebuilt inside the union of the later steps' boxes by undoing those steps
    on a copy (their ``before`` values), so a voxel painted and erased again counts as no change.
    None when no history is given.
    """
    if history is None:
        return None
    from .edits import REPLACING_KINDS

    steps = list(history.applied_steps)
    start = 0
    since = ""
    for i, e in enumerate(steps):
        if e.kind in REPLACING_KINDS:
            start, since = i + 1, e.description
    later = steps[start:]
    if not later:
        return EditSummary(since, {}, {}, 0)
    box = later[0].box
    for e in later[1:]:
        box = (min(box[0], e.box[0]), max(box[1], e.box[1]), min(box[2], e.box[2]), max(box[3], e.box[3]),
               min(box[4], e.box[4]), max(box[5], e.box[5]))
    sl = (slice(box[0], box[1]), slice(box[2], box[3]), slice(box[4], box[5]))
    now = np.array(labels[sl], copy=True)
    then = now.copy()
    for e in reversed(later):
        inner = (slice(e.box[0] - box[0], e.box[1] - box[0]), slice(e.box[2] - box[2], e.box[3] - box[2]),
                 slice(e.box[4] - box[4], e.box[5] - box[4]))
        then[inner] = e.before
    changed = now != then
    gained = np.bincount(now[changed], minlength=256)
    lost = np.bincount(then[changed], minlength=256)
    added = {int(k): int(gained[k]) for k in np.flatnonzero(gained) if k != 0}
    removed = {int(k): int(lost[k]) for k in np.flatnonzero(lost) if k != 0}
    return EditSummary(since, added, removed, len(later))


# ------------------------------------------------------------------------------------------------
# Key images (Pillow: ~10 ms a picture, so a 200-lesion case stays quick)
# ------------------------------------------------------------------------------------------------
@dataclass
class KeyImage:
    """One key slice: the PNG and where its lesion marker is.

    ``marker_px`` (column, row) is the marker's centre in the PNG; ``px_to_voxel`` maps a PNG pixel (column,
    row) to the (z, y, x) voxel it shows (tests check that the marked voxel belongs to the lesion)."""

    lesion_id: int
    view: str                    # "axial" / "coronal"
    slice_index: int             # z (axial) or y (coronal)
    png: bytes
    marker_px: tuple[int, int]
    marker_voxel: tuple[int, int, int]
    scale: tuple[float, float]   # PNG pixels per voxel along (columns, rows)
    origin: tuple[int, int]      # voxel index of the crop's first column and row (x; y or z)
    flip_rows: bool              # coronal: rows run superior -> inferior (z decreasing)
    n_rows_vox: int

    def px_to_voxel(self, col: float, row: float) -> tuple[int, int, int]:
        c = int(self.origin[0] + col / self.scale[0])
        r_vox = int(row / self.scale[1])
        if self.flip_rows:
            r_vox = self.n_rows_vox - 1 - r_vox
        r = self.origin[1] + r_vox
        return (self.slice_index, r, c) if self.view == "axial" else (r, self.slice_index, c)


def _font(size: int):
    from PIL import ImageFont

    import matplotlib
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default()


def _grey(image2d: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    level, width = window
    lo = level - width / 2.0
    g = (np.asarray(image2d, np.float32) - lo) * (255.0 / max(width, 1e-3))
    return np.clip(g, 0, 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def liver_box(labels: np.ndarray) -> Optional[tuple[tuple[int, int], ...]]:
    """(start, stop) per axis (z, y, x) of the parenchyma and lesions, or None when there are none."""
    fg = (labels == Label.PARENCHYMA) | (labels == Label.CRLM)
    if not fg.any():
        return None
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        nz = np.flatnonzero(fg.any(axis=other))
        out.append((int(nz[0]), int(nz[-1]) + 1))
    return tuple(out)


def _crop_box(shape, spacing, lesion_bbox, box) -> tuple[slice, slice, slice]:
    """The liver's (and lesions') bounding box ``box`` plus a margin, always holding the lesion."""
    sl = []
    for ax in range(3):
        lo0, hi0 = box[ax] if box is not None else (0, shape[ax])
        m = int(round(CROP_MARGIN_MM / spacing[ax]))
        lo = max(0, min(lo0, lesion_bbox[ax][0]) - m)
        hi = min(shape[ax], max(hi0, lesion_bbox[ax][1]) + m)
        sl.append(slice(lo, hi))
    return tuple(sl)  # type: ignore[return-value]


def _marker_voxel(lesion_mask2d: np.ndarray, centre_rc: tuple[float, float]) -> tuple[int, int]:
    """The lesion pixel of the slice nearest to the centroid (a concave lesion's centroid may lie outside),
    preferring pixels deep inside (away from the outline) so that the ring's centre is inside it."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(lesion_mask2d)
    rr, cc = np.nonzero(lesion_mask2d)
    d2 = (rr - centre_rc[0]) ** 2 + (cc - centre_rc[1]) ** 2
    score = d2 - 4.0 * depth[rr, cc] ** 2
    i = int(np.argmin(score))
    return int(rr[i]), int(cc[i])


def key_image(case: Case, comp: np.ndarray, lesion, view: str, window=LIVER_WINDOW,
              lang: str = "en", box_liver=None) -> KeyImage:
    """An axial or coronal slice through ``lesion``'s centre (a :class:`engine.measure.Lesion`), structures
    outlined, the lesion marked with its number, scale bar and orientation letters.

    ``comp`` is the (z, y, x) int32 map of lesion numbers (0 elsewhere); ``box_liver`` :func:`liver_box`'s
    result (computed once for all the lesions of a case)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    t = words(lang)
    g = case.geometry
    sz, sy, sx = (float(s) for s in g.spacing)
    cz, cy, cx = lesion.centroid_zyx
    box = _crop_box(case.labels.shape, g.spacing, lesion.bbox,
                    box_liver if box_liver is not None else liver_box(case.labels))
    mine_3d = comp == lesion.id
    if view == "axial":
        k = int(np.clip(round(cz), lesion.bbox[0][0], lesion.bbox[0][1] - 1))
        if not mine_3d[k].any():
            k = int(lesion.bbox[0][0] + np.argmax(mine_3d[lesion.bbox[0][0]:lesion.bbox[0][1]].sum(axis=(1, 2))))
        img = case.image[k, box[1], box[2]]
        lab = case.labels[k, box[1], box[2]]
        mine = mine_3d[k, box[1], box[2]]
        row_mm, col_mm = sy, sx
        centre_rc = (cy - box[1].start, cx - box[2].start)
        origin = (box[2].start, box[1].start)
        flip = False
        letters = ("A", "P", "R", "L")      # top, bottom, left, right (radiological: patient right on the left)
    else:
        k = int(np.clip(round(cy), lesion.bbox[1][0], lesion.bbox[1][1] - 1))
        if not mine_3d[:, k].any():
            k = int(lesion.bbox[1][0] + np.argmax(mine_3d[:, lesion.bbox[1][0]:lesion.bbox[1][1]].sum(axis=(0, 2))))
        # rows: superior at the top (z decreasing down the picture)
        img = case.image[box[0], k, box[2]][::-1]
        lab = case.labels[box[0], k, box[2]][::-1]
        mine = mine_3d[box[0], k, box[2]][::-1]
        row_mm, col_mm = sz, sx
        centre_rc = ((box[0].stop - 1 - cz), cx - box[2].start)
        origin = (box[2].start, box[0].start)
        flip = True
        letters = ("S", "I", "R", "L")
    nr, nc = lab.shape
    width_mm, height_mm = nc * col_mm, nr * row_mm
    W = KEY_IMAGE_PX
    H = max(40, int(round(W * height_mm / width_mm)))
    scale = (W / nc, H / nr)
    grey = PILImage.fromarray(_grey(img, window)).resize((W, H), PILImage.BILINEAR)
    rgb = np.stack([np.asarray(grey)] * 3, axis=-1).copy()
    # outlines on the resized masks (nearest), so they are one pixel thick whatever the zoom
    for value in (Label.PARENCHYMA, Label.PORTAL_VEIN, Label.HEPATIC_VEINS, Label.IVC, Label.VESSEL_UNASSIGNED,
                  Label.CRLM):
        m = lab == value
        if not m.any():
            continue
        big = np.asarray(PILImage.fromarray(m.astype(np.uint8) * 255).resize((W, H), PILImage.NEAREST)) > 0
        if value == Label.CRLM:
            big |= np.asarray(PILImage.fromarray(mine.astype(np.uint8) * 255).resize((W, H), PILImage.NEAREST)) > 0
        # two pixels thick: visible in print and on a projector
        edge = _outline(big)
        edge[1:] |= edge[:-1]
        edge[:, 1:] |= edge[:, :-1]
        rgb[edge] = BY_LABEL[int(value)].color
    # the marker: a ring around a lesion pixel near the centroid, its centre left showing the CT
    mr, mc = _marker_voxel(mine, centre_rc)
    px = (int((mc + 0.5) * scale[0]), int((mr + 0.5) * scale[1]))
    pil = PILImage.fromarray(rgb)
    d = ImageDraw.Draw(pil)
    rad = 7
    d.ellipse([px[0] - rad, px[1] - rad, px[0] + rad, px[1] + rad], outline=MARKER_RGB, width=2)
    font = _font(14)
    label = str(lesion.id)
    tx, ty = px[0] + rad + 3, px[1] - rad - 14
    if tx > W - 30:
        tx = px[0] - rad - 12 - 9 * len(label)
    ty = max(2, ty)
    d.text((tx, ty), label, fill=MARKER_RGB, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    # scale bar (bottom right): 10, 20 or 50 mm, whichever is about a fifth of the width
    mm_per_px = width_mm / W
    bar_mm = next((b for b in (50, 20, 10, 5) if b / mm_per_px <= W / 4), 5)
    bar_px = int(round(bar_mm / mm_per_px))
    small = _font(11)
    x1, y1 = W - 10, H - 10
    d.rectangle([x1 - bar_px, y1 - 3, x1, y1], fill=(255, 255, 255), outline=(0, 0, 0))
    d.text((x1 - bar_px, y1 - 18), f"{bar_mm} mm", fill=(255, 255, 255), font=small, stroke_width=1,
           stroke_fill=(0, 0, 0))
    top, bottom, left, right = letters
    for text, pos in ((top, (W // 2 - 4, 3)), (bottom, (W // 2 - 4, H - 17)), (left, (4, H // 2 - 7)),
                      (right, (W - 13, H // 2 - 7))):
        d.text(pos, text, fill=(255, 255, 255), font=small, stroke_width=1, stroke_fill=(0, 0, 0))
    d.text((4, 3), f"{t(view)} {t('slice')} {k + 1}", fill=(255, 255, 255), font=small, stroke_width=1,
           stroke_fill=(0, 0, 0))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False, compress_level=6)
    r_full = (origin[1] + mr) if not flip else (box[0].stop - 1 - mr)
    voxel = (k, r_full, origin[0] + mc) if view == "axial" else (r_full, k, origin[0] + mc)
    return KeyImage(lesion.id, view, k, buf.getvalue(), px, voxel, scale, origin, flip, nr)


# ------------------------------------------------------------------------------------------------
# 3D views (VTK offscreen)
# ------------------------------------------------------------------------------------------------
def offscreen_ready() -> Optional[str]:
    """None when VTK can render offscreen here, else why not.

    VTK >= 9.4 picks its render window at run time: X when a display is there, else EGL (Mesa's libEGL:
    Debian's libegl1 + libegl-mesa0) or OSMesa (libosmesa6). Without a display we ask for EGL directly,
    which skips VTK's failed X attempt and its warning."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    try:
        import pyvista  # noqa: F401
    except ImportError as err:
        return f"pyvista is not installed ({err})"
    return None


def _camera(pl, centre, direction, up, dist):
    pl.camera_position = [tuple(centre + direction * dist), tuple(centre), tuple(up)]


def render_views(case: Case, lesions, views=("anterior", "posterior", "above"), surfaces=None,
                 scenario_masks: Optional[dict] = None) -> tuple[dict, dict]:
    """PNG bytes of the 3D views ({view: png}) and of each scenario's remnant ({name: png}, anterior).

    Liver transparent, vessels opaque, lesions green with their numbers. LPS: anterior = -y, superior = +z.
    """
    why = offscreen_ready()
    if why:
        raise ExportError(f"The 3D views cannot be drawn: {why}.")
    import pyvista as pv

    from .mesh import label_surfaces

    g = case.geometry
    if surfaces is None:
        surfaces = label_surfaces(case.labels, g, smooth=True)
    if not surfaces:
        return {}, {}
    pts = np.concatenate([np.asarray(s.points) for s in surfaces.values() if s.n_points])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2.0
    dist = float(np.linalg.norm(hi - lo)) * 1.6 + 50.0
    dirs = {"anterior": (np.array([0.0, -1.0, 0.0]), (0, 0, 1)),
            "posterior": (np.array([0.0, 1.0, 0.0]), (0, 0, 1)),
            "above": (np.array([0.0, 0.0, 1.0]), (0, -1, 0))}
    label_pts = np.array([g.index_to_physical(l.centroid_zyx) for l in lesions]) if lesions else None
    out: dict = {}
    pl = pv.Plotter(off_screen=True, window_size=VIEW_3D_PX)
    pl.set_background("white")
    for v, mesh in surfaces.items():
        if not mesh.n_points:
            continue
        col = tuple(c / 255 for c in BY_LABEL[v].color)
        pl.add_mesh(mesh, color=col, opacity=0.22 if v == Label.PARENCHYMA else 1.0, smooth_shading=True)
    if label_pts is not None and len(label_pts):
        pl.add_point_labels(label_pts, [str(l.id) for l in lesions], font_size=16, point_size=1,
                            text_color="black", shape_color="yellow", shape_opacity=0.85, always_visible=True)
    for view in views:
        d, up = dirs[view]
        _camera(pl, centre, d, up, dist)
        pl.reset_camera_clipping_range()
        pl.render()                  # else pyvista's screenshot returns the previous frame
        out[view] = _png(pl.screenshot(return_img=True))
    pl.close()
    remnants: dict = {}
    for name, masks in (scenario_masks or {}).items():
        parts = label_surfaces(masks, g, labels_wanted=(1, 2), smooth=True)
        pl = pv.Plotter(off_screen=True, window_size=VIEW_3D_PX)
        pl.set_background("white")
        if 1 in parts:
            pl.add_mesh(parts[1], color=tuple(c / 255 for c in BY_LABEL[1].color), smooth_shading=True)
        if 2 in parts:
            pl.add_mesh(parts[2], color=(0.85, 0.15, 0.15), opacity=0.3, smooth_shading=True)
        d, up = dirs["anterior"]
        _camera(pl, centre, d, up, dist)
        pl.reset_camera_clipping_range()
        pl.render()                  # else pyvista's screenshot returns the previous frame
        remnants[name] = _png(pl.screenshot(return_img=True))
        pl.close()
    return out, remnants


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.asarray(rgb, np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------
@dataclass
class BoardOptions:
    """What the user chooses: anonymised, who reviewed it, the language, the window, the 3D views."""

    anonymise: bool = False
    reviewed_by: str = ""
    language: str = "en"
    window: tuple[float, float] = LIVER_WINDOW
    views_3d: bool = True
    created: Optional[_dt.datetime] = None


@dataclass
class BoardReport:
    """The report document and what it was made of (tests and the DICOM wrapper read these)."""

    document: Document
    measurements: Any
    planner: Any
    patient: PatientInfo
    key_images: list[KeyImage]
    views: dict
    remnants: dict
    edits: Optional[EditSummary]
    warnings: list[str]
    options: BoardOptions
    demo_model: bool = False


def _fmt(v, nd: int = 1, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.{nd}f}{(' ' + unit) if unit else ''}"


def _is_demo(card) -> bool:
    if not card:
        return False
    if "combined" in card:
        return any(_is_demo(c) for c in card["combined"])
    return bool(card.get("demo") or card.get("not_for_clinical_use"))


def _model_text(card) -> str:
    if not card:
        return ""
    if "combined" in card:
        return "; ".join(_model_text(c) for c in card["combined"])
    bits = [f"{card.get('name', '?')} {card.get('version', '')}".strip()]
    if card.get("training_data"):
        bits.append(str(card["training_data"]))
    if card.get("licence"):
        bits.append(f"licence: {card['licence']}")
    return " — ".join(bits)


def _liver_present(labels: np.ndarray) -> bool:
    return bool(np.any(labels == Label.PARENCHYMA))


def build_report(case: Case, options: Optional[BoardOptions] = None, *, planner=None, measurements=None,
                 history=None, edits: Optional[EditSummary] = None, evaluation=None, patient: Optional[PatientInfo] = None, scenarios=None,
                 planning_patient=None, progress=None, cancel=None, comparison=None) -> BoardReport:
    """The tumour-board report of ``case`` (CT + labels).

    planner: an :class:`engine.planning.planner.Planner` already run (with its scenarios); made here when
    None, with ``scenarios`` (engine.planning.resection.Scenario; e.g. the Plan tab's) or else the standard
    right and left hepatectomies when the segments could be estimated; ``planning_patient`` (a
    resection.Patient: height, weight, condition) gives the standardised FLR.
    measurements: :func:`engine.measure.measure`'s report (made here when None). history: the session's
    :class:`engine.edits.EditHistory` (for the hand-edit summary). evaluation: a metrics CaseResult against a
    reference (its table goes in the appendix). progress(stage, done, total) and cancel (a CancelToken) as
    elsewhere in the engine. comparison: an :class:`engine.compare.report_section.ComparisonForReport` (this
    case being its follow-up) adds the section "Change since the baseline scan" before the appendix."""
    from .about import liverplan_version
    from .measure import measure
    from .planning.planner import Planner
    from .planning.resection import Scenario

    opts = options or BoardOptions()
    version = liverplan_version()
    t = words(opts.language)
    from .progress import check

    def step(fraction: float, text: str) -> None:
        check(cancel)
        if progress is not None:
            progress(text, int(round(100 * fraction)), 100)
    step(0.0, "measuring")
    rep = measurements if measurements is not None else measure(case)
    warnings = list(dict.fromkeys([*case.provenance.warnings, *rep.warnings]))
    has_liver = _liver_present(case.labels)
    if planner is None and has_liver:
        step(0.1, "planning")
        try:
            from .lesion_ids import ids_like_report
            # the lesions numbered as the measurements number them (the window's numbers kept through edits)
            planner = Planner(case.labels, case.geometry,
                              lesion_ids=lambda comps: ids_like_report(comps, rep.lesions)).run()
            if planning_patient is not None:
                planner.patient = planning_patient
            est = planner.estimate
            if scenarios:
                for sc in scenarios:
                    planner.set_scenario(sc)
            elif est is not None and est.segments_ok:
                planner.set_scenario(Scenario(t("right_hepatectomy"), segments=[5, 6, 7, 8]))
                planner.set_scenario(Scenario(t("left_hepatectomy"), segments=[2, 3, 4]))
        except (InputError, ValueError) as err:
            warnings.append(f"Planning could not be made: {err}")
            planner = None
    scen_figs = []
    if planner is not None:
        try:
            scen_figs = planner.compare()
        except InputError as err:
            warnings.append(f"A resection scenario could not be computed: {err}")
        est = planner.estimate
        if est is not None:
            if not est.segments_ok and est.status_text not in warnings:
                warnings.append(est.status_text)        # why there are no segments and no default scenarios
            warnings.extend(q for q in est.quality if q not in warnings)
    locs = {l.id: l for l in (planner.lesions if planner is not None else [])}
    change: list = []
    if comparison is not None:
        from .compare.report_section import change_blocks
        change, cmp_warnings, change_key = change_blocks(comparison, planner, opts.language, opts.anonymise)
        warnings.extend(cmp_warnings)
    patient = patient if patient is not None else patient_from_case(case)
    prov = case.provenance
    if opts.anonymise:
        # warnings may quote the CT's or the label file's path, which can carry a patient's name
        paths = [p for p in (prov.source, prov.label_source.removeprefix("file: ").strip(), case.name) if p]
        for i, w in enumerate(warnings):
            for p in sorted(paths, key=len, reverse=True):
                w = w.replace(p, "(withheld: anonymised)")
            warnings[i] = w
    card = prov.model_card
    demo = _is_demo(card)
    seg = prov.extra.get("segmentation") or {}
    edits = edits if edits is not None else edit_summary(history, case.labels)

    # ---- header -------------------------------------------------------------------------------
    created = opts.created or _dt.datetime.now().astimezone()
    if opts.anonymise:
        header = [f"{t('patient')}: {t('anonymised')}"]
        case_name = t("anonymised")
    elif patient.from_dicom:
        header = [f"{t('patient')}: {patient.name.replace('^', ' ').strip() or '—'}",
                  f"{t('patient_id')}: {patient.patient_id or '—'}",
                  f"{t('birth_date')}: {_dicom_date(patient.birth_date) or '—'}"]
        case_name = case.name
    else:
        header = [f"{t('patient')}: {t('not_dicom')}"]
        case_name = case.name
    if not opts.anonymise:
        header.append(f"{t('case')}: {case_name}")
    phase = prov.extra.get("phase_text") or prov.extra.get("phase_guess") or "—"
    if opts.anonymise:
        header.append(f"{t('phase')}: {phase}")
    else:
        header.append(f"{t('study_date')}: {_dicom_date(patient.study_date) or '—'} · {t('series')}: "
                      f"{patient.series_description or prov.series_description or '—'} · {t('phase')}: {phase}")
    header.append(f"{t('made')}: {created.strftime('%Y-%m-%d %H:%M %Z').strip()} · {t('version')}: {version}")
    # the footer is printed on every page and boxed under the title: the demo model's warning goes there
    footer = t("not_clinical") if demo else ""
    doc = Document(title=t("title"), subtitle=t("subtitle"), header_lines=header, footer=footer,
                   language=opts.language, created=created, contents=False,
                   meta={"title": t("title"), "author": "LiverPlan", "generator": f"LiverPlan {version}"})

    # ---- page 1 -------------------------------------------------------------------------------
    vox_ml = case.geometry.voxel_volume_ml
    def val(key):
        try:
            return rep.value(key)
        except KeyError:
            return None
    total = val("liver.total_volume_ml")
    burden = val("crlm.tumour_burden_pct")
    lesions = list(rep.lesions)
    key_rows = [[t("total_liver"), _fmt(total, 1, "mL") if has_liver else "n/a"],
                [t("tumour_burden"), _fmt(burden, 2, "%") if has_liver else "n/a"],
                [t("lesions"), str(len(lesions))]]
    if lesions:
        big = max(lesions, key=lambda l: l.longest_diameter_mm)
        key_rows.append([t("largest_lesion"), f"{t('lesion')} {big.id}: {big.longest_diameter_mm:.1f} mm, "
                                              f"{big.volume_ml:.2f} mL"])
    b = planner.bilobar() if planner is not None and lesions else None
    key_rows.append([t("bilobar"), t("unknown") if b is None and lesions else
                     (t("yes") if b else t("no")) if lesions else t("no")])
    for f in scen_figs:
        txt = f"{_fmt(f['flr_pct'], 1, '%')} ({_fmt(f['flr_ml'], 0, 'mL')})"
        if f.get("sflr_pct") is not None:
            txt += f"; sFLR {_fmt(f['sflr_pct'], 1, '%')}"
        key_rows.append([f"{t('flr_of')} {f['scenario']}", txt])
    if change:
        key_rows.append(list(change_key))
    if not has_liver:
        doc.add(Paragraph(t("no_liver"), "warning"))
    # origin of the labels
    origin_rows = [[t("labels_from"), ("—" if opts.anonymise and prov.label_source.startswith("file:")
                                       else _anon_path(prov.label_source, opts.anonymise))]]
    if card:
        origin_rows.append([t("model"), _model_text(card)])
        origin_rows.append([t("device"), f"{seg.get('device', '—')} · {seg.get('mode', '—')}"])
    if edits is None:
        origin_rows.append([t("hand_edits"), t("no_edits")])
    else:
        parts = [f"{BY_LABEL[k].name if k in BY_LABEL else k}: +{a} / −{r} {t('voxels')} "
                 f"(+{am:.2f} / −{rm:.2f} mL)" for k, a, am, r, rm in edits.rows(vox_ml)]
        origin_rows.append([t("hand_edits"), "; ".join(parts) if parts else t("no_edits")])
    origin_rows.append([t("reviewed_by"), opts.reviewed_by.strip() or t("not_reviewed")])
    views: dict = {}
    remnants: dict = {}
    if opts.views_3d:
        step(0.3, "3D views")
        masks = {}
        if planner is not None:
            for sc in planner.scenarios.values():
                try:
                    masks[sc.name] = planner.masks(sc)
                except InputError:
                    pass
        try:
            views, remnants = render_views(case, lesions, scenario_masks=masks)
        except ExportError as err:
            warnings.append(str(err))
    figures = Group([Heading(t("key_figures"), 2), Table([t("figure"), t("value")], key_rows, numeric=False,
                                                         notes=[t("figures_note")])])
    if "anterior" in views:
        doc.add(Group([figures, Image(views["anterior"], t("view_anterior") + ". " + t("view_note"),
                                      width="48.5%")], columns=2))
    else:
        doc.add(figures)
    doc.add(Heading(t("origin"), 2), Table(["", ""], origin_rows, numeric=False))
    doc.add(Heading(t("warnings"), 2))
    if warnings:
        doc.add(Table([t("warnings")], [[w] for w in warnings], numeric=False, small=True))
    else:
        doc.add(Paragraph(t("no_warnings")))
    doc.add(PageBreak())
    if change:                         # issue 22: the change since the baseline scan, vanished lesions' sites
        doc.add(*change, PageBreak())

    # ---- appendix -----------------------------------------------------------------------------
    # lettered in the order they appear: sections without content (no evaluation, no edits, no 3D views)
    # are left out, and a reader must not look for a missing "Appendix D"
    letters = iter("ABCDEFGHIJ")
    doc.add(Heading(f"{t('appendix')} {next(letters)} — {t('volumes')}", 1))
    vol_rows = []
    for m in rep.measurements:
        if m.units == "mL" or m.units == "%":
            vol_rows.append([m.name, _fmt(m.value, 2, m.units)])
    doc.add(Table([t("structure"), t("value")], vol_rows))
    doc.add(Paragraph(rep.definitions.get("total_liver_volume", ""), "note"),
            Paragraph(rep.definitions.get("tumour_burden", ""), "note"))

    doc.add(Heading(f"{t('appendix')} {next(letters)} — {t('lesion_table')}", 1))
    if not lesions:
        doc.add(Paragraph(t("no_lesions")))
    else:
        rows = []
        for l in lesions:
            loc = locs.get(l.id)
            near = loc.nearest if loc is not None else None
            rows.append([str(l.id), f"{l.volume_ml:.2f}", f"{l.longest_diameter_mm:.1f}", f"{l.axial_diameter_mm:.1f}",
                         f"{l.slice_range[0] + 1}–{l.slice_range[1] + 1}",
                         "n/a" if l.mean_hu is None else f"{l.mean_hu:.1f}",
                         (loc.segments_text or "—") if loc else "—", (loc.hemiliver or "—") if loc else "—",
                         f"{near.branch or near.structure} {near.distance_mm:.1f}" + (" ⚠" if near.contact else "")
                         if near is not None else "—"])
        # numeric=False: cells may wrap (nine columns must fit an A4 page)
        doc.add(Table([t("lesion"), t("volume_ml"), t("diam3d"), t("diamax"), t("slices"), t("mean_hu"),
                       t("segments"), t("hemiliver"), t("nearest_vessel")], rows, small=True, numeric=False,
                      notes=[rep.definitions.get("lesion", ""), rep.definitions.get("longest_diameter", ""),
                             rep.definitions.get("axial_diameter", "")]))
    doc.add(Heading(f"{t('appendix')} {next(letters)} — {t('scenarios')}", 1))
    if scen_figs:
        doc.add(Table([t("scenario"), t("resected"), t("flr_ml"), t("flr_pct"), t("sflr_pct"), t("lesions_left")],
                      [[f["scenario"], _fmt(f["resected_ml"], 0), _fmt(f["flr_ml"], 0), _fmt(f["flr_pct"], 1),
                        _fmt(f.get("sflr_pct"), 1), " ".join(str(d["lesion"]) for d in f["lesions_left"]) or "—"]
                       for f in scen_figs], notes=[scen_figs[0].get("reference_note", ""),
                                                   scen_figs[0].get("segment_source", "")]))
        if remnants:
            doc.add(Group([Image(png, f"{t('remnant')} {name}. {t('remnant_note')}", width="48.5%")
                           for name, png in remnants.items()], columns=2))
    else:
        doc.add(Paragraph(t("no_scenarios") if has_liver else t("no_liver")))
    if evaluation is not None:
        doc.add(Heading(f"{t('appendix')} {next(letters)} — {t('evaluation')}", 1))
        doc.add(_evaluation_table(evaluation))
    if edits is not None and (edits.added or edits.removed):
        doc.add(Heading(f"{t('appendix')} {next(letters)} — {t('edits_table')}", 1))
        doc.add(Table([t("structure"), f"{t('added')} ({t('voxels')})", f"{t('added')} (mL)",
                       f"{t('removed')} ({t('voxels')})", f"{t('removed')} (mL)"],
                      [[BY_LABEL[k].name if k in BY_LABEL else str(k), str(a), f"{am:.2f}", str(r), f"{rm:.2f}"]
                       for k, a, am, r, rm in edits.rows(vox_ml)], notes=[f"since: {edits.since}" if edits.since
                                                                         else ""]))
    if views:
        doc.add(Heading(f"{t('appendix')} {next(letters)} — 3D", 1))
        doc.add(Group([Image(views[v], t("view_" + v), width="48.5%") for v in views if v != "anterior"],
                      columns=2))
    if lesions:
        step(0.6, "key images")
        doc.add(PageBreak(), Heading(f"{t('appendix')} {next(letters)} — {t('key_images')}", 1),
                Paragraph(t("key_note", l=opts.window[0], w=opts.window[1]), "note"))
    key_images = []
    if lesions:
        from scipy import ndimage
        comp = np.zeros(case.labels.shape, np.int32)
        lab_cc, _ = ndimage.label(case.labels == Label.CRLM, structure=np.ones((3, 3, 3), bool))
        # map scipy's component numbers to measure's lesion numbers through each lesion's voxels
        for l in lesions:
            sl = tuple(slice(a, b) for a, b in l.bbox)
            sub = lab_cc[sl]
            ids, counts = np.unique(sub[sub > 0], return_counts=True)
            best = ids[np.argmax(counts)]
            comp[sl][sub == best] = l.id
        lbox = liver_box(case.labels)
        for i, l in enumerate(lesions):
            step(0.6 + 0.4 * i / len(lesions), "key images")
            ax = key_image(case, comp, l, "axial", opts.window, opts.language, lbox)
            co = key_image(case, comp, l, "coronal", opts.window, opts.language, lbox)
            key_images += [ax, co]
            doc.add(Group([Image(ax.png, f"{t('lesion')} {l.id} — {t('axial')}", width="48.5%"),
                           Image(co.png, f"{t('lesion')} {l.id} — {t('coronal')}", width="48.5%")], columns=2))
    doc.add(Heading(t("provenance"), 2))
    doc.add(Table(["", ""], [
        ["CT", _anon_path(prov.source, opts.anonymise)],
        [t("labels_from"), _anon_path(prov.label_source, opts.anonymise)],
        ["Grid", case.geometry.describe()],
        [t("version"), version]], numeric=False, small=True))
    step(1.0, "done")
    return BoardReport(doc, rep, planner, patient, key_images, views, remnants, edits, warnings, opts, demo)


def _anon_path(text: str, anonymise: bool) -> str:
    """Paths and file names may carry a patient's name: an anonymised report keeps no path."""
    if not anonymise:
        return text or "—"
    if text.startswith("file:"):
        return "file (name withheld: anonymised)"
    if "/" in text or "\\" in text:
        return "(path withheld: anonymised)"
    return text or "—"


def _evaluation_table(result) -> Table:
    """A metrics.suite.CaseResult ({structure key: {metric: value}}) as a table."""
    from .labels import BY_KEY

    cols = (("dice", "Dice", 3), ("hd95", "HD95 (mm)", 1), ("assd", "ASSD (mm)", 1), ("cldice", "clDice", 3))
    rows = []
    for key, vals in result.items():
        name = BY_KEY[key].name if key in BY_KEY else str(key)
        status = getattr(result, "status", {}).get(key, "")
        rows.append([name] + [_fmt(vals.get(k), nd) for k, _, nd in cols] + [status])
    return Table(["Structure"] + [h for _, h, _ in cols] + ["Status"], rows)


# ------------------------------------------------------------------------------------------------
# DICOM Encapsulated PDF
# ------------------------------------------------------------------------------------------------
ENCAPSULATED_PDF_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"


def dicom_encapsulated_pdf(pdf: bytes, report: BoardReport, title: str = "") -> bytes:
    """The PDF as a DICOM Encapsulated PDF instance (Modality DOC) in the CT's study when the CT came from
    DICOM (same Study Instance UID and patient module; the CT series in the Source Instance Sequence), so
    that a PACS files it with the patient. Anonymised: no name, ID or birth date, and new UIDs."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from .about import liverplan_version

    version = liverplan_version()
    p = report.patient
    anon = report.options.anonymise
    now = report.document.created or _dt.datetime.now().astimezone()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF_SOP_CLASS
    sop_uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["LiverPlan implementation"])
    meta.ImplementationVersionName = "LIVERPLAN"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"          # UTF-8: names in any script
    ds.SOPClassUID = ENCAPSULATED_PDF_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    # patient module (type 2: present, empty when unknown or anonymised)
    ds.PatientName = "" if anon else p.name
    ds.PatientID = "" if anon else p.patient_id
    ds.PatientBirthDate = "" if anon else p.birth_date
    ds.PatientSex = "" if anon else p.sex
    # general study: the CT's study, so the PACS files the report with it
    ds.StudyInstanceUID = p.study_uid if (p.study_uid and not anon) else generate_uid()
    ds.StudyDate = "" if anon else p.study_date
    ds.StudyTime = "" if anon else p.study_time
    ds.ReferringPhysicianName = "" if anon else p.referring_physician
    ds.StudyID = "" if anon else p.study_id
    ds.AccessionNumber = "" if anon else p.accession
    # encapsulated document series
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9901
    ds.SeriesDescription = "LiverPlan tumour-board report"
    # general equipment + SC equipment
    ds.Manufacturer = "LiverPlan"
    ds.SoftwareVersions = str(version)
    ds.ConversionType = "WSD"
    # encapsulated document
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "NO" if anon else "YES"
    ds.DocumentTitle = title or report.document.title
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    if p.from_dicom and p.series_uid and not anon and p.ct_instance_uids:
        src = Dataset()
        src.ReferencedSOPClassUID = p.ct_sop_class or "1.2.840.10008.5.1.4.1.1.2"
        src.ReferencedSOPInstanceUID = p.ct_instance_uids[0]
        ds.SourceInstanceSequence = [src]
    data = pdf if len(pdf) % 2 == 0 else pdf + b"\0"      # OB values have even length
    ds.EncapsulatedDocument = data
    ds.EncapsulatedDocumentLength = len(pdf)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
FORMATS = ("pdf", "html", "dcm")


def parse_formats(text: str) -> list[str]:
    fmts = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise InputError(f"Unknown report format(s) '{text}': choose among pdf, html, dcm (e.g. pdf,html).")
    return list(dict.fromkeys(fmts))


def write_report(report: BoardReport, out_dir, formats: Sequence[str] = ("pdf", "html"), stem: str = "board_report",
                 overwrite: bool = False) -> list[Path]:
    """Write the report as ``stem.pdf`` / ``stem.html`` / ``stem.dcm`` into ``out_dir`` (atomically; all
    targets are checked first, everything is rendered before anything is written)."""
    from .io.atomic import write_bytes_atomic, write_text_atomic
    from .reporting.html import render_html
    from .reporting.pdf import html_to_pdf, pdf_available

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; the report is written into a folder.")
    targets = {f: out / f"{stem}.{f}" for f in formats}
    if not overwrite:
        there = [str(p) for p in targets.values() if p.exists()]
        if there:
            raise ExportError(f"{', '.join(there)} already exist(s); nothing was written. Use --overwrite or "
                              "another folder.")
    html_text = render_html(report.document)
    pdf = None
    if "pdf" in targets or "dcm" in targets:
        why = pdf_available()
        if why:
            raise ExportError(f"No PDF could be written: {why}.")
        pdf = html_to_pdf(html_text, title=report.document.meta.get("title", ""), meta=report.document.meta)
    dcm = dicom_encapsulated_pdf(pdf, report) if "dcm" in targets else None
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "pdf" in targets:
        written.append(write_bytes_atomic(targets["pdf"], pdf, overwrite=overwrite))
    if "html" in targets:
        written.append(write_text_atomic(targets["html"], html_text, overwrite=overwrite))
    if dcm is not None:
        written.append(write_bytes_atomic(targets["dcm"], dcm, overwrite=overwrite))
    return written


def preview_html(report: BoardReport) -> tuple[str, list[bytes]]:
    """The report's HTML for a simple viewer (Qt's rich text): each embedded PNG replaced by the name
    ``lp-img-<i>`` and returned in order, for the viewer to register as a resource."""
    import base64
    import re

    from .reporting.html import render_html

    images: list[bytes] = []

    def swap(m):
        images.append(base64.b64decode(m.group(1)))
        return f'src="lp-img-{len(images) - 1}"'
    html_text = re.sub(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', swap, render_html(report.document))
    return html_text, images


def case_for_report(case: Case) -> Case:
    """A copy of the open case for a report made in the background (edits may go on meanwhile)."""
    return case.copy()
