"""The array a model sees: the CT in the orientation and axis order of the image reader it was trained with.

nnU-Net models learn on arrays as their dataset's image reader returns them, and they are not invariant to
flips (TotalSegmentator's are trained without mirroring). The reader is named in ``plans.json``
(``image_reader_writer``: what nnU-Net's own preprocessing and predictor use) and, for datasets that
override it, in ``dataset.json`` (``overwrite_image_reader_writer``). What each of nnU-Net 2.8.1's readers
gives for a 3D volume (read in ``nnunetv2/imageio``):

* ``SimpleITKIO``: ``sitk.GetArrayFromImage`` of the file as stored: (k, j, i) voxel order, no reorientation.
* ``NibabelIO``: nibabel's data array (i, j, k) transposed to (k, j, i): the same voxel order as SimpleITKIO.
* ``NibabelIOWithReorient``: the image reoriented to the closest RAS+ axes (``as_reoriented(io_orientation)``:
  axes permuted and flipped, never resampled), then transposed to (k, j, i): the array's x index runs towards
  the patient's Right, y towards Anterior, z towards Superior. LiverPlan's canonical LPS array (x towards Left,
  y towards Posterior, z towards Superior, also reached by permutation/flip to the closest axes) holds the same
  voxels with the x and y axes reversed.
* ``Tiff3DIO``: the file as stored (also what any other, unknown reader falls back to, with a warning).

"As stored" for a DICOM series or an NRRD/MHA file means the grid SimpleITK reads (``case.source_geometry``),
the array ``nnUNetv2_predict`` would see after conversion to NIfTI by SimpleITK.
The model's labels are mapped back onto the case's canonical grid by the inverse permutation/flip (exact:
no interpolation).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..case import Case

log = logging.getLogger(__name__)

#: Readers that give the file's voxels as stored, in SimpleITK's (k, j, i) order.
AS_STORED_READERS = ("SimpleITKIO", "NibabelIO", "Tiff3DIO")
#: Readers that reorient to RAS+ before handing the array over.
RAS_READERS = ("NibabelIOWithReorient",)
KNOWN_READERS = AS_STORED_READERS + RAS_READERS
#: nnU-Net's choice when neither file names a reader (its registry tries SimpleITKIO first for .nii.gz,
#: .nrrd and .mha).
DEFAULT_READER = "SimpleITKIO"


def model_reader(dataset_json: dict, plans: dict) -> tuple[str, Optional[str]]:
    """The image reader a model was trained with, and a warning when its files disagree or name an unknown one.

    ``plans.json``'s ``image_reader_writer`` is what nnU-Net's preprocessing (training and prediction) used;
    ``dataset.json``'s ``overwrite_image_reader_writer`` is what its planner copied there. When only one names
    a reader, that one; when they differ, dataset.json's (the dataset's own declaration, which is what
    TotalSegmentator relies on) with a warning."""
    over = dataset_json.get("overwrite_image_reader_writer")
    over = None if over in (None, "None", "") else str(over)
    planned = plans.get("image_reader_writer")
    planned = None if planned in (None, "None", "") else str(planned)
    warning = None
    reader = over or planned or DEFAULT_READER
    if over and planned and over != planned:
        warning = (f"The model's dataset.json names the image reader {over} but its plans.json {planned}; "
                   f"LiverPlan feeds it the CT as {over} would read it.")
    if reader not in KNOWN_READERS:
        warning = (f"The model names an image reader LiverPlan does not know ({reader}); the CT is given to it as "
                   "stored in its file (as SimpleITKIO reads it), which may not be how it was trained.")
    return reader, warning


def reorients_to_ras(reader: str) -> bool:
    return reader in RAS_READERS


@dataclass
class ModelView:
    """The CT as a model's reader would give it, and the way back.

    array: (z, y, x) in the reader's axis order and orientation (Hounsfield units).
    spacing: (z, y, x) mm of ``array`` (what nnU-Net's reader reports as "spacing").
    orientation: three-letter code of the array's axes (ITK/DICOM convention: where each index axis points).
    to_canonical: labels on ``array``'s grid -> labels on the case's canonical grid.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    orientation: str
    reader: str
    to_canonical: Callable[[np.ndarray], np.ndarray]

    #: canonical (z, y, x) box (slices) -> the box of the same voxels in ``array`` (slices)
    box_from_canonical: Callable[[tuple], tuple] = None  # type: ignore[assignment]

    def describe(self) -> str:
        return f"{self.reader}: the CT given to the model in {self.orientation} orientation"


def model_view(case: Case, reader: str) -> ModelView:
    """The CT of ``case`` as ``reader`` would present it to the model (see the module docstring)."""
    if reorients_to_ras(reader):
        # canonical LPS -> RAS: reverse the x (L->R) and y (P->A) axes; z (S) stays (one copy: torch takes no
        # negative strides)
        arr = np.ascontiguousarray(case.image[:, ::-1, ::-1])
        return ModelView(array=arr, spacing=tuple(float(s) for s in case.geometry.spacing), orientation="RAS",
                         reader=reader,
                         to_canonical=lambda lab: np.ascontiguousarray(np.asarray(lab)[:, ::-1, ::-1]),
                         box_from_canonical=lambda box: _flip_box(box, arr.shape))
    src = case.source_geometry or case.geometry
    return ModelView(array=_source_oriented(case), spacing=tuple(float(s) for s in src.spacing),
                     orientation=src.orientation_code(), reader=reader,
                     to_canonical=lambda lab: _source_to_canonical(lab, case),
                     box_from_canonical=lambda box: _source_box(box, case))


def _flip_box(box: tuple, shape) -> tuple:
    """A canonical box in the RAS view: y and x reversed."""
    z, y, x = box
    return (z, slice(shape[1] - y.stop, shape[1] - y.start), slice(shape[2] - x.stop, shape[2] - x.start))


def _source_box(box: tuple, case: Case) -> tuple:
    """A canonical box on the source grid (axes permuted/flipped): the box of the same voxels there."""
    src = case.source_geometry or case.geometry
    if src.orientation_code() == case.geometry.orientation_code():
        return tuple(box)
    import SimpleITK as sitk

    from ..case import to_geometry

    mask = np.zeros(case.image.shape, dtype=np.uint8)
    mask[tuple(box)] = 1
    img = sitk.GetImageFromArray(mask)
    case.geometry.apply_to(img)
    arr = sitk.GetArrayFromImage(to_geometry(img, src))
    idx = np.nonzero(arr)
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)


def _source_oriented(case: Case) -> np.ndarray:
    """The CT as the source file's array (what SimpleITK would read): canonical -> source orientation."""
    src = case.source_geometry or case.geometry
    if src.orientation_code() == case.geometry.orientation_code() and tuple(src.shape) == tuple(case.geometry.shape):
        return case.image
    import SimpleITK as sitk

    from ..case import to_geometry

    return sitk.GetArrayFromImage(to_geometry(case.image_sitk(canonical=True), src))


def _source_to_canonical(labels_src: np.ndarray, case: Case) -> np.ndarray:
    from ..errors import ModelError

    src = case.source_geometry or case.geometry
    if labels_src.shape == case.image.shape and src.orientation_code() == case.geometry.orientation_code():
        return labels_src
    import SimpleITK as sitk

    from ..case import to_canonical

    img = sitk.GetImageFromArray(np.ascontiguousarray(labels_src))
    src.apply_to(img)
    out = sitk.GetArrayFromImage(to_canonical(img))
    if out.shape != case.image.shape:
        raise ModelError("Internal error: the model's output could not be mapped back onto the case's grid.")
    return out
