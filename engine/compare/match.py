"""Lesion matching across two time points, after registration.

Lesions are the 26-connected components of label 5, numbered as engine.measure numbers them (largest
first). The follow-up's lesions are brought onto the baseline grid through the registration; a baseline
lesion and a follow-up lesion are linked when

- they overlap there (confidence from the overlap: overlap / smaller volume, 0.6 .. 1.0), or
- (for lesions left without an overlap) their centroids lie within ``max(DIST_MM, the baseline
  lesion's longest radius)`` (confidence 0.2 .. 0.5 falling with the distance).

The links form groups (connected components of the bipartite graph): one to one ("matched"), one to many
("split"), many to one ("merged": confluent lesions), many to many ("complex"); a baseline lesion with no
link has "vanished", a follow-up lesion with none is "new". The user may re-pair by hand (confidence 1).

Identities carry across: a follow-up lesion takes its baseline lesion's number ("3"); the parts of a split
lesion are "3a", "3b"; a merged lesion is "2+4"; new lesions get the numbers after the baseline's highest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..labels import Label
from ..measure import LESION_CONNECTIVITY

DIST_MM = 10.0


def lesion_box(labels: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(lo, hi) voxel indices (z, y, x; hi exclusive) of the box holding every lesion voxel, one voxel wider
    where the grid allows; None without lesions."""
    m = labels == Label.CRLM
    zs = np.flatnonzero(m.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    ys = np.flatnonzero(m[zs[0]:zs[-1] + 1].any(axis=(0, 2)))
    xs = np.flatnonzero(m[zs[0]:zs[-1] + 1, ys[0]:ys[-1] + 1].any(axis=(0, 1)))
    lo = np.maximum(np.array([zs[0], ys[0], xs[0]]) - 1, 0)
    hi = np.minimum(np.array([zs[-1], ys[-1], xs[-1]]) + 2, np.asarray(labels.shape))
    return lo, hi


def lesion_id_map(labels: np.ndarray) -> np.ndarray:
    """uint16 map of lesion numbers (engine.measure's: largest first, ties by centroid z, y, x); 0 elsewhere.
    Numbering is translation-free, so the map of a crop that holds every lesion numbers them the same."""
    import cc3d

    cc, n = cc3d.connected_components(labels == Label.CRLM, connectivity=LESION_CONNECTIVITY, return_N=True)
    out = np.zeros(labels.shape, np.uint16)
    if n == 0:
        return out
    stats = cc3d.statistics(cc)
    counts = stats["voxel_counts"]
    cents = stats["centroids"]
    order = sorted(range(1, n + 1), key=lambda i: (-int(counts[i]), float(cents[i][0]), float(cents[i][1]),
                                                   float(cents[i][2])))
    lut = np.zeros(n + 1, np.uint16)
    for k, i in enumerate(order, start=1):
        lut[i] = k
    return lut[cc]


@dataclass
class Link:
    baseline: int
    followup: int
    overlap_ml: float
    distance_mm: float
    confidence: float
    by_hand: bool = False


@dataclass
class Group:
    """One track: the baseline lesions and follow-up lesions that are the same disease."""

    kind: str                       # matched, split, merged, complex, vanished, new
    baseline: list[int]
    followup: list[int]
    confidence: float
    by_hand: bool = False


@dataclass
class Matching:
    links: list[Link]
    groups: list[Group]
    followup_names: dict[int, str] = field(default_factory=dict)     # follow-up lesion id -> "3", "3a", "2+4", "7"

    def group_of_baseline(self, lid: int) -> Optional[Group]:
        return next((g for g in self.groups if lid in g.baseline), None)

    def group_of_followup(self, fid: int) -> Optional[Group]:
        return next((g for g in self.groups if fid in g.followup), None)


def candidate_links(base_ids: np.ndarray, fu_ids_on_base: np.ndarray, voxel_ml: float,
                    base_centroids: dict[int, np.ndarray], fu_centroids: dict[int, np.ndarray],
                    base_volumes: dict[int, float], fu_volumes: dict[int, float],
                    base_radius_mm: dict[int, float]) -> list[Link]:
    """Links by overlap on the baseline grid, then by distance for lesions without any overlap.

    Centroids are LPS mm in the baseline frame (follow-up centroids mapped through the registration)."""
    links: list[Link] = []
    both = (base_ids > 0) & (fu_ids_on_base > 0)
    if both.any():
        pairs = np.stack([base_ids[both].astype(np.int64), fu_ids_on_base[both].astype(np.int64)], axis=1)
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        for (b, f), c in zip(uniq, counts):
            b, f = int(b), int(f)
            if b not in base_volumes or f not in fu_volumes:
                continue
            ov = float(c) * voxel_ml
            frac = ov / max(1e-9, min(base_volumes[b], fu_volumes[f]))
            d = float(np.linalg.norm(base_centroids[b] - fu_centroids[f]))
            links.append(Link(b, f, ov, d, round(min(1.0, 0.6 + 0.4 * min(1.0, frac)), 3)))
    linked_b = {l.baseline for l in links}
    linked_f = {l.followup for l in links}
    # distance fallback: nearest unlinked follow-up lesion, one to one, closest pairs first
    cands = []
    for b, cb in base_centroids.items():
        if b in linked_b:
            continue
        limit = max(DIST_MM, base_radius_mm.get(b, 0.0))
        for f, cf in fu_centroids.items():
            if f in linked_f:
                continue
            d = float(np.linalg.norm(cb - cf))
            if d <= limit:
                cands.append((d, b, f, limit))
    for d, b, f, limit in sorted(cands):
        if b in linked_b or f in linked_f:
            continue
        links.append(Link(b, f, 0.0, d, round(0.5 - 0.3 * d / limit, 3)))
        linked_b.add(b)
        linked_f.add(f)
    return links


def group_links(links: list[Link], base_ids: list[int], fu_ids: list[int]) -> Matching:
    """Groups (connected components of the link graph) and the follow-up lesions' names."""
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for l in links:
        a, b = find(("b", l.baseline)), find(("f", l.followup))
        if a != b:
            parent[a] = b
    comps: dict[tuple, list[tuple[str, int]]] = {}
    for b in base_ids:
        comps.setdefault(find(("b", b)), []).append(("b", b))
    for f in fu_ids:
        comps.setdefault(find(("f", f)), []).append(("f", f))
    groups: list[Group] = []
    for members in comps.values():
        bs = sorted(i for k, i in members if k == "b")
        fs = sorted(i for k, i in members if k == "f")
        ls = [l for l in links if l.baseline in bs and l.followup in fs]
        conf = min((l.confidence for l in ls), default=1.0)
        hand = any(l.by_hand for l in ls)
        if not fs:
            kind = "vanished"
        elif not bs:
            kind = "new"
        elif len(bs) == 1 and len(fs) == 1:
            kind = "matched"
        elif len(bs) == 1:
            kind = "split"
        elif len(fs) == 1:
            kind = "merged"
        else:
            kind = "complex"
        groups.append(Group(kind, bs, fs, round(conf, 3), hand))
    groups.sort(key=lambda g: (min(g.baseline) if g.baseline else 10_000 + min(g.followup)))
    # names
    names: dict[int, str] = {}
    next_new = max(base_ids, default=0) + 1
    for g in groups:
        if g.kind == "new":
            for f in g.followup:
                names[f] = str(next_new)
                next_new += 1
        elif len(g.followup) == 1:
            names[g.followup[0]] = "+".join(str(b) for b in g.baseline)
        else:
            stem = "+".join(str(b) for b in g.baseline)
            for k, f in enumerate(g.followup):
                names[f] = f"{stem}{_letter(k)}"
    return Matching(links, groups, names)


def _letter(k: int) -> str:
    s = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        s = chr(ord("a") + r) + s
    return s
