"""Surfaces for the comparison's 3D view (pyvista, LPS mm, on the baseline grid): the baseline lesions as
outlines (their triangle edges: a wireframe), the follow-up lesions (registered onto the baseline) as
surfaces, and the baseline liver as a faint shell."""
from __future__ import annotations

from ..labels import Label
from ..mesh import label_surfaces


def comparison_meshes(comp) -> dict:
    """{"baseline_lesions_outline", "followup_lesions", "liver"}: pyvista meshes (absent when empty)."""
    out = {}
    g = comp.baseline.geometry
    base = label_surfaces(comp.baseline.labels, g, [Label.PARENCHYMA, Label.CRLM])
    if Label.CRLM in base:
        out["baseline_lesions_outline"] = base[Label.CRLM].extract_all_edges()
    if Label.PARENCHYMA in base:
        out["liver"] = base[Label.PARENCHYMA]
    fu_labels = comp.followup_labels_on_baseline()
    fu = label_surfaces(fu_labels, g, [Label.CRLM])
    if Label.CRLM in fu:
        out["followup_lesions"] = fu[Label.CRLM]
    return out


def run_comparison(baseline, followup, progress=None, cancel=None):
    """The whole job of the window's worker: register, match, resample the follow-up onto the baseline
    grid and build the 3D surfaces. Returns (Comparison, meshes)."""
    from ..progress import check, no_progress
    from .comparison import Comparison

    progress = progress or no_progress
    comp = Comparison(baseline, followup).run(progress=progress, cancel=cancel)
    progress("Resampling the follow-up", 0, 1)
    comp.followup_on_baseline()
    check(cancel)
    progress("Building the 3D view", 0, 1)
    meshes = comparison_meshes(comp)
    progress("Building the 3D view", 1, 1)
    return comp, meshes
