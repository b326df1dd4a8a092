"""Grow from seeds: strokes of two or more structures (e.g. liver and background) grown competitively on
the CT, as 3D Slicer's "Grow from seeds" — in a box around the strokes or over the whole liver region.

Method: a marker-based watershed (skimage.segmentation.watershed) on the CT's gradient magnitude (SimpleITK
GradientMagnitudeRecursiveGaussian, sigma 1 mm): every voxel of the region goes to the seed that reaches it
over the lowest ridge of intensity change — competitive region growing by priority flooding, the same
family as Slicer's GrowCut (Dijkstra on intensity differences). Chosen over a random walker
(skimage.segmentation.random_walker, the other standard seeded method) because it is an order of
magnitude faster on the same seeds (benchmarks/review_tools_speed.py prints the ratio) and needs no
parameter beyond the smoothing.

Speed on a whole liver (a 512 x 512 x 300 CT: ~10 M voxels in the liver's box): the flood runs on a coarser
grid first (block means, at most ``max_coarse_voxels``, the finest axis coarsened first); the live preview is
that coarse result brought back to full resolution. For Apply (``refine=True``) the watershed is run again at
full resolution in a band of two coarse voxels around the coarse boundaries only, with the coarse labels
outside the band as markers: the boundary is exact to the voxel where the image has it, at a fraction of a
full-resolution flood.

What changes in the label map (:func:`grow_values`): a voxel grown from a structure's seeds gets that
structure where it held background or one of the seeded structures and its CT value lies in the structure's
own range (:func:`structure_hu_ranges`); a voxel grown from the background seeds
loses a seeded structure it held (to background). Structures that were not seeded are never changed (a liver
grown over a lesion keeps the lesion).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ..edits import Box, Region, _slices, box_of_mask
from ..progress import check
from . import Proposal, apply_proposal, mm_to_vox, pad_box
from .split import block_mean, coarse_factors, upsample

#: The seed value of the "background" strokes (0 is "no seed").
BACKGROUND_SEED = 255
MAX_COARSE_VOXELS = 1_200_000
#: Values of a preview slice (:func:`preview_slice`): a structure's own value where Apply would add it,
#: TAKEN where Apply would take a seeded structure away, STROKE_OFFSET + value on a stroke of a structure,
#: BACKGROUND_SEED on a background stroke.
TAKEN = 99
STROKE_OFFSET = 100
SMOOTHING_MM = 1.0
#: HU added on each side of a seeded structure's own range of CT values (see structure_hu_ranges)
HU_MARGIN = 10.0
#: Block size and context (voxels) of the full-resolution refinement (see grow()).
REFINE_BLOCK = 48
REFINE_PAD = 3


class SeedStrokes:
    """The seeds of one grow session, kept sparse: per label, the flat indices of the voxels painted.

    Label values are the structure's (1-6) or :data:`BACKGROUND_SEED` for background strokes. A later
    stroke of another label over the same voxel wins."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(int(n) for n in shape)
        self._idx: dict[int, np.ndarray] = {}
        self.version = 0

    def add(self, value: int, box: Box, mask: np.ndarray) -> None:
        """Add the True voxels of ``mask`` (the shape of ``box``) as seeds of ``value``."""
        zz, yy, xx = np.nonzero(mask)
        flat = np.ravel_multi_index((zz + box[0], yy + box[2], xx + box[4]), self.shape).astype(np.int64)
        for k in list(self._idx):
            if k != value:
                self._idx[k] = np.setdiff1d(self._idx[k], flat, assume_unique=True)
        old = self._idx.get(value)
        self._idx[value] = flat if old is None else np.union1d(old, flat)
        self.version += 1

    def clear(self) -> None:
        self._idx.clear()
        self.version += 1

    @property
    def labels(self) -> list[int]:
        return sorted(k for k, v in self._idx.items() if v.size)

    def count(self, value: int) -> int:
        v = self._idx.get(value)
        return 0 if v is None else int(v.size)

    def box(self) -> Optional[Box]:
        allidx = [v for v in self._idx.values() if v.size]
        if not allidx:
            return None
        zyx = np.unravel_index(np.concatenate(allidx), self.shape)
        return (int(zyx[0].min()), int(zyx[0].max()) + 1, int(zyx[1].min()), int(zyx[1].max()) + 1,
                int(zyx[2].min()), int(zyx[2].max()) + 1)

    def rasterize(self, box: Box) -> np.ndarray:
        """The seeds inside ``box`` as a uint8 volume of the box's shape (0 = no seed)."""
        out = np.zeros(tuple(box[2 * a + 1] - box[2 * a] for a in range(3)), np.uint8)
        for k, flat in self._idx.items():
            if not flat.size:
                continue
            z, y, x = np.unravel_index(flat, self.shape)
            inside = (z >= box[0]) & (z < box[1]) & (y >= box[2]) & (y < box[3]) & (x >= box[4]) & (x < box[5])
            out[z[inside] - box[0], y[inside] - box[2], x[inside] - box[4]] = k
        return out

    def copy(self) -> "SeedStrokes":
        c = SeedStrokes(self.shape)
        c._idx = {k: v.copy() for k, v in self._idx.items()}
        c.version = self.version
        return c


