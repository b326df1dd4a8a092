"""A model's typical error on a phantom, for the correction tools' tests and benchmark: the liver label
spilled into a neighbour (a ball of "liver" over spleen-like tissue) joined to the liver by a thin bridge —
what "keep largest component" cannot remove because it is connected.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..case import Case
from ..labels import TOTAL_LIVER_LABELS, Label

SPILL_HU = 150.0   # enhancing spleen or bowel wall: brighter than the phantom's liver (~105 HU)


def add_neck_spill(case: Case, radius_mm: float = 25.0, bridge_radius_mm: float = 3.0, gap_mm: float = 14.0,
                   seed: int = 0, hu: float = SPILL_HU) -> tuple[Case, np.ndarray]:
    """A copy of ``case`` with a spill: a ball of ``radius_mm`` labelled liver parenchyma, ``gap_mm`` from
    the liver towards the patient's left (array +x), joined to it by a rod of ``bridge_radius_mm``; its CT
    made spleen-like (``hu`` + noise), the rod liver-like. Returns (the case, the spill ball's mask: the
    voxels a correction must take away, the rod excluded)."""
    out = case.copy()
    lab, img = out.labels, out.image
    sp = np.asarray(out.geometry.spacing, float)
    liver = np.isin(lab, TOTAL_LIVER_LABELS)
    zz, yy, xx = np.nonzero(liver)
    if zz.size == 0:
        raise ValueError("the case has no liver to spill from")
    cz, cy = float(np.median(zz)), float(np.median(yy))
    row = liver[int(round(cz)), int(round(cy))]
    xs = np.flatnonzero(row)
    x_edge = float(xs.max()) if xs.size else float(xx.max())
    # the ball keeps ``gap_mm`` from every liver voxel near it (the liver's edge is not flat)
    near = (np.abs(zz - cz) * sp[0] <= radius_mm + gap_mm) & (np.abs(yy - cy) * sp[1] <= radius_mm + gap_mm)
    x_far = float(xx[near].max())
    cx = x_far + (gap_mm + radius_mm) / sp[2]
    cx = min(cx, lab.shape[2] - 1 - radius_mm / sp[2] - 1)
    z, y, x = np.ogrid[:lab.shape[0], :lab.shape[1], :lab.shape[2]]
    dz, dy, dx = (z - cz) * sp[0], (y - cy) * sp[1], (x - cx) * sp[2]
    ball = dz ** 2 + dy ** 2 + dx ** 2 <= radius_mm ** 2
    rod = (dz ** 2 + dy ** 2 <= bridge_radius_mm ** 2) & (x >= x_edge - 2) & (x <= cx)
    ball &= ~liver
    rod &= ~liver & ~ball
    rng = np.random.default_rng(seed)
    noise_sd = 12.0
    img[ball] = (hu + rng.normal(0, noise_sd, int(ball.sum()))).astype(img.dtype)
    liver_hu = float(np.median(img[lab == Label.PARENCHYMA])) if np.any(lab == Label.PARENCHYMA) else 60.0
    img[rod] = (liver_hu + rng.normal(0, noise_sd, int(rod.sum()))).astype(img.dtype)
    lab[ball | rod] = Label.PARENCHYMA
    out.provenance.extra = dict(out.provenance.extra, spill={"radius_mm": radius_mm, "bridge_radius_mm": bridge_radius_mm,
                                                              "centre_zyx": [cz, cy, cx]})
    return out, ball


def spill_centre(case: Case) -> Optional[tuple[int, int, int]]:
    """The spill ball's centre voxel (z, y, x) of a case made by :func:`add_neck_spill`."""
    c = case.provenance.extra.get("spill", {}).get("centre_zyx")
    return None if c is None else tuple(int(round(v)) for v in c)  # type: ignore[return-value]
