"""File input and output.

Where SimpleITK images become numpy arrays and back: the readers and writers of this package, and the
case itself (engine.case: ``case_from_sitk`` turns a read image into a canonical (z, y, x) Case;
``Case.image_sitk`` / ``Case.labels_sitk`` turn it back, onto the source grid for export). One more place
converts: engine.inference.orientation, for a model whose image reader expects the array in the source
orientation (its ``_source_oriented`` and ``_source_to_canonical``), through engine.case.to_geometry and
to_canonical. Nothing else in the engine touches SimpleITK's (x, y, z) order.

- :func:`load_case` - a CT from NIfTI/NRRD/MHA or a DICOM folder (portal-venous series picked when clear).
- :func:`read_label_map` - a label map (file, 3D Slicer .seg.nrrd, folder of masks) on a case's grid.
- :func:`write_label_map` / :func:`write_image` - exports in the source geometry, atomic.
- :mod:`engine.io.dicom` - series listing (``list_series``), ``SeriesInfo``, ``SeriesChoiceNeeded``.
"""
from .dicom import SeriesChoiceNeeded, SeriesInfo, list_series
from .images import file_format, load_case
from .labelmaps import read_label_map, write_image, write_label_map

__all__ = ["load_case", "read_label_map", "write_label_map", "write_image", "list_series", "SeriesInfo",
           "SeriesChoiceNeeded", "file_format"]
