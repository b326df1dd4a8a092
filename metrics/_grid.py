"""Voxel-grid helpers shared by the metrics: bounding boxes, crops, borders, 2x2x2 neighbour codes.

All arrays are numpy (z, y, x); spacing is (z, y, x) mm. Nothing here allocates a full-size array
beyond one boolean comparison, because every metric works inside the union bounding box.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

Box = tuple[slice, slice, slice]


def bbox(mask: np.ndarray) -> Optional[Box]:
    """Tight bounding box (slices) of the non-zero voxels of a 3D array, or None when empty.

    Two passes: the z range from a projection onto z, then y and x from the projection of those slices
    onto the (y, x) plane.
    """
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) array, got shape {mask.shape}")
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    z0, z1 = int(zs[0]), int(zs[-1]) + 1
    plane = mask[z0:z1].any(axis=0)
    ys = np.flatnonzero(plane.any(axis=1))
    xs = np.flatnonzero(plane.any(axis=0))
    return (slice(z0, z1), slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1))


def union_box(*boxes: Optional[Box]) -> Optional[Box]:
    """Smallest box holding all given boxes (None entries ignored); None when all are None."""
    bs = [b for b in boxes if b is not None]
    if not bs:
        return None
    return tuple(slice(min(b[a].start for b in bs), max(b[a].stop for b in bs)) for a in range(3))  # type: ignore


def touches_edge(box: Box, shape: Sequence[int]) -> tuple[tuple[bool, bool], ...]:
    """Per axis: (box starts at the image's first slice, box ends at its last)."""
    return tuple((box[a].start == 0, box[a].stop == shape[a]) for a in range(3))


def pad(mask: np.ndarray, edge: Optional[tuple[tuple[bool, bool], ...]] = None,
        edge_value: bool = False) -> np.ndarray:
    """Pad a cropped boolean mask by one voxel of background on every side.

    Sides where the crop lies on the ORIGINAL image's edge (``edge``) get ``edge_value`` instead: the
    Metrics Reloaded / MONAI / MedPy border treats outside the image as background (False), ITK's
    LabelContour (seg-metrics) as foreground (True) so that voxels on the image edge are not contour.
    """
    out = np.zeros(tuple(s + 2 for s in mask.shape), dtype=bool)
    if edge is not None and edge_value:
        for a, (lo, hi) in enumerate(edge):
            if lo:
                idx = [slice(None)] * 3
                idx[a] = 0
                out[tuple(idx)] = True
            if hi:
                idx = [slice(None)] * 3
                idx[a] = -1
                out[tuple(idx)] = True
    out[1:-1, 1:-1, 1:-1] = mask
    return out


def border6(padded: np.ndarray) -> np.ndarray:
    """Voxels of the mask with at least one 6-neighbour outside it (mask minus its 6-connected erosion).

    ``padded`` is a mask padded by one voxel (see :func:`pad`); the result has the unpadded shape.
    Equivalent to ``m & ~scipy.ndimage.binary_erosion(m)`` with the padding as border value, but by
    slicing, which is ~5x faster than the generic erosion.
    """
    c = padded[1:-1, 1:-1, 1:-1]
    inner = c & padded[:-2, 1:-1, 1:-1]
    inner &= padded[2:, 1:-1, 1:-1]
    inner &= padded[1:-1, :-2, 1:-1]
    inner &= padded[1:-1, 2:, 1:-1]
    inner &= padded[1:-1, 1:-1, :-2]
    inner &= padded[1:-1, 1:-1, 2:]
    return c & ~inner


def border26(padded: np.ndarray) -> np.ndarray:
    """Voxels of the mask with at least one 26-neighbour outside it (mask minus its 3x3x3 erosion).

    The cube erosion is separable, so three 1D erosions of three slices each replace 26 comparisons.
    """
    e = padded[:-2] & padded[1:-1] & padded[2:]
    e = e[:, :-2] & e[:, 1:-1] & e[:, 2:]
    e = e[:, :, :-2] & e[:, :, 1:-1] & e[:, :, 2:]
    c = padded[1:-1, 1:-1, 1:-1]
    return c & ~e


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """8-bit code of every 2x2x2 voxel neighbourhood, i.e. of every voxel CORNER, of a cropped mask.

    Output shape is mask.shape + 1 per axis: corner (i, j, k) sits between voxels i-1 and i (etc.), with
    background outside the mask's array. Bit order as in DeepMind's surface-distance: the voxel
    (i-1+dz, j-1+dy, k-1+dx) sets bit ``7 - (4 dz + 2 dy + dx)``.
    """
    p = np.zeros(tuple(s + 2 for s in mask.shape), dtype=np.uint8)
    p[1:-1, 1:-1, 1:-1] = mask
    n0, n1, n2 = mask.shape[0] + 1, mask.shape[1] + 1, mask.shape[2] + 1
    code = np.zeros((n0, n1, n2), dtype=np.uint8)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                shift = 7 - (4 * dz + 2 * dy + dx)
                code |= p[dz:dz + n0, dy:dy + n1, dx:dx + n2] << np.uint8(shift)
    return code


def corner_border(mask: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Voxel corners whose 2x2x2 neighbourhood is mixed (surface corners), and their neighbour codes.

    Returns ((iz, iy, ix) corner indices on the corner grid of :func:`neighbour_codes`, uint8 codes there).
    Same corners and codes as ``neighbour_codes`` restricted to codes not 0 and not 255, but the mixed test
    is done with six separable boolean OR/AND passes and codes are gathered only at those corners.
    """
    p = np.zeros(tuple(s + 2 for s in mask.shape), dtype=bool)
    p[1:-1, 1:-1, 1:-1] = mask
    o = p[:-1] | p[1:]
    o = o[:, :-1] | o[:, 1:]
    o = o[:, :, :-1] | o[:, :, 1:]
    a = p[:-1] & p[1:]
    a = a[:, :-1] & a[:, 1:]
    a = a[:, :, :-1] & a[:, :, 1:]
    idx = np.nonzero(o & ~a)
    code = np.zeros(len(idx[0]), dtype=np.uint8)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                bit = np.uint8(1 << (7 - (4 * dz + 2 * dy + dx)))
                code[p[idx[0] + dz, idx[1] + dy, idx[2] + dx]] |= bit
    return idx, code
