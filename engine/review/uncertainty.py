"""The model's doubt, per voxel: a uint8 uncertainty map kept with a segmentation run (README "Errors and
uncertainty").

What is stored: u = 1 - max softmax probability of the model's output, in [0, 1 - 1/C] for C classes,
scaled to uint8 as round(255 * u) (0: the model was sure; 128: its best class had probability 0.5). It is
computed in engine.inference.resample from the same interpolated logits whose argmax gives the labels, slab by
slab, so it costs 1 byte per voxel on the label grid (78.6 MB for 512 x 512 x 300) and no float volume.
Slices that no non-background prediction reaches (the resampler skips them, they are background) hold 0.
Only a run of one model has it: a model set's combined labels come from several models' outputs, and have
none ("no uncertainty for this run").

An edit changes the labels but not what the model said: the map then no longer describes the labels shown
in the edited boxes. :class:`UncertaintyState` keeps the boxes edited since the run and hides the map there
(and says so); undoing back to the run's own labels shows it whole again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

#: Key of the map in SegmentationResult.extra_maps and CaseSession.extra_maps.
UNCERTAINTY_KEY = "uncertainty"
#: One uint8 step of u.
SCALE = 255.0
#: Voxels whose u is at least this (uint8) belong to "uncertain regions": the model's best class had
#: probability <= 0.6.
UNCERTAIN_LEVEL = int(round(0.4 * SCALE))
#: Bytes per voxel of the map.
BYTES_PER_VOXEL = 1

Box = tuple[int, int, int, int, int, int]


def max_prob_to_uint8(max_prob) -> np.ndarray:
    """uint8 map round(255 * (1 - max_prob)) of a max-probability array (any float array in [0, 1])."""
    u = 1.0 - np.asarray(max_prob, dtype=np.float32)
    return np.clip(np.rint(u * SCALE), 0, 255).astype(np.uint8)


def without_uncertainty(provenance: dict) -> dict:
    """A segmentation run's provenance without what says whether an uncertainty map was kept beside the labels
    (the option, its extra_maps entry, the "no uncertainty" note): what made the labels, for comparing two runs
    (the window keeps the map, the CLI only with --uncertainty)."""
    out = dict(provenance)
    if isinstance(out.get("options"), dict):
        out["options"] = {k: v for k, v in out["options"].items() if k != "uncertainty"}
    if isinstance(out.get("extra_maps"), dict):
        rest = {k: v for k, v in out["extra_maps"].items() if k != UNCERTAINTY_KEY}
        if rest:
            out["extra_maps"] = rest
        else:
            del out["extra_maps"]
    out.pop("uncertainty", None)
    return out


def memory_bytes(shape: Sequence[int]) -> int:
    return int(np.prod([int(s) for s in shape])) * BYTES_PER_VOXEL


def lesion_confidence(unc: np.ndarray, mask_box, mask: np.ndarray) -> float:
    """Mean max-probability (1 - u) over a lesion: ``mask`` (bool) is the lesion inside ``mask_box`` (slices)."""
    vals = unc[mask_box][mask]
    if vals.size == 0:
        return float("nan")
    return float(1.0 - vals.astype(np.float64).mean() / SCALE)


@dataclass(frozen=True)
class UncertainRegion:
    voxels: int
    box: Box
    center: tuple[int, int, int]
    mean_max_prob: float


def uncertain_regions(unc: np.ndarray, level: int = UNCERTAIN_LEVEL, hidden: Sequence[Box] = (),
                      limit: int = 200) -> list[UncertainRegion]:
    """26-connected regions of voxels with u >= ``level`` outside the ``hidden`` boxes, largest first (at most
    ``limit``)."""
    import cc3d

    from metrics import _grid

    mask = unc >= level
    for b in hidden:
        mask[b[0]:b[1], b[2]:b[3], b[4]:b[5]] = False
    box = _grid.bbox(mask)
    if box is None:
        return []
    sub = mask[box]
    comp = cc3d.connected_components(sub, connectivity=26, out_dtype=np.uint32)
    stats = cc3d.statistics(comp)
    counts = np.asarray(stats["voxel_counts"])
    order = [int(i) for i in np.argsort(-counts[1:], kind="stable")[:limit] + 1]
    off = np.array([s.start for s in box])
    out = []
    vals = unc[box]
    for j in order:
        sl = stats["bounding_boxes"][j]
        local = comp[sl] == j
        idx = np.argwhere(local)
        c = idx.mean(axis=0)
        nearest = idx[int(np.argmin(((idx - c) ** 2).sum(axis=1)))] + np.array([s.start for s in sl]) + off
        b = tuple(int(v) for a in range(3) for v in (sl[a].start + off[a], sl[a].stop + off[a]))
        mp = float(1.0 - vals[sl][local].astype(np.float64).mean() / SCALE)
        out.append(UncertainRegion(int(counts[j]), b, tuple(int(v) for v in nearest), mp))
    return out


@dataclass
class UncertaintyState:
    """The uncertainty map of the run whose labels are shown, and the boxes edited since that run."""

    map: np.ndarray
    run_state: int                       # history.state_id right after the run's step
    edited: list = field(default_factory=list)
    _regions: Optional[tuple] = field(default=None, repr=False)   # (edited boxes, regions) last computed

    @property
    def nbytes(self) -> int:
        return int(self.map.nbytes)

    def labels_changed(self, box: Optional[Box], state_id: int) -> None:
        """A step, undo or redo changed ``box`` (None: everywhere); back at the run's state, nothing is edited."""
        self._regions = None
        if state_id == self.run_state:
            self.edited = []
            return
        shape = self.map.shape
        b = (0, shape[0], 0, shape[1], 0, shape[2]) if box is None else tuple(int(v) for v in box)
        self.edited.append(b)
        if len(self.edited) > 64:          # many small edits: one box around them all
            bs = np.array(self.edited)
            self.edited = [(int(bs[:, 0].min()), int(bs[:, 1].max()), int(bs[:, 2].min()), int(bs[:, 3].max()),
                            int(bs[:, 4].min()), int(bs[:, 5].max()))]

    @property
    def fully_edited(self) -> bool:
        shape = self.map.shape
        return any(b == (0, shape[0], 0, shape[1], 0, shape[2]) for b in self.edited)

    def plane(self, axis: int, index: int) -> np.ndarray:
        """One slice of the map for display, edited boxes set to 0 (hidden)."""
        sl = [slice(None)] * 3
        sl[axis] = int(index)
        p = self.map[tuple(sl)]
        hits = [b for b in self.edited if b[2 * axis] <= index < b[2 * axis + 1]]
        if not hits:
            return p
        p = p.copy()
        other = [a for a in range(3) if a != axis]
        for b in hits:
            p[b[2 * other[0]]:b[2 * other[0] + 1], b[2 * other[1]]:b[2 * other[1] + 1]] = 0
        return p

    def touches_edit(self, box: Box) -> bool:
        return any(all(b[2 * a] < box[2 * a + 1] and box[2 * a] < b[2 * a + 1] for a in range(3)) for b in self.edited)

    def regions(self, level: int = UNCERTAIN_LEVEL) -> list[UncertainRegion]:
        """The uncertain regions outside the edited boxes, largest first (cached until the next edit)."""
        cached = self.cached_regions()
        if cached is None:
            cached = uncertain_regions(self.map, level, self.edited)
            self.set_regions(list(self.edited), cached)
        return cached

    def regions_job(self, level: int = UNCERTAIN_LEVEL):
        """(fn, args) computing the regions on a worker; give (args[2], result) to :meth:`set_regions`."""
        return uncertain_regions, (self.map, level, list(self.edited))

    def cached_regions(self) -> Optional[list]:
        return self._regions[1] if self._regions is not None and self._regions[0] == self.edited else None

    def set_regions(self, edited: list, regions: list) -> None:
        """Regions computed for the edited boxes ``edited`` (ignored if the labels were edited since)."""
        if list(edited) == self.edited:
            self._regions = (list(edited), regions)


__all__ = ["UNCERTAINTY_KEY", "UNCERTAIN_LEVEL", "BYTES_PER_VOXEL", "UncertaintyState", "UncertainRegion",
           "lesion_confidence", "max_prob_to_uint8", "memory_bytes", "uncertain_regions"]
