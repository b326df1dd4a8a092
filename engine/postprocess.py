"""Clean-up of a model's label map (recorded in the output's provenance).

Rules, in this order (labels as in engine.labels; arrays (z, y, x); spacing (z, y, x) mm):

1. Liver: keep the largest 26-connected component of parenchyma (label 1) — lesions and the
   intrahepatic vessels count as part of the liver for this, so a lesion splitting the parenchyma does
   not delete half a liver. Other parenchyma components become background.
2. Lesions (label 5) only within the liver: a 26-connected lesion component is kept when any of its
   voxels lies within ``lesion_margin_mm`` of the kept liver; others become background.
3. Lesions smaller than a sphere of ``min_lesion_diameter_mm`` (default 3 mm, 0.014 mL) are removed (a
   component touching the parenchyma becomes parenchyma, whole; others background): below what CT shows
   as a lesion, and in practice slivers left where a model's coarse output is resampled to the CT's fine
   grid; they would otherwise be counted in the lesion table.
4. Vessels (labels 2, 3, 4): 26-connected components smaller than ``min_vessel_ml`` are removed (portal
   and hepatic vein ones touching the parenchyma become parenchyma, whole; others background), so stray
   specks do not show up in the 3D view or the vessel volumes. Of the larger ones, a component that is
   not its structure's largest and lies wholly farther than ``vessel_margin_mm`` from the kept liver
   becomes background: the portal vein, hepatic veins and IVC all run along or through the liver, so
   such a piece is a false find elsewhere in the abdomen (the largest is kept however far it reaches).
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
    remove_tiny_lesions: bool = True
    min_lesion_diameter_mm: float = 3.0
    remove_small_vessel_fragments: bool = True
    min_vessel_ml: float = 0.1
    remove_vessels_away_from_liver: bool = True
    vessel_margin_mm: float = 10.0

    def to_dict(self) -> dict:
        return asdict(self)

def _components(mask: np.ndarray):
    import cc3d

    return cc3d.connected_components(mask, connectivity=26, return_N=True)

def _any_of(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``np.isin(labels, values)`` for a uint8 map through a lookup table (several times faster)."""
    lut = np.zeros(256, dtype=bool)
    lut[list(values)] = True
    return lut[labels]


def _components_away_from(parenchyma: np.ndarray, lesions: np.ndarray, spacing_zyx: Sequence[float],
                          margin_mm: float) -> tuple[np.ndarray, int]:
    """Voxels of the 26-connected components of ``lesions`` (any mask) none of whose voxels lies within
    ``margin_mm`` of a parenchyma voxel (the components rules 2 and 4 remove), and how many components
    that is.

    Exact, and local: a component with a parenchyma voxel among its voxels' 26 neighbours is kept at
    once when a neighbour step is within the margin (the usual case: lesions sit in the liver); the
    others are tested with a Euclidean distance map of their own bounding box grown by the margin, which
    holds every parenchyma voxel that could be within the margin. (A distance map of the whole volume
    took 30 s on a 512 x 512 x 300 map whose lesions were scattered everywhere.)
    """
    import cc3d
    from scipy import ndimage

    spacing = np.asarray(spacing_zyx, dtype=float)
    cc, n = _components(lesions)
    if n == 0:
        return np.zeros_like(lesions), 0
    keep = np.zeros(n + 1, dtype=bool)
    where = np.flatnonzero(lesions)
    comp = cc.reshape(-1)[where]
    if float(np.sqrt((spacing ** 2).sum())) <= margin_mm:
        # Lesion components with a parenchyma voxel among their voxels' 26 neighbours: looked up at the
        # lesion voxels only (a few % of the volume), not by a pass over the whole volume.
        if len(where) * len(_OFFSETS_26) < cc.size:
            touching = _neighbour_of(parenchyma, where, _OFFSETS_26)
            keep[comp[touching]] = True
        else:
            # Lesion voxels everywhere (an untrained or failing model): one pass over the volume is
            # cheaper — cc3d's list of touching labels in a map holding both.
            both = np.where(parenchyma, np.uint32(n + 1), cc.astype(np.uint32, copy=False))
            for a, b in cc3d.contacts(both, connectivity=26):
                if n + 1 in (a, b) and 0 < min(a, b) <= n:
                    keep[min(a, b)] = True
    margin_vox = [int(np.ceil(margin_mm / s)) + 1 for s in spacing]
    boxes = cc3d.statistics(cc)["bounding_boxes"] if not keep[1:].all() else []
    for i in range(1, n + 1):
        if keep[i]:
            continue
        bz, by, bx = boxes[i]
        box = tuple(slice(max(0, int(b.start) - m), min(size, int(b.stop) + m))
                    for b, m, size in zip((bz, by, bx), margin_vox, cc.shape))
        sub_p = parenchyma[box]
        if not sub_p.any():
            continue
        dist = ndimage.distance_transform_edt(~sub_p, sampling=spacing)
        keep[i] = bool(((cc[box] == i) & (dist <= margin_mm)).any())
    keep[0] = True
    drop = np.zeros(lesions.shape, dtype=bool)
    drop.reshape(-1)[where[~keep[comp]]] = True
    return drop, int((~keep).sum())


