"""Surface meshes: patient coordinates, closed surfaces, local re-meshing, files that state LPS."""
from __future__ import annotations

import math

import numpy as np
import pytest
import pyvista as pv

from engine.errors import ExportError
from engine.geometry import Geometry
from engine.mesh import (label_surfaces, mesh_file_name, read_stl_header, update_label_surface, write_mesh,
                         write_meshes)

SP = (2.0, 1.0, 1.0)
ORIGIN = (-50.0, 20.0, 300.0)


@pytest.fixture(scope="module")
def scene():
    shape = (30, 60, 60)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    lab = np.zeros(shape, np.uint8)
    sphere = ((zz * SP[0] - 30) ** 2 + (yy - 30) ** 2 + (xx - 20) ** 2) <= 12 ** 2
    lab[sphere] = 1
    lesion = ((zz * SP[0] - 30) ** 2 + (yy - 30) ** 2 + (xx - 20) ** 2) <= 4 ** 2
    lab[lesion] = 5
    lab[:, 10:14, 45:49] = 4                 # a tube touching the top and bottom of the volume
    return lab, Geometry(shape, SP, origin=ORIGIN)


def test_surfaces_are_in_patient_mm(scene):
    lab, g = scene
    s = label_surfaces(lab, g, smooth=False)
    assert sorted(s) == [1, 4, 5]
    b = s[1].bounds
    # The sphere's centre: index (z=15, y=30, x=20) -> LPS (x, y, z) = origin + (20, 30, 30) mm.
    centre = ((b[0] + b[1]) / 2, (b[2] + b[3]) / 2, (b[4] + b[5]) / 2)
    assert centre == pytest.approx((ORIGIN[0] + 20, ORIGIN[1] + 30, ORIGIN[2] + 30), abs=1.0)
    assert b[1] - b[0] == pytest.approx(24, abs=2.5)


def test_surfaces_are_closed_and_enclose_the_structure(scene):
    lab, g = scene
    s = label_surfaces(lab, g, smooth=True)
    for k in (1, 4, 5):
        assert s[k].n_open_edges == 0, k
    lesion = s[5].volume
    assert lesion == pytest.approx(4 / 3 * math.pi * 4 ** 3, rel=0.35)
    tube = np.count_nonzero(lab == 4) * np.prod(SP)
    assert s[4].volume == pytest.approx(tube, rel=0.15)


def test_local_update_equals_full_mesh(scene):
    lab, g = scene
    full = label_surfaces(lab, g)
    one = update_label_surface(lab, g, 5)
    assert np.allclose(np.asarray(one.points), np.asarray(full[5].points))
    assert update_label_surface(lab, g, 3) is None


def test_empty_and_missing_labels_give_no_surfaces():
    lab = np.zeros((4, 5, 6), np.uint8)
    assert label_surfaces(lab, Geometry(lab.shape, (1.0, 1.0, 1.0))) == {}
    lab[1:3, 1:3, 1:3] = 2
    assert sorted(label_surfaces(lab, Geometry(lab.shape, (1.0, 1.0, 1.0)), labels_wanted=[1, 2])) == [2]


def test_files_state_their_coordinate_system(scene, tmp_path):
    lab, g = scene
    s = label_surfaces(lab, g)
    paths = write_meshes(s, tmp_path, ["stl", "obj", "vtp"])
    names = sorted(p.name for p in paths)
    assert "liver_LPS.stl" in names and "crlm_LPS.obj" in names and "ivc_LPS.vtp" in names
    assert read_stl_header(tmp_path / "liver_LPS.stl").startswith("SPACE=LPS")
    assert (tmp_path / "liver_LPS.obj").read_text().startswith("# SPACE=LPS")
    stl = pv.read(tmp_path / "liver_LPS.stl")
    assert stl.n_cells == s[1].n_cells
    assert np.allclose(stl.bounds, s[1].bounds, atol=1e-3)
    vtp = pv.read(tmp_path / "liver_LPS.vtp")
    assert str(vtp.field_data["SPACE"][0]) == "LPS"
    obj = pv.read(tmp_path / "crlm_LPS.obj")
    assert np.allclose(obj.bounds, s[5].bounds, atol=1e-3)
    # RAS: x and y negated, stated in the name and header.
    p = write_mesh(tmp_path / mesh_file_name(1, "stl", "RAS"), s[1], space="RAS")
    assert p.name == "liver_RAS.stl" and read_stl_header(p).startswith("SPACE=RAS")
    ras = pv.read(p)
    assert ras.bounds[0] == pytest.approx(-s[1].bounds[1], abs=1e-3)
    assert ras.bounds[4] == pytest.approx(s[1].bounds[4], abs=1e-3)


