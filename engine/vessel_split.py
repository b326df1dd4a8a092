"""Split an intrahepatic vessel tree into the portal and the hepatic-venous system.

Public models (TotalSegmentator's ``liver_vessels``, MSD Task08 "Vessel") label the vessels inside the
liver as ONE structure. LiverPlan's label map keeps the portal vein (2) and the hepatic veins (3) apart,
so those voxels are assigned here: to the portal system where they belong to the tree fed by the portal
trunk (the cardiac model's ``portal_vein_and_splenic_vein``, or failing that the hilum), to the hepatic
veins where they drain into the inferior vena cava (4). What cannot be decided is written as
:attr:`engine.labels.Label.VESSEL_UNASSIGNED` and said so in a note: never guessed silently.

How (arrays (z, y, x) in LiverPlan's canonical LPS orientation: z runs inferior -> superior; mm):

1. The vessel mask is thinned to its centre lines (Lee's 3D thinning, :func:`metrics.centerline.skeleton`)
   and the centre-line voxels become a graph (26-neighbours, edge length in mm). Each centre-line voxel
   carries the vessel radius there (the distance to the vessel wall, smoothed along the line).
2. Roots: where the vessel mask touches the portal trunk, and where it touches the IVC (or hepatic veins
   already labelled), grouped into contacts. In CT masks the trees also touch where they should not: a
   portal branch running along the IVC, a hepatic vein grazing the portal trunk. A vessel tree narrows
   away from its root, so a contact is only accepted as a hepatic root when it cannot be reached from the
   portal contacts by going down the vessel calibre (the climb in radius on the way must be at least
   ``ROOT_CLIMB`` x the radius at the contact: a portal branch that merely grazes the IVC is reached by
   narrowing all the way) and when it lies above the lowest ``LOW_CONTACT`` fraction of the tree between
   the hilum and its top (the hepatic veins drain into the IVC under the diaphragm; a branch touching the
   IVC at the level of the hilum is more likely a portal branch). The same calibre test is then applied
   the other way to the portal contacts (at least the thickest one is kept).
3. Competing fronts: from the accepted roots of each system, the cheapest path along the centre lines
   (Dijkstra on the directed graph) where a step costs its length / radius^``RADIUS_POWER`` (thin
   connections, like the necks where two trees touch, are expensive) plus ``CLIMB_COST`` x the radius
   gained (a front that runs into a wider vessel is leaving its own tree). Each centre-line voxel goes to
   the system whose front reaches it more cheaply: the trees are cut at their thin contacts.
4. Gaps: a piece that no front reached (model outputs break; a peripheral branch loses a few voxels) is
   joined to the branch its free end points to (:func:`_bridge`: within ``BRIDGE_MM``, a cone of
   ``BRIDGE_ANGLE_DEG``, the other system at least ``BRIDGE_MARGIN`` times as far; ends that disagree
   leave it alone; never a piece with a rejected contact, whose own evidence disagrees). Said in a note.
5. Each vessel voxel takes the system of its nearest centre-line voxel in the same connected piece.
   Pieces still reached by neither system (connected to neither trunk, or only by a rejected contact) stay
   "vessel, unassigned".

If no portal trunk is given, the hilum is taken as the thickest place where the vessels leave the liver in
the lower half of the tree (said in a note). If no IVC is given, nothing can be called a hepatic vein and
everything stays unassigned (said in a note).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .errors import InputError
from .labels import Label
from .progress import CancelToken, ProgressCallback, check, no_progress

log = logging.getLogger(__name__)

#: Stat keys of :class:`VesselAssignment` (always present).
STAT_KEYS = ("portal_voxels", "hepatic_voxels", "unassigned_voxels", "portal_ml", "hepatic_ml",
             "unassigned_ml", "vessel_voxels", "vessel_ml")

#: Step cost exponent: a step of length l (mm) through radius r (mm) costs l / r**RADIUS_POWER.
RADIUS_POWER = 2.0
#: Cost per mm of radius gained along a step (a front entering a wider vessel leaves its own tree).
CLIMB_COST = 5.0
#: A contact with the IVC reached from the portal contacts with a radius climb below this fraction of its
#: own radius lies downstream on the portal tree (a portal branch grazing the IVC): not a hepatic root.
ROOT_CLIMB = 0.5
#: IVC contacts in the lowest fraction of the tree's height above the hilum are not hepatic roots.
LOW_CONTACT = 0.15
#: Gap bridging: a piece connected to neither trunk is joined to the branch its free end points to, within
#: this distance (mm; 0 switches it off), inside a cone of this half-angle, the nearer system winning only
#: when the other is at least BRIDGE_MARGIN times as far; the piece's direction at an end is taken over the
#: centre line within BRIDGE_DIRECTION_MM of it.
BRIDGE_MM = 10.0
BRIDGE_ANGLE_DEG = 30.0
BRIDGE_MARGIN = 2.0
BRIDGE_DIRECTION_MM = 5.0
BRIDGE_PASSES = 3
#: Without a portal trunk, each place where the vessels leave the liver is judged by the widest vessel within
#: this distance (mm, along the centre lines) inside it.
HILUM_REACH_MM = 15.0
#: Smoothing passes of the radius along the centre lines (each averages a voxel with its neighbours).
RADIUS_SMOOTHING = 3

_OFFSETS = np.array([(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                     if (dz, dy, dx) != (0, 0, 0)])
_HALF = _OFFSETS[[i for i, o in enumerate(_OFFSETS) if tuple(o) > (0, 0, 0)]]


@dataclass
class VesselAssignment:
    """The result of :func:`assign_vessel_tree`.

    labels: uint8 (z, y, x): the input label map with the vessel voxels written as portal vein (2),
        hepatic veins (3) or "vessel, unassigned" (6). Voxels the input already labelled portal vein,
        hepatic veins, IVC or CRLM keep their label.
    notes: plain sentences for the clinician: what was decided how, what could not be, volumes.
    stats: voxel counts and volumes (mL) per system (keys: :data:`STAT_KEYS`).
    """

    labels: np.ndarray
    notes: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)


def _validate(labels: np.ndarray, vessels: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray,
                                                                           tuple[float, float, float]]:
    labels = np.asarray(labels)
    vessels = np.asarray(vessels)
    if labels.ndim != 3:
        raise InputError(f"The label map must be a 3D volume; it has {labels.ndim} dimension(s).")
    if vessels.shape != labels.shape:
        raise InputError(f"The vessel mask ({vessels.shape}) and the label map ({labels.shape}) are not on the "
                         "same voxel grid (z, y, x).")
    if labels.dtype != np.uint8:
        if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() > 255)):
            raise InputError("The label map must hold whole numbers 0-255.")
        labels = labels.astype(np.uint8)
    vessels = vessels.astype(bool, copy=False)
    try:
        sp = tuple(float(v) for v in spacing_zyx)
    except (TypeError, ValueError):
        raise InputError(f"The voxel spacing must be three numbers in mm (z, y, x); got {spacing_zyx!r}.") from None
    if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
        raise InputError(f"The voxel spacing must be three positive numbers in mm (z, y, x); got {spacing_zyx!r}.")
    return labels, vessels, sp  # type: ignore[return-value]


def _stats(out: np.ndarray, region: np.ndarray, voxel_ml: float) -> dict[str, float]:
    vals = out[region]
    n_p = int(np.count_nonzero(vals == Label.PORTAL_VEIN))
    n_h = int(np.count_nonzero(vals == Label.HEPATIC_VEINS))
    n_u = int(np.count_nonzero(vals == Label.VESSEL_UNASSIGNED))
    n = int(vals.size)
    return {"portal_voxels": float(n_p), "hepatic_voxels": float(n_h), "unassigned_voxels": float(n_u),
            "portal_ml": n_p * voxel_ml, "hepatic_ml": n_h * voxel_ml, "unassigned_ml": n_u * voxel_ml,
            "vessel_voxels": float(n), "vessel_ml": n * voxel_ml}


_WRITABLE = (Label.BACKGROUND, Label.PARENCHYMA, Label.VESSEL_UNASSIGNED)
#: Coarsest in-plane voxel (mm) on which the tree is followed. Coarser grids merge touching portal branches and
#: hepatic veins into one centre line (measured: a 4 mm grid called 94 % of a phantom's hepatic veins portal):
#: there every vessel stays "vessel, unassigned" with a note rather than a confident wrong answer. CT label
#: maps are 0.5-1 mm in-plane, so this only refuses resampled or thumbnail grids.
MAX_INPLANE_MM = 2.0
_FACES = np.array([(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)])


def _bbox(mask: np.ndarray, margin: int = 0) -> Optional[tuple[slice, ...]]:
    """The bounding box of ``mask`` grown by ``margin`` voxels (clipped), or None when it is empty.

    Three projections instead of ndimage.find_objects: a pass over the volume per axis, no label image."""
    out = []
    for ax in range(3):
        nz = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        if nz.size == 0:
            return None
        out.append(slice(max(0, int(nz[0]) - margin), min(mask.shape[ax], int(nz[-1]) + 1 + margin)))
    return tuple(out)


def _wall_distance(mask: np.ndarray, coords: np.ndarray, points: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from each voxel of ``points`` (n, 3) to the nearest voxel outside ``mask``.

    The same values as scipy's distance_transform_edt(mask, sampling=spacing) at those voxels (the nearest
    outside voxel always has a face neighbour inside the mask, so only that shell is searched), without a
    transform of the whole box: vessels fill a few per cent of their bounding box. ``coords``: the mask's
    voxels (np.argwhere order). Outside the array counts as outside the mask."""
    from scipy.spatial import cKDTree

    if len(points) == 0:
        return np.zeros(0)
    hi = np.array(mask.shape) - 1
    shell = []
    for o in _FACES:
        c = coords + o
        inside = np.all((c >= 0) & (c <= hi), axis=1)
        cc = np.clip(c, 0, hi)
        out = ~inside | ~mask[cc[:, 0], cc[:, 1], cc[:, 2]]
        shell.append(c[out])
    pts = np.concatenate(shell) + 1                     # >= 0: the shell lies at most one voxel outside
    dims = np.array(mask.shape, np.int64) + 2
    lin = np.unique((pts[:, 0] * dims[1] + pts[:, 1]) * dims[2] + pts[:, 2])
    shell_pts = np.stack(np.unravel_index(lin, tuple(dims)), axis=1) - 1
    d, _ = cKDTree(shell_pts * spacing).query(points * spacing)
    return d


