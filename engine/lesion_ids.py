"""Lesion numbers that survive edits: the one place where the open case's lesions get their numbers.

A lesion is a 26-connected component of label 5 (engine.labels). A freshly measured label map is numbered
the classic way: 1..n by decreasing volume, ties by position (engine.measure). After that,
:class:`LesionNumbering` carries the numbers from one measurement of the labels to the next, by the voxels
each lesion is made of, so notes taken against "lesion 3" stay right:

- a lesion that keeps (some of) its voxels keeps its number; a lesion drawn anew gets the next number
  never given before in this case (a deleted lesion's number is not reused);
- a split keeps the number on the bigger part; the smaller part gets the next new number;
- a merge of two or more lesions keeps the lowest of their numbers (the others are retired);
- undo and redo bring a lesion back with its old number: retired lesions are remembered with their voxels,
  and a lesion that reappears with (almost) the same voxels (:data:`RESTORE_IOU`) takes its number back.

The numbers are not saved in the label file (a label map holds label values, not lesion numbers): a label
map opened again is numbered the classic way (by size). No Qt, no threads: the measurement job calls
:meth:`LesionNumbering.assign` on the worker that measures (one at a time, engine.derived).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

#: A retired lesion's number comes back for a lesion whose voxels overlap its old voxels at least this
#: much (intersection over union): undo and redo restore the voxels exactly (1.0).
RESTORE_IOU = 0.9
#: Retired lesions remembered (the oldest are forgotten first; their numbers are still never reused).
MAX_RETIRED = 256


def _key(flat: np.ndarray) -> bytes:
    return np.ascontiguousarray(flat, dtype=np.int64).tobytes()


def _overlap(a: np.ndarray, b: np.ndarray) -> int:
    """Voxels two sorted flat-index arrays share."""
    if a.size == 0 or b.size == 0 or a[-1] < b[0] or b[-1] < a[0]:
        return 0
    if a.size > b.size:
        a, b = b, a
    pos = np.searchsorted(b, a)
    pos[pos == b.size] = b.size - 1
    return int(np.count_nonzero(b[pos] == a))


class LesionNumbering:
    """Stable lesion numbers of one case (see the module's docstring for the rules).

    ``assign(components)`` takes the lesions of the labels shown as sorted flat voxel indices (of the
    case's grid), largest first, and returns their numbers in the same order.
    """

    def __init__(self) -> None:
        self.live: dict[int, np.ndarray] = {}        # number -> sorted flat voxel indices
        self.retired: dict[int, np.ndarray] = {}     # numbers no longer shown, with their last voxels
        self.next_id = 1                             # the next number never given in this case
        self._by_key: dict[bytes, int] = {}

    def reset(self) -> None:
        self.__init__()

    def assign(self, components: Sequence[np.ndarray]) -> list[int]:
        comps = [np.asarray(c, np.int64) for c in components]
        n = len(comps)
        ids: list[Optional[int]] = [None] * n
        if not self.live and not self.retired and self.next_id == 1:
            ids = list(range(1, n + 1))             # the first numbering: classic (the caller's size order)
            self._commit(comps, ids)
            return ids
        claimed: set[int] = set()
        # 1. the same voxels as a lesion shown or retired: its number (untouched lesions, undo, redo)
        retired_keys = {_key(v): k for k, v in self.retired.items()}
        for i, c in enumerate(comps):
            key = _key(c)
            k = self._by_key.get(key, retired_keys.get(key))
            if k is not None and k not in claimed:
                ids[i] = k
                claimed.add(k)
        # 2. almost the same voxels as a retired lesion (undo/redo measured together with other steps)
        for i, c in enumerate(comps):
            if ids[i] is not None:
                continue
            best, best_iou = None, RESTORE_IOU
            for k, v in self.retired.items():
                if k in claimed:
                    continue
                ov = _overlap(c, v)
                iou = ov / float(c.size + v.size - ov) if ov else 0.0
                if iou >= best_iou:
                    best, best_iou = k, iou
            if best is not None:
                ids[i] = best
                claimed.add(best)
        # 3. lesions shown before, edited: a part keeps the number of the lesions it holds voxels of (the
        #    lowest when it joins several: a merge); the bigger part first, so a split keeps the number there
        for i in sorted((i for i in range(n) if ids[i] is None), key=lambda i: -comps[i].size):
            cands = [k for k, v in self.live.items() if k not in claimed and _overlap(comps[i], v) > 0]
            if cands:
                k = min(cands)
                ids[i] = k
                claimed.add(k)
        # 4. new lesions (and the smaller parts of splits): the next numbers, largest first
        for i in sorted((i for i in range(n) if ids[i] is None), key=lambda i: -comps[i].size):
            ids[i] = self.next_id
            self.next_id += 1
        self._commit(comps, ids)
        return [int(k) for k in ids]

    def _commit(self, comps: list[np.ndarray], ids: list) -> None:
        shown = {int(k): c for k, c in zip(ids, comps)}
        for k, v in self.live.items():
            if k not in shown:
                self.retired[k] = v
        for k in shown:
            self.retired.pop(k, None)
        while len(self.retired) > MAX_RETIRED:
            self.retired.pop(next(iter(self.retired)))
        self.live = shown
        self._by_key = {_key(c): k for k, c in shown.items()}
        if shown:
            self.next_id = max(self.next_id, max(shown) + 1)


def ids_like_report(components: Sequence[tuple[int, Sequence[float]]], lesions) -> list[int]:
    """The numbers a measurement report (its ``lesions``, engine.measure.Lesion) gives the same lesions found
    elsewhere (the planning, the tumour-board report), so every table and export of the case uses one
    numbering. ``components``: (voxel count, centroid z, y, x on the whole grid) per lesion, largest first.
    A lesion is the report's when its voxel count and centroid agree; one the report does not hold (it was
    measured before the last edit) gets the next numbers after the report's highest, largest first."""
    pool = [(int(l.voxel_count), np.asarray(l.centroid_zyx, float), int(l.id)) for l in lesions]
    used: set[int] = set()
    out: list[Optional[int]] = []
    for count, c in components:
        c = np.asarray(c, float)
        hit = next((k for n, cc, k in pool if n == int(count) and k not in used
                    and float(np.max(np.abs(cc - c))) < 0.05), None)     # the report rounds centroids to 0.01
        if hit is not None:
            used.add(hit)
        out.append(hit)
    nxt = max([k for _n, _c, k in pool] + [0]) + 1
    for i, k in enumerate(out):
        if k is None:
            out[i] = nxt
            nxt += 1
    return [int(k) for k in out]