@dataclass
class GrowResult:
    """The grown seeds over ``box`` (uint8: seed value per voxel, 0 where nothing grew) and how."""

    box: Box
    grown: np.ndarray
    refined: bool
    factors: tuple
    seconds: dict = field(default_factory=dict)
    #: the structures seeded (not the background); empty: those found in ``grown``
    seeded: tuple = ()
    #: per seeded structure, the CT values (HU) it may grow into, and the CT of the box (None: no limit)
    hu_ranges: dict = field(default_factory=dict)
    image: Optional[np.ndarray] = None


def region_box(labels: np.ndarray, seeds: SeedStrokes, spacing: Sequence[float], *, where: str = "seeds",
               margin_mm: float = 20.0) -> Optional[Box]:
    """The region grown: ``"seeds"`` = the strokes' box plus ``margin_mm``; ``"liver"`` = the box of the
    total-liver labels (engine.labels.TOTAL_LIVER_LABELS) and of the strokes, plus ``margin_mm``."""
    from ..labels import TOTAL_LIVER_LABELS

    sbox = seeds.box()
    if sbox is None:
        return None
    if where == "liver":
        lbox = box_of_mask(np.isin(labels, TOTAL_LIVER_LABELS))
        if lbox is not None:
            sbox = (min(sbox[0], lbox[0]), max(sbox[1], lbox[1]), min(sbox[2], lbox[2]), max(sbox[3], lbox[3]),
                    min(sbox[4], lbox[4]), max(sbox[5], lbox[5]))
    elif where != "seeds":
        raise ValueError(f"unknown region {where!r}: 'seeds' or 'liver'")
    return pad_box(sbox, mm_to_vox(margin_mm, spacing), labels.shape)


def _gradient(image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(image, dtype=np.float32))
    img.SetSpacing(tuple(float(s) for s in reversed(tuple(spacing))))
    return sitk.GetArrayFromImage(sitk.GradientMagnitudeRecursiveGaussian(img, SMOOTHING_MM))


