"""What is in a file or DICOM folder, as plain data (used by ``liverplan info`` and the GUI's open dialog).

Nothing here modifies the input; large CTs are read once.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError
from ..geometry import Geometry
from ..labels import BY_LABEL, structure_for_name
from . import dicom
from .bounds import check_regular_input
from .images import (_nifti_nan_kept, _stem, file_format, finite_values, is_dicom_file, looks_like_label_map, modality_guess,
                     non_finite_count, read_image_file)

log = logging.getLogger(__name__)


def describe_path(path, series: Optional[str] = None, mapping=None) -> dict:
    """A description of ``path``: {"kind": "dicom-folder" | "dicom-file" | "image" | "label-map" |
    "segmentation" | "mask-folder" | "image-folder", ...}. ``mapping`` (a LabelMapping) names the structures
    of foreign label values. Raises InputError (in words) for unreadable input."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{p} does not exist.")
    if p.is_dir():
        return describe_folder(p, series, mapping)
    check_regular_input(p)              # a device or pipe named like an image is never read
    if p.stat().st_size == 0:
        raise InputError(f"{p.name} is empty (0 bytes).")
    fmt = file_format(p)
    if fmt == "dicom" or (fmt == "" and is_dicom_file(p)):
        from .dicomseg import is_dicom_seg_file
        if is_dicom_seg_file(p):
            return describe_dicom_seg(p)
        if series:
            # a series chosen among the file's neighbours: what `info FOLDER --series` says
            return describe_folder(p.parent, series, mapping)
        info, all_series = dicom.series_of_file(p)
        d = {"kind": "dicom-file", "path": str(p), "series": [s.to_dict() for s in all_series],
             "this_series": info.key, "verdict": info.problem or f"part of the CT series {info.label()}"}
        return d
    if fmt == "seg.nrrd":
        return describe_seg_nrrd(p)
    if fmt == "":
        raise InputError(f"{p.name} is neither a DICOM file nor an image format LiverPlan reads (NIfTI .nii/.nii.gz,"
                         " NRRD .nrrd, MetaImage .mha, 3D Slicer .seg.nrrd).")
    if fmt == "nrrd":
        import nrrd

        from .segnrrd import is_seg_nrrd_header
        try:
            if is_seg_nrrd_header(nrrd.read_header(str(p))):
                return describe_seg_nrrd(p)
        except Exception:  # unreadable header: the image reader below says why
            pass
    return describe_image_file(p, fmt, mapping)


def geometry_dict(g: Geometry) -> dict:
    z, y, x = g.shape
    return {"size_xyz": [x, y, z], "spacing_xyz_mm": list(g.spacing_xyz), "orientation": g.orientation_code(),
            "origin_lps_mm": list(g.origin), "direction": list(g.direction), "oblique": g.is_oblique()}


