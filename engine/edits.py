"""Hand corrections of a label map and their undo history (no Qt).

All operations work in place on a uint8 label map in canonical (z, y, x) order (see engine.labels) and
return a :class:`Region` — the bounding box they touched plus that box's values *before* the change —
or None when nothing changed. :class:`EditHistory` turns regions into undo steps that keep only the
changed bounding box (old and new values), bounded by bytes, not by count (docs/architecture.md, "The session": steps carry a kind and a record).

One user gesture is one step: a brush drag collects its dabs in a :class:`Stroke` and is committed once.

Sizes are in millimetres and converted to voxels with the (z, y, x) spacing of the case's geometry, so a
5 mm brush is round on an anisotropic grid. "Paint only over" rules decide which voxels a tool may change:
``"all"`` (any voxel), ``"background"`` (only label 0, plus voxels that already hold the painted value),
``"liver"`` (only voxels of the total-liver labels, engine.labels.TOTAL_LIVER_LABELS). An optional HU
range further limits painting to CT values inside ``[lo, hi]`` (e.g. paint vessels only where contrast is).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from .labels import TOTAL_LIVER_LABELS

log = logging.getLogger(__name__)

#: (z0, z1, y0, y1, x0, x1), half-open voxel index ranges.
Box = tuple[int, int, int, int, int, int]

PAINT_RULES = ("all", "background", "liver")
#: Kinds of undo step. A "replacing" step brings a whole new label map (a model's result, a file, an
#: autosave restored); the others edit the labels they are made on.
STEP_KINDS = ("segmentation", "labels_opened", "restore", "brush", "erase", "fill", "delete_component",
              "keep_largest", "fill_holes", "edit", "vessel_trace", "lesion_click")
# the semi-automatic tools of engine.review (issue 18, part A)
STEP_KINDS += ("grow_from_seeds", "scissors", "split", "interpolate", "margin")
REPLACING_KINDS = frozenset({"segmentation", "labels_opened", "restore"})
DEFAULT_HISTORY_BYTES = 512 * 1024 * 1024


def _slices(box: Box) -> tuple[slice, slice, slice]:
    return (slice(box[0], box[1]), slice(box[2], box[3]), slice(box[4], box[5]))


def box_union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]),
            min(a[4], b[4]), max(a[5], b[5]))


def box_of_mask(mask: np.ndarray, offset: Sequence[int] = (0, 0, 0)) -> Optional[Box]:
    """Tight bounding box of the True voxels of a (z, y, x) mask (shifted by ``offset``), or None."""
    if not mask.any():
        return None
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        nz = np.flatnonzero(mask.any(axis=other))
        out += [int(nz[0]) + offset[ax], int(nz[-1]) + 1 + offset[ax]]
    return tuple(out)  # type: ignore[return-value]


@dataclass
class Region:
    """What an operation changed: ``box`` and the values that were there before (a copy)."""

    box: Box
    before: np.ndarray


@dataclass
class Edit:
    """One undo step: the changed box with its values before and after."""

    description: str
    box: Box
    before: np.ndarray
    after: np.ndarray
    labels_touched: frozenset[int] = field(default_factory=frozenset)
    id: int = 0   # identity of the label-map state this step produces (saved/modified tracking)
    voxel_delta: dict[int, int] = field(default_factory=dict)  # label -> voxels gained by this step
    #: What the step is (one of :data:`STEP_KINDS`): decided by the code that made it, never read back
    #: from ``description`` (which is words for a person).
    kind: str = "edit"
    #: What the labels are after this step (origin, model card, notes...); undo/redo bring back the
    #: record of the state they return to (see EditHistory.current_meta).
    meta: dict = field(default_factory=dict)

    def delta(self, undo: bool = False) -> dict[int, int]:
        """Voxels gained per label when this step is applied (or lost, ``undo``): lets a viewer update
        volumes at once while the full measurement runs in the background."""
        return {k: (-v if undo else v) for k, v in self.voxel_delta.items()}

    @property
    def nbytes(self) -> int:
        return int(self.before.nbytes + self.after.nbytes)


# ---------------------------------------------------------------------------------------------
# Masks of what a tool may change
def _allowed(current: np.ndarray, value: int, rule: str, image: Optional[np.ndarray],
             hu_range: Optional[tuple[float, float]]) -> np.ndarray:
    if rule not in PAINT_RULES:
        raise ValueError(f"unknown paint rule {rule!r}; expected one of {PAINT_RULES}")
    if rule == "all":
        ok = np.ones(current.shape, dtype=bool)
    elif rule == "background":
        ok = (current == 0) | (current == value)
    else:
        ok = np.isin(current, TOTAL_LIVER_LABELS)
    if hu_range is not None and image is not None:
        lo, hi = hu_range
        ok &= (image >= lo) & (image <= hi)
    return ok


def brush_footprint(center_zyx: Sequence[float], radius_mm: float, spacing: Sequence[float],
                    shape: Sequence[int], sphere: bool = True, plane_axis: int = 0
                    ) -> tuple[Optional[Box], Optional[np.ndarray]]:
    """Voxels within ``radius_mm`` of a voxel centre (index space, (z, y, x)); clipped to the volume.

    ``sphere=False`` gives a disc in the plane normal to ``plane_axis`` (0 axial, 1 coronal, 2 sagittal),
    one voxel thick. Returns (box, boolean mask of the box) or (None, None) when outside the volume.
    A brush smaller than a voxel still paints the voxel under the cursor.
    """
    c = [int(round(v)) for v in center_zyx]
    r = max(float(radius_mm), 0.0)
    lo, hi = [], []
    for ax in range(3):
        if not sphere and ax == plane_axis:
            n = 0
        else:
            n = int(np.floor(r / float(spacing[ax])))
        lo.append(max(c[ax] - n, 0))
        hi.append(min(c[ax] + n + 1, int(shape[ax])))
    if any(h <= l for l, h in zip(lo, hi)):
        return None, None
    grids = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    d2 = sum(((g - c[ax]) * float(spacing[ax])) ** 2 for ax, g in enumerate(grids))
    mask = d2 <= r * r + 1e-6
    box = (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
    return box, np.broadcast_to(mask, tuple(h - l for l, h in zip(lo, hi)))


def stroke_points(a_zyx: Sequence[float], b_zyx: Sequence[float], spacing: Sequence[float],
                  radius_mm: float) -> list[tuple[int, int, int]]:
    """Dab centres from voxel ``a`` (exclusive) to ``b`` (inclusive), at most half a radius apart.

    A fast mouse drag reports points far apart; dabbing only there would leave gaps in the stroke.
    """
    a = np.asarray(a_zyx, float)
    b = np.asarray(b_zyx, float)
    dist_mm = float(np.linalg.norm((b - a) * np.asarray(spacing, float)))
    step = max(float(radius_mm) / 2.0, float(min(spacing)))
    n = max(int(np.ceil(dist_mm / step)), 1)
    pts = []
    for t in np.linspace(0.0, 1.0, n + 1)[1:]:
        p = tuple(int(round(v)) for v in a + (b - a) * t)
        if not pts or pts[-1] != p:
            pts.append(p)
    return pts


def brush(labels: np.ndarray, center_zyx: Sequence[float], radius_mm: float, spacing: Sequence[float],
          value: int, *, erase: bool = False, sphere: bool = True, plane_axis: int = 0,
          rule: str = "all", image: Optional[np.ndarray] = None,
          hu_range: Optional[tuple[float, float]] = None) -> Optional[Region]:
    """Paint ``value`` (or, with ``erase``, clear ``value`` to background) in a disc/sphere.

    ``spacing`` is (z, y, x) mm. The eraser only removes the active structure ``value`` (value 0 erases
    every structure). Returns the Region changed, or None.
    """
    box, mask = brush_footprint(center_zyx, radius_mm, spacing, labels.shape, sphere, plane_axis)
    if box is None:
        return None
    sl = _slices(box)
    cur = labels[sl]
    img = image[sl] if image is not None else None
    if erase:
        target = (cur != 0) if value == 0 else (cur == value)
        if hu_range is not None and img is not None:
            target &= (img >= hu_range[0]) & (img <= hu_range[1])
        write = mask & target
        new_value = 0
    else:
        write = mask & _allowed(cur, value, rule, img, hu_range) & (cur != value)
        new_value = value
    if not write.any():
        return None
    before = cur.copy()
    cur[write] = new_value
    return Region(box, before)


def flood_fill_slice(labels: np.ndarray, seed_zyx: Sequence[int], plane_axis: int, value: int, *,
                     rule: str = "all", image: Optional[np.ndarray] = None,
                     hu_range: Optional[tuple[float, float]] = None) -> Optional[Region]:
    """Fill with ``value`` the 4-connected area of the seed's label in one slice.

    The slice is the plane through the seed normal to ``plane_axis`` (0 axial, 1 coronal, 2 sagittal).
    The area may further be limited by the paint rule and HU range. Returns the Region, or None.
    """
    seed = [int(v) for v in seed_zyx]
    if any(s < 0 or s >= n for s, n in zip(seed, labels.shape)):
        return None
    sl = [slice(None)] * 3
    sl[plane_axis] = slice(seed[plane_axis], seed[plane_axis] + 1)
    sl = tuple(sl)
    cur = labels[sl]
    img = image[sl] if image is not None else None
    seed_label = int(labels[tuple(seed)])
    if seed_label == value:
        return None
    region = (cur == seed_label) & _allowed(cur, value, rule, img, hu_range)
    local = [s for ax, s in enumerate(seed) if ax != plane_axis]
    plane = np.squeeze(region, axis=plane_axis)
    if not plane[tuple(local)]:
        return None
    comp, _ = ndimage.label(plane)  # 4-connectivity in the plane
    fill = np.expand_dims(comp == comp[tuple(local)], plane_axis)
    box = box_of_mask(fill, [s.start or 0 for s in sl])
    assert box is not None
    inner = _slices(box)
    sub_fill = fill[tuple(slice(b.start - (s.start or 0), b.stop - (s.start or 0)) for b, s in zip(inner, sl))]
    before = labels[inner].copy()
    labels[inner][sub_fill] = value
    return Region(box, before)


def _component_at(labels: np.ndarray, seed: Sequence[int], connectivity: int = 26, start_half: int = 24
                  ) -> tuple[int, Optional[np.ndarray], Optional[Box]]:
    """The seed's label and its connected component (mask over the component's box, and that box).

    Local: the component is labelled in a crop around the seed (``start_half`` voxels each way), and the
    crop grows (doubling on each side the component reaches) until the component touches no face of the
    crop other than the volume's own border. A path out of the crop must cross a face, so the component
    found then is the whole component; the cost follows the component's size, not the volume's
    (a false lesion in a 512 x 512 x 300 map: milliseconds instead of a whole-volume labelling).
    """
    import cc3d

    v = int(labels[tuple(seed)])
    if v == 0:
        return 0, None, None
    shape = labels.shape
    lo = [max(int(s) - start_half, 0) for s in seed]
    hi = [min(int(s) + start_half + 1, n) for s, n in zip(seed, shape)]
    while True:
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        cc = cc3d.connected_components(labels[sl] == v, connectivity=connectivity)
        mask = cc == cc[tuple(int(s) - a for s, a in zip(seed, lo))]
        grown = False
        for ax in range(3):
            size = hi[ax] - lo[ax]
            if lo[ax] > 0 and mask.take(0, axis=ax).any():
                lo[ax] = max(lo[ax] - size, 0)
                grown = True
            if hi[ax] < shape[ax] and mask.take(-1, axis=ax).any():
                hi[ax] = min(hi[ax] + size, shape[ax])
                grown = True
        if not grown:
            break
    box = box_of_mask(mask, offset=lo)
    inner = tuple(slice(box[2 * a] - lo[a], box[2 * a + 1] - lo[a]) for a in range(3))
    return v, mask[inner], box


def delete_component(labels: np.ndarray, seed_zyx: Sequence[int], replace_with: Optional[int] = None,
                     connectivity: int = 26) -> Optional[Region]:
    """Remove the connected component under the seed (e.g. a false lesion).

    ``replace_with=None`` fills it with the label that surrounds it most (so a false lesion inside the
    liver becomes parenchyma again, one in fat becomes background). Connectivity 26, as for lesions.
    """
    seed = [int(v) for v in seed_zyx]
    if any(s < 0 or s >= n for s, n in zip(seed, labels.shape)):
        return None
    v, mask, box = _component_at(labels, seed, connectivity)
    if mask is None or box is None:
        return None
    if replace_with is None:
        # One voxel of margin around the component's box to look at what surrounds it.
        grown = tuple(max(box[2 * a] - 1, 0) for a in range(3)), tuple(
            min(box[2 * a + 1] + 1, labels.shape[a]) for a in range(3))
        gbox: Box = (grown[0][0], grown[1][0], grown[0][1], grown[1][1], grown[0][2], grown[1][2])
        gsl = _slices(gbox)
        gmask = np.zeros(labels[gsl].shape, dtype=bool)
        off = [box[2 * a] - gbox[2 * a] for a in range(3)]
        gmask[off[0]:off[0] + mask.shape[0], off[1]:off[1] + mask.shape[1], off[2]:off[2] + mask.shape[2]] = mask
        # A 3 x 3 x 3 maximum filter is the 26-neighbour dilation, done as three 1D passes (several
        # times faster than binary_dilation with a full cube on a liver-sized box).
        shell = ndimage.maximum_filter(gmask.view(np.uint8), size=3, mode="constant").view(bool) & ~gmask
        around = labels[gsl][shell]
        around = around[around != v]
        replace_with = int(np.bincount(around, minlength=256).argmax()) if around.size else 0
    sl = _slices(box)
    before = labels[sl].copy()
    labels[sl][mask] = replace_with
    return Region(box, before)


def keep_largest_component(labels: np.ndarray, value: int, connectivity: int = 26) -> Optional[Region]:
    """Keep only the largest connected component of ``value``; the other pieces become background."""
    import cc3d

    m = labels == value
    box = box_of_mask(m)
    if box is None:
        return None
    sl = _slices(box)
    cc, n = cc3d.connected_components(m[sl], connectivity=connectivity, return_N=True)
    if n <= 1:
        return None
    counts = np.bincount(cc.ravel())
    counts[0] = 0
    drop = (cc != 0) & (cc != int(counts.argmax()))
    before = labels[sl].copy()
    labels[sl][drop] = 0
    return Region(box, before)


def fill_holes(labels: np.ndarray, value: int) -> Optional[Region]:
    """Fill enclosed background holes of ``value`` (in 3D, and slice by slice in the axial plane).

    Only background voxels change: vessels and lesions enclosed by the liver keep their labels.
    """
    m = labels == value
    box = box_of_mask(m)
    if box is None:
        return None
    sl = _slices(box)
    sub = m[sl]
    filled = ndimage.binary_fill_holes(sub)
    # A hole open at the top or bottom of the structure is still a hole in each axial slice.
    for z in range(sub.shape[0]):
        filled[z] |= ndimage.binary_fill_holes(sub[z])
    cur = labels[sl]
    write = filled & ~sub & (cur == 0)
    if not write.any():
        return None
    before = cur.copy()
    cur[write] = value
    return Region(box, before)


def replace_all(labels: np.ndarray, new_labels: np.ndarray) -> Optional[Region]:
    """Replace the label map by ``new_labels`` (same shape), e.g. a segmentation result."""
    if new_labels.shape != labels.shape:
        raise ValueError(f"label map shape {new_labels.shape} != {labels.shape}")
    box = box_of_mask(labels != new_labels)
    if box is None:
        return None
    sl = _slices(box)
    before = labels[sl].copy()
    labels[sl] = new_labels[sl]
    return Region(box, before)


# ---------------------------------------------------------------------------------------------
class Stroke:
    """Collects the dabs of one brush drag so the whole drag becomes one undo step."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.box: Optional[Box] = None
        self.before: Optional[np.ndarray] = None

    def add(self, region: Optional[Region]) -> None:
        if region is None:
            return
        if self.box is None:
            self.box, self.before = region.box, region.before
            return
        union = box_union(self.box, region.box)
        if union != self.box:
            # Grow the saved "before" block: outside the old box the current values are still original,
            # except where this dab just painted, which ``region.before`` restores below.
            grown = self.labels[_slices(union)].copy()
            _paste(grown, union, region.box, region.before)
            _paste(grown, union, self.box, self.before)
            self.box, self.before = union, grown
        # Inside the old box ``self.before`` already holds the original values of every voxel.

    def region(self) -> Optional[Region]:
        return None if self.box is None else Region(self.box, self.before)


