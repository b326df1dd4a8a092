"""File input and output: the only place where geometry is converted between SimpleITK and numpy.

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
