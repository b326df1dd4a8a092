"""Surface-distance metrics in millimetres with anisotropic spacing: HD95 (four named variants), HD, ASSD.

Arrays are boolean (z, y, x); ``spacing`` is (z, y, x) mm. Distances are Euclidean between voxel centres
(or voxel corners for the surface-element variant) in mm, computed exactly inside the union bounding box:
for each border point, offsets up to SWEEP_RADIUS_MM are tried in order of increasing length (the first
hit on the other border is the nearest), and the few points farther away go to a k-d tree over the other
border. The values are those of a Euclidean distance transform of the complement of the other border
(what MedPy and surface-distance compute), at a fraction of its cost: borders hold ~1 % of the box.

Borders. ``∂X`` = X minus its 6-connected erosion, outside the image counted as background (the Metrics
Reloaded definition, used by MONAI and MedPy) unless a variant says otherwise.
d(p, ∂R) is the distance from a border voxel p of P to the nearest border voxel of R (0 if p ∈ ∂R).

Variants of HD95 (``variant=``):

* ``"metrics_reloaded"`` (default): max( P95{d(p, ∂R) : p ∈ ∂P}, P95{d(r, ∂P) : r ∈ ∂R} ), each a 95th
  percentile with linear interpolation. Equals MONAI ``compute_hausdorff_distance(percentile=95)``.
* ``"pooled"``: P95 of the union of both directed distance sets (linear interpolation). Equals MedPy
  ``medpy.metric.binary.hd95`` (and nnU-Net-era papers that used it).
* ``"seg_metrics"``: pooled P95 over 26-connected contours (X minus its 3x3x3 erosion, voxels on the image
  edge not contour: ITK ``LabelContour(fullyConnected=True)``), distances in float32: equals the
  ``seg-metrics`` package (the study's metric list). Like seg-metrics it scores a case with an empty mask
  **0**, which is wrong; :func:`metrics.evaluate_case` flags every such value in the case's notes.
* ``"surface"``: surface-element-weighted (DeepMind ``surface_distance.compute_robust_hausdorff``): the
  border is the set of voxel corners whose 2x2x2 neighbourhood is mixed, each corner weighted by the area
  (mm²) of its marching-cubes surface elements; max of the two area-weighted directed percentiles.

Also: ``hausdorff`` (HD, the maximum of both directed maxima on the 6-connected borders, = MONAI with
percentile None) and ``assd`` (average symmetric surface distance: mean over the pooled distances of both
directions = MONAI ``compute_average_surface_distance(symmetric=True)``, and MedPy 0.5.2's ``assd``, which
pools them too — checked on borders of very different sizes).

Empty masks (see :mod:`metrics.policy`): one mask empty -> inf (there is no surface to measure to);
both empty -> NaN. ``seg_metrics`` -> 0 in both cases, as that package does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
from scipy.spatial import cKDTree

from . import _grid, policy
from ._surfel_table import NEIGHBOUR_CODE_TO_NORMALS

HD95_VARIANTS = ("metrics_reloaded", "pooled", "seg_metrics", "surface")


#: Radius (mm) of the exact local search before falling back to a k-d tree (most border distances of a
#: reasonable segmentation are a few millimetres; measured fastest between 3 and 5 mm).
SWEEP_RADIUS_MM = 4.0


@lru_cache(maxsize=16)
def _sweep_offsets(spacing: tuple[float, float, float], radius_mm: float):
    """Voxel offsets within ``radius_mm`` sorted by physical length: (k per axis, offsets (n,3), lengths)."""
    k = tuple(max(1, int(np.floor(radius_mm / s))) for s in spacing)
    g = np.stack(np.meshgrid(*(np.arange(-kk, kk + 1) for kk in k), indexing="ij"), -1).reshape(-1, 3)
    length = np.sqrt(((g * np.asarray(spacing)) ** 2).sum(1))
    keep = length <= radius_mm
    g, length = g[keep], length[keep]
    order = np.argsort(length, kind="stable")
    return k, g[order], length[order]


def _directed(idx_a: tuple[np.ndarray, ...], mask_b: np.ndarray, spacing: Sequence[float],
              workers: int = -1, idx_b: Optional[tuple[np.ndarray, ...]] = None) -> np.ndarray:
    """Exact distance (mm) from each voxel index of A (tuple of z, y, x arrays) to the nearest True of B.

    First an exact local search: offsets within SWEEP_RADIUS_MM are tried in order of increasing length,
    so the first hit IS the nearest point (same value as a Euclidean distance transform). Points whose
    nearest B point is farther go to a k-d tree over B's points. B must be non-empty.
    """
    sp = tuple(float(s) for s in spacing)
    n = len(idx_a[0])
    d = np.empty(n, dtype=np.float64)
    if n == 0:
        return d
    k, offs, lengths = _sweep_offsets(sp, SWEEP_RADIUS_MM)
    shape_p = tuple(mask_b.shape[i] + 2 * k[i] for i in range(3))
    bp = np.zeros(shape_p, dtype=bool)
    bp[k[0]:k[0] + mask_b.shape[0], k[1]:k[1] + mask_b.shape[1], k[2]:k[2] + mask_b.shape[2]] = mask_b
    flat_b = bp.ravel()
    strides = np.array([shape_p[1] * shape_p[2], shape_p[2], 1], dtype=np.int64)
    flat_a = ((idx_a[0].astype(np.int64) + k[0]) * strides[0] + (idx_a[1].astype(np.int64) + k[1]) * strides[1]
              + (idx_a[2].astype(np.int64) + k[2]))
    flat_off = offs.astype(np.int64) @ strides
    remaining = np.arange(n)
    cur = flat_a
    for off, length in zip(flat_off.tolist(), lengths.tolist()):
        hit = flat_b[cur + off] if off else flat_b[cur]
        if hit.any():
            d[remaining[hit]] = length
            miss = ~hit
            remaining = remaining[miss]
            if remaining.size == 0:
                return d
            cur = cur[miss]
    # the rest lie farther than the search radius: exact nearest neighbour through a k-d tree
    pts_b = np.stack(idx_b if idx_b is not None else np.nonzero(mask_b), axis=1).astype(np.float64) * np.asarray(sp)
    pts_a = np.stack([idx_a[i][remaining] for i in range(3)], axis=1).astype(np.float64) * np.asarray(sp)
    tree = cKDTree(pts_b, balanced_tree=False, compact_nodes=False)
    d[remaining] = tree.query(pts_a, k=1, workers=workers)[0]
    return d


def _border_pair_distances(bp: np.ndarray, br: np.ndarray, spacing: Sequence[float],
                           workers: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Directed distances ∂P -> ∂R and ∂R -> ∂P (mm) for two border masks on one grid."""
    ip, ir = np.nonzero(bp), np.nonzero(br)
    d_pr = _directed(ip, br, spacing, workers, ir)
    d_rp = _directed(ir, bp, spacing, workers, ip)
    return d_pr, d_rp