def test_existing_files_are_not_overwritten(scene, tmp_path):
    lab, g = scene
    s = label_surfaces(lab, g, labels_wanted=[5])
    write_meshes(s, tmp_path, ["stl"])
    with pytest.raises(ExportError, match="already exists"):
        write_meshes(s, tmp_path, ["stl"])
    write_meshes(s, tmp_path, ["stl"], overwrite=True)
    with pytest.raises(ExportError, match="format"):
        write_meshes(s, tmp_path, ["ply"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]    # no temp files left


def _signed_volume(mesh) -> float:
    pts = np.asarray(mesh.points)
    tri = np.asarray(mesh.faces).reshape(-1, 4)[:, 1:]
    a, b, c = pts[tri[:, 0]], pts[tri[:, 1]], pts[tri[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, -1, 0, 1, 0, 0, 0, 0, 1),
                                       (-1, 0, 0, 0, 1, 0, 0, 0, 1)])
def test_direction_is_applied_and_normals_point_outward(direction):
    lab = np.zeros((12, 12, 12), np.uint8)
    lab[3:9, 2:6, 4:10] = 2                      # z 6 voxels, y 4, x 6
    g = Geometry(lab.shape, (1.0, 1.0, 1.0), origin=(10.0, 20.0, 30.0), direction=tuple(map(float, direction)))
    m = label_surfaces(lab, g, smooth=False)[2]
    assert _signed_volume(m) > 0                 # outward normals whatever the grid's handedness
    centre = np.asarray(m.points).mean(axis=0)
    expected = g.index_to_physical(np.array([5.5, 3.5, 6.5]))
    assert centre == pytest.approx(expected, abs=0.6)
    # The display surfaces of the GUI (block-wise) are oriented the same way, normals outward.
    from engine.mesh import BlockSurface

    b = BlockSurface(lab, g, 2, block=4, margin=2, smooth=False).build()
    assert _signed_volume(b) == pytest.approx(_signed_volume(m), rel=1e-5)
    n = np.asarray(b.point_data["Normals"])
    assert np.mean(np.sum(n * (np.asarray(b.points) - centre), axis=1) > 0) > 0.95


# ------------------------------------------------------------------------------------------------
# Block-wise display surfaces (the GUI's local re-mesh after an edit)
def _nearest(a, b):
    from scipy.spatial import cKDTree

    return cKDTree(np.asarray(b, float)).query(np.asarray(a, float))[0]


def test_block_surface_matches_the_whole_structure_mesh(scene):
    from engine.mesh import BlockSurface

    lab, g = scene
    for k in (1, 4, 5):
        full = update_label_surface(lab, g, k)
        bs = BlockSurface(lab, g, k, block=16, margin=6)     # small blocks: many seams in a small scene
        m = bs.build()
        assert len(bs.parts) > 1
        # Flying edges is local: exactly the same triangles; smoothing per block moves seam points by far
        # less than a voxel (no visible seams), and the enclosed volume is the same.
        assert m.n_cells == full.n_cells
        assert _nearest(m.points, full.points).max() < 0.05
        assert _nearest(full.points, m.points).max() < 0.05
        assert m.volume == pytest.approx(full.volume, rel=1e-3)
        # Normals come with the surface and agree with those of the whole mesh (shading is seamless).
        from scipy.spatial import cKDTree

        ref = full.compute_normals(point_normals=True, cell_normals=False, split_vertices=False,
                                   consistent_normals=False, auto_orient_normals=False)
        _, j = cKDTree(np.asarray(ref.points)).query(np.asarray(m.points))
        dots = np.sum(np.asarray(m.point_data["Normals"]) * np.asarray(ref.point_data["Normals"])[j], axis=1)
        assert np.percentile(dots, 1) > 0.95, k


