"""Short soak of the edit history (issue 13): the full one is benchmarks/soak.py (2,000 strokes on 512x512x300).

200 brush strokes with undo/redo on a small phantom, through engine.edits.EditHistory as the window records
them, with a 1 MB history limit so that trimming runs: memory stays flat, the history stays within its
limit, no thread is left behind. No timing is asserted (the CI machine is shared).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from soak import stroke_soak  # noqa: E402


def test_200_strokes_with_undo_redo_keep_memory_history_and_threads_bounded():
    r = stroke_soak(shape=(40, 96, 96), n_strokes=200, sample_every=50, history_bytes=1_000_000, log=lambda s: None)
    curve = r["curve"]
    assert len(curve) == 5
    # memory: flat once the history is full (the limit is 1 MB; allow allocator noise)
    assert curve[-1]["rss_mb"] - curve[1]["rss_mb"] < 40, curve
    # the history never exceeds its limit by more than its newest step (a 5 mm stroke: far below 1 MB)
    assert all(c["history_mb"] <= 1.5 for c in curve), curve
    assert r["threads_max"] == r["threads_min"], curve
