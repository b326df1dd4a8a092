"""Split a component at its neck: a click on the part to drop separates it from the rest of its connected
component where the two are joined by a narrow bridge, and relabels it (to background, or to a label the
user chose).

How: the component's distance map (mm, anisotropic spacing; scipy.ndimage.distance_transform_edt) is
thresholded at a growing radius r — the cores left are the component opened by a ball of radius r, so
a neck narrower than 2r is gone. The smallest r at which the clicked part's core is separated from
another core holding at least 1 % of the component is taken; then every voxel of the component goes to the
core it is reached from by a watershed on the negative distance map (skimage.segmentation.watershed), so
the cut runs through the narrowest place of the neck, not at the opened surface.

Large components (a whole liver of a 512 x 512 x 300 CT) are worked on a coarser grid (block averages,
at most ~1.5 M voxels) and the parts brought back to full resolution voxel by voxel (each voxel of the
component takes its coarse voxel's part, or the nearest part): the cut surface crosses a neck, which is
thin by definition, so the blockiness costs a few voxels on the neck's cross-section only.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ..edits import Box, Region, _component_at, _slices, box_of_mask
from ..progress import check
from . import Proposal, apply_proposal, pad_box

MAX_WORK_VOXELS = 1_500_000
MIN_PART_FRACTION = 0.01


def coarse_factors(shape: Sequence[int], spacing: Sequence[float], max_voxels: int) -> tuple[int, int, int]:
    """Integer block sizes (z, y, x) that bring ``shape`` under ``max_voxels``, making the coarse voxels as
    near cubic as possible (the finest axis is coarsened first)."""
    f = [1, 1, 1]
    while np.prod([int(np.ceil(n / k)) for n, k in zip(shape, f)]) > max_voxels:
        cur = [float(s) * k for s, k in zip(spacing, f)]
        ax = int(np.argmin(cur))
        f[ax] += 1
    return tuple(f)  # type: ignore[return-value]


def block_mean(a: np.ndarray, f: Sequence[int]) -> np.ndarray:
    """Mean over (fz, fy, fx) blocks (the edge blocks padded by repeating the edge)."""
    if tuple(f) == (1, 1, 1):
        return a.astype(np.float32)
    pad = [(0, (-n) % k) for n, k in zip(a.shape, f)]
    b = np.pad(a.astype(np.float32), pad, mode="edge")
    s = b.shape
    return b.reshape(s[0] // f[0], f[0], s[1] // f[1], f[1], s[2] // f[2], f[2]).mean(axis=(1, 3, 5))


def upsample(a: np.ndarray, f: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour upsampling by block sizes ``f``, cropped to ``shape``."""
    out = a
    for ax, k in enumerate(f):
        if k > 1:
            out = np.repeat(out, k, axis=ax)
    return out[:shape[0], :shape[1], :shape[2]]