@dataclass
class SurfaceDistances:
    """Directed border distances of one structure (mm) plus, for the surface variant, surfel areas (mm²).

    status: :mod:`metrics.policy` emptiness word. ``d_pr``: from each border element of the prediction
    to the reference border; ``d_rp``: the other way.
    """

    status: str
    d_pr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    d_rp: np.ndarray = field(default_factory=lambda: np.zeros(0))
    area_p: Optional[np.ndarray] = None
    area_r: Optional[np.ndarray] = None


def _crop(pred: np.ndarray, ref: np.ndarray):
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape or pred.ndim != 3:
        raise ValueError(f"expected two 3D masks of one shape, got {pred.shape} and {ref.shape}")
    box = _grid.union_box(_grid.bbox(pred), _grid.bbox(ref))
    if box is None:
        return None, None, None
    return pred[box], ref[box], _grid.touches_edge(box, pred.shape)


def voxel_border_distances(pred_c: np.ndarray, ref_c: np.ndarray, spacing: Sequence[float],
                           edge=None, connectivity: int = 6, workers: int = -1) -> SurfaceDistances:
    """Directed distances between voxel borders of two cropped masks.

    connectivity 6 (default): border = X minus its 6-connected erosion, outside the image is background
    (Metrics Reloaded / MONAI / MedPy). connectivity 26: X minus its 3x3x3 erosion with voxels on the image
    edge NOT border (ITK LabelContour fullyConnected, seg-metrics). ``edge`` says which sides of the crop
    lie on the image edge (``metrics._grid.touches_edge``); None means none do.
    """
    n_p, n_r = int(np.count_nonzero(pred_c)), int(np.count_nonzero(ref_c))
    status = policy.emptiness(n_p, n_r)
    if status != policy.OK:
        return SurfaceDistances(status)
    if connectivity == 6:
        bp = _grid.border6(_grid.pad(pred_c))
        br = _grid.border6(_grid.pad(ref_c))
    elif connectivity == 26:
        bp = _grid.border26(_grid.pad(pred_c, edge, True))
        br = _grid.border26(_grid.pad(ref_c, edge, True))
    else:
        raise ValueError("connectivity must be 6 or 26")
    d_pr, d_rp = _border_pair_distances(bp, br, spacing, workers)
    return SurfaceDistances(status, d_pr, d_rp)


@lru_cache(maxsize=32)
def surfel_area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    """Area (mm²) of the surface elements of each 2x2x2 neighbour code for (z, y, x) spacing.

    Same computation as DeepMind's ``create_table_neighbour_code_to_surface_area``.
    """
    s0, s1, s2 = (float(s) for s in spacing)
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])
    table = np.zeros(256)
    for code, normals in enumerate(NEIGHBOUR_CODE_TO_NORMALS):
        n = np.asarray(normals, dtype=float).reshape(-1, 3) * scale
        table[code] = float(np.linalg.norm(n, axis=1).sum())
    return table


