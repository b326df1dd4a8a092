"""Surface meshes of the labelled structures, in patient coordinates (LPS mm), and their files.

Meshing uses VTK's discrete flying edges on the whole label map at once (every label value is one
contour value, so each structure gets its own closed surface; a shared boundary, e.g. lesion/parenchyma,
appears in both), optionally smoothed with a windowed-sinc filter (which keeps volume and does not
shrink thin vessels the way Laplacian smoothing does). Points are mapped through the grid's spacing,
direction and origin, so a mesh overlays its CT in any viewer that reads LPS.

Files: ``<structure>_LPS.stl|obj|vtp`` (or ``_RAS`` when RAS is asked for). The coordinate system is
stated in the file name *and* inside the file: the STL header and the OBJ comment start with
``SPACE=LPS`` (3D Slicer >= 4.11 reads STL/OBJ as LPS unless the header says ``SPACE=RAS``), and the VTP
file carries a field-data string ``SPACE`` = ``LPS``. Writes are atomic.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from .errors import ExportError, InputError
from .geometry import Geometry
from .io.atomic import atomic_path
from .labels import BY_LABEL, LABEL_VALUES

log = logging.getLogger(__name__)

MESH_FORMATS = ("stl", "obj", "vtp")
SMOOTH_ITERATIONS = 20
SMOOTH_PASSBAND = 0.1


class _VTKClasses:
    """The few VTK classes meshing needs, from their own modules: ``import vtk`` loads every VTK module
    (~0.7 s more at the first mesh of a session, measured)."""

    _MODULES = ("vtkCommonCore", "vtkCommonDataModel", "vtkFiltersCore", "vtkFiltersGeneral")

    def __getattr__(self, name: str):
        import importlib

        for mod in self._MODULES:
            m = importlib.import_module(f"vtkmodules.{mod}")
            if hasattr(m, name):
                return getattr(m, name)
        raise AttributeError(name)


_vtk = _VTKClasses()


def _vtk_image(values: np.ndarray, dtype=np.uint8):
    """A vtkImageData of ``values`` (z, y, x) with unit spacing and zero origin (index space): uint8
    labels, or a float32 field for :func:`_flying_edges_fraction`."""
    from vtkmodules.util.numpy_support import numpy_to_vtk

    arr = np.ascontiguousarray(values, dtype=dtype)
    img = _vtk.vtkImageData()
    nz, ny, nx = arr.shape
    img.SetDimensions(nx, ny, nz)
    vtk_type = _vtk.VTK_UNSIGNED_CHAR if arr.dtype == np.uint8 else _vtk.VTK_FLOAT
    scal = numpy_to_vtk(arr.ravel(), deep=True, array_type=vtk_type)
    scal.SetName("labels" if arr.dtype == np.uint8 else "values")
    img.GetPointData().SetScalars(scal)
    return img


def _flying_edges(labels: np.ndarray, values: Sequence[int]):
    """Surfaces of the given label values of a (z, y, x) label array with VTK's discrete flying edges."""
    fe = _vtk.vtkDiscreteFlyingEdges3D()
    fe.SetInputData(_vtk_image(labels))
    fe.SetNumberOfContours(len(values))
    for i, v in enumerate(values):
        fe.SetValue(i, float(v))
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.ComputeScalarsOn()
    fe.Update()
    return fe.GetOutput()


def _flying_edges_fraction(frac: np.ndarray, iso: float):
    """Contour a (z, y, x) float field (unit spacing, zero origin) at ``iso`` with VTK's flying edges."""
    fe = _vtk.vtkFlyingEdges3D()
    fe.SetInputData(_vtk_image(frac, np.float32))
    fe.SetValue(0, float(iso))
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.ComputeScalarsOff()
    fe.Update()
    return fe.GetOutput()


