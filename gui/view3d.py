"""The 3D pane: one smoothed surface per structure (meshes come from engine.mesh, in LPS mm), the
selected lesion marked, and optionally the current axial CT plane.

Standard views look at the patient from a side, superior up (anterior = camera in front of the patient).
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import pyvista as pv
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from engine.labels import BY_LABEL

log = logging.getLogger(__name__)

# LPS: +x = patient left, +y = posterior, +z = superior. Camera direction = from focal point to camera.
STANDARD_VIEWS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "anterior": ((0, -1, 0), (0, 0, 1)),
    "posterior": ((0, 1, 0), (0, 0, 1)),
    "right": ((-1, 0, 0), (0, 0, 1)),
    "left": ((1, 0, 0), (0, 0, 1)),
    "superior": ((0, 0, 1), (0, -1, 0)),
    "inferior": ((0, 0, -1), (0, -1, 0)),
}


class View3D(QWidget):
    #: A double click on a surface: the picked point (LPS mm, x-y-z).
    point_picked = Signal(tuple)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("view_3d")
        from pyvistaqt import QtInteractor  # imported here: creating it needs a QApplication

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        # No auto-update timer: it re-renders 5 times a second even when nothing changed, which costs a
        # whole CPU core with software OpenGL. Every change below calls render() itself.
        # No multisampling: with software OpenGL (llvmpipe) 4x MSAA doubled every render (~400 -> ~190 ms
        # for a 512^2 x 300 case's surfaces, measured); FXAA smooths the edges for a few ms instead.
        self.plotter = QtInteractor(self, auto_update=False, multi_samples=0)
        try:
            self.plotter.enable_anti_aliasing("fxaa")
        except Exception as exc:  # an OpenGL without FXAA support still renders, only with jagged edges
            log.debug("FXAA unavailable: %s", exc)
        self.plotter.set_background("black")
        lay.addWidget(self.plotter.interactor)
        self.caption = QLabel("3D", self.plotter.interactor)
        self.caption.setStyleSheet("color: white; background: transparent;")
        self.caption.move(4, 2)
        self.actors: dict[int, object] = {}
        self.meshes: dict[int, pv.PolyData] = {}
        self._direct: set[int] = set()   # actors whose mapper reads the mesh directly (data swapped in place)
        self.visible: dict[int, bool] = {lab: True for lab in BY_LABEL}
        self.opacity: dict[int, float] = {lab: (0.35 if lab == 1 else 1.0) for lab in BY_LABEL}
        self._marker = None
        self.extras: dict[str, object] = {}
        self._plane_actor = None
        self.show_plane = False
        self._closed = False
        self._camera_set = False
        # white letters: the default label colour follows the theme (black), invisible on the black background
        self.plotter.add_axes(xlabel="L", ylabel="P", zlabel="S", color="white")
        # Double click on a surface moves the linked crosshair there (single clicks rotate the view).
        self.plotter.track_click_position(self._on_double_click, side="left", double=True)
        self.set_view("anterior", render=False)

    # --- surfaces ---------------------------------------------------------------------------
    def set_surfaces(self, surfaces: dict[int, pv.PolyData], replace_all: bool = False) -> None:
        """Show new surfaces; labels absent from ``surfaces`` are removed only when ``replace_all``."""
        if self._closed:
            return
        labels = set(BY_LABEL) if replace_all else set(surfaces)
        for lab in labels:
            mesh = surfaces.get(lab)
            has_normals = mesh is not None and mesh.point_data.active_normals is not None
            if lab in self._direct and lab in self.actors and mesh is not None and mesh.n_points and has_normals:
                # An edit: swap the actor's data in place (no new actor, no normals pass on this thread).
                self.actors[lab].GetMapper().SetInputData(mesh)
                self.meshes[lab] = mesh
                continue
            if lab in self.actors:
                self.plotter.remove_actor(self.actors.pop(lab), render=False)
                self.meshes.pop(lab, None)
            if mesh is None or mesh.n_points == 0:
                continue
            s = BY_LABEL[lab]
            # Surfaces from engine.mesh.BlockSurface carry their point normals: shade with them instead of
            # pyvista's smooth-shading normals filter (which would re-run on every update).
            actor = self.plotter.add_mesh(mesh, color=[c / 255 for c in s.color], opacity=self.opacity[lab],
                                          smooth_shading=not has_normals, name=f"structure_{lab}",
                                          render=False, specular=0.3)
            if has_normals:
                actor.GetProperty().SetInterpolationToPhong()
                self._direct.add(lab)
            else:
                self._direct.discard(lab)
            actor.SetVisibility(self.visible[lab])
            self.actors[lab] = actor
            self.meshes[lab] = mesh
        if not self._camera_set and self.meshes:
            self._camera_set = True
            self.reset_camera(render=False)
        self.request_render()

    def clear(self) -> None:
        for lab in list(self.actors):
            self.plotter.remove_actor(self.actors.pop(lab), render=False)
        self.meshes.clear()
        for key in list(self.extras):
            self.plotter.remove_actor(self.extras.pop(key), render=False)
        self.set_marker(None)
        self._camera_set = False
        if self._plane_actor is not None:
            self.plotter.remove_actor(self._plane_actor, render=False)
            self._plane_actor = None
        self.request_render()

    def set_structure_visible(self, lab: int, on: bool) -> None:
        self.visible[lab] = bool(on)
        if lab in self.actors:
            self.actors[lab].SetVisibility(bool(on))
            self.request_render()

    def set_structure_opacity(self, lab: int, alpha: float) -> None:
        self.opacity[lab] = float(alpha)
        if lab in self.actors:
            self.actors[lab].GetProperty().SetOpacity(float(alpha))
            self.request_render()

    def _on_double_click(self, display_xy) -> None:
        from vtkmodules.vtkRenderingCore import vtkCellPicker

        picker = vtkCellPicker()
        picker.SetTolerance(0.0005)
        if picker.Pick(float(display_xy[0]), float(display_xy[1]), 0.0, self.plotter.renderer):
            self.point_picked.emit(tuple(float(v) for v in picker.GetPickPosition()))

    # --- camera -----------------------------------------------------------------------------
    def reset_camera(self, render: bool = True) -> None:
        self.plotter.reset_camera(render=False)
        self.plotter.camera.zoom(1.3)  # VTK's fit leaves a wide margin around the liver
        if render:
            self.request_render()

    def set_view(self, name: str, render: bool = True) -> None:
        vec, up = STANDARD_VIEWS[name]
        self.plotter.view_vector(vec, viewup=up)
        if self.meshes:
            self.reset_camera(render=False)
        if render:
            self.request_render()

    def focus(self, point_lps, radius_mm: float = 30.0) -> None:
        """Centre the view on a point (LPS mm): the camera slides, keeping its direction and distance."""
        cam = self.plotter.camera
        fx, fy, fz = cam.focal_point
        px, py, pz = cam.position
        x, y, z = (float(v) for v in point_lps)
        cam.focal_point = (x, y, z)
        cam.position = (px + x - fx, py + y - fy, pz + z - fz)
        self.request_render()

    def set_marker(self, point_lps, radius_mm: float = 10.0) -> None:
        """Mark the selected lesion with a yellow wireframe sphere (None removes it)."""
        if self._marker is not None:
            self.plotter.remove_actor(self._marker, render=False)
            self._marker = None
        if point_lps is not None:
            sphere = pv.Sphere(radius=max(float(radius_mm), 2.0), center=tuple(float(v) for v in point_lps))
            self._marker = self.plotter.add_mesh(sphere, color="yellow", style="wireframe", line_width=1,
                                                 name="selected_lesion", render=False)
        self.request_render()

    # --- extra objects (the Plan tab: remnant / resected parts, lesion-vessel lines) ---------------
    def set_extra(self, key: str, mesh: Optional[pv.PolyData], color=(1.0, 1.0, 1.0), opacity: float = 1.0,
                  line_width: float = 0.0) -> None:
        """Show (or with None remove) an extra mesh under ``key``; line_width > 0 draws lines."""
        if self._closed:
            return
        old = self.extras.pop(key, None)
        if old is not None:
            self.plotter.remove_actor(old, render=False)
        if mesh is not None and mesh.n_points:
            kw = {"line_width": line_width} if line_width else {"smooth_shading": True, "specular": 0.3}
            self.extras[key] = self.plotter.add_mesh(mesh, color=color, opacity=opacity, name=f"extra_{key}",
                                                     render=False, **kw)
        self.request_render()

    # --- CT plane ---------------------------------------------------------------------------
    def set_plane(self, image: Optional[np.ndarray], geometry, z: int, level: float, width: float) -> None:
        """Show the axial CT slice ``z`` of ``image`` (z, y, x) in place in 3D (None hides it)."""
        if self._plane_actor is not None:
            self.plotter.remove_actor(self._plane_actor, render=False)
            self._plane_actor = None
        if image is not None and self.show_plane:
            ny, nx = image.shape[1:]
            grid = pv.ImageData(dimensions=(nx, ny, 1), spacing=geometry.spacing_xyz,
                                origin=tuple(geometry.index_to_physical((z, 0, 0))))
            grid.direction_matrix = geometry.direction_matrix
            # VTK orders points with x fastest, which is numpy's C order of a (y, x) slice.
            grid.point_data["HU"] = np.ascontiguousarray(image[z]).ravel()
            self._plane_actor = self.plotter.add_mesh(
                grid, scalars="HU", cmap="gray", clim=(level - width / 2, level + width / 2),
                show_scalar_bar=False, name="ct_plane", render=False, lighting=False)
        self.request_render()

    # --- output -----------------------------------------------------------------------------
    def request_render(self) -> None:
        """Have the pane drawn once, at the next paint.

        pyvistaqt's widget re-renders the whole scene in every paint (paintGL), and a direct
        ``plotter.render()`` schedules such a paint after its own render: every change drew the scene
        twice (measured: 2-3 renders of ~85-170 ms per refresh on software OpenGL). Asking Qt for a
        repaint draws it once, and several changes before that paint (surfaces, marker, camera) are
        drawn together."""
        if not self._closed:
            self.plotter.interactor.update()

    def render_now(self) -> None:
        """Draw synchronously (for screenshots: the frame must be current before it is read)."""
        if not self._closed:
            self.plotter.render()

    def screenshot(self, path=None):
        """The rendered 3D pane as an RGB array (and written to ``path`` when given)."""
        self.render_now()
        return self.plotter.screenshot(path, return_img=True)

    def close_plotter(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.plotter.close()
            except Exception as exc:  # closing twice or after the GL context went away is harmless
                log.debug("plotter close: %s", exc)
