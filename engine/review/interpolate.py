"""Interpolate between slices: a structure drawn on a few slices gets the slices between filled.

Shape-based interpolation (Raya & Udupa 1990; the distance-transform morphing at the heart of ITK's
morphological contour interpolation, Zukić et al. 2016): each drawn slice becomes a signed distance map in
mm (in-plane, anisotropic spacing handled), the maps of the neighbouring drawn slices are blended
for each slice between them (a polynomial through the two drawn slices on each side of the gap, so a
round shape keeps its bulge), and the blend's zero level is the new outline. A structure drawn every few
slices becomes a closed volume. Only slices holding none of the structure are filled; drawn slices are
kept as they are.

Why not ITK's filter itself: ``sitk.MorphologicalContourInterpolator`` is a remote module that the
SimpleITK 2.5 wheel does not include (checked: no such attribute), and the ``itk`` packages are not in
the project's environment. Unlike ITK's filter, a region drawn on one slice with no overlapping partner
on the next drawn slice shrinks away halfway instead of being extruded.

Works on the structure's bounding box (plus one slice each way). What the new voxels may overwrite follows
the paint rules of the other hand tools (engine.edits, "Paint only over", optional HU range).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ..edits import Box, Region, _allowed, _slices, box_of_mask
from . import Proposal, apply_proposal


def propose_interpolation(labels: np.ndarray, value: int, axis: int = 0, spacing: Optional[Sequence[float]] = None,
                          *, rule: str = "all", image: Optional[np.ndarray] = None, hu_range=None,
                          max_gap_mm: float = 60.0) -> Optional[Proposal]:
    """The empty slices (normal to array ``axis``: 0 axial, 1 coronal, 2 sagittal) between the drawn
    slices of ``value`` filled by shape-based interpolation. Drawings of the structure that do not line up
    along the axis within ``max_gap_mm`` are interpolated each on its own. None when nothing would change
    (fewer than two drawn slices, or no gap between them)."""
    if value == 0:
        raise ValueError("choose a structure to interpolate")
    sbox = box_of_mask(labels == value)
    if sbox is None:
        return None
    box: Box = sbox
    cur = labels[_slices(box)]
    full = (cur == value)
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0, 1.0, 1.0)
    plane_sp = tuple(s for a, s in enumerate(sp) if a != axis)
    others = tuple(a for a in range(3) if a != axis)
    # Separate drawings are interpolated separately: voxels of the structure that line up along the axis
    # across a gap of at most max_gap_mm belong together (a lesion drawn on three slices is not bridged to
    # another lesion elsewhere, nor filled towards a vessel of the same label that runs through every slice).
    reach = max(int(np.ceil(float(max_gap_mm) / sp[axis] / 2.0)), 1)
    joined = ndimage.maximum_filter1d(full.view(np.uint8), size=2 * reach + 1, axis=axis).view(bool)
    groups, n_groups = ndimage.label(joined, structure=np.ones((3, 3, 3), bool))
    out = np.zeros(full.shape, bool)
    filled_any = np.zeros(full.shape[axis], bool)
    for g in range(1, n_groups + 1):
        mask = full & (groups == g)
        drawn = mask.any(axis=others)
        if int(drawn.sum()) < 2 or drawn[drawn.argmax():len(drawn) - drawn[::-1].argmax()].all():
            continue
        idx = np.flatnonzero(drawn)

        def sdf(k: int) -> np.ndarray:
            m = np.take(mask, k, axis=axis)
            # signed distance in mm: negative inside
            return (ndimage.distance_transform_edt(~m, sampling=plane_sp)
                    - ndimage.distance_transform_edt(m, sampling=plane_sp))

        maps = {int(k): sdf(int(k)) for k in idx}
        for i in range(len(idx) - 1):
            a, b = int(idx[i]), int(idx[i + 1])
            if b - a < 2:
                continue
            # Lagrange interpolation through the drawn slices around the gap (up to two each side): with
            # three drawn slices of a round shape the outline bulges between them as the shape does, where a
            # blend of the two nearest slices alone would give a cone
            near = [int(k) for k in idx[max(i - 1, 0):i + 3]]
            for j in range(a + 1, b):
                acc = np.zeros_like(maps[a])
                for k in near:
                    w = 1.0
                    for m in near:
                        if m != k:
                            w *= (j - m) / (k - m)
                    acc += w * maps[k]
                sl = [slice(None)] * 3
                sl[axis] = j
                # only this drawing's own empty slices, and only near it (its group's reach)
                out[tuple(sl)] |= (acc < 0) & np.take(groups == g, j, axis=axis)
                filled_any[j] = True
    mask = full
    cimg = image[_slices(box)] if image is not None else None
    write = out & ~mask & _allowed(cur, value, rule, cimg, hu_range)
    n = int(np.count_nonzero(write))
    if n == 0:
        return None
    values = cur.copy()
    values[write] = value
    tight = box_of_mask(write)
    out_box: Box = tuple(box[2 * (a // 2)] + tight[a] for a in range(6))  # type: ignore[assignment]
    return Proposal(out_box, values[_slices(tight)].copy(),
                    {"changed_voxels": n, "filled_slices": int(np.count_nonzero(write.any(
                        axis=tuple(a for a in range(3) if a != axis))))})


def interpolate_slices(labels: np.ndarray, value: int, axis: int = 0, spacing=None, **kwargs) -> Optional[Region]:
    """:func:`propose_interpolation` applied in place (for CaseSession.apply)."""
    return apply_proposal(labels, propose_interpolation(labels, value, axis, spacing, **kwargs))