def _triangles_of(poly) -> tuple[np.ndarray, np.ndarray]:
    """(points xyz float64, triangles int64) of a triangle-only vtkPolyData."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    if poly is None or poly.GetNumberOfPoints() == 0 or poly.GetNumberOfPolys() == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    pts = vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    polys = poly.GetPolys()
    conn = vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64)
    offs = vtk_to_numpy(polys.GetOffsetsArray()).astype(np.int64)
    if not np.all(np.diff(offs) == 3):
        raise RuntimeError("flying edges returned non-triangle polygons")
    return pts, conn.reshape(-1, 3)


def _split_by_label(poly, values: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Split flying-edges output into per-label (points index-space xyz, triangles) in numpy."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    pts, tris = _triangles_of(poly)
    if len(tris) == 0:
        return {}
    scal = vtk_to_numpy(poly.GetPointData().GetScalars()).astype(np.int64)
    tri_label = scal[tris[:, 0]]
    out = {}
    for v in values:
        t = tris[tri_label == v]
        if len(t) == 0:
            continue
        used, t = _compact(t, len(pts))
        out[int(v)] = (pts[used], t)
    return out


def _compact(tris: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the points the triangles use, ascending; the triangles renumbered to them).

    The same result as ``np.unique(tris, return_inverse=True)`` in linear time (no sort): that sort was
    half of the time spent meshing a 512 x 512 x 300 case block by block.
    """
    flat = np.asarray(tris, dtype=np.int64).ravel()
    used_mask = np.zeros(n_points, bool)
    used_mask[flat] = True
    used = np.flatnonzero(used_mask)
    remap = np.zeros(n_points, np.int64)
    remap[used] = np.arange(len(used), dtype=np.int64)
    return used, remap[flat].reshape(-1, 3)


def _polydata(points: np.ndarray, tris: np.ndarray):
    import pyvista as pv

    faces = np.hstack([np.full((len(tris), 1), 3, dtype=np.int64), tris.astype(np.int64)]).ravel()
    return pv.PolyData(points, faces)


def _smooth(mesh, iterations: int = SMOOTH_ITERATIONS, passband: float = SMOOTH_PASSBAND):
    import pyvista as pv

    f = _vtk.vtkWindowedSincPolyDataFilter()
    f.SetInputData(mesh)
    f.SetNumberOfIterations(iterations)
    f.SetPassBand(passband)
    f.BoundarySmoothingOff()
    f.FeatureEdgeSmoothingOff()
    f.NonManifoldSmoothingOn()
    f.NormalizeCoordinatesOn()     # keeps the filter stable whatever the mesh's physical size
    f.Update()
    return pv.wrap(f.GetOutput())


def _to_patient(points_xyz_index: np.ndarray, geometry: Geometry, offset_zyx=(0, 0, 0)) -> np.ndarray:
    """Index-space points (x, y, z voxel units, relative to offset) -> LPS mm."""
    ijk = points_xyz_index + np.asarray(offset_zyx[::-1], float)
    mm = ijk * np.asarray(geometry.spacing_xyz)
    d = geometry.direction_matrix
    if np.allclose(d, np.eye(3)):          # the canonical grid: skip the matrix product
        return mm + np.asarray(geometry.origin)
    return mm @ d.T + np.asarray(geometry.origin)


def _finish(points_idx: np.ndarray, tris: np.ndarray, geometry: Geometry, label: int, smooth: bool,
            offset_zyx=(0, 0, 0)):
    mesh = _polydata(_to_patient(points_idx, geometry, offset_zyx), tris)
    if np.linalg.det(geometry.direction_matrix) < 0:
        # A mirrored grid turns the triangles inside out: keep outward normals.
        mesh = _polydata(np.asarray(mesh.points), tris[:, ::-1])
    if smooth and mesh.n_points > 8:
        mesh = _smooth(mesh)
    mesh.field_data["label"] = np.array([label])
    mesh.field_data["SPACE"] = np.array(["LPS"])
    s = BY_LABEL.get(label)
    if s is not None:
        mesh.field_data["structure"] = np.array([s.key])
        mesh.field_data["color"] = np.array(s.color, dtype=np.uint8)
    return mesh


