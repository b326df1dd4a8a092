"""Phantoms with a known answer for the vessel trace and lesion-from-a-click tests (engine and GUI): a
vessel branch deleted from the label map (the CT keeps it), lesions known by construction."""
from __future__ import annotations

import numpy as np

#: A grid like a routine portal-phase series (1.6 mm slices, 0.8 mm pixels), centred on the liver.
SHAPE = (110, 260, 260)
SPACING = (1.6, 0.8, 0.8)


def build(seed: int = 3, n_lesions: int = 5):
    from engine.phantom import make_phantom_with_truth
    return make_phantom_with_truth(seed=seed, shape=SHAPE, spacing=SPACING, n_lesions=n_lesions)


def _segments_mask(shape, grid, segs) -> np.ndarray:
    """The voxels inside the phantom's analytic tube segments (the formula engine.phantom paints with)."""
    m = np.zeros(shape, bool)
    for s in segs:
        rmax = max(s.r0, s.r1)
        b = grid.box(np.minimum(s.p0, s.p1) - rmax, np.maximum(s.p0, s.p1) + rmax)
        if b is None:
            continue
        sl, x, y, z = b
        v = s.p1 - s.p0
        vv = float(np.dot(v, v)) or 1e-6
        dx, dy, dz = x - s.p0[0], y - s.p0[1], z - s.p0[2]
        proj = dx * v[0] + dy * v[1] + dz * v[2]
        t = np.clip(proj / vv, 0, 1)
        d2 = dx * dx + dy * dy + dz * dz - 2 * t * proj + t * t * vv
        rad = s.r0 + t * (s.r1 - s.r0)
        m[sl] |= d2 <= rad * rad
    return m


def deleted_branch(case, truth, label: int):
    """The largest terminal branch (two tube segments ending nowhere) of the portal (2) or hepatic (3) tree.

    Returns (labels with the branch set to parenchyma, the branch's voxels, the click at its tip (1.5 mm
    inside its end), the click where it leaves the tree)."""
    from engine.phantom import _Grid

    segs = truth.anat.hv if label == 3 else truth.anat.pv
    g = case.geometry
    grid = _Grid(g)
    starts = {tuple(np.round(s.p0, 3)) for s in segs}
    leaves = [i for i in range(len(segs) - 1)
              if np.allclose(segs[i].p1, segs[i + 1].p0) and tuple(np.round(segs[i + 1].p1, 3)) not in starts]
    i = max(leaves, key=lambda k: segs[k].r0)
    s1, s2 = segs[i], segs[i + 1]
    others = [s for k, s in enumerate(segs) if k not in (i, i + 1)]
    branch = _segments_mask(case.labels.shape, grid, [s1, s2]) & ~_segments_mask(case.labels.shape, grid, others)
    branch &= case.labels == label
    labels = case.labels.copy()
    labels[branch] = 1
    d = (s2.p1 - s1.p0) / np.linalg.norm(s2.p1 - s1.p0)
    tip = tuple(int(v) for v in np.round(g.physical_to_index(s2.p1 - d * 1.5)))
    base = tuple(int(v) for v in np.round(g.physical_to_index(s1.p0)))
    return labels, branch, tip, base


def lesion_voxels(case, index: int):
    """(click at the lesion's centre, bool mask of its voxels) of phantom lesion ``index``."""
    from engine.edits import _component_at

    c = tuple(int(v) for v in np.round(case.geometry.physical_to_index(case.provenance.extra["lesions"][index]
                                                                         ["centre_lps_mm"])))
    _, comp, box = _component_at(case.labels, c)
    m = np.zeros(case.labels.shape, bool)
    m[box[0]:box[1], box[2]:box[3], box[4]:box[5]] = comp
    return c, m


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())
