"""Vanished lesions in the planning: a resection scenario planned on the follow-up scan that leaves the site
of a vanished lesion says so (most vanished colorectal liver metastases persist microscopically, and the
surgeon treats their former place).

The site of a vanished lesion is its baseline centroid mapped onto the follow-up through the registration,
with the baseline lesion's radius (half its longest diameter): a sphere on the follow-up grid. A scenario
(engine.planning) leaves a site when any of the site's liver voxels stays in the remnant.

```python
sites = vanished_sites(comparison)
planner = Planner(followup.labels, followup.geometry).run()
for note in sites_left(planner, scenario, sites): print(note["sentence"])
```
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class VanishedSite:
    lesion: int                       # baseline lesion number
    centre_lps_mm: tuple              # on the follow-up (its frame)
    radius_mm: float
    baseline_diameter_mm: float


def vanished_sites(comp) -> list[VanishedSite]:
    """The vanished lesions of a run engine.compare.Comparison, placed on its follow-up."""
    out = []
    for r in comp.rows():
        if r.kind != "vanished":
            continue
        lid = r.baseline_ids[0]
        d = float(comp.base_lesions[lid].longest_diameter_mm)
        out.append(VanishedSite(lid, tuple(float(v) for v in r.followup_lps_mm), max(d / 2.0, 2.0), d))
    return out


def _site_voxels(site: VanishedSite, geometry) -> np.ndarray:
    """(n, 3) integer (z, y, x) indices of the site's sphere on ``geometry`` (inside the grid)."""
    c = geometry.physical_to_index(np.asarray(site.centre_lps_mm))
    sp = np.asarray(geometry.spacing, float)
    r = np.ceil(site.radius_mm / sp).astype(int)
    base = np.round(c).astype(int)
    # the sphere's box, clipped to the grid, as three axes (broadcast: no (n, 3) array of the whole box)
    axes = [np.arange(max(base[a] - r[a], 0), min(base[a] + r[a] + 1, geometry.shape[a])) for a in range(3)]
    if any(ax.size == 0 for ax in axes):
        return np.zeros((0, 3), int)
    d2 = [((ax - c[a]) * sp[a]) ** 2 for a, ax in enumerate(axes)]
    ball = (d2[0][:, None, None] + d2[1][None, :, None] + d2[2][None, None, :]) <= site.radius_mm ** 2
    iz, iy, ix = np.nonzero(ball)
    return np.stack([axes[0][iz], axes[1][iy], axes[2][ix]], 1)


def _values_at(planner, scenario, pts: np.ndarray) -> np.ndarray:
    """Planner.masks(scenario) (1 remnant, 2 resected, 0 outside the planning liver) at the full-grid points
    ``pts`` (n, 3), read from the resection model's liver voxel list: no full-grid volume is made (the Plan
    tab asks at every tick; on IRCADb 1.17, 512 x 512 x 119, the full masks took ~100 ms a refresh)."""
    model = getattr(planner, "model", None)
    if model is None or not len(pts):
        return planner.masks(scenario)[tuple(pts.T)] if len(pts) else np.zeros(0, np.uint8)
    local = pts - np.asarray(planner.offset, np.int64)
    shape = np.asarray(model.shape)
    inside = np.all((local >= 0) & (local < shape), axis=1)
    vals = np.zeros(len(pts), np.uint8)
    if not inside.any():
        return vals
    loc = local[inside]
    in_liver = model.liver[tuple(loc.T)]
    flat = np.ravel_multi_index(tuple(loc[in_liver].T), model.shape)
    pos = np.searchsorted(model.liver_flat, flat)      # liver_flat is sorted (np.flatnonzero)
    sub = np.zeros(len(loc), np.uint8)
    sub[in_liver] = np.where(model.resected(scenario)[pos], 2, 1)
    vals[inside] = sub
    return vals


