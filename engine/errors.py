"""Errors a clinician can read. Every message is a complete sentence saying what is wrong and what to do."""
from __future__ import annotations


class LiverPlanError(Exception):
    """Base class: ``str(err)`` is the message shown to the user (no traceback)."""


class InputError(LiverPlanError):
    """The input (file, folder, series) cannot be used as a CT case."""


class GeometryMismatchError(InputError):
    """A label map does not lie on the CT's voxel grid."""


class ExportError(LiverPlanError):
    """Writing an output failed; nothing was left half-written."""


class ModelError(LiverPlanError):
    """A segmentation model is missing, broken, unsafe or incompatible."""
