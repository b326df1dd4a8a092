"""Where the labels disagree with a reference: false-positive / false-negative maps per structure, their
connected regions ordered by size, and each lesion's detection status (README "Errors and uncertainty").

Per structure the comparison is the metric module's (metrics.overlap.confusion over the whole grid, with the
structures of engine.evaluation.structure_plan, so a reference that merges hepatic veins and IVC is compared
with their union): FP = voxels labelled as the structure that the reference does not give it, FN = the
opposite. The FP and FN voxel counts here equal metrics.overlap.confusion's ``fp`` / ``fn`` (tested).

Because a structure's predicted label sets are disjoint from every other scored structure's, a voxel is a
false positive of at most one structure and a false negative of at most one: two uint8 maps (``fp``, ``fn``:
the structure's index + 1, 0 none) hold every error, 2 bytes per voxel. After an edit only the edited box is
recomputed (:meth:`ErrorMaps.update`), and the counts follow exactly by subtracting the box's old errors
and adding its new ones. Error regions (26-connected components of each structure's FP and FN voxels,
cc3d over the errors' bounding box) are computed when asked and cached per labels version.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

try:
    import cc3d  # type: ignore
except ImportError:  # pragma: no cover
    cc3d = None

Box = tuple[int, int, int, int, int, int]

#: Error kinds: what a person reads.
KIND_WORDS = {"FP": "false positive (labelled, not in the reference)",
              "FN": "false negative (in the reference, not labelled)"}


@dataclass(frozen=True)
class ErrorRegion:
    """One connected region of one structure's false positives or false negatives."""

    structure: str          # structure key (e.g. "liver", "hepatic_veins+ivc")
    kind: str               # "FP" or "FN"
    voxels: int
    volume_ml: float
    box: Box                # (z0, z1, y0, y1, x0, x1), end exclusive
    center: tuple[int, int, int]   # a voxel of the region (the one nearest its centroid)

    def describe(self, names: Optional[dict] = None) -> str:
        name = (names or {}).get(self.structure, self.structure)
        word = "false positive" if self.kind == "FP" else "false negative"
        return f"{name}: {word}, {self.volume_ml:.2f} mL ({self.voxels} voxels)"


def _structures(mapping) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    from ..evaluation import structure_plan
    return dict(structure_plan(mapping).structures)


def _lut(structures: dict, side: int) -> np.ndarray:
    """256-entry table: label value -> structure index + 1 on that side (0 prediction, 1 reference)."""
    lut = np.zeros(256, np.uint8)
    for i, (_, sets) in enumerate(structures.items()):
        for v in sets[side]:
            lut[int(v)] = i + 1
    return lut


