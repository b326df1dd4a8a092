"""Margin: grow or shrink a structure (or one connected component of it, e.g. one lesion) by N mm.

Distances are Euclidean in millimetres on the case's anisotropic grid, between voxel centres (growing:
SimpleITK's signed Maurer distance map, measured twice as fast as scipy's; shrinking:
scipy.ndimage.distance_transform_edt with ``sampling`` = the (z, y, x) spacing, which also gives each voxel's
nearest voxel outside): growing by d keeps every voxel whose
centre lies within d mm of a voxel of the structure; shrinking keeps the voxels more than d mm from the
nearest voxel outside it.

What the grown part may overwrite follows the paint rules of the other hand tools (engine.edits,
"Paint only over": anything / background only / inside the liver only, plus an optional HU range). The
voxels a shrink gives up take the label of the nearest voxel outside the structure (a lesion shrunk
inside the liver gives its rim back to the parenchyma, one at the liver's edge to the background).
Optional smoothing: a Gaussian of ``smooth_mm`` (sigma, mm) of the new mask, thresholded at one half.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ..edits import Box, Region, _allowed, _component_at, _slices, box_of_mask
from . import Proposal, apply_proposal, mm_to_vox, pad_box


def propose_margin(labels: np.ndarray, value: int, distance_mm: float, spacing: Sequence[float], *,
                   seed_zyx: Optional[Sequence[int]] = None, smooth_mm: float = 0.0, rule: str = "all",
                   image: Optional[np.ndarray] = None, hu_range=None) -> Optional[Proposal]:
    """``value`` grown (``distance_mm`` > 0) or shrunk (< 0) by ``|distance_mm|`` mm.

    ``seed_zyx``: only the 26-connected component of ``value`` under this voxel (one lesion). Returns
    None when nothing would change."""
    if value == 0:
        raise ValueError("choose a structure: the background has no margin")
    sp = tuple(float(s) for s in spacing)
    d = float(distance_mm)
    if d == 0 and smooth_mm <= 0:
        return None
    if seed_zyx is not None:
        if int(labels[tuple(int(v) for v in seed_zyx)]) != value:
            return None
        _, cmask, cbox = _component_at(labels, [int(v) for v in seed_zyx])
    else:
        cbox = box_of_mask(labels == value)
        cmask = None
    if cbox is None:
        return None
    pad = tuple(p + 1 + mm_to_vox(smooth_mm * 2, sp)[a] for a, p in enumerate(mm_to_vox(max(d, 0.0), sp)))
    box: Box = pad_box(cbox, pad, labels.shape)
    cur = labels[_slices(box)]
    if cmask is None:
        mask = cur == value
    else:
        mask = np.zeros(cur.shape, bool)
        off = [cbox[2 * a] - box[2 * a] for a in range(3)]
        mask[off[0]:off[0] + cmask.shape[0], off[1]:off[1] + cmask.shape[1], off[2]:off[2] + cmask.shape[2]] = cmask
    if d > 0:
        new = _distance_outside(mask, sp) <= d + 1e-6
    elif d < 0:
        new = ndimage.distance_transform_edt(mask, sampling=sp) > -d + 1e-6
    else:
        new = mask.copy()
    if smooth_mm > 0:
        sigma = [float(smooth_mm) / s for s in sp]
        new = ndimage.gaussian_filter(new.astype(np.float32), sigma) > 0.5
    img = image[_slices(box)] if image is not None else None
    values = cur.copy()
    grow = new & ~mask & _allowed(cur, value, rule, img, hu_range) & (cur != value)
    values[grow] = value
    lose = mask & ~new
    if lose.any():
        # each voxel given up takes the label of the nearest voxel outside the structure
        idx = ndimage.distance_transform_edt(mask, sampling=sp, return_distances=False, return_indices=True)
        near = cur[tuple(i[lose] for i in idx)]
        values[lose] = near
    changed = values != cur
    n = int(np.count_nonzero(changed))
    if n == 0:
        return None
    tight = box_of_mask(changed)
    out_box: Box = tuple(box[2 * (a // 2)] + tight[a] for a in range(6))  # type: ignore[assignment]
    return Proposal(out_box, values[_slices(tight)].copy(),
                    {"changed_voxels": n, "gained": int(np.count_nonzero(grow)), "lost": int(np.count_nonzero(lose))})


def _distance_outside(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) of every voxel to the nearest voxel of ``mask`` (0 inside): SimpleITK's signed Maurer
    distance map outside the mask (the same Euclidean distance between voxel centres as
    scipy.ndimage.distance_transform_edt(~mask), about twice as fast on a liver's box:
    benchmarks/review_tools_speed.py)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in reversed(tuple(spacing))))
    d = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False,
                                                            useImageSpacing=True))
    return np.maximum(d, 0.0)


def margin(labels: np.ndarray, value: int, distance_mm: float, spacing: Sequence[float], **kwargs
           ) -> Optional[Region]:
    """:func:`propose_margin` applied in place (an engine.edits-style operation for CaseSession.apply)."""
    return apply_proposal(labels, propose_margin(labels, value, distance_mm, spacing, **kwargs))