def sites_left(planner, scenario, sites: list[VanishedSite]) -> list[dict]:
    """For each site: {"lesion", "share_left_pct" (None: the site is outside the planning liver), "left",
    "sentence"} under ``scenario`` of ``planner`` (an engine.planning.Planner run on the follow-up)."""
    out = []
    for s in sites:
        pts = _site_voxels(s, planner.full_geometry)
        vals = _values_at(planner, scenario, pts)
        liver = vals > 0
        x, y, z = s.centre_lps_mm
        where = f"its former place (LPS {x:.0f}, {y:.0f}, {z:.0f} mm, {s.baseline_diameter_mm:.0f} mm at baseline)"
        if not liver.any():
            out.append({"lesion": s.lesion, "share_left_pct": None, "left": None,
                        "sentence": f"Vanished lesion {s.lesion}: {where} lies outside the planned liver; check it."})
            continue
        left = float(np.count_nonzero(vals[liver] == 1)) / float(liver.sum())
        if left > 0:
            sentence = (f"Scenario '{scenario.name}' leaves the site of vanished lesion {s.lesion} "
                        f"({100 * left:.0f} % of {where}) in the remnant: most vanished metastases persist "
                        "microscopically; resect or ablate the site, or plan its surveillance.")
        else:
            sentence = f"Scenario '{scenario.name}' removes the site of vanished lesion {s.lesion} ({where})."
        out.append({"lesion": s.lesion, "share_left_pct": 100.0 * left, "left": left > 0, "sentence": sentence})
    return out


def _fmt3(v) -> str:
    return "(" + ", ".join(f"{float(a):.2f}" for a in v) + ")"


def read_vanished_sites(path, geometry=None) -> list[VanishedSite]:
    """The vanished lesions of a ``comparison.json`` (written by ``liverplan compare``), placed on its
    follow-up. With ``geometry`` (the follow-up case the plan is made on) a comparison made for a scan of
    another grid is refused: its sites would be placed on the wrong scan."""
    import json
    import math
    from pathlib import Path

    from ..errors import InputError

    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{p.name} cannot be read as a comparison file ({exc}).") from None
    if not isinstance(data, dict) or data.get("kind") != "comparison of two time points" \
            or not isinstance(data.get("lesions"), list):
        raise InputError(f"{p.name} is not a LiverPlan comparison file (comparison.json from 'liverplan compare').")
    if geometry is not None:
        fu = ((data.get("followup") or {}).get("geometry") or {})
        shape = fu.get("shape_zyx")
        if shape is not None and [int(v) for v in shape] != [int(v) for v in geometry.shape]:
            raise InputError(f"{p.name} was made for a follow-up scan of {tuple(shape)} voxels, not for this scan "
                             f"({tuple(geometry.shape)}): open the follow-up scan the comparison was made with.")
        # the same number of voxels is not the same scan: the voxel size and the scan's place must agree too
        try:
            sp = [float(v) for v in fu.get("spacing_zyx_mm", geometry.spacing)]
            org = [float(v) for v in fu.get("origin_lps_mm", geometry.origin)]
        except (TypeError, ValueError):
            raise InputError(f"{p.name}: the follow-up scan's grid is damaged; write the comparison again.") from None
        if len(sp) != 3 or len(org) != 3 or not np.allclose(sp, geometry.spacing, rtol=1e-3, atol=1e-4) \
                or not np.allclose(org, geometry.origin, rtol=0, atol=0.5):
            raise InputError(f"{p.name} was made for a follow-up scan with other voxels or another position "
                             f"({_fmt3(sp)} mm voxels at {_fmt3(org)} mm), not for this scan "
                             f"({_fmt3(geometry.spacing)} mm voxels at {_fmt3(geometry.origin)} mm): open the "
                             "follow-up scan the comparison was made with.")
    sites = []
    for r in data["lesions"]:
        if not isinstance(r, dict) or r.get("kind") != "vanished":
            continue
        try:
            lid = int(r["baseline_ids"][0])
            centre = tuple(float(v) for v in r["followup_lps_mm"])
            d = float(r["baseline_diameter_mm"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise InputError(f"A vanished lesion in {p.name} lacks its place or size; write the comparison again.") \
                from None
        if len(centre) != 3 or not all(math.isfinite(v) for v in centre + (d,)) or d < 0:
            raise InputError(f"A vanished lesion in {p.name} has no valid place or size.")
        sites.append(VanishedSite(lid, centre, max(d / 2.0, 2.0), d))
    return sites
