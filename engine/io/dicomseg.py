"""DICOM Segmentation objects (SEG) as label maps on a CT's grid.

A SEG stores one 2D frame per (segment, slice) with its own ImagePositionPatient. Each frame is placed on
the case's canonical grid by mapping its pixel rows/columns to voxel indices; frames that do not fall on
the grid's voxels raise GeometryMismatchError. BINARY and FRACTIONAL (>= 50 %) segmentations are read.
Segment labels ("Liver", "Portal vein" ...) map to the five structures by name.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import GeometryMismatchError, InputError
from ..geometry import Geometry
from ..labelmap import PAINT_ORDER, LabelMapping
from ..labels import BY_KEY, structure_for_name

log = logging.getLogger(__name__)


def is_dicom_seg_file(path: Path) -> bool:
    """Is ``path`` a DICOM file whose Modality is SEG (reads the header only)?"""
    from .images import is_dicom_file

    p = Path(path)
    if not p.is_file() or not is_dicom_file(p):
        return False
    import pydicom
    try:
        ds = pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # a damaged header: not usable as a SEG here; reading it reports the damage
        return False
    return str(ds.get("Modality", "")).upper() == "SEG"


def _seq_item(ds, *names):
    for name in names:
        seq = ds.get(name)
        if not seq:
            return None
        ds = seq[0]
    return ds


def read_dicom_seg(path: Path, target: Geometry, mapping: Optional[LabelMapping] = None) -> np.ndarray:
    """A LiverPlan uint8 label map (z, y, x) on ``target`` (a canonical grid) from a DICOM SEG file."""
    try:
        return _read_dicom_seg(path, target, mapping)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, NotImplementedError, OverflowError) as exc:
        # a missing or malformed element (pydicom decodes them lazily, on first use): a damaged file
        raise InputError(f"{path.name} could not be read as a DICOM segmentation: an element is missing or "
                         f"malformed ({type(exc).__name__}: {str(exc)[:120]}); the file may be damaged.") from None


def _read_dicom_seg(path: Path, target: Geometry, mapping: Optional[LabelMapping] = None) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # pydicom raises many types for damaged files
        raise InputError(f"{path.name} could not be read as DICOM ({exc}).") from None
    if str(ds.get("Modality", "")).upper() != "SEG" or "SegmentSequence" not in ds:
        raise InputError(f"{path.name} is a DICOM file but not a segmentation object (SEG).")
    try:
        frames = ds.pixel_array
    except Exception as exc:
        raise InputError(f"The pixels of {path.name} could not be decoded ({exc}); the file may be damaged.") \
            from None
    if frames.ndim == 2:
        frames = frames[None]
    if str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        frames = frames >= (float(ds.get("MaximumFractionalValue", 255)) / 2.0)
    names = {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in ds.SegmentSequence}
    seg_to_label: dict[int, Optional[int]] = {}
    for num, name in names.items():
        lab = None
        if mapping is not None:
            lab = mapping.structure_for_foreign_name(name)
            if lab is None:
                for key, vals in mapping.sources.items():
                    if any(isinstance(v, int) and v == num for v in vals):
                        lab = BY_KEY[key].label
        else:
            s = structure_for_name(name)
            lab = s.label if s else None
        seg_to_label[num] = lab
    if not any(seg_to_label.values()):
        raise InputError(f"None of the segments in {path.name} ({', '.join(names.values())}) is one of "
                         "LiverPlan's structures (liver, portal vein, hepatic veins, IVC, lesions).")
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    if len(per_frame) != frames.shape[0]:
        raise InputError(f"{path.name} lists {len(per_frame)} frame descriptions for {frames.shape[0]} frames.")
    masks: dict[int, np.ndarray] = {}
    for i, pf in enumerate(per_frame):
        ident = _seq_item(pf, "SegmentIdentificationSequence") or \
            (_seq_item(shared, "SegmentIdentificationSequence") if shared is not None else None)
        num = int(ident.ReferencedSegmentNumber) if ident is not None else 1
        lab = seg_to_label.get(num)
        if not lab or not frames[i].any():
            continue
        pos = _seq_item(pf, "PlanePositionSequence")
        ori = _seq_item(pf, "PlaneOrientationSequence") or \
            (_seq_item(shared, "PlaneOrientationSequence") if shared is not None else None)
        meas = _seq_item(pf, "PixelMeasuresSequence") or \
            (_seq_item(shared, "PixelMeasuresSequence") if shared is not None else None)
        if pos is None or ori is None or meas is None:
            raise InputError(f"{path.name} does not give the position, orientation and pixel spacing of its "
                             "frames, so it cannot be placed on the CT.")
        p0 = np.asarray([float(v) for v in pos.ImagePositionPatient])
        o = [float(v) for v in ori.ImageOrientationPatient]
        ps = [float(v) for v in meas.PixelSpacing]     # (between rows, between columns)
        i0 = target.physical_to_index(p0)
        d_col = target.physical_to_index(p0 + np.asarray(o[:3]) * ps[1]) - i0   # one column to the right
        d_row = target.physical_to_index(p0 + np.asarray(o[3:]) * ps[0]) - i0   # one row down
        if not (np.allclose(i0, np.round(i0), atol=0.05) and _unit_axis(d_col) and _unit_axis(d_row)):
            raise GeometryMismatchError(
                f"The segmentation {path.name} does not lie on the CT's voxel grid (frame {i + 1} at "
                f"{_xyz(p0)} mm does not fall on a CT voxel plane); choose the CT series it was made for.")
        rr, cc = np.nonzero(frames[i])
        idx = np.round(i0[None, :] + cc[:, None] * d_col[None, :] + rr[:, None] * d_row[None, :]).astype(int)
        if np.any(idx < 0) or np.any(idx >= np.asarray(target.shape)[None, :]):
            raise GeometryMismatchError(
                f"The segmentation {path.name} reaches outside the CT (frame {i + 1} at {_xyz(p0)} mm); "
                "choose the CT series it was made for.")
        m = masks.setdefault(lab, np.zeros(target.shape, dtype=bool))
        m[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    out = np.zeros(target.shape, dtype=np.uint8)
    for lab in PAINT_ORDER:
        if lab in masks:
            out[masks[lab]] = lab
    return out


def _unit_axis(v: np.ndarray) -> bool:
    a = np.abs(v)
    return bool(np.isclose(a.max(), 1.0, atol=1e-3) and np.sum(a > 1e-3) == 1)


def _xyz(v) -> str:
    return "(" + ", ".join(f"{float(x):.2f}" for x in v) + ")"


# --------------------------------------------------------------------------------------------
def _source_series(case):
    """The SeriesInfo the case was read from (re-listed from its folder), or ExportError."""
    from ..errors import ExportError
    from .dicom import list_series

    prov = case.provenance
    key = prov.extra.get("series_key")
    if prov.source_format != "dicom" or not key:
        raise ExportError("A DICOM SEG refers to the CT's DICOM images, and this CT was not read from DICOM; "
                          "export the label map as .nii.gz, .nrrd or .seg.nrrd instead.")
    folder = Path(prov.source)
    try:
        series = list_series(folder)
    except InputError as exc:
        raise ExportError(f"The CT's DICOM folder cannot be read any more ({exc}); the DICOM SEG needs it.") \
            from None
    for s in series:
        if s.key == key:
            return s
    raise ExportError(f"The CT's series is no longer in {folder}; the DICOM SEG needs its files.")


def dicom_seg_problem(case) -> Optional[str]:
    """Why no DICOM SEG can be written for ``case`` (not read from DICOM, its series gone, anonymised files
    with empty UIDs), in words; None when it can. Reads the series' headers only: cheap enough to ask
    before a model runs or anything is written."""
    import pydicom

    from ..errors import ExportError
    if case.provenance.extra.get("gantry_tilt_resampled_deg"):
        return _TILTED
    try:
        info = _source_series(case)
    except ExportError as exc:
        return str(exc)
    for f in info.files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same plain message
            return f"The CT's DICOM file {Path(f).name} cannot be read any more ({exc}); the DICOM SEG needs it."
        if _lacks_uids(ds):
            return _EMPTY_UIDS
    return None


def _lacks_uids(ds) -> bool:
    """A CT file a DICOM SEG cannot refer to (anonymised: empty UIDs)."""
    return not all(ds.get(k) for k in ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID"))


_TILTED = ("This series was acquired with a gantry tilt, and LiverPlan resampled it onto an untilted grid; a "
           "DICOM SEG must lie on the original, tilted slices, which LiverPlan does not write. Export the label "
           "map as .nii.gz, .nrrd or .seg.nrrd instead.")
_EMPTY_UIDS = ("The CT's DICOM files have empty UIDs (anonymised), so a DICOM SEG could not refer to them; export "
               "the label map as .nii.gz or .seg.nrrd instead.")


def _algorithm(case, software_version: str):
    """(SegmentAlgorithmType, AlgorithmIdentificationSequence) from what made the labels: a model's unedited
    output is AUTOMATIC, edited by hand afterwards SEMIAUTOMATIC (both name the model(s) and version(s));
    a phantom's labels AUTOMATIC (LiverPlan's phantom generator). Labels read from a file are of unknown
    origin — DICOM has no word for that and MANUAL would claim that a person drew them — so they keep what
    LiverPlan wrote before: SEMIAUTOMATIC, LiverPlan."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    prov = case.provenance
    source = str(prov.label_source)
    if source == "phantom":
        return "AUTOMATIC", hd.AlgorithmIdentificationSequence(
            name="LiverPlan phantom generator", version=software_version,
            family=codes.cid7162.ArtificialIntelligence)
    if not source.startswith("model:"):
        return "SEMIAUTOMATIC", hd.AlgorithmIdentificationSequence(
            name="LiverPlan", version=software_version, family=codes.cid7162.ArtificialIntelligence)
    card = prov.model_card or {}
    cards = card.get("combined") or [card]
    cards = [c.get("card", c) if isinstance(c, dict) else {} for c in cards]   # the GUI keeps the model's record
    names = [str(c.get("name") or "") for c in cards]
    name = " + ".join(n for n in names if n) or source[len("model:"):].strip() or "LiverPlan"
    versions = [str(c.get("version") or "") for c in cards]
    version = " + ".join(v for v in versions if v) or software_version
    alg = hd.AlgorithmIdentificationSequence(name=name[:64], version=version[:64],
                                             family=codes.cid7162.ArtificialIntelligence)
    return ("SEMIAUTOMATIC" if prov.extra.get("edited") else "AUTOMATIC"), alg


