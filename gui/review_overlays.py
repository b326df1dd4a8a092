"""The Review tab and its overlays: errors against a loaded reference (false positives / false negatives per
structure, the reference as outlines, "next error region"), the model's uncertainty (a heat overlay, "next
uncertain region"), and the lesion table's Status and Conf. columns (README "Errors and uncertainty").

Everything shown is computed by engine.review (ReviewState over the window's CaseSession); this module only
draws it: its own image items in each slice pane (drawn after the label overlay through
SliceView.extra_layers, separate from the label overlay's drawing), meshes in the 3D pane (View3D.set_extra),
and the tab's widgets. The error maps' first build and the 3D error surfaces run on workers
(gui.workers.TaskRunner).
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QRectF, Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from engine.labels import BY_KEY
from engine.overlay import outline_plane
from engine.review.errors import error_surfaces
from engine.review.state import ReviewState
from engine.review.uncertainty import BYTES_PER_VOXEL, UNCERTAIN_LEVEL

log = logging.getLogger(__name__)

#: Overlay colours (RGB): false positive, false negative, reference outline.
FP_COLOR = (255, 40, 40)
FN_COLOR = (0, 230, 255)
REF_COLOR = (255, 255, 255)
NEXT_ERROR_KEY = "X"
NEXT_UNCERTAIN_KEY = "U"


def _error_lut() -> np.ndarray:
    lut = np.zeros((256, 4), np.uint8)
    lut[1] = (*FP_COLOR, 255)
    lut[2] = (*FN_COLOR, 255)
    return lut


def _outline_lut() -> np.ndarray:
    lut = np.zeros((256, 4), np.uint8)
    lut[1:] = (*REF_COLOR, 190)
    return lut


def _heat_lut() -> np.ndarray:
    """Transparent where the model was sure (max prob >= 0.95); then dark red -> red -> yellow, more opaque
    with more doubt (u = value / 255; the largest u of a 6-class model is 0.83)."""
    lut = np.zeros((256, 4), np.uint8)
    v = np.arange(256, dtype=np.float64) / 213.0
    v = np.clip(v, 0, 1)
    lut[:, 0] = np.clip(120 + 135 * v * 2, 0, 255)
    lut[:, 1] = np.clip((v - 0.4) / 0.6 * 255, 0, 255)
    lut[:, 2] = 0
    lut[:, 3] = np.clip(60 + 195 * v, 0, 255)
    lut[:13, 3] = 0
    return lut.astype(np.uint8)


def _swatch(rgb) -> str:
    return f"<span style='color: rgb{tuple(rgb)}; font-size: 14pt;'>■</span>"


class ReviewPanel(QWidget):
    """The Review tab's widgets (they show values and call back; nothing computed here)."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        g = QGroupBox("Errors against the reference")
        gl = QVBoxLayout(g)
        self.ref_status = QLabel("Load a reference in the Evaluate tab to see where the labels differ from it.")
        self.ref_status.setWordWrap(True)
        gl.addWidget(self.ref_status)
        row = QHBoxLayout()
        self.show_errors = QCheckBox("False positives / negatives")
        self.show_errors.setChecked(True)
        self.show_outline = QCheckBox("Reference outlines")
        self.show_outline.setChecked(True)
        self.show_3d = QCheckBox("in 3D")
        row.addWidget(self.show_errors)
        row.addWidget(self.show_outline)
        row.addWidget(self.show_3d)
        gl.addLayout(row)
        self.legend = QLabel(f"{_swatch(FP_COLOR)} false positive: labelled, not in the reference &nbsp; "
                             f"{_swatch(FN_COLOR)} false negative: in the reference, not labelled &nbsp; "
                             f"{_swatch(REF_COLOR)} reference outline")
        self.legend.setObjectName("review_legend")
        self.legend.setStyleSheet("background: black; color: white; padding: 4px;")   # as on the panes
        self.legend.setWordWrap(True)
        gl.addWidget(self.legend)
        self.table = QTableWidget(0, 4)
        self.table.setObjectName("review_error_table")
        self.table.setHorizontalHeaderLabels(["Show", "Structure", "FP (mL / voxels)", "FN (mL / voxels)"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        gl.addWidget(self.table)
        row = QHBoxLayout()
        self.next_error = QPushButton(f"Next error region ({NEXT_ERROR_KEY})")
        self.next_error.setToolTip("Connected regions of false positives or negatives, the largest first")
        row.addWidget(self.next_error)
        gl.addLayout(row)
        self.error_text = QLabel("")
        self.error_text.setWordWrap(True)
        gl.addWidget(self.error_text)
        self.lesion_text = QLabel("")
        self.lesion_text.setWordWrap(True)
        gl.addWidget(self.lesion_text)
        lay.addWidget(g)

        g2 = QGroupBox("The model's uncertainty")
        ul = QVBoxLayout(g2)
        self.unc_status = QLabel("No segmentation run for this case yet.")
        self.unc_status.setWordWrap(True)
        ul.addWidget(self.unc_status)
        self.keep_unc = QCheckBox("Keep the model's uncertainty with each run (1 byte per voxel)")
        self.keep_unc.setToolTip("Off: the next runs keep no uncertainty map (no memory, a slightly faster "
                                 "resampling step). LIVERPLAN_UNCERTAINTY=0 makes off the default.")
        ul.addWidget(self.keep_unc)
        self.show_unc = QCheckBox("Uncertainty overlay (1 − max probability, heat colours)")
        self.show_unc.setChecked(False)
        ul.addWidget(self.show_unc)
        self.next_unc = QPushButton(f"Next uncertain region ({NEXT_UNCERTAIN_KEY})")
        self.next_unc.setToolTip(f"Regions where the model's best class had probability ≤ "
                                 f"{1 - UNCERTAIN_LEVEL / 255:.1f}, the largest first")
        ul.addWidget(self.next_unc)
        self.unc_text = QLabel("")
        self.unc_text.setWordWrap(True)
        ul.addWidget(self.unc_text)
        lay.addWidget(g2)
        lay.addStretch(1)
        self._checks: dict[str, QCheckBox] = {}

    def set_counts(self, counts: dict, names: dict, voxel_ml: float, shown: dict, on_toggle) -> None:
        """{structure key: (FP voxels, FN voxels)} as rows with a Show box each."""
        self.table.setRowCount(0)
        self._checks = {}
        for key, (fp, fn) in counts.items():
            r = self.table.rowCount()
            self.table.insertRow(r)
            box = QCheckBox()
            box.setChecked(shown.get(key, True))
            box.toggled.connect(lambda on, k=key: on_toggle(k, on))
            self._checks[key] = box
            self.table.setCellWidget(r, 0, box)
            self.table.setItem(r, 1, QTableWidgetItem(names.get(key, key)))
            for c, n in ((2, fp), (3, fn)):
                it = QTableWidgetItem(f"{n * voxel_ml:.2f} / {n}")
                it.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.table.setItem(r, c, it)
        self.table.resizeColumnsToContents()

    def counts_shown(self) -> dict[str, tuple[int, int]]:
        """What the table shows: {structure name: (FP voxels, FN voxels)} (tests read it)."""
        out = {}
        for r in range(self.table.rowCount()):
            fp = int(self.table.item(r, 2).text().split("/")[1])
            fn = int(self.table.item(r, 3).text().split("/")[1])
            out[self.table.item(r, 1).text()] = (fp, fn)
        return out


class ReviewOverlays(QObject):
    """Keeps the Review tab, the pane overlays and the lesion columns in step with engine.review."""

    def __init__(self, win) -> None:
        super().__init__(win)
        self.win = win
        self.state = ReviewState(win.session, on_change=self._on_review)
        self.panel = ReviewPanel()
        win.tabs.addTab(self.panel, "Review")
        self.shown: dict[str, bool] = {}
        self.current_error = None
        self.current_uncertain = -1
        self._3d_again = False
        self._err_lut, self._ref_lut, self._heat = _error_lut(), _outline_lut(), _heat_lut()
        self.items = []
        for v in win.views:
            ref_item, err_item, unc_item = pg.ImageItem(), pg.ImageItem(), pg.ImageItem()
            unc_item.setOpacity(0.7)
            err_item.setOpacity(0.8)
            for z, it in ((12, unc_item), (13, err_item), (14, ref_item)):
                it.setZValue(z)
                it.setVisible(False)
                v.vb.addItem(it)
            self.items.append((ref_item, err_item, unc_item))
            v.extra_layers.append(self._draw)
        #: per pane and item, what its image shows now: a redraw of the same slice (a brush dab, a repaint)
        #: sets nothing again (each setImage of a 512 x 512 plane with its LUT costs milliseconds)
        self._shown_keys: dict = {}
        p = self.panel
        import os
        p.keep_unc.setChecked(os.environ.get("LIVERPLAN_UNCERTAINTY", "1").strip().lower()
                              not in ("0", "off", "no", "false"))
        p.show_errors.toggled.connect(lambda _: self._redraw())
        p.show_outline.toggled.connect(lambda _: self._redraw())
        p.show_unc.toggled.connect(lambda _: self._redraw())
        p.show_3d.toggled.connect(lambda _: self._update_3d())
        p.next_error.clicked.connect(self.next_error)
        p.next_unc.clicked.connect(self.next_uncertain)
        for key, slot in ((NEXT_ERROR_KEY, self.next_error), (NEXT_UNCERTAIN_KEY, self.next_uncertain)):
            sc = QShortcut(QKeySequence(key), win)
            sc.setContext(Qt.WindowShortcut)
            sc.activated.connect(slot)
        win.session.listen(self._on_session)
        self._update_texts()

    @property
    def keep_uncertainty(self) -> bool:
        """Whether the next segmentation runs keep the uncertainty map (the tab's check box)."""
        return self.panel.keep_unc.isChecked()

    # ------------------------------------------------------------------------------------------ events
    def _on_session(self, kind: str, data) -> None:
        if kind == "measurements":
            self._update_lesions()
        elif kind == "reference" and data is not None:
            self._start_build()

    def _on_review(self, what: str) -> None:
        if what != "labels":
            self._shown_keys.clear()        # new maps (their ids may be reused): draw again
        if what == "stale":
            self._start_build()
            return
        if what in ("case", "reference"):
            self.current_error, self.current_uncertain = None, -1
            if self.win.view3d is not None:
                for k in ("review_fp", "review_fn"):
                    self.win.view3d.set_extra(k, None)
        if what == "labels" and self.state.errors is not None and self.panel.show_3d.isChecked():
            self._update_3d()
        self._update_texts()
        # (on "labels" too: the panes redrew before these maps caught up with the edit)
        self._redraw()
        if what in ("errors", "case", "reference"):
            self._update_lesions()

    def _start_build(self) -> None:
        job = self.state.errors_job()
        if job is None:
            return
        fn, args = job
        self.panel.ref_status.setText("Comparing the labels with the reference…")
        t = self.win.runner.start("review_errors", fn, *args, progress=False)
        t.succeeded.connect(self.state.errors_finished)
        t.failed.connect(lambda msg, exc: (self.state.errors_finished(None),
                                           self.win.message(f"The error overlay could not be built: {msg}",
                                                            error=True)))
        t.cancelled.connect(lambda: self.state.errors_finished(None))

    # ------------------------------------------------------------------------------------------ drawing
    def _redraw(self) -> None:
        for v in self.win.views:
            self._draw(v)

    def _draw(self, v) -> None:
        ref_item, err_item, unc_item = self.items[self.win.views.index(v)]
        s, st = self.win.session, self.state
        if s.case is None or v.image is None:
            for it in (ref_item, err_item, unc_item):
                it.setVisible(False)
            return
        axis, index = v.axis, v.pos_zyx[v.axis]
        rect = v.plane_rect()
        shape = s.case.labels.shape
        pane = self.win.views.index(v)
        # (a new case is drawn before this state hears of it: maps of another grid are not drawn)
        show_err = st.errors is not None and self.panel.show_errors.isChecked() and st.errors.fp.shape == shape
        if show_err:
            key = (id(st.errors), st.errors.version, axis, index, tuple(sorted(self.shown.items())))
            show_err = self._set_plane(err_item, (pane, "err"), key, rect, self._err_lut,
                                       lambda: st.errors.colour_plane(axis, index, self.shown))
        err_item.setVisible(show_err)
        show_ref = s.reference is not None and self.panel.show_outline.isChecked() \
            and s.reference.shape == s.case.labels.shape
        if show_ref:
            sl = [slice(None)] * 3
            sl[axis] = index
            show_ref = self._set_plane(ref_item, (pane, "ref"), (id(s.reference), axis, index), rect, self._ref_lut,
                                       lambda: outline_plane(s.reference[tuple(sl)]))
        ref_item.setVisible(show_ref)
        show_unc = st.uncertainty is not None and self.panel.show_unc.isChecked() and st.uncertainty.map.shape == shape
        if show_unc:
            key = (id(st.uncertainty), s.history.state_id, axis, index)
            show_unc = self._set_plane(unc_item, (pane, "unc"), key, rect, self._heat,
                                       lambda: st.uncertainty.plane(axis, index))
        unc_item.setVisible(show_unc)

    def _set_plane(self, item, slot, key, rect, lut, make) -> bool:
        """Show the plane ``make()`` in ``item`` unless it shows the plane of ``key`` already; False when the
        plane is empty (the item is hidden: nothing to draw)."""
        last = self._shown_keys.get(slot)
        if last is not None and last[0] == key:
            if last[1]:
                item.setRect(rect)
            return last[1]
        plane = make()
        nonempty = bool(plane.any())
        if nonempty:
            item.setImage(plane, autoLevels=False, levels=(0, 255), lut=lut)
            item.setRect(rect)
        self._shown_keys[slot] = (key, nonempty)
        return nonempty

    def _toggle_structure(self, key: str, on: bool) -> None:
        self.shown[key] = bool(on)
        self._redraw()
        self._update_3d()

    def _update_3d(self) -> None:
        v3 = self.win.view3d
        if v3 is None:
            return
        if not self.panel.show_3d.isChecked() or self.state.errors is None:
            for k in ("review_fp", "review_fn"):
                v3.set_extra(k, None)
            return
        maps, geom = self.state.errors, self.win.session.case.geometry
        if self.win.runner.running("review_3d"):
            self._3d_again = True           # the surfaces being made are already behind: once more after
            return
        self._3d_again = False
        t = self.win.runner.start("review_3d", error_surfaces, maps, geom, dict(self.shown), progress=False)

        def done(meshes):
            if self.state.errors is not maps or not self.panel.show_3d.isChecked():
                return
            v3.set_extra("review_fp", meshes.get("FP"), color=[c / 255 for c in FP_COLOR], opacity=0.9)
            v3.set_extra("review_fn", meshes.get("FN"), color=[c / 255 for c in FN_COLOR], opacity=0.9)

        t.succeeded.connect(done)
        t.failed.connect(lambda msg, exc: self.win.message(f"The 3D error surfaces failed: {msg}", error=True))
        t.done.connect(lambda: self._3d_again and self._update_3d())

    # ------------------------------------------------------------------------------------------ texts
    def _names(self) -> dict:
        out = {}
        for key in (self.state.errors.keys if self.state.errors is not None else []):
            out[key] = " + ".join(BY_KEY[k].name for k in key.split("+") if k in BY_KEY) or key
        return out

    def _update_texts(self) -> None:
        s, st, p = self.win.session, self.state, self.panel
        if s.case is None or s.reference is None:
            p.ref_status.setText("Load a reference in the Evaluate tab to see where the labels differ from it.")
            p.table.setRowCount(0)
            p.error_text.setText("")
        elif s.reference.shape != s.case.labels.shape:
            p.ref_status.setText(f"Reference: {s.reference_name} is not on this CT's grid; it cannot be compared "
                                 "voxel by voxel.")
            p.table.setRowCount(0)
        elif st.errors is None:
            p.ref_status.setText(f"Reference: {s.reference_name}. Comparing…")
        else:
            counts = st.errors.counts()
            p.ref_status.setText(f"Reference: {s.reference_name}. FP and FN voxels per structure, over the whole "
                                 "CT (the evaluation's confusion counts):")
            if p.table.rowCount() != len(counts) or p.counts_shown() != {self._names()[k]: v for k, v in counts.items()}:
                p.set_counts(counts, self._names(), s.case.geometry.voxel_volume_ml, self.shown,
                             self._toggle_structure)
        if st.uncertainty is not None:
            mb = st.uncertainty_bytes / 1e6
            edited = (" Edited since the run: the uncertainty is hidden in the edited boxes (it describes the "
                      "model's labels, not yours)." if st.uncertainty.edited else "")
            p.unc_status.setText(f"From the last run: {mb:.1f} MB ({BYTES_PER_VOXEL} byte per voxel), freed with "
                                 f"the case.{edited}")
        else:
            p.unc_status.setText(st.uncertainty_note)
        p.show_unc.setEnabled(st.uncertainty is not None)
        p.next_unc.setEnabled(st.uncertainty is not None)
        p.next_error.setEnabled(st.errors is not None)

    def _update_lesions(self) -> None:
        report = self.win.session.report
        if report is None:
            return
        st = self.state
        if st.has_reference:
            # the statuses label the lesions of the whole grid (0.2-0.3 s on 512 x 512 x 300): on a worker, so
            # that an edit's refresh does not wait for them; the table follows when they are ready
            t = self.win.runner.start("review-lesions", st.lesion_statuses, progress=False)
            t.succeeded.connect(lambda _res, r=report: self._show_lesions(r))
            return
        self._show_lesions(report)

    def _show_lesions(self, report) -> None:
        if report is not self.win.session.report:
            return                                  # a newer measurement brings its own
        st = self.state
        self.win.measure_panel.set_review(st.lesion_columns(report.lesions))
        if st.has_reference:
            preds, missed = st.lesion_statuses()
            n_det = sum(1 for x in preds if x.status == "detected")
            n_fp = sum(1 for x in preds if x.status == "false positive")
            self.panel.lesion_text.setText(
                f"Lesions (one-to-one matching by IoU ≥ 0.1, as the evaluation's lesion detection): "
                f"{n_det} detected, {len(missed)} missed, {n_fp} false positive.")
        else:
            self.panel.lesion_text.setText("")

    def lesion_export(self, report) -> Optional[dict]:
        """The lesion CSV/JSON's extra columns (engine.review.state.ReviewState.lesion_export_columns)."""
        return None if report is None else self.state.lesion_export_columns(report.lesions)

    # ------------------------------------------------------------------------------------------ navigation
    def _go(self, center, box, text: str, label: QLabel) -> None:
        w = self.win
        w.set_position(list(center))
        geom = w.session.case.geometry
        lps = geom.index_to_physical(list(center))
        ext = max((box[2 * a + 1] - box[2 * a]) * geom.spacing[a] for a in range(3))
        # the 3D marker: a sphere around the region, at most 25 mm (a large region would hide the view)
        w.highlight(box, (tuple(float(v) for v in lps), min(ext / 2.0 + 3.0, 25.0)))
        # frame it: each pane zoomed to the region's box with a margin
        for v in w.views:
            r_ax, c_ax = [(1, 2), (0, 2), (0, 1)][v.axis]
            sp = geom.spacing
            m = max(20.0, 0.5 * ext)
            rect = QRectF(box[2 * c_ax] * sp[c_ax] - m, box[2 * r_ax] * sp[r_ax] - m,
                          (box[2 * c_ax + 1] - box[2 * c_ax]) * sp[c_ax] + 2 * m,
                          (box[2 * r_ax + 1] - box[2 * r_ax]) * sp[r_ax] + 2 * m)
            v.vb.setRange(rect, padding=0.0)
        w.message(text)
        label.setText(text)

    def next_error(self) -> None:
        st = self.state
        if st.errors is None:
            self.win.message("No error overlay: load a reference in the Evaluate tab first.")
            return
        regions = st.error_regions()
        if not regions:
            self.win.message("The labels equal the reference: no error regions.")
            return
        self.current_error = st.next_error(self.current_error)
        r = self.current_error
        i = regions.index(r)
        self._go(r.center, r.box, f"Error region {i + 1} of {len(regions)}: {r.describe(self._names())}.",
                 self.panel.error_text)

    def next_uncertain(self) -> None:
        st = self.state
        if st.uncertainty is None:
            self.win.message(st.uncertainty_note)
            return
        unc = st.uncertainty
        regions = unc.cached_regions()
        if regions is None:
            # finding the regions takes seconds on a big CT: on a worker, then the jump
            if self.win.runner.running("review_uncertain"):
                return
            fn, args = unc.regions_job()
            self.win.message("Finding the uncertain regions…")
            t = self.win.runner.start("review_uncertain", fn, *args, progress=False)

            def done(result, u=unc, edited=args[2]):
                u.set_regions(edited, result)
                if self.state.uncertainty is u and u.cached_regions() is not None:
                    self.next_uncertain()

            t.succeeded.connect(done)
            t.failed.connect(lambda msg, exc: self.win.message(f"The uncertain regions failed: {msg}", error=True))
            return
        if not regions:
            self.win.message("The model was sure everywhere (no region with max probability ≤ 0.6).")
            return
        self.current_uncertain = (self.current_uncertain + 1) % len(regions)
        r = regions[self.current_uncertain]
        self._go(r.center, r.box, f"Uncertain region {self.current_uncertain + 1} of {len(regions)}: "
                                  f"{r.voxels} voxels, mean max probability {r.mean_max_prob:.2f}.",
                 self.panel.unc_text)


__all__ = ["ReviewOverlays", "ReviewPanel", "FP_COLOR", "FN_COLOR", "REF_COLOR"]
