"""Label maps in and out: NIfTI/NRRD/MHA label files, 3D Slicer .seg.nrrd, folders of binary masks.

Reading puts a foreign label map onto the case's CANONICAL grid (reorientation only, never resampling) and
maps its labels to LiverPlan's five structures (engine.labelmap.LabelMapping). A label map whose grid
differs from the CT's raises GeometryMismatchError in words. Writing goes back to the SOURCE grid of the CT
(engine.case.to_geometry) so the file lines up with the original image in any viewer; every write is
atomic (engine.io.atomic) and refuses to overwrite unless asked.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..case import Case, to_canonical, to_geometry
from ..errors import ExportError, GeometryMismatchError, InputError
from ..geometry import Geometry
from ..labelmap import PAINT_ORDER, LabelMapping, looks_like_ircadb
from ..labels import BY_KEY, LABEL_VALUES, structure_for_name
from .atomic import atomic_path
from .images import _stem, file_format, is_dicom_file, read_image_file

log = logging.getLogger(__name__)

LABEL_WRITE_FORMATS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".dcm")
_MASK_EXTS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def _fmt_xyz(v) -> str:
    return "(" + ", ".join(f"{float(x):.2f}" for x in v) + ")"


def _grid_text(g: Geometry) -> str:
    return f"{g.describe()}, origin {_fmt_xyz(g.origin)} mm"


def _target_geometry(geometry_or_case: Union[Geometry, Case]) -> Geometry:
    if isinstance(geometry_or_case, Case):
        return geometry_or_case.geometry
    if isinstance(geometry_or_case, Geometry):
        return geometry_or_case
    raise TypeError("read_label_map needs a Case or a Geometry")


def _onto_grid(img, target: Geometry, what: str, allow_crop: bool = False) -> np.ndarray:
    """The (z, y, x) array of a SimpleITK label image on ``target`` (canonical grid), or a clear error.

    ``allow_crop``: a label map on a sub-block of the CT's grid (Slicer's "crop to minimum extent") is
    padded with zeros into the full grid.
    """
    import SimpleITK as sitk

    canon = to_canonical(img)
    g = Geometry.from_sitk(canon)
    arr = sitk.GetArrayFromImage(canon)
    if g.same_grid(target):
        return arr
    if allow_crop and np.allclose(g.spacing, target.spacing, rtol=1e-3, atol=1e-3) \
            and np.allclose(g.direction, target.direction, atol=1e-3):
        off = target.physical_to_index(np.asarray(g.origin))
        ioff = np.round(off).astype(int)
        if np.allclose(off, ioff, atol=1e-2) and np.all(ioff >= 0) \
                and np.all(ioff + np.asarray(g.shape) <= np.asarray(target.shape)):
            out = np.zeros(target.shape, dtype=arr.dtype)
            z, y, x = ioff
            out[z:z + g.shape[0], y:y + g.shape[1], x:x + g.shape[2]] = arr
            return out
    raise GeometryMismatchError(
        f"The label map {what} does not lie on the CT's voxel grid, so it belongs to another image or was "
        f"resampled: label map {_grid_text(g)}; CT {_grid_text(target)}. Choose the label map made for "
        "this CT, or resample it onto the CT first (e.g. in 3D Slicer).")


def _as_integer_labels(arr: np.ndarray, what: str) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.allclose(arr, np.round(arr)):
            raise InputError(f"{what} holds fractional values (a probability map or an image?), not a label "
                             "map of whole numbers.")
        arr = np.round(arr).astype(np.int64)
    if arr.size and int(arr.min()) < 0:
        raise InputError(f"{what} has negative values (it looks like a CT image), not a label map.")
    return arr


def label_values_on_grid(img, geometry: Geometry, what: str, allow_crop: bool = False) -> np.ndarray:
    """The whole-number values of a SimpleITK label image on ``geometry`` (canonical grid), as they are
    in the file (no mapping): for readers of other per-voxel maps (e.g. engine.planning's segment maps).
    Raises GeometryMismatchError (another grid) or InputError (fractional or negative values)."""
    return _as_integer_labels(_onto_grid(img, geometry, what, allow_crop=allow_crop), what)


def read_label_map(path, geometry_or_case: Union[Geometry, Case],
                   mapping: Optional[LabelMapping] = None, notes: Optional[list[str]] = None) -> np.ndarray:
    """A LiverPlan uint8 label map (z, y, x) on the case's canonical grid, read from ``path``.

    path: a NIfTI/NRRD/MHA label file, a 3D Slicer .seg.nrrd (segments mapped by name), a DICOM SEG
        file (segments mapped by name), or a folder of
        binary masks named after structures (IRCADb style: liver, portalvein, venoussystem, livertumor1 ...).
    mapping: how foreign labels map to the five structures. Default: by name where names exist
        (segments, mask files; IRCADb folders get the "ircadb" preset), LiverPlan's own values 0-5 otherwise.
    notes: when a list is given, plain-language remarks a user should see are appended to it: structures the
        source merges (IRCADb's 'venoussystem' = hepatic veins + IVC) and masks or segments that were not used.
    Raises GeometryMismatchError when the grid differs from the CT's, InputError for unreadable input.
    """
    notes = notes if notes is not None else []
    p = Path(path).expanduser()
    target = _target_geometry(geometry_or_case)
    if not p.exists():
        raise InputError(f"The label map {p} does not exist.")
    if p.is_dir():
        return _read_mask_folder(p, target, mapping, notes)
    from .bounds import check_regular_input
    check_regular_input(p)              # a device or pipe named like a label map is never read
    fmt = file_format(p)
    if fmt == "seg.nrrd" or (fmt == "nrrd" and _nrrd_has_segments(p)):
        return _read_seg_nrrd(p, target, mapping, notes)
    if fmt == "dicom" or (fmt == "" and is_dicom_file(p)):
        from .dicomseg import read_dicom_seg
        return read_dicom_seg(p, target, mapping)
    if fmt == "":
        raise InputError(f"{p.name} is not a label-map file LiverPlan can open (use .nii.gz, .nii, .nrrd, "
                         ".seg.nrrd or .mha).")
    if p.stat().st_size == 0:
        raise InputError(f"The label map {p.name} is empty (0 bytes).")
    info = read_image_file(p, information_only=True)
    if info.GetDimension() != 3 or info.GetNumberOfComponents() != 1:
        raise InputError(f"The label map {p.name} is not a single 3D volume ({info.GetDimension()}D, "
                         f"{info.GetNumberOfComponents()} value(s) per voxel).")
    img = read_image_file(p)
    arr = _as_integer_labels(_onto_grid(img, target, p.name), f"The label map {p.name}")
    return _map_values(arr, p, mapping, notes)


#: Start of the note :func:`read_label_map` gives for label values the mapping does not cover.
UNMAPPED_NOTE = "Label values not in the label map"


def _map_values(arr: np.ndarray, p: Path, mapping: Optional[LabelMapping], notes: list[str]) -> np.ndarray:
    if mapping is not None:
        unmapped: list[int] = []
        out = mapping.apply(arr, unmapped=unmapped)
        notes.extend(n for n in mapping.notes if n not in notes)      # what the convention merges or lacks
        if unmapped:
            notes.append(f"{UNMAPPED_NOTE} ({mapping.name}) were read as background: {_short_list(unmapped)} "
                         "(map them to a structure, or list them under \"ignore\" in the label map).")
        return out
    values = [int(v) for v in np.unique(arr) if v != 0]
    if len(values) == 1:
        s = structure_for_name(_stem(p))
        if s is not None:
            log.info("%s: single-valued mask named after %s", p.name, s.key)
            return (arr == values[0]).astype(np.uint8) * np.uint8(s.label)
    if all(v in LABEL_VALUES for v in values):
        return arr.astype(np.uint8)
    raise InputError(
        f"The label map {p.name} uses label values ({_short_list(values)}) that are not LiverPlan's "
        "(1 liver, 2 portal vein, 3 hepatic veins, 4 IVC, 5 lesions, 6 unassigned vessel). Give a label mapping: a preset such as "
        "'totalsegmentator' or a JSON file like {\"liver\": [5], \"portal_vein\": [64], \"ivc\": [63]}.")


def _short_list(values: list[int], n: int = 8) -> str:
    s = ", ".join(str(v) for v in values[:n])
    return s + (f", ... ({len(values)} values)" if len(values) > n else "")


def _nrrd_has_segments(p: Path) -> bool:
    import nrrd

    from .segnrrd import is_seg_nrrd_header
    try:
        return is_seg_nrrd_header(nrrd.read_header(str(p)))
    except Exception:  # an unreadable header is reported by the normal reader below
        return False


def _read_seg_nrrd(p: Path, target: Geometry, mapping: Optional[LabelMapping], notes: list[str]) -> np.ndarray:
    from .segnrrd import read_seg_nrrd

    layers, segments, _ = read_seg_nrrd(p)
    arrays = [_as_integer_labels(_onto_grid(img, target, p.name, allow_crop=True), f"The segmentation {p.name}")
              for img in layers]
    if not segments:
        # A plain NRRD label volume that merely has a Slicer header: treat its values directly.
        return _map_values(arrays[0], p, mapping, notes)
    by_label: dict[int, list[np.ndarray]] = {}
    ignored = []
    for seg in segments:
        lab = mapping.structure_for_foreign_name(seg.name) if mapping is not None else None
        if lab is None and mapping is None:
            s = structure_for_name(seg.name)
            lab = s.label if s is not None else None
        if lab is None and mapping is not None and len(layers) == 1:
            lab = _value_lookup(mapping, seg.label_value)
        if lab is None:
            ignored.append(seg.name)
            continue
        if not 0 <= seg.layer < len(arrays):
            raise InputError(f"{p.name}: segment '{seg.name}' refers to layer {seg.layer}, which the file lacks.")
        by_label.setdefault(lab, []).append(arrays[seg.layer] == seg.label_value)
    if ignored:
        log.info("%s: segments not mapped to a LiverPlan structure: %s", p.name, ", ".join(ignored))
        notes.append(f"Segments that are none of the five structures were not used: {', '.join(ignored)}.")
    if mapping is not None:
        notes.extend(n for n in mapping.notes if n not in notes)
    if not by_label:
        raise InputError(f"None of the segments in {p.name} ({', '.join(s.name for s in segments)}) is one of "
                         "LiverPlan's structures (liver, portal vein, hepatic veins, IVC, lesions). Rename the "
                         "segments or give a label mapping.")
    out = np.zeros(target.shape, dtype=np.uint8)
    for lab in PAINT_ORDER:
        for mask in by_label.get(lab, []):
            out[mask] = lab
    return out


def _value_lookup(mapping: LabelMapping, value: int) -> Optional[int]:
    for key, vals in mapping.sources.items():
        if any(isinstance(v, (int, np.integer)) and int(v) == int(value) for v in vals):
            return BY_KEY[key].label
    return None


def _read_mask_folder(folder: Path, target: Geometry, mapping: Optional[LabelMapping],
                      notes: list[str]) -> np.ndarray:
    files = sorted(f for f in folder.iterdir()
                   if f.is_file() and not f.name.startswith(".") and f.name.lower().endswith(_MASK_EXTS))
    if not files:
        # IRCADb's own layout: MASKS_DICOM/<structure>/image_0 ... one DICOM series per sub-folder.
        files = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")
                       and any(is_dicom_file(f) for f in d.iterdir() if f.is_file()))
    if not files:
        raise InputError(f"The folder {folder} holds no mask files (.nii.gz, .nii, .nrrd, .mha) and no "
                         "sub-folders of DICOM masks; a mask folder has one file per structure, e.g. "
                         "liver.nii.gz, portalvein.nii.gz.")
    names = [f.name if f.is_dir() else _stem(f) for f in files]
    explicit = mapping is not None
    if mapping is None:
        mapping = LabelMapping.preset("ircadb") if looks_like_ircadb(names) else \
            LabelMapping({s.key: [n] for n in names for s in [structure_for_name(n)] if s is not None},
                         name="file names")
    wanted = [(f, n) for f, n in zip(files, names) if mapping.structure_for_foreign_name(n) is not None]
    if not wanted and explicit:
        raise InputError(f"The label map {mapping.name} names none of the mask files in {folder} "
                         f"({', '.join(names)}); a label map replaces matching by file name, so for a folder of "
                         'masks it must list their names, e.g. {"liver": ["liver"], "portal_vein": ["portalvein"]}.')
    if not wanted:
        raise InputError(f"None of the mask files in {folder} ({', '.join(names)}) is named after a LiverPlan "
                         "structure (liver, portal vein, hepatic veins, IVC, lesions).")
    masks: dict[str, np.ndarray] = {}
    for f, n in wanted:
        img = _read_dicom_mask_series(f) if f.is_dir() else read_image_file(f)
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"The mask {f.name} is not a single 3D volume.")
        masks[n] = _onto_grid(img, target, f.name) > 0
    out, ignored = mapping.apply_masks(masks)
    skipped = sorted(set(names) - set(masks))
    if skipped:
        log.info("%s: masks that are none of the five structures were skipped: %s", folder, ", ".join(skipped))
    # what the source merges (IRCADb: hepatic veins + IVC in one mask), then what was left out
    notes.extend(n for n in mapping.notes if n not in notes)
    if skipped:
        notes.append(f"Masks that are none of the five structures were not used: {', '.join(skipped)}.")
    return out


def _read_dicom_mask_series(folder: Path):
    """A DICOM series of mask slices (any modality) as a SimpleITK image, slices sorted by position."""
    from .dicom import list_series

    series = [s for s in list_series(folder) if s.spacing is not None and s.n_slices > 1
              and not any(w in (s.problem or "") for w in ("incomplete", "missing", "twice", "not uniform"))]
    if len(series) != 1:
        raise InputError(f"The mask folder {folder.name} does not hold exactly one series of slices.")
    import SimpleITK as sitk
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in series[0].files])
    reader.SetImageIO("GDCMImageIO")
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"The mask series in {folder.name} could not be decoded ({str(exc).strip()[-160:]}).") \
            from None


# --------------------------------------------------------------------------------------------
def _label_format(path: Path) -> str:
    name = path.name.lower()
    for ext in LABEL_WRITE_FORMATS:
        if name.endswith(ext):
            return ext
    if name.endswith(".mhd"):
        raise ExportError("MetaImage .mhd writes two files; use .mha (one file) instead.")
    raise ExportError(f"{path.name}: choose a label-map file type LiverPlan writes: "
                      f"{', '.join(LABEL_WRITE_FORMATS)}.")


def _source_label_image(case: Case, labels: Optional[np.ndarray]):
    import SimpleITK as sitk

    arr = case.labels if labels is None else np.asarray(labels)
    if tuple(arr.shape) != tuple(case.geometry.shape):
        raise ExportError(f"The label map has {arr.shape[::-1]} voxels (x, y, z) but the CT has "
                          f"{case.geometry.shape[::-1]}; nothing was written.")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ExportError("The label map has values outside 0-255; nothing was written.")
        arr = arr.astype(np.uint8)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    case.geometry.apply_to(img)
    return to_geometry(img, case.source_geometry or case.geometry)


def _complete_check(img, ext: str):
    """A check that a file SimpleITK wrote holds all of ``img``'s voxels (SimpleITK does not report a
    write cut off by a full disk); None for formats written by Python code, which raises by itself."""
    if ext in (".seg.nrrd", ".dcm"):
        return None
    from .integrity import check_complete

    expected = int(np.prod(img.GetSize())) * img.GetNumberOfComponentsPerPixel() * img.GetSizeOfPixelComponent()
    return lambda tmp: check_complete(tmp, expected)


def _write_failed(p: Path, exc: Exception, expected_bytes: int = 0) -> str:
    """A write the image library refused, in words where the cause can be found out (a full disk, a folder
    that cannot be written); its own text ("_nrrdGzWrite: failed to write to file") only as the detail."""
    import shutil

    detail = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else type(exc).__name__
    folder = p.expanduser().parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < max(expected_bytes, 1 << 20):
        cause = f"the disk is full ({free // (1 << 20)} MB free)"
    elif not os.access(folder, os.W_OK):
        cause = f"the folder {folder} cannot be written"
    else:
        cause = "the image writer refused it"
    return f"Could not write {p.name}: {cause}; nothing was changed (the writer said: {detail})."


def _copy_nifti_transforms(tmp: Path, t: dict, ext: str) -> None:
    """Give the NIfTI label map just written at ``tmp`` the source CT's own qform and sform (with their
    codes): the CT's two placements disagree, and ITK wrote its reading (the qform) into both."""
    import nibabel as nib

    img = nib.load(str(tmp))
    data = np.asarray(img.dataobj)
    out = nib.Nifti1Image(data, None, header=img.header.copy())
    out.set_qform(np.asarray(t["qform"]), code=int(t["qform_code"]))
    out.set_sform(np.asarray(t["sform"]), code=int(t["sform_code"]))
    out.set_data_dtype(data.dtype)
    second = Path(str(tmp) + ext)            # nibabel picks the compression from the extension
    try:
        nib.save(out, str(second))
        os.replace(second, tmp)
    except OSError as exc:
        raise ExportError(_write_failed(tmp, exc)) from None
    finally:
        second.unlink(missing_ok=True)