_OFFSETS_26 = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dz, dy, dx) != (0, 0, 0)]
_OFFSETS_6 = [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]


def _neighbour_of(mask: np.ndarray, flat_idx: np.ndarray, offsets) -> np.ndarray:
    """For voxels given by flat indices into ``mask``'s shape: does any neighbour at ``offsets`` (inside
    the volume) lie in ``mask``? Costs O(len(flat_idx) x len(offsets)), not O(volume)."""
    zyx = np.unravel_index(flat_idx, mask.shape)
    hit = np.zeros(len(flat_idx), dtype=bool)
    for off in offsets:
        nb = [c + o for c, o in zip(zyx, off)]
        ok = np.ones(len(flat_idx), dtype=bool)
        for c, n in zip(nb, mask.shape):
            ok &= (c >= 0) & (c < n)
        sel = np.flatnonzero(ok & ~hit)
        if sel.size:
            hit[sel] = mask[nb[0][sel], nb[1][sel], nb[2][sel]]
    return hit


def postprocess(labels: np.ndarray, spacing_zyx: Sequence[float],
                options: Optional[PostprocessOptions] = None) -> tuple[np.ndarray, dict]:
    """Apply the rules above; returns (new uint8 label map, record for provenance). Input is not modified."""
    opts = options or PostprocessOptions()
    out = np.array(labels, dtype=np.uint8, copy=True, order="C")
    vox_ml = float(np.prod(spacing_zyx)) / 1000.0
    record: dict = {"options": opts.to_dict(), "rules": __doc__.split("Rules, in this order")[1].strip()
                    if __doc__ else "", "changes": {}}
    changes = record["changes"]

    # 1. largest liver ------------------------------------------------------------------------
    parenchyma = out == Label.PARENCHYMA
    if opts.keep_largest_liver and parenchyma.any():
        whole = _any_of(out, (Label.PARENCHYMA, Label.PORTAL_VEIN, Label.HEPATIC_VEINS, Label.CRLM,
                              Label.VESSEL_UNASSIGNED))
        cc, n = _components(whole)
        if n > 1:
            # the component holding the most parenchyma is the liver
            counts = np.bincount(cc[parenchyma].ravel(), minlength=n + 1)
            counts[0] = 0
            drop = parenchyma & (cc != int(np.argmax(counts)))
            changes["liver_fragments_removed_ml"] = round(float(drop.sum()) * vox_ml, 3)
            out[drop] = 0
            parenchyma &= ~drop

    # 2. lesions inside the liver ---------------------------------------------------------------
    lesions = out == Label.CRLM
    if opts.lesions_within_liver and lesions.any():
        if not parenchyma.any():
            changes["lesions_removed"] = "none (no liver segmented, lesions kept as predicted)"
        else:
            drop, n_drop = _components_away_from(parenchyma, lesions, spacing_zyx, opts.lesion_margin_mm)
            out[drop] = 0
            lesions &= ~drop
            changes["lesions_removed"] = int(n_drop)
            changes["lesions_removed_ml"] = round(float(drop.sum()) * vox_ml, 3)

    # 3. lesions too small to be one --------------------------------------------------------------
    if opts.remove_tiny_lesions and lesions.any():
        min_mm3 = np.pi / 6.0 * opts.min_lesion_diameter_mm ** 3
        comps = _Components(lesions)
        n_small = comps.small_to_parenchyma(out, parenchyma, int(np.ceil(min_mm3 / (vox_ml * 1000.0))))
        if n_small:
            changes["tiny_lesions_removed"] = n_small

    # 4. vessel fragments: small ones, and pieces away from the liver ----------------------------
    for lab in (Label.PORTAL_VEIN, Label.HEPATIC_VEINS, Label.IVC):
        if not (opts.remove_small_vessel_fragments or opts.remove_vessels_away_from_liver):
            break
        m = out == lab
        if not m.any():
            continue
        name = Label(lab).name.lower()
        comps = _Components(m)
        if opts.remove_small_vessel_fragments:
            # inside the liver = a parenchyma voxel (before this step moved any) among the 6 neighbours; the
            # IVC is not liver, so its specks always become background
            n_small = comps.small_to_parenchyma(out, parenchyma if lab != Label.IVC else None,
                                                max(1, int(round(opts.min_vessel_ml / vox_ml))))
            if n_small:
                changes[f"{name}_fragments_removed"] = n_small
        if opts.remove_vessels_away_from_liver and parenchyma.any():
            others = comps.mask_of(comps.alive & (np.arange(comps.n + 1) != comps.largest()))
            if others is not None:
                drop, n_drop = _components_away_from(parenchyma, others, spacing_zyx, opts.vessel_margin_mm)
                if n_drop:
                    out[drop] = 0
                    changes[f"{name}_pieces_away_from_liver_removed"] = int(n_drop)
                    changes[f"{name}_pieces_away_from_liver_removed_ml"] = round(float(drop.sum()) * vox_ml, 3)
    return out, record


