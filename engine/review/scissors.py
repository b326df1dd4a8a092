"""Scissors: remove the part of a structure inside (or outside) a polygon drawn in a pane, through all
slices or through a slab of N mm around the pane's slice (the quickest way to cut a spill off the liver).

The polygon is given in the pane's plane as (row, column) voxel coordinates (floats; see
gui.slice_view.ROW_COL_AXES: axial rows y / columns x, coronal rows z / columns x, sagittal rows z /
columns y). The cut is the polygon extruded along the pane's axis. Removed voxels become background.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from skimage.draw import polygon2mask

from ..edits import Box, Region, box_of_mask, _slices
from . import Proposal, apply_proposal

#: For each pane axis (0 axial, 1 coronal, 2 sagittal): which array axes are its (row, column).
ROW_COL_AXES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}


def _slab_range(axis: int, slice_index: int, slab_mm: float, spacing, n: int) -> tuple[int, int]:
    """Index range along ``axis`` of a slab ``slab_mm`` thick centred on the slice (0 or less: all)."""
    if slab_mm <= 0:
        return 0, n
    half = int(np.floor(float(slab_mm) / 2.0 / float(spacing[axis]) + 1e-6))
    return max(slice_index - half, 0), min(slice_index + half + 1, n)


def propose_cut(labels: np.ndarray, value: int, axis: int, slice_index: int,
                polygon_rc: Sequence[Sequence[float]], spacing: Sequence[float], *, inside: bool = True,
                slab_mm: float = 0.0, structure_box: Optional[Box] = None) -> Optional[Proposal]:
    """The labels with ``value`` removed inside (``inside``) or outside the extruded polygon.

    ``value`` 0 cuts every structure. ``structure_box`` (optional, the box of ``value``'s voxels when the
    caller knows it) saves a scan of the volume for an outside cut. Returns None when nothing would change
    (an empty or degenerate polygon, or no voxel of the structure there)."""
    pts = np.asarray(polygon_rc, float)
    if pts.ndim != 2 or len(pts) < 3:
        return None
    r_ax, c_ax = ROW_COL_AXES[axis]
    shape = labels.shape
    a0, a1 = _slab_range(axis, int(slice_index), float(slab_mm), spacing, shape[axis])
    # polygon vertices are positions in voxel units; polygon2mask tests voxel centres (integer coordinates)
    rows, cols = pts[:, 0] - 0.5, pts[:, 1] - 0.5
    if inside:
        r0, r1 = max(int(np.floor(rows.min())), 0), min(int(np.ceil(rows.max())) + 1, shape[r_ax])
        c0, c1 = max(int(np.floor(cols.min())), 0), min(int(np.ceil(cols.max())) + 1, shape[c_ax])
        if r1 <= r0 or c1 <= c0:
            return None
    else:
        sbox = structure_box
        if sbox is None:
            sbox = box_of_mask(labels != 0 if value == 0 else labels == value)
        if sbox is None:
            return None
        r0, r1 = sbox[2 * r_ax], sbox[2 * r_ax + 1]
        c0, c1 = sbox[2 * c_ax], sbox[2 * c_ax + 1]
        a0, a1 = max(a0, sbox[2 * axis]), min(a1, sbox[2 * axis + 1])
        if a1 <= a0:
            return None
    plane = polygon2mask((r1 - r0, c1 - c0), np.stack([rows - r0, cols - c0], axis=1))
    if not inside:
        plane = ~plane
    box_l = [0, 0, 0, 0, 0, 0]
    box_l[2 * axis:2 * axis + 2] = [a0, a1]
    box_l[2 * r_ax:2 * r_ax + 2] = [r0, r1]
    box_l[2 * c_ax:2 * c_ax + 2] = [c0, c1]
    box: Box = tuple(box_l)  # type: ignore[assignment]
    cur = labels[_slices(box)]
    prism = np.expand_dims(plane, axis)          # broadcast along the pane's axis
    target = (cur != 0) if value == 0 else (cur == value)
    drop = target & prism
    n = int(np.count_nonzero(drop))
    if n == 0:
        return None
    tight = box_of_mask(drop)
    inner = _slices(tight)
    values = cur[inner].copy()
    values[drop[inner]] = 0
    out_box: Box = tuple(box[2 * (a // 2)] + tight[a] for a in range(6))  # type: ignore[assignment]
    return Proposal(out_box, values, {"changed_voxels": n})


def cut_polygon(labels: np.ndarray, value: int, axis: int, slice_index: int,
                polygon_rc: Sequence[Sequence[float]], spacing: Sequence[float], *, inside: bool = True,
                slab_mm: float = 0.0) -> Optional[Region]:
    """:func:`propose_cut` applied in place (an engine.edits-style operation for CaseSession.apply)."""
    return apply_proposal(labels, propose_cut(labels, value, axis, slice_index, polygon_rc, spacing,
                                              inside=inside, slab_mm=slab_mm))
