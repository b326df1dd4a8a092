"""Clean-up of a model's label map (recorded in the output's provenance).

Rules, in this order (labels as in engine.labels; arrays (z, y, x); spacing (z, y, x) mm):

1. Liver: keep the largest 26-connected component of parenchyma (label 1) — lesions and the
   intrahepatic vessels count as part of the liver for this, so a lesion splitting the parenchyma does
   not delete half a liver. Other parenchyma components become background.
2. Lesions (label 5) only within the liver: a 26-connected lesion component is kept when any of its
   voxels lies within ``lesion_margin_mm`` of the kept liver; others become background.
3. Vessels (labels 2, 3, 4): 26-connected components smaller than ``min_vessel_ml`` are removed (they
   become parenchyma where they touch the liver's inside, else background), so stray specks do not
   show up in the 3D view or the vessel volumes.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from .labels import Label

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostprocessOptions:
    keep_largest_liver: bool = True
    lesions_within_liver: bool = True
    lesion_margin_mm: float = 5.0
    remove_small_vessel_fragments: bool = True
    min_vessel_ml: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


def _components(mask: np.ndarray):
    import cc3d

    return cc3d.connected_components(mask, connectivity=26, return_N=True)


def _crop_box(mask: np.ndarray, margin: Sequence[int]):
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(i) == 0 for i in idx):
        return None
    return tuple(slice(max(0, int(i[0]) - m), min(n, int(i[-1]) + 1 + m)) for i, m, n in zip(idx, margin, mask.shape))


def postprocess(labels: np.ndarray, spacing_zyx: Sequence[float],
                options: Optional[PostprocessOptions] = None) -> tuple[np.ndarray, dict]:
    """Apply the rules above; returns (new uint8 label map, record for provenance). Input is not modified."""
    from scipy import ndimage

    opts = options or PostprocessOptions()
    out = np.array(labels, dtype=np.uint8, copy=True)
    vox_ml = float(np.prod(spacing_zyx)) / 1000.0
    record: dict = {"options": opts.to_dict(), "rules": __doc__.split("Rules, in this order")[1].strip()
                    if __doc__ else "", "changes": {}}
    changes = record["changes"]

    # 1. largest liver ------------------------------------------------------------------------
    liver = None
    if opts.keep_largest_liver and (out == Label.PARENCHYMA).any():
        whole = np.isin(out, (Label.PARENCHYMA, Label.PORTAL_VEIN, Label.HEPATIC_VEINS, Label.CRLM))
        cc, n = _components(whole)
        if n > 1:
            # the component holding the most parenchyma is the liver
            counts = np.bincount(cc[out == Label.PARENCHYMA].ravel(), minlength=n + 1)
            counts[0] = 0
            keep = int(np.argmax(counts))
            drop = (out == Label.PARENCHYMA) & (cc != keep)
            changes["liver_fragments_removed_ml"] = round(float(drop.sum()) * vox_ml, 3)
            out[drop] = 0
            liver = cc == keep
        else:
            liver = whole
        liver = liver & np.isin(out, (Label.PARENCHYMA, Label.CRLM))
    elif (out == Label.PARENCHYMA).any():
        liver = np.isin(out, (Label.PARENCHYMA, Label.CRLM))

    # 2. lesions inside the liver ---------------------------------------------------------------
    lesions = out == Label.CRLM
    if opts.lesions_within_liver and lesions.any():
        if liver is None or not (out == Label.PARENCHYMA).any():
            changes["lesions_removed"] = "none (no liver segmented, lesions kept as predicted)"
        else:
            parenchyma = out == Label.PARENCHYMA
            margin_vox = [int(np.ceil(opts.lesion_margin_mm / s)) + 1 for s in spacing_zyx]
            box = _crop_box(parenchyma | lesions, margin_vox)
            sub_p, sub_l = parenchyma[box], lesions[box]
            # distance (mm) of every voxel to the nearest parenchyma voxel, in the box only
            dist = ndimage.distance_transform_edt(~sub_p, sampling=spacing_zyx)
            cc, n = _components(sub_l)
            near = np.zeros(n + 1, dtype=bool)
            near[np.unique(cc[(dist <= opts.lesion_margin_mm) & sub_l])] = True
            near[0] = False
            drop = sub_l & ~near[cc]
            n_drop = len(np.unique(cc[drop])) if drop.any() else 0
            sub_out = out[box]
            sub_out[drop] = 0
            changes["lesions_removed"] = int(n_drop)
            changes["lesions_removed_ml"] = round(float(drop.sum()) * vox_ml, 3)

    # 3. small vessel fragments -------------------------------------------------------------------
    if opts.remove_small_vessel_fragments:
        min_vox = max(1, int(round(opts.min_vessel_ml / vox_ml)))
        liver_filled = None
        for lab in (Label.PORTAL_VEIN, Label.HEPATIC_VEINS, Label.IVC):
            m = out == lab
            if not m.any():
                continue
            cc, n = _components(m)
            sizes = np.bincount(cc.ravel(), minlength=n + 1)
            small = sizes < min_vox
            small[0] = False
            if not small.any():
                continue
            drop = small[cc]
            if liver_filled is None:
                parenchyma = out == Label.PARENCHYMA
                # inside the liver = a parenchyma voxel among the 6 neighbours
                liver_filled = ndimage.binary_dilation(parenchyma) if parenchyma.any() else parenchyma
            out[drop & liver_filled & (lab != Label.IVC)] = Label.PARENCHYMA
            out[drop & ~(liver_filled & (lab != Label.IVC))] = 0
            changes[f"{Label(lab).name.lower()}_fragments_removed"] = int(small.sum())
    return out, record
