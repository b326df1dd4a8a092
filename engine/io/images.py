"""Reading CT images (NIfTI, NRRD, MHA/MHD, DICOM) into a canonical :class:`engine.case.Case`.

All geometry conversion happens in engine.case.case_from_sitk; this module only finds, checks and reads
files, and turns library errors into sentences.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ..case import Case, Provenance, case_from_sitk
from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check

log = logging.getLogger(__name__)

#: Extensions (lower case) -> format name. Compound ones first.
FORMATS: tuple[tuple[str, str], ...] = (
    (".seg.nrrd", "seg.nrrd"), (".nii.gz", "nifti"), (".nii", "nifti"), (".nrrd", "nrrd"), (".nhdr", "nrrd"),
    (".mha", "mha"), (".mhd", "mha"), (".dcm", "dicom"), (".dicom", "dicom"), (".ima", "dicom"),
)


def file_format(path: Path) -> str:
    """Format of a file from its name: nifti, nrrd, seg.nrrd, mha, dicom or '' (unknown)."""
    name = path.name.lower()
    for ext, fmt in FORMATS:
        if name.endswith(ext):
            return fmt
    return ""


def is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_error(path: Path, exc: BaseException) -> InputError:
    text = str(exc)
    low = text.lower()
    if any(w in low for w in ("gz", "zlib", "unexpected end", "short read", "truncat", "eof", "read failed",
                              "couldn't read", "could not read", "bytes")):
        why = "the file is damaged or incomplete (it may have been cut off while copying)"
    elif "unable to determine imageio" in low or "no imageio" in low or "not supported" in low:
        why = "its format is not one LiverPlan reads (NIfTI, NRRD, MHA or DICOM)"
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        why = f"the reader reported: {lines[-1][:160] if lines else type(exc).__name__}"
    return InputError(f"{path.name} could not be read: {why}.")


def read_image_file(path: Path, information_only: bool = False):
    """A SimpleITK image from a NIfTI/NRRD/MHA file (or only its header, with ``information_only``)."""
    import SimpleITK as sitk

    from .bounds import check_data_files, check_image_bytes

    check_data_files(path)       # the file and any data file its header names: regular files, never devices
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        if information_only:
            return reader
    except RuntimeError as exc:
        raise _read_error(path, exc) from None
    # SimpleITK fills a cut-off compressed file with zeros without complaint: check it is complete first.
    from .integrity import check_complete, nifti_data_bytes
    expected = int(np.prod(reader.GetSize(), dtype=object)) * reader.GetNumberOfComponents() \
        * _component_bytes(reader)
    check_image_bytes(path, expected)   # detached data files hold the claimed bytes; the claim fits in memory
    if path.name.lower().endswith((".nii", ".nii.gz")):
        # the size on disk follows the header's own type: a scaled int16 CT is read back as float32
        on_disk = nifti_data_bytes(path)
        if on_disk is not None:
            expected = min(expected, on_disk)
    problem = check_complete(path, expected)
    if problem:
        raise InputError(f"{path.name} could not be read: the file is damaged or incomplete ({problem}); "
                         "copy it again from its source.")
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise _read_error(path, exc) from None
    return img


def _component_bytes(reader) -> int:
    import SimpleITK as sitk

    pid = reader.GetPixelID()
    try:
        probe = sitk.Image([1, 1], pid, max(1, reader.GetNumberOfComponents()))
    except RuntimeError:
        probe = sitk.Image([1, 1], pid)
    return int(probe.GetSizeOfPixelComponent())


def looks_like_label_map(arr: np.ndarray) -> bool:
    """A label map, not a CT: integer data with non-negative values up to 255 and either at most 32
    distinct values, or at most 160 with background (0) the most common value — a many-structure map
    such as TotalSegmentator's 117 labels. (A CT in HU has negative values; an 8-bit windowed export of
    one uses nearly all 256 values.)"""
    if not np.issubdtype(arr.dtype, np.integer) or arr.size == 0:
        return False
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 255:
        return False
    sample = np.ravel(arr)[:: max(1, arr.size // 2_000_000)]
    counts = np.bincount(sample.astype(np.int64, copy=False), minlength=1)
    n_values = int(np.count_nonzero(counts))
    if n_values <= 32:
        return True
    return n_values <= 160 and int(np.argmax(counts)) == 0


def non_finite_count(arr: np.ndarray) -> int:
    """Voxels holding NaN or +-inf (0 for integer data)."""
    if not np.issubdtype(arr.dtype, np.floating):
        return 0
    return int(arr.size - np.count_nonzero(np.isfinite(arr)))


def finite_values(arr: np.ndarray) -> np.ndarray:
    """The finite values of ``arr`` (all of it, unchanged, when there is no NaN / inf)."""
    if not np.issubdtype(arr.dtype, np.floating):
        return arr
    ok = np.isfinite(arr)
    return arr if ok.all() else arr[ok]


def modality_guess(arr: np.ndarray) -> str:
    """'label map', 'CT (Hounsfield units)', 'CT without HU rescale?' or 'not CT-like (MR or processed?)'."""
    if looks_like_label_map(arr):
        return "label map"
    if np.issubdtype(arr.dtype, np.floating):
        arr = finite_values(arr)            # NaN / inf voxels hold no value (counted by non_finite_count)
        if arr.size == 0:
            return "not CT-like (no voxel holds a value)"
    lo = float(np.min(arr))
    sample = np.asarray(arr).ravel()[:: max(1, arr.size // 1_000_000)]
    p1, p99 = (float(v) for v in np.percentile(sample, [1, 99]))
    if lo <= -900 and p1 <= -500 and p99 >= 0:
        return "CT (Hounsfield units)"
    # A field of view fitted to the liver holds little air (a little bowel gas or lung): mostly soft tissue
    # (-150 to 250 HU). A normalised image (values around 0, none far below) or an MR (none below 0) is not.
    if lo <= -500 and p99 >= 0 and float(np.mean((sample >= -150) & (sample <= 250))) >= 0.3:
        return "CT (Hounsfield units)"
    if lo >= 0 and p1 <= 100 and p99 > 900:
        return "CT without HU rescale? (no negative values)"
    return "not CT-like (MR or a processed image?)"


def load_image_file(path: Path, progress: Optional[ProgressCallback] = None,
                    cancel: Optional[CancelToken] = None) -> Case:
    """Read a CT from a NIfTI/NRRD/MHA file into a canonical Case."""
    fmt = file_format(path)
    if fmt == "seg.nrrd":
        raise InputError(f"{path.name} is a 3D Slicer segmentation (a label map), not a CT. Open the CT first, "
                         "then load this file as its label map.")
    if progress:
        progress("Reading image", 0, 1)
    check(cancel)
    info = read_image_file(path, information_only=True)
    dim = info.GetDimension()
    if dim == 2 or (dim >= 3 and min(info.GetSize()[:3]) < 2 and dim == 3):
        size = "x".join(str(s) for s in info.GetSize())
        raise InputError(f"{path.name} is a single 2D image ({size}); LiverPlan needs a 3D CT volume.")
    if dim > 3:
        raise InputError(f"{path.name} has {dim} dimensions (a time series or a multi-layer segmentation); "
                         "LiverPlan needs one 3D CT volume.")
    if info.GetNumberOfComponents() != 1:
        raise InputError(f"{path.name} has {info.GetNumberOfComponents()} values per voxel (colour or vector "
                         "data); it is not a CT.")
    img = read_image_file(path)
    check(cancel)
    import SimpleITK as sitk
    if fmt == "nifti" and img.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        img = _nifti_nan_kept(path, img)
    # A copy, never a view: a view of an image that is replaced or freed reads freed memory (a NaN voxel in a
    # float NIfTI once crashed the process that way). Non-finite voxels follow one rule for every format:
    # case_from_sitk treats them as air and reports their count.
    arr = sitk.GetArrayFromImage(img)
    if looks_like_label_map(arr):
        raise InputError(f"{path.name} looks like a label map (only {len(np.unique(arr))} distinct values, "
                         "no Hounsfield units), not a CT. Open the CT first, then load this file as labels.")
    prov = Provenance(source=str(path), source_format=fmt or "image", modality="CT",
                      series_description=path.name)
    if fmt == "nifti":
        _note_nifti_transforms(path, prov, img)
    guess = modality_guess(arr)
    del arr
    if not guess.startswith("CT (Hounsfield"):
        prov.warnings.append(f"The intensities of {path.name} do not look like CT Hounsfield units ({guess}); "
                             "segmentation results will be unreliable.")
    case = case_from_sitk(img, prov, name=_stem(path))
    if progress:
        progress("Reading image", 1, 1)
    return case


def nifti_transforms(path: Path) -> Optional[dict]:
    """The qform and sform of a NIfTI file (4x4 lists, RAS, as nibabel reads them) with their codes; None
    when it cannot be read. Header only."""
    try:
        import nibabel as nib
        h = nib.load(str(path)).header
        return {"qform": h.get_qform().tolist(), "qform_code": int(h["qform_code"]),
                "sform": h.get_sform().tolist(), "sform_code": int(h["sform_code"])}
    except Exception:  # noqa: BLE001 - no nibabel or an odd header: nothing to say
        return None


def _itk_affine_ras(img) -> np.ndarray:
    """The voxel-to-RAS affine of a SimpleITK image (ITK works in LPS)."""
    d = np.asarray(img.GetDirection(), float).reshape(3, 3) * np.asarray(img.GetSpacing(), float)[None, :]
    a = np.eye(4)
    a[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ d
    a[:3, 3] = np.asarray(img.GetOrigin(), float) * np.array([-1.0, -1.0, 1.0])
    return a


def _note_nifti_transforms(path: Path, prov: Provenance, img) -> None:
    """A NIfTI file may place its voxels twice (qform and sform). When both are set and disagree, tools
    disagree on where the CT is: nibabel and FSL read the sform; ITK (so LiverPlan and 3D Slicer) reads one
    or the other depending on the codes. Say which LiverPlan uses, and keep both so that exported label maps
    carry the same two placements (each tool then puts the labels where it puts the CT)."""
    t = nifti_transforms(path)
    if not t or not (t["qform_code"] > 0 and t["sform_code"] > 0):
        return
    q, s_ = np.asarray(t["qform"]), np.asarray(t["sform"])
    shape = img.GetSize()[:3]                  # ITK's x, y, z are the file's i, j, k
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)])

    def gap(a, b) -> float:
        return float(np.max(np.linalg.norm((corners @ a.T - corners @ b.T)[:, :3], axis=1)))

    apart = gap(q, s_)
    if apart <= 0.5:
        return
    prov.extra["nifti_transforms"] = t
    itk = _itk_affine_ras(img)
    used = "qform" if gap(itk, q) <= gap(itk, s_) else "sform"
    other = "sform" if used == "qform" else "qform"
    who = ("nibabel and FSL read the sform and put this CT elsewhere" if used == "qform"
           else "tools that read the qform put this CT elsewhere")
    prov.warnings.append(
        f"{path.name} places its voxels twice, and the two placements (qform and sform) differ by up to "
        f"{apart:.1f} mm. LiverPlan (like ITK and 3D Slicer, for this file) uses the {used}; {who}. Exported "
        f"NIfTI label maps keep both placements as the CT has them (the {other} too), so every tool puts the "
        "labels where it puts the CT.")


def _nifti_nan_kept(path: Path, img):
    """ITK's NIfTI reader turns NaN voxels into 0 (soft-tissue-like HU); put NaN back where the file has
    it (read with nibabel, float files only), so that the case treats those voxels as having no value."""
    import SimpleITK as sitk
    try:
        import nibabel as nib
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception:  # noqa: BLE001 - no nibabel or an odd file: keep ITK's reading
        return img
    if data.ndim != 3:
        return img
    bad = ~np.isfinite(np.transpose(data, (2, 1, 0)))           # nibabel (x, y, z) -> ITK array (z, y, x)
    if not bad.any():
        return img
    arr = sitk.GetArrayFromImage(img)
    if arr.shape != bad.shape:
        return img
    arr[bad] = np.nan
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def _stem(path: Path) -> str:
    name = path.name
    for ext, _ in FORMATS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def load_case(path, series: Optional[str] = None, progress: Optional[ProgressCallback] = None,
              cancel: Optional[CancelToken] = None) -> Case:
    """Load a CT from a file (NIfTI, NRRD, MHA/MHD, one DICOM file of a series) or a DICOM folder.

    A folder is searched recursively; the portal-venous CT is picked when clearly there, otherwise
    engine.io.dicom.SeriesChoiceNeeded (an InputError) carries ``.series`` to choose from and the call is
    repeated with ``series=<SeriesInfo.key>``. The returned Case is in canonical LPS orientation; its
    ``source_geometry`` is the file's own grid (exports go back to it). Source files are only read.
    """
    from . import dicom

    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{p} does not exist.")
    if p.is_dir():
        img, chosen, all_series = dicom.load_dicom_folder(p, series, progress, cancel)
        return _dicom_case(img, chosen, all_series, p)
    from .bounds import check_regular_input
    check_regular_input(p)              # a device or pipe named like an image is never read
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise InputError(f"{p} cannot be opened: {exc.strerror}.") from None
    if size == 0:
        raise InputError(f"{p.name} is empty (0 bytes).")
    fmt = file_format(p)
    if fmt == "dicom" or (fmt == "" and is_dicom_file(p)):
        chosen, all_series = dicom.series_of_file(p)
        if series:
            chosen = dicom.choose_series(all_series, series)
        elif chosen.problem:
            raise InputError(f"{p.name}: {chosen.problem}")
        img = dicom.read_series(chosen, progress, cancel)
        return _dicom_case(img, chosen, all_series, p.parent)
    if fmt == "":
        raise InputError(f"{p.name} is not a file LiverPlan can open: use a DICOM folder or a NIfTI (.nii, "
                         ".nii.gz), NRRD (.nrrd) or MetaImage (.mha) file.")
    return load_image_file(p, progress, cancel)


def _dicom_case(img, chosen, all_series, folder: Path) -> Case:
    from .dicom import PHASE_TEXT

    prov = Provenance(source=str(folder), source_format="dicom", modality=chosen.modality or "CT",
                      series_description=chosen.description, series_uid=chosen.series_uid,
                      warnings=list(chosen.warnings))
    prov.extra.update({"series_key": chosen.key, "n_slices": chosen.n_slices,
                       "acquisition_time": chosen.acquisition_time, "phase_guess": chosen.phase_guess,
                       "phase_text": PHASE_TEXT.get(chosen.phase_guess, chosen.phase_guess),
                       "phase_reason": chosen.phase_reason, "contrast_agent": chosen.contrast_agent,
                       "slice_thickness_mm": chosen.slice_thickness, "n_series_in_folder": len(all_series)})
    if chosen.tilt_deg > 0.5:
        prov.extra["gantry_tilt_resampled_deg"] = round(float(chosen.tilt_deg), 2)
    if chosen.phase_guess in ("native", "arterial", "delayed"):
        prov.warnings.append(f"This series looks like the {PHASE_TEXT[chosen.phase_guess]} phase "
                             f"({chosen.phase_reason}); LiverPlan's models expect portal-venous CT.")
    name = chosen.description or folder.name
    return case_from_sitk(img, prov, name=name)
