"""Review and correction aids (no Qt). The semi-automatic correction tools: grow from seeds, scissors,
split at a neck, interpolation between slices, margin (this module and grow.py, scissors.py, split.py,
interpolate.py, margin.py), vessel trace (trace.py) and lesion from a click (lesion_click.py); errors
against a reference (errors.py), the model's uncertainty (uncertainty.py), and the state the window's
overlays show (state.py).

Each tool is a plain function over the label map in canonical (z, y, x) order with the case's (z, y, x)
spacing in mm. A tool works on a box around what it changes, never on a copy of the whole volume.

Two forms:

- ``propose_*`` functions only *read* the labels (and CT) and return a :class:`Proposal` — a box and the
  new uint8 values for it. They are what the window runs on a worker thread (the user may keep looking
  around while it runs); the result is applied on the session's thread with :func:`apply_proposal` as
  one undo step, after checking that the labels did not change in between (``history.version``).
- the plain functions (``cut_polygon``, ``split_at_neck``, ``interpolate_slices``, ``margin``) are
  engine.edits-style operations ``op(labels, ...) -> Region | None`` that propose and apply at once, for
  ``CaseSession.apply(kind, description, op, ...)`` and scripts.

Step kinds (engine.edits.STEP_KINDS): ``grow_from_seeds``, ``scissors``, ``split``, ``interpolate``,
``margin``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..edits import Box, Region, _slices

__all__ = ["Proposal", "apply_proposal", "pad_box", "STEP_KINDS"]

#: The undo step kinds these tools create (also listed in engine.edits.STEP_KINDS).
STEP_KINDS = ("grow_from_seeds", "scissors", "split", "interpolate", "margin")


@dataclass
class Proposal:
    """New values for a box of the label map: ``values`` (uint8, the box's shape) replace ``labels[box]``.

    ``info`` holds what a person may want to read about the result (e.g. the neck radius found)."""

    box: Box
    values: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def changed_voxels(self) -> int:
        return int(self.info.get("changed_voxels", -1))


def apply_proposal(labels: np.ndarray, proposal: Optional[Proposal]) -> Optional[Region]:
    """Write a proposal into ``labels`` (in place) and return the Region changed, or None."""
    if proposal is None:
        return None
    sl = _slices(proposal.box)
    cur = labels[sl]
    if cur.shape != proposal.values.shape:
        raise ValueError(f"proposal of shape {proposal.values.shape} does not fit its box {proposal.box}")
    if np.array_equal(cur, proposal.values):
        return None
    before = cur.copy()
    cur[...] = proposal.values
    return Region(proposal.box, before)


def pad_box(box: Box, pad_vox, shape) -> Box:
    """``box`` grown by ``pad_vox`` voxels (one number or one per axis (z, y, x)), clipped to ``shape``."""
    p = [int(pad_vox)] * 3 if np.isscalar(pad_vox) else [int(v) for v in pad_vox]
    return (max(box[0] - p[0], 0), min(box[1] + p[0], shape[0]), max(box[2] - p[1], 0),
            min(box[3] + p[1], shape[1]), max(box[4] - p[2], 0), min(box[5] + p[2], shape[2]))


def mm_to_vox(mm: float, spacing) -> tuple[int, int, int]:
    """Whole voxels covering ``mm`` along each (z, y, x) axis."""
    return tuple(int(np.ceil(float(mm) / float(s))) for s in spacing)  # type: ignore[return-value]