class ErrorMaps:
    """FP / FN maps of ``labels`` (the live label map; read, never written) against ``reference``."""

    def __init__(self, labels: np.ndarray, reference: np.ndarray, spacing: Sequence[float], mapping=None,
                 structures: Optional[dict] = None) -> None:
        if labels.shape != reference.shape:
            raise ValueError(f"labels {labels.shape} and reference {reference.shape} differ in shape")
        self.labels = labels
        self.reference = np.asarray(reference, np.uint8)
        self.spacing = tuple(float(s) for s in spacing)
        self.structures = dict(structures) if structures is not None else _structures(mapping)
        self.keys = list(self.structures)
        self._pred_lut = _lut(self.structures, 0)
        self._ref_lut = _lut(self.structures, 1)
        self.fp = np.zeros(labels.shape, np.uint8)
        self.fn = np.zeros(labels.shape, np.uint8)
        n = len(self.keys) + 1
        self._fp_count = np.zeros(n, np.int64)
        self._fn_count = np.zeros(n, np.int64)
        self._regions: Optional[list[ErrorRegion]] = None
        self.version = 0          # bumps with every update (regions are cached per version)
        self._build()

    # ------------------------------------------------------------------------------------------
    def _fill(self, sl) -> None:
        """Recompute the maps inside ``sl`` and add their errors to the counts (the caller took the old ones
        away)."""
        p = np.take(self._pred_lut, self.labels[sl])
        r = np.take(self._ref_lut, self.reference[sl])
        differ = p != r
        fp = p * differ
        fn = r * differ
        self._add_counts(fp, fn, +1)
        self.fp[sl] = fp
        self.fn[sl] = fn

    def _add_counts(self, fp: np.ndarray, fn: np.ndarray, sign: int) -> None:
        n = len(self._fp_count)
        for vol, count in ((fp, self._fp_count), (fn, self._fn_count)):
            nz = vol[vol != 0]              # errors are few: count only them
            if nz.size:
                count += sign * np.bincount(nz, minlength=n)[:n]

    def _build(self) -> None:
        from metrics import _grid

        # no voxel outside both label maps' foreground can be an error
        box = _grid.union_box(_grid.bbox(self.labels), _grid.bbox(self.reference))
        if box is not None:
            self._fill(box)

    def update(self, box: Optional[Box]) -> None:
        """The labels changed inside ``box`` (z0, z1, y0, y1, x0, x1) (None: anywhere)."""
        if box is None:
            self.fp[...] = 0
            self.fn[...] = 0
            self._fp_count[:] = 0
            self._fn_count[:] = 0
            self._build()
        else:
            sl = (slice(box[0], box[1]), slice(box[2], box[3]), slice(box[4], box[5]))
            self._add_counts(self.fp[sl], self.fn[sl], -1)
            self._fill(sl)
        self.version += 1
        self._regions = None

    # ------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, tuple[int, int]]:
        """{structure key: (FP voxels, FN voxels)} over the whole grid."""
        return {k: (int(self._fp_count[i + 1]), int(self._fn_count[i + 1])) for i, k in enumerate(self.keys)}

    def planes(self, axis: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The FP and FN maps of one slice (views; structure index + 1, 0 none)."""
        sl = [slice(None)] * 3
        sl[axis] = int(index)
        return self.fp[tuple(sl)], self.fn[tuple(sl)]

    def colour_plane(self, axis: int, index: int, shown: Optional[dict] = None) -> np.ndarray:
        """One slice as overlay codes for display: 0 none, 1 false positive, 2 false negative (a voxel that is
        both, of two structures, shows as FP); ``shown`` {structure key: bool} hides structures."""
        fp, fn = self.planes(axis, index)
        keep = np.ones(len(self.keys) + 1, bool)
        keep[0] = False
        for i, k in enumerate(self.keys):
            if shown is not None and not shown.get(k, True):
                keep[i + 1] = False
        out = np.where(keep[fn], 2, 0).astype(np.uint8)
        out[keep[fp]] = 1
        return out

    def regions(self) -> list[ErrorRegion]:
        """Every connected error region (26-connected, per structure and kind), largest first (ties:
        structure order, FP before FN, then position). Cached until the next :meth:`update`."""
        if self._regions is None:
            self._regions = self._compute_regions()
        return self._regions

    def _compute_regions(self) -> list[ErrorRegion]:
        vox_ml = float(np.prod(self.spacing)) / 1000.0
        out: list[ErrorRegion] = []
        for kind, vol, count in (("FP", self.fp, self._fp_count), ("FN", self.fn, self._fn_count)):
            if not count[1:].any():
                continue
            from metrics import _grid
            box = _grid.bbox(vol)
            if box is None:
                continue
            sub = vol[box]
            if cc3d is not None:
                comp = cc3d.connected_components(sub, connectivity=26, out_dtype=np.uint32)
            else:  # pragma: no cover - cc3d is a dependency; scipy labels each structure separately
                from scipy import ndimage as ndi
                comp = np.zeros(sub.shape, np.uint32)
                nxt = 0
                for v in np.unique(sub[sub > 0]):
                    lab, n = ndi.label(sub == v, structure=np.ones((3, 3, 3), bool))
                    comp[lab > 0] = lab[lab > 0] + nxt
                    nxt += n
            from scipy import ndimage as ndi
            objs = ndi.find_objects(comp)
            sizes = np.bincount(comp.ravel())
            off = np.array([s.start for s in box])
            for j, sl in enumerate(objs, start=1):
                if sl is None:
                    continue
                local = comp[sl] == j
                idx = np.argwhere(local)
                c = idx.mean(axis=0)
                nearest = idx[int(np.argmin(((idx - c) ** 2).sum(axis=1)))]
                start = np.array([s.start for s in sl])
                centre = tuple(int(v) for v in nearest + start + off)
                s_idx = int(sub[sl][local][0]) - 1
                b = tuple(int(v) for a in range(3) for v in (sl[a].start + off[a], sl[a].stop + off[a]))
                out.append(ErrorRegion(self.keys[s_idx], kind, int(sizes[j]), int(sizes[j]) * vox_ml, b, centre))
        order = {k: i for i, k in enumerate(self.keys)}
        out.sort(key=lambda r: (-r.voxels, order[r.structure], r.kind, r.center))
        return out


def naive_error_regions(labels: np.ndarray, reference: np.ndarray, spacing, mapping=None) -> list[ErrorRegion]:
    """The same regions the plain way: for every structure, its masks over the whole grid (np.isin), FP =
    P and not R, FN = R and not P, and the 26-connected components of each with cc3d. The benchmark's peer
    and the tests' independent cross-check of :class:`ErrorMaps`."""
    from scipy import ndimage as ndi

    structures = _structures(mapping)
    keys = list(structures)
    vox_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    out = []
    for key, (pl, rl) in structures.items():
        p = np.isin(labels, pl)
        r = np.isin(reference, rl)
        for kind, mask in (("FP", p & ~r), ("FN", r & ~p)):
            comp, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
            if not n:
                continue
            sizes = np.bincount(comp.ravel())
            for j, sl in enumerate(ndi.find_objects(comp), start=1):
                idx = np.argwhere(comp[sl] == j)
                c = idx.mean(axis=0)
                nearest = idx[int(np.argmin(((idx - c) ** 2).sum(axis=1)))] + [q.start for q in sl]
                b = tuple(int(v) for q in sl for v in (q.start, q.stop))
                out.append(ErrorRegion(key, kind, int(sizes[j]), int(sizes[j]) * vox_ml, b,
                                       tuple(int(v) for v in nearest)))
    order = {k: i for i, k in enumerate(keys)}
    out.sort(key=lambda r: (-r.voxels, order[r.structure], r.kind, r.center))
    return out


# ----------------------------------------------------------------------------------------------
# lesion status
@dataclass(frozen=True)
class LesionStatus:
    """Detection status of one predicted or reference lesion under metrics.lesions' matching rule."""

    status: str             # "detected", "missed" or "false positive"
    box: Box
    voxels: int
    iou: float = 0.0


def lesion_statuses(labels: np.ndarray, reference: np.ndarray, spacing, lesion_label: int = 5,
                    ref_lesion_labels: Sequence[int] = (5,), min_iou: float = 0.1
                    ) -> tuple[list[LesionStatus], list[LesionStatus]]:
    """(statuses of the predicted lesions, statuses of the reference lesions that were missed).

    The matching is metrics.lesions.detect_lesions' (one-to-one, greedy by IoU, IoU >= ``min_iou``; both
    sides' lesions are their 26-connected components); this function returns it per lesion with boxes on
    the full grid, predicted lesions in scan order (match them to engine.measure's lesions by box and size:
    :func:`status_of_lesion`)."""
    from scipy import ndimage as ndi

    from metrics import _grid
    from metrics.lesions import detect_lesions, label_lesions

    pred = labels == lesion_label
    ref = np.isin(reference, list(ref_lesion_labels))
    det = detect_lesions(pred, ref, spacing, min_iou=min_iou, size_thresholds_mm=())
    union = _grid.union_box(_grid.bbox(pred), _grid.bbox(ref))
    if union is None:
        return [], []
    # the same crop and the same labelling as detect_lesions: its lesion ids are these components' ids
    lp, n_p = label_lesions(pred[union])
    lr, n_r = label_lesions(ref[union])
    off = [s.start or 0 for s in union]
    matched_pred = {m.pred_id: m.iou for m in det.matches if m.pred_id}
    sizes_p = np.bincount(lp.ravel(), minlength=n_p + 1)
    sizes_r = np.bincount(lr.ravel(), minlength=n_r + 1)

    def box(sl) -> Box:
        return tuple(int(v) for s, o in zip(sl, off) for v in (s.start + o, s.stop + o))  # type: ignore[return-value]

    preds = []
    for i, sl in enumerate(ndi.find_objects(lp), start=1):
        if sl is None:
            continue
        if i in matched_pred:
            preds.append(LesionStatus("detected", box(sl), int(sizes_p[i]), float(matched_pred[i])))
        else:
            preds.append(LesionStatus("false positive", box(sl), int(sizes_p[i])))
    missed = []
    objs_r = ndi.find_objects(lr)
    for m in det.matches:
        if not m.pred_id and m.ref_id <= len(objs_r) and objs_r[m.ref_id - 1] is not None:
            missed.append(LesionStatus("missed", box(objs_r[m.ref_id - 1]), int(sizes_r[m.ref_id])))
    return preds, missed


def status_of_lesion(statuses: Sequence[LesionStatus], bbox, voxels: int) -> Optional[LesionStatus]:
    """The status of the measured lesion (engine.measure.Lesion: ``bbox`` ((z0, z1), (y0, y1), (x0, x1)),
    ``voxel_count``) among ``statuses`` (the same 26-connected component has the same box and size)."""
    b = tuple(int(v) for pair in bbox for v in pair)
    for s in statuses:
        if s.box == b and s.voxels == int(voxels):
            return s
    return None


__all__ = ["ErrorMaps", "ErrorRegion", "LesionStatus", "lesion_statuses", "status_of_lesion", "naive_error_regions", "KIND_WORDS"]


# ----------------------------------------------------------------------------------------------
# display helpers (arrays for the panes and the 3D view; the GUI only shows them)


def error_surfaces(maps: ErrorMaps, geometry, shown: Optional[dict] = None) -> dict:
    """Surfaces of the shown structures' false positives and false negatives: {"FP": mesh, "FN": mesh}
    (pyvista PolyData in LPS mm; a kind without voxels is left out). Meshes the whole grid once (flying
    edges): run it off the GUI thread."""
    from ..mesh import label_surfaces

    keep = np.ones(len(maps.keys) + 1, bool)
    keep[0] = False
    for i, k in enumerate(maps.keys):
        if shown is not None and not shown.get(k, True):
            keep[i + 1] = False
    code = np.where(keep[maps.fn], 2, 0).astype(np.uint8)
    code[keep[maps.fp]] = 1
    meshes = label_surfaces(code, geometry, labels_wanted=(1, 2), smooth=False)
    return {("FP" if v == 1 else "FN"): m for v, m in meshes.items() if m is not None}


# ----------------------------------------------------------------------------------------------
# the evaluation export's lesion table
LESION_STATUS_COLUMNS = ("side", "status", "voxels", "volume_ml", "z0", "z1", "y0", "y1", "x0", "x1", "iou")


def lesion_status_rows(labels: np.ndarray, reference: np.ndarray, geometry, mapping=None) -> list[dict]:
    """One row per labelled lesion (detected / false positive) and per missed reference lesion, with its box
    (voxel indices, end exclusive) and the IoU of its match (metrics.lesions' rule, min IoU 0.1)."""
    from ..evaluation import structure_plan

    ref_labels = (5,)
    for _, (pl, rl) in structure_plan(mapping).structures.items():
        if 5 in pl:
            ref_labels = rl
    preds, missed = lesion_statuses(labels, reference, geometry.spacing, ref_lesion_labels=ref_labels)
    vox_ml = float(geometry.voxel_volume_ml)
    rows = []
    for side, items in (("labels", preds), ("reference", missed)):
        for st in items:
            rows.append({"side": side, "status": st.status, "voxels": st.voxels,
                         "volume_ml": round(st.voxels * vox_ml, 4), **dict(zip(LESION_STATUS_COLUMNS[4:10], st.box)),
                         "iou": round(st.iou, 4) if st.status == "detected" else ""})
    return rows


def lesion_status_path(csv_path) -> "Path":
    from pathlib import Path
    p = Path(csv_path)
    stem = p.name[:-4] if p.name.lower().endswith(".csv") else p.name
    return p.with_name(f"{stem}_lesion_status.csv")


def write_evaluation_exports(path, evaluation_csv_text: str, labels: np.ndarray, reference: np.ndarray, geometry,
                             mapping=None, overwrite: bool = True) -> list:
    """The evaluation table CSV at ``path`` and the per-lesion status table beside it
    (``<name>_lesion_status.csv``: :func:`lesion_status_rows`), both written atomically. Returns both paths."""
    import csv
    import io

    from ..io.atomic import write_text_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(LESION_STATUS_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in lesion_status_rows(labels, reference, geometry, mapping):
        w.writerow(r)
    side = lesion_status_path(path)
    return [write_text_atomic(path, evaluation_csv_text, overwrite=overwrite),
            write_text_atomic(side, buf.getvalue(), overwrite=overwrite)]
