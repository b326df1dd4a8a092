"""Before a step replaces the labels shown (a segmentation run): whether they carry work a person would lose
sight of, in words (the step is undoable, but the user hears it first)."""
from __future__ import annotations

from typing import Optional

import numpy as np


def replace_question(session) -> Optional[str]:
    """The question to ask before a segmentation replaces the labels of ``session`` (an
    engine.case_session.CaseSession), or None when there is nothing to lose: no labels, or labels that are
    saved and carry no edit by hand (a model's untouched output, a label file as opened)."""
    case = session.case
    if case is None or session.history is None:
        return None
    counts = session.derived.counts
    has_labels = any(n > 0 for lab, n in counts.items() if lab) if counts else bool(np.any(case.labels))
    if not has_labels:
        return None
    edited = bool(session.history.current_meta.get("edited"))
    unsaved = session.is_modified
    if not edited and not unsaved:
        return None
    why = ("carry edits by hand" + (" that are not saved" if unsaved else "")) if edited else "are not saved"
    return (f"The labels shown {why}. Running the segmentation replaces them with the model's result "
            "(Edit > Undo brings them back). Run it?")