def _paste(dst: np.ndarray, dst_box: Box, src_box: Box, src: np.ndarray) -> None:
    sl = tuple(slice(src_box[2 * a] - dst_box[2 * a], src_box[2 * a + 1] - dst_box[2 * a]) for a in range(3))
    dst[sl] = src


class EditHistory:
    """Undo/redo of label-map edits, bounded by bytes; a new edit clears redo.

    ``version`` increases with every change (edit, undo, redo); ``is_modified`` compares it with the
    version last marked saved.
    """

    def __init__(self, labels: np.ndarray, max_bytes: int = DEFAULT_HISTORY_BYTES) -> None:
        self.labels = labels
        self.max_bytes = int(max_bytes)
        self._undo: list[Edit] = []
        self._redo: list[Edit] = []
        self.version = 0          # bumps on every change of the label map (for caches and views)
        self._base_id = 0         # state id with an empty undo stack
        self._saved_id = 0
        self._next_id = 1
        self.base_meta: dict = {}  # the record of the state with an empty undo stack

    # --- state --------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def undo_description(self) -> Optional[str]:
        return self._undo[-1].description if self._undo else None

    @property
    def redo_description(self) -> Optional[str]:
        return self._redo[-1].description if self._redo else None

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._undo) + sum(e.nbytes for e in self._redo)

    @property
    def current_meta(self) -> dict:
        """The record (kind-specific metadata) of the labels shown: the last applied step's, else the
        base state's."""
        return self._undo[-1].meta if self._undo else self.base_meta

    @property
    def undo_count(self) -> int:
        """Steps that Undo can take back."""
        return len(self._undo)

    @property
    def applied_steps(self) -> tuple[Edit, ...]:
        """The steps that made the labels shown, oldest first (what Undo can take back)."""
        return tuple(self._undo)

    @property
    def undo_step(self) -> Optional[Edit]:
        return self._undo[-1] if self._undo else None

    @property
    def redo_step(self) -> Optional[Edit]:
        return self._redo[-1] if self._redo else None

    @property
    def state_id(self) -> int:
        """Identity of the current label-map state: undoing back to the saved state is "not modified"."""
        return self._undo[-1].id if self._undo else self._base_id

    def mark_saved(self) -> None:
        self._saved_id = self.state_id

    def drop_redo(self) -> None:
        """Another history made a step (the case's planning, engine.case_session): what could be redone
        here goes, so that Ctrl+Z and Ctrl+Y follow one line of steps."""
        self._redo.clear()

    def mark_modified(self) -> None:
        """Force "modified" (e.g. labels restored from an autosave that was never written to a file)."""
        self._saved_id = -1

    @property
    def is_modified(self) -> bool:
        return self.state_id != self._saved_id

    def reset(self, labels: np.ndarray, base_meta: Optional[dict] = None) -> None:
        """Start over on a new label map (a newly opened case): no history, not modified."""
        self.labels = labels
        self._undo.clear()
        self._redo.clear()
        self._base_id = self._saved_id = 0
        self.base_meta = dict(base_meta or {})
        self.version += 1

    # --- recording ----------------------------------------------------------------------------
    def commit(self, description: str, region: Optional[Region], kind: str = "edit",
               meta: Optional[dict] = None) -> Optional[Edit]:
        """Record an operation already applied to ``labels`` as one undo step (None if nothing changed).

        ``kind`` (one of :data:`STEP_KINDS`) and ``meta`` (what the labels are after the step) travel
        with the step through undo and redo."""
        if kind not in STEP_KINDS:
            raise ValueError(f"unknown step kind {kind!r}; expected one of {STEP_KINDS}")
        if region is None:
            return None
        sl = _slices(region.box)
        after = self.labels[sl]
        changed = after != region.before
        tight = box_of_mask(changed)
        if tight is None:
            return None
        inner = tuple(slice(tight[2 * a], tight[2 * a + 1]) for a in range(3))
        box: Box = tuple(region.box[2 * (a // 2)] + tight[a] for a in range(6))  # type: ignore[assignment]
        # Explicit copies: a one-row box is a contiguous *view* of the label map, so ascontiguousarray
        # would alias the live labels and redo would restore nothing.
        before = np.array(region.before[inner], copy=True, order="C")
        after = np.array(after[inner], copy=True, order="C")
        mask = changed[inner]
        gained = np.bincount(after[mask], minlength=256) - np.bincount(before[mask], minlength=256)
        delta = {int(v): int(gained[v]) for v in np.flatnonzero(gained)}
        touched = frozenset(int(v) for v in np.union1d(np.unique(before[mask]), np.unique(after[mask])))
        edit = Edit(description, box, before, after, touched, id=self._next_id, voxel_delta=delta, kind=kind,
                    meta=dict(meta or {}))
        self._next_id += 1
        self._undo.append(edit)
        self._redo.clear()
        self.version += 1
        self._trim()
        return edit

    def apply(self, description: str, op, *args, **kwargs) -> Optional[Edit]:
        """Run ``op(labels, *args, **kwargs) -> Region|None`` and record it as one step (kind "edit")."""
        return self.commit(description, op(self.labels, *args, **kwargs))

    def _trim(self) -> None:
        # Oldest steps go first; the newest step is always kept, however large.
        while len(self._undo) > 1 and self.nbytes > self.max_bytes:
            dropped = self._undo.pop(0)
            self._base_id = dropped.id
            self.base_meta = dropped.meta
            log.info("undo history full: dropped the oldest step %r", dropped.description)

    # --- undo/redo ----------------------------------------------------------------------------
    def undo(self) -> Optional[Edit]:
        if not self._undo:
            return None
        e = self._undo.pop()
        self.labels[_slices(e.box)] = e.before
        self._redo.append(e)
        self.version += 1
        return e

    def redo(self) -> Optional[Edit]:
        if not self._redo:
            return None
        e = self._redo.pop()
        self.labels[_slices(e.box)] = e.after
        self._undo.append(e)
        self.version += 1
        return e
