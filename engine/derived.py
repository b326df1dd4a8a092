"""What is derived from the open case's labels: its measurements and 3D surfaces, kept up to date after
every step (no Qt, no threads).

:class:`DerivedState` is the refresh scheduler: it collects what changed (the structures touched and
the box, z0 z1 y0 y1 x0 x1) and hands out :class:`Job` s — plain functions with their arguments — for
whoever owns threads to run (the window's gui.workers; a script runs them inline with
:meth:`DerivedState.run_pending`). The jobs work on the changed box only (engine.measure's
IncrementalMeasurer, engine.mesh's BlockSurface). Results come back through :meth:`Job.finish` on the
owner's thread, and listeners hear ``"measurements"`` / ``"surfaces"`` / ``"volumes"``. See
docs/architecture.md ("Derived state").
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .edits import box_union
from .labels import ALL_STRUCTURES, BY_LABEL
from .lesion_ids import LesionNumbering

log = logging.getLogger(__name__)

Listener = Callable[[str, Any], None]


def _union(a, b):
    """Union of two boxes where None means "everywhere" (absorbs)."""
    if a is None or b is None:
        return None
    return box_union(a, b)


@dataclass
class Job:
    """One piece of derived work: ``fn(*args)`` on a worker, then ``finish(result)`` (or ``fail(message)``)
    on the thread that owns the session."""

    name: str                      # "measure" or "mesh"
    fn: Callable[..., Any]
    args: tuple
    finish: Callable[[Any], None]
    fail: Callable[[str], None]


class DerivedState:
    """Measurements (an engine.measure.MeasurementReport) and surfaces of the open case."""

    def __init__(self, notify: Optional[Listener] = None) -> None:
        self.notify: Listener = notify or (lambda kind, data: None)
        self.case = None
        self.report = None
        self.counts: dict[int, int] = {}         # label -> voxels (follows each step at once)
        self.surfaces: dict[int, Any] = {}       # label -> latest merged surface (LPS mm) or None
        self.meshes_wanted = False               # a 3D view exists: keep surfaces up to date
        self._measurer = None
        self._blocks: dict = {}                  # label -> engine.mesh.BlockSurface
        self._measure_pending = False
        self._measure_box: Optional[tuple] = None
        self._mesh_pending: set[int] = set()
        self._mesh_boxes: dict[int, Optional[tuple]] = {}
        self._running: set[str] = set()
        #: the case's lesion numbers, kept through edits (engine.lesion_ids); used by the measure job only
        self.lesion_numbers = LesionNumbering()

    # --- what changed -------------------------------------------------------------------------
    def reset(self, case) -> None:
        """A new case: nothing measured yet, every structure to build."""
        self.case = case
        self.report = None
        self.counts = {}
        self.surfaces = {}
        self._measurer = None
        self.lesion_numbers = LesionNumbering()
        self._blocks = {}
        self._measure_pending, self._measure_box = True, None
        self._mesh_pending = set(BY_LABEL)
        self._mesh_boxes = {lab: None for lab in BY_LABEL}

    def want_meshes(self, on: bool = True) -> None:
        """Keep surfaces up to date (a 3D view appeared): every structure is built anew."""
        self.meshes_wanted = bool(on)
        if on and self.case is not None:
            self._mesh_pending |= set(BY_LABEL)
            self._mesh_boxes.update({lab: None for lab in BY_LABEL})

    def labels_changed(self, touched: set[int], box: Optional[tuple] = None,
                       delta: Optional[dict[int, int]] = None) -> None:
        """Labels changed inside ``box`` (None = anywhere): volumes follow at once from the step's own
        voxel counts ``delta`` (label -> voxels gained); the full report and the surfaces of ``touched``
        are refreshed by the next jobs."""
        if delta and self.counts:
            for lab, d in delta.items():
                if lab in self.counts:
                    self.counts[lab] += d
            self.notify("volumes", dict(self.counts))
        for lab in touched:
            if lab == 0:
                continue
            self._mesh_boxes[lab] = _union(self._mesh_boxes[lab], box) if lab in self._mesh_boxes else box
            self._mesh_pending.add(lab)
        self._measure_box = _union(self._measure_box, box) if self._measure_pending else box
        self._measure_pending = True

    # --- jobs ---------------------------------------------------------------------------------
    @property
    def measure_pending(self) -> bool:
        """A change not yet handed to a measurement job (the report shown is about to be replaced)."""
        return self._measure_pending

    @property
    def pending(self) -> bool:
        return self._measure_pending or bool(self._mesh_pending and self.meshes_wanted)

    def is_idle(self) -> bool:
        """Nothing left to compute and nothing computing: the numbers and surfaces match the labels."""
        return not self.pending and not self._running

    def next_jobs(self) -> list[Job]:
        """The jobs to start now (at most one of each kind runs at a time; what is still running picks
        up the rest when it ends)."""
        from .measure import update_measurements
        from .mesh import update_surfaces

        jobs = []
        case = self.case
        if case is None:
            return jobs
        if self._measure_pending and "measure" not in self._running:
            self._measure_pending = False
            box, self._measure_box = self._measure_box, None
            self._running.add("measure")
            jobs.append(Job("measure", update_measurements, (case, self._measurer, box, self.lesion_numbers),
                            lambda res, c=case: self._measured(res, c), lambda msg: self._failed("measure")))
        if self._mesh_pending and self.meshes_wanted and "mesh" not in self._running:
            wanted, self._mesh_pending = set(self._mesh_pending) & set(BY_LABEL), set()
            work = {lab: self._mesh_boxes.pop(lab, None) for lab in wanted}
            self._running.add("mesh")
            jobs.append(Job("mesh", update_surfaces, (case.labels, case.geometry, self._blocks, work),
                            lambda res, c=case, w=wanted: self._meshed(res, c, w), lambda msg: self._failed("mesh")))
        return jobs

    def run_pending(self) -> None:
        """Run every job inline until idle (scripts and tests; the window runs them on workers)."""
        while True:
            jobs = self.next_jobs()
            if not jobs:
                return
            for job in jobs:
                try:
                    res = job.fn(*job.args)
                except Exception as exc:  # noqa: BLE001 - reported like the window reports it
                    job.fail(str(exc))
                    raise
                job.finish(res)

    def _failed(self, name: str) -> None:
        self._running.discard(name)

    def _measured(self, result, case) -> None:
        self._running.discard("measure")
        if case is not self.case:
            return
        self._measurer, report = result
        self.report = report
        self.counts = {}
        for st in ALL_STRUCTURES:
            try:
                self.counts[st.label] = int(report.value(f"{st.key}.voxels"))
            except KeyError:
                pass
        self.notify("measurements", report)

    def _meshed(self, result, case, wanted: set[int]) -> None:
        self._running.discard("mesh")
        if case is not self.case:
            return
        self._blocks, surfaces = result
        full = {lab: surfaces.get(lab) for lab in wanted}
        self.surfaces.update(full)
        self.notify("surfaces", full)
