"""3D Slicer segmentation files (.seg.nrrd): read (3D single-layer or 4D multi-layer) and write.

Slicer stores segments in a NRRD whose header carries ``Segment<N>_Name``, ``_LabelValue``, ``_Layer``,
``_Color`` ... keys. A 4D file has one 3D "layer" per group of non-overlapping segments (first axis, kind
"list"); a 3D file has one layer. The written file is 3D single-layer uint8 with LiverPlan's label values,
five named, coloured segments (empty ones included), LPS space, on the SOURCE image grid.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError
from ..labels import ALL_STRUCTURES, STRUCTURES

log = logging.getLogger(__name__)

# SNOMED-CT codes of the five structures for Slicer's terminology tags (category ~ type).
_TERMINOLOGY = {
    "liver": ("123037004", "Anatomical Structure", "10200004", "Liver"),
    "portal_vein": ("123037004", "Anatomical Structure", "32764006", "Portal vein"),
    "hepatic_veins": ("123037004", "Anatomical Structure", "8993003", "Hepatic vein"),
    "ivc": ("123037004", "Anatomical Structure", "64131007", "Inferior vena cava"),
    "crlm": ("49755003", "Morphologically Altered Structure", "4147007", "Mass"),
    "vessel_unassigned": ("123037004", "Anatomical Structure", "59820001", "Blood vessel"),
}


@dataclass
class SlicerSegment:
    index: int
    name: str
    layer: int
    label_value: int
    color: Optional[tuple[float, float, float]] = None


def _space_sign(space: str) -> np.ndarray:
    """Per-axis sign that converts the NRRD space to LPS."""
    s = (space or "left-posterior-superior").lower()
    if s in ("left-posterior-superior", "lps"):
        return np.array([1.0, 1.0, 1.0])
    if s in ("right-anterior-superior", "ras"):
        return np.array([-1.0, -1.0, 1.0])
    if s in ("left-anterior-superior", "las"):
        return np.array([1.0, -1.0, 1.0])
    raise InputError(f"The NRRD file uses the coordinate space '{space}', which LiverPlan does not read.")


def read_seg_nrrd(path: Path):
    """Read a .seg.nrrd: (SimpleITK uint8/uint16 image per layer list, segments, header).

    Returns (layers: list of SimpleITK images in LPS, segments: list[SlicerSegment]).
    """
    import nrrd
    import SimpleITK as sitk

    from .bounds import check_data_files, check_image_bytes

    check_data_files(path)                 # never a device as the data file (bounded reading, issue 13)
    try:
        header = nrrd.read_header(str(path))
        sizes = [int(v) for v in header.get("sizes", [])]
        item = np.dtype(nrrd.reader._determine_datatype(header)).itemsize
    except Exception as exc:  # noqa: BLE001 - pynrrd raises several types for damaged headers
        raise InputError(f"{path.name} could not be read as a 3D Slicer segmentation ({exc}). The file may be "
                         "damaged or incomplete.") from None
    if not sizes or min(sizes) < 1:
        raise InputError(f"{path.name} could not be read as a 3D Slicer segmentation (its header gives no size).")
    check_image_bytes(path, int(np.prod(sizes, dtype=object)) * item)
    try:
        data, header = nrrd.read(str(path), index_order="C")
    except Exception as exc:  # pynrrd raises several types for damaged files
        raise InputError(f"{path.name} could not be read as a 3D Slicer segmentation ({exc}). The file may be "
                         "damaged or incomplete.") from None
    dim = int(header.get("dimension", data.ndim))
    kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * dim)]
    dirs = header.get("space directions")
    if dirs is None or "space origin" not in header:
        raise InputError(f"{path.name} has no space directions/origin; it is not a 3D Slicer segmentation.")
    dirs = np.asarray([d for d in dirs if d is not None and not np.any(np.isnan(np.asarray(d, float)))],
                      dtype=float)
    if dim == 4:
        # C order puts the first NRRD axis (the fastest, the layer list) last: (z, y, x, layer).
        if kinds[0] != "list" and kinds[-1] == "list":
            data = np.moveaxis(data, 0, -1)   # layer axis was the slowest NRRD axis
        layers_arr = [np.ascontiguousarray(data[..., i]) for i in range(data.shape[-1])]
    elif dim == 3:
        layers_arr = [data]
    else:
        raise InputError(f"{path.name} has {dim} dimensions; a segmentation has 3 (or 4 with layers).")
    sign = _space_sign(str(header.get("space", "left-posterior-superior")))
    origin = np.asarray(header["space origin"], dtype=float) * sign
    vecs = dirs * sign[None, :]          # row i: patient vector of index axis i (x, y, z)
    spacing = np.linalg.norm(vecs, axis=1)
    direction = (vecs / spacing[:, None]).T   # columns = axis directions
    layers = []
    for arr in layers_arr:
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(tuple(float(s) for s in spacing))
        img.SetOrigin(tuple(float(o) for o in origin))
        img.SetDirection(tuple(float(d) for d in direction.ravel()))
        layers.append(img)
    return layers, header_segments(header), header


def header_segments(header: dict) -> list:
    """The segments a .seg.nrrd header lists (``Segment<N>_Name``, ``_Layer``, ``_LabelValue``, ``_Color``)."""
    segments = []
    idx = sorted({int(m.group(1)) for k in header for m in [re.match(r"Segment(\d+)_", str(k))] if m})
    for i in idx:
        pre = f"Segment{i}_"
        name = str(header.get(pre + "Name", f"Segment_{i + 1}"))
        color = None
        if pre + "Color" in header:
            try:
                color = tuple(float(c) for c in str(header[pre + "Color"]).split()[:3])  # type: ignore
            except ValueError:
                color = None
        try:
            layer = int(str(header.get(pre + "Layer", 0)) or 0)
            value = int(str(header.get(pre + "LabelValue", i + 1)) or i + 1)
        except ValueError:
            raise InputError(f"Segment {i} ('{name[:60]}') of this 3D Slicer segmentation has a layer or label "
                             "value that is not a whole number; the file is damaged.") from None
        segments.append(SlicerSegment(i, name, layer, value, color))
    return segments


def is_seg_nrrd_header(header: dict) -> bool:
    return any(str(k).startswith("Segment0_") for k in header) or "Segmentation_MasterRepresentation" in header


def _extent(arr: np.ndarray, value: int) -> str:
    """Slicer extent 'xmin xmax ymin ymax zmin zmax' (voxel indices) of voxels == value; arr is (z, y, x)."""
    zz, yy, xx = np.nonzero(arr == value)
    if zz.size == 0:
        return "0 -1 0 -1 0 -1"
    return f"{xx.min()} {xx.max()} {yy.min()} {yy.max()} {zz.min()} {zz.max()}"


def write_seg_nrrd(tmp_path: Path, label_image) -> None:
    """Write a SimpleITK uint8 label image (LiverPlan labels, source grid) as a Slicer .seg.nrrd."""
    import nrrd
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(label_image).astype(np.uint8)   # (z, y, x)
    spacing = np.asarray(label_image.GetSpacing(), dtype=float)
    direction = np.asarray(label_image.GetDirection(), dtype=float).reshape(3, 3)
    header: dict = {
        "type": "unsigned char",
        "dimension": 3,
        "space": "left-posterior-superior",
        "space directions": (direction * spacing[None, :]).T,   # row i = vector of index axis i
        "space origin": np.asarray(label_image.GetOrigin(), dtype=float),
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        "Segmentation_ConversionParameters": "",
    }
    # the study's five always (empty ones too, as Slicer expects them); 'vessel, unassigned' where present
    segments = [s for s in ALL_STRUCTURES if s in STRUCTURES or np.any(arr == s.label)]
    for i, s in enumerate(segments):
        pre = f"Segment{i}_"
        cat_code, cat_name, type_code, type_name = _TERMINOLOGY[s.key]
        header[pre + "ID"] = s.key
        header[pre + "Name"] = s.name
        header[pre + "NameAutoGenerated"] = "0"
        header[pre + "Color"] = " ".join(f"{c / 255.0:.6g}" for c in s.color)
        header[pre + "ColorAutoGenerated"] = "0"
        header[pre + "Extent"] = _extent(arr, s.label)
        header[pre + "Tags"] = (
            "Segmentation.Status:inprogress|TerminologyEntry:Segmentation category and type - 3D Slicer "
            f"General Anatomy list~SCT^{cat_code}^{cat_name}~SCT^{type_code}^{type_name}~^^~Anatomic codes "
            "- DICOM master list~^^~^^|")
        header[pre + "LabelValue"] = str(s.label)
        header[pre + "Layer"] = "0"
    nrrd.write(str(tmp_path), arr, header, index_order="C", compression_level=6)