class _Components:
    """The 26-connected components of a sparse mask, looked up at its voxels only (flat indices), so
    that the rules above cost O(structure voxels) after the labelling, not O(volume) per step."""

    def __init__(self, mask: np.ndarray):
        self.shape = mask.shape
        self.idx = np.flatnonzero(mask)
        cc, self.n = _components(mask)
        self.comp = cc.reshape(-1)[self.idx]
        self.sizes = np.bincount(self.comp, minlength=self.n + 1)
        self.alive = np.ones(self.n + 1, dtype=bool)     # components not yet removed
        self.alive[0] = False

    def largest(self) -> int:
        return int(np.argmax(np.where(self.alive, self.sizes, -1)))

    def mask_of(self, which: np.ndarray) -> Optional[np.ndarray]:
        """Boolean volume of the components flagged in ``which`` (n + 1 flags); None when there are none."""
        if not which.any():
            return None
        m = np.zeros(self.shape, dtype=bool)
        m.reshape(-1)[self.idx[which[self.comp]]] = True
        return m

    def small_to_parenchyma(self, out: np.ndarray, parenchyma: Optional[np.ndarray], min_vox: int) -> int:
        """In place: the components with fewer than ``min_vox`` voxels become parenchyma, whole, when a
        voxel of ``parenchyma`` is among their voxels' 6 neighbours (no hole is left in the liver), else
        background (always background when ``parenchyma`` is None). ``out`` must be C-contiguous.
        Returns how many components."""
        small = self.alive & (self.sizes < min_vox)
        if not small.any():
            return 0
        sel = small[self.comp]
        where, comp = self.idx[sel], self.comp[sel]
        inside = np.zeros(self.n + 1, dtype=bool)        # per component: does it touch the parenchyma?
        if parenchyma is not None:
            inside[comp[_neighbour_of(parenchyma, where, _OFFSETS_6)]] = True
        flat = out.reshape(-1)                           # a view: ``out`` is C-contiguous
        flat[where] = np.where(inside[comp], np.uint8(Label.PARENCHYMA), np.uint8(0))
        self.alive &= ~small
        return int(small.sum())