def _check(labels: np.ndarray, geometry: Geometry) -> None:
    if labels.ndim != 3 or tuple(labels.shape) != tuple(geometry.shape):
        raise InputError(f"The label map ({labels.shape[::-1]} voxels, x-y-z) does not match its geometry "
                         f"({tuple(geometry.shape)[::-1]}).")


def label_surfaces(labels: np.ndarray, geometry: Geometry, labels_wanted: Optional[Iterable[int]] = None,
                   smooth: bool = True) -> dict:
    """Closed surface per structure: {label value: pyvista.PolyData in LPS mm}.

    ``labels`` is (z, y, x) uint8 on ``geometry``'s grid. Labels that are absent give no entry.
    All labels are meshed in one flying-edges pass (several times faster than one pass per label).
    """
    _check(labels, geometry)
    wanted = [int(v) for v in (LABEL_VALUES if labels_wanted is None else labels_wanted)]
    present = [v for v in wanted if v != 0]
    if not present:
        return {}
    # One voxel of background all round closes surfaces that touch the volume's border.
    padded = np.pad(labels, 1)
    parts = _split_by_label(_flying_edges(padded, present), present)
    return {v: _finish(p, t, geometry, v, smooth, offset_zyx=(-1, -1, -1)) for v, (p, t) in parts.items()}


def update_label_surface(labels: np.ndarray, geometry: Geometry, label: int, smooth: bool = True):
    """Re-mesh one structure only (after an edit): the surface of ``label`` or None when it is empty.

    Works on the structure's bounding box, so the cost follows the structure's size, not the volume's;
    the result equals that structure's entry from :func:`label_surfaces`.
    """
    from scipy.ndimage import find_objects

    _check(labels, geometry)
    mask = labels == label
    objs = find_objects(mask.astype(np.uint8))
    if not objs or objs[0] is None:
        return None
    bb = objs[0]
    crop = np.pad(mask[bb].astype(np.uint8) * np.uint8(label), 1)
    parts = _split_by_label(_flying_edges(crop, [label]), [label])
    if label not in parts:
        return None
    p, t = parts[label]
    offset = tuple(s.start - 1 for s in bb)
    return _finish(p, t, geometry, label, smooth, offset_zyx=offset)


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------
def mesh_file_name(label: int, fmt: str, space: str = "LPS", prefix: str = "") -> str:
    s = BY_LABEL.get(label)
    key = s.key if s else f"label{label}"
    return f"{prefix}{key}_{space}.{fmt}"


def _points_in(mesh, space: str) -> np.ndarray:
    pts = np.asarray(mesh.points, dtype=np.float64)
    if space == "RAS":
        pts = pts * np.array([-1.0, -1.0, 1.0])     # LPS -> RAS (a rotation: normals stay outward)
    return pts


def _triangles(mesh) -> np.ndarray:
    faces = np.asarray(mesh.faces)
    if faces.size == 0:
        return np.zeros((0, 3), np.int64)
    if faces.size % 4 == 0 and np.all(faces.reshape(-1, 4)[:, 0] == 3):
        return faces.reshape(-1, 4)[:, 1:]
    tri = mesh.triangulate()
    return np.asarray(tri.faces).reshape(-1, 4)[:, 1:]


def _write_stl(path: Path, mesh, space: str, name: str) -> None:
    pts = _points_in(mesh, space)
    tris = _triangles(mesh)
    v = pts[tris]                                        # (n, 3, 3)
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    ln = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.divide(n, ln, out=np.zeros_like(n), where=ln > 0)
    header = f"SPACE={space} LiverPlan {name} (mm)".encode("ascii", "replace")[:80].ljust(80, b" ")
    rec = np.zeros(len(tris), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    rec["n"] = n
    rec["v"] = v
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.uint32(len(tris)).tobytes())
        f.write(rec.tobytes())