def _nearest_core(cc: np.ndarray, seed: Sequence[int]) -> int:
    """The core label nearest to ``seed`` (searching growing cubes around it), 0 when there is none."""
    if cc[tuple(seed)]:
        return int(cc[tuple(seed)])
    h = 1
    while True:
        lo = [max(s - h, 0) for s in seed]
        hi = [min(s + h + 1, n) for s, n in zip(seed, cc.shape)]
        win = cc[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        nz = np.argwhere(win)
        if len(nz):
            d = ((nz + np.asarray(lo) - np.asarray(seed)) ** 2).sum(axis=1)
            return int(win[tuple(nz[int(np.argmin(d))])])
        if all(l == 0 for l in lo) and all(a == n for a, n in zip(hi, cc.shape)):
            return 0
        h *= 2


def find_parts(comp: np.ndarray, seed: Sequence[int], spacing: Sequence[float], cancel=None
               ) -> tuple[Optional[np.ndarray], float]:
    """Parts of a binary component (``comp``, z, y, x) split at the neck nearest the seed's part.

    Returns (int32 part map over ``comp``'s shape, 0 outside; the opening radius in mm) or (None, 0.0)
    when no neck separates the seed's part from the rest."""
    import cc3d
    from skimage.segmentation import watershed

    sp = tuple(float(s) for s in spacing)
    dt = ndimage.distance_transform_edt(comp, sampling=sp).astype(np.float32)
    total = int(np.count_nonzero(comp))
    min_part = max(int(MIN_PART_FRACTION * total), 1)
    rmax = float(dt.max())
    r = 0.5 * min(sp)
    found = None
    while r < rmax:
        check(cancel)
        core = dt > r
        cc, n = cc3d.connected_components(core, connectivity=26, return_N=True)
        if n >= 2:
            sizes = np.bincount(cc.ravel())
            sizes[0] = 0
            mine = _nearest_core(cc, seed)
            others = np.flatnonzero(sizes >= min_part)
            if mine and any(o != mine for o in others):
                found = (cc, r, mine)
                break
        r += max(0.5 * min(sp), 0.08 * r)
    if found is None:
        return None, 0.0
    cc, r, mine = found
    parts = watershed(-dt, markers=cc.astype(np.int32), mask=comp)
    return parts, r


def propose_split(labels: np.ndarray, seed_zyx: Sequence[int], spacing: Sequence[float], *,
                  replace_with: int = 0, max_work_voxels: int = MAX_WORK_VOXELS, cancel=None
                  ) -> Optional[Proposal]:
    """The clicked part of the component under ``seed_zyx`` cut off at its neck and relabelled to
    ``replace_with``. None when the seed is on background or no neck separates the part from the rest
    (then nothing is cut: the caller says so)."""
    seed = [int(v) for v in seed_zyx]
    if any(s < 0 or s >= n for s, n in zip(seed, labels.shape)):
        return None
    v, cmask, cbox = _component_at(labels, seed)
    if cmask is None or cbox is None or v == replace_with:
        return None
    box: Box = pad_box(cbox, 1, labels.shape)
    off = [cbox[2 * a] - box[2 * a] for a in range(3)]
    comp = np.zeros(tuple(box[2 * a + 1] - box[2 * a] for a in range(3)), bool)
    comp[off[0]:off[0] + cmask.shape[0], off[1]:off[1] + cmask.shape[1], off[2]:off[2] + cmask.shape[2]] = cmask
    local_seed = [s - box[2 * a] for a, s in enumerate(seed)]
    sp = tuple(float(s) for s in spacing)
    f = coarse_factors(comp.shape, sp, max_work_voxels)
    if f == (1, 1, 1):
        parts, r = find_parts(comp, local_seed, sp, cancel)
        if parts is None:
            return None
        drop = parts == parts[tuple(local_seed)]
    else:
        coarse = block_mean(comp, f) >= 0.5
        cseed = [s // k for s, k in zip(local_seed, f)]
        csp = tuple(s * k for s, k in zip(sp, f))
        parts, r = find_parts(coarse, cseed, csp, cancel)
        if parts is None:
            return None
        mine = _nearest_core(parts, cseed)
        # coarse voxels outside every part (thin pieces lost by the averaging) take the nearest part
        idx = ndimage.distance_transform_edt(parts == 0, sampling=csp, return_distances=False, return_indices=True)
        filled = parts[tuple(idx)]
        drop = upsample(filled == mine, f, comp.shape) & comp
    check(cancel)
    cur = labels[_slices(box)]
    n = int(np.count_nonzero(drop))
    if n == 0 or n == int(np.count_nonzero(comp)):
        return None
    tight = box_of_mask(drop)
    inner = _slices(tight)
    values = cur[inner].copy()
    values[drop[inner]] = replace_with
    out_box: Box = tuple(box[2 * (a // 2)] + tight[a] for a in range(6))  # type: ignore[assignment]
    return Proposal(out_box, values, {"changed_voxels": n, "neck_radius_mm": float(r), "label": int(v),
                                      "kept_voxels": int(np.count_nonzero(comp)) - n})


def split_at_neck(labels: np.ndarray, seed_zyx: Sequence[int], spacing: Sequence[float], **kwargs
                  ) -> Optional[Region]:
    """:func:`propose_split` applied in place (an engine.edits-style operation for CaseSession.apply)."""
    return apply_proposal(labels, propose_split(labels, seed_zyx, spacing, **kwargs))
