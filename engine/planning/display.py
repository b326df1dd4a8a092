"""What the window shows of the planning, computed here so that the GUI does no array math: the segment
map's colour table, painted disks, remnant/resected surfaces and lesion-vessel lines (LPS mm)."""
from __future__ import annotations

import numpy as np

from ..geometry import Geometry
from . import couinaud as cn


def segment_lut(alpha: int = 255) -> np.ndarray:
    """256 x 4 RGBA table for a segment map (value 0 transparent)."""
    lut = np.zeros((256, 4), np.uint8)
    for k, rgb in cn.SEGMENT_COLOURS.items():
        lut[k, :3] = rgb
        lut[k, 3] = alpha
    return lut


def disk_voxels(zyx, axis: int, radius_mm: float, geometry: Geometry) -> np.ndarray:
    """Flat indices of the in-plane disk of ``radius_mm`` around voxel ``zyx`` in the slice of ``axis``
    (a paint dab of the Plan tab): the Correct tab's flat brush (engine.edits.brush_footprint)."""
    from ..edits import brush_footprint

    box, mask = brush_footprint(zyx, radius_mm, geometry.spacing, geometry.shape, sphere=False, plane_axis=axis)
    if box is None:
        return np.zeros(0, np.int64)
    z, y, x = np.nonzero(mask)
    return np.ravel_multi_index((z + box[0], y + box[2], x + box[4]), tuple(geometry.shape))


def scenario_surfaces(masks: np.ndarray, geometry: Geometry) -> dict[str, object]:
    """Surfaces (pyvista, LPS mm) of a scenario's remnant (mask value 1) and resected part (2)."""
    from ..mesh import label_surfaces

    s = label_surfaces(masks, geometry, [1, 2])
    return {"remnant": s.get(1), "resected": s.get(2)}


def distance_lines(lesions, max_mm: float):
    """One polyline per lesion-vessel pair closer than ``max_mm`` (lesion point -> vessel point, LPS mm),
    as a pyvista PolyData, or None when there is none."""
    import pyvista as pv

    pts, lines = [], []
    for les in lesions:
        for d in les.distances.values():
            if d.distance_mm is None or d.distance_mm > max_mm or d.lesion_point_lps is None:
                continue
            k = len(pts)
            pts += [d.lesion_point_lps, d.vessel_point_lps]
            lines += [2, k, k + 1]
    if not pts:
        return None
    poly = pv.PolyData(np.asarray(pts, float))
    poly.lines = np.asarray(lines, np.int64)
    return poly


#: Short vessel names for the narrow lesion table (the full name is its tooltip).
SHORT_VESSEL = {"right hepatic vein": "RHV", "middle hepatic vein": "MHV", "left hepatic vein": "LHV",
                "hepatic vein": "HV", "main portal vein": "MPV", "right portal vein": "RPV",
                "left portal vein": "LPV", "portal vein": "PV", "IVC": "IVC"}


def lesion_columns(lesions) -> dict[int, list[tuple[str, str]]]:
    """Lesion id -> [(text, tooltip)] for the lesion table's segment, hemiliver, nearest vessel and
    distance columns (short texts: the table sits in a narrow dock)."""
    out: dict[int, list[tuple[str, str]]] = {}
    for l in lesions:
        n = l.nearest
        seg = l.main_segment or "—"
        hemi = {"right": "R", "left": "L", "both": "R+L"}.get(l.hemiliver or "", "—")
        out[l.id] = [
            (seg + ("+" if len(l.segment_shares) > 1 else ""), l.segments_text or "segments not estimated"),
            (hemi, l.hemiliver or "hemilivers not estimated"),
            ("—" if n is None else SHORT_VESSEL.get(n.branch, n.branch), "" if n is None else n.branch),
            ("—" if n is None else f"{n.distance_mm:.1f}",
             "" if n is None else f"{n.distance_mm:.1f} mm surface to surface"
             + (" (contact)" if n.contact else "")),
        ]
    return out