def test_block_surface_update_equals_a_fresh_build_after_edits(scene):
    from engine import edits
    from engine.mesh import BlockSurface

    lab0, g = scene
    lab = lab0.copy()
    bs = BlockSurface(lab, g, 1, block=16, margin=6)
    bs.build()
    hist = edits.EditHistory(lab)
    e1 = hist.commit("erase", edits.brush(lab, (15, 30, 10), 5.0, g.spacing, 1, erase=True, sphere=True))
    e2 = hist.commit("paint", edits.brush(lab, (15, 20, 30), 4.0, g.spacing, 1, sphere=True))
    for e in (e1, e2):
        m = bs.update(e.box)
    fresh = BlockSurface(lab, g, 1, block=16, margin=6).build()
    assert m.n_cells == fresh.n_cells
    assert np.array_equal(np.asarray(m.points), np.asarray(fresh.points))
    undo = hist.undo()
    m = bs.update(undo.box)
    assert m.n_cells == BlockSurface(lab, g, 1, block=16, margin=6).build().n_cells
    # A structure erased completely has no surface any more.
    gone = hist.commit("erase all", edits.replace_all(lab, np.where(lab == 1, 0, lab).astype(np.uint8)))
    assert bs.update(gone.box) is None


# ------------------------------------------------------------------------------------------------
# Pooled display surfaces (the liver in the 3D pane: fewer triangles to draw)
def _weld(mesh, tol_mm=0.02):
    return mesh.clean(tolerance=tol_mm, absolute=True)


def test_pooled_block_surface_is_closed_faithful_and_lighter(scene):
    from engine.mesh import BlockSurface, display_pool

    lab, g = scene
    full = update_label_surface(lab, g, 1)
    bs = BlockSurface(lab, g, 1, block=16, pool=(1, 2, 2))
    m = bs.build()
    assert len(bs.parts) > 1
    # Far fewer triangles, but the same closed surface: no holes at the block seams, same volume.
    assert m.n_cells < 0.5 * full.n_cells
    assert _weld(m).n_open_edges == 0
    assert _weld(m).volume == pytest.approx(full.volume, rel=0.02)
    assert _signed_volume(m) > 0                       # normals outward
    # Every point of the pooled surface lies on the full-resolution surface within a voxel (1 mm here).
    d = np.abs(m.compute_implicit_distance(full).point_data["implicit_distance"])
    assert np.percentile(d, 99) < 0.5 and d.max() < 1.0
    # Shading normals agree with the full-resolution surface's (outer surface and the lesion's cavity).
    from scipy.spatial import cKDTree

    ref = full.compute_normals(point_normals=True, cell_normals=False, split_vertices=False,
                               consistent_normals=False, auto_orient_normals=False)
    _, j = cKDTree(np.asarray(ref.points)).query(np.asarray(m.points))
    dots = np.sum(np.asarray(m.point_data["Normals"]) * np.asarray(ref.point_data["Normals"])[j], axis=1)
    assert np.percentile(dots, 1) > 0.8
    # Only the liver of a sub-millimetre grid is pooled; the small structures keep full resolution.
    assert display_pool(Geometry((10, 10, 10), (1.0, 0.7, 0.7)), 1) == (1, 2, 2)
    assert display_pool(Geometry((10, 10, 10), (0.8, 0.8, 0.8)), 1) == (2, 2, 2)
    assert display_pool(Geometry((10, 10, 10), (1.0, 0.7, 0.7)), 4) == (1, 2, 2)
    for thin in (2, 3, 5):
        assert display_pool(Geometry((10, 10, 10), (1.0, 0.7, 0.7)), thin) == (1, 1, 1)
    assert display_pool(Geometry((10, 10, 10), (2.5, 1.2, 1.2)), 1) == (1, 1, 1)


def test_pooled_block_surface_update_equals_a_fresh_build(scene):
    from engine import edits
    from engine.mesh import BlockSurface

    lab0, g = scene
    lab = lab0.copy()
    bs = BlockSurface(lab, g, 1, block=16, pool=(2, 2, 2))
    bs.build()
    hist = edits.EditHistory(lab)
    for e in (hist.commit("erase", edits.brush(lab, (15, 30, 10), 5.0, g.spacing, 1, erase=True)),
              hist.commit("paint", edits.brush(lab, (15, 20, 30), 4.0, g.spacing, 1))):
        m = bs.update(e.box)
    fresh = BlockSurface(lab, g, 1, block=16, pool=(2, 2, 2)).build()
    assert np.array_equal(np.asarray(m.points), np.asarray(fresh.points))
    assert _weld(m).n_open_edges == 0
    # A mirrored grid keeps outward normals with pooling too.
    gm = Geometry(lab.shape, SP, origin=ORIGIN, direction=(-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    mm = BlockSurface(lab, gm, 1, block=16, pool=(1, 2, 2)).build()
    assert _signed_volume(mm) > 0
