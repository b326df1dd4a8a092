"""The case: one CT, its geometry, its label map and where they came from.

Everything in LiverPlan computes and displays in one canonical orientation (LPS: array x runs patient
right->left, y anterior->posterior, z inferior->superior). The file's own orientation is kept in
``source_geometry`` so that exports go back to it exactly (a mask lines up with its source in Slicer).
"""
from __future__ import annotations

import copy
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .errors import GeometryMismatchError, InputError
from .geometry import CANONICAL_ORIENTATION, Geometry
from .labels import LABEL_VALUES


@dataclass
class Provenance:
    source: str = ""                    # path of the file or DICOM folder
    source_format: str = ""             # "nifti", "nrrd", "mha", "dicom", "phantom", ...
    modality: str = "CT"
    series_description: str = ""
    series_uid: str = ""
    label_source: str = "none"          # what made the labels: "file: ...", "model: ...", "phantom", "edited"
    model_card: Optional[dict] = None   # model name/version/labels/demo flag when a model made the labels
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"source": self.source, "source_format": self.source_format, "modality": self.modality,
                "series_description": self.series_description, "series_uid": self.series_uid,
                "label_source": self.label_source, "model_card": self.model_card,
                "warnings": list(self.warnings), "extra": dict(self.extra)}


@dataclass
class Case:
    """A CT case in canonical (LPS) orientation.

    image: CT in Hounsfield units, (z, y, x), int16 (or float32 for rescaled data that does not fit).
    labels: uint8 (z, y, x) label map on the same grid (see engine.labels), zeros when none.
    geometry: the canonical grid of ``image`` and ``labels``.
    source_geometry: the grid of the file the CT was read from (exports are written on it).
    """

    image: np.ndarray
    geometry: Geometry
    labels: np.ndarray = None  # type: ignore[assignment]
    provenance: Provenance = field(default_factory=Provenance)
    source_geometry: Optional[Geometry] = None
    name: str = "case"

    def __post_init__(self) -> None:
        if self.image.ndim != 3:
            raise InputError("A CT case needs a 3D volume; this image has "
                             f"{self.image.ndim} dimension(s).")
        if tuple(self.image.shape) != tuple(self.geometry.shape):
            raise ValueError(f"image shape {self.image.shape} != geometry shape {self.geometry.shape}")
        if self.labels is None:
            self.labels = np.zeros(self.image.shape, dtype=np.uint8)
        else:
            self.set_labels(self.labels)
        if self.source_geometry is None:
            self.source_geometry = self.geometry

    # ------------------------------------------------------------------------------------------
    def set_labels(self, labels: np.ndarray, label_source: Optional[str] = None) -> None:
        """Replace the label map (validated: same shape, uint8, known values)."""
        self.labels = as_label_array(labels, self.image.shape)
        if label_source is not None:
            self.provenance.label_source = label_source

    @property
    def file_stem(self) -> str:
        """The case name made safe as the start of a file name: a DICOM series description such as
        'ABD/PELVIS PV' or '../x' would otherwise name a sub-folder or a folder elsewhere."""
        return safe_file_stem(self.name)

    def unknown_label_values(self) -> list[int]:
        present = np.unique(self.labels)
        return [int(v) for v in present if v != 0 and v not in LABEL_VALUES]

    def copy(self) -> "Case":
        return Case(image=self.image, geometry=self.geometry, labels=self.labels.copy(),
                    provenance=copy.deepcopy(self.provenance), source_geometry=self.source_geometry,
                    name=self.name)

    # --- SimpleITK conversions (the IO boundary) ----------------------------------------------
    def image_sitk(self, canonical: bool = True):
        return self._to_sitk(self.image, canonical)

    def labels_sitk(self, canonical: bool = False):
        """The label map as a SimpleITK image; by default in the SOURCE geometry (for export)."""
        return self._to_sitk(self.labels, canonical)

    def _to_sitk(self, array: np.ndarray, canonical: bool):
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(np.ascontiguousarray(array))
        self.geometry.apply_to(img)
        if canonical or self.source_geometry is None:
            return img
        return to_geometry(img, self.source_geometry)

    def summary(self) -> dict:
        return {"name": self.name, "geometry": self.geometry.to_dict(),
                "source_geometry": self.source_geometry.to_dict() if self.source_geometry else None,
                "provenance": self.provenance.to_dict(),
                "created": _dt.datetime.now().isoformat(timespec="seconds")}