def describe_image_file(p: Path, fmt: str, mapping=None) -> dict:
    import SimpleITK as sitk

    info = read_image_file(p, information_only=True)
    d: dict = {"kind": "image", "path": str(p), "format": fmt, "dimension": info.GetDimension(),
               "components": info.GetNumberOfComponents(),
               "pixel_type": sitk.GetPixelIDValueAsString(info.GetPixelID())}
    if info.GetDimension() != 3 or info.GetNumberOfComponents() != 1:
        d["verdict"] = (f"not a 3D volume ({info.GetDimension()}D, {info.GetNumberOfComponents()} value(s) per "
                        "voxel): LiverPlan cannot open it as a CT")
        d["size"] = list(info.GetSize())
        return d
    img = read_image_file(p)
    g = Geometry.from_sitk(img)
    d["geometry"] = geometry_dict(g)
    if fmt == "nifti" and img.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        img = _nifti_nan_kept(p, img)      # ITK reads NaN as 0 in NIfTI: count them as opening the case does
    arr = sitk.GetArrayFromImage(img)       # a copy: no view outlives its image
    n_bad = non_finite_count(arr)
    finite = finite_values(arr)
    d["value_range"] = [float(finite.min()), float(finite.max())] if finite.size else [0.0, 0.0]
    if n_bad:
        # the same rule and words as opening the case (engine.case.case_from_sitk)
        d["non_finite_voxels"] = n_bad
        d["warnings"] = [f"{n_bad} voxels ({100.0 * n_bad / arr.size:.2g} %) hold no value (NaN or infinite); "
                         "LiverPlan treats them as air (-1024 HU)."]
    if looks_like_label_map(np.asarray(arr)):
        d["kind"] = "label-map"
        counts = np.bincount(np.asarray(arr, dtype=np.int64).ravel())
        single = [v for v in range(1, len(counts)) if counts[v]]
        by_name = structure_for_name(_stem(p)) if len(single) == 1 else None
        own_convention = by_name is None and all(v in BY_LABEL for v in single)
        if mapping is not None:
            mapped = mapping.apply(np.arange(len(counts)))
        labels = []
        for v in range(1, len(counts)):
            if counts[v]:
                if mapping is not None:
                    s = BY_LABEL.get(int(mapped[v]))
                else:
                    s = by_name or (BY_LABEL.get(v) if own_convention else None)
                labels.append({"value": v, "voxels": int(counts[v]),
                               "volume_ml": float(counts[v]) * g.voxel_volume_ml,
                               "liverplan_structure": s.name if s else None})
        d["labels"] = labels
        d["modality_guess"] = "label map"
        d["verdict"] = "a label map: load it onto its CT as labels"
        if mapping is not None:
            d["mapping"] = mapping.name
        elif by_name is None and not own_convention:
            d["verdict"] += (" (its values are not LiverPlan's 1-5: give a label mapping, e.g. the "
                             "'totalsegmentator' preset or a JSON file)")
    else:
        d["modality_guess"] = modality_guess(np.asarray(arr))
        d["verdict"] = ("a CT volume LiverPlan can open" if d["modality_guess"].startswith("CT")
                        else "opens, but the values do not look like CT Hounsfield units")
        if min(g.shape) < 2:
            d["verdict"] = "a single 2D image: LiverPlan needs a 3D CT volume"
    return d


def describe_seg_nrrd(p: Path) -> dict:
    from .segnrrd import read_seg_nrrd
    import SimpleITK as sitk

    layers, segments, _ = read_seg_nrrd(p)
    g = Geometry.from_sitk(layers[0])
    arrays = [sitk.GetArrayFromImage(im) for im in layers]      # copies: no view outlives its image
    segs = []
    for s in segments:
        n = int(np.count_nonzero(arrays[s.layer] == s.label_value)) if 0 <= s.layer < len(arrays) else 0
        st = structure_for_name(s.name)
        segs.append({"name": s.name, "layer": s.layer, "label_value": s.label_value, "voxels": n,
                     "volume_ml": n * g.voxel_volume_ml, "color": list(s.color) if s.color else None,
                     "liverplan_structure": st.name if st else None})
    return {"kind": "segmentation", "path": str(p), "format": "seg.nrrd", "geometry": geometry_dict(g),
            "layers": len(layers), "segments": segs,
            "verdict": "a 3D Slicer segmentation: load it onto its CT as labels"}


def describe_dicom_seg(p: Path) -> dict:
    """A DICOM SEG file (a label map that lives on its CT's grid): its segments, frames, the CT series it
    refers to; headers only."""
    try:
        return _describe_dicom_seg(p)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, NotImplementedError, OverflowError) as exc:
        # pydicom decodes elements lazily: a malformed one fails on first use
        raise InputError(f"{p.name} could not be read as a DICOM segmentation: an element is missing or malformed "
                         f"({type(exc).__name__}: {str(exc)[:120]}); the file may be damaged.") from None