def _write_obj(path: Path, mesh, space: str, name: str) -> None:
    pts = _points_in(mesh, space)
    tris = _triangles(mesh) + 1
    import io

    buf = io.StringIO()
    buf.write(f"# SPACE={space}\n# LiverPlan surface: {name}; units mm; coordinate system {space}\n")
    buf.write(f"o {name.replace(' ', '_')}\n")
    np.savetxt(buf, pts, fmt="v %.4f %.4f %.4f")
    np.savetxt(buf, tris, fmt="f %d %d %d")
    path.write_text(buf.getvalue(), encoding="ascii")


def _write_vtp(path: Path, mesh, space: str, name: str) -> None:
    out = mesh.copy()
    out.points = _points_in(mesh, space)
    out.field_data["SPACE"] = np.array([space])
    out.field_data["name"] = np.array([name])
    # VTK's file writer crashes the process when the disk fills ("free(): invalid size", SIGSEGV): it writes
    # to memory here (base64 "binary" XML, ASCII-safe), and Python writes the file, raising OSError on a
    # full disk like any other write (atomic_path turns it into words and removes the part-file)
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    w = vtkXMLPolyDataWriter()
    w.SetInputData(out)
    w.SetDataModeToBinary()
    w.WriteToOutputStringOn()
    if not w.Write():
        raise ExportError(f"The surface {name} could not be converted to VTK XML; nothing was written.")
    with open(path, "wb") as f:
        f.write(w.GetOutputString().encode("latin-1"))


_WRITERS = {"stl": _write_stl, "obj": _write_obj, "vtp": _write_vtp}


