"""Voxel-grid geometry that travels with every array.

Arrays are numpy (z, y, x). ``spacing`` here is in array order (z, y, x) mm. ``origin`` is the patient
position (LPS, mm, x-y-z as DICOM/ITK give it) of voxel (0, 0, 0)'s centre, and ``direction`` is ITK's 3x3
direction matrix whose columns are the patient-space directions of the index axes i (x), j (y), k (z).
The conversion from SimpleITK's (x, y, z) spacing happens only in :meth:`Geometry.from_sitk` and
:meth:`Geometry.apply_to`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Canonical orientation in which LiverPlan computes and displays: the array's x axis runs from patient
#: right to left, y from anterior to posterior, z from inferior to superior (the DICOM/LPS convention).
CANONICAL_ORIENTATION = "LPS"


@dataclass(frozen=True)
class Geometry:
    shape: tuple[int, int, int]                 # (z, y, x) voxels
    spacing: tuple[float, float, float]         # (z, y, x) mm
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)   # LPS mm (x, y, z)
    direction: tuple[float, ...] = field(default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image) -> "Geometry":
        sx, sy, sz = image.GetSpacing()
        nx, ny, nz = image.GetSize()[:3]
        return cls(shape=(int(nz), int(ny), int(nx)), spacing=(float(sz), float(sy), float(sx)),
                   origin=tuple(float(v) for v in image.GetOrigin()),
                   direction=tuple(float(v) for v in image.GetDirection()))

    def apply_to(self, image) -> None:
        """Write this geometry into a SimpleITK image whose array came from (z, y, x) numpy."""
        image.SetSpacing((self.spacing[2], self.spacing[1], self.spacing[0]))
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)

    # --- derived ------------------------------------------------------------------------------
    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_physical(self, zyx) -> np.ndarray:
        """Patient coordinates (LPS mm, x-y-z) of voxel indices given as (..., 3) in (z, y, x) order."""
        zyx = np.asarray(zyx, dtype=float)
        ijk = zyx[..., ::-1] * np.asarray(self.spacing_xyz)
        return ijk @ self.direction_matrix.T + np.asarray(self.origin)

    def physical_to_index(self, xyz) -> np.ndarray:
        """Continuous (z, y, x) indices of LPS points (..., 3)."""
        xyz = np.asarray(xyz, dtype=float) - np.asarray(self.origin)
        ijk = xyz @ np.linalg.inv(self.direction_matrix).T / np.asarray(self.spacing_xyz)
        return ijk[..., ::-1]

    def orientation_code(self) -> str:
        """Three-letter code (ITK/DICOM convention: where each index axis points, e.g. 'LPS')."""
        letters = (("L", "R"), ("P", "A"), ("S", "I"))
        code = ""
        m = self.direction_matrix
        for col in range(3):
            v = m[:, col]
            axis = int(np.argmax(np.abs(v)))
            code += letters[axis][0] if v[axis] > 0 else letters[axis][1]
        return code

    def is_oblique(self, tol_deg: float = 1.0) -> bool:
        m = np.abs(self.direction_matrix)
        return bool(np.any(m.max(axis=0) < np.cos(np.deg2rad(tol_deg))))

    def same_grid(self, other: "Geometry", tol: float = 1e-3) -> bool:
        """True when both describe the same voxels (shape exact; spacing/origin/direction within tol)."""
        return (tuple(self.shape) == tuple(other.shape)
                and np.allclose(self.spacing, other.spacing, rtol=tol, atol=tol)
                and np.allclose(self.origin, other.origin, rtol=0, atol=max(tol, tol * max(self.spacing)))
                and np.allclose(self.direction, other.direction, atol=tol))

    def describe(self) -> str:
        z, y, x = self.shape
        sz, sy, sx = self.spacing
        return (f"{x} x {y} x {z} voxels, {sx:.3g} x {sy:.3g} x {sz:.3g} mm, orientation "
                f"{self.orientation_code()}")

    def to_dict(self) -> dict:
        return {"shape_zyx": list(self.shape), "spacing_zyx_mm": list(self.spacing),
                "origin_lps_mm": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(tuple(d["shape_zyx"]), tuple(d["spacing_zyx_mm"]), tuple(d["origin_lps_mm"]),
                   tuple(d["direction"]))