# --------------------------------------------------------------------------------------------
def as_label_array(labels, ct_shape) -> np.ndarray:
    """A label map validated against the CT's (z, y, x) shape and returned as uint8.

    Raises GeometryMismatchError for another shape and InputError for values outside 0-255.
    """
    labels = np.asarray(labels)
    if tuple(labels.shape) != tuple(ct_shape):
        raise GeometryMismatchError(
            f"The label map has {labels.shape[::-1]} voxels (x, y, z) but the CT has "
            f"{tuple(ct_shape)[::-1]}; they do not belong to the same image.")
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise InputError("The label map has values outside 0-255; it is not a label map.")
        labels = labels.astype(np.uint8)
    return labels


def to_canonical(image):
    """Reorient a SimpleITK image to LPS by axis permutation/flip only (no resampling)."""
    import SimpleITK as sitk

    if Geometry.from_sitk(image).orientation_code() == CANONICAL_ORIENTATION:
        return image
    return sitk.DICOMOrient(image, CANONICAL_ORIENTATION)


def to_geometry(image, target: Geometry):
    """Bring a canonical SimpleITK image back onto ``target`` (the source grid), exactly.

    Reorientation is a permutation/flip, so voxel values are moved, never interpolated. The target's
    own origin/direction are then written verbatim so no floating-point drift reaches the file.
    """
    import SimpleITK as sitk

    out = sitk.DICOMOrient(image, target.orientation_code())
    got = Geometry.from_sitk(out)
    if not got.same_grid(target, tol=1e-3):
        raise GeometryMismatchError(
            "Internal error: the label map could not be mapped back onto the source image grid "
            f"({got.describe()} vs {target.describe()}).")
    target.apply_to(out)
    return out


def safe_file_stem(name: str, default: str = "case") -> str:
    """``name`` with every run of characters other than letters (any script: 'Müller', '肝臓' stay),
    digits, '.', '_' and '-' replaced by '_', and no leading or trailing '.' or '_' (so never '..', a
    hidden file or a path)."""
    import re
    return re.sub(r"[^\w.-]+", "_", str(name)).strip("._") or default


def case_from_sitk(image, provenance: Provenance, name: str = "case") -> Case:
    """Build a canonical Case from a SimpleITK CT image (the single geometry conversion point)."""
    import SimpleITK as sitk

    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        size = "x".join(str(s) for s in image.GetSize())
        raise InputError(f"This is a 2D image ({size}); LiverPlan needs a 3D CT volume with many slices.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("This image has several values per voxel (colour or vector data); it is not a CT.")
    source_geometry = Geometry.from_sitk(image)
    canon = to_canonical(image)
    arr = sitk.GetArrayFromImage(canon)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        n_bad = int(bad.sum())
        if n_bad == arr.size:
            raise InputError("This image holds no values (every voxel is NaN or infinite); it is not a usable CT.")
        if n_bad:
            # no value is no tissue: treated as air, and said (measurements of the structures there are off)
            arr = np.where(bad, np.float32(-1024.0), arr)
            provenance.warnings.append(
                f"{n_bad} voxels ({100.0 * n_bad / arr.size:.2g} %) hold no value (NaN or infinite); they are "
                "treated as air (-1024 HU).")
        if np.all(np.isfinite(arr)) and np.allclose(arr, np.round(arr)) and arr.min() >= -32768 \
                and arr.max() <= 32767:
            arr = arr.astype(np.int16)
        else:
            arr = arr.astype(np.float32)
    elif arr.dtype != np.int16:
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        arr = arr.astype(np.int16) if lo >= -32768 and hi <= 32767 else arr.astype(np.float32)
    if source_geometry.is_oblique():
        provenance.warnings.append(
            "The image axes are oblique to the patient axes; views show the nearest standard orientation.")
    return Case(image=arr, geometry=Geometry.from_sitk(canon), provenance=provenance,
                source_geometry=source_geometry, name=name)
