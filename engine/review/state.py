"""What the review overlays show for the open case, kept in step with a CaseSession (no Qt, no threads).

:class:`ReviewState` listens to the session: a reference set -> the error maps are to be built (a job the
window runs on a worker: :meth:`errors_job`, then :meth:`errors_finished`; a script calls
:meth:`build_errors`); a step, undo or redo -> the maps are updated in the changed box only, and the
uncertainty map marks the box as edited; a new case -> everything is dropped (the uncertainty map is freed
with the case). A segmentation step brings its run's uncertainty map (CaseSession.extra_maps).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import numpy as np

from .errors import ErrorMaps, ErrorRegion, LesionStatus, lesion_statuses, status_of_lesion
from .uncertainty import UNCERTAINTY_KEY, UncertainRegion, UncertaintyState, lesion_confidence

log = logging.getLogger(__name__)


def build_error_maps(labels: np.ndarray, reference: np.ndarray, spacing, mapping) -> ErrorMaps:
    """The error maps of a copy of the labels (a worker builds them while the user may keep editing)."""
    return ErrorMaps(labels, reference, spacing, mapping)


class ReviewState:
    """Errors against the session's reference and the last run's uncertainty, for the overlays and tables."""

    def __init__(self, session, on_change: Optional[Callable[[str], None]] = None) -> None:
        self.session = session
        self.errors: Optional[ErrorMaps] = None
        self.uncertainty: Optional[UncertaintyState] = None
        #: why there is no uncertainty map ("" while there is one)
        self.uncertainty_note = "No segmentation run in this session yet."
        self.on_change = on_change
        self._building = False
        self._build_for: tuple = (None, None)
        self._pending_boxes: list = []     # label changes while the error maps were being built
        self._lesion_cache: tuple = (None, None)
        self._stop = session.listen(self._on_session)

    def close(self) -> None:
        self._stop()

    def _changed(self, what: str) -> None:
        if self.on_change is not None:
            self.on_change(what)

    # ------------------------------------------------------------------------------------------
    def _on_session(self, kind: str, data: Any) -> None:
        s = self.session
        if kind == "case":
            self.errors = None
            self.uncertainty = None
            self.uncertainty_note = "No segmentation run for this case yet."
            self._pending_boxes = []
            self._changed("case")
        elif kind == "reference":
            self.errors = None
            self._pending_boxes = []
            self._changed("reference")
        elif kind == "labels":
            step = data.step
            if step is not None and step.kind == "segmentation" and data.how in ("commit", "redo") \
                    or (step is None and data.how == "commit" and UNCERTAINTY_KEY in s.extra_maps):
                unc = s.extra_maps.get(UNCERTAINTY_KEY)
                if data.how == "commit":
                    if unc is not None and unc.shape == s.case.labels.shape:
                        self.uncertainty = UncertaintyState(unc, s.history.state_id)
                        self.uncertainty_note = ""
                    else:
                        self.uncertainty = None
                        prov = s.case.provenance.extra.get("segmentation") or {}
                        prov = prov if isinstance(prov, dict) else {}
                        why = ("it was not kept: turned off for the runs"
                               if (prov.get("options") or {}).get("uncertainty") is False
                               else str(prov.get("uncertainty", "")).split(": ", 1)[-1])
                        self.uncertainty_note = "No uncertainty for this run" + (f" ({why})." if why else ".")
                elif self.uncertainty is not None:
                    self.uncertainty.labels_changed(data.box, s.history.state_id)
            elif step is not None and self.uncertainty is not None:
                self.uncertainty.labels_changed(data.box, s.history.state_id)
            if step is not None:
                if self._building:
                    self._pending_boxes.append(data.box)
                elif self.errors is not None:
                    self.errors.update(data.box)
            self._changed("labels")

    # ------------------------------------------------------------------------------------------ errors
    @property
    def has_reference(self) -> bool:
        return self.session.case is not None and self.session.reference is not None

    def errors_job(self):
        """(fn, args) building the error maps of a copy of the labels shown, or None (no reference, or a
        build running). Give the result to :meth:`errors_finished`."""
        if not self.has_reference or self._building:
            return None
        s = self.session
        if s.reference.shape != s.case.labels.shape:
            return None
        self._building = True
        self._pending_boxes = []
        self._build_for = (s.case, s.reference)
        return build_error_maps, (s.case.labels.copy(), s.reference, s.case.geometry.spacing, s.reference_mapping)

    def errors_finished(self, maps: Optional[ErrorMaps]) -> None:
        """The maps built by :meth:`errors_job` (None: failed); the edits made meanwhile are applied now."""
        self._building = False
        if maps is None or not self.has_reference:
            return
        case, ref = self._build_for
        if case is not self.session.case or ref is not self.session.reference:
            # another case or reference came while it was built: those maps are not this one's
            self._changed("stale")
            return
        maps.labels = self.session.case.labels
        for box in self._pending_boxes:
            maps.update(box)
        self._pending_boxes = []
        self.errors = maps
        self._changed("errors")

    def build_errors(self) -> Optional[ErrorMaps]:
        """Build inline (scripts, tests)."""
        job = self.errors_job()
        if job is None:
            return self.errors
        fn, args = job
        try:
            maps = fn(*args)
        except Exception:
            self.errors_finished(None)
            raise
        self.errors_finished(maps)
        return self.errors

    def error_regions(self) -> list[ErrorRegion]:
        return [] if self.errors is None else self.errors.regions()

    def next_error(self, after: Optional[ErrorRegion] = None) -> Optional[ErrorRegion]:
        """The error region after ``after`` in size order (the largest first; wraps around)."""
        regions = self.error_regions()
        if not regions:
            return None
        if after is not None and after in regions:
            return regions[(regions.index(after) + 1) % len(regions)]
        return regions[0]

    # ------------------------------------------------------------------------------------------ lesions
    def lesion_statuses(self) -> tuple[list[LesionStatus], list[LesionStatus]]:
        """(statuses of the labelled lesions, missed reference lesions), cached per labels version."""
        s = self.session
        if not self.has_reference:
            return [], []
        key = (s.history.version, id(s.reference))
        if self._lesion_cache[0] != key:
            from ..evaluation import structure_plan
            ref_labels = (5,)
            for k, (pl, rl) in structure_plan(s.reference_mapping).structures.items():
                if 5 in pl:
                    ref_labels = rl
            self._lesion_cache = (key, lesion_statuses(s.case.labels, s.reference, s.case.geometry.spacing,
                                                       ref_lesion_labels=ref_labels))
        return self._lesion_cache[1]

    def lesion_columns(self, lesions) -> dict[int, tuple[str, str]]:
        """{lesion id: (status, confidence)} for engine.measure.Lesion rows; "—" where unknown."""
        preds = self.lesion_statuses()[0] if self.has_reference else []
        out = {}
        for les in lesions:
            st = status_of_lesion(preds, les.bbox, les.voxel_count) if preds else None
            status = st.status if st is not None else "—"
            out[les.id] = (status, self.confidence_text(les))
        return out

    def lesion_confidence(self, les) -> Optional[float]:
        """Mean max-probability inside a measured lesion (None: no map, or the lesion was edited)."""
        u = self.uncertainty
        if u is None:
            return None
        b = tuple(v for pair in les.bbox for v in pair)
        if u.touches_edit(b):
            return None
        sl = tuple(slice(lo, hi) for lo, hi in les.bbox)
        from metrics.lesions import label_lesions
        lab, _ = label_lesions(self.session.case.labels[sl] == 5)
        # the component of this lesion: the one with its voxel count (others in the box are other lesions)
        sizes = np.bincount(lab.ravel())
        ids = [i for i in range(1, len(sizes)) if sizes[i] == les.voxel_count]
        if not ids:
            return None
        return lesion_confidence(u.map, sl, lab == ids[0])

    def confidence_text(self, les) -> str:
        if self.uncertainty is None:
            return "—"
        c = self.lesion_confidence(les)
        return "edited" if c is None else f"{c:.2f}"

    def lesion_export_columns(self, lesions) -> Optional[dict[int, dict]]:
        """Per lesion id the lesion CSV/JSON's extra columns: "status_vs_reference" (detected / false positive,
        with a reference) and "model_confidence" (mean max-probability, with an uncertainty map; empty for an
        edited lesion); None when there is neither."""
        if not self.has_reference and self.uncertainty is None:
            return None
        cols = self.lesion_columns(lesions)
        out = {}
        for les in lesions:
            d = {}
            if self.has_reference:
                d["status_vs_reference"] = cols[les.id][0] if cols[les.id][0] != "—" else None
            if self.uncertainty is not None:
                c = self.lesion_confidence(les)
                d["model_confidence"] = None if c is None else round(c, 4)
            out[les.id] = d
        return out

    # ------------------------------------------------------------------------------------------ doubt
    def uncertain_regions(self) -> list[UncertainRegion]:
        return [] if self.uncertainty is None else self.uncertainty.regions()

    @property
    def uncertainty_bytes(self) -> int:
        return 0 if self.uncertainty is None else self.uncertainty.nbytes


__all__ = ["ReviewState", "build_error_maps"]
