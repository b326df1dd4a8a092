"""A scripted session for the kill test (tests/engine/test_case_session.py): opens a phantom, makes
steps forever (brush strokes, every fifth an undo), printing the number of each committed step; the
test kills it with SIGKILL. Run as ``python session_script.py <data dir>``."""
from __future__ import annotations

import sys

from engine.case_session import CaseSession
from engine.phantom import make_phantom


def phantom():
    return make_phantom(seed=5, shape=(24, 48, 48), n_lesions=1)


def step(session: CaseSession, i: int) -> None:
    """Operation ``i`` of the scripted sequence (the same in the test, to know what each state is)."""
    if i % 5 == 4:
        session.undo()
        return
    session.begin_stroke()
    z, y = 4 + (i % 16), 8 + (i * 7) % 32
    session.dab((z, y, 10), 0, 2.0, 1 + i % 5)
    session.dab((z, y, 30), 0, 2.0, 1 + i % 5)
    session.end_stroke("brush", f"Brush stroke {i}")


def main() -> None:
    from engine.session import AutosaveStore
    from pathlib import Path
    session = CaseSession(AutosaveStore(Path(sys.argv[1]), fallback=Path(sys.argv[1]) / "fallback"))
    session.open_case(phantom())
    i = 0
    while True:
        step(session, i)
        print(i, flush=True)
        i += 1
        if i % 40 == 0:
            session.autosave()          # compaction now and then, as the window's timer does
        if i >= 400:
            session.begin_stroke()      # a stroke in progress, never ended
            session.dab((5, 5, 5), 0, 2.0, 2)
            print("waiting", flush=True)
            sys.stdin.read()


if __name__ == "__main__":
    main()
