"""Writers that fail in words (issue 13): a disk filling during an export never crashes the process and
leaves no hidden part-file.

A full disk is simulated without root: in a subprocess, ``RLIMIT_FSIZE`` makes every write past a few KB
fail (EFBIG, with SIGXFSZ ignored), exactly where a full disk fails with ENOSPC, for Python and native
(VTK, ITK) writers alike. VTK's XML writer used to die there ("free(): invalid size" / SIGSEGV) and leave
``.<name>.part.vtp`` behind.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.errors import ExportError

ROOT = Path(__file__).resolve().parents[2]

FULL_DISK = """
    import json, resource, signal, sys
    from pathlib import Path
    from engine.errors import ExportError
    from engine.io import write_label_map
    from engine.io.labelmaps import write_image
    from engine.mesh import label_surfaces, write_meshes
    from engine.phantom import make_phantom

    out = Path(sys.argv[1])
    case = make_phantom(seed=2, shape=(40, 96, 96))
    surfaces = label_surfaces(case.labels, case.geometry)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # a write past the limit fails (EFBIG) like a full disk
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    results = {}
    for fmt in ("vtp", "stl", "obj"):
        try:
            write_meshes(surfaces, out / fmt, formats=[fmt])
            results[fmt] = "written"
        except ExportError as err:
            results[fmt] = str(err)
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".seg.nrrd"):
        try:
            write_label_map(out / "labels" / f"labels{ext}", case)
            results[ext] = "written"
        except ExportError as err:
            results[ext] = str(err)
    try:
        write_image(out / "ct" / "ct.nii.gz", case)
        results["ct"] = "written"
    except ExportError as err:
        results["ct"] = str(err)
    print("RESULTS", json.dumps(results))
"""


def test_a_full_disk_during_exports_fails_in_words_and_leaves_nothing(tmp_path):
    out = tmp_path / "exports"
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(FULL_DISK), str(out), "2048"], capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=str(ROOT))
    assert r.returncode == 0, f"the process died (rc {r.returncode}): {r.stderr[-2000:]}"
    results = json.loads(r.stdout.split("RESULTS ", 1)[1])
    for what, outcome in results.items():
        assert outcome != "written", f"{what} claims to be written past the limit"
        # in words (the disk check names the cause when the disk really is full; here the limit is per file)
        low = outcome.lower()
        assert "nothing was changed" in low or "was not written" in low, f"{what}: {outcome}"
        assert "Traceback" not in outcome
    left = [p for p in out.rglob("*") if p.is_file()]
    assert left == [], f"left behind: {left}"


def test_enospc_in_a_mesh_write_is_an_export_error_and_removes_the_part_file(tmp_path, monkeypatch):
    """The same through a monkeypatched write that raises ENOSPC (the window's exports run in-process)."""
    import builtins

    from engine.mesh import label_surfaces, write_meshes
    from engine.phantom import make_phantom

    case = make_phantom(seed=2, shape=(24, 64, 64))
    surfaces = label_surfaces(case.labels, case.geometry)
    real_open = builtins.open

    class FullFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def full_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        return FullFile(f) if ".part." in str(file) and "w" in mode else f

    monkeypatch.setattr(builtins, "open", full_open)
    for fmt in ("vtp", "stl"):
        with pytest.raises(ExportError, match="disk is full"):
            write_meshes(surfaces, tmp_path / fmt, formats=[fmt])
    monkeypatch.undo()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