def _describe_dicom_seg(p: Path) -> dict:
    import pydicom

    try:
        ds = pydicom.dcmread(str(p), stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file gets one plain sentence
        raise InputError(f"{p.name} could not be read as DICOM ({exc}).") from None
    frames: dict[int, int] = {}
    for fg in ds.get("PerFrameFunctionalGroupsSequence", []):
        try:
            n = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        except (AttributeError, IndexError, ValueError):
            continue
        frames[n] = frames.get(n, 0) + 1
    segs = []
    for sd in ds.get("SegmentSequence", []):
        label = str(sd.get("SegmentLabel", ""))
        st = structure_for_name(label)
        num = int(sd.get("SegmentNumber", 0))
        segs.append({"number": num, "name": label, "frames": frames.get(num, 0),
                     "algorithm_type": str(sd.get("SegmentAlgorithmType", "")),
                     "liverplan_structure": st.name if st else None})
    ref = ds.get("ReferencedSeriesSequence")
    ref_uid = str(ref[0].get("SeriesInstanceUID", "")) if ref else ""
    return {"kind": "dicom-seg", "path": str(p), "description": str(ds.get("SeriesDescription", "")),
            "segments": segs, "referenced_series_uid": ref_uid,
            "verdict": "a DICOM SEG (a label map on its CT's grid): open the CT series it refers to, then load it "
                       "as labels (or use it as the reference in evaluate)"}


_IMAGE_EXTS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def describe_mask_folder(p: Path, mapping=None) -> dict:
    """A folder of NIfTI/NRRD/MHA files (IRCADb-style masks): each file with the structure it maps to."""
    from ..labelmap import LabelMapping, looks_like_ircadb

    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                   and f.name.lower().endswith(_IMAGE_EXTS))
    names = [_stem(f) for f in files]
    if mapping is None:
        mapping = LabelMapping.preset("ircadb") if looks_like_ircadb(names) else None
    entries = []
    for f, n in zip(files, names):
        d = describe_image_file(f, file_format(f))
        lab = mapping.structure_for_foreign_name(n) if mapping is not None else None
        st = BY_LABEL.get(lab) if lab else (structure_for_name(n) if mapping is None else None)
        st_name = st.name if st else None
        if mapping is not None and lab in mapping.merged_groups:
            st_name = " + ".join(BY_LABEL[x].name for x in mapping.merged_groups[lab]) + " (merged)"
        vox = sum(x["voxels"] for x in d.get("labels", []))
        if d["kind"] == "image":
            st_name = "(a CT image, not a mask)" if d.get("modality_guess", "").startswith("CT") \
                else "(an image, not a mask)"
        entries.append({"file": f.name, "kind": d["kind"], "voxels": vox,
                        "volume_ml": sum(x["volume_ml"] for x in d.get("labels", [])),
                        "geometry": d.get("geometry"), "liverplan_structure": st_name})
    out = {"kind": "mask-folder", "path": str(p), "files": entries,
           "mapping": mapping.name if mapping is not None else "file names",
           "notes": list(mapping.notes) if mapping is not None else []}
    grids = {tuple(map(tuple, [e["geometry"]["size_xyz"], e["geometry"]["spacing_xyz_mm"]]))
             for e in entries if e["geometry"]}
    cts = [e["file"] for e in entries if e["kind"] == "image"]
    if cts:
        out["kind"] = "image-folder"
        out["verdict"] = (f"a folder of image files, not DICOM; the CT image(s) here: {', '.join(cts)}: open "
                          "the file itself")
    else:
        out["verdict"] = ("a folder of masks: load it onto its CT as labels" if len(grids) <= 1 else
                          "a folder of masks on different grids: they do not belong to one CT")
    return out


def describe_folder(p: Path, series: Optional[str] = None, mapping=None) -> dict:
    try:
        all_series = dicom.list_series(p)
    except InputError:
        if any(f.is_file() and f.name.lower().endswith(_IMAGE_EXTS) for f in p.iterdir()):
            return describe_mask_folder(p, mapping)
        raise
    d: dict = {"kind": "dicom-folder", "path": str(p), "series": [s.to_dict() for s in all_series]}
    try:
        chosen = dicom.choose_series(all_series, series)
        d["picked"] = chosen.key
        d["picked_index"] = all_series.index(chosen) + 1
        usable = [s for s in all_series if s.usable]
        if series:
            d["verdict"] = f"series {d['picked_index']} chosen by you"
        elif len(usable) == 1:
            d["verdict"] = f"series {d['picked_index']} would be opened (the only CT volume)"
        else:
            d["verdict"] = (f"series {d['picked_index']} would be opened (the only one that looks "
                            "portal-venous)")
    except dicom.SeriesChoiceNeeded as exc:
        d["picked"] = None
        d["verdict"] = str(exc).split(" Choose one")[0] + " Choose one with --series NUMBER or KEY."
    except InputError as exc:
        d["picked"] = None
        d["verdict"] = str(exc)
    return d