def surfel_distances(pred_c: np.ndarray, ref_c: np.ndarray, spacing: Sequence[float],
                     workers: int = -1) -> SurfaceDistances:
    """Directed corner-to-corner distances (mm) and surfel areas (mm²), DeepMind surface-distance style.

    Surface corners are the voxel corners whose 2x2x2 neighbourhood is mixed; each carries the area of its
    marching-cubes surface elements (:func:`surfel_area_table`).
    """
    n_p, n_r = int(np.count_nonzero(pred_c)), int(np.count_nonzero(ref_c))
    status = policy.emptiness(n_p, n_r)
    if status != policy.OK:
        return SurfaceDistances(status)
    ip, cp = _grid.corner_border(pred_c)
    ir, cr = _grid.corner_border(ref_c)
    corner_shape = tuple(s + 1 for s in pred_c.shape)
    bp = np.zeros(corner_shape, dtype=bool)
    br = np.zeros(corner_shape, dtype=bool)
    bp[ip] = True
    br[ir] = True
    d_pr = _directed(ip, br, spacing, workers, ir)
    d_rp = _directed(ir, bp, spacing, workers, ip)
    table = surfel_area_table(tuple(float(s) for s in spacing))
    return SurfaceDistances(status, d_pr, d_rp, table[cp], table[cr])


# --- reductions ---------------------------------------------------------------------------------
def _empty_value(status: str, variant: str) -> float:
    if variant == "seg_metrics":
        return 0.0
    return policy.NAN if status == policy.BOTH_EMPTY else policy.INF


def reduce_percentile(sd: SurfaceDistances, variant: str, percentile: float = 95.0) -> float:
    """HD_percentile of precomputed distances under a named variant (module docstring)."""
    if sd.status != policy.OK:
        return _empty_value(sd.status, variant)
    q = percentile
    if variant == "metrics_reloaded":
        return float(max(np.percentile(sd.d_pr, q), np.percentile(sd.d_rp, q)))
    if variant == "pooled":
        return float(np.percentile(np.concatenate([sd.d_pr, sd.d_rp]), q))
    if variant == "seg_metrics":
        # seg-metrics reads ITK float32 distance maps: round the same way for equal values.
        return float(np.percentile(np.concatenate([sd.d_pr, sd.d_rp]).astype(np.float32), q))
    if variant == "surface":
        return float(max(_weighted_percentile(sd.d_pr, sd.area_p, q),
                         _weighted_percentile(sd.d_rp, sd.area_r, q)))
    raise ValueError(f"unknown HD95 variant {variant!r}; choose one of {', '.join(HD95_VARIANTS)}")


def _weighted_percentile(d: np.ndarray, w: np.ndarray, q: float) -> float:
    """DeepMind's robust-Hausdorff percentile: the smallest distance whose cumulative area share >= q."""
    order = np.lexsort((w, d))   # their sort key is the (distance, area) tuple
    cum = np.cumsum(w[order]) / np.sum(w)
    idx = int(np.searchsorted(cum, q / 100.0))
    return float(d[order][min(idx, len(d) - 1)])


def reduce_max(sd: SurfaceDistances) -> float:
    """Hausdorff distance (mm): max of both directed maxima."""
    if sd.status != policy.OK:
        return _empty_value(sd.status, "max")
    return float(max(sd.d_pr.max(), sd.d_rp.max()))


def reduce_mean(sd: SurfaceDistances) -> float:
    """ASSD (mm): mean of all border distances of both directions pooled."""
    if sd.status != policy.OK:
        return _empty_value(sd.status, "mean")
    n = sd.d_pr.size + sd.d_rp.size
    return float((sd.d_pr.sum() + sd.d_rp.sum()) / n)


# --- public one-call functions -------------------------------------------------------------------
def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], variant: str = "metrics_reloaded",
         percentile: float = 95.0) -> float:
    """95th-percentile Hausdorff distance in mm between two boolean (z, y, x) masks.

    spacing: (z, y, x) mm. variant: "metrics_reloaded" (default, = MONAI), "pooled" (= MedPy),
    "seg_metrics" (= seg-metrics; empty mask -> 0), "surface" (= DeepMind surface-distance).
    Empty masks: one empty -> inf, both -> NaN (except seg_metrics: 0). See the module docstring.
    """
    p, r, edge = _crop(pred, ref)
    if p is None:
        return _empty_value(policy.BOTH_EMPTY, variant)
    if variant == "surface":
        sd = surfel_distances(p, r, spacing)
    elif variant == "seg_metrics":
        sd = voxel_border_distances(p, r, spacing, edge, connectivity=26)
    elif variant in ("metrics_reloaded", "pooled"):
        sd = voxel_border_distances(p, r, spacing, edge, connectivity=6)
    else:
        raise ValueError(f"unknown HD95 variant {variant!r}; choose one of {', '.join(HD95_VARIANTS)}")
    return reduce_percentile(sd, variant, percentile)


def hausdorff(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Hausdorff distance (maximum, mm) between the 6-connected borders; inf/NaN for empty masks."""
    p, r, edge = _crop(pred, ref)
    if p is None:
        return policy.NAN
    return reduce_max(voxel_border_distances(p, r, spacing, edge))


def assd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance (mm) over both borders pooled; inf/NaN for empty masks."""
    p, r, edge = _crop(pred, ref)
    if p is None:
        return policy.NAN
    return reduce_mean(voxel_border_distances(p, r, spacing, edge))