def coarse_seeds(seeds: np.ndarray, f: Sequence[int], coarse_shape: Sequence[int]) -> np.ndarray:
    """Seeds on the coarse grid of block sizes ``f``: each coarse voxel takes the seed value most painted in
    its block (ties: the larger value). Works on the seeded voxels only (strokes and the region's faces are
    a small part of the region)."""
    zz, yy, xx = np.nonzero(seeds)
    vals = seeds[zz, yy, xx].astype(np.int64)
    flat = np.ravel_multi_index((zz // f[0], yy // f[1], xx // f[2]), tuple(coarse_shape))
    # count (coarse voxel, value) pairs; the most painted value wins, the larger one on a tie
    key = flat * 256 + vals
    uk, counts = np.unique(key, return_counts=True)
    order = np.lexsort((uk % 256, counts, uk // 256))
    uk = uk[order]
    last = np.r_[uk[1:] // 256 != uk[:-1] // 256, True]
    out = np.zeros(int(np.prod(coarse_shape)), np.uint8)
    out[uk[last] // 256] = (uk[last] % 256).astype(np.uint8)
    return out.reshape(tuple(coarse_shape))


def grow(image: np.ndarray, seeds: np.ndarray, spacing: Sequence[float], *, refine: bool = True,
         max_coarse_voxels: int = MAX_COARSE_VOXELS, current: Optional[np.ndarray] = None,
         seeded: Sequence[int] = (), hu_ranges: Optional[dict] = None, cancel=None
         ) -> tuple[np.ndarray, tuple, dict]:
    """Competitive growth of ``seeds`` (uint8, 0 = none) over ``image`` (same shape, HU).

    ``current`` (the labels of the region), ``seeded`` (the structures seeded) and ``hu_ranges`` (their CT
    ranges): the refinement skips the blocks of the band where the coarse result changes nothing that
    :func:`grow_values` would keep (nothing thicker than its thin-change rule, in the structures' CT ranges) — there the band keeps the labels as they are (most of a whole liver's outline)
    — so Apply costs what the real change costs.

    Returns (grown seed values, uint8, same shape; the coarse block sizes used; seconds per stage)."""
    import time

    from skimage.segmentation import watershed

    t0 = time.perf_counter()
    times: dict = {}
    sp = tuple(float(s) for s in spacing)
    if len(np.unique(seeds[seeds > 0])) < 2:
        raise ValueError("Grow from seeds needs strokes of at least two structures (e.g. liver and background).")
    f = coarse_factors(image.shape, sp, max_coarse_voxels)
    if f == (1, 1, 1):
        out = watershed(_gradient(image, sp), markers=seeds.astype(np.int32)).astype(np.uint8)
        times["flood"] = time.perf_counter() - t0
        return out, f, times
    csp = tuple(s * k for s, k in zip(sp, f))
    cimg = block_mean(image, f)
    cseeds = coarse_seeds(seeds, f, cimg.shape)
    check(cancel)
    coarse = watershed(_gradient(cimg, csp), markers=cseeds.astype(np.int32)).astype(np.uint8)
    times["coarse flood"] = time.perf_counter() - t0
    check(cancel)
    up = upsample(coarse, f, image.shape)
    if not refine:
        out = up.copy()
        out[seeds > 0] = seeds[seeds > 0]
        return out, f, times
    t1 = time.perf_counter()
    edge = ndimage.maximum_filter(coarse, size=3) != ndimage.minimum_filter(coarse, size=3)
    band = upsample(edge, f, image.shape)
    # one voxel around the band (a 3 x 3 x 3 maximum filter: three 1D passes, faster than binary_dilation)
    work = ndimage.maximum_filter(band.view(np.uint8), size=3, mode="constant").view(bool)
    markers = np.where(work & ~band, up, 0).astype(np.int32)
    markers[seeds > 0] = seeds[seeds > 0]
    out = up.copy()
    times["band"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    # The band is a thin shell: it is flooded block by block (blocks of REFINE_BLOCK voxels holding band
    # voxels, each with REFINE_PAD voxels of context for the gradient's smoothing and the flood), not as one
    # box — the gradient and the flood then cost what the shell costs, not what the liver's box costs. The
    # band is enclosed by markers on both sides, so a block's flood needs nothing from outside its context.
    nb = [int(np.ceil(n / REFINE_BLOCK)) for n in image.shape]
    occupied = block_mean(band, (REFINE_BLOCK,) * 3) > 0 if band.any() else np.zeros(nb, bool)
    cross = ndimage.generate_binary_structure(3, 1)
    refined = 0
    for bz, by, bx in np.argwhere(occupied):
        check(cancel)
        lo = [int(b) * REFINE_BLOCK for b in (bz, by, bx)]
        hi = [min(l + REFINE_BLOCK, n) for l, n in zip(lo, image.shape)]
        if current is not None:
            isl = tuple(slice(l, h) for l, h in zip(lo, hi))
            cur = current[isl]
            is_seeded = np.isin(cur, seeded)
            keep = np.where(is_seeded, cur, BACKGROUND_SEED).astype(np.uint8)   # the grown value of "no change"
            upb = up[isl]
            differ = (upb != keep) & (is_seeded | (cur == 0))
            for v, (lo_hu, hi_hu) in (hu_ranges or {}).items():
                # a structure does not grow into CT values outside its range (grow_values): no change there
                img = image[isl]
                differ &= ~((upb == v) & ((img < lo_hu) | (img > hi_hu)))
            if not ndimage.binary_erosion(differ, structure=cross).any():
                b = band[isl]
                out[isl][b] = keep[b]
                continue
        refined += 1
        plo = [max(l - REFINE_PAD, 0) for l in lo]
        phi = [min(h + REFINE_PAD, n) for h, n in zip(hi, image.shape)]
        psl = tuple(slice(a, b) for a, b in zip(plo, phi))
        fine = watershed(_gradient(image[psl], sp), markers=markers[psl], mask=work[psl])
        inner = tuple(slice(l - a, h - a) for l, h, a in zip(lo, hi, plo))
        isl = tuple(slice(l, h) for l, h in zip(lo, hi))
        b = band[isl]
        out[isl][b] = fine[inner][b]
    times["fine flood"] = time.perf_counter() - t2
    times["blocks refined"] = f"{refined} of {int(occupied.sum())}"
    out[seeds > 0] = seeds[seeds > 0]
    times["refine"] = time.perf_counter() - t1
    return out, f, times


def grow_region(labels: np.ndarray, image: np.ndarray, seeds: SeedStrokes, spacing: Sequence[float], *,
                where: str = "seeds", margin_mm: float = 20.0, refine: bool = True, anchor_border: bool = True,
                max_coarse_voxels: int = MAX_COARSE_VOXELS, cancel=None) -> Optional[GrowResult]:
    """Grow ``seeds`` over the region ``where`` (see :func:`region_box`). Reads ``labels`` and ``image``
    only; runs on a worker thread in the window. None without seeds.

    ``anchor_border``: the region's faces (inside the volume) keep what they hold — a face voxel of a
    seeded structure seeds that structure, any other voxel seeds the background. Without it a liver stroke
    with no background stroke around it floods the fat next to the liver (3D Slicer asks for strokes all
    around); with it, the region's edge is fixed, so the edit blends into the labels outside the box and a
    stroke of one structure alone is enough to grow it up to the image's edges."""
    box = region_box(labels, seeds, spacing, where=where, margin_mm=margin_mm)
    if box is None:
        return None
    sl = _slices(box)
    marks = seeds.rasterize(box)
    if anchor_border:
        _anchor_border(marks, labels[sl], [v for v in seeds.labels if v != BACKGROUND_SEED], box, labels.shape)
    seeded = tuple(v for v in seeds.labels if v != BACKGROUND_SEED)
    ranges = structure_hu_ranges(image[sl], marks, labels[sl], seeded)
    grown, f, times = grow(image[sl], marks, spacing, refine=refine, max_coarse_voxels=max_coarse_voxels,
                           current=labels[sl], seeded=seeded, hu_ranges=ranges, cancel=cancel)
    return GrowResult(box, grown, refine, f, times, seeded, ranges, image[sl])


def structure_hu_ranges(image: np.ndarray, marks: np.ndarray, cur: np.ndarray, seeded) -> dict:
    """The CT values each seeded structure may grow into: the 1st to 99th percentile of its strokes' and its
    present voxels' values in the box, widened by HU_MARGIN each side. Without it a liver stroke grows into
    every brighter neighbour the background strokes do not reach first (a contrast-filled kidney, a rib:
    measured on the 512 x 512 x 300 phantom, ~28 k voxels of 300 HU tissue) — 3D Slicer asks for strokes
    on every neighbour instead."""
    out = {}
    for v in seeded:
        sample = image[(marks == v) | (cur == v)]
        if sample.size:
            lo, hi = np.percentile(sample, [1, 99])
            out[int(v)] = (float(lo) - HU_MARGIN, float(hi) + HU_MARGIN)
    return out


def _anchor_border(marks: np.ndarray, cur: np.ndarray, seeded: list, box: Box, shape) -> None:
    """Seed the faces of the region that lie inside the volume with what they hold (in place)."""
    for ax in range(3):
        for end, inside in ((0, box[2 * ax] > 0), (-1, box[2 * ax + 1] < shape[ax])):
            if not inside:
                continue
            idx = (slice(None),) * ax + (end,)
            m, c = marks[idx], cur[idx]          # views of one face
            free = m == 0
            m[free] = np.where(np.isin(c, seeded), c, BACKGROUND_SEED).astype(np.uint8)[free]


def grow_values(labels: np.ndarray, result: GrowResult, keep_thin: bool = False) -> Optional[Proposal]:
    """The label map's new values in the grown box (see the module's rules), or None if nothing changes.

    Changes thinner than three voxels are left out (``keep_thin=False``): the flood puts a boundary on the
    gradient's ridge, which a partial-volume edge leaves a voxel either way, so without this a grow over the
    whole liver would move its whole outline by a voxel here and there (measured on the 512 x 512 x 300
    phantom: ~30 k voxels of the liver's edge besides the 12.8 k of the spill). What a person seeds to change
    (a spill, a missed lobe) is thicker than that; a one-voxel correction is the brush's work."""
    cur = labels[_slices(result.box)]
    seeded = list(result.seeded) or [int(v) for v in np.unique(result.grown) if 0 < v < BACKGROUND_SEED]
    may = (cur == 0) | np.isin(cur, seeded)
    values = cur.copy()
    for v in seeded:
        add = (result.grown == v) & may
        rng = result.hu_ranges.get(int(v))
        if rng is not None and result.image is not None and result.image.shape == cur.shape:
            add &= (result.image >= rng[0]) & (result.image <= rng[1])
        values[add] = v
    values[(result.grown == BACKGROUND_SEED) & np.isin(cur, seeded)] = 0
    changed = values != cur
    if not keep_thin and changed.any():
        st = ndimage.generate_binary_structure(3, 1)
        for ax, n in enumerate(changed.shape):
            if n < 3:       # a slice (the preview's): open in its plane only
                idx = [slice(None)] * 3
                idx[ax] = [0, 2]
                st[tuple(idx)] = False
        # the changed voxels that belong to a change at least 3 voxels thick (on the changes' own box)
        cb = box_of_mask(changed)
        keep = np.zeros(changed.shape, bool)
        csl = _slices(pad_box(cb, 1, changed.shape))
        keep[csl] = ndimage.binary_opening(changed[csl], structure=st)
        values[changed & ~keep] = cur[changed & ~keep]
        changed &= keep
    n = int(np.count_nonzero(changed))
    if n == 0:
        return None
    tight = box_of_mask(changed)
    out_box: Box = tuple(result.box[2 * (a // 2)] + tight[a] for a in range(6))  # type: ignore[assignment]
    return Proposal(out_box, values[_slices(tight)].copy(), {"changed_voxels": n})


def grow_from_seeds(labels: np.ndarray, image: np.ndarray, seeds: SeedStrokes, spacing: Sequence[float],
                    **kwargs) -> Optional[Region]:
    """Grow and apply in place (an engine.edits-style operation for CaseSession.apply)."""
    res = grow_region(labels, image, seeds, spacing, **kwargs)
    return None if res is None else apply_proposal(labels, grow_values(labels, res))


def preview_slice(labels: np.ndarray, seeds: SeedStrokes, result: Optional[GrowResult], axis: int, index: int,
                  changes: Optional[np.ndarray] = None) -> np.ndarray:
    """One slice (normal to ``axis`` at ``index``) of what the grow would do, for the live preview: uint8,
    the plane's (row, column) shape, coded as :data:`TAKEN` / :data:`STROKE_OFFSET` say: the changes
    (:func:`preview_changes`, or ``changes`` when the caller kept them) with the strokes drawn over them."""
    shape = labels.shape
    plane = preview_changes(labels, result, axis, index) if changes is None else changes
    sbox = seeds.box()
    if sbox is not None and sbox[2 * axis] <= index < sbox[2 * axis + 1]:
        full = [0, shape[0], 0, shape[1], 0, shape[2]]
        full[2 * axis:2 * axis + 2] = [index, index + 1]
        strokes = np.take(seeds.rasterize(tuple(full)), 0, axis=axis)
        plane = np.where(strokes == BACKGROUND_SEED, BACKGROUND_SEED,
                         np.where(strokes > 0, strokes + STROKE_OFFSET, plane)).astype(np.uint8)
    return plane


def preview_changes(labels: np.ndarray, result: Optional[GrowResult], axis: int, index: int) -> np.ndarray:
    """What Apply would change on one slice: a structure's value where it would be added, :data:`TAKEN`
    where a seeded structure would be taken away, 0 elsewhere (the plane's (row, column) shape). Follows
    :func:`grow_values`' rules, computed on five slices around it only (tens of ms on a whole liver's box:
    a window keeps it while strokes are drawn, as it changes only with the result, the slice or the labels)."""
    shape = labels.shape
    others = [a for a in range(3) if a != axis]
    plane = np.zeros((shape[others[0]], shape[others[1]]), np.uint8)
    if result is not None and result.box[2 * axis] <= index < result.box[2 * axis + 1]:
        b = result.box
        # a slab of five slices around the one shown, so that leaving out thin changes (an opening of
        # radius one) gives on the middle slice exactly what it gives in the whole box
        lo, hi = max(index - 2, b[2 * axis]), min(index + 3, b[2 * axis + 1])
        sl = [slice(b[0], b[1]), slice(b[2], b[3]), slice(b[4], b[5])]
        sl[axis] = slice(lo, hi)
        now = labels[tuple(sl)]
        grown = np.take(result.grown, np.arange(lo - b[2 * axis], hi - b[2 * axis]), axis=axis)
        whole = (0, now.shape[0], 0, now.shape[1], 0, now.shape[2])
        img = None if result.image is None else np.take(result.image, np.arange(lo - b[2 * axis], hi - b[2 * axis]),
                                                        axis=axis)
        p = grow_values(now, GrowResult(whole, grown, result.refined, result.factors, seeded=result.seeded,
                                        hu_ranges=result.hu_ranges, image=img))
        if p is not None:
            new = now.copy()
            pb = p.box
            new[pb[0]:pb[1], pb[2]:pb[3], pb[4]:pb[5]] = p.values
            sub = np.zeros(now.shape, np.uint8)
            added = (new != now) & (new != 0)
            sub[added] = new[added]
            sub[(new != now) & (new == 0)] = TAKEN
            plane[b[2 * others[0]]:b[2 * others[0] + 1], b[2 * others[1]]:b[2 * others[1] + 1]] = \
                np.take(sub, index - lo, axis=axis)
    return plane