def _touching(coords: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Which of the voxels ``coords`` (n, 3) have a 26-neighbour in ``mask`` (bool per voxel)."""
    hit = np.zeros(len(coords), bool)
    hi = np.array(mask.shape) - 1
    for o in _OFFSETS:
        c = np.clip(coords + o, 0, hi)
        hit |= mask[c[:, 0], c[:, 1], c[:, 2]]
    return hit


class _Graph:
    """The centre-line graph of one vessel mask (crop coordinates)."""

    def __init__(self, skel: np.ndarray, wall_mm: np.ndarray, spacing: np.ndarray):
        from scipy import sparse

        self.idx = np.argwhere(skel)                                   # (n, 3) voxel coordinates
        n = self.n = len(self.idx)
        id_map = np.full(skel.shape, -1, np.int64)
        id_map[tuple(self.idx.T)] = np.arange(n)
        hi = np.array(skel.shape) - 1
        src, dst, length = [], [], []
        for o in _HALF:
            c = self.idx + o
            ok = np.all((c >= 0) & (c <= hi), axis=1)
            nb = np.full(n, -1, np.int64)
            nb[ok] = id_map[c[ok, 0], c[ok, 1], c[ok, 2]]
            has = nb >= 0
            src.append(np.flatnonzero(has))
            dst.append(nb[has])
            length.append(np.full(int(has.sum()), float(np.linalg.norm(o * spacing))))
        s, d, ln = np.concatenate(src), np.concatenate(dst), np.concatenate(length)
        self.src, self.dst, self.length = np.r_[s, d], np.r_[d, s], np.r_[ln, ln]    # both directions
        self.adj = sparse.csr_matrix((np.ones(len(self.src)), (self.src, self.dst)), shape=(n, n))
        deg = np.asarray(self.adj.sum(axis=1)).ravel()
        rad = np.asarray(wall_mm, float)        # np.argwhere order, as self.idx
        for _ in range(RADIUS_SMOOTHING):
            rad = (self.adj @ rad + rad) / (deg + 1.0)
        self.radius = rad                                              # mm
        self.climb = np.maximum(0.0, rad[self.dst] - rad[self.src])   # mm of radius gained per step

    def directed(self, weights: np.ndarray):
        from scipy import sparse
        return sparse.csr_matrix((weights, (self.src, self.dst)), shape=(self.n, self.n))

    def clusters(self, nodes: np.ndarray) -> list[np.ndarray]:
        """``nodes`` grouped into pieces connected in the graph."""
        from scipy.sparse.csgraph import connected_components
        if len(nodes) == 0:
            return []
        k, lab = connected_components(self.adj[nodes][:, nodes], directed=False)
        return [nodes[lab == i] for i in range(k)]


def _reached(graph_matrix, roots: np.ndarray) -> np.ndarray:
    from scipy.sparse.csgraph import dijkstra
    if len(roots) == 0:
        return np.full(graph_matrix.shape[0], np.inf)
    return dijkstra(graph_matrix, directed=True, indices=roots, min_only=True)


def assign_vessel_tree(labels: np.ndarray, vessels: np.ndarray, spacing_zyx: tuple[float, float, float], *,
                       progress: ProgressCallback = no_progress, cancel: Optional[CancelToken] = None
                       ) -> VesselAssignment:
    """Assign each voxel of an unsplit vessel mask to the portal or the hepatic-venous system.

    labels: uint8 (z, y, x) label map so far (engine.labels), in LiverPlan's canonical orientation (z index
        inferior -> superior): the liver, and where another model gave them the portal vein trunk (2) and
        the IVC (4) (hepatic veins (3) already labelled count with the IVC).
    vessels: bool (z, y, x) mask of the (intrahepatic) vessels without the split, same grid.
    spacing_zyx: voxel size (z, y, x) in mm.

    Returns a :class:`VesselAssignment` (see the module docstring for the method). The vessel voxels that
    the input labels as background, parenchyma or "vessel, unassigned" are rewritten; portal vein, hepatic
    veins, IVC and CRLM voxels keep their label. The input arrays are not modified.
    Raises InputError for arrays that do not fit together; :class:`engine.progress.Cancelled` on cancel.
    """
    import cc3d
    from scipy.spatial import cKDTree

    from metrics.centerline import skeleton

    labels, vessels, sp = _validate(labels, vessels, spacing_zyx)
    spacing = np.array(sp)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    stage, n_stages = "Splitting the vessel tree", 5
    progress(stage, 0, n_stages)
    out = labels.copy()
    notes: list[str] = []
    # Crop to the vessels with a one-voxel margin (the seeds they touch lie within it).
    box = _bbox(vessels, margin=1)
    W = (vessels[box] & np.isin(labels[box], _WRITABLE)) if box is not None else np.zeros((0, 0, 0), bool)
    if not W.any():
        notes.append("No vessel voxels to assign.")
        progress(stage, n_stages, n_stages)
        return VesselAssignment(out, notes, _stats(out, np.zeros(out.shape, bool), voxel_ml))
    inplane = max(float(sp[1]), float(sp[2]))
    if inplane > MAX_INPLANE_MM:
        out_c = out[box]
        out_c[W] = Label.VESSEL_UNASSIGNED
        stats = _stats(out_c, W, voxel_ml)
        notes.append(f"The label map's voxels are {inplane:.1f} mm across: too coarse to follow the vessel tree "
                     f"(the split needs {MAX_INPLANE_MM:g} mm or finer in-plane), so the {stats['vessel_ml']:.1f} mL "
                     "of vessels stay 'vessel, unassigned': check them, or segment on the CT's own grid.")
        progress(stage, n_stages, n_stages)
        return VesselAssignment(out, notes, stats)
    lab_c = labels[box]
    portal_seed = lab_c == Label.PORTAL_VEIN
    hepatic_seed = (lab_c == Label.IVC) | (lab_c == Label.HEPATIC_VEINS)
    have_portal = bool(np.any(labels == Label.PORTAL_VEIN))
    have_ivc = bool(np.any(labels == Label.IVC) or np.any(labels == Label.HEPATIC_VEINS))
    check(cancel)

    # --- 1. centre lines and their graph ---
    skel = skeleton(W, use_cache=False) & W
    progress(stage, 1, n_stages)
    check(cancel)
    wz = np.argwhere(W)                                                 # vessel voxels (crop coords)
    g = _Graph(skel, _wall_distance(W, wz, np.argwhere(skel), spacing), spacing)
    comp = cc3d.connected_components(W, connectivity=26)
    w_comp = comp[tuple(wz.T)]
    s_comp = comp[tuple(g.idx.T)]
    # nearest centre-line voxel within the same connected piece (the piece id as a far-apart 4th axis)
    far = float(np.sum(np.array(W.shape) * spacing)) * 4.0
    tree = cKDTree(np.c_[g.idx * spacing, s_comp * far])
    _, near = tree.query(np.c_[wz * spacing, w_comp * far])
    near_ok = s_comp[near] == w_comp if g.n else np.zeros(len(wz), bool)
    progress(stage, 2, n_stages)
    check(cancel)

    # --- 2. roots ---
    portal_nodes = np.unique(near[_touching(wz, portal_seed) & near_ok]) if g.n else np.zeros(0, int)
    ivc_nodes = np.unique(near[_touching(wz, hepatic_seed) & near_ok]) if g.n else np.zeros(0, int)
    climb_graph = g.directed(g.climb + 1e-4 * g.length)   # tiny length term: ties go to the shorter path
    hilum_note = ""
    if len(portal_nodes) == 0 and not have_portal and g.n:
        portal_nodes, hilum_note = _hilum(g, wz, near, near_ok, lab_c, ivc_nodes, spacing, box)
    portal_roots: list[np.ndarray] = g.clusters(portal_nodes)
    ivc_clusters = g.clusters(ivc_nodes)
    climb_from_portal = _reached(climb_graph, portal_nodes)
    z_hilum = float(np.median(g.idx[portal_nodes, 0])) if len(portal_nodes) else -np.inf
    z_top = float(g.idx[:, 0].max()) if g.n else 0.0
    hepatic_roots, grazing, low = [], 0, 0
    rejected: list[np.ndarray] = []          # contacts not taken as roots: their pieces are not bridged either
    for cl in ivc_clusters:
        r = float(g.radius[cl].max())
        if float(climb_from_portal[cl].min()) < ROOT_CLIMB * r:
            grazing += 1
            rejected.append(cl)
        elif np.isfinite(z_hilum) and float(g.idx[cl, 0].max()) - z_hilum <= LOW_CONTACT * (z_top - z_hilum):
            low += 1
            rejected.append(cl)
        else:
            hepatic_roots.append(cl)
    h_nodes = np.concatenate(hepatic_roots) if hepatic_roots else np.zeros(0, int)
    if len(portal_roots) > 1 and len(h_nodes):
        climb_from_hepatic = _reached(climb_graph, h_nodes)
        kept = [cl for cl in portal_roots if float(climb_from_hepatic[cl].min()) >= ROOT_CLIMB * g.radius[cl].max()]
        if not kept:
            kept = [max(portal_roots, key=lambda c: float(g.radius[c].max()))]
        grazing_p = len(portal_roots) - len(kept)
        rejected += [cl for cl in portal_roots if not any(cl is k for k in kept)]
        portal_roots = kept
    else:
        grazing_p = 0
    p_nodes = np.concatenate(portal_roots) if portal_roots else np.zeros(0, int)
    progress(stage, 3, n_stages)
    check(cancel)

    # --- 3. competing fronts ---
    cost = g.directed(g.length / np.maximum(g.radius[g.dst], 0.25 * spacing.min()) ** RADIUS_POWER
                      + CLIMB_COST * g.climb + 1e-9)
    node_label = np.full(g.n, Label.VESSEL_UNASSIGNED, np.uint8)
    if have_ivc:
        cp = _reached(cost, p_nodes)
        check(cancel)
        ch = _reached(cost, h_nodes)
        node_label[cp < ch] = Label.PORTAL_VEIN
        node_label[ch < cp] = Label.HEPATIC_VEINS
    n_bridged, bridge_conflicts = 0, 0
    if have_ivc and BRIDGE_MM > 0:
        # a piece with a contact that was rejected is not joined across a gap: its own evidence disagrees
        closed = np.isfinite(np.minimum(cp, ch))
        if rejected:
            closed |= np.isin(s_comp, np.unique(s_comp[np.concatenate(rejected)]))
        n_bridged, bridge_conflicts, bridged_nodes = _bridge(g, node_label, s_comp, closed, spacing)
    progress(stage, 4, n_stages)
    check(cancel)

    # --- 4. voxels follow their centre line ---
    vox = np.full(len(wz), Label.VESSEL_UNASSIGNED, np.uint8)
    if g.n:
        vox[near_ok] = node_label[near[near_ok]]
    out_c = out[box]
    out_c[tuple(wz.T)] = vox
    stats = _stats(out_c, W, voxel_ml)

    # --- notes ---
    if not have_ivc:
        notes.append("No inferior vena cava was given, so no vessel can be traced to it: all vessels were left "
                     "'vessel, unassigned'.")
    elif not have_portal and not hilum_note:
        notes.append("No portal vein trunk was given and no hilum was found: no vessel could be called portal.")
    if hilum_note:
        notes.append(hilum_note)
    if grazing:
        notes.append(f"{grazing} place(s) where a vessel touches the IVC were not taken as hepatic veins draining "
                     "into it: the vessel there continues from the portal trunk, narrowing (a portal branch "
                     "touching the IVC).")
    if low:
        notes.append(f"{low} place(s) where a vessel touches the IVC at the level of the hilum were not taken as "
                     "hepatic veins draining into it (hepatic veins drain under the diaphragm).")
    if grazing_p:
        notes.append(f"{grazing_p} place(s) where a vessel touches the portal trunk were not taken as portal "
                     "branches: the vessel there continues from the IVC, narrowing.")
    if n_bridged:
        bridged_ml = float(np.count_nonzero(np.isin(near[near_ok], bridged_nodes))) * voxel_ml
        notes.append(f"{n_bridged} vessel piece(s) ({bridged_ml:.1f} mL) connected to neither trunk were joined to the "
                     f"branch they point to across a gap of at most {BRIDGE_MM:g} mm (a break in the vessel mask): "
                     "check them.")
    if bridge_conflicts:
        notes.append(f"{bridge_conflicts} vessel piece(s) connected to neither trunk point to both a portal branch and "
                     "a hepatic vein and were left unassigned.")
    if stats["unassigned_voxels"]:
        notes.append(f"{stats['unassigned_ml']:.1f} mL of vessels could not be assigned (connected to neither "
                     "trunk, or only through a contact that was not accepted) and are shown as 'vessel, "
                     "unassigned': check them.")
    notes.append(f"Vessel split by the tree's connectivity, calibre and contacts: portal vein "
                 f"{stats['portal_ml']:.1f} mL, hepatic veins {stats['hepatic_ml']:.1f} mL, unassigned "
                 f"{stats['unassigned_ml']:.1f} mL of {stats['vessel_ml']:.1f} mL of vessels.")
    progress(stage, n_stages, n_stages)
    for s in notes:
        log.info("vessel split: %s", s)
    return VesselAssignment(out, notes, stats)


def _bridge(g: _Graph, node_label: np.ndarray, s_comp: np.ndarray, closed: np.ndarray,
            spacing: np.ndarray) -> tuple[int, int, np.ndarray]:
    """Join pieces that no front reached to the branch they point to across a small gap.

    ``closed``: nodes whose piece is not to be joined (reached by a front, or with a rejected contact).
    Vessel masks from models break: a peripheral branch loses a few voxels and its distal part is left
    connected to neither trunk. For each such piece, each free end (a centre-line end point) looks ahead
    along the piece's own direction there (a cone of ``BRIDGE_ANGLE_DEG``) for assigned centre-line voxels
    within ``BRIDGE_MM``; the nearest decides, unless the other system is nearly as near (within a factor
    ``BRIDGE_MARGIN``). A piece whose ends disagree stays unassigned. Joined pieces can serve the next pass.
    ``node_label`` is updated in place. Returns (pieces joined, pieces in conflict, the joined nodes)."""
    from scipy.spatial import cKDTree

    deg = np.asarray(g.adj.sum(axis=1)).ravel()
    pts = g.idx * spacing
    cos_max = float(np.cos(np.deg2rad(BRIDGE_ANGLE_DEG)))
    open_pieces = set(np.unique(s_comp[~closed]).tolist()) - set(np.unique(s_comp[closed]).tolist())
    joined, conflicts = 0, set()
    joined_nodes: list[np.ndarray] = []
    for _ in range(BRIDGE_PASSES):
        assigned = np.flatnonzero(np.isin(node_label, (Label.PORTAL_VEIN, Label.HEPATIC_VEINS)))
        if not len(assigned) or not open_pieces:
            break
        tree = cKDTree(pts[assigned])
        decided: dict[int, int] = {}
        for piece in sorted(open_pieces):
            nodes = np.flatnonzero(s_comp == piece)
            ends = nodes[deg[nodes] <= 1]
            votes = set()
            for e in ends:
                own = nodes[np.linalg.norm(pts[nodes] - pts[e], axis=1) <= BRIDGE_DIRECTION_MM]
                d = pts[e] - pts[own].mean(axis=0)
                dn = float(np.linalg.norm(d))
                cand = np.asarray(tree.query_ball_point(pts[e], BRIDGE_MM), int)
                if not len(cand):
                    continue
                u = pts[assigned[cand]] - pts[e]
                dist = np.linalg.norm(u, axis=1)
                if dn > 0.5 * float(spacing.min()):         # a piece of one or two voxels has no direction
                    ok = (u @ d) >= cos_max * dist * dn
                    cand, dist = cand[ok], dist[ok]
                if not len(cand):
                    continue
                labs = node_label[assigned[cand]]
                best = {int(l): float(dist[labs == l].min()) for l in np.unique(labs)}
                lab = min(best, key=best.get)
                other = [v for k, v in best.items() if k != lab]
                if other and other[0] < BRIDGE_MARGIN * best[lab]:
                    votes.add(-1)
                else:
                    votes.add(lab)
            if len(votes) == 1 and -1 not in votes:
                decided[piece] = votes.pop()
            elif votes:
                conflicts.add(piece)
        if not decided:
            break
        for piece, lab in decided.items():
            nodes = np.flatnonzero(s_comp == piece)
            node_label[nodes] = lab
            joined_nodes.append(nodes)
            open_pieces.discard(piece)
            conflicts.discard(piece)
            joined += 1
    nodes_out = np.concatenate(joined_nodes) if joined_nodes else np.zeros(0, int)
    return joined, len(conflicts), nodes_out


def _hilum(g: _Graph, wz: np.ndarray, near: np.ndarray, near_ok: np.ndarray, lab_c: np.ndarray,
           ivc_nodes: np.ndarray, spacing: np.ndarray, box: tuple[slice, ...]) -> tuple[np.ndarray, str]:
    """Portal roots when no portal trunk is given: the thickest place where the vessels leave the liver
    (touch background) in the lower half of the tree, away from the IVC contacts. Returns (nodes, note)."""
    leaving = np.unique(near[_touching(wz, lab_c == Label.BACKGROUND) & near_ok])
    if len(leaving) == 0:
        return np.zeros(0, int), ""
    z_lo, z_hi = g.idx[:, 0].min(), g.idx[:, 0].max()
    cands = [cl for cl in g.clusters(np.setdiff1d(leaving, ivc_nodes))
             if np.median(g.idx[cl, 0]) <= (z_lo + z_hi) / 2.0]
    if not cands:
        return np.zeros(0, int), ""
    # The calibre just inside the exit, not at it: the mask's cut at the liver's surface thins the ends.
    from scipy.sparse.csgraph import dijkstra
    pts_r = []
    for cl in cands:
        d = dijkstra(g.directed(g.length), directed=False, indices=cl, min_only=True, limit=HILUM_REACH_MM)
        pts_r.append(float(g.radius[np.isfinite(d)].max()))
    i_best = int(np.argmax(pts_r))
    best = cands[i_best]
    z_slice = float(np.median(g.idx[best, 0])) + box[0].start
    note = (f"No portal vein trunk was given: the hilum was taken as the thickest place where the vessels leave "
            f"the liver in its lower half (axial slice {z_slice:.0f}, vessel radius {pts_r[i_best]:.1f} mm); "
            "check the portal vein.")
    return best, note