def write_label_map(path, case: Case, labels: Optional[np.ndarray] = None, overwrite: bool = False) -> Path:
    """Write a label map (default: ``case.labels``) in the CT's SOURCE geometry; returns the path.

    Format from the extension: .nii.gz/.nii (NIfTI), .nrrd, .mha, .seg.nrrd (3D Slicer segmentation with
    the five named, coloured segments) or .dcm (DICOM SEG referencing the CT's DICOM images; DICOM cases only). uint8 values 0-5 (engine.labels). Atomic; an existing file is kept
    unless ``overwrite``.
    """
    import SimpleITK as sitk

    p = Path(path).expanduser()
    ext = _label_format(p)
    img = _source_label_image(case, labels)
    with atomic_path(p, overwrite, verify=_complete_check(img, ext)) as tmp:
        if ext == ".seg.nrrd":
            from .segnrrd import write_seg_nrrd
            write_seg_nrrd(tmp, img)
        elif ext == ".dcm":
            from .dicomseg import write_dicom_seg
            write_dicom_seg(tmp, case, img)
        else:
            try:
                sitk.WriteImage(img, str(tmp), useCompression=ext in (".nii.gz", ".nrrd", ".mha"))
            except RuntimeError as exc:
                raise ExportError(_write_failed(p, exc)) \
                    from None
            if ext in (".nii.gz", ".nii") and case.provenance.extra.get("nifti_transforms"):
                _copy_nifti_transforms(tmp, case.provenance.extra["nifti_transforms"], ext)
    log.info("wrote label map %s", p)
    return p


def write_image(path, case: Case, overwrite: bool = False) -> Path:
    """Write the CT (HU) in its SOURCE geometry as .nii.gz/.nii/.nrrd/.mha; atomic, no silent overwrite."""
    import SimpleITK as sitk

    p = Path(path).expanduser()
    ext = _label_format(p)
    if ext in (".seg.nrrd", ".dcm"):
        raise ExportError(f"LiverPlan writes the CT as .nii.gz, .nii, .nrrd or .mha, not as {ext}.")
    img = case.image_sitk(canonical=False)
    with atomic_path(p, overwrite, verify=_complete_check(img, ext)) as tmp:
        try:
            sitk.WriteImage(img, str(tmp), useCompression=ext in (".nii.gz", ".nrrd", ".mha"))
        except RuntimeError as exc:
            raise ExportError(_write_failed(p, exc)) from None
    log.info("wrote image %s", p)
    return p