def write_mesh(path: Union[str, Path], mesh, space: str = "LPS", name: str = "surface",
               overwrite: bool = False) -> Path:
    """Write one surface (LPS mm points) to STL/OBJ/VTP (format from the extension), atomically."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in _WRITERS:
        raise ExportError(f"Meshes can be written as {', '.join(MESH_FORMATS)}; '{path.suffix}' is not one of them.")
    space = space.upper()
    if space not in ("LPS", "RAS"):
        raise ExportError(f"The mesh coordinate system must be LPS or RAS, not {space}.")
    # VTK's XML writer crashes the process on a full disk instead of raising: check the space first
    n_pts, n_cells = int(getattr(mesh, "n_points", 0)), int(getattr(mesh, "n_cells", 0))
    needs = 4096 + {"stl": 50 * n_cells, "obj": 40 * n_pts + 30 * n_cells, "vtp": 24 * n_pts + 40 * n_cells}[fmt]
    with atomic_path(path, overwrite=overwrite, needs_bytes=needs) as tmp:
        _WRITERS[fmt](tmp, mesh, space, name)
    return path


def write_meshes(surfaces: dict, out_dir: Union[str, Path], formats: Sequence[str] = ("stl",),
                 space: str = "LPS", prefix: str = "", overwrite: bool = False,
                 written: Optional[list] = None) -> list[Path]:
    """Write every surface of :func:`label_surfaces` as ``<prefix><structure>_<SPACE>.<fmt>``.

    written: a list each file is appended to as soon as it is complete (so that a caller can say which
    files exist when a later one fails); returned too."""
    fmts = [f.lower().lstrip(".") for f in formats]
    bad = [f for f in fmts if f not in _WRITERS]
    if bad:
        raise ExportError(f"Unknown mesh format(s) {', '.join(bad)}; choose from {', '.join(MESH_FORMATS)}.")
    out_dir = Path(out_dir)
    targets = [(lab, out_dir / mesh_file_name(lab, f, space.upper(), prefix)) for lab in sorted(surfaces)
               for f in fmts]
    if not overwrite:
        clash = [str(p) for _, p in targets if p.exists()]
        if clash:
            raise ExportError(f"{clash[0]} already exists; choose another folder or allow overwriting.")
    written = [] if written is None else written
    for lab, p in targets:
        s = BY_LABEL.get(lab)
        written.append(write_mesh(p, surfaces[lab], space=space, name=s.name if s else f"label {lab}",
                                  overwrite=overwrite))
    return written


def read_stl_header(path: Union[str, Path]) -> str:
    """The 80-byte header text of a binary STL (to check the stated coordinate system)."""
    return Path(path).read_bytes()[:80].decode("ascii", "replace").strip()


# ------------------------------------------------------------------------------------------------
# Local re-meshing after an edit (the GUI's 3D refresh)
# ------------------------------------------------------------------------------------------------
class BlockSurface:
    """One structure's display surface, built from fixed blocks so that an edit re-meshes only the
    blocks it touches.

    The (1-voxel background padded) grid is tiled into ``block``^3 cores. Each block is meshed with
    discrete flying edges on its core grown by ``margin`` voxels, smoothed there (windowed sinc, as in
    :func:`label_surfaces`), and keeps the triangles whose centre lies in its core. Flying edges is
    local, so the blocks' triangles are exactly those of the whole-structure mesh; smoothing sees
    ``margin`` voxels of the neighbours' surface, so the seams between blocks are far below a voxel and
    not visible (the vertices on a seam are computed twice, from nearly the same neighbourhood). Point
    normals are computed before cropping, with the margin, so shading is continuous across seams too.

    The merged surface carries its point normals ("Normals"), in LPS mm. This is the display surface;
    exports use :func:`label_surfaces` (one pass, identical to before).

    ``pool`` (z, y, x), e.g. (1, 2, 2): mesh on a coarser display grid, each cell holding the fraction of
    its ``pool`` voxels that belong to the structure, contoured at one half (continuous flying edges).
    The surface still passes where the voxel boundaries are (a half-filled cell is contoured through its
    centre), with ~2.5x fewer triangles for (1, 2, 2) (512 x 512 x 300 liver: 482 k -> 190 k), and the
    3D pane's drawing time in software OpenGL follows the triangle count. Pooled surfaces default to 10
    smoothing iterations and a margin of 4 cells. Used for the liver and the IVC of sub-millimetre grids
    (see :func:`display_pool`).
    """

    def __init__(self, labels: np.ndarray, geometry: Geometry, label: int, block: int = 48,
                 margin: Optional[int] = None, smooth: bool = True, pool: Sequence[int] = (1, 1, 1),
                 smooth_iterations: Optional[int] = None) -> None:
        _check(labels, geometry)
        self.labels = labels            # live (z, y, x) map, edited in place by the caller
        self.geometry = geometry
        self.label = int(label)
        self.pool = tuple(max(int(p), 1) for p in pool)     # (z, y, x) voxels per display-grid cell
        # Pooled cells must tile every block and margin the same way (a common global grid), so that
        # neighbouring blocks contour exactly the same cells on their seam.
        step = int(np.lcm.reduce(self.pool))
        pooled = step > 1
        # The fractional contour of a pooled grid has smaller steps than the discrete one: half the
        # smoothing iterations leave it as smooth as the full-resolution surface with 20 (compared on
        # screenshots, scratch/gui2_smoothing_ab.png), and halve how far smoothing reaches, so the margin
        # can shrink too. Measured on a 512 x 512 x 300 liver, seam points of neighbouring blocks agree to
        # 0.005 mm with 10 iterations and 4 pooled cells of margin (20 iterations needed 7 cells; 3 left 0.13 mm).
        self.smooth_iterations = int(smooth_iterations if smooth_iterations is not None
                                     else (SMOOTH_ITERATIONS // 2 if pooled else SMOOTH_ITERATIONS))
        if margin is None:
            margin = 4 * max(self.pool) if pooled else 6
        self.block = -(-int(block) // step) * step
        self.margin = -(-int(margin) // step) * step
        self.smooth = smooth
        self.padded_shape = tuple(int(n) + 2 for n in labels.shape)
        self.nblocks = tuple(-(-n // self.block) for n in self.padded_shape)
        self.parts: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._mirror = bool(np.linalg.det(geometry.direction_matrix) < 0)

    # --- blocks -------------------------------------------------------------------------------
    def _region(self, key) -> tuple[list[int], list[int]]:
        """Core and region (core + margin), per axis [lo, hi) in padded-grid voxels."""
        core, reg = [], []
        for k, n in zip(key, self.padded_shape):
            c0, c1 = k * self.block, min(n, (k + 1) * self.block)
            core += [c0, c1]
            reg += [max(0, c0 - self.margin), min(n, c1 + self.margin)]
        return core, reg

    def _mask(self, reg: list[int]) -> np.ndarray:
        """``labels == label`` on a padded-grid region (zero outside the volume), as uint8 0/label."""
        shape = self.labels.shape
        out = np.zeros((reg[1] - reg[0], reg[3] - reg[2], reg[5] - reg[4]), np.uint8)
        src, dst = [], []
        for a in range(3):
            lo, hi = max(reg[2 * a] - 1, 0), min(reg[2 * a + 1] - 1, shape[a])
            if lo >= hi:
                return out
            src.append(slice(lo, hi))
            dst.append(slice(lo + 1 - reg[2 * a], hi + 1 - reg[2 * a]))
        out[tuple(dst)] = (self.labels[tuple(src)] == self.label)
        return out

    def _mesh_block(self, key):
        core, reg = self._region(key)
        m = self._mask(reg)
        # A block has surface only where its core +- 1 voxel holds both the structure and something else.
        inner = m[tuple(slice(max(0, core[2 * a] - 1 - reg[2 * a]), core[2 * a + 1] + 1 - reg[2 * a])
                        for a in range(3))]
        if not inner.any() or inner.all():
            return None
        if self.pool == (1, 1, 1):
            m *= np.uint8(self.label)
            parts = _split_by_label(_flying_edges(m, [self.label]), [self.label])
            if self.label not in parts:
                return None
            pts, tris = parts[self.label]                    # index xyz within the region
        else:
            pts, tris = self._pooled_contour(m)
            if len(tris) == 0:
                return None
        cen = pts[tris].mean(axis=1)[:, ::-1] + np.asarray(reg[0::2], float)   # zyx, padded grid
        keep = np.all((cen >= np.asarray(core[0::2])) & (cen < np.asarray(core[1::2])), axis=1)
        if not keep.any():
            return None
        if self._mirror:
            tris = tris[:, ::-1]
        mesh = _triangle_polydata(_to_patient(pts, self.geometry, tuple(r - 1 for r in reg[0::2])), tris)
        if self.smooth and mesh.n_points > 8:
            mesh = _smooth(mesh, iterations=self.smooth_iterations)
        p = np.asarray(mesh.points, dtype=np.float64)
        normals = _point_normals(p, tris)
        used, t = _compact(tris[keep], len(p))
        return p[used].astype(np.float32), t, normals[used]

    def _pooled_contour(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Contour of a 0/1 region mask on the pooled display grid: (points index xyz in the region's
        voxel units, triangles)."""
        pz, py, px = self.pool
        # The region starts on the common grid (block and margin are multiples of the pool); at the far
        # end of the volume the last cell is completed with background.
        full = tuple(-(-n // p) * p for n, p in zip(m.shape, self.pool))
        if full != m.shape:
            m = np.pad(m, [(0, f - n) for f, n in zip(full, m.shape)])
        # Sum of the pool's strided views (uint8: at most 8 per cell), ~5x cheaper than a reshape + mean.
        count = np.zeros((full[0] // pz, full[1] // py, full[2] // px), np.uint8)
        for dz in range(pz):
            for dy in range(py):
                for dx in range(px):
                    count += m[dz::pz, dy::py, dx::px]
        frac = count.astype(np.float32) * np.float32(1.0 / (pz * py * px))
        # Fractions are multiples of 1 / (pz py px): an iso value just below one half is never hit
        # exactly, so no vertex sits on a grid point (no zero-area triangles), and the surface moves by
        # 1/1000 of a cell at most.
        pts, tris = _triangles_of(_flying_edges_fraction(frac, 0.5 - 1e-3))
        if len(tris) == 0:
            return pts, tris
        # Cell (i) of the pooled grid is centred on voxel p * i + (p - 1) / 2 of the region (x, y, z order).
        p_xyz = np.array([px, py, pz], float)
        pts = pts * p_xyz + (p_xyz - 1) / 2
        # Drop degenerate triangles (two corners on the same edge point) and unused points.
        ok = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])
        used, tris = _compact(tris[ok], len(pts))
        return pts[used], tris

    def _keys_for(self, box_zyx) -> list[tuple[int, int, int]]:
        """Blocks whose region meets ``box_zyx`` (original grid, half-open) grown by one voxel."""
        rng = []
        for a in range(3):
            lo = int(box_zyx[2 * a]) + 1 - 1 - self.margin        # padded grid, grown by 1 and margin
            hi = int(box_zyx[2 * a + 1]) + 1 + 1 + self.margin
            k0 = max(0, lo // self.block)
            k1 = min(self.nblocks[a] - 1, (hi - 1) // self.block)
            rng.append(range(k0, k1 + 1))
        return [(i, j, k) for i in rng[0] for j in rng[1] for k in rng[2]]

    # --- public -------------------------------------------------------------------------------
    def build(self, bbox=False):
        """Mesh every block that holds the structure's surface; the merged surface (or None).

        ``bbox``: the structure's bounding box (z0, z1, y0, y1, x0, x1) when the caller knows it (see
        :func:`structure_boxes`: one pass for all structures), None when it is known to be empty;
        by default it is found here (a pass over the whole volume)."""
        self.parts.clear()
        box = structure_boxes(self.labels, [self.label]).get(self.label) if bbox is False else bbox
        if box is not None:
            for key in self._keys_for(box):
                part = self._mesh_block(key)
                if part is not None:
                    self.parts[key] = part
        return self.merged()

    def update(self, box_zyx):
        """Re-mesh only the blocks a change inside ``box_zyx`` (z0, z1, y0, y1, x0, x1; half-open,
        original grid) can affect; the merged surface (or None when the structure is gone)."""
        for key in self._keys_for(box_zyx):
            part = self._mesh_block(key)
            if part is None:
                self.parts.pop(key, None)
            else:
                self.parts[key] = part
        return self.merged()

    def merged(self):
        """All blocks as one pyvista.PolyData (LPS mm, point normals), or None when empty."""
        if not self.parts:
            return None
        keys = sorted(self.parts)
        pts = np.concatenate([self.parts[k][0] for k in keys])
        nrm = np.concatenate([self.parts[k][2] for k in keys])
        offs = np.cumsum([0] + [len(self.parts[k][0]) for k in keys[:-1]])
        tris = np.concatenate([self.parts[k][1] + o for k, o in zip(keys, offs)])
        mesh = _triangle_polydata(pts, tris)
        mesh.point_data["Normals"] = nrm
        mesh.point_data.active_normals_name = "Normals"
        mesh.field_data["label"] = np.array([self.label])
        mesh.field_data["SPACE"] = np.array(["LPS"])
        return mesh


def _triangle_polydata(points: np.ndarray, tris: np.ndarray):
    """pyvista.PolyData of triangles, with the cell array set from offsets + connectivity directly
    (the legacy "3 a b c" import costs ~4x more on a 500 k triangle liver)."""
    import pyvista as pv
    from vtkmodules.util.numpy_support import numpy_to_vtk

    conn = np.ascontiguousarray(tris, dtype=np.int64).ravel()
    offsets = np.arange(0, 3 * len(tris) + 1, 3, dtype=np.int64)
    ca = _vtk.vtkCellArray()
    ca.SetData(numpy_to_vtk(offsets, deep=True, array_type=_vtk.VTK_ID_TYPE),
               numpy_to_vtk(conn, deep=True, array_type=_vtk.VTK_ID_TYPE))
    mesh = pv.PolyData()
    mesh.points = np.asarray(points)
    mesh.SetPolys(ca)
    return mesh


def _point_normals(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (float32) of a triangle mesh; orientation from the winding."""
    v = points[tris]
    fn = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    n = np.zeros_like(points)
    for a in range(3):
        for c in range(3):
            n[:, a] += np.bincount(tris[:, c], weights=fn[:, a], minlength=len(points))
    ln = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, ln, out=np.zeros_like(n), where=ln > 0).astype(np.float32)


def structure_boxes(labels: np.ndarray, wanted: Optional[Iterable[int]] = None) -> dict:
    """{label value: bounding box (z0, z1, y0, y1, x0, x1), half-open} of the labels present in a
    (z, y, x) uint8 map, all found in one pass (``wanted`` limits the answer, not the work)."""
    from scipy.ndimage import find_objects

    want = None if wanted is None else {int(v) for v in wanted}
    top = int(max(want)) if want else None
    out = {}
    for i, bb in enumerate(find_objects(labels, max_label=top or 0), start=1):
        if bb is not None and (want is None or i in want):
            out[i] = (bb[0].start, bb[0].stop, bb[1].start, bb[1].stop, bb[2].start, bb[2].stop)
    return out


def display_pool(geometry: Geometry, label: int) -> tuple[int, int, int]:
    """Pooling (z, y, x) for the 3D pane's surface of ``label`` (see :class:`BlockSurface`).

    The liver parenchyma (label 1) is the largest surface by far (~480 k triangles at 0.7 mm, two thirds
    of everything drawn; drawing time in software OpenGL follows the triangle count) and is shown
    translucent, as context; the IVC (label 4) is a wide, smooth tube. Both are meshed on a display grid
    pooled 2x along each axis finer than 1 mm, so their triangles stay about 1-1.5 mm (the surface stays
    within a voxel of the full-resolution one, and looks smoother: fewer terraces). Portal and hepatic
    veins (thin branches) and lesions (small ones matter) keep the full resolution. Exports never use
    this (they use :func:`label_surfaces`).
    """
    if int(label) not in (1, 4):
        return (1, 1, 1)
    return tuple(2 if float(s) < 1.0 else 1 for s in geometry.spacing)  # type: ignore[return-value]


def update_surfaces(labels: np.ndarray, geometry: Geometry, surfaces: dict, jobs: dict) -> tuple[dict, dict]:
    """Bring the 3D surfaces of a label map up to date after edits (runs on a worker thread).

    ``surfaces``: label -> :class:`BlockSurface` kept between edits (not modified; a new dict is
    returned); ``jobs``: label -> changed box (z0, z1, y0, y1, x0, x1, voxel indices, half-open) or None
    to build that structure anew. Only the blocks an edit touched are re-meshed. Returns (the updated
    BlockSurface dict, label -> merged surface in LPS mm, or None where the structure is empty).
    """
    surfaces = dict(surfaces)
    out = {}
    fresh = [lab for lab, box in jobs.items()
             if box is None or surfaces.get(lab) is None or surfaces[lab].labels is not labels]
    # One pass over the volume finds where every structure to build is (not one pass each).
    boxes = structure_boxes(labels, fresh) if fresh else {}
    for lab, box in sorted(jobs.items()):
        if lab in fresh:
            # The liver of a fine grid is meshed on a pooled display grid (fewer triangles to draw).
            bs = surfaces[lab] = BlockSurface(labels, geometry, lab, pool=display_pool(geometry, lab))
            out[lab] = bs.build(boxes.get(lab))
        else:
            out[lab] = surfaces[lab].update(box)
    return surfaces, out