def write_dicom_seg(tmp_path: Path, case, label_image) -> None:
    """Write a DICOM Segmentation (BINARY, one segment per LiverPlan structure present) referencing the
    CT's own DICOM images. ``label_image``: SimpleITK uint8 label map on the SOURCE grid, whose slices are
    in the order of the series' files (as engine.io.dicom.read_series read them)."""
    import warnings

    import highdicom as hd
    import pydicom
    import SimpleITK as sitk
    from pydicom.sr.coding import Code

    from ..errors import ExportError
    from ..labels import ALL_STRUCTURES
    from .segnrrd import _TERMINOLOGY

    if case.provenance.extra.get("gantry_tilt_resampled_deg"):
        raise ExportError(_TILTED)
    info = _source_series(case)
    arr = sitk.GetArrayFromImage(label_image)          # (z, rows, cols) in the series' file order
    if arr.shape[0] != len(info.files):
        raise ExportError("The label map does not have one slice per DICOM image of the CT series.")
    present = [s for s in ALL_STRUCTURES if np.any(arr == s.label)]
    if not present:
        raise ExportError("The label map is empty; a DICOM SEG needs at least one labelled structure.")
    sources = []
    for f in info.files:
        ds = pydicom.dcmread(str(f))
        if _lacks_uids(ds):
            raise ExportError(_EMPTY_UIDS)
        if not ds.get("SpecificCharacterSet"):
            ds.SpecificCharacterSet = "ISO_IR 100"     # in memory only: highdicom refuses an empty value
        sources.append(ds)
    from ..about import liverplan_version
    sw = liverplan_version()          # the bundle's build_info.json (it carries no package metadata)
    algorithm_type, alg = _algorithm(case, sw)
    descs = []
    stack = np.zeros(arr.shape + (len(present),), dtype=bool)
    for n, s in enumerate(present, 1):
        cat_code, cat_name, type_code, type_name = _TERMINOLOGY[s.key]
        descs.append(hd.seg.SegmentDescription(
            segment_number=n, segment_label=s.name,
            segmented_property_category=Code(cat_code, "SCT", cat_name),
            segmented_property_type=Code(type_code, "SCT", type_name),
            algorithm_type=algorithm_type, algorithm_identification=alg,
            display_color=hd.color.CIELabColor.from_rgb(*s.color)))
        stack[..., n - 1] = arr == s.label
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # highdicom warns about odd patient-name formats in sources
            seg = hd.seg.Segmentation(
                source_images=sources, pixel_array=stack, segmentation_type="BINARY",
                segment_descriptions=descs, series_instance_uid=hd.UID(), series_number=9901,
                sop_instance_uid=hd.UID(), instance_number=1, manufacturer="LiverPlan",
                manufacturer_model_name="LiverPlan", software_versions=sw, device_serial_number="0",
                series_description="LiverPlan segmentation", content_label="LIVERPLAN")
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ExportError(f"The DICOM SEG could not be built from this CT's DICOM files ({exc}).") from None
    seg.save_as(str(tmp_path))
